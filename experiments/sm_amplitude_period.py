"""Supplementary scan: validation accuracy of DCE over an (A, T) grid, relative to static CE.

The paper's Supplementary Material (not available) reports a region of amplitude A and period T
where the dynamical loss improves on the static one, and degradation (catastrophic forgetting)
when A and T become too large. Here: DCE at η = 1 on one width, every (A, T) of a grid, the same
seeds for every cell, each run ending with a static last period (as Fig. 3) and measured on the
validation spiral. A = 1 is the static loss (Γ ≡ 1, i.e. CE), so it is part of the grid and is
the reference of every cell: the heatmap (a) shows the paired difference
Δ(A, T) = mean over seeds of [val(A, T, seed) − val(1, T, seed)], annotated with its s.e.m.;
(b) shows the validation accuracy itself.

Settings (decided here, flags to change them):

* one run length for every cell, 60 000 steps (a multiple of every T), so each cell has the same
  compute budget as the static reference; a cell's last T steps are static;
* T ∈ {250, 500, 1000, 2500, 5000, 10000}: from 80 cycles through the classes down to 2 (the
  paper's Figs. 2 and 4 use T = 5000 and 10000); A ∈ {1, 2, 5, 10, 25, 50, 100}, log-spaced
  around Fig. 4's 25–75 and Fig. 2's 70;
* width 32 — small enough that static CE leaves room to improve (Fig. 3's regime where the paper
  finds the largest gain), and ~4× cheaper per step than width 100; 10 seeds.

Readings of validation accuracy (``summary.json``), each also paired with A = 1 at the same T
and seed:

1. after the static last period (``val_acc_*``, ``delta_*``; the heatmap (a), as Fig. 3);
2. at the end of the last *dynamical* period, step steps − T (``*_dynamic``; heatmap (b)). Γ has
   ramped back to 1 over the second half of that period, so forgetting has partly healed there:
   this reading cannot show it well;
3. where forgetting would show (``forgetting``, one entry per T; :func:`forgetting_readings`,
   figure ``sm_forgetting.png``): for every dynamical period k, validation accuracy and
   per-class validation accuracy (``class_records``) at τ = T/2, the peak of the emphasis of
   class k mod C (``peak``, ``class_peak``, and ``others_peak``: the lowest accuracy among the
   classes not emphasised); the minimum over the last dynamical period (``last_min``, steps
   steps − 2T … steps − T); the drop from the best earlier record to that minimum (``drop``) and
   from the best earlier peak to the last peak (``peak_drop``). Every run's own values are kept
   in ``per_seed``, so the means can be recomputed from the summary alone.

T/2 of every period must be a multiple of ``--record-every`` (checked before the run).

Forgetting looked for at long periods (``docs/results/sm_amplitude_period/long_periods/``):
A ≥ 100 is already near the A → ∞ limit (peak Γ = 3A/(A + 2)), so the open direction is T.
``--amplitudes 10 100 --periods 10000 20000 40000 --steps 280000 --seeds 8``: every class is
emphasised at least twice at T = 40 000 (six dynamical periods, then the static one). Read at
step steps − T only, that scan's one low cell was A = 100, T = 40 000 (+0.278 ± 0.034 over static
CE, against +0.398 ± 0.025 after the static period).

Forgetting read where it would show (``long_periods/forgetting/dce/``, reading 3 above):
``--amplitudes 100 --periods 40000 80000 --steps 560000 --seeds 8 --record-every 250``, every
class emphasised at least twice at T = 80 000. Static CE (width 32) ends at 0.522 ± 0.056. DCE is
below it only at the peak of the first period (−0.099 ± 0.024 at T = 40 000, −0.040 ± 0.017 at
T = 80 000: class 0 emphasised before the others are learned); from the second period on every
τ = T/2 reading is above it and the gain does not shrink (+0.353 to +0.399 over periods 7–13 at
T = 40 000; +0.337 ± 0.058 at the last peak of T = 80 000; last peak minus best earlier peak
0.014 ± 0.015 and 0.006 ± 0.029). The minimum over the last dynamical period is 0.877 ± 0.020
(T = 40 000) and 0.736 ± 0.051 (T = 80 000, Δ +0.307 ± 0.051 over static CE's minimum there),
reached at a period boundary (Γ ≈ 1) in 7 of 8 runs; its drop from the best earlier record,
0.161 ± 0.054, exceeds static CE's own 0.117 ± 0.007 by +0.043 ± 0.054 (paired; not significant).
So no catastrophic forgetting is found up to A = 100, T = 80 000 (560 000 steps).

A strong static baseline (``long_periods/forgetting/static_ce_width100/``): ``--amplitudes 1
--width 100 --periods 80000 --steps 560000 --seeds 4`` — CE at the width with the best CE
validation accuracy of Fig. 3a's sweep, η = 1 — ends at 0.943 ± 0.004, above DCE at width 32
(0.900 ± 0.011 at T = 40 000, 0.893 ± 0.013 at T = 80 000). A scan with ``--amplitudes 1`` alone
draws only ``sm_forgetting.png``.

``--quick``: A ∈ {1, 5, 25, 100}, T ∈ {250, 1000, 4000}, 16 000 steps, 4 seeds.

Runtime (2 shared CPU cores, float64): the full scan 11.7 min, the long-period one 6.2 min,
the forgetting scan 24.7 min and its width-100 baseline 6.3 min at a load average of about 10
(their ``run_info.json``); on a GPU all runs of a scan are one vmapped program (not measured).

    python -m experiments.sm_amplitude_period --quick   # -> results/sm_amplitude_period/
    python -m experiments.sm_amplitude_period --width 100 --seeds 20
    python -m experiments.sm_amplitude_period --replot
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments import common

FULL = dict(
    loss="dce",
    amplitudes=(1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0),
    periods=(250, 500, 1000, 2500, 5000, 10000),
    steps=60_000,
    width=32,
    seeds=10,
    eta=1.0,
    record_every=125,
)
QUICK = dict(
    FULL, amplitudes=(1.0, 5.0, 25.0, 100.0), periods=(250, 1000, 4000), steps=16_000, seeds=4
)
SMOKE = dict(
    FULL, amplitudes=(1.0, 25.0), periods=(20, 40), steps=120, width=4, seeds=2, record_every=10
)
OUT = "results/sm_amplitude_period"
PNG = "sm_amplitude_period.png"
FORGETTING_PNG = "sm_forgetting.png"  # drawn beside PNG by plot()
LABEL = "sm"


def add_flags(p):
    from dynloss_jax.losses import DYNAMICAL

    p.add_argument("--loss", choices=sorted(DYNAMICAL), help="dynamical loss (default dce)")
    p.add_argument(
        "--amplitudes",
        type=float,
        nargs="+",
        help="A values; 1 (the static reference) is always added",
    )
    p.add_argument("--periods", type=int, nargs="+", help="T values (each must divide --steps)")
    p.add_argument("--steps", type=int, help="GD steps of every run (default 60000; quick 16000)")
    p.add_argument("--width", type=int, help="hidden units (default 32)")
    p.add_argument("--seeds", type=int, help="seeds per cell (default 10; quick 4)")
    p.add_argument("--eta", type=float, help="learning rate (default 1)")
    p.add_argument(
        "--record-every",
        type=int,
        help="curves every k steps (default 125: T/2 of every default T)",
    )


def settings_from(args) -> dict:
    """The preset (full, quick or smoke) overridden by the flags given; A = 1 always included."""
    preset = common.settings(args, FULL, QUICK, SMOKE)
    preset["amplitudes"] = tuple(sorted(set(preset["amplitudes"]) | {1.0}))
    preset["periods"] = tuple(sorted(set(preset["periods"])))
    return preset


def configs(s: dict) -> dict:
    from dynloss_jax import SweepConfig
    from dynloss_jax.config import ConfigError

    for period in s["periods"]:
        if s["steps"] % period:
            raise ConfigError("periods", period, f"must divide --steps ({s['steps']})")
        if period % 2 or (period // 2) % s["record_every"]:
            raise ConfigError(
                "periods",
                period,
                f"T/2 must be a multiple of --record-every ({s['record_every']}), so that the "
                "peak of each period's emphasis is recorded",
            )
    return {
        "": SweepConfig(
            loss=(s["loss"],),
            width=(s["width"],),
            eta=(s["eta"],),
            amplitude=s["amplitudes"],
            period=s["periods"],
            seeds=s["seeds"],
            steps=s["steps"],
            record_every=s["record_every"],
            static_last_period=True,
            class_records=True,
        )
    }


def _at_last_dynamical_period(run):
    """Validation accuracy at the end of each run's last dynamical period (step steps − T, the
    start of its static period: no static recovery), indexed [A, T, seed]."""
    import numpy as np

    steps = run.config["settings"]["steps"]
    record_step = np.asarray(run["record_step"])
    val = np.asarray(run["val_acc"])[0, 0, 0]  # (A, T, seed, record)
    out = np.full(val.shape[:-1], np.nan)
    for ti, period in enumerate(run.coords["period"]):
        at = np.nonzero(record_step == steps - int(period))[0]
        if at.size:
            out[:, ti] = val[:, ti, :, at[0]]
    return out


def forgetting_readings(record_step, val, class_val, steps: int, period: int) -> dict:
    """The readings where forgetting would show, for one period T, from the recorded curves.

    ``record_step`` (R,) the recorded steps; ``val`` (..., R) validation accuracy; ``class_val``
    (..., R, C) per-class validation accuracy; the run has ``steps`` steps, its last period T
    static, so K = steps/T − 1 dynamical periods, period k emphasising class k mod C (the
    default class order). Per run (the leading axes ``...``):

    * ``peak`` (..., K) and ``class_peak`` (..., K, C): at step k·T + T/2, the peak of period
      k's emphasis (Γ of the emphasised class at its largest);
    * ``others_peak`` (..., K): the lowest per-class accuracy among the classes *not*
      emphasised in period k, at that step;
    * ``last_min``: the minimum over the records of the last dynamical period,
      steps − 2T ≤ step ≤ steps − T (both ends included; its end is the ``*_dynamic`` reading),
      and ``last_min_tau``: where in that period it lies, as τ/T (0 and 1 are its ends, Γ ≡ 1);
    * ``best_before``: the maximum over the records before it (step < steps − 2T);
    * ``drop`` = best_before − last_min; ``peak_drop`` = the best of the earlier peaks minus the
      last one (NaN when K < 2).

    Raises ``ValueError`` when a step it needs was not recorded.
    """
    import numpy as np

    record_step = np.asarray(record_step)
    val = np.asarray(val, dtype=float)
    class_val = np.asarray(class_val, dtype=float)
    n_dyn = steps // period - 1
    n_classes = class_val.shape[-1]
    peaks = [k * period + period // 2 for k in range(n_dyn)]
    index = []
    for step in peaks:
        (at,) = np.nonzero(record_step == step)
        if not at.size:
            raise ValueError(f"step {step} (τ = T/2 of T = {period}) was not recorded")
        index.append(int(at[0]))
    peak = val[..., index]
    class_peak = class_val[..., index, :]
    emphasised = np.arange(n_dyn) % n_classes
    others = np.arange(n_classes)[None, :] != emphasised[:, None]  # (K, C)
    others_peak = np.min(np.where(others, class_peak, np.inf), axis=-1)
    window = (record_step >= steps - 2 * period) & (record_step <= steps - period)
    before = record_step < steps - 2 * period
    if not window.any() or not before.any():
        raise ValueError(f"T = {period}: no records in the last dynamical period or before it")
    last_min = val[..., window].min(axis=-1)
    last_min_step = record_step[window][np.argmin(val[..., window], axis=-1)]
    best_before = val[..., before].max(axis=-1)
    with np.errstate(invalid="ignore"):
        peak_drop = (
            peak[..., :-1].max(axis=-1) - peak[..., -1]
            if n_dyn > 1
            else np.full(val.shape[:-1], np.nan)
        )
    return {
        "peak_step": peaks,
        "emphasised": emphasised.tolist(),
        "peak": peak,
        "class_peak": class_peak,
        "others_peak": others_peak,
        "last_min": last_min,
        "last_min_tau": (last_min_step - (steps - 2 * period)) / period,
        "best_before": best_before,
        "drop": best_before - last_min,
        "peak_drop": peak_drop,
    }


def _mean_sem_seeds(x, axis: int):
    """Mean and s.e.m. over ``axis`` of the finite entries (NaN where none, sem where < 2)."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.sum(np.isfinite(x), axis)
        m = np.nanmean(x, axis) if x.size else np.sum(x, axis)
        e = np.nanstd(x, axis, ddof=1) / np.sqrt(k)
    return np.where(k > 0, m, np.nan), np.where(k > 1, e, np.nan)


