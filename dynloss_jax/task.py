"""What a sweep trains: a :class:`Task` — model, data, loss, Γ schedule and optimiser — made of a
researcher's own pieces or the paper's, through one path.

* **model**: a flax linen module, a :class:`~dynloss_jax.model.FlatModel`, an ``(init, apply)``
  pair (``init(key) -> params`` any pytree, ``apply(params, x) -> logits``), or ``None`` for the
  built-in MLP (:func:`~dynloss_jax.model.flat_model`; its ``width`` is then a grid axis, and
  widths can share one padded program).
* **data**: ``(x, labels)`` or ``(x, labels, x_val, labels_val)`` arrays (integer or one-hot
  labels; without a validation set the training set is used and the config says so), a
  :class:`~dynloss_jax.data.Dataset`, or the name of a built-in set.
* **loss**: any ``(logits_PxC, y_PxC, gamma_C, **hp) -> scalar`` (or the name of one of the
  paper's). The static loss recorded beside it is the same function at Γ ≡ 1.
* **schedule**: any ``(step, n_classes, **hp) -> gamma_C`` (the paper's are
  :func:`~dynloss_jax.schedule.triangle` and its kin, with the combinators of
  :mod:`~dynloss_jax.schedule`).
* **optimizer**: a name of :mod:`~dynloss_jax.optim`, or ``(eta, **hp) ->
  optax.GradientTransformation``; with a function, ``threshold`` (``(eta, **hp) -> float``) is
  its edge-of-stability line, or ``None``: unknown, recorded as such, never guessed.

Every keyword parameter of the loss, schedule and optimiser is a per-run value that a sweep's
grid may set, routed by name to the function that takes it (:func:`route`); a name taken by two
functions or by none is an error before anything is compiled. The functions must be pure and
traceable by JAX; they are identified by the object, so a function redefined in the same process
compiles a new program.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dynloss_jax.config import ConfigError
from dynloss_jax.data import Dataset, check_data
from dynloss_jax.model import FlatModel

# Positional arguments each kind of function takes before its keyword hyperparameters.
POSITIONAL = {"loss": 3, "schedule": 2, "optimizer": 1}
# Grid names the engine itself takes: the step size, the seed, and the built-in network's width.
ENGINE_AXES = ("loss", "width", "eta", "seed")


class TaskError(ConfigError):
    """A task's piece is unusable; ``param`` names it (``model``, ``data``, ``loss``,
    ``schedule``, ``optimizer``, ``grid``). A :class:`~dynloss_jax.config.ConfigError`: the CLI
    prints it as one line."""

    def __init__(self, param: str, value, allowed: str):
        super().__init__(param, _short(value), allowed)


def _short(value) -> str:
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A researcher's (or the paper's) model, data, loss, schedule and optimiser; see the module
    docstring for what each may be. Compared and hashed by identity."""

    model: Any = None
    data: Any = "spiral"
    loss: Callable | str | None = None
    schedule: Callable | None = None
    optimizer: str | Callable = "gd"
    threshold: Callable | None = None

    def __post_init__(self):
        for name in ("loss", "schedule"):
            value = getattr(self, name)
            if value is not None and not callable(value) and not isinstance(value, str):
                raise TaskError(name, value, "must be a function (or a built-in name)")
        if not (callable(self.optimizer) or isinstance(self.optimizer, str)):
            raise TaskError("optimizer", self.optimizer, "must be a name or a function")
        if self.threshold is not None and not callable(self.threshold):
            raise TaskError("threshold", self.threshold, "must be a function (eta, **hp)")
        if self.threshold is not None and isinstance(self.optimizer, str):
            raise TaskError("threshold", self.threshold, "is given by the named optimiser itself")


# --- the pieces' keyword parameters, and routing grid names to them ---------------------------


