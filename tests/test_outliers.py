"""Papyan's class / cross-class decomposition against independent computations.

References: the Gauss–Newton matrix from the matrix-free products of
:func:`dynloss_jax.curvature.ggn_matvec` (columns of the identity), a plain per-sample loop for
the pair weights and means (s_i = Γ_{y_i}/P written out, Jacobians sample by sample), the
closed-form row sums of W, ``np.linalg`` eigendecompositions, and the dense Hessian.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import curvature, outliers
from dynloss_jax.data import spiral
from dynloss_jax.losses import get_loss
from dynloss_jax.model import flat_model

GAMMA = np.array([5.0, 1.0, 1.0]) * 3 / 7


@functools.cache
def _problem(width=6):
    x, y = spiral(points_per_class=4)
    model = flat_model(width, dtype="float64")
    w = model.init(jax.random.key(3))
    return model.apply, w, jnp.asarray(x), jnp.asarray(y), jnp.asarray(GAMMA)


@pytest.mark.parametrize("name", ["ce", "dce"])
def test_pairs_against_a_per_sample_loop_and_the_gauss_newton_products(name):
    apply, w, x, y, g = _problem()
    loss = get_loss(name)
    ps = outliers.pair_structure(apply, loss, w, x, y, g)
    P, C = y.shape
    N = w.shape[0]
    assert float(ps.factor_residual) < 1e-13

    # a plain loop: s_i = Γ_{y_i}/P (DCE) or 1/P (CE), p_i the softmax, J_i sample by sample
    W = np.zeros((C, C))
    S = np.zeros((C, C, N))
    jac = jax.jit(jax.jacobian(lambda w_, xi: apply(w_, xi)[0]))
    for i in range(P):
        xi = x[i : i + 1]
        Ji = np.asarray(jac(w, xi))  # C × N
        pi = np.asarray(jax.nn.softmax(apply(w, xi)[0]))
        c = int(np.argmax(y[i]))
        si = (float(g[c]) if name == "dce" else 1.0) / P
        for d in range(C):
            gid = Ji[d] - pi @ Ji
            W[c, d] += si * pi[d]
            S[c, d] += si * pi[d] * gid
    np.testing.assert_allclose(ps.weights_CxC, W, rtol=1e-12)
    np.testing.assert_allclose(ps.means_CxCxN, S / W[:, :, None], rtol=1e-9, atol=1e-12)
    # row sums in closed form: Σ_c' W_cc' = Σ_{i∈c} s_i = n_c Γ_c / P
    n_c = np.asarray(y).sum(0)
    want = n_c * (np.asarray(g) if name == "dce" else 1.0) / P
    np.testing.assert_allclose(np.asarray(ps.weights_CxC).sum(1), want, rtol=1e-12)

    # G from the matrix-free Gauss–Newton products, column by column
    eye = jnp.eye(N)
    G_ref = np.asarray(jax.vmap(lambda v: curvature.ggn_matvec(apply, loss, w, x, y, g, v))(eye)).T
    scale = np.abs(G_ref).max()
    np.testing.assert_allclose(ps.G_NxN, G_ref, atol=1e-12 * scale)
    # G = between + within, within ⪰ 0, between of rank ≤ C(C − 1)
    np.testing.assert_allclose(ps.between_NxN + ps.within_NxN, G_ref, atol=1e-12 * scale)
    assert np.linalg.eigvalsh(np.asarray(ps.within_NxN)).min() > -1e-12 * scale
    b = np.sort(np.linalg.eigvalsh(np.asarray(ps.between_NxN)))[::-1]
    r = C * (C - 1)
    assert b[r - 1] > 1e-6 * b[0]  # the bound is reached here
    assert abs(b[r]) < 1e-12 * b[0]


def test_report_splits_each_eigenvalue_and_measures_overlap():
    apply, w, x, y, g = _problem()
    loss = get_loss("dce")
    ps = outliers.pair_structure(apply, loss, w, x, y, g)
    H = np.asarray(jax.hessian(lambda w_: loss(apply(w_, x), y, g))(w))
    rep = outliers.outlier_report(H, ps, n_top=8)
    lam_ref = np.sort(np.linalg.eigvalsh(H))[::-1][:8]
    np.testing.assert_allclose(rep["lam"], lam_ref, rtol=1e-10)
    parts = np.add(np.add(rep["between"], rep["within"]), rep["functional"])
    np.testing.assert_allclose(parts, lam_ref, rtol=1e-9, atol=1e-12 * lam_ref[0])
    pairs = np.asarray(rep["pairs"])
    np.testing.assert_allclose(pairs.sum((1, 2)), rep["between"], rtol=1e-9, atol=1e-14)
    assert 0.0 <= rep["overlap"] <= 1.0 + 1e-12
    # the between matrix against itself: the same subspace, overlap 1
    self_rep = outliers.outlier_report(np.asarray(ps.between_NxN), ps, n_top=6)
    assert self_rep["overlap"] == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(self_rep["lam"], self_rep["between_lam"], rtol=1e-10)


def test_a_loss_of_another_form_is_flagged():
    apply, w, x, y, g = _problem()
    ps = outliers.pair_structure(apply, get_loss("mse"), w, x, y, g)
    assert float(ps.factor_residual) > 0.1
