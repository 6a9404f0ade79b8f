"""Class splits, alignments, Gauss–Newton and NTK against dense references.

References are independent of the code under test: dense ``jax.hessian`` of the loss on all
samples and on each class's samples alone (selected by indexing, times n_c/P), dense Jacobians
``jax.jacobian`` of the logits with the dense output-space Hessian of the loss, ``np.linalg``
eigendecompositions, plain NumPy cosines and loops, and finite differences of dense eigenvalues.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import curvature, eig
from dynloss_jax.data import spiral
from dynloss_jax.losses import LOSSES, get_loss
from dynloss_jax.model import flat_model

WIDTH = 6  # N = 39 parameters
GAMMA = np.array([5.0, 1.0, 1.0]) * 3 / 7  # class 0 emphasised, Σ Γ = C
SPLIT_LOSSES = ("ce", "dce", "dmse1", "dmse2")
# measured: <= 2.3e-15 (float64) and <= 4.7e-7 (float32) relative to λ1 on the split test
TOL = {"float64": 1e-10, "float32": 1e-5}


@functools.cache
def _problem(dtype="float64", width=WIDTH):
    """(apply, w_N, x, y, Γ) at a random init on 4 points per class of the spiral (P = 12)."""
    x, y = spiral(points_per_class=4)
    model = flat_model(width, dtype=dtype)
    w = model.init(jax.random.key(3))
    cast = functools.partial(jnp.asarray, dtype=dtype)
    return model.apply, w, cast(x), cast(y), cast(GAMMA)


def _f64(*arrays):
    return [jnp.asarray(a, jnp.float64) for a in arrays]


def _subset_loss(loss, apply, x, y, gamma, c=None):
    """w ↦ (n_c/P)·loss on class c's samples alone, selected by indexing (all samples: c=None)."""
    P = y.shape[0]
    labels = np.argmax(np.asarray(y), axis=1)
    idx = np.arange(P) if c is None else np.flatnonzero(labels == c)

    def F(w_):
        return len(idx) / P * loss(apply(w_, x[idx]), y[idx], gamma)

    return F


def _dense_hessians(loss, apply, w, x, y, gamma):
    """H (N × N) and the per-class H_c (C × N × N) from the loss on class c's samples alone."""

    def on(c):
        return np.asarray(jax.jit(jax.hessian(_subset_loss(loss, apply, x, y, gamma, c)))(w))

    return on(None), np.stack([on(c) for c in range(y.shape[1])])


def _hessian_top(loss, apply, w, x, y, gamma, m, k=2):
    def mv(v):
        return curvature.hessian_matvec(apply, loss, w, x, y, gamma, v)

    def top(w0):
        return eig.lanczos(mv, w0, jax.random.key(0), num_matvecs=m, k=k)

    return jax.jit(top)(jnp.zeros_like(w))


# ---------------------------------------------------------------------------------------------
# Per-class losses and gradients


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_class_parts_sum_to_the_loss_and_match_the_class_subsets(name):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    logits = apply(w, x)
    parts = np.asarray(curvature.class_parts(loss, logits, y, gamma))
    whole = float(loss(logits, y, gamma))
    assert float(curvature.mean_over_samples_gap(loss, logits, y, gamma)) <= 1e-15 * abs(whole)
    np.testing.assert_allclose(parts.sum(), whole, rtol=1e-14)
    labels = np.argmax(np.asarray(y), axis=1)
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        want = len(idx) / len(labels) * float(loss(logits[idx], y[idx], gamma))
        np.testing.assert_allclose(parts[c], want, rtol=1e-14)


def test_mean_over_samples_gap_flags_a_loss_that_couples_samples():
    apply, w, x, y, gamma = _problem()

    def coupled(logits, y_, g):  # squared batch-mean error: not a mean over samples
        return jnp.sum(jnp.mean(logits - y_, axis=0) ** 2)

    assert float(curvature.mean_over_samples_gap(coupled, apply(w, x), y, gamma)) > 1e-3


