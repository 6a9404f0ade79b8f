"""Detecting the first instability (period-2 onset) of gradient descent from the loss alone.

Decision (SPEC §2): the first instability is where the loss F starts a period-2 oscillation whose
amplitude grows (the bifurcation of the paper's Fig. 2). Detecting it from F, not from λ, keeps
the comparison of λ at the onset with 2/η honest. Three rules are implemented, each a pair of
pure functions (init, update) that runs online inside the compiled training scan at no memory
cost, and is applied to a recorded series by :func:`first_instability`. Each is named by a
string, ``"name"`` or ``"name:key=value,…"`` (:func:`get_detector`):

``calibrated`` (the default; keys ``k``, ``growth``, ``n``, ``window``)
    Measures each run against its own noise. The period-2 component of F is read from the
    third difference, relative to |F|,

        p_t = (F(t) − 3F(t−1) + 3F(t−2) − F(t−3)) / (2|F(t)|),

    in which a drift enters only through the change of its curvature (a zigzag ±a·(−1)^t gives
    p_t = ±4a/|F|). Its noise floor σ_t is a running median of |p| (a sign update of log σ by
    3/``window`` a step, valid after ``window`` values), that follows the median down at once
    but rises by at most a factor 1 + ``rise`` a step, so that a zigzag in the making does not
    raise its own floor. Step t *extends* a growing zigzag when

        p_t·p_{t−1} < 0,  |p_t| > k·σ_{t−1},  |p_{t−1}| > k·σ_{t−1}   (alternating, above the floor)

    and the onset is confirmed at step t once n + 3 consecutive steps extend it and the
    zigzag grows geometrically: the least-squares slope of log|p| against the step over the
    last n values, fitted on each branch (every other value) apart and averaged, is at least
    ln(growth). (p's stencil spans 4 losses, so a zigzag that appears at once still ramps up
    over p's first 3 values: the fit never reaches them.) A period-2 mode of GD that is not
    driven multiplies its amplitude by ηλ − 1 per step, so ``growth`` = 1.01 asks for
    λ ≳ 1.005·2/η there; a *driven* one (Γ(t) moves the valley every step) grows as its
    response ∝ 1/(2 − ηλ) rises, i.e. before λ reaches 2/η, and this rule sees it when that
    growth exceeds 1 % a step. A steady or decaying zigzag, noise, a drift, or a drift whose
    slope turns (Γ's triangle) does not fire it. The onset is t − n − 3, the first step of the
    stretch; the reported interval is [where the growth began, t], the first found by
    extrapolating the fitted growth back to the floor. Defaults k = 5, growth = 1.01, n = 24,
    window = 64, rise = 1e-3 were fixed on synthetic series (``tests/test_instability.py``)
    and on the small runs of ``tests/test_onset.py`` before any run of Fig. 4 used them;
    ``docs/results/fig4_instability/sensitivity.json`` measures what other values change.

``second_difference`` (key ``tol``, default 1e-5; ``n`` = 6)
    The rule in force until the calibrated one: with e_t = F(t) − 2F(t−1) + F(t−2),
    step t extends when e_t·e_{t−1} < 0, |e_{t−1}|, |e_t| > tol·|F(t)| and
    |e_t| − |e_{t−2}| > tol·|F(t)|; n consecutive such steps confirm, the onset is t − n.
    Its one global tolerance decides where it fires: the jitter a ReLU network's F carries
    (units crossing their kinks) differs from run to run, and on Fig. 4's runs the mean
    η·λ1/2 at its onsets moves from 0.70–0.92 to 0.94–1.04 between tol = 1e-6 and 1e-4
    (``docs/results/fig4_instability/sensitivity.json``).

``first_difference`` (key ``tol``, default 1e-5; ``n`` = 6)
    The rule SPEC first wrote: with d_t = F(t) − F(t−1), step t extends when
    d_t·d_{t−1} < 0, |d_{t−1}|, |d_t| > tol·|F(t)| and |d_t| − |d_{t−2}| > tol·|F(t)|. Under a
    Γ-driven drift both branches of d lie on one side of zero until the zigzag outgrows the
    drift, so it fires late.

Every state carries ``onset`` (−1 while none; kept once found), ``lo`` and ``hi`` (the interval
around the onset: where growth began and where it was confirmed) and ``count``. A NaN loss (a
diverged run) fails every test: the count resets and nothing is confirmed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT = "calibrated"
N_CONFIRM = 6  # steps that confirm an onset under the difference rules
REL_TOL = 1e-5  # their default tolerance, relative to |F|
CALIBRATED = dict(k=5.0, growth=1.01, n=24, window=64, rise=1e-3)


class Detector(NamedTuple):
    """A named onset rule: ``init(dtype) -> state``, ``update(state, loss, step) -> state``;
    ``lag``: the onset lies at most this many steps before the step that confirms it."""

    name: str
    init: Callable
    update: Callable
    lag: int


class DifferenceState(NamedTuple):
    """Carry of the difference rules (scalars; a leading axis R when batched over runs)."""

    prev_loss: jax.Array  # F(t−1)
    prev_prev_loss: jax.Array  # F(t−2)
    a1: jax.Array  # the rule's difference at t−1
    a2: jax.Array  # … at t−2
    count: jax.Array  # consecutive steps that extended a growing zigzag
    onset: jax.Array  # first confirmed onset step, −1 while none
    lo: jax.Array
    hi: jax.Array


class CalibratedState(NamedTuple):
    """Carry of the calibrated rule: the last three losses, the last values of p, the floor."""

    f_3: jax.Array  # F(t−1), F(t−2), F(t−3)
    p_R: jax.Array  # p_t at slot t mod R (NaN where not yet seen)
    log_median: jax.Array  # running estimate of the median of log|p|
    seen: jax.Array  # finite values of p seen so far
    floor: jax.Array  # σ_{t−1}, NaN until ``window`` values were seen
    count: jax.Array
    onset: jax.Array
    lo: jax.Array
    hi: jax.Array


def _no_onset():
    return tuple(jnp.full((), -1, jnp.int32) for _ in range(3))


def _difference(order: int, tol: float, n: int) -> Detector:
    def init(dtype=jnp.float64):
        nan = jnp.full((), jnp.nan, dtype)
        return DifferenceState(nan, nan, nan, nan, jnp.zeros((), jnp.int32), *_no_onset())

    def update(state: DifferenceState, loss, step):
        loss = jnp.asarray(loss)
        thr = tol * jnp.abs(loss)
        d = loss - state.prev_loss
        a = d if order == 1 else d - (state.prev_loss - state.prev_prev_loss)
        extends = (
            (a * state.a1 < 0)
            & (jnp.abs(state.a1) > thr)
            & (jnp.abs(a) > thr)
            & (jnp.abs(a) - jnp.abs(state.a2) > thr)
        )
        count = jnp.where(extends, state.count + 1, 0).astype(jnp.int32)
        found = (count >= n) & (state.onset < 0)
        onset = jnp.where(found, step - n, state.onset).astype(jnp.int32)
        hi = jnp.where(found, step, state.hi).astype(jnp.int32)
        return DifferenceState(loss, state.prev_loss, a, state.a1, count, onset, onset, hi)

    name = "first_difference" if order == 1 else "second_difference"
    return Detector(f"{name}:tol={tol:g}", init, update, n)


def _calibrated(k: float, growth: float, n: int, window: int, rise: float) -> Detector:
    # The stencil of p spans 4 losses, so a zigzag that appears at once (not grown) still ramps
    # up over p's first 3 values: the growth is fitted to the last n values of a stretch of at
    # least n + 3, never to those 3.
    stretch = n + 3
    step_size = 3.0 / window  # of the running median, in log units per step
    age_n = np.arange(n)
    # least-squares slope of log|p| against the step, on each branch (every other value) apart,
    # so that two branches of different sizes (a zigzag on a curved drift) do not tilt it
    weights_n = np.zeros(n)
    for branch in (0, 1):
        on = age_n % 2 == branch
        x = -age_n[on].astype(float)
        weights_n[on] = (x - x.mean()) / np.sum((x - x.mean()) ** 2) / 2  # mean of the two

    def init(dtype=jnp.float64):
        nan = jnp.full((), jnp.nan, dtype)
        zero = jnp.zeros((), jnp.int32)
        return CalibratedState(
            jnp.full((3,), jnp.nan, dtype),
            jnp.full((n,), jnp.nan, dtype),
            nan,
            zero,
            nan,
            zero,
            *_no_onset(),
        )

    def update(state: CalibratedState, loss, step):
        loss = jnp.asarray(loss)
        f1, f2, f3 = state.f_3
        p = (loss - 3 * f1 + 3 * f2 - f3) / (2 * jnp.abs(loss))
        p_R = state.p_R.at[step % n].set(p)
        log_abs_n = jnp.log(jnp.abs(p_R[(step - age_n) % n]))  # ages 0, 1, …, n − 1

        # the median of log|p| by a sign update (it moves by step_size towards each new value,
        # so half the values lie above it once it has settled): O(1) a step, no sorting
        log_p = log_abs_n[0]
        usable = jnp.isfinite(log_p)
        log_median = jnp.where(
            jnp.isnan(state.log_median),
            log_p,
            state.log_median + step_size * jnp.sign(log_p - state.log_median),
        )
        log_median = jnp.where(usable, log_median, state.log_median)
        seen = state.seen + usable.astype(jnp.int32)
        median = jnp.where(seen >= window, jnp.exp(log_median), jnp.nan)
        # the floor follows the median down at once, up by at most a factor 1 + rise a step
        floor = jnp.where(
            jnp.isnan(state.floor), median, jnp.minimum(median, state.floor * (1 + rise))
        )
        floor = jnp.where(jnp.isnan(median), state.floor, floor)

        p1 = p_R[(step - 1) % n]
        above = k * state.floor  # the floor before this step's value moved it
        extends = (p * p1 < 0) & (jnp.abs(p) > above) & (jnp.abs(p1) > above)
        count = jnp.where(extends, state.count + 1, 0).astype(jnp.int32)
        rate = jnp.sum(weights_n * log_abs_n)  # log growth per step over the last n values
        found = (count >= stretch) & (rate >= jnp.log(growth)) & (state.onset < 0)
        # the step where the measured growth would have left the floor
        size = 0.5 * (log_abs_n[0] + log_abs_n[1])
        began = step - jnp.ceil((size - jnp.log(state.floor)) / jnp.maximum(rate, 1e-12))
        began = jnp.clip(jnp.nan_to_num(began, nan=0.0), 0, step - stretch).astype(jnp.int32)
        onset = jnp.where(found, step - stretch, state.onset).astype(jnp.int32)
        lo = jnp.where(found, began, state.lo).astype(jnp.int32)
        hi = jnp.where(found, step, state.hi).astype(jnp.int32)
        f_3 = jnp.stack([loss, f1, f2])
        return CalibratedState(f_3, p_R, log_median, seen, floor, count, onset, lo, hi)

    name = f"calibrated:k={k:g},growth={growth:g},n={n},window={window},rise={rise:g}"
    return Detector(name, init, update, stretch)


def _parse(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"detector {spec!r}: expected key=value, got {item!r}")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"detector {spec!r}: {key} must be a number, got {value!r}") from None
    return name.strip(), params


NAMES = ("calibrated", "second_difference", "first_difference")


def get_detector(spec: str = DEFAULT) -> Detector:
    """The detector named by ``spec`` (see the module docstring); ``ValueError`` for an unknown
    name, key or value. Its ``name`` is the spec in full, with every default filled in."""
    name, params = _parse(spec)
    if name == "calibrated":
        allowed = CALIBRATED
    elif name in ("second_difference", "first_difference"):
        allowed = dict(tol=REL_TOL, n=N_CONFIRM)
    else:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(NAMES)}")
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(
            f"detector {spec!r}: unknown key(s) {sorted(unknown)}; {name} takes {sorted(allowed)}"
        )
    p = {**allowed, **params}
    n = p["n"]
    if n < 1 or n != int(n):
        raise ValueError(f"detector {spec!r}: n must be a whole number >= 1, got {n:g}")
    if name == "calibrated":
        if not (0 < p["k"] < math.inf and p["growth"] >= 1 and p["window"] >= 4 and p["rise"] >= 0):
            raise ValueError(f"detector {spec!r}: needs k > 0, growth >= 1, window >= 4, rise >= 0")
        return _calibrated(p["k"], p["growth"], int(n), int(p["window"]), p["rise"])
    if not p["tol"] >= 0:
        raise ValueError(f"detector {spec!r}: tol must be >= 0, got {p['tol']:g}")
    return _difference(1 if name == "first_difference" else 2, p["tol"], int(n))


def first_instability(loss_T, detector: str = DEFAULT, *, interval: bool = False):
    """Onset step of a loss series ``loss_T`` sampled at steps 0..T−1 under ``detector``, or −1;
    with ``interval=True`` the triple (onset, lo, hi).

    Runs the detector's update over the series, so it agrees exactly with the online detector
    of the training engine fed the same losses. A float64 series needs JAX's float64
    (``jax_enable_x64``): rather than read it in float32, where the rules' relative tolerances
    would move the onset, this raises ``ValueError``.
    """
    det = get_detector(detector)
    if np.asarray(loss_T).dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "a float64 loss series needs jax.config.update('jax_enable_x64', True) "
            "(or pass it as float32 on purpose)"
        )
    loss_T = jnp.asarray(loss_T)

    def body(state, inputs):
        return det.update(state, *inputs), None

    steps = jnp.arange(loss_T.shape[0], dtype=jnp.int32)
    state, _ = jax.lax.scan(body, det.init(loss_T.dtype), (loss_T, steps))
    if interval:
        return int(state.onset), int(state.lo), int(state.hi)
    return int(state.onset)
