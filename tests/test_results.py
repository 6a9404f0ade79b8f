"""The results API: Run.sel by value, Run.summary against NumPy, load_run on real folders."""

import itertools

import numpy as np
import pytest

from dynloss_jax import SweepConfig, load_run, run_sweep
from dynloss_jax.results import GRID_AXES, Run, save_run

COORDS = {
    "loss": ["ce", "dce"],
    "width": [4, 16],
    "eta": [0.5, 0.1 + 0.2],
    "amplitude": [1.0, 25.0, 70.0],
    "period": [50],
    "seed": [0, 1, 2, 3, 4],
}
GRID = tuple(len(v) for v in COORDS.values())
N_RECORD = 7


def hand_built_run(seed=0) -> Run:
    """A Run with random values, some diverged runs and NaNs, shaped like run_sweep's."""
    rng = np.random.default_rng(seed)
    diverged = rng.random(GRID) < 0.25
    diverged[0, 0, 0, 0, 0, :] = True  # a configuration with every seed diverged
    diverged[1, 1, 1, 2, 0, 1:] = True  # and one with a single surviving seed
    final_val_acc = rng.random(GRID)
    final_val_acc[diverged] = np.nan
    loss = rng.random(GRID + (N_RECORD,))
    loss[2 * (slice(None),) + (0, 1, 0, 3, slice(4, None))] = np.nan  # NaN late records only
    arrays = {
        "final_val_acc": final_val_acc,
        "diverged": diverged,
        "loss": loss,
        "gamma": rng.random(GRID + (N_RECORD, 3)),
        "record_step": np.arange(N_RECORD) * 5,
    }
    axes = {name: list(GRID_AXES) for name in ("final_val_acc", "diverged")}
    axes.update(
        loss=list(GRID_AXES) + ["record"],
        gamma=list(GRID_AXES) + ["record", "class"],
        record_step=["record"],
    )
    return Run(None, {"axes": COORDS}, arrays, axes, {k: list(v) for k, v in COORDS.items()})


@pytest.mark.parametrize("axis", GRID_AXES)
def test_sel_each_axis_by_value(axis):
    run = hand_built_run()
    position = GRID_AXES.index(axis)
    for i, value in enumerate(COORDS[axis]):
        sub = run.sel(**{axis: value})
        assert sub.coords[axis] == [COORDS[axis][i]]
        for name in ("final_val_acc", "loss", "gamma", "diverged"):
            np.testing.assert_array_equal(
                sub[name], np.take(run[name], [i], axis=position), err_msg=f"{name} {axis}={value}"
            )
        np.testing.assert_array_equal(sub["record_step"], run["record_step"])  # no sweep axis
        for other in GRID_AXES:
            if other != axis:
                assert sub.coords[other] == run.coords[other]


def test_sel_lists_keep_the_order_given_and_combine():
    run = hand_built_run()
    sub = run.sel(amplitude=[70, 1], loss="dce", width=np.array([16]), seed=range(1, 3))
    assert sub.coords["amplitude"] == [70.0, 1.0]
    assert sub.coords["seed"] == [1, 2]
    expected = run["loss"][1:2][:, 1:2][:, :, :, [2, 0]][..., [1, 2], :]
    np.testing.assert_array_equal(sub["loss"], expected)
    assert sub["loss"].shape == (1, 1, 2, 2, 1, 2, N_RECORD)
    # selecting again from a selection
    np.testing.assert_array_equal(sub.sel(amplitude=1)["loss"], expected[:, :, :, 1:2])


