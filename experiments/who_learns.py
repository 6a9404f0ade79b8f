"""Who learns at the edge: λ1 split exactly by class, its alignment with each class's gradient,
and fork interventions (stay at the edge, leave it, a random kick of the same size, Γ frozen).

Two cases, CE and DCE each: the paper's Fig. 2 settings on the spiral (width 100, A = 70,
T = 5000, η = 1, 10 000 steps, 20 seeds) and the digits (10 classes, 64 inputs, 1346 training
points; width 8, η = 3, A = 10, T = 300, 3000 steps, 10 seeds: in short probes, width 32 at
η ≤ 3 and MSE at η ≤ 0.06 fitted the digits within a few hundred steps and λ1 fell far below
2/η, while width 8 at η = 3 kept CE's λ1 at 0.8–1 × 2/η), all runs with ``class_records`` and
``class_split`` (λ1, λ2 and their class split every 25 steps). For CE, Γ does not enter the
loss: its "emphasised class" c(t) is the one the same schedule would emphasise, a control for
the alignment numbers.

* **Class split.** For each tracked eigenvector u_k, S[k, c] = u_kᵀ H^(c) u_k with H^(c) the
  Hessian of class c's part of the loss (Γ inside; Σ_c S[k, c] = λ_k,
  :mod:`dynloss_jax.curvature`). ``split_max_err`` is max |Σ_c S[0, c] − λ1| / |λ1| over every
  measurement of every run.
* **Alignment.** Over the *edge steps* (measurements with λ1 ≥ 0.95·2/η and
  an emphasised class; ``EDGE`` = 0.95): ``alignment_emphasised`` = mean |cos(u1, g_{c(t)})|,
  ``alignment_other`` = mean over c ≠ c(t) of |cos(u1, g_c)|, ``best_is_emphasised`` = the
  fraction of edge steps where argmax_c |cos(u1, g_c)| is c(t) (chance: 1/C), and
  ``split_top_is_emphasised`` the fraction where c(t) carries the largest part of λ1.
* **Forks** (:mod:`dynloss_jax.forks`): from each run's state at each t* of ``fork_steps``,
  branches ``stay``, ``leave`` (η·r, r = 0.1), ``kick`` (a random direction, norm ‖δ‖ with
  δ = (2w_{t*} − w_{t*−1} − w_{t*+1})/4 the edge oscillation's displacement) and
  ``freeze_gamma`` (Γ held at Γ(t*)), each ``horizon`` steps, and ``leave_long`` (η·r for
  horizon/r steps: the same η·steps as stay). Per branch and class: the change of validation
  (and training) accuracy over the horizon, mean and s.e.m. over seeds, and the paired
  differences stay − other over seeds (mean, s.e.m., t = mean/s.e.m.), over all seeds
  (``stay_minus``) and over the seeds at the edge at t* (``stay_minus_edge_seeds``: λ1 of the
  start itself, by 32 Lanczos steps, ≥ 0.95·2/η; their number is ``n_edge_seeds``), and each
  branch's class-mean change separately for the seeds at and below the edge (``at_edge``,
  ``below_edge``, with their per-class validation accuracy at t*).

The forks start from the trainer's replay of each run (:func:`dynloss_jax.loop.trainer`: the
engine's initialisation, step and data), not from stored parameters. The replay agrees with the
sweep's records to ~1e-12 at first, but at the edge of stability rounding differences grow
(in one check, by step 1825 for CE on the spiral and 75 for DCE on the digits), so at a late t*
a replay is another trajectory of the same seed and schedule: the alignment numbers are of
the sweep's runs, the fork numbers of the replays (``replay_vs_sweep_max_diff`` says how far
apart their per-class accuracies are at t*).
  ``branches`` at the top of the summary is the spiral DCE case at its second fork step (the
  late part of the first period, where the runs sit at the edge).

Outputs (``--out``, default ``results/who_learns``): the two sweeps (``spiral/``, ``digits/``),
``forks/<case>_<loss>.npz`` (the branch records), ``summary.json``, ``run_info.json``,
``who_learns.png``. ``--replot`` redraws from them without training.

The C(C − 1) outlier group and the NTK over 70 000 steps: ``experiments/spectrum_structure.py``.

    python -m experiments.who_learns            # -> results/who_learns/ (≈ 8 min, 2 cores)
    python -m experiments.who_learns --quick    # 2 seeds, shorter digits run (< 3 min)
    python -m experiments.who_learns --replot
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from experiments import common

OUT = "results/who_learns"
PNG = "who_learns.png"
LABEL = "who_learns"
LOSSES = ("ce", "dce")
BRANCH_NAMES = ("stay", "leave", "kick", "freeze_gamma")
FULL = dict(
    seeds=20,
    width=100,
    amplitude=70.0,
    period=5000,
    eta=1.0,
    steps=10_000,
    eig_every=25,
    record_every=25,
    points_per_class=100,
    fork_steps=(2000, 4500, 9400),
    horizon=250,
    fork_record=25,
    r=0.1,
    digits_seeds=10,
    digits_width=8,
    digits_eta=3.0,
    digits_amplitude=10.0,
    digits_period=300,
    digits_steps=3000,
    digits_fork_steps=(500, 1400, 2600),
    digits_horizon=100,
)
QUICK = dict(FULL, seeds=2, digits_seeds=2, digits_steps=1200, digits_fork_steps=(250, 700))
SMOKE = dict(
    FULL,
    seeds=2,
    width=8,
    period=100,
    steps=300,
    eig_every=10,
    record_every=10,
    points_per_class=10,
    fork_steps=(50, 180),
    horizon=20,
    fork_record=10,
    digits_seeds=2,
    digits_width=4,
    digits_period=20,
    digits_steps=100,
    digits_fork_steps=(30,),
    digits_horizon=20,
)
FORKS = "forks"
EDGE = 0.95  # an edge step: λ1 >= EDGE·2/η


def add_flags(p):
    p.add_argument("--seeds", type=int, help="spiral seeds (default 20; quick 2)")
    p.add_argument("--digits-seeds", type=int, help="digits seeds (default 10; quick 2)")
    p.add_argument("--horizon", type=int, help="fork horizon on the spiral (default 250)")
    p.add_argument("--r", type=float, help="leave's factor on η (default 0.1)")
    p.add_argument("--fork-steps", type=int, nargs="+", help="t* on the spiral")


def _cases(s: dict) -> dict:
    """Per case: its sweep's settings and its forks' settings."""
    return {
        "spiral": dict(
            data="spiral", seeds=s["seeds"], width=s["width"], eta=s["eta"],
            amplitude=s["amplitude"], period=s["period"], steps=s["steps"],
            points_per_class=s["points_per_class"], fork_steps=tuple(s["fork_steps"]),
            horizon=s["horizon"],
        ),
        "digits": dict(
            data="digits", seeds=s["digits_seeds"], width=s["digits_width"],
            eta=s["digits_eta"], amplitude=s["digits_amplitude"], period=s["digits_period"],
            steps=s["digits_steps"], points_per_class=100,
            fork_steps=tuple(s["digits_fork_steps"]), horizon=s["digits_horizon"],
        ),
    }  # fmt: skip


def configs(s: dict) -> dict:
    from dynloss_jax import SweepConfig

    return {
        name: SweepConfig(
            data=c["data"],
            loss=LOSSES,
            width=(c["width"],),
            eta=(c["eta"],),
            amplitude=(c["amplitude"],),
            period=(c["period"],),
            seeds=c["seeds"],
            steps=c["steps"],
            points_per_class=c["points_per_class"],
            record_every=s["record_every"],
            eig_every=s["eig_every"],
            chunk_steps=c["steps"],
            class_records=True,
            class_split=True,
        )
        for name, c in _cases(s).items()
    }


def after_runs(runs: dict, s: dict, args) -> None:
    """The forks of every case and loss, from the same runs (replayed by the trainer, whose
    initialisation and step are the engine's), saved under ``--out/forks``."""
    import jax
    import jax.numpy as jnp

    import dynloss_jax as dl
    from dynloss_jax import forks as fk
    from dynloss_jax.eig import lanczos
    from dynloss_jax.loop import trainer

    folder = Path(next(iter(runs.values())).path).parent / FORKS
    folder.mkdir(parents=True, exist_ok=True)
    for name, c in _cases(s).items():
        run = runs[name]
        keys = ("data", "points_per_class", "n_classes", "train_seed", "val_seed", "split_seed")
        d = dl.SweepConfig(**{k: run.config["settings"][k] for k in keys}).dataset()
        seeds = np.arange(c["seeds"])
        for loss in LOSSES:
            started = time.perf_counter()
            task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss=loss)
            tr = trainer(task, steps=c["steps"], width=c["width"], eta=c["eta"],
                         amplitude=c["amplitude"], period=c["period"])  # fmt: skip
            every = min(s["fork_record"], c["horizon"])
            st = jax.jit(
                lambda seeds, tr=tr, c=c: jax.lax.map(
                    lambda x: fk.starts(tr, x, c["fork_steps"]), seeds
                )  # fmt: skip
            )(jnp.asarray(seeds))
            # λ1 of each start, measured on the replayed state itself (Lanczos, 32 products)
            start_lam = jax.jit(
                jax.vmap(
                    jax.vmap(
                        lambda a, tr=tr: lanczos(
                            tr.hessian(a),
                            jnp.zeros_like(a.w_N),
                            jax.random.key(0),
                            num_matvecs=32,
                            k=1,
                        ).top_K[0]
                    )
                )  # fmt: skip
            )(st.state)
            main = jax.jit(
                lambda st, seeds, tr=tr, c=c, every=every: fk.fork_from(
                    tr,
                    st,
                    seeds,
                    horizon=c["horizon"],
                    record_every=every,
                    names=BRANCH_NAMES,
                    r=s["r"],
                    batch_size=1,
                )  # fmt: skip
            )(st, jnp.asarray(seeds))
            long = jax.jit(
                lambda st, seeds, tr=tr, c=c, every=every: fk.fork_from(
                    tr,
                    st,
                    seeds,
                    horizon=round(c["horizon"] / s["r"]),
                    record_every=round(every / s["r"]),
                    names=("leave",),
                    r=s["r"],
                    batch_size=1,
                )  # fmt: skip
            )(st, jnp.asarray(seeds))
            out = {"fork_steps": np.asarray(c["fork_steps"]), "seeds": seeds,
                   "start_lam1": np.asarray(start_lam),
                   "displacement_norm": np.asarray(main.displacement_norm),
                   "kick_norm": np.asarray(main.kick_norm)}  # fmt: skip
            for field in main.records._fields:
                out[field] = np.asarray(getattr(main.records, field))
                out["leave_long_" + field] = np.asarray(getattr(long.records, field))[:, :, 0]
            np.savez(folder / f"{name}_{loss}.npz", **out)
            if not args.quiet:
                print(f"who_learns forks {name} {loss}: {time.perf_counter() - started:.1f} s",
                      file=sys.stderr)  # fmt: skip


