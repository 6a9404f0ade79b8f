"""Full-batch gradient descent on a dynamical loss, compiled as one program over many runs.

Per run the program is

    chunk  = scan over measurement intervals (``eig_every`` steps, or ``record_every`` if off)
    interval: measure λ1, λ2, λ_min by warm-started Lanczos at the interval's first step, then
              scan over record blocks (``record_every`` steps)
    block:  record loss, static loss, train/validation accuracy and Γ at the block's first
            step, then scan over its GD steps

so there is no ``lax.cond`` on the step (under vmap both branches would run). A run is described
by static :class:`RunSpec` (shapes, loop lengths, the loss) and swept :class:`Hyper` arrays
(η, A, T, seed), which are mapped over runs: vmapped in blocks of ``batch_size`` runs and mapped
sequentially over blocks (``lax.map``), and split over devices with ``shard_map``. On a CPU a
sequential map per core is fastest; on a GPU one vmap over all runs (see ``strategy.py``).

A run whose loss or parameters become non-finite is frozen at its last finite parameters and
flagged (``diverged``, ``diverged_step``); its later records are NaN and the other runs of the
program are untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from dynloss_jax import eig, instability
from dynloss_jax.data import check_data
from dynloss_jax.losses import STATIC_OF, get_loss
from dynloss_jax.model import flat_model
from dynloss_jax.schedule import check_schedule, gamma

N_TOP = 2  # λ1, λ2


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything static about a group of runs: changing any field recompiles."""

    loss: str
    width: int
    n_steps: int
    n_classes: int = 3
    depth: int = 1
    init: str = "glorot"
    dtype: str = "float64"
    record_every: int = 1
    eig_every: int = 0  # 0: no Hessian tracking
    num_matvecs: int = 16
    static_last_period: bool = False

    def __post_init__(self):
        get_loss(self.loss)  # ValueError for an unknown name
        for name in ("width", "n_steps", "n_classes", "depth", "record_every", "num_matvecs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eig_every < 0 or self.eig_every % self.record_every:
            raise ValueError(f"eig_every must be 0 or a multiple of record_every "
                             f"({self.record_every}), got {self.eig_every}")
        if self.n_steps % self.interval:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of {self.interval}")

    @property
    def interval(self) -> int:
        return self.eig_every or self.record_every

    @property
    def model(self):
        return flat_model(self.width, self.n_classes, self.depth, self.init, self.dtype)


class Hyper(NamedTuple):
    """Swept values of one run (or of R runs, each with a leading axis R)."""

    eta: jax.Array
    amplitude: jax.Array
    period: jax.Array  # integer
    seed: jax.Array  # integer


class Data(NamedTuple):
    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array


class State(NamedTuple):
    """Carry of one run (leading axis R when batched)."""

    w_N: jax.Array
    step: jax.Array
    eig_vectors_KxN: jax.Array  # warm start for the next Lanczos
    eig_key: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array  # −1 while finite
    detector: instability.DetectorState


class Record(NamedTuple):
    """Per-run metrics every ``record_every`` steps, measured at parameters w_t."""

    loss: jax.Array  # the dynamical loss F_t(w_t) that GD minimises at step t
    static_loss: jax.Array
    train_acc: jax.Array
    val_acc: jax.Array
    gamma_C: jax.Array


class EigRecord(NamedTuple):
    """Hessian spectrum of F_t at w_t every ``eig_every`` steps."""

    lam_K: jax.Array  # λ1 ≥ λ2
    lam_min: jax.Array
    residual_K: jax.Array
    residual_min: jax.Array


class Final(NamedTuple):
    loss: jax.Array
    static_loss: jax.Array
    train_acc: jax.Array
    val_acc: jax.Array


def _accuracy(logits_PxC, y_PxC):
    hits = jnp.argmax(logits_PxC, -1) == jnp.argmax(y_PxC, -1)
    return jnp.mean(hits.astype(logits_PxC.dtype))


def _gamma_at(spec: RunSpec, step, hyper: Hyper):
    static_after = spec.n_steps - hyper.period if spec.static_last_period else None
    return gamma(step, n_classes=spec.n_classes, amplitude=hyper.amplitude, period=hyper.period,
                 static_after=static_after)


def _loss_of_w(spec: RunSpec, w_N, gamma_C, x, y):
    logits = spec.model.apply(w_N, x)
    return get_loss(spec.loss)(logits, y, gamma_C), logits


def init_state(spec: RunSpec, hyper: Hyper) -> State:
    """Initial state of one run: network initialised from ``key(seed)``."""
    init_key, eig_key = jax.random.split(jax.random.key(hyper.seed))
    w = spec.model.init(init_key)
    dtype = w.dtype
    return State(
        w_N=w,
        step=jnp.zeros((), jnp.int32),
        eig_vectors_KxN=jnp.zeros((N_TOP, w.shape[0]), dtype),
        eig_key=jax.random.key_data(eig_key),  # raw uint32, so checkpoints are plain arrays
        diverged=jnp.zeros((), bool),
        diverged_step=jnp.full((), -1, jnp.int32),
        detector=instability.detector_init(dtype),
    )


def _gd_step(spec: RunSpec, hyper: Hyper, data: Data, state: State, gamma_C):
    """One GD step w_{t+1} = w_t − η ∇F_t(w_t) at Γ = ``gamma_C``.

    Returns ``(state, loss_seen, logits_PxC)`` where ``loss_seen`` is F_t(w_t), NaN once the run
    has diverged. Only what every step needs is computed here; metrics read from the logits are
    computed by the caller at record steps.
    """
    t = state.step
    (loss, logits), grad = jax.value_and_grad(
        functools.partial(_loss_of_w, spec), has_aux=True
    )(state.w_N, gamma_C, data.x_train, data.y_train)
    opt = optax.sgd(hyper.eta)
    updates, _ = opt.update(grad, opt.init(state.w_N))
    w_new = optax.apply_updates(state.w_N, updates)
    # One fused reduction instead of isfinite over N then all(): Σ 0·w is 0 when every w is
    # finite and NaN otherwise, so the sum below is finite iff the loss and all of w_new are.
    bad = ~jnp.isfinite(loss + jnp.sum(w_new * 0))
    diverged = state.diverged | bad
    nan = jnp.full((), jnp.nan, loss.dtype)
    loss_seen = jnp.where(state.diverged | ~jnp.isfinite(loss), nan, loss)
    state = state._replace(
        w_N=jnp.where(diverged, state.w_N, w_new),
        step=t + 1,
        diverged=diverged,
        diverged_step=jnp.where(bad & ~state.diverged, t, state.diverged_step),
        detector=instability.detector_update(state.detector, loss_seen, t),
    )
    return state, loss_seen, logits


def _record_block(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    """``record_every`` GD steps; the record holds the metrics at the block's first step.

    The first step is peeled off the scan so that static loss and accuracies are computed from
    its logits only, not at every step.
    """
    steps_B = state.step + jnp.arange(spec.record_every, dtype=state.step.dtype)
    gamma_BxC = jax.vmap(lambda t: _gamma_at(spec, t, hyper))(steps_B)
    val_acc = _accuracy(spec.model.apply(state.w_N, data.x_val), data.y_val)
    was_diverged = state.diverged
    state, loss, logits = _gd_step(spec, hyper, data, state, gamma_BxC[0])
    nan = jnp.full((), jnp.nan, loss.dtype)
    static = get_loss(STATIC_OF[spec.loss])(logits, data.y_train, gamma_BxC[0])
    record = Record(
        loss=loss,
        static_loss=jnp.where(jnp.isnan(loss), nan, static),
        train_acc=jnp.where(was_diverged, nan, _accuracy(logits, data.y_train)),
        val_acc=jnp.where(was_diverged, nan, val_acc),
        gamma_C=gamma_BxC[0],
    )
    if spec.record_every > 1:
        state, _ = jax.lax.scan(
            lambda s, g: (_gd_step(spec, hyper, data, s, g)[0], None), state, gamma_BxC[1:]
        )
    return state, record


def measure(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    """Lanczos on the Hessian of F_t at w_t, warm-started from the last measurement."""
    g = _gamma_at(spec, state.step, hyper)

    def f(w):
        return _loss_of_w(spec, w, g, data.x_train, data.y_train)[0]

    def matvec(v):
        return eig.hvp(f, state.w_N, v)

    v0 = jnp.sum(state.eig_vectors_KxN, axis=0)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.eig_key), state.step)
    res = eig.lanczos(matvec, v0, key, num_matvecs=spec.num_matvecs, k=N_TOP)
    vectors = jnp.nan_to_num(res.vectors_KxN)
    record = EigRecord(res.top_K, res.lam_min, res.residual_K, res.residual_min)
    return state._replace(eig_vectors_KxN=vectors), record


def _interval(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    if spec.eig_every:
        state, eig_record = measure(spec, hyper, data, state)
    else:
        eig_record = None
    state, records = jax.lax.scan(
        lambda s, _: _record_block(spec, hyper, data, s), state, None,
        length=spec.interval // spec.record_every,
    )
    return state, (records, eig_record)


def advance_one(spec: RunSpec, n_steps: int, state: State, hyper: Hyper, data: Data):
    """Runs ``n_steps`` (a multiple of ``spec.interval``) GD steps of one run.

    Returns ``(state, records, eig_records)`` with records stacked over n_steps/record_every and
    eig_records over n_steps/eig_every (``None`` when tracking is off).
    """
    if data.y_train.shape[-1] != spec.n_classes or data.y_val.shape[-1] != spec.n_classes:
        raise ValueError(f"labels have {data.y_train.shape[-1]} classes, the run "
                         f"{spec.n_classes}")
    state, (records, eig_records) = jax.lax.scan(
        lambda s, _: _interval(spec, hyper, data, s), state, None,
        length=n_steps // spec.interval,
    )
    records = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), records)
    return state, records, eig_records


