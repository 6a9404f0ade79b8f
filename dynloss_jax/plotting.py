"""Figures drawn from a loaded :class:`~dynloss_jax.results.Run` (never from a live computation).

:func:`plot_run` is what ``dynloss plot`` draws: Γ_i(t), the loss being minimised and its static
version, train and validation accuracy, and — when the run tracked the Hessian — λ1, λ2 against the
optimiser's edge-of-stability line (2/η for GD; ``config.json`` ``threshold``) and λ1 over that
line against 1; with the spectrum recorded also each block's λ1, the trace and the spectral
density of the first configuration over time. Each configuration's curve is the mean over its
seeds (diverged runs left out), with a band of ±1 standard error of that mean where there are two
or more seeds; the figure's subtitle says so. Every line style has a legend entry, the
edge-of-stability line is drawn in black (:data:`THRESHOLD_COLOR`, no curve's colour), and the
accuracy panel has the chance level 1/C (:data:`CHANCE_COLOR`).

The module leaves matplotlib's backend alone (a notebook's inline backend survives the import);
the ``dynloss`` command selects the file-only ``Agg`` backend itself.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np

from dynloss_jax.config import GRID_AXES
from dynloss_jax.losses import DYNAMICAL
from dynloss_jax.run import Run

MAX_LINES = 12
THRESHOLD_COLOR = "black"  # the edge-of-stability line: not in matplotlib's colour cycle
CHANCE_COLOR = "0.55"  # the chance level 1/C on accuracy panels (grey)
BAND_ALPHA = 0.18


def configurations(run: Run, limit: int | None = MAX_LINES):
    """(label, index) for each non-seed point of the sweep grid, at most ``limit``; the label
    names the axes that vary (or the whole configuration when none does)."""
    axes = _grid_axes(run)
    shape = [len(run.coords[a]) for a in axes]
    varying = [a for a, n in zip(axes, shape, strict=True) if n > 1]
    out = []
    for index in itertools.product(*(range(n) for n in shape)):
        pairs = zip(axes, index, strict=True)
        label = ", ".join(f"{a}={run.coords[a][i]}" for a, i in pairs if a in varying)
        label = label or _describe(run, index)
        out.append((label, index))
    return out[:limit]


def _grid_axes(run: Run) -> list[str]:
    """The run's grid axes but the seed (the paper's: loss, width, eta, amplitude, period)."""
    return [a for a in run.coords if a != "seed"]


def _describe(run: Run, index) -> str:
    c = {a: run.coords[a][i] for a, i in zip(_grid_axes(run), index, strict=True)}
    if list(c) != list(GRID_AXES[:-1]):
        return ", ".join(f"{a}={v}" for a, v in c.items())
    return f"{c['loss']}, width {c['width']}, η={c['eta']}, A={c['amplitude']}, T={c['period']}"


def seed_mean(run: Run, name: str, index):
    """Mean over seeds (NaN-aware, diverged runs excluded) of array ``name`` at grid ``index``."""
    a = np.asarray(run.arrays[name][index], dtype=float)
    div = run.arrays["diverged"][index]
    a = np.where(div.reshape(div.shape + (1,) * (a.ndim - 1)), np.nan, a)
    with np.errstate(invalid="ignore"), _quiet_nan():
        return np.nanmean(a, axis=0)


class _quiet_nan:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def seed_sem(run: Run, name: str, index):
    """Standard error of :func:`seed_mean`: s/√n over the n finite values of non-diverged seeds
    (s² = Σ (a − mean)² / (n − 1)); NaN where n < 2."""
    return run.summary(name)[1][index]


def n_classes(run: Run) -> int:
    """C of the run's data set (``config.json``'s ``data``, else the ``n_classes`` setting)."""
    data = run.config.get("data") or {}
    return int(data.get("n_classes") or run.config["settings"].get("n_classes", 3))


def subtitle(run: Run) -> str:
    """What the curves of :func:`plot_run` are: the mean over how many seeds, with what band."""
    seeds = len(run.coords["seed"])
    if seeds == 1:
        return "one seed per configuration (no band)"
    return (
        f"curves: mean over {seeds} seeds per configuration (diverged runs left out); "
        "bands: ±1 s.e.m. over seeds"
    )


def _band(ax, x, mean, sem, color) -> None:
    if np.any(np.isfinite(sem)):
        ax.fill_between(x, mean - sem, mean + sem, color=color, alpha=BAND_ALPHA, lw=0)


def _styles(entries, color="0.3") -> list:
    """Legend handles of line styles alone: ``entries`` = [(label, linestyle, linewidth)]."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=color, ls=ls, lw=lw, label=t) for t, ls, lw in entries]


