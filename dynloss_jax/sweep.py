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
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from dynloss_jax import engine, environment, results
from dynloss_jax.config import GRID_AXES, ConfigError, SweepConfig
from dynloss_jax.run import Run
from dynloss_jax.strategy import Strategy, default_strategy, gather

__all__ = ["ConfigError", "SweepConfig", "run_sweep"]


def _provenance(strategy: Strategy) -> dict:
    import flax
    import matplotlib
    import optax

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
    # uncommitted changes to the package mean the commit alone does not reproduce the run
    dirty = bool(git("status", "--porcelain", "--", ".")) if commit else None
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
        "git_commit": commit,
        "git_dirty": dirty,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()[: strategy.device_count()]],
        "strategy": dataclasses.asdict(strategy),
        "x64": bool(jax.config.jax_enable_x64),
        "environment": environment.environment(),
    }


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


def run_sweep(
    config: SweepConfig,
    out=None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    strategy: Strategy | None = None,
    progress: Callable[[int, int], None] | None = None,
    command: list[str] | None = None,
) -> Run:
    """Runs every configuration of ``config``; returns the :class:`~dynloss_jax.run.Run` (also
    written to ``out`` when given). ``progress(done, total)`` is called after each chunk with
    counts of run-steps (and ``progress.compiled(seconds)``, if it has that method, after each
    compilation). ``resume`` continues an unfinished ``out`` folder from its last checkpoint
    (with the layout it was started with); an existing non-empty ``out`` is otherwise refused
    unless ``overwrite``."""
    config.validate()
    strategy = _no_batched_density_on_cpu(config, strategy or default_strategy())
    layout = strategy.layout()
    out = None if out is None else Path(out)
    settings = config.settings()
    writer = jax.process_index() == 0
    if out is not None:
        results.check_out_folder(
            out, resume=resume, overwrite=overwrite, settings=settings, layout=layout
        )
        if writer:
            results.start_folder(out, settings, layout, resume=resume)
    provenance = _provenance(strategy)
    started = time.time()

    data = config.arrays()
    chunk = config.chunk
    n_chunks = config.steps // chunk
    programs = config.programs(strategy.pad_widths)
    cell_runs = len(config.runs()["seed"])
    total = sum(len(p["cells"]) for p in programs) * cell_runs * config.steps
    done = 0
    compile_s = []

    collected = _Collector(config, cell_runs)
    for gi, group in enumerate(programs):
        spec = config.run_spec(**group)
        hyper = strategy.pad_runs(
            engine.make_hyper(
                **config.program_runs(group), opt_hp=config.opt_hp, dtype=config.dtype
            )
        )
        n_runs = cell_runs * len(group["cells"])
        with _CompileClock() as clock:  # counts compile events only, not the running
            init, advance, finalize = engine.compiled(spec, chunk, strategy)
            onset = engine.compiled_onset(spec, strategy)
            state = init(hyper, data)
            saved = (
                None if out is None or not resume else results.read_checkpoint(out, gi, n_chunks)
            )
            chunks_done = 0
            if saved is not None:
                chunks_done, flat_state, pieces = saved
                state = strategy.pad_runs(
                    _unflatten("state", state, _check_runs(out, gi, flat_state, n_runs))
                )
                for c, piece in enumerate(pieces):
                    collected.chunk(group["cells"], c, piece)
                done += chunks_done * chunk * n_runs
            for c in range(chunks_done, n_chunks):
                state, records, eig_records, spectra = advance(state, hyper, data)
                state = onset(state, hyper, data)
                if c == chunks_done and progress is not None and hasattr(progress, "compiled"):
                    progress.compiled(clock.seconds)
                piece = _flatten("records", gather(records, n_runs))
                if eig_records is not None:
                    piece.update(_flatten("eig", gather(eig_records, n_runs)))
                for kind, rec in spectra.items():
                    piece.update(_flatten(kind, gather(rec, n_runs)))
                collected.chunk(group["cells"], c, piece)
                if out is not None and writer:
                    results.write_checkpoint(
                        out, gi, c, piece, _flatten("state", gather(state, n_runs))
                    )
                done += chunk * n_runs
                if progress is not None:
                    progress(done, total)
            final = finalize(state, hyper, data)
        compile_s.append(round(clock.seconds, 3))
        collected.final(group["cells"], gather(state, n_runs), gather(final, n_runs))

    arrays, axes = collected.arrays, collected.axes
    run_config = {
        "settings": settings,
        "axes": config.coords,
        **provenance,
        "layout": layout,
        "data": config.dataset().info,
        "programs": len(programs),
        **config.describe_measurements(),
        "compile_s": compile_s,
        "command": command if command is not None else sys.argv,
        "runtime_s": round(time.time() - started, 3),
        "complete": True,
    }
    run = Run(out, {**run_config, "array_axes": axes}, arrays, axes, dict(run_config["axes"]))
    if out is not None and writer:
        results.finish_folder(out, run_config, arrays, axes)
    return run


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

    def __init__(self, config: SweepConfig, n_runs: int):
        self.n_chunks = config.steps // config.chunk
        self.n_runs = n_runs  # runs per (loss, width) cell
        self.grid = config.grid_shape
        self.arrays: dict = {}
        self.axes: dict = {}

    def _fill(self, cells, name: str, a, axes, where=None):
        """Writes a program's per-run array ``a`` (runs of ``cells`` one after another, then
        the trailing axes) into the grid array ``name``; ``where`` slices the first trailing
        axis (a chunk's records)."""
        trailing = a.shape[1:] if where is None else (self.n_chunks * a.shape[1], *a.shape[2:])
        if name not in self.arrays:
            self.arrays[name] = np.full(self.grid + tuple(trailing), _blank(a.dtype), a.dtype)
            self.axes[name] = list(GRID_AXES) + axes
        for k, (li, wi) in enumerate(cells):
            view = self.arrays[name][li, wi].reshape((self.n_runs, *trailing))  # a view
            part = a[k * self.n_runs : (k + 1) * self.n_runs]
            if where is None:
                view[...] = part
            else:
                view[:, where] = part

    def chunk(self, cells, c: int, piece: dict) -> None:
        for key, a in piece.items():
            per_chunk = a.shape[1]
            where = slice(c * per_chunk, (c + 1) * per_chunk)
            if key in _STEPS:
                name, axes = _STEPS[key]
                if name not in self.arrays:
                    self.arrays[name] = np.full(self.n_chunks * per_chunk, -1, a.dtype)
                    self.axes[name] = axes
                self.arrays[name][where] = a[0]
                continue
            name, axes = _RECORDS[key]
            self._fill(cells, name, a, axes, where)

    def final(self, cells, state, final) -> None:
        values = {
            "final_loss": final.loss,
            "final_static_loss": final.static_loss,
            "final_train_acc": final.train_acc,
            "final_val_acc": final.val_acc,
            "diverged": state.diverged,
            "diverged_step": state.diverged_step,
            "instability_step": state.detector.onset,
            "stopped_step": state.stopped_step,
            "instability_lam": state.onset_lam_K[:, 0],
        }
        for name, a in values.items():
            self._fill(cells, name, a, [])
        self._fill(cells, "instability_lam_k", state.onset_lam_K, ["k"])
        self._fill(cells, "instability_residual", state.onset_residual_K, ["k"])
        self._fill(cells, "instability_lo", state.detector.lo, [])
        self._fill(cells, "instability_hi", state.detector.hi, [])
        if state.watchers:
            stack = {
                f: np.stack([getattr(ws, f) for ws in state.watchers], axis=1)
                for f in ("onset", "lo", "hi")
            }
            self._fill(cells, "watch_step", stack["onset"], ["watch"])
            self._fill(cells, "watch_lo", stack["lo"], ["watch"])
            self._fill(cells, "watch_hi", stack["hi"], ["watch"])
            self._fill(cells, "watch_lam", state.watch_lam_WxK[..., 0], ["watch"])
            self._fill(cells, "watch_lam_k", state.watch_lam_WxK, ["watch", "k"])


def _blank(dtype):
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)
