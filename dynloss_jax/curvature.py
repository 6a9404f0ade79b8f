"""Who shapes the curvature: per-class losses, gradients and Hessian splits; Gauss–Newton and NTK.

Everything here is a pure function of arrays and of two callables, the network
``apply(w_N, x_PxD) -> logits_PxC`` and the loss ``loss(logits_PxC, y_PxC, gamma_C, **hyper)``
(a scalar), so it can be vmapped over runs, called inside ``lax.scan`` and jitted by the caller.
``y_PxC`` is one-hot; ``hyper`` is an optional dict of arrays passed to the loss as keywords.

**The class split (samples).** Every loss of the paper is a mean over the P samples,
F(w) = (1/P) Σ_j ℓ(f_j(w), y_j, Γ) with ℓ_j = ``loss`` evaluated on sample j alone. Restricting
the sum to the n_c samples of class c, *keeping the 1/P*, gives class c's part

    F^(c)(w) = (1/P) Σ_{j: y_j = c} ℓ_j,         Σ_c F^(c) = F exactly,

and with it g_c = ∇F^(c) (Σ_c g_c = ∇F) and H^(c) = ∇²F^(c) (Σ_c H^(c) = H), so each eigenvalue
of H splits exactly: λ_k = u_kᵀ H u_k = Σ_c u_kᵀ H^(c) u_k for a unit eigenvector u_k. Γ stays
inside ℓ_j: for DCE and DMSE1 class c's part is Γ_c times its static part (H^(c) = Γ_c H_c of the
Hellmann–Feynman picture); for DMSE1O and DMSE2, whose Γ_i acts on output i of *every* sample,
class c's part is the loss of class c's samples with all of Γ applied to them. This is the split
of :func:`class_parts`, :func:`class_gradients` and :func:`class_split`, and it is exact for any
loss that is a mean over samples of a per-sample term. The assumption is checked by
:func:`mean_over_samples_gap` (zero for the six losses of :mod:`dynloss_jax.losses`); a loss
that couples samples (e.g. through batch statistics) is not split correctly by it.

**The Γ split (Hellmann–Feynman).** :func:`gamma_sensitivity` gives ∂λ_k/∂Γ_c =
u_kᵀ ∇²_w(∂F/∂Γ_c) u_k for a simple eigenvalue, for any loss. For a loss linear and
homogeneous in Γ (DCE, DMSE1, DMSE1O) Σ_c Γ_c ∂λ_k/∂Γ_c = λ_k; the static losses (CE, MSE) give
zero and DMSE2 (quadratic in Γ) no such sum; use the sample split there.

**Gauss–Newton and NTK.** With J = ∂f/∂w (P·C × N, never formed) and H_ℓ = ∇²_f F the output-space
Hessian of the Γ-weighted loss (P·C × P·C, applied by a Hessian-vector product on the logits):
the GGN G = Jᵀ H_ℓ J (:func:`ggn_matvec`), the NTK Θ = J Jᵀ on output space
(:func:`ntk_matvec`; traced over the logits, P × P, as the authors tracked it:
:func:`ntk_traced_matvec`), and H − G = Σ_{j,i} (∂F/∂f_ji) ∇²_w f_ji (the functional Hessian,
:func:`functional_curvature`); G too splits by class, G = Σ_c Jᵀ ∇²_f F^(c) J
(:func:`class_ggn_curvature`). The top eigenvalues come from :func:`dynloss_jax.eig.lanczos`
(:func:`ggn_top`, :func:`ntk_top`), and the matvecs fit :func:`dynloss_jax.eig.block_krylov` for
tracking. Example, at one measurement::

    model = flat_model(16)
    res = eig.lanczos(lambda v: hessian_matvec(model.apply, dce, w, x, y, g, v),
                      jnp.zeros_like(w), key)
    split = class_split(model.apply, dce, w, x, y, g, res.vectors_KxN)
    split.curvature_KxC.sum(1)  # == res.top_K, the Ritz values (to rounding)

Tests: ``tests/test_curvature.py`` (dense Hessians, per-class dense Hessians and dense
Jacobians at width ≤ 16).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynloss_jax import eig


def _kw(hyper):
    return {} if hyper is None else hyper


def _second_directional(fun, w_N, u_N):
    """d²/dt² fun(w + t u) at t = 0, i.e. uᵀ ∇²fun(w) u for each output of ``fun`` (two jvps)."""
    return jax.jvp(lambda w: jax.jvp(fun, (w,), (u_N,))[1], (w_N,), (u_N,))[1]


# ---------------------------------------------------------------------------------------------
# Per-class losses and gradients (the sample split)


def per_sample_losses(loss, logits_PxC, y_PxC, gamma_C, hyper=None):
    """ℓ_P: ``loss`` evaluated on each sample alone (a batch of one), shape (P,).

    For a loss that is a mean over samples, mean(ℓ_P) equals ``loss`` on the whole batch.
    """
    kw = _kw(hyper)

    def one(logits_C, y_C):
        return loss(logits_C[None], y_C[None], gamma_C, **kw)

    return jax.vmap(one)(logits_PxC, y_PxC)


def mean_over_samples_gap(loss, logits_PxC, y_PxC, gamma_C, hyper=None):
    """|mean_j ℓ_j − loss(batch)|: zero (to rounding) when the sample split is valid here."""
    whole = loss(logits_PxC, y_PxC, gamma_C, **_kw(hyper))
    return jnp.abs(jnp.mean(per_sample_losses(loss, logits_PxC, y_PxC, gamma_C, hyper)) - whole)


def class_parts(loss, logits_PxC, y_PxC, gamma_C, hyper=None):
    """F_C with F^(c) = (1/P) Σ_{j: y_j = c} ℓ_j = (1/P) (Yᵀ ℓ)_c, shape (C,); Σ_c F^(c) = F."""
    ell_P = per_sample_losses(loss, logits_PxC, y_PxC, gamma_C, hyper)
    return y_PxC.T.astype(ell_P.dtype) @ ell_P / y_PxC.shape[0]


def _parts_of_w(apply, loss, x_PxD, y_PxC, gamma_C, hyper):
    def parts(w_N):
        return class_parts(loss, apply(w_N, x_PxD), y_PxC, gamma_C, hyper)

    return parts


class ClassProgress(NamedTuple):
    """How each class is doing; every field has shape (C,)."""

    loss_C: jax.Array  # class mean (1/n_c) Σ_{j: y_j = c} ℓ_j (Γ included); NaN if n_c = 0
    accuracy_C: jax.Array  # fraction of class c's samples with argmax f_j = c; NaN if n_c = 0
    count_C: jax.Array  # n_c
    part_C: jax.Array  # F^(c) = (n_c/P)·loss_C (0 if n_c = 0): the class's share of F


def class_progress(apply, loss, w_N, x_PxD, y_PxC, gamma_C, hyper=None) -> ClassProgress:
    """Per-class loss and accuracy of the network at ``w_N`` on (x, y) (training or validation).

    ``loss_C`` uses the loss being minimised (Γ included); pass Γ ≡ 1 for the static loss.
    """
    return class_progress_of_logits(loss, apply(w_N, x_PxD), y_PxC, gamma_C, hyper)


def class_progress_of_logits(loss, logits_PxC, y_PxC, gamma_C, hyper=None) -> ClassProgress:
    """:func:`class_progress` from logits already computed (e.g. by the training step)."""
    ell_P = per_sample_losses(loss, logits_PxC, y_PxC, gamma_C, hyper)
    y_PxC = y_PxC.astype(ell_P.dtype)
    count_C = jnp.sum(y_PxC, axis=0)
    safe_C = jnp.where(count_C > 0, count_C, 1.0)
    part_C = y_PxC.T @ ell_P / y_PxC.shape[0]
    correct_P = (jnp.argmax(logits_PxC, axis=-1) == jnp.argmax(y_PxC, axis=-1)).astype(ell_P.dtype)
    nan = jnp.asarray(jnp.nan, ell_P.dtype)
    loss_C = jnp.where(count_C > 0, y_PxC.T @ ell_P / safe_C, nan)
    accuracy_C = jnp.where(count_C > 0, y_PxC.T @ correct_P / safe_C, nan)
    return ClassProgress(loss_C, accuracy_C, count_C, part_C)


def class_gradients(apply, loss, w_N, x_PxD, y_PxC, gamma_C, hyper=None):
    """g_CxN: row c is g_c = ∇_w F^(c)(w) (reverse mode, C cotangents); Σ_c g_c = ∇F."""
    return jax.jacrev(_parts_of_w(apply, loss, x_PxD, y_PxC, gamma_C, hyper))(w_N)


def class_index_sets(y_PxC) -> tuple:
    """The positions of each class's samples, from concrete (NumPy) one-hot labels: a tuple of C
    integer arrays, static for :func:`class_gradients_by_subsets`."""
    labels_P = np.argmax(np.asarray(y_PxC), axis=1)
    return tuple(np.flatnonzero(labels_P == c) for c in range(np.shape(y_PxC)[1]))


def class_gradients_by_subsets(apply, loss, w_N, x_PxD, y_PxC, gamma_C, index_sets, hyper=None):
    """g_CxN as in :func:`class_gradients`, computed class by class on each class's samples alone:
    g_c = ∇_w (n_c/P)·loss(f(x_c), y_c, Γ), with x_c, y_c gathered by the static ``index_sets``
    (:func:`class_index_sets`). Exact for a loss that is a mean over samples. The C forward and
    backward passes run on n_c samples each, so the whole costs about one gradient of F (the
    reverse-mode Jacobian of :func:`class_gradients` propagates C cotangents through all P
    samples) — and Σ_c g_c is ∇F, so a step can take its gradient from here.
    """
    kw = _kw(hyper)
    P = y_PxC.shape[0]

    def grad_c(idx):
        def F_c(w):
            return idx.size / P * loss(apply(w, x_PxD[idx]), y_PxC[idx], gamma_C, **kw)

        return jax.grad(F_c)(w_N) if idx.size else jnp.zeros_like(w_N)

    return jnp.stack([grad_c(idx) for idx in index_sets])


def class_hvp(apply, loss, w_N, x_PxD, y_PxC, gamma_C, v_N, hyper=None):
    """H^(c) v for every class, shape (C, N) (forward over reverse); Σ_c H^(c) v = H v.

    With the top vectors U this gives the class matrices U H^(c) Uᵀ (K × K each) that tie each
    outlier eigenvalue to each class.
    """
    jac = jax.jacrev(_parts_of_w(apply, loss, x_PxD, y_PxC, gamma_C, hyper))
    return jax.jvp(jac, (w_N,), (v_N,))[1]


def class_matrices(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper=None):
    """M_CxKxK with M[c] = U H^(c) Uᵀ, i.e. M[c, k, l] = u_kᵀ H^(c) u_l (symmetrised), from K
    calls of :func:`class_hvp`. The diagonals are :func:`class_curvature`; Σ_c M[c] = U H Uᵀ,
    which is diag(λ) for eigenvectors. Off-diagonal mass in M[c] with Σ_c M[c] diagonal says how
    the classes couple the tracked directions (the cross-class structure of outliers).
    """

    def products(u):
        return class_hvp(apply, loss, w_N, x_PxD, y_PxC, gamma_C, u, hyper)

    HU_KxCxN = jax.vmap(products)(U_KxN)
    M_CxKxK = jnp.einsum("kn,lcn->ckl", U_KxN, HU_KxCxN)
    return 0.5 * (M_CxKxK + jnp.swapaxes(M_CxKxK, 1, 2))


def class_curvature(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper=None):
    """S_KxC with S[k, c] = u_kᵀ H^(c) u_k, the second directional derivative of F^(c) along u_k
    (forward over forward: one pass per vector for all C classes). Σ_c S[k, c] = u_kᵀ H u_k: λ_k
    for a unit eigenvector of H, and exactly the Ritz value θ_k for a Ritz vector of
    :func:`dynloss_jax.eig.lanczos` (converged or not).
    """
    parts = _parts_of_w(apply, loss, x_PxD, y_PxC, gamma_C, hyper)
    return jax.vmap(lambda u: _second_directional(parts, w_N, u))(U_KxN)


def class_ggn_curvature(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper=None):
    """S_KxC with S[k, c] = u_kᵀ G^(c) u_k = (J u_k)ᵀ ∇²_f F^(c) (J u_k), the Gauss–Newton part
    of :func:`class_curvature` (G^(c) = Jᵀ ∇²_f F^(c) J, Σ_c G^(c) = G): one jvp of the network
    and a second directional derivative of the class parts on the logits, per vector. The
    difference from :func:`class_curvature` is each class's functional-Hessian term.
    """

    def f(w):
        return apply(w, x_PxD)

    def one(u_N):
        logits_PxC, Ju_PxC = jax.jvp(f, (w_N,), (u_N,))

        def parts(z_PxC):
            return class_parts(loss, z_PxC, y_PxC, gamma_C, hyper)

        return _second_directional(parts, logits_PxC, Ju_PxC)

    return jax.vmap(one)(U_KxN)


def gamma_sensitivity(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper=None):
    """D_KxC with D[k, c] = u_kᵀ ∇²_w (∂F/∂Γ_c) u_k: ∂λ_k/∂Γ_c for a simple eigenvalue with unit
    eigenvector u_k (Hellmann–Feynman), for any loss. Σ_c Γ_c D[k, c] = λ_k when F is linear and
    homogeneous in Γ (DCE, DMSE1, DMSE1O); zero for the static losses.
    """
    kw = _kw(hyper)

    def dF_dgamma(w):
        def full(g_C):
            return loss(apply(w, x_PxD), y_PxC, g_C, **kw)

        return jax.jacfwd(full)(gamma_C)

    return jax.vmap(lambda u: _second_directional(dF_dgamma, w_N, u))(U_KxN)


def cosines(U_KxN, g_CxN):
    """cos_KxC[k, c] = u_k·g_c / (‖u_k‖ ‖g_c‖); 0 where a vector vanishes. The sign of an
    eigenvector is arbitrary, so |cos| is what a measurement means."""
    dots = U_KxN @ g_CxN.T
    norms = jnp.linalg.norm(U_KxN, axis=1)[:, None] * jnp.linalg.norm(g_CxN, axis=1)[None, :]
    return jnp.where(norms > 0, dots / jnp.where(norms > 0, norms, 1.0), 0.0)


def emphasised_class(gamma_C):
    """argmax_c Γ_c, or −1 where every Γ_c is equal (no class is emphasised, e.g. τ = 0)."""
    tie = jnp.max(gamma_C) == jnp.min(gamma_C)
    return jnp.where(tie, -1, jnp.argmax(gamma_C))


class ClassSplit(NamedTuple):
    """The class-resolved curvature of K tracked vectors (see :func:`class_split`)."""

    curvature_KxC: jax.Array  # u_kᵀ H^(c) u_k
    lam_K: jax.Array  # Σ_c curvature_KxC = u_kᵀ H u_k
    cosine_KxC: jax.Array  # cos(u_k, g_c)
    grad_norm_C: jax.Array  # ‖g_c‖
    emphasised: jax.Array  # c(t) (int); −1: none
    cos_emphasised_K: jax.Array  # cos(u_k, g_{c(t)}); NaN when c(t) = −1
    abs_cos_other_K: jax.Array  # mean over c ≠ c(t) of |cos(u_k, g_c)|; NaN when c(t) = −1
    best_is_emphasised_K: jax.Array  # argmax_c |cos(u_k, g_c)| == c(t) (bool)


def class_split(
    apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, emphasised=None, hyper=None
) -> ClassSplit:
    """Class split of the tracked vectors U (rows, unit norm, e.g. ``EigResult.vectors_KxN``) and
    their alignment with each class's aggregate gradient g_c = ∇F^(c).

    Cost: one forward-over-forward pass per vector (all C classes at once) plus one reverse pass
    with C cotangents for the gradients. ``emphasised`` is the schedule's class c(t) (an int,
    may be traced); by default :func:`emphasised_class` of Γ (argmax, −1 at a tie).
    """
    S_KxC = class_curvature(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper)
    g_CxN = class_gradients(apply, loss, w_N, x_PxD, y_PxC, gamma_C, hyper)
    cos_KxC = cosines(U_KxN, g_CxN)
    c = emphasised_class(gamma_C) if emphasised is None else jnp.asarray(emphasised)
    n_classes = y_PxC.shape[1]
    valid = c >= 0
    is_c_C = jnp.arange(n_classes) == c
    nan = jnp.asarray(jnp.nan, cos_KxC.dtype)
    cos_emphasised_K = jnp.where(valid, jnp.sum(jnp.where(is_c_C, cos_KxC, 0.0), axis=1), nan)
    others = jnp.sum(jnp.where(is_c_C, 0.0, jnp.abs(cos_KxC)), axis=1) / max(n_classes - 1, 1)
    abs_cos_other_K = jnp.where(valid, others, nan)
    best_K = (jnp.argmax(jnp.abs(cos_KxC), axis=1) == c) & valid
    return ClassSplit(
        S_KxC,
        jnp.sum(S_KxC, axis=1),
        cos_KxC,
        jnp.linalg.norm(g_CxN, axis=1),
        c,
        cos_emphasised_K,
        abs_cos_other_K,
        best_K,
    )


# ---------------------------------------------------------------------------------------------
# Gauss–Newton, NTK and the functional Hessian


def _logit_grad(loss, y_PxC, gamma_C, hyper):
    """z ↦ ∂F/∂z for F = loss(z, y, Γ) on the logits z (P × C)."""
    kw = _kw(hyper)
    return jax.grad(lambda z: loss(z, y_PxC, gamma_C, **kw))


def ggn_matvec(apply, loss, w_N, x_PxD, y_PxC, gamma_C, v_N, hyper=None):
    """G v = Jᵀ H_ℓ J v, with J v by a jvp of ``apply``, H_ℓ (J v) by a Hessian-vector product of
    the Γ-weighted loss on the logits (P × C), and Jᵀ by a vjp; no Jacobian is formed. Shape (N,).

    G is positive semi-definite when H_ℓ is (every loss of the paper: softmax cross-entropy and
    squared errors are convex in the logits, and Γ > 0).
    """

    def f(w):
        return apply(w, x_PxD)

    logits_PxC, Jv_PxC = jax.jvp(f, (w_N,), (v_N,))
    dL = _logit_grad(loss, y_PxC, gamma_C, hyper)
    HJv_PxC = jax.jvp(dL, (logits_PxC,), (Jv_PxC,))[1]
    _, vjp = jax.vjp(f, w_N)
    return vjp(HJv_PxC)[0]


def ntk_matvec(apply, w_N, x_PxD, u_M):
    """Θ u = J Jᵀ u on output space, u flattened from (P, C) to M = P·C (row-major, as
    ``logits_PxC.reshape(-1)``). Θ[(j,i), (j',i')] = ∇f_ji · ∇f_j'i' (no 1/P); its nonzero
    eigenvalues are those of JᵀJ. Shape (M,).
    """

    def f(w):
        return apply(w, x_PxD)

    logits_PxC, vjp = jax.vjp(f, w_N)
    (Jtu_N,) = vjp(u_M.reshape(logits_PxC.shape))
    return jax.jvp(f, (w_N,), (Jtu_N,))[1].reshape(-1)


def ntk_traced_matvec(apply, w_N, x_PxD, u_P):
    """Θ̄ u for the output-traced NTK Θ̄[j, j'] = Σ_i ∇f_ji · ∇f_j'i (P × P, no 1/P): for each
    output i one vjp with the cotangent u ⊗ e_i and one jvp (C of each). Shape (P,).

    This is the empirical NTK that neural-tangents' ``empirical_ntk_fn`` returns by default
    (``trace_axes=(-1,)``, a sum over the logits), the one the authors' public notebook tracked
    at every step, on the first 50 training points: class 0 alone, since the spiral is stored
    class by class.
    """

    def f(w):
        return apply(w, x_PxD)

    logits_PxC, vjp = jax.vjp(f, w_N)
    n_classes = logits_PxC.shape[1]

    def one(i):
        e_C = (jnp.arange(n_classes) == i).astype(u_P.dtype)
        (Jtu_N,) = vjp(u_P[:, None] * e_C[None, :])
        return jax.jvp(f, (w_N,), (Jtu_N,))[1] @ e_C

    return jnp.sum(jax.vmap(one)(jnp.arange(n_classes)), axis=0)


def functional_curvature(apply, loss, w_N, x_PxD, y_PxC, gamma_C, U_KxN, hyper=None):
    """u_kᵀ (H − G) u_k = Σ_{j,i} (∂F/∂f_ji) · u_kᵀ ∇²f_ji u_k, shape (K,): the loss gradient on the
    logits paired with the second directional derivative of the logits along u_k. Computed
    directly (no difference of two quadratic forms), so it stays accurate when H ≈ G. Zero for a
    network linear in w.
    """

    def f(w):
        return apply(w, x_PxD)

    logits_PxC = f(w_N)
    dL = _logit_grad(loss, y_PxC, gamma_C, hyper)
    g_PxC = dL(logits_PxC)
    return jax.vmap(lambda u: jnp.sum(g_PxC * _second_directional(f, w_N, u)))(U_KxN)


def hessian_matvec(apply, loss, w_N, x_PxD, y_PxC, gamma_C, v_N, hyper=None):
    """H v for H = ∇²_w F(w), F = ``loss(apply(w, x), y, Γ)``, by :func:`dynloss_jax.eig.hvp`."""
    kw = _kw(hyper)

    def F(w):
        return loss(apply(w, x_PxD), y_PxC, gamma_C, **kw)

    return eig.hvp(F, w_N, v_N)


def _start(v0, n, dtype):
    return jnp.zeros((n,), dtype) if v0 is None else v0


def ggn_top(
    apply,
    loss,
    w_N,
    x_PxD,
    y_PxC,
    gamma_C,
    key,
    *,
    v0_N=None,
    num_matvecs: int = 16,
    k: int = 2,
    hyper=None,
) -> eig.EigResult:
    """Top-``k`` eigenpairs of the GGN from ``num_matvecs`` products (:func:`eig.lanczos`; cold
    from ``key`` unless ``v0_N`` is given)."""

    def mv(v):
        return ggn_matvec(apply, loss, w_N, x_PxD, y_PxC, gamma_C, v, hyper)

    v0 = _start(v0_N, w_N.shape[0], w_N.dtype)
    return eig.lanczos(mv, v0, key, num_matvecs=num_matvecs, k=k)


def ntk_top(
    apply,
    w_N,
    x_PxD,
    n_classes: int,
    key,
    *,
    v0_M=None,
    num_matvecs: int = 16,
    k: int = 2,
    trace_outputs: bool = False,
) -> eig.EigResult:
    """Top-``k`` eigenpairs of the NTK, vectors in output space: Θ = J Jᵀ (:func:`ntk_matvec`,
    M = P·``n_classes``), or with ``trace_outputs`` the traced Θ̄ (:func:`ntk_traced_matvec`,
    M = P)."""

    def mv(u):
        if trace_outputs:
            return ntk_traced_matvec(apply, w_N, x_PxD, u)
        return ntk_matvec(apply, w_N, x_PxD, u)

    size = x_PxD.shape[0] * (1 if trace_outputs else n_classes)
    v0 = _start(v0_M, size, w_N.dtype)
    return eig.lanczos(mv, v0, key, num_matvecs=num_matvecs, k=k)


class CurvatureGap(NamedTuple):
    """The Hessian − GGN gap at the top of the spectrum."""

    lam1_hessian: jax.Array  # λ1(H)
    lam1_ggn: jax.Array  # λ1(G)
    gap: jax.Array  # λ1(H) − λ1(G)
    functional_u1: jax.Array  # u1ᵀ (H − G) u1, u1 the Hessian's top Ritz vector
    residual_hessian: jax.Array  # ‖H u1 − λ1 u1‖
    residual_ggn: jax.Array


def hessian_ggn_gap(
    apply, loss, w_N, x_PxD, y_PxC, gamma_C, key, *, num_matvecs: int = 16, hyper=None
) -> CurvatureGap:
    """λ1(H), λ1(G) (each by :func:`eig.lanczos`, cold, from the two halves of ``key``), their
    difference, and u1ᵀ(H − G)u1 by :func:`functional_curvature`. Since λ1(G) ≥ u1ᵀGu1,
    λ1(H) − λ1(G) ≤ u1ᵀ(H − G)u1 (up to the Ritz residuals)."""
    key_h, key_g = jax.random.split(key)

    def hv(v):
        return hessian_matvec(apply, loss, w_N, x_PxD, y_PxC, gamma_C, v, hyper)

    zero = jnp.zeros_like(w_N)
    h = eig.lanczos(hv, zero, key_h, num_matvecs=num_matvecs, k=1)
    g = ggn_top(
        apply, loss, w_N, x_PxD, y_PxC, gamma_C, key_g, num_matvecs=num_matvecs, k=1, hyper=hyper
    )
    fc = functional_curvature(apply, loss, w_N, x_PxD, y_PxC, gamma_C, h.vectors_KxN, hyper)
    return CurvatureGap(
        h.top_K[0], g.top_K[0], h.top_K[0] - g.top_K[0], fc[0], h.residual_K[0], g.residual_K[0]
    )