# --- the numbers -----------------------------------------------------------------------------


def alignment(run, loss_index: int, edge: float) -> dict:
    """The class-split and alignment numbers of one loss of a case's run (arrays from disk)."""
    sl = (loss_index, 0, 0, 0, 0)  # loss, width, eta, amplitude, period
    split = np.asarray(run["class_split"])[sl]  # (seed, eig, k, class)
    lam = np.asarray(run["lam"])[sl]  # (seed, eig, k)
    cos = np.abs(np.asarray(run["class_cos"])[sl])  # (seed, eig, k, class)
    emph = np.asarray(run["emphasised"])[sl]  # (seed, eig)
    eta = float(run.config["settings"]["eta"][0])
    n_classes = split.shape[-1]
    err = np.abs(split[..., 0, :].sum(-1) - lam[..., 0]) / np.abs(lam[..., 0])
    on_edge = (lam[..., 0] >= edge * 2.0 / eta) & (emph >= 0)
    out = {
        "split_max_err": float(np.nanmax(err)),
        "n_measurements": int(err.size),
        "edge_fraction": float(on_edge.mean()),
        "n_edge_steps": int(on_edge.sum()),
        "chance": 1.0 / n_classes,
    }
    if not on_edge.any():
        out.update(alignment_emphasised=None, alignment_other=None, best_is_emphasised=None,
                   split_top_is_emphasised=None, split_emphasised_share=None)  # fmt: skip
        return out
    c = np.where(emph >= 0, emph, 0)
    cos1 = cos[..., 0, :]  # (seed, eig, class)
    onehot = np.arange(n_classes) == c[..., None]
    with_c = np.take_along_axis(cos1, c[..., None], -1)[..., 0]
    others = np.where(onehot, 0.0, cos1).sum(-1) / (n_classes - 1)
    split1 = split[..., 0, :]
    share = np.take_along_axis(split1, c[..., None], -1)[..., 0] / lam[..., 0]
    out.update(
        alignment_emphasised=float(with_c[on_edge].mean()),
        alignment_other=float(others[on_edge].mean()),
        best_is_emphasised=float((cos1.argmax(-1) == c)[on_edge].mean()),
        split_top_is_emphasised=float((split1.argmax(-1) == c)[on_edge].mean()),
        split_emphasised_share=float(share[on_edge].mean()),
    )
    return out


