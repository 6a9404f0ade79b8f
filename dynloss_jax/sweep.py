"""A sweep: the Cartesian product of losses × widths × η × A × T × seeds, planned and run.

:class:`~dynloss_jax.config.SweepConfig` holds every setting and validates them before
anything is compiled or written. :func:`run_sweep` groups runs by (loss, width) — the static
parts of the program — and runs each group as one compiled program over its η × A × T × seed
runs, in chunks of a few thousand steps, laid out on the devices by a
:class:`~dynloss_jax.strategy.Strategy`; with ``Strategy.pad_widths`` a group is a whole loss
family over every width (:meth:`SweepConfig.programs`). With ``out`` given, each chunk is
checkpointed through :mod:`dynloss_jax.results` (which owns the folder format), so an
interrupted sweep continues with ``resume=True`` and gives bit-identical arrays.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from dynloss_jax import engine, environment, results, tracking
from dynloss_jax.config import ConfigError, SweepConfig
from dynloss_jax.grid import Grid
from dynloss_jax.run import Run
from dynloss_jax.spec import make_hyper
from dynloss_jax.strategy import Strategy, default_strategy, gather
from dynloss_jax.task import Task
from dynloss_jax.task_sweep import TaskSweep, family

__all__ = ["ConfigError", "Stopped", "SweepConfig", "load_unfinished", "run_sweep"]


def _provenance(strategy: Strategy) -> dict:
    import flax
    import matplotlib
    import optax

    return {
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__,
            "optax": optax.__version__,
            "flax": flax.__version__,
            "numpy": np.__version__,
            "matplotlib": matplotlib.__version__,
        },
        **environment.source(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()[: strategy.device_count()]],
        "strategy": dataclasses.asdict(strategy),
        "x64": bool(jax.config.jax_enable_x64),
        "environment": environment.environment(),
    }


def _take(tree, order):
    """Every leaf's runs (leading axis) in ``order``."""
    return jax.tree.map(lambda a: np.asarray(a)[order], tree)


def _flatten(prefix: str, tree) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(prefix: str, template, arrays: dict):
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(
        treedef, [arrays[prefix + jax.tree_util.keystr(p)] for p, _ in paths]
    )


class _CompileClock:
    """Seconds JAX spends tracing, lowering and compiling while the context is open."""

    EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile")

    def __init__(self):
        self.seconds = 0.0

    def _listen(self, event, duration, **kw):
        if any(e in event for e in self.EVENTS):
            self.seconds += duration

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _no_batched_density_on_cpu(config: SweepConfig, strategy: Strategy) -> Strategy:
    """``strategy`` with one run at a time per device when a density is recorded on several CPU
    devices: there, vmapped stochastic Lanczos quadratures (two or more runs per device, 48
    steps; or four probes at once, 24–32 steps) deadlocked in XLA:CPU, while one run at a time
    per device, or one device, did not. Warns when it changes the strategy."""
    if (
        config.density_every
        and strategy.batch_size != 1
        and jax.default_backend() == "cpu"
        and strategy.device_count() > 1
    ):
        warnings.warn(
            "recording a spectral density on several CPU devices: running one run at a time "
            "per device (batch_size=1), as vmapped Lanczos quadratures can deadlock there",
            stacklevel=3,
        )
        return dataclasses.replace(strategy, batch_size=1)
    return strategy


CHECKPOINT_EVERY = 300.0  # default seconds of work between two checkpoints
PIECE_SECONDS = 5.0  # a compiled piece runs at most about this long: a stop waits for no more
PROGRESS_EVERY = 10.0  # seconds between two updates of progress.json (beside each checkpoint)


class Stopped(Exception):
    """:func:`run_sweep` stopped because ``stop()`` asked it to, after saving a checkpoint.

    ``reason`` is what ``stop()`` returned; ``program`` (from 0) and ``step`` where it stopped,
    of ``programs`` and ``steps``; ``done`` and ``total`` run-steps; ``saved`` whether a
    checkpoint holds that point (``False`` only for a folderless sweep, or a stop before the
    first step)."""

    def __init__(self, reason, *, program, programs, step, steps, done, total, saved):
        self.reason, self.program, self.programs = reason, program, programs
        self.step, self.steps, self.done, self.total, self.saved = step, steps, done, total, saved
        super().__init__(self.where())

    def where(self) -> str:
        place = f"step {self.step:,} of {self.steps:,}"
        if self.programs > 1:
            place += f" of program {self.program + 1} of {self.programs}"
        return f"{place} ({self.done:,} of {self.total:,} run-steps)"


