"""The loss landscape around a point of a trajectory, seen on a 2-D plane (Fig. 2, right).

Around parameters x_t (a flat vector, N entries) and two directions d1, d2 the plane is
x(a, b) = x_t + a·d1 + b·d2. Two choices of plane:

* :func:`hessian_top_vectors` — the paper's: the orthonormal eigenvectors v1, v2 of the two
  largest Hessian eigenvalues λ1 ≥ λ2 of F_t at x_t, by Lanczos on Hessian-vector products
  (:func:`dynloss_jax.eig.lanczos`), with a fixed sign convention;
* :func:`random_plane` — two random filter-normalised directions
  (:func:`filter_normalized_direction`, Li et al. 2018), for random projections of the
  trajectory; not orthogonal.

On either plane:

* :func:`plane_slice` — F(x_t + a_i·d1 + b_j·d2) on an (a, b) grid;
* :func:`project` — a_i = (x_i − x_t)·v1, b_i = (x_i − x_t)·v2 of trajectory points x_i (the
  orthogonal projection onto the plane when v1, v2 are orthonormal);
* :func:`project_onto` — the same for any two independent d1, d2: the least-squares
  coefficients of x_i − x_t on [d1 d2].

All functions are pure and traceable; the caller jits them.
"""

from __future__ import annotations

import math

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


def _check_layout(w_N, leaf_shapes) -> None:
    sizes = [math.prod(shape) for shape in leaf_shapes]
    if w_N.ndim != 1 or w_N.shape[0] != sum(sizes):
        raise ValueError(
            f"w_N must be a flat vector of sum(prod(leaf_shapes)) = {sum(sizes)} entries, "
            f"got shape {w_N.shape}"
        )
    bad = [shape for shape in leaf_shapes if len(shape) not in (1, 2)]
    if bad:
        raise ValueError(f"leaves must be kernels (2-D) or biases (1-D), got shapes {bad}")


def filter_normalized_direction(key, w_N, leaf_shapes):
    """A random Gaussian direction d_N, filter-normalised as in Li et al. 2018.

    ``leaf_shapes`` is :attr:`dynloss_jax.model.FlatModel.leaf_shapes`: the parameter arrays in
    the order of the flat vector, each stored there row-major (``ravel_pytree``). With g ~ N(0, I)
    of the shape of ``w_N``, for each kernel W (shape (fan_in, fan_out)) and its slice G of g,
    column by column — a filter is the incoming weight vector of one output unit j:

        D[:, j] = G[:, j] · ‖W[:, j]‖ / ‖G[:, j]‖      (0 where ‖G[:, j]‖ = 0),

    so each filter of d has the norm of the same filter of the parameters, and scaling a unit's
    incoming weights by c > 0 scales its filter of d by c. (A ReLU network computes the same
    function when a hidden unit's incoming weights and bias are scaled by c > 0 and its outgoing
    weights by 1/c; the direction follows that rescaling, which is the point of normalising.)

    Biases (1-D leaves) get d = 0, Li et al.'s choice: their code, with its ``ignore='biasbn'``
    option, sets the direction of 1-D parameters to zero rather than normalise it. They also
    divide by ‖G‖ + 1e-10; here the division is exact, so ‖D[:, j]‖ = ‖W[:, j]‖ to rounding.

    Shapes: ``w_N`` (N,) → (N,), dtype of ``w_N``. Vmappable over ``key`` (and ``w_N``).
    """
    _check_layout(w_N, leaf_shapes)
    g_N = jax.random.normal(key, w_N.shape, w_N.dtype)
    pieces, offset = [], 0
    for shape in leaf_shapes:
        size = math.prod(shape)
        g, w = g_N[offset : offset + size], w_N[offset : offset + size]
        offset += size
        if len(shape) == 1:
            pieces.append(jnp.zeros_like(g))
            continue
        g_IxO, w_IxO = g.reshape(shape), w.reshape(shape)
        g_norm_O = jnp.linalg.norm(g_IxO, axis=0)
        nonzero_O = g_norm_O > 0
        scale_O = jnp.where(
            nonzero_O, jnp.linalg.norm(w_IxO, axis=0) / jnp.where(nonzero_O, g_norm_O, 1), 0
        )
        pieces.append((g_IxO * scale_O).reshape(-1))
    return jnp.concatenate(pieces)


def random_plane(key, w_N, leaf_shapes):
    """Two filter-normalised random directions ``(d1_N, d2_N)``
    (:func:`filter_normalized_direction`), drawn with the two keys split from ``key``.

    They are not orthogonalised (Li et al. 2018 do not: in high dimension two independent random
    directions are nearly orthogonal); place points on their plane with
    :func:`project_onto`, not :func:`project`.
    """
    key1, key2 = jax.random.split(key)
    return (
        filter_normalized_direction(key1, w_N, leaf_shapes),
        filter_normalized_direction(key2, w_N, leaf_shapes),
    )


def project_onto(w_TxN, w_N, d1_N, d2_N):
    """Plane coordinates ``(a_T, b_T)`` of trajectory points x_i = ``w_TxN[i]`` for any two
    linearly independent directions: the least-squares coefficients

        (a_i, b_i) = argmin ‖x_i − x_t − a·d1 − b·d2‖,   x_t = ``w_N``,

    from the 2×2 normal equations G [a_i, b_i]ᵀ = [d1·(x_i − x_t), d2·(x_i − x_t)]ᵀ with
    G = [[d1·d1, d1·d2], [d1·d2, d2·d2]]. x_t + a_i·d1 + b_i·d2 is the orthogonal projection of
    x_i onto the plane; for orthonormal d1, d2 (G = I) this is :func:`project`. The Gram system
    squares the conditioning of [d1 d2]: fine unless d1 and d2 are nearly parallel.
    """
    d_TxN = w_TxN - w_N
    gram_2x2 = jnp.array([[d1_N @ d1_N, d1_N @ d2_N], [d1_N @ d2_N, d2_N @ d2_N]])
    rhs_2xT = jnp.stack([d_TxN @ d1_N, d_TxN @ d2_N])
    a_T, b_T = jnp.linalg.solve(gram_2x2, rhs_2xT)
    return a_T, b_T
