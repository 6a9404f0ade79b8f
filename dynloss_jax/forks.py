"""Fork interventions: from a run's state at chosen steps t*, continue in several branches and
record each class's progress over a fixed horizon — one program, vmapped over seeds × t* ×
branches.

A branch is three numbers (:class:`Branch`), so that every branch is the same program:

* ``stay``: continue unchanged (η, Γ(t), no kick) — the unforked run, bit for bit;
* ``leave``: continue at η·r (r = 0.1 by default), so that λ1 < 2/(η·r) and the run leaves the
  edge of stability; run it for ``horizon``/r steps (:func:`forks` with ``horizon`` scaled) for
  the variant that covers the same "time" η·steps;
* ``kick``: w_{t*} + ‖δ‖ ẑ with ẑ a random unit direction, then continue at η, where
  δ = w_{t*} − m_{t*} is the **edge oscillation's displacement**, m_{t*} = (w_{t*−1} + 2w_{t*}
  + w_{t*+1})/4 the midpoint average of the unforked run, so δ = (2w_{t*} − w_{t*−1} −
  w_{t*+1})/4 = −¼ Δ²w (:func:`displacement`). For a pure period-2 zigzag w_t = c + a(−1)^t,
  δ = a(−1)^{t*} and ‖δ‖ is the amplitude ‖a‖; a smooth drift contributes only its second
  difference (O(η²‖∇²F‖‖∇F‖)). The kick moves the weights as far as the oscillation does, in a
  direction that is not the oscillation's;
* ``freeze_gamma``: continue at η with Γ frozen at Γ(t*): the landscape stops changing while
  the instability goes on, which separates the two.

Per-class progress is :func:`dynloss_jax.curvature.class_progress` of the run's static loss
(Γ ≡ 1) on the training and the validation points, recorded every ``record_every`` steps from
t* to t* + ``horizon`` (both included). Everything here is pure (scans and vmaps of a
:class:`~dynloss_jax.loop.Trainer`'s step, the engine's step); the caller jits::

    tr = trainer(Task(loss="dce"), steps=10_000, width=100, eta=1.0, amplitude=70.0,
                 period=5000)
    out = jax.jit(lambda s: forks(tr, s, steps=(4200, 9300), horizon=500))(jnp.arange(8))
    out.records.val_acc_RxC  # (seed, t*, branch, record, class)

Tests: ``tests/test_forks.py`` (stay is the unforked run bit for bit, leave with r = 1 is stay,
the kick's norm, frozen Γ against a Python loop).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynloss_jax import curvature, objective
from dynloss_jax.loop import Trainer, TrainState, optimizer_step

BRANCHES = ("stay", "leave", "kick", "freeze_gamma")
KICK_STREAM = 0x6B69  # fold_in tag of the kick directions, apart from a run's other streams


class Branch(NamedTuple):
    """One branch as numbers (each may carry a leading branch axis)."""

    eta_scale: jax.Array  # η multiplied by this
    freeze_gamma: jax.Array  # bool: Γ held at Γ(t*)
    kick: jax.Array  # the kick's norm in units of ‖δ‖ (0: no kick)


def branch(name: str, r: float = 0.1) -> Branch:
    """The :class:`Branch` of ``name`` (one of :data:`BRANCHES`); ``r`` is leave's factor."""
    table = {
        "stay": (1.0, False, 0.0),
        "leave": (r, False, 0.0),
        "kick": (1.0, False, 1.0),
        "freeze_gamma": (1.0, True, 0.0),
    }
    if name not in table:
        raise ValueError(f"unknown branch {name!r}; known: {', '.join(BRANCHES)}")
    if not r > 0:
        raise ValueError(f"leave's factor r must be > 0, got {r}")
    scale, freeze, kick = table[name]
    return Branch(jnp.asarray(scale), jnp.asarray(freeze), jnp.asarray(kick))


def branches(names=BRANCHES, r: float = 0.1) -> Branch:
    """:func:`branch` of each name, stacked on a leading axis B."""
    return jax.tree.map(lambda *a: jnp.stack(a), *(branch(n, r) for n in names))


class Start(NamedTuple):
    """Where a fork starts: the unforked run's state at t* and its parameters one step before
    and after (for the displacement δ)."""

    state: TrainState  # at t*
    w_prev_N: jax.Array  # w_{t*−1}
    w_next_N: jax.Array  # w_{t*+1}


def advance(tr: Trainer, state: TrainState, n: int) -> TrainState:
    """``n`` steps of the trainer (a ``lax.scan``; ``n`` static)."""
    if n == 0:
        return state
    return jax.lax.scan(lambda s, _: (tr.update(s)[0], None), state, None, length=n)[0]


