"""The oscillating class weights Γ_i(t) of a dynamical loss.

In period k = ⌊t/T⌋ the emphasised class is c = k mod C and τ = t mod T. Its raw weight is the
triangle

    w(τ) = 1 + 2(A−1)τ/T          for τ < T/2,
    w(τ) = 1 + 2(A−1)(T−τ)/T      otherwise,

the other classes have raw weight 1, and Γ = C·r/Σr, so that Σ_i Γ_i = C at every step,
Γ_c/Γ_other = w(τ), and Γ ≡ 1 at every period start (the static loss). A = 1 is the static loss.
At the peak (τ = T/2) Γ_c = C·A/(A+C−1) and Γ_other = C/(A+C−1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_schedule(*, n_classes, amplitude, period, step=0) -> None:
    """Raises ``ValueError`` unless C ≥ 1, A ≥ 1 (finite), T ≥ 1 (an integer) and t ≥ 0.

    Values being traced under ``jit``/``vmap`` cannot be inspected and are let through.
    """
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) \
            or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    checks = (
        ("amplitude", amplitude, lambda a: np.isfinite(a) & (a >= 1), "finite and >= 1"),
        ("period", period, lambda a: (a >= 1) & (a == np.round(a)), "an integer >= 1"),
        ("step", step, lambda a: (a >= 0) & (a == np.round(a)), "an integer >= 0"),
    )
    for name, value, ok, allowed in checks:
        if isinstance(value, jax.core.Tracer):
            continue
        a = np.asarray(value)
        if a.dtype == bool or not np.issubdtype(a.dtype, np.number) or not np.all(ok(a)):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


def gamma(step, *, n_classes: int, amplitude, period, static_after=None):
    """Γ(t), shape ``(n_classes,)``; traceable and vmappable over step, amplitude and period.

    Args:
      step: integer step t ≥ 0 (scalar, may be traced).
      n_classes: C, static.
      amplitude: A ≥ 1.
      period: T ≥ 1 steps (an integer value; may be a traced array).
      static_after: if given, Γ ≡ 1 for t ≥ static_after (the "static last period" option:
        pass ``n_steps − T``).

    Raises ``ValueError`` for A < 1, T < 1 or not an integer, t < 0 (when not traced).
    """
    check_schedule(n_classes=n_classes, amplitude=amplitude, period=period, step=step)
    amplitude = jnp.asarray(amplitude)
    dtype = jnp.result_type(amplitude.dtype, jnp.float32)
    step = jnp.asarray(step)
    period = jnp.asarray(period)
    k = step // period
    tau = (step - k * period).astype(dtype)
    t_f = period.astype(dtype)
    rise = 2.0 * (amplitude - 1.0) * tau / t_f
    fall = 2.0 * (amplitude - 1.0) * (t_f - tau) / t_f
    w = 1.0 + jnp.where(2.0 * tau < t_f, rise, fall)
    if static_after is not None:
        w = jnp.where(step >= static_after, jnp.ones_like(w), w)
    emphasised = k % n_classes
    raw = jnp.where(jnp.arange(n_classes) == emphasised, w, jnp.ones((), dtype))
    return n_classes * raw / jnp.sum(raw)
