"""Fig. 3: validation accuracy vs network width, dynamical losses against their static versions.

(a) CE vs DCE at η = 1, 50 seeds per width; (b) MSE vs DMSE1 vs DMSE2 at η = 0.075, 10 seeds per
width. Every run ends with a static period (Γ ≡ 1, "A = 1 for the last oscillation") at whose
end the accuracy is measured on the validation spiral (seed 1); points are means over seeds, error
bars the standard error of the mean. The printed table adds the paired difference dynamical −
static over seeds (the same seed gives the same initial network for every loss).

Settings the paper does not give (SPEC §2), decided here and changeable by flags:

* widths 2, 3, 5, 9, 14, 23, 38, 61, 100 (log-spaced, 11 to 603 parameters for 300 points): from
  networks that cannot fit the spiral to the width of Figs. 2 and 4;
* T = 5000 steps, the period of Fig. 2 and the shorter period of Fig. 4; A = 25, the smallest
  amplitude of Fig. 4 (Fig. 2's A = 70 was "chosen for ease of visualization");
* 7·T = 35 000 steps: two full cycles through the three classes (6 periods), then the static
  last period. Both panels use the same A, T and steps.

``--quick`` keeps the figure's shape at a fraction of the cost: widths 4, 8, 16, 32, 64, T = 2000
(14 000 steps), 6 seeds in (a) and 4 in (b). ``--panels a`` runs one panel only.

Runtime (2 idle CPU cores, float64): ``--quick`` ≈ 2 min (2.8 M run-steps; a large part of it
compiles the 25 programs, one per loss and width). Full: (a) 31.5 M run-steps and (b) 9.5 M;
the full figure took 13 min 12 s. On a GPU each program vmaps all its seeds; not measured
here — expected a few minutes per panel, bounded by the 35 000 sequential steps of each program.

    python -m experiments.fig3_width_sweep --quick      # -> results/fig3_width_sweep/
    python -m experiments.fig3_width_sweep              # the full figure
    python -m experiments.fig3_width_sweep --replot     # redraw and re-tabulate from the folder
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments import common

PANELS = {"a": dict(losses=("ce", "dce"), eta=1.0, seeds=50),
          "b": dict(losses=("mse", "dmse1", "dmse2"), eta=0.075, seeds=10)}
FULL = dict(widths=(2, 3, 5, 9, 14, 23, 38, 61, 100), amplitude=25.0, period=5000,
            periods=7, seeds_a=50, seeds_b=10, eta_a=1.0, eta_b=0.075, record_every=100,
            panels=("a", "b"))
QUICK = dict(FULL, widths=(4, 8, 16, 32, 64), period=2000, seeds_a=6, seeds_b=4)
SMOKE = dict(FULL, widths=(4,), period=40, periods=3, seeds_a=2, seeds_b=2, record_every=10)
PNG = "fig3_width_sweep.png"
SUMMARY = "summary.json"
STATIC = {"dce": "ce", "dmse1": "mse", "dmse2": "mse"}


def _parser():
    p = common.parser(__doc__, "results/fig3_width_sweep")
    p.add_argument("--panels", nargs="+", choices=("a", "b"), help="panels to run (default a b)")
    p.add_argument("--widths", type=int, nargs="+", help="hidden units (default 2 3 5 … 100)")
    p.add_argument("--amplitude", type=float, help="A of Γ (default 25)")
    p.add_argument("--period", type=int, help="T in steps (default 5000; quick 2000)")
    p.add_argument("--periods", type=int,
                   help="run length in periods, the last one static (default 7)")
    p.add_argument("--seeds-a", type=int, help="seeds per width in (a) (default 50; quick 6)")
    p.add_argument("--seeds-b", type=int, help="seeds per width in (b) (default 10; quick 4)")
    p.add_argument("--eta-a", type=float, help="learning rate of (a) (default 1)")
    p.add_argument("--eta-b", type=float, help="learning rate of (b) (default 0.075)")
    p.add_argument("--record-every", type=int, help="curves every k steps (default 100)")
    return p


def settings_from(args) -> dict:
    """The preset (full, quick or smoke) overridden by the flags given."""
    return common.settings(args, FULL, QUICK, SMOKE)


def config_of(s: dict, panel: str):
    from dynloss_jax import SweepConfig

    steps = s["periods"] * s["period"]
    record_every = s["record_every"] if steps % s["record_every"] == 0 else s["period"]
    return SweepConfig(loss=PANELS[panel]["losses"], width=s["widths"],
                       eta=(s[f"eta_{panel}"],), amplitude=(s["amplitude"],),
                       period=(s["period"],), seeds=s[f"seeds_{panel}"], steps=steps,
                       record_every=record_every, static_last_period=True)


def summarise(run) -> list[dict]:
    """One row per width: final validation accuracy of each loss (mean, sem, n over seeds), and
    for each dynamical loss the paired difference to its static loss (mean, sem over seeds)."""
    import numpy as np

    mean, sem, n = run.summary("final_val_acc")
    acc = np.where(run["diverged"], np.nan, run["final_val_acc"])
    losses = list(run.coords["loss"])
    rows = []
    for wi, width in enumerate(run.coords["width"]):
        row = {"width": int(width)}
        for li, loss in enumerate(losses):
            row[loss] = (float(mean[li, wi, 0, 0, 0]), float(sem[li, wi, 0, 0, 0]),
                         int(n[li, wi, 0, 0, 0]))
            static = STATIC.get(loss)
            if static in losses:
                d = acc[li, wi, 0, 0, 0] - acc[losses.index(static), wi, 0, 0, 0]
                d = d[np.isfinite(d)]
                d_sem = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                row[f"{loss}-{static}"] = (float(np.mean(d)) if len(d) else float("nan"),
                                           float(d_sem))
        rows.append(row)
    return rows


def table(run, rows, panel: str) -> str:
    s = run.config["settings"]
    losses = list(run.coords["loss"])
    diffs = [k for k in rows[0] if "-" in k]
    head = (f"Fig. 3{panel}: validation accuracy at the end of the static last period, mean ± "
            f"s.e.m. over {s['seeds']} seeds\n  η = {s['eta'][0]:g}, A = {s['amplitude'][0]:g}, "
            f"T = {s['period'][0]}, {s['steps']} steps")
    lines = [head, f"{'width':>6}" + "".join(f"{name:>18}" for name in losses + diffs)]
    for r in rows:
        cells = [f"{r[name][0]:.3f} ± {r[name][1]:.3f}" for name in losses]
        cells += [f"{r[name][0]:+.3f} ± {r[name][1]:.3f}" for name in diffs]
        lost = [f"{name}: {s['seeds'] - r[name][2]} diverged" for name in losses
                if r[name][2] < s["seeds"]]
        lines.append(f"{r['width']:>6}" + "".join(f"{c:>18}" for c in cells)
                     + (f"   ({', '.join(lost)})" if lost else ""))
    return "\n".join(lines)


def plot(runs: dict, path):
    """Draws the figure from loaded runs {panel: Run}; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"ce": ("C0", "o", "CE (static)"), "dce": ("C3", "s", "DCE"),
              "mse": ("C0", "o", "MSE (static)"), "dmse1": ("C3", "s", "DMSE1"),
              "dmse2": ("C2", "^", "DMSE2")}
    fig, axes = plt.subplots(1, len(runs), figsize=(max(6.2 * len(runs), 7.5), 4.6),
                             squeeze=False, constrained_layout=True)
    for ax, (panel, run) in zip(axes[0], sorted(runs.items()), strict=True):
        s = run.config["settings"]
        mean, sem, _ = run.summary("final_val_acc")
        widths = run.coords["width"]
        n_losses = len(run.coords["loss"])
        for li, loss in enumerate(run.coords["loss"]):
            color, marker, label = styles[loss]
            shift = 1 + 0.025 * (li - (n_losses - 1) / 2)  # keep error bars apart
            ax.errorbar([w * shift for w in widths], mean[li, :, 0, 0, 0],
                        yerr=sem[li, :, 0, 0, 0], color=color, marker=marker, ms=5, lw=1.4,
                        capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(widths)
        ax.set_xticklabels([str(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlabel("network width (hidden units)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"({panel}) η = {s['eta'][0]:g}, {s['seeds']} seeds per width; "
                     f"A = {s['amplitude'][0]:g}, T = {s['period'][0]}, {s['steps']} steps",
                     fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
    fig.suptitle("Dynamical vs static losses: validation accuracy after a static last "
                 "period\n(mean over seeds; error bars: s.e.m.)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    common.setup()
    from dynloss_jax import results
    from dynloss_jax.sweep import ConfigError

    args = _parser().parse_args(argv)
    out = Path(args.out)
    s = settings_from(args)
    panels = s["panels"]
    if args.replot:
        panels = [p for p in PANELS if (out / p / results.CONFIG).exists()] or panels
    runs = {}
    try:
        for panel in panels:
            config = None if args.replot else config_of(s, panel).validate()
            runs[panel] = common.sweep(config, out / panel, args, f"fig3{panel}")
    except (ConfigError, results.RunFolderError) as e:
        print(f"fig3_width_sweep: error: {e}", file=sys.stderr)
        return 2
    summary = {panel: summarise(run) for panel, run in runs.items()}
    if not args.replot:
        results.write_json(out / SUMMARY, summary)
    plot(runs, out / PNG)
    for panel, run in runs.items():
        print(table(run, summary[panel], panel))
    print(f"wrote {out / PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
