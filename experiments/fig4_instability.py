"""Fig. 4: the sharpness λ1 at the first instability against the learning rate η, vs 2/η.

For DCE, DMSE1 and DMSE2, each run is watched by an online period-2 onset rule
(``dynloss_jax.instability``; ``--detector``, default ``calibrated``: the loss starts to zigzag
with geometrically growing amplitude, above the run's own noise floor). When it confirms an onset
at step t0, λ1 and λ2 of F_{t0} are computed at the parameters of step t0 itself (kept in the
engine's carry; 40 Lanczos steps, ≤ 1e-10 relative) — not interpolated between tracking
measurements — and the run stops there (``stop_at_onset``). The figure shows the mean over seeds
and conditions (A, T) per loss and η on log-log axes with the edge-of-stability line 2/η; faint
points are the per-condition means. A least-squares fit of log λ1 = c + b·log η over all runs
with an onset gives the slope b (−1 for λ1 = 2/η), printed with its standard error; runs without
an onset within the step limit are counted in the table, not in the fit.

Which rule decides what the onset is, so the same runs are read by every rule of ``WATCH``
too (``--watch``): the second-difference rule at 1e-6, 1e-5 and 1e-4·|F|, the first-difference
rule, and the calibrated rule asking for 5 % growth a step or a floor of 10×. Each watched rule
gets its own onset and λ1 in the same trajectory; a run goes on until every rule has fired or
``--watch-steps-eta``/η steps (500/η) after its own onset, so a watched rule's mean is over the
runs in which it fired within that window (the count is printed). ``sensitivity.json`` holds,
per rule, the mean η·λ1/2 per (loss, η) with its s.e.m. and the fitted slope per loss; panel
(c) draws it. Runs with λ1 tracked at every step (``dense_*``: A = 50, T = 5000,
``--dense-seeds`` seeds, η of ``--dense-etas-ce`` / ``--dense-etas-mse``) give, per rule, the
steps from its onset to the first step with λ1 > 2/η.

Paper settings (the defaults): width 100, A ∈ {25, 50, 75}, T ∈ {5000, 10000}, 100 000/η steps
for DCE, 30 seeds per condition. DMSE1 and DMSE2 runs are capped at 10 000/η steps
(``--steps-eta-mse``): their median onset steps are at most 2 434/η (``summary.json``), and a run
that never fired would otherwise cost 2·10⁶ steps; runs without an onset are counted. The total
number of steps depends on η: each run stops after its own steps_eta/η steps
(``SweepConfig.steps_eta``) if its onset has not stopped it first, so that every η of a loss
family shares one sweep, ``<out>/dce/`` and ``<out>/dmse1_dmse2/`` (and ``dense_…``), records on
one grid (NaN after a run stopped). ``config.json`` says how many compiled programs ran: one per
sweep on an accelerator (the DMSE losses share one, ``Strategy.pad_widths``), one per loss on a
CPU — 6 in all where the per-(loss, η) layout (``--programs eta``: one sweep per (loss, η) in
``<out>/<loss>_eta_<η>/``, as the runs stored in ``float32/`` and ``second_difference_30_seeds/``
were made) compiles 19. Both give every run the same onset and λ to rounding
(``tests/test_experiments.py``); ``python -m benchmarks.fig4_layouts`` times them.

The η grids are not given (SPEC §2); decided here, a factor 2 apart, one per loss family:

* DMSE1, DMSE2: η = 0.05, 0.1, 0.2, 0.4. MSE's sharpness at initialisation is λ1 ≈ 3–4.3 at
  width 100, so η ≤ 0.4 keeps 2/η ≥ 5 above it (no run starts unstable);
* DCE: η = 0.25, 0.5, 1, 2. DCE starts flat (λ1 ≈ 0.5–0.7) and sharpens slowly: in 2000/η-step
  runs at η ≤ 0.4 its λ1 never passed 3, far below 2/η ≥ 5; η = 1 is the rate of the paper's
  Figs. 2 and 3a.

The stored run (``docs/results/fig4_instability/``) used ``--seeds 10``: seeds 0–9 of every
condition, 720 runs plus 14 dense ones, 534 s on the 2 CPU cores as one sweep per loss family
(``run_info.json``, ``sweeps/``). An earlier run of the same settings as 19 per-(loss, η)
sweeps took 19 min on another day; it wrote the same ``summary.json`` byte for byte, and every
main run's onset step, λ there and final loss are bit-identical between the two layouts (the
runs with λ1 at every step agree to ≤ 9e-11 in λ at the onsets): ``per_eta_run_info.json`` and
``layouts_compared.json`` (``python -m benchmarks.fig4_layouts --compare``).
The earlier 30-seed run under the second-difference rule at 1e-5 is kept in
``docs/results/fig4_instability/second_difference_30_seeds/``; its seeds 0–9 are the same
trajectories as here, and that rule's means agree (e.g. DMSE2 at η = 0.05: 0.972 over 30 seeds,
0.969 over these 10).

``--quick``: η = 0.1, 0.2, 0.4 (DMSE) and 0.5, 1, 2 (DCE), A = 50, T = 500, 2500/η steps (T and
the run length scaled down by 10 and 40), 2 seeds.

    python -m experiments.fig4_instability --quick      # -> results/fig4_instability/
    python -m experiments.fig4_instability --seeds 10   # the stored run
    python -m experiments.fig4_instability --watch     # one rule only: no watched rules
    python -m experiments.fig4_instability --replot
"""