def keyword_params(fn, kind: str) -> tuple[str, ...]:
    """The names of ``fn``'s parameters after its ``POSITIONAL[kind]`` positional ones (a
    wrapped function's are those of the function it wraps)."""
    if fn is None or isinstance(fn, str):
        return ()
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return ()
    named = [
        p
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return tuple(p.name for p in named[POSITIONAL[kind] :])


def route(functions: dict, names) -> dict[str, str]:
    """Which function (by kind: ``loss``, ``schedule``, ``optimizer``) takes each of ``names``:
    raises :class:`TaskError` for a name taken by two functions or by none. ``functions`` maps
    a kind to one function or a tuple of alternatives (a loss axis)."""
    takers: dict[str, list[str]] = {}
    for kind, fns in functions.items():
        for fn in fns if isinstance(fns, tuple) else (fns,):
            for name in keyword_params(fn, kind):
                if kind not in takers.setdefault(name, []):
                    takers[name].append(kind)
    out = {}
    for name in names:
        if name in ENGINE_AXES:
            continue
        kinds = takers.get(name, [])
        if len(kinds) > 1:
            raise TaskError(
                "grid",
                name,
                f"is a parameter of both the {kinds[0]} and the {kinds[1]}: rename one",
            )
        if not kinds:
            known = sorted(set(takers) | set(ENGINE_AXES))
            raise TaskError(
                "grid", name, f"is taken by no function of the task; names taken: {known}"
            )
        out[name] = kinds[0]
    return out


def pick(fn, kind: str, values: dict) -> dict:
    """The entries of ``values`` that ``fn`` takes as keyword parameters."""
    return {k: values[k] for k in keyword_params(fn, kind) if k in values}


def describe(fn) -> dict | str | None:
    """How ``config.json`` records a piece: a name as it is; a function by module, qualified
    name and the SHA-256 of its source (``None`` where the source cannot be read)."""
    if fn is None or isinstance(fn, str):
        return fn
    target = inspect.unwrap(fn) if inspect.isfunction(fn) else fn
    plain = inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)
    kind = target if plain else type(target)  # an object (a flax module) by its class
    try:
        digest = hashlib.sha256(inspect.getsource(kind).encode()).hexdigest()
    except (OSError, TypeError):
        digest = None
    return {
        "module": getattr(kind, "__module__", None),
        "qualname": getattr(kind, "__qualname__", type(target).__name__),
        "source_sha256": digest,
    }


# --- data -----------------------------------------------------------------------------------


def task_dataset(data, **builtin) -> Dataset:
    """``data`` as a :class:`~dynloss_jax.data.Dataset` (float64 inputs, one-hot labels):
    arrays are checked (shapes, finite inputs, labels) with errors naming ``data``; a name is
    loaded by :func:`~dynloss_jax.data.load_dataset` with ``builtin``'s arguments."""
    from dynloss_jax.data import load_dataset

    if isinstance(data, str):
        try:
            return load_dataset(data, **builtin)
        except ValueError as e:
            raise TaskError("data", data, str(e)) from None
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise TaskError(
            "data", data, "must be (x, labels), (x, labels, x_val, labels_val), or a name"
        )
    parts = [np.asarray(a) for a in data]
    labelled = parts[1::2]
    n_classes = 0
    for y in labelled:
        if y.ndim == 1:
            if not np.issubdtype(y.dtype, np.integer) or y.size and y.min() < 0:
                raise TaskError("data", f"labels {y.dtype}{y.shape}", "must be integers >= 0")
            n_classes = max(n_classes, int(y.max()) + 1 if y.size else 0)
        elif y.ndim == 2:
            n_classes = max(n_classes, y.shape[1])
        else:
            raise TaskError("data", f"labels of shape {y.shape}", "must be (P,) or one-hot (P, C)")
    if n_classes < 2:
        raise TaskError("data", f"{n_classes} class(es)", "needs at least 2 classes")

    def onehot(y):
        return np.eye(n_classes)[y] if y.ndim == 1 else y.astype(np.float64)

    xs = []
    for x in parts[0::2]:
        if x.ndim < 2:
            raise TaskError("data", f"x of shape {x.shape}", "must be (P, features...)")
        xs.append(x.astype(np.float64))
    ys = [onehot(y) for y in labelled]
    for x, y in zip(xs, ys, strict=True):
        try:
            check_data(x.reshape(x.shape[0], -1), y)
        except ValueError as e:
            raise TaskError("data", f"x {x.shape}, labels {y.shape}", str(e)) from None
    if len(xs) == 2 and xs[0].shape[1:] != xs[1].shape[1:]:
        raise TaskError(
            "data", f"x {xs[0].shape} and x_val {xs[1].shape}", "differ in feature shape"
        )
    validation = "given" if len(xs) == 2 else "none given: the training set"
    if len(xs) == 1:
        xs, ys = xs * 2, ys * 2
    info = dict(
        name="arrays",
        n_train=int(xs[0].shape[0]),
        n_val=int(xs[1].shape[0]),
        n_features=int(np.prod(xs[0].shape[1:])),
        feature_shape=list(xs[0].shape[1:]),
        n_classes=int(n_classes),
        validation=validation,
        sha256=hashlib.sha256(
            b"".join(np.ascontiguousarray(a).tobytes() for a in data)
        ).hexdigest(),
    )
    return Dataset(xs[0], ys[0], xs[1], ys[1], info)


# --- model ----------------------------------------------------------------------------------


