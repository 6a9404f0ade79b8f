"""A sweep as a job array: its grid split into shards, each run by an independent job (submitit:
SLURM, or local processes), all filling one zarr store (:mod:`dynloss_jax.store`).

    submit(config, "runs/big", jobs=64, executor="slurm",
           slurm=dict(partition="gpu", time=240, gpus_per_task=1, array_parallelism=16))

A sharded sweep's folder ``OUT`` holds ``plan.json`` (the shards), ``store.zarr`` (the results,
created before any job starts), ``shards/NNNN/`` (a shard's run folder while it runs: its
checkpoints and ``progress.json``, removed once its region is in the store), ``shards/NNNN.json``
(the shard's end: done, with its run's config, or failed, with the error) and ``jobs/``
(submitit's scripts and logs). ``load_run(OUT)`` reads the store, also while jobs write.

**Shards.** The grid is cut into units: one program cell (a ``loss`` × ``width``) times a block
of its runs, contiguous along the run axes (``eta``, …, ``seed``, the last axes whole), just
small enough that there are as many units as jobs; a shard is a run of consecutive units
(:func:`plan_shards`), and a unit is one chunk of every array of the store, so no two jobs write
the same chunk. A job runs its shard with :func:`~dynloss_jax.sweep.run_sweep`'s ``runs=``
(the other programs are not compiled) and writes its region when it finishes.

**Bit for bit.** Runs are independent and, one at a time per device (``batch_size=1``, the CPU
default), a run gives the same bits whichever runs share its program
(:func:`~dynloss_jax.sweep._pad` keeps the count per device on the same side of one), so the
store equals the one-process sweep with the same layout bit for bit
(``tests/test_shards.py``). Vmapped runs (``batch_size`` 0 or above 1, the accelerator default)
batch differently in a shard and agree to rounding only: pass ``batch_size=1`` where bits
matter.

**Pre-emption.** A job is submitit-checkpointable: on SLURM's pre-emption or time-limit signal
it is requeued, and the new job resumes its shard from the last checkpoint of its run folder
(``checkpoint_every`` seconds of work at most are redone), bit-identically, as ``--resume``
does. A shard that fails for good writes ``shards/NNNN.json`` with the error; the other shards'
regions are untouched, ``dynloss status OUT`` names it, and ``submit(..., resume=True)`` runs
again only the shards not done.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dynloss_jax import results, store
from dynloss_jax.config import ConfigError
from dynloss_jax.grid import PROGRAM_AXES

PLAN = "plan.json"
SHARDS = "shards"
JOBS = "jobs"


def is_sharded(path) -> bool:
    """Whether ``path`` is the folder of a sharded sweep (it has ``plan.json``)."""
    return (Path(path) / PLAN).is_file()


# --- the plan: units (chunks of the store) and the shards that own them ---------------------


def _units(shape: tuple, n_program: int, per_cell: int) -> tuple[list, list]:
    """``(chunk, boxes)``: the chunk shape (1 along the program axes; along the run axes a
    block of at least ``per_cell`` parts of a cell, the axes after its split axis whole) and the
    boxes (``[start, stop]`` per axis) of every chunk, in grid order."""
    runs = list(shape[n_program:])
    chunk = [1] * len(runs)
    before = 1
    for k, n in enumerate(runs):
        if before * n >= per_cell:
            parts = -(-per_cell // before)
            chunk = [1] * k + [-(-n // parts)] + runs[k + 1 :]
            break
        before *= n
    chunk = [1] * n_program + chunk
    counts = [-(-n // c) for n, c in zip(shape, chunk, strict=True)]
    boxes = [
        [[i * c, min((i + 1) * c, n)] for i, c, n in zip(index, chunk, shape, strict=True)]
        for index in np.ndindex(*counts)
    ]
    return chunk, boxes


def plan_shards(shape, program_axes: int, jobs: int) -> dict:
    """The plan of a job array of ``jobs`` shards over a grid of ``shape`` (its first
    ``program_axes`` axes are program axes): ``{"jobs", "chunks", "shards"}``, ``chunks`` the
    store's chunk shape along the grid axes and ``shards[j]`` the boxes (``[start, stop]`` per
    grid axis) of shard j: consecutive units, as many per shard as can be (±1). Raises
    :class:`ConfigError` for more jobs than runs."""
    shape = tuple(int(n) for n in shape)
    total = math.prod(shape)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= total:
        raise ConfigError("jobs", jobs, f"must be an integer from 1 to {total} (the grid's runs)")
    cells = math.prod(shape[:program_axes])
    per_cell = -(-jobs // cells)
    while True:  # a block split may round to fewer parts than asked: ask for one more
        chunk, units = _units(shape, program_axes, per_cell)
        if len(units) >= jobs:
            break
        per_cell += 1
    bounds = np.linspace(0, len(units), jobs + 1).round().astype(int)
    return {
        "jobs": jobs,
        "chunks": chunk,
        "shards": [units[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
    }


def shard_runs(config, boxes: list, pad_widths: bool) -> dict[int, list[int]]:
    """The runs of a shard's ``boxes`` as :func:`~dynloss_jax.sweep.run_sweep` takes them:
    program index (of ``config.programs(pad_widths)``) → indices of its runs, sorted."""
    shape = tuple(config.grid_shape)
    n_program = sum(1 for n in config.coords if n in PROGRAM_AXES)
    cell_runs = math.prod(shape[n_program:])
    index = np.arange(cell_runs).reshape(shape[n_program:])
    where = {
        tuple(cell): (gi, k)
        for gi, program in enumerate(config.programs(pad_widths))
        for k, cell in enumerate(program["cells"])
    }
    chosen: dict[int, list[int]] = {}
    for box in boxes:
        block = index[tuple(slice(a, b) for a, b in box[n_program:])].ravel()
        for cell in itertools.product(*(range(a, b) for a, b in box[:n_program])):
            gi, k = where[cell]
            chosen.setdefault(gi, []).extend((k * cell_runs + block).tolist())
    return {gi: sorted(runs) for gi, runs in chosen.items()}


def _slices(box) -> tuple:
    return tuple(slice(a, b) for a, b in box)


# --- the store, created before the jobs -------------------------------------------------------


def _templates(config) -> tuple[dict, dict, dict]:
    """``(templates, axes, steps)`` of the sweep's results arrays without running anything:
    the shapes of one run's outputs (``jax.eval_shape`` of the first program's compiled pieces),
    filed as :func:`run_sweep` files them on a grid of one run; ``steps`` the step arrays."""
    import jax

    from dynloss_jax import engine, sweep
    from dynloss_jax.spec import make_hyper
    from dynloss_jax.strategy import Strategy

    program = config.programs(False)[0]
    spec, chunk = config.spec(program), config.chunk
    init, advance, finalize = engine.compiled(spec, chunk, Strategy(1, 1))
    hyper = sweep._take(make_hyper(**config.hyper_args(program), dtype=config.dtype), [0])
    data = config.arrays()
    state = jax.eval_shape(init, hyper, data)
    _, records, eig, spectra = jax.eval_shape(advance, state, hyper, data)
    final = jax.eval_shape(finalize, state, hyper, data)

    def zeros(tree):
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)

    names = list(config.coords)
    collector = sweep._Collector(names, (1,) * len(names), config.steps, 1)
    first = np.zeros(1, np.int64)
    part = sweep._part(zeros(records), zeros(eig), zeros(spectra), 1, None)
    collector.chunk(first, 0, chunk, part)
    collector.final(first, zeros(state), zeros(final))
    every = {
        "record_step": config.record_every,
        "eig_step": config.eig_every,
        "density_step": config.density_every,
        "trace_step": config.trace_every,
    }
    steps = {}
    for name in list(collector.arrays):
        if name in every:
            a = collector.arrays.pop(name)
            steps[name] = (every[name] * np.arange(a.size)).astype(a.dtype)
    return collector.arrays, collector.axes, steps


def create(config, out, plan: dict, strategy, command=None, requested=None) -> None:
    """Writes ``plan.json`` and creates ``store.zarr`` in ``out`` for ``config`` split by
    ``plan`` and laid out by ``strategy`` (``plan.json`` keeps the layout ``requested``, each
    job resolving its ``None`` fields); the store's attributes are what a run folder's
    ``config.json`` holds (settings, axes, versions, environment, commit, layout, the plan)."""
    from dynloss_jax import sweep

    out = Path(out)
    templates, axes, steps = _templates(config)
    attrs = {
        "settings": config.settings(),
        "axes": config.coords,
        **sweep._provenance(strategy),
        "layout": strategy.layout(),
        "data": config.dataset().info,
        "programs": len(config.programs(strategy.pad_widths)),
        **sweep._measurements(config),
        "command": command if command is not None else sys.argv,
        "shards": {"jobs": plan["jobs"], "chunks": plan["chunks"]},
        "array_axes": {**{name: [name.removesuffix("_step")] for name in steps}, **axes},
        "complete": False,
    }
    with results._writing(out, "the sweep's store"):
        out.mkdir(parents=True, exist_ok=True)
        record = dataclasses.asdict(strategy) if requested is None else requested
        results.write_json(out / PLAN, {**plan, "strategy": record})
        store.create_store(
            out / store.STORE,
            coords=config.coords,
            templates=templates,
            axes=axes,
            steps=steps,
            chunks=tuple(plan["chunks"]),
            attrs=attrs,
        )


def resolve(requested: dict):
    """The :class:`~dynloss_jax.strategy.Strategy` of ``requested`` (its fields; ``None``:
    this machine's default, :func:`~dynloss_jax.strategy.default_strategy`)."""
    from dynloss_jax.strategy import Strategy, default_strategy

    here = dataclasses.asdict(default_strategy())
    return Strategy(**{k: here[k] if v is None else v for k, v in requested.items()})


# --- one shard: what a job runs ---------------------------------------------------------------


def _shard_folder(out, index: int) -> Path:
    return Path(out) / SHARDS / f"{index:04d}"


def _marker(out, index: int) -> Path:
    return Path(out) / SHARDS / f"{index:04d}.json"


def run_shard(
    config, out, index: int, *, strategy=None, checkpoint_every=None, stop=None, command=None
):
    """Runs shard ``index`` of the sharded sweep in ``out`` (made by :func:`create`) and writes
    its region of the store; resumes its run folder ``shards/NNNN/`` where a previous job left
    it. Does nothing for a shard already done. Writes ``shards/NNNN.json`` when done (with the
    run's config) or failed (with the error, then raises it again); a
    :class:`~dynloss_jax.sweep.Stopped` leaves the checkpoint for the next job."""
    from dynloss_jax import sweep

    out = Path(out)
    plan = results.read_json(out / PLAN)
    marker, folder = _marker(out, index), _shard_folder(out, index)
    if marker.exists() and results.read_json(marker).get("state") == "done":
        return
    strategy = strategy or resolve(plan["strategy"])
    boxes = plan["shards"][index]
    try:
        saved = folder / results.CONFIG
        if saved.exists() and results.read_json(saved).get("complete"):
            run = results.load_run(folder)  # finished before its region was written
        else:
            run = sweep.run_sweep(
                config,
                folder,
                resume=True,
                strategy=strategy,
                runs=shard_runs(config, boxes, strategy.pad_widths),
                checkpoint_every=(
                    sweep.CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
                ),
                stop=stop,
                command=command,
            )
        done = np.full(config.grid_shape, config.steps, np.int64)  # written in boxes only
        store.write_region(out / store.STORE, run.arrays, [_slices(b) for b in boxes], done)
        kept = {k: v for k, v in run.config.items() if k not in ("checksums", "array_axes")}
        results.write_json(marker, {"state": "done", "at": time.time(), "config": kept})
        shutil.rmtree(folder, ignore_errors=True)
    except sweep.Stopped:
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        results.write_json(marker, {"state": "failed", "at": time.time(), "error": error})
        raise


class ShardJob:
    """What each job of the array runs: ``job(out, index)`` runs shard ``index``. It follows
    submitit's checkpointing protocol (:class:`submitit.helpers.Checkpointable`): on a
    pre-emption or time-limit signal submitit calls :meth:`checkpoint` and requeues the same
    call, which resumes the shard from its run folder's last checkpoint."""

    def __init__(self, config, strategy: dict, checkpoint_every: float, x64: bool, command=None):
        self.config, self.strategy, self.x64 = config, strategy, x64
        self.checkpoint_every, self.command = checkpoint_every, command

    def __call__(self, out, index: int) -> str:
        from dynloss_jax.strategy import use_cpu_cores

        use_cpu_cores()  # before JAX starts its backend; a given XLA_FLAGS wins
        import jax

        jax.config.update("jax_enable_x64", self.x64)
        run_shard(
            self.config,
            out,
            index,
            strategy=resolve(self.strategy),
            checkpoint_every=self.checkpoint_every,
            command=self.command,
        )
        return f"shard {index} done"

    def checkpoint(self, *args, **kwargs):
        """The same call again, for submitit to requeue: the shard resumes from its checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# --- the job array ----------------------------------------------------------------------------


def slurm_parameters(
    partition=None,
    time=None,
    gpus_per_task=None,
    cpus_per_task=None,
    array_parallelism=None,
    **extra,
) -> dict:
    """submitit's ``update_parameters`` arguments for SLURM: ``time`` in minutes, the others
    as ``sbatch`` names them; ``extra`` are passed as ``slurm_KEY`` (e.g. ``account``, ``qos``,
    ``constraint``). One task per job."""
    params = {"tasks_per_node": 1, "nodes": 1}
    if time is not None:
        params["timeout_min"] = int(time)
    if partition is not None:
        params["slurm_partition"] = partition
    if gpus_per_task is not None:
        params["slurm_gpus_per_task"] = int(gpus_per_task)
    if cpus_per_task is not None:
        params["cpus_per_task"] = int(cpus_per_task)
    if array_parallelism is not None:
        params["slurm_array_parallelism"] = int(array_parallelism)
    params.update({f"slurm_{k}": v for k, v in extra.items()})
    return params


def submit(
    config,
    out,
    *,
    jobs: int,
    executor: str = "local",
    strategy=None,
    checkpoint_every: float | None = None,
    slurm: dict | None = None,
    timeout_min: int = 60,
    resume: bool = False,
    overwrite: bool = False,
    command=None,
):
    """Splits ``config``'s sweep into ``jobs`` shards and submits them as a submitit job array
    writing ``out`` (see the module's description); returns the submitit jobs (``job.result()``
    waits for one). ``executor``: ``"slurm"`` (options in ``slurm``: :func:`slurm_parameters`)
    or ``"local"`` (one local process per shard, time limit ``timeout_min``). ``strategy``
    fields left ``None`` (``batch_size``, ``pad_widths``) take the default of the machine each
    job runs on. ``resume`` submits again the shards of an existing ``out`` that are not done;
    an existing non-empty ``out`` is otherwise refused unless ``overwrite``."""
    import jax

    try:
        import submitit
    except ImportError:
        raise ImportError('dynloss submit needs submitit: pip install -e ".[cluster]"') from None
    if executor not in ("local", "slurm"):
        raise ConfigError("executor", executor, "must be local or slurm")
    config.validate()
    out = Path(out)
    args = {"batch_size": None, "n_devices": 0, "pad_widths": None}
    if strategy is not None:
        args.update(strategy)
    if resume:
        if not is_sharded(out):
            raise ConfigError("resume", str(out), f"has no {PLAN}: not a sharded sweep")
        plan = results.read_json(out / PLAN)
        saved = store.load_store(out / store.STORE).config["settings"]
        if results.normalised(saved) != config.settings():
            raise ConfigError("resume", str(out), "the sweep was started with other settings")
        if plan["jobs"] != jobs:
            raise ConfigError("jobs", jobs, f"must be {plan['jobs']}, as the sweep was started")
        args = plan["strategy"]
    else:
        results.check_out_folder(out, resume=False, overwrite=overwrite)
        if overwrite:  # what a sharded sweep writes, nothing else of the folder
            for name in (store.STORE, SHARDS, JOBS):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / PLAN).unlink(missing_ok=True)
        plan = plan_shards(
            config.grid_shape, sum(1 for n in config.coords if n in PROGRAM_AXES), jobs
        )
        create(config, out, plan, resolve(args), command, requested=args)
    todo = [
        j
        for j in range(plan["jobs"])
        if not (
            _marker(out, j).exists() and results.read_json(_marker(out, j)).get("state") == "done"
        )
    ]
    for j in todo:
        _marker(out, j).unlink(missing_ok=True)  # a failed shard starts afresh from its folder
    folder = out / JOBS
    if executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=timeout_min)
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**slurm_parameters(**(slurm or {})))
    every = checkpoint_every
    job = ShardJob(config, args, every, bool(jax.config.jax_enable_x64), command)
    return ex.map_array(job, [str(out)] * len(todo), todo)


# --- progress ---------------------------------------------------------------------------------


def shard_states(out) -> list[dict]:
    """Each shard's state from the files alone: ``state`` (done, failed, running — its run
    folder has saved progress — or pending), ``runs``, and ``error`` / ``progress``."""
    out = Path(out)
    plan = results.read_json(out / PLAN)
    states = []
    for j, boxes in enumerate(plan["shards"]):
        runs = sum(math.prod(b - a for a, b in box) for box in boxes)
        entry = {"shard": j, "runs": runs, "state": "pending"}
        marker = _marker(out, j)
        if marker.exists():
            saved = results.read_json(marker)
            entry["state"] = saved["state"]
            if saved["state"] == "failed":
                entry["error"] = saved.get("error", "")
            else:
                entry["runtime_s"] = (saved.get("config") or {}).get("runtime_s")
        else:
            try:
                progress = results.read_progress(_shard_folder(out, j))
            except (results.RunFolderError, OSError):
                progress = None
            if progress:
                entry.update(state="running", progress=progress)
        states.append(entry)
    return states


def describe(out, now: float | None = None) -> str:
    """What ``dynloss status`` prints for a sharded sweep: one line per shard and a total."""
    from dynloss_jax.progress import format_duration

    now = time.time() if now is None else now
    states = shard_states(out)
    lines = []
    for s in states:
        line = f"  shard {s['shard']}: {s['state']} ({s['runs']} runs)"
        if s["state"] == "failed":
            line += f": {s['error']}"
        elif s["state"] == "running":
            p = s["progress"]
            done, total = p["run_steps_done"], p["run_steps_total"]
            line += (
                f", {100 * done / total:.0f}% of {total:,} run-steps, updated "
                f"{format_duration(now - p['updated_at'])} ago"
            )
            if p.get("stopped_by"):
                line += f", stopped by {p['stopped_by']}"
        elif s["state"] == "done" and s.get("runtime_s") is not None:
            line += f" in {format_duration(s['runtime_s'])}"
        lines.append(line)
    count = {k: sum(s["state"] == k for s in states) for k in ("done", "failed")}
    runs = sum(s["runs"] for s in states if s["state"] == "done")
    total = sum(s["runs"] for s in states)
    head = (
        f"{out}: sharded sweep, {count['done']} of {len(states)} shards done "
        f"({runs} of {total} runs in the store)"
    )
    if count["failed"]:
        failed = ", ".join(str(s["shard"]) for s in states if s["state"] == "failed")
        head += f"; failed: shard {failed} (submit again with --resume)"
    return "\n".join([head, *lines])
