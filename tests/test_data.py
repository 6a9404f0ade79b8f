"""The data sets: the spiral (shapes, geometry, determinism, bit-compatibility with the authors'),
and the offline loaders (sizes, stratified split, train-only standardisation, determinism, refusal
without the optional extra)."""

import json
import random
import sys

import numpy as np
import pytest

from dynloss_jax import spiral
from dynloss_jax.data import (
    DATASETS,
    Dataset,
    MissingExtraError,
    check_data,
    load_dataset,
    stratified_split,
)


def authors_make_dataset(points_per_class, classes, revolutions=4, seed=0):
    """Transcription of ``make_dataset`` in the authors' notebook (global legacy RNG), with the
    seed as an argument (they hard-code ``np.random.seed(0)``)."""
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        N, C, pi = points_per_class, classes, np.pi
        X = np.zeros((N * C, 2))
        y = np.zeros((N * C, C))
        for j in range(C):
            ix = range(N * j, N * (j + 1))
            r = np.linspace(0.0, 1, N)
            omega = 2 * pi / C
            theta_max = revolutions * pi
            t = np.linspace(omega * j, omega * j + theta_max, N) + np.random.randn(N) * 0.2
            X[ix] = np.c_[r * np.cos(t), r * np.sin(t)]
            y[ix, j] = 1
        return X, y
    finally:
        np.random.set_state(saved)


@pytest.mark.parametrize("n,c,seed", [(100, 3, 0), (100, 3, 1), (7, 3, 0), (5, 4, 3)])
def test_bit_identical_to_authors_generator(n, c, seed):
    x, y = spiral(points_per_class=n, n_classes=c, seed=seed)
    X, Y = authors_make_dataset(n, c, seed=seed)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_shapes_dtypes_and_one_hot_labels():
    x, y = spiral()
    assert x.shape == (300, 2) and y.shape == (300, 3)
    assert x.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_array_equal(y.sum(axis=1), np.ones(300))
    np.testing.assert_array_equal(y.argmax(axis=1), np.repeat([0, 1, 2], 100))
    check_data(x, y)


def test_three_points_at_the_origin_and_radius_k_over_n_minus_1():
    n = 100
    x, y = spiral(points_per_class=n)
    at_origin = np.flatnonzero(np.all(x == 0.0, axis=1))
    np.testing.assert_array_equal(at_origin, [0, n, 2 * n])
    np.testing.assert_array_equal(y[at_origin].argmax(axis=1), [0, 1, 2])
    r = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(r, np.tile(np.arange(n) / (n - 1), 3), rtol=1e-14, atol=1e-15)
    # hence the best possible accuracy: three identical inputs, three labels
    assert (3 * n - 2) / (3 * n) == pytest.approx(0.99333, abs=1e-5)


def test_angles_are_the_arm_plus_noise_of_scale_0_2():
    n = 100
    x, _ = spiral(points_per_class=n, seed=0)
    noise = np.random.RandomState(0).randn(n)  # class 0 draws first
    k = np.arange(1, n)
    theta = 4 * np.pi * k / (n - 1) + 0.2 * noise[1:]
    diff = np.angle(np.exp(1j * (np.arctan2(x[1:n, 1], x[1:n, 0]) - theta)))  # wrapped
    np.testing.assert_allclose(diff, 0.0, atol=1e-12)


def test_deterministic_and_seeds_differ():
    x0, y0 = spiral(seed=0)
    x0b, _ = spiral(seed=0)
    x1, y1 = spiral(seed=1)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y1)
    moved = np.any(x0 != x1, axis=1)
    assert moved.sum() == 300 - 3  # every point but the three at the origin


def test_does_not_touch_the_global_rng():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    spiral(seed=5)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="points_per_class"):
        spiral(points_per_class=1)
    with pytest.raises(ValueError, match="n_classes"):
        spiral(n_classes=1)


@pytest.mark.parametrize(
    "x,y,match",
    [
        (np.zeros((4, 2)), np.eye(3)[[0, 1, 2]], "data must be"),  # P differs
        (np.zeros((4,)), np.eye(3)[[0, 1, 2, 0]], "data must be"),  # x not 2-D
        (np.zeros((3, 2)), np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1.0]]), "one-hot"),
        (np.zeros((3, 2)), np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1.0]]), "one-hot"),
        (np.zeros((3, 2)), np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1.0]]), "one-hot"),
        (np.array([[0, 0], [np.nan, 0], [0, 0]]), np.eye(3), "finite"),
    ],
)
def test_check_data_refuses_bad_shapes_and_labels(x, y, match):
    with pytest.raises(ValueError, match=match):
        check_data(x, y)


