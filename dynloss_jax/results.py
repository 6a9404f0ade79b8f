"""Run folders on disk: the only module of the package that reads or writes files.

A run folder holds

* ``config.json`` — every setting, the sweep axes and their values, each array's axis names,
  library versions, git commit, backend, the execution layout, the command, and the SHA-256 of
  ``arrays.npz``; while the sweep is unfinished it holds only the settings, the layout and
  ``complete: false``;
* ``arrays.npz`` — arrays whose leading axes are the sweep grid
  ``(loss, width, eta, amplitude, period, seed)``, then e.g. ``record`` or ``eig``;
* while unfinished, per compiled group g: ``checkpoint-g-chunk-c.npz`` (the records of the
  c-th saved stretch of steps) and ``checkpoint-g-state.npz`` (the carry after the last saved
  step, ``bounds`` — the steps where the saved stretches begin and end — and ``piece``, the
  compiled length it ran with), and ``progress.json`` (run-steps done, rate, times of the last
  update and checkpoint: what ``dynloss status`` shows); removed when the sweep completes;
* extra array files an experiment adds (:func:`save_extra`: ``NAME.npz`` with its checksum and
  metadata in ``NAME.json``), and PNG figures.

Every write is atomic (temporary file, fsync, rename), so an interrupted process — or a reader
while it runs — sees either the old file or the new one, never half of one. A write that fails
(a full disk, a read-only folder) raises :class:`WriteFailed`, one line naming the folder and
the cause, and leaves the previous checkpoint as it was. :func:`load_run` refuses folders whose
arrays do not match their recorded checksum, and reads an unfinished folder as far as its
checkpoints go.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dynloss_jax.config import GRID_AXES, ConfigError, normalised
from dynloss_jax.run import Run

__all__ = [
    "ARRAYS",
    "CONFIG",
    "GRID_AXES",
    "Run",
    "RunFolderError",
    "WriteFailed",
    "load_run",
    "save_run",
]
CONFIG = "config.json"
ARRAYS = "arrays.npz"
PROGRESS = "progress.json"


class RunFolderError(ValueError):
    """A results folder that is missing, unfinished, truncated or altered."""


class WriteFailed(OSError):
    """A write into a results folder failed (full disk, read-only folder, ...). Its message is
    one line naming the folder, what was being written and the cause; the files written before
    are intact, since every write is atomic."""

    def __init__(self, folder, what: str, cause: OSError):
        code = errno.errorcode.get(cause.errno, "") if cause.errno else ""
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, f"cannot write {what} to {folder}: {reason}")
        self.folder, self.what, self.cause = Path(folder), what, cause
        self.message = f"cannot write {what} to {folder}: {reason}" + (f" ({code})" if code else "")

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def _writing(folder, what: str):
    """Turns an ``OSError`` raised inside the block into :class:`WriteFailed`."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as e:
        raise WriteFailed(folder, what, e) from e


