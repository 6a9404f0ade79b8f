"""The first-instability rules: synthetic series with known onsets, GD on a cubic valley, NumPy
transcriptions of the definitions, the online detectors inside the engine, and where the onset
falls against λ1 on a real network."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import SweepConfig, run_sweep
from dynloss_jax.instability import (
    CALIBRATED,
    N_CONFIRM,
    REL_TOL,
    first_instability,
    get_detector,
)

SD = "second_difference"  # the rule in force before the calibrated one


def reference_onset(loss_T, n_confirm=N_CONFIRM, rel_tol=REL_TOL):
    """The definition of the module docstring, transcribed as a plain Python loop."""
    f = [float(v) for v in loss_T]

    def e(t):  # second difference F(t) − 2F(t−1) + F(t−2)
        return (f[t] - f[t - 1]) - (f[t - 1] - f[t - 2])

    run = 0
    for t in range(4, len(f)):
        tol = rel_tol * abs(f[t])
        ok = (
            e(t) * e(t - 1) < 0
            and abs(e(t - 1)) > tol
            and abs(e(t)) > tol
            and abs(e(t)) - abs(e(t - 2)) > tol
        )  # False with NaN
        run = run + 1 if ok else 0
        if run == n_confirm:
            return t - n_confirm
    return -1


def zigzag(n, start, growth=1.05, amplitude=1e-4, base=None):
    """``base`` (default 1) plus a period-2 oscillation that is 0 before ``start`` and
    amplitude·growth^(t−start)·(−1)^t from ``start`` on."""
    t = np.arange(n)
    base = np.ones(n) if base is None else base
    osc = np.where(t >= start, amplitude * growth ** np.maximum(t - start, 0) * (-1.0) ** t, 0)
    return base + osc


def gd_on_cubic(eta, x0, n, lam=1.0, c=1.0):
    """Loss of GD on f(x) = λx²/2 + c x³/3 (a valley whose walls differ in height) from x0."""
    x, out = x0, []
    for _ in range(n):
        out.append(0.5 * lam * x * x + c * x**3 / 3)
        x = x - eta * (lam * x + c * x * x)
    return np.array(out)


def test_smooth_decreasing_series_has_no_onset():
    t = np.arange(3000)
    loss = 0.2 + np.exp(-t / 400) + 0.05 * np.exp(-t / 40)
    assert first_instability(loss, SD) == -1 == reference_onset(loss)


@pytest.mark.parametrize("start", [3, 10, 17, 500])
def test_growing_zigzag_from_flat_is_found_at_its_start(start):
    loss = zigzag(start + 200, start)
    assert first_instability(loss, SD) == start == reference_onset(loss)


@pytest.mark.parametrize("start", [400, 401])
def test_growing_zigzag_on_a_linear_drift_is_found_at_its_start(start):
    # a linear drift has no curvature: it does not delay the zigzag, of either parity
    t = np.arange(1000)
    loss = zigzag(1000, start, base=2.0 - 1e-3 * t)
    assert first_instability(loss, SD) == start == reference_onset(loss)


def test_zigzag_is_found_when_it_outgrows_the_curvature_of_the_drift():
    # F = 3 − 1e-3·t + c·t² has e_t = 2c; the zigzag a·g^k·(−1)^t adds ±a_{t−2}(1 + g)², so the
    # second differences alternate once a·g^k·(1 + g)² > 2c, k ≈ 313 steps after it starts
    # (it is 1e-9 at its start, 3e-8 when found, far below the drift of 1e-3 per step). The
    # logic is checked here at a rounding-level tolerance, where the curvature is what delays it.
    t = np.arange(2000.0)
    c, amplitude, g = 1e-6, 1e-9, 1.02
    loss = zigzag(2000, 100, growth=g, amplitude=amplitude, base=3.0 - 1e-3 * t + c * t * t)
    onset = first_instability(loss, f"{SD}:tol=1e-10")
    assert onset == reference_onset(loss, rel_tol=1e-10)
    k = np.log(2 * c / (amplitude * (1 + g) ** 2)) / np.log(g)
    assert abs(onset - (100 + 2 + k)) <= 4
    assert first_instability(loss, SD) > onset  # the default tolerance waits until it is larger


def test_raw_differences_need_not_alternate():
    # A zigzag riding on a steep drift: F(t) − F(t−1) < 0 at every step, yet the differences
    # split into two growing branches — the paper's bifurcation — and the onset is found.
    t = np.arange(230)
    loss = zigzag(230, 200, growth=1.05, amplitude=1e-4, base=1.0 - 1e-3 * t)
    assert np.all(np.diff(loss) < 0)
    assert first_instability(loss, SD) == 200 == reference_onset(loss)


@pytest.mark.parametrize("kind", ["steady", "decaying", "steady on curved drift"])
def test_oscillation_that_does_not_grow_has_no_onset(kind):
    t = np.arange(20_000)
    osc = 0.01 * (-1.0) ** t
    loss = {
        "steady": 1.0 - 1e-6 * t + osc,
        "decaying": 1.0 + osc * 0.999**t,
        "steady on curved drift": np.exp(-t / 3000) + 0.3 * np.sin(t / 700) + osc,
    }[kind]
    assert first_instability(loss, SD) == -1 == reference_onset(loss)


def test_rounding_noise_is_ignored_but_would_fire_without_the_tolerance():
    rng = np.random.default_rng(0)
    loss = 0.7 * (1 + 1e-14 * rng.standard_normal(20_000))
    assert first_instability(loss, SD) == -1 == reference_onset(loss)
    assert first_instability(loss, f"{SD}:tol=0.0") == reference_onset(loss, rel_tol=0.0) >= 0


def test_the_noise_floor_of_a_relu_loss_is_ignored():
    # Along GD on a ReLU network many units cross their kink every step, and the second
    # differences e_t of F carry a noise of ~1e-6·|F| whose sign flips often (measured at width
    # 100, DCE, η = 0.25); now and then it alternates and "grows" six steps in a row by chance.
    # Here such a run, of the noise's own size, sits in noise: at a rounding-level tolerance it
    # is an onset, at the default it is not.
    rng = np.random.default_rng(1)
    e = 7e-7 * rng.standard_normal(3000)
    e[2000:2008] = 7e-7 * np.array([0.3, -0.4, 0.6, -0.8, 1.1, -1.4, 1.8, -2.2])
    loss = 0.7 - 1e-5 * np.arange(3000) + np.cumsum(np.cumsum(e))
    assert first_instability(loss, f"{SD}:tol=1e-10") == reference_onset(loss, rel_tol=1e-10) >= 0
    assert first_instability(loss, SD) == -1 == reference_onset(loss)
    assert first_instability(loss.astype(np.float32), SD) == -1
    assert first_instability(zigzag(300, 120, amplitude=1e-3).astype(np.float32), SD) == 120


def test_nan_resets_and_a_found_onset_is_kept():
    loss = zigzag(400, 100)
    loss_nan = loss.copy()
    loss_nan[103] = np.nan  # breaks the zigzag before it is confirmed: found later
    # e_103, e_104 and e_105 are NaN, so the first test on three clean second differences is
    # at t = 108, whose zigzag turns first at F(107).
    assert first_instability(loss_nan, SD) == reference_onset(loss_nan) == 107
    loss_nan = loss.copy()
    loss_nan[200:] = np.nan  # a run that diverges after its onset keeps it
    assert first_instability(loss_nan, SD) == 100
    assert first_instability(np.full(50, np.nan), SD) == -1


@pytest.mark.parametrize("n_confirm", [2, 4, 10])
def test_n_confirm(n_confirm):
    loss = zigzag(300, 50)
    # One flat difference (d_55 = 0): steps 51..54 extend the zigzag, 55 and 56 cannot (e_55
    # and e_56 are too small), and it restarts at 57 with its first turning point at F(56).
    loss[55] = loss[54]
    expected = 50 if n_confirm <= 4 else 56
    assert first_instability(loss, f"{SD}:n={n_confirm}") == expected
    assert reference_onset(loss, n_confirm=n_confirm) == expected


def test_gd_on_a_cubic_valley_beyond_the_edge_of_stability_zigzags_at_once():
    # f = λx²/2 + x³/3, λ = 1: GD from x0 = 0.02 with ηλ = 2.02 bounces between walls of
    # different height with growing amplitude from the first step, so the onset is the earliest
    # step the detector can report (3); with ηλ = 1.98 the bounces decay and there is none.
    assert first_instability(gd_on_cubic(2.02, 0.02, 300), SD) == 3
    assert first_instability(gd_on_cubic(1.98, 0.02, 300), SD) == -1
    # From a tiny start the smooth growth of x² dominates the curvature of F until the height
    # difference of the walls (∝ x³) exceeds it; the onset then comes later, where the
    # definition says.
    loss = gd_on_cubic(2.02, 1e-5, 3000)
    onset = first_instability(loss, SD)
    assert onset > 100
    assert onset == reference_onset(loss)


def test_online_update_matches_a_python_loop_of_updates():
    loss = zigzag(120, 60)
    rule = get_detector(SD)
    state = rule.init(jnp.float64)
    onsets = []
    for t, v in enumerate(loss):
        state = rule.update(state, v, t)
        onsets.append(int(state.onset))
    assert onsets[-1] == 60
    # confirmed once n_confirm steps after the first extending step (61) have been seen
    assert onsets.index(60) == 61 + N_CONFIRM - 1


@pytest.mark.parametrize("rule", [SD, "calibrated", "first_difference"])
def test_detector_vmaps_over_runs(rule):
    series = np.stack([zigzag(400, s) for s in (100, 140, 190)] + [np.ones(400)])
    det = get_detector(rule)

    def scan(loss_T):
        def body(state, inputs):
            return det.update(state, *inputs), None

        state, _ = jax.lax.scan(body, det.init(), (loss_T, jnp.arange(400)))
        return state.onset

    want = [first_instability(x, rule) for x in series]
    assert want[-1] == -1 and min(want[:3]) >= 0, want
    np.testing.assert_array_equal(jax.jit(jax.vmap(scan))(series), want)


def test_online_detector_in_the_engine_equals_first_instability_of_the_recorded_loss():
    # MSE on the spiral, width 8, η around 2/λ_max(w_0) ≈ 2/4.3: some runs start a period-2
    # oscillation, some never do. Two chunks exercise the carried state; the run's own rule and
    # the watched ones each agree with the same rule applied to the recorded loss.
    rules = (SD, "calibrated", "first_difference")
    config = SweepConfig(
        loss=("mse",),
        width=(8,),
        eta=(0.44, 0.45, 0.46, 0.47, 0.48),
        amplitude=(1.0,),
        period=(100,),
        seeds=3,
        steps=300,
        record_every=1,
        chunk_steps=150,
        detector=rules[0],
        watch=rules[1:],
    )
    run = run_sweep(config)
    online = [run["instability_step"].reshape(-1)]
    online += [run["watch_step"][..., i].reshape(-1) for i in range(len(rules) - 1)]
    for rule, steps in zip(rules, online, strict=True):
        offline = [first_instability(series, rule) for series in run["loss"].reshape(-1, 300)]
        np.testing.assert_array_equal(steps, offline, err_msg=rule)
        assert (steps >= 0).any() and (steps < 0).any(), (
            f"{rule}: expected both runs with and without an onset; if the engine's dynamics "
            f"changed, pick η again (onsets: {steps.tolist()})"
        )


# ---------------------------------------------------------------------------------------------
# The calibrated rule (the default): its own noise floor, geometric growth.


def reference_calibrated(loss_T, k=5.0, growth=1.01, n=24, window=64, rise=1e-3):
    """The calibrated rule of the module docstring as a plain Python loop: (onset, lo, hi)."""
    f = [float(v) for v in loss_T]
    stretch, step_size = n + 3, 3.0 / window
    p = [math.nan] * len(f)
    log_median, seen, floor, count = math.nan, 0, math.nan, 0

    def log_abs(j):
        return math.log(abs(p[j])) if j >= 0 and math.isfinite(p[j]) and p[j] != 0 else math.nan

    for t in range(len(f)):
        if t >= 3:
            p[t] = (f[t] - 3 * f[t - 1] + 3 * f[t - 2] - f[t - 3]) / (2 * abs(f[t]))
        log_p = log_abs(t)
        if math.isfinite(log_p):
            step = np.sign(log_p - log_median) if math.isfinite(log_median) else 0.0
            log_median = log_p if math.isnan(log_median) else log_median + step_size * step
            seen += 1
        above = k * floor
        pt, p1 = p[t], p[t - 1] if t >= 1 else math.nan
        extends = pt * p1 < 0 and abs(pt) > above and abs(p1) > above
        count = count + 1 if extends else 0
        if count >= stretch:
            slopes = []
            for branch in (0, 1):  # least squares of log|p| against the step, per branch
                steps = [t - a for a in range(branch, n, 2)]
                ys = [log_abs(j) for j in steps]
                slopes.append(np.polyfit(steps, ys, 1)[0])
            rate = float(np.mean(slopes))
            if rate >= math.log(growth):
                size = 0.5 * (log_abs(t) + log_abs(t - 1))
                began = t - math.ceil((size - math.log(floor)) / max(rate, 1e-12))
                return t - stretch, min(max(began, 0), t - stretch), t
        if seen >= window:
            median = math.exp(log_median)
            floor = median if math.isnan(floor) else min(median, floor * (1 + rise))
    return -1, -1, -1


def noisy_zigzag(start, noise, growth, seed, n=1500, amplitude=None):
    """A loss with a slow decay and a Γ-like drift (a sinusoid), white noise of relative size
    ``noise``, and from ``start`` a period-2 zigzag growing by ``growth`` a step from 3× the
    noise (capped at 5 % of the loss)."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    base = 1.0 + 0.3 * np.exp(-t / 800) + 0.05 * np.sin(2 * np.pi * t / 700)
    a0 = 3 * noise if amplitude is None else amplitude
    osc = np.where(t >= start, a0 * growth ** np.maximum(t - start, 0) * (-1.0) ** t, 0.0)
    return base + np.clip(osc, -0.05, 0.05) + noise * rng.standard_normal(n)