from __future__ import annotations

import math
import sys
import warnings

from experiments import common

# The rules compared with the run's own (``--detector``) in the same runs, each with its own
# onset and λ there (``sensitivity.json``): the second-difference rule at three tolerances, the
# first-difference rule, and the calibrated rule asking for faster growth or a higher floor.
WATCH = (
    "second_difference:tol=1e-6",
    "second_difference:tol=1e-5",
    "second_difference:tol=1e-4",
    "first_difference:tol=1e-5",
    "calibrated:growth=1.05",
    "calibrated:k=10",
)
FULL = dict(
    losses=("dce", "dmse1", "dmse2"),
    etas_ce=(0.25, 0.5, 1.0, 2.0),
    etas_mse=(0.05, 0.1, 0.2, 0.4),
    amplitudes=(25.0, 50.0, 75.0),
    periods=(5000, 10000),
    seeds=30,
    width=100,
    steps_eta=100_000,
    steps_eta_mse=10_000,
    record_every=100,
    eig_every=0,
    detector="calibrated",
    watch=WATCH,
    watch_steps_eta=500,
    dense_seeds=2,
    dense_etas_ce=(0.5, 1.0, 2.0),
    dense_etas_mse=(0.2, 0.4),
    dense_matvecs=10,
    programs="family",
)
QUICK = dict(
    FULL,
    etas_ce=(0.5, 1.0, 2.0),
    etas_mse=(0.1, 0.2, 0.4),
    amplitudes=(50.0,),
    periods=(500,),
    seeds=2,
    steps_eta=2500,
    steps_eta_mse=2500,
    dense_seeds=1,
    dense_etas_ce=(2.0,),
    dense_etas_mse=(0.4,),
)
# the smallest case with real onsets (every run fires near step 450 at η = 2)
SMOKE = dict(
    FULL,
    losses=("dce",),
    etas_ce=(1.0, 2.0),
    amplitudes=(50.0,),
    periods=(500,),
    seeds=2,
    width=32,
    steps_eta=2000,
    record_every=10,
    watch=("second_difference:tol=1e-5", "first_difference:tol=1e-5"),
    watch_steps_eta=200,
    dense_seeds=1,
    dense_etas_ce=(2.0,),
    dense_etas_mse=(),
)
OUT = "results/fig4_instability"
PNG = "fig4_instability.png"
LABEL = "fig4"
NAMES = {"dce": "DCE", "dmse1": "DMSE1", "dmse2": "DMSE2", "ce": "CE", "mse": "MSE"}


