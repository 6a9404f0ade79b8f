"""One zarr (v3) store for a whole sweep grid, written region by region by independent jobs.

The store is a zarr group created before any job starts (:func:`create_store`): one array per
results array of the sweep, each with the grid's axes first and named dimensions, its chunks
aligned to the jobs' regions along the grid axes (whole along the others), and nothing written
— every value reads as the fill value, NaN (−1 for integers, false for flags). The grid's axis
values are coordinate arrays named after their axes, and the step arrays (``record_step``, …)
are written at creation, as the coordinates of their axes (``record``, ``eig``, …); the recorded
``loss`` is ``loss_value`` there, as in :meth:`~dynloss_jax.run.Run.to_xarray`, since a variable
cannot share its name with the ``loss`` axis. The group's attributes hold what a run folder's
``config.json`` holds (settings, axes, versions, environment, commit, layout).

Each job writes only its own region (:func:`write_region`: whole chunks that no other job
touches), its ``steps_done`` last. zarr's local store writes every chunk to a temporary file and
renames it, so a reader never sees part of a chunk. :func:`load_store` reads ``steps_done`` first
and blanks every run that was not done then, so a store read while jobs write holds each run
either whole or blank (``xarray.open_zarr(path)`` reads the same arrays, unmasked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynloss_jax.run import Run

STORE = "store.zarr"
DONE = "steps_done"  # per run: the steps it ran, written last by its job; −1 until then
# Results names that are axis names in the store, and back.
_IN_STORE = {
    "loss": "loss_value",
    "record_step": "record",
    "eig_step": "eig",
    "density_step": "density",
    "trace_step": "trace",
}
_FROM_STORE = {v: k for k, v in _IN_STORE.items()}


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError('the sweep store needs zarr>=3: pip install -e ".[cluster]"') from None
    return zarr


def blank(dtype):
    """The fill value of an array of ``dtype``: NaN, −1 for integers, false for flags."""
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)


def create_store(
    path, *, coords: dict, templates: dict, axes: dict, steps: dict, chunks: tuple, attrs: dict
) -> None:
    """Creates the store at ``path`` (replacing one there): for each ``templates[name]`` (an
    array of the grid-shaped result's dtype and trailing shape, e.g. ``(1, …, 1, record)``) an
    array of the grid's shape then those trailing axes, dimensions ``axes[name]``, chunks
    ``chunks`` along the grid axes; ``steps`` (name → values) and the grid ``coords`` written
    now; ``attrs`` the group's attributes; and ``steps_done`` on the grid."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    grid = tuple(len(v) for v in coords.values())
    for axis, values in coords.items():
        values = np.asarray(values)
        dtype = str if values.dtype.kind == "U" else values.dtype  # zarr's variable-length text
        group.create_array(axis, shape=values.shape, dtype=dtype, dimension_names=[axis])[...] = (
            values
        )
    for name, values in steps.items():
        values = np.asarray(values)
        axis = _IN_STORE.get(name, name)
        group.create_array(axis, shape=values.shape, dtype=values.dtype, dimension_names=[axis])[
            ...
        ] = values
    for name, template in {**templates, DONE: np.zeros(grid, np.int64)}.items():
        trailing = template.shape[len(grid) :]
        group.create_array(
            _IN_STORE.get(name, name),
            shape=grid + trailing,
            chunks=tuple(chunks) + trailing,
            dtype=template.dtype,
            fill_value=blank(template.dtype),
            dimension_names=list(axes.get(name, list(coords))),
        )
    group.attrs.update(attrs)


def write_region(path, arrays: dict, boxes: list[tuple], steps_done) -> None:
    """Writes the grid-shaped ``arrays`` (a shard's :class:`Run` arrays, blank outside its
    runs) into the store at ``path`` within ``boxes`` (tuples of slices over the grid axes,
    whole chunks of the store), then ``steps_done`` (grid-shaped) there. Arrays without the
    grid's axes (the steps) were written at creation and are left alone."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="r+")
    grid = group[DONE].shape
    for name, a in arrays.items():
        if np.ndim(a) < len(grid) or np.shape(a)[: len(grid)] != grid:
            continue
        target = group[_IN_STORE.get(name, name)]
        for box in boxes:
            target[box] = np.asarray(a)[box]
    for box in boxes:
        group[DONE][box] = np.asarray(steps_done)[box]


def load_store(path) -> Run:
    """The store at ``path`` as a :class:`~dynloss_jax.run.Run`: the arrays of a one-process
    sweep, bit for bit once every job is done (:attr:`Run.complete`). While jobs write, the runs
    not yet done are blank and ``arrays["steps_done"]`` (grid axes) says which are done."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    done = np.asarray(group[DONE][...])  # first: what it marks done was written before it
    coords = attrs["axes"]
    finished = done >= 0
    arrays = {}
    for name, names in attrs["array_axes"].items():
        a = np.asarray(group[_IN_STORE.get(name, name)][...])
        if list(names[: done.ndim]) == list(coords):
            mask = ~finished.reshape(done.shape + (1,) * (a.ndim - done.ndim))
            a = np.where(mask, np.asarray(blank(a.dtype), a.dtype), a)
        arrays[name] = a
    axes = dict(attrs["array_axes"])
    complete = bool(finished.all())
    if not complete:
        arrays[DONE] = np.where(finished, done, 0)
        axes[DONE] = list(coords)
    config = {**attrs, "complete": complete, "array_axes": axes}
    return Run(Path(path), config, arrays, axes, dict(coords))
