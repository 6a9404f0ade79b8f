"""The central-flow projection problem: the SDCP solver against exact solutions and cvxpy, the
K = 1 closed form, masks, jit/vmap, float32, and the GD problem on a loss with a dense Hessian.

References, each independent of the solver:

* *planted* instances — X*, Y* ⪰ 0 with a common eigenbasis and complementary eigenvalues (some
  directions with both zero: the degenerate case), a random β ≻ 0 with condition number ≤ 10³,
  and α := Y* − β(X*). The problem is strongly convex, so X* is its unique solution, exactly.
* cvxpy with CLARABEL on random (unplanted) instances. At K ≥ 2 it stops far short of 10⁻⁸
  (status mostly ``optimal_inaccurate``, even at tolerance 10⁻¹²), so it is a reference only up
  to the distance its own residual r allows: ‖X − X*‖_F ≤ 2 cond(β) · r · ‖α‖/‖β‖.
* residuals recomputed with ``numpy.linalg.eigh`` from the returned X, through the same bound.
"""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import central_flow
from tests.shared import count_compiles

K_MAX = 4
M_MAX = central_flow.num_pairs(K_MAX)
TOL = {"float64": 1e-8, "float32": 1e-4}


def _svec(X):
    i, j = np.triu_indices(X.shape[-1])
    return X[..., i, j] * np.where(i == j, 1.0, np.sqrt(2.0))


def _smat(x, k):
    i, j = np.triu_indices(k)
    v = x * np.where(i == j, 1.0, np.sqrt(0.5))
    X = np.zeros(x.shape[:-1] + (k, k))
    X[..., i, j], X[..., j, i] = v, v
    return X


def _psd_part(Z):
    d, Q = np.linalg.eigh(Z)
    return (Q * np.maximum(d, 0)[..., None, :]) @ np.swapaxes(Q, -1, -2)


def _scale(alpha, beta):
    """‖α‖_F/‖β‖: the natural size of X."""
    return np.linalg.norm(alpha, axis=(-2, -1)) / np.linalg.eigvalsh(beta)[..., -1]


def _error_bound(alpha, beta, X):
    """2 cond(β) ‖X − Π₊(X − (α + β(X))/‖β‖)‖_F ≥ ‖X − X*‖_F (natural-map error bound)."""
    k = alpha.shape[-1]
    lam = np.linalg.eigvalsh(beta)
    Y = alpha + _smat(np.einsum("...ij,...j->...i", beta, _svec(X)), k)
    F = X - _psd_part(X - Y / lam[..., -1:, None])
    return 2 * lam[..., -1] / lam[..., 0] * np.linalg.norm(F, axis=(-2, -1))


def _planted(rng, k, n, cond=1e3):
    """n instances (α_KxK, β_MxM, X*_KxK) with X* the exact solution (see the module docstring)."""
    m = central_flow.num_pairs(k)
    q, _ = np.linalg.qr(rng.normal(size=(n, k, k)))
    kind = rng.choice(3, size=(n, k), p=[0.4, 0.4, 0.2])  # X* > 0, Y* > 0, or both 0
    x = np.where(kind == 0, rng.uniform(0.1, 2, (n, k)), 0.0)
    y = np.where(kind == 1, rng.uniform(0.1, 2, (n, k)), 0.0)
    X = (q * x[:, None, :]) @ np.swapaxes(q, 1, 2)
    Y = (q * y[:, None, :]) @ np.swapaxes(q, 1, 2)
    u, _ = np.linalg.qr(rng.normal(size=(n, m, m)))
    lam = np.exp(rng.uniform(0, np.log(cond), (n, m))) * 10 ** rng.uniform(-3, 3, (n, 1))
    beta = (u * lam[:, None, :]) @ np.swapaxes(u, 1, 2)
    alpha = Y - _smat(np.einsum("nij,nj->ni", beta, _svec(X)), k)
    return alpha, beta, X


def _random(rng, k, n):
    """Unplanted instances: α symmetric Gaussian, β a Wishart matrix (almost surely ≻ 0)."""
    m = central_flow.num_pairs(k)
    a = rng.normal(size=(n, k, k))
    G = rng.normal(size=(n, m, m + 2))
    return (a + np.swapaxes(a, 1, 2)) / 2, G @ np.swapaxes(G, 1, 2) / (m + 2)


