"""Spectral density, trace, per-layer sharpness and λ_min against dense references.

References are independent of the code under test: ``np.linalg.eigh`` of a dense
``jax.hessian`` (float64) of the spiral network on 12 points, quadratics ½wᵀHw with a prescribed
spectrum H = Q diag(λ) Qᵀ, and closed forms (moments uᵀH^p u, the Hutchinson variance
2(‖H‖_F² − Σ H_ii²)).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import eig, spectrum
from dynloss_jax.data import spiral
from dynloss_jax.losses import get_loss
from dynloss_jax.model import flat_model

GAMMA = (2.0, 0.6, 0.4)  # a dynamical-loss point: class 0 emphasised


def _quadratic_matrix(lam, seed=0):
    lam = np.asarray(lam, float)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(lam.size, lam.size)))
    return (q * lam) @ q.T, q


def _quadratic_loss(h, dtype="float64"):
    h = jnp.asarray(h, dtype)
    return lambda w: 0.5 * w @ (h @ w)


@functools.cache
def _network(width, dtype="float64"):
    """DCE of the spiral network on 12 points: (loss of the flax params, params, dense H)."""
    model = flat_model(width, 3, dtype=dtype)
    x, y = spiral(4, 3)
    x, y, g = jnp.asarray(x, dtype), jnp.asarray(y, dtype), jnp.asarray(GAMMA, dtype)

    def loss_w(w):
        return get_loss("dce")(model.apply(w, x), y, g)

    w = model.init(jax.random.key(width))
    h = np.asarray(jax.jit(jax.hessian(loss_w))(w.astype(jnp.float64)), np.float64)

    def loss(params):
        return loss_w(jax.flatten_util.ravel_pytree(params)[0])

    return loss, model.unravel(w), h


def _rule(h, u, m):
    h = jnp.asarray(h)
    nodes, weights = jax.jit(
        lambda u: spectrum.lanczos_quadrature(lambda v: h @ v, u, num_matvecs=m)
    )(u)
    return np.asarray(nodes, np.float64), np.asarray(weights, np.float64)


def _assert_rule(weights, atol):
    assert np.all(np.isfinite(weights))
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=atol)


# ---------------------------------------------------------------------------------------------
# 1. Gauss quadrature: exact nodes, exact weights, exact moments, safe breakdown


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_full_krylov_space_gives_the_eigenvalues_and_squared_projections(dtype):
    n = 20
    lam = np.r_[6.0, 4.0, np.linspace(2.0, -1.0, n - 2)]
    h, q = _quadratic_matrix(lam)
    u = np.asarray(jax.random.rademacher(jax.random.key(0), (n,), jnp.int32), float)
    nodes, weights = _rule(h.astype(dtype), u.astype(dtype), n)
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(nodes, np.sort(lam), atol=tol * 6)
    want = (q[:, np.argsort(lam)].T @ (u / np.linalg.norm(u))) ** 2
    np.testing.assert_allclose(weights, want, atol=tol)
    _assert_rule(weights, atol=tol)


def _low_rank(n=20, rank=3):
    lam = np.r_[np.linspace(3.0, 1.0, rank), np.zeros(n - rank)]
    return _quadratic_matrix(lam, seed=1)[0], rank + 1  # distinct eigenvalues: rank + 1


@pytest.mark.parametrize("case", ["rank_3", "m_above_n", "width_2_network"])
def test_breakdown_masks_nodes_and_keeps_every_moment(case):
    """The Krylov space closes before m steps: no NaN, masked nodes weigh exactly 0, and the
    rule still integrates u ↦ uᵀH^p u exactly for p ≤ 7 (so its weights are right)."""
    if case == "rank_3":
        (h, distinct), m = _low_rank(), 10
    elif case == "m_above_n":
        h, distinct, m = _quadratic_matrix(np.linspace(-1.0, 2.0, 12))[0], 12, 17
    else:
        _, _, h = _network(2)
        assert h.shape == (15, 15)
        distinct, m = None, 20
    n = h.shape[0]
    u = np.array(jax.random.normal(jax.random.key(1), (n,)))
    u = u / np.linalg.norm(u)
    nodes, weights = _rule(h, u, m)
    assert np.all(np.isfinite(nodes))
    _assert_rule(weights, atol=1e-13)
    used = weights > 0
    assert np.sum(~used) >= m - n
    if distinct is not None:
        assert np.sum(used) == distinct
    spectrum_ = np.linalg.eigvalsh(h)
    assert nodes.min() >= spectrum_[0] - 1e-12 and nodes.max() <= spectrum_[-1] + 1e-12
    scale = np.max(np.abs(spectrum_))
    hu = u
    for p in range(8):
        np.testing.assert_allclose(np.sum(weights * nodes**p), u @ hu, atol=1e-11 * scale**p)
        hu = h @ hu


def test_lanczos_quadrature_costs_exactly_num_matvecs_products():
    h = jnp.asarray(_quadratic_matrix(np.linspace(1.0, 2.0, 30))[0])
    calls = []

    def matvec(v):
        jax.debug.callback(lambda: calls.append(1))
        return h @ v

    jax.block_until_ready(
        jax.jit(lambda u: spectrum.lanczos_quadrature(matvec, u, num_matvecs=12))(jnp.ones(30))
    )
    assert len(calls) == 12


# ---------------------------------------------------------------------------------------------
# 2. The density of the network and of a quadratic: moments within their sampling error


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("which", ["network", "quadratic"])
def test_density_moments_estimate_trace_moments(which, dtype):
    if which == "network":
        loss, params, h = _network(8, dtype)
    else:
        h = _quadratic_matrix(np.r_[5.0, 2.0, np.linspace(1.0, -0.5, 38)], seed=2)[0]
        loss, params = _quadratic_loss(h, dtype), jnp.zeros(40, dtype)
    n = h.shape[0]
    rho = jax.jit(
        lambda key, p: spectrum.spectral_density(loss, p, key=key, num_matvecs=8, num_probes=64)
    )(jax.random.key(3), params)
    _assert_rule(np.asarray(rho.weights, np.float64), atol=1e-12 if dtype == "float64" else 1e-5)
    for p, want in [(1, np.trace(h) / n), (2, np.sum(h * h) / n)]:
        per_probe = np.asarray(spectrum.quadrature_moment(rho.nodes, rho.weights, p), np.float64)
        standard_error = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        assert standard_error > 0
        assert abs(per_probe.mean() - want) < 4 * standard_error, (p, per_probe.mean(), want)


def test_density_on_grid_is_the_broadened_rule_and_integrates_to_one():
    lam = np.r_[3.0, np.linspace(1.0, -1.0, 9)]
    h, q = _quadratic_matrix(lam, seed=3)
    grid = np.linspace(-3.0, 5.0, 801)
    sigma = 0.1

    @jax.jit
    def run(key):
        rho = spectrum.spectral_density(
            _quadratic_loss(h), jnp.zeros(10), key=key, num_matvecs=10, num_probes=3
        )
        return rho, spectrum.density_on_grid(rho.nodes, rho.weights, jnp.asarray(grid), sigma)

    rho, density = run(jax.random.key(4))
    density = np.asarray(density)
    assert density.shape == grid.shape
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-10)
    # With the full Krylov space each probe's rule is Σ_i (q_iᵀu)² δ(t − λ_i).
    nodes, weights = np.asarray(rho.nodes), np.asarray(rho.weights)
    want = np.mean(
        [
            np.sum(w * np.exp(-0.5 * ((grid[:, None] - t) / sigma) ** 2), axis=1)
            for t, w in zip(nodes, weights, strict=True)
        ],
        axis=0,
    ) / (np.sqrt(2 * np.pi) * sigma)
    np.testing.assert_allclose(density, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.sort(nodes[0]), np.sort(lam), atol=1e-12)


def test_normal_probes_and_num_matvecs_above_the_parameter_count():
    loss, params, h = _network(2)
    rho = jax.jit(
        lambda key, p: spectrum.spectral_density(
            loss, p, key=key, num_matvecs=24, num_probes=2, probe="normal"
        )
    )(jax.random.key(5), params)
    assert rho.nodes.shape == rho.weights.shape == (2, 24)
    assert np.all(np.isfinite(np.asarray(rho.nodes)))
    _assert_rule(np.asarray(rho.weights), atol=1e-13)
    ev = np.linalg.eigvalsh(h)
    used = np.asarray(rho.nodes)[np.asarray(rho.weights) > 0]
    assert np.max(np.min(np.abs(used[:, None] - ev[None]), axis=1)) < 1e-10


# ---------------------------------------------------------------------------------------------
# 3. The trace: unbiased, calibrated standard errors, 1/√n, Hutch++ exact for low rank


def _trace_runs(loss, params, num_samples, method, n_keys=64, seed=6):
    keys = jax.random.split(jax.random.key(seed), n_keys)
    est, se = jax.jit(
        jax.vmap(
            lambda k: spectrum.hessian_trace(
                loss, params, key=k, num_samples=num_samples, method=method
            )
        )
    )(keys)
    return np.asarray(est, np.float64), np.asarray(se, np.float64)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_three_standard_errors_of_the_dense_trace(method, dtype):
    loss, params, h = _network(8, dtype)
    tr = np.trace(h)
    est, se = _trace_runs(loss, params, 24, method)
    assert abs(est[0] - tr) < 3 * se[0]
    assert np.mean(np.abs(est - tr) < 3 * se) >= 0.9
    # unbiased over keys, and the standard error is calibrated against the spread over keys
    assert abs(est.mean() - tr) < 4 * est.std(ddof=1) / np.sqrt(est.size)
    assert 0.6 < np.mean(se) / est.std(ddof=1) < 1.5


def test_hutchinson_standard_error_shrinks_like_one_over_sqrt_samples():
    h = _quadratic_matrix(np.r_[4.0, np.linspace(2.0, -1.0, 29)], seed=4)[0]
    loss, params = _quadratic_loss(h), jnp.zeros(30)
    _, se16 = _trace_runs(loss, params, 16, "hutchinson", n_keys=32)
    _, se256 = _trace_runs(loss, params, 256, "hutchinson", n_keys=32)
    assert 3.2 < se16.mean() / se256.mean() < 5.0
    # the sample standard deviation is the Rademacher one: Var zᵀHz = 2(‖H‖_F² − Σ H_ii²)
    sd = np.sqrt(2 * (np.sum(h * h) - np.sum(np.diag(h) ** 2)))
    np.testing.assert_allclose(se256.mean() * 16, sd, rtol=0.1)


def test_hutchpp_is_exact_when_the_sketch_spans_the_range():
    h = _quadratic_matrix(np.r_[5.0, -2.0, np.zeros(18)], seed=5)[0]  # rank 2, 9 = 3 + 3 + 3
    est, se = _trace_runs(_quadratic_loss(h), jnp.zeros(20), 9, "hutch++", n_keys=4)
    np.testing.assert_allclose(est, 3.0, atol=1e-12)
    np.testing.assert_allclose(se, 0.0, atol=1e-12)
    est_h, _ = _trace_runs(_quadratic_loss(h), jnp.zeros(20), 9, "hutchinson", n_keys=4)
    assert np.max(np.abs(est_h - 3.0)) > 0.1  # plain Hutchinson is not


# ---------------------------------------------------------------------------------------------
# 4. Per-layer sharpness and λ_min


def _dense_blocks(params, h):
    out, start = {}, 0
    for name, leaf in zip(spectrum.block_names(params), jax.tree.leaves(params), strict=True):
        end = start + leaf.size
        out[name] = np.linalg.eigvalsh(h[start:end, start:end])[-1]
        start = end
    return out


@pytest.mark.parametrize(("width", "dtype"), [(16, "float64"), (4, "float32")])
def test_layer_sharpness_is_the_top_eigenvalue_of_each_diagonal_block(width, dtype):
    loss, params, h = _network(width, dtype)
    got = jax.jit(lambda key, p: spectrum.layer_sharpness(loss, p, key=key, num_matvecs=24))(
        jax.random.key(7), params
    )
    want = _dense_blocks(params, h)
    assert list(got) == ["Dense_0/bias", "Dense_0/kernel", "Dense_1/bias", "Dense_1/kernel"]
    tol = 1e-10 if dtype == "float64" else 1e-5
    for name, lam in want.items():
        assert abs(float(got[name]) - lam) <= tol * abs(lam), (name, float(got[name]), lam)
    assert max(want.values()) < np.linalg.eigvalsh(h)[-1] - 1e-3  # blocks, not the whole H


def test_layer_sharpness_of_a_negative_definite_block_is_negative():
    """Block 'a' (3 entries < m) has λ1 = −0.5: the masked-out null space adds no 0."""
    ha = _quadratic_matrix([-0.5, -1.0, -2.0], seed=6)[0]
    hb = _quadratic_matrix([3.0, 1.0, 0.5, -1.0], seed=7)[0]
    c = np.random.default_rng(8).normal(size=(3, 4)) * 0.3
    h = jnp.asarray(np.block([[ha, c], [c.T, hb]]))

    def loss(p):
        w = jnp.concatenate([p["a"], p["b"].ravel()])
        return 0.5 * w @ (h @ w)

    params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    got = jax.jit(lambda key, p: spectrum.layer_sharpness(loss, p, key=key, num_matvecs=8))(
        jax.random.key(9), params
    )
    np.testing.assert_allclose(float(got["a"]), -0.5, rtol=1e-12)
    np.testing.assert_allclose(float(got["b"]), 3.0, rtol=1e-12)


def test_smallest_eigenvalue_meets_its_stated_accuracy():
    loss, params, h = _network(12)
    ev = np.linalg.eigvalsh(h)
    lam_min = ev[0]
    for m, converged in [(8, False), (48, True)]:
        res = jax.jit(
            lambda key, p, m=m: spectrum.smallest_eigenvalue(
                loss, p, key=key, num_matvecs=m, tol=1e-8
            )
        )(jax.random.key(10), params)
        value, r = float(res.value), float(res.residual)
        assert value >= lam_min - 1e-12  # a Ritz value never lies below λ_min
        assert bool(res.converged) == converged == (r <= 1e-8 * abs(value))
        if converged:
            assert abs(value - lam_min) <= 1e-8 * abs(lam_min)
        else:
            assert np.min(np.abs(ev - value)) <= r + 1e-12  # some eigenvalue lies within r
            assert abs(value - lam_min) > 1e-6


def test_shifting_the_operator_does_not_change_lanczos():
    """Why smallest_eigenvalue uses no shift: Krylov spaces of σI − H and H coincide."""
    lam = np.r_[4.0, np.linspace(1.0, -0.2, 38), -0.25]
    h = jnp.asarray(_quadratic_matrix(lam, seed=9)[0])
    sigma = 4.5
    run = jax.jit(
        lambda key, s: eig.lanczos(
            lambda v: s * v + (1 - 2 * (s > 0)) * (h @ v), jnp.zeros(40), key, num_matvecs=12, k=12
        )
    )
    plain, shifted = run(jax.random.key(11), 0.0), run(jax.random.key(11), sigma)
    np.testing.assert_allclose(sigma - np.asarray(shifted.top_K), plain.top_K[::-1], atol=1e-12)
    np.testing.assert_allclose(sigma - shifted.top_K[0], plain.lam_min, atol=1e-12)
    assert abs(float(plain.lam_min) + 0.25) > 1e-4  # and 12 steps are not enough for either


def test_argument_checks_and_names():
    f, w, key = (lambda w: w @ w), jnp.ones(3), jax.random.key(0)
    with pytest.raises(ValueError, match="probe"):
        spectrum.spectral_density(f, w, key=key, probe="gaussian")
    with pytest.raises(ValueError, match="num_probes"):
        spectrum.spectral_density(f, w, key=key, num_probes=0)
    with pytest.raises(ValueError, match="method"):
        spectrum.hessian_trace(f, w, key=key, method="hutch+")
    with pytest.raises(ValueError, match="num_samples"):
        spectrum.hessian_trace(f, w, key=key, num_samples=3, method="hutch++")
    with pytest.raises(ValueError, match="num_matvecs"):
        spectrum.layer_sharpness(f, w, key=key, num_matvecs=0)
    assert spectrum.block_names(w) == ["w"]
    assert spectrum.block_names({"params": {"Dense_0": {"kernel": w}}, "x": [w]}) == [
        "Dense_0/kernel",
        "x/0",
    ]