def add_flags(p):
    p.add_argument("--losses", nargs="+", help="dynamical losses (default dce dmse1 dmse2)")
    p.add_argument(
        "--etas-ce", type=float, nargs="+", help="learning rates of DCE (default 0.25 0.5 1 2)"
    )
    p.add_argument(
        "--etas-mse",
        type=float,
        nargs="+",
        help="learning rates of DMSE1, DMSE2 (default 0.05 0.1 0.2 0.4)",
    )
    p.add_argument("--amplitudes", type=float, nargs="+", help="A values (default 25 50 75)")
    p.add_argument("--periods", type=int, nargs="+", help="T values (default 5000 10000)")
    p.add_argument("--seeds", type=int, help="seeds per condition (default 30; quick 2)")
    p.add_argument("--width", type=int, help="hidden units (default 100)")
    p.add_argument(
        "--steps-eta",
        type=float,
        help=f"run length × η, i.e. steps = this/η (default {FULL['steps_eta']}; "
        f"quick {QUICK['steps_eta']})",
    )
    p.add_argument(
        "--steps-eta-mse",
        type=float,
        help=f"the same for DMSE1, DMSE2 (default {FULL['steps_eta_mse']}; "
        f"quick {QUICK['steps_eta_mse']})",
    )
    p.add_argument(
        "--record-every", type=int, help=f"loss every k steps (default {FULL['record_every']})"
    )
    p.add_argument("--detector", help="the onset rule of the runs (default calibrated)")
    p.add_argument(
        "--watch", nargs="*", help="rules compared in the same runs (default: WATCH; none: off)"
    )
    p.add_argument(
        "--watch-steps-eta",
        type=float,
        help="a run goes on this/η steps after its onset for the watched rules (default 500)",
    )
    p.add_argument(
        "--dense-seeds",
        type=int,
        help="seeds per (loss, η) of the runs with λ1 at every step (default 2; 0: none)",
    )
    p.add_argument("--dense-etas-ce", type=float, nargs="*", help="η of DCE with dense λ1")
    p.add_argument("--dense-etas-mse", type=float, nargs="*", help="η of DMSE1/2 with dense λ1")
    p.add_argument(
        "--programs",
        choices=("family", "eta"),
        help="one sweep per loss family with each run's own length (default), or one per (loss, η)",
    )
    p.add_argument(
        "--eig-every",
        type=int,
        help="also track λ1, λ2 every k steps for plots (default 0: off; the onset "
        "values never depend on it)",
    )


def etas_of(s: dict, loss: str) -> tuple:
    from dynloss_jax.losses import STATIC_OF

    return s["etas_ce"] if STATIC_OF[loss] == "ce" else s["etas_mse"]


def steps_eta_of(s: dict, loss: str) -> float:
    from dynloss_jax.losses import STATIC_OF

    return s["steps_eta"] if STATIC_OF[loss] == "ce" else s["steps_eta_mse"]


def families(losses) -> list[tuple[str, ...]]:
    """The losses grouped by loss family (DCE; DMSE1 with DMSE2), in the given order."""
    from dynloss_jax.losses import STATIC_OF

    groups: dict[str, list[str]] = {}
    for loss in losses:
        groups.setdefault(STATIC_OF[loss], []).append(loss)
    return [tuple(g) for g in groups.values()]