def _pairs(active):
    """Positions in svec(K_MAX) of the pairs (i ≤ j) of the sorted active indices, in order."""
    i, j = np.triu_indices(K_MAX)
    where = {(a, b): n for n, (a, b) in enumerate(zip(i, j, strict=True))}
    return np.array(
        [where[(active[a], active[b])] for a, b in zip(*np.triu_indices(len(active)), strict=True)]
    )


def _embed(rng, alpha, beta, active_sets):
    """K_MAX-sized instances holding each small one on its active indices, noise elsewhere."""
    n = len(alpha)
    A = rng.normal(size=(n, K_MAX, K_MAX))
    A = A + np.swapaxes(A, 1, 2)
    B = rng.normal(size=(n, M_MAX, M_MAX))
    B = B @ np.swapaxes(B, 1, 2)
    mask = np.zeros((n, K_MAX), bool)
    for r, active in enumerate(active_sets):
        A[r][np.ix_(active, active)] = alpha[r]
        B[r][np.ix_(_pairs(active), _pairs(active))] = beta[r]
        mask[r, active] = True
    return A, B, mask


def _active_sets(rng, k, n):
    return [np.sort(rng.choice(K_MAX, k, replace=False)) for _ in range(n)]


def _block(X, active_sets):
    return np.stack([x[np.ix_(a, a)] for x, a in zip(X, active_sets, strict=True)])


def _relative(err, want, alpha, beta):
    """err / max(‖X*‖_F, ‖α‖_F/‖β‖) (α = 0 gives X = 0 exactly)."""
    size = np.maximum(np.linalg.norm(want, axis=(1, 2)), _scale(alpha, beta))
    return np.divide(err, size, out=np.zeros_like(err), where=err > 0)


class Group(NamedTuple):
    alpha: np.ndarray  # (n, k, k) the small problem
    beta: np.ndarray  # (n, m, m)
    active: list  # n sorted index sets into K_MAX
    want: np.ndarray | None  # (n, k, k) the planted solution, if any
    X: np.ndarray | None = None  # (n, K_MAX, K_MAX) as solved
    Y: np.ndarray | None = None
    residual: np.ndarray | None = None  # (n,)
    mask: np.ndarray | None = None  # (n, K_MAX)


@pytest.fixture(scope="module")
def solved():
    """Every masked K_MAX = 4 instance the tests below check, solved in one vmapped call (one
    compiled program): planted K = 1…4 (400 each, 20 % of directions degenerate), random
    K = 1…4 for cvxpy (40 each), and random K = 2 instances on directions {0, 2} (50). Inactive
    entries of α and β hold noise that the solver must ignore."""
    rng = np.random.default_rng(0)
    groups = {}
    for k in range(1, K_MAX + 1):
        alpha, beta, want = _planted(rng, k, 400)
        groups["planted", k] = Group(alpha, beta, _active_sets(rng, k, 400), want)
    for k in range(1, K_MAX + 1):
        groups["random", k] = Group(*_random(rng, k, 40), _active_sets(rng, k, 40), None)
    groups["pair"] = Group(*_random(rng, 2, 50), [np.array([0, 2])] * 50, None)

    embedded = [_embed(rng, g.alpha, g.beta, g.active) for g in groups.values()]
    A, B, mask = (np.concatenate(parts) for parts in zip(*embedded, strict=True))
    out = jax.jit(jax.vmap(central_flow.solve))(A, B, mask)
    X, Y, residual = (np.asarray(v) for v in out)
    start = 0
    for key, g in groups.items():
        rows = slice(start, start + len(g.alpha))
        groups[key] = g._replace(X=X[rows], Y=Y[rows], residual=residual[rows], mask=mask[rows])
        start = rows.stop
    return groups


# one compiled single-instance K = 2 solver, shared by two tests
_solve_k2 = jax.jit(central_flow.solve)


# ---------------------------------------------------------------------------------------------


