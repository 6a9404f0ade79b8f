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
import io
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


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


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
        data = Path(path).read_bytes()
    except OSError as e:
        raise RunFolderError(f"{path}: cannot read ({e})") from None
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise RunFolderError(
            f"{path}: checksum mismatch — the file was truncated or altered after it was written"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # a damaged zip raises several different types
        raise RunFolderError(f"{path}: not a readable .npz ({e})") from None


def save_run(path, config: dict, arrays: dict, array_axes: dict) -> None:
    """Writes ``arrays.npz`` then ``config.json`` (with the arrays' checksum) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob = npz_bytes(arrays)
    atomic_write_bytes(path / ARRAYS, blob)
    config = dict(config, array_axes=array_axes)
    config["checksums"] = {ARRAYS: sha256(blob), CONFIG: _config_digest(config)}
    write_json(path / CONFIG, config)


def _config_digest(config: dict) -> str:
    body = {k: v for k, v in config.items() if k != "checksums"}
    return sha256(json.dumps(body, sort_keys=True).encode())


@dataclass
class Run:
    """A loaded run folder: ``config``, ``arrays`` (name → ndarray) with named axes.

    ``coords[axis]`` lists the values along each sweep axis; ``axes[name]`` the axis names of an
    array. :meth:`sel` narrows the sweep axes by value; :meth:`summary` averages over seeds.
    """

    path: Path | None
    config: dict
    arrays: dict
    axes: dict
    coords: dict

    def __getitem__(self, name):
        return self.arrays[name]

    def sel(self, **values) -> Run:
        """Keeps the given value(s) along sweep axes, e.g. ``run.sel(width=16, loss="dce")``.

        A scalar value drops nothing (the axis is kept with length 1) so that every selected
        Run has the same axis names; use ``np.squeeze`` where a plain array is wanted.
        """
        arrays, coords = dict(self.arrays), dict(self.coords)
        for axis, value in values.items():
            if axis not in coords:
                raise KeyError(f"no sweep axis {axis!r}; axes are {list(coords)}")
            wanted = value if isinstance(value, (list, tuple)) else [value]
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
        """Mean and standard error of the mean over seeds of array ``name``, skipping diverged
        runs. Returns ``(mean, sem, n)``, each with the other sweep axes (and trailing axes)."""
        a = np.asarray(self.arrays[name], dtype=float)
        seed_axis = self.axes[name].index("seed")
        if "diverged" in self.arrays:
            div = self.arrays["diverged"]
            div = div.reshape(div.shape + (1,) * (a.ndim - div.ndim))
            a = np.where(div, np.nan, a)
        n = np.sum(np.isfinite(a), axis=seed_axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(np.where(np.isfinite(a), a, np.nan), axis=seed_axis) if a.size else a
            std = np.nanstd(a, axis=seed_axis, ddof=1)
            sem = std / np.sqrt(n)
        return mean, np.where(n > 1, sem, np.nan), n


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0))


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
    axes = config["array_axes"]
    missing = set(axes) - set(arrays)
    if missing:
        raise RunFolderError(f"{path}: arrays missing from {ARRAYS}: {sorted(missing)}")
    for name, names in axes.items():
        if arrays[name].ndim != len(names):
            raise RunFolderError(f"{path}: {name} has {arrays[name].ndim} axes, config says {names}")
    return Run(path, config, arrays, axes, dict(config["axes"]))
