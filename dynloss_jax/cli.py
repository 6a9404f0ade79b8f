"""The ``dynloss`` command: ``train`` a sweep, ``submit`` it as a job array, ``plot`` a run
folder, ``rerun`` a run folder, ``status`` of a run folder.

    dynloss train --loss dce --width 10 100 --seeds 8 --eta 1 --amplitude 70 --period 5000 \\
        --steps 20000 --static-last-period --out runs/x
    dynloss plot runs/x
    dynloss status runs/x
    dynloss rerun runs/x

Lists sweep their Cartesian product. Bad input exits with code 2 and one line naming the flag,
the value and the allowed range, before anything is compiled or written. SIGTERM or SIGINT
(Ctrl-C) stops a ``train`` at its next save point with a checkpoint, one line saying where and
how to resume, and exit code 143 or 130; a second signal stops it at once. A failed write (a
full disk) exits with code 1 and one line naming the folder and the cause.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from dynloss_jax.strategy import use_cpu_cores


class GracefulStop:
    """Within its ``with`` block the first SIGTERM or SIGINT is only noted: calling the object
    then returns the signal's name, which :func:`~dynloss_jax.sweep.run_sweep` takes as its cue
    to save a checkpoint at the next point where it can and raise ``Stopped``. A second signal
    prints ``hard_stop(name)`` and ends the process at once with exit code 128 + the signal's
    number: every write is atomic, so the folder keeps its last good checkpoint. The previous
    handlers come back on leaving the block (outside the main thread nothing is installed)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, hard_stop=lambda name: f"stopped at once by {name}"):
        self.hard_stop = hard_stop
        self.signum: int | None = None
        self._previous: dict = {}

    def __call__(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + int(self.signum or 0)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        sys.stderr.write(f"\n{self.hard_stop(signal.Signals(signum).name)}\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def resume_command(prefix: list[str], argv: list[str]) -> str:
    """The command that continues a run started with ``prefix + argv``: without
    ``--overwrite``, with ``--resume``."""
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join([*prefix, *args])


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``dynloss train: error: ...``) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(allowed: str):
    """Parses an integer flag value (``2e4`` is accepted); the error names the allowed range."""

    def parse(text: str) -> int:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value == value and value.is_integer()):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: {allowed}")
        return int(value)

    return parse