def _forgetting(run, amplitudes: list) -> list:
    """:func:`forgetting_readings` for every T of the run, as mean ± s.e.m. over seeds per A,
    the paired differences to A = 1 (same T and seed), and every run's own values (``per_seed``,
    indexed [A][seed]...), so that every mean can be recomputed from the summary alone.
    Diverged runs are NaN and left out of the means."""
    import numpy as np

    s = run.config["settings"]
    if s.get("order_seed", -1) not in (-1, None):
        raise ValueError("the forgetting readings assume the default class order (k mod C)")
    steps = s["steps"]
    diverged = np.asarray(run["diverged"], dtype=bool)[0, 0, 0]  # (A, T, seed)
    val = np.asarray(run["val_acc"], dtype=float)[0, 0, 0]  # (A, T, seed, record)
    class_val = np.asarray(run["class_val_acc"], dtype=float)[0, 0, 0]  # (..., record, class)
    i1 = amplitudes.index(1.0)
    out = []
    for ti, period in enumerate(run.coords["period"]):
        r = forgetting_readings(
            run["record_step"], val[:, ti], class_val[:, ti], steps, int(period)
        )
        entry = {
            "period": int(period),
            "dynamical_periods": len(r["peak_step"]),
            "peak_step": r["peak_step"],
            "emphasised": r["emphasised"],
            "last_window": [steps - 2 * int(period), steps - int(period)],
        }
        per_seed = {}
        for name in ("peak", "class_peak", "others_peak", "last_min", "last_min_tau",
                     "best_before", "drop", "peak_drop"):  # fmt: skip
            a = np.array(r[name], dtype=float)  # (A, seed, ...)
            a[diverged[:, ti]] = np.nan
            per_seed[name] = a
            mean, sem = _mean_sem_seeds(a, 1)
            entry[name + "_mean"], entry[name + "_sem"] = mean.tolist(), sem.tolist()
            if name in ("peak", "others_peak", "last_min", "drop", "peak_drop"):
                mean, sem = _mean_sem_seeds(a - a[i1][None], 1)
                entry["delta_" + name + "_mean"] = mean.tolist()
                entry["delta_" + name + "_sem"] = sem.tolist()
        entry["per_seed"] = {
            name: per_seed[name].tolist()
            for name in ("peak", "class_peak", "last_min", "last_min_tau", "best_before")
        }
        out.append(entry)
    return out