def shorter_piece(piece: int, block: int, seconds: float, target: float) -> int:
    """The compiled length to use after a piece of ``piece`` steps took ``seconds``: ``piece``
    itself unless that is over twice ``target``, else the longest divisor of ``piece`` that is a
    multiple of ``block`` and should take at most ``target`` (at least ``block``). A divisor, so
    that every step reached so far is still a multiple of the new length and the pieces stay
    aligned with the chunks; shortening only when far over, as each new length compiles anew."""
    if seconds <= 2 * target or piece <= block:
        return piece
    per_step = seconds / piece
    best = block
    for m in range(1, piece // block + 1):
        p = m * block
        if piece % p == 0 and p * per_step <= target:
            best = p
    return best


def _wait(tree) -> None:
    """Returns once every array of ``tree`` is computed, sleeping in short steps meanwhile: a
    blocking wait would hold back Python's signal handlers until the piece ends, and a second
    SIGTERM must act at once."""
    pause = 0.001
    for leaf in jax.tree.leaves(tree):
        while hasattr(leaf, "is_ready") and not leaf.is_ready():
            time.sleep(pause)
            pause = min(2 * pause, 0.05)


def run_sweep(
    config: SweepConfig | Task,
    out=None,
    *,
    grid: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    strategy: Strategy | None = None,
    progress: Callable[[int, int], None] | None = None,
    command: list[str] | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    stop: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    writers=None,
    runs: dict | None = None,
    **settings,
) -> Run:
    """Runs every configuration of ``config``; returns the :class:`~dynloss_jax.run.Run` (also
    written to ``out`` when given). ``progress(done, total)`` is called after each compiled
    piece with counts of run-steps (and ``progress.compiled(seconds)``, if it has that method,
    after each compilation). ``resume`` continues an unfinished ``out`` folder from its last
    checkpoint (with the layout it was started with); an existing non-empty ``out`` is otherwise
    refused unless ``overwrite``.

    Each program runs in compiled pieces of at most ``config.chunk`` steps, shortened (a new
    compilation) when one takes much longer than :data:`PIECE_SECONDS` or ``checkpoint_every``;
    Hessian measurements at an onset run at the ends of whole chunks, so the pieces change no
    number. A checkpoint is written when the next piece would end more than ``checkpoint_every``
    seconds after the last one (0: after every piece), at the end of each program, and when
    ``stop()`` returns something true — checked between pieces; the sweep then raises
    :class:`Stopped` carrying that value. ``clock`` measures the pieces (tests pass a fake one).

    ``writers`` (objects with clu's ``write_scalars``/``write_hparams``/``flush``/``close``, e.g.
    :class:`~dynloss_jax.writers.TensorBoardWriter`) receive, on the host after each compiled
    piece, every run's loss, static loss, accuracies and Γ, and λ1, λ2 and η·λ1/2 at the
    eigen-measurements, tagged by the run's grid coordinates (:mod:`dynloss_jax.writers`); a
    writer that fails warns once and is dropped, never stopping the sweep. They are flushed,
    not closed: the caller owns them.

    ``runs`` (program index → indices of its runs, in the program's run order: cell by cell,
    each cell's runs in grid order) restricts the sweep to those runs, e.g. one shard of a job
    array (:mod:`dynloss_jax.shards`); the programs it leaves out are not compiled, and the
    arrays keep the whole grid's shape with the other runs blank (NaN, −1 for integers). Runs are
    independent, so each selected run gives the numbers it gives in the whole sweep (bit for bit
    with one run at a time per device, ``batch_size=1``).

    ``config`` may be a :class:`~dynloss_jax.task.Task` instead: its ``grid`` (axis name →
    values; any keyword parameter of its loss, schedule or optimiser, ``eta``, ``seed``, and
    ``width`` for the built-in network) and ``settings`` (those of
    :class:`~dynloss_jax.config.ProgramSettings`, ``steps`` and the other run-length settings)
    make a :class:`~dynloss_jax.task_sweep.TaskSweep`, checked before anything is compiled and
    run by the same engine::

        run_sweep(task, "runs/mine", grid=dict(eta=[0.5, 1.0], focus=[0.0, 2.0], seed=range(3)),
                  steps=2000, eig_every=50)
    """
    if isinstance(config, Task):
        config = TaskSweep.make(config, grid if grid is not None else {}, **settings)
    elif grid is not None or settings:
        given = "grid" if grid is not None else sorted(settings)[0]
        raise ConfigError(given, "...", "is for a Task; a SweepConfig holds its own settings")
    config.validate()
    if not checkpoint_every >= 0:  # NaN too
        raise ConfigError("checkpoint_every", checkpoint_every, "must be >= 0 seconds")
    strategy = _no_batched_density_on_cpu(config, strategy or default_strategy())
    layout = strategy.layout()
    out = None if out is None else Path(out)
    settings = config.settings()
    writer = out is not None and jax.process_index() == 0
    if out is not None:
        results.check_out_folder(
            out, resume=resume, overwrite=overwrite, settings=settings, layout=layout
        )
        if writer:
            results.start_folder(out, settings, layout, resume=resume, axes=config.coords)
    provenance = _provenance(strategy)
    started = time.time()

    data = config.arrays()
    chunk, steps = config.chunk, config.steps
    programs = config.programs(strategy.pad_widths)
    cell_runs = len(config.runs()["seed"])
    chosen = {
        gi: np.arange(len(p["cells"]) * cell_runs)
        if runs is None
        else np.asarray(runs.get(gi, ()), np.int64)
        for gi, p in enumerate(programs)
    }
    total = sum(len(c) for c in chosen.values()) * steps
    target = min(PIECE_SECONDS, checkpoint_every) if checkpoint_every > 0 else PIECE_SECONDS
    meter = {"done": 0, "saved": 0, "computed": 0, "seconds": 0.0, "checkpoint_at": None}
    written = [-float("inf")]  # clock() of the last progress.json

    def report(gi: int, step: int, *, force: bool = False, stopped_by=None) -> None:
        if not writer or not (force or clock() - written[0] >= PROGRESS_EVERY):
            return
        written[0] = clock()
        rate = meter["computed"] / meter["seconds"] if meter["seconds"] > 0 else None
        results.write_progress(
            out,
            {
                "run_steps_done": meter["done"],
                "run_steps_saved": meter["saved"],
                "run_steps_total": total,
                "runs": total // steps,
                "program": gi,
                "programs": len(programs),
                "step": step,
                "steps": steps,
                "rate": rate,
                "checkpoint_at": meter["checkpoint_at"],
                "started_at": started,
                "stopped_by": None if stopped_by is None else str(stopped_by),
            },
        )

    def save(gi, step, state, n_runs, order, bounds, piece, pending) -> None:
        """Writes the pending pieces' records and the state at ``step`` (``bounds`` grows); the
        state in grid order, whatever the layout."""
        if writer and pending:
            bounds.append(step)
            records = {k: np.concatenate([p[k] for p in pending], axis=1) for k in pending[0]}
            state = _flatten("state", gather(state, n_runs, order))
            results.write_checkpoint(out, gi, records, state, bounds, piece)
            meter["saved"], meter["checkpoint_at"] = meter["done"], time.time()
            report(gi, step, force=True)

    live = None
    if writers:
        from dynloss_jax.writers import SafeWriters

        live = SafeWriters(writers)
        live.write_hparams(_hparams(settings))
    compile_s = []
    piece = chunk  # the compiled length; only ever shortened, to a divisor
    collected = _Collector(list(config.coords), config.grid_shape, config.steps, cell_runs)
    for gi, group in enumerate(programs):
        if not len(chosen[gi]):
            continue
        spec = config.spec(group)
        n_runs = len(chosen[gi])
        targets = collected.targets(group["cells"], chosen[gi])
        order = strategy.deal(n_runs)  # the devices' shares, balanced; gather puts it back
        hyper = make_hyper(**config.hyper_args(group), dtype=config.dtype)
        full = cell_runs * len(group["cells"])
        hyper = _pad(strategy, _take(hyper, chosen[gi][order]), full)
        with _CompileClock() as compiling:  # counts compile events only, not the running
            init, _, finalize = engine.compiled(spec, chunk, strategy)
            # λ at an onset: compiled only with an onset rule
            onset = engine.compiled_onset(spec, strategy) if spec.detectors else None
            state = init(hyper, data)
            loaded = (
                None
                if not resume or out is None
                else results.read_checkpoint(out, gi, steps, chunk)
            )
            bounds = [0]
            if loaded is not None:
                bounds, piece, flat_state, stretches = loaded
                flat_state = _check_runs(out, gi, flat_state, n_runs)
                state = _unflatten("state", state, _take(flat_state, order))
                state = _pad(strategy, state, full)
                for a, b, stretch in zip(bounds[:-1], bounds[1:], stretches, strict=True):
                    collected.chunk(targets, a, b - a, stretch)
                meter["done"] += bounds[-1] * n_runs
                meter["saved"] = meter["done"]
            step, pending, reported = bounds[-1], [], 0.0
            saved_at = clock()

            while step < steps:
                reason = stop() if stop is not None else None
                if reason:
                    save(gi, step, state, n_runs, order, bounds, piece, pending)
                    report(gi, step, force=True, stopped_by=reason)
                    raise Stopped(
                        reason,
                        program=gi,
                        programs=len(programs),
                        step=step,
                        steps=steps,
                        done=meter["done"],
                        total=total,
                        saved=writer and meter["saved"] == meter["done"] and meter["done"] > 0,
                    )
                t0, c0 = clock(), compiling.seconds
                advance = engine.compiled(spec, piece, strategy)[1]
                state, records, eig_records, spectra = advance(state, hyper, data)
                if stop is not None:
                    _wait((state, records, eig_records, spectra))
                step += piece
                if onset is not None and step % chunk == 0:  # where λ at an onset is measured
                    state = onset(state, hyper, data)
                part = _part(records, eig_records, spectra, n_runs, order)
                collected.chunk(targets, step - piece, piece, part)
                if live is not None:
                    _write_live(live, config, group, part, chosen[gi])
                pending.append(part)
                seconds = max(clock() - t0 - (compiling.seconds - c0), 0.0)
                meter["done"] += piece * n_runs
                meter["computed"] += piece * n_runs
                meter["seconds"] += seconds
                if progress is not None:
                    if hasattr(progress, "compiled") and compiling.seconds > reported:
                        progress.compiled(compiling.seconds - reported)
                        reported = compiling.seconds
                    progress(meter["done"], total)
                if (
                    step == steps
                    or checkpoint_every <= 0
                    or clock() - saved_at + seconds > checkpoint_every
                ):
                    save(gi, step, state, n_runs, order, bounds, piece, pending)
                    pending, saved_at = [], clock()
                else:
                    report(gi, step)
                if step < steps:
                    piece = shorter_piece(piece, spec.block, seconds, target)
            final = finalize(state, hyper, data)
        compile_s.append(round(compiling.seconds, 3))
        collected.final(targets, gather(state, n_runs, order), gather(final, n_runs, order))

    arrays, axes = collected.arrays, collected.axes
    run_config = {
        "settings": settings,
        "axes": config.coords,
        **provenance,
        "layout": layout,
        "data": config.dataset().info,
        "programs": len(programs),
        **_measurements(config),
        "compile_s": compile_s,
        "command": command if command is not None else sys.argv,
        "runtime_s": round(time.time() - started, 3),
        "complete": True,
    }
    if runs is not None:
        run_config["runs"] = {str(gi): c.tolist() for gi, c in chosen.items() if len(c)}
    run = Run(out, {**run_config, "array_axes": axes}, arrays, axes, dict(run_config["axes"]))
    if writer:
        results.finish_folder(out, run_config, arrays, axes)
    return run


def _pad(strategy: Strategy, tree, full: int):
    """``tree``'s runs padded (:meth:`Strategy.pad_runs`) to as many per device as the whole
    program of ``full`` runs has, up to two: XLA compiles a loop over runs of one trip apart
    from a longer one and the two round differently, so a subset of a program's runs (a
    shard) gives the whole sweep's bits only with the same count of 1 or of at least 2 runs
    per device. With all of a program's runs this is exactly ``pad_runs``."""
    n, devices = len(jax.tree.leaves(tree)[0]), strategy.device_count()
    extra = max(-(-n // devices), min(-(-full // devices), 2)) * devices - n
    if extra > 0:
        tree = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], extra, 0)]), tree)
    return strategy.pad_runs(tree)