# --- load_dataset ---------------------------------------------------------------------------------

# (samples, features, classes, samples per class) of the full sets
SIZES = {
    "wine": (178, 13, 3, [59, 71, 48]),
    "iris": (150, 4, 3, [50, 50, 50]),
    "digits": (1797, 64, 10, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    "mnist1d": (5000, 40, 10, [500] * 10),
}
EXTRA = 'pip install -e ".[data]"'


@pytest.fixture(scope="module")
def sklearn_sets():
    pytest.importorskip("sklearn")
    return {name: load_dataset(name) for name in ("wine", "iris", "digits")}


@pytest.fixture(scope="module")
def mnist1d_set():
    pytest.importorskip("mnist1d")
    return load_dataset("mnist1d")  # generated once per test run (seconds), then cached


@pytest.fixture(params=["wine", "iris", "digits", "mnist1d"])
def named_set(request):
    if request.param == "mnist1d":
        return request.getfixturevalue("mnist1d_set")
    return request.getfixturevalue("sklearn_sets")[request.param]


def raw_of(name):
    """The unsplit, unstandardised ``(x, labels)`` straight from the source package."""
    if name == "mnist1d":
        from dynloss_jax.data import _mnist1d

        return _mnist1d()
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    return bunch.data, bunch.target


def test_spiral_is_exactly_the_spiral_function():
    ds = load_dataset("spiral", points_per_class=7, n_classes=4, train_seed=3, val_seed=9)
    assert isinstance(ds, Dataset)
    for got, want in zip(ds[:4], spiral(7, 4, seed=3) + spiral(7, 4, seed=9), strict=True):
        np.testing.assert_array_equal(got, want)
    default = load_dataset("spiral")
    for got, want in zip(default[:4], spiral() + spiral(seed=1), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (ds.info["n_train"], ds.info["n_val"], ds.info["n_classes"]) == (28, 28, 4)
    assert json.loads(json.dumps(ds.info)) == ds.info


def test_sizes_classes_dtypes_and_info(named_set):
    ds = named_set
    n, d, c, per_class = SIZES[ds.info["name"]]
    assert ds.x_train.shape[1] == ds.x_val.shape[1] == d
    assert ds.y_train.shape[1] == ds.y_val.shape[1] == c
    assert ds.x_train.shape[0] + ds.x_val.shape[0] == n
    for a in ds[:4]:
        assert a.dtype == np.float64
    check_data(ds.x_train, ds.y_train)
    check_data(ds.x_val, ds.y_val)
    np.testing.assert_array_equal(ds.y_train.sum(axis=0) + ds.y_val.sum(axis=0), per_class)
    info = ds.info
    assert (info["n_train"], info["n_val"]) == (ds.x_train.shape[0], ds.x_val.shape[0])
    assert (info["n_features"], info["n_classes"]) == (d, c)
    assert (info["split_seed"], info["val_fraction"]) == (0, 0.25)
    assert info["val_per_class"] == ds.y_val.sum(axis=0).tolist()
    assert json.loads(json.dumps(info)) == info  # ready for config.json


@pytest.mark.parametrize("val_fraction", [0.25, 0.4, 0.1])
def test_split_is_stratified(named_set, val_fraction):
    name = named_set.info["name"]
    ds = named_set if val_fraction == 0.25 else load_dataset(name, val_fraction=val_fraction)
    n_val = ds.y_val.sum(axis=0)
    n_all = n_val + ds.y_train.sum(axis=0)
    # each class's validation count is val_fraction · n_c rounded: within half a sample, and so
    # within one percentage point of val_fraction for these classes (≥ 48 samples)
    assert np.all(np.abs(n_val - val_fraction * n_all) <= 0.5)
    assert np.all(np.abs(n_val / n_all - val_fraction) <= 0.01 + 1e-12)


def test_standardised_with_the_training_split_only(named_set):
    ds = named_set
    x_raw, labels = raw_of(ds.info["name"])
    train, val = stratified_split(labels, 0.25, 0)
    mean = x_raw[train].mean(axis=0)
    std = x_raw[train].std(axis=0)
    constant = std == 0
    scale = np.where(constant, 1.0, std)
    np.testing.assert_allclose(ds.x_train, (x_raw[train] - mean) / scale, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.x_val, (x_raw[val] - mean) / scale, rtol=1e-12, atol=1e-12)
    label_index = np.unique(labels, return_inverse=True)[1]
    np.testing.assert_array_equal(ds.y_train.argmax(axis=1), label_index[train])
    np.testing.assert_array_equal(ds.y_val.argmax(axis=1), label_index[val])
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(axis=0)[~constant], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(ds.x_train[:, constant], 0.0)  # guarded, not divided by 0
    assert np.all(np.isfinite(ds.x_val))
    # the validation split was not used: its statistics are near (0, 1), not exactly
    assert np.abs(ds.x_val.mean(axis=0)).max() > 1e-3
    assert np.abs(ds.x_val.std(axis=0)[~constant] - 1.0).max() > 1e-3
    summary = ds.info["standardisation"]
    assert summary["n_constant_features"] == int(constant.sum())
    assert summary["mean_max"] == pytest.approx(mean.max(), rel=1e-12)
    assert summary["std_min"] == pytest.approx(std[~constant].min(), rel=1e-12)


def test_digits_has_constant_pixels_on_the_training_split(sklearn_sets):
    assert sklearn_sets["digits"].info["standardisation"]["n_constant_features"] >= 1


def test_deterministic_in_split_seed(named_set):
    ds = named_set
    name = ds.info["name"]
    for a, b in zip(ds[:4], load_dataset(name, split_seed=0)[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    other = load_dataset(name, split_seed=1)
    assert other.info["split_seed"] == 1
    np.testing.assert_array_equal(other.y_val.sum(axis=0), ds.y_val.sum(axis=0))  # same counts
    assert not np.array_equal(ds.x_val, other.x_val)  # different members
    # the spiral-only arguments change nothing here
    ignored = load_dataset(name, points_per_class=5, n_classes=7, train_seed=7, val_seed=8)
    for a, b in zip(ds[:4], ignored[:4], strict=True):
        np.testing.assert_array_equal(a, b)


def test_mnist1d_generation_is_deterministic_and_leaves_global_rngs_alone(mnist1d_set):
    from dynloss_jax.data import _mnist1d

    np.random.seed(5)
    random.seed(5)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    x1, y1 = _mnist1d.__wrapped__(num_samples=60)  # uncached and small: two fresh generations
    x2, y2 = _mnist1d.__wrapped__(num_samples=60)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (60, 40) and sorted(set(y1.tolist())) == list(range(10))
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    assert random.getstate() == py_before
    x, _ = _mnist1d()  # the cached arrays cannot be changed in place by a caller
    assert not x.flags.writeable
    assert mnist1d_set.x_train.flags.writeable


def test_stratified_split_on_synthetic_labels():
    labels = np.repeat([2, 0, 1, 5], [10, 3, 40, 2])
    train, val = stratified_split(labels, 0.3, seed=4)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    for c, n_val in [(2, 3), (0, 1), (1, 12), (5, 1)]:  # round(0.3 n_c), within 1..n_c − 1
        assert np.sum(labels[val] == c) == n_val, c
    again = stratified_split(labels, 0.3, seed=4)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(labels, 0.3, seed=5)[1])
    with pytest.raises(ValueError, match="at least 2"):
        stratified_split(np.array([0, 0, 1]), 0.5, seed=0)


@pytest.mark.parametrize(
    "name,modules",
    [
        ("wine", ["sklearn"]),
        ("iris", ["sklearn"]),
        ("digits", ["sklearn"]),
        ("mnist1d", ["mnist1d", "mnist1d.data"]),
    ],
)
def test_refuses_without_the_extra(monkeypatch, name, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # "import module" now raises ImportError
    with pytest.raises(MissingExtraError) as err:
        load_dataset(name)
    assert isinstance(err.value, ValueError)
    assert str(err.value) == f'data set "{name}" needs the optional extra: {EXTRA}'
    assert isinstance(err.value.__cause__, ImportError)


def test_spiral_needs_no_extra(monkeypatch):
    for module in ("sklearn", "mnist1d", "mnist1d.data"):
        monkeypatch.setitem(sys.modules, module, None)
    assert load_dataset("spiral").x_train.shape == (300, 2)


@pytest.mark.parametrize(
    "name,kw,match",
    [
        (
            "mnist",
            {},
            "unknown data set 'mnist'; choose one of spiral, wine, iris, digits, mnist1d",
        ),
        ("Wine", {}, "choose one of"),
        ("wine", dict(val_fraction=0.0), "val_fraction"),
        ("wine", dict(val_fraction=1.0), "val_fraction"),
        ("wine", dict(val_fraction=True), "val_fraction"),
        ("wine", dict(split_seed=-1), "split_seed"),
        ("wine", dict(split_seed=1.5), "split_seed"),
        ("spiral", dict(points_per_class=1), "points_per_class"),
    ],
)
def test_bad_arguments_raise(name, kw, match, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # refused before any import is tried
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(name, **kw)
    assert not isinstance(err.value, MissingExtraError)


def test_names():
    assert DATASETS == ("spiral", "wine", "iris", "digits", "mnist1d")
