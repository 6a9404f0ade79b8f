"""Training on a dynamical loss, compiled as one program over many runs.

Per run the program is

    chunk  = scan over the outermost measurement blocks
    [spectrum levels: every ``trace_every`` / ``density_every`` steps (each a multiple of the
              one below), measure the trace / spectral density, then scan over the next level]
    interval: measure λ1, λ2, λ_min (and, with ``layer_sharpness``, each block's λ1; with
              ``class_split``, each tracked vector's class split and its cosines with the
              class gradients; with ``ggn_ntk``, the top of the Gauss–Newton matrix and of
              the NTK) by warm-started Lanczos at the interval's first step, then scan
              over record blocks (``record_every`` steps); the interval is ``eig_every`` steps,
              or ``record_every``
    block:  record loss, static loss, train/validation accuracy and Γ (with
            ``class_records``, each class's losses, accuracies and gradient norm) at the
            block's first step, then scan over its optimiser steps

so there is no ``lax.cond`` on the step (under vmap both branches would run). A step is the
update of ``RunSpec.optimizer`` (optax; full-batch GD by default, its state in the carry) from
the gradient over the full batch or, with ``batch_points``, over a mini-batch drawn from
(seed, step) (:mod:`dynloss_jax.objective`); the recorded loss and every Hessian quantity
(:mod:`dynloss_jax.tracking`) are of the full-batch loss — for adam and rmsprop of the
preconditioned Hessian P^{-1/2} H P^{-1/2} (:func:`~dynloss_jax.objective.hessian_operator`). A
run is described by static :class:`~dynloss_jax.spec.RunSpec` (shapes, loop lengths, the loss,
the optimiser) and swept :class:`~dynloss_jax.spec.Hyper` arrays (η, A, T, seed, the optimiser's
hyperparameters, and in a padded program the run's loss member and width index), which are
mapped over runs: vmapped in blocks of ``batch_size`` runs and mapped sequentially over blocks
(``lax.map``), and split over devices with ``shard_map``, as a
:class:`~dynloss_jax.strategy.Strategy` lays them out. On a CPU a sequential map per core is
fastest; on a GPU one vmap over all runs (see ``strategy.py``).

A run whose loss or parameters become non-finite is frozen at its last finite parameters and
flagged (``diverged``, ``diverged_step``); its later records (λ included) are NaN and the other
runs of the program are untouched. Every record carries the step it was measured at.

**Runs of different lengths in one program.** With ``Hyper.max_steps`` (per run; from
``SweepConfig.steps_eta``: steps_eta/η steps, so that runs of every η share a program) a run
stops when it reaches its own limit, as a run with ``stop_at_onset`` stops at its onset: the
intervals run in a ``lax.while_loop`` that ends when the run is done (:func:`_finished`), its
later records are NaN and ``stopped_step`` says where it stopped. A run equals the same run in
a program of its own length to rounding (``tests/test_onset.py``). Under vmap the loop runs
until the last run of the batch is done, the others masked; mapped one after another (the CPU
default), each run's loop ends with it. ``Hyper.watch_steps`` likewise gives each run its own
watch window.

**Several widths and losses in one program.** A :class:`~dynloss_jax.spec.RunSpec` whose
``width`` is a tuple pads every run's network to the largest width; the real width of a run is
``Hyper.width_index``. The padded units start at zero (the real units are initialised exactly as
in the unpadded network, from the same key), their gradients are zero and are masked anyway, and
the Hessian measurements work in the subspace of the real parameters, so every number of a run
is that of the unpadded run to rounding (``tests/test_padding.py``). A ``loss`` tuple holds the
members of one family (the same static loss: CE with DCE, MSE with the DMSE losses); a run's
member is ``Hyper.member``, chosen by ``lax.switch`` (under vmap every member is evaluated and
one selected; the losses are a small part of a step).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynloss_jax import loop, objective, tracking
from dynloss_jax.config import N_TOP
from dynloss_jax.data import Data
from dynloss_jax.model import flat_model
from dynloss_jax.spec import Hyper, RunSpec, embed
from dynloss_jax.strategy import Strategy

ONE_DEVICE_VMAP = Strategy(batch_size=0, n_devices=1)  # the default layout of compiled()


class State(NamedTuple):
    """Carry of one run (leading axis R when batched)."""

    w_N: jax.Array
    step: jax.Array
    eig_vectors_KxN: jax.Array  # warm start for the next Lanczos
    eig_key: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array  # −1 while finite
    # The onset rule's state and what the onset needs (None without an onset rule: nothing of
    # it is compiled)
    detector: tuple | None  # the state of RunSpec.detector's rule (see instability)
    w_hist_HxN: jax.Array | None  # w_t at slot t mod H: the parameters of the last H steps
    onset_w_N: jax.Array | None  # w at the first instability (once found)
    onset_lam_K: jax.Array | None  # λ1, λ2 of F at the onset step (NaN until measured)
    onset_residual_K: jax.Array | None
    watchers: tuple  # the states of the watched rules, RunSpec.watch
    watch_w_WxN: jax.Array | None  # w at each watched rule's onset (None without any)
    watch_lam_WxK: jax.Array | None  # λ1, λ2 there (NaN until measured)
    watch_residual_WxK: jax.Array | None
    # with stop_at_onset or per-run step limits: where the run stopped, −1 while running
    stopped_step: jax.Array
    opt_state: tuple = ()  # the optax state of RunSpec.optimizer (no arrays for gd)


class Record(NamedTuple):
    """Per-run metrics every ``record_every`` steps, measured at parameters w_t."""

    step: jax.Array  # t
    loss: jax.Array  # the dynamical loss F_t(w_t) that GD minimises at step t
    static_loss: jax.Array
    train_acc: jax.Array
    val_acc: jax.Array
    gamma_C: jax.Array
    # with class_records (see tracking.class_record), each (C,)
    class_loss_C: jax.Array | None = None  # the loss minimised (Γ(t) included), class mean
    class_static_loss_C: jax.Array | None = None
    class_acc_C: jax.Array | None = None
    class_val_loss_C: jax.Array | None = None  # static loss on the validation points
    class_val_acc_C: jax.Array | None = None
    class_grad_norm_C: jax.Array | None = None  # ‖∇F^(c)‖


class Final(NamedTuple):
    loss: jax.Array
    static_loss: jax.Array
    train_acc: jax.Array
    val_acc: jax.Array


def init_state(spec: RunSpec, hyper: Hyper, data: Data | None = None) -> State:
    """Initial state of one run: network initialised from ``key(seed)``. With ``top_k`` the
    first top-K vectors are measured here, at the initial point (``data`` is then needed):
    :func:`~dynloss_jax.tracking.cold_top_k`."""
    init_key, eig_key = jax.random.split(jax.random.key(hyper.seed))
    onset = bool(spec.detectors)
    if spec.padded:
        w = embed(
            spec, hyper, lambda i: flat_model(spec.widths[i], **spec.model_args).init(init_key)
        )
    else:
        w = spec.model.init(init_key)
    dtype = w.dtype
    opt_state = objective.optimizer(spec, hyper).init(w)
    vectors = jnp.zeros((spec.n_tracked, w.shape[0]), dtype)
    if spec.top_k:
        if data is None:
            raise ValueError("init_state needs the data with top_k (its first measurement)")
        matvec = objective.hessian_operator(
            spec, hyper, data, opt_state, w, jnp.zeros((), jnp.int32)
        )
        start = jax.random.fold_in(eig_key, 1 << 29)
        vectors = tracking.cold_top_k(spec, hyper, matvec, start)
    return State(
        w_N=w,
        step=jnp.zeros((), jnp.int32),
        eig_vectors_KxN=vectors,
        eig_key=jax.random.key_data(eig_key),  # raw uint32, so checkpoints are plain arrays
        diverged=jnp.zeros((), bool),
        diverged_step=jnp.full((), -1, jnp.int32),
        detector=spec.detectors[0].init(dtype) if onset else None,
        w_hist_HxN=jnp.zeros((spec.history, w.shape[0]), dtype) if onset else None,
        onset_w_N=jnp.zeros_like(w) if onset else None,
        onset_lam_K=jnp.full((N_TOP,), jnp.nan, dtype) if onset else None,
        onset_residual_K=jnp.full((N_TOP,), jnp.nan, dtype) if onset else None,
        # None, not an empty array, without watched rules: lax.map's batching cannot reshape
        # arrays of size zero
        watchers=tuple(d.init(dtype) for d in spec.detectors[1:]),
        watch_w_WxN=jnp.zeros((len(spec.watch), w.shape[0]), dtype) if spec.watch else None,
        watch_lam_WxK=jnp.full((len(spec.watch), N_TOP), jnp.nan, dtype) if spec.watch else None,
        watch_residual_WxK=(
            jnp.full((len(spec.watch), N_TOP), jnp.nan, dtype) if spec.watch else None
        ),
        stopped_step=jnp.full((), -1, jnp.int32),
        opt_state=opt_state,
    )


def _gd_step(spec: RunSpec, hyper: Hyper, data: Data, state: State, gamma_C):
    """One optimiser step at Γ = ``gamma_C``: w_{t+1} = w_t + update(∇F_t(w_t)), the gradient
    over the full batch or, with ``batch_points``, over the step's mini-batch
    (:func:`~dynloss_jax.objective.batch_indices`).

    Returns ``(state, loss_seen, logits_PxC)`` where ``loss_seen`` is the full-batch F_t(w_t),
    NaN once the run has diverged. Only what every step needs is computed here; metrics read
    from the logits are computed by the caller at record steps.
    """
    t = state.step
    state_w = state.w_N
    w_new, opt_state, loss, logits = loop.optimizer_step(
        spec, hyper, data, state.w_N, state.opt_state, t, gamma_C
    )
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
        opt_state=jax.tree.map(
            lambda old, new: jnp.where(diverged, old, new), state.opt_state, opt_state
        ),
    )
    if spec.detectors:
        state = _watch(spec, state, loss_seen, t, w_before=state_w)
    return state, loss_seen, logits


def _watch(spec: RunSpec, state: State, loss_seen, t, w_before):
    """The onset rules' update at step ``t`` from the loss seen there, keeping ``w_before``
    (w_t) in the parameter history so that an onset's parameters can be read back."""
    history = spec.history
    w_hist = state.w_hist_HxN.at[t % history].set(w_before)
    rules = spec.detectors
    detector = rules[0].update(state.detector, loss_seen, t)
    found = (detector.onset >= 0) & (state.detector.onset < 0)
    watchers = tuple(
        d.update(ws, loss_seen, t) for d, ws in zip(rules[1:], state.watchers, strict=True)
    )
    watch_w = state.watch_w_WxN
    for i, (new, old) in enumerate(zip(watchers, state.watchers, strict=True)):
        hit = (new.onset >= 0) & (old.onset < 0)
        watch_w = watch_w.at[i].set(jnp.where(hit, w_hist[new.onset % history], watch_w[i]))
    return state._replace(
        detector=detector,
        w_hist_HxN=w_hist,
        onset_w_N=jnp.where(found, w_hist[detector.onset % history], state.onset_w_N),
        watchers=watchers,
        watch_w_WxN=watch_w,
    )


