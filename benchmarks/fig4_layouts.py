"""Fig. 4 under its two program layouts: one program per (loss, η), or one per loss family with
each run stopping at its own length (``SweepConfig.steps_eta``).

Each measurement is a fresh process that runs every sweep of Fig. 4 (the ``--quick`` preset by
default, dense runs included, or the full one with ``--full``), without writing folders, on the
backend's default layout (``Strategy``); the layouts alternate, ``--repeats`` times each. Reported
per layout: programs, compile seconds (JAX's trace, lowering and compile events), wall seconds,
their medians, and the ratio of the medians (per-η over per-family: above 1, the family layout is
faster). Every process also returns its onset steps, and the layouts are checked to agree on them
run by run (``onsets_equal``): a faster layout that changed the figure would not count.

    python -m benchmarks.fig4_layouts [--repeats 2] [--full] [--seeds N] [--json PATH]

``--compare DIR`` instead reads a Fig. 4 results folder holding both layouts' sweeps (run once
with ``--programs eta`` and once with the default into the same ``--out``) and compares them run
by run: onset steps, watched onsets, stopped steps and divergence (equal or not), λ at the
onsets and the final loss (largest relative difference), and whether the two layouts' summaries
(``summarise``) are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LAYOUTS = ("eta", "family")


def worker(layout: str, full: bool, seeds: int | None) -> dict:
    from experiments import common

    common.setup()
    from dynloss_jax import run_sweep
    from dynloss_jax.strategy import default_strategy
    from experiments import fig4_instability as fig4

    s = dict(fig4.FULL if full else fig4.QUICK, programs=layout)
    if seeds:
        s["seeds"] = seeds
    runs, compile_s, programs = {}, 0.0, 0
    started = time.perf_counter()
    for key, config in fig4.configs(s).items():
        run = run_sweep(config.validate(), strategy=default_strategy(), command=[])
        runs[key] = run
        compile_s += sum(run.config["compile_s"])
        programs += run.config["programs"]
    wall = time.perf_counter() - started
    onsets = {
        f"{'dense ' if dense else ''}{loss} {eta:g}": run["instability_step"].ravel().tolist()
        for dense in (False, True)
        for (loss, eta), run in fig4.split(runs, dense).items()
    }
    return {
        "layout": layout,
        "programs": programs,
        "sweeps": len(runs),
        "wall_s": wall,
        "compile_s": compile_s,
        "onsets": onsets,
    }


def compare(folder) -> dict:
    """Both layouts' sweeps in ``folder``, compared run by run (see the module's docstring)."""
    from experiments import common

    runs = common.load_runs(folder)
    return compare_runs(
        {k: r for k, r in runs.items() if "_eta_" in k},
        {k: r for k, r in runs.items() if "_eta_" not in k},
    )


def compare_runs(per_eta: dict, family: dict) -> dict:
    """The sweeps of the two layouts (``{folder name: Run}`` each), compared run by run."""
    import json

    import numpy as np

    from experiments import fig4_instability as fig4

    out: dict = {
        "per_eta_sweeps": {k: r.config.get("git_commit") for k, r in sorted(per_eta.items())},
        "family_sweeps": {k: r.config.get("git_commit") for k, r in sorted(family.items())},
        "rows": [],
    }
    for dense in (False, True):
        a, b = fig4.split(per_eta, dense), fig4.split(family, dense)
        for key in sorted(a):
            row = {"dense": dense, "loss": key[0], "eta": key[1]}
            for name in ("instability_step", "watch_step", "stopped_step", "diverged"):
                row[f"{name}_equal"] = bool(np.array_equal(a[key][name], b[key][name]))
            for name in ("instability_lam_k", "watch_lam_k", "final_loss"):
                x, y = np.asarray(b[key][name], float), np.asarray(a[key][name], float)
                ok = np.isfinite(y)
                row[f"{name}_same_nan"] = bool(np.array_equal(np.isfinite(x), ok))
                rel = np.abs(x[ok] - y[ok]) / np.abs(y[ok])
                row[f"{name}_max_rel"] = float(rel.max()) if rel.size else 0.0
            out["rows"].append(row)
    main = [r for r in out["rows"] if not r["dense"]]
    out["main_runs_bit_identical"] = all(
        all(v for k, v in r.items() if k.endswith(("_equal", "_same_nan")))
        and all(r[f"{n}_max_rel"] == 0 for n in ("instability_lam_k", "watch_lam_k", "final_loss"))
        for r in main
    )
    out["summaries_identical"] = json.dumps(fig4.summarise(per_eta)) == json.dumps(
        fig4.summarise(family)
    )
    return out


def _spawn(layout: str, full: bool, seeds: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.fig4_layouts", "--worker"]
    cmd.append(json.dumps([layout, full, seeds]))
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(text.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="processes per layout (default 2)")
    p.add_argument("--full", action="store_true", help="Fig. 4's full preset (default: quick)")
    p.add_argument("--seeds", type=int, help="seeds per condition (default: the preset's)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--compare", metavar="DIR", help="compare both layouts' sweeps in DIR")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare:
        from pathlib import Path

        from dynloss_jax.results import write_json

        result = compare(Path(args.compare))
        result["command"] = "python -m benchmarks.fig4_layouts " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        print(
            f"main runs bit-identical: {result['main_runs_bit_identical']}; summaries "
            f"identical: {result['summaries_identical']}; {len(result['rows'])} (loss, η) rows"
        )
        if args.json:
            write_json(args.json, result)
        return 0
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    from experiments.common import run_info

    started, load = time.time(), os.getloadavg()
    measured = {layout: [] for layout in LAYOUTS}
    for _ in range(args.repeats):
        for layout in LAYOUTS:
            m = _spawn(layout, args.full, args.seeds)
            measured[layout].append(m)
            print(
                f"{layout:>7}: {m['programs']:>3} programs, compile {m['compile_s']:7.1f} s, "
                f"wall {m['wall_s']:7.1f} s",
                flush=True,
            )
    onsets = [m["onsets"] for ms in measured.values() for m in ms]
    layouts = {
        layout: {
            "programs": ms[0]["programs"],
            "sweeps": ms[0]["sweeps"],
            "wall_s": [m["wall_s"] for m in ms],
            "compile_s": [m["compile_s"] for m in ms],
            "wall_s_median": statistics.median(m["wall_s"] for m in ms),
            "compile_s_median": statistics.median(m["compile_s"] for m in ms),
        }
        for layout, ms in measured.items()
    }
    result = {
        "what": f"Fig. 4 {'full' if args.full else 'quick'} preset"
        + (f", {args.seeds} seeds" if args.seeds else "")
        + ", dense runs included, no folders written; each measurement a fresh process",
        "repeats": args.repeats,
        "layouts": layouts,
        "wall_ratio_eta_over_family": layouts["eta"]["wall_s_median"]
        / layouts["family"]["wall_s_median"],
        "onsets_equal": all(o == onsets[0] for o in onsets),
        "runs_with_onset": sum(x >= 0 for v in onsets[0].values() for x in v),
        "runs": sum(len(v) for v in onsets[0].values()),
        **run_info(started, load),
    }
    print(
        f"per-η / per-family wall time: {result['wall_ratio_eta_over_family']:.2f}×; "
        f"onsets equal in every process: {result['onsets_equal']} "
        f"({result['runs_with_onset']}/{result['runs']} runs with an onset)"
    )
    if args.json:
        from dynloss_jax.results import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
