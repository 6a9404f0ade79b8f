"""Optimisers, mini-batches and the class order inside the compiled run, against plain Python
loops that call optax (and the losses, the network and Γ) directly."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from shared import dynloss

from dynloss_jax import engine, objective, optim, tracking
from dynloss_jax.data import make_data, spiral
from dynloss_jax.losses import get_loss
from dynloss_jax.model import flat_model
from dynloss_jax.plotting import plot_run
from dynloss_jax.results import load_run
from dynloss_jax.schedule import gamma
from dynloss_jax.spec import RunSpec, make_hyper
from dynloss_jax.sweep import SweepConfig, run_sweep

STEPS = 30
# Non-default values, so a hyperparameter that is dropped on the way shows.
HP = dict(beta=0.8, b1=0.85, b2=0.99, eps=1e-7, decay=0.95)
ETA = {"gd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01, "rmsprop": 0.01}
OPTAX = {  # optax itself, not through dynloss_jax.optim
    "gd": lambda eta: optax.sgd(eta),
    "momentum": lambda eta: optax.sgd(eta, momentum=HP["beta"]),
    "nesterov": lambda eta: optax.sgd(eta, momentum=HP["beta"], nesterov=True),
    "adam": lambda eta: optax.adam(eta, b1=HP["b1"], b2=HP["b2"], eps=HP["eps"]),
    "rmsprop": lambda eta: optax.rmsprop(eta, decay=HP["decay"], eps=HP["eps"], eps_in_sqrt=False),
}


def _data(points=8):
    x, y = spiral(points, seed=0)
    xv, yv = spiral(points, seed=1)
    return make_data(x, y, xv, yv)


def _python_loop(name, *, loss="dce", width=4, seed=0, amplitude=10.0, period=10, batch=0):
    """Losses F_t(w_t) (full batch) and the final w, by optax in a Python loop."""
    data = _data()
    model = flat_model(width)
    w = model.init(jax.random.split(jax.random.key(seed))[0])
    opt = OPTAX[name](ETA[name])
    state = opt.init(w)
    f = get_loss(loss)

    @jax.jit
    def step(w, state, t):
        g = gamma(t, n_classes=3, amplitude=amplitude, period=period)
        if batch:
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x6261), t)
            idx = jax.random.choice(key, data.x_train.shape[0], (batch,), replace=False)
            xb, yb = data.x_train[idx], data.y_train[idx]
        else:
            xb, yb = data.x_train, data.y_train
        grad = jax.grad(lambda w: f(model.apply(w, xb), yb, g))(w)
        full = f(model.apply(w, data.x_train), data.y_train, g)
        updates, state = opt.update(grad, state, w)
        return optax.apply_updates(w, updates), state, full

    losses = []
    for t in range(STEPS):
        w, state, full = step(w, state, t)
        losses.append(float(full))
    return np.array(losses), np.asarray(w)


def _engine(name, *, loss="dce", width=4, seed=0, amplitude=10.0, period=10, batch=0):
    spec = RunSpec(
        loss=loss, width=width, n_steps=STEPS, record_every=1, optimizer=name, batch_points=batch
    )
    hyper = make_hyper(
        eta=[ETA[name]], amplitude=[amplitude], period=[period], seed=[seed], opt_hp=HP
    )
    init, advance, _ = engine.compiled(spec, STEPS)
    data = _data()
    state, records, _, _ = advance(init(hyper, data), hyper, data)
    return np.asarray(records.loss[0]), np.asarray(state.w_N[0]), state


@pytest.mark.parametrize("name", sorted(optim.HYPERPARAMS))
def test_each_optimizer_in_the_compiled_run_equals_optax_in_a_python_loop(name):
    loss_t, w_t, state = _engine(name)
    loss_py, w_py = _python_loop(name)
    assert np.all(np.isfinite(loss_t)) and abs(loss_t[-1] - loss_t[0]) > 1e-3  # it moved
    np.testing.assert_allclose(loss_t, loss_py, rtol=1e-12, atol=0)
    np.testing.assert_allclose(w_t, w_py, rtol=1e-12, atol=1e-14)
    leaves = jax.tree.leaves(state.opt_state)
    assert (len(leaves) == 0) == (name == "gd")  # the state is carried (none for gd)


def test_mini_batches_equal_a_python_loop_with_the_same_keys():
    loss_t, w_t, _ = _engine("momentum", batch=8)
    loss_py, w_py = _python_loop("momentum", batch=8)
    np.testing.assert_allclose(loss_t, loss_py, rtol=1e-12, atol=0)
    np.testing.assert_allclose(w_t, w_py, rtol=1e-12, atol=1e-14)
    full_t, _, _ = _engine("momentum")
    assert np.max(np.abs(full_t[1:] - loss_t[1:])) > 1e-6  # the batches changed the path


def test_batch_indices_are_distinct_reproducible_and_change_with_the_step():
    idx = [np.asarray(objective.batch_indices(3, t, 24, 8)) for t in (0, 0, 1)]
    assert len(set(idx[0].tolist())) == 8 and idx[0].min() >= 0 and idx[0].max() < 24
    np.testing.assert_array_equal(idx[0], idx[1])
    assert not np.array_equal(np.sort(idx[0]), np.sort(idx[2]))
    full = np.asarray(objective.batch_indices(3, 5, 24, 24))
    np.testing.assert_array_equal(np.sort(full), np.arange(24))


class _Stop(Exception):
    pass


def _stop_after(n_calls):
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == n_calls:
            raise _Stop

    return progress


def test_optimizer_state_and_spectrum_records_resume_bit_identically(tmp_path):
    config = SweepConfig(
        loss=("dce",),
        width=(4,),
        steps=40,
        chunk_steps=10,
        record_every=2,
        eig_every=10,
        density_every=10,
        density_matvecs=8,
        trace_every=20,
        layer_sharpness=True,
        optimizer="adam",
        eta=(0.01,),
        amplitude=(10.0,),
        period=(20,),
        seeds=2,
        points_per_class=6,
        batch_points=10,
    )
    with pytest.raises(_Stop):
        # a checkpoint after every piece, so that the cut leaves one to resume from
        run_sweep(config, tmp_path / "cut", progress=_stop_after(2), checkpoint_every=0)
    assert (tmp_path / "cut" / "checkpoint-0-state.npz").exists()
    resumed = run_sweep(config, tmp_path / "cut", resume=True)
    straight = run_sweep(config, tmp_path / "straight")
    assert set(resumed.arrays) == set(straight.arrays)
    assert {"density_nodes", "trace", "layer_lam"} <= set(straight.arrays)
    assert straight.config["blocks"] == [
        "Dense_0/bias", "Dense_0/kernel", "Dense_1/bias", "Dense_1/kernel"
    ]  # fmt: skip
    for k, a in straight.arrays.items():
        assert np.array_equal(resumed.arrays[k], a, equal_nan=True), k
    assert np.all(np.isfinite(straight.arrays["density_nodes"]))
    plot_run(load_run(tmp_path / "straight"), tmp_path / "spectrum.png")  # every panel drawn
    assert (tmp_path / "spectrum.png").stat().st_size > 20_000


def test_train_on_wine_with_momentum_and_a_random_class_order_from_the_command_line(
    capsys, tmp_path
):
    pytest.importorskip("sklearn")
    out = tmp_path / "wine"
    code, _, err = dynloss(
        capsys, "train", "--data", "wine", "--optimizer", "momentum", "--beta", "0.5",
        "--loss", "dce", "--width", "4", "--eta", "0.1", "--amplitude", "4", "--period", "5",
        "--steps", "60", "--record-every", "1", "--order-seed", "7", "--quiet", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    run = load_run(out)
    assert run.config["data"]["name"] == "wine" and run.config["data"]["n_classes"] == 3
    assert run.config["data"]["n_train"] == 133 and run.config["data"]["n_features"] == 13
    assert run["gamma"].shape[-1] == 3 and np.all(np.isfinite(run["final_val_acc"]))
    assert run.config["threshold"]["label"] == "2(1+β)/η"
    assert run.config["threshold"]["value"] == [pytest.approx(2 * 1.5 / 0.1)]
    assert (out / "training.png").stat().st_size > 10_000
    recorded = run.arrays["gamma"][0, 0, 0, 0, 0, 0]
    expected = [gamma(t, n_classes=3, amplitude=4.0, period=5, order_seed=7) for t in range(60)]
    np.testing.assert_allclose(recorded, np.array(expected), rtol=1e-15, atol=0)
    in_order = [gamma(t, n_classes=3, amplitude=4.0, period=5) for t in range(60)]
    assert not np.allclose(recorded, np.array(in_order))  # the order changed


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--optimizer", "sgd"], "--optimizer"),
        (["--beta", "1"], "--beta"),
        (["--batch-points", "1000"], "--batch-points"),
        (["--density-every", "3"], "--density-every"),
        (["--eig-every", "10", "--trace-every", "20", "--density-every", "30"], "--trace-every"),
        (["--layer-sharpness"], "--layer-sharpness"),
        (["--order-seed", "-2"], "--order-seed"),
    ],
)
def test_bad_new_settings_exit_2_naming_the_flag(capsys, tmp_path, flags, message):
    base = ["train", "--width", "3", "--steps", "60", "--points-per-class", "4", "--quiet"]
    code, _, err = dynloss(capsys, *base, *flags, "--out", tmp_path / "x")
    assert code == 2 and message in err, err
    assert not (tmp_path / "x").exists()


def _dense_hessian(spec, hyper, data, w, step):
    g = objective.gamma_at(spec, step, hyper)

    def f(w):
        return get_loss(spec.losses[0])(spec.model.apply(w, data.x_train), data.y_train, g)

    return np.asarray(jax.hessian(f)(w))


def _single(tree):
    return jax.tree.map(lambda a: a[0], tree)


def _two_chunks(spec, hyper, chunk):
    data = _data(6)
    init, advance, _ = engine.compiled(spec, chunk)
    state, *_ = advance(init(hyper, data), hyper, data)
    after = _single(state)
    state, records, eig_records, spectra = advance(state, hyper, data)
    return data, after, eig_records, spectra


def test_adaptive_lambda_is_that_of_the_preconditioned_dense_hessian():
    spec = RunSpec(
        loss="dce", width=3, n_steps=20, record_every=1, eig_every=10, num_matvecs=21,
        optimizer="adam", layer_sharpness=True, layer_matvecs=9,
    )  # fmt: skip
    hyper = make_hyper(eta=[0.01], amplitude=[10.0], period=[20], seed=[0], opt_hp=HP)
    data, after, eig_records, _ = _two_chunks(spec, hyper, 10)
    H = _dense_hessian(spec, _single(hyper), data, after.w_N, 10)
    p = np.asarray(
        optim.preconditioner("adam", after.opt_state, {"b2": HP["b2"], "eps": HP["eps"]})
    )
    r = 1 / np.sqrt(p)
    lam = np.linalg.eigvalsh(r[:, None] * H * r[None, :])
    measured = np.asarray(eig_records.lam_K[0, 0])
    np.testing.assert_allclose(measured, lam[::-1][:2], rtol=1e-9)
    assert not np.allclose(measured[0], np.linalg.eigvalsh(H)[-1], rtol=1e-3)  # P mattered
    # per block: λ1 of the diagonal block of the preconditioned Hessian
    blocks = tracking.layer_blocks(spec)[1].astype(bool)
    Hp = r[:, None] * H * r[None, :]
    dense = [np.linalg.eigvalsh(Hp[np.ix_(m, m)])[-1] for m in blocks]
    np.testing.assert_allclose(np.asarray(eig_records.layer_lam_L[0, 0]), dense, rtol=1e-9)


@functools.cache
def _spectrum_case():
    n = flat_model(3).n_params  # 21
    spec = RunSpec(
        loss="dce", width=3, n_steps=20, record_every=1, eig_every=10, density_every=10,
        trace_every=10, density_matvecs=n, density_probes=64, trace_samples=12,
        layer_sharpness=True, layer_matvecs=9,
    )  # fmt: skip
    hyper = make_hyper(eta=[0.5], amplitude=[10.0], period=[20], seed=[1])
    data, after, eig_records, spectra = _two_chunks(spec, hyper, 10)
    H = _dense_hessian(spec, _single(hyper), data, after.w_N, 10)
    return spec, H, eig_records, spectra


def test_in_run_density_is_the_dense_spectrum():
    spec, H, _, spectra = _spectrum_case()
    lam = np.linalg.eigvalsh(H)
    rho = spectra["density"]
    assert np.asarray(rho.step).tolist() == [[10]]
    nodes, weights = np.asarray(rho.nodes_SxM[0, 0]), np.asarray(rho.weights_SxM[0, 0])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    assert weights.min() >= 0
    # m = N steps: every node that carries weight is an eigenvalue of the dense Hessian
    heavy = weights > 1e-10
    gap = np.min(np.abs(nodes[heavy][:, None] - lam[None, :]), axis=1)
    assert np.max(gap) < 1e-8 * np.max(np.abs(lam))
    # the first two moments estimate tr(H)/N and tr(H²)/N within their sampling error
    n = H.shape[0]
    for p, exact in ((1, np.trace(H) / n), (2, np.trace(H @ H) / n)):
        per_probe = np.sum(weights * nodes**p, axis=1)
        se = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        assert abs(per_probe.mean() - exact) < 4 * se, (p, per_probe.mean(), exact, se)


def test_in_run_trace_and_layer_sharpness_are_the_dense_ones():
    spec, H, eig_records, spectra = _spectrum_case()
    tr = spectra["trace"]
    estimate, se = float(tr.estimate[0, 0]), float(tr.standard_error[0, 0])
    assert se > 0 and abs(estimate - np.trace(H)) < 3 * se + 1e-9 * abs(np.trace(H))
    blocks = tracking.layer_blocks(spec)[1].astype(bool)
    dense = [np.linalg.eigvalsh(H[np.ix_(m, m)])[-1] for m in blocks]
    np.testing.assert_allclose(np.asarray(eig_records.layer_lam_L[0, 1]), dense, rtol=1e-9)
    assert len(set(np.round(dense, 6))) == len(dense)  # the blocks differ: no mix-up passes


@pytest.mark.slow
def test_padded_program_gives_the_unpadded_layer_sharpness():
    base = dict(
        loss="dce", n_steps=20, record_every=1, eig_every=10, layer_sharpness=True, layer_matvecs=9
    )
    hyper = make_hyper(eta=[0.5], amplitude=[10.0], period=[20], seed=[1])
    data = _data(6)
    alone = engine.compiled(RunSpec(width=3, **base), 20)
    init, advance, _ = alone
    _, _, eig_alone, _ = advance(init(hyper, data), hyper, data)
    padded_hyper = hyper._replace(width_index=np.zeros(1, np.int32))
    init, advance, _ = engine.compiled(RunSpec(width=(3, 5), **base), 20)
    _, _, eig_padded, _ = advance(init(padded_hyper, data), padded_hyper, data)
    np.testing.assert_allclose(eig_padded.layer_lam_L, eig_alone.layer_lam_L, rtol=1e-10)
    assert jnp.all(jnp.isfinite(eig_padded.layer_lam_L))


def test_a_diverging_momentum_run_leaves_its_neighbour_untouched():
    spec = RunSpec(loss="dmse2", width=4, n_steps=STEPS, record_every=1, optimizer="momentum")
    data = _data()
    init, advance, _ = engine.compiled(spec, STEPS)
    both = make_hyper(
        eta=[ETA["momentum"], 1e6], amplitude=[10.0] * 2, period=[10] * 2, seed=[0] * 2, opt_hp=HP
    )
    state, records, _, _ = advance(init(both, data), both, data)
    assert not bool(state.diverged[0]) and bool(state.diverged[1])
    assert np.all(np.isfinite(np.asarray(state.opt_state[0].trace[1])))  # frozen, finite
    loss_py, w_py = _python_loop("momentum", loss="dmse2")
    np.testing.assert_allclose(np.asarray(records.loss[0]), loss_py, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(state.w_N[0]), w_py, rtol=1e-12, atol=1e-14)


DENSITY_ON_TWO_DEVICES = """
import os, sys, tempfile, warnings
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_enable_x64", True)
from dynloss_jax import SweepConfig, run_sweep
from dynloss_jax.strategy import Strategy
config = SweepConfig(loss=("dce",), width=(8,), seeds=4, steps=200, record_every=5, eig_every=25,
                     density_every=100, density_matvecs=48, period=(100,), amplitude=(5.0,))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    run = run_sweep(config, strategy=Strategy(batch_size=2, n_devices=2))
assert any("deadlock" in str(w.message) for w in caught), [str(w.message) for w in caught]
assert run["density_nodes"].shape[-2:] == (4, 48)
print("finished")
"""


def test_density_with_batched_runs_on_two_cpu_devices_finishes():
    """Two runs per device, 4 probes × 48 Lanczos steps on two host devices: this deadlocked
    in XLA:CPU while the runs (and probes) were vmapped. ``run_sweep`` now runs them one at a
    time per device, says so, and the sweep finishes (in a subprocess, so a hang fails on its
    timeout instead of stopping the suite)."""
    done = subprocess.run(
        [sys.executable, "-c", DENSITY_ON_TWO_DEVICES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-3000:]
