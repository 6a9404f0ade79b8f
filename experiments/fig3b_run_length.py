"""Fig. 3b at three run lengths on seeds that chose nothing: MSE, both readings of DMSE1, DMSE2.

Fig. 3b's setting (A = 100, T = 2500, the ``dmse1o`` reading of eq. 3) was picked from an (A, T)
scan of the MSE family whose seeds 0–4 the full panel then reused, and every run had 35 000
steps, where MSE at η = 0.075 is far from trained. This module re-asks the question on held-out
seeds and at several lengths:

* seeds 5–14 (``--first-seed``), disjoint from the scan's seeds 0–4
  (``docs/results/sm_mse_family``);
* both readings of eq. 3 (``dmse1``: Γ of the sample's own class; ``dmse1o``: Γ_i of output i)
  and DMSE2, against MSE; widths 14, 23, 38, 61, 100; η = 0.075, A = 100, T = 2500 (the
  panel's);
* run lengths of 14, 28 and 56 periods (35 000, 70 000 and 140 000 steps), each a separate run
  whose last period is static, accuracies read at its end (Fig. 3's protocol). Validation and
  training accuracies are both reported, so that "MSE has not trained yet" can be seen.

The paired difference dynamical − MSE (same seed, same initial network) is printed with its
s.e.m. per width and length. Runtime: see ``docs/results/fig3b_run_length/run_info.json``.

    python -m experiments.fig3b_run_length            # -> results/fig3b_run_length/
    python -m experiments.fig3b_run_length --quick    # 2 widths, 3 seeds, 4/8 periods of T = 500
    python -m experiments.fig3b_run_length --replot
"""

from __future__ import annotations

import sys

from experiments import common

FULL = dict(
    losses=("mse", "dmse1", "dmse1o", "dmse2"),
    widths=(14, 23, 38, 61, 100),
    eta=0.075,
    amplitude=100.0,
    period=2500,
    lengths=(14, 28, 56),
    seeds=10,
    first_seed=5,
    val_seed=1,
    record_every=500,
)
QUICK = dict(FULL, widths=(23, 61), period=500, lengths=(4, 8), seeds=3, record_every=100)
SMOKE = dict(QUICK, widths=(4,), period=20, lengths=(3, 6), seeds=2, record_every=10)
OUT = "results/fig3b_run_length"
PNG = "fig3b_run_length.png"
LABEL = "fig3b"


def add_flags(p):
    p.add_argument("--losses", nargs="+", help="losses (default mse dmse1 dmse1o dmse2)")
    p.add_argument("--widths", type=int, nargs="+", help="hidden units (default 14 23 38 61 100)")
    p.add_argument("--eta", type=float, help="learning rate (default 0.075)")
    p.add_argument("--amplitude", type=float, help="A of Γ (default 100)")
    p.add_argument("--period", type=int, help="T in steps (default 2500)")
    p.add_argument(
        "--lengths", type=int, nargs="+", help="run lengths in periods, the last static (14 28 56)"
    )
    p.add_argument("--seeds", type=int, help="seeds per width (default 10)")
    p.add_argument("--first-seed", type=int, help="first seed (default 5: the scan used seeds 0–4)")
    p.add_argument("--record-every", type=int, help="curves every k steps (default 500)")
    p.add_argument(
        "--val-seed",
        type=int,
        help="seed of the validation spiral (default 1: the one the scan and the panel used)",
    )


def configs(s: dict) -> dict:
    """One sweep per run length, in ``--out/steps_<n>``."""
    from dynloss_jax import SweepConfig

    out = {}
    for periods in s["lengths"]:
        steps = periods * s["period"]
        out[f"steps_{steps}"] = SweepConfig(
            loss=s["losses"],
            width=s["widths"],
            eta=(s["eta"],),
            amplitude=(s["amplitude"],),
            period=(s["period"],),
            seeds=s["seeds"],
            first_seed=s["first_seed"],
            val_seed=s["val_seed"],
            steps=steps,
            record_every=s["record_every"] if steps % s["record_every"] == 0 else s["period"],
            static_last_period=True,
        )
    return out


def _steps(key: str) -> int:
    return int(key.rsplit("_", 1)[-1])


def summarise(runs: dict) -> dict:
    """Per run length (key ``steps_<n>``), one row per width: validation and training accuracy
    of each loss (mean, sem, n) and the paired differences dynamical − MSE (mean, sem)."""
    from experiments.fig3_width_sweep import width_rows

    out = {}
    for key, run in sorted(runs.items(), key=lambda kv: _steps(kv[0])):
        seeds = [int(s) for s in run.coords["seed"]]
        out[key] = {"steps": _steps(key), "seeds": seeds, "rows": width_rows(run, train=True)}
    return out


def table(runs: dict, summary: dict) -> str:
    lines = []
    for key, part in summary.items():
        run = runs[key]
        losses = list(run.coords["loss"])
        rows = part["rows"]
        diffs = [k for k in rows[0] if "-" in k]
        lines.append(
            f"{part['steps']} steps, seeds {part['seeds'][0]}–{part['seeds'][-1]}: validation "
            "(training) accuracy at the end of the static last period, mean ± s.e.m."
        )
        lines.append(f"{'width':>6}" + "".join(f"{n:>24}" for n in losses + diffs))
        for r in rows:
            cells = [f"{r[n][0]:.3f}±{r[n][1]:.3f} ({r['train_' + n][0]:.3f})" for n in losses]
            cells += [f"{r[n][0]:+.3f} ± {r[n][1]:.3f}" for n in diffs]
            lines.append(f"{r['width']:>6}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path):
    """Validation (top) and training (bottom) accuracy against width, one column per length."""
    import matplotlib.pyplot as plt

    from experiments.fig3_width_sweep import accuracy_panel

    keys = list(summary)
    fig, axes = plt.subplots(
        2, len(keys), figsize=(4.6 * len(keys), 7.4), squeeze=False, constrained_layout=True
    )
    for col, key in enumerate(keys):
        for row_i, (prefix, what) in enumerate((("", "validation"), ("train_", "training"))):
            title = f"{summary[key]['steps']} steps" if row_i == 0 else ""
            accuracy_panel(
                axes[row_i, col], runs[key], summary[key]["rows"], title, prefix, f"{what} accuracy"
            )
    s = runs[keys[0]].config["settings"]
    fig.suptitle(
        f"MSE family, η = {s['eta'][0]:g}, A = {s['amplitude'][0]:g}, T = {s['period'][0]}, "
        f"seeds {s['first_seed']}–{s['first_seed'] + s['seeds'] - 1} (held out from the scan); "
        "error bars s.e.m.",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    return common.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
