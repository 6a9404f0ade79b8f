"""The spiral data: shapes, geometry, determinism, and bit-compatibility with the authors'."""

import numpy as np
import pytest

from dynloss_jax import spiral
from dynloss_jax.data import check_data


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


@pytest.mark.parametrize("x,y,match", [
    (np.zeros((4, 2)), np.eye(3)[[0, 1, 2]], "data must be"),  # P differs
    (np.zeros((4,)), np.eye(3)[[0, 1, 2, 0]], "data must be"),  # x not 2-D
    (np.zeros((3, 2)), np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1.0]]), "one-hot"),
    (np.zeros((3, 2)), np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1.0]]), "one-hot"),
    (np.zeros((3, 2)), np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1.0]]), "one-hot"),
    (np.array([[0, 0], [np.nan, 0], [0, 0]]), np.eye(3), "finite"),
])
def test_check_data_refuses_bad_shapes_and_labels(x, y, match):
    with pytest.raises(ValueError, match=match):
        check_data(x, y)
