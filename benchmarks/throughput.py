"""Throughput of the compiled engine against the authors' workflow, in one invocation.

    python -m benchmarks.throughput                     # default workload, table
    python -m benchmarks.throughput --json              # one JSON object (key seed_steps_per_s)
    python -m benchmarks.throughput --strategies all    # batch sizes × device counts
    python -m benchmarks.throughput --roofline          # one step against the CPU's arithmetic

Default workload: DCE, width 100, float64, 8 seeds, 5 000 steps, λ1/λ2 every 25 steps (Lanczos,
16 matrix-vector products), records every 5 steps, the 300-point spiral. Our figure is a whole
:func:`~dynloss_jax.sweep.run_sweep` (compiled program, records fetched to the host) with the
execution strategy under test; the baseline is :mod:`benchmarks.authors_workflow` (a Python loop of
jitted steps, metrics read every step, order-10 Lanczos from Python every 25 steps) on the same
data, network, dtype and seeds. Its per-step cost does not depend on the step count, so it runs
``--baseline-steps`` steps on ``--baseline-seeds`` seeds and is scaled; the table says so.

Each measurement runs in its own process, because the number of CPU devices JAX exposes
(``--xla_force_host_platform_device_count``) is fixed when JAX starts; the peak memory column is
that process's peak resident set size. Rates are medians of ``--repeats`` timed runs after a
warm-up run that compiles. GFLOP/s divide an arithmetic count (matrix products of the forward and
backward passes and of the Hessian-vector products, and the Lanczos orthogonalisation; elementwise
work is not counted) by the wall time. Timings on a shared machine are noisy: the load average is
printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_BATCH_SIZES = (1, 2, 4, 8, 0)  # 0: one vmap over all runs of a device


# ---------------------------------------------------------------------------------------------
# Arithmetic counts (floating-point operations of matrix products, 2 per multiply-add)


def layer_dims(width: int, depth: int, n_inputs: int = 2, n_classes: int = 3):
    dims = [n_inputs] + [width] * depth + [n_classes]
    return list(zip(dims[:-1], dims[1:], strict=True))


def n_params(width: int, depth: int) -> int:
    return sum(a * b + b for a, b in layer_dims(width, depth))


def forward_flops(points: int, width: int, depth: int) -> int:
    """Σ_l 2·P·a_l·b_l over the dense layers (a_l inputs, b_l outputs)."""
    return sum(2 * points * a * b for a, b in layer_dims(width, depth))


def gradient_flops(points: int, width: int, depth: int) -> int:
    """Forward, then per layer ∂W (2Pab) and, except for the first, ∂input (2Pab)."""
    layers = layer_dims(width, depth)
    return 3 * forward_flops(points, width, depth) - 2 * points * layers[0][0] * layers[0][1]


def hvp_flops(points: int, width: int, depth: int) -> int:
    """Forward-over-reverse: the gradient plus its tangent, which doubles every product whose
    operands both carry a tangent (first layer 4Pab, the others 12Pab)."""
    tangent = 0
    for i, (a, b) in enumerate(layer_dims(width, depth)):
        tangent += (4 if i == 0 else 12) * points * a * b
    return gradient_flops(points, width, depth) + tangent


def engine_flops_per_step(
    points, width, depth, eig_every, num_matvecs, record_every, val_points=None
) -> float:
    """Our engine, per run and step: the gradient; every ``eig_every`` steps ``num_matvecs``
    HVPs and two orthogonalisations per Lanczos step against the m × N basis (2 × 8mN); every
    ``record_every`` steps a validation forward pass."""
    val_points = points if val_points is None else val_points
    f = gradient_flops(points, width, depth)
    if eig_every:
        m, n = num_matvecs, n_params(width, depth)
        f += (m * hvp_flops(points, width, depth) + 16 * m * m * n) / eig_every
    return f + forward_flops(val_points, width, depth) / record_every


def baseline_flops_per_step(points, width, depth, eig_every, order) -> float:
    """The authors' loop, per step: the gradient, three more forward passes (loss, weighted loss,
    accuracy); every ``eig_every`` steps ``order`` HVPs and the reorthogonalisation."""
    f = gradient_flops(points, width, depth) + 3 * forward_flops(points, width, depth)
    if eig_every:
        n = n_params(width, depth)
        f += (order * hvp_flops(points, width, depth) + 2 * order * order * n) / eig_every
    return f


# ---------------------------------------------------------------------------------------------
# Workers: one process per measurement


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _setup_jax(n_devices: int | None):
    """Starts JAX with ``n_devices`` CPU host devices (None: JAX's default, one)."""
    if n_devices is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        flags = " ".join(
            f for f in flags.split() if "xla_force_host_platform_device_count" not in f
        )
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={n_devices}".strip()
        )
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _time_repeats(fn, repeats: int, *args):
    """Wall and CPU seconds of ``repeats`` calls of ``fn(*args)`` (after one untimed call)."""
    first = time.perf_counter()
    fn(*args)
    warmup = time.perf_counter() - first
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return warmup, wall, cpu


