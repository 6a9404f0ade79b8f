"""Training on a dynamical loss, compiled as one program over many runs.

Per run the program is

    chunk  = scan over the outermost measurement blocks
    [spectrum levels: every ``trace_every`` / ``density_every`` steps (each a multiple of the
              one below), measure the trace / spectral density, then scan over the next level]
    interval: measure λ1, λ2, λ_min (and, with ``layer_sharpness``, each block's λ1) by
              warm-started Lanczos at the interval's first step, then scan over record blocks
              (``record_every`` steps); the interval is ``eig_every`` steps, or ``record_every``
    block:  record loss, static loss, train/validation accuracy and Γ at the block's first
            step, then scan over its optimiser steps

so there is no ``lax.cond`` on the step (under vmap both branches would run). A step is the
update of ``RunSpec.optimizer`` (optax; full-batch GD by default, its state in the carry) from
the gradient over the full batch or, with ``batch_points``, over a mini-batch drawn from
(seed, step); the recorded loss and every Hessian quantity are of the full-batch loss — for
adam and rmsprop of the preconditioned Hessian P^{-1/2} H P^{-1/2} (:func:`_operator`). A run
is described by static :class:`RunSpec` (shapes, loop lengths, the loss, the optimiser) and
swept :class:`Hyper` arrays (η, A, T, seed, the optimiser's hyperparameters, and in a padded
program the run's loss member and width index), which are mapped over runs: vmapped in blocks
of ``batch_size`` runs and mapped sequentially over blocks (``lax.map``), and split over
devices with ``shard_map``, as a :class:`~dynloss_jax.strategy.Strategy` lays them out. On a
CPU a sequential map per core is fastest; on a GPU one vmap over all runs (see
``strategy.py``).

A run whose loss or parameters become non-finite is frozen at its last finite parameters and
flagged (``diverged``, ``diverged_step``); its later records (λ included) are NaN and the other
runs of the program are untouched. Every record carries the step it was measured at.

**Several widths and losses in one program.** A :class:`RunSpec` whose ``width`` is a tuple pads
every run's network to the largest width; the real width of a run is ``Hyper.width_index``. The
padded units start at zero (the real units are initialised exactly as in the unpadded network,
from the same key), their gradients are zero and are masked anyway, and Lanczos works in the
subspace of the real parameters (masked start vector and products, restarts over the real
coordinates in their unpadded order), so every number of a run is that of the unpadded run to
rounding (``tests/test_padding.py``). A ``loss`` tuple holds the members of one family (the same
static loss: CE with DCE, MSE with the DMSE losses); a run's member is ``Hyper.member``, chosen
by ``lax.switch`` (under vmap every member is evaluated and one selected; the losses are a
small part of a step).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynloss_jax import eig, instability, optim, spectrum
from dynloss_jax.config import N_TOP
from dynloss_jax.data import check_data
from dynloss_jax.losses import STATIC_OF, get_loss
from dynloss_jax.model import embedding, flat_model
from dynloss_jax.schedule import gamma
from dynloss_jax.strategy import Strategy

ONE_DEVICE_VMAP = Strategy(batch_size=0, n_devices=1)  # the default layout of compiled()


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything static about a group of runs: changing any field recompiles.

    ``loss`` and ``width`` may be tuples: the losses of one family and the widths of one padded
    program, each run choosing its own through ``Hyper.member`` and ``Hyper.width_index``.
    """

    loss: str | tuple[str, ...]
    width: int | tuple[int, ...]
    n_steps: int
    n_classes: int = 3
    depth: int = 1
    init: str = "glorot"
    dtype: str = "float64"
    record_every: int = 1
    eig_every: int = 0  # 0: no Hessian tracking
    num_matvecs: int = 16
    static_last_period: bool = False
    waveform: str = "triangle"  # shape of Γ over a period (schedule.WAVEFORMS)
    n_inputs: int = 2  # features of the data
    stop_at_onset: bool = False  # a run ends at its first instability
    onset_matvecs: int = 40  # Lanczos steps for λ1, λ2 at the onset step
    detector: str = instability.DEFAULT  # the onset rule (instability.get_detector)
    watch: tuple[str, ...] = ()  # further rules watched in the same run, each with its λ
    watch_steps: int = 0  # with stop_at_onset and watch: steps a run goes on after its onset
    optimizer: str = "gd"  # optim.HYPERPARAMS; its hyperparameters are Hyper.opt_hp
    batch_points: int = 0  # training points per step (0: the full batch)
    order_seed: int = -1  # seed of a random class order of Γ (−1: 0, 1, …, C−1)
    density_every: int = 0  # spectral density (SLQ) every k steps (0: off)
    density_matvecs: int = 32
    density_probes: int = 4
    trace_every: int = 0  # Hutch++ trace every k steps (0: off)
    trace_samples: int = 30
    layer_sharpness: bool = False  # λ1 of each parameter block at every eig measurement
    layer_matvecs: int = 16

    def __post_init__(self):
        for name in self.losses:
            get_loss(name)  # ValueError for an unknown name
        if not self.losses or len({STATIC_OF[name] for name in self.losses}) != 1:
            raise ValueError(f"losses of one program must share a static loss, got {self.loss!r}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be >= 1, got {self.width!r}")
        for name in ("n_steps", "n_classes", "depth", "record_every", "num_matvecs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.eig_every < 0 or self.eig_every % self.record_every:
            raise ValueError(
                f"eig_every must be 0 or a multiple of record_every "
                f"({self.record_every}), got {self.eig_every}"
            )
        optim.hyperparams(self.optimizer)  # ValueError for an unknown name
        if self.batch_points < 0:
            raise ValueError(f"batch_points must be >= 0, got {self.batch_points}")
        every = [e for e, _ in self.levels]
        for outer, inner in zip(every, [*every[1:], self.interval], strict=False):
            if outer % inner:
                raise ValueError(
                    f"density_every and trace_every must be multiples of each other and of "
                    f"{self.interval} (eig_every, or record_every without it), got "
                    f"{self.density_every}, {self.trace_every}"
                )
        for rule in (self.detector, *self.watch):
            instability.get_detector(rule)  # ValueError for an unknown rule
        if self.watch_steps < 0:
            raise ValueError(f"watch_steps must be >= 0, got {self.watch_steps}")
        if self.levels and self.stop_at_onset:
            raise ValueError("density_every and trace_every do not work with stop_at_onset")
        if self.layer_sharpness and not self.eig_every:
            raise ValueError("layer_sharpness is measured with λ1: it needs eig_every > 0")
        if self.n_steps % self.block:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of {self.block}")

    @property
    def interval(self) -> int:
        return self.eig_every or self.record_every

    @property
    def detectors(self) -> tuple[instability.Detector, ...]:
        """The run's onset rule, then the watched ones."""
        return tuple(instability.get_detector(r) for r in (self.detector, *self.watch))

    @property
    def history(self) -> int:
        """Parameter vectors kept (the current one and the steps back to the earliest onset a
        rule can confirm), so that λ can be measured at the onset step itself."""
        return max(d.lag for d in self.detectors) + 1

    @property
    def levels(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The spectrum measurements above the λ interval, outermost first: ``(every, kinds)``,
        kinds ``"trace"`` and/or ``"density"``; each ``every`` divides the one before."""
        kinds: dict[int, list[str]] = {}
        for kind, every in (("trace", self.trace_every), ("density", self.density_every)):
            if every:
                kinds.setdefault(int(every), []).append(kind)
        return tuple((e, tuple(k)) for e, k in sorted(kinds.items(), reverse=True))

    @property
    def block(self) -> int:
        """Steps of the outermost measurement level: chunks are multiples of it."""
        return self.levels[0][0] if self.levels else self.interval

    @property
    def adaptive(self) -> bool:
        """Whether λ is measured on the preconditioned Hessian P^{-1/2} H P^{-1/2}."""
        return self.optimizer in optim.ADAPTIVE

    @property
    def losses(self) -> tuple[str, ...]:
        return self.loss if isinstance(self.loss, tuple) else (self.loss,)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.width if isinstance(self.width, tuple) else (self.width,)

    @property
    def padded(self) -> bool:
        return isinstance(self.width, tuple)

    @property
    def static_loss(self) -> str:
        return STATIC_OF[self.losses[0]]

    @property
    def model_args(self) -> dict:
        return dict(
            n_classes=self.n_classes,
            depth=self.depth,
            init=self.init,
            dtype=self.dtype,
            n_inputs=self.n_inputs,
        )

    @property
    def model(self):
        """The network every run of the program evaluates (the largest width when padded)."""
        return flat_model(max(self.widths), **self.model_args)

    def positions(self, width_index: int) -> np.ndarray:
        """Where the real parameters of run width ``widths[width_index]`` sit in ``w_N``."""
        return embedding(self.widths[width_index], max(self.widths), **self.model_args)


class Hyper(NamedTuple):
    """Swept values of one run (or of R runs, each with a leading axis R)."""

    eta: jax.Array
    amplitude: jax.Array
    period: jax.Array  # integer
    seed: jax.Array  # integer
    member: jax.Array = 0  # integer: which of ``RunSpec.losses``
    width_index: jax.Array = 0  # integer: which of ``RunSpec.widths``
    opt_hp: dict | None = None  # the optimiser's hyperparameters by name (None: defaults)


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
    detector: tuple  # the state of RunSpec.detector's rule (see instability)
    w_hist_HxN: jax.Array  # w_t at slot t mod H: the parameters of the last H steps
    onset_w_N: jax.Array  # w at the first instability (once found)
    onset_lam_K: jax.Array  # λ1, λ2 of F at the onset step, at onset_w_N (NaN until measured)
    onset_residual_K: jax.Array
    watchers: tuple  # the states of the watched rules, RunSpec.watch
    watch_w_WxN: jax.Array | None  # w at each watched rule's onset (None without any)
    watch_lam_WxK: jax.Array | None  # λ1, λ2 there (NaN until measured)
    watch_residual_WxK: jax.Array | None
    stopped_step: jax.Array  # with stop_at_onset: where the run stopped, −1 while running
    opt_state: tuple = ()  # the optax state of RunSpec.optimizer (no arrays for gd)


class Record(NamedTuple):
    """Per-run metrics every ``record_every`` steps, measured at parameters w_t."""

    step: jax.Array  # t
    loss: jax.Array  # the dynamical loss F_t(w_t) that GD minimises at step t
    static_loss: jax.Array
    train_acc: jax.Array
    val_acc: jax.Array
    gamma_C: jax.Array


class EigRecord(NamedTuple):
    """Hessian spectrum of F_t at w_t every ``eig_every`` steps (NaN once the run diverged)."""

    step: jax.Array  # t
    lam_K: jax.Array  # λ1 ≥ λ2
    lam_min: jax.Array
    residual_K: jax.Array
    residual_min: jax.Array
    layer_lam_L: jax.Array | None = None  # λ1 of each parameter block (with layer_sharpness)


class DensityRecord(NamedTuple):
    """Stochastic Lanczos quadrature of the same operator every ``density_every`` steps."""

    step: jax.Array
    nodes_SxM: jax.Array  # per probe, ascending Ritz values
    weights_SxM: jax.Array  # ≥ 0, each probe's row sums to 1


class TraceRecord(NamedTuple):
    """Hutch++ trace of the same operator every ``trace_every`` steps."""

    step: jax.Array
    estimate: jax.Array
    standard_error: jax.Array


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
    return gamma(
        step,
        n_classes=spec.n_classes,
        amplitude=hyper.amplitude,
        period=hyper.period,
        static_after=static_after,
        waveform=spec.waveform,
        order_seed=None if spec.order_seed < 0 else spec.order_seed,
    )


def _opt_hp(spec: RunSpec, hyper: Hyper) -> dict:
    """The run's hyperparameters of ``spec.optimizer`` (defaults for those not given)."""
    given = hyper.opt_hp or {}
    return {k: given[k] for k in optim.HYPERPARAMS[spec.optimizer] if k in given}


def _optimizer(spec: RunSpec, hyper: Hyper) -> optax.GradientTransformation:
    return optim.make_optimizer(spec.optimizer, hyper.eta, **_opt_hp(spec, hyper))


# Random streams derived from a run's seed besides the initialisation's: fold_in tags.
BATCH_STREAM = 0x6261  # mini-batches
SPECTRUM_STREAM = 0x7370  # probes of the density and trace


def batch_indices(seed, step, n_points: int, batch_points: int):
    """The training points of step ``step`` of the run with ``seed``: ``batch_points`` distinct
    indices of ``range(n_points)``, drawn with ``fold_in(fold_in(key(seed), BATCH_STREAM), step)``
    — a pure function of (seed, step), so a resumed run draws the same batches."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), BATCH_STREAM), step)
    return jax.random.choice(key, n_points, (batch_points,), replace=False)


def _loss_of_w(spec: RunSpec, hyper: Hyper, w_N, gamma_C, x, y):
    logits = spec.model.apply(w_N, x)
    if len(spec.losses) == 1:
        return get_loss(spec.losses[0])(logits, y, gamma_C), logits
    members = [get_loss(name) for name in spec.losses]
    return jax.lax.switch(hyper.member, members, logits, y, gamma_C), logits


@functools.cache
def _padding(spec: RunSpec):
    """Static tables of a padded program, one row per width: the real parameters' mask and
    their positions in unpadded order (−1 after them)."""
    n = spec.model.n_params
    mask_WxN = np.zeros((len(spec.widths), n), bool)
    coords_WxN = np.full((len(spec.widths), n), -1, np.int32)
    for i in range(len(spec.widths)):
        pos = spec.positions(i)
        mask_WxN[i, pos] = True
        coords_WxN[i, : pos.size] = pos
    return mask_WxN, coords_WxN


def _mask(spec: RunSpec, hyper: Hyper):
    """The run's real-parameter mask (``None`` unpadded) in the parameters' dtype."""
    if not spec.padded:
        return None
    mask_WxN, _ = _padding(spec)
    return jnp.asarray(mask_WxN, spec.dtype)[hyper.width_index]


def _embed(spec: RunSpec, hyper: Hyper, real_vector):
    """``real_vector(i)`` (a vector of the unpadded network of width ``widths[i]``) for every
    width of the program, placed in the padded vector; the run's own one is returned."""
    n = spec.model.n_params
    padded = [
        jnp.zeros((n,), spec.dtype).at[spec.positions(i)].set(real_vector(i))
        for i in range(len(spec.widths))
    ]
    return jnp.stack(padded)[hyper.width_index]


def _lanczos(spec: RunSpec, hyper: Hyper, matvec, v0_N, key, num_matvecs: int):
    """Lanczos on the run's real parameters; a zero ``v0_N`` starts from the unpadded run's
    random vector."""
    if not spec.padded:
        return eig.lanczos(matvec, v0_N, key, num_matvecs=num_matvecs, k=N_TOP)
    mask = _mask(spec, hyper)
    start = _embed(
        spec, hyper, lambda i: jax.random.normal(key, (spec.positions(i).size,), spec.dtype)
    )
    v0_N = jnp.where(jnp.linalg.norm(v0_N) > 0, v0_N * mask, start)
    coords = jnp.asarray(_padding(spec)[1])[hyper.width_index]
    return eig.lanczos(
        lambda v: mask * matvec(mask * v),
        v0_N,
        key,
        num_matvecs=num_matvecs,
        k=N_TOP,
        coords_N=coords,
    )


def init_state(spec: RunSpec, hyper: Hyper) -> State:
    """Initial state of one run: network initialised from ``key(seed)``."""
    init_key, eig_key = jax.random.split(jax.random.key(hyper.seed))
    if spec.padded:
        w = _embed(
            spec, hyper, lambda i: flat_model(spec.widths[i], **spec.model_args).init(init_key)
        )
    else:
        w = spec.model.init(init_key)
    dtype = w.dtype
    return State(
        w_N=w,
        step=jnp.zeros((), jnp.int32),
        eig_vectors_KxN=jnp.zeros((N_TOP, w.shape[0]), dtype),
        eig_key=jax.random.key_data(eig_key),  # raw uint32, so checkpoints are plain arrays
        diverged=jnp.zeros((), bool),
        diverged_step=jnp.full((), -1, jnp.int32),
        detector=spec.detectors[0].init(dtype),
        w_hist_HxN=jnp.zeros((spec.history, w.shape[0]), dtype),
        onset_w_N=jnp.zeros_like(w),
        onset_lam_K=jnp.full((N_TOP,), jnp.nan, dtype),
        onset_residual_K=jnp.full((N_TOP,), jnp.nan, dtype),
        # None, not an empty array, without watched rules: lax.map's batching cannot reshape
        # arrays of size zero
        watchers=tuple(d.init(dtype) for d in spec.detectors[1:]),
        watch_w_WxN=jnp.zeros((len(spec.watch), w.shape[0]), dtype) if spec.watch else None,
        watch_lam_WxK=jnp.full((len(spec.watch), N_TOP), jnp.nan, dtype) if spec.watch else None,
        watch_residual_WxK=(
            jnp.full((len(spec.watch), N_TOP), jnp.nan, dtype) if spec.watch else None
        ),
        stopped_step=jnp.full((), -1, jnp.int32),
        opt_state=_optimizer(spec, hyper).init(w),
    )


def _gd_step(spec: RunSpec, hyper: Hyper, data: Data, state: State, gamma_C):
    """One optimiser step at Γ = ``gamma_C``: w_{t+1} = w_t + update(∇F_t(w_t)), the gradient
    over the full batch or, with ``batch_points``, over the step's mini-batch
    (:func:`batch_indices`).

    Returns ``(state, loss_seen, logits_PxC)`` where ``loss_seen`` is the full-batch F_t(w_t),
    NaN once the run has diverged. Only what every step needs is computed here; metrics read
    from the logits are computed by the caller at record steps.
    """
    t = state.step
    loss_and_grad = jax.value_and_grad(functools.partial(_loss_of_w, spec, hyper), has_aux=True)
    if spec.batch_points:
        idx = batch_indices(hyper.seed, t, data.x_train.shape[0], spec.batch_points)
        _, grad = loss_and_grad(state.w_N, gamma_C, data.x_train[idx], data.y_train[idx])
        loss, logits = _loss_of_w(spec, hyper, state.w_N, gamma_C, data.x_train, data.y_train)
    else:
        (loss, logits), grad = loss_and_grad(state.w_N, gamma_C, data.x_train, data.y_train)
    if spec.padded:
        grad = grad * _mask(spec, hyper)
    updates, opt_state = _optimizer(spec, hyper).update(grad, state.opt_state, state.w_N)
    if spec.padded:
        updates = updates * _mask(spec, hyper)
    w_new = optax.apply_updates(state.w_N, updates)
    # One fused reduction instead of isfinite over N then all(): Σ 0·w is 0 when every w is
    # finite and NaN otherwise, so the sum below is finite iff the loss and all of w_new are.
    bad = ~jnp.isfinite(loss + jnp.sum(w_new * 0))
    diverged = state.diverged | bad
    nan = jnp.full((), jnp.nan, loss.dtype)
    loss_seen = jnp.where(state.diverged | ~jnp.isfinite(loss), nan, loss)
    history = spec.history
    w_hist = state.w_hist_HxN.at[t % history].set(state.w_N)
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
    state = state._replace(
        w_N=jnp.where(diverged, state.w_N, w_new),
        step=t + 1,
        diverged=diverged,
        diverged_step=jnp.where(bad & ~state.diverged, t, state.diverged_step),
        detector=detector,
        w_hist_HxN=w_hist,
        onset_w_N=jnp.where(found, w_hist[detector.onset % history], state.onset_w_N),
        watchers=watchers,
        watch_w_WxN=watch_w,
        opt_state=jax.tree.map(
            lambda old, new: jnp.where(diverged, old, new), state.opt_state, opt_state
        ),
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
    static = get_loss(spec.static_loss)(logits, data.y_train, gamma_BxC[0])
    record = Record(
        step=steps_B[0],
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


def _operator(spec: RunSpec, hyper: Hyper, data: Data, state: State, w_N, step):
    """v ↦ H v for the Hessian of the full-batch F_step at ``w_N`` — or, for an adaptive
    optimiser, v ↦ P^{-1/2} H P^{-1/2} v with the preconditioner P of ``state``'s optimiser
    (:func:`dynloss_jax.optim.preconditioner`; the frozen-P linearisation whose λ1 meets the
    threshold of :func:`dynloss_jax.optim.stability_threshold`).

    The gradient is linearised once (``jax.linearize``), so each product replays only the
    tangent half of jvp-of-grad.
    """
    g = _gamma_at(spec, step, hyper)

    def f(w):
        return _loss_of_w(spec, hyper, w, g, data.x_train, data.y_train)[0]

    _, matvec = jax.linearize(jax.grad(f), w_N)
    if spec.adaptive:
        p = optim.preconditioner(spec.optimizer, state.opt_state, _opt_hp(spec, hyper))
        matvec = optim.preconditioned_matvec(matvec, p)
    return matvec


def _nan_if_diverged(state: State, tree):
    return jax.tree.map(lambda v: jnp.where(state.diverged, jnp.full_like(v, jnp.nan), v), tree)


@functools.cache
def layer_blocks(spec: RunSpec) -> tuple[list[str], np.ndarray]:
    """Names and 0/1 masks ``(L, N)`` of the parameter blocks (one per weight or bias array)
    of the program's network, for ``layer_sharpness``."""
    model = spec.model
    names = spectrum.block_names(model.unravel(np.zeros(model.n_params, spec.dtype)))
    return names, spectrum.block_masks(model.leaf_shapes)


def measure(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    """Lanczos on the Hessian of F_t at w_t (preconditioned for adaptive optimisers, see
    :func:`_operator`), warm-started from the last measurement; with ``layer_sharpness`` also
    λ1 of each parameter block. A diverged run's records are NaN (its parameters are frozen,
    not trained).
    """
    matvec = _operator(spec, hyper, data, state, state.w_N, state.step)
    v0 = jnp.sum(state.eig_vectors_KxN, axis=0)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.eig_key), state.step)
    res = _lanczos(spec, hyper, matvec, v0, key, spec.num_matvecs)
    vectors = jnp.nan_to_num(res.vectors_KxN)
    layer = None
    if spec.layer_sharpness:
        masks_LxN = jnp.asarray(layer_blocks(spec)[1], spec.dtype)
        if spec.padded:
            masks_LxN = masks_LxN * _mask(spec, hyper)
        layer = spectrum.layer_sharpness_of(
            matvec, masks_LxN, jax.random.fold_in(key, 1), num_matvecs=spec.layer_matvecs
        )
    record = EigRecord(
        state.step,
        *_nan_if_diverged(state, (res.top_K, res.lam_min, res.residual_K, res.residual_min)),
        layer_lam_L=None if layer is None else _nan_if_diverged(state, layer),
    )
    return state._replace(eig_vectors_KxN=vectors), record


def measure_spectrum(spec: RunSpec, hyper: Hyper, data: Data, state: State, kinds):
    """The spectral density and/or trace (``kinds``) of the operator of :func:`measure` at
    w_t: ``{"density": DensityRecord, "trace": TraceRecord}``. Probes are drawn from the run's
    seed and the step; in a padded program they live on the run's real parameters."""
    matvec = _operator(spec, hyper, data, state, state.w_N, state.step)
    mask = _mask(spec, hyper)
    if mask is not None:
        matvec = functools.partial(lambda m, mv, v: m * mv(m * v), mask, matvec)
    stream = jax.random.fold_in(jax.random.key(hyper.seed), SPECTRUM_STREAM)
    key = jax.random.fold_in(stream, state.step)
    out = {}
    if "density" in kinds:
        rho = spectrum.density_of(
            matvec,
            state.w_N,
            jax.random.fold_in(key, 0),
            num_matvecs=spec.density_matvecs,
            num_probes=spec.density_probes,
            mask_N=mask,
        )
        out["density"] = DensityRecord(state.step, *_nan_if_diverged(state, tuple(rho)))
    if "trace" in kinds:
        estimate, se = spectrum.trace_of(
            matvec,
            state.w_N,
            jax.random.fold_in(key, 1),
            num_samples=spec.trace_samples,
            mask_N=mask,
        )
        out["trace"] = TraceRecord(state.step, *_nan_if_diverged(state, (estimate, se)))
    return out


def measure_onset(spec: RunSpec, hyper: Hyper, data: Data, state: State) -> State:
    """λ1, λ2 (and residuals) of F at the onset step t0, at the parameters w_{t0} of that step,
    from ``onset_matvecs`` Lanczos steps — once, the first time it is called after the detector
    confirmed the onset (a ``lax.cond``: run it mapped sequentially, see
    :func:`compiled_onset`). Not interpolated from the tracking measurements, so the values do
    not depend on ``eig_every``. The same for each watched rule's onset."""

    def at_onset(t0, w_N, lam_K, residual_K):
        def compute(_):
            matvec = _operator(spec, hyper, data, state, w_N, t0)
            key = jax.random.fold_in(jax.random.wrap_key_data(state.eig_key), t0 + (1 << 30))
            res = _lanczos(spec, hyper, matvec, jnp.zeros_like(w_N), key, spec.onset_matvecs)
            return res.top_K, res.residual_K

        need = (t0 >= 0) & jnp.isnan(lam_K[0])
        return jax.lax.cond(need, compute, lambda _: (lam_K, residual_K), None)

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


def _finished(spec: RunSpec, state: State):
    """With stop_at_onset: the run's rule has fired and every watched rule too, or
    ``watch_steps`` steps have passed since the run's own onset."""
    onset = state.detector.onset
    done = onset >= 0
    if spec.watch:
        every = done
        for ws in state.watchers:
            every = every & (ws.onset >= 0)
        done = every | (done & (state.step - onset >= spec.watch_steps))
    return done


def _interval(spec: RunSpec, hyper: Hyper, data: Data, state: State):
    if spec.eig_every:
        state, eig_record = measure(spec, hyper, data, state)
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
    measured = measure_spectrum(spec, hyper, data, state, kinds)
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
    off), ``spectrum`` a dict of the :class:`DensityRecord` and :class:`TraceRecord` stacks
    that are on (empty when none is); each record carries the step it was measured at.
    """
    if data.y_train.shape[-1] != spec.n_classes or data.y_val.shape[-1] != spec.n_classes:
        raise ValueError(f"labels have {data.y_train.shape[-1]} classes, the run {spec.n_classes}")
    if spec.batch_points > data.x_train.shape[0]:
        raise ValueError(
            f"batch_points ({spec.batch_points}) exceeds the {data.x_train.shape[0]} "
            "training points"
        )
    start = state.step
    if spec.stop_at_onset:
        state, out = _until_onset(spec, hyper, data, state, chunk_steps // spec.interval)
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


def _until_onset(spec: RunSpec, hyper: Hyper, data: Data, state: State, n: int):
    """Up to ``n`` measurement intervals, ending after the interval in which the onset is
    confirmed. The records of the intervals not run are NaN (−1 for integers). A stopped run's
    step counter still moves on to the chunk's end (so every run of a program agrees on the
    step of each record); its parameters stay where it stopped, at ``stopped_step``."""
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
        return (i < n) & ~_finished(spec, s)

    def body(carry):
        i, s, buffers = carry
        s, out = _interval(spec, hyper, data, s)
        return i + 1, s, jax.tree.map(lambda b, o: b.at[i].set(o), buffers, out)

    _, state, out = jax.lax.while_loop(running, body, (0, state, blank))
    stopped = _finished(spec, state) & (state.stopped_step < 0)
    state = state._replace(
        stopped_step=jnp.where(stopped, state.step, state.stopped_step),
        step=start + n * spec.interval,
    )
    return state, out


def evaluate(spec: RunSpec, state: State, hyper: Hyper, data: Data) -> Final:
    """Loss and accuracies of the current parameters (at Γ of the current step, or of the step
    where a run stopped at its onset)."""
    g = _gamma_at(spec, jnp.where(state.stopped_step >= 0, state.stopped_step, state.step), hyper)
    loss, logits = _loss_of_w(spec, hyper, state.w_N, g, data.x_train, data.y_train)
    static = get_loss(spec.static_loss)(logits, data.y_train, g)
    val_acc = _accuracy(spec.model.apply(state.w_N, data.x_val), data.y_val)
    nan = jnp.full((), jnp.nan, loss.dtype)

    def mask(v):
        return jnp.where(state.diverged, nan, v)

    return Final(mask(loss), mask(static), mask(_accuracy(logits, data.y_train)), mask(val_acc))


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
    init = jax.jit(strategy.map_runs(lambda h, d: init_state(spec, h)))
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


def make_hyper(
    *,
    eta,
    amplitude,
    period,
    seed,
    member=None,
    width_index=None,
    opt_hp=None,
    dtype="float64",
) -> Hyper:
    """Per-run values (1-D, equal length R), by name, as a :class:`Hyper` of NumPy arrays;
    ``member`` and ``width_index`` (for tuple losses and widths of :class:`RunSpec`) default to 0.
    ``opt_hp`` maps optimiser hyperparameter names (``beta``, ``b1``, …) to a value per run or
    one shared value (broadcast).

    Values are not validated here: :meth:`dynloss_jax.SweepConfig.validate` does that once.
    """
    arrays = Hyper(
        eta=np.asarray(eta, dtype=dtype),
        amplitude=np.asarray(amplitude, dtype=dtype),
        period=np.asarray(period, dtype=np.int32),
        seed=np.asarray(seed, dtype=np.int32),
        member=np.zeros(np.shape(seed), np.int32)
        if member is None
        else np.asarray(member, np.int32),
        width_index=(
            np.zeros(np.shape(seed), np.int32)
            if width_index is None
            else np.asarray(width_index, np.int32)
        ),
    )
    shapes = [a.shape for a in arrays[:6]]
    if len(set(shapes)) != 1 or arrays.eta.ndim != 1:
        raise ValueError(f"per-run values must be 1-D of one length, got shapes {shapes}")
    if opt_hp:
        arrays = arrays._replace(
            opt_hp={
                k: np.array(np.broadcast_to(np.asarray(v, dtype), arrays.eta.shape))
                for k, v in opt_hp.items()
            }
        )
    return arrays


def make_data(x_train, y_train, x_val, y_val, dtype="float64") -> Data:
    """Raises ``ValueError`` unless x are (P, D), y one-hot (P, C), with D and C shared."""
    check_data(x_train, y_train)
    check_data(x_val, y_val)
    if np.shape(x_train)[1] != np.shape(x_val)[1] or np.shape(y_train)[1] != np.shape(y_val)[1]:
        raise ValueError(
            f"train and validation data differ in shape: x {np.shape(x_train)} vs "
            f"{np.shape(x_val)}, y {np.shape(y_train)} vs {np.shape(y_val)}"
        )
    return Data(*(jnp.asarray(a, dtype=dtype) for a in (x_train, y_train, x_val, y_val)))