CURVES = "curves.npz"


def save_curves(run, path) -> None:
    """The validation curves the forgetting readings use, small enough to keep beside the
    summary: the number of correctly classified validation points, overall (``val_correct``,
    [A, T, seed, record]) and per class (``class_val_correct``, [..., record, class]), as
    uint16 (accuracy × points, an integer), with ``record_step``, the axes' values and the
    point counts. Raises ``ValueError`` if an accuracy is not a whole number of points."""
    import numpy as np

    s = run.config["settings"]
    n_classes, per_class = s["n_classes"], s["points_per_class"]
    if s["data"] != "spiral":
        raise ValueError("save_curves assumes the spiral validation set (points_per_class each)")
    val = np.asarray(run["val_acc"], dtype=float)[0, 0, 0] * (n_classes * per_class)
    cval = np.asarray(run["class_val_acc"], dtype=float)[0, 0, 0] * per_class
    counts = []
    for a in (val, cval):
        r = np.round(np.nan_to_num(a, nan=0.0))
        if np.max(np.abs(np.nan_to_num(a, nan=0.0) - r), initial=0.0) > 1e-6:
            raise ValueError("an accuracy is not a whole number of validation points")
        counts.append(r.astype(np.uint16))
    np.savez_compressed(
        path,
        record_step=np.asarray(run["record_step"]),
        amplitude=np.asarray(run.coords["amplitude"], dtype=float),
        period=np.asarray(run.coords["period"]),
        seed=np.asarray(run.coords["seed"]),
        diverged=np.asarray(run["diverged"], dtype=bool)[0, 0, 0],
        val_points=np.asarray(n_classes * per_class),
        class_val_points=np.asarray(per_class),
        val_correct=counts[0],
        class_val_correct=counts[1],
    )