def test_planted_solutions_all_k_in_one_call(solved):
    for k in range(1, K_MAX + 1):
        g = solved["planted", k]
        err = np.linalg.norm(_block(g.X, g.active) - g.want, axis=(1, 2))
        assert _relative(err, g.want, g.alpha, g.beta).max() < TOL["float64"], k
        inactive = ~g.mask
        assert np.all(g.X[inactive] == 0) and np.all(np.swapaxes(g.X, 1, 2)[inactive] == 0)
        assert np.all(g.Y[inactive] == 0)
        assert g.residual.max() < 1e-10


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # expected: see the docstring
def test_agrees_with_cvxpy_within_its_accuracy(solved):
    cp = pytest.importorskip("cvxpy")
    tight = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    for k in range(1, K_MAX + 1):
        g = solved["random", k]
        X = _block(g.X, g.active)
        var = cp.Variable((k, k), PSD=True)
        A = cp.Parameter((k, k), symmetric=True)
        L = cp.Parameter((central_flow.num_pairs(k),) * 2)
        i, j = np.triu_indices(k)
        x = cp.hstack(
            [var[p, q] * (1.0 if p == q else np.sqrt(2)) for p, q in zip(i, j, strict=True)]
        )
        problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L.T @ x) + cp.trace(A @ var)))
        ref = []
        for a, b in zip(g.alpha, g.beta, strict=True):
            A.value, L.value = a, np.linalg.cholesky(b)
            try:
                problem.solve(solver="CLARABEL", **tight)
            except cp.error.SolverError:  # it gives up on tight tolerances now and then
                problem.solve(solver="CLARABEL")
            ref.append(var.value)
        ref = np.array(ref)

        scale = _scale(g.alpha, g.beta)
        ours, theirs = _error_bound(g.alpha, g.beta, X), _error_bound(g.alpha, g.beta, ref)
        assert np.all(ours < TOL["float64"] * scale), (k, np.max(ours / scale))
        dist = np.linalg.norm(X - ref, axis=(1, 2))
        assert np.all(dist <= 1.01 * (ours + theirs) + 1e-12 * scale), k
        if k == 1:  # one variable: CLARABEL is accurate, so the two agree outright
            assert np.all(dist <= TOL["float64"] * scale)


