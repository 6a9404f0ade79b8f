"""A sweep of a :class:`~dynloss_jax.task.Task` over a grid of its own: the plan that
:func:`~dynloss_jax.sweep.run_sweep` runs, checked before anything is compiled.

    sweep = TaskSweep.make(task, dict(eta=[0.5, 1.0], focus=[0.0, 2.0], seed=range(3)),
                           steps=2000, eig_every=50)

The grid's names are routed to the functions that take them (:func:`dynloss_jax.task.route`);
the other settings are those of :class:`~dynloss_jax.config.ProgramSettings` plus the run length
(``steps``, ``steps_eta``, ``watch_steps_eta``, ``chunk_steps``). A task sweep compiles only what
is asked for: without ``detector`` no onset rule, parameter history or onset Lanczos.
``static_last_period`` and ``order_seed`` wrap the task's schedule in the combinators of
:mod:`dynloss_jax.schedule`; ``waveform`` belongs to the paper's schedule and is refused.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from dynloss_jax import optim
from dynloss_jax.config import ConfigError, ProgramSettings, SweepConfig, fields
from dynloss_jax.data import Data, Dataset
from dynloss_jax.grid import Grid
from dynloss_jax.losses import LOSSES, STATIC_OF
from dynloss_jax.schedule import class_order, last_period_static, triangle
from dynloss_jax.task import (
    Task,
    TaskError,
    check_loss,
    check_schedule_fn,
    describe,
    keyword_params,
    route,
    task_dataset,
    task_model,
)

RUN_LENGTH = ("steps", "steps_eta", "watch_steps_eta", "chunk_steps")
_PROGRAM = tuple(f.name for f in dataclasses.fields(ProgramSettings))
_TASK_PIECES = ("waveform", "optimizer")  # given by the task itself


def _loss_label(loss) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def family(loss) -> str:
    """The loss family that shares a padded program: the paper's losses by their static loss,
    any other by itself."""
    return STATIC_OF.get(loss, loss) if isinstance(loss, str) else loss


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSweep:
    """A task, its grid and its settings (a :class:`~dynloss_jax.config.SweepConfig` holding
    the program settings and the run length; its own grid fields are not used). Make one with
    :meth:`make`, which checks everything."""

    task: Task
    grid: Grid
    config: SweepConfig
    dataset_: Dataset
    network: object  # the FlatModel of the task's model, None for the built-in MLP
    schedule: object  # the schedule every run follows (combinators applied)
    routes: dict  # grid name → the kind of function that takes it

    @classmethod
    def make(cls, task: Task, grid: dict, **settings) -> TaskSweep:
        if not isinstance(task, Task):
            raise TaskError("task", task, "must be a dynloss_jax.Task")
        if not isinstance(grid, dict):
            raise TaskError("grid", grid, "must be a dict of axis name -> values")
        allowed = set(_PROGRAM) | set(RUN_LENGTH)
        for name in settings:
            if name in _TASK_PIECES:
                raise ConfigError(name, settings[name], "is given by the task (Task(...))")
            if name not in allowed:
                hint = "; sweep it in grid=" if name in {f.name for f in fields()} else ""
                raise ConfigError(name, settings[name], f"is not a setting of a task sweep{hint}")
        settings.setdefault("detector", None)  # pay only for what is turned on
        optimizer = task.optimizer
        if settings.get("static_last_period"):
            if "period" not in grid:
                raise TaskError("grid", "period", "static_last_period needs a period axis")
            settings["period"] = tuple(np.atleast_1d(grid["period"]).tolist())  # checked there
        config = SweepConfig(
            optimizer=optimizer if isinstance(optimizer, str) else "gd", **settings
        ).validate(data=False)
        try:
            the_grid = Grid.of(grid)
        except ValueError as e:
            raise TaskError("grid", sorted(grid), str(e)) from None

        data = task_dataset(task.data)
        n_classes = data.y_train.shape[1]
        losses = the_grid.axes.get("loss", (task.loss,))
        if any(loss is None for loss in losses):
            raise TaskError("loss", None, "give Task(loss=...) or a loss axis in the grid")
        for loss in losses:
            if isinstance(loss, str) and loss not in LOSSES:
                raise TaskError("loss", loss, f"must be a function or one of {sorted(LOSSES)}")
        if task.loss is not None and "loss" in the_grid.names:
            raise TaskError("grid", "loss", "is given by Task(loss=...) already")

        schedule = task.schedule if task.schedule is not None else triangle()
        if isinstance(schedule, str):
            raise TaskError("schedule", schedule, "must be a function (see dynloss_jax.schedule)")
        if config.order_seed >= 0:
            schedule = class_order(schedule, config.order_seed)
        if config.static_last_period:
            schedule = last_period_static(schedule, config.steps)
        # a named optimiser's hyperparameters (beta, b1, ...) are its keyword parameters
        named_opt = optim.HYPERPARAMS.get(optimizer, {}) if isinstance(optimizer, str) else {}
        functions = {
            "loss": tuple(losses),
            "schedule": schedule,
            "optimizer": None if isinstance(optimizer, str) else optimizer,
        }
        routes = route(functions, [n for n in the_grid.names if n not in named_opt])
        routes.update({n: "optimizer" for n in the_grid.names if n in named_opt})
        if "eta" not in the_grid.names:
            raise TaskError("grid", "eta", "the grid needs the learning rate eta")

        first = {n: v[0] for n, v in the_grid.axes.items()}
        for fn in losses:
            if callable(fn):
                hp = {k: first[k] for k in keyword_params(fn, "loss") if k in first}
                missing = [k for k in keyword_params(fn, "loss") if k not in first]
                _no_defaults(fn, missing, "loss")
                check_loss(fn, data.y_train.shape[0], n_classes, hp, config.dtype)
        hp = {k: first[k] for k in keyword_params(schedule, "schedule") if k in first}
        _no_defaults(
            schedule,
            [k for k in keyword_params(schedule, "schedule") if k not in first],
            "schedule",
        )
        check_schedule_fn(schedule, n_classes, hp)

        if task.model is None:
            if "width" not in the_grid.names:
                raise TaskError("grid", "width", "the built-in network (model=None) needs widths")
            network = None
            if data.x_train.ndim != 2:
                raise TaskError("model", None, "the built-in MLP takes (P, features) inputs")
        else:
            if "width" in the_grid.names:
                raise TaskError("grid", "width", "is an axis of the built-in network only")
            network = task_model(task.model, data.x_train[0], n_classes, config.dtype)
        if config.batch_points > data.x_train.shape[0]:
            raise ConfigError(
                "batch_points",
                config.batch_points,
                f"must be <= the {data.x_train.shape[0]} training points",
            )
        return cls(task, the_grid, config, data, network, schedule, routes)

    # --- what run_sweep reads (the same as of a SweepConfig) --------------------------------

    def __getattr__(self, name):
        if name in _PROGRAM or name in RUN_LENGTH or name in ("chunk", "run_steps", "dtype"):
            return getattr(self.config, name)
        raise AttributeError(name)

    def validate(self) -> TaskSweep:
        return self  # checked by make()

    @property
    def coords(self) -> dict:
        return self.grid.coords

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self.grid.shape

    def programs(self, pad_widths: bool = False) -> list[dict]:
        pad = pad_widths and self.network is None
        return self.grid.programs(pad, family=family, defaults={"loss": self.task.loss})

    def runs(self) -> dict[str, list]:
        return self.config.run_limits(self.grid.runs())

    def program_runs(self, program: dict) -> dict[str, list]:
        return self.grid.program_runs(program, self.runs())

    def hyper_args(self, program: dict) -> dict:
        runs = dict(self.program_runs(program))
        opt_hp = {n: runs.pop(n) for n in list(runs) if self.routes.get(n) == "optimizer"}
        named = {n: runs.pop(n) for n in list(runs) if n in self.routes}
        if isinstance(self.task.optimizer, str):
            opt = {**self.config.opt_hp, **opt_hp}
            opt_hp = {k: opt[k] for k in optim.HYPERPARAMS[self.task.optimizer]}
        else:
            named.update(opt_hp)
            opt_hp = None
        amplitude, period = named.pop("amplitude", None), named.pop("period", None)
        return dict(runs, amplitude=amplitude, period=period, hp=named or None, opt_hp=opt_hp)

    def spec(self, program: dict):
        from dynloss_jax.spec import RunSpec

        settings = {n: getattr(self.config, n) for n in _PROGRAM}
        settings["optimizer"] = self.task.optimizer
        return RunSpec(
            loss=program["loss"],
            width=program["width"] if self.network is None else None,
            n_steps=self.config.steps,
            n_classes=self.dataset_.y_train.shape[1],
            n_inputs=int(np.prod(self.dataset_.x_train.shape[1:])),
            schedule=self.schedule,
            network=self.network,
            threshold=self.task.threshold,
            **settings,
        )

    def dataset(self) -> Dataset:
        return self.dataset_

    def arrays(self) -> Data:
        d, dtype = self.dataset_, self.config.dtype
        return Data(
            *(jnp.asarray(a, dtype=dtype) for a in (d.x_train, d.y_train, d.x_val, d.y_val))
        )

    @property
    def opt_hp(self) -> dict:
        return self.config.opt_hp if isinstance(self.task.optimizer, str) else {}

    def settings(self) -> dict:
        """The settings as ``config.json`` records them: the program settings and run length,
        the task's pieces (functions by module, name and source hash) and the grid's routes."""
        out = {n: _jsonable(getattr(self.config, n)) for n in (*RUN_LENGTH, *_PROGRAM)}
        task = self.task
        out["optimizer"] = _jsonable(describe(task.optimizer))
        out["task"] = {
            "model": describe(task.model) if task.model is not None else "built-in MLP",
            "data": self.dataset_.info,
            "loss": [describe(v) for v in self.grid.axes.get("loss", (task.loss,))],
            "schedule": describe(task.schedule or triangle()),
            "schedule_combinators": [
                *(["class_order"] if self.config.order_seed >= 0 else []),
                *(["last_period_static"] if self.config.static_last_period else []),
            ],
            "optimizer": describe(task.optimizer),
            "threshold": describe(task.threshold) if task.threshold else None,
            "routes": dict(self.routes),
        }
        return out

    def describe_measurements(self) -> dict:
        """What the recorded λ are of and the line they meet (per η; ``None`` where the task's
        optimiser has no known threshold)."""
        opt = self.task.optimizer
        if isinstance(opt, str):
            hp = (
                self.config.opt_hp
                if not any(self.routes.get(n) == "optimizer" for n in self.grid.names)
                else None
            )
            values = (
                [float(optim.stability_threshold(opt, e, **hp)) for e in self.grid.axes["eta"]]
                if hp is not None
                else None
            )
            return {
                "lam_operator": "P^-1/2 H P^-1/2 (frozen preconditioner)"
                if opt in optim.ADAPTIVE
                else "H",
                "threshold": {
                    "optimizer": opt,
                    "label": optim.threshold_label(opt),
                    "value": values,
                },
            }
        values = None
        if self.task.threshold is not None and not keyword_params(opt, "optimizer"):
            values = [float(self.task.threshold(e)) for e in self.grid.axes["eta"]]
        return {
            "lam_operator": "H",
            "threshold": {
                "optimizer": _loss_label(opt),
                "label": "given by the task" if self.task.threshold else "unknown",
                "value": values,
            },
        }


def _no_defaults(fn, missing, kind) -> None:
    import inspect

    params = inspect.signature(fn).parameters
    lacking = [k for k in missing if params[k].default is inspect.Parameter.empty]
    if lacking:
        raise TaskError(
            kind, fn, f"takes {lacking} with no default and the grid gives no value: add them"
        )


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if callable(v):
        return describe(v)
    return v
