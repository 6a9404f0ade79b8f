"""Host memory of a large sweep, estimated and measured scaled down.

    python -m benchmarks.memory                       # 1000 runs × 2000 and 4000 steps
    python -m benchmarks.memory --runs 1000 --steps 2000 4000 --target-steps 100000

A sweep keeps on the host only what the compiled program records: every ``record_every`` steps
the loss, static loss, train and validation accuracy and Γ (4 + C numbers), every ``eig_every``
steps λ1, λ2, λ_min and their residuals (6 numbers), and a few numbers per run at the end; the
per-step trajectory never leaves the device. So the arrays of R runs × S steps take

    bytes = R · S · 8 · ((4 + C) / record_every + 6 / eig_every)   (float64)

This module measures the peak resident memory of ``run_sweep`` (in a fresh process each, on one
CPU device, width 4, 12 points: the arrays do not depend on the network) for a few step counts,
subtracts the same process's peak for a one-chunk sweep of the same runs (JAX, the compiled
program, the state), fits the growth per step and extrapolates to ``--target-steps``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def array_bytes(runs, steps, record_every, eig_every, n_classes=3, itemsize=8) -> float:
    """Bytes of the recorded arrays of a sweep (the formula in the module docstring)."""
    per_step = (4 + n_classes) / record_every + (6 / eig_every if eig_every else 0.0)
    return runs * steps * itemsize * per_step


def _worker(w: dict) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from dynloss_jax.strategy import Strategy
    from dynloss_jax.sweep import SweepConfig, run_sweep

    config = SweepConfig(
        loss=("dce",),
        width=(4,),
        eta=(0.5,),
        amplitude=(5.0,),
        period=(100,),
        seeds=w["runs"],
        steps=w["steps"],
        record_every=w["record_every"],
        eig_every=w["eig_every"],
        num_matvecs=4,
        points_per_class=4,
        chunk_steps=w["chunk_steps"],
    )
    run = run_sweep(config, strategy=Strategy(batch_size=0, n_devices=1))
    held = sum(a.nbytes for a in run.arrays.values())
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "arrays_mb": held / 2**20,
    }


def _spawn(w: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--worker", json.dumps(w)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--steps", type=int, nargs="+", default=[2000, 4000])
    p.add_argument("--record-every", type=int, default=5)
    p.add_argument("--eig-every", type=int, default=25)
    p.add_argument("--chunk-steps", type=int, default=1000)
    p.add_argument("--target-runs", type=int, default=1000)
    p.add_argument("--target-steps", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0

    base = dict(
        runs=args.runs,
        record_every=args.record_every,
        eig_every=args.eig_every,
        chunk_steps=args.chunk_steps,
    )
    floor = _spawn({**base, "steps": args.chunk_steps})
    rows = []
    for steps in args.steps:
        r = _spawn({**base, "steps": steps})
        rows.append(
            {
                "steps": steps,
                **r,
                "growth_mb": r["peak_rss_mb"] - floor["peak_rss_mb"],
                "formula_mb": array_bytes(args.runs, steps, args.record_every, args.eig_every)
                / 2**20,
            }
        )
    # peak growth per step beyond the one-chunk floor, from the largest measurement
    last = rows[-1]
    per_run_step = last["growth_mb"] / (last["steps"] - args.chunk_steps) / args.runs
    target = args.target_runs * args.target_steps
    estimate_mb = floor["peak_rss_mb"] + per_run_step * target
    formula_mb = (
        array_bytes(args.target_runs, args.target_steps, args.record_every, args.eig_every) / 2**20
    )
    # the least a sweep can hold: the floor, the arrays themselves and one chunk in flight
    chunk_mb = (
        array_bytes(args.target_runs, args.chunk_steps, args.record_every, args.eig_every) / 2**20
    )
    least_mb = floor["peak_rss_mb"] + formula_mb + chunk_mb
    report = {
        "rows": rows,
        "floor": floor,
        "peak_mb_per_run_step": per_run_step,
        "target": {
            "runs": args.target_runs,
            "steps": args.target_steps,
            "arrays_mb_formula": formula_mb,
            "peak_rss_mb_estimate": estimate_mb,
            "peak_over_arrays": per_run_step * target / formula_mb,
            "peak_rss_mb_least": least_mb,
        },
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.runs} runs, records every {args.record_every}, λ every {args.eig_every} "
        f"steps, chunks of {args.chunk_steps} steps (one CPU device)"
    )
    print(
        f"{'steps':>7s} {'arrays (formula)':>17s} {'arrays (held)':>14s} {'peak RSS':>9s} "
        f"{'growth over floor':>18s}"
    )
    print(
        f"{args.chunk_steps:7d} {'':17s} {floor['arrays_mb']:12.1f}MB "
        f"{floor['peak_rss_mb']:7.0f}MB {'(floor)':>18s}"
    )
    for r in rows:
        print(
            f"{r['steps']:7d} {r['formula_mb']:15.1f}MB {r['arrays_mb']:12.1f}MB "
            f"{r['peak_rss_mb']:7.0f}MB {r['growth_mb']:16.1f}MB"
        )
    t = report["target"]
    print(
        f"\n{args.target_runs} runs × {args.target_steps} steps: arrays {formula_mb:.0f} MB "
        f"(formula); peak host memory ≈ {estimate_mb:.0f} MB "
        f"(floor + {per_run_step * 1e6:.2f} MB per million run-steps; the peak is "
        f"{t['peak_over_arrays']:.1f}× the arrays)"
    )
    print(f"the least possible (floor + arrays + one chunk in flight): ≈ {least_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
