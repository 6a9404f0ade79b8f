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

The per-run table, ``runs.csv`` (beside ``summary.json``): one row per run (``kind`` main or
dense, loss, width, η, A, T, seed), its step cap, where it stopped, whether it diverged, and per
rule — the run's own (declared) rule first, then each watched one — its onset step and λ1, λ2
there (empty: no onset); for runs with λ1 at every step also the last step measured, GD's first
step with λ1 > 2/η and whether it crossed within the run. Every number of ``summary.json`` and
``sensitivity.json`` is recomputed from that table alone (:func:`summarise_table`), and
``--replot`` reads it when the run folders are not there. The slopes come with two errors: the
per-run least-squares s.e., which treats every run as independent, and the s.e. of the same fit
on the (η, A, T) condition means of log λ1 (``slope_se_clustered``), which counts the runs of
one condition, sharing its ratio, as one point; ``rejections`` counts the rule × loss fits more
than 3 s.e. from −1 under each.

A watched rule's window above is tied to the declared rule's onset. ``--dense-to-cap`` removes
that tie for the runs with λ1 at every step: they do not stop at an onset but run to their step
cap (``--steps-eta``/η, ``--steps-eta-mse``/η), so every rule is read, and λ1's crossing of 2/η
looked for, over one rule-independent window; ``--dense-conditions all`` puts them at every
(A, T), ``--no-main`` runs only them, ``--dense-first-seed`` adds seeds beside stored ones;
``python -m experiments.fig4_reference`` gives these runs a second clock, gradient flow's
crossing of 2/η from the same network under the same Γ. The cost of λ1 at every step (10
warm-started Lanczos steps a step, loss every step) against λ only at the onsets is measured on
a few runs in
``docs/results/fig4_instability/per_run/lambda_every_step_cost.json``.

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
    python -m experiments.fig4_instability --no-main --dense-to-cap --dense-conditions all \
        --steps-eta 10000 --steps-eta-mse 5000      # λ1 every step, every rule to the cap
"""

from __future__ import annotations

import math
import sys

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
    dense_first_seed=0,
    dense_etas_ce=(0.5, 1.0, 2.0),
    dense_etas_mse=(0.2, 0.4),
    dense_matvecs=10,
    dense_conditions="middle",
    dense_to_cap=False,
    main=True,
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
    p.add_argument(
        "--dense-first-seed",
        type=int,
        help="the first of the dense runs' seeds (default 0): more seeds beside stored ones",
    )
    p.add_argument("--dense-etas-ce", type=float, nargs="*", help="η of DCE with dense λ1")
    p.add_argument("--dense-etas-mse", type=float, nargs="*", help="η of DMSE1/2 with dense λ1")
    p.add_argument(
        "--dense-conditions",
        choices=("middle", "all"),
        help="runs with λ1 at every step at A = 50, T = 5000 (middle, default) or at every (A, T)",
    )
    p.add_argument(
        "--dense-to-cap",
        action="store_const",
        const=True,
        help="runs with λ1 at every step do not stop at the onsets: each runs to its step cap "
        "(steps_eta/η), so every rule is read, and λ1's crossing of 2/η seen, over the same "
        "rule-independent window",
    )
    p.add_argument(
        "--no-main",
        dest="main",
        action="store_const",
        const=False,
        help="only the runs with λ1 at every step",
    )
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
        for kind, grid in (
            ("", etas if s["main"] else ()),
            ("dense_", dense if s["dense_seeds"] else ()),
        ):
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

    amplitude = (50.0 if 50.0 in s["amplitudes"] else s["amplitudes"][0],)
    period = (5000 if 5000 in s["periods"] else s["periods"][0],)
    if s["dense_conditions"] == "all":
        amplitude, period = tuple(s["amplitudes"]), tuple(s["periods"])
    to_cap = bool(s["dense_to_cap"])
    return dataclasses.replace(
        config,
        amplitude=amplitude,
        period=period,
        seeds=s["dense_seeds"],
        first_seed=s["dense_first_seed"],
        record_every=1,
        eig_every=1,
        num_matvecs=s["dense_matvecs"],
        stop_at_onset=not to_cap,
        watch_steps=0 if to_cap else config.watch_steps,
        watch_steps_eta=0.0 if to_cap else config.watch_steps_eta,
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
    the rule's full name (every parameter filled in)."""
    from dynloss_jax.instability import get_detector

    s = run.config["settings"]
    out = [(get_detector(s["detector"]).name, run["instability_step"], run["instability_lam"])]
    for i, rule in enumerate(s.get("watch", [])):
        out.append((get_detector(rule).name, run["watch_step"][..., i], run["watch_lam"][..., i]))
    return out