def test_class_progress_against_a_python_loop():
    loss = get_loss("dce")
    apply, w, x, y, gamma = _problem()
    got = curvature.class_progress(apply, loss, w, x, y, gamma)
    logits = np.asarray(apply(w, x))
    labels = np.argmax(np.asarray(y), axis=1)
    P = len(labels)
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        loss_c = float(loss(jnp.asarray(logits[idx]), y[idx], gamma))  # mean over class c
        acc_c = np.mean(np.argmax(logits[idx], axis=1) == c)
        np.testing.assert_allclose(got.loss_C[c], loss_c, rtol=1e-14)
        np.testing.assert_allclose(got.accuracy_C[c], acc_c, rtol=0, atol=0)
        np.testing.assert_allclose(got.part_C[c], len(idx) / P * loss_c, rtol=1e-14)
        assert got.count_C[c] == len(idx)


def test_class_progress_of_an_absent_class_is_nan():
    apply, w, x, y, gamma = _problem()
    keep = np.argmax(np.asarray(y), axis=1) != 2
    got = curvature.class_progress(apply, get_loss("ce"), w, x[keep], y[keep], gamma)
    assert np.isnan(got.loss_C[2]) and np.isnan(got.accuracy_C[2]) and got.part_C[2] == 0
    assert np.all(np.isfinite(got.loss_C[:2]))


@pytest.mark.parametrize("name", ["dce", "dmse2"])
def test_class_gradients_against_class_subsets(name):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    g = np.asarray(curvature.class_gradients(apply, loss, w, x, y, gamma))
    for c in range(3):
        want = jax.grad(_subset_loss(loss, apply, x, y, gamma, c))(w)
        np.testing.assert_allclose(g[c], want, rtol=1e-12, atol=1e-15)
    full = jax.grad(lambda w_: loss(apply(w_, x), y, gamma))(w)
    np.testing.assert_allclose(g.sum(axis=0), full, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["dce", "dmse1o"])
def test_class_gradients_by_subsets_equal_the_masked_ones(name):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    sets = curvature.class_index_sets(y)
    assert [s.tolist() for s in sets] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]

    @jax.jit
    def by_subsets(w_, g_):
        return curvature.class_gradients_by_subsets(apply, loss, w_, x, y, g_, sets)

    masked = curvature.class_gradients(apply, loss, w, x, y, gamma)
    np.testing.assert_allclose(by_subsets(w, gamma), masked, rtol=1e-12, atol=1e-15)
    # a class with no samples has a zero gradient
    keep = np.argmax(np.asarray(y), axis=1) != 1
    xk, yk = x[keep], y[keep]
    g = curvature.class_gradients_by_subsets(
        apply, loss, w, xk, yk, gamma, curvature.class_index_sets(yk)
    )
    assert np.all(g[1] == 0)
    want = curvature.class_gradients(apply, loss, w, xk, yk, gamma)
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# The class split of tracked eigenvectors


@pytest.mark.parametrize(
    "name, dtype",
    [(n, "float64") for n in SPLIT_LOSSES] + [("dce", "float32"), ("dmse2", "float32")],
)
def test_split_of_lanczos_vectors_against_dense_per_class_hessians(name, dtype):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem(dtype)
    n = w.shape[0]
    res = _hessian_top(loss, apply, w, x, y, gamma, m=n)  # the whole space: exact pairs
    split = jax.jit(functools.partial(curvature.class_split, apply, loss))(
        w, x, y, gamma, res.vectors_KxN
    )
    # references in float64 at the same weights
    apply64, _, x64, y64, g64 = _problem("float64")
    (w64,) = _f64(w)
    H, Hc = _dense_hessians(loss, apply64, w64, x64, y64, g64)
    lam = np.linalg.eigvalsh(H)[::-1][:2]
    U = np.asarray(res.vectors_KxN, np.float64)
    tol = TOL[dtype]
    np.testing.assert_allclose(res.top_K, lam, rtol=tol)
    # the split sums to λ_k; each term is the dense per-class quadratic form
    np.testing.assert_allclose(split.lam_K, lam, rtol=tol)
    np.testing.assert_allclose(np.asarray(split.curvature_KxC).sum(axis=1), lam, rtol=tol)
    want = np.einsum("kn,cnm,km->kc", U, Hc, U)
    scale = np.abs(lam)[:, None]
    assert np.max(np.abs(np.asarray(split.curvature_KxC) - want) / scale) <= tol
    np.testing.assert_allclose(Hc.sum(axis=0), H, rtol=1e-12, atol=1e-14)  # the split is exact


