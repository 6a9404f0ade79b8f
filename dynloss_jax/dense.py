"""Tiny dense linear algebra in plain ``jax.numpy``: symmetric eigendecomposition and linear solve.

* :func:`eigh` — cyclic Jacobi: each rotation zeroes one off-diagonal pair; a sweep visits every
  pair once. Convergence is quadratic once the off-diagonal mass is small, so a handful of sweeps
  reaches rounding level on the few-entry matrices this is meant for.
* :func:`solve` — Gaussian elimination with partial pivoting, then back substitution.

Both take one matrix (vmap for batches) and run a fixed number of steps, as elementwise array
operations inside the compiled program. ``jnp.linalg`` would not do here: on CPU its batched
LAPACK kernels (LU, triangular solve, QR, symmetric eigendecomposition) split a batch whose cost
passes ~2·10⁵ flops over XLA's intra-op thread pool and block until the pieces finish. With
jax/jaxlib 0.10.2 on two cores, a vmapped central-flow solve that used ``jnp.linalg.solve`` hung
for good whenever XLA ran two such LU factorisations side by side: both pool workers sat inside
one, each waiting for pieces that no free worker would pick up (seen at batch sizes 1999 and 2000,
not 1800 or 4000). For matrices a few entries on a side the plain versions are cheap and vectorise
across the batch; :mod:`dynloss_jax.central_flow` uses them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _rotate(A, V, p, q):
    """One Jacobi rotation J in the (p, q) plane: A ← JᵀAJ with (JᵀAJ)_pq = 0, V ← VJ.

    t = tan θ is the smaller root of t² + 2τt − 1 = 0, τ = (A_qq − A_pp)/(2A_pq)
    (Golub & Van Loan, sym.schur2), so |θ| ≤ π/4 and the rotation is stable. p, q may be traced;
    rows and columns are picked and replaced through one-hot masks rather than matrix products
    (on CPU, XLA's dot is far slower on a batch of 4×4 matrices than on 3×3 ones).
    """
    n = A.shape[-1]
    e_p = jnp.arange(n) == p
    e_q = jnp.arange(n) == q
    row_p = jnp.sum(jnp.where(e_p[:, None], A, 0), axis=0)
    row_q = jnp.sum(jnp.where(e_q[:, None], A, 0), axis=0)
    app = jnp.sum(jnp.where(e_p, row_p, 0))
    apq = jnp.sum(jnp.where(e_q, row_p, 0))
    aqq = jnp.sum(jnp.where(e_q, row_q, 0))
    nonzero = apq != 0
    tau = (aqq - app) / (2 * jnp.where(nonzero, apq, 1))
    t = jnp.where(tau >= 0, 1.0, -1.0) / (jnp.abs(tau) + jnp.hypot(1.0, tau))
    t = jnp.where(nonzero, t, 0.0).astype(A.dtype)
    c = 1 / jnp.sqrt(1 + t * t)
    s = t * c

    def turn(X):  # X ← X J: columns p, q mixed
        col_p = jnp.sum(jnp.where(e_p[None, :], X, 0), axis=1)
        col_q = jnp.sum(jnp.where(e_q[None, :], X, 0), axis=1)
        X = jnp.where(e_p[None, :], (c * col_p - s * col_q)[:, None], X)
        return jnp.where(e_q[None, :], (s * col_p + c * col_q)[:, None], X)

    A = turn(turn(A).T)  # (AJ)ᵀ = JᵀA for symmetric A, then (JᵀA)J
    zero = (e_p[:, None] & e_q[None, :]) | (e_q[:, None] & e_p[None, :])
    return jnp.where(zero, 0.0, A), turn(V)


def eigh(A_NxN, sweeps=8):
    """Eigenvalues (ascending) and orthonormal eigenvectors of the symmetric part of A.

    Returns (w_N, V_NxN) with A ≈ V diag(w) Vᵀ after ``sweeps`` cyclic Jacobi sweeps;
    ``tests/test_dense.py`` checks the default against ``numpy.linalg`` at n ≤ 4.
    """
    n = A_NxN.shape[-1]
    A = 0.5 * (A_NxN + A_NxN.T)
    if n == 1:
        return jnp.diagonal(A), jnp.ones_like(A)
    p, q = np.triu_indices(n, 1)
    p, q = jnp.asarray(np.tile(p, sweeps)), jnp.asarray(np.tile(q, sweeps))

    def rotation(r, carry):
        return _rotate(*carry, p[r], q[r])

    A, V = jax.lax.fori_loop(0, p.size, rotation, (A, jnp.eye(n, dtype=A.dtype)))
    w = jnp.diagonal(A)
    order = jnp.argsort(w)
    return w[order], V[:, order]


def solve(A_NxN, b_N):
    """x with A x = b, by Gaussian elimination with partial pivoting (A square, nonsingular).

    A singular A gives non-finite entries in x; callers test ``jnp.isfinite``.
    """
    n = A_NxN.shape[-1]
    rows = jnp.arange(n)

    def eliminate(k, carry):
        A, b = carry
        piv = jnp.argmax(jnp.where(rows >= k, jnp.abs(A[:, k]), -1.0))
        perm = jnp.where(rows == k, piv, jnp.where(rows == piv, k, rows))
        A, b = A[perm], b[perm]
        pivot = A[k, k]
        f = jnp.where(rows > k, A[:, k] / jnp.where(pivot != 0, pivot, 1), 0.0)
        return A - f[:, None] * A[k][None, :], b - f * b[k]

    A, b = jax.lax.fori_loop(0, n, eliminate, (A_NxN, b_N))

    def substitute(i, x):
        k = n - 1 - i
        return x.at[k].set((b[k] - A[k] @ x) / A[k, k])

    return jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(b))