def _threshold(run: Run, threshold: dict, index) -> float:
    """The edge-of-stability value at the η of grid ``index`` (2/η when not recorded)."""
    eta_index = index[_grid_axes(run).index("eta")]
    if threshold.get("value"):
        return threshold["value"][eta_index]
    if threshold.get("label") == "unknown":  # a task's optimiser without a known line
        return float("nan")
    return 2.0 / run.coords["eta"][eta_index]


def density_image(nodes, weights, n_grid: int = 200, sigma: float | None = None):
    """The broadened spectral density of every measurement of one run: ``(grid_G, rho_GxD)``
    for nodes and weights of shape ``(D, probes, m)``, on a grid spanning all nodes, with σ
    (default) 1/100 of that span. NaN measurements (a diverged run) give NaN columns."""
    from dynloss_jax.spectrum import density_on_grid

    finite = np.isfinite(nodes)
    low, high = (float(np.min(nodes[finite])), float(np.max(nodes[finite])))
    pad = 0.05 * (high - low or 1.0)
    grid = np.linspace(low - pad, high + pad, n_grid)
    sigma = sigma or (grid[-1] - grid[0]) / 100
    cols = [
        np.asarray(density_on_grid(np.nan_to_num(n), np.nan_to_num(w), grid, sigma))
        if np.all(np.isfinite(n))
        else np.full(n_grid, np.nan)
        for n, w in zip(nodes, weights, strict=True)
    ]
    return grid, np.stack(cols, axis=1)


def _density_panel(ax, run: Run, index) -> None:
    nodes = run.arrays["density_nodes"][index][0]
    weights = run.arrays["density_weights"][index][0]
    grid, rho = density_image(nodes, weights)
    steps = run.arrays["density_step"]
    extent = (steps[0], steps[-1] + (steps[1] - steps[0] if len(steps) > 1 else 1), *grid[[0, -1]])
    ax.imshow(
        np.log10(rho + 1e-6 * np.nanmax(rho)),
        origin="lower",
        aspect="auto",
        extent=extent,
        cmap="magma",
        interpolation="nearest",
    )
    ax.set_ylabel("eigenvalue\n(log density, seed 0)")


