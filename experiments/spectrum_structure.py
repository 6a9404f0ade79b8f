"""Beyond the Hessian's top: the group of C(C − 1) outliers, and the NTK over a long run.

Two questions of "who learns at the edge" (``experiments/who_learns.py``) that the top two
eigenvalues cannot answer, asked at the paper's Fig. 2 settings (spiral, width 100, A = 70,
T = 5000, η = 1, CE and DCE, Γ dynamical throughout):

* **Outliers** (Papyan's structure, :mod:`dynloss_jax.outliers`). At ``outlier_steps`` —
  by default the peak of Γ_0's emphasis (t = T/2), the period's end where Γ ≡ 1 (t = T), the
  peak of Γ_1 (3T/2) and Γ ≡ 1 again (2T) — the dense Hessian H of each of ``outlier_seeds``
  runs (replayed by :func:`dynloss_jax.loop.trainer`) is compared with the between-class part
  G_between of its Gauss–Newton matrix, whose rank is at most C(C − 1) = 6. Per step and loss,
  over seeds: ``gap`` = λ6/λ7 (does a group of six stand apart?), ``overlap`` = mean cos² of
  the principal angles between H's top six eigenvectors and G_between's range (1: the group
  *is* Papyan's; 6/603 ≈ 0.01 for a random subspace), ``between_share`` = Σ_{k≤6}
  u_kᵀG_between u_k / Σ_{k≤6} λ_k, ``cross_share`` = the share of the top six eigenvectors'
  between-class curvature carried by the pairs (c, c') with c' ≠ c, ``lam1_over_lam2``, and
  ``emphasised_row_share`` = the share of u1's between-class curvature in the row of the
  emphasised class (c = c(t), all c'; 1/3 by symmetry at Γ ≡ 1).
* **The NTK.** The authors' notebook tracked the top eigenvalue of the network's tangent kernel
  over 70 000 steps. Each run of the sweep here tracks, every ``eig_every`` steps, λ1 of the
  Hessian, of the Gauss–Newton matrix and of the NTK Θ = J Jᵀ on output space (P·C × P·C, the
  300 training points, no 1/P; ``ggn_ntk``), each by ``num_matvecs`` Lanczos steps. Their
  notebook is not in this repository: which points and which normalisation it used is not
  known here, so its value (≈ 3 000 at 70 000 steps) is compared in shape, not in size.
  ``ntk`` in the summary: per loss, the seed mean ± s.e.m. of the NTK's λ1 at t = 0, T, 2T,
  half way and the end,
  its growth from t = T to the end, and its relative swing within each period (max − min over
  mean, averaged over periods) — how much Γ(t) moves it.

Outputs (``--out``, default ``results/spectrum_structure``): the sweep (its ``config.json``,
arrays), ``outliers.json`` (every report of :func:`dynloss_jax.outliers.outlier_report`),
``summary.json``, ``run_info.json``, ``spectrum_structure.png``. ``--replot`` redraws from them.

    python -m experiments.spectrum_structure            # full: 70 000 steps, 5 seeds
    python -m experiments.spectrum_structure --quick    # 10 000 steps, 2 seeds (< 3 min)
    python -m experiments.spectrum_structure --replot
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments import common

OUT = "results/spectrum_structure"
PNG = "spectrum_structure.png"
LABEL = "spectrum_structure"
LOSSES = ("ce", "dce")
OUTLIERS = "outliers.json"
FULL = dict(
    seeds=5,
    width=100,
    amplitude=70.0,
    period=5000,
    eta=1.0,
    steps=70_000,
    eig_every=500,
    num_matvecs=20,
    outlier_seeds=5,
    outlier_steps=(2500, 5000, 7500, 10000),
    n_top=10,
)
QUICK = dict(FULL, seeds=2, steps=10_000, outlier_seeds=2)
SMOKE = dict(
    FULL,
    seeds=2,
    width=8,
    period=100,
    steps=400,
    eig_every=20,
    num_matvecs=8,
    outlier_seeds=2,
    outlier_steps=(50, 100, 150, 200),
    n_top=8,
)


def add_flags(p):
    p.add_argument("--seeds", type=int, help="seeds of the NTK sweep (default 5; quick 2)")
    p.add_argument("--steps", type=int, help="GD steps (default 70000; quick 10000)")
    p.add_argument("--outlier-seeds", type=int, help="seeds whose dense Hessians are read")
    p.add_argument("--outlier-steps", type=int, nargs="+", help="steps of the dense readings")


def configs(s: dict) -> dict:
    from dynloss_jax import SweepConfig

    return {
        "": SweepConfig(
            loss=LOSSES,
            width=(s["width"],),
            eta=(s["eta"],),
            amplitude=(s["amplitude"],),
            period=(s["period"],),
            seeds=s["seeds"],
            steps=s["steps"],
            record_every=s["eig_every"],
            eig_every=s["eig_every"],
            num_matvecs=s["num_matvecs"],
            chunk_steps=min(s["steps"], 10_000),
            ggn_ntk=True,
        )
    }


def after_runs(runs: dict, s: dict, args) -> None:
    """The dense readings: each seed replayed to each of ``outlier_steps``, its Hessian and
    Papyan decomposition there; written to ``outliers.json`` beside the sweep."""
    import jax

    import dynloss_jax as dl
    from dynloss_jax import objective, outliers
    from dynloss_jax.forks import advance
    from dynloss_jax.loop import trainer

    run = runs[""]
    settings = run.config["settings"]
    keys = ("data", "points_per_class", "n_classes", "train_seed", "val_seed", "split_seed")
    d = dl.SweepConfig(**{k: settings[k] for k in keys}).dataset()
    steps = sorted(int(t) for t in s["outlier_steps"])
    reports = []
    for loss in LOSSES:
        started = time.perf_counter()
        task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss=loss)
        tr = trainer(task, steps=s["steps"], width=s["width"], eta=s["eta"],
                     amplitude=s["amplitude"], period=s["period"])  # fmt: skip
        loss_fn = objective.run_loss(tr.spec, tr.hyper)
        apply, x, y = tr.spec.model.apply, tr.data.x_train, tr.data.y_train

        @jax.jit
        def measure(w, step, tr=tr, loss_fn=loss_fn, apply=apply, x=x, y=y):
            gamma = objective.gamma_at(tr.spec, step, tr.hyper)
            H = jax.hessian(lambda w_: tr.loss(w_, step))(w)
            return H, outliers.pair_structure(apply, loss_fn, w, x, y, gamma), gamma

        moves = {}  # one compiled advance per distinct gap between readings
        for seed in range(s["outlier_seeds"]):
            state, now = tr.init(seed), 0
            for t in steps:
                n = t - now
                if n not in moves:
                    moves[n] = jax.jit(lambda st, tr=tr, n=n: advance(tr, st, n))
                state = moves[n](state)
                now = t
                H, ps, gamma = measure(state.w_N, t)
                rep = outliers.outlier_report(H, ps, n_top=s["n_top"])
                g = np.asarray(gamma)
                rep.update(loss=loss, seed=seed, step=t, gamma=g.tolist(),
                           emphasised=int(np.argmax(g)) if np.ptp(g) > 0 else -1)  # fmt: skip
                reports.append(rep)
        if not args.quiet:
            print(f"{LABEL} outliers {loss}: {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)  # fmt: skip
    folder = Path(run.path)
    (folder / OUTLIERS).write_text(json.dumps({"steps": steps, "reports": reports}) + "\n")


# --- the numbers -----------------------------------------------------------------------------


def _mean_sem(values) -> list:
    v = np.asarray(values, float)
    sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return [float(v.mean()), sem]


def outlier_numbers(reports: list) -> dict:
    """Per loss and step, the seed mean ± s.e.m. of the group's measures (module docstring)."""
    out: dict = {}
    for rep in reports:
        r = rep["r"]
        lam = np.asarray(rep["lam"])
        between = np.asarray(rep["between"])
        pairs = np.asarray(rep["pairs"])
        C = rep["n_classes"]
        off = ~np.eye(C, dtype=bool)
        top = pairs[:r]
        row = rep["emphasised"]
        u1 = pairs[0]
        per = {
            "gap": rep["gap"],
            "overlap": rep["overlap"],
            "overlap_next": rep["overlap_next"],
            "between_share": float(between[:r].sum() / lam[:r].sum()),
            "cross_share": float(top[:, off].sum() / top.sum()),
            "lam1_over_lam2": float(lam[0] / lam[1]),
            "emphasised_row_share": float(u1[row].sum() / u1.sum()) if row >= 0 else None,
            "lam1": float(lam[0]),
            "lam_r": float(lam[r - 1]),
            "lam_r1": float(lam[r]),
            "factor_residual": rep["factor_residual"],
        }
        key = out.setdefault(rep["loss"], {}).setdefault(str(rep["step"]), {})
        for name, v in per.items():
            key.setdefault(name, []).append(v)
    for steps in out.values():
        for step, per in steps.items():
            n = len(per["gap"])
            steps[step] = {
                name: (
                    _mean_sem(v)
                    if name != "factor_residual" and None not in v
                    else (max(v) if name == "factor_residual" else None)
                )
                for name, v in per.items()
            }
            steps[step]["seeds"] = n
    return out


