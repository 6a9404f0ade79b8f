"""The five losses against NumPy references, the authors' formula, and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import losses
from dynloss_jax.losses import DYNAMICAL, LOSSES, STATIC_OF, get_loss

P, C = 12, 3


def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def reference(name, f, y, g):
    """SPEC §1, written per sample with explicit loops over samples and classes."""
    labels = y.argmax(axis=1)
    logp = np_log_softmax(f)
    total = 0.0
    for j in range(f.shape[0]):
        c = labels[j]
        if name == "ce":
            total += -logp[j, c]
        elif name == "dce":
            total += g[c] * -logp[j, c]
        elif name == "mse":
            total += sum((f[j, i] - y[j, i]) ** 2 for i in range(f.shape[1]))
        elif name == "dmse1":
            total += g[c] * sum((f[j, i] - y[j, i]) ** 2 for i in range(f.shape[1]))
        elif name == "dmse1o":
            total += sum(g[i] * (f[j, i] - y[j, i]) ** 2 for i in range(f.shape[1]))
        elif name == "dmse2":
            total += sum((f[j, i] - g[i] * y[j, i]) ** 2 for i in range(f.shape[1]))
    return total / f.shape[0]


def problem(seed, scale=3.0):
    rng = np.random.default_rng(seed)
    f = scale * rng.standard_normal((P, C))
    y = np.eye(C)[rng.integers(0, C, P)]
    g = rng.uniform(0.1, 5.0, C)
    return f, y, C * g / g.sum()


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_loss_equals_numpy_reference(name, seed):
    f, y, g = problem(seed)
    got = float(get_loss(name)(jnp.asarray(f), jnp.asarray(y), jnp.asarray(g)))
    assert got == pytest.approx(reference(name, f, y, g), rel=1e-13)


def test_dce_equals_authors_weighted_loss():
    """Their ``weighted_loss``: −mean(log_softmax(f) · Y · w) · C (a mean over P·C entries)."""
    for seed in range(3):
        f, y, g = problem(seed)
        theirs = -np.mean(np_log_softmax(f) * y * g) * C
        assert float(losses.dce(f, y, g)) == pytest.approx(theirs, rel=1e-13)
        theirs_static = -np.mean(np_log_softmax(f) * y) * C
        assert float(losses.ce(f, y, g)) == pytest.approx(theirs_static, rel=1e-13)


@pytest.mark.parametrize("name", sorted(DYNAMICAL))
def test_dynamical_loss_at_gamma_one_is_its_static_loss(name):
    for seed in range(3):
        f, y, _ = problem(seed)
        ones = np.ones(C)
        static = get_loss(STATIC_OF[name])
        assert float(get_loss(name)(f, y, ones)) == pytest.approx(
            float(static(f, y, ones)), rel=1e-15
        )


def test_gamma_reaches_the_dynamical_losses_only():
    """At a Γ far from 1 each static loss still equals the Γ-free NumPy formula, while each
    dynamical loss moves away from it by more than rounding (so Γ is used where it should be and
    nowhere else)."""
    f, y, g = problem(4)
    assert np.max(np.abs(g - 1)) > 0.3
    for name in LOSSES:
        static = STATIC_OF[name]
        want = reference(static, f, y, np.ones(C))
        got = float(get_loss(name)(f, y, g))
        if name == static:
            np.testing.assert_allclose(got, want, rtol=1e-13)
        else:
            assert abs(got - want) > 1e-3 * abs(want), name


def test_mse_family_zero_at_perfect_targets_for_any_gamma():
    for seed in range(4):
        _, y, g = problem(seed)
        assert float(losses.mse(y, y, g)) == 0.0
        assert float(losses.dmse1(y, y, g)) == 0.0  # DMSE1 keeps the minima of MSE
        assert float(losses.dmse1o(y, y, g)) == 0.0  # and so does the other reading
        assert float(losses.dmse2(g * y, y, g)) == 0.0  # DMSE2 moves them to Γ_i y_i
        assert float(losses.dmse2(y, y, g)) > 0.0


def test_cross_entropy_family_vanishes_at_large_margin_for_any_gamma():
    for seed in range(3):
        _, y, g = problem(seed)
        for name in ("ce", "dce"):
            assert 0.0 <= float(get_loss(name)(60.0 * y, y, g)) < 1e-20


def test_weighting_by_own_class_rescales_each_class_contribution():
    # DCE and DMSE1 are Σ_c Γ_c · (the static loss restricted to class c)
    f, y, g = problem(5)
    labels = y.argmax(1)
    for dyn, static in (("dce", "ce"), ("dmse1", "mse")):
        parts = [
            reference(static, f[labels == c], y[labels == c], g) * np.sum(labels == c)
            for c in range(C)
        ]
        want = sum(g[c] * parts[c] for c in range(C)) / P
        assert float(get_loss(dyn)(f, y, g)) == pytest.approx(want, rel=1e-13)


def test_gradients_match_finite_differences():
    f, y, g = problem(6)
    for name in sorted(LOSSES):
        fn = get_loss(name)
        grad = np.asarray(jax.grad(fn)(jnp.asarray(f), y, g))
        eps = 1e-6
        for j, i in [(0, 0), (3, 1), (11, 2)]:
            d = np.zeros_like(f)
            d[j, i] = eps
            fd = (reference(name, f + d, y, g) - reference(name, f - d, y, g)) / (2 * eps)
            assert grad[j, i] == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_float32_inputs_stay_float32():
    f, y, g = problem(7)
    for name in sorted(LOSSES):
        out = get_loss(name)(f.astype(np.float32), y.astype(np.float32), g.astype(np.float32))
        assert out.dtype == jnp.float32
        assert float(out) == pytest.approx(reference(name, f, y, g), rel=1e-5)


def test_unknown_name_raises_listing_the_names():
    with pytest.raises(ValueError, match="dmse2"):
        get_loss("hinge")
    assert set(STATIC_OF) == set(LOSSES)
    assert DYNAMICAL == {"dce", "dmse1", "dmse1o", "dmse2"}


def test_the_two_readings_of_dmse1_differ_and_weight_outputs_or_samples():
    """DMSE1O weights output i by Γ_i: per output it is Γ_i times MSE's share of output i; it
    differs from DMSE1 (per-sample weights) except at Γ ≡ 1, where both are MSE."""
    f, y, g = problem(8)
    per_output = np.mean((f - y) ** 2, axis=0)  # (C,): (1/P) Σ_j (f_ji − y_ji)²
    assert float(losses.dmse1o(f, y, g)) == pytest.approx(float(g @ per_output), rel=1e-13)
    assert abs(float(losses.dmse1o(f, y, g)) - float(losses.dmse1(f, y, g))) > 1e-3
    ones = np.ones(C)
    for name in ("dmse1", "dmse1o"):
        assert float(get_loss(name)(f, y, ones)) == pytest.approx(
            float(losses.mse(f, y, ones)), rel=1e-14
        )