def _part(records, eig_records, spectra, n_runs: int, order) -> dict:
    """One piece's outputs as flat named host arrays (runs in grid order): ``records.*``,
    ``eig.*`` and each spectrum's."""
    part = _flatten("records", gather(records, n_runs, order))
    if eig_records is not None:
        part.update(_flatten("eig", gather(eig_records, n_runs, order)))
    for kind, rec in spectra.items():
        part.update(_flatten(kind, gather(rec, n_runs, order)))
    return part


def _run_tags(config, group: dict) -> list[str]:
    """The writers' tag of each run of ``group``, in the program's run order."""
    from dynloss_jax.writers import run_tag

    coords = config.coords
    names = list(coords)
    program_axes = [n for n in names if n in ("loss", "width")]
    run_axes = [n for n in names if n not in program_axes]
    tags = []
    for cell in group["cells"]:
        for index in np.ndindex(*(len(coords[n]) for n in run_axes)):
            c = {n: coords[n][i] for n, i in zip(program_axes, cell, strict=True)}
            c.update({n: coords[n][i] for n, i in zip(run_axes, index, strict=True)})
            tags.append(run_tag({n: c[n] for n in names}))
    return tags


def _write_live(live, config, group: dict, part: dict, chosen) -> None:
    """One piece's records (``part``, grid order) of the runs ``chosen`` to the writers."""
    from dynloss_jax.writers import write_piece

    tags = [_run_tags(config, group)[i] for i in chosen]
    names = ("loss", "static_loss", "train_acc", "val_acc")
    scalars = {n: part[f"records.{n}"] for n in names}
    gamma = part["records.gamma_C"]
    scalars.update({f"gamma_{c}": gamma[..., c] for c in range(gamma.shape[-1])})
    write_piece(live, tags, part["records.step"][0], scalars)
    if "eig.lam_K" in part:
        lam = part["eig.lam_K"]
        eta = np.asarray(config.program_runs(group)["eta"], dtype=float)[chosen, None]
        scalars = {
            "lam1": lam[..., 0],
            "lam2": lam[..., 1],
            "eta_lam1_over_2": lam[..., 0] * eta / 2,
        }
        write_piece(live, tags, part["eig.step"][0], scalars)


