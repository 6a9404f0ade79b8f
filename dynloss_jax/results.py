"""Run folders on disk: the only module of the package that reads or writes files.

A run folder holds

* ``config.json`` — every setting, the sweep axes and their values, each array's axis names,
  library versions, git commit, backend, the command, and the SHA-256 of ``arrays.npz``;
* ``arrays.npz`` — arrays whose leading axes are the sweep grid
  ``(loss, width, eta, amplitude, period, seed)``, then e.g. ``record`` or ``eig``;
* ``checkpoint-*.npz`` while a sweep is unfinished (removed when it completes);
* PNG figures.

Every write is atomic (temporary file, fsync, rename), so an interrupted process leaves either
the old file or the new one, never half of one. :func:`load_run` refuses folders whose arrays do
not match their recorded checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID_AXES = ("loss", "width", "eta", "amplitude", "period", "seed")
CONFIG = "config.json"
ARRAYS = "arrays.npz"


class RunFolderError(ValueError):
    """A results folder that is missing, unfinished, truncated or altered."""


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
    return _atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v)
                                                         for k, v in arrays.items()}))


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
            raise RunFolderError(f"{path}: checksum mismatch — the file was truncated or altered "
                                 "after it was written")
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


@dataclass(repr=False)
class Run:
    """A loaded run folder: ``config``, ``arrays`` (name → ndarray) with named axes.

    ``coords[axis]`` lists the values along each sweep axis ``(loss, width, eta, amplitude,
    period, seed)``; ``axes[name]`` the axis names of array ``name`` — the sweep axes first, then
    e.g. ``record`` (at ``arrays["record_step"]``), ``eig`` (at ``arrays["eig_step"]``), ``k`` or
    ``class``. :meth:`sel` narrows the sweep axes by value; :meth:`summary` averages over seeds.
    """

    path: Path | None
    config: dict
    arrays: dict
    axes: dict
    coords: dict

    def __getitem__(self, name):
        return self.arrays[name]

    def __repr__(self) -> str:
        sweep = ", ".join(f"{a}={v}" for a, v in self.coords.items())
        return (f"Run({str(self.path) if self.path is not None else 'in memory'}: {sweep}; "
                f"arrays: {', '.join(self.arrays)})")

    def sel(self, **values) -> Run:
        """Keeps the given value(s) along sweep axes, e.g. ``run.sel(width=16, loss="dce")`` or
        ``run.sel(amplitude=[1, 70])``; numbers match to a relative 1e-12.

        A scalar value drops nothing (the axis is kept with length 1) so that every selected
        Run has the same axis names; use ``np.squeeze`` where a plain array is wanted. Raises
        ``KeyError`` naming the allowed values for an unknown axis or value.
        """
        arrays, coords = dict(self.arrays), dict(self.coords)
        for axis, value in values.items():
            if axis not in coords:
                raise KeyError(f"no sweep axis {axis!r}; axes are {list(coords)}")
            if isinstance(value, np.ndarray):
                wanted = value.ravel().tolist()
            elif isinstance(value, (list, tuple, range)):
                wanted = list(value)
            else:
                wanted = [value]
            index = []
            for v in wanted:
                matches = [i for i, c in enumerate(coords[axis]) if _same(c, v)]
                if not matches:
                    raise KeyError(f"{axis}={v!r} not in this run; values are {coords[axis]}")
                index.extend(matches)
            coords[axis] = [coords[axis][i] for i in index]
            for name, names in self.axes.items():
                if axis in names:
                    arrays[name] = np.take(arrays[name], index, axis=names.index(axis))
        return Run(self.path, self.config, arrays, self.axes, coords)

    def summary(self, name: str):
        """Mean and standard error of the mean of array ``name`` over seeds.

        Over the n finite values of non-diverged runs (diverged runs and NaN entries are left
        out): mean = Σ a / n, sem = s/√n with s² = Σ (a − mean)² / (n − 1). Returns
        ``(mean, sem, n)``, each shaped like the array without its ``seed`` axis; mean is NaN
        where n = 0 and sem where n < 2.
        """
        if name not in self.arrays:
            raise KeyError(f"no array {name!r}; arrays are {list(self.arrays)}")
        names = self.axes[name]
        if "seed" not in names:
            raise ValueError(f"{name} has no seed axis (its axes are {names})")
        a = np.asarray(self.arrays[name], dtype=float)
        valid = np.isfinite(a)
        if "diverged" in self.arrays:
            div = np.asarray(self.arrays["diverged"], dtype=bool)
            grid = self.axes["diverged"]
            if list(names[: len(grid)]) != list(grid):
                raise ValueError(f"{name} axes {names} do not start with the sweep axes {grid}")
            valid &= ~div.reshape(div.shape + (1,) * (a.ndim - div.ndim))
        axis = names.index("seed")
        n = valid.sum(axis=axis)
        n_safe = np.maximum(n, 1)
        mean = np.where(valid, a, 0.0).sum(axis=axis) / n_safe
        dev = np.where(valid, a - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / np.maximum(n - 1, 1)
        sem = np.sqrt(var / n_safe)
        return np.where(n > 0, mean, np.nan), np.where(n > 1, sem, np.nan), n


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0))
    except (TypeError, ValueError):
        return False


def load_run(path) -> Run:
    """Loads a finished run folder, verifying the checksum of its arrays."""
    path = Path(path)
    if not (path / CONFIG).exists():
        raise RunFolderError(f"{path}: no {CONFIG} — not a run folder, or the run never finished")
    config = read_json(path / CONFIG)
    if not config.get("complete"):
        raise RunFolderError(f"{path}: the run is unfinished; continue it with --resume")
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
                raise RunFolderError(f"{path}: {name} has {size} entries along {axis}, "
                                     f"config lists {len(coords[axis])} values")
    return Run(path, config, arrays, axes, dict(coords))