def starts(tr: Trainer, seed, steps: tuple[int, ...]) -> Start:
    """The :class:`Start` of each t* in ``steps`` (static, ascending, each ≥ 1) for the run of
    ``seed``, by one pass of the trainer from its initialisation; leading axis T."""
    steps = tuple(int(t) for t in steps)
    if not steps or min(steps) < 1 or list(steps) != sorted(set(steps)):
        raise ValueError(f"fork steps must be distinct, ascending and >= 1, got {steps}")
    state, now, out = tr.init(seed), 0, []
    for t in steps:
        state = advance(tr, state, t - 1 - now)
        prev = state.w_N
        state = advance(tr, state, 1)
        at = state
        nxt = advance(tr, at, 1).w_N
        out.append(Start(at, prev, nxt))
        now = t
    return jax.tree.map(lambda *a: jnp.stack(a), *out)


def displacement(start: Start):
    """δ = w_{t*} − (w_{t*−1} + 2w_{t*} + w_{t*+1})/4 = (2w_{t*} − w_{t*−1} − w_{t*+1})/4, shape
    (N,): the edge oscillation's displacement of the weights (its norm is the period-2
    amplitude for a pure zigzag)."""
    w = start.state.w_N
    return (2.0 * w - start.w_prev_N - start.w_next_N) / 4.0


def kick_direction(key, n: int, dtype):
    """ẑ = z/‖z‖, z ~ N(0, I_n): a uniformly random unit direction."""
    z = jax.random.normal(key, (n,), dtype)
    return z / jnp.linalg.norm(z)


class ForkRecord(NamedTuple):
    """Per-class progress along a branch every ``record_every`` steps (R records, from t* to
    t* + horizon), static loss (Γ ≡ 1)."""

    step: jax.Array  # (R,) integer
    loss: jax.Array  # (R,) the loss the branch minimises, F at its Γ (NaN at the last record)
    train_loss_RxC: jax.Array
    train_acc_RxC: jax.Array
    val_loss_RxC: jax.Array
    val_acc_RxC: jax.Array


def _progress(tr: Trainer, w_N):
    static = objective.run_static_loss(tr.spec, tr.hyper)
    ones_C = jnp.ones((tr.spec.n_classes,), w_N.dtype)
    apply, d = tr.spec.model.apply, tr.data
    train = curvature.class_progress(apply, static, w_N, d.x_train, d.y_train, ones_C)
    val = curvature.class_progress(apply, static, w_N, d.x_val, d.y_val, ones_C)
    return train.loss_C, train.accuracy_C, val.loss_C, val.accuracy_C


def run_branch(
    tr: Trainer, start: Start, br: Branch, key, *, horizon: int, record_every: int
) -> tuple[TrainState, ForkRecord, jax.Array]:
    """One branch from one start: the kick (if any) at t*, then ``horizon`` steps of the
    trainer's optimiser at η·``eta_scale`` with Γ(t) (or Γ(t*) when frozen). Returns the final
    state, the :class:`ForkRecord` of horizon/record_every + 1 records and the kick's norm
    ‖w_kicked − w_{t*}‖ as applied. ``key`` draws the kick's direction. With the ``stay``
    branch every step is the trainer's own ``update`` (:func:`dynloss_jax.loop.optimizer_step`
    at Γ(t))."""
    if horizon < 1 or record_every < 1 or horizon % record_every:
        raise ValueError(
            f"horizon must be a positive multiple of record_every, got {horizon}, {record_every}"
        )
    spec, hyper, data = tr.spec, tr.hyper, tr.data
    state = start.state
    w0 = state.w_N
    size = br.kick * jnp.linalg.norm(displacement(start))
    kicked = w0 + size * kick_direction(key, w0.shape[0], w0.dtype)
    state = state._replace(w_N=jnp.where(br.kick != 0, kicked, w0))
    moved = jnp.linalg.norm(state.w_N - w0)
    t_star = state.step
    branch_hyper = hyper._replace(eta=hyper.eta * br.eta_scale)
    frozen_C = objective.gamma_at(spec, t_star, hyper)

    def step(s: TrainState, _):
        g = jnp.where(br.freeze_gamma, frozen_C, objective.gamma_at(spec, s.step, hyper))
        w, opt_state, loss, _ = optimizer_step(
            spec, branch_hyper, data, s.w_N, s.opt_state, s.step, g
        )
        return TrainState(w, opt_state, s.step + 1), loss

    def block(s: TrainState, _):
        progress = _progress(tr, s.w_N)
        t = s.step
        s, losses = jax.lax.scan(step, s, None, length=record_every)
        return s, (t, losses[0], *progress)

    state, (t_R, loss_R, *progress) = jax.lax.scan(
        block, state, None, length=horizon // record_every
    )
    last = _progress(tr, state.w_N)
    nan = jnp.full((1,), jnp.nan, loss_R.dtype)
    record = ForkRecord(
        jnp.append(t_R, state.step),
        jnp.concatenate([loss_R, nan]),
        *(jnp.concatenate([a, b[None]]) for a, b in zip(progress, last, strict=True)),
    )
    return state, record, moved