def _hparams(settings: dict) -> dict:
    """The sweep's settings that are scalars, for ``write_hparams``."""
    return {k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}


def _measurements(config: SweepConfig) -> dict:
    """What the recorded λ are of and the line they meet
    (:meth:`~dynloss_jax.config.SweepConfig.describe_measurements`), and with
    ``layer_sharpness`` the names of the parameter blocks (``blocks``)."""
    out = config.describe_measurements()
    if config.layer_sharpness:
        out["blocks"] = tracking.layer_blocks(config.spec(config.programs()[0]))[0]
    return out


def load_unfinished(out, saved: dict) -> Run:
    """The records an unfinished folder holds, as a :class:`Run` with the arrays of the finished
    run's shapes: steps not reached are NaN (−1 for integers), ``record_step`` and the other step
    axes are complete, ``steps_done`` (grid-shaped) is the last saved step of each run, and
    ``diverged`` / ``diverged_step`` say what is known at that step. The values at end of run
    (``final_*``, the onsets) are absent. Reads only files: a running sweep is not disturbed
    (each file it writes appears whole), so this is how to look at a sweep while it runs."""
    try:
        config = SweepConfig.from_settings(saved["settings"])
        # a folder started before its axes were written: the paper's grid, from its settings
        the_grid = Grid.of(saved["axes"]) if "axes" in saved else config.grid()
        pad = bool((saved.get("layout") or {}).get("pad_widths"))
        programs = the_grid.programs(pad, family=family)
    except (KeyError, TypeError, ValueError) as e:
        raise results.RunFolderError(f"{out}: unreadable settings in its config ({e})") from None
    cell_runs = len(the_grid.runs()["seed"])
    grid = the_grid.shape
    collected = _Collector(the_grid.names, grid, config.steps, cell_runs)
    collected.arrays.update(
        steps_done=np.zeros(grid, np.int64),
        diverged=np.zeros(grid, bool),
        diverged_step=np.full(grid, -1, np.int32),
    )
    collected.axes.update(
        {k: list(the_grid.names) for k in ("steps_done", "diverged", "diverged_step")}
    )
    for gi, group in enumerate(programs):
        loaded = results.read_checkpoint(out, gi, config.steps, config.chunk)
        if loaded is None:
            continue
        bounds, _, state, stretches = loaded
        targets = collected.targets(group["cells"])
        for a, b, stretch in zip(bounds[:-1], bounds[1:], stretches, strict=True):
            collected.chunk(targets, a, b - a, stretch)
        n_runs = cell_runs * len(group["cells"])
        collected._fill(targets, "steps_done", np.full(n_runs, bounds[-1]), [])
        for name in ("diverged", "diverged_step"):
            if f"state.{name}" in state:
                collected._fill(targets, name, state[f"state.{name}"], [])
    every = {
        "record_step": config.record_every,
        "eig_step": config.eig_every,
        "density_step": config.density_every,
        "trace_step": config.trace_every,
    }
    for name, k in every.items():
        if name in collected.arrays:
            a = collected.arrays[name]
            collected.arrays[name] = (k * np.arange(a.size)).astype(a.dtype)
    coords = the_grid.coords
    run_config = {**saved, "axes": coords, "array_axes": collected.axes}
    return Run(Path(out), run_config, collected.arrays, collected.axes, dict(coords))


