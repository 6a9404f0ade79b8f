"""Live metrics: clu's duck-typed writer interface, TensorBoard and W&B adapters, and the host-side
step that turns one compiled piece's per-run records into writer calls.

Any object with ``write_scalars(step, scalars)``, ``write_hparams(hparams)``, ``flush()`` and
``close()`` is a writer (the interface of ``clu.metric_writers``, so clu's own writers fit too).
A sweep calls :func:`write_piece` on the host after each compiled piece, so writing never enters
the compiled program; wrapped in :class:`SafeWriters`, a failing writer warns once and is dropped
instead of stopping the sweep.

Each run's scalars are tagged ``f"{run_tag(coords)}/{name}"``, e.g.
``"loss=dce/width=16/eta=1/seed=0/loss"``: in TensorBoard and W&B a run's curves share a prefix
and one metric's curves across runs can be matched by the tag's last part.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class MetricWriter(Protocol):
    """What a sweep writes to (clu's ``MetricWriter``, duck-typed)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f'{module} is needed for this writer: pip install -e ".[{extra}]"') from e


class TensorBoardWriter:
    """Scalars into TensorBoard event files under ``logdir`` (``tensorboardX``, no TensorFlow).

    One event per step holds all of that step's scalars, as TensorBoard's ``simple_value``
    (float32), under the tags as given (``add_scalar`` would rewrite ``=`` in a run tag to ``_``);
    hyperparameters go to the HParams plugin in the same event file."""

    def __init__(self, logdir: str, **kwargs):
        tbx = _import("tensorboardX", "tensorboard")
        from tensorboardX.proto.summary_pb2 import Summary

        self._summary = Summary
        self.logdir = str(logdir)
        self._writer = tbx.SummaryWriter(logdir=self.logdir, **kwargs)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [self._summary.Value(tag=t, simple_value=float(v)) for t, v in scalars.items()]
        self._writer.file_writer.add_summary(self._summary(value=values), int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        from tensorboardX.summary import hparams as hparams_summary

        plain = {k: _plain(v) for k, v in hparams.items()}
        for summary in hparams_summary(plain, {}):
            self._writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """Scalars into a Weights & Biases run, offline by default (``wandb sync DIR`` uploads later).

    A sweep's programs each start again at step 0, while W&B's own step only grows; so every
    ``write_scalars`` call logs its step as the metric ``"step"``, which all other metrics use as
    their x-axis (``define_metric``), and W&B's step just counts the calls. ``init_kwargs`` go to
    ``wandb.init`` (e.g. ``name``, ``group``, ``reinit``). The run's record is the transaction log
    ``DIR/wandb/offline-run-*/run-*.wandb``; W&B's service may write its last block a moment after
    ``close()`` returns (``wandb.teardown()`` waits for it; so does the end of the process)."""

    def __init__(self, dir: str, project: str = "dynloss", mode: str = "offline", **init_kwargs):
        wandb = _import("wandb", "wandb")
        # Quiet by default: the sweep's own progress owns the terminal.
        init_kwargs.setdefault("settings", wandb.Settings(silent=True, console="off"))
        self.dir = str(dir)
        self.run = wandb.init(dir=self.dir, project=project, mode=mode, **init_kwargs)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log({"step": int(step), **{k: float(v) for k, v in scalars.items()}})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.run.config.update({k: _plain(v) for k, v in hparams.items()}, allow_val_change=True)

    def flush(self) -> None:
        pass  # each log call is committed; the run's service writes it out

    def close(self) -> None:
        self.run.finish()


def _plain(v: Any) -> Any:
    """A hyperparameter as int, float, str or bool (what both tools accept)."""
    if isinstance(v, np.generic):
        v = v.item()
    return v if isinstance(v, int | float | str | bool) else str(v)


class SafeWriters:
    """Forwards every call to each of ``writers``; a writer that raises is warned about once
    (``warnings.warn`` naming it and the exception) and skipped from then on. Never raises."""

    def __init__(self, writers: Iterable[MetricWriter]):
        self.writers = list(writers)
        self.failed: dict[int, BaseException] = {}  # index in ``writers`` -> first exception

    def _each(self, method: str, *args) -> None:
        for i, w in enumerate(self.writers):
            if i in self.failed:
                continue
            try:
                getattr(w, method)(*args)
            except Exception as e:
                self.failed[i] = e
                warnings.warn(
                    f"metric writer {w!r} failed in {method} ({type(e).__name__}: {e}); "
                    "it receives nothing more",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._each("write_scalars", step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._each("write_hparams", hparams)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")


def run_tag(coords: Mapping[str, Any]) -> str:
    """A run's tag from its grid coordinates, in their order: ``"loss=dce/width=16/eta=1/seed=0"``.

    Whole floats print as integers (``1.0 -> "1"``), other floats in Python's shortest round-trip
    form (``0.5``, ``1e-05``), so that two distinct coordinates never share a tag."""
    parts = []
    for name, v in coords.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{name}={v!r}" if isinstance(v, float) else f"{name}={v}")
    return "/".join(parts)


def write_piece(
    writers: MetricWriter | Iterable[MetricWriter],
    run_tags: list[str],
    steps: np.ndarray,
    scalars: Mapping[str, np.ndarray],
) -> None:
    """Writes one compiled piece's records: for each record step ``steps[s]`` one call
    ``write_scalars(steps[s], {f"{run_tags[r]}/{name}": scalars[name][r, s]})`` over the runs r and
    names whose value is not NaN (NaN marks a value not measured at that step, e.g. an onset that
    has not fired; ±inf, a diverged run, is written); steps with nothing to write are skipped.
    Then ``flush()``.

    Shapes: ``run_tags`` (R,), ``steps`` (S,), each ``scalars[name]`` (R, S). ``writers``: one
    writer (e.g. a :class:`SafeWriters`, so that a failing writer never raises) or several."""
    targets = [writers] if isinstance(writers, MetricWriter) else list(writers)
    steps = np.asarray(steps)
    shape = (len(run_tags), len(steps))
    if steps.ndim != 1:
        raise ValueError(f"steps must be one-dimensional, got shape {steps.shape}")
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in scalars.items()}
    for name, a in arrays.items():
        if a.shape != shape:
            raise ValueError(
                f"scalars[{name!r}] has shape {a.shape}, expected (runs, steps) {shape}"
            )
    for s, step in enumerate(steps.tolist()):
        row = {
            f"{tag}/{name}": float(a[r, s])
            for r, tag in enumerate(run_tags)
            for name, a in arrays.items()
            if not np.isnan(a[r, s])
        }
        if row:
            for w in targets:
                w.write_scalars(int(step), row)
    for w in targets:
        w.flush()
