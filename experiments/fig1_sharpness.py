"""Fig. 1: network width and learning rate in plain cross-entropy training — loss and sharpness.

(a) the loss (CE) and (b) the sharpness λ_max = λ1 (largest Hessian eigenvalue) against step t,
each the mean over seeds (shaded: ± standard error of the mean), for three widths × two learning
rates, with the edge-of-stability lines 2/η in (b). Inset of (a): the training data.

Settings. The paper gives neither the widths nor the learning rates of Fig. 1 (SPEC §2), so they
are decided here, and are flags:

* widths 10, 50, 200 (63, 303 and 1203 parameters for 300 data points): a net too small to fit
  the spiral, one in between, and a clearly over-parameterised one — the range over which the
  text describes learning improving with size;
* η = 1 (the learning rate of Figs. 2 and 3a) and η = 0.5, so the two 2/η lines (2 and 4) are
  well apart and the smaller rate can "reach narrower valleys";
* 20 seeds (the paper's), 60 000 full-batch GD steps — long enough for the widest network to
  leave the edge of stability, which 10 000 steps (this module's first length) did not show —
  loss every 25 steps, λ1 every 50 steps by 16-step warm-started Lanczos; float64, Glorot init
  (SPEC §1).

``--quick``: the same 6 configurations with 4 seeds and 5 000 steps (loss every 5, λ1 every 25).

What the full run shows (``docs/results/fig1_sharpness/``, 20 seeds): λ1 rises to the edge of
stability and, at widths 10 and 50, stays a little above it to the end — over the last tenth of
the run λ1 = 2.34 ± 0.04 and 2.60 ± 0.13 at η = 1 (2/η = 2), 4.58 ± 0.11 and 5.74 ± 0.10 at
η = 0.5 (2/η = 4), above 2/η in 83–100 % of those measurements. Width 200 leaves it: the mean
λ1 peaks at 3.07 (step 11 000, η = 1) and 6.44 (step 26 700, η = 0.5), then falls to
1.50 ± 0.11 and 3.06 ± 0.36 over the last tenth, below 2/η in 95 % and 81 % of those
measurements, with training loss 0.031 ± 0.016 and training accuracy 0.987 ± 0.007 at η = 1 —
the late escape of the paper's panel (b).

Runtime: ``docs/results/fig1_sharpness/run_info.json`` (6.3 min on the 2 CPU cores, load ≈ 1.8).

    python -m experiments.fig1_sharpness                # -> results/fig1_sharpness/
    python -m experiments.fig1_sharpness --quick
    python -m experiments.fig1_sharpness --replot       # redraw from the folder
"""

from __future__ import annotations

import dataclasses
import sys

from experiments import common

FULL = dict(
    widths=(10, 50, 200), etas=(0.5, 1.0), seeds=20, steps=60_000, eig_every=50, record_every=25
)
QUICK = dict(FULL, seeds=4, steps=5000, eig_every=25, record_every=5)
SMOKE = dict(FULL, widths=(4,), seeds=2, steps=100, eig_every=10, record_every=5)
OUT = "results/fig1_sharpness"
PNG = "fig1_sharpness.png"
LABEL = "fig1"
TAIL = 0.5  # λ1 is averaged over the last half of each run
END = 0.1  # and over its last tenth, where a run that left the edge of stability has settled


def add_flags(p):
    p.add_argument("--widths", type=int, nargs="+", help="hidden units (default 10 50 200)")
    p.add_argument("--etas", type=float, nargs="+", help="learning rates (default 0.5 1)")
    p.add_argument("--seeds", type=int, help="seeds per configuration (default 20; quick 4)")
    p.add_argument("--steps", type=int, help="GD steps (default 60000; quick 5000)")
    p.add_argument("--eig-every", type=int, help="λ1 every k steps (default 50; quick 25)")
    p.add_argument("--record-every", type=int, help="loss every k steps (default 25; quick 5)")


def configs(s: dict) -> dict:
    from dynloss_jax import SweepConfig

    # CE ignores Γ; A = 1 records Γ ≡ 1, the period is then irrelevant.
    return {
        "": SweepConfig(
            loss=("ce",),
            width=s["widths"],
            eta=s["etas"],
            amplitude=(1.0,),
            period=(s["steps"],),
            seeds=s["seeds"],
            steps=s["steps"],
            record_every=s["record_every"],
            eig_every=s["eig_every"],
            num_matvecs=16,
        )
    }


