"""What the figures say about themselves: the seed count and band in the subtitle, a legend entry
for every line style, the edge-of-stability line in a colour no curve has, and the chance level
1/C on accuracy panels — read from the drawn artists of a hand-built run (nothing compiled)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from dynloss_jax.plotting import THRESHOLD_COLOR, plot_run  # noqa: E402
from dynloss_jax.results import GRID_AXES, Run  # noqa: E402

C = 4  # not the default 3, so the chance line must come from the run
N_RECORD, N_EIG = 9, 5


def hand_built_run(seeds=3) -> Run:
    coords = {
        "loss": ["ce", "dce"],
        "width": [4],
        "eta": [0.5, 0.25],
        "amplitude": [5.0],
        "period": [10],
        "seed": list(range(seeds)),
    }
    grid = tuple(len(v) for v in coords.values())
    rng = np.random.default_rng(0)
    diverged = np.zeros(grid, bool)
    if seeds > 2:
        diverged[1, 0, 1, 0, 0, 2] = True  # left out of that configuration's mean and band
    record, eig = list(GRID_AXES) + ["record"], list(GRID_AXES) + ["eig"]
    arrays = {
        "diverged": diverged,
        "loss": 1 + rng.random(grid + (N_RECORD,)),
        "static_loss": 1 + rng.random(grid + (N_RECORD,)),
        "train_acc": rng.random(grid + (N_RECORD,)),
        "val_acc": rng.random(grid + (N_RECORD,)),
        "gamma": rng.random(grid + (N_RECORD, C)),
        "lam": rng.random(grid + (N_EIG, 2)),
        "record_step": np.arange(N_RECORD) * 2,
        "eig_step": np.arange(N_EIG) * 4,
    }
    axes = {
        "diverged": list(GRID_AXES),
        "loss": record,
        "static_loss": record,
        "train_acc": record,
        "val_acc": record,
        "gamma": record + ["class"],
        "lam": eig + ["k"],
        "record_step": ["record"],
        "eig_step": ["eig"],
    }
    config = {"settings": {"n_classes": 3}, "data": {"n_classes": C}, "axes": coords}
    return Run(None, config, arrays, axes, {k: list(v) for k, v in coords.items()})


def legend_labels(ax) -> set[str]:
    legends = [a for a in ax.get_children() if isinstance(a, matplotlib.legend.Legend)]
    return {t.get_text() for leg in legends for t in leg.get_texts()}


def mean_sem_of_survivors(a, diverged):
    """Mean and s.e.m. over the seeds (axis 0) that did not diverge, by a plain loop."""
    kept = [a[s] for s in range(len(a)) if not diverged[s]]
    n = len(kept)
    mean = sum(kept) / n
    sem = np.sqrt(sum((k - mean) ** 2 for k in kept) / (n - 1) / n)
    return mean, sem


def test_plot_run_says_what_it_shows(tmp_path):
    run = hand_built_run()
    fig = plot_run(run, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    gamma_ax, loss_ax, acc_ax, lam_ax, ratio_ax = fig.axes
    assert "mean over 3 seeds" in fig._suptitle.get_text()
    assert "±1 s.e.m." in fig._suptitle.get_text()

    # a legend entry for every line style
    assert {"loss minimised F(t)", "its static version (Γ ≡ 1)"} <= legend_labels(loss_ax)
    assert {"loss=ce, eta=0.5", "loss=dce, eta=0.25"} <= legend_labels(loss_ax)
    assert legend_labels(acc_ax) == {"train", "validation", f"chance (1/C = 1/{C})"}
    assert legend_labels(lam_ax) == {"λ1", "λ2", "2/η"}
    assert legend_labels(ratio_ax) == {"1 (λ1 = 2/η)"}

    # the chance line at 1/C
    (chance,) = [line for line in acc_ax.lines if line.get_label().startswith("chance")]
    np.testing.assert_allclose(chance.get_ydata(), [1 / C, 1 / C])

    # the 2/η lines: one per η, in a colour no curve has
    edges = [line for line in lam_ax.lines if len(line.get_ydata()) == 2]
    curves = [line for line in lam_ax.lines if len(line.get_ydata()) == N_EIG]
    assert sorted(float(line.get_ydata()[0]) for line in edges) == [2 / 0.5, 2 / 0.25]
    assert len(curves) == 2 * 4  # λ1 and λ2 of four configurations
    curve_colors = {
        to_rgba(line.get_color())
        for ax in fig.axes
        for line in ax.lines
        if len(line.get_ydata()) > 2  # every curve; axhline's have two points
    }
    assert len(curve_colors) >= 4
    for line in edges:
        assert to_rgba(line.get_color()) == to_rgba(THRESHOLD_COLOR) not in curve_colors
    assert to_rgba(chance.get_color()) not in curve_colors | {to_rgba(THRESHOLD_COLOR)}

    # the solid train line and its band: mean ± s.e.m. over the surviving seeds, for the
    # configuration with a diverged seed (loss=dce, eta=0.25: the fourth drawn)
    index = (1, 0, 1, 0, 0)
    mean, sem = mean_sem_of_survivors(run["train_acc"][index], run["diverged"][index])
    train = [line for line in acc_ax.lines if line.get_linestyle() == "-"]
    np.testing.assert_allclose(train[3].get_ydata(), mean, rtol=1e-12)
    band = acc_ax.collections[2 * 3].get_paths()[0].vertices  # train band of the fourth
    for x, lo, hi in zip(run["record_step"], mean - sem, mean + sem, strict=True):
        ys = band[np.isclose(band[:, 0], x), 1]
        assert ys.min() == pytest.approx(lo, rel=1e-12) and ys.max() == pytest.approx(hi, rel=1e-12)


def test_one_seed_says_so_and_draws_no_band(tmp_path):
    fig = plot_run(hand_built_run(seeds=1), tmp_path / "fig.png")
    assert fig._suptitle.get_text() == "one seed per configuration (no band)"
    assert all(len(ax.collections) == 0 for ax in fig.axes)


def test_main_job_figure_has_a_chance_line_and_says_what_it_averages(tmp_path):
    from experiments import fig3_width_sweep

    run = hand_built_run()
    run.config["settings"].update(eta=[1.0], seeds=3, amplitude=[5.0], period=[10], steps=18)
    run.arrays["final_val_acc"] = run["val_acc"][..., -1]
    run.axes["final_val_acc"] = list(GRID_AXES)
    runs = {"a": run.sel(eta=0.5)}
    fig = fig3_width_sweep.plot(runs, fig3_width_sweep.summarise(runs), tmp_path / "fig3.png")
    (ax,) = fig.axes
    (chance,) = [line for line in ax.lines if line.get_label().startswith("chance")]
    np.testing.assert_allclose(chance.get_ydata(), [1 / C, 1 / C])
    assert {"CE (static)", "DCE", f"chance (1/C = 1/{C})"} == legend_labels(ax)
    assert "mean over the seeds" in fig._suptitle.get_text()
    assert "±1 s.e.m." in fig._suptitle.get_text()