def task_model(model, x_example, n_classes: int, dtype: str) -> FlatModel:
    """``model`` (a flax linen module, a :class:`FlatModel` or an ``(init, apply)`` pair) seen
    through its flat parameter vector, initialised from a key on inputs shaped like
    ``x_example`` (one point); its output must be ``(points, n_classes)``, else a
    :class:`TaskError` naming ``model``."""
    x = np.zeros((1, *np.shape(x_example)), dtype)
    if _is_nnx(model):
        raise TaskError(
            "model",
            model,
            "is an nnx module already made: pass dynloss_jax.task.nnx_model(lambda rngs: "
            "YourModule(..., rngs=rngs)), so that each seed initialises its own",
        )
    if isinstance(model, FlatModel):
        flat = model
    else:
        if hasattr(model, "init") and hasattr(model, "apply") and not isinstance(model, tuple):
            module = model

            def init_params(key):
                return module.init(key, x)

            def apply_params(params, x_in):
                return module.apply(params, x_in)
        elif isinstance(model, (tuple, list)) and len(model) == 2 and all(map(callable, model)):
            init_params, apply_params = model
        else:
            raise TaskError(
                "model", model, "must be a flax module, a FlatModel, an (init, apply) pair or None"
            )
        try:
            shapes = jax.eval_shape(init_params, jax.random.key(0))
        except Exception as e:  # flax names no setting: say which one
            raise TaskError(
                "model", model, f"cannot be initialised on inputs {x.shape}: {e}"
            ) from e
        # the parameters live in the run's dtype whatever the module declares (flax's default
        # param_dtype is float32): the flat vector, and every leaf it unravels to, is ``dtype``
        _, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, dtype), shapes))
        leaves = jax.tree.leaves(shapes)

        def init_fn(key):
            return ravel_pytree(init_params(key))[0].astype(dtype)

        def apply_fn(w_N, x_in):
            return apply_params(unravel(w_N), x_in.astype(dtype))

        flat = FlatModel(
            init_fn,
            apply_fn,
            sum(int(np.prod(s.shape)) for s in leaves),
            unravel,
            tuple(tuple(s.shape) for s in leaves),
        )
    try:
        out = jax.eval_shape(flat.apply, jax.ShapeDtypeStruct((flat.n_params,), dtype), x)
    except Exception as e:
        raise TaskError("model", model, f"cannot be applied to inputs {x.shape}: {e}") from e
    if out.shape != (1, n_classes):
        raise TaskError(
            "model",
            model,
            f"gives outputs of shape {out.shape[1:]} per point, the data has {n_classes} classes",
        )
    return flat


def _is_nnx(model) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, nnx.Module)


def nnx_model(factory) -> tuple:
    """A flax nnx module as an ``(init, apply)`` pair for a :class:`Task`: ``factory(rngs)``
    builds the module (``lambda rngs: MLP(2, 3, rngs=rngs)``); ``init(key)`` builds it with
    ``nnx.Rngs(key)`` and returns its ``nnx.Param`` state, ``apply(params, x)`` merges them back
    and calls it. Other state (batch statistics, ...) stays as first built: a model of the loss
    landscape has none."""
    from flax import nnx

    graphdef, _, rest = nnx.split(nnx.eval_shape(lambda: factory(nnx.Rngs(0))), nnx.Param, ...)

    def init(key):
        return nnx.state(factory(nnx.Rngs(key)), nnx.Param)

    def apply(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    return init, apply


# --- checks of the functions, before anything is compiled --------------------------------------


def check_loss(loss, n_points: int, n_classes: int, hp: dict, dtype: str) -> None:
    """Raises :class:`TaskError` naming the loss unless it returns a float scalar."""
    logits = jax.ShapeDtypeStruct((n_points, n_classes), dtype)
    gamma = jax.ShapeDtypeStruct((n_classes,), dtype)
    try:
        out = jax.eval_shape(lambda a, b, g: loss(a, b, g, **hp), logits, logits, gamma)
    except Exception as e:
        raise TaskError("loss", loss, f"fails on logits ({n_points}, {n_classes}): {e}") from e
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise TaskError(
            "loss",
            loss,
            f"must return a float scalar, returned {getattr(out, 'dtype', type(out))}"
            f"{getattr(out, 'shape', '')}",
        )


def check_schedule_fn(schedule, n_classes: int, hp: dict) -> None:
    """Raises :class:`TaskError` naming the schedule unless it returns C floats."""
    step = jax.ShapeDtypeStruct((), jnp.int32)
    try:
        out = jax.eval_shape(lambda t: schedule(t, n_classes, **hp), step)
    except Exception as e:
        raise TaskError("schedule", schedule, f"fails at a step: {e}") from e
    if getattr(out, "shape", None) != (n_classes,) or not jnp.issubdtype(out.dtype, jnp.floating):
        raise TaskError(
            "schedule",
            schedule,
            f"must return {n_classes} float weights (one per class), returned "
            f"{getattr(out, 'dtype', type(out))}{getattr(out, 'shape', '')}",
        )