def configs(s: dict) -> dict:
    """The sweeps. ``programs = "family"``: one sweep per loss family over all its η, each run
    stopping after its own steps_eta/η steps (``SweepConfig.steps_eta``) if no onset stopped
    it first, in ``--out/<losses>`` (``dce``, ``dmse1_dmse2``); ``"eta"``: one sweep per
    (loss, η), as long as its runs, in ``--out/<loss>_eta_<η>``. The same for the runs with λ1
    at every step, in ``--out/dense_…`` (A = 50, T = 5000). Every run's numbers are the same
    in both layouts (``tests/test_experiments.py``)."""
    out = {}
    for losses in families(s["losses"]):
        etas = etas_of(s, losses[0])
        dense = s["dense_etas_ce"] if etas is s["etas_ce"] else s["dense_etas_mse"]
        for kind, grid in (("", etas), ("dense_", dense if s["dense_seeds"] else ())):
            if not grid:
                continue
            if s["programs"] == "family":
                out[kind + "_".join(losses)] = config_of(s, losses, grid, dense=bool(kind))
            else:
                for loss in losses:
                    for eta in grid:
                        out[kind + folder(loss, eta)] = config_of(
                            s, (loss,), (eta,), dense=bool(kind)
                        )
    return out


def split(runs: dict, dense: bool = False) -> dict:
    """The runs keyed by (loss, η) instead of by folder name: the main runs, or with ``dense``
    the runs with λ1 at every step. A family's sweep is split with ``Run.sel``."""
    out = {}
    for name, run in runs.items():
        if name.startswith("dense_") != dense:
            continue
        for loss in run.coords["loss"]:
            for eta in run.coords["eta"]:
                out[loss, float(eta)] = run.sel(loss=loss, eta=eta)
    return out


def config_of(s: dict, losses: tuple, etas: tuple, *, dense: bool = False):
    """The sweep of ``losses`` (one family) at learning rates ``etas``: ``steps_eta``/η steps
    per run (rounded up to the measurement interval), every run stopping at its onset. One η:
    the sweep is that long. Several: it is as long as the longest, and each run stops at its
    own length (``steps_eta``) and watches for ``watch_steps_eta``/η steps after its onset.

    ``dense``: the same runs at A = 50, T = 5000 (the middle condition; the quick and smoke
    presets' own), ``dense_seeds`` seeds, with λ1, λ2 at every step (warm-started Lanczos)
    and the loss at every step."""
    from dynloss_jax import SweepConfig
    from dynloss_jax.config import steps_for

    interval = 1 if dense else max(s["eig_every"], s["record_every"])
    steps_eta = steps_eta_of(s, losses[0])
    one = len(etas) == 1
    config = SweepConfig(
        loss=tuple(losses),
        width=(s["width"],),
        eta=tuple(etas),
        amplitude=s["amplitudes"],
        period=s["periods"],
        seeds=s["seeds"],
        steps=max(steps_for(eta, steps_eta, interval) for eta in etas),
        steps_eta=0.0 if one else float(steps_eta),
        record_every=s["record_every"],
        eig_every=s["eig_every"],
        stop_at_onset=True,
        detector=s["detector"],
        watch=tuple(s["watch"]),
        watch_steps=steps_for(etas[0], s["watch_steps_eta"]) if one and s["watch"] else 0,
        watch_steps_eta=0.0 if one or not s["watch"] else float(s["watch_steps_eta"]),
    )
    if not dense:
        return config
    import dataclasses

    amplitude = 50.0 if 50.0 in s["amplitudes"] else s["amplitudes"][0]
    period = 5000 if 5000 in s["periods"] else s["periods"][0]
    return dataclasses.replace(
        config,
        amplitude=(amplitude,),
        period=(period,),
        seeds=s["dense_seeds"],
        record_every=1,
        eig_every=1,
        num_matvecs=s["dense_matvecs"],
    )


def run_length(run, eta: float) -> int:
    """The steps a run of ``run`` at ``eta`` was given (before any onset stopped it)."""
    from dynloss_jax import SweepConfig

    return SweepConfig.from_settings(run.config["settings"]).run_steps(eta)


def folder(loss: str, eta: float) -> str:
    return f"{loss}_eta_{eta:g}"