def _record_block(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    """``record_every`` GD steps; the record holds the metrics at the block's first step.

    The first step is peeled off the scan so that static loss and accuracies are computed from
    its logits only, not at every step.
    """
    steps_B = state.step + jnp.arange(spec.record_every, dtype=state.step.dtype)
    gamma_BxC = jax.vmap(lambda t: objective.gamma_at(spec, t, hyper))(steps_B)
    w_first = state.w_N
    val_logits = spec.model.apply(state.w_N, data.x_val)
    val_acc = objective.accuracy(val_logits, data.y_val)
    was_diverged = state.diverged
    state, loss, logits = _gd_step(spec, hyper, data, state, gamma_BxC[0])
    nan = jnp.full((), jnp.nan, loss.dtype)
    static = objective.static_loss(spec, hyper, logits, data.y_train)
    record = Record(
        step=steps_B[0],
        loss=loss,
        static_loss=jnp.where(jnp.isnan(loss), nan, static),
        train_acc=jnp.where(was_diverged, nan, objective.accuracy(logits, data.y_train)),
        val_acc=jnp.where(was_diverged, nan, val_acc),
        gamma_C=gamma_BxC[0],
    )
    if spec.class_records:
        classes = tracking.class_record(
            spec, hyper, data, w_first, gamma_BxC[0], logits, val_logits
        )
        record = record._replace(**tracking.nan_if(was_diverged, classes))
    if spec.record_every > 1:
        state, _ = jax.lax.scan(
            lambda s, g: (_gd_step(spec, hyper, data, s, g)[0], None), state, gamma_BxC[1:]
        )
    return state, record


def measure_onset(spec: RunSpec, hyper: Hyper, data: Data, state: State) -> State:
    """λ1, λ2 (and residuals) of F at the onset step t0, at the parameters w_{t0} of that step,
    from ``onset_matvecs`` Lanczos steps — once, the first time it is called after the detector
    confirmed the onset (:func:`dynloss_jax.tracking.measure_onset`, a ``lax.cond``: run it
    mapped sequentially, see :func:`compiled_onset`). Not interpolated from the tracking
    measurements, so the values do not depend on ``eig_every``. The same for each watched
    rule's onset."""

    operator = functools.partial(objective.hessian_operator, spec, hyper, data, state.opt_state)

    def at_onset(t0, w_N, lam_K, residual_K):
        return tracking.measure_onset(
            spec, hyper, operator, state.eig_key, t0, w_N, lam_K, residual_K
        )

    lam_K, residual_K = at_onset(
        state.detector.onset, state.onset_w_N, state.onset_lam_K, state.onset_residual_K
    )
    state = state._replace(onset_lam_K=lam_K, onset_residual_K=residual_K)
    for i, ws in enumerate(state.watchers):
        lam_K, residual_K = at_onset(
            ws.onset, state.watch_w_WxN[i], state.watch_lam_WxK[i], state.watch_residual_WxK[i]
        )
        state = state._replace(
            watch_lam_WxK=state.watch_lam_WxK.at[i].set(lam_K),
            watch_residual_WxK=state.watch_residual_WxK.at[i].set(residual_K),
        )
    return state


def _finished(spec: RunSpec, hyper: Hyper, state: State):
    """Whether a run is done before the program's end: with stop_at_onset, its rule has fired
    and every watched rule too, or its watch window (``Hyper.watch_steps``, else
    ``RunSpec.watch_steps``) has passed since its own onset; with per-run step limits
    (``Hyper.max_steps``), it has reached its own."""
    done = jnp.zeros((), bool)
    if spec.stop_at_onset and spec.detectors:
        onset = state.detector.onset
        done = onset >= 0
        if spec.watch:
            window = spec.watch_steps if hyper.watch_steps is None else hyper.watch_steps
            every = done
            for ws in state.watchers:
                every = every & (ws.onset >= 0)
            done = every | (done & (state.step - onset >= window))
    if hyper.max_steps is not None:
        done = done | (state.step >= hyper.max_steps)
    return done


def _interval(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    if spec.eig_every:
        # warm-started from the last measurement; a diverged run's records are NaN (its
        # parameters are frozen, not trained)
        matvec = objective.hessian_operator(
            spec, hyper, data, state.opt_state, state.w_N, state.step
        )
        vectors, eig_record = tracking.measure(
            spec, hyper, matvec, state.step, state.eig_key, state.eig_vectors_KxN, state.diverged
        )
        state = state._replace(eig_vectors_KxN=vectors)
        if spec.ggn_ntk:
            eig_record = eig_record._replace(
                **tracking.measure_ggn_ntk(
                    spec,
                    hyper,
                    data,
                    state.w_N,
                    state.step,
                    state.eig_key,
                    vectors[0],
                    state.diverged,
                )  # fmt: skip
            )
        if spec.class_split:
            eig_record = eig_record._replace(
                **tracking.measure_classes(
                    spec, hyper, data, state.w_N, state.step, vectors, state.diverged
                )
            )
    else:
        eig_record = None
    state, records = jax.lax.scan(
        lambda s, _: _record_block(spec, hyper, data, s),
        state,
        None,
        length=spec.interval // spec.record_every,
    )
    return state, (records, eig_record)


def _level(spec: RunSpec, hyper: Hyper, data: Data, state: State, depth: int):
    """One block of spectrum level ``depth`` (its measurement, then the blocks of the level
    below), or a λ interval below the last level. The output nests one level per depth:
    ``(inner output, {kind: record})``."""
    if depth == len(spec.levels):
        return _interval(spec, hyper, data, state)
    every, kinds = spec.levels[depth]
    inner = spec.levels[depth + 1][0] if depth + 1 < len(spec.levels) else spec.interval
    matvec = objective.hessian_operator(spec, hyper, data, state.opt_state, state.w_N, state.step)
    measured = tracking.measure_spectrum(
        spec, hyper, matvec, state.w_N, state.step, kinds, state.diverged
    )
    state, out = jax.lax.scan(
        lambda s, _: _level(spec, hyper, data, s, depth + 1), state, None, length=every // inner
    )
    return state, (out, measured)


def _merge_leading(tree, k: int):
    """Merges the ``k`` leading (scan) axes of every leaf into one."""
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[k:]), tree)