def worker_engine(w: dict) -> dict:
    """Our engine: ``run_sweep`` of the workload with one strategy."""
    jax = _setup_jax(w["host_devices"])
    from dynloss_jax.strategy import Strategy, default_strategy
    from dynloss_jax.sweep import SweepConfig, run_sweep

    if w["batch_size"] is None:
        strategy = default_strategy()
        strategy = Strategy(strategy.batch_size, w["n_devices"] or strategy.n_devices)
    else:
        strategy = Strategy(w["batch_size"], w["n_devices"])
    config = SweepConfig(
        loss=(w["loss"],),
        width=(w["width"],),
        seeds=w["seeds"],
        steps=w["steps"],
        record_every=w["record_every"],
        eig_every=w["eig_every"],
        num_matvecs=w["num_matvecs"],
        dtype=w["dtype"],
        depth=w["depth"],
        points_per_class=w["points_per_class"],
        chunk_steps=w["steps"],
        amplitude=(70.0,),
        period=(5000,),
        eta=(1.0,),
    ).validate()

    def run():
        run_sweep(config, strategy=strategy)

    warmup, wall, cpu = _time_repeats(run, w["repeats"])
    mesh = strategy.mesh()
    return {
        "backend": jax.default_backend(),
        "devices": 1 if mesh is None else mesh.devices.size,
        "batch_size": strategy.batch_size,
        "warmup_s": warmup,
        "wall_s": wall,
        "cpu_s": cpu,
        "seed_steps": w["seeds"] * w["steps"],
        "peak_rss_mb": _peak_rss_mb(),
    }


