"""Plumbing shared by the experiment modules: flags, results folders, progress, timing.

Every experiment takes ``--quick`` (a reduced run, ≤ 3 minutes on 2 CPU cores), ``--out``,
``--quiet``, ``--overwrite`` and ``--replot`` (redraw the figure from an existing results folder
without training). Setting ``DYNLOSS_SMOKE=1`` shrinks ``--quick`` further for the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dynloss_jax.strategy import use_cpu_cores


def setup() -> None:
    """Exposes every CPU core as a JAX device and turns on float64; call before any JAX work."""
    use_cpu_cores()
    import jax

    jax.config.update("jax_enable_x64", True)


def smoke() -> bool:
    """True when the test suite asks for the smallest possible run."""
    return os.environ.get("DYNLOSS_SMOKE") == "1"


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced run (a few minutes on a CPU)")
    p.add_argument("--out", default=default_out, help=f"results folder (default {default_out})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    p.add_argument("--replot", action="store_true", help="redraw from --out without training")
    return p


def settings(args, full: dict, quick: dict, smoke_preset: dict) -> dict:
    """The preset (full; quick with ``--quick``; smoke with ``--quick`` under DYNLOSS_SMOKE=1)
    with every flag the user gave overriding its entry (lists become tuples)."""
    preset = dict(smoke_preset if args.quick and smoke() else quick if args.quick else full)
    for name in list(preset):
        value = getattr(args, name, None)
        if value is not None:
            preset[name] = tuple(value) if isinstance(value, list) else value
    return preset


def _command() -> list[str]:
    """How this experiment was launched, as ``python -m experiments.<name> <flags>``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return ["python", "-m", module, *sys.argv[1:]]


def sweep(config, out: Path, args, label: str):
    """Runs ``config`` into ``out`` (or loads it with ``--replot``) and returns the Run."""
    from dynloss_jax import load_run, run_sweep
    from dynloss_jax.progress import ProgressBar

    if args.replot:
        return load_run(out)
    started = time.perf_counter()
    run_sweep(config, out, overwrite=args.overwrite,
              progress=ProgressBar(label, quiet=args.quiet),
              command=_command())
    if not args.quiet:
        print(f"{label}: {time.perf_counter() - started:.1f} s -> {out}", file=sys.stderr)
    return load_run(out)  # figures are drawn from what was written