def after_runs(runs: dict, s: dict, args) -> None:
    """Keeps :data:`CURVES` beside the run's arrays."""
    run = runs[""]
    save_curves(run, Path(run.path) / CURVES)


def summarise(runs: dict) -> dict:
    """Mean and s.e.m. over seeds of the final validation accuracy per (A, T), and of its paired
    difference to A = 1 at the same T and seed; the same read at the end of the last dynamical
    period, before the static one (``*_dynamic``; NaN where that step was not recorded).
    Arrays are indexed [A, T]. ``forgetting``: the readings of :func:`_forgetting`, a list
    over T (their arrays indexed [A][period k] or [A][seed][period k])."""
    import numpy as np

    from dynloss_jax.config import ConfigError

    run = runs[""]
    amplitudes = [float(a) for a in run.coords["amplitude"]]
    if 1.0 not in amplitudes:
        raise ConfigError("amplitudes", amplitudes, "must include 1 (the static reference)")
    acc_mean, acc_sem, n = (a.reshape(len(amplitudes), -1) for a in run.summary("final_val_acc"))
    d_mean, d_sem = [], []
    for a in amplitudes:
        mean, sem, _ = run.paired("final_val_acc", "amplitude", a, 1.0)
        d_mean.append(mean.reshape(-1))
        d_sem.append(sem.reshape(-1))
    dyn = _at_last_dynamical_period(run)  # (A, T, seed)
    diff = dyn - dyn[amplitudes.index(1.0)][None]

    def mean_sem(x):
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.sum(np.isfinite(x), -1)
            m = np.nanmean(x, -1) if x.size else x
            e = np.nanstd(x, -1, ddof=1) / np.sqrt(k)
        return np.where(k > 0, m, np.nan).tolist(), np.where(k > 1, e, np.nan).tolist()

    dyn_mean, dyn_sem = mean_sem(dyn)
    dd_mean, dd_sem = mean_sem(diff)
    return {
        "amplitude": amplitudes,
        "period": [int(t) for t in run.coords["period"]],
        "val_acc_mean": acc_mean.tolist(),
        "val_acc_sem": acc_sem.tolist(),
        "delta_mean": [d.tolist() for d in d_mean],
        "delta_sem": [d.tolist() for d in d_sem],
        "val_acc_dynamic_mean": dyn_mean,
        "val_acc_dynamic_sem": dyn_sem,
        "delta_dynamic_mean": dd_mean,
        "delta_dynamic_sem": dd_sem,
        "runs": n.tolist(),
        "diverged": int(run["diverged"].sum()),
        "forgetting": _forgetting(run, amplitudes),
    }