def test_masked_equals_unmasked_smaller_problem(solved):
    """Directions {0, 2} of K = 4 instances against the same K = 2 problems with both on;
    changing the mask reuses the compiled program; vmap equals one instance at a time."""
    g = solved["pair"]
    solve = jax.jit(jax.vmap(central_flow.solve))
    every = np.ones((len(g.alpha), 2), bool)
    small = solve(g.alpha, g.beta, every)
    np.testing.assert_allclose(_block(g.X, g.active), small.X, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(_block(g.Y, g.active), small.Y, rtol=0, atol=1e-10)

    with count_compiles() as compiles:
        one_off = solve(g.alpha, g.beta, every & [False, True])
        none = solve(g.alpha, g.beta, ~every)
    assert compiles == []
    np.testing.assert_array_equal(none.X, 0)
    np.testing.assert_array_equal(one_off.X[:, 0], 0)

    for r in range(3):
        np.testing.assert_allclose(_solve_k2(g.alpha[r], g.beta[r]).X, small.X[r], atol=1e-12)


def test_closed_form_k1_matches_general_solver():
    rng = np.random.default_rng(2)
    alpha = rng.normal(size=(1000, 1, 1)) * 10 ** rng.uniform(-3, 3, (1000, 1, 1))
    beta = 10 ** rng.uniform(-3, 3, (1000, 1, 1))
    mask = rng.uniform(size=(1000, 1)) < 0.8
    general = jax.jit(jax.vmap(central_flow.solve))(alpha, beta, mask)
    closed = jax.vmap(central_flow.solve_one)(alpha, beta, mask)
    np.testing.assert_allclose(general.X, closed.X, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(general.Y, closed.Y, rtol=1e-12, atol=1e-12 * np.abs(alpha).max())
    want = np.where(mask[:, :, None] & (alpha < 0), -alpha / beta, 0.0)
    np.testing.assert_array_equal(closed.X, want)


def test_float32():
    rng = np.random.default_rng(4)
    alpha, beta, want = _planted(rng, 2, 300, cond=1e2)
    out = jax.jit(jax.vmap(central_flow.solve))(alpha.astype(np.float32), beta.astype(np.float32))
    assert out.X.dtype == out.residual.dtype == jnp.float32
    err = np.linalg.norm(np.asarray(out.X, float) - want, axis=(1, 2))
    assert _relative(err, want, alpha, beta).max() < TOL["float32"]
    assert np.max(out.residual) < TOL["float32"]


def test_solution_holds_the_critical_block_of_a_loss():
    """L(w) = ½wᵀQw + ⅙T[w,w,w] + ¼‖w‖⁴ (P = 6), U its Hessian's top two eigenvectors,
    h_ij = ∇(u_iᵀHu_j) by ``jax.jacfwd`` and α, β from (2) of the module docstring. Along
    dw/dt = −g − ½ Σ X_ij h_ij the block's derivative −Uᵀ(dH/dt)U, a jvp of the dense Hessian, is
    the returned Y, with Y ⪰ 0, X ≠ 0 and ⟨X, Y⟩ = 0; for K = 1, X is the paper's
    σ² = 2⟨−g, ∇λ₁⟩/‖∇λ₁‖². (g is flipped if need be so that it pushes λ₁ up: the formulas
    hold for any g.)"""
    rng = np.random.default_rng(5)
    P = 6
    Q = rng.normal(size=(P, P))
    Q = Q @ Q.T / P
    T = rng.normal(size=(P, P, P))
    T = sum(T.transpose(p) for p in itertools.permutations(range(3)))  # symmetric

    def loss(w):
        return 0.5 * w @ Q @ w + jnp.einsum("ijk,i,j,k", T, w, w, w) / 6 + 0.25 * (w @ w) ** 2

    w = jnp.asarray(rng.normal(size=P))
    hess = jax.hessian(loss)
    lam, U = np.linalg.eigh(np.asarray(hess(w)))
    U = U[:, ::-1][:, :2]
    dH = jax.jit(jax.jacfwd(lambda v: U.T @ hess(v) @ U))(w)  # (K, K, P)
    g = jax.grad(loss)(w)
    g = -g if dH[0, 0] @ g > 0 else g
    alpha = np.einsum("ijp,p->ij", dH, g)
    D = _svec(np.moveaxis(np.asarray(dH), -1, 0)).T
    beta = 0.5 * D @ D.T

    out = _solve_k2(alpha, beta)
    v = -g - 0.5 * jnp.einsum("ij,ijp->p", out.X, dH)
    dF_dt = U.T @ jax.jvp(hess, (w,), (v,))[1] @ U
    size = np.abs(alpha).max()
    np.testing.assert_allclose(-dF_dt, out.Y, rtol=0, atol=1e-12 * size)
    assert np.linalg.eigvalsh(out.Y).min() > -1e-12 * size
    assert np.abs(out.X).max() > 0
    assert abs(np.sum(out.X * out.Y)) < 1e-12 * np.abs(out.X).max() * size

    grad_lam = jax.jit(jax.grad(lambda v: jnp.linalg.eigvalsh(hess(v))[-1]))(w)
    np.testing.assert_allclose(dH[0, 0], grad_lam, rtol=1e-10)  # h_11 = ∇λ₁
    sigma2 = max(0.0, 2 * float(-g @ grad_lam) / float(grad_lam @ grad_lam))
    x1 = central_flow.solve_one(alpha[:1, :1], beta[:1, :1]).X[0, 0]
    np.testing.assert_allclose(x1, sigma2, rtol=1e-10)


def test_unbounded_problem_is_flagged():
    """β = 0 with α pushing: (4) is unbounded below and has no solution."""
    assert _solve_k2(-np.eye(2), np.zeros((3, 3))).residual > 0.5
    assert central_flow.solve_one(-np.ones((1, 1)), np.zeros((1, 1))).residual == np.inf


def test_rejects_a_beta_of_the_wrong_size():
    with pytest.raises(ValueError, match="beta must be 3×3"):
        central_flow.solve(jnp.zeros((2, 2)), jnp.zeros((4, 4)))
