"""The oscillating class weights Γ_i(t) of a dynamical loss.

In period k = ⌊t/T⌋ one class c is emphasised and τ = t mod T. Its raw weight w(τ) is one of

    triangle (the paper's, default):  w = 1 + 2(A−1)τ/T for τ < T/2, else 1 + 2(A−1)(T−τ)/T
    sine:                             w = 1 + (A−1) sin(πτ/T)
    square:                           w = A for T/4 ≤ τ < 3T/4, else 1

the other classes have raw weight 1, and Γ = C·r/Σr, so that Σ_i Γ_i = C at every step,
Γ_c/Γ_other = w(τ), and Γ ≡ 1 at every period start (the static loss). A = 1 is the static loss.
All three peak at w = A, centred on τ = T/2; there Γ_c = C·A/(A+C−1) and Γ_other = C/(A+C−1).
The square wave is high for half of each period and centred like the others, so its mean excess
weight over a period, (A−1)/2, equals the triangle's (the sine's is 2(A−1)/π), and it is 1 at
τ = 0 like the others, so "Γ ≡ 1 at period starts" holds for every shape.

Class order: by default c = k mod C (0, 1, …, C−1, 0, …). With ``order_seed`` the periods are
grouped in cycles of C, ⌊k/C⌋ = cycle, and cycle n visits the classes in the order
``jax.random.permutation(fold_in(key(order_seed), n), C)``: every class once per cycle, in an
order that is a pure function of (t, order_seed). It costs a Threefry hash and a C-element sort per
step, and about a second more compile time on a CPU; ``order_seed=None`` compiles none of it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

WAVEFORMS = ("triangle", "sine", "square")


def check_schedule(
    *, n_classes, amplitude, period, step=0, waveform="triangle", order_seed=None
) -> None:
    """Raises ``ValueError`` unless C ≥ 1, A ≥ 1 (finite), T ≥ 1 (an integer), t ≥ 0, the
    waveform is one of :data:`WAVEFORMS` and ``order_seed`` is ``None`` or an integer ≥ 0.

    Values being traced under ``jit``/``vmap`` cannot be inspected and are let through.
    """
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    if not isinstance(waveform, str) or waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {', '.join(WAVEFORMS)}, got {waveform!r}")
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
    if order_seed is not None and not isinstance(order_seed, jax.core.Tracer):
        a = np.asarray(order_seed)
        if a.ndim != 0 or not np.issubdtype(a.dtype, np.integer) or a < 0:
            raise ValueError(f"order_seed must be None or an integer >= 0, got {order_seed!r}")


def gamma(
    step,
    *,
    n_classes: int,
    amplitude,
    period,
    static_after=None,
    waveform: str = "triangle",
    order_seed=None,
):
    """Γ(t), shape ``(n_classes,)``; traceable and vmappable over step, amplitude, period and
    order_seed.

    Args:
      step: integer step t ≥ 0 (scalar, may be traced).
      n_classes: C, static.
      amplitude: A ≥ 1. The result has A's float dtype (at least float32); an integer A gives
        JAX's default float dtype (float64 when x64 is enabled).
      period: T ≥ 1 steps (an integer value; may be a traced array).
      static_after: if given, Γ ≡ 1 for t ≥ static_after (the "static last period" option:
        pass ``n_steps − T``).
      waveform: ``"triangle"`` (the paper's), ``"sine"`` or ``"square"``, static; see the module
        docstring for w(τ).
      order_seed: ``None`` for the order c = k mod C; else an integer (or integer array, may be
        traced) seeding a random permutation of the classes for each cycle of C periods.

    Raises ``ValueError`` for A < 1, T < 1 or not an integer, t < 0, an unknown waveform or a
    bad order_seed (when not traced).
    """
    check_schedule(
        n_classes=n_classes,
        amplitude=amplitude,
        period=period,
        step=step,
        waveform=waveform,
        order_seed=order_seed,
    )
    amplitude = jnp.asarray(amplitude)
    if jnp.issubdtype(amplitude.dtype, jnp.floating):
        dtype = jnp.result_type(amplitude.dtype, jnp.float32)
    else:  # an integer A (e.g. a Python int) must not pull the result down to float32
        dtype = jnp.result_type(float)
        amplitude = amplitude.astype(dtype)
    step = jnp.asarray(step)
    period = jnp.asarray(period)
    k = step // period
    tau_int = step - k * period
    tau = tau_int.astype(dtype)
    t_f = period.astype(dtype)
    if waveform == "triangle":
        rise = 2.0 * (amplitude - 1.0) * tau / t_f
        fall = 2.0 * (amplitude - 1.0) * (t_f - tau) / t_f
        w = 1.0 + jnp.where(2.0 * tau < t_f, rise, fall)
    elif waveform == "sine":
        w = 1.0 + (amplitude - 1.0) * jnp.sin(jnp.pi * tau / t_f)
    else:  # square; compared in the integer domain, so the window edges are exact
        high = (4 * tau_int >= period) & (4 * tau_int < 3 * period)
        w = jnp.where(high, amplitude, jnp.ones((), dtype))
    if static_after is not None:
        w = jnp.where(step >= static_after, jnp.ones_like(w), w)
    if order_seed is None:
        emphasised = k % n_classes
    else:
        key = jax.random.fold_in(jax.random.key(order_seed), k // n_classes)
        emphasised = jax.random.permutation(key, n_classes)[k % n_classes]
    raw = jnp.where(jnp.arange(n_classes) == emphasised, w, jnp.ones((), dtype))
    return n_classes * raw / jnp.sum(raw)


# --- schedules as functions: the form every schedule of a sweep takes --------------------------
#
# A schedule is any pure function ``(step, n_classes, **hp) -> Γ_C``: the paper's waveforms are
# factories of that form, and the "last period static" and random class order options are
# combinators that wrap any schedule (a user's too), as optax builds its schedules. The
# factories and combinators are cached, so the same arguments give the same function object
# (and the engine's compiled programs, keyed on it, are reused).


@functools.cache
def waveform_schedule(waveform: str = "triangle"):
    """The paper's schedule with the given waveform (see the module docstring) as a function
    ``(step, n_classes, amplitude, period) -> Γ_C``."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {', '.join(WAVEFORMS)}, got {waveform!r}")

    def schedule(step, n_classes, amplitude, period):
        return gamma(
            step, n_classes=n_classes, amplitude=amplitude, period=period, waveform=waveform
        )

    schedule.__name__ = schedule.__qualname__ = waveform
    return schedule