def table(runs: dict, summary: dict) -> str:
    s = runs[""].config["settings"]
    amplitudes, periods = summary["amplitude"], summary["period"]
    i1 = amplitudes.index(1.0)
    ref, ref_sem = summary["val_acc_mean"][i1][0], summary["val_acc_sem"][i1][0]
    lines = [
        f"(A, T) scan: {s['loss'][0]} at η = {s['eta'][0]:g}, width {s['width'][0]}, "
        f"{s['steps']} steps, {s['seeds']} seeds; static reference (A = 1) validation "
        f"accuracy {ref:.3f} ± {ref_sem:.3f}",
        "Δ validation accuracy vs A = 1 (paired mean ± s.e.m. over seeds)",
        f"{'A / T':>7}" + "".join(f"{t:>17}" for t in periods),
    ]
    for key, title in (
        ("delta", None),
        ("delta_dynamic", "the same at the end of the last dynamical period (no static recovery)"),
    ):
        if title:
            lines.append(title)
        for ai, a in enumerate(amplitudes):
            if ai == i1:
                continue
            cells = [
                f"{summary[key + '_mean'][ai][ti]:+.3f} ± {summary[key + '_sem'][ai][ti]:.3f}"
                for ti in range(len(periods))
            ]
            lines.append(f"{a:>7g}" + "".join(f"{c:>17}" for c in cells))
    lines.extend(_forgetting_table(summary))
    if summary["diverged"]:
        lines.append(f"({summary['diverged']} runs diverged and are left out)")
    return "\n".join(lines)