def _real(allowed: str):
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; allowed: {allowed}"
            ) from None

    return parse


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per setting of :class:`~dynloss_jax.config.SweepConfig`, from its metadata.

    Every flag defaults to ``None`` (not given), so the defaults live only in ``SweepConfig``;
    lists (``nargs="+"``) sweep; range errors come from ``SweepConfig.validate``.
    """
    from dynloss_jax.config import SweepConfig, fields

    defaults = SweepConfig()
    for f in fields():
        if not f.metadata["cli"]:
            continue
        rule, default = f.metadata["rule"], getattr(defaults, f.name)
        allowed = rule.allowed.removeprefix("must be ")
        if rule.kind == "bool":
            parser.add_argument(
                _flag(f.name), action="store_true", default=None, help=f.metadata["help"]
            )
            continue
        shown = (" ".join(map(str, default)) or "none") if isinstance(default, tuple) else default
        kw = {"int": {"type": _integer(allowed)}, "real": {"type": _real(allowed)}}.get(
            rule.kind, {}
        )
        parser.add_argument(
            _flag(f.name),
            nargs="+" if isinstance(default, tuple) else None,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} (default {shown})",
            **kw,
        )


def config_from_args(args):
    """The validated :class:`~dynloss_jax.config.SweepConfig` of the flags given."""
    from dynloss_jax.config import SweepConfig, fields

    given = {
        f.name: getattr(args, f.name) for f in fields() if getattr(args, f.name, None) is not None
    }
    return SweepConfig(**given).validate()


def plain(text: str, width: int = 79) -> str:
    """``text`` (reStructuredText of a docstring) as plain text for a terminal: inline literals
    and roles lose their markup (``dynloss`` → dynloss, :func:`f` → f, a closing ``::`` → ``:``),
    prose paragraphs are refilled to ``width`` columns, indented blocks (examples) kept as they
    are with two spaces of indent."""
    import re
    import textwrap

    out = []
    for block in textwrap.dedent(text).strip("\n").rstrip().split("\n\n"):
        if block.startswith(" "):
            out.append(textwrap.indent(textwrap.dedent(block), "  "))
            continue
        block = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", block).replace("``", "")
        block = re.sub(r"::$", ":", block.strip())
        out.append(textwrap.fill(" ".join(block.split()), width))
    return "\n\n".join(out)


def _parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = _Parser(
        prog="dynloss",
        description=plain(head),
        epilog="examples:\n\n" + plain(rest),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a sweep and write a results folder")
    _add_settings(t)
    t.add_argument(
        "--batch-size",
        type=_integer("an integer >= 0"),
        default=None,
        help="runs vmapped together per device (0: all; default: per backend)",
    )
    t.add_argument(
        "--devices", type=_integer("an integer >= 0"), default=0, help="devices to use (0: all)"
    )
    t.add_argument(
        "--pad-widths",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one compiled program per loss family, every width padded to the largest "
        "(default: on for GPU/TPU, off on a CPU)",
    )
    t.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="keep compiled programs in JAX's persistent cache in DIR for later runs",
    )
    t.add_argument(
        "--checkpoint-every",
        type=_real("a number of seconds >= 0"),
        default=None,
        metavar="SECONDS",
        help="write a checkpoint when this much work would otherwise be lost; pieces of a "
        "chunk are made shorter when one takes longer (0: after every piece; default 300). "
        "Changes no result",
    )
    t.add_argument(
        "--schedule",
        metavar="MODULE:NAME",
        default=None,
        help="a Γ schedule of your own, (step, n_classes, **hp) -> Γ (default: the paper's "
        "triangle); with this, --model, --grid or an import path for --loss, --data or "
        "--optimizer the sweep is a task sweep (see dynloss_jax.task_args)",
    )
    t.add_argument(
        "--model",
        metavar="MODULE:NAME",
        default=None,
        help="a flax module (class or object) or (init, apply) pair of your own instead of the "
        "built-in MLP",
    )
    t.add_argument(
        "--grid",
        nargs="+",
        metavar="NAME=V1,V2",
        default=None,
        help="further sweep axes: any keyword parameter of the loss, schedule or optimiser",
    )
    t.add_argument(
        "--log",
        nargs=2,
        metavar=("KIND", "DIR"),
        default=None,
        help="stream every run's records live to KIND (tensorboard or wandb, offline) in DIR "
        '(needs pip install -e ".[tensorboard]" or ".[wandb]")',
    )
    t.add_argument("--out", required=True, help="results folder")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    t.add_argument("--resume", action="store_true", help="continue an unfinished --out")
    t.add_argument("--no-plot", action="store_true", help="skip the PNG")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    _submit_parser(sub)

    pl = sub.add_parser("plot", help="draw a results folder to PNG")
    pl.add_argument("run", help="results folder")
    pl.add_argument("--png", default=None, help="output file (default RUN/training.png)")

    st = sub.add_parser(
        "status", help="progress of a results folder, also while its sweep runs (reads only)"
    )
    st.add_argument("run", help="results folder")

    r = sub.add_parser("rerun", help="run a results folder's settings again and compare")
    r.add_argument("run", help="results folder")
    r.add_argument("--out", default=None, help="new folder (default RUN-rerun)")
    r.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    r.add_argument("--quiet", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"dynloss: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    use_cpu_cores()  # before JAX starts its backend
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")  # the command draws PNG files; no window
    from dynloss_jax import results
    from dynloss_jax.config import ConfigError
    from dynloss_jax.strategy import Strategy, default_strategy
    from dynloss_jax.task import TaskError

    try:
        if args.command == "plot":
            return _plot(Path(args.run), args.png)
        if args.command == "rerun":
            return _rerun(args)
        if args.command == "status":
            return _status(Path(args.run))
        from dynloss_jax.task_args import task_mode, task_sweep_from_args

        if args.command == "submit":  # the paper's settings (a task's pieces: not yet)
            return _submit(config_from_args(args), args, ["dynloss", *argv])
        config = task_sweep_from_args(args) if task_mode(args) else config_from_args(args)
        every = args.checkpoint_every
        if every is not None and not every >= 0:  # NaN fails too
            raise ConfigError("checkpoint_every", every, "must be >= 0 seconds (0: every piece)")
        if args.batch_size is not None and args.batch_size < 0:
            raise ConfigError("batch_size", args.batch_size, "must be >= 0 (0: all)")
        if args.devices < 0 or args.devices > len(jax.devices()):
            raise ConfigError(
                "devices", args.devices, f"must be between 0 and {len(jax.devices())}"
            )
        base = default_strategy()
        strategy = Strategy(
            base.batch_size if args.batch_size is None else args.batch_size,
            args.devices,
            base.pad_widths if args.pad_widths is None else args.pad_widths,
        )
        results.check_out_folder(
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            settings=config.settings(),
            layout=strategy.layout(),
        )
        return _train(config, args, strategy, ["dynloss", *argv])
    except (ConfigError, TaskError) as e:
        return _fail(f"{_flag(e.param)} {e.value}: {e.allowed}")
    except results.RunFolderError as e:
        return _fail(str(e))
    except results.WriteFailed as e:  # what was written before is whole: every write is atomic
        hint = ""
        if args.command == "train":
            hint = (
                "; the last checkpoint is intact: once the cause is fixed, continue with: "
                + resume_command(["dynloss"], argv)
            )
        print(f"dynloss: error: {e}{hint}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the disk filled up: checkpoints written so far are intact
        hint = (
            "; the finished chunks are saved: continue with --resume"
            if args.command == "train"
            else ""
        )
        print(f"dynloss: error: {e}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ndynloss: interrupted; the last finished chunk is saved: continue with --resume",
            file=sys.stderr,
        )
        return 130


def _train(config, args, strategy, command) -> int:
    from dynloss_jax import sweep
    from dynloss_jax.progress import ProgressBar
    from dynloss_jax.results import load_run

    if args.compile_cache:
        use_compile_cache(args.compile_cache)
    again = resume_command(["dynloss"], command[1:])
    stop = GracefulStop(
        lambda name: (
            f"dynloss: stopped at once by {name}; {args.out} keeps its last "
            f"checkpoint: continue with: {again}"
        )
    )
    bar = ProgressBar("train", quiet=args.quiet)
    writers = []
    if args.log:
        from dynloss_jax import writers as live

        kind, folder = args.log
        if kind not in ("tensorboard", "wandb"):
            return _fail(f"--log {kind}: must be tensorboard or wandb")
        try:
            make = live.TensorBoardWriter if kind == "tensorboard" else live.WandbWriter
            writers.append(make(folder))
        except ImportError as e:
            return _fail(f"--log {kind}: {e}")
    every = sweep.CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    try:
        with stop:
            sweep.run_sweep(
                config,
                args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                strategy=strategy,
                progress=bar,
                command=command,
                checkpoint_every=every,
                stop=stop,
                writers=writers,
            )
    except sweep.Stopped as e:
        saved = f"checkpoint in {args.out}" if e.saved else "nothing to save yet"
        lead = "\n" if bar.enabled else ""  # after the bar's line
        print(
            f"{lead}dynloss: stopped by {e.reason} at {e.where()}; {saved}; continue with: {again}",
            file=sys.stderr,
        )
        return stop.exit_code
    finally:
        for w in writers:
            w.close()
    run = load_run(args.out)  # tables and plots read what was written, checksum verified
    print(summary_table(run))
    if not args.no_plot:
        from dynloss_jax.plotting import plot_run

        plot_run(run, Path(args.out) / "training.png")
        print(f"wrote {args.out}/ (config.json, arrays.npz, training.png)")
    return 0


def _mean_sem(mean, sem, n) -> str:
    """``0.9533 ± 0.0040``; ``n/a`` for the error of a single run, ``—`` when no run is left."""
    if n == 0:
        return f"{'—':>17}"
    if n == 1:
        return f"{mean:.4f} ±    n/a"
    return f"{mean:.4f} ± {sem:.4f}"


def summary_table(run) -> str:
    """Final train/validation accuracy, mean ± s.e.m. over seeds, one line per configuration.

    Diverged runs (loss or parameters became non-finite) are excluded from the means and counted
    in their own column, so that no NaN is printed.
    """
    from dynloss_jax.plotting import configurations

    tr_mean, tr_sem, n = run.summary("final_train_acc")
    va_mean, va_sem, n_val = run.summary("final_val_acc")
    diverged = np.asarray(run.arrays["diverged"])
    lines = [f"{'configuration':<58} {'train acc':>17} {'val acc':>17} {'runs':>5} {'diverged':>8}"]
    for label, index in configurations(run, limit=None):
        n_div = int(diverged[index].sum())
        lines.append(
            f"{label:<58} {_mean_sem(tr_mean[index], tr_sem[index], n[index])} "
            f"{_mean_sem(va_mean[index], va_sem[index], n_val[index])} "
            f"{int(n[index]):>5} {n_div:>8}"
        )
    total = int(diverged.sum())
    if total:
        lines.append(
            f"{total} of {diverged.size} runs diverged (loss or parameters non-finite) and are "
            "excluded from the means; see diverged and diverged_step in arrays.npz"
        )
    return "\n".join(lines)


def _plot(path: Path, png) -> int:
    from dynloss_jax.config import ConfigError
    from dynloss_jax.plotting import plot_run
    from dynloss_jax.results import RunFolderError, load_run

    run = load_run(path)  # an unfinished folder: what it has recorded so far
    if "record_step" not in run.arrays:
        raise RunFolderError(f"{path}: nothing recorded yet (no checkpoint written)")
    png = Path(png) if png else path / "training.png"
    if not png.parent.is_dir():
        raise ConfigError("png", str(png), f"its folder {png.parent} does not exist")
    plot_run(run, png)
    note = ""
    if not run.complete:
        lo, hi = int(run.arrays["steps_done"].min()), int(run.arrays["steps_done"].max())
        reached = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
        note = f" (unfinished run: {reached} of {run.config['settings']['steps']:,} steps)"
    print(f"wrote {png}{note}")
    return 0


def _status(path: Path) -> int:
    """Prints the progress of a results folder from its files alone (the sweep writing it is
    not disturbed)."""
    import time

    from dynloss_jax import results, shards
    from dynloss_jax.progress import describe_status

    if shards.is_sharded(path):
        print(shards.describe(path))
        return 0
    if not (path / results.CONFIG).exists():
        raise results.RunFolderError(f"{path}: no {results.CONFIG} — not a run folder")
    config = results.read_json(path / results.CONFIG)
    progress = None if config.get("complete") else results.read_progress(path)
    print(describe_status(path, config, progress, now=time.time()))
    return 0


def _rerun(args) -> int:
    from dynloss_jax import results, sweep
    from dynloss_jax.environment import differences, environment
    from dynloss_jax.progress import ProgressBar
    from dynloss_jax.strategy import Strategy, default_strategy

    old = results.load_run(args.run, unfinished=False)
    if "task" in old.config["settings"]:
        config = _task_of(old, args.run)
    else:
        config = sweep.SweepConfig.from_settings(old.config["settings"]).validate()
    changed = differences(old.config.get("environment"), environment())
    if changed:
        print(
            f"dynloss: note: the environment differs from {args.run}'s, so bits may differ "
            "(same machine and software is what is bit-for-bit):",
            file=sys.stderr,
        )
        for line in changed:
            print(f"  {line}", file=sys.stderr)
    else:
        print(f"environment: the same as {args.run}'s", file=sys.stderr)
    out = Path(args.out) if args.out else Path(str(args.run).rstrip("/") + "-rerun")
    results.check_out_folder(
        out, resume=False, overwrite=args.overwrite, settings=config.settings()
    )
    strategy = Strategy(**old.config["strategy"])
    try:
        strategy.mesh()
    except ValueError as e:
        print(
            f"dynloss: note: the run's layout cannot be used here ({e}); using the default, "
            "so results can differ by rounding",
            file=sys.stderr,
        )
        strategy = default_strategy()
    new = sweep.run_sweep(
        config,
        out,
        overwrite=args.overwrite,
        strategy=strategy,
        progress=ProgressBar("rerun", quiet=args.quiet),
        command=["dynloss", "rerun", str(args.run)],
    )
    differ = [
        k
        for k in old.arrays
        if k not in new.arrays or not np.array_equal(old.arrays[k], new.arrays[k], equal_nan=True)
    ]
    print(summary_table(new))
    if differ:
        print(f"rerun in {out}: arrays differ from {args.run}: {', '.join(differ)}")
        return 1
    print(f"rerun in {out}: all {len(old.arrays)} arrays bit-identical to {args.run}")
    return 0


def _task_of(old, path):
    """The task sweep of a folder made by ``dynloss train`` with import paths, rebuilt from its
    command; notes on stderr each function whose source changed since the run."""
    from dynloss_jax.results import RunFolderError
    from dynloss_jax.task_args import task_sweep_from_args

    command = old.config.get("command") or []
    if list(command[:2]) != ["dynloss", "train"]:
        raise RunFolderError(
            f"{path}: a task sweep made from Python ({' '.join(map(str, command[:3]))} ...): "
            "rerun it by calling run_sweep with the same task"
        )
    config = task_sweep_from_args(_parser().parse_args(list(command[1:])))
    then, now = old.config["settings"]["task"], config.settings()["task"]
    for line in source_changes(then, now):
        print(f"dynloss: note: {line}", file=sys.stderr)
    return config


def source_changes(then: dict, now: dict) -> list[str]:
    """What changed between two ``settings["task"]`` records: each function whose source hash
    differs (or is unknown), and the data's checksum."""
    lines = []
    for piece in ("loss", "schedule", "model", "optimizer", "threshold"):
        a, b = then.get(piece), now.get(piece)
        pairs = zip(a, b, strict=False) if isinstance(a, list) and isinstance(b, list) else [(a, b)]
        for x, y in pairs:
            if isinstance(x, dict) and isinstance(y, dict):
                if x.get("source_sha256") is None or x.get("source_sha256") != y.get(
                    "source_sha256"
                ):
                    lines.append(
                        f"the {piece} {x.get('module')}:{x.get('qualname')} has changed since "
                        "the run (its source differs), so the results may differ"
                    )
            elif x != y:
                lines.append(f"the {piece} differs: {x!r} then, {y!r} now")
    if then.get("data", {}).get("sha256") != now.get("data", {}).get("sha256"):
        lines.append("the data differ from the run's (another checksum)")
    return lines