def evaluate(spec: RunSpec, state: State, hyper: Hyper, data: Data) -> Final:
    """Loss and accuracies of the current parameters (at Γ of the current step)."""
    g = _gamma_at(spec, state.step, hyper)
    loss, logits = _loss_of_w(spec, state.w_N, g, data.x_train, data.y_train)
    static = get_loss(STATIC_OF[spec.loss])(logits, data.y_train, g)
    val_acc = _accuracy(spec.model.apply(state.w_N, data.x_val), data.y_val)
    nan = jnp.full((), jnp.nan, loss.dtype)

    def mask(v):
        return jnp.where(state.diverged, nan, v)

    return Final(mask(loss), mask(static), mask(_accuracy(logits, data.y_train)), mask(val_acc))


def _over_runs(fn, batch_size: int, mesh: Mesh | None):
    """Maps ``fn(*per_run_args, data)`` over the leading axis of every per-run argument.

    ``batch_size`` runs are vmapped together and blocks are mapped sequentially (``lax.map``);
    0 vmaps all runs at once, 1 runs them one after another. With a ``mesh`` the runs are first
    split over its devices (axis ``"runs"``) with ``shard_map``.
    """

    def local(*args):
        *per_run, data = args
        n_runs = jax.tree.leaves(per_run)[0].shape[0]
        if batch_size == 0 or batch_size >= n_runs:
            return jax.vmap(lambda *a: fn(*a, data))(*per_run)
        return jax.lax.map(lambda a: fn(*a, data), tuple(per_run),
                           batch_size=None if batch_size == 1 else batch_size)

    if mesh is None:
        return local

    def sharded(*args):
        n_per_run = len(args) - 1
        spec_runs = PartitionSpec("runs")
        return jax.shard_map(
            local, mesh=mesh, in_specs=(spec_runs,) * n_per_run + (PartitionSpec(),),
            out_specs=spec_runs, check_vma=False,
        )(*args)

    return sharded