def _mean_sem(x, axis=0):
    x = np.asarray(x, float)
    n = x.shape[axis]
    if n == 0:
        return np.full(x.shape[1:], np.nan), np.full(x.shape[1:], np.nan)
    sem = (
        x.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.full(np.mean(x, axis).shape, np.nan)
    )
    return np.mean(x, axis=axis), sem


def branch_numbers(forks: dict, run, loss_index: int, edge: float) -> dict:
    """Per t*: per branch the change of per-class accuracy over the horizon (mean, s.e.m. over
    seeds), the paired differences stay − branch, and the fraction of seeds at the edge."""
    eta = float(run.config["settings"]["eta"][0])
    sl = (loss_index, 0, 0, 0, 0)
    lam1 = np.asarray(run["lam"])[sl][..., 0]  # (seed, eig)
    eig_step = np.asarray(run["eig_step"])
    gamma = np.asarray(run["gamma"])[sl][0]  # (record, class), the same for every seed
    record_step = np.asarray(run["record_step"])
    out = {}
    for j, t in enumerate(forks["fork_steps"]):
        last = np.searchsorted(eig_step, t, side="right") - 1
        g = gamma[np.searchsorted(record_step, t, side="right") - 1]
        at_edge = forks["start_lam1"][:, j] >= edge * 2.0 / eta
        entry = {
            "edge_seed_fraction": float(np.mean(at_edge)),
            "sweep_edge_seed_fraction": float(np.mean(lam1[:, last] >= edge * 2.0 / eta)),
            "start_lam1_eta_over_2": _listed(_mean_sem(forks["start_lam1"][:, j] * eta / 2)),
            "emphasised": int(np.argmax(g)) if np.ptp(g) > 0 else -1,
            "displacement_norm": _listed(_mean_sem(forks["displacement_norm"][:, j])),
        }
        change = {}
        for kind in ("val", "train"):
            acc = forks[f"{kind}_acc_RxC"][:, j]  # (seed, branch, record, class)
            change[kind] = acc[:, :, -1] - acc[:, :, 0]  # (seed, branch, class)
            long = forks[f"leave_long_{kind}_acc_RxC"][:, j]  # (seed, record, class)
            change[kind + "_long"] = long[:, -1] - long[:, 0]
        for b, name in enumerate(BRANCH_NAMES):
            entry[name] = _branch_entry(change["val"][:, b], change["train"][:, b])
        entry["leave_long"] = _branch_entry(change["val_long"], change["train_long"])
        for key, sel in (("stay_minus", slice(None)), ("stay_minus_edge_seeds", at_edge)):
            paired = {}
            for b, name in enumerate(BRANCH_NAMES):
                if name != "stay":
                    paired[name] = _paired(change["val"][sel, 0] - change["val"][sel, b])
            paired["leave_long"] = _paired(change["val"][sel, 0] - change["val_long"][sel])
            entry[key] = paired
        entry["n_edge_seeds"] = int(at_edge.sum())
        # the same branches split by where the seed is at t*: at the edge or below it
        acc0 = forks["val_acc_RxC"][:, j, 0, 0]  # (seed, class) at t*
        for key, sel in (("at_edge", at_edge), ("below_edge", ~at_edge)):
            entry[key] = {
                "start_val_acc": _listed(_mean_sem(acc0[sel])),
                **{
                    name: _listed(_mean_sem(change["val"][sel, b].mean(-1)))
                    for b, name in enumerate(BRANCH_NAMES)
                },
            }
        out[str(int(t))] = entry
    return out


