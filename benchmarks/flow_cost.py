"""The cost of a step of the flows program against a step of GD, and of tracking every step.

One process, one run of the central-flow experiment's network (Fig. 2's: width 100, DCE,
A = 70, T = 5000, η = 1), each program compiled first and then timed over ``--steps`` steps,
``--repeats`` times (median):

* ``gd``: the engine's GD step, no Hessian measurement (loss recorded every 100 steps);
* ``gd_lanczos``: the same with λ1, λ2 measured every step (16 Lanczos products);
* ``gd_top_k``: the same with the top K measured every step by the warm-started block Krylov
  space (``--top-k``, 3 blocks: 3K products);
* ``flows``: :func:`dynloss_jax.flows.run_flows` at the experiment's settings — GD, its
  midpoints, the stable flow (sharpness-limited RK4 substeps) and the central flow (2 RK4
  substeps, the K × K projection solved in the graph), each process's top K every step.

Printed and written (``--json``): seconds per step of each and its ratio to ``gd``.

    python -m benchmarks.flow_cost [--steps 200] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    import jax

    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def measure(steps: int, repeats: int, k: int) -> dict:
    from dynloss_jax import SweepConfig, engine
    from dynloss_jax.spec import RunSpec, make_hyper
    from experiments import central_flow as experiment

    s = dict(experiment.FULL, k=k)
    out = {}
    for name, extra in (
        ("gd", dict(record_every=100)),
        ("gd_lanczos", dict(record_every=1, eig_every=1)),
        ("gd_top_k", dict(record_every=1, eig_every=1, top_k=k)),
    ):
        config = SweepConfig(
            loss=("dce",),
            width=(s["width"],),
            eta=(s["eta"],),
            amplitude=(s["amplitude"],),
            period=(s["period"],),
            seeds=1,
            steps=steps,
            **extra,
        ).validate()
        spec = RunSpec.from_config(config, **config.programs()[0])
        hyper = make_hyper(**config.runs())
        data = config.arrays()
        init, advance, _ = engine.compiled(spec, steps)
        state = init(hyper, data)
        out[name] = _median_seconds(functools.partial(advance, state, hyper, data), repeats)

    loss_fn, w0, U0, _ = experiment.spiral_problem(s, "dce")
    advance, start = experiment.flows_program(loss_fn, w0, U0, s, steps)
    run = functools.partial(advance, start, 0)
    out["flows"] = _median_seconds(run, repeats)
    base = out["gd"][0] / steps
    return {
        name: {
            "seconds_per_step": median / steps,
            "ratio_to_gd": median / steps / base,
            "seconds": times,
        }
        for name, (median, times) in out.items()
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="steps per timed call (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    p.add_argument("--k", type=int, default=3, help="eigenvalues tracked (default 3)")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args(argv)
    from experiments import common

    common.setup()
    started, load = time.time(), os.getloadavg()
    result = measure(args.steps, args.repeats, args.k)
    for name, r in result.items():
        print(
            f"{name:>11}: {1e3 * r['seconds_per_step']:8.3f} ms/step  "
            f"×{r['ratio_to_gd']:6.1f} a GD step"
        )
    if args.json:
        from dynloss_jax.results import write_json

        write_json(
            args.json,
            {
                "what": "one run of the central-flow experiment's network (width 100, DCE, η = 1), "
                f"{args.steps} steps per call, median of {args.repeats} calls; k = {args.k}",
                "programs": result,
                **common.run_info(started, load),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