def ntk_numbers(run, ntk_steps, period: int) -> dict:
    """Per loss: the NTK's (and the Hessian's and Gauss–Newton's) λ1 at ``ntk_steps`` (nearest
    measurement), mean ± s.e.m. over seeds; growth and within-period swing of the NTK's λ1."""
    eig_step = np.asarray(run["eig_step"])
    out = {}
    for li, loss in enumerate(run.coords["loss"]):
        ntk = np.asarray(run["ntk_lam"])[li, ..., 0].reshape(-1, eig_step.size)  # seeds × eig
        lam = np.asarray(run["lam"])[li, ..., 0].reshape(-1, eig_step.size)
        ggn = np.asarray(run["ggn_lam"])[li, ..., 0].reshape(-1, eig_step.size)
        at = {}
        for t in ntk_steps:
            j = int(np.argmin(np.abs(eig_step - t)))
            at[str(int(eig_step[j]))] = {
                "ntk": _mean_sem(ntk[:, j]),
                "lam": _mean_sem(lam[:, j]),
                "ggn": _mean_sem(ggn[:, j]),
            }
        first = int(np.argmin(np.abs(eig_step - period)))
        swings = []
        for k in range(int(eig_step[-1]) // period):
            sel = (eig_step >= k * period) & (eig_step < (k + 1) * period)
            seg = ntk[:, sel]
            swings.append((seg.max(1) - seg.min(1)) / seg.mean(1))
        out[loss] = {
            "at": at,
            "growth_from_T": _mean_sem(ntk[:, -1] / ntk[:, first]),
            "max": _mean_sem(ntk.max(1)),
            "swing_per_period": _mean_sem(np.mean(swings, axis=0)) if swings else None,
            "monotone_share": float(np.mean(np.diff(ntk, axis=1) >= 0)),
        }
    return out


def summarise(runs: dict) -> dict:
    run = runs[""]
    settings = run.config["settings"]
    folder = Path(run.path)
    rep = json.loads((folder / OUTLIERS).read_text())
    period, steps = int(settings["period"][0]), int(settings["steps"])
    ntk_steps = sorted({0, period, 2 * period, steps // 2, steps})
    return {
        "settings": {k: settings[k] for k in ("width", "eta", "amplitude", "period", "steps",
                                              "eig_every", "num_matvecs", "seeds")},
        "outliers": outlier_numbers(rep["reports"]),
        "ntk": ntk_numbers(run, ntk_steps, period),
    }  # fmt: skip


def table(runs: dict, summary: dict) -> str:
    lines = ["outliers: mean over seeds (r = C(C-1) = 6)",
             f"{'loss':>4} {'step':>6} {'λ6/λ7':>7} {'overlap':>8} {'next':>6} "
             f"{'between':>8} {'cross':>6} {'λ1/λ2':>6} {'c(t) row':>8}"]  # fmt: skip
    for loss, steps in summary["outliers"].items():
        for step, v in steps.items():
            row = v["emphasised_row_share"]
            lines.append(
                f"{loss:>4} {step:>6} {v['gap'][0]:>7.2f} {v['overlap'][0]:>8.3f} "
                f"{v['overlap_next'][0]:>6.3f} {v['between_share'][0]:>8.3f} "
                f"{v['cross_share'][0]:>6.3f} {v['lam1_over_lam2'][0]:>6.2f} "
                f"{'-' if row is None else f'{row[0]:.3f}':>8}"
            )
    lines.append("NTK λ1 (output space, all training points): mean ± s.e.m. over seeds")
    for loss, v in summary["ntk"].items():
        cells = ", ".join(
            f"t={t}: {a['ntk'][0]:.4g} ± {a['ntk'][1]:.2g}" for t, a in v["at"].items()
        )
        swing = v["swing_per_period"]
        lines.append(f"{loss:>4} {cells}; growth from T ×{v['growth_from_T'][0]:.2f}; "
                     f"swing per period {'-' if swing is None else f'{swing[0]:.3f}'}")  # fmt: skip
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path):
    import matplotlib.pyplot as plt

    run = runs[""]
    settings = run.config["settings"]
    eta = float(settings["eta"][0])
    eig_step = np.asarray(run["eig_step"])
    fig, (ax_ntk, ax_lam, ax_out) = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    for li, loss in enumerate(run.coords["loss"]):
        ntk = np.asarray(run["ntk_lam"])[li, ..., 0].reshape(-1, eig_step.size)
        lam = np.asarray(run["lam"])[li, ..., 0].reshape(-1, eig_step.size)
        ggn = np.asarray(run["ggn_lam"])[li, ..., 0].reshape(-1, eig_step.size)
        for ax, a, ls, name in ((ax_ntk, ntk, "-", "NTK"), (ax_lam, lam, "-", "H"),
                                (ax_lam, ggn, ":", "Gauss–Newton")):  # fmt: skip
            m = a.mean(0)
            e = a.std(0, ddof=1) / np.sqrt(a.shape[0]) if a.shape[0] > 1 else 0 * m
            ax.plot(eig_step, m, ls, color=f"C{li}", lw=1.2, label=f"{loss.upper()}: λ1 of {name}")
            ax.fill_between(eig_step, m - e, m + e, color=f"C{li}", alpha=0.2, lw=0)
    ax_lam.axhline(2 / eta, color="k", ls="--", lw=0.8, label="2/η")
    ax_ntk.set_yscale("log")
    for ax in (ax_ntk, ax_lam):
        ax.set_xlabel("step t")
        ax.legend(fontsize=8)
    ax_ntk.set_title("(a) top eigenvalue of the NTK J Jᵀ (mean ± s.e.m.)", fontsize=10, loc="left")
    ax_lam.set_title("(b) λ1 of the Hessian and of the Gauss–Newton matrix", fontsize=10,
                     loc="left")  # fmt: skip
    # (c) the overlap of H's top C(C-1) eigenvectors with G_between's range, per step
    for li, (loss, steps) in enumerate(summary["outliers"].items()):
        ts = [int(t) for t in steps]
        m = [steps[t]["overlap"][0] for t in steps]
        e = [steps[t]["overlap"][1] for t in steps]
        ax_out.errorbar(ts, m, yerr=e, marker="o", color=f"C{li}", capsize=3,
                        label=f"{loss.upper()}: top 6 of H vs range of G_between")  # fmt: skip
        m = [steps[t]["overlap_next"][0] for t in steps]
        ax_out.plot(ts, m, "x:", color=f"C{li}", label=f"{loss.upper()}: eigenvectors 7–12")
    ax_out.set_ylim(0, 1.02)
    ax_out.set_xlabel("step t")
    ax_out.set_ylabel("mean cos² of principal angles")
    ax_out.set_title("(c) is the outlier group Papyan's between-class part?", fontsize=10,
                     loc="left")  # fmt: skip
    ax_out.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
