"""The MLP seen through its flat parameter vector: size, forward pass, inits, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import flat_model
from dynloss_jax.model import check_dtype

D, C = 2, 3


def init(model, seed):
    return jax.jit(model.init)(jax.random.key(seed))  # one compiled call, not op by op


def layers(model, w):
    p = model.unravel(w)["params"]
    return [
        (np.asarray(p[f"Dense_{i}"]["kernel"]), np.asarray(p[f"Dense_{i}"]["bias"]))
        for i in range(len(p))
    ]


@pytest.mark.parametrize("width", [1, 2, 7, 100])
def test_parameter_count(width):
    assert flat_model(width).n_params == width * (D + 1) + C * (width + 1)
    shape = jax.eval_shape(flat_model(width).init, jax.random.key(0)).shape
    assert shape == (width * (D + 1) + C * (width + 1),)
    deep = flat_model(width, depth=2)
    assert deep.n_params == width * (D + 1) + width * (width + 1) + C * (width + 1)


def test_forward_is_dense_relu_dense():
    model = flat_model(6)
    w = init(model, 3)
    (k0, b0), (k1, b1) = layers(model, w)
    assert k0.shape == (D, 6) and k1.shape == (6, C)
    x = np.random.default_rng(0).standard_normal((12, D))
    want = np.maximum(x @ k0 + b0, 0.0) @ k1 + b1
    got = jax.jit(model.apply)(w, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_depth_two_forward():
    model = flat_model(4, depth=2)
    w = init(model, 1)
    (k0, b0), (k1, b1), (k2, b2) = layers(model, w)
    x = np.random.default_rng(1).standard_normal((5, D))
    h = np.maximum(np.maximum(x @ k0 + b0, 0) @ k1 + b1, 0)
    np.testing.assert_allclose(jax.jit(model.apply)(w, jnp.asarray(x)), h @ k2 + b2, rtol=1e-14)


def test_glorot_init_statistics():
    width = 3000
    model = flat_model(width, init="glorot")
    (k0, b0), (k1, b1) = layers(model, init(model, 0))
    for k, fan_in, fan_out in ((k0, D, width), (k1, width, C)):
        std = np.sqrt(2.0 / (fan_in + fan_out))
        assert k.std() == pytest.approx(std, rel=0.05)
        assert abs(k.mean()) < 4 * std / np.sqrt(k.size)
        # truncated at two standard deviations of the underlying normal
        assert np.abs(k).max() <= 2 * std / 0.87962566103423978 + 1e-12
    assert np.concatenate([b0, b1]).std() == pytest.approx(0.01, rel=0.1)
    assert np.all(b0 != 0)


def test_lecun_init_statistics_and_zero_biases():
    width = 3000
    model = flat_model(width, init="lecun")
    (k0, b0), (k1, b1) = layers(model, init(model, 0))
    for k, fan_in in ((k0, D), (k1, width)):
        assert k.std() == pytest.approx(np.sqrt(1.0 / fan_in), rel=0.05)
    np.testing.assert_array_equal(b0, 0.0)
    np.testing.assert_array_equal(b1, 0.0)


def test_init_depends_on_key_only():
    model = flat_model(5)
    a, b = init(model, 0), init(model, 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, init(model, 1))


def test_float32_model():
    model = flat_model(5, dtype="float32")
    w = init(model, 0)
    assert w.dtype == jnp.float32
    assert jax.jit(model.apply)(w, jnp.zeros((4, D))).dtype == jnp.float32
    (k0, _), (k1, _) = layers(model, w)
    assert k0.dtype == np.float32 and np.all(np.isfinite(k1))


def test_equal_arguments_give_the_same_network_and_others_a_different_one():
    """The cache hands out one object per argument set (so compiled programs keyed on it are
    reused); what it hands out must still depend on every argument."""
    key = jax.random.key(3)
    a, b = flat_model(9), flat_model(9)
    assert a is b
    np.testing.assert_array_equal(a.init(key), b.init(key))
    lecun = flat_model(9, init="lecun")
    assert lecun.n_params == a.n_params
    assert not np.allclose(lecun.init(key), a.init(key))
    assert flat_model(9, depth=2).n_params == a.n_params + 9 * 9 + 9


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(width=0), "width"),
        (dict(width=4, depth=0), "depth"),
        (dict(width=4, init="he"), "init"),
        (dict(width=4, dtype="float16"), "dtype"),
    ],
)
def test_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        flat_model(**kw)


def test_float64_without_x64_is_refused():
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="64-bit"):
            check_dtype("float64")
        check_dtype("float32")