def triangle():
    """Γ with the paper's triangle waveform: ``(step, n_classes, amplitude, period) -> Γ_C``."""
    return waveform_schedule("triangle")


def sine():
    """Γ with the sine waveform w = 1 + (A−1) sin(πτ/T)."""
    return waveform_schedule("sine")


def square():
    """Γ with the square waveform (A for T/4 ≤ τ < 3T/4, else 1)."""
    return waveform_schedule("square")


@functools.cache
def last_period_static(schedule, n_steps: int):
    """``schedule`` with Γ ≡ 1 from step ``n_steps − period`` on (the run's last period is the
    static loss; the wrapped function takes ``period``). Γ is exactly 1 there."""

    @functools.wraps(schedule)
    def wrapped(step, n_classes, *args, period, **hp):
        g = schedule(step, n_classes, *args, period=period, **hp)
        return jnp.where(step >= n_steps - period, jnp.ones_like(g), g)

    return wrapped


@functools.cache
def class_order(schedule, order_seed: int):
    """``schedule`` with its classes relabelled once per cycle of C periods: in cycle
    n = ⌊⌊t/T⌋/C⌋ class i's weight goes to class π_n(i), π_n =
    ``jax.random.permutation(fold_in(key(order_seed), n), C)``. A schedule that emphasises class
    k mod C in period k then visits every class once per cycle in the order π_n (the paper's
    schedule with ``order_seed``); the wrapped function takes ``period``."""
    if isinstance(order_seed, bool) or not isinstance(order_seed, int) or order_seed < 0:
        raise ValueError(f"order_seed must be an integer >= 0, got {order_seed!r}")

    @functools.wraps(schedule)
    def wrapped(step, n_classes, *args, period, **hp):
        g = schedule(step, n_classes, *args, period=period, **hp)
        key = jax.random.fold_in(jax.random.key(order_seed), (step // period) // n_classes)
        perm = jax.random.permutation(key, n_classes)
        return jnp.zeros_like(g).at[perm].set(g)

    return wrapped


@functools.cache
def paper_schedule(waveform: str = "triangle", *, n_steps=None, order_seed=None):
    """The schedule of the paper's settings ``(step, n_classes, amplitude, period) -> Γ``:
    :func:`gamma` with the waveform, its random class order when ``order_seed`` is given and Γ ≡ 1
    in the last period when ``n_steps`` (the run's length) is. It is what
    ``class_order(waveform_schedule(w), seed)`` and ``last_period_static(..., n_steps)`` compute,
    but keeps :func:`gamma`'s own arithmetic (the static period applied to the raw weight before
    normalising): inside a compiled run the combinators' order of operations gave results that
    differ in the last bits, which the edge of stability amplifies, and the stored results were
    made with this one."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {', '.join(WAVEFORMS)}, got {waveform!r}")

    def schedule(step, n_classes, amplitude, period):
        return gamma(
            step,
            n_classes=n_classes,
            amplitude=amplitude,
            period=period,
            static_after=None if n_steps is None else n_steps - period,
            waveform=waveform,
            order_seed=order_seed,
        )

    schedule.__name__ = schedule.__qualname__ = waveform
    return schedule