@pytest.mark.parametrize("name", ["dce", "dmse2"])
def test_split_of_unconverged_ritz_vectors_sums_to_their_ritz_values(name):
    """With 8 products (too few to converge at N = 39) the split still sums to the reported
    Ritz value θ_k = u_kᵀ H u_k, and each term is the dense per-class value."""
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    res = _hessian_top(loss, apply, w, x, y, gamma, m=8)
    split = curvature.class_split(apply, loss, w, x, y, gamma, res.vectors_KxN)
    H, Hc = _dense_hessians(loss, apply, w, x, y, gamma)
    lam = np.linalg.eigvalsh(H)[::-1][:2]
    assert np.max(np.abs(res.top_K - lam) / lam) > 1e-6  # not converged: the test means something
    np.testing.assert_allclose(split.lam_K, res.top_K, rtol=1e-12)
    U = np.asarray(res.vectors_KxN)
    want = np.einsum("kn,cnm,km->kc", U, Hc, U)
    assert np.max(np.abs(np.asarray(split.curvature_KxC) - want) / np.abs(lam)[:, None]) <= 1e-12


@pytest.mark.parametrize("name", ["ce", "dmse2"])
def test_class_ggn_split_against_dense_jacobians(name):
    """u_kᵀ G^(c) u_k from J_c (class c's rows of the dense Jacobian) and the dense Hessian of
    (n_c/P)·loss on class c's logits; the classes sum to the GGN's quadratic form."""
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    U = jax.random.normal(jax.random.key(11), (2, w.shape[0]), w.dtype)
    got = np.asarray(curvature.class_ggn_curvature(apply, loss, w, x, y, gamma, U))
    labels = np.argmax(np.asarray(y), axis=1)
    J = np.asarray(jax.jit(jax.jacobian(lambda w_: apply(w_, x)))(w))  # P × C × N
    Un = np.asarray(U)
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        Jc = J[idx].reshape(-1, J.shape[-1])
        z = apply(w, x)[idx].reshape(-1)

        def Fz(z_, idx=idx):
            return len(idx) / 12 * loss(z_.reshape(len(idx), 3), y[idx], gamma)

        Gc = Jc.T @ np.asarray(jax.hessian(Fz)(z)) @ Jc
        np.testing.assert_allclose(got[:, c], np.einsum("kn,nm,km->k", Un, Gc, Un), rtol=1e-11)
    G, _ = _dense_ggn_ntk(loss, apply, w, x, y, gamma)
    np.testing.assert_allclose(got.sum(axis=1), np.einsum("kn,nm,km->k", Un, G, Un), rtol=1e-11)


def test_class_hvp_against_dense_per_class_hessians():
    loss = get_loss("dmse2")
    apply, w, x, y, gamma = _problem()
    v = jax.random.normal(jax.random.key(1), w.shape, w.dtype)
    got = np.asarray(curvature.class_hvp(apply, loss, w, x, y, gamma, v))
    _, Hc = _dense_hessians(loss, apply, w, x, y, gamma)
    want = Hc @ np.asarray(v)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13 * np.abs(want).max())


def test_class_matrices_against_dense_per_class_hessians():
    loss = get_loss("dce")
    apply, w, x, y, gamma = _problem()
    U = jax.random.normal(jax.random.key(3), (3, w.shape[0]), w.dtype)
    fn = jax.jit(functools.partial(curvature.class_matrices, apply, loss))
    got = np.asarray(fn(w, x, y, gamma, U))
    _, Hc = _dense_hessians(loss, apply, w, x, y, gamma)
    Un = np.asarray(U)
    want = np.einsum("kn,cnm,lm->ckl", Un, Hc, Un)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    diag = np.asarray(curvature.class_curvature(apply, loss, w, x, y, gamma, U))
    np.testing.assert_allclose(np.diagonal(got, axis1=1, axis2=2).T, diag, rtol=1e-11)