def advance_one(spec: RunSpec, chunk_steps: int, state: State, hyper: Hyper, data: Data):
    """Runs ``chunk_steps`` (a multiple of ``spec.block``) optimiser steps of one run.

    Returns ``(state, records, eig_records, spectrum)``: records stacked over
    chunk_steps/record_every, eig_records over chunk_steps/eig_every (``None`` when tracking is
    off), ``spectrum`` a dict of the :class:`~dynloss_jax.tracking.DensityRecord` and
    :class:`~dynloss_jax.tracking.TraceRecord` stacks that are on (empty when none is); each
    record carries the step it was measured at.
    """
    if data.y_train.shape[-1] != spec.n_classes or data.y_val.shape[-1] != spec.n_classes:
        raise ValueError(f"labels have {data.y_train.shape[-1]} classes, the run {spec.n_classes}")
    if spec.batch_points > data.x_train.shape[0]:
        raise ValueError(
            f"batch_points ({spec.batch_points}) exceeds the {data.x_train.shape[0]} "
            "training points"
        )
    if hyper.max_steps is not None and spec.levels:
        raise ValueError("per-run step limits do not work with density_every or trace_every")
    start = state.step
    if spec.stop_at_onset or hyper.max_steps is not None:
        state, out = _until_done(spec, hyper, data, state, chunk_steps // spec.interval)
    else:
        state, out = jax.lax.scan(
            lambda s, _: _level(spec, hyper, data, s, 0),
            state,
            None,
            length=chunk_steps // spec.block,
        )
    spectra = {}
    for depth, (every, _) in enumerate(spec.levels):
        out, measured = out
        for kind, rec in measured.items():
            rec = _merge_leading(rec, depth + 1)
            steps = start + every * jnp.arange(rec.step.shape[0], dtype=start.dtype)
            spectra[kind] = rec._replace(step=steps)
    lead = len(spec.levels) + 1
    records, eig_records = out
    records = _merge_leading(records, lead + 1)
    records = records._replace(
        step=start + spec.record_every * jnp.arange(records.step.shape[0], dtype=start.dtype)
    )
    if eig_records is not None:
        eig_records = _merge_leading(eig_records, lead)
        eig_records = eig_records._replace(
            step=start + spec.interval * jnp.arange(eig_records.step.shape[0], dtype=start.dtype)
        )
    return state, records, eig_records, spectra


def _until_done(spec: RunSpec, hyper: Hyper, data: Data, state: State, n: int):
    """Up to ``n`` measurement intervals, ending after the interval in which the run is done
    (:func:`_finished`: its onset is confirmed, or it reached its own step limit). The records
    of the intervals not run are NaN (−1 for integers). A stopped run's step counter still
    moves on to the chunk's end (so every run of a program agrees on the step of each
    record); its parameters stay where it stopped, at ``stopped_step`` (a run whose limit is
    the program's length does not stop: its ``stopped_step`` stays −1 unless its onset came)."""
    start = state.step
    shapes = jax.eval_shape(lambda s: _interval(spec, hyper, data, s)[1], state)
    blank = jax.tree.map(
        lambda sd: jnp.full(
            (n, *sd.shape), jnp.nan if jnp.issubdtype(sd.dtype, jnp.floating) else -1, sd.dtype
        ),
        shapes,
    )

    def running(carry):
        i, s, _ = carry
        return (i < n) & ~_finished(spec, hyper, s)

    def body(carry):
        i, s, buffers = carry
        s, out = _interval(spec, hyper, data, s)
        return i + 1, s, jax.tree.map(lambda b, o: b.at[i].set(o), buffers, out)

    _, state, out = jax.lax.while_loop(running, body, (0, state, blank))
    early = state.step < spec.n_steps
    if spec.stop_at_onset and spec.detectors:
        early = early | (state.detector.onset >= 0)
    stopped = _finished(spec, hyper, state) & early & (state.stopped_step < 0)
    state = state._replace(
        stopped_step=jnp.where(stopped, state.step, state.stopped_step),
        step=start + n * spec.interval,
    )
    return state, out


def evaluate(spec: RunSpec, state: State, hyper: Hyper, data: Data) -> Final:
    """Loss and accuracies of the current parameters (at Γ of the current step, or of the step
    where a run stopped at its onset)."""
    g = objective.gamma_at(
        spec, jnp.where(state.stopped_step >= 0, state.stopped_step, state.step), hyper
    )
    loss, logits = objective.loss_of_w(spec, hyper, state.w_N, g, data.x_train, data.y_train)
    static = objective.static_loss(spec, hyper, logits, data.y_train)
    val_acc = objective.accuracy(spec.model.apply(state.w_N, data.x_val), data.y_val)
    nan = jnp.full((), jnp.nan, loss.dtype)

    def mask(v):
        return jnp.where(state.diverged, nan, v)

    return Final(
        mask(loss), mask(static), mask(objective.accuracy(logits, data.y_train)), mask(val_acc)
    )


@functools.lru_cache(maxsize=64)
def compiled(spec: RunSpec, chunk_steps: int, strategy: Strategy = ONE_DEVICE_VMAP):
    """The jitted programs of a group of runs: ``init``, ``advance`` (``chunk_steps`` steps)
    and ``evaluate``, each mapped over runs as ``strategy`` lays them out (default: one vmap
    on one device).

    Cached on the static arguments, so a second call with new hyperparameter values reuses the
    compiled program.
    """
    if chunk_steps < 1 or chunk_steps % spec.block:
        raise ValueError(
            f"chunk_steps must be a positive multiple of {spec.block}, got {chunk_steps}"
        )
    init = jax.jit(strategy.map_runs(lambda h, d: init_state(spec, h, d)))
    advance = jax.jit(strategy.map_runs(lambda s, h, d: advance_one(spec, chunk_steps, s, h, d)))
    final = jax.jit(strategy.map_runs(lambda s, h, d: evaluate(spec, s, h, d)))
    return init, advance, final


@functools.lru_cache(maxsize=64)
def compiled_onset(spec: RunSpec, strategy: Strategy = ONE_DEVICE_VMAP):
    """The jitted :func:`measure_onset` over the runs of ``strategy``'s devices, run after each
    chunk. Runs are mapped one after another whatever the batch size: only runs whose onset
    was just found compute anything (the ``lax.cond`` stays a branch), and the vmapped version
    of this Lanczos did not return on two CPU devices under ``shard_map``."""
    sequential = Strategy(1, strategy.n_devices)
    return jax.jit(sequential.map_runs(lambda s, h, d: measure_onset(spec, h, d, s)))
