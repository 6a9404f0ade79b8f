"""How a sweep's runs are laid onto the hardware: per backend, measured, overridable.

Runs are independent, so a sweep is "map one run over R runs" (:func:`engine.compiled`):
``batch_size`` runs are vmapped together, blocks of them are mapped sequentially inside the
compiled program (``lax.map``), and with several devices the runs are first split over a
``jax.sharding.Mesh`` (axis ``"runs"``) with ``shard_map`` (:meth:`Strategy.map_runs`). R is
padded to a multiple of the device count by repeating its last run (:meth:`Strategy.pad_runs`)
and the copies are dropped when the results come back to the host (:func:`gather`); no other
module pads or trims. A sweep deals its runs to the devices like cards (:meth:`Strategy.deal`),
so that runs that stop early (at an onset, or at their own step limit) balance across them.
Every layout gives the same numbers to rounding (``tests/test_strategy.py``).

**CPU.** One step of one run at width 100 is five small matrix products (P × 2 · 2 × W,
P × W · W × C and their transposes, P = 300 points, C = 3 classes) and a few elementwise passes over
the P × W activations; vmapping runs turns them into batched products that are no faster per
run, so the default maps runs one by one (``batch_size = 1``) and gets its parallelism from
exposing every core as its own JAX device (:func:`use_cpu_cores`, i.e.
``--xla_force_host_platform_device_count``), each core running its share of the runs.
``python -m benchmarks.throughput --strategies all`` measures batch sizes 1, 2, 4, 8, all × one
and all devices; on a 2-core machine, sequential runs on two devices were the fastest layout and
vmapped blocks were slower (figures at ``CPU_BATCH_SIZE``; the machine was shared, so they are
noisy).

**GPU/TPU.** One vmap over all runs of a device (``batch_size = 0``): the batched products are what
fills the chip, and several devices share the runs through the mesh.

**Widths and losses in one program** (``pad_widths``). Each (loss, width) of a sweep is
otherwise its own compiled program (Fig. 3 full: 45). With ``pad_widths`` every run is padded to
the sweep's largest width and the losses of one family (CE with DCE; MSE with the DMSE losses)
share a program, the member chosen per run (``spec.RunSpec``): one program per loss family.
That is the accelerator default, where compilation would otherwise dominate and the wider
batch fills the chip — a choice from the CPU measurement below, not yet measured on a GPU or
TPU. On a CPU a padded run costs what the widest run costs, so it stays off there: for Fig. 3
full, padding cut compilation from 429 s (45 programs) to 38 s (2) but ran at 0.20× the speed
(``python -m benchmarks.compile_layouts``, ``docs/results/benchmarks/compile_layouts.json``;
``dynloss train --pad-widths`` turns it on).

**Several hosts.** Start the same script on every host and call ``jax.distributed.initialize()``
(coordinator address, process count and id; detected automatically on SLURM, Open MPI and Cloud
TPU) before any JAX computation. ``jax.devices()`` then lists the devices of every process, the
default ``Strategy(n_devices=0)`` builds its mesh over all of them, and :func:`run_sweep` needs no
change: every process runs the same program on its shard of the runs, the records come back to
every process through ``process_allgather`` (:func:`gather`) and only process 0 writes the
results folder. Use ``n_devices=0`` there: a mesh that leaves out a process's devices leaves that
process nothing to run; CPU-only hosts also need
``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before initialising.
``python -m benchmarks.multihost_check`` runs this path with two local
processes (one CPU device each, gloo collectives) and compares the arrays with a single-process
sweep; a real multi-machine run (network, GPUs on several hosts, a coordinator failing) has not
been tested.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

# Runs vmapped together on one CPU device: 1 = one after another. Measured with
# `python -m benchmarks.throughput --steps 2000 --strategies all --no-baseline` (DCE, width 100,
# float64, 8 seeds, λ every 25 steps, 2-core machine, load ≈ 2–4): batch 1 on 2 devices
# 8 850 seed-steps/s; batch 2, 4, 8, all on 2 devices 7 500, 7 200, 6 900, 6 600; on 1 device
# 2 800–3 700 whatever the batch.
CPU_BATCH_SIZE = 1


@dataclasses.dataclass(frozen=True)
class Strategy:
    """``batch_size`` runs vmapped together (0: all of a device's runs); ``n_devices`` devices
    share the runs (0: all visible devices); ``pad_widths``: one program per loss family, every
    width padded to the largest."""

    batch_size: int = 0
    n_devices: int = 0
    pad_widths: bool = False

    def __post_init__(self):
        for name in ("batch_size", "n_devices"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.pad_widths, bool):
            raise ValueError(f"pad_widths must be True or False, got {self.pad_widths!r}")

    def mesh(self) -> Mesh | None:
        devices = jax.devices()
        n = len(devices) if self.n_devices == 0 else self.n_devices
        if n > len(devices):
            raise ValueError(f"n_devices={n} but only {len(devices)} devices are visible")
        return None if n == 1 else Mesh(np.array(devices[:n]), ("runs",))

    def device_count(self) -> int:
        """How many devices share the runs on this machine (``n_devices = 0`` resolved)."""
        mesh = self.mesh()
        return 1 if mesh is None else mesh.devices.size

    def layout(self) -> dict:
        """The layout as resolved here, for ``config.json`` and for checking a resume against."""
        return {
            "batch_size": self.batch_size,
            "devices": self.device_count(),
            "pad_widths": self.pad_widths,
        }

    def pad_runs(self, tree):
        """Pads the leading (run) axis of every leaf to a multiple of the device count by
        repeating the last run, so that every device gets an equal share."""
        n = self.device_count()

        def pad(a):
            a = np.asarray(a)
            extra = -a.shape[0] % n
            return np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]) if extra else a

        return jax.tree.map(pad, tree)

    def deal(self, n_runs: int) -> np.ndarray:
        """The order in which a program's ``n_runs`` runs are laid onto the devices: dealt like
        cards (run i to device i mod n, in grid order on each), so that every device gets a
        share of each part of the grid. Runs that stop early (at their onset, or at a per-run
        step limit: in Fig. 4 a run at η = 0.25 lasts 8× one at η = 2) then balance across
        the devices, where contiguous shares would give the first device all the long ones.
        The identity on one device. :func:`gather` with ``order`` puts the runs back."""
        n = self.device_count()
        return np.array(sorted(range(n_runs), key=lambda r: (r % n, r // n)), dtype=np.int64)

    def map_runs(self, fn):
        """``fn(*per_run_args, data)`` mapped over the leading axis of every per-run argument.

        ``batch_size`` runs are vmapped together and blocks are mapped sequentially
        (``lax.map``); 0 vmaps all runs at once, 1 runs them one after another. With several
        devices the runs are first split over the mesh (axis ``"runs"``) with ``shard_map``.
        """
        batch_size, mesh = self.batch_size, self.mesh()

        def local(*args):
            *per_run, data = args
            n_runs = jax.tree.leaves(per_run)[0].shape[0]
            if batch_size == 0 or batch_size >= n_runs:
                return jax.vmap(lambda *a: fn(*a, data))(*per_run)
            return jax.lax.map(
                lambda a: fn(*a, data),
                tuple(per_run),
                batch_size=None if batch_size == 1 else batch_size,
            )

        if mesh is None:
            return local

        def sharded(*args):
            runs = PartitionSpec("runs")
            return jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(runs,) * (len(args) - 1) + (PartitionSpec(),),
                out_specs=runs,
                check_vma=False,
            )(*args)

        return sharded


def gather(tree, n_runs: int, order: np.ndarray | None = None):
    """The first ``n_runs`` runs of every leaf as host NumPy arrays (drops the padding copies),
    put back in grid order when the runs were laid out in ``order`` (:meth:`Strategy.deal`).

    With several processes each holds a shard; ``process_allgather`` gives every process all.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        def host(x):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    else:
        host = np.asarray
    back = None if order is None else np.argsort(order)

    def runs(a):
        a = host(a)[:n_runs]
        return a if back is None else a[back]

    return jax.tree.map(runs, tree)


def default_strategy(backend: str | None = None) -> Strategy:
    """The measured-fastest layout for ``backend`` (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return Strategy(batch_size=CPU_BATCH_SIZE, n_devices=0, pad_widths=False)
    return Strategy(batch_size=0, n_devices=0, pad_widths=True)


def use_cpu_cores(n: int | None = None) -> None:
    """Exposes ``n`` CPU cores (default: all) as separate JAX host devices.

    Must run before JAX initialises its backends (before the first computation); does nothing if
    ``XLA_FLAGS`` already sets the device count, so a user's choice wins.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = n or len(os.sched_getaffinity(0))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def host_device_count() -> int | None:
    """The host device count requested through ``XLA_FLAGS``, if any."""
    m = re.search(r"xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(m.group(1)) if m else None