def test_a_loss_with_hyperparameters_is_split_and_linearised_with_them():
    """A user's loss with a keyword (label smoothing ε, an array): the split and the GGN use it."""

    def smoothed_dce(logits, y_, g, *, eps):
        target = (1 - eps) * y_ + eps / y_.shape[1]
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * target * (y_ @ g)[:, None], axis=1))

    apply, w, x, y, gamma = _problem()
    hyper = {"eps": jnp.asarray(0.1)}
    loss = functools.partial(smoothed_dce, eps=0.1)
    H, Hc = _dense_hessians(loss, apply, w, x, y, gamma)
    lam, vec = np.linalg.eigh(H)
    U = jnp.asarray(vec[:, ::-1][:, :2].T)
    split = curvature.class_split(apply, smoothed_dce, w, x, y, gamma, U, hyper=hyper)
    Un = np.asarray(U)
    np.testing.assert_allclose(
        split.curvature_KxC, np.einsum("kn,cnm,km->kc", Un, Hc, Un), rtol=1e-10
    )
    np.testing.assert_allclose(split.lam_K, lam[::-1][:2], rtol=1e-10)
    G, _ = _dense_ggn_ntk(loss, apply, w, x, y, gamma)
    v = jax.random.normal(jax.random.key(5), w.shape, w.dtype)
    got = curvature.ggn_matvec(apply, smoothed_dce, w, x, y, gamma, v, hyper=hyper)
    np.testing.assert_allclose(got, G @ np.asarray(v), rtol=0, atol=1e-12 * np.abs(G).max())