def fit_slope(eta_R, lam_R):
    """Least squares of log λ = c + b·log η over the finite points: (b, se(b), c, n)."""
    import numpy as np

    x, y = np.log(np.asarray(eta_R, float)), np.log(np.asarray(lam_R, float))
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan"), n
    sxx = np.sum((x - x.mean()) ** 2)
    b = np.sum((x - x.mean()) * (y - y.mean())) / sxx
    c = y.mean() - b * x.mean()
    se = math.sqrt(np.sum((y - c - b * x) ** 2) / (n - 2) / sxx)
    return float(b), float(se), float(c), n


def _mean_sem(x) -> tuple[float, float, int]:
    import numpy as np

    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(np.mean(x)) if n else float("nan")
    sem = float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return mean, sem, n


def _rules(run) -> list[tuple[str, object, object]]:
    """(rule, onset step array, λ1 array) for the run's own rule and each watched one, with
    the grid's axes (loss, width, η, A, T, seed)."""
    from dynloss_jax.instability import get_detector

    s = run.config["settings"]
    out = [(get_detector(s["detector"]).name, run["instability_step"], run["instability_lam"])]
    for i, rule in enumerate(s.get("watch", [])):
        out.append((get_detector(rule).name, run["watch_step"][..., i], run["watch_lam"][..., i]))
    return out


def summarise(runs: dict) -> dict:
    """Per loss and η: λ1 at the onset (mean, sem, runs with an onset, runs), the onset step
    (median), and per loss the fitted slope; the same per (A, T) condition (``conditions``);
    ``sensitivity``: for every rule of the runs (the run's own and the watched ones) the mean
    η·λ1/2 at its onsets per (loss, η) with s.e.m. and the fitted slope per loss; ``crossing``:
    from the dense runs (λ1 at every step), per rule the steps from its onset to the first
    step with λ1 > 2/η."""
    import numpy as np

    dense = split(runs, dense=True)
    runs = split(runs)
    losses = sorted({loss for loss, _ in runs}, key=list(NAMES).index)
    rows, fits, conditions = [], {}, []
    for loss in losses:
        all_eta, all_lam = [], []
        for eta in sorted(eta for name, eta in runs if name == loss):
            run = runs[loss, eta]
            lam = run["instability_lam"].reshape(-1)
            step = run["instability_step"].reshape(-1)
            found = np.isfinite(lam)
            n = int(found.sum())
            rows.append(
                {
                    "loss": loss,
                    "eta": float(eta),
                    "two_over_eta": 2 / float(eta),
                    "lam_mean": float(np.mean(lam[found])) if n else float("nan"),
                    "lam_sem": float(np.std(lam[found], ddof=1) / np.sqrt(n))
                    if n > 1
                    else float("nan"),
                    "onset_step_median": float(np.median(step[found])) if n else float("nan"),
                    "found": n,
                    "runs": int(lam.size),
                    "diverged": int(run["diverged"].sum()),
                    "steps": run_length(run, eta),
                }
            )
            all_eta += [float(eta)] * n
            all_lam += lam[found].tolist()
            for ai, amplitude in enumerate(run.coords["amplitude"]):
                for ti, period in enumerate(run.coords["period"]):
                    cell = run["instability_lam"][0, 0, 0, ai, ti]
                    mean, sem, n_cell = _mean_sem(eta * cell / 2)
                    conditions.append(
                        {
                            "loss": loss,
                            "eta": float(eta),
                            "amplitude": float(amplitude),
                            "period": int(period),
                            "ratio_mean": mean,
                            "ratio_sem": sem,
                            "found": n_cell,
                            "runs": int(cell.size),
                        }
                    )
        b, se, c, n = fit_slope(all_eta, all_lam)
        fits[loss] = {
            "slope": b,
            "slope_se": se,
            "intercept": c,
            "points": n,
            "prefactor": math.exp(c) if math.isfinite(c) else float("nan"),
        }
    return {
        "rows": rows,
        "fits": fits,
        "conditions": conditions,
        "sensitivity": sensitivity(runs),
        "crossing": crossing(dense),
    }