def _atomic_write(path, write) -> str:
    """Calls ``write(f)`` on a temporary file beside ``path``, fsyncs it and renames it onto
    ``path``; returns the SHA-256 of what was written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def atomic_write_bytes(path, data: bytes) -> str:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_npz(path, arrays: dict) -> str:
    """Writes ``arrays`` as an ``.npz`` straight to disk (no copy in memory); returns SHA-256."""
    return _atomic_write(
        path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    )


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: cannot read JSON ({e})") from None


def read_npz(path, expected_sha256: str | None = None) -> dict:
    """Loads an ``.npz`` fully into memory, checking its SHA-256 when one is given."""
    try:
        if expected_sha256 is not None and file_sha256(path) != expected_sha256:
            raise RunFolderError(
                f"{path}: checksum mismatch — the file was truncated or altered "
                "after it was written"
            )
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except OSError as e:
        raise RunFolderError(f"{path}: cannot read ({e})") from None
    except RunFolderError:
        raise
    except Exception as e:  # a damaged zip raises several different types
        raise RunFolderError(f"{path}: not a readable .npz ({e})") from None


def save_run(path, config: dict, arrays: dict, array_axes: dict) -> None:
    """Writes ``arrays.npz`` then ``config.json`` (with the arrays' checksum) into ``path``."""
    path = Path(path)
    with _writing(path, "the results"):
        path.mkdir(parents=True, exist_ok=True)
        digest = atomic_write_npz(path / ARRAYS, arrays)
        config = dict(config, array_axes=array_axes)
        config["checksums"] = {ARRAYS: digest}
        config["checksums"][CONFIG] = _config_digest(config)
        write_json(path / CONFIG, config)


def _config_digest(config: dict) -> str:
    """SHA-256 of the config without its own digest (so the arrays' checksum is covered too)."""
    body = dict(config)
    body["checksums"] = {k: v for k, v in (config.get("checksums") or {}).items() if k != CONFIG}
    return sha256(json.dumps(body, sort_keys=True).encode())


def load_run(path, *, unfinished: bool = True) -> Run:
    """Loads a run folder, verifying the checksum of its arrays.

    An unfinished folder (a sweep still running, stopped or killed) is read as far as its
    checkpoints go when ``unfinished`` (the default; :func:`dynloss_jax.sweep.load_unfinished`
    says how): the arrays have the shapes of the finished run, steps not reached are NaN, and
    ``run.arrays["steps_done"]`` holds the steps each run has saved. With ``unfinished=False``
    such a folder is refused, as where a finished run is needed (a rerun, a figure).

    The folder of a sharded sweep (:mod:`dynloss_jax.shards`), or its ``store.zarr``, is read
    from the store (:func:`dynloss_jax.store.load_store`), also while its jobs write.
    """
    path = Path(path)
    if (path / "plan.json").is_file() or (path / "zarr.json").is_file():  # a sharded sweep
        from dynloss_jax.store import STORE, load_store

        run = load_store(path / STORE if (path / "plan.json").is_file() else path)
        if not (unfinished or run.complete):
            raise RunFolderError(f"{path}: the sweep is unfinished (dynloss status {path})")
        return run
    if not (path / CONFIG).exists():
        raise RunFolderError(f"{path}: no {CONFIG} — not a run folder, or the run never started")
    config = read_json(path / CONFIG)
    if not config.get("complete"):
        if not unfinished:
            raise RunFolderError(f"{path}: the run is unfinished; continue it with --resume")
        from dynloss_jax.sweep import load_unfinished  # the sweep knows how runs are grouped

        try:
            return load_unfinished(path, config)
        except RunFolderError:
            # the sweep may have finished (and removed its checkpoints) while we read
            config = read_json(path / CONFIG)
            if not config.get("complete"):
                raise
    checksums = config.get("checksums", {})
    expected = checksums.get(ARRAYS)
    if expected is None or CONFIG not in checksums:
        raise RunFolderError(f"{path}: {CONFIG} has no checksums")
    if checksums[CONFIG] != _config_digest(config):
        raise RunFolderError(f"{path}: {CONFIG} was edited after the run was written")
    arrays = read_npz(path / ARRAYS, expected)
    axes, coords = config.get("array_axes"), config.get("axes")
    if not isinstance(axes, dict) or not isinstance(coords, dict):
        raise RunFolderError(f"{path}: {CONFIG} lacks 'array_axes' or 'axes'")
    missing = set(axes) - set(arrays)
    if missing:
        raise RunFolderError(f"{path}: arrays missing from {ARRAYS}: {sorted(missing)}")
    for name, names in axes.items():
        shape = arrays[name].shape
        if len(shape) != len(names):
            raise RunFolderError(f"{path}: {name} has {len(shape)} axes, config says {names}")
        for axis, size in zip(names, shape, strict=True):
            if axis in coords and size != len(coords[axis]):
                raise RunFolderError(
                    f"{path}: {name} has {size} entries along {axis}, "
                    f"config lists {len(coords[axis])} values"
                )
    return Run(path, config, arrays, axes, dict(coords))


# --- an unfinished sweep: the folder's start, its checkpoints, its completion ----------------


def check_out_folder(
    out, *, resume: bool, overwrite: bool, settings: dict | None = None, layout: dict | None = None
) -> None:
    """Refuses to write into a non-empty folder unless resuming it or told to overwrite, with a
    message that says what the folder holds and what to do:

    * the same ``settings``, unfinished: continue it with ``--resume``;
    * the same ``settings``, finished: nothing to do (or ``--overwrite`` to run it again);
    * other settings (finished or not, with or without ``--resume``): the settings that differ,
      each with the folder's value and this run's, and ``--overwrite`` or another ``--out``;
    * no ``config.json``: not a run folder.

    With ``resume`` the folder must hold an unfinished run started with the same ``settings`` and,
    when both are known, the same execution ``layout`` (batch size and device count): another
    layout changes the results at rounding level, and a resumed run would no longer equal an
    uninterrupted one bit for bit. ``settings=None`` skips the comparison of settings.
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
    if overwrite or not (out.is_dir() and any(out.iterdir())):
        return
    flag = "resume" if resume else "out"
    marker = out / CONFIG
    if not marker.exists():
        raise ConfigError(
            flag,
            str(out),
            f"exists and is not empty, and has no {CONFIG}: not a run folder; "
            "pass --overwrite to replace what it holds, or choose another --out",
        )
    saved = read_json(marker)
    state = "finished" if saved.get("complete") else "unfinished"
    differ = [] if settings is None else settings_differences(saved.get("settings"), settings)
    if differ:
        raise ConfigError(
            flag,
            str(out),
            f"holds a{'n' if state == 'unfinished' else ''} {state} run with other settings "
            f"({'; '.join(differ)}): pass --overwrite to replace it, or choose another --out",
        )
    same = "these settings" if settings is not None else "a run"
    if saved.get("complete"):
        what = f"holds a finished run of {same}" if settings is not None else "holds a finished run"
        raise ConfigError(
            flag,
            str(out),
            f"{what}; nothing to {'resume' if resume else 'do'} (dynloss plot and dynloss "
            "status read it), or pass --overwrite to run it again",
        )
    if not resume:
        what = f"an unfinished run of {same}" if settings is not None else "an unfinished run"
        raise ConfigError(
            "out",
            str(out),
            f"holds {what}: continue it with --resume, or pass --overwrite to start it again",
        )
    old_layout = saved.get("layout")
    if old_layout is not None:
        old_layout = {"pad_widths": False, **old_layout}  # folders from before the option
    if layout is not None and old_layout is not None and old_layout != layout:
        raise ConfigError(
            "resume",
            str(out),
            f"the folder was started with batch size {old_layout['batch_size']} on "
            f"{old_layout['devices']} device(s){_padded(old_layout)}, this run would use "
            f"batch size {layout['batch_size']} on {layout['devices']}{_padded(layout)}; "
            f"results would differ at rounding level: pass --batch-size "
            f"{old_layout['batch_size']} --devices {old_layout['devices']} "
            f"--{'' if old_layout['pad_widths'] else 'no-'}pad-widths",
        )


def settings_differences(stored: dict | None, settings: dict) -> list[str]:
    """The settings in which a folder's stored ``settings`` differ from ``settings``, as
    ``"--steps 40 in the folder, 80 now"`` (lists written as the flags take them:
    ``"--width 3 5"``); empty when they agree once :func:`normalised`."""
    old = normalised(stored)
    if not isinstance(old, dict):
        return [f"its {CONFIG} holds no readable settings"]
    if old == settings:
        return []

    def shown(value) -> str:
        if value is None:
            return "not set"
        if isinstance(value, list | tuple):
            return " ".join(map(str, value)) or "none"
        return str(value)

    names = [*settings, *(k for k in old if k not in settings)]
    return [
        f"--{k.replace('_', '-')} {shown(old.get(k))} in the folder, {shown(settings.get(k))} now"
        for k in names
        if old.get(k) != settings.get(k)
    ]


def _padded(layout: dict) -> str:
    return ", widths padded" if layout.get("pad_widths") else ""


def start_folder(out, settings: dict, layout: dict, *, resume: bool, axes=None) -> None:
    """Marks ``out`` as an unfinished run (settings, layout, the grid's ``axes`` when given,
    ``complete: false``), removing the
    checkpoints of an earlier start; a resumed folder keeps its checkpoints. Either way the
    temporary files of a process killed mid-write are removed."""
    out = Path(out)
    with _writing(out, "the run's start"):
        for f in out.glob(".*.tmp"):
            f.unlink(missing_ok=True)
        if resume and (out / CONFIG).exists():
            return
        out.mkdir(parents=True, exist_ok=True)
        for f in [*out.glob("checkpoint-*.npz"), out / ARRAYS, out / PROGRESS]:
            f.unlink(missing_ok=True)
        start = {"settings": settings, "layout": layout, "complete": False}
        if axes is not None:  # a task's grid cannot be rebuilt from its settings
            start["axes"] = axes
        write_json(out / CONFIG, start)


def _state_file(out, group: int) -> Path:
    return Path(out) / f"checkpoint-{group}-state.npz"


def _chunk_file(out, group: int, chunk: int) -> Path:
    return Path(out) / f"checkpoint-{group}-chunk-{chunk}.npz"


def write_checkpoint(
    out, group: int, records: dict, state: dict, bounds: list[int], piece: int
) -> None:
    """Saves the records of group ``group`` from step ``bounds[-2]`` to ``bounds[-1]`` (its
    ``len(bounds) - 1``-th saved stretch), then the carry at step ``bounds[-1]`` with ``bounds``
    and ``piece`` (the compiled length that reached it). The state file is written last, so it
    never points at records that are not on disk; a failed write leaves the previous one."""
    index = len(bounds) - 2
    with _writing(out, f"a checkpoint (program {group}, step {bounds[-1]:,})"):
        atomic_write_npz(_chunk_file(out, group, index), records)
        atomic_write_npz(
            _state_file(out, group),
            {**state, "bounds": np.asarray(bounds, np.int64), "piece": np.asarray(piece)},
        )


def read_checkpoint(out, group: int, steps: int, chunk: int):
    """``(bounds, piece, state, records_of_each_stretch)`` of group ``group`` (see
    :func:`write_checkpoint`), or ``None`` when the group has no checkpoint. Reads the format of
    earlier versions too (``chunks_done`` chunks of ``chunk`` steps). Raises
    :class:`RunFolderError` for an inconsistent one."""
    path = _state_file(out, group)
    if not path.exists():
        return None
    state = read_npz(path)
    if "bounds" in state:
        bounds = [int(b) for b in state.pop("bounds")]
        piece = int(state.pop("piece", chunk))
    elif "chunks_done" in state:
        bounds = [c * chunk for c in range(int(state.pop("chunks_done")) + 1)]
        piece = chunk
    else:
        raise RunFolderError(f"{out}: checkpoint {group} is incomplete (no bounds)")
    if (
        bounds[0] != 0
        or any(b <= a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        or bounds[-1] > steps
    ):
        raise RunFolderError(f"{out}: checkpoint {group} has inconsistent bounds {bounds}")
    if piece < 1 or bounds[-1] % piece:
        raise RunFolderError(
            f"{out}: checkpoint {group} stopped at step {bounds[-1]}, "
            f"not a multiple of its compiled length {piece}"
        )
    chunks = [read_npz(_chunk_file(out, group, c)) for c in range(len(bounds) - 1)]
    return bounds, piece, state, chunks


def write_progress(out, progress: dict) -> None:
    """Writes ``progress.json`` (what ``dynloss status`` reads), with the time of writing."""
    with _writing(out, "progress.json"):
        write_json(Path(out) / PROGRESS, {**progress, "updated_at": time.time()})


def read_progress(out) -> dict | None:
    """``progress.json`` of an unfinished folder, ``None`` when there is none."""
    path = Path(out) / PROGRESS
    return read_json(path) if path.exists() else None


def finish_folder(out, config: dict, arrays: dict, array_axes: dict) -> None:
    """Writes the finished run (:func:`save_run`) and removes its checkpoints. Should a write
    fail, the checkpoints stay, and a resume writes the results again from them."""
    save_run(out, config, arrays, array_axes)
    for f in [*Path(out).glob("checkpoint-*.npz"), Path(out) / PROGRESS]:
        f.unlink(missing_ok=True)


# --- extra arrays an experiment keeps beside a run ---------------------------------------------


def save_extra(out, name: str, arrays: dict, meta: dict) -> None:
    """Writes ``NAME.npz`` and ``NAME.json`` (``meta`` and the arrays' SHA-256) into ``out``."""
    digest = atomic_write_npz(Path(out) / f"{name}.npz", arrays)
    write_json(Path(out) / f"{name}.json", {"meta": meta, "sha256": digest})


def load_extra(out, name: str) -> tuple[dict, dict]:
    """``(arrays, meta)`` written by :func:`save_extra`, checksum verified."""
    sidecar = read_json(Path(out) / f"{name}.json")
    if "sha256" not in sidecar:
        raise RunFolderError(f"{out}/{name}.json has no checksum")
    return read_npz(Path(out) / f"{name}.npz", sidecar["sha256"]), sidecar.get("meta", {})
