"""What determines the bits of a run: software versions, backend, device and CPU, XLA's flags.

Same settings, same code: a run is bit-for-bit reproducible only on the same software and
hardware. XLA picks kernels by the CPU's vector extensions (AVX2, AVX-512, …) and by its own
version and flags, so the sums inside a matmul are ordered differently elsewhere, and at the
edge of stability a rounding difference grows until whole trajectories differ (λ at the first
instability still agrees to ~1e-12 between a CPU and a GPU; final accuracies do not, see the
README). :func:`environment` records the fields that decide this; :func:`differences` says
which of them differ between two records, so that ``dynloss rerun`` can say why bits may move
before it compares them.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

# the CPU features that change which kernels XLA:CPU (and numpy's BLAS) choose
_VECTOR_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "asimd", "sve")


def _cpu() -> tuple[str, list[str]]:
    """CPU model and its vector extensions, from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = sorted(w for w in value.split() if w.startswith(_VECTOR_PREFIXES))
    except OSError:
        pass
    return model, flags


def environment() -> dict:
    """The fields that decide a run's bits (JSON-ready):

    ``python, jax, jaxlib`` versions; ``backend`` (cpu, gpu, tpu) and ``device_kind`` of the
    first device; ``device_count``; ``machine`` (x86_64, arm64); ``cpu_model`` and
    ``cpu_vector_extensions``; ``xla_flags`` (the XLA_FLAGS variable, "" if unset) and
    ``x64`` (jax_enable_x64).
    """
    import jax

    model, flags = _cpu()
    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpu_vector_extensions": flags,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "x64": bool(jax.config.jax_enable_x64),
    }


def source() -> dict:
    """The source state: ``git_commit`` (the checkout's HEAD, ``None`` outside a git checkout)
    and ``git_dirty`` (uncommitted changes to any tracked file of the checkout — the package,
    the experiments, the benchmarks —: the commit alone then does not reproduce a run; ``None``
    without a commit)."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def differences(old: dict | None, new: dict) -> list[str]:
    """One line per field of ``new`` whose value differs in ``old`` (``old`` may be a record
    written before a field existed: a missing field is reported as ``not recorded``)."""
    if old is None:
        return ["environment: not recorded in the original run"]
    lines = []
    for key, value in new.items():
        if key not in old:
            lines.append(f"{key}: not recorded -> {value}")
        elif old[key] != value:
            was = old[key]
            if isinstance(value, list) and isinstance(was, list):
                gone, added = sorted(set(was) - set(value)), sorted(set(value) - set(was))
                lines.append(f"{key}: lost {gone or 'none'}, gained {added or 'none'}")
            else:
                lines.append(f"{key}: {was!r} -> {value!r}")
    return lines
