"""Top Hessian eigenvalues from Hessian-vector products, matrix-free and vmappable.

* :func:`hvp` — forward-over-reverse (jvp of grad) product H·v of a scalar function of a vector.
* :func:`lanczos` — fixed-step Lanczos with full reorthogonalisation, warm-startable, guarded
  against breakdown; Rayleigh–Ritz on the Krylov basis gives the largest *algebraic* eigenvalues,
  the smallest one, and each Ritz pair's residual norm ‖Hu − θu‖ (an error bound on θ: some
  eigenvalue of H lies within it).
* :func:`power_iteration` — power iteration with deflation (the classic method), for comparison.
* :func:`top_hessian_eigenvalues` — one-shot helper for any loss and parameter pytree.

The operator is passed as ``matvec(v_N) -> (H v)_N``; every argument is an array, so the solvers
can be vmapped over runs and called inside ``lax.scan``.
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


def lanczos(matvec, v0_N, key, *, num_matvecs: int = 16, k: int = 2) -> EigResult:
    """Top-``k`` algebraic eigenpairs of a symmetric operator from ``num_matvecs`` products.

    Builds an orthonormal Krylov basis V (m × N, m = ``num_matvecs``) from ``v0_N`` with full
    reorthogonalisation, stores W = H V, and diagonalises the projection T = V Wᵀ (Rayleigh–Ritz).
    Breakdown (β ≈ 0: an invariant subspace, e.g. m > N or m > rank H) continues from a random
    vector orthogonal to V; once the space is exhausted the remaining vectors are zero and are
    excluded from the Ritz values. ``v0_N`` may be zero (then a random start is used), so a
    warm start is simply the previous measurement's vectors summed.

    Returns an :class:`EigResult`; entries beyond the dimension of the Krylov space are NaN.
    """
    m = num_matvecs
    n = v0_N.shape[0]
    dtype = v0_N.dtype
    eps = jnp.finfo(dtype).eps
    rand_MxN = jax.random.normal(key, (m + 1, n), dtype)
    rand_MxN = rand_MxN / jnp.linalg.norm(rand_MxN, axis=1, keepdims=True)
    norm0 = jnp.linalg.norm(v0_N)
    v = jnp.where(norm0 > 0, v0_N / jnp.where(norm0 > 0, norm0, 1.0), rand_MxN[m])

    def body(carry, j):
        V, W, v, scale = carry
        V = V.at[j].set(v)
        w = matvec(v)
        W = W.at[j].set(w)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w = _orthogonalise(w, V)
        beta = jnp.linalg.norm(w)
        r = _orthogonalise(rand_MxN[j], V)
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


def _rayleigh_ritz(V_MxN, W_MxN, k):
    m = V_MxN.shape[0]
    valid_M = jnp.linalg.norm(V_MxN, axis=1) > 0.5
    T = V_MxN @ W_MxN.T
    T = 0.5 * (T + T.T)
    # Decouple the invalid (zero) basis vectors and park their eigenvalues beyond the spectrum.
    bound = m * jnp.max(jnp.abs(T)) + 1.0
    mask = valid_M[:, None] & valid_M[None, :]
    T = jnp.where(mask, T, 0.0)
    theta_lo, S_lo = jnp.linalg.eigh(T - jnp.diag(jnp.where(valid_M, 0.0, bound)))
    theta_hi, S_hi = jnp.linalg.eigh(T + jnp.diag(jnp.where(valid_M, 0.0, bound)))
    n_valid = jnp.sum(valid_M)

    top_K = theta_lo[::-1][:k]
    S_top = S_lo[:, ::-1][:, :k]
    vectors_KxN = S_top.T @ V_MxN
    residual_K = jnp.linalg.norm(S_top.T @ W_MxN - top_K[:, None] * vectors_KxN, axis=1)
    have_K = jnp.arange(k) < n_valid
    top_K = jnp.where(have_K, top_K, jnp.nan)
    residual_K = jnp.where(have_K, residual_K, jnp.nan)

    s_min = S_hi[:, 0]
    u_min = s_min @ V_MxN
    residual_min = jnp.linalg.norm(s_min @ W_MxN - theta_hi[0] * u_min)
    return EigResult(top_K, vectors_KxN, residual_K, theta_hi[0], residual_min)


def power_iteration(matvec, v0_KxN, *, num_iters: int = 100, shift=0.0):
    """Top-K eigenpairs of ``H + shift·I`` by power iteration with deflation.

    Vector i is iterated ``num_iters`` times and kept orthogonal to vectors 0..i−1; its eigenvalue
    is the Rayleigh quotient of H. With ``shift = 0`` this finds the largest-*magnitude*
    eigenvalues; a shift ≥ −λ_min makes them the largest algebraic ones. Costs K·num_iters
    products. Returns ``(eigenvalues_K, vectors_KxN)``.
    """
    k = v0_KxN.shape[0]
    vectors = jnp.zeros_like(v0_KxN)

    def one(i, vectors):
        def step(_, v):
            v = matvec(v) + shift * v
            v = _orthogonalise(v, vectors)
            return v / jnp.linalg.norm(v)

        v = _orthogonalise(v0_KxN[i], vectors)
        v = jax.lax.fori_loop(0, num_iters, step, v / jnp.linalg.norm(v))
        return vectors.at[i].set(v)

    vectors = jax.lax.fori_loop(0, k, one, vectors)
    values = jnp.einsum("kn,kn->k", vectors, jax.vmap(matvec)(vectors))
    return values, vectors


def top_hessian_eigenvalues(loss_fn, params, k: int = 2, method: str = "lanczos",
                            num_matvecs: int = 16, key=None):
    """The ``k`` largest algebraic eigenvalues (descending) of the Hessian of ``loss_fn`` at
    ``params`` (any pytree), from ``num_matvecs`` Hessian-vector products.

    ``method="lanczos"`` (default) or ``"power"`` (power iteration with deflation on the Hessian
    shifted by an estimate of its spectral radius; ``num_matvecs`` is then split between the
    estimate and the k eigenvectors, and is typically needed in the hundreds).
    """
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    if k < 1 or num_matvecs < k:
        raise ValueError(f"need 1 <= k <= num_matvecs, got k={k}, num_matvecs={num_matvecs}")
    key = jax.random.key(0) if key is None else key
    w_N, unravel = ravel_pytree(params)

    def flat_loss(w):
        return loss_fn(unravel(w))

    def matvec(v):
        return hvp(flat_loss, w_N, v)

    if method == "lanczos":
        return lanczos(matvec, jnp.zeros_like(w_N), key, num_matvecs=num_matvecs, k=k).top_K
    iters = max(1, num_matvecs // (k + 1))
    v0 = jax.random.normal(key, (k + 1, w_N.shape[0]), w_N.dtype)
    (rho,), _ = power_iteration(matvec, v0[:1], num_iters=iters)
    values, _ = power_iteration(matvec, v0[1:], num_iters=iters, shift=jnp.abs(rho))
    return jnp.sort(values)[::-1]
