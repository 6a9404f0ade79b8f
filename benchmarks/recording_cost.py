"""What recording the spectrum inside the compiled run adds to a sweep, at width 100.

One DCE run on the spiral (width 100, N = 603; η = 1, A = 70, T = 5000; float64, one CPU
device), ``--steps`` steps with loss and accuracy every 25. The same run is made with
``run_sweep`` under each of these recording settings:

* ``none``: no Hessian measurement;
* ``lam``: λ1, λ2 every 25 steps (16 Lanczos steps: the baseline every other row is compared to);
* ``lam+layer``: and each block's λ1 (``layer_sharpness``, 16 steps per block, 4 blocks);
* ``lam+density``: and the spectral density every 100 steps (4 probes × 32 Lanczos steps);
* ``lam+trace``: and the Hutch++ trace every 100 steps (30 products);
* ``all``: all of them;
* ``lam+class_records``: λ1, λ2 every 25 steps and the per-class records at every record
  (``class_records``: each class's losses, accuracies and gradient norm, every 25 steps);
* ``lam+class_split``: λ1, λ2 and their class split and class-gradient cosines
  (``class_split``) every 25 steps;
* ``lam+ggn_ntk``: λ1, λ2 and the top two of the Gauss–Newton matrix and of the NTK (16
  Lanczos steps each) and u1ᵀ(H − G)u1 (``ggn_ntk``) every 25 steps.

``--settings`` picks some of the rows (``lam`` is always run). Each setting is compiled once
(the compiled program is cached), then timed ``--repeats`` times, round-robin over the
settings; the figure is the median wall time of ``run_sweep``. Reported: the time per run-step,
the ratio to ``lam``, and the added time per measurement, (t − t_lam) / number of measurements,
also in units of one unrecorded step (``none``'s time per step, or ``lam``'s without it).

    python -m benchmarks.recording_cost [--steps 5000] [--repeats 5] [--settings A,B] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

SETTINGS = {
    "none": dict(eig_every=0),
    "lam": dict(eig_every=25),
    "lam+layer": dict(eig_every=25, layer_sharpness=True),
    "lam+density": dict(eig_every=25, density_every=100),
    "lam+trace": dict(eig_every=25, trace_every=100),
    "all": dict(eig_every=25, layer_sharpness=True, density_every=100, trace_every=100),
    "lam+class_records": dict(eig_every=25, class_records=True),
    "lam+class_split": dict(eig_every=25, class_split=True),
    "lam+ggn_ntk": dict(eig_every=25, ggn_ntk=True),
}
# the measurement each row adds over `lam` (its added time is divided by their number)
PER_MEASUREMENT = {
    "none": "lam",
    "lam+layer": "lam",
    "lam+density": "density",
    "lam+trace": "trace",
    "lam+class_records": "records",
    "lam+class_split": "lam",
    "lam+ggn_ntk": "lam",
}


def main(argv=None) -> int:
    started, load_before = time.time(), os.getloadavg()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--settings", help="comma-separated rows to run (default: all)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    chosen = list(SETTINGS) if not args.settings else ["lam", *args.settings.split(",")]
    unknown = set(chosen) - set(SETTINGS)
    if unknown:
        p.error(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    if args.steps % 100:
        p.error("--steps must be a multiple of 100")

    import jax

    jax.config.update("jax_enable_x64", True)
    from dynloss_jax import SweepConfig, run_sweep
    from dynloss_jax.results import write_json
    from experiments.common import run_info

    configs = {}
    for name in dict.fromkeys(chosen):
        configs[name] = SweepConfig(
            loss=("dce",),
            width=(args.width,),
            eta=(1.0,),
            amplitude=(70.0,),
            period=(5000,),
            steps=args.steps,
            record_every=25,
            chunk_steps=args.steps,
            **SETTINGS[name],
        )
        run_sweep(configs[name])  # compiles; later calls reuse the program
    # round-robin over the settings, so that a change of machine load hits every row alike
    times = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, config in configs.items():
            t = time.perf_counter()
            run_sweep(config)
            times[name].append(time.perf_counter() - t)
    rows = {}
    for name in configs:
        extra = SETTINGS[name]
        measurements = {
            "lam": args.steps // 25 if extra.get("eig_every") else 0,
            "density": args.steps // 100 if extra.get("density_every") else 0,
            "trace": args.steps // 100 if extra.get("trace_every") else 0,
            "records": args.steps // 25,
        }
        rows[name] = {
            "median_s": statistics.median(times[name]), "times_s": times[name], **measurements
        }  # fmt: skip
        print(f"{name:>12}: {rows[name]['median_s']:.3f} s", flush=True)

    base = rows["lam"]["median_s"]
    print(f"\nwidth {args.width}, {args.steps} steps, median of {args.repeats}, one CPU device")
    print(f"{'setting':>12}{'µs/step':>10}{'× lam':>8}{'added per measurement':>26}")
    for name, r in rows.items():
        r["us_per_step"] = 1e6 * r["median_s"] / args.steps
        r["ratio_to_lam"] = r["median_s"] / base
        # what each row adds over `lam`, per measurement of the kind it adds (for `none`: what
        # λ tracking itself costs, per λ measurement of `lam`)
        of = PER_MEASUREMENT.get(name)
        count = rows["lam"]["lam"] if name == "none" else r[of] if of else 0
        sign = -1.0 if name == "none" else 1.0
        added = sign * (r["median_s"] - base) / count if count else None
        r["added_ms_per_measurement"] = None if added is None else 1e3 * added
        # the same in steps: an unrecorded step is `none`'s time per step (`lam`'s without it)
        unit = rows["none" if "none" in rows else "lam"]["median_s"] / args.steps
        r["added_steps_per_measurement"] = None if added is None else added / unit
        note = "" if added is None else f"{1e3 * added:.2f} ms per {of}"
        print(f"{name:>12}{r['us_per_step']:>10.1f}{r['ratio_to_lam']:>8.2f}{note:>26}")
    if args.json:  # run_info holds the command as it was given
        write_json(
            args.json,
            {
                "width": args.width,
                "steps": args.steps,
                "repeats": args.repeats,
                "settings": {name: SETTINGS[name] for name in rows},
                "rows": rows,
                "run_info": run_info(started, load_before),
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
