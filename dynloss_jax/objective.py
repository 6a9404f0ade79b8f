"""What a run minimises, as pure functions of a point: the dynamical loss F_t(w) at Γ of step t,
the step's mini-batch, the run's optimiser, and the operator v ↦ H v of F_t's Hessian at any
point (w, t).

The training engine (:mod:`dynloss_jax.engine`) steps with them; :mod:`dynloss_jax.tracking`
measures the operator, at the engine's points or at those of any other integrator of the same
run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from dynloss_jax import optim
from dynloss_jax.data import Data
from dynloss_jax.spec import BATCH_STREAM, Hyper, RunSpec
from dynloss_jax.task import pick


def accuracy(logits_PxC, y_PxC):
    hits = jnp.argmax(logits_PxC, -1) == jnp.argmax(y_PxC, -1)
    return jnp.mean(hits.astype(logits_PxC.dtype))


def named_values(hyper: Hyper) -> dict:
    """The run's named per-run values (``amplitude``, ``period`` and ``hyper.hp``), which the
    schedule, the loss and the optimiser take by keyword (:func:`dynloss_jax.task.pick`)."""
    named = {k: v for k, v in (("amplitude", hyper.amplitude), ("period", hyper.period))}
    return {**{k: v for k, v in named.items() if v is not None}, **(hyper.hp or {})}


def gamma_at(spec: RunSpec, step, hyper: Hyper):
    """Γ_C of the run at ``step``: ``spec.gamma_fn(step, C, **hp)`` with the hyperparameters it
    takes (the paper's: :func:`dynloss_jax.schedule.gamma` of A and T)."""
    fn = spec.gamma_fn
    return fn(step, spec.n_classes, **pick(fn, "schedule", named_values(hyper)))


def opt_hp(spec: RunSpec, hyper: Hyper) -> dict:
    """The run's hyperparameters of ``spec.optimizer`` (defaults for those not given); for a
    function optimiser, the named values it takes."""
    if callable(spec.optimizer):
        return pick(spec.optimizer, "optimizer", named_values(hyper))
    given = hyper.opt_hp or {}
    return {k: given[k] for k in optim.HYPERPARAMS[spec.optimizer] if k in given}


def optimizer(spec: RunSpec, hyper: Hyper) -> optax.GradientTransformation:
    if callable(spec.optimizer):
        return spec.optimizer(hyper.eta, **opt_hp(spec, hyper))
    return optim.make_optimizer(spec.optimizer, hyper.eta, **opt_hp(spec, hyper))


def threshold(spec: RunSpec, hyper: Hyper):
    """The optimiser's edge-of-stability line on the tracked λ (2/η for GD); NaN for a function
    optimiser without a ``threshold`` (unknown, not guessed)."""
    if callable(spec.optimizer):
        if spec.threshold is None:
            return jnp.full_like(hyper.eta, jnp.nan)
        return spec.threshold(hyper.eta, **opt_hp(spec, hyper))
    return optim.stability_threshold(spec.optimizer, hyper.eta, **opt_hp(spec, hyper))


def batch_indices(seed, step, n_points: int, batch_points: int):
    """The training points of step ``step`` of the run with ``seed``: ``batch_points`` distinct
    indices of ``range(n_points)``, drawn with ``fold_in(fold_in(key(seed), BATCH_STREAM), step)``
    — a pure function of (seed, step), so a resumed run draws the same batches."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), BATCH_STREAM), step)
    return jax.random.choice(key, n_points, (batch_points,), replace=False)


def _member(spec: RunSpec, hyper: Hyper, fns, logits, y, gamma_C):
    named = named_values(hyper)
    members = [functools.partial(fn, **pick(fn, "loss", named)) for fn in fns]
    if len(set(fns)) == 1:  # e.g. the static CE of CE and DCE: no switch
        return members[0](logits, y, gamma_C)
    return jax.lax.switch(hyper.member, members, logits, y, gamma_C)


def run_loss(spec: RunSpec, hyper: Hyper, static: bool = False):
    """The run's loss as ``loss(logits_PxC, y_PxC, gamma_C) -> scalar`` (its member, with the
    hyperparameters it takes), the form :mod:`dynloss_jax.curvature` takes; with ``static`` the
    member's static loss (call it at Γ ≡ 1)."""
    fns = spec.static_fns if static else spec.loss_fns

    def loss(logits_PxC, y_PxC, gamma_C):
        return _member(spec, hyper, fns, logits_PxC, y_PxC, gamma_C)

    return loss


def run_static_loss(spec: RunSpec, hyper: Hyper):
    """:func:`run_loss` of the member's static loss (call it at Γ ≡ 1)."""
    return run_loss(spec, hyper, static=True)


def loss_of_w(spec: RunSpec, hyper: Hyper, w_N, gamma_C, x, y):
    """``(F(w_N), logits_PxC)``: the run's loss (its member of ``spec.losses``, with the
    hyperparameters it takes) at Γ = ``gamma_C`` on the points ``x``, ``y``."""
    logits = spec.model.apply(w_N, x)
    return _member(spec, hyper, spec.loss_fns, logits, y, gamma_C), logits


def static_loss(spec: RunSpec, hyper: Hyper, logits_PxC, y_PxC):
    """The run's static loss of the logits: its member's loss at Γ ≡ 1 (for the paper's losses
    the named static one, CE or MSE, which is the same number)."""
    ones = jnp.ones((spec.n_classes,), logits_PxC.dtype)
    return _member(spec, hyper, spec.static_fns, logits_PxC, y_PxC, ones)


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
