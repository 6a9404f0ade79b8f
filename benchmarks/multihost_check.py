"""A multi-process sweep on one machine, compared with the single-process sweep.

    python -m benchmarks.multihost_check            # 2 processes × 1 CPU device each

Several hosts run the same script; each calls ``jax.distributed.initialize`` before any JAX
computation and then sees every process's devices in ``jax.devices()``. This check starts
``--processes`` local processes that do exactly that (coordinator on localhost, CPU collectives
through gloo), runs the same small sweep in all of them with the default strategy (its mesh spans
every process's devices), and compares the arrays that process 0 gets back (through
``process_allgather``) with a plain single-process run. It exercises the code path of a
multi-host sweep, not a network between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(
    loss=("dce", "ce"),
    width=(6,),
    eta=(0.5, 1.0),
    amplitude=(5.0,),
    period=(10,),
    seeds=3,
    steps=40,
    record_every=2,
    eig_every=10,
    num_matvecs=6,
    points_per_class=4,
    chunk_steps=20,
)


def _sweep_arrays(out: Path):
    import jax

    jax.config.update("jax_enable_x64", True)
    from dynloss_jax.strategy import Strategy
    from dynloss_jax.sweep import SweepConfig, run_sweep

    run = run_sweep(SweepConfig(**SETTINGS), strategy=Strategy(batch_size=1, n_devices=0))
    if jax.process_index() == 0:
        np.savez(out, **run.arrays)
    return jax.process_count(), len(jax.devices()), len(jax.local_devices())


def _worker(args):
    import jax

    if args.process_id is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.processes,
            process_id=args.process_id,
            local_device_ids=[0],
        )
    processes, devices, local = _sweep_arrays(Path(args.out))
    print(
        "RESULT " + json.dumps({"processes": processes, "devices": devices, "local": local}),
        flush=True,
    )
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        return _compare(args, Path(tmp))


def _compare(args, scratch: Path) -> int:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    base = [sys.executable, "-m", "benchmarks.multihost_check", "--worker"]
    single = subprocess.run(
        base + ["--out", str(scratch / "single.npz")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if single.returncode:
        print(single.stderr[-3000:], file=sys.stderr)
        return 1
    coordinator = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            base
            + [
                "--out",
                str(scratch / "multi.npz"),
                "--processes",
                str(args.processes),
                "--process-id",
                str(i),
                "--coordinator",
                coordinator,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(args.processes)
    ]
    outs = [pr.communicate(timeout=900) for pr in procs]
    if any(pr.returncode for pr in procs):
        for pr, (_, err) in zip(procs, outs, strict=True):
            print(f"process exit {pr.returncode}:\n{err[-3000:]}", file=sys.stderr)
        return 1
    info = json.loads([ln for ln in outs[0][0].splitlines() if ln.startswith("RESULT ")][-1][7:])
    a, b = np.load(scratch / "single.npz"), np.load(scratch / "multi.npz")
    worst = 0.0
    for name in a.files:
        x, y = a[name].astype(float), b[name].astype(float)
        assert x.shape == y.shape, name
        both_nan = np.isnan(x) & np.isnan(y)
        worst = max(worst, float(np.max(np.where(both_nan, 0.0, np.abs(x - y)), initial=0.0)))
    print(
        f"{info['processes']} processes, {info['devices']} devices in the mesh "
        f"({info['local']} per process): {len(a.files)} arrays, max |difference| to the "
        f"single-process sweep {worst:.1e}"
    )
    return 0 if worst <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
