"""Detecting the first instability (period-2 onset) of gradient descent from the loss alone.

Decision (SPEC §2): the first instability is the first step at which the loss F starts a period-2
oscillation — successive differences d_t = F(t) − F(t−1) alternate in sign with growing amplitude
(|d_t| > |d_{t−2}|) — confirmed over ``n_confirm`` consecutive steps. The onset is the first step of
that confirmed run. Detecting it from F, not from λ, keeps the comparison of λ there with 2/η
honest.

The detector is a pair of pure functions (``detector_init``, ``detector_update``) so that it runs
online inside the compiled training scan at no memory cost, and :func:`first_instability` applies
the same functions to a recorded series.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

N_CONFIRM = 6
REL_TOL = 1e-7


class DetectorState(NamedTuple):
    prev_loss: jax.Array  # F(t−1)
    d1: jax.Array  # d_{t−1}
    d2: jax.Array  # d_{t−2}
    count: jax.Array  # length of the current alternating, growing run
    onset: jax.Array  # first confirmed onset step, −1 while none


def detector_init(dtype=jnp.float64) -> DetectorState:
    nan = jnp.full((), jnp.nan, dtype)
    return DetectorState(nan, nan, nan, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


def detector_update(state: DetectorState, loss, step, *, n_confirm: int = N_CONFIRM,
                    rel_tol: float = REL_TOL) -> DetectorState:
    """Feed F(step); steps must be consecutive. NaN losses (a diverged run) never confirm."""
    d = loss - state.prev_loss
    growing = (d * state.d1 < 0) & (jnp.abs(d) > jnp.abs(state.d2))
    growing = growing & (jnp.abs(d) > rel_tol * jnp.abs(loss))
    count = jnp.where(growing, state.count + 1, 0)
    found = (count >= n_confirm) & (state.onset < 0)
    onset = jnp.where(found, step - n_confirm + 1, state.onset).astype(jnp.int32)
    return DetectorState(loss, d, state.d1, count.astype(jnp.int32), onset)


def first_instability(loss_T, *, n_confirm: int = N_CONFIRM, rel_tol: float = REL_TOL) -> int:
    """Index of the first period-2 onset in a loss series sampled at every step; −1 if none."""
    loss_T = jnp.asarray(loss_T)

    def body(state, inputs):
        loss, step = inputs
        return detector_update(state, loss, step, n_confirm=n_confirm, rel_tol=rel_tol), None

    steps = jnp.arange(loss_T.shape[0], dtype=jnp.int32)
    state, _ = jax.lax.scan(body, detector_init(loss_T.dtype), (loss_T, steps))
    return int(state.onset)


def value_at(step, steps_E, values_E):
    """Linear interpolation of a quantity measured at ``steps_E`` (e.g. λ1 every k steps) at
    ``step``; NaN when ``step`` < 0 (no onset) or outside the measured range."""
    steps_E = np.asarray(steps_E, dtype=float)
    values_E = np.asarray(values_E, dtype=float)
    if step < 0 or len(steps_E) == 0 or step < steps_E[0] or step > steps_E[-1]:
        return float("nan")
    return float(np.interp(step, steps_E, values_E))
