"""Pieces for a researcher's own loop: pure ``(init, update)`` pairs, in the manner of optax and
matfree, that the compiled engine is built from too.

* :func:`optimizer_step` — one update of a run's optimiser on its dynamical loss at Γ (the
  engine's step; padding and divergence handling stay in the engine).
* :func:`trainer` — a task at one point of its grid as ``Trainer(init, update, ...)``:
  ``init(seed) -> TrainState``, ``update(state) -> (state, StepInfo)``, ``hessian(state)``,
  the operator v ↦ H v of the loss at the state's point and step, and ``loss(w, step)``, the
  loss itself (what :func:`dynloss_jax.flows.run_flows` takes, as ``loss(w, t/η)``).
* :func:`hessian_tracker` — warm-started top eigenvalues as ``Tracker(init, update)``:
  ``init(key, n_params, dtype) -> TrackerState``, ``update(state, matvec, step, threshold=None)
  -> (state, Tracked)`` with values, vectors and residuals, either λ1..λk by Lanczos from the
  sum of the last vectors (``num_matvecs`` products) or the top k by a block Krylov space of the
  last k vectors (``blocks``·k products), with ``above`` marking values over ``above``/2 × the
  threshold (c/η for GD). :func:`track` is the measurement both use, and so does the engine.

Everything is traceable: jit, vmap and scan them as you like::

    tr = trainer(task, eta=1.0, amplitude=70.0, period=5000, steps=10_000)
    tracker = hessian_tracker(k=2)

    def interval(carry, _):
        state, ts = carry
        ts, tracked = tracker.update(ts, tr.hessian(state), state.step)
        state, info = jax.lax.scan(lambda s, _: tr.update(s), state, None, length=25)
        return (state, ts), (info.loss, tracked.values)

    state = tr.init(0)
    ts = tracker.init(jax.random.key(1), state.w_N.shape[0], state.w_N.dtype)
    _, (loss, lam) = jax.jit(lambda c: jax.lax.scan(interval, c, None, length=400))((state, ts))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dynloss_jax import eig, objective
from dynloss_jax.data import Data
from dynloss_jax.spec import Hyper, RunSpec, make_hyper, real_mask


def optimizer_step(spec: RunSpec, hyper: Hyper, data: Data, w_N, opt_state, step, gamma_C):
    """One update of the run's optimiser at Γ = ``gamma_C``: the gradient of the run's loss
    over the full batch or, with ``batch_points``, over the step's mini-batch
    (:func:`~dynloss_jax.objective.batch_indices`), restricted to a padded run's real
    parameters. Returns ``(w_new_N, opt_state, loss, logits_PxC)`` with the full-batch loss
    F_t(w_t) and its logits."""
    loss_and_grad = jax.value_and_grad(
        functools.partial(objective.loss_of_w, spec, hyper), has_aux=True
    )
    if spec.batch_points:
        idx = objective.batch_indices(hyper.seed, step, data.x_train.shape[0], spec.batch_points)
        _, grad = loss_and_grad(w_N, gamma_C, data.x_train[idx], data.y_train[idx])
        loss, logits = objective.loss_of_w(spec, hyper, w_N, gamma_C, data.x_train, data.y_train)
    else:
        (loss, logits), grad = loss_and_grad(w_N, gamma_C, data.x_train, data.y_train)
    if spec.padded:
        grad = grad * real_mask(spec, hyper)
    updates, opt_state = objective.optimizer(spec, hyper).update(grad, opt_state, w_N)
    if spec.padded:
        updates = updates * real_mask(spec, hyper)
    return optax.apply_updates(w_N, updates), opt_state, loss, logits


# --- a task's training as an (init, update) pair ----------------------------------------------


class TrainState(NamedTuple):
    w_N: jax.Array
    opt_state: tuple
    step: jax.Array


class StepInfo(NamedTuple):
    loss: jax.Array  # F_t(w_t), the dynamical loss the step descends
    gamma_C: jax.Array  # Γ(t)
    logits_PxC: jax.Array


class Trainer(NamedTuple):
    init: Callable  # seed -> TrainState (the engine's initialisation of that seed)
    update: Callable  # TrainState -> (TrainState, StepInfo)
    hessian: Callable  # TrainState -> (v -> H v) of F at the state's point and step
    loss: Callable  # (w_N, step) -> F_step(w_N), full batch (e.g. for dynloss_jax.flows)
    spec: RunSpec
    hyper: Hyper
    data: Data


def trainer(task, *, steps: int, seed: int = 0, **point) -> Trainer:
    """The task at one ``point`` of its grid (``eta`` and every hyperparameter its functions
    take, ``width`` for the built-in network) as a :class:`Trainer`, checked as a sweep is
    (:class:`~dynloss_jax.task_sweep.TaskSweep`); ``steps`` is the run's length (for schedules
    that need it, e.g. a static last period) and ``seed`` draws mini-batches."""
    from dynloss_jax.task_sweep import TaskSweep

    sweep = TaskSweep.make(task, {**{k: [v] for k, v in point.items()}, "seed": [seed]},
                           steps=steps, record_every=1)  # fmt: skip
    program = sweep.programs()[0]
    spec = sweep.spec(program)
    hyper = jax.tree.map(lambda a: a[0], make_hyper(**sweep.hyper_args(program), dtype=spec.dtype))
    data = sweep.arrays()

    def init(seed) -> TrainState:
        init_key, _ = jax.random.split(jax.random.key(seed))
        w = spec.model.init(init_key)
        return TrainState(w, objective.optimizer(spec, hyper).init(w), jnp.zeros((), jnp.int32))

    def update(state: TrainState):
        g = objective.gamma_at(spec, state.step, hyper)
        w, opt_state, loss, logits = optimizer_step(
            spec, hyper, data, state.w_N, state.opt_state, state.step, g
        )
        return TrainState(w, opt_state, state.step + 1), StepInfo(loss, g, logits)

    def hessian(state: TrainState):
        return objective.hessian_operator(spec, hyper, data, state.opt_state, state.w_N, state.step)

    def loss(w_N, step):
        g = objective.gamma_at(spec, step, hyper)
        return objective.loss_of_w(spec, hyper, w_N, g, data.x_train, data.y_train)[0]

    return Trainer(init, update, hessian, loss, spec, hyper, data)


# --- warm-started Hessian tracking as an (init, update) pair ----------------------------------


class TrackerState(NamedTuple):
    vectors_KxN: jax.Array  # the last measurement's Ritz vectors (zero before the first)
    key: jax.Array  # raw key data; measurement at step t uses fold_in(key, t)


class Tracked(NamedTuple):
    values_K: jax.Array  # λ1 ≥ … ≥ λk (Ritz values: lower bounds)
    vectors_KxN: jax.Array
    residuals_K: jax.Array  # ‖H u − θ u‖: an eigenvalue lies within it
    lam_min: jax.Array  # smallest Ritz value (a bound; NaN in the block mode)
    residual_min: jax.Array
    above_K: jax.Array | None  # with ``above``: which values exceed above/2 × threshold


class Tracker(NamedTuple):
    init: Callable
    update: Callable


def track(
    matvec, vectors_KxN, key, *, k: int, num_matvecs: int, blocks: int = 0, lanczos=None,
    mask_N=None,
) -> eig.EigResult:  # fmt: skip
    """One warm-started measurement: with ``blocks`` the top k of the block Krylov space of
    ``vectors_KxN`` (``blocks``·k products; zero rows start from random vectors), else λ1..λk
    by ``num_matvecs`` Lanczos steps from the sum of ``vectors_KxN`` (random when zero);
    ``lanczos`` replaces :func:`dynloss_jax.eig.lanczos` (the engine passes a padded run's),
    ``mask_N`` restricts the block space to a coordinate subspace."""
    if blocks:
        op = matvec if mask_N is None else (lambda v: mask_N * matvec(mask_N * v))
        U0 = vectors_KxN if mask_N is None else vectors_KxN * mask_N
        res = eig.block_krylov(op, U0, key, blocks=blocks, mask_N=mask_N)
        return res._replace(
            lam_min=jnp.full_like(res.lam_min, jnp.nan),
            residual_min=jnp.full_like(res.lam_min, jnp.nan),
        )
    solve = lanczos or functools.partial(eig.lanczos)
    return solve(matvec, jnp.sum(vectors_KxN, axis=0), key, num_matvecs=num_matvecs, k=k)


def hessian_tracker(
    k: int = 2, *, num_matvecs: int = 16, blocks: int = 0, above: float | None = None
) -> Tracker:
    """Warm-started tracking of the top ``k`` eigenvalues of an operator that changes along a
    trajectory: Lanczos (``num_matvecs`` products, from the sum of the last vectors) or, with
    ``blocks`` ≥ 2, a block Krylov space of the last k vectors (``blocks``·k products; the mode
    for tracking every eigenvalue above a line). ``above`` (e.g. 1.5) marks the values above
    ``above``/2 × the ``threshold`` passed to ``update`` (2/η for GD: above c/η)."""
    if k < 1 or (not blocks and num_matvecs < k) or blocks == 1:
        raise ValueError(f"need k >= 1, num_matvecs >= k and blocks 0 or >= 2, got {k}, "
                         f"{num_matvecs}, {blocks}")  # fmt: skip

    def init(key, n_params: int, dtype, matvec=None) -> TrackerState:
        """Zero vectors (the first measurement starts cold); with ``matvec`` in the block mode,
        the top-k vectors of max(64, 8k) Lanczos steps at the start point, so that the first
        block measurements start converged (as the engine's ``top_k`` runs do)."""
        vectors = jnp.zeros((k, n_params), dtype)
        if blocks and matvec is not None:
            start = jax.random.fold_in(key, 1 << 29)
            res = eig.lanczos(matvec, vectors[0], start, num_matvecs=max(64, 8 * k), k=k)
            vectors = jnp.nan_to_num(res.vectors_KxN)
        return TrackerState(vectors, jax.random.key_data(key))

    def update(state: TrackerState, matvec, step, threshold=None):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
        res = track(matvec, state.vectors_KxN, key, k=k, num_matvecs=num_matvecs, blocks=blocks)
        flags = None
        if above is not None and threshold is not None:
            flags = res.top_K > above / 2 * threshold
        vectors = jnp.nan_to_num(res.vectors_KxN)
        out = Tracked(res.top_K, vectors, res.residual_K, res.lam_min, res.residual_min, flags)
        return state._replace(vectors_KxN=vectors), out

    return Tracker(init, update)