def summarise(runs: dict, tail: float = TAIL, end: float = END) -> list[dict]:
    """Per (width, η): final loss and train accuracy; λ1 averaged over the last ``tail`` and
    over the last ``end`` of the run, then over seeds (mean ± sem), with η·λ1 (2 at the edge of
    stability); the peak of the seed-mean λ1 curve and its step; and the fraction of the
    measurements of the last ``end`` with λ1 > 2/η (over runs and measurements)."""
    import numpy as np

    run = runs[""]
    steps = run.config["settings"]["steps"]
    eig_step = run["eig_step"]
    late, final = eig_step >= (1 - tail) * steps, eig_step >= (1 - end) * steps
    # λ1 of each run averaged over the late measurements, as arrays with a seed axis
    lam_late = np.mean(run["lam"][..., late, 0], axis=-1)
    lam_final = np.mean(run["lam"][..., final, 0], axis=-1)
    late_run = dataclasses.replace(
        run,
        arrays={**run.arrays, "lam1_late": lam_late, "lam1_final": lam_final},
        axes={**run.axes, "lam1_late": run.axes["diverged"], "lam1_final": run.axes["diverged"]},
    )
    rows = []
    for width in run.coords["width"]:
        for eta in run.coords["eta"]:
            at = late_run.sel(width=width, eta=eta)

            def mean_sem(name, at=at):
                mean, sem, n = at.summary(name)
                return float(mean.item()), float(sem.item()), int(n.item())

            lam_m, lam_s, n = mean_sem("lam1_late")
            fin_m, fin_s, _ = mean_sem("lam1_final")
            curve = np.squeeze(at.summary("lam")[0])[:, 0]
            peak = int(np.nanargmax(curve))
            lam_end = np.asarray(at["lam"])[..., final, 0]
            rows.append(
                {
                    "width": int(width),
                    "eta": float(eta),
                    "seeds": n,
                    "final_loss": mean_sem("final_loss")[:2],
                    "final_train_acc": mean_sem("final_train_acc")[:2],
                    "lam1_late": (lam_m, lam_s),
                    "eta_lam1_late": (eta * lam_m, eta * lam_s),
                    "lam1_final": (fin_m, fin_s),
                    "eta_lam1_final": (eta * fin_m, eta * fin_s),
                    "lam1_peak": float(curve[peak]),
                    "lam1_peak_step": int(eig_step[peak]),
                    "frac_above_final": float(np.mean(lam_end > 2 / eta)),
                    "two_over_eta": 2 / float(eta),
                }
            )
    return rows


def table(runs: dict, rows: list, tail: float = TAIL, end: float = END) -> str:
    lines = [
        f"{'width':>5} {'η':>4} {'runs':>4} {'final loss':>17} {'final train acc':>17} "
        f"{f'λ1, last {tail:.0%}':>17} {f'λ1, last {end:.0%}':>17} {'η·λ1':>6} "
        f"{'peak λ1 (step)':>16} {'>2/η':>5} {'2/η':>4}"
    ]
    for r in rows:
        lines.append(
            f"{r['width']:>5} {r['eta']:>4g} {r['seeds']:>4} "
            f"{r['final_loss'][0]:>8.4f} ± {r['final_loss'][1]:<6.4f} "
            f"{r['final_train_acc'][0]:>8.4f} ± {r['final_train_acc'][1]:<6.4f} "
            f"{r['lam1_late'][0]:>8.3f} ± {r['lam1_late'][1]:<6.3f} "
            f"{r['lam1_final'][0]:>8.3f} ± {r['lam1_final'][1]:<6.3f} "
            f"{r['eta_lam1_final'][0]:>6.3f} "
            f"{r['lam1_peak']:>6.2f} ({r['lam1_peak_step']:>6}) "
            f"{r['frac_above_final']:>5.2f} {r['two_over_eta']:>4g}"
        )
    return "\n".join(lines)


def plot(runs: dict, rows: list, path):
    """Draws the figure from the loaded run; returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    from dynloss_jax.data import spiral

    run = runs[""]
    fig, (ax_loss, ax_lam) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    steps, eig_steps = run["record_step"], run["eig_step"]
    styles = {
        eta: ls
        for eta, ls in zip(
            sorted(run.coords["eta"], reverse=True), ["-", "--", ":", "-."] * 4, strict=False
        )
    }
    for wi, width in enumerate(run.coords["width"]):
        color = f"C{wi}"
        for eta in run.coords["eta"]:
            at = run.sel(width=width, eta=eta)
            label = f"width {width}, η = {eta:g}"
            m, e = (np.squeeze(a) for a in at.summary("loss")[:2])
            ax_loss.plot(steps, m, color=color, ls=styles[eta], lw=1.3, label=label)
            ax_loss.fill_between(steps, m - e, m + e, color=color, alpha=0.15, lw=0)
            m, e = (np.squeeze(a)[:, 0] for a in at.summary("lam")[:2])
            ax_lam.plot(eig_steps, m, color=color, ls=styles[eta], lw=1.3, label=label)
            ax_lam.fill_between(eig_steps, m - e, m + e, color=color, alpha=0.15, lw=0)
    for eta in run.coords["eta"]:
        ax_lam.axhline(
            2 / eta,
            color="k",
            ls=styles[eta],
            lw=0.9,
            alpha=0.7,
            label=f"2/η = {2 / eta:g} (η = {eta:g})",
        )
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter("{x:.2g}")
    ax_loss.yaxis.set_minor_formatter("{x:.2g}")
    ax_loss.tick_params(axis="y", which="minor", labelsize=7)
    ax_loss.set_xlabel("step t")
    ax_loss.set_ylabel("cross-entropy loss (mean over seeds)")
    ax_loss.set_title("(a) loss", fontsize=10, loc="left")
    ax_lam.set_xlabel("step t")
    ax_lam.set_ylabel("λ_max (mean over seeds)")
    ax_lam.set_title(
        "(b) sharpness λ_max, with the edge-of-stability lines 2/η", fontsize=10, loc="left"
    )
    ax_lam.legend(fontsize=8, loc="lower right", ncol=2)
    n_seeds = len(run.coords["seed"])
    fig.suptitle(
        f"Cross-entropy, full-batch GD, {n_seeds} seeds per curve (band: ± s.e.m.)", fontsize=10
    )

    settings = run.config["settings"]
    x, y = spiral(settings["points_per_class"], settings["n_classes"], seed=settings["train_seed"])
    inset = ax_loss.inset_axes([0.02, 0.02, 0.3, 0.4])
    for c in range(y.shape[1]):
        sel = y[:, c] == 1
        inset.scatter(x[sel, 0], x[sel, 1], s=3, color=f"C{c + 3}")
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_aspect("equal")
    inset.set_title("training data", fontsize=7, pad=2)
    inset.patch.set_alpha(0.85)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
