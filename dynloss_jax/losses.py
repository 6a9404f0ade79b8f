"""The losses of the paper, as pure functions of logits, one-hot labels and Γ.

All are means over the P samples (SPEC §1):

    CE     = (1/P) Σ_j −log softmax(f_j)_{y_j}
    DCE    = (1/P) Σ_j Γ_{y_j} · (−log softmax(f_j)_{y_j})
    MSE    = (1/P) Σ_j Σ_i (f_ij − y_ij)²
    DMSE1  = (1/P) Σ_j Γ_{y_j} Σ_i (f_ij − y_ij)²
    DMSE1O = (1/P) Σ_j Σ_i Γ_i (f_ij − y_ij)²
    DMSE2  = (1/P) Σ_j Σ_i (f_ij − Γ_i y_ij)²

The printed eq. 3 of the paper leaves the index of Γ in DMSE1 loose: ``dmse1`` weights each
sample by Γ of its own class (SPEC's decision), ``dmse1o`` — the other reading — weights each
output's error by Γ of that output's class. Both keep the zero-loss minima of MSE. The static
losses ignore Γ; every dynamical loss equals its static one at Γ ≡ 1.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def ce(logits_PxC, y_PxC, gamma_C):
    """Cross-entropy; ``gamma_C`` is ignored."""
    del gamma_C
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits_PxC) * y_PxC, axis=-1))


def dce(logits_PxC, y_PxC, gamma_C):
    """Dynamical cross-entropy: each sample weighted by Γ of its class."""
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits_PxC) * y_PxC * gamma_C, axis=-1))


def mse(logits_PxC, y_PxC, gamma_C):
    """Mean squared error summed over the C outputs; ``gamma_C`` is ignored."""
    del gamma_C
    return jnp.mean(jnp.sum((logits_PxC - y_PxC) ** 2, axis=-1))


def dmse1(logits_PxC, y_PxC, gamma_C):
    """MSE with each sample weighted by Γ of its own class."""
    weight_P = y_PxC @ gamma_C
    return jnp.mean(weight_P * jnp.sum((logits_PxC - y_PxC) ** 2, axis=-1))


def dmse1o(logits_PxC, y_PxC, gamma_C):
    """MSE with the error of output i weighted by Γ_i (the other reading of eq. 3)."""
    return jnp.mean(jnp.sum(gamma_C * (logits_PxC - y_PxC) ** 2, axis=-1))


def dmse2(logits_PxC, y_PxC, gamma_C):
    """MSE against the rescaled targets Γ_i y_ji (only the true-class target moves)."""
    return jnp.mean(jnp.sum((logits_PxC - gamma_C * y_PxC) ** 2, axis=-1))


LOSSES: dict[str, Callable] = {
    "ce": ce,
    "dce": dce,
    "mse": mse,
    "dmse1": dmse1,
    "dmse1o": dmse1o,
    "dmse2": dmse2,
}
STATIC_OF = {"ce": "ce", "dce": "ce", "mse": "mse", "dmse1": "mse", "dmse1o": "mse", "dmse2": "mse"}
DYNAMICAL = frozenset({"dce", "dmse1", "dmse1o", "dmse2"})


def get_loss(name: str) -> Callable:
    """The loss function called ``name`` (one of ``ce dce mse dmse1 dmse1o dmse2``)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
