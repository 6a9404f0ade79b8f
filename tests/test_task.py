"""A researcher's own model, data, loss, schedule and optimiser through the same engine as the
paper's (dynloss_jax.task, dynloss_jax.task_sweep): numbers equal to the built-in path, λ equal
to dense Hessians, every refusal before compiling, new functions new programs, resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynloss_jax as dl
from dynloss_jax import engine
from dynloss_jax.data import load_dataset
from dynloss_jax.model import flat_model
from dynloss_jax.sweep import run_sweep


# --- the paper's DCE and triangle Γ, written here as a user would ----------------------------
def my_dce(logits, y, gamma):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y * gamma, axis=-1))


def my_triangle(step, n_classes, amplitude, period):
    tau = (step % period).astype(jnp.float64)
    t = jnp.asarray(period, jnp.float64)
    rise = 2.0 * (amplitude - 1.0) * tau / t
    fall = 2.0 * (amplitude - 1.0) * (t - tau) / t
    w = 1.0 + jnp.where(2.0 * tau < t, rise, fall)
    raw = jnp.where(jnp.arange(n_classes) == (step // period) % n_classes, w, 1.0)
    return n_classes * raw / jnp.sum(raw)


SMALL = dict(steps=60, record_every=5, eig_every=10, chunk_steps=30)
SPIRAL = dict(points_per_class=12)


def _spiral():
    d = load_dataset("spiral", **SPIRAL)
    return d.x_train, d.y_train.argmax(1), d.x_val, d.y_val


@pytest.fixture(scope="module")
def builtin_dce():
    config = dl.SweepConfig(
        loss=("dce",), width=(8,), eta=(1.0,), amplitude=(5.0,), period=(20,), seeds=2,
        **SPIRAL, **SMALL,
    )  # fmt: skip
    return run_sweep(config)


@pytest.mark.parametrize("model", ["builtin", "flat"])
def test_own_dce_and_triangle_equal_the_builtin_dce_run(builtin_dce, model):
    task = dl.Task(
        model=None if model == "builtin" else flat_model(8),
        data=_spiral(),
        loss=my_dce,
        schedule=my_triangle,
    )
    grid = dict(eta=[1.0], amplitude=[5.0], period=[20], seed=[0, 1])
    if model == "builtin":
        grid["width"] = [8]
    run = run_sweep(task, grid=grid, **SMALL)
    for name in ("loss", "static_loss", "train_acc", "val_acc", "gamma", "lam", "final_val_acc"):
        ours, theirs = np.squeeze(run[name]), np.squeeze(builtin_dce[name])
        assert ours.shape == theirs.shape and np.all(np.isfinite(theirs)), name
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13, err_msg=name)
    assert np.ptp(np.squeeze(builtin_dce["gamma"])[0, :, 0]) > 1.0, "Γ must move"
    assert "instability_step" not in run.arrays  # no onset rule asked for: none compiled


class TanhNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(32)(x))
        x = jnp.tanh(nn.Dense(16)(x))
        return nn.Dense(10)(x)


def focal_dce(logits, y_onehot, gamma, focus):
    p = jax.nn.softmax(logits)
    w = (1 - jnp.sum(p * y_onehot, -1)) ** focus
    return -jnp.mean(w * jnp.sum(gamma * y_onehot * jax.nn.log_softmax(logits), -1))


def two_at_once(step, n_classes, amplitude, period):
    c = (step // period) % n_classes
    g = jnp.ones(n_classes).at[c].set(amplitude).at[(c + 1) % n_classes].set(amplitude)
    return g * n_classes / g.sum()


def _ten_classes(n=60, features=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    centres = rng.normal(size=(10, features))
    x = centres[labels] + 0.5 * rng.normal(size=(n, features))
    return x, labels, x[::2] + 0.1, labels[::2]


def test_the_acceptance_example_runs_and_its_dataset_has_the_focus_axis(tmp_path):
    task = dl.Task(
        model=TanhNet(), data=_ten_classes(), loss=focal_dce, schedule=two_at_once,
        optimizer="gd",
    )  # fmt: skip
    grid = dict(eta=[0.5, 1.0], focus=[0.0, 2.0], amplitude=[10.0], period=[20], seed=range(2))
    dl.run_sweep(task, tmp_path / "mine", grid=grid, steps=40, eig_every=20)
    run = dl.load_run(tmp_path / "mine")
    ds = run.to_xarray()
    assert {"eta", "focus", "seed"} <= set(ds.dims)
    assert list(ds["focus"].values) == [0.0, 2.0]
    # focus changes the loss: at focus 0 focal DCE is DCE, at 2 it is smaller
    loss = np.asarray(ds["loss"].isel(record=0))
    assert np.all(loss[:, 1] < loss[:, 0])
    settings = run.config["settings"]
    assert settings["task"]["loss"][0]["qualname"] == "focal_dce"
    assert len(settings["task"]["loss"][0]["source_sha256"]) == 64
    assert settings["task"]["routes"] == {
        "focus": "loss", "amplitude": "schedule", "period": "schedule"
    }  # fmt: skip


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6, param_dtype=jnp.float64)(x))
        x = jnp.tanh(nn.Dense(4, param_dtype=jnp.float64)(x))
        return nn.Dense(3, param_dtype=jnp.float64)(x)


def test_a_flax_model_of_two_widths_tracks_the_dense_hessians_eigenvalues():
    from dynloss_jax.task import task_model

    data = _spiral()
    task = dl.Task(model=TwoLayers(), data=data, loss="dce")
    grid = dict(eta=[0.5], amplitude=[8.0], period=[10], seed=[3])
    run = run_sweep(task, grid=grid, steps=20, record_every=5, eig_every=10)
    # the same run by hand: init from the engine's key, GD in a Python loop, dense Hessians
    x = jnp.asarray(data[0])
    y = jax.nn.one_hot(data[1], 3, dtype=jnp.float64)
    flat = task_model(TwoLayers(), data[0][0], 3, "float64")
    w = flat.init(jax.random.split(jax.random.key(3))[0])
    lam = []
    for t in range(20):
        g = dl.schedule.triangle()(t, 3, amplitude=8.0, period=10)

        def f(v, g=g):
            return dl.get_loss("dce")(flat.apply(v, x), y, g)

        if t % 10 == 0:
            lam.append(np.sort(np.linalg.eigvalsh(np.asarray(jax.hessian(f)(w))))[::-1][:2])
        w = w - 0.5 * jax.grad(f)(w)
    ours = np.squeeze(run["lam"])
    np.testing.assert_allclose(ours, np.array(lam), rtol=1e-8)
    assert lam[1][0] > lam[0][0] * 1.01  # the measured spectrum moved between the two steps


def test_a_cnn_on_image_shaped_arrays_runs():
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(3, (3, 3))(x))
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    rng = np.random.default_rng(1)
    labels = np.arange(24) % 3
    x = rng.normal(size=(24, 6, 6, 1)) + labels[:, None, None, None]
    task = dl.Task(model=CNN(), data=(x, labels), loss="dce")
    run = run_sweep(
        task, grid=dict(eta=[0.1], amplitude=[3.0], period=[10], seed=[0]), steps=20,
        eig_every=10,
    )  # fmt: skip
    assert run.config["data"]["feature_shape"] == [6, 6, 1]
    assert run.config["data"]["validation"].startswith("none given")
    assert np.all(np.isfinite(run["loss"])) and np.all(np.isfinite(run["lam"]))
    assert run["loss"][..., -1].max() < run["loss"][..., 0].min()  # it trains


def _no_compiling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled before the error")

    monkeypatch.setattr(engine, "compiled", refuse)


def _grid(**extra):
    return dict(eta=[1.0], amplitude=[5.0], period=[20], seed=[0], width=[4], **extra)


def vector_loss(logits, y, gamma):
    return jnp.sum(logits * y, axis=0)


def short_schedule(step, n_classes, amplitude, period):
    return jnp.ones(n_classes - 1)


def loss_with_amplitude(logits, y, gamma, amplitude):
    return my_dce(logits, y, gamma) * amplitude


@pytest.mark.parametrize(
    "task, grid, param, words",
    [
        (dict(loss=loss_with_amplitude), _grid(), "grid", "both the loss and the schedule"),
        (dict(loss=my_dce), _grid(zeta=[1.0]), "grid", "taken by no function"),
        (dict(loss=vector_loss), _grid(), "loss", "float scalar"),
        (dict(loss=my_dce, schedule=short_schedule), _grid(), "schedule", "3 float weights"),
        (dict(loss=my_dce, model=flat_model(4, n_inputs=3)), _grid(), "model", "inputs"),
        (dict(loss=my_dce, model=flat_model(4, n_classes=10)), _grid(), "model", "3 classes"),
        (dict(loss=my_dce, data=(np.zeros((5, 2)), np.arange(4) % 2)), _grid(), "data", "(5, 2)"),
    ],
)
def test_each_refusal_names_its_setting_before_compiling(monkeypatch, task, grid, param, words):
    _no_compiling(monkeypatch)
    task = dict(dict(data=_spiral()), **task)
    if task.get("model") is not None:
        grid.pop("width")
    with pytest.raises(ValueError) as e:
        run_sweep(dl.Task(**task), grid=grid, steps=20)
    assert getattr(e.value, "param", None) == param, str(e.value)
    assert words in str(e.value)


def test_sweep_config_with_an_array_for_data_says_so(monkeypatch):
    _no_compiling(monkeypatch)
    with pytest.raises(dl.ConfigError) as e:
        dl.SweepConfig(data=np.zeros((4, 2))).validate()
    assert e.value.param == "data" and "Task" in str(e.value)


def test_a_function_redefined_in_the_same_process_compiles_a_new_program():
    grid = dict(eta=[1.0], amplitude=[5.0], period=[20], seed=[0], width=[4])

    def loss(logits, y, gamma):
        return my_dce(logits, y, gamma)

    first = run_sweep(dl.Task(data=_spiral(), loss=loss), grid=grid, steps=10)

    def loss(logits, y, gamma):  # noqa: F811  same name, another body
        return 2.0 * my_dce(logits, y, gamma)

    second = run_sweep(dl.Task(data=_spiral(), loss=loss), grid=grid, steps=10)
    np.testing.assert_allclose(second["loss"][..., 0], 2.0 * first["loss"][..., 0], rtol=1e-12)


class _Stop(Exception):
    pass


def test_a_task_sweep_resumes_bit_identically(tmp_path):
    task = dl.Task(
        model=TwoLayers(), data=_spiral(), loss=focal_dce, schedule=two_at_once,
        optimizer=lambda eta, b: optax.sgd(eta, momentum=b),
    )  # fmt: skip
    grid = dict(eta=[0.2], b=[0.0, 0.5], focus=[1.0], amplitude=[4.0], period=[10], seed=[0])
    settings = dict(steps=40, chunk_steps=10, eig_every=10, detector="calibrated")
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        run_sweep(task, tmp_path / "cut", grid=grid, progress=progress, checkpoint_every=0,
                  **settings)  # fmt: skip
    resumed = run_sweep(task, tmp_path / "cut", grid=grid, resume=True, **settings)
    straight = run_sweep(task, tmp_path / "straight", grid=grid, **settings)
    assert set(resumed.arrays) == set(straight.arrays) and "instability_step" in straight.arrays
    for k, a in straight.arrays.items():
        assert np.array_equal(resumed.arrays[k], a, equal_nan=True), k
    # the optimiser's own parameter b is a grid axis: momentum changes the run
    loss = np.squeeze(straight["loss"])
    assert not np.allclose(loss[0], loss[1])
    assert straight.config["threshold"]["label"] == "unknown"


def my_dmse2(logits, y, gamma):
    return jnp.mean(jnp.sum((logits - gamma * y) ** 2, axis=-1))


def test_onset_rules_lambda_at_the_onset_and_stop_at_onset_work_for_a_task():
    """The DMSE2 case of tests/test_onset.py (its onset at step 309 under the default rule),
    with the loss written here: the same onset, the same λ there, the same stop."""
    case = dict(eta=(0.4,), amplitude=(50.0,), period=(100,), first_seed=4, seeds=1)
    settings = dict(steps=400, record_every=1, stop_at_onset=True, watch=("second_difference",),
                    watch_steps=90, detector="calibrated")  # fmt: skip
    builtin = run_sweep(
        dl.SweepConfig(loss=("dmse2",), width=(16,), points_per_class=30, **case, **settings)
    )
    d = load_dataset("spiral", points_per_class=30)
    task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss=my_dmse2)
    grid = dict(width=[16], eta=[0.4], amplitude=[50.0], period=[100], seed=[4])
    ours = run_sweep(task, grid=grid, **settings)
    assert int(np.squeeze(builtin["instability_step"])) == 309
    for name in ("instability_step", "stopped_step", "watch_step"):
        assert np.array_equal(np.squeeze(ours[name]), np.squeeze(builtin[name])), name
    for name in ("instability_lam_k", "watch_lam_k", "loss"):
        a, b = np.squeeze(ours[name]), np.squeeze(builtin[name])
        assert np.any(np.isfinite(b)), name
        np.testing.assert_allclose(a, b, rtol=1e-10, err_msg=name)


PIECES_SOURCE = """
import jax, jax.numpy as jnp, flax.linen as nn
from dynloss_jax import spiral

class TanhNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.tanh(nn.Dense(8)(x)))

def focal_dce(logits, y_onehot, gamma, focus):
    p = jax.nn.softmax(logits)
    w = (1 - jnp.sum(p * y_onehot, -1)) ** focus
    return -jnp.mean(w * jnp.sum(gamma * y_onehot * jax.nn.log_softmax(logits), -1))

def my_arrays():
    x, y = spiral(points_per_class=8)
    return x, y.argmax(1)
"""


def test_the_cli_takes_import_paths_and_rerun_reports_a_changed_source(
    tmp_path, monkeypatch, capsys
):
    from dynloss_jax import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_pieces_cli.py").write_text(PIECES_SOURCE)
    code = cli.main(
        ["train", "--loss", "user_pieces_cli:focal_dce", "--model", "user_pieces_cli:TanhNet",
         "--data", "user_pieces_cli:my_arrays", "--grid", "focus=0,2", "--eta", "0.5",
         "--amplitude", "5", "--period", "10", "--seeds", "2", "--steps", "20",
         "--eig-every", "10", "--out", "runs/mine", "--no-plot", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = dl.load_run(tmp_path / "runs/mine")
    assert run.coords["focus"] == [0, 2]
    assert run.axes["lam"][:5] == ["eta", "amplitude", "period", "focus", "seed"]
    assert run.config["settings"]["task"]["model"]["qualname"] == "TanhNet"
    capsys.readouterr()
    assert cli.main(["rerun", "runs/mine", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "bit-identical" in out and "changed" not in err
    (tmp_path / "user_pieces_cli.py").write_text(PIECES_SOURCE.replace("(1 - ", "(1.0 - "))
    cli.main(["rerun", "runs/mine", "--quiet", "--overwrite"])
    err = capsys.readouterr().err
    assert "user_pieces_cli:focal_dce has changed since the run" in err
    assert "TanhNet" not in err  # its source did not change


def test_the_cli_names_a_bad_import_path(tmp_path, monkeypatch, capsys):
    from dynloss_jax import cli

    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--loss", "no_such_module:f", "--out", "x", "--quiet"])
    assert code == 2
    assert "--loss no_such_module:f: cannot be imported" in capsys.readouterr().err


def test_an_nnx_model_through_its_factory_and_a_made_one_refused(monkeypatch):
    from flax import nnx

    from dynloss_jax.task import nnx_model

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(2, 6, rngs=rngs, param_dtype=jnp.float64)
            self.out = nnx.Linear(6, 3, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    grid = dict(eta=[0.5], amplitude=[5.0], period=[10], seed=[0, 1])
    task = dl.Task(model=nnx_model(MLP), data=_spiral(), loss=my_dce)
    run = run_sweep(task, grid=grid, steps=20, eig_every=10)
    loss = np.squeeze(run["loss"])
    assert np.all(np.isfinite(loss)) and not np.allclose(loss[0], loss[1])  # seeds differ
    _no_compiling(monkeypatch)
    with pytest.raises(dl.ConfigError) as e:
        run_sweep(dl.Task(model=MLP(nnx.Rngs(0)), data=_spiral(), loss=my_dce), grid=grid)
    assert e.value.param == "model" and "nnx_model" in str(e.value)


def test_a_named_optimisers_hyperparameter_is_a_grid_axis():
    task = dl.Task(data=_spiral(), loss="dce", optimizer="momentum")
    grid = dict(width=[4], eta=[0.1], beta=[0.0, 0.9], amplitude=[5.0], period=[10], seed=[0])
    run = run_sweep(task, grid=grid, steps=10)
    loss = np.squeeze(run["loss"])
    assert loss[0, 0] == loss[1, 0] and loss[0, -1] != loss[1, -1]  # same start, β acts
    config = dl.SweepConfig(loss=("dce",), width=(4,), eta=(0.1,), amplitude=(5.0,), period=(10,),
                            optimizer="momentum", beta=0.9, steps=10, **SPIRAL)  # fmt: skip
    np.testing.assert_allclose(loss[1], np.squeeze(run_sweep(config)["loss"]), rtol=1e-12)


def _equal_to_builtin(settings, names):
    case = dict(eta=(0.5, 1.0), amplitude=(5.0,), period=(20,), seeds=1)
    grid = dict(width=[6], eta=[0.5, 1.0], amplitude=[5.0], period=[20], seed=[0])
    task = dl.Task(data=_spiral(), loss=my_dce, schedule=my_triangle)
    builtin = run_sweep(dl.SweepConfig(loss=("dce",), width=(6,), **case, **SPIRAL, **settings))
    ours = run_sweep(task, grid=grid, **settings)
    for name in names:
        a, b = np.squeeze(ours[name]), np.squeeze(builtin[name])
        assert b.dtype.kind != "f" or np.any(np.isfinite(b)), name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, err_msg=name)
    return builtin


def test_top_k_and_step_limits_of_a_task_equal_the_builtin_run():
    """--top-k and steps_eta through a task (its own DCE and triangle): the built-in numbers."""
    settings = dict(steps=40, record_every=5, eig_every=10, top_k=2, steps_eta=20.0)
    builtin = _equal_to_builtin(settings, ("lam", "lam_above", "loss", "stopped_step"))
    # η = 1 stops at steps_eta/η = 20; η = 0.5 runs the program's 40 steps
    assert np.squeeze(builtin["stopped_step"]).tolist() == [-1, 20]


@pytest.mark.slow
def test_the_spectrum_of_a_task_equals_the_builtin_run():
    settings = dict(steps=40, record_every=5, eig_every=10, density_every=20, trace_every=20,
                    density_matvecs=8)  # fmt: skip
    _equal_to_builtin(settings, ("density_nodes", "density_weights", "trace", "lam"))