@pytest.mark.parametrize("noise", [1e-9, 1e-7, 1e-6, 1e-5, 1e-4])
@pytest.mark.parametrize("growth", [1.05, 1.2])
def test_calibrated_finds_geometric_growth_near_its_start_at_every_noise_level(noise, growth):
    loss = noisy_zigzag(600, noise, growth, seed=int(1e3 * growth))
    onset, lo, hi = first_instability(loss, interval=True)
    ref = reference_calibrated(loss)
    assert onset == ref[0] and hi == ref[2] and abs(lo - ref[1]) <= 1, (onset, lo, hi, ref)
    # the zigzag has to outgrow 5× the floor (3× noise at its start): a few e-folds at most
    assert 600 <= onset <= 600 + 5 * np.log(5) / np.log(growth), onset
    assert lo <= onset < hi and lo <= 600 + 5, (lo, onset, hi)  # growth began before the onset
    # the old rule's one tolerance finds the same zigzag late in quiet runs
    if noise <= 1e-7:
        assert first_instability(loss, SD) > onset + 5


@pytest.mark.parametrize("noise", [0.0, 1e-8, 1e-6, 1e-4])
@pytest.mark.parametrize(
    "kind", ["noise and drift", "drift with kinks", "decaying zigzag", "sustained zigzag"]
)
def test_calibrated_ignores_what_does_not_grow_geometrically(kind, noise):
    t = np.arange(4000)
    rng = np.random.default_rng(7)
    base = 1.0 + 0.3 * np.exp(-t / 800) + 0.05 * np.sin(2 * np.pi * t / 700)
    alt = (-1.0) ** t
    loss = base + noise * rng.standard_normal(t.size)
    if kind == "drift with kinks":  # Γ's triangle: the slope of F turns at every half period
        loss += 0.02 * np.abs(((t / 250) % 2) - 1)
    elif kind == "decaying zigzag":  # appears at once at step 600, then decays 5 % a step
        loss += np.where(t >= 600, 1e-2 * 0.95 ** np.maximum(t - 600, 0) * alt, 0)
    elif kind == "sustained zigzag":  # driven near the edge: it creeps up by 0.05 % a step
        loss += np.where(t >= 600, 1e-3 * 1.0005 ** np.maximum(t - 600, 0) * alt, 0)
    assert first_instability(loss) == -1
    assert reference_calibrated(loss)[0] == -1
    if kind == "noise and drift" and noise >= 1e-4:
        # where the old rule's tolerance sits at the noise, noise alone is an onset for it
        assert first_instability(loss, SD) >= 0


