"""Top Hessian eigenvalues from Hessian-vector products, matrix-free and vmappable.

* :func:`hvp` — forward-over-reverse (jvp of grad) product H·v of a scalar function of a vector.
* :func:`lanczos` — fixed-step Lanczos with full reorthogonalisation, warm-startable, guarded
  against breakdown; Rayleigh–Ritz on the Krylov basis gives the largest *algebraic* eigenvalues,
  the smallest one, and each Ritz pair's residual norm ‖Hu − θu‖ (an error bound on θ: some
  eigenvalue of H lies within it).
* :func:`block_krylov` — the top K eigenpairs from a block Krylov space warm-started from K
  vectors (the last measurement's): ``blocks``·K products, for tracking K eigenvalues every step.
* :func:`power_iteration` — power iteration with deflation (the classic method), for comparison.
* :func:`top_hessian_eigenvalues` — one-shot helper for any loss and parameter pytree (values,
  residuals and vectors).

The operator is passed as ``matvec(v_N) -> (H v)_N``; every argument is an array, so the solvers
can be vmapped over runs and called inside ``lax.scan``.

Accuracy against a dense Hessian (``tests/test_eig.py``; ``python -m benchmarks.eig_accuracy``):
on the spiral network at widths 2–100, at initialisation and after 500 GD steps of DCE and MSE,
16 products give λ1 and λ2 to ≤ 2e-15 relative in float64 (≤ 7e-7 in float32), cold or warm;
along GD runs at width 100 (CE at the edge of stability, DCE through class switches) a warm start
needs only 12. What limits any single-vector Krylov method at a fixed budget is the gap below the
wanted eigenvalue: where λ2 sits in a cluster — e.g. at width 8 right after a class switch with
T = 20, where Γ jumps from 7.9:1 back to 1:1 in one step and λ2 − λ3 can be 0.6 % of λ2 — 16
products give λ2 only to 1e-8…6e-4 warm (up to 7e-3 cold; λ1 still to 1e-8), and an *exactly*
double top eigenvalue is seen once from a random start (its second copy enters only through
rounding) unless the start vector spans both copies, as a warm start from the previous top
vectors does. Such measurements are flagged by their residuals (|θ − λ| ≤ r always, ≤ r²/gap
when θ is isolated).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


class EigResult(NamedTuple):
    """Ritz values and vectors of one measurement."""

    top_K: jax.Array  # the K largest algebraic Ritz values, descending (NaN where unavailable)
    vectors_KxN: jax.Array  # their unit Ritz vectors
    residual_K: jax.Array  # ‖H u_i − θ_i u_i‖
    lam_min: jax.Array  # smallest Ritz value (negative curvature when < 0)
    residual_min: jax.Array


def hvp(f, w_N, v_N, *args):
    """H·v for H = ∇²f(w), by ``jvp`` of ``grad`` (one forward-over-reverse pass)."""
    return jax.jvp(lambda u: jax.grad(f)(u, *args), (w_N,), (v_N,))[1]


def _orthogonalise(v_N, basis_MxN):
    # Twice is enough (Kahan–Parlett); rows of the basis that are zero do nothing.
    v_N = v_N - basis_MxN.T @ (basis_MxN @ v_N)
    return v_N - basis_MxN.T @ (basis_MxN @ v_N)


def _unit(v_N):
    norm = jnp.linalg.norm(v_N)
    return jnp.where(norm > 0, v_N / jnp.where(norm > 0, norm, 1.0), 0.0)


def _check_counts(k: int, num_matvecs: int) -> None:
    if k < 1 or num_matvecs < k:
        raise ValueError(f"need 1 <= k <= num_matvecs, got k={k}, num_matvecs={num_matvecs}")


def lanczos(matvec, v0_N, key, *, num_matvecs: int = 16, k: int = 2, coords_N=None) -> EigResult:
    """Top-``k`` algebraic eigenpairs of a symmetric operator from ``num_matvecs`` products.

    Builds an orthonormal basis V (m × N, m = ``num_matvecs``) of the Krylov space
    span{v0, Hv0, …, H^{m−1}v0}: v_{j+1} ∝ (I − VᵀV)² H v_j (full reorthogonalisation, twice).
    It stores W = H V and diagonalises the projection T = V Wᵀ (m × m, Rayleigh–Ritz): the Ritz
    values θ are the eigenvalues of T, the Ritz vectors u = sᵀV, and ‖sᵀW − θ u‖ = ‖Hu − θu‖ is
    computed from the stored products, so it is exact even after a restart. Exactly m products.

    Breakdown (‖(I − VᵀV)Hv_j‖ ≤ √ε·‖H‖: an invariant subspace, e.g. m > N or m > rank H + 1)
    continues from the coordinate vector least covered by V, projected orthogonal to V; once the
    whole space is spanned the remaining basis vectors are zero and excluded, so a network with
    15 parameters and m = 16 gives its exact spectrum and no NaN. ``v0_N`` may be zero: then the
    start is a standard normal vector drawn from ``key`` (the only use of the key), so a warm
    start is simply the previous measurement's Ritz vectors summed.

    ``coords_N`` (int, optional) restricts the operator to a coordinate subspace, as for a
    network padded to a larger width: the coordinates a restart may use, in the order they are
    tried, −1 for those never used. The caller keeps ``v0_N`` and ``matvec``'s products in that
    subspace; listing its coordinates in the order of the unpadded vector makes every restart
    the unpadded one's.

    Returns an :class:`EigResult`: ``top_K`` the ``k`` largest algebraic Ritz values,
    descending (lower bounds on λ1 ≥ … ≥ λk, NaN beyond the dimension of the space),
    ``lam_min`` the smallest Ritz value (an upper bound on λ_min), and the residual norms r:
    an eigenvalue of H lies in [θ − r, θ + r].
    """
    _check_counts(k, num_matvecs)
    m = num_matvecs
    n = v0_N.shape[0]
    dtype = v0_N.dtype
    eps = jnp.finfo(dtype).eps
    norm0 = jnp.linalg.norm(v0_N)
    v = jnp.where(norm0 > 0, v0_N, jax.random.normal(key, (n,), dtype))
    v = v / jnp.linalg.norm(v)

    def body(carry, j):
        V, W, v, scale = carry
        V = V.at[j].set(v)
        w = matvec(v)
        W = W.at[j].set(w)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w = _orthogonalise(w, V)
        beta = jnp.linalg.norm(w)
        # Restart direction: the coordinate vector e_i least covered by span(V) (largest
        # 1 − ‖V e_i‖²), projected out of it; zero once V spans the whole space.
        cover = jnp.sum(V * V, axis=0)
        if coords_N is None:
            i = jnp.argmin(cover)
        else:
            usable = coords_N >= 0
            c = jnp.where(usable, cover[jnp.where(usable, coords_N, 0)], jnp.inf)
            i = coords_N[jnp.argmin(c)]
        r = _orthogonalise(jnp.zeros((n,), dtype).at[i].set(1.0), V)
        r_norm = jnp.linalg.norm(r)
        restart_ok = r_norm > jnp.sqrt(eps) * 10
        restart = jnp.where(restart_ok, r / jnp.where(restart_ok, r_norm, 1.0), 0.0)
        # A zero basis vector stays zero: its matvec is zero and it is masked below.
        alive = jnp.linalg.norm(v) > 0.5
        broke = beta <= jnp.sqrt(eps) * scale
        v_next = jnp.where(broke, restart, w / jnp.where(broke, 1.0, beta))
        return (V, W, jnp.where(alive, v_next, 0.0), scale), None

    zeros = jnp.zeros((m, n), dtype)
    (V, W, _, _), _ = jax.lax.scan(body, (zeros, zeros, v, jnp.zeros((), dtype)), jnp.arange(m))
    return _rayleigh_ritz(V, W, k)


def block_krylov(
    matvec, U0_KxN, key, *, blocks: int = 3, k: int | None = None, mask_N=None
) -> EigResult:
    """Top-``k`` algebraic eigenpairs (default k = K) from the block Krylov space
    span{U0, H U0, …, H^{blocks−1} U0} of the K start vectors ``U0`` (rows): exactly
    ``blocks``·K products.

    The basis is built one vector at a time: vector j is the j-th row of U0 for j < K and the
    product of vector j − K after that, orthogonalised against the basis so far (twice) and
    normalised; one that vanishes (a zero start row, or a space already spanned) stays zero and
    is left out of the Rayleigh–Ritz step, as in :func:`lanczos`, whose Ritz step and exact
    residuals this shares. A zero row of ``U0`` is replaced by a standard normal vector from
    ``key`` (the key's only use), so zeros start cold; with ``mask_N`` (a coordinate subspace,
    as for a padded network: the caller keeps ``U0`` and the products in it) that vector too.

    Warm-started from the previous measurement's top-K Ritz vectors, the space holds the new top
    eigenvectors to first order in the change of H, so a small ``blocks`` tracks the top K along
    a trajectory (``tests/test_eig.py`` and ``tests/test_engine.py`` check it against dense
    Hessians). ``lam_min`` is the smallest Ritz value of this small space: an upper bound on
    λ_min, and a loose one.
    """
    K, n = U0_KxN.shape
    k = K if k is None else k
    m = blocks * K
    _check_counts(k, m)
    dtype = U0_KxN.dtype
    eps = jnp.finfo(dtype).eps
    random_KxN = jax.random.normal(key, (K, n), dtype)
    if mask_N is not None:
        random_KxN = random_KxN * mask_N
    norms = jnp.linalg.norm(U0_KxN, axis=1, keepdims=True)
    U0_KxN = jnp.where(norms > 0, U0_KxN, random_KxN)

    def body(carry, j):
        V, W, scale = carry
        c = jnp.where(j < K, U0_KxN[jnp.minimum(j, K - 1)], W[jnp.maximum(j - K, 0)])
        c_norm = jnp.linalg.norm(c)
        v = _orthogonalise(c, V)
        v_norm = jnp.linalg.norm(v)
        ok = v_norm > jnp.sqrt(eps) * jnp.maximum(c_norm, scale)
        v = jnp.where(ok, v / jnp.where(ok, v_norm, 1.0), 0.0)
        w = matvec(v)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        return (V.at[j].set(v), W.at[j].set(w), scale), None

    zeros = jnp.zeros((m, n), dtype)
    (V, W, _), _ = jax.lax.scan(body, (zeros, zeros, jnp.zeros((), dtype)), jnp.arange(m))
    return _rayleigh_ritz(V, W, k)


def _rayleigh_ritz(V_MxN, W_MxN, k):
    m = V_MxN.shape[0]
    valid_M = jnp.linalg.norm(V_MxN, axis=1) > 0.5
    T = V_MxN @ W_MxN.T
    T = 0.5 * (T + T.T)
    # Decouple the invalid (zero) basis vectors and park their eigenvalues below the spectrum:
    # in ascending order the first m − n_valid values are parked, the next one is the smallest.
    bound = m * jnp.max(jnp.abs(T)) + 1.0
    mask = valid_M[:, None] & valid_M[None, :]
    T = jnp.where(mask, T, 0.0) - jnp.diag(jnp.where(valid_M, 0.0, bound))
    theta, S = jnp.linalg.eigh(T)
    n_valid = jnp.sum(valid_M)

    top_K = theta[::-1][:k]
    S_top = S[:, ::-1][:, :k]
    vectors_KxN = S_top.T @ V_MxN
    residual_K = jnp.linalg.norm(S_top.T @ W_MxN - top_K[:, None] * vectors_KxN, axis=1)
    have_K = jnp.arange(k) < n_valid
    top_K = jnp.where(have_K, top_K, jnp.nan)
    residual_K = jnp.where(have_K, residual_K, jnp.nan)

    lowest = m - n_valid
    lam_min = theta[lowest]
    s_min = S[:, lowest]
    residual_min = jnp.linalg.norm(s_min @ W_MxN - lam_min * (s_min @ V_MxN))
    return EigResult(top_K, vectors_KxN, residual_K, lam_min, residual_min)


def power_iteration(matvec, v0_KxN, *, num_iters: int = 100, shift=0.0):
    """Top-K eigenpairs of ``H + shift·I`` by power iteration with deflation.

    Vector i starts from ``v0_KxN[i]`` and is iterated ``num_iters`` times,
    v ← P_i (H + shift·I) v / ‖·‖ with P_i the projector orthogonal to the vectors 0..i−1
    already found (deflation). Its eigenvalue is the Rayleigh quotient θ = vᵀHv of H itself and
    its residual ‖Hv − θv‖, both taken from the last product, so the cost is exactly
    K·``num_iters`` products. With ``shift = 0`` this finds the largest-*magnitude* eigenvalues;
    a shift > −(λ1 + λ_min)/2 makes them the largest algebraic ones. Convergence of vector i goes
    as ((λ_{i+1} + shift)/(λ_i + shift))^num_iters.

    Returns ``(values_K, vectors_KxN, residual_K)``.
    """
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    k = v0_KxN.shape[0]

    def one(i, carry):
        vectors, values, residuals = carry

        def step(_, c):
            v, _, _, _ = c
            w = matvec(v)
            theta = v @ w
            res = jnp.linalg.norm(w - theta * v)
            return _unit(_orthogonalise(w + shift * v, vectors)), v, theta, res

        v = _unit(_orthogonalise(v0_KxN[i], vectors))
        zero = jnp.zeros((), v.dtype)
        _, v, theta, res = jax.lax.fori_loop(0, num_iters, step, (v, v, zero, zero))
        return vectors.at[i].set(v), values.at[i].set(theta), residuals.at[i].set(res)

    empty = jnp.zeros((k,), v0_KxN.dtype)
    vectors, values, residuals = jax.lax.fori_loop(
        0, k, one, (jnp.zeros_like(v0_KxN), empty, empty)
    )
    return values, vectors, residuals


class TopEigen(NamedTuple):
    """The result of :func:`top_hessian_eigenvalues`."""

    values: jax.Array  # the k largest algebraic eigenvalue estimates, descending
    residuals: jax.Array  # ‖H u − θ u‖ of each: some eigenvalue of H lies within it of θ
    vectors: object  # the k unit eigenvector estimates, a pytree like params with a leading k


def top_hessian_eigenvalues(
    loss_fn, params, k: int = 2, method: str = "lanczos", num_matvecs: int = 16, key=None
) -> TopEigen:
    """The ``k`` largest algebraic eigenvalues (descending) of the Hessian of ``loss_fn`` at
    ``params`` (any pytree), from at most ``num_matvecs`` Hessian-vector products, with each
    one's residual ‖Hu − θu‖ (an error bound: some eigenvalue lies in [θ − r, θ + r]) and its
    vector, as a :class:`TopEigen`. ``key`` draws the start vector (default ``key(0)``; pass
    your own to vary it).

    ``method="lanczos"`` (default): :func:`lanczos` from a random start. ``method="power"``:
    ``num_matvecs`` is split into k + 1 equal parts — one estimates the spectral radius ρ ≈ ‖Hv‖
    by plain power iteration, then :func:`power_iteration` with deflation runs on H + ρI (so the
    largest *algebraic* eigenvalues come out); it typically needs hundreds of products for what
    Lanczos gets from 16, and its residuals show how far it is from converged.

    Example::

        top = top_hessian_eigenvalues(lambda p: loss(model.apply(p, x), y), params)
        top.values, top.residuals
    """
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    _check_counts(k, num_matvecs)
    if method == "power" and num_matvecs < k + 1:
        raise ValueError(f"method='power' needs num_matvecs >= k + 1, got {num_matvecs}")
    key = jax.random.key(0) if key is None else key
    w_N, unravel = ravel_pytree(params)

    def flat_loss(w):
        return loss_fn(unravel(w))

    def matvec(v):
        return hvp(flat_loss, w_N, v)

    if method == "lanczos":
        res = lanczos(matvec, jnp.zeros_like(w_N), key, num_matvecs=num_matvecs, k=k)
        values, vectors, residuals = res.top_K, res.vectors_KxN, res.residual_K
    else:
        iters = num_matvecs // (k + 1)
        v0 = jax.random.normal(key, (k + 1, w_N.shape[0]), w_N.dtype)
        (theta,), _, (res,) = power_iteration(matvec, v0[:1], num_iters=iters)
        rho = jnp.sqrt(theta**2 + res**2)  # ‖Hv‖ for the last unit v: a lower bound on ρ(H)
        values, vectors, residuals = power_iteration(matvec, v0[1:], num_iters=iters, shift=rho)
        order = jnp.argsort(values)[::-1]
        values, vectors, residuals = values[order], vectors[order], residuals[order]
    return TopEigen(values, residuals, jax.vmap(unravel)(vectors))
