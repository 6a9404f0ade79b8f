"""The outlier group of the Hessian: Papyan's class / cross-class decomposition, dense.

For a softmax loss (CE, DCE, or a user's loss whose per-sample output Hessian has the softmax
form) the output-space Hessian of sample i is A_i = s_i (diag p_i − p_i p_iᵀ), p_i = softmax(f_i)
and s_i its weight (1/P for CE, Γ_{y_i}/P for DCE). It factors as

    A_i = Σ_c' w_ic' (e_c' − p_i)(e_c' − p_i)ᵀ,   w_ic' = s_i p_ic',

so the Gauss–Newton matrix G = Σ_i J_iᵀ A_i J_i (J_i = ∂f_i/∂w, C × N) is a weighted sum of
outer products of the N-vectors g_ic' = J_iᵀ(e_c' − p_i) — minus the gradient sample i would
give if its label were c'. Grouping the samples by their class c (Papyan 2019), with the
weights W_cc' = Σ_{i∈c} w_ic' and the weighted means δ_cc' = Σ_{i∈c} w_ic' g_ic' / W_cc',

    G = G_between + G_within,   G_between = Σ_{c,c'} W_cc' δ_cc' δ_cc'ᵀ,

G_within the (positive semi-definite) spread of the g_ic' about their means. Since
Σ_c' p_ic' (e_c' − p_i) = 0, Σ_c' W_cc' δ_cc' = 0 for every c: the C² means span at most
C(C − 1) directions, and G_between has rank ≤ C(C − 1) — the size of the group of outliers
that the literature (and this project's notebook 04) sees above the bulk. Whether a Hessian's
outliers *are* that group is measured by :func:`outlier_report`: the overlap of the top
C(C − 1) eigenvectors of H with the range of G_between, each eigenvector's curvature split into
its between-, within- and functional (H − G) parts, and the between part split by pair (c, c').

Everything here is dense (N × N matrices from ``jax.hessian`` and ``jax.jacrev``): meant for the
few-hundred-parameter networks of the paper (N = 603 at width 100), not for large models.
Tests: ``tests/test_outliers.py`` (the factorisation against the loss's own output Hessian, G
against the matrix-free Gauss–Newton products of :mod:`dynloss_jax.curvature`, the rank bound,
G_within ⪰ 0, the pair energies summing to uᵀ G_between u).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class PairStructure(NamedTuple):
    G_NxN: jax.Array  # Σ_i J_iᵀ A_i J_i with A_i the loss's own output Hessian (autodiff)
    between_NxN: jax.Array  # Σ_{c,c'} W_cc' δ_cc' δ_cc'ᵀ
    within_NxN: jax.Array  # Σ_i Σ_c' w_ic' g_ic' g_ic'ᵀ − between (⪰ 0)
    weights_CxC: jax.Array  # W_cc' = Σ_{i∈c} w_ic' (row: the samples' class, column: c')
    means_CxCxN: jax.Array  # δ_cc'
    factor_residual: jax.Array  # max_i ‖A_i − s_i(diag p_i − p_i p_iᵀ)‖_F / max_i ‖A_i‖_F


def output_hessians(loss, logits_PxC, y_PxC, gamma_C):
    """The per-sample blocks A_i = ∂²F/∂f_i∂f_i (P × C × C) of the loss's output Hessian, and
    the largest entry outside those blocks (zero for a loss that is a sum over samples)."""
    P, C = logits_PxC.shape
    full = jax.hessian(lambda z: loss(z, y_PxC, gamma_C))(logits_PxC)  # P × C × P × C
    idx = jnp.arange(P)
    blocks = full[idx, :, idx, :]
    off = full.at[idx, :, idx, :].set(0.0)
    return blocks, jnp.max(jnp.abs(off))


def pair_structure(apply, loss, w_N, x_PxD, y_PxC, gamma_C) -> PairStructure:
    """The decomposition of the module docstring at parameters ``w_N``; ``y_PxC`` one-hot.

    s_i is read off the loss's own output Hessian as tr A_i / tr(diag p_i − p_i p_iᵀ), and
    ``factor_residual`` says how far A_i is from the softmax form (≈ 1e-16 for CE and DCE;
    large for a loss of another form, e.g. MSE, for which the pair split does not apply)."""
    logits = apply(w_N, x_PxD)
    p_PxC = jax.nn.softmax(logits, axis=-1)
    A_PxCxC, off = output_hessians(loss, logits, y_PxC, gamma_C)
    S_PxCxC = jax.vmap(jnp.diag)(p_PxC) - p_PxC[:, :, None] * p_PxC[:, None, :]
    s_P = jnp.trace(A_PxCxC, axis1=1, axis2=2) / jnp.trace(S_PxCxC, axis1=1, axis2=2)
    resid = jnp.linalg.norm(A_PxCxC - s_P[:, None, None] * S_PxCxC, axis=(1, 2))
    scale = jnp.max(jnp.linalg.norm(A_PxCxC, axis=(1, 2)))
    factor_residual = jnp.maximum(jnp.max(resid), off) / scale

    J_PxCxN = jax.jacrev(lambda w: apply(w, x_PxD))(w_N)
    G = jnp.einsum("pcn,pcd,pdm->nm", J_PxCxN, A_PxCxC, J_PxCxN)
    # g_ic' = J_iᵀ (e_c' − p_i): rows of J_i minus their p-weighted mean
    g_PxCxN = J_PxCxN - jnp.einsum("pc,pcn->pn", p_PxC, J_PxCxN)[:, None, :]
    w_PxC = s_P[:, None] * p_PxC
    total = jnp.einsum("pc,pcn,pcm->nm", w_PxC, g_PxCxN, g_PxCxN)
    W_CxC = jnp.einsum("pc,pd->cd", y_PxC, w_PxC)
    means = jnp.einsum("pc,pd,pdn->cdn", y_PxC, w_PxC, g_PxCxN) / W_CxC[:, :, None]
    between = jnp.einsum("cd,cdn,cdm->nm", W_CxC, means, means)
    return PairStructure(G, between, total - between, W_CxC, means, factor_residual)


def _top(M, k):
    lam, U = np.linalg.eigh(np.asarray(M))
    order = np.argsort(lam)[::-1][:k]
    return lam[order], U[:, order]


def outlier_report(H_NxN, ps: PairStructure, n_top: int) -> dict:
    """How far the top eigenvectors of the Hessian ``H_NxN`` are Papyan's between-class group.

    With r = C(C − 1) and u_k, λ_k the eigenpairs of H (descending), k < ``n_top``:

    * ``lam``: λ_k; ``gap``: λ_r / λ_{r+1} (the group's separation from the next eigenvalue);
    * ``between``, ``within``, ``functional``: u_kᵀ G_between u_k, u_kᵀ G_within u_k and
      u_kᵀ (H − G) u_k, which sum to λ_k;
    * ``pairs``: for each k the C × C matrix W_cc' (u_kᵀ δ_cc')², summing to ``between[k]``;
      ``cross_share``: its share off the diagonal (c' ≠ c);
    * ``between_lam``: the top r eigenvalues of G_between; ``overlap``: ‖U_rᵀ V_r‖²_F / r, the
      mean squared cosine of the principal angles between H's top-r eigenvectors U_r and
      G_between's V_r (1: the same subspace; r/N for random subspaces);
    * ``overlap_next``: the same for H's eigenvectors r+1 … 2r (how much of the range of
      G_between lies outside the group)."""
    C = ps.weights_CxC.shape[0]
    r = C * (C - 1)
    N = H_NxN.shape[0]
    lam, U = _top(H_NxN, max(n_top, 2 * r))
    blam, V = _top(ps.between_NxN, r)
    G, B, Wn = (np.asarray(m) for m in (ps.G_NxN, ps.between_NxN, ps.within_NxN))
    Uk = U[:, :n_top]
    quad = lambda M: np.einsum("nk,nm,mk->k", Uk, M, Uk)  # noqa: E731
    proj = np.einsum("cdn,nk->kcd", np.asarray(ps.means_CxCxN), Uk)
    pairs = np.asarray(ps.weights_CxC)[None] * proj**2
    off = ~np.eye(C, dtype=bool)
    return {
        "n_classes": C,
        "r": r,
        "n_params": N,
        "lam": lam[:n_top].tolist(),
        "gap": float(lam[r - 1] / lam[r]),
        "between": quad(B).tolist(),
        "within": quad(Wn).tolist(),
        "functional": quad(np.asarray(H_NxN) - G).tolist(),
        "pairs": pairs.tolist(),
        "cross_share": (pairs[:, off].sum(1) / pairs.reshape(n_top, -1).sum(1)).tolist(),
        "between_lam": blam.tolist(),
        "overlap": float(np.sum((U[:, :r].T @ V) ** 2) / r),
        "overlap_next": float(np.sum((U[:, r : 2 * r].T @ V) ** 2) / r),
        "factor_residual": float(ps.factor_residual),
    }