def sensitivity(runs: dict) -> dict:
    """Per rule: per (loss, η) the mean η·λ1/2 at the rule's onsets (s.e.m., onsets found of
    runs), and per loss the slope of log λ1 against log η with its standard error."""
    import numpy as np

    out: dict = {}
    for (loss, eta), run in sorted(runs.items()):
        for rule, step, lam in _rules(run):
            entry = out.setdefault(rule, {"rows": [], "fits": {}, "_points": {}})
            lam = np.asarray(lam, float).reshape(-1)
            mean, sem, n = _mean_sem(eta * lam / 2)
            onset = np.asarray(step).reshape(-1)
            entry["rows"].append(
                {
                    "loss": loss,
                    "eta": float(eta),
                    "ratio_mean": mean,
                    "ratio_sem": sem,
                    "found": n,
                    "runs": int(lam.size),
                    "onset_step_median": float(np.median(onset[onset >= 0]))
                    if (onset >= 0).any()
                    else float("nan"),
                }
            )
            pts = entry["_points"].setdefault(loss, ([], []))
            ok = np.isfinite(lam)
            pts[0].extend([float(eta)] * int(ok.sum()))
            pts[1].extend(lam[ok].tolist())
    for entry in out.values():
        for loss, (etas, lams) in entry.pop("_points").items():
            b, se, _, n = fit_slope(etas, lams)
            entry["fits"][loss] = {"slope": b, "slope_se": se, "points": n}
    return out


def crossing(dense: dict) -> dict:
    """From runs with λ1 at every step: per rule and (loss, η), for each run the first step
    with λ1 > 2/η minus the rule's onset step (positive: the onset came first; NaN: λ1 did
    not exceed 2/η before the run stopped, or the rule did not fire), with their median,
    minimum and maximum."""
    import numpy as np

    out: dict = {}
    for (loss, eta), run in sorted(dense.items()):
        lam = np.asarray(run["lam"][..., 0], float)  # (..., seed, eig)
        steps = np.asarray(run["eig_step"])
        above = lam > 2 / eta
        first = np.where(above.any(-1), steps[np.argmax(above, -1)], -1).reshape(-1)
        for rule, onset, _ in _rules(run):
            onset = np.asarray(onset).reshape(-1)
            gap = np.where((first >= 0) & (onset >= 0), first - onset, np.nan).astype(float)
            ok = np.isfinite(gap)
            out.setdefault(rule, []).append(
                {
                    "loss": loss,
                    "eta": eta,
                    "first_cross": first.tolist(),
                    "onset": onset.tolist(),
                    "gap": [None if not np.isfinite(g) else int(g) for g in gap],
                    "gap_median": float(np.median(gap[ok])) if ok.any() else float("nan"),
                    "gap_min": float(np.min(gap[ok])) if ok.any() else float("nan"),
                    "gap_max": float(np.max(gap[ok])) if ok.any() else float("nan"),
                }
            )
    return out


def outputs(summary: dict) -> dict:
    """Files written beside ``summary.json``: the detector sensitivity on its own."""
    return {
        "sensitivity.json": {
            "sensitivity": summary["sensitivity"],
            "crossing": summary["crossing"],
        }
    }


