"""A small sweep as one process (``dynloss train``) and as a job array of local processes
(``dynloss submit --executor local``), wall time with start-up and compilation included; and,
for the one-machine case, the run folder (``arrays.npz``) against the zarr store: time to write
and to read the finished sweep, bytes and files on disk.

The sweep: DMSE1 and DCE, width 16, η ∈ {0.1, 0.3}, A = 5, T = 50, 3 seeds (12 runs), 400 GD
steps in float64, records every 10 steps, λ1, λ2 every 50. Both forms use the CPU default layout
(one run at a time per device, every core a device), and the arrays of both are compared.

    python -m benchmarks.shards [--jobs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = (
    "--loss dmse1 dce --width 16 --eta 0.1 0.3 --amplitude 5 --period 50 --seeds 3 --steps 400 "
    "--record-every 10 --eig-every 50 --chunk-steps 200"
).split()


def _timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynloss_jax", *args], check=True, capture_output=True)
    return time.perf_counter() - started


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def formats(run) -> dict:
    """Write and read the finished run as a run folder and as a store (one region, all runs)."""
    import numpy as np

    from dynloss_jax import results, shards, store
    from dynloss_jax.config import SweepConfig
    from dynloss_jax.strategy import default_strategy

    config = SweepConfig.from_settings(run.config["settings"])
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        t = time.perf_counter()
        results.save_run(folder, run.config, run.arrays, run.axes)
        out["folder_write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        results.load_run(folder)
        out["folder_read_s"] = time.perf_counter() - t
        out["folder_bytes"], out["folder_files"] = _size(folder)
        sharded = Path(tmp) / "sharded"
        plan = shards.plan_shards(config.grid_shape, 2, 1)
        t = time.perf_counter()
        shards.create(config, sharded, plan, default_strategy())
        out["store_create_s"] = time.perf_counter() - t  # shapes by jax.eval_shape, then metadata
        t = time.perf_counter()
        boxes = [tuple(slice(a, b) for a, b in box) for box in plan["shards"][0]]
        done = np.full(config.grid_shape, config.steps)
        store.write_region(sharded / store.STORE, run.arrays, boxes, done)
        out["store_write_region_s"] = time.perf_counter() - t
        t = time.perf_counter()
        back = results.load_run(sharded)
        out["store_read_s"] = time.perf_counter() - t
        out["store_bytes"], out["store_files"] = _size(sharded / store.STORE)
        out["store_equal"] = all(
            np.array_equal(back.arrays[k], a, equal_nan=True) for k, a in run.arrays.items()
        )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)

    from dynloss_jax import results

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        one_s = _timed(["train", *FLAGS, "--out", str(one), "--quiet", "--no-plot"])
        many_s = _timed(
            ["submit", *FLAGS, "--executor", "local", "--jobs", str(args.jobs), "--out", str(many)]
        )
        a, b = results.load_run(one), results.load_run(many)
        equal = all(np.array_equal(a.arrays[k], b.arrays[k], equal_nan=True) for k in a.arrays)
        shutil.rmtree(many / "jobs", ignore_errors=True)
        fmt = formats(a)
    record = {
        "command": "python -m benchmarks.shards " + " ".join(argv or sys.argv[1:]),
        "sweep": "dynloss train " + " ".join(FLAGS),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "one_process_s": round(one_s, 2),
        "job_array_s": round(many_s, 2),
        "jobs": args.jobs,
        "arrays_bit_identical": bool(equal),
        "one_machine_formats": fmt,
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