def plot_run(run: Run, path, title: str | None = None):
    """Writes the standard figure of ``run`` to ``path`` (PNG) and returns the figure."""
    steps = run.arrays["record_step"]
    confs = configurations(run)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Γ is drawn for the first configuration whose loss uses it (CE and MSE ignore Γ).
    dynamical = [
        index
        for _, index in confs
        if "loss" not in run.coords or run.coords["loss"][index[0]] in DYNAMICAL
    ]
    rows = (["gamma"] if dynamical else []) + ["loss", "acc"]
    if "lam" in run.arrays:
        rows += ["lam", "eta_lam"]
    rows += [name for name in ("layer_lam", "trace") if name in run.arrays]
    if "density_nodes" in run.arrays:
        rows.append("density")
    threshold = run.config.get("threshold", {"label": "2/η", "value": None})
    fig, ax_list = plt.subplots(
        len(rows), 1, figsize=(9, 2.3 * len(rows)), sharex=True, constrained_layout=True
    )
    axes = dict(zip(rows, ax_list, strict=True))

    if dynamical:
        gamma = run.arrays["gamma"][dynamical[0]][0]
        for i in range(gamma.shape[-1]):
            axes["gamma"].plot(steps, gamma[:, i], lw=1, label=f"Γ{i}")
        axes["gamma"].legend(loc="upper right", fontsize=7, ncol=gamma.shape[-1])
        axes["gamma"].set_ylabel("Γ_i(t)")
        ax_list[0].set_title(title or f"Γ of {_describe(run, dynamical[0])}", fontsize=9)
    else:
        ax_list[0].set_title(title or _describe(run, confs[0][1]).split(", A=")[0], fontsize=9)

    thresholds = set()
    for (label, index), color in zip(confs, itertools.cycle(colors)):
        mean = seed_mean(run, "loss", index)
        axes["loss"].semilogy(steps, mean, color=color, lw=1, label=label)
        _band(axes["loss"], steps, mean, seed_sem(run, "loss", index), color)
        axes["loss"].semilogy(
            steps, seed_mean(run, "static_loss", index), color=color, lw=0.8, ls=":"
        )
        for name, ls, lw in (("train_acc", "-", 1), ("val_acc", "--", 0.8)):
            mean = seed_mean(run, name, index)
            axes["acc"].plot(steps, mean, color=color, lw=lw, ls=ls)
            _band(axes["acc"], steps, mean, seed_sem(run, name, index), color)
        if "lam" in axes:
            line = _threshold(run, threshold, index)
            eig_steps = run.arrays["eig_step"]
            lam = seed_mean(run, "lam", index)
            axes["lam"].plot(eig_steps, lam[:, 0], color=color, lw=1.4)
            _band(axes["lam"], eig_steps, lam[:, 0], seed_sem(run, "lam", index)[:, 0], color)
            axes["lam"].plot(eig_steps, lam[:, 1], color=color, lw=0.7, ls="-.")
            thresholds.add(float(line))
            axes["eta_lam"].plot(eig_steps, lam[:, 0] / line, color=color, lw=1)
    first = confs[0][1]
    if "layer_lam" in axes:
        blocks = run.config.get("blocks") or [
            f"block {b}" for b in range(run["layer_lam"].shape[-1])
        ]
        layer = seed_mean(run, "layer_lam", first)
        for b, name in enumerate(blocks):
            axes["layer_lam"].plot(run.arrays["eig_step"], layer[:, b], lw=1, label=name)
        axes["layer_lam"].axhline(
            _threshold(run, threshold, first),
            color=THRESHOLD_COLOR,
            ls="--",
            lw=0.8,
            label=threshold["label"],
        )
        axes["layer_lam"].legend(fontsize=7, loc="best", ncol=2)
        axes["layer_lam"].set_ylabel("λ1 per block")
    if "trace" in axes:
        tr, se = run.arrays["trace"][first][0], run.arrays["trace_se"][first][0]
        axes["trace"].errorbar(run.arrays["trace_step"], tr, yerr=se, fmt=".-", lw=1, ms=3)
        axes["trace"].set_ylabel("tr H (seed 0)\n± std. error")
    if "density" in axes:
        _density_panel(axes["density"], run, first)
    axes["loss"].set_ylabel("loss F(t)")
    axes["loss"].add_artist(axes["loss"].legend(fontsize=7, loc="upper right"))
    styles = _styles([("loss minimised F(t)", "-", 1), ("its static version (Γ ≡ 1)", ":", 0.8)])
    axes["loss"].legend(handles=styles, fontsize=7, loc="lower left")
    chance = axes["acc"].axhline(
        1 / n_classes(run),
        color=CHANCE_COLOR,
        ls=(0, (1, 3)),
        lw=1.2,
        label=f"chance (1/C = 1/{n_classes(run)})",
    )
    axes["acc"].set_ylabel("accuracy")
    styles = _styles([("train", "-", 1), ("validation", "--", 0.8)])
    axes["acc"].legend(handles=[*styles, chance], fontsize=7, loc="lower right")
    if "lam" in axes:
        for value in sorted(thresholds):
            axes["lam"].axhline(value, color=THRESHOLD_COLOR, ls="--", lw=0.9)
        axes["lam"].set_ylabel("λ1, λ2 of the\nHessian")
        styles = _styles([("λ1", "-", 1.4), ("λ2", "-.", 0.7)])
        edge = _styles([(threshold["label"], "--", 0.9)], color=THRESHOLD_COLOR)
        axes["lam"].legend(handles=[*styles, *edge], fontsize=7, loc="lower right")
        axes["eta_lam"].axhline(
            1, color=THRESHOLD_COLOR, ls="--", lw=0.9, label=f"1 (λ1 = {threshold['label']})"
        )
        axes["eta_lam"].legend(fontsize=7, loc="lower right")
        axes["eta_lam"].set_ylabel(f"λ1 / ({threshold['label']})")
    ax_list[-1].set_xlabel("step t")
    fig.suptitle(subtitle(run), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
