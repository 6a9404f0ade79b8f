"""Fig. 4: the sharpness λ1 at the first instability against the learning rate η, vs 2/η.

For DCE, DMSE1 and DMSE2, each run is watched by the online period-2 onset detector
(``dynloss_jax.instability``: the loss starts to zigzag with growing amplitude), and λ1 — measured
by Lanczos every ``eig_every`` steps — is read (interpolated) at the onset. The figure shows the
mean over seeds and conditions (A, T) per loss and η on log-log axes with the edge-of-stability
line 2/η; faint points are the per-condition means. A least-squares fit of log λ1 = c + b·log η
over all runs with an onset gives the slope b (−1 for λ1 = 2/η), printed with its standard error;
runs without an onset are counted in the table, not in the fit.

Paper settings (the defaults): width 100, A ∈ {25, 50, 75}, T ∈ {5000, 10000}, 100 000/η steps,
30 seeds per condition. The total number of steps depends on η, and the step count (like the
loss) is static in a compiled program, so each (loss, η) is its own sweep, written to
``<out>/<loss>_eta_<η>/``.

The η grids are not given (SPEC §2); decided here, a factor 2 apart, one per loss family:

* DMSE1, DMSE2: η = 0.05, 0.1, 0.2, 0.4. MSE's sharpness at initialisation is λ1 ≈ 3–4.3 at
  width 100, so η ≤ 0.4 keeps 2/η ≥ 5 above it (no run starts unstable); these losses then
  sharpen to 2/η within a few thousand steps;
* DCE: η = 0.25, 0.5, 1, 2. DCE starts flat (λ1 ≈ 0.5–0.7) and sharpens slowly: in 2000/η-step
  runs at η ≤ 0.4 its λ1 never passed 3, far below 2/η ≥ 5, and no instability occurred; η = 1
  is the rate of the paper's Figs. 2 and 3a. Its instabilities come a few steps before the end
  of a period, where λ1 rises fast.

Together the two grids span η = 0.05–2. λ1 every 100 steps = T/50 for T = 5000: read at a DCE
onset just before a period's end, where λ1 moves fast, λ1 sampled every T/5 came out at 1.10
and 0.79 × 2/η (η = 1, 2), every T/20 at 0.87 and 0.91, every T/50 at 0.91 and 0.91 (quick
settings, 2 seeds). The λ records then stay ~200 MB per sweep at η = 0.05.

``--quick``: η = 0.1, 0.2, 0.4 (DMSE) and 0.5, 1, 2 (DCE), A = 50, T = 500, 2500/η steps (T and
the run length scaled down by 10 and 40), 2 seeds, λ1 every 25 steps (T/20).

Runtime: the full figure is 1.5·10⁹ run-steps (DMSE at η = 0.05 alone is 2·10⁶ steps × 180 runs
per loss): weeks on 2 CPU cores, and a GPU job (each (loss, η) program vmaps its 180 runs;
expected hours, not measured). ``--quick`` took 1.9 min wall, 1.6 min of CPU on 2 shared CPU
cores (190 000 run-steps at width 100 with a 16-step Lanczos every 25 steps, and 9 compilations).

    python -m experiments.fig4_instability --quick      # -> results/fig4_instability/
    python -m experiments.fig4_instability --etas-mse 0.2 0.4 --etas-ce 1 2 --seeds 4
    python -m experiments.fig4_instability --replot
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

from experiments import common

FULL = dict(losses=("dce", "dmse1", "dmse2"), etas_ce=(0.25, 0.5, 1.0, 2.0),
            etas_mse=(0.05, 0.1, 0.2, 0.4), amplitudes=(25.0, 50.0, 75.0), periods=(5000, 10000),
            seeds=30, width=100, steps_eta=100_000, eig_every=100)
QUICK = dict(FULL, etas_ce=(0.5, 1.0, 2.0), etas_mse=(0.1, 0.2, 0.4), amplitudes=(50.0,),
             periods=(500,), seeds=2, steps_eta=2500, eig_every=25)
SMOKE = dict(FULL, losses=("dce",), etas_ce=(1.0, 2.0), amplitudes=(50.0,), periods=(20,),
             seeds=2, width=8, steps_eta=100, eig_every=10)
PNG = "fig4_instability.png"
SUMMARY = "summary.json"
LABEL = {"dce": "DCE", "dmse1": "DMSE1", "dmse2": "DMSE2", "ce": "CE", "mse": "MSE"}
STATIC = {"dce": "ce", "dmse1": "mse", "dmse2": "mse", "ce": "ce", "mse": "mse"}


def _parser():
    p = common.parser(__doc__, "results/fig4_instability")
    p.add_argument("--losses", nargs="+", help="dynamical losses (default dce dmse1 dmse2)")
    p.add_argument("--etas-ce", type=float, nargs="+",
                   help="learning rates of DCE (default 0.25 0.5 1 2)")
    p.add_argument("--etas-mse", type=float, nargs="+",
                   help="learning rates of DMSE1, DMSE2 (default 0.05 0.1 0.2 0.4)")
    p.add_argument("--amplitudes", type=float, nargs="+", help="A values (default 25 50 75)")
    p.add_argument("--periods", type=int, nargs="+", help="T values (default 5000 10000)")
    p.add_argument("--seeds", type=int, help="seeds per condition (default 30; quick 2)")
    p.add_argument("--width", type=int, help="hidden units (default 100)")
    p.add_argument("--steps-eta", type=float,
                   help="run length × η, i.e. steps = this/η (default 100000; quick 2000)")
    p.add_argument("--eig-every", type=int, help="λ1 every k steps (default 100; quick 50)")
    return p


def settings_from(args) -> dict:
    """The preset (full, quick or smoke) overridden by the flags given."""
    return common.settings(args, FULL, QUICK, SMOKE)


def steps_for(eta: float, steps_eta: float, eig_every: int) -> int:
    """steps_eta/η rounded up to a whole number of λ measurements (ignoring rounding noise:
    100 000/0.05 is 2 000 000, not one more interval)."""
    return eig_every * math.ceil(round(steps_eta / eta / eig_every, 9))


def etas_of(s: dict, loss: str) -> tuple:
    return s["etas_ce"] if STATIC[loss] == "ce" else s["etas_mse"]


def config_of(s: dict, loss: str, eta: float):
    from dynloss_jax import SweepConfig

    return SweepConfig(loss=(loss,), width=(s["width"],), eta=(eta,),
                       amplitude=s["amplitudes"], period=s["periods"], seeds=s["seeds"],
                       steps=steps_for(eta, s["steps_eta"], s["eig_every"]),
                       record_every=s["eig_every"], eig_every=s["eig_every"], num_matvecs=16)


def folder(out: Path, loss: str, eta: float) -> Path:
    return out / f"{loss}_eta_{eta:g}"


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


def summarise(runs: dict) -> dict:
    """Per loss and η: λ1 at the onset (mean, sem, runs with an onset, runs), the onset step
    (median), and per loss the fitted slope; ``runs`` is {(loss, η): Run}."""
    import numpy as np

    losses = sorted({loss for loss, _ in runs}, key=list(LABEL).index)
    rows, fits = [], {}
    for loss in losses:
        all_eta, all_lam = [], []
        for eta in sorted(eta for name, eta in runs if name == loss):
            run = runs[loss, eta]
            lam = run["instability_lam"].reshape(-1)
            step = run["instability_step"].reshape(-1)
            found = np.isfinite(lam)
            n = int(found.sum())
            rows.append({
                "loss": loss, "eta": float(eta), "two_over_eta": 2 / float(eta),
                "lam_mean": float(np.mean(lam[found])) if n else float("nan"),
                "lam_sem": float(np.std(lam[found], ddof=1) / np.sqrt(n)) if n > 1
                else float("nan"),
                "onset_step_median": float(np.median(step[found])) if n else float("nan"),
                "found": n, "runs": int(lam.size), "diverged": int(run["diverged"].sum()),
                "steps": int(run.config["settings"]["steps"]),
            })
            all_eta += [float(eta)] * n
            all_lam += lam[found].tolist()
        b, se, c, n = fit_slope(all_eta, all_lam)
        fits[loss] = {"slope": b, "slope_se": se, "intercept": c, "points": n,
                      "prefactor": math.exp(c) if math.isfinite(c) else float("nan")}
    return {"rows": rows, "fits": fits}


def table(summary: dict) -> str:
    lines = ["Fig. 4: λ1 at the first instability (mean ± s.e.m. over seeds and (A, T)) vs 2/η",
             f"{'loss':>6} {'η':>6} {'2/η':>7} {'λ1 at onset':>18} {'η·λ1/2':>7} "
             f"{'onsets':>9} {'median onset step':>18} {'steps':>8}"]
    for r in summary["rows"]:
        ratio = r["eta"] * r["lam_mean"] / 2
        extra = f"  ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(f"{r['loss']:>6} {r['eta']:>6g} {r['two_over_eta']:>7.3g} "
                     f"{r['lam_mean']:>9.3f} ± {r['lam_sem']:<6.3f} {ratio:>7.3f} "
                     f"{r['found']:>4}/{r['runs']:<4} {r['onset_step_median']:>18.0f} "
                     f"{r['steps']:>8}{extra}")
    lines.append("fit log λ1 = c + b·log η (all runs with an onset; 2/η has b = −1, e^c = 2):")
    for loss, f in summary["fits"].items():
        lines.append(f"  {loss:>6}: b = {f['slope']:.3f} ± {f['slope_se']:.3f}, "
                     f"e^c = {f['prefactor']:.3f}, {f['points']} runs")
    return "\n".join(lines)


def plot(runs: dict, summary: dict, path):
    """Draws the figure from loaded runs {(loss, η): Run} and their summary; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(11.5, 4.8), constrained_layout=True,
                                       gridspec_kw={"width_ratios": [1.35, 1]})
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
        label = (f"{LABEL.get(loss, loss)}: slope {f['slope']:.2f} ± {f['slope_se']:.2f} "
                 f"({found}/{total} runs with an onset)")
        ax.errorbar(eta * shift[loss], mean, yerr=sem, color=color, marker=marker, ms=6,
                    lw=0, elinewidth=1.3, capsize=3, label=label)
        ax_ratio.errorbar(eta * shift[loss], eta * mean / 2, yerr=eta * sem / 2, color=color,
                          marker=marker, ms=6, lw=1, capsize=3, label=LABEL.get(loss, loss))
        for (name, e), run in runs.items():  # per-condition (A, T) means, faint
            if name != loss:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no onset
                cond = np.nanmean(run["instability_lam"], axis=-1).reshape(-1)
            ax.plot(np.full(cond.shape, e * shift[loss]), cond, marker, color=color,
                    alpha=0.3, ms=4)
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
    ax.set_title(f"(a) width {s['width'][0]}, A ∈ {{{', '.join(f'{a:g}' for a in s['amplitude'])}}}"
                 f", T ∈ {{{', '.join(str(t) for t in s['period'])}}}, {s['seeds']} seeds × "
                 f"{n_cond} condition(s) per point", fontsize=9, loc="left")
    ax_ratio.set_ylabel("η·λ1 / 2 at the first instability")
    ax_ratio.set_title("(b) the same, relative to 2/η", fontsize=9, loc="left")
    ax_ratio.legend(fontsize=8)
    fig.suptitle("Sharpness at the first period-2 instability of the loss (error bars: s.e.m.)",
                 fontsize=10)
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
    runs = {}
    try:
        if args.replot:
            for sub in sorted(out.glob("*_eta_*")):
                run = results.load_run(sub)
                runs[run.coords["loss"][0], float(run.coords["eta"][0])] = run
            if not runs:
                raise results.RunFolderError(f"{out}: no <loss>_eta_<η> run folders to replot")
        else:
            for loss in s["losses"]:
                for eta in etas_of(s, loss):
                    config = config_of(s, loss, eta).validate()
                    runs[loss, float(eta)] = common.sweep(config, folder(out, loss, eta), args,
                                                          f"fig4 {loss} η={eta:g}")
    except (ConfigError, results.RunFolderError) as e:
        print(f"fig4_instability: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(runs)
    if not args.replot:
        results.write_json(out / SUMMARY, summary)
    plot(runs, summary, out / PNG)
    print(table(summary))
    print(f"wrote {out / PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