def worker_baseline(w: dict) -> dict:
    """The authors' workflow on ``baseline_seeds`` seeds × ``baseline_steps`` steps."""
    jax = _setup_jax(None)
    import jax.numpy as jnp

    from benchmarks import authors_workflow as aw
    from dynloss_jax.data import spiral
    from dynloss_jax.model import flat_model

    dtype = w["dtype"]
    model = flat_model(w["width"], depth=1, dtype=dtype)
    x, y = spiral(w["points_per_class"], seed=0)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)

    def params(seed):  # the same initial network as the engine's run of this seed
        init_key, _ = jax.random.split(jax.random.key(seed))
        p = model.unravel(model.init(init_key))["params"]
        return [
            (p["Dense_0"]["kernel"], p["Dense_0"]["bias"]),
            (p["Dense_1"]["kernel"], p["Dense_1"]["bias"]),
        ]

    seeds = [params(s) for s in range(w["baseline_seeds"])]
    kwargs = dict(
        eta=1.0, amplitude=70.0, period=5000, n_steps=w["baseline_steps"], eig_every=w["eig_every"]
    )

    def run():
        for i, p in enumerate(seeds):
            aw.train(p, x, y, key=jax.random.key(i), sync=w["sync"], **kwargs)

    warmup, wall, cpu = _time_repeats(run, w["repeats"])
    return {
        "backend": jax.default_backend(),
        "devices": 1,
        "batch_size": None,
        "warmup_s": warmup,
        "wall_s": wall,
        "cpu_s": cpu,
        "seed_steps": w["baseline_seeds"] * w["baseline_steps"],
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_blocking(fn, *args):
    import jax

    return jax.block_until_ready(fn(*args))


def worker_roofline(w: dict) -> dict:
    """What bounds one step: its time against the number of points P (a fixed per-step cost
    would show as an intercept), the matrix products of a step timed alone, and a large matrix
    product as the practical arithmetic peak of one device. CPU time, one run, no Hessian."""
    jax = _setup_jax(1)
    import jax.numpy as jnp

    from dynloss_jax import engine
    from dynloss_jax.data import make_data, spiral
    from dynloss_jax.spec import RunSpec, make_hyper
    from dynloss_jax.strategy import Strategy

    width = w["width"]
    steps_rows, kernel_rows, peaks = [], [], {}
    for dtype in ("float64", "float32"):
        for ppc in (10, 100, 1000):
            x, y = spiral(ppc, seed=0)
            data = make_data(x, y, x, y, dtype)
            steps = max(200, 200_000 // ppc)
            spec = RunSpec(
                loss=w["loss"],
                width=width,
                n_steps=steps,
                dtype=dtype,
                record_every=w["record_every"],
            )
            hyper = make_hyper(eta=[1.0], amplitude=[70.0], period=[5000], seed=[0], dtype=dtype)
            init, advance, _ = engine.compiled(spec, steps, Strategy(1, 1))
            state = init(hyper, data)
            _, wall, cpu = _time_repeats(_run_blocking, w["repeats"], advance, state, hyper, data)
            steps_rows.append(
                {
                    "dtype": dtype,
                    "points": 3 * ppc,
                    "step_us": 1e6 * min(wall) / steps,
                    "step_cpu_us": 1e6 * min(cpu) / steps,
                    "flops": gradient_flops(3 * ppc, width, 1),
                }
            )
        for name, us, flops in _kernels(jax, jnp, dtype, 3 * w["points_per_class"], width, 3):
            kernel_rows.append({"dtype": dtype, "kernel": name, "cpu_us": us, "flops": flops})
        n = 1024
        a = jnp.ones((n, n), dtype)
        _, wall, cpu = _time_repeats(_run_blocking, max(3, w["repeats"]), jax.jit(jnp.matmul), a, a)
        peaks[dtype] = {"wall": 2 * n**3 / min(wall) / 1e9, "cpu": 2 * n**3 / min(cpu) / 1e9}
    return {
        "backend": jax.default_backend(),
        "steps": steps_rows,
        "kernels": kernel_rows,
        "matmul_gflops": peaks,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _kernels(jax, jnp, dtype, p, width, c, n_iter=2000):
    """CPU µs of single operations of a step inside a ``lax.scan`` (the loop carry is the large
    operand, so nothing is hoisted): an elementwise pass over the P × W hidden activations, and
    the same P·W·C product with its small dimension last (P×W · W×C, as the forward pass writes
    it) and first (C×W · W×P)."""
    keys = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(keys[0], (p, width), dtype)
    w2 = jax.random.normal(keys[1], (width, c), dtype) * 1e-3
    d = jax.random.normal(keys[2], (p, c), dtype) * 1e-3
    cases = [
        ("elementwise pass over P×W", h, lambda a: a * 0.5 + 1e-3, 0),
        (
            "P×W · W×C (small dim last)",
            h,
            lambda a: a.at[:, 0].add((a @ w2)[:, 0] * 1e-9),
            2 * p * width * c,
        ),
        (
            "C×W · W×P (small dim first)",
            h.T,
            lambda a: a.at[0].add((w2.T @ a)[0] * 1e-9),
            2 * p * width * c,
        ),
        ("(P×W)ᵀ · P×C → W×C", h, lambda a: a.at[0].add((a.T @ d)[:, 0] * 1e-9), 2 * p * width * c),
        ("(P×C)ᵀ · P×W → C×W", h, lambda a: a.at[0].add((d.T @ a)[0] * 1e-9), 2 * p * width * c),
    ]
    out = []
    for name, a0, f, flops in cases:
        loop = jax.jit(
            lambda a, f=f: jax.lax.scan(lambda a, _: (f(a), None), a, None, length=n_iter)[0]
        )
        _, _, cpu = _time_repeats(_run_blocking, 5, loop, a0)
        out.append((name, 1e6 * min(cpu) / n_iter, flops))
    return out


WORKERS = {"engine": worker_engine, "baseline": worker_baseline, "roofline": worker_roofline}


def _spawn(kind: str, w: dict) -> dict:
    """Runs one worker in a fresh Python process and returns its result."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--worker",
        json.dumps({**w, "kind": kind}),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# ---------------------------------------------------------------------------------------------
# The parent: strategies, table, JSON


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def parse_strategies(text: list[str], backend_devices: int) -> list[tuple[int | None, int]]:
    """``auto`` (the package default), ``all`` (every CPU batch size × 1 and all devices) or
    items ``BxD``: B runs vmapped together (0: all of a device's runs), D devices."""
    out = []
    for item in text:
        if item == "auto":
            out.append((None, 0))
        elif item == "all":
            counts = sorted({1, backend_devices})
            out += [(b, d) for d in counts for b in CPU_BATCH_SIZES]
        else:
            b, _, d = item.partition("x")
            out.append((int(b), int(d or 1)))
    return list(dict.fromkeys(out))


def _rate(result) -> tuple[float, float, float]:
    """(median, min, max) seed-steps per wall second."""
    rates = [result["seed_steps"] / t for t in result["wall_s"]]
    return statistics.median(rates), min(rates), max(rates)


def _name(batch, devices, default) -> str:
    if batch is None:
        return f"auto: batch {default['batch_size']}, {default['devices']} dev"
    return f"batch {batch or 'all'}, {devices} dev"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", default="dce")
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--eig-every", type=int, default=25, help="0: no Hessian tracking")
    p.add_argument("--num-matvecs", type=int, default=16, help="our Lanczos steps")
    p.add_argument("--record-every", type=int, default=5)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--points-per-class", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--strategies",
        nargs="+",
        default=["auto"],
        help="auto | all | BxD items (B runs per vmap, 0 = all; D devices)",
    )
    p.add_argument("--baseline-steps", type=int, default=1000)
    p.add_argument("--baseline-seeds", type=int, default=1)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument(
        "--no-eig-overhead",
        action="store_true",
        help="skip the run without Hessian tracking (eig overhead)",
    )
    p.add_argument("--roofline", action="store_true", help="also time one step against P")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        w = json.loads(args.worker)
        print("RESULT " + json.dumps(WORKERS[w.pop("kind")](w)), flush=True)
        return 0

    if args.steps % args.record_every or (args.eig_every and args.steps % args.eig_every):
        p.error("--record-every and --eig-every must divide --steps")
    base = dict(
        loss=args.loss,
        width=args.width,
        seeds=args.seeds,
        steps=args.steps,
        record_every=args.record_every,
        eig_every=args.eig_every,
        num_matvecs=args.num_matvecs,
        dtype=args.dtype,
        depth=1,
        points_per_class=args.points_per_class,
        repeats=args.repeats,
        baseline_steps=args.baseline_steps,
        baseline_seeds=args.baseline_seeds,
    )

    def log(msg):
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    backend = _probe_backend()
    n_host = _cpu_count() if backend == "cpu" else None
    backend_devices = n_host if backend == "cpu" else 0
    strategies = parse_strategies(args.strategies, backend_devices or 1)

    rows = []
    baseline = peer = None
    if not args.no_baseline:
        log(
            f"baseline: authors' workflow, {args.baseline_seeds} seed(s) × "
            f"{args.baseline_steps} steps, metrics fetched every step ..."
        )
        baseline = _spawn("baseline", {**base, "sync": True})
        log("peer: the same workflow with the metrics kept on the device until the end ...")
        peer = _spawn("baseline", {**base, "sync": False})
    for batch, devices in strategies:
        host = (devices or n_host) if backend == "cpu" else None
        log(f"engine: strategy batch={batch} devices={devices or 'all'} ...")
        r = _spawn(
            "engine", {**base, "batch_size": batch, "n_devices": devices, "host_devices": host}
        )
        rows.append(((batch, devices), r))
    no_eig = None
    if args.eig_every and not args.no_eig_overhead:
        log("engine: default strategy without Hessian tracking ...")
        no_eig = _spawn(
            "engine",
            {**base, "eig_every": 0, "batch_size": None, "n_devices": 0, "host_devices": n_host},
        )
    roofline = None
    if args.roofline:
        log("roofline: one step against the number of points ...")
        roofline = _spawn("roofline", base)
    load_after = os.getloadavg()

    points = 3 * args.points_per_class
    ours_flops = engine_flops_per_step(
        points, args.width, 1, args.eig_every, args.num_matvecs, args.record_every
    )
    base_flops = baseline_flops_per_step(points, args.width, 1, args.eig_every, 10)
    base_rate = _rate(baseline)[0] if baseline else None
    default_row = next((r for (b, _), r in rows if b is None), None)
    best = max(rows, key=lambda kr: _rate(kr[1])[0])
    ours = default_row or best[1]
    peer_rate = _rate(peer)[0] if peer else None
    report = {
        "seed_steps_per_s": _rate(ours)[0],
        "async_peer_seed_steps_per_s": peer_rate,
        "speedup_vs_async_peer": _rate(ours)[0] / peer_rate if peer_rate else None,
        "speedup_vs_async_peer_cpu": (ours["seed_steps"] / min(ours["cpu_s"]))
        / (peer["seed_steps"] / min(peer["cpu_s"]))
        if peer
        else None,
        "strategy": {"batch_size": ours["batch_size"], "devices": ours["devices"]},
        "baseline_seed_steps_per_s": base_rate,
        "speedup": _rate(ours)[0] / base_rate if base_rate else None,
        "speedup_cpu": (ours["seed_steps"] / min(ours["cpu_s"]))
        / (baseline["seed_steps"] / min(baseline["cpu_s"]))
        if baseline
        else None,
        "no_eig_seed_steps_per_s": _rate(no_eig)[0] if no_eig else None,
        "eig_overhead": _rate(no_eig)[0] / _rate(ours)[0]
        if no_eig and ours is default_row
        else None,
        "eig_overhead_cpu": (no_eig["seed_steps"] / min(no_eig["cpu_s"]))
        / (ours["seed_steps"] / min(ours["cpu_s"]))
        if no_eig and ours is default_row
        else None,
        "gflops_per_s": _rate(ours)[0] * ours_flops / 1e9,
        "flops_per_seed_step": {"engine": ours_flops, "baseline": base_flops},
        "workload": {
            k: base[k]
            for k in (
                "loss",
                "width",
                "seeds",
                "steps",
                "eig_every",
                "num_matvecs",
                "record_every",
                "dtype",
            )
        },
        "rows": [
            {
                "batch_size": r["batch_size"],
                "devices": r["devices"],
                "requested": {"batch_size": b, "devices": d},
                "seed_steps_per_s": _rate(r)[0],
                "min": _rate(r)[1],
                "max": _rate(r)[2],
                "cpu_seed_steps_per_s": r["seed_steps"] / min(r["cpu_s"]),
                "peak_rss_mb": r["peak_rss_mb"],
                "warmup_s": r["warmup_s"],
            }
            for (b, d), r in rows
        ],
        "baseline": baseline,
        "async_peer": peer,
        "no_eig": no_eig,
        "roofline": roofline,
        "machine": {
            "backend": backend,
            "cpus": _cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(),
            "jax": _jax_version(),
            "load_avg_before": load_before,
            "load_avg_after": load_after,
        },
        "command": "python -m benchmarks.throughput "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        print(
            format_report(
                report, rows, baseline, peer, no_eig, roofline, ours_flops, base_flops, args
            )
        )
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _jax_version() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.__version__)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return out.stdout.strip()


def _probe_backend() -> str:
    """The default JAX backend, asked in a child so that this process never starts JAX."""
    code = "import jax; print(jax.default_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "cpu"


def format_report(
    report, rows, baseline, peer, no_eig, roofline, ours_flops, base_flops, args
) -> str:
    wl = report["workload"]
    lines = [
        f"workload: {wl['loss']}, width {wl['width']}, {wl['dtype']}, {wl['seeds']} seeds × "
        f"{wl['steps']} steps, λ1/λ2 every {wl['eig_every'] or '—'} steps "
        f"(m = {wl['num_matvecs']}), records every {wl['record_every']}; "
        f"{report['machine']['backend']}, {report['machine']['cpus']} CPUs",
        f"arithmetic per seed-step: engine {ours_flops / 1e6:.2f} MFLOP, baseline "
        f"{base_flops / 1e6:.2f} MFLOP (matrix products only)",
        "",
        f"{'':34s} {'seed-steps/s':>12s} {'(min–max)':>15s} {'× base':>7s} {'GFLOP/s':>8s} "
        f"{'per CPU-s':>9s} {'peak RSS':>9s} {'1st run':>8s}",
    ]

    def row(name, r, flops):
        med, lo, hi = _rate(r)
        ratio = f"{med / report['baseline_seed_steps_per_s']:.1f}" if baseline else "—"
        cpu = r["seed_steps"] / min(r["cpu_s"])
        lines.append(
            f"{name:34s} {med:12.0f} {f'({lo:.0f}–{hi:.0f})':>15s} {ratio:>7s} "
            f"{med * flops / 1e9:8.2f} {cpu:9.0f} {r['peak_rss_mb']:7.0f}MB "
            f"{r['warmup_s']:7.1f}s"
        )

    if baseline:
        row(
            f"authors' workflow ({args.baseline_seeds}×{args.baseline_steps}, scaled)",
            baseline,
            base_flops,
        )
    if peer:
        row("  the same, metrics fetched at the end", peer, base_flops)
    default = next((r for (b, _), r in rows if b is None), rows[0][1])
    for (b, d), r in rows:
        row("engine, " + _name(b, d, default), r, ours_flops)
    if no_eig:
        flops = engine_flops_per_step(
            3 * args.points_per_class, args.width, 1, 0, 0, args.record_every
        )
        row("engine, auto, no Hessian tracking", no_eig, flops)
    lines.append("")
    which = "default strategy" if any(b is None for (b, _), _ in rows) else "fastest strategy"
    if baseline:
        lines.append(
            f"engine ({which}) against the baseline: ×{report['speedup']:.1f} in "
            f"seed-steps per wall second, ×{report['speedup_cpu']:.1f} per CPU-second "
            "(less sensitive to load)"
        )
    if peer:
        lines.append(
            f"engine ({which}) against the asynchronous peer (the same workflow, metrics "
            f"fetched once at the end): ×{report['speedup_vs_async_peer']:.1f} per wall "
            f"second, ×{report['speedup_vs_async_peer_cpu']:.1f} per CPU-second"
        )
    if report["eig_overhead"]:
        lines.append(
            f"Hessian tracking costs ×{report['eig_overhead_cpu']:.2f} in CPU time "
            f"(×{report['eig_overhead']:.2f} in wall time; default strategy, with vs "
            "without)"
        )
    if roofline:
        peaks = roofline["matmul_gflops"]
        lines += [
            "",
            "one step, 1 run, 1 device, no Hessian tracking (CPU time, best of repeats):",
            f"{'dtype':8s} {'P':>5s} {'CPU µs/step':>11s} {'wall µs':>8s} "
            f"{'GFLOP/s':>8s} {'of matmul peak':>14s}",
        ]
        for r in roofline["steps"]:
            g = r["flops"] / r["step_cpu_us"] / 1e3
            lines.append(
                f"{r['dtype']:8s} {r['points']:5d} {r['step_cpu_us']:11.1f} "
                f"{r['step_us']:8.1f} {g:8.2f} {g / peaks[r['dtype']]['cpu']:13.0%}"
            )
        lines += [
            "",
            f"operations of a step alone (P = {3 * args.points_per_class}, "
            f"W = {args.width}, C = 3; CPU µs):",
        ]
        for r in roofline["kernels"]:
            g = f"{r['flops'] / r['cpu_us'] / 1e3:6.1f} GFLOP/s" if r["flops"] else ""
            lines.append(f"  {r['dtype']:8s} {r['kernel']:30s} {r['cpu_us']:7.2f} µs {g}")
        for dt, g in peaks.items():
            lines.append(
                f"{dt}: 1024×1024 matmul: {g['cpu']:.1f} GFLOP/s per CPU-second "
                f"({g['wall']:.1f} per wall second)"
            )
    m = report["machine"]
    lines += [
        "",
        f"load average before/after: {m['load_avg_before'][0]:.2f} / "
        f"{m['load_avg_after'][0]:.2f} (1 min); rates are medians of {args.repeats} "
        "repeats after a warm-up run",
        f"command: {report['command']}",
    ]
    if baseline and wl["loss"] != "dce":
        lines.insert(
            2,
            "the baseline trains DCE (the authors' loss); per step it costs the same "
            "as the other losses up to a few elementwise operations",
        )
    if baseline:
        lines.insert(
            2,
            f"baseline scaled from {args.baseline_seeds} seed(s) × "
            f"{args.baseline_steps} steps (its per-step cost is constant)",
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