def test_sel_matches_floats_to_rounding():
    run = hand_built_run()
    np.testing.assert_array_equal(
        run.sel(eta=0.3)["final_val_acc"], run["final_val_acc"][:, :, 1:2]
    )
    with pytest.raises(KeyError):
        run.sel(eta=0.3001)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"width": 17}, ["width=17", "[4, 16]"]),
        ({"loss": "mse"}, ["loss='mse'", "['ce', 'dce']"]),
        ({"amplitude": [1.0, 2.0]}, ["amplitude=2.0", "[1.0, 25.0, 70.0]"]),
        ({"seed": None}, ["seed=None", "[0, 1, 2, 3, 4]"]),
        ({"depth": 1}, ["'depth'", "'loss'", "'seed'"]),
    ],
)
def test_sel_unknown_values_raise_keyerror_naming_the_allowed_ones(kwargs, words):
    with pytest.raises(KeyError) as info:
        hand_built_run().sel(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_summary_matches_numpy_over_surviving_seeds():
    run = hand_built_run()
    mean, sem, n = run.summary("final_val_acc")
    assert mean.shape == sem.shape == n.shape == GRID[:-1]
    acc, div = run["final_val_acc"], run["diverged"]
    for index in itertools.product(*(range(g) for g in GRID[:-1])):
        kept = acc[index][~div[index]]
        assert n[index] == kept.size
        if kept.size == 0:
            assert np.isnan(mean[index]) and np.isnan(sem[index])
            continue
        np.testing.assert_allclose(mean[index], np.mean(kept), rtol=1e-13)
        if kept.size == 1:
            assert np.isnan(sem[index])
        else:
            np.testing.assert_allclose(
                sem[index], np.std(kept, ddof=1) / np.sqrt(kept.size), rtol=1e-12
            )
    assert n[0, 0, 0, 0, 0] == 0 and n[1, 1, 1, 2, 0] == 1


def test_summary_of_a_series_excludes_diverged_runs_and_nan_records():
    run = hand_built_run()
    mean, sem, n = run.summary("loss")
    assert mean.shape == GRID[:-1] + (N_RECORD,)
    loss, div = run["loss"], run["diverged"]
    for index in itertools.product(*(range(g) for g in GRID[:-1])):
        for r in range(N_RECORD):
            values = loss[index][:, r][~div[index]]
            values = values[np.isfinite(values)]
            assert n[index + (r,)] == values.size
            if values.size:
                np.testing.assert_allclose(mean[index + (r,)], values.mean(), rtol=1e-13)
            if values.size > 1:
                np.testing.assert_allclose(
                    sem[index + (r,)], values.std(ddof=1) / np.sqrt(values.size), rtol=1e-12
                )
    # the NaN records of one seed lower n only from record 4 on
    assert n[0, 1, 0, 1, 0, 3] - n[0, 1, 0, 1, 0, 4] == (not div[0, 1, 0, 1, 0, 3])
    # with nothing diverged, a seed-average is the plain NumPy one
    clean = Run(None, {}, {"gamma": run["gamma"]}, {"gamma": run.axes["gamma"]}, run.coords)
    mean, sem, n = clean.summary("gamma")
    np.testing.assert_allclose(mean, run["gamma"].mean(axis=5), rtol=1e-13)
    np.testing.assert_allclose(sem, run["gamma"].std(axis=5, ddof=1) / np.sqrt(5), rtol=1e-12)
    assert np.all(n == 5)


def test_summary_after_sel_and_bad_names():
    run = hand_built_run()
    mean_all, _, _ = run.summary("final_val_acc")
    mean, _, _ = run.sel(loss="dce", amplitude=[70, 25]).summary("final_val_acc")
    np.testing.assert_array_equal(mean, mean_all[1:2][:, :, :, [2, 1]])
    with pytest.raises(ValueError, match="no seed axis"):
        run.summary("record_step")
    with pytest.raises(KeyError, match="final_train_acc"):
        run.summary("final_train_acc")


def test_repr_is_short():
    text = repr(hand_built_run())
    assert "width=[4, 16]" in text and "final_val_acc" in text and len(text) < 400


def test_load_run_round_trip(tmp_path):
    run = hand_built_run()
    config = {"settings": {}, "axes": COORDS, "complete": True}
    save_run(tmp_path / "r", config, run.arrays, run.axes)
    loaded = load_run(tmp_path / "r")
    assert loaded.coords == COORDS and loaded.axes == run.axes
    for name in run.arrays:
        np.testing.assert_array_equal(loaded[name], run[name])
    for a, b in zip(
        loaded.sel(width=16, loss="dce").summary("loss"),
        run.sel(width=16, loss="dce").summary("loss"),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_run_sweep_folder_loads_back_with_named_axes(tmp_path):
    config = SweepConfig(
        loss=("dce",),
        width=(3,),
        eta=(0.5,),
        amplitude=(1.0, 5.0),
        period=(10,),
        seeds=2,
        steps=20,
        record_every=5,
        eig_every=10,
        num_matvecs=4,
        points_per_class=4,
    )
    live = run_sweep(config, tmp_path / "run", command=["test"])
    run = load_run(tmp_path / "run")
    assert run.coords == {
        "loss": ["dce"],
        "width": [3],
        "eta": [0.5],
        "amplitude": [1.0, 5.0],
        "period": [10],
        "seed": [0, 1],
    }
    assert run.config["settings"]["steps"] == 20 and run.config["command"] == ["test"]
    for name, names in run.axes.items():
        assert run[name].ndim == len(names)
        np.testing.assert_array_equal(run[name], live[name])
        shape = dict(zip(names, run[name].shape, strict=True))
        for axis in GRID_AXES:
            if axis in shape:
                assert shape[axis] == len(run.coords[axis]), (name, axis)
    assert run.axes["lam"][-2:] == ["eig", "k"] and run["eig_step"].tolist() == [0, 10]
    assert run["record_step"].tolist() == [0, 5, 10, 15]
    # A = 1 is the static loss: Γ ≡ 1 and the loss minimised is its static version
    static = run.sel(amplitude=1)
    np.testing.assert_allclose(static["gamma"], 1.0, rtol=1e-15)
    np.testing.assert_allclose(static["loss"], static["static_loss"], rtol=1e-13)
    # A = 5, T = 10 at the records t = 0, 5, 10, 15: Γ = 1, peak on class 0, 1, peak on class 1,
    # where the peak is Γ_c = C·A/(A+C−1) = 15/7 and the others C/(A+C−1) = 3/7
    peak, low = 15 / 7, 3 / 7
    expected = [[1, 1, 1], [peak, low, low], [1, 1, 1], [low, peak, low]]
    gamma = run.sel(amplitude=5)["gamma"].reshape(2, 4, 3)
    np.testing.assert_allclose(gamma, [expected, expected], rtol=1e-13)
    mean, sem, n = run.sel(loss="dce", amplitude=5).summary("final_val_acc")
    values = run["final_val_acc"][0, 0, 0, 1, 0]
    np.testing.assert_allclose(mean.ravel(), values.mean(), rtol=1e-13)
    np.testing.assert_allclose(sem.ravel(), values.std(ddof=1) / np.sqrt(2), rtol=1e-12)
    assert n.ravel().tolist() == [2]


def test_to_xarray_round_trips_sel_and_summary(tmp_path):
    """The xarray view holds the same numbers under the same names: selecting by value and
    averaging over seeds there equals Run.sel and Run.summary (diverged runs excluded alike)."""
    xr = pytest.importorskip("xarray")
    run = run_sweep(
        SweepConfig(
            loss=("ce", "dce"),
            width=(3,),
            eta=(0.5, 1e200),
            amplitude=(5.0,),
            period=(10,),
            seeds=3,
            steps=60,
            record_every=5,
            points_per_class=4,
        )
    )
    assert len(np.unique(run.value("final_loss", eta=0.5))) == 6  # the numbers differ
    ds = run.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert list(ds["loss_value"].dims) == run.axes["loss"]
    np.testing.assert_array_equal(ds["record"].values, run["record_step"])
    assert list(ds["eta"].values) == run.coords["eta"]
    sub = ds.sel(loss="dce", eta=0.5)
    np.testing.assert_array_equal(
        np.squeeze(sub["final_val_acc"].values), run.value("final_val_acc", loss="dce", eta=0.5)
    )
    acc = ds["final_val_acc"].where(~ds["diverged"])
    mean, sem, n = run.summary("final_val_acc")
    assert run["diverged"].any()  # η = 1e200 diverges: the masks must agree
    np.testing.assert_allclose(acc.mean("seed").values, mean, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(
        (acc.std("seed", ddof=1) / np.sqrt(acc.count("seed"))).values,
        sem,
        rtol=1e-12,
        equal_nan=True,
    )