# ---------------------------------------------------------------------------------------------
# The per-run table (``runs.csv``): one row per run, every number of the summary recomputable
# from it alone (:func:`summarise_table`).

TABLE = "runs.csv"
KEYS = ("kind", "loss", "width", "eta", "amplitude", "period", "seed")
RUN_COLUMNS = (
    *KEYS,
    "step_cap",  # steps the run was given (steps_eta/η, rounded up), before an onset stopped it
    "stopped_step",  # where it stopped (−1: it ran to the cap)
    "diverged",
    "lam_every",  # λ1 measured every this many steps (0: only at the onsets)
    "lam_last_step",  # the last step with a λ1 measurement (empty when lam_every = 0)
    "cross_step",  # GD's first step with λ1 > 2/η (empty: none within the run, or not measured)
    "crossed",  # 1 if λ1 exceeded 2/η within the run, 0 if not, empty when not measured
)


def rule_label(rule: str) -> str:
    """A rule's spec with only the parameters that differ from its defaults ("calibrated",
    "second_difference:tol=1e-06"); ``get_detector(label).name`` gives the full name back."""
    from dynloss_jax.instability import get_detector

    name, _, params = get_detector(rule).name.partition(":")
    default = get_detector(name).name.partition(":")[2].split(",")
    changed = [q for q in params.split(",") if q and q not in default]
    return name + (":" + ",".join(changed) if changed else "")


def rule_columns(label: str) -> tuple[str, str, str]:
    return f"onset[{label}]", f"lam1[{label}]", f"lam2[{label}]"


def table_rows(runs: dict) -> list[dict]:
    """One dict per run of ``runs`` (main runs first, then those with λ1 at every step, each
    in (loss, η, A, T, seed) order): the columns of :data:`RUN_COLUMNS`, then per rule (the
    run's own first, then the watched ones) its onset step and λ1, λ2 there (NaN, −1: none)."""
    import numpy as np

    out = []
    for kind, dense in (("main", False), ("dense", True)):
        for (loss, eta), run in sorted(split(runs, dense=dense).items()):
            s = run.config["settings"]
            every = int(s["eig_every"])
            rules = [rule_label(s["detector"]), *(rule_label(w) for w in s.get("watch", []))]
            cap = run_length(run, eta)
            assert len(run.coords["width"]) == 1, "one width per Fig. 4 sweep"
            lam_k = [run["instability_lam_k"]] + [
                run["watch_lam_k"][..., i, :] for i in range(len(rules) - 1)
            ]
            onsets = [run["instability_step"]] + [
                run["watch_step"][..., i] for i in range(len(rules) - 1)
            ]
            for ai, amplitude in enumerate(run.coords["amplitude"]):
                for ti, period in enumerate(run.coords["period"]):
                    for si, seed in enumerate(run.coords["seed"]):
                        idx = (0, 0, 0, ai, ti, si)
                        row = {
                            "kind": kind,
                            "loss": loss,
                            "width": int(run.coords["width"][0]),
                            "eta": float(eta),
                            "amplitude": float(amplitude),
                            "period": int(period),
                            "seed": int(seed),
                            "step_cap": int(cap),
                            "stopped_step": int(run["stopped_step"][idx]),
                            "diverged": int(bool(run["diverged"][idx])),
                            "lam_every": every,
                            "lam_last_step": None,
                            "cross_step": None,
                            "crossed": None,
                        }
                        if every:
                            lam = np.asarray(run["lam"][idx][:, 0], float)
                            steps = np.asarray(run["eig_step"])
                            measured = np.isfinite(lam)
                            above = lam > 2 / eta
                            row["lam_last_step"] = (
                                int(steps[measured][-1]) if measured.any() else None
                            )
                            row["crossed"] = int(above.any())
                            row["cross_step"] = (
                                int(steps[np.argmax(above)]) if above.any() else None
                            )
                        for label, onset, lam2 in zip(rules, onsets, lam_k, strict=True):
                            c_on, c_1, c_2 = rule_columns(label)
                            row[c_on] = int(onset[idx])
                            row[c_1] = float(lam2[idx][0])
                            row[c_2] = float(lam2[idx][1])
                        out.append(row)
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, int) and value < 0:
        return ""  # −1: no onset / did not stop early
    return str(value)


