"""A small sweep through ``run_sweep`` (a :class:`~dynloss_jax.Task`) against the shortest
hand-written ``jit``/``vmap`` loop over the package's pure pieces, each in a fresh process, wall
time with compilation included.

The sweep: DCE on the spiral (100 points per class), the built-in MLP of width 16, the paper's
triangle Γ (T = 200), η ∈ {0.5, 1, 2} × A ∈ {10, 40} × 3 seeds = 18 runs of 1 000 GD steps in
float64, λ1, λ2 every 50 steps by 16-step Lanczos. The engine records loss, static loss, train
and validation accuracy and Γ every 10 steps (warm-started Lanczos, its default measurement);
the hand loop records the loss every step and λ1, λ2 from a cold start, nothing else — the
least a researcher would write. Both use JAX's default devices of a fresh process (one CPU
device unless ``XLA_FLAGS`` says otherwise); the engine lays the runs out as
``default_strategy()`` does, the hand loop vmaps all 18.

    python -m benchmarks.own_loop [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ETAS, AMPLITUDES, SEEDS = (0.5, 1.0, 2.0), (10.0, 40.0), (0, 1, 2)
STEPS, EIG_EVERY, WIDTH, PERIOD = 1000, 50, 16, 200


def engine() -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import dynloss_jax as dl

    started = time.perf_counter()
    x, y = dl.spiral(seed=0)
    xv, yv = dl.spiral(seed=1)
    task = dl.Task(data=(x, y, xv, yv), loss="dce", schedule=dl.schedule.triangle())
    grid = dict(width=[WIDTH], eta=ETAS, amplitude=AMPLITUDES, period=[PERIOD], seed=SEEDS)
    run = dl.run_sweep(task, grid=grid, steps=STEPS, eig_every=EIG_EVERY, record_every=10)
    lam = run["lam"]
    return {"wall_s": time.perf_counter() - started, "lam1_mean": float(lam[..., 0].mean())}


def hand() -> dict:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    import dynloss_jax as dl
    from dynloss_jax.eig import hvp, lanczos

    started = time.perf_counter()
    x, y = (jnp.asarray(a) for a in dl.spiral(seed=0))
    model, dce = dl.flat_model(WIDTH), dl.get_loss("dce")

    def run(eta, amplitude, seed):
        def loss(w, t):
            g = dl.gamma(t, n_classes=3, amplitude=amplitude, period=PERIOD)
            return dce(model.apply(w, x), y, g)

        def step(w, t):
            value, grad = jax.value_and_grad(loss)(w, t)
            return w - eta * grad, value

        def interval(w, t0):
            res = lanczos(lambda v: hvp(loss, w, v, t0), jnp.zeros_like(w), jax.random.key(0))
            w, losses = jax.lax.scan(step, w, t0 + jnp.arange(EIG_EVERY))
            return w, (losses, res.top_K)

        w0 = model.init(jax.random.split(jax.random.key(seed))[0])
        return jax.lax.scan(interval, w0, jnp.arange(0, STEPS, EIG_EVERY))[1]

    grid = [(e, a, s) for e in ETAS for a in AMPLITUDES for s in SEEDS]
    eta, amplitude, seed = (jnp.asarray(v) for v in zip(*grid, strict=True))
    losses, lam = jax.jit(jax.vmap(run))(eta, amplitude, seed)
    lam = jax.block_until_ready(lam)
    return {"wall_s": time.perf_counter() - started, "lam1_mean": float(lam[..., 0].mean())}


def _spawn(kind: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.own_loop", "--one", kind],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    p.add_argument("--one", choices=("engine", "hand"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(engine() if args.one == "engine" else hand()))
        return {}
    load_before = os.getloadavg()[0]
    times = {"engine": [], "hand": []}
    lam = {}
    for _ in range(args.repeats):  # alternated, so that a change of load hits both
        for kind in times:
            r = _spawn(kind)
            times[kind].append(round(r["wall_s"], 3))
            lam[kind] = r["lam1_mean"]
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    result = {
        "command": "python -m benchmarks.own_loop " + " ".join(argv or sys.argv[1:]),
        "workload": f"DCE, width {WIDTH}, {len(ETAS) * len(AMPLITUDES) * len(SEEDS)} runs x "
        f"{STEPS} steps, lambda1/2 every {EIG_EVERY} (16 Lanczos steps), float64, spiral",
        "wall_s": times,
        "median_s": med,
        "ratio_engine_over_hand": round(med["engine"] / med["hand"], 3),
        "goal": "<= 1.2",
        "lam1_mean": lam,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "load_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
