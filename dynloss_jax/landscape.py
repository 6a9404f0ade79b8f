"""The loss landscape around a point of a trajectory, seen on a 2-D plane (Fig. 2, right).

Around parameters x_t (a flat vector, N entries) and two orthonormal directions v1, v2 — in the
paper the eigenvectors of the two largest Hessian eigenvalues λ1 ≥ λ2 of F_t at x_t — the plane is
x(a, b) = x_t + a·v1 + b·v2, and

* :func:`hessian_top_vectors` — λ1, λ2 and v1, v2 by Lanczos on Hessian-vector products
  (:func:`dynloss_jax.eig.lanczos`), with a fixed sign convention;
* :func:`plane_slice` — F(x_t + a_i·v1 + b_j·v2) on an (a, b) grid;
* :func:`project` — coordinates a_i = (x_i − x_t)·v1, b_i = (x_i − x_t)·v2 of trajectory points
  x_i (the orthogonal projection onto the plane when v1, v2 are orthonormal).

All functions are pure and traceable; the caller jits them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynloss_jax import eig


def hessian_top_vectors(key, f, w_N, *, k: int = 2, num_matvecs: int = 32) -> eig.EigResult:
    """The ``k`` largest algebraic eigenpairs of ∇²f at ``w_N`` (descending), from
    ``num_matvecs`` Hessian-vector products (Lanczos from a random start drawn with ``key``).

    ``f(w_N) -> scalar``. Eigenvectors are unit vectors with the sign fixed so that each one's
    entry of largest magnitude is positive (an eigenvector is defined up to sign; this makes the
    plane, and so the figure, reproducible). ``residual_K`` bounds the error of each eigenvalue.
    """
    if k < 1 or num_matvecs < k:
        raise ValueError(f"need 1 <= k <= num_matvecs, got k={k}, num_matvecs={num_matvecs}")

    def matvec(v_N):
        return eig.hvp(f, w_N, v_N)

    res = eig.lanczos(matvec, jnp.zeros_like(w_N), key, num_matvecs=num_matvecs, k=k)
    vectors = res.vectors_KxN
    biggest = jnp.take_along_axis(vectors, jnp.argmax(jnp.abs(vectors), axis=1)[:, None], axis=1)
    return res._replace(vectors_KxN=vectors * jnp.where(biggest < 0, -1.0, 1.0))


def plane_slice(f, w_N, v1_N, v2_N, a_A, b_B):
    """F_AxB[i, j] = f(w + a_i·v1 + b_j·v2), shape ``(len(a_A), len(b_B))``.

    Rows are evaluated one after another (``lax.map``) and each row's points together
    (``vmap``), so memory grows with one row of the grid, not with the whole grid.
    """

    def row(a):
        return jax.vmap(lambda b: f(w_N + a * v1_N + b * v2_N))(b_B)

    return jax.lax.map(row, a_A)


def project(w_TxN, w_N, v1_N, v2_N):
    """Plane coordinates of trajectory points: ``(a_T, b_T)`` with a_i = (x_i − x_t)·v1 and
    b_i = (x_i − x_t)·v2, x_t = ``w_N``. For orthonormal v1, v2 these are the coordinates of the
    orthogonal projection of x_i onto the plane x_t + span(v1, v2)."""
    d_TxN = w_TxN - w_N
    return d_TxN @ v1_N, d_TxN @ v2_N
