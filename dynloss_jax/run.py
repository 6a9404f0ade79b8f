"""A loaded sweep in memory: arrays with named axes, selection by value, means over seeds.

:class:`Run` is what :func:`dynloss_jax.load_run` and :func:`dynloss_jax.run_sweep` return. The
sweep axes are ``(loss, width, eta, amplitude, period, seed)``; other axes (``record``, ``eig``,
``k``, ``class``) follow them. :meth:`Run.to_xarray` gives the same data as an
``xarray.Dataset`` (optional extra ``xarray``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(repr=False)
class Run:
    """A loaded run folder: ``config``, ``arrays`` (name → ndarray) with named axes.

    ``coords[axis]`` lists the values along each sweep axis ``(loss, width, eta, amplitude,
    period, seed)``; ``axes[name]`` the axis names of array ``name`` — the sweep axes first, then
    e.g. ``record`` (at ``arrays["record_step"]``), ``eig`` (at ``arrays["eig_step"]``), ``k`` or
    ``class``. :meth:`sel` narrows the sweep axes by value; :meth:`summary` averages over seeds.

    A Run read from an unfinished folder (:attr:`complete` false) holds the records saved so far:
    the arrays have the finished run's shapes, steps not reached are NaN (−1 for integers), and
    ``arrays["steps_done"]`` (sweep axes) is the last saved step of each run.
    """

    path: Path | None
    config: dict
    arrays: dict
    axes: dict
    coords: dict

    @property
    def complete(self) -> bool:
        """False for a run read from an unfinished folder (see ``steps_done``)."""
        return bool(self.config.get("complete", True))

    def __getitem__(self, name):
        return self.arrays[name]

    def __repr__(self) -> str:
        sweep = ", ".join(f"{a}={v}" for a, v in self.coords.items())
        unfinished = ""
        if not self.complete and "steps_done" in self.arrays:
            unfinished = f"unfinished, steps done up to {int(self.arrays['steps_done'].max())}; "
        return (
            f"Run({str(self.path) if self.path is not None else 'in memory'}: {sweep}; "
            f"{unfinished}arrays: {', '.join(self.arrays)})"
        )

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
        a, valid, axis = self._valid(name)
        return _mean_sem(a, valid, axis)

    def paired(self, name: str, axis: str, value, reference):
        """Mean, s.e.m. and count over seeds of the paired difference ``name`` at ``axis=value``
        minus ``name`` at ``axis=reference`` (same seed, same other settings), e.g.
        ``run.paired("final_val_acc", "loss", "dce", "ce")``. A seed counts when both of its
        runs are valid (see :meth:`summary`); the result has the shape of :meth:`summary` with
        ``axis`` of length 1."""
        a, valid_a, seed_axis = self.sel(**{axis: value})._valid(name)
        b, valid_b, _ = self.sel(**{axis: reference})._valid(name)
        return _mean_sem(a - b, valid_a & valid_b, seed_axis)

    def value(self, name: str, **values) -> np.ndarray:
        """Array ``name`` at the given sweep values with the axes of length 1 dropped, e.g.
        ``run.value("final_val_acc", loss="dce", width=16)`` → one value per seed."""
        names = self.axes[name]
        a = self.sel(**values).arrays[name]
        return np.squeeze(
            a, axis=tuple(i for i, n in enumerate(names) if n in self.coords and a.shape[i] == 1)
        )

    def _valid(self, name: str):
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
        return a, valid, names.index("seed")

    def to_xarray(self):
        """The run as an ``xarray.Dataset``: one variable per array with its named axes, the sweep
        values as coordinates, and ``record_step`` / ``eig_step`` as the coordinates of the
        ``record`` / ``eig`` axes. An array named like a sweep axis (the recorded ``loss``) is
        called ``loss_value`` there, since xarray keeps one namespace for both. Needs the
        optional extra: ``pip install -e ".[xarray]"``."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError('Run.to_xarray needs xarray: pip install -e ".[xarray]"') from None
        step_axes = {"record_step": "record", "eig_step": "eig"}
        coords = {axis: np.asarray(values) for axis, values in self.coords.items()}
        for name, axis in step_axes.items():
            if name in self.arrays:
                coords[axis] = np.asarray(self.arrays[name])
        variables = {
            (f"{name}_value" if name in coords else name): (tuple(self.axes[name]), np.asarray(a))
            for name, a in self.arrays.items()
            if name not in step_axes
        }
        return xr.Dataset(variables, coords=coords, attrs={"path": str(self.path)})


def _mean_sem(a, valid, axis: int):
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
