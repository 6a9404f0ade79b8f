"""Γ_i(t): its invariants, its closed-form peak, the authors' own weighting function, the other
waveforms, the random class order, and the result dtype."""

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
    return jax.vmap(
        lambda t: gamma(
            t, n_classes=n_classes, amplitude=amplitude, period=period, static_after=static_after
        )
    )(jnp.arange(N_MAX))


def gammas(n_steps, amplitude, period, n_classes=C, static_after=None):
    assert n_steps <= N_MAX
    table = _table(jnp.float64(amplitude), jnp.int32(period), n_classes, static_after)
    return np.asarray(table)[:n_steps]


@pytest.mark.parametrize(
    "amplitude,period,n_classes",
    [(70.0, 10, 3), (2.5, 7, 3), (1.0, 6, 3), (25.0, 9, 4), (5.0, 1, 3)],
)
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
        block = g[k * period : (k + 1) * period, c]
        assert np.argmax(block) == period // 2
        assert np.all(np.diff(block[: period // 2 + 1]) > 0)
        assert np.all(np.diff(block[period // 2 :]) < 0)


def test_class_order_cycles_0_1_2_0():
    period = 8
    g = gammas(7 * period, 10.0, period)
    emphasised = [int(np.argmax(g[k * period + period // 2])) for k in range(7)]
    assert emphasised == [0, 1, 2, 0, 1, 2, 0]


def test_static_after_makes_last_period_static():
    period, n_steps = 10, 35
    g = gammas(n_steps, 70.0, period, static_after=n_steps - period)
    full = gammas(n_steps, 70.0, period)
    np.testing.assert_array_equal(g[n_steps - period :], np.ones((period, C)))
    np.testing.assert_array_equal(g[: n_steps - period], full[: n_steps - period])


def test_vmaps_over_amplitude_and_period_and_jits():
    amplitudes = jnp.array([1.0, 5.0, 70.0])
    periods = jnp.array([4, 9, 10])
    f = jax.jit(
        jax.vmap(
            jax.vmap(
                lambda t, a, p: gamma(t, n_classes=C, amplitude=a, period=p),
                in_axes=(0, None, None),
            ),
            in_axes=(None, 0, 0),
        )
    )
    out = np.asarray(f(jnp.arange(25), amplitudes, periods))
    for j, (a, p) in enumerate(zip([1.0, 5.0, 70.0], [4, 9, 10], strict=True)):
        np.testing.assert_allclose(out[j], authors_schedule(25, a, p, C), rtol=1e-13)


def test_dtype_follows_amplitude():
    for amplitude, dtype in [(np.float32(5.0), jnp.float32), (5.0, jnp.float64)]:
        out = jax.eval_shape(lambda a=amplitude: gamma(3, n_classes=C, amplitude=a, period=10))
        assert out.dtype == dtype and out.shape == (C,)


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(amplitude=0.5, period=10), "amplitude"),
        (dict(amplitude=float("nan"), period=10), "amplitude"),
        (dict(amplitude=float("inf"), period=10), "amplitude"),
        (dict(amplitude=np.array([2.0, 0.9]), period=10), "amplitude"),
        (dict(amplitude=2.0, period=0), "period"),
        (dict(amplitude=2.0, period=2.5), "period"),
        (dict(amplitude=2.0, period=-3), "period"),
        (dict(amplitude=2.0, period=10, step=-1), "step"),
        (dict(amplitude=2.0, period=10, n_classes=0), "n_classes"),
    ],
)
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


# --- the triangle before waveforms and random orders were added, kept verbatim as the reference --


def _gamma_v0(step, *, n_classes, amplitude, period, static_after=None):
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


@functools.partial(jax.jit, static_argnames=("impl", "n_classes", "static_after"))
def _tables_of(impl, amplitude, period, n_classes, static_after):
    def one(t):
        return impl(
            t, n_classes=n_classes, amplitude=amplitude, period=period, static_after=static_after
        )

    return jax.vmap(one)(jnp.arange(N_MAX))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "amplitude,period,n_classes,static_after",
    [(70.0, 10, 3, None), (2.5, 7, 3, None), (1e4, 13, 3, None), (1.0, 6, 3, None),
     (25.0, 9, 4, 40), (3.3, 2, 4, 40)],
)  # fmt: skip
def test_triangle_unchanged_bit_for_bit(amplitude, period, n_classes, static_after, dtype):
    args = (dtype(amplitude), jnp.int32(period))
    old = _tables_of(_gamma_v0, *args, n_classes=n_classes, static_after=static_after)
    new = _tables_of(gamma, *args, n_classes=n_classes, static_after=static_after)
    assert new.dtype == old.dtype == dtype
    np.testing.assert_array_equal(new, old)
    a = float(amplitude) if dtype == np.float64 else dtype(amplitude)
    kw = dict(n_classes=n_classes, amplitude=a, period=period, static_after=static_after)
    for t in (period // 2, 41):  # eager, as callers write it
        np.testing.assert_array_equal(gamma(t, **kw), _gamma_v0(t, **kw))
        np.testing.assert_array_equal(gamma(t, waveform="triangle", **kw), _gamma_v0(t, **kw))


# --- waveforms ------------------------------------------------------------------------------------

WAVEFORMS = ("triangle", "sine", "square")
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-14}


@functools.partial(jax.jit, static_argnames=("n_classes", "waveform"))
def _wave_table(amplitude, period, n_classes, waveform):
    def one(t):
        return gamma(t, n_classes=n_classes, amplitude=amplitude, period=period, waveform=waveform)

    return jax.vmap(one)(jnp.arange(N_MAX))


def waves(amplitude, period, waveform, n_classes=C, dtype=np.float64):
    """Γ(0..N_MAX−1), (N_MAX, C), one compiled program per (C, waveform, dtype)."""
    table = _wave_table(dtype(amplitude), jnp.int32(period), n_classes, waveform)
    return np.asarray(table)


def twin(n_steps, amplitude, period, waveform, n_classes=C, order=None):
    """Python-loop twin of Γ from the written formulas, in float64; ``order[k]`` is the class
    emphasised in period k (default k mod C)."""
    out = []
    for t in range(n_steps):
        k, tau = divmod(t, period)
        if waveform == "triangle":
            w = 1 + 2 * (amplitude - 1) * min(tau, period - tau) / period
        elif waveform == "sine":
            w = 1 + (amplitude - 1) * np.sin(np.pi * tau / period)
        else:
            w = amplitude if period / 4 <= tau < 3 * period / 4 else 1.0
        raw = np.ones(n_classes)
        raw[k % n_classes if order is None else order[k]] = w
        out.append(n_classes * raw / raw.sum())
    return np.array(out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("waveform", WAVEFORMS)
@pytest.mark.parametrize(
    "amplitude,period,n_classes",
    [(70.0, 10, 3), (3.0, 7, 3), (1e3, 4, 3), (5.0, 1, 3), (2.0, 13, 3), (1.0, 6, 3)],
)
def test_every_waveform_matches_its_formula_and_keeps_the_invariants(
    waveform, amplitude, period, n_classes, dtype
):
    g = waves(amplitude, period, waveform, n_classes, dtype)
    assert g.dtype == dtype
    expected = twin(N_MAX, amplitude, period, waveform, n_classes)
    np.testing.assert_allclose(g, expected, rtol=RTOL[dtype], atol=0)
    np.testing.assert_allclose(g.sum(axis=1), n_classes, rtol=RTOL[dtype])
    np.testing.assert_array_equal(g[::period], np.ones_like(g[::period]))  # exactly, every shape
    assert np.all(g > 0)
    if amplitude == 1.0:
        np.testing.assert_array_equal(g, np.ones_like(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("waveform", WAVEFORMS)
@pytest.mark.parametrize("amplitude", [2.0, 25.0, 70.0])
def test_peak_is_the_closed_form_at_half_period(waveform, amplitude, dtype):
    period = 12
    g = waves(amplitude, period, waveform, dtype=dtype)
    peak_c, peak_other = C * amplitude / (amplitude + C - 1), C / (amplitude + C - 1)
    for k in range(N_MAX // period):
        c = k % C
        block = g[k * period : (k + 1) * period]
        np.testing.assert_allclose(block[period // 2, c], peak_c, rtol=RTOL[dtype])
        np.testing.assert_allclose(np.delete(block[period // 2], c), peak_other, rtol=RTOL[dtype])
        assert block[:, c].max() == block[period // 2, c]  # nothing exceeds the peak
        if waveform == "square":  # high on [T/4, 3T/4) = steps 3..8, static elsewhere
            np.testing.assert_allclose(block[3:9, c], peak_c, rtol=RTOL[dtype])
            np.testing.assert_array_equal(block[np.r_[0:3, 9:12]], np.ones((6, C), dtype))
        else:  # rises strictly to the peak, then falls strictly
            assert np.all(np.diff(block[: period // 2 + 1, c]) > 0)
            assert np.all(np.diff(block[period // 2 :, c]) < 0)


def test_square_window_edges_for_small_periods():
    # the high steps of a period are #{τ : T/4 ≤ τ < 3T/4}, in exact integer arithmetic
    cases = [(1, []), (2, [1]), (3, [1, 2]), (4, [1, 2]), (5, [2, 3]), (8, [2, 3, 4, 5])]
    for period, high in cases:
        g = waves(9.0, period, "square")[:period, 0]
        assert list(np.flatnonzero(g > 1)) == high, period


# --- the random class order -----------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_classes", "waveform", "static_after"))
def _seeded_tables(amplitude, period, seeds, n_classes, waveform, static_after):
    """Γ(0..N_MAX−1) for each seed, (S, N_MAX, C): vmapped over seeds and over steps."""

    def one(t, seed):
        return gamma(
            t,
            n_classes=n_classes,
            amplitude=amplitude,
            period=period,
            waveform=waveform,
            static_after=static_after,
            order_seed=seed,
        )

    return jax.vmap(lambda s: jax.vmap(lambda t: one(t, s))(jnp.arange(N_MAX)))(seeds)


SEEDS = np.arange(6)
# two compiled programs serve all the order tests: (triangle, C = 3, float64) and
# (square, C = 4, float32, static after step 60)
SEEDED = [("triangle", 3, np.float64, None), ("square", 4, np.float32, 60)]


def seeded(amplitude, period, waveform, n_classes, dtype, static_after):
    args = (dtype(amplitude), jnp.int32(period), jnp.asarray(SEEDS))
    return np.asarray(_seeded_tables(*args, n_classes, waveform, static_after))


def emphasised_per_period(g, period):
    """The class with the largest Γ at mid-period, for each period (needs A > 1, T ≥ 2)."""
    return [int(np.argmax(g[t])) for t in range(period // 2, g.shape[0], period)]


def documented_order(seed, n_periods, n_classes):
    """The class of period k, straight from the documented rule:
    ``permutation(fold_in(key(seed), k // C), C)[k % C]``, one permutation per cycle."""
    key = jax.random.key(seed)
    n_cycles = -(-n_periods // n_classes)
    cycles = [
        jax.random.permutation(jax.random.fold_in(key, n), n_classes) for n in range(n_cycles)
    ]
    return [int(c) for c in np.concatenate(cycles)[:n_periods]]


@pytest.mark.parametrize("waveform,n_classes,dtype,static_after", SEEDED)
def test_random_order_visits_every_class_once_per_cycle(waveform, n_classes, dtype, static_after):
    period = 4
    tables = seeded(10.0, period, waveform, n_classes, dtype, static_after)
    n_active = static_after // period if static_after else N_MAX // period
    n_cycles = n_active // n_classes
    orders = []
    for s, g in zip(SEEDS, tables, strict=True):
        full_order = documented_order(int(s), N_MAX // period, n_classes)
        order = emphasised_per_period(g[: n_active * period], period)
        for n in range(n_cycles):
            assert sorted(order[n * n_classes : (n + 1) * n_classes]) == list(range(n_classes))
        assert order == full_order[:n_active]
        orders.append(tuple(order))
        # the values are the formula's with that class order, Σ Γ = C, Γ ≡ 1 at period starts
        expected = twin(N_MAX, 10.0, period, waveform, n_classes, full_order)
        if static_after is not None:
            expected[static_after:] = 1.0
            np.testing.assert_array_equal(g[static_after:], np.ones_like(g[static_after:]))
        np.testing.assert_allclose(g, expected, rtol=RTOL[dtype])
        np.testing.assert_allclose(g.sum(axis=1), n_classes, rtol=RTOL[dtype])
        np.testing.assert_array_equal(g[::period], np.ones_like(g[::period]))
    assert len(set(orders)) == len(SEEDS)  # different seeds, different orders
    assert tuple(k % n_classes for k in range(n_active)) not in orders  # not just k mod C


@pytest.mark.parametrize("waveform,n_classes,dtype,static_after", SEEDED)
def test_random_order_is_deterministic_and_static_when_amplitude_is_one(
    waveform, n_classes, dtype, static_after
):
    a = seeded(7.0, 5, waveform, n_classes, dtype, static_after)
    np.testing.assert_array_equal(a, seeded(7.0, 5, waveform, n_classes, dtype, static_after))
    ones = seeded(1.0, 5, waveform, n_classes, dtype, static_after)
    np.testing.assert_array_equal(ones, np.ones_like(ones))


def test_random_order_jit_and_vmap_equal_eager():
    kw = dict(n_classes=C, amplitude=6.0, period=5)
    tables = seeded(6.0, 5, "triangle", C, np.float64, None)  # vmapped over seeds and steps
    for t, s in [(0, 3), (7, 3), (37, 3), (62, 5)]:
        eager = gamma(t, order_seed=s, **kw)
        np.testing.assert_allclose(tables[s, t], eager, rtol=1e-15)
        np.testing.assert_array_equal(np.argmax(tables[s, t]), np.argmax(eager))
    default = gamma(7, order_seed=None, **kw)
    np.testing.assert_array_equal(default, gamma(7, **kw))


# --- dtype ----------------------------------------------------------------------------------------


def test_integer_amplitude_follows_the_default_float_dtype():
    # the defect: a Python int A gave float32 although x64 was on
    assert jax.config.jax_enable_x64
    reference = gamma(5, n_classes=C, amplitude=70.0, period=10)
    for amplitude in (70, np.int32(70)):
        out = gamma(5, n_classes=C, amplitude=amplitude, period=10)
        assert out.dtype == jnp.float64, type(amplitude)
        np.testing.assert_array_equal(out, reference)
    assert float(reference[0]) == pytest.approx(C * 70 / (70 + C - 1), rel=1e-15)
    for waveform in WAVEFORMS:
        assert gamma(5, n_classes=C, amplitude=70, period=10, waveform=waveform).dtype == "float64"
    traced = jax.jit(lambda a: gamma(5, n_classes=C, amplitude=a, period=10))(jnp.int32(70))
    assert traced.dtype == jnp.float64
    with jax.enable_x64(False):
        assert gamma(5, n_classes=C, amplitude=70, period=10).dtype == jnp.float32
    # a float32 amplitude still gives float32 with x64 on, and a Python float float64
    assert gamma(5, n_classes=C, amplitude=np.float32(70.0), period=10).dtype == jnp.float32
    f32 = gamma(5, n_classes=C, amplitude=jnp.float32(70.0), period=10, waveform="sine")
    assert f32.dtype == jnp.float32
    assert reference.dtype == jnp.float64


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(waveform="saw"), "waveform"),
        (dict(waveform="Triangle"), "waveform"),
        (dict(order_seed=-1), "order_seed"),
        (dict(order_seed=1.5), "order_seed"),
        (dict(order_seed=True), "order_seed"),
        (dict(order_seed=np.array([1, 2])), "order_seed"),
    ],
)
def test_invalid_waveform_or_order_seed_raises(kw, name):
    base = dict(n_classes=C, amplitude=2.0, period=10)
    with pytest.raises(ValueError, match=name):
        gamma(0, **base, **kw)
    with pytest.raises(ValueError, match=name):
        check_schedule(**base, **kw)