def write_table(rows: list[dict], path) -> None:
    """``rows`` as CSV: empty cells for "none" (no onset, no crossing, not measured)."""
    import csv

    columns = list(rows[0]) if rows else list(RUN_COLUMNS)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])


def read_table(path) -> list[dict]:
    """The rows of :func:`write_table` with their types back: integers for steps and flags
    (−1 for an empty onset or stop step, None for an empty crossing), floats (NaN if empty)."""
    import csv

    ints = {"width", "period", "seed", "step_cap", "diverged", "lam_every"}
    maybe = {"lam_last_step", "cross_step", "crossed"}
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for c, v in raw.items():
                if c in ("kind", "loss"):
                    row[c] = v
                elif c in ints:
                    row[c] = int(v)
                elif c in maybe:
                    row[c] = int(v) if v else None
                elif c == "stopped_step" or c.startswith("onset["):
                    row[c] = int(v) if v else -1
                else:
                    row[c] = float(v) if v else float("nan")
            rows.append(row)
    return rows


def table_rules(rows: list[dict]) -> list[str]:
    """The rule labels of the table, the declared one (the runs' own) first."""
    return [c[len("onset[") : -1] for c in rows[0] if c.startswith("onset[")] if rows else []


def fit_clustered(eta_R, lam_R, cell_R):
    """Slope of log λ = c + b·log η fitted on the means of log λ per cell (the (η, A, T)
    conditions), so that runs of one condition, which share its ratio, count as one point:
    (b, se(b), cells). With equal runs per cell b equals the per-run fit's slope."""
    import numpy as np

    cells: dict = {}
    for eta, lam, cell in zip(eta_R, lam_R, cell_R, strict=True):
        if math.isfinite(lam):
            cells.setdefault(cell, (eta, []))[1].append(math.log(lam))
    x = [math.log(eta) for eta, _ in cells.values()]
    y = [float(np.mean(v)) for _, v in cells.values()]
    b, se, _, n = fit_slope(np.exp(x), np.exp(y))
    return b, se, n


def _fit_entry(etas, lams, cells) -> dict:
    b, se, c, n = fit_slope(etas, lams)
    bc, sec, nc = fit_clustered(etas, lams, cells)
    return {
        "slope": b,
        "slope_se": se,
        "intercept": c,
        "points": n,
        "prefactor": math.exp(c) if math.isfinite(c) else float("nan"),
        "slope_clustered": bc,
        "slope_se_clustered": sec,
        "cells": nc,
        "minus_one_in_se": (b + 1) / se if se > 0 else float("nan"),
        "minus_one_in_se_clustered": (b + 1) / sec if sec > 0 else float("nan"),
    }


def summarise(runs) -> dict:
    """The summary of the loaded runs (or of a table's rows, as ``--replot`` loads them from
    ``runs.csv``): :func:`summarise_table` of their :func:`table_rows`."""
    return summarise_table(runs if isinstance(runs, list) else table_rows(runs))


def write_tables(runs, out) -> None:
    """``runs.csv`` beside the summary (``--replot`` reads it back when the run folders are
    not there)."""
    from pathlib import Path

    if not isinstance(runs, list):
        write_table(table_rows(runs), Path(out) / TABLE)


def load_runs(out) -> dict | list:
    """For ``--replot``: the run folders of ``out`` if there are any, else the rows of its
    ``runs.csv``."""
    from pathlib import Path

    from experiments.common import load_runs as folders

    out = Path(out)
    subs = [out, *(p for p in out.iterdir() if p.is_dir())] if out.is_dir() else []
    if (out / TABLE).exists() and not any((p / "config.json").exists() for p in subs):
        return read_table(out / TABLE)
    return folders(out)


def _by(rows: list[dict], *keys) -> dict:
    """The rows grouped by the values of ``keys``, in their order."""
    out: dict = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _ordered(rows: list[dict]) -> list[dict]:
    """The rows in (A, T, seed) order, as a sweep flattens its runs."""
    return sorted(rows, key=lambda r: (r["amplitude"], r["period"], r["seed"]))


