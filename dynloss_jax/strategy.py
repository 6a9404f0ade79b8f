"""How a sweep's runs are laid onto the hardware: per backend, measured, overridable.

Runs are independent, so a sweep is "map one run over R runs". On a GPU or TPU the fastest layout
is one vmap over all runs of a device (the matrices become big enough to fill the chip). On a CPU
vmapping small matrices makes batched kernels that fall out of cache, so runs are vmapped in small
blocks mapped sequentially, and each core is exposed as its own JAX device so that blocks run in
parallel (``--xla_force_host_platform_device_count``). ``benchmarks/throughput.py`` measures the
choices; the defaults below come from it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np
from jax.sharding import Mesh

CPU_BATCH_SIZE = 8  # runs vmapped together on one CPU device (benchmarks/throughput.py)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """``batch_size`` runs vmapped together (0: all of a device's runs); ``n_devices`` devices
    share the runs (0: all visible devices)."""

    batch_size: int = 0
    n_devices: int = 0

    def mesh(self) -> Mesh | None:
        devices = jax.devices()
        n = len(devices) if self.n_devices == 0 else self.n_devices
        if n > len(devices):
            raise ValueError(f"n_devices={n} but only {len(devices)} devices are visible")
        return None if n == 1 else Mesh(np.array(devices[:n]), ("runs",))


def default_strategy(backend: str | None = None) -> Strategy:
    """The measured-fastest layout for ``backend`` (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return Strategy(batch_size=CPU_BATCH_SIZE, n_devices=0)
    return Strategy(batch_size=0, n_devices=0)


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