def _check_runs(out, group: int, flat_state: dict, n_runs: int) -> dict:
    for a in flat_state.values():
        if a.shape[0] != n_runs:
            raise results.RunFolderError(
                f"{out}: checkpoint {group} holds {a.shape[0]} runs, the sweep has {n_runs}"
            )
    return flat_state


# Name in the results folder, trailing axis names, for each per-chunk record of the engine.
_RECORDS = {
    "records.loss": ("loss", ["record"]),
    "records.static_loss": ("static_loss", ["record"]),
    "records.train_acc": ("train_acc", ["record"]),
    "records.val_acc": ("val_acc", ["record"]),
    "records.gamma_C": ("gamma", ["record", "class"]),
    "eig.lam_K": ("lam", ["eig", "k"]),
    "eig.lam_min": ("lam_min", ["eig"]),
    "eig.residual_K": ("residual", ["eig", "k"]),
    "eig.residual_min": ("residual_min", ["eig"]),
    "eig.layer_lam_L": ("layer_lam", ["eig", "block"]),
    "eig.above_K": ("lam_above", ["eig", "k"]),
    "records.class_loss_C": ("class_loss", ["record", "class"]),
    "records.class_static_loss_C": ("class_static_loss", ["record", "class"]),
    "records.class_acc_C": ("class_acc", ["record", "class"]),
    "records.class_val_loss_C": ("class_val_loss", ["record", "class"]),
    "records.class_val_acc_C": ("class_val_acc", ["record", "class"]),
    "records.class_grad_norm_C": ("class_grad_norm", ["record", "class"]),
    "eig.class_split_KxC": ("class_split", ["eig", "k", "class"]),
    "eig.class_cos_KxC": ("class_cos", ["eig", "k", "class"]),
    "eig.class_grad_norm_C": ("eig_class_grad_norm", ["eig", "class"]),
    "eig.emphasised": ("emphasised", ["eig"]),
    "eig.ggn_lam_K": ("ggn_lam", ["eig", "k"]),
    "eig.ntk_lam_K": ("ntk_lam", ["eig", "k"]),
    "eig.functional_u1": ("functional_u1", ["eig"]),
    "density.nodes_SxM": ("density_nodes", ["density", "probe", "node"]),
    "density.weights_SxM": ("density_weights", ["density", "probe", "node"]),
    "trace.estimate": ("trace", ["trace"]),
    "trace.standard_error": ("trace_se", ["trace"]),
}
# The steps each record was measured at, the same for every run: kept once, from the first run.
_STEPS = {
    "records.step": ("record_step", ["record"]),
    "eig.step": ("eig_step", ["eig"]),
    "density.step": ("density_step", ["density"]),
    "trace.step": ("trace_step", ["trace"]),
}