@functools.lru_cache(maxsize=64)
def compiled(spec: RunSpec, n_steps: int, batch_size: int = 0, mesh: Mesh | None = None):
    """The jitted programs of a group of runs: ``init``, ``advance`` (n_steps) and ``evaluate``.

    Cached on the static arguments, so a second call with new hyperparameter values reuses the
    compiled program.
    """
    if n_steps < 1 or n_steps % spec.interval:
        raise ValueError(f"n_steps must be a positive multiple of {spec.interval}, got {n_steps}")
    init = jax.jit(_over_runs(lambda h, d: init_state(spec, h), batch_size, mesh))
    advance = jax.jit(_over_runs(
        lambda s, h, d: advance_one(spec, n_steps, s, h, d), batch_size, mesh))
    final = jax.jit(_over_runs(lambda s, h, d: evaluate(spec, s, h, d), batch_size, mesh))
    return init, advance, final


def make_hyper(eta, amplitude, period, seed, dtype="float64") -> Hyper:
    """Stacks per-run values (1-D, equal length R) into a :class:`Hyper` of NumPy arrays.

    Raises ``ValueError`` for η ≤ 0 or non-finite, A < 1, T < 1 or not an integer, seed < 0.
    """
    check_schedule(n_classes=1, amplitude=amplitude, period=period)
    eta_a, seed_a = np.asarray(eta, dtype=float), np.asarray(seed)
    if not np.all(np.isfinite(eta_a) & (eta_a > 0)):
        raise ValueError(f"eta must be finite and > 0, got {eta!r}")
    if not (np.issubdtype(seed_a.dtype, np.integer) and np.all(seed_a >= 0)):
        raise ValueError(f"seed must be integers >= 0, got {seed!r}")
    return Hyper(
        eta=np.asarray(eta, dtype=dtype),
        amplitude=np.asarray(amplitude, dtype=dtype),
        period=np.asarray(period, dtype=np.int32),
        seed=np.asarray(seed, dtype=np.int32),
    )


def make_data(x_train, y_train, x_val, y_val, dtype="float64") -> Data:
    """Raises ``ValueError`` unless x are (P, D), y one-hot (P, C), with D and C shared."""
    check_data(x_train, y_train)
    check_data(x_val, y_val)
    if np.shape(x_train)[1] != np.shape(x_val)[1] or np.shape(y_train)[1] != np.shape(y_val)[1]:
        raise ValueError(f"train and validation data differ in shape: x {np.shape(x_train)} vs "
                         f"{np.shape(x_val)}, y {np.shape(y_train)} vs {np.shape(y_val)}")
    return Data(*(jnp.asarray(a, dtype=dtype) for a in (x_train, y_train, x_val, y_val)))
