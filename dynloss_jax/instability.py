"""Detecting the first instability (period-2 onset) of gradient descent from the loss alone.

Decision (SPEC §2): the first instability is where the loss F starts a period-2 oscillation whose
amplitude grows — where the differences d_t = F(t) − F(t−1) split into two alternating branches
(the bifurcation of the paper's Fig. 2). The landscape of a dynamical loss moves with Γ(t), so F
drifts by more per step than a young oscillation: the branches are then both on the same side of
zero, and the sign of d_t alone does not alternate. The detector therefore reads the oscillation
from the second differences e_t = d_t − d_{t−1} = F(t) − 2F(t−1) + F(t−2), in which a drift
enters only through its curvature. Step t *extends a growing zigzag* when

    e_t · e_{t−1} < 0, |e_{t−1}| > tol(t)      (the curvature of F alternates in sign)
    |e_t| − |e_{t−2}| > tol(t)                 (and grows: compare with the same-sign one)
    |e_t| > tol(t),   tol(t) = rel_tol · |F(t)|  (both above the noise floor of F)

and an onset is confirmed when ``n_confirm`` consecutive steps t0, …, t0 + n_confirm − 1 do so.
The onset is reported as t0 − 1: for F linear until step s and zigzagging from F(s) on, it is s.
The earliest possible onset is 3 (the first test needs F(0..4)). A steady oscillation
(|e_t| = |e_{t−2}|) or a decaying one never confirms, nor does a smooth trend, nor a drift whose
curvature changes (that lengthens every other e_t and shortens the others), nor rounding noise
or the jitter of a ReLU network's loss as units cross their kinks (both stay below ``tol``,
see ``REL_TOL``). A zigzag of amplitude a adds ±4a to e_t, so it is found once 4a exceeds the
curvature of the drift and the tolerance. Detecting from F, not from λ, keeps the comparison of λ at
the onset with 2/η honest.

The detector is a pair of pure functions (``detector_init``, ``detector_update``) so that it runs
online inside the compiled training scan at no memory cost, and :func:`first_instability` applies
the same functions to a recorded series sampled at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

N_CONFIRM = 6
# tol = REL_TOL·|F|, above the noise floor of F itself, not only its rounding. A ReLU network's
# loss is piecewise smooth: along a GD run at width 100 about 80 units cross their kink every
# step, and each crossing leaves a small jump in the curvature of F, so the second differences
# carry a noise of ~1e-6·|F| (median 7e-7 at width 100, DCE, η = 0.25) that flips sign half the
# time and by chance "grows" six steps in a row. With the former 1e-10 the detector confirmed
# such noise long before λ1 reached 2/η (η·λ1/2 = 0.07–0.21 at the "onsets" of η = 0.25); a real
# period-2 zigzag there has |e| ~ 1e-3·|F| and keeps alternating for hundreds of steps.
# 1e-5 separates the two (docs/reproduction.md, Fig. 4) and is far below any oscillation
# visible on a plot; it is also above float32 rounding, so both dtypes share it.
REL_TOL = 1e-5


class DetectorState(NamedTuple):
    """Carry of the online detector (scalars; a leading axis R when batched over runs)."""

    prev_loss: jax.Array  # F(t−1)
    d1: jax.Array  # d_{t−1}
    e1: jax.Array  # e_{t−1}
    e2: jax.Array  # e_{t−2}
    count: jax.Array  # consecutive steps that extended a growing zigzag
    onset: jax.Array  # first confirmed onset step, −1 while none


def detector_init(dtype=jnp.float64) -> DetectorState:
    """Empty detector; the NaN history makes the first four steps fail the tests."""
    nan = jnp.full((), jnp.nan, dtype)
    return DetectorState(nan, nan, nan, nan, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


def detector_update(
    state: DetectorState, loss, step, *, n_confirm: int = N_CONFIRM, rel_tol: float | None = None
) -> DetectorState:
    """Feeds F(``step``); steps must be consecutive (0, 1, 2, …).

    A NaN loss (a diverged run) fails every test, so it resets the count and never confirms.
    Once an onset is found it is kept; the rest of the state keeps updating.
    """
    loss = jnp.asarray(loss)
    rel_tol = REL_TOL if rel_tol is None else rel_tol
    tol = rel_tol * jnp.abs(loss)
    d = loss - state.prev_loss
    e = d - state.d1
    extends = (
        (e * state.e1 < 0)
        & (jnp.abs(state.e1) > tol)
        & (jnp.abs(e) > tol)
        & (jnp.abs(e) - jnp.abs(state.e2) > tol)
    )
    count = jnp.where(extends, state.count + 1, 0).astype(jnp.int32)
    found = (count >= n_confirm) & (state.onset < 0)
    onset = jnp.where(found, step - n_confirm, state.onset).astype(jnp.int32)
    return DetectorState(loss, d, e, state.e1, count, onset)


def first_instability(loss_T, *, n_confirm: int = N_CONFIRM, rel_tol: float | None = None) -> int:
    """Onset step (as defined above) of a loss series ``loss_T`` sampled at steps 0..T−1, or −1.

    Runs :func:`detector_update` over the series, so it agrees exactly with the online detector
    of the training engine fed the same losses.
    """
    loss_T = jnp.asarray(loss_T)

    def body(state, inputs):
        loss, step = inputs
        return detector_update(state, loss, step, n_confirm=n_confirm, rel_tol=rel_tol), None

    steps = jnp.arange(loss_T.shape[0], dtype=jnp.int32)
    state, _ = jax.lax.scan(body, detector_init(loss_T.dtype), (loss_T, steps))
    return int(state.onset)
