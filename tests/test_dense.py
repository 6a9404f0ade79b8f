"""Tiny dense linear algebra against ``numpy.linalg``: Jacobi eigendecomposition (eigenvalues,
reconstruction, repeated and already-diagonal inputs) and pivoted Gaussian elimination (error
within a small multiple of cond(A)·ε), at the sizes the central-flow solver uses."""

import jax
import numpy as np
import pytest

from dynloss_jax import dense


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dense_eigh_and_solve_match_numpy(dtype):
    rng = np.random.default_rng(6)
    for n, m in ((1, 1), (2, 3), (4, 10)):  # K and M = K(K+1)/2, as the solver uses them
        A = rng.normal(size=(200, n, n))
        A = A + np.swapaxes(A, 1, 2)
        A[:20] = np.eye(n)  # repeated eigenvalues
        A[20:40] = np.diag(rng.normal(size=n))  # already diagonal
        A = A.astype(dtype)
        w, V = jax.jit(jax.vmap(dense.eigh))(A)
        scale = np.abs(A).max((1, 2))[:, None]
        eps = np.finfo(dtype).eps
        err = np.abs(np.asarray(w, float) - np.linalg.eigvalsh(A.astype(float)))
        assert np.all(err <= 50 * eps * scale), (n, np.max(err / scale))
        rebuilt = np.asarray(V, float) @ (np.asarray(w, float)[:, :, None] * np.swapaxes(V, 1, 2))
        assert np.abs(rebuilt - A).max() < 50 * eps * scale.max()
        M = rng.normal(size=(200, m, m)).astype(dtype)
        b = rng.normal(size=(200, m)).astype(dtype)
        x = np.asarray(jax.jit(jax.vmap(dense.solve))(M, b), float)
        want = np.linalg.solve(M.astype(float), b.astype(float)[..., None])[..., 0]
        cond = np.linalg.cond(M.astype(float))[:, None]
        assert np.all(np.abs(x - want) <= 10 * eps * cond * np.abs(want).max(1, keepdims=True))