def summarise_table(rows: list[dict]) -> dict:
    """Every number the report states for Fig. 4, from the per-run table alone.

    ``rows`` (declared rule, main runs) per loss and η: λ1 at the onset (mean, sem, runs with
    an onset, runs), the onset step (median), runs diverged, the step cap; ``fits`` per loss:
    the slope of log λ1 on log η over the runs with an onset with its per-run OLS s.e., and the
    slope with its s.e. fitted on the (η, A, T) condition means of log λ1 (errors clustered by
    condition; ``fit_clustered``), and how many s.e. each lies from −1; ``conditions``: per
    (loss, η, A, T) the mean η·λ1/2; ``sensitivity``: the same per rule (the declared and the
    watched, by full name) as mean η·λ1/2 per (loss, η) with s.e.m. and onset counts, the range
    over η per loss, the fits; ``crossing``: from runs with λ1 measured every step, per rule
    and (loss, η) the steps from the onset to GD's first step with λ1 > 2/η; ``dense``: those
    runs per loss, η, condition, how many crossed 2/η within the run; ``rejections``: per kind
    of s.e., the rule × loss fits whose slope lies more than 3 s.e. from −1."""
    import numpy as np

    main = [r for r in rows if r["kind"] == "main"]
    dense = [r for r in rows if r["kind"] == "dense"]
    rules = table_rules(rows)
    losses = sorted({r["loss"] for r in main}, key=list(NAMES).index)

    out_rows, fits, conditions = [], {}, []
    own = rules[0] if rules else None
    for loss in losses:
        all_eta, all_lam, all_cell = [], [], []
        for (lo, eta), rs in sorted(_by(main, "loss", "eta").items()):
            if lo != loss:
                continue
            rs = _ordered(rs)
            c_on, c_1, _ = rule_columns(own)
            lam = np.array([r[c_1] for r in rs], float)
            step = np.array([r[c_on] for r in rs])
            found = np.isfinite(lam)
            n = int(found.sum())
            out_rows.append(
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
                    "runs": len(rs),
                    "diverged": int(sum(r["diverged"] for r in rs)),
                    "steps": max(r["step_cap"] for r in rs),
                }
            )
            all_eta += [float(eta)] * n
            all_lam += lam[found].tolist()
            all_cell += [
                (eta, r["amplitude"], r["period"]) for r, f in zip(rs, found, strict=True) if f
            ]
            for (amplitude, period), cell in _by(rs, "amplitude", "period").items():
                lam_c = np.array([r[c_1] for r in cell], float)
                mean, sem, n_cell = _mean_sem(eta * lam_c / 2)
                conditions.append(
                    {
                        "loss": loss,
                        "eta": float(eta),
                        "amplitude": float(amplitude),
                        "period": int(period),
                        "ratio_mean": mean,
                        "ratio_sem": sem,
                        "found": n_cell,
                        "runs": len(cell),
                    }
                )
        fits[loss] = _fit_entry(all_eta, all_lam, all_cell)

    sens = rule_stats(main, rules)

    rejections = {}
    for kind in ("minus_one_in_se", "minus_one_in_se_clustered"):
        hits = [
            f"{entry['label']} {loss}"
            for entry in sens.values()
            for loss, fit in entry["fits"].items()
            if abs(fit[kind]) > 3
        ]
        total = sum(len(entry["fits"]) for entry in sens.values())
        rejections[kind] = {"rejected": len(hits), "fits": total, "which": hits}

    grid = {
        "width": sorted({r["width"] for r in main}),
        "amplitude": sorted({r["amplitude"] for r in main}),
        "period": sorted({r["period"] for r in main}),
        "seeds": len({r["seed"] for r in main}),
    }
    return {
        "grid": grid,
        "rows": out_rows,
        "fits": fits,
        "conditions": conditions,
        "sensitivity": sens,
        "rejections": rejections,
        "crossing": crossing_table(dense, rules),
        "crossing_by_condition": crossing_by_condition(dense, rules),
        "dense_sensitivity": rule_stats(dense, rules),
        "dense": dense_summary(dense),
    }


