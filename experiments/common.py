"""The skeleton every experiment module shares: flags, presets, sweeps, summary, figure, table.

An experiment module defines ``OUT`` (default results folder), ``PNG``, ``LABEL``, the presets
``FULL``, ``QUICK`` and ``SMOKE``, and

* ``add_flags(parser)`` — its own flags (each overrides the preset entry of the same name);
* ``configs(s) -> {key: SweepConfig}`` — the sweeps of settings ``s``; key ``""`` is ``--out``
  itself, any other key the subfolder ``--out/key``;
* ``summarise(runs) -> dict`` — the numbers the figure shows, from the loaded runs
  ``{key: Run}`` (written to ``--out/summary.json``);
* ``table(runs, summary) -> str`` and ``plot(runs, summary, path)``;
* optionally ``write_tables(runs, out)`` — per-run tables written beside the summary, and
  ``load_runs(out)`` — what ``--replot`` loads instead of the run folders (Fig. 4's table);
* optionally ``after_runs(runs, s, args)`` — more computation on the finished runs, saved in
  their folders (Fig. 2's landscape snapshots), so that ``--replot`` needs none.

:func:`main` then gives every experiment ``--quick`` (a reduced run, ≤ 3 minutes on 2 CPU
cores), ``--out``, ``--quiet``, ``--overwrite``, ``--replot`` (redraw the figure from an
existing results folder without training), ``--resume``, ``--checkpoint-every`` and ``--dtype``
(every sweep in float32 instead of float64: the precision study of ``benchmarks.gpu_check``).
``DYNLOSS_SMOKE=1`` shrinks ``--quick`` further for the test suite.

As with ``dynloss train``, SIGTERM or SIGINT stops the sweep in progress at its next save point
with a checkpoint, prints one line (which sweep, where, the command to resume) and exits with
143 or 130; a second signal stops at once. ``--resume`` then loads the finished sweeps and
continues the unfinished one. A failed write exits with 1 and one line naming the folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import ModuleType

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
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="reduced run (a few minutes on a CPU)")
    p.add_argument("--out", default=default_out, help=f"results folder (default {default_out})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    p.add_argument("--replot", action="store_true", help="redraw from --out without training")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: finished sweeps are loaded, unfinished ones resumed",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="checkpoint when this much work would otherwise be lost (0: after every piece; "
        "default 300); changes no result",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default=None,
        help="precision of every sweep (default: each sweep's own, float64)",
    )
    p.add_argument(
        "--pad-widths",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one compiled program per loss family, widths padded (default: per backend)",
    )
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


def _command(argv=None) -> list[str]:
    """How this experiment was launched, as ``python -m experiments.<name> <flags>``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)]


def sweep(config, out: Path, args, label: str):
    """Runs ``config`` into ``out`` (or loads it with ``--replot``) and returns the Run."""
    from dynloss_jax import load_run, run_sweep
    from dynloss_jax.progress import ProgressBar

    if args.replot:
        return load_run(out)
    from dataclasses import replace

    from dynloss_jax import results
    from dynloss_jax.strategy import default_strategy

    strategy = default_strategy()
    if args.pad_widths is not None:
        strategy = replace(strategy, pad_widths=args.pad_widths)
    if args.resume and args.overwrite:
        raise results.ConfigError("overwrite", True, "cannot be combined with --resume")
    resume = False
    if args.resume and (Path(out) / results.CONFIG).exists():
        saved = results.read_json(Path(out) / results.CONFIG)
        if saved.get("complete"):
            differ = results.settings_differences(saved.get("settings"), config.settings())
            if differ:
                raise results.ConfigError(
                    "resume",
                    str(out),
                    f"holds a finished run with other settings ({'; '.join(differ)}): pass "
                    "--overwrite to replace it, or choose another --out",
                )
            if not args.quiet:
                print(f"{label}: {out} is complete, loaded", file=sys.stderr)
            return load_run(out)
        resume = True  # an unfinished folder, or refused by run_sweep if its settings differ
    started = time.perf_counter()
    from dynloss_jax.sweep import CHECKPOINT_EVERY, Stopped

    every = args.checkpoint_every
    try:
        run_sweep(
            config,
            out,
            resume=resume,
            overwrite=args.overwrite,
            strategy=strategy,
            progress=ProgressBar(label, quiet=args.quiet),
            command=_command(),
            checkpoint_every=CHECKPOINT_EVERY if every is None else every,
            stop=getattr(args, "stop", None),
        )
    except Stopped as e:
        e.folder = out  # which sweep of the experiment
        raise
    if not args.quiet:
        print(f"{label}: {time.perf_counter() - started:.1f} s -> {out}", file=sys.stderr)
    return load_run(out)  # figures are drawn from what was written


SUMMARY = "summary.json"
RUN_INFO = "run_info.json"  # how the summary was made: command, runtime, machine, load


def run_start() -> tuple[float, tuple, dict]:
    """What :func:`run_info` needs from a run's start: the time, the load averages and the
    source state (:func:`dynloss_jax.environment.source`)."""
    from dynloss_jax.environment import source

    return time.time(), os.getloadavg(), source()


