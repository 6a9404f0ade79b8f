"""A sweep: the Cartesian product of losses × widths × η × A × T × seeds, run and saved.

:class:`~dynloss_jax.config.SweepConfig` holds every setting and validates them before
anything is compiled or written. :func:`run_sweep` groups runs by (loss, width) — the static
parts of the program — and runs each group as one compiled program over its η × A × T × seed
runs, in chunks of a few thousand steps. With ``out`` given, each chunk is checkpointed
atomically, so an interrupted sweep continues with ``resume=True`` and gives bit-identical
arrays; the finished folder is written by :mod:`dynloss_jax.results`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from dynloss_jax import engine, instability, results
from dynloss_jax.config import ConfigError, SweepConfig
from dynloss_jax.data import spiral
from dynloss_jax.strategy import Strategy, default_strategy


def _provenance(strategy: Strategy, mesh) -> dict:
    import flax
    import matplotlib
    import optax

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    # uncommitted changes to the package mean the commit alone does not reproduce the run
    dirty = bool(git("status", "--porcelain", "--", ".")) if commit else None
    return {
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__, "optax": optax.__version__,
                     "flax": flax.__version__, "numpy": np.__version__,
                     "matplotlib": matplotlib.__version__},
        "git_commit": commit,
        "git_dirty": dirty,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in (mesh.devices.flat if mesh is not None else jax.devices()[:1])],
        "strategy": dataclasses.asdict(strategy),
        "x64": bool(jax.config.jax_enable_x64),
    }


def _to_host(x):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _flatten(prefix: str, tree) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): _to_host(leaf) for path, leaf in leaves}


def _unflatten(prefix: str, template, arrays: dict):
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(
        treedef, [arrays[prefix + jax.tree_util.keystr(p)] for p, _ in paths])


def run_sweep(config: SweepConfig, out=None, *, resume: bool = False, overwrite: bool = False,
              strategy: Strategy | None = None,
              progress: Callable[[int, int], None] | None = None,
              command: list[str] | None = None) -> results.Run:
    """Runs every configuration of ``config``; returns the :class:`results.Run` (also written
    to ``out`` when given). ``progress(done, total)`` is called after each chunk with counts of
    run-steps. ``resume`` continues an unfinished ``out`` folder from its last checkpoint; an
    existing non-empty ``out`` is otherwise refused unless ``overwrite``."""
    config.validate()
    strategy = strategy or default_strategy()
    mesh = strategy.mesh()
    n_dev = 1 if mesh is None else mesh.devices.size
    out = None if out is None else Path(out)
    settings = config.settings()
    writer = jax.process_index() == 0
    if out is not None:
        check_out_folder(out, resume=resume, overwrite=overwrite, settings=settings)
        _prepare_folder(out, settings, resume)
    provenance = _provenance(strategy, mesh)
    started = time.time()

    dtype = config.dtype
    x, y = spiral(config.points_per_class, config.n_classes, seed=config.train_seed)
    xv, yv = spiral(config.points_per_class, config.n_classes, seed=config.val_seed)
    data = engine.make_data(x, y, xv, yv, dtype)

    combos = list(itertools.product(config.eta, config.amplitude, config.period,
                                    range(config.first_seed, config.first_seed + config.seeds)))
    n_runs = len(combos)
    padded = combos + [combos[-1]] * (-n_runs % n_dev)  # equal shares per device
    hyper = engine.make_hyper(*zip(*padded, strict=True), dtype=dtype)
    groups = list(itertools.product(config.loss, config.width))
    chunk = config.chunk
    n_chunks = config.steps // chunk
    total = len(groups) * n_runs * config.steps
    done = 0

    collected = _Collector(config, n_runs)
    for gi, (loss, width) in enumerate(groups):
        spec = engine.RunSpec(
            loss=loss, width=int(width), n_steps=config.steps, n_classes=config.n_classes,
            depth=config.depth, init=config.init, dtype=dtype, record_every=config.record_every,
            eig_every=config.eig_every, num_matvecs=config.num_matvecs,
            static_last_period=config.static_last_period,
        )
        init, advance, finalize = engine.compiled(spec, chunk, strategy.batch_size, mesh)
        state = init(hyper, data)
        chunks_done = 0
        state_file = None if out is None else out / f"checkpoint-{gi}-state.npz"
        if resume and state_file is not None and state_file.exists():
            chunks_done, state = _read_checkpoint(out, gi, state, n_runs, n_chunks, collected)
            done += chunks_done * chunk * n_runs
        for c in range(chunks_done, n_chunks):
            state, records, eig_records = advance(state, hyper, data)
            piece = _flatten("records", records)
            if eig_records is not None:
                piece.update(_flatten("eig", eig_records))
            # checkpoints hold the real runs only, so a resume may use another device count
            piece = {k: v[:n_runs] for k, v in piece.items()}
            collected.chunk(gi, c, piece)
            if out is not None and writer:
                results.atomic_write_npz(out / f"checkpoint-{gi}-chunk-{c}.npz", piece)
                saved = {k: v[:n_runs] for k, v in _flatten("state", state).items()}
                saved["chunks_done"] = np.asarray(c + 1)
                results.atomic_write_npz(state_file, saved)
            done += chunk * n_runs
            if progress is not None:
                progress(done, total)
        collected.final(gi, state, finalize(state, hyper, data))

    arrays, axes = collected.arrays, collected.axes
    _add_steps_and_onsets(config, arrays, axes)
    run_config = {
        "settings": settings,
        "axes": {"loss": list(config.loss), "width": list(config.width),
                 "eta": list(config.eta), "amplitude": list(config.amplitude),
                 "period": list(config.period),
                 "seed": list(range(config.first_seed, config.first_seed + config.seeds))},
        **provenance,
        "command": command if command is not None else sys.argv,
        "runtime_s": round(time.time() - started, 3),
        "complete": True,
    }
    run = results.Run(out, {**run_config, "array_axes": axes}, arrays, axes,
                      dict(run_config["axes"]))
    if out is not None and writer:
        results.save_run(out, run_config, arrays, axes)
        for f in out.glob("checkpoint-*.npz"):
            f.unlink()
    return run


def check_out_folder(out, *, resume: bool, overwrite: bool, settings: dict | None = None) -> None:
    """Refuses to write into a non-empty folder unless resuming it or told to overwrite.

    With ``resume`` a non-empty folder must hold an unfinished run (its ``config.json`` says
    ``complete: false``) started with the same ``settings`` (when given).
    """
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("overwrite", True, "cannot be combined with --resume")
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "exists and is not a folder")
    ancestor = next(a for a in [out, *out.absolute().parents] if a.exists())
    if not ancestor.is_dir():
        raise ConfigError("out", str(out), f"cannot be created: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError("out", str(out), f"cannot be written: {ancestor} is not writable")
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not (resume or overwrite):
        raise ConfigError("out", str(out),
                          "exists and is not empty: pass --overwrite, or --resume to continue it")
    if resume:
        marker = out / results.CONFIG
        if not marker.exists():
            raise ConfigError("resume", str(out), f"has no {results.CONFIG}: not a run folder")
        saved = results.read_json(marker)
        if saved.get("complete"):
            raise ConfigError("resume", str(out), "holds a finished run; nothing to resume")
        if settings is not None and saved.get("settings") != settings:
            old = saved.get("settings") or {}
            differ = sorted(k for k in settings if old.get(k) != settings[k])
            raise ConfigError("resume", str(out),
                              f"the folder was started with other settings ({', '.join(differ)})")


def _prepare_folder(out: Path, settings: dict, resume: bool) -> None:
    if resume and (out / results.CONFIG).exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    for f in [*out.glob("checkpoint-*.npz"), out / results.ARRAYS]:
        f.unlink(missing_ok=True)
    results.write_json(out / results.CONFIG, {"settings": settings, "complete": False})


def _read_checkpoint(out: Path, gi: int, template, n_runs: int, n_chunks: int, collected):
    """Loads the saved chunks of group ``gi`` into ``collected``; returns ``(chunks_done, state)``
    with the state padded to the template's run count by repeating its last run (as the sweep
    pads)."""
    saved = results.read_npz(out / f"checkpoint-{gi}-state.npz")
    try:
        chunks_done = int(saved["chunks_done"])
        state = _unflatten("state", template, saved)
    except (KeyError, ValueError) as e:
        raise results.RunFolderError(f"{out}: checkpoint {gi} is incomplete ({e})") from None
    n_padded = jax.tree.leaves(template)[0].shape[0]

    def pad(a):
        if a.shape[0] != n_runs:
            raise results.RunFolderError(
                f"{out}: checkpoint {gi} holds {a.shape[0]} runs, the sweep has {n_runs}")
        return np.concatenate([a, np.repeat(a[-1:], n_padded - n_runs, axis=0)])

    state = jax.tree.map(pad, state)
    if not 0 <= chunks_done <= n_chunks:
        raise results.RunFolderError(f"{out}: checkpoint {gi} says {chunks_done} chunks done")
    for c in range(chunks_done):
        collected.chunk(gi, c, results.read_npz(out / f"checkpoint-{gi}-chunk-{c}.npz"))
    return chunks_done, state


# Name in the results folder, trailing axis names, for each per-chunk record of the engine.
_RECORDS = {
    "records.loss": ("loss", ["record"]), "records.static_loss": ("static_loss", ["record"]),
    "records.train_acc": ("train_acc", ["record"]), "records.val_acc": ("val_acc", ["record"]),
    "records.gamma_C": ("gamma", ["record", "class"]), "eig.lam_K": ("lam", ["eig", "k"]),
    "eig.lam_min": ("lam_min", ["eig"]), "eig.residual_K": ("residual", ["eig", "k"]),
    "eig.residual_min": ("residual_min", ["eig"]),
}


class _Collector:
    """The results arrays of a sweep, allocated once on the full grid and filled in place chunk
    by chunk, so the host holds each record once (no per-chunk lists, no concatenated copies)."""

    def __init__(self, config: SweepConfig, n_runs: int):
        self.config, self.n_runs = config, n_runs
        self.grid = config.grid_shape
        self.arrays: dict = {}
        self.axes: dict = {}

    def _target(self, gi: int, name: str, trailing_shape, dtype, axes):
        if name not in self.arrays:
            self.arrays[name] = np.full(self.grid + tuple(trailing_shape), _blank(dtype), dtype)
            self.axes[name] = list(results.GRID_AXES) + axes
        li, wi = divmod(gi, len(self.config.width))
        return self.arrays[name][li, wi].reshape((self.n_runs, *trailing_shape))  # a view

    def chunk(self, gi: int, c: int, piece: dict) -> None:
        for key, a in piece.items():
            name, axes = _RECORDS[key]
            per_chunk = a.shape[1]
            total = self.config.steps // self.config.chunk * per_chunk
            view = self._target(gi, name, (total, *a.shape[2:]), a.dtype, axes)
            view[:, c * per_chunk:(c + 1) * per_chunk] = a

    def final(self, gi: int, state, final) -> None:
        values = {
            "final_loss": final.loss, "final_static_loss": final.static_loss,
            "final_train_acc": final.train_acc, "final_val_acc": final.val_acc,
            "diverged": state.diverged, "diverged_step": state.diverged_step,
            "instability_step": state.detector.onset,
        }
        for name, value in values.items():
            a = _to_host(value)[:self.n_runs]
            self._target(gi, name, (), a.dtype, [])[:] = a


def _blank(dtype):
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)


def _add_steps_and_onsets(config: SweepConfig, arrays: dict, axes: dict) -> None:
    """The step axes, and λ1 interpolated at each run's first instability."""
    grid_axes = list(results.GRID_AXES)
    arrays["record_step"] = np.arange(0, config.steps, config.record_every)
    axes["record_step"] = ["record"]
    if config.eig_every:
        eig_step = np.arange(0, config.steps, config.eig_every)
        arrays["eig_step"], axes["eig_step"] = eig_step, ["eig"]
        onset = arrays["instability_step"]
        lam1 = arrays["lam"][..., 0]
        flat = [instability.value_at(s, eig_step, lam1.reshape(-1, lam1.shape[-1])[i])
                for i, s in enumerate(onset.reshape(-1))]
        arrays["instability_lam"] = np.asarray(flat).reshape(onset.shape)
        axes["instability_lam"] = grid_axes