class _Collector:
    """The results arrays of a sweep, allocated once on the full grid and filled in place chunk
    by chunk, so the host holds each record once (no per-chunk lists, no concatenated copies)."""

    def __init__(self, names, grid_shape: tuple, steps: int, n_runs: int):
        self.steps = steps
        self.n_runs = n_runs  # runs per program cell
        self.grid = tuple(grid_shape)
        self.names = list(names)  # the grid's axes, the leading axes of every array
        self.arrays: dict = {}
        self.axes: dict = {}

    def targets(self, cells, chosen=None) -> np.ndarray:
        """The flat grid index of each run of a program over ``cells`` (cell by cell, each
        cell's runs in grid order), or of its runs ``chosen`` (indices in that order)."""
        program = self.grid[: len(cells[0])]
        first = [np.ravel_multi_index(c, program) * self.n_runs if c else 0 for c in cells]
        every = (np.asarray(first)[:, None] + np.arange(self.n_runs)).ravel()
        return every if chosen is None else every[np.asarray(chosen, np.int64)]

    def _fill(self, targets, name: str, a, axes, where=None, length=None):
        """Writes a program's per-run array ``a`` (its runs in the order of ``targets``, their
        flat grid indices, then the trailing axes) into the grid array ``name``; ``where``
        slices the first trailing axis (the records of ``length`` steps)."""
        trailing = (
            a.shape[1:] if where is None else (self.steps * a.shape[1] // length, *a.shape[2:])
        )
        if name not in self.arrays:
            self.arrays[name] = np.full(self.grid + tuple(trailing), _blank(a.dtype), a.dtype)
            self.axes[name] = self.names + axes
        flat = self.arrays[name].reshape((-1, *trailing))  # a view: the runs on one axis
        if where is None:
            flat[targets] = a
        else:
            flat[targets, where] = a

    def chunk(self, targets, start: int, length: int, piece: dict) -> None:
        """Files the records of steps ``start`` to ``start + length`` (a multiple of every
        measurement interval, as are the pieces and chunks of a sweep)."""
        for key, a in piece.items():
            n = a.shape[1]
            where = slice(start * n // length, (start + length) * n // length)
            if key in _STEPS:
                name, axes = _STEPS[key]
                if name not in self.arrays:
                    self.arrays[name] = np.full(self.steps * n // length, -1, a.dtype)
                    self.axes[name] = axes
                self.arrays[name][where] = a[0]
                continue
            name, axes = _RECORDS[key]
            self._fill(targets, name, a, axes, where, length)

    def final(self, targets, state, final) -> None:
        values = {
            "final_loss": final.loss,
            "final_static_loss": final.static_loss,
            "final_train_acc": final.train_acc,
            "final_val_acc": final.val_acc,
            "diverged": state.diverged,
            "diverged_step": state.diverged_step,
        }
        onset = state.detector is not None  # without an onset rule, no onset arrays
        if onset:
            values["instability_step"] = state.detector.onset
        values["stopped_step"] = state.stopped_step
        if onset:
            values["instability_lam"] = state.onset_lam_K[:, 0]
        for name, a in values.items():
            self._fill(targets, name, a, [])
        if not onset:
            return
        self._fill(targets, "instability_lam_k", state.onset_lam_K, ["k"])
        self._fill(targets, "instability_residual", state.onset_residual_K, ["k"])
        self._fill(targets, "instability_lo", state.detector.lo, [])
        self._fill(targets, "instability_hi", state.detector.hi, [])
        if state.watchers:
            stack = {
                f: np.stack([getattr(ws, f) for ws in state.watchers], axis=1)
                for f in ("onset", "lo", "hi")
            }
            self._fill(targets, "watch_step", stack["onset"], ["watch"])
            self._fill(targets, "watch_lo", stack["lo"], ["watch"])
            self._fill(targets, "watch_hi", stack["hi"], ["watch"])
            self._fill(targets, "watch_lam", state.watch_lam_WxK[..., 0], ["watch"])
            self._fill(targets, "watch_lam_k", state.watch_lam_WxK, ["watch", "k"])


def _blank(dtype):
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)