def _submit_parser(sub) -> None:
    s = sub.add_parser(
        "submit",
        help="run a sweep as a job array (SLURM or local processes) filling one zarr store",
        description="Splits the sweep into --jobs shards, each a submitit job writing its region "
        "of OUT/store.zarr; dynloss status OUT shows each shard, load_run(OUT) reads the store.",
    )
    _add_settings(s)
    s.add_argument("--executor", choices=("local", "slurm"), default="local")
    s.add_argument("--jobs", type=_integer("an integer >= 1"), required=True, help="shards")
    s.add_argument("--partition", default=None, help="SLURM partition")
    s.add_argument(
        "--time", type=_integer("minutes"), default=None, metavar="MINUTES", help="time limit"
    )
    s.add_argument("--gpus-per-task", type=_integer("an integer >= 0"), default=None)
    s.add_argument("--cpus-per-task", type=_integer("an integer >= 1"), default=None)
    s.add_argument(
        "--array-parallelism",
        type=_integer("an integer >= 1"),
        default=None,
        help="at most this many shards at once (SLURM)",
    )
    s.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another sbatch option, e.g. --slurm account=abc --slurm qos=high",
    )
    s.add_argument("--batch-size", type=_integer("an integer >= 0"), default=None)
    s.add_argument("--devices", type=_integer("an integer >= 0"), default=0)
    s.add_argument("--pad-widths", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument(
        "--checkpoint-every",
        type=_real("a number of seconds >= 0"),
        default=None,
        metavar="SECONDS",
        help="each shard's checkpoints, from which a requeued job resumes (default 300)",
    )
    s.add_argument("--out", required=True, help="the sweep's folder (plan, store, shards)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    s.add_argument("--resume", action="store_true", help="submit again the shards not done")
    s.add_argument("--no-wait", action="store_true", help="return once submitted")


def _submit(config, args, command) -> int:
    from dynloss_jax import shards
    from dynloss_jax.config import ConfigError

    extra = {}
    for item in args.slurm:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError("slurm", item, "must be KEY=VALUE")
        extra[key.replace("-", "_")] = value
    slurm = shards.slurm_parameters(
        partition=args.partition,
        time=args.time,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        array_parallelism=args.array_parallelism,
        **extra,
    )
    try:
        jobs = shards.submit(
            config,
            args.out,
            jobs=args.jobs,
            executor=args.executor,
            strategy={
                "batch_size": args.batch_size,
                "n_devices": args.devices,
                "pad_widths": args.pad_widths,
            },
            checkpoint_every=args.checkpoint_every,
            slurm=slurm,
            timeout_min=args.time or 60,
            resume=args.resume,
            overwrite=args.overwrite,
            command=command,
        )
    except ImportError as e:
        return _fail(str(e))
    ids = ", ".join(j.job_id for j in jobs) or "none (every shard is done)"
    print(
        f"submitted {len(jobs)} job(s) to {args.executor}: {ids}; progress: dynloss status "
        f"{args.out}"
    )
    if args.no_wait:
        return 0
    failed = [j for j in jobs if j.exception() is not None]  # waits for each
    print(shards.describe(args.out))
    return 1 if failed else 0


def use_compile_cache(path) -> None:
    """Stores compiled programs in JAX's persistent compilation cache under ``path`` and reuses
    them in later processes (every program, however quick to compile). Opt-in: whether it hits
    depends on the backend and JAX version (``benchmarks/compile_layouts.py --cache`` checks)."""
    import jax

    path = Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if __name__ == "__main__":
    sys.exit(main())
