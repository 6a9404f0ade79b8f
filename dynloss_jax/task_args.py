"""``dynloss train`` with a researcher's own pieces, named by import path:

    dynloss train --loss mymodule:focal_dce --schedule mymodule:two_at_once \\
        --model mymodule:TanhNet --data mymodule:my_arrays --grid focus=0,2 \\
        --eta 0.5 1 --amplitude 10 --period 200 --seeds 3 --steps 2000 --eig-every 50 \\
        --out runs/mine

``MODULE:NAME`` imports ``NAME`` (dotted for attributes) from ``MODULE`` (the current folder is
searched first, as ``python -m`` does). A model that is a class is instantiated with no
arguments; data that are a function are called with none and must return ``(x, labels)`` or
``(x, labels, x_val, labels_val)``. Any of ``--loss``, ``--schedule``, ``--model``, ``--data``,
``--optimizer`` given as an import path, or a ``--grid`` axis, makes the sweep a task sweep
(:class:`~dynloss_jax.task_sweep.TaskSweep`): its grid is ``--eta``, the seeds, ``--width`` for the
built-in network, ``--amplitude`` and ``--period`` when the schedule takes them, and every
``--grid NAME=V1,V2,...``; the other flags are its settings.
"""

from __future__ import annotations

import importlib
import inspect
import sys

from dynloss_jax.task import Task, TaskError, keyword_params

PIECES = ("loss", "schedule", "model", "data", "optimizer")


def is_path(value) -> bool:
    return isinstance(value, str) and ":" in value


def task_mode(args) -> bool:
    """Whether the flags describe a task sweep (an import path or a ``--grid`` axis)."""
    values = [getattr(args, p, None) for p in PIECES]
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return bool(getattr(args, "grid", None)) or any(is_path(v) for v in flat)


def resolve(path: str, param: str):
    """The object at ``MODULE:NAME``; a :class:`~dynloss_jax.task.TaskError` naming ``param``
    when it cannot be imported."""
    module, _, name = path.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current folder, as python -m does
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise TaskError(param, path, f"cannot be imported ({e})") from None
    return obj


def parse_grid(items) -> dict:
    """``["focus=0,2", "beta=0.5"]`` → ``{"focus": [0.0, 2.0], "beta": [0.5]}`` (integers stay
    integers when every value is one)."""
    grid = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        if not eq or not name.isidentifier() or not text:
            raise TaskError("grid", item, "must be NAME=V1,V2,... (numbers)")
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise TaskError("grid", item, "must be NAME=V1,V2,... (numbers)") from None
        if all(
            v.is_integer() and "." not in t for v, t in zip(values, text.split(","), strict=True)
        ):
            values = [int(v) for v in values]
        grid[name] = values
    return grid


def task_sweep_from_args(args):
    """The :class:`~dynloss_jax.task_sweep.TaskSweep` of the flags (checked as any task sweep)."""
    from dynloss_jax.config import ProgramSettings, SweepConfig
    from dynloss_jax.task_sweep import RUN_LENGTH, TaskSweep

    defaults = SweepConfig()
    losses = args.loss or ["dce"]
    losses = [resolve(v, "loss") if is_path(v) else v for v in losses]
    schedule = resolve(args.schedule, "schedule") if args.schedule else None
    model = None
    if args.model:
        model = resolve(args.model, "model")
        if inspect.isclass(model):
            model = model()
    data = args.data or "spiral"
    if is_path(data):
        data = resolve(data, "data")
        data = data() if callable(data) else data
    optimizer = args.optimizer or "gd"
    if is_path(optimizer):
        optimizer = resolve(optimizer, "optimizer")
    task = Task(
        model=model,
        data=data,
        loss=losses[0] if len(losses) == 1 else None,
        schedule=schedule,
        optimizer=optimizer,
    )
    grid = {}
    if len(losses) > 1:
        grid["loss"] = losses
    if model is None:
        grid["width"] = args.width or list(defaults.width)
    grid["eta"] = args.eta or list(defaults.eta)
    schedule_takes = keyword_params(schedule, "schedule") if schedule else ("amplitude", "period")
    for name in ("amplitude", "period"):
        given = getattr(args, name)
        if given is not None:
            grid[name] = given
        elif name in schedule_takes:
            grid[name] = list(getattr(defaults, name))
    grid.update(parse_grid(args.grid))
    first = defaults.first_seed if args.first_seed is None else args.first_seed
    seeds = defaults.seeds if args.seeds is None else args.seeds
    grid["seed"] = list(range(first, first + seeds))
    names = [*RUN_LENGTH, *(f.name for f in _fields(ProgramSettings))]
    settings = {
        n: getattr(args, n)
        for n in names
        if n not in ("optimizer", "waveform") and getattr(args, n, None) is not None
    }
    if "watch" in settings:
        settings["watch"] = tuple(settings["watch"])
    return TaskSweep.make(task, grid, **settings)


def _fields(cls):
    import dataclasses

    return dataclasses.fields(cls)