def _forgetting_table(summary: dict) -> list:
    amplitudes = summary["amplitude"]
    i1 = amplitudes.index(1.0)
    lines = [
        "Forgetting readings (mean over seeds): validation accuracy at τ = T/2 of each dynamical "
        "period; min over the last dynamical period; drop = best earlier record − that min"
    ]
    for f in summary.get("forgetting", []):
        order = "".join(str(c) for c in f["emphasised"])
        lines.append(
            f"T = {f['period']} ({f['dynamical_periods']} dynamical periods, emphasised classes "
            f"{order}; last one steps {f['last_window'][0]}–{f['last_window'][1]})"
        )
        for ai, a in enumerate(amplitudes):
            peaks = " ".join(f"{v:.2f}" for v in f["peak_mean"][ai])
            lines.append(
                f"  A = {a:<4g} peaks {peaks} | last-period min {f['last_min_mean'][ai]:.3f} ± "
                f"{f['last_min_sem'][ai]:.3f} | drop {f['drop_mean'][ai]:.3f} ± "
                f"{f['drop_sem'][ai]:.3f}"
            )
            if ai != i1:
                lines.append(
                    f"  {'':8} vs A = 1: last peak {f['delta_peak_mean'][ai][-1]:+.3f} ± "
                    f"{f['delta_peak_sem'][ai][-1]:.3f}, last-period min "
                    f"{f['delta_last_min_mean'][ai]:+.3f} ± {f['delta_last_min_sem'][ai]:.3f}"
                )
    return lines