class Forks(NamedTuple):
    """What :func:`forks` returns; leading axes (S, T, B) = (seed, t*, branch) where marked."""

    records: ForkRecord  # (S, T, B, R[, C])
    final: TrainState  # (S, T, B, ...)
    displacement_norm: jax.Array  # (S, T): ‖δ‖ at each start
    kick_norm: jax.Array  # (S, T, B): ‖w after the kick − w_{t*}‖ (0 without a kick)


def _map(f, xs, batch_size: int):
    """``f`` over the leading axis of ``xs``: one vmap (``batch_size`` 0), or ``lax.map`` in
    vmapped blocks of ``batch_size`` (1: one after another)."""
    if batch_size == 0:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=None if batch_size == 1 else batch_size)


def forks(
    tr: Trainer,
    seeds_S,
    *,
    steps: tuple[int, ...],
    horizon: int,
    record_every: int = 10,
    names=BRANCHES,
    r: float = 0.1,
    batch_size: int = 0,
) -> Forks:
    """Every branch of ``names`` from every t* of ``steps`` of the runs of ``seeds_S`` (an
    integer array, S): :func:`starts` of each seed, then :func:`fork_from`, in one program."""
    seeds_S = jnp.asarray(seeds_S)
    st = _map(lambda seed: starts(tr, seed, steps), seeds_S, batch_size)
    return fork_from(
        tr, st, seeds_S, horizon=horizon, record_every=record_every, names=names, r=r,
        batch_size=batch_size,
    )  # fmt: skip


def fork_from(
    tr: Trainer,
    starts_SxT: Start,
    seeds_S,
    *,
    horizon: int,
    record_every: int = 10,
    names=BRANCHES,
    r: float = 0.1,
    batch_size: int = 0,
) -> Forks:
    """Every branch of ``names`` from every :class:`Start` of ``starts_SxT`` (leading axes seed
    and t*, e.g. from :func:`starts` mapped over ``seeds_S``), mapped over seeds × t* × branches:
    vmapped (``batch_size`` 0, the layout for a GPU), or in vmapped blocks of ``batch_size``
    branches (``lax.map``; 1: one after another, the fastest on a CPU, where a batched step is
    slower per run — and a branch's arithmetic is then exactly the unforked run's, so ``stay``
    reproduces it bit for bit; vmapped, batched matrix products round differently, ~1e-16).
    The kick's direction is drawn from ``fold_in(fold_in(key(seed), KICK_STREAM), t*)``, the
    same for every branch (only ``kick`` uses it). Reusing the starts, a second call gives
    e.g. the long ``leave`` variant (``horizon``/r steps) without replaying the runs."""
    brs = branches(names, r)
    n_b = len(tuple(names))
    seeds_S = jnp.asarray(seeds_S)
    n_s, n_t = starts_SxT.w_prev_N.shape[:2]
    # every (seed, t*, branch), seed major
    pairs = jax.tree.map(
        lambda a: jnp.repeat(a.reshape((n_s * n_t,) + a.shape[2:]), n_b, axis=0), starts_SxT
    )
    seed_of = jnp.repeat(seeds_S, n_t * n_b)
    pair_brs = jax.tree.map(lambda a: jnp.tile(a, (n_s * n_t,) + (1,) * (a.ndim - 1)), brs)

    def one(args):
        seed, start, br = args
        base = jax.random.fold_in(jax.random.key(seed), KICK_STREAM)
        key = jax.random.fold_in(base, start.state.step)
        return run_branch(tr, start, br, key, horizon=horizon, record_every=record_every)

    final, rec, kick = _map(one, (seed_of, pairs, pair_brs), batch_size)
    final, rec, kick = jax.tree.map(
        lambda a: a.reshape((n_s, n_t, n_b) + a.shape[1:]), (final, rec, kick)
    )
    dnorm = jax.vmap(jax.vmap(lambda s: jnp.linalg.norm(displacement(s))))(starts_SxT)
    return Forks(rec, final, dnorm, kick)
