"""Γ_i(t): its invariants, its closed-form peak, and the authors' own weighting function."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import gamma
from dynloss_jax.schedule import check_schedule

C = 3


def authors_c_fn(t, i, w_max, T, n_classes):
    """NumPy transcription of ``c_fn`` in the authors' notebook (t within the period, class i)."""
    slope = 2 * (w_max - 1) / T
    w_main_class = 1 + t * slope if t < T / 2.0 else 2 * w_max - t * slope - 1
    res = np.ones(n_classes) + (w_main_class - 1) * np.eye(n_classes)[i]
    return res / np.sum(res) * n_classes


def authors_schedule(n_steps, w_max, T, n_classes):
    """Their training loop with the T+1 quirk switched off: t runs 0..T−1, then the class moves
    on (c ← (c+1) mod C) and t restarts at 0."""
    out, t, c = [], 0, 0
    for _ in range(n_steps):
        out.append(authors_c_fn(t, c, w_max, T, n_classes))
        t += 1
        if t == T:
            t, c = 0, (c + 1) % n_classes
    return np.array(out)


N_MAX = 80  # one compiled table of Γ(0..N_MAX−1) serves every test


@functools.partial(jax.jit, static_argnames=("n_classes", "static_after"))
def _table(amplitude, period, n_classes, static_after):
    return jax.vmap(lambda t: gamma(t, n_classes=n_classes, amplitude=amplitude, period=period,
                                    static_after=static_after))(jnp.arange(N_MAX))


def gammas(n_steps, amplitude, period, n_classes=C, static_after=None):
    assert n_steps <= N_MAX
    table = _table(jnp.float64(amplitude), jnp.int32(period), n_classes, static_after)
    return np.asarray(table)[:n_steps]


@pytest.mark.parametrize("amplitude,period,n_classes",
                         [(70.0, 10, 3), (2.5, 7, 3), (1.0, 6, 3), (25.0, 9, 4), (5.0, 1, 3)])
def test_equals_authors_weighting_over_several_periods(amplitude, period, n_classes):
    n_steps = 5 * period + 3
    ours = gammas(n_steps, amplitude, period, n_classes)
    theirs = authors_schedule(n_steps, amplitude, period, n_classes)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("amplitude,period", [(70.0, 10), (3.0, 7), (1.0, 4), (1e4, 13)])
def test_sum_is_n_classes_and_ones_at_period_starts(amplitude, period):
    n = 6 * period if 6 * period <= N_MAX else N_MAX // period * period
    g = gammas(n, amplitude, period)
    np.testing.assert_allclose(g.sum(axis=1), C, rtol=1e-14)
    np.testing.assert_array_equal(g[::period], np.ones((n // period, C)))
    assert np.all(g > 0)


def test_static_amplitude_is_all_ones():
    np.testing.assert_array_equal(gammas(40, 1.0, 7), np.ones((40, C)))


@pytest.mark.parametrize("amplitude", [2.0, 25.0, 70.0])
def test_peak_values_at_half_period(amplitude):
    period = 10
    g = gammas(3 * period, amplitude, period)
    for k in range(3):
        peak = g[k * period + period // 2]
        c = k % C
        assert peak[c] == pytest.approx(C * amplitude / (amplitude + C - 1), rel=1e-14)
        others = np.delete(peak, c)
        np.testing.assert_allclose(others, C / (amplitude + C - 1), rtol=1e-14)
        # the peak is the maximum over the period, a triangle rising then falling
        block = g[k * period:(k + 1) * period, c]
        assert np.argmax(block) == period // 2
        assert np.all(np.diff(block[: period // 2 + 1]) > 0)
        assert np.all(np.diff(block[period // 2:]) < 0)


def test_class_order_cycles_0_1_2_0():
    period = 8
    g = gammas(7 * period, 10.0, period)
    emphasised = [int(np.argmax(g[k * period + period // 2])) for k in range(7)]
    assert emphasised == [0, 1, 2, 0, 1, 2, 0]


def test_static_after_makes_last_period_static():
    period, n_steps = 10, 35
    g = gammas(n_steps, 70.0, period, static_after=n_steps - period)
    full = gammas(n_steps, 70.0, period)
    np.testing.assert_array_equal(g[n_steps - period:], np.ones((period, C)))
    np.testing.assert_array_equal(g[: n_steps - period], full[: n_steps - period])


def test_vmaps_over_amplitude_and_period_and_jits():
    amplitudes = jnp.array([1.0, 5.0, 70.0])
    periods = jnp.array([4, 9, 10])
    f = jax.jit(jax.vmap(jax.vmap(lambda t, a, p: gamma(t, n_classes=C, amplitude=a, period=p),
                                  in_axes=(0, None, None)), in_axes=(None, 0, 0)))
    out = np.asarray(f(jnp.arange(25), amplitudes, periods))
    for j, (a, p) in enumerate(zip([1.0, 5.0, 70.0], [4, 9, 10], strict=True)):
        np.testing.assert_allclose(out[j], authors_schedule(25, a, p, C), rtol=1e-13)


def test_dtype_follows_amplitude():
    for amplitude, dtype in [(np.float32(5.0), jnp.float32), (5.0, jnp.float64)]:
        out = jax.eval_shape(lambda a=amplitude: gamma(3, n_classes=C, amplitude=a, period=10))
        assert out.dtype == dtype and out.shape == (C,)


@pytest.mark.parametrize("kw,name", [
    (dict(amplitude=0.5, period=10), "amplitude"),
    (dict(amplitude=float("nan"), period=10), "amplitude"),
    (dict(amplitude=float("inf"), period=10), "amplitude"),
    (dict(amplitude=np.array([2.0, 0.9]), period=10), "amplitude"),
    (dict(amplitude=2.0, period=0), "period"),
    (dict(amplitude=2.0, period=2.5), "period"),
    (dict(amplitude=2.0, period=-3), "period"),
    (dict(amplitude=2.0, period=10, step=-1), "step"),
    (dict(amplitude=2.0, period=10, n_classes=0), "n_classes"),
])
def test_invalid_values_raise(kw, name):
    kw = dict(dict(n_classes=C, step=0), **kw)
    step = kw.pop("step")
    with pytest.raises(ValueError, match=name):
        gamma(step, **kw)
    with pytest.raises(ValueError, match=name):
        check_schedule(step=step, **kw)


def test_traced_values_are_not_inspected():
    # under jit the values are unknown; the check must not break tracing
    f = jax.jit(lambda a, p: gamma(5, n_classes=C, amplitude=a, period=p))
    for a, p in itertools.product([1.0, 3.0], [4, 10]):
        np.testing.assert_allclose(f(a, p), authors_schedule(6, a, p, C)[5], rtol=1e-13)