def table(runs: dict, summary: dict) -> str:
    lines = [
        "Fig. 4: λ1 at the first instability (mean ± s.e.m. over seeds and (A, T)) vs 2/η",
        f"{'loss':>6} {'η':>6} {'2/η':>7} {'λ1 at onset':>18} {'η·λ1/2':>7} "
        f"{'onsets':>9} {'median onset step':>18} {'steps':>8}",
    ]
    for r in summary["rows"]:
        ratio = r["eta"] * r["lam_mean"] / 2
        extra = f"  ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(
            f"{r['loss']:>6} {r['eta']:>6g} {r['two_over_eta']:>7.3g} "
            f"{r['lam_mean']:>9.3f} ± {r['lam_sem']:<6.3f} {ratio:>7.3f} "
            f"{r['found']:>4}/{r['runs']:<4} {r['onset_step_median']:>18.0f} "
            f"{r['steps']:>8}{extra}"
        )
    lines.append("fit log λ1 = c + b·log η (all runs with an onset; 2/η has b = −1, e^c = 2):")
    for loss, f in summary["fits"].items():
        lines.append(
            f"  {loss:>6}: b = {f['slope']:.3f} ± {f['slope_se']:.3f}, "
            f"e^c = {f['prefactor']:.3f}, {f['points']} runs"
        )
    if summary.get("sensitivity"):
        lines.append("sensitivity: mean η·λ1/2 at each rule's onsets (onsets/runs); slope b")
        for rule, entry in summary["sensitivity"].items():
            cells = "  ".join(
                f"{r['loss']} {r['eta']:g}: {r['ratio_mean']:.3f}±{r['ratio_sem']:.3f}"
                f" ({r['found']}/{r['runs']})"
                for r in entry["rows"]
            )
            slopes = ", ".join(f"{k} {f['slope']:.3f}" for k, f in entry["fits"].items())
            lines.append(f"  {rule}\n    {cells}\n    slopes: {slopes}")
    if summary.get("crossing"):
        lines.append("first λ1 > 2/η minus onset step (dense runs), per rule: median [min, max]")
        for rule, items in summary["crossing"].items():
            cells = "  ".join(
                f"{c['loss']} {c['eta']:g}: {c['gap_median']:g} [{c['gap_min']:g}, "
                f"{c['gap_max']:g}]"
                for c in items
            )
            lines.append(f"  {rule}: {cells}")
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path):
    """Draws the figure from the loaded runs and their summary; returns it."""
    import matplotlib.pyplot as plt
    import numpy as np

    runs = split(runs)
    sens = summary.get("sensitivity") or {}
    fig, axes = plt.subplots(
        1,
        3 if sens else 2,
        figsize=(17.5 if sens else 11.5, 4.8),
        constrained_layout=True,
        gridspec_kw={"width_ratios": [1.35, 1, 1.2] if sens else [1.35, 1]},
    )
    ax, ax_ratio = axes[:2]
    etas = np.array(sorted({eta for _, eta in runs}))
    grid = np.geomspace(etas.min() / 1.3, etas.max() * 1.3, 50)
    ax.plot(grid, 2 / grid, "k--", lw=1.2, label="2/η (edge of stability)")
    ax_ratio.axhline(1, color="k", ls="--", lw=1.2)
    colors = {"dce": "C3", "dmse1": "C0", "dmse2": "C2"}
    markers = {"dce": "s", "dmse1": "o", "dmse2": "^"}
    losses = list(summary["fits"])
    shift = {loss: 1 + 0.05 * (i - (len(losses) - 1) / 2) for i, loss in enumerate(losses)}
    for li, loss in enumerate(losses):
        rows = [r for r in summary["rows"] if r["loss"] == loss]
        eta = np.array([r["eta"] for r in rows])
        mean = np.array([r["lam_mean"] for r in rows])
        sem = np.nan_to_num(np.array([r["lam_sem"] for r in rows]))
        color, marker = colors.get(loss, f"C{li}"), markers.get(loss, "o")
        f = summary["fits"][loss]
        found = sum(r["found"] for r in rows)
        total = sum(r["runs"] for r in rows)
        label = (
            f"{NAMES.get(loss, loss)}: slope {f['slope']:.3f} ± {f['slope_se']:.3f} "
            f"({found}/{total} runs with an onset)"
        )
        ax.errorbar(
            eta * shift[loss],
            mean,
            yerr=sem,
            color=color,
            marker=marker,
            ms=6,
            lw=0,
            elinewidth=1.3,
            capsize=3,
            label=label,
        )
        ax_ratio.errorbar(
            eta * shift[loss],
            eta * mean / 2,
            yerr=eta * sem / 2,
            color=color,
            marker=marker,
            ms=6,
            lw=1,
            capsize=3,
            label=NAMES.get(loss, loss),
        )
        for (name, e), run in runs.items():  # per-condition (A, T) means, faint
            if name != loss:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no onset
                cond = np.nanmean(run["instability_lam"], axis=-1).reshape(-1)
            ax.plot(
                np.full(cond.shape, e * shift[loss]), cond, marker, color=color, alpha=0.3, ms=4
            )
    for a in (ax, ax_ratio):
        a.set_xscale("log")
        a.set_xticks(etas)
        a.set_xticklabels([f"{e:g}" for e in etas])
        a.minorticks_off()
        a.set_xlabel("learning rate η")
        a.grid(alpha=0.3, which="both")
    ax.set_yscale("log")
    ax.set_ylabel("λ1 at the first instability")
    ax.legend(fontsize=8)
    s = next(iter(runs.values())).config["settings"]
    n_cond = len(s["amplitude"]) * len(s["period"])
    ax.set_title(
        f"(a) width {s['width'][0]}, A ∈ {{{', '.join(f'{a:g}' for a in s['amplitude'])}}}"
        f", T ∈ {{{', '.join(str(t) for t in s['period'])}}}, {s['seeds']} seeds × "
        f"{n_cond} condition(s) per point",
        fontsize=9,
        loc="left",
    )
    ax_ratio.set_ylabel("η·λ1 / 2 at the first instability")
    ax_ratio.set_title("(b) the same, relative to 2/η", fontsize=9, loc="left")
    ax_ratio.legend(fontsize=8)
    if sens:
        _sensitivity_panel(axes[2], sens, colors, markers)
    fig.suptitle(
        "Sharpness at the first period-2 instability of the loss (error bars: s.e.m.)", fontsize=10
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def _short(rule: str) -> str:
    """A rule's name with only the parameters that differ from their defaults."""
    from dynloss_jax.instability import get_detector

    name, _, params = rule.partition(":")
    default = get_detector(name).name.partition(":")[2].split(",")
    changed = [p for p in params.split(",") if p and p not in default]
    return name.replace("_", " ") + ("\n" + " ".join(changed) if changed else "")


def _sensitivity_panel(ax, sens: dict, colors: dict, markers: dict) -> None:
    """η·λ1/2 at the onsets of each rule (rows), one point per (loss, η) with its s.e.m., the
    share of runs in which the rule fired beside it."""
    import numpy as np

    rules = list(sens)
    for ri, rule in enumerate(rules):
        rows = sens[rule]["rows"]
        losses = sorted({r["loss"] for r in rows}, key=list(NAMES).index)
        for li, loss in enumerate(losses):
            mine = [r for r in rows if r["loss"] == loss]
            y = ri + 0.25 * (li - (len(losses) - 1) / 2)
            x = np.array([r["ratio_mean"] for r in mine])
            err = np.nan_to_num(np.array([r["ratio_sem"] for r in mine]))
            ax.errorbar(
                x,
                np.full(x.shape, y),
                xerr=err,
                color=colors.get(loss, "k"),
                marker=markers.get(loss, "o"),
                ms=4,
                lw=0,
                elinewidth=1,
                label=NAMES.get(loss, loss) if ri == 0 else None,
            )
        found = sum(r["found"] for r in rows)
        total = sum(r["runs"] for r in rows)
        slopes = ", ".join(f"{f['slope']:.2f}" for f in sens[rule]["fits"].values())
        ax.text(1.13, ri, f"{found}/{total}\n{slopes}", fontsize=6.5, va="center")
    ax.axvline(1, color="k", ls="--", lw=1)
    ax.set_yticks(range(len(rules)))
    ax.set_yticklabels([_short(r) for r in rules], fontsize=7)
    ax.set_xlim(0.6, 1.25)
    ax.invert_yaxis()
    ax.set_xlabel("η·λ1 / 2 at the onset (mean ± s.e.m. per loss and η)")
    ax.set_title(
        "(c) the same runs under each rule (right: onsets found, slopes)", fontsize=9, loc="left"
    )
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="lower left")


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