def _listed(pair):
    return [np.asarray(v).tolist() for v in pair]


def _branch_entry(val_SxC, train_SxC) -> dict:
    vm, vs = _mean_sem(val_SxC)
    tm, ts = _mean_sem(train_SxC)
    allm, alls = _mean_sem(val_SxC.mean(-1))
    return {
        "val_acc_change_mean": vm.tolist(),
        "val_acc_change_sem": vs.tolist(),
        "train_acc_change_mean": tm.tolist(),
        "train_acc_change_sem": ts.tolist(),
        "val_acc_change_all_classes": [float(allm), float(alls)],
    }


def _paired(diff_SxC) -> dict:
    """Paired differences over seeds, per class and of the class mean: mean, s.e.m., t."""
    m, s = _mean_sem(diff_SxC)
    am, asem = _mean_sem(diff_SxC.mean(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        # a difference that is zero to rounding for every seed has no t
        t = np.where(s > 1e-12, m / s, np.nan)
        at = am / asem if asem > 1e-12 else np.nan
    return {
        "mean": m.tolist(), "sem": s.tolist(), "t": t.tolist(),
        "all_classes": [float(am), float(asem), float(at)],
    }  # fmt: skip


def load_forks(folder: Path, case: str, loss: str) -> dict:
    with np.load(folder / FORKS / f"{case}_{loss}.npz") as z:
        return dict(z)


def summarise(runs: dict) -> dict:
    folder = Path(next(iter(runs.values())).path).parent
    edge = EDGE
    cases = {}
    for case in ("spiral", "digits"):
        run = runs[case]
        for i, loss in enumerate(run.config["settings"]["loss"]):
            forks = load_forks(folder, case, loss)
            cases[f"{case}_{loss}"] = {
                **alignment(run, i, edge),
                "branches": branch_numbers(forks, run, i, edge),
                "replay_vs_sweep_max_diff": _start_check(forks, run, i),
            }
    primary = cases["spiral_dce"]
    t_primary = list(primary["branches"])[min(1, len(primary["branches"]) - 1)]
    top = primary["branches"][t_primary]
    return {
        "alignment_emphasised": primary["alignment_emphasised"],
        "alignment_other": primary["alignment_other"],
        "split_max_err": max(c["split_max_err"] for c in cases.values()),
        "branches_case": f"spiral_dce at t* = {t_primary}",
        "branches": {name: top[name] for name in (*BRANCH_NAMES, "leave_long")},
        "edge": edge,
        "git_commit": sorted({str(r.config.get("git_commit")) for r in runs.values()}),
        "cases": cases,
    }


def _start_check(forks, run, loss_index: int) -> float | None:
    """max |stay's per-class validation accuracy at t* − the sweep's record at t*|: whether the
    trainer's replay of a run (same initialisation, step and data) is still the sweep's run at
    t*; None where no record falls on a t*. The two programs round differently (~1e-16 at first),
    and at the edge of stability such differences grow until the replay is another trajectory
    of the same seed."""
    record_step = np.asarray(run["record_step"])
    acc = np.asarray(run["class_val_acc"])[(loss_index, 0, 0, 0, 0)]  # (seed, record, class)
    diffs = []
    for j, t in enumerate(forks["fork_steps"]):
        hit = np.flatnonzero(record_step == t)
        if hit.size:
            diffs.append(np.abs(forks["val_acc_RxC"][:, j, 0, 0] - acc[:, hit[0]]).max())
    return float(max(diffs)) if diffs else None


def table(runs: dict, summary: dict) -> str:
    lines = [
        f"{'case':<12}{'split err':>11}{'edge frac':>10}{'|cos| c(t)':>11}{'|cos| other':>12}"
        f"{'best=c(t)':>10}{'chance':>8}"
    ]
    for name, c in summary["cases"].items():

        def f(v):
            return "   -" if v is None else f"{v:.3f}"

        lines.append(
            f"{name:<12}{c['split_max_err']:>11.1e}{c['edge_fraction']:>10.2f}"
            f"{f(c['alignment_emphasised']):>11}{f(c['alignment_other']):>12}"
            f"{f(c['best_is_emphasised']):>10}{c['chance']:>8.2f}"
        )
    lines.append("")
    lines.append("val accuracy change over the horizon, mean over classes (± s.e.m. over seeds);")
    lines.append("paired t of stay − branch in brackets")
    for name, c in summary["cases"].items():
        for t, e in c["branches"].items():
            cells = []
            for b in (*BRANCH_NAMES, "leave_long"):
                m, s = e[b]["val_acc_change_all_classes"]
                tt = "" if b == "stay" else f" [{e['stay_minus'][b]['all_classes'][2]:+.1f}]"
                cells.append(f"{b} {m:+.4f}±{s:.4f}{tt}")
            lines.append(f"{name} t*={t} (edge {e['edge_seed_fraction']:.1f}): " + "; ".join(cells))
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path) -> None:
    import matplotlib.pyplot as plt

    run = runs["spiral"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    steps = np.asarray(run["eig_step"])
    losses = list(run.config["settings"]["loss"])
    for col, loss in enumerate(losses):
        i = losses.index(loss)
        split = np.asarray(run["class_split"])[i, 0, 0, 0, 0, 0]  # seed 0: (eig, k, class)
        lam = np.asarray(run["lam"])[i, 0, 0, 0, 0, 0, :, 0]
        ax = axes[0, col]
        for c in range(split.shape[-1]):
            ax.plot(steps, split[:, 0, c], lw=0.8, label=f"class {c}: u1ᵀH^(c)u1")
        ax.plot(steps, lam, "k", lw=1.2, label="λ1")
        eta = float(run.config["settings"]["eta"][0])
        ax.axhline(2 / eta, color="k", ls="--", lw=0.8)
        ax.set_title(f"spiral {loss.upper()}, seed 0: λ1 split by class")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    names = list(summary["cases"])
    x = np.arange(len(names))
    bars = (
        ("alignment_emphasised", "|cos(u1, g_c(t))|"),
        ("alignment_other", "|cos(u1, g_c)|, c ≠ c(t)"),
    )
    for k, (key, label) in enumerate(bars):
        vals = [summary["cases"][n][key] or 0.0 for n in names]
        ax.bar(x + 0.4 * k - 0.2, vals, 0.4, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title("alignment of u1 over edge steps")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    case, t_star = summary["branches_case"].split(" at t* = ")
    entry = summary["cases"][case]["branches"][t_star]
    paired = entry["stay_minus_edge_seeds"]
    names_b = ("leave", "kick", "freeze_gamma")
    n_classes = len(paired["leave"]["mean"])
    width = 0.8 / len(names_b)
    for b, name in enumerate(names_b):
        m = np.asarray(paired[name]["mean"], float)
        s = np.asarray(paired[name]["sem"], float)
        ax.bar(np.arange(n_classes) + b * width, m, width, yerr=s, label=f"stay − {name}")
    ax.set_xticks(np.arange(n_classes) + 0.4 - width / 2, [f"class {c}" for c in range(n_classes)])
    ax.set_title(
        f"forks, {case} at t* = {t_star} (c(t*) = {entry['emphasised']}), the "
        f"{entry['n_edge_seeds']} seeds at the edge:\n"
        "Δ val accuracy over the horizon, stay − branch",
        fontsize=9,
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