def rule_stats(rows: list[dict], rules: list[str]) -> dict:
    """Per rule (by full name): per (loss, η) the mean η·λ1/2 at its onsets with s.e.m., onsets
    found of runs and the median onset step; per loss the fits of :func:`_fit_entry` and the
    range of the mean η·λ1/2 over η."""
    import numpy as np

    from dynloss_jax.instability import get_detector

    main = rows
    sens: dict = {}
    for label in rules:
        c_on, c_1, _ = rule_columns(label)
        entry = sens.setdefault(get_detector(label).name, {"label": label, "rows": [], "fits": {}})
        points: dict = {}
        for (loss, eta), rs in sorted(_by(main, "loss", "eta").items()):
            rs = _ordered(rs)
            lam = np.array([r[c_1] for r in rs], float)
            onset = np.array([r[c_on] for r in rs])
            mean, sem, n = _mean_sem(eta * lam / 2)
            entry["rows"].append(
                {
                    "loss": loss,
                    "eta": float(eta),
                    "ratio_mean": mean,
                    "ratio_sem": sem,
                    "found": n,
                    "runs": len(rs),
                    "onset_step_median": float(np.median(onset[onset >= 0]))
                    if (onset >= 0).any()
                    else float("nan"),
                }
            )
            pts = points.setdefault(loss, ([], [], []))
            for r, lam1 in zip(rs, lam, strict=True):
                if math.isfinite(lam1):
                    pts[0].append(float(eta))
                    pts[1].append(float(lam1))
                    pts[2].append((eta, r["amplitude"], r["period"]))
        for loss in sorted(points, key=list(NAMES).index):
            fit = _fit_entry(*points[loss])
            ratios = [r["ratio_mean"] for r in entry["rows"] if r["loss"] == loss]
            ratios = [x for x in ratios if math.isfinite(x)]
            fit["ratio_min"] = min(ratios) if ratios else float("nan")
            fit["ratio_max"] = max(ratios) if ratios else float("nan")
            entry["fits"][loss] = fit
        entry["found"] = sum(r["found"] for r in entry["rows"])
        entry["runs"] = sum(r["runs"] for r in entry["rows"])

    return sens


