"""Figures drawn from a loaded :class:`~dynloss_jax.results.Run` (never from a live computation).

:func:`plot_run` is what ``dynloss plot`` draws: Γ_i(t), the loss being minimised and its static
version, train and validation accuracy, and — when the run tracked the Hessian — λ1, λ2 against the
edge-of-stability line 2/η and η·λ1 against 2. Each configuration is the mean over its seeds.
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dynloss_jax.results import GRID_AXES, Run  # noqa: E402

MAX_LINES = 12


def configurations(run: Run, limit: int | None = MAX_LINES):
    """(label, index) for each non-seed point of the sweep grid, at most ``limit``; the label
    names the axes that vary (or the whole configuration when none does)."""
    shape = [len(run.coords[a]) for a in GRID_AXES[:-1]]
    varying = [a for a, n in zip(GRID_AXES[:-1], shape) if n > 1]
    out = []
    for index in itertools.product(*(range(n) for n in shape)):
        label = ", ".join(f"{a}={run.coords[a][i]}" for a, i in zip(GRID_AXES[:-1], index)
                          if a in varying) or _describe(run, index)
        out.append((label, index))
    return out[:limit]


def _describe(run: Run, index) -> str:
    c = {a: run.coords[a][i] for a, i in zip(GRID_AXES[:-1], index)}
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


def plot_run(run: Run, path, title: str | None = None):
    """Writes the standard figure of ``run`` to ``path`` (PNG) and returns the figure."""
    has_eig = "lam" in run.arrays
    n_rows = 5 if has_eig else 3
    fig, axes = plt.subplots(n_rows, 1, figsize=(9, 2.3 * n_rows), sharex=True,
                             constrained_layout=True)
    steps = run.arrays["record_step"]
    confs = configurations(run)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    first = confs[0][1]
    gamma = run.arrays["gamma"][first][0]
    for i in range(gamma.shape[-1]):
        axes[0].plot(steps, gamma[:, i], lw=1, label=f"Γ{i}")
    axes[0].set_ylabel("Γ_i(t)")
    axes[0].legend(loc="upper right", fontsize=7, ncol=gamma.shape[-1])
    axes[0].set_title(title or f"{_describe(run, first)} (Γ of the first configuration)",
                      fontsize=9)

    for (label, index), color in zip(confs, itertools.cycle(colors)):
        axes[1].semilogy(steps, seed_mean(run, "loss", index), color=color, lw=1, label=label)
        axes[1].semilogy(steps, seed_mean(run, "static_loss", index), color=color, lw=0.8,
                         ls=":")
        axes[2].plot(steps, seed_mean(run, "train_acc", index), color=color, lw=1)
        axes[2].plot(steps, seed_mean(run, "val_acc", index), color=color, lw=0.8, ls="--")
        if has_eig:
            eta = run.coords["eta"][index[2]]
            eig_steps = run.arrays["eig_step"]
            lam = seed_mean(run, "lam", index)
            axes[3].plot(eig_steps, lam[:, 0], color=color, lw=1)
            axes[3].plot(eig_steps, lam[:, 1], color=color, lw=0.7, alpha=0.6)
            axes[3].axhline(2 / eta, color=color, ls="--", lw=0.8)
            axes[4].plot(eig_steps, eta * lam[:, 0], color=color, lw=1)
    axes[1].set_ylabel("loss F(t)\n(dotted: static)")
    axes[1].legend(fontsize=7, loc="best")
    axes[2].set_ylabel("accuracy\n(dashed: validation)")
    if has_eig:
        axes[3].set_ylabel("λ1, λ2\n(dashed: 2/η)")
        axes[4].axhline(2, color="k", ls="--", lw=0.8)
        axes[4].set_ylabel("η·λ1")
    axes[-1].set_xlabel("step t")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