def test_alignment_against_direct_cosines():
    loss = get_loss("dce")
    apply, w, x, y, gamma = _problem()
    U = jax.random.normal(jax.random.key(2), (3, w.shape[0]), w.dtype)
    U = U / jnp.linalg.norm(U, axis=1, keepdims=True)
    split = curvature.class_split(apply, loss, w, x, y, gamma, U)
    cos = np.zeros((3, 3))
    norms = np.zeros(3)
    for c in range(3):
        g = np.asarray(jax.grad(_subset_loss(loss, apply, x, y, gamma, c))(w))
        norms[c] = np.linalg.norm(g)
        for k in range(3):
            u = np.asarray(U[k])
            cos[k, c] = u @ g / (np.linalg.norm(u) * np.linalg.norm(g))
    np.testing.assert_allclose(split.cosine_KxC, cos, rtol=1e-12)
    np.testing.assert_allclose(split.grad_norm_C, norms, rtol=1e-12)
    assert int(split.emphasised) == 0  # Γ_0 is the largest
    np.testing.assert_allclose(split.cos_emphasised_K, cos[:, 0], rtol=1e-12)
    np.testing.assert_allclose(split.abs_cos_other_K, np.abs(cos[:, 1:]).mean(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(split.best_is_emphasised_K, np.argmax(np.abs(cos), axis=1) == 0)
    # the schedule's class passed in explicitly; no emphasised class at a tie
    given = curvature.class_split(apply, loss, w, x, y, gamma, U, emphasised=2)
    np.testing.assert_allclose(given.cos_emphasised_K, cos[:, 2], rtol=1e-12)
    np.testing.assert_allclose(given.abs_cos_other_K, np.abs(cos[:, :2]).mean(axis=1), rtol=1e-12)
    tie = curvature.class_split(apply, loss, w, x, y, jnp.ones(3), U)
    assert int(tie.emphasised) == -1
    assert np.all(np.isnan(tie.cos_emphasised_K)) and not np.any(tie.best_is_emphasised_K)


@pytest.mark.parametrize("name", ["dce", "dmse1o", "dmse2"])
def test_gamma_sensitivity_is_the_derivative_of_the_dense_eigenvalue(name):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()

    @jax.jit
    def dense_h(g):
        return jax.hessian(lambda w_: loss(apply(w_, x), y, g))(w)

    def top2(g):
        return np.linalg.eigvalsh(np.asarray(dense_h(g)))[::-1][:2]

    lam, vec = np.linalg.eigh(np.asarray(dense_h(gamma)))
    U = jnp.asarray(vec[:, ::-1][:, :2].T)
    D = np.asarray(curvature.gamma_sensitivity(apply, loss, w, x, y, gamma, U))
    h = 1e-5
    for c in range(3):
        e = np.zeros(3)
        e[c] = h
        up, dn = top2(gamma + e), top2(gamma - e)
        np.testing.assert_allclose(D[:, c], (up - dn) / (2 * h), rtol=1e-6, atol=1e-8)
    total = D @ np.asarray(gamma)
    if name in ("dce", "dmse1o"):  # linear and homogeneous in Γ: Σ_c Γ_c ∂λ/∂Γ_c = λ
        np.testing.assert_allclose(total, lam[::-1][:2], rtol=1e-10)
    if name == "dce":  # Γ_c ∂λ/∂Γ_c is then the sample split
        split = curvature.class_curvature(apply, loss, w, x, y, gamma, U)
        np.testing.assert_allclose(D * np.asarray(gamma), split, rtol=1e-10, atol=1e-14)


def test_class_split_vmaps_over_runs():
    loss = get_loss("dmse1")
    apply, w, x, y, gamma = _problem()
    model = flat_model(WIDTH)
    W = jnp.stack([w, model.init(jax.random.key(7))])
    G = jnp.stack([gamma, jnp.asarray([1.0, 0.5, 1.5])])
    U = jax.random.normal(jax.random.key(4), (2, 2, w.shape[0]))
    U = U / jnp.linalg.norm(U, axis=-1, keepdims=True)

    E = jnp.asarray([2, -1])  # the schedule's class, passed in (−1: none)

    @jax.jit
    def one(w_, g_, u_, e_):
        return curvature.class_split(apply, loss, w_, x, y, g_, u_, emphasised=e_)

    batched = jax.jit(jax.vmap(one))(W, G, U, E)
    assert int(batched.emphasised[0]) == 2 and np.all(np.isnan(batched.cos_emphasised_K[1]))
    for r in range(2):
        single = one(W[r], G[r], U[r], E[r])
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(got[r], want, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Gauss–Newton and NTK against dense Jacobians


def _dense_ggn_ntk(loss, apply, w, x, y, gamma):
    P, C = y.shape
    J = np.asarray(jax.jit(jax.jacobian(lambda w_: apply(w_, x).reshape(-1)))(w))  # (P·C) × N
    z = apply(w, x).reshape(-1)
    Hl = np.asarray(jax.jit(jax.hessian(lambda z_: loss(z_.reshape(P, C), y, gamma)))(z))
    return J.T @ Hl @ J, J @ J.T


@pytest.mark.parametrize(
    "name, dtype", [("ce", "float64"), ("dce", "float64"), ("dmse2", "float64"), ("dce", "float32")]
)
def test_ggn_and_ntk_against_dense_jacobians(name, dtype):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem(dtype)
    apply64, _, x64, y64, g64 = _problem("float64")
    (w64,) = _f64(w)
    G, Theta = _dense_ggn_ntk(loss, apply64, w64, x64, y64, g64)
    tol = TOL[dtype]
    v = jax.random.normal(jax.random.key(5), w.shape, w.dtype)
    got = curvature.ggn_matvec(apply, loss, w, x, y, gamma, v)
    want = G @ np.asarray(v, np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    u = jax.random.normal(jax.random.key(6), (y.size,), w.dtype)
    got = curvature.ntk_matvec(apply, w, x, u)
    want = Theta @ np.asarray(u, np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())

    n, m = w.shape[0], y.size
    g_top = jax.jit(functools.partial(curvature.ggn_top, apply, loss, num_matvecs=n))(
        w, x, y, gamma, jax.random.key(0)
    )
    np.testing.assert_allclose(g_top.top_K, np.linalg.eigvalsh(G)[::-1][:2], rtol=tol)
    t_top = jax.jit(functools.partial(curvature.ntk_top, apply, n_classes=3, num_matvecs=m))(
        w, x, key=jax.random.key(0)
    )
    np.testing.assert_allclose(t_top.top_K, np.linalg.eigvalsh(Theta)[::-1][:2], rtol=tol)
    # the output-traced NTK Σ_i J_i J_iᵀ (P × P)
    J_PxCxN = np.asarray(jax.jit(jax.jacobian(lambda w_: apply64(w_, x64)))(w64)).reshape(
        y.shape[0], 3, -1
    )
    traced = np.einsum("pin,qin->pq", J_PxCxN, J_PxCxN)
    r = jax.random.normal(jax.random.key(7), (y.shape[0],), w.dtype)
    got = curvature.ntk_traced_matvec(apply, w, x, r)
    want = traced @ np.asarray(r, np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    top_fn = functools.partial(
        curvature.ntk_top, apply, n_classes=3, num_matvecs=y.shape[0], trace_outputs=True
    )
    tr_top = jax.jit(top_fn)(w, x, key=jax.random.key(0))
    np.testing.assert_allclose(tr_top.top_K, np.linalg.eigvalsh(traced)[::-1][:2], rtol=tol)
    # the NTK's nonzero spectrum is JᵀJ's
    J = np.asarray(jax.jit(jax.jacobian(lambda w_: apply64(w_, x64).reshape(-1)))(w64))
    np.testing.assert_allclose(t_top.top_K, np.linalg.eigvalsh(J.T @ J)[::-1][:2], rtol=tol)


@pytest.mark.parametrize("name", ["dce", "dmse2"])
def test_hessian_ggn_gap_against_dense(name):
    loss = get_loss(name)
    apply, w, x, y, gamma = _problem()
    n = w.shape[0]
    gap = jax.jit(functools.partial(curvature.hessian_ggn_gap, apply, loss, num_matvecs=n))(
        w, x, y, gamma, jax.random.key(0)
    )
    H, _ = _dense_hessians(loss, apply, w, x, y, gamma)
    G, _ = _dense_ggn_ntk(loss, apply, w, x, y, gamma)
    lam, vec = np.linalg.eigh(H)
    lam_g = np.linalg.eigvalsh(G)[-1]
    u1 = vec[:, -1]
    np.testing.assert_allclose(gap.lam1_hessian, lam[-1], rtol=1e-10)
    np.testing.assert_allclose(gap.lam1_ggn, lam_g, rtol=1e-10)
    np.testing.assert_allclose(gap.gap, lam[-1] - lam_g, rtol=1e-8, atol=1e-10 * lam[-1])
    np.testing.assert_allclose(gap.functional_u1, u1 @ (H - G) @ u1, rtol=1e-8, atol=1e-12)
    assert gap.gap <= gap.functional_u1 + 1e-10 * lam[-1]


def _linear_apply(w_N, x_PxD):
    """f = x W + b with W (2 × 3) and b (3,) read from w_N (N = 9)."""
    return x_PxD @ w_N[:6].reshape(2, 3) + w_N[6:]


@pytest.mark.parametrize("name", ["mse", "dmse2", "ce"])
def test_hessian_equals_ggn_for_a_linear_model(name):
    loss = get_loss(name)
    _, _, x, y, gamma = _problem()
    w = jax.random.normal(jax.random.key(8), (9,), x.dtype)
    H = np.asarray(jax.hessian(lambda w_: loss(_linear_apply(w_, x), y, gamma))(w))
    G, _ = _dense_ggn_ntk(loss, _linear_apply, w, x, y, gamma)
    np.testing.assert_allclose(G, H, rtol=1e-12, atol=1e-14)
    V = jax.random.normal(jax.random.key(9), (3, 9), x.dtype)
    h_V = jax.vmap(functools.partial(curvature.hessian_matvec, _linear_apply, loss, w, x, y, gamma))
    g_V = jax.vmap(functools.partial(curvature.ggn_matvec, _linear_apply, loss, w, x, y, gamma))
    for v, h_v, g_v in zip(V, jax.jit(h_V)(V), jax.jit(g_V)(V), strict=True):
        np.testing.assert_allclose(g_v, h_v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g_v, H @ np.asarray(v), rtol=1e-12, atol=1e-14)
    fc = jax.jit(functools.partial(curvature.functional_curvature, _linear_apply, loss))(
        w, x, y, gamma, V
    )
    np.testing.assert_array_equal(fc, 0.0)
    gap_fn = functools.partial(curvature.hessian_ggn_gap, _linear_apply, loss, num_matvecs=9)
    gap = jax.jit(gap_fn)(w, x, y, gamma, jax.random.key(0))
    np.testing.assert_allclose(gap.gap, 0.0, atol=1e-12 * abs(float(gap.lam1_hessian)))
    np.testing.assert_allclose(gap.lam1_hessian, np.linalg.eigvalsh(H)[-1], rtol=1e-12)
