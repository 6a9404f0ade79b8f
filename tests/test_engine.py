"""The compiled engine against a plain Python loop, and sweeps against their parts.

Every sweep here is tiny (P = 12 points, widths 3–5, ≤ 40 steps) and shares one set of static
settings, so the compiled programs are reused across tests.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared import SMALL

from dynloss_jax import engine, flat_model, spiral
from dynloss_jax.data import make_data
from dynloss_jax.spec import Hyper, RunSpec, make_hyper
from dynloss_jax.strategy import Strategy
from dynloss_jax.sweep import SweepConfig, run_sweep

C = 3
FLOAT_ARRAYS = (
    "loss",
    "static_loss",
    "train_acc",
    "val_acc",
    "gamma",
    "final_loss",
    "final_static_loss",
    "final_train_acc",
    "final_val_acc",
)
EXACT_ARRAYS = ("diverged", "diverged_step", "instability_step")


# ---------------------------------------------------------------------------------------------
# An independent twin: plain Python loop of single GD steps, with the authors' weighting.


def authors_gamma(t, amplitude, period, n_steps=None):
    """``c_fn`` of the authors' notebook at step t (τ = t mod T, class ⌊t/T⌋ mod C); Γ ≡ 1 in
    the last period when ``n_steps`` is given (static last period)."""
    if n_steps is not None and t >= n_steps - period:
        return np.ones(C)
    tau, i = t % period, (t // period) % C
    slope = 2 * (amplitude - 1) / period
    w_main = 1 + tau * slope if tau < period / 2 else 2 * amplitude - tau * slope - 1
    res = np.ones(C) + (w_main - 1) * np.eye(C)[i]
    return res / res.sum() * C


def forward(p, x):
    k0, b0, k1, b1 = p
    return jnp.maximum(x @ k0 + b0, 0.0) @ k1 + b1


def twin_loss(name, logits, y, g):
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    per_sample_ce = -jnp.sum(logp * y, axis=1)
    sq = jnp.sum((logits - y) ** 2, axis=1)
    weight = y @ g
    return {
        "ce": jnp.mean(per_sample_ce),
        "dce": jnp.mean(weight * per_sample_ce),
        "mse": jnp.mean(sq),
        "dmse1": jnp.mean(weight * sq),
        "dmse2": jnp.mean(jnp.sum((logits - g * y) ** 2, axis=1)),
    }[name]


def python_loop(
    name,
    static_name,
    w0_layers,
    eta,
    amplitude,
    period,
    n_steps,
    x,
    y,
    xv,
    yv,
    static_last_period=True,
):
    """Returns per-step (loss, static loss, train acc, val acc, Γ), the final metrics and the
    final parameters, from one GD step at a time (in the dtype of ``w0_layers``)."""
    dtype = w0_layers[0].dtype
    x, y, xv, yv = (np.asarray(a, dtype) for a in (x, y, xv, yv))
    last = n_steps if static_last_period else None

    @jax.jit
    def step(p, g):
        def f(p):
            return twin_loss(name, forward(p, x), y, g)

        loss, grad = jax.value_and_grad(f)(p)
        logits = forward(p, x)
        metrics = (
            loss,
            twin_loss(static_name, logits, y, g),
            np.mean(jnp.argmax(logits, 1) == jnp.argmax(y, 1), dtype=np.float64),
            np.mean(jnp.argmax(forward(p, xv), 1) == jnp.argmax(yv, 1), dtype=np.float64),
        )
        return [pi - dtype.type(eta) * gi for pi, gi in zip(p, grad, strict=True)], metrics

    p = [jnp.asarray(a) for a in w0_layers]
    trace = []
    for t in range(n_steps):
        g = authors_gamma(t, amplitude, period, last).astype(dtype)
        p, metrics = step(p, g)
        trace.append([float(m) for m in metrics] + [g])
    _, final = step(p, authors_gamma(n_steps, amplitude, period, last).astype(dtype))
    return trace, [float(m) for m in final], [np.asarray(a) for a in p]


def layers(model, w):
    params = model.unravel(w)["params"]
    return [np.asarray(params[f"Dense_{i}"][k]) for i in range(2) for k in ("kernel", "bias")]


@pytest.mark.parametrize("name", ["dce", pytest.param("dmse2", marks=pytest.mark.slow)])
def test_compiled_run_equals_python_loop(name):
    width, n_steps, chunk = 4, 30, 10
    spec = RunSpec(loss=name, width=width, n_steps=n_steps, record_every=2, static_last_period=True)
    x, y = spiral(points_per_class=4, seed=0)
    xv, yv = spiral(points_per_class=4, seed=1)
    data = make_data(x, y, xv, yv)
    runs = [(0.5, 5.0, 10, 0), (0.3, 3.0, 7, 1)]  # (η, A, T, seed)
    hyper = make_hyper(
        **dict(zip(("eta", "amplitude", "period", "seed"), zip(*runs, strict=True), strict=True))
    )
    init, advance, final = engine.compiled(spec, chunk)
    state = init(hyper, data)
    pieces = []
    for _ in range(n_steps // chunk):  # chunked, as sweeps run
        state, records, _, _ = advance(state, hyper, data)
        pieces.append(records)
    records = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *pieces)
    fin = final(state, hyper, data)
    model = flat_model(width)
    static_name = {"dce": "ce", "dmse2": "mse"}[name]

    for r, (eta, amplitude, period, seed) in enumerate(runs):
        w0 = model.init(jax.random.split(jax.random.key(seed))[0])
        trace, final_metrics, w_final = python_loop(
            name, static_name, layers(model, w0), eta, amplitude, period, n_steps, x, y, xv, yv
        )
        kept = trace[::2]  # records at t = 0, 2, 4, ... (metrics at w_t, before step t)
        got = {
            "loss": records.loss[r],
            "static": records.static_loss[r],
            "train": records.train_acc[r],
            "val": records.val_acc[r],
        }
        want = {
            k: np.array([row[i] for row in kept])
            for i, k in enumerate(("loss", "static", "train", "val"))
        }
        for k in got:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(
            records.gamma_C[r], np.array([row[4] for row in kept]), rtol=1e-13, err_msg="gamma"
        )
        # the static last period: Γ ≡ 1 from n_steps − T on
        last = np.arange(0, n_steps, 2) >= n_steps - period
        np.testing.assert_array_equal(records.gamma_C[r][last], 1.0)
        assert not np.all(records.gamma_C[r][~last] == 1.0)
        np.testing.assert_allclose(
            [fin.loss[r], fin.static_loss[r], fin.train_acc[r], fin.val_acc[r]],
            final_metrics,
            rtol=1e-12,
            atol=1e-12,
        )
        for a, b in zip(layers(model, np.asarray(state.w_N[r])), w_final, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        assert int(state.step[r]) == n_steps and not bool(state.diverged[r])


# ---------------------------------------------------------------------------------------------
# Sweeps against their parts (one shared set of static settings).


def sweep(strategy=None, **kw):
    return run_sweep(SweepConfig(**{**SMALL, **kw}), strategy=strategy)


@pytest.fixture(scope="module")
def multi():
    """widths 3 and 5 × η 0.1 and 0.3 × 2 seeds, in one call."""
    return sweep(width=(3, 5), eta=(0.1, 0.3), seeds=2)


def assert_same_runs(a, b, exact=False):
    for name in FLOAT_ARRAYS + EXACT_ARRAYS:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.shape == y.shape, name
        if exact or name in EXACT_ARRAYS:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14, err_msg=name)


def test_sweep_arrays_have_named_grid_axes(multi):
    assert multi.axes["loss"] == ["loss", "width", "eta", "amplitude", "period", "seed", "record"]
    assert multi["loss"].shape == (1, 2, 2, 1, 1, 2, 20)
    assert multi["gamma"].shape == (1, 2, 2, 1, 1, 2, 20, C)
    assert multi["final_val_acc"].shape == (1, 2, 2, 1, 1, 2)
    np.testing.assert_array_equal(multi["record_step"], np.arange(0, 40, 2))
    assert np.all(np.isfinite(multi["loss"])) and not multi["diverged"].any()
    # the loss decreases on average: the runs train
    assert np.all(multi["loss"][..., -1] < multi["loss"][..., 0])


def test_one_seed_of_a_sweep_equals_that_seed_alone(multi):
    alone = sweep(width=(5,), eta=(0.3,), seeds=1, first_seed=1)
    assert_same_runs(multi.sel(width=5, eta=0.3, seed=1), alone)


def test_a_width_inside_a_multi_width_call_equals_it_alone(multi):
    alone = sweep(width=(5,), eta=(0.1, 0.3), seeds=2)
    assert_same_runs(multi.sel(width=5), alone, exact=True)


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy(batch_size=1, n_devices=1),  # runs one after another on one device
        pytest.param(Strategy(batch_size=0, n_devices=1), marks=pytest.mark.slow),  # one vmap
    ],
)
def test_strategies_give_equal_numbers(multi, strategy):
    other = sweep(width=(3,), eta=(0.1, 0.3), seeds=2, strategy=strategy)
    assert other.config["strategy"] == dataclasses.asdict(strategy)
    assert_same_runs(multi.sel(width=3), other)


def test_no_recompilation_for_new_hyperparameter_values(multi):
    compiles = []

    def listener(event, duration, **kw):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again = sweep(
            width=(3, 5), eta=(0.7, 0.2), amplitude=(3.0,), period=(8,), seeds=2, first_seed=5
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    # ... and the new values were used: Γ follows A = 3, T = 8
    g = again["gamma"][0, 0, 0, 0, 0, 0]
    peak = g[2]  # record 2 is step 4 = T/2, the peak of class 0
    assert peak[0] == pytest.approx(3 * 3.0 / (3.0 + 2), rel=1e-14)
    assert not np.allclose(again["loss"], multi["loss"])


def test_float32_runs_and_equals_a_float32_python_loop():
    f32 = sweep(width=(3,), eta=(0.3,), seeds=1, first_seed=1, dtype="float32")
    assert f32["loss"].dtype == np.float32 and f32["gamma"].dtype == np.float32
    assert f32.config["settings"]["dtype"] == "float32"
    model = flat_model(3, dtype="float32")
    w0 = model.init(jax.random.split(jax.random.key(1))[0])
    trace, final, _ = python_loop(
        "dmse1",
        "mse",
        layers(model, w0),
        0.3,
        5.0,
        10,
        40,
        *spiral(points_per_class=4, seed=0),
        *spiral(points_per_class=4, seed=1),
        static_last_period=False,
    )
    np.testing.assert_allclose(f32["loss"].ravel(), [row[0] for row in trace[::2]], rtol=1e-5)
    np.testing.assert_allclose(f32["final_loss"].ravel(), final[0], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Misuse of the engine API is refused before anything is traced.


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(loss="hinge"), "loss"),
        (dict(width=0), "width"),
        (dict(n_steps=0), "n_steps"),
        (dict(record_every=3, n_steps=10), "multiple"),
        (dict(eig_every=5, record_every=2), "eig_every"),
        (dict(eig_every=-1), "eig_every"),
    ],
)
def test_bad_run_spec_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        RunSpec(**{**dict(loss="dce", width=3, n_steps=20, record_every=1), **kw})


def test_chunk_must_be_a_multiple_of_the_interval():
    spec = RunSpec(loss="dce", width=3, n_steps=20, record_every=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        engine.compiled(spec, 6)


def test_per_run_values_must_be_one_length():
    with pytest.raises(ValueError, match="one length"):
        make_hyper(eta=[1.0, 2.0], amplitude=[5.0], period=[10], seed=[0])
    hyper = make_hyper(
        eta=[1.0, 2.0], amplitude=[5, 6], period=[10, 20], seed=[0, 1], dtype="float32"
    )
    assert hyper.eta.dtype == np.float32 and hyper.period.dtype == np.int32


def test_bad_data_raise():
    x, y = spiral(points_per_class=4, seed=0)
    xv, yv = spiral(points_per_class=4, seed=1)
    with pytest.raises(ValueError, match="data must be"):
        make_data(x[:-1], y, xv, yv)
    bad = y.copy()
    bad[0] = [0, 2, 0]
    with pytest.raises(ValueError, match="one-hot"):
        make_data(x, bad, xv, yv)
    with pytest.raises(ValueError, match="differ"):
        make_data(x, y, *spiral(points_per_class=4, n_classes=4, seed=1))
    # labels with more classes than the run has are refused when the program is traced
    x4, y4 = spiral(points_per_class=4, n_classes=4)
    spec = RunSpec(loss="dce", width=3, n_steps=2, record_every=1)
    data = make_data(x4, y4, x4, y4)
    hyper = Hyper(1.0, 5.0, 10, 0)
    state = jax.eval_shape(lambda: engine.init_state(spec, hyper))
    with pytest.raises(ValueError, match="classes"):
        jax.eval_shape(lambda s: engine.advance_one(spec, 2, s, hyper, data), state)


def test_a_waveform_set_in_the_config_reaches_gamma_in_the_run(capsys, tmp_path):
    """A setting is one field of SweepConfig and its use: ``waveform`` flows to the recorded Γ
    (equal to schedule.gamma with that waveform at every record), and the CLI has its flag."""
    from dynloss_jax.cli import main
    from dynloss_jax.schedule import gamma

    base = {
        **SMALL,
        "loss": ("dce",),
        "width": (3,),
        "eta": (0.5,),
        "amplitude": (9.0,),
        "period": (10,),
    }
    square = run_sweep(SweepConfig(**base, waveform="square"))
    triangle = run_sweep(SweepConfig(**base))
    steps = square["record_step"]
    want = np.stack(
        [
            np.asarray(gamma(int(t), n_classes=3, amplitude=9.0, period=10, waveform="square"))
            for t in steps
        ]
    )
    got = square["gamma"].reshape(-1, len(steps), 3)[0]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert not np.allclose(got, triangle["gamma"].reshape(-1, len(steps), 3)[0])
    with pytest.raises(ValueError, match="waveform"):
        SweepConfig(waveform="saw").validate()
    assert main(["train", "--waveform", "saw", "--out", str(tmp_path / "x")]) == 2
    assert "--waveform saw: must be one of triangle, sine, square" in capsys.readouterr().err
