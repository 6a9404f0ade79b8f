"""What a run minimises, as pure functions of a point: the dynamical loss F_t(w) at Γ of step t,
the step's mini-batch, the run's optimiser, and the operator v ↦ H v of F_t's Hessian at any
point (w, t).

The training engine (:mod:`dynloss_jax.engine`) steps with them; :mod:`dynloss_jax.tracking`
measures the operator, at the engine's points or at those of any other integrator of the same
run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dynloss_jax import optim
from dynloss_jax.data import Data
from dynloss_jax.losses import get_loss
from dynloss_jax.schedule import gamma
from dynloss_jax.spec import BATCH_STREAM, Hyper, RunSpec


def accuracy(logits_PxC, y_PxC):
    hits = jnp.argmax(logits_PxC, -1) == jnp.argmax(y_PxC, -1)
    return jnp.mean(hits.astype(logits_PxC.dtype))


def gamma_at(spec: RunSpec, step, hyper: Hyper):
    """Γ_C of the run at ``step`` (:func:`dynloss_jax.schedule.gamma`)."""
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


def opt_hp(spec: RunSpec, hyper: Hyper) -> dict:
    """The run's hyperparameters of ``spec.optimizer`` (defaults for those not given)."""
    given = hyper.opt_hp or {}
    return {k: given[k] for k in optim.HYPERPARAMS[spec.optimizer] if k in given}


def optimizer(spec: RunSpec, hyper: Hyper) -> optax.GradientTransformation:
    return optim.make_optimizer(spec.optimizer, hyper.eta, **opt_hp(spec, hyper))


def batch_indices(seed, step, n_points: int, batch_points: int):
    """The training points of step ``step`` of the run with ``seed``: ``batch_points`` distinct
    indices of ``range(n_points)``, drawn with ``fold_in(fold_in(key(seed), BATCH_STREAM), step)``
    — a pure function of (seed, step), so a resumed run draws the same batches."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), BATCH_STREAM), step)
    return jax.random.choice(key, n_points, (batch_points,), replace=False)


def loss_of_w(spec: RunSpec, hyper: Hyper, w_N, gamma_C, x, y):
    """``(F(w_N), logits_PxC)``: the run's loss (its member of ``spec.losses``) at Γ =
    ``gamma_C`` on the points ``x``, ``y``."""
    logits = spec.model.apply(w_N, x)
    if len(spec.losses) == 1:
        return get_loss(spec.losses[0])(logits, y, gamma_C), logits
    members = [get_loss(name) for name in spec.losses]
    return jax.lax.switch(hyper.member, members, logits, y, gamma_C), logits


def hessian_operator(spec: RunSpec, hyper: Hyper, data: Data, opt_state, w_N, step):
    """v ↦ H v for the Hessian of the full-batch F_step at ``w_N`` — or, for an adaptive
    optimiser, v ↦ P^{-1/2} H P^{-1/2} v with the preconditioner P of the optimiser state
    ``opt_state`` (:func:`dynloss_jax.optim.preconditioner`; the frozen-P linearisation whose
    λ1 meets the threshold of :func:`dynloss_jax.optim.stability_threshold`).

    The gradient is linearised once (``jax.linearize``), so each product replays only the
    tangent half of jvp-of-grad.
    """
    g = gamma_at(spec, step, hyper)

    def f(w):
        return loss_of_w(spec, hyper, w, g, data.x_train, data.y_train)[0]

    _, matvec = jax.linearize(jax.grad(f), w_N)
    if spec.adaptive:
        p = optim.preconditioner(spec.optimizer, opt_state, opt_hp(spec, hyper))
        matvec = optim.preconditioned_matvec(matvec, p)
    return matvec