def run_info(started: float, load_before, source_at_start: dict | None = None) -> dict:
    """How a result was made: command, runtime, load, machine, and the source state
    (``git_commit``, ``git_dirty``) read when the run *started* (``source_at_start``, from
    :func:`dynloss_jax.environment.source`; read now if not given) — the checkout may move
    while a long run goes on."""
    from dynloss_jax.environment import environment, source

    env = environment()
    return {
        "command": " ".join(_command()),
        **(source_at_start if source_at_start is not None else source()),
        "runtime_s": round(time.time() - started, 1),
        "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()),
        "cpu_model": env["cpu_model"],
        "cpus": len(os.sched_getaffinity(0)),
        "backend": env["backend"],
        "devices": env["device_count"],
        "jax": env["jax"],
        "environment": env,
    }


def _label(exp: ModuleType, key: str) -> str:
    return f"{exp.LABEL} {key}".strip()


def load_runs(out: Path) -> dict:
    """The runs of an experiment folder: ``{"": run}`` when ``out`` is one run folder, else
    ``{name: run}`` for each subfolder holding one."""
    from dynloss_jax import results

    if (out / results.CONFIG).exists():
        return {"": results.load_run(out, unfinished=False)}
    runs = {
        sub.name: results.load_run(sub, unfinished=False)
        for sub in sorted(out.glob("*"))
        if (sub / results.CONFIG).exists()
    }
    if not runs:
        raise results.RunFolderError(f"{out}: no run folders to replot")
    return runs


def run_all(exp: ModuleType, s: dict, out: Path, args) -> dict:
    """Runs every sweep of ``exp.configs(s)`` (each validated before the first one starts),
    in ``--dtype`` when given."""
    from dataclasses import replace

    configs = exp.configs(s)
    if getattr(args, "dtype", None):
        configs = {key: replace(config, dtype=args.dtype) for key, config in configs.items()}
    configs = {key: config.validate() for key, config in configs.items()}
    return {
        key: sweep(config, out / key if key else out, args, _label(exp, key))
        for key, config in configs.items()
    }


def main(exp: ModuleType, argv=None) -> int:
    """Parses the flags, runs (or with ``--replot`` loads) the sweeps, writes the summary and
    the figure, prints the table. Bad settings or a damaged folder: one line, exit code 2."""
    setup()
    from dynloss_jax import results
    from dynloss_jax.cli import GracefulStop, resume_command
    from dynloss_jax.config import ConfigError
    from dynloss_jax.sweep import Stopped

    p = parser(exp.__doc__, exp.OUT)
    exp.add_flags(p)
    args = p.parse_args(argv)
    out = Path(args.out)
    module = exp.__spec__.name if exp.__spec__ else exp.__name__
    name = module.rsplit(".", 1)[-1]
    given = sys.argv[1:] if argv is None else list(argv)
    again = resume_command(["python", "-m", module], given)
    started, load_before, at_start = run_start()
    args.stop = GracefulStop(
        lambda signal_name: (
            f"{name}: stopped at once by {signal_name}; the folders under {out} "
            f"keep their last checkpoints: continue with: {again}"
        )
    )
    try:
        with args.stop:
            if args.replot:  # an experiment may replot from its own tables (its load_runs)
                runs = getattr(exp, "load_runs", load_runs)(out)
            else:
                s = settings_of(exp, args)
                runs = run_all(exp, s, out, args)
                if hasattr(exp, "after_runs"):  # work on the finished runs, kept beside them
                    exp.after_runs(runs, s, args)
        summary = exp.summarise(runs)
    except (ConfigError, results.RunFolderError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        saved = "checkpoint written" if e.saved else "nothing to save yet"
        print(
            f"{name}: stopped by {e.reason} in {e.folder} at {e.where()}; {saved}; "
            f"continue with: {again}",
            file=sys.stderr,
        )
        return args.stop.exit_code
    except results.WriteFailed as e:
        print(
            f"{name}: error: {e}; the last checkpoint is intact: once the cause is fixed, "
            f"continue with: {again}",
            file=sys.stderr,
        )
        return 1
    if not args.replot:
        results.write_json(out / SUMMARY, summary)
        results.write_json(out / RUN_INFO, run_info(started, load_before, at_start))
        for filename, obj in getattr(exp, "outputs", lambda _: {})(summary).items():
            results.write_json(out / filename, obj)
        if hasattr(exp, "write_tables"):  # per-run tables beside the summary
            exp.write_tables(runs, out)
    exp.plot(runs, summary, out / exp.PNG)
    print(exp.table(runs, summary))
    print(f"wrote {out / exp.PNG}")
    return 0


def settings_of(exp: ModuleType, args) -> dict:
    """The module's own ``settings_from(args)`` if it has one, else :func:`settings`."""
    if hasattr(exp, "settings_from"):
        return exp.settings_from(args)
    return settings(args, exp.FULL, exp.QUICK, exp.SMOKE)