def plot(runs: dict, summary: dict, path):
    """Draws the three heatmaps from a loaded run and its summary; returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    s = runs[""].config["settings"]
    amplitudes, periods = summary["amplitude"], summary["period"]
    i1 = amplitudes.index(1.0)
    keep = [i for i in range(len(amplitudes)) if i != i1]
    if not keep:  # the static loss alone (a baseline run): no differences to draw
        return plot_forgetting(
            summary,
            path,
            title=f"static {s['loss'][0].upper()} (A = 1): width {s['width'][0]}, "
            f"η = {s['eta'][0]:g}, {s['steps']} steps, {s['seeds']} seeds",
        )
    acc = np.asarray(summary["val_acc_mean"]).T
    fig, (ax_d, ax_dyn, ax_a) = plt.subplots(
        1,
        3,
        figsize=(4.2 + 1.1 * len(amplitudes) * 3, 2.2 + 0.65 * len(periods)),
        constrained_layout=True,
        gridspec_kw={"width_ratios": [len(keep), len(keep), len(amplitudes)]},
    )
    deltas = {
        key: (
            np.asarray(summary[key + "_mean"])[keep].T,  # rows T, columns A
            np.asarray(summary[key + "_sem"])[keep].T,
        )
        for key in ("delta", "delta_dynamic")
    }
    finite = np.concatenate([np.ravel(d) for d, _ in deltas.values()])
    finite = finite[np.isfinite(finite)]
    limit = max(np.max(np.abs(finite)) if finite.size else 1.0, 1e-3)
    for ax, (delta, delta_sem) in zip((ax_d, ax_dyn), deltas.values(), strict=True):
        im = ax.imshow(delta, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
        for (ti, ai), value in np.ndenumerate(delta):
            ax.text(
                ai,
                ti,
                f"{value:+.3f}\n±{delta_sem[ti, ai]:.3f}",
                ha="center",
                va="center",
                fontsize=7.5,
                color="k" if not abs(value) >= 0.6 * limit else "w",
            )
    fig.colorbar(im, ax=[ax_d, ax_dyn], label="Δ validation accuracy vs A = 1")
    im = ax_a.imshow(acc, cmap="viridis", aspect="auto", origin="lower")
    for (ti, ai), value in np.ndenumerate(acc):
        ax_a.text(
            ai,
            ti,
            f"{value:.3f}",
            ha="center",
            va="center",
            fontsize=7.5,
            color="w" if value < np.nanmean(acc) else "k",
        )
    fig.colorbar(im, ax=ax_a, label="validation accuracy")
    kept = [amplitudes[i] for i in keep]
    for ax, cols in ((ax_d, kept), (ax_dyn, kept), (ax_a, amplitudes)):
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{a:g}" for a in cols])
        ax.set_yticks(range(len(periods)))
        ax.set_yticklabels([str(t) for t in periods])
        ax.set_xlabel("amplitude A")
        ax.set_ylabel("period T (steps)")
    ref = summary["val_acc_mean"][i1][0]
    name = s["loss"][0].upper()
    ax_d.set_title(f"(a) {name} − static, after the static period", fontsize=8.5, loc="left")
    ax_dyn.set_title(f"(b) {name} − static, before it", fontsize=8.5, loc="left")
    ax_a.set_title(f"(c) validation accuracy (A = 1, static: {ref:.3f})", fontsize=8.5, loc="left")
    fig.suptitle(
        f"(A, T) scan: width {s['width'][0]}, η = {s['eta'][0]:g}, {s['steps']} steps "
        f"(last period static), {s['seeds']} seeds per cell",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if summary.get("forgetting"):
        plot_forgetting(
            summary, Path(path).with_name(FORGETTING_PNG), title=fig._suptitle.get_text()
        )
    return fig


def plot_forgetting(summary: dict, path, title: str = ""):
    """One panel per T: validation accuracy at τ = T/2 of each dynamical period (mean ± s.e.m.
    over seeds, one line per A) and, at the last one, the minimum over that period (open
    marker); returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    entries = summary["forgetting"]
    amplitudes = summary["amplitude"]
    fig, axes = plt.subplots(
        1, len(entries), figsize=(4.2 * len(entries), 3.4), squeeze=False, constrained_layout=True
    )
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(amplitudes)))
    for ax, f in zip(axes[0], entries, strict=True):
        k = np.arange(f["dynamical_periods"])
        for ai, a in enumerate(amplitudes):
            mean, sem = np.asarray(f["peak_mean"][ai]), np.asarray(f["peak_sem"][ai])
            ax.errorbar(k, mean, yerr=sem, color=colors[ai], marker="o", ms=3, capsize=2,
                        label=f"A = {a:g}" + (" (static)" if a == 1.0 else ""))  # fmt: skip
            ax.errorbar(k[-1] + 0.25, f["last_min_mean"][ai], yerr=f["last_min_sem"][ai],
                        color=colors[ai], marker="o", mfc="none", capsize=2)  # fmt: skip
        ax.set_xticks(k)
        ax.set_xticklabels([f"{i}\n(c{c})" for i, c in zip(k, f["emphasised"], strict=True)],
                           fontsize=7)  # fmt: skip
        ax.set_xlabel("dynamical period k (emphasised class)")
        ax.set_ylabel("validation accuracy at τ = T/2")
        ax.set_title(f"T = {f['period']}; open: min over the last period", fontsize=8.5)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