def crossing_table(dense: list[dict], rules: list[str]) -> dict:
    """From runs with λ1 at every step: per rule and (loss, η), for each run GD's first step
    with λ1 > 2/η minus the rule's onset step (positive: the onset came first; None: λ1 did
    not exceed 2/η within the run, or the rule did not fire), with their median, minimum and
    maximum."""
    import numpy as np

    from dynloss_jax.instability import get_detector

    out: dict = {}
    groups: dict = {}
    for r in dense:
        groups.setdefault((r["loss"], r["eta"]), []).append(r)
    for (loss, eta), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: (r["amplitude"], r["period"], r["seed"]))
        first = np.array([-1 if r["cross_step"] is None else r["cross_step"] for r in rs])
        for label in rules:
            c_on = rule_columns(label)[0]
            onset = np.array([r[c_on] for r in rs])
            gap = np.where((first >= 0) & (onset >= 0), first - onset, np.nan).astype(float)
            ok = np.isfinite(gap)
            out.setdefault(get_detector(label).name, []).append(
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


def crossing_by_condition(dense: list[dict], rules: list[str]) -> dict:
    """:func:`crossing_table` per (loss, η, A, T): per rule the gaps (GD's first step with
    λ1 > 2/η minus the onset; None where either is missing) and their median."""
    import numpy as np

    from dynloss_jax.instability import get_detector

    out: dict = {}
    groups: dict = {}
    for r in dense:
        groups.setdefault((r["loss"], r["eta"], r["amplitude"], r["period"]), []).append(r)
    for (loss, eta, amplitude, period), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        for label in rules:
            c_on = rule_columns(label)[0]
            gaps = [
                None if r["cross_step"] is None or r[c_on] < 0 else r["cross_step"] - r[c_on]
                for r in rs
            ]
            ok = [g for g in gaps if g is not None]
            out.setdefault(get_detector(label).name, []).append(
                {
                    "loss": loss,
                    "eta": eta,
                    "amplitude": amplitude,
                    "period": period,
                    "gap": gaps,
                    "gap_median": float(np.median(ok)) if ok else float("nan"),
                }
            )
    return out


def dense_summary(dense: list[dict]) -> dict:
    """Runs with λ1 at every step: per loss (and in all) how many, and how many of them saw
    λ1 exceed 2/η within the run; per (loss, η, A, T) the same."""
    out: dict = {"all": {"runs": 0, "crossed": 0}, "per_loss": {}, "per_condition": []}
    cond: dict = {}
    for r in dense:
        crossed = int(bool(r["crossed"]))
        for entry in (out["all"], out["per_loss"].setdefault(r["loss"], {"runs": 0, "crossed": 0})):
            entry["runs"] += 1
            entry["crossed"] += crossed
        key = (r["loss"], r["eta"], r["amplitude"], r["period"])
        c = cond.setdefault(key, {"runs": 0, "crossed": 0})
        c["runs"] += 1
        c["crossed"] += crossed
    for (loss, eta, amplitude, period), c in sorted(cond.items()):
        out["per_condition"].append(
            {"loss": loss, "eta": eta, "amplitude": amplitude, "period": period, **c}
        )
    return out


def outputs(summary: dict) -> dict:
    """Files written beside ``summary.json``: the detector sensitivity on its own."""
    return {
        "sensitivity.json": {
            "sensitivity": summary["sensitivity"],
            "rejections": summary["rejections"],
            "crossing": summary["crossing"],
            "crossing_by_condition": summary["crossing_by_condition"],
            "dense": summary["dense"],
            "dense_sensitivity": summary["dense_sensitivity"],
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
            f"  {loss:>6}: b = {f['slope']:.3f} ± {f['slope_se']:.3f} (per run), "
            f"± {f['slope_se_clustered']:.3f} (on {f['cells']} condition means), "
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
            slopes = ", ".join(
                f"{k} {f['slope']:.3f} ± {f['slope_se_clustered']:.3f}"
                for k, f in entry["fits"].items()
            )
            lines.append(f"  {rule}\n    {cells}\n    slopes: {slopes}")
    if summary.get("rejections"):
        for kind, r in summary["rejections"].items():
            lines.append(f"fits more than 3 s.e. from −1 ({kind}): {r['rejected']} of {r['fits']}")
    if summary.get("dense", {}).get("all", {}).get("runs"):
        d = summary["dense"]
        lines.append(
            "runs with λ1 every step whose λ1 exceeded 2/η within the run: "
            f"{d['all']['crossed']} of {d['all']['runs']}; "
            + ", ".join(f"{k} {v['crossed']}/{v['runs']}" for k, v in d["per_loss"].items())
        )
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
    """Draws the figure from the summary (the loaded runs, or the table's rows, are not
    needed: the faint points are the per-condition means of ``summary["conditions"]``);
    returns it."""
    import matplotlib.pyplot as plt
    import numpy as np

    sens = summary.get("sensitivity") or {}
    if not summary["rows"]:  # only runs with λ1 at every step: their rules' ratios
        sens = summary.get("dense_sensitivity") or {}
        fig, ax = plt.subplots(figsize=(7, 4.8), constrained_layout=True)
        _sensitivity_panel(ax, sens, {"dce": "C3", "dmse1": "C0", "dmse2": "C2"}, {})
        ax.set_title("runs with λ1 at every step, each rule to the step cap", fontsize=9)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return fig
    fig, axes = plt.subplots(
        1,
        3 if sens else 2,
        figsize=(17.5 if sens else 11.5, 4.8),
        constrained_layout=True,
        gridspec_kw={"width_ratios": [1.35, 1, 1.2] if sens else [1.35, 1]},
    )
    ax, ax_ratio = axes[:2]
    etas = np.array(sorted({r["eta"] for r in summary["rows"]}))
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
            f"(± {f['slope_se_clustered']:.3f} by condition; {found}/{total} runs with an onset)"
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
        cond = [c for c in summary["conditions"] if c["loss"] == loss]  # per (A, T), faint
        e = np.array([c["eta"] for c in cond])
        lam = np.array([2 * c["ratio_mean"] / c["eta"] for c in cond])
        ax.plot(e * shift[loss], lam, marker, color=color, alpha=0.3, ms=4)
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
    g = summary["grid"]
    n_cond = len(g["amplitude"]) * len(g["period"])
    ax.set_title(
        f"(a) width {g['width'][0]}, A ∈ {{{', '.join(f'{a:g}' for a in g['amplitude'])}}}"
        f", T ∈ {{{', '.join(str(t) for t in g['period'])}}}, {g['seeds']} seeds × "
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