def test_calibrated_waits_for_its_floor_and_resets_on_nan():
    loss = noisy_zigzag(30, 1e-6, 1.2, seed=3, n=400)
    onset = first_instability(loss)
    # no floor before 64 values of p (steps 3..66), so the onset is confirmed after that
    assert onset >= 0 and onset + get_detector().lag >= 3 + CALIBRATED["window"]
    broken = noisy_zigzag(600, 1e-6, 1.05, seed=4)
    clean = first_instability(broken)
    broken[clean + 2] = np.nan  # inside the confirming stretch: it must start again
    later = first_instability(broken)
    assert later > clean and later == reference_calibrated(broken)[0]
    assert first_instability(np.full(200, np.nan)) == -1


def test_detector_names_are_checked_and_filled_in():
    assert get_detector().name == "calibrated:k=5,growth=1.01,n=24,window=64,rise=0.001"
    assert get_detector("second_difference:tol=1e-4").name == "second_difference:tol=0.0001"
    for bad, message in [
        ("nonsense", "unknown detector"),
        ("calibrated:tol=1", "unknown key"),
        ("calibrated:k", "key=value"),
        ("calibrated:growth=0.5", "growth >= 1"),
        ("second_difference:n=2.5", "whole number"),
        ("first_difference:tol=x", "must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            get_detector(bad)


def test_a_float64_series_without_float64_jax_is_refused_not_truncated():
    """Read in float32 the rules' relative tolerances would move the onset: a float64 series
    with JAX's float64 off raises, a float32 one is read as given."""
    series = np.ones(50)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            first_instability(series)
        assert first_instability(series.astype(np.float32)) == -1
    assert first_instability(series) == -1
