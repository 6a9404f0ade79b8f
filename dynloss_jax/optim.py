"""Optimisers by name, built from optax, and the edge-of-stability line each one draws.

Five optimisers, each a :func:`make_optimizer` call away (hyperparameters and defaults in
:data:`HYPERPARAMS`, their ranges in :data:`RANGES`; g = ∇F(w), t counts updates from 1):

* ``gd``        w ← w − η g                                          (``optax.sgd``)
* ``momentum``  v ← βv + g,  w ← w − η v                   heavy ball (``optax.sgd(momentum=β)``)
* ``nesterov``  v ← βv + g,  w ← w − η (g + βv)    (``optax.sgd(momentum=β, nesterov=True)``)
* ``adam``      m ← β₁m + (1−β₁)g,  ν ← β₂ν + (1−β₂)g²,  w ← w − η m̂ / (√ν̂ + ε),
                m̂ = m/(1−β₁ᵗ), ν̂ = ν/(1−β₂ᵗ)                                   (``optax.adam``)
* ``rmsprop``   ν ← ρν + (1−ρ)g²,  w ← w − η g / (√ν + ε),  ν₀ = 0, no bias correction
                (``optax.rmsprop(decay=ρ, eps_in_sqrt=False)``: ε outside the root, as Adam)

η and every hyperparameter may be traced JAX scalars (swept under ``vmap`` in a compiled scan);
only the name is static. The optimiser state is a tuple of NamedTuples of arrays.

Edge of stability (:func:`stability_threshold`). On F(w) = ½ wᵀHw each eigendirection of H
(curvature λ, x = ηλ) evolves linearly, and an optimiser is stable iff every root of the
characteristic polynomial lies in the unit disc. For z² + a₁z + a₀ that is (Jury)
p(1) > 0, p(−1) > 0, |a₀| < 1. Below p(1) = x > 0 throughout (λ ≤ 0 is unstable for every
optimiser), and for 0 ≤ β < 1 the binding condition is p(−1) > 0: the boundary is a root at
z = −1 (period-2 oscillation, as for GD):

* gd:        z = 1 − x                                  → λ < 2/η
* momentum:  (w, v)' = [[1−x, −ηβ], [λ, β]] (w, v);  p(z) = z² − (1+β−x) z + β;
             p(1) = x, p(−1) = 2(1+β) − x               → λ < 2(1+β)/η
* nesterov:  v' = βv + λw, w' = w − η(λw + βv') = (1 − (1+β)x) w − ηβ² v;
             (w, v)' = [[1−(1+β)x, −ηβ²], [λ, β]] (w, v);  trace 1+β−(1+β)x, det β(1−x);
             p(z) = z² − (1+β)(1−x) z + β(1−x);  p(1) = x, p(−1) = 1 + (1+2β)(1−x),
             |a₀| < 1 ⟺ x < 1 + 1/β (weaker)         → λ < 2(1+β)/((1+2β)η)
* adam:      with P = diag(√ν̂ + ε) frozen and t → ∞ (m̂ = m): for m̃ = m/(1−β₁),
             m̃' = β₁m̃ + Hw, w' = w − η(1−β₁) P⁻¹m̃' is heavy ball with step η(1−β₁) on P⁻¹H
             (similar to the symmetric P^{-1/2} H P^{-1/2}, so real eigenvalues)
                                                  → λ₁(P⁻¹H) < (2+2β₁)/((1−β₁)η)
* rmsprop:   with P = diag(√ν + ε) frozen, GD on P⁻¹H → λ₁(P⁻¹H) < 2/η

For adam and rmsprop this is the threshold of the *frozen-preconditioner* linearisation (Cohen
et al. 2022, "Adaptive gradient methods at the edge of stability"): the real P adapts to the
gradients, which is how these methods self-stabilise. The threshold is the t → ∞ limit: early on
Adam's m̂ = m/(1−β₁ᵗ) acts as a larger step (1-D, β₁ = 0.9, P frozen from t = 1: at 0.5× the
threshold |w| first grows ~2·10⁴-fold, at 0.98× ~3·10¹⁵-fold, before it decays).

:func:`preconditioner` reads P from the optimiser state, so a caller can measure λ₁ of
P^{-1/2} H P^{-1/2} (:func:`preconditioned_matvec`) with Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

HYPERPARAMS: dict[str, dict[str, float]] = {
    "gd": {},
    "momentum": {"beta": 0.9},
    "nesterov": {"beta": 0.9},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "rmsprop": {"decay": 0.9, "eps": 1e-8},
}
"""Hyperparameters of each optimiser (besides the step η) and their defaults."""

ADAPTIVE = ("adam", "rmsprop")
"""Optimisers whose threshold is on the preconditioned Hessian P⁻¹H."""

RANGES: dict[str, str] = {
    "eta": "(0, inf)",
    "beta": "[0, 1)",
    "b1": "[0, 1)",
    "b2": "[0, 1)",
    "decay": "[0, 1)",
    "eps": "[0, inf)",
}
"""Allowed range of η and of each hyperparameter."""

_IN_RANGE = {
    "(0, inf)": lambda v: (v > 0) & (v < np.inf),
    "[0, 1)": lambda v: (v >= 0) & (v < 1),
    "[0, inf)": lambda v: (v >= 0) & (v < np.inf),
}

_LABELS = {
    "gd": "2/η",
    "momentum": "2(1+β)/η",
    "nesterov": "2(1+β)/((1+2β)η)",
    "adam": "(2+2β₁)/((1−β₁)η) on P⁻¹H",
    "rmsprop": "2/η on P⁻¹H",
}


def _check_name(name: str) -> None:
    if name not in HYPERPARAMS:
        raise ValueError(f"optimizer must be one of {sorted(HYPERPARAMS)}, got {name!r}")


def _check_range(param: str, value) -> None:
    """ValueError unless ``value`` (all entries of it) lies in ``RANGES[param]``; tracers pass."""
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value, dtype=np.float64)
    if not np.all(_IN_RANGE[RANGES[param]](v)):
        raise ValueError(f"{param} must be in {RANGES[param]}, got {value!r}")


def hyperparams(name: str, **overrides) -> dict:
    """The hyperparameters of optimiser ``name``: defaults from :data:`HYPERPARAMS` updated by
    ``overrides``, checked against :data:`RANGES` (values that are tracers are not checked)."""
    _check_name(name)
    unknown = sorted(set(overrides) - set(HYPERPARAMS[name]))
    if unknown:
        raise ValueError(
            f"optimizer {name!r} takes hyperparameters "
            f"{sorted(HYPERPARAMS[name])}, got unknown {unknown}"
        )
    hp = {**HYPERPARAMS[name], **overrides}
    for param, value in hp.items():
        _check_range(param, value)
    return hp


def make_optimizer(name: str, eta, **hp) -> optax.GradientTransformation:
    """The optax transformation of optimiser ``name`` with step ``eta`` (formulas above).

    ``eta`` and the hyperparameters may be traced scalars; no Python control flow touches
    their values. Concrete values are checked eagerly (``ValueError`` naming the parameter).
    """
    hp = hyperparams(name, **hp)
    _check_range("eta", eta)
    if name == "gd":
        return optax.sgd(eta)
    if name in ("momentum", "nesterov"):
        return optax.sgd(eta, momentum=hp["beta"], nesterov=name == "nesterov")
    if name == "adam":
        return optax.adam(eta, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    return optax.rmsprop(eta, decay=hp["decay"], eps=hp["eps"], eps_in_sqrt=False)


def stability_threshold(name: str, eta, **hp):
    """Largest stable curvature of optimiser ``name`` on a quadratic (derivations above).

    gd 2/η; momentum 2(1+β)/η; nesterov 2(1+β)/((1+2β)η); and, for the preconditioned
    Hessian P⁻¹H with P frozen, adam (2+2β₁)/((1−β₁)η) and rmsprop 2/η. Broadcasts over
    array arguments; traced arguments are allowed.
    """
    hp = hyperparams(name, **hp)
    _check_range("eta", eta)
    if name in ("gd", "rmsprop"):
        return 2.0 / eta
    if name == "momentum":
        return 2.0 * (1.0 + hp["beta"]) / eta
    if name == "nesterov":
        return 2.0 * (1.0 + hp["beta"]) / ((1.0 + 2.0 * hp["beta"]) * eta)
    return (2.0 + 2.0 * hp["b1"]) / ((1.0 - hp["b1"]) * eta)


def threshold_label(name: str) -> str:
    """Short text for the threshold line of a plot, e.g. ``"2(1+β)/η"``."""
    _check_name(name)
    return _LABELS[name]


def _find(opt_state, cls):
    nodes = jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, cls))
    found = [node for node in nodes if isinstance(node, cls)]
    if not found:
        raise ValueError(f"no {cls.__name__} in the optimizer state")
    return found[0]


def preconditioner(name: str, opt_state, hp: Mapping | None = None, *, params=None):
    """Diagonal preconditioner P of the last update, shaped like the parameters.

    * adam: P = √ν̂ + ε with ν̂ = ν/(1 − β₂ᵗ), t = the state's count (the number of updates
      made) and ν = (1−β₂) Σ_{s≤t} β₂^{t−s} g_s² — exactly the denominator of the t-th update
      −η m̂_t / P (``optax.scale_by_adam``). Before any update (t = 0, ν = 0) P = ε.
    * rmsprop: P = √ν + ε (no bias correction, ν₀ = 0).
    * gd, momentum, nesterov: ones (no preconditioning); gd's state holds no arrays, so
      ``params`` (any pytree of the parameters' shape) is needed there.

    ``hp`` holds the hyperparameters (defaults for those missing). The next update's P also
    folds in the next gradient; measuring λ₁(P⁻¹H) with this P is the frozen approximation.
    P⁻¹H has the spectrum of the symmetric P^{-1/2} H P^{-1/2} (:func:`preconditioned_matvec`).
    """
    hp = hyperparams(name, **dict(hp or {}))
    if name == "adam":
        state = _find(opt_state, optax.ScaleByAdamState)
        # count ≥ 1 only guards 0/0 at t = 0, where ν = 0 anyway
        bias = 1.0 - hp["b2"] ** jnp.maximum(state.count, 1)
        return jax.tree.map(lambda nu: jnp.sqrt(nu / bias.astype(nu.dtype)) + hp["eps"], state.nu)
    if name == "rmsprop":
        state = _find(opt_state, optax.ScaleByRmsState)
        return jax.tree.map(lambda nu: jnp.sqrt(nu) + hp["eps"], state.nu)
    if params is not None:
        return jax.tree.map(jnp.ones_like, params)
    if name == "gd":
        raise ValueError("preconditioner('gd', ...) needs params=: the gd state holds no arrays")
    return jax.tree.map(jnp.ones_like, _find(opt_state, optax.TraceState).trace)


def preconditioned_matvec(matvec, p):
    """v ↦ P^{-1/2} H P^{-1/2} v from ``matvec(v) = H v``, for P from :func:`preconditioner`.

    Symmetric when H is, with the eigenvalues of P⁻¹H, so :func:`dynloss_jax.eig.lanczos`
    applies; ``p`` and ``v`` are arrays or pytrees of one structure.
    """
    r = jax.tree.map(jax.lax.rsqrt, p)

    def scaled(v):
        return jax.tree.map(jnp.multiply, r, matvec(jax.tree.map(jnp.multiply, r, v)))

    return scaled
