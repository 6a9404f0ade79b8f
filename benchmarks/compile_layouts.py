"""Compile and run cost of Fig. 3 full under each layout: one program per (loss, width), or one
per loss family with the widths padded (``Strategy.pad_widths``).

Each layout runs in a fresh process: the two Fig. 3 sweeps at their full size (panel a: CE, DCE
× 9 widths × 50 seeds; panel b: the MSE family × 9 widths × 10 seeds — three losses when the
stored figures were measured, four since ``dmse1o`` joined the panel), shortened to
``--steps`` steps (T = steps/2, the last period static), so that compilation is a visible part
of the time. Reported per layout: the number of programs, compile seconds per program and in
total (JAX's trace, lowering and compile events), and the run-steps per second of the running
itself (wall time minus compilation). With ``--cache DIR`` the padded and unpadded processes
are each run twice with JAX's persistent compilation cache in DIR (emptied first): whether the
second process compiles less says whether the cache hits on this backend.

    python -m benchmarks.compile_layouts [--steps 400] [--cache DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def worker(pad: bool, steps: int, cache: str | None) -> dict:
    from dataclasses import replace

    import jax

    jax.config.update("jax_enable_x64", True)
    from dynloss_jax import run_sweep
    from dynloss_jax.cli import use_compile_cache
    from dynloss_jax.strategy import default_strategy
    from experiments import fig3_width_sweep as fig3

    if cache:
        use_compile_cache(cache)
    half = steps // 2
    s = dict(fig3.FULL, period=half, periods=2, period_b=half, periods_b=2, record_every=half)
    strategy = replace(default_strategy(), pad_widths=pad)
    out = {"pad_widths": pad, "programs": 0, "compile_s": [], "run_steps": 0, "wall_s": 0.0}
    for panel in ("a", "b"):
        config = fig3.config_of(s, panel)
        started = time.perf_counter()
        run = run_sweep(config, strategy=strategy, command=[])
        out["wall_s"] += time.perf_counter() - started
        out["programs"] += run.config["programs"]
        out["compile_s"] += run.config["compile_s"]
        out["run_steps"] += len(config.loss) * len(config.width) * config.seeds * config.steps
    out["compile_total_s"] = sum(out["compile_s"])
    out["run_steps_per_s"] = out["run_steps"] / max(out["wall_s"] - out["compile_total_s"], 1e-9)
    return out


def _spawn(pad: bool, steps: int, cache: str | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.compile_layouts",
        "--worker",
        json.dumps([pad, steps, cache]),
    ]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(text.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="steps per run (even; default 400)")
    p.add_argument("--cache", metavar="DIR", help="also time a second process with this cache")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    if args.steps < 2 or args.steps % 2:
        p.error("--steps must be an even number >= 2")

    from dynloss_jax.strategy import use_cpu_cores
    from experiments.common import run_info

    use_cpu_cores()  # the workers inherit XLA_FLAGS: every core its own device, as the CLI does
    started, load_before = time.time(), os.getloadavg()
    rows = []
    for pad in (False, True):
        row = {"first": _spawn(pad, args.steps, None)}
        if args.cache:
            cache = os.path.join(args.cache, "padded" if pad else "separate")
            shutil.rmtree(cache, ignore_errors=True)
            row["cache_cold"] = _spawn(pad, args.steps, cache)
            row["cache_warm"] = _spawn(pad, args.steps, cache)
        rows.append(row)
        r = row["first"]
        print(
            f"{'padded' if pad else 'separate':>9}: {r['programs']:>3} programs, compile "
            f"{r['compile_total_s']:6.1f} s (max {max(r['compile_s']):.1f} s per program), "
            f"running {r['run_steps_per_s']:,.0f} run-steps/s"
        )
        if args.cache:
            print(
                f"{'':>9}  with the cache: compile {row['cache_cold']['compile_total_s']:.1f} s "
                f"cold, {row['cache_warm']['compile_total_s']:.1f} s in a second process"
            )
    separate, padded = rows[0]["first"], rows[1]["first"]
    report = {
        "what": "Fig. 3 full (both panels, full seeds and widths), runs shortened to --steps",
        "steps": args.steps,
        "layouts": rows,
        "compile_ratio_separate_over_padded": separate["compile_total_s"]
        / padded["compile_total_s"],
        "run_speed_ratio_padded_over_separate": padded["run_steps_per_s"]
        / separate["run_steps_per_s"],
        **run_info(started, load_before),
    }
    print(
        f"compilation ×{report['compile_ratio_separate_over_padded']:.1f} shorter padded; "
        f"running ×{report['run_speed_ratio_padded_over_separate']:.2f} the speed of separate"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
