"""Hessian measurements of a run at given points: λ1, λ2 and λ_min (with each parameter block's
λ1) by warm-started Lanczos, or the top K above a line by a warm-started block Krylov space;
the spectral density (stochastic Lanczos quadrature) and the trace (Hutch++); and λ1, λ2 at an
onset step.

Every measurement takes the operator as an argument — ``matvec`` (v ↦ H v at the point), or
``operator(w_N, step)`` returning it where the point is chosen here — so that whatever produced
the points (the training engine, with :func:`dynloss_jax.objective.hessian_operator`, or another
integrator of the same run) measures them alike. ``spec`` and ``hyper`` give the Lanczos lengths,
the run's seed for the probes, and in a padded program the run's real parameters: Lanczos then
works in their subspace (masked start vector and products, restarts over the real coordinates in
their unpadded order), so every number is that of the unpadded run to rounding. The records of a
``diverged`` run are NaN.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynloss_jax import curvature, eig, loop, objective, spectrum
from dynloss_jax.config import N_TOP
from dynloss_jax.data import Data
from dynloss_jax.spec import SPECTRUM_STREAM, Hyper, RunSpec, embed, padding_tables, real_mask


class EigRecord(NamedTuple):
    """Hessian spectrum of F_t at w_t every ``eig_every`` steps (NaN once the run diverged)."""

    step: jax.Array  # t
    lam_K: jax.Array  # λ1 ≥ λ2
    lam_min: jax.Array
    residual_K: jax.Array
    residual_min: jax.Array
    layer_lam_L: jax.Array | None = None  # λ1 of each parameter block (with layer_sharpness)
    above_K: jax.Array | None = None  # with top_k: which of lam_K are above top_k_above/η
    # with class_split (see measure_classes): u_kᵀ H^(c) u_k, cos(u_k, g_c), ‖g_c‖, c(t)
    class_split_KxC: jax.Array | None = None
    class_cos_KxC: jax.Array | None = None
    class_grad_norm_C: jax.Array | None = None
    emphasised: jax.Array | None = None  # int; −1: no class emphasised (all Γ_c equal)
    # with ggn_ntk (see measure_ggn_ntk)
    ggn_lam_K: jax.Array | None = None  # λ1 ≥ λ2 of G = Jᵀ H_f J
    ntk_lam_K: jax.Array | None = None  # λ1 ≥ λ2 of Θ = J Jᵀ (output space)
    functional_u1: jax.Array | None = None  # u1ᵀ (H − G) u1


class DensityRecord(NamedTuple):
    """Stochastic Lanczos quadrature of the same operator every ``density_every`` steps."""

    step: jax.Array
    nodes_SxM: jax.Array  # per probe, ascending Ritz values
    weights_SxM: jax.Array  # ≥ 0, each probe's row sums to 1


class TraceRecord(NamedTuple):
    """Hutch++ trace of the same operator every ``trace_every`` steps."""

    step: jax.Array
    estimate: jax.Array
    standard_error: jax.Array


def lanczos(spec: RunSpec, hyper: Hyper, matvec, v0_N, key, num_matvecs: int, k: int = N_TOP):
    """:func:`dynloss_jax.eig.lanczos` for the top ``k`` eigenvalues, on the run's real
    parameters; a zero ``v0_N`` starts from the unpadded run's random vector."""
    if v0_N is None:
        n = spec.model.n_params
        v0_N = jnp.zeros((n,), spec.dtype)
    if not spec.padded:
        return eig.lanczos(matvec, v0_N, key, num_matvecs=num_matvecs, k=k)
    mask = real_mask(spec, hyper)
    start = embed(
        spec, hyper, lambda i: jax.random.normal(key, (spec.positions(i).size,), spec.dtype)
    )
    v0_N = jnp.where(jnp.linalg.norm(v0_N) > 0, v0_N * mask, start)
    coords = jnp.asarray(padding_tables(spec)[1])[hyper.width_index]
    return eig.lanczos(
        lambda v: mask * matvec(mask * v),
        v0_N,
        key,
        num_matvecs=num_matvecs,
        k=k,
        coords_N=coords,
    )


def cold_top_k(spec: RunSpec, hyper: Hyper, matvec, key):
    """The first top-K vectors of a run with ``top_k`` (at its initial point): Lanczos with
    max(64, 8K) steps, once, so that the warm-started block Krylov measurements start from
    converged vectors. (Where H changes fast in the first steps, the measurements after it lag
    whatever the start; their residuals say so.)"""
    res = lanczos(spec, hyper, matvec, None, key, max(64, 8 * spec.top_k), k=spec.top_k)
    return jnp.nan_to_num(res.vectors_KxN)


def nan_if(diverged, tree):
    """Every leaf of ``tree`` NaN where ``diverged``, else as it is."""
    return jax.tree.map(lambda v: jnp.where(diverged, jnp.full_like(v, jnp.nan), v), tree)


@functools.cache
def layer_blocks(spec: RunSpec) -> tuple[list[str], np.ndarray]:
    """Names and 0/1 masks ``(L, N)`` of the parameter blocks (one per weight or bias array)
    of the program's network, for ``layer_sharpness``."""
    model = spec.model
    names = spectrum.block_names(model.unravel(np.zeros(model.n_params, spec.dtype)))
    return names, spectrum.block_masks(model.leaf_shapes)


def measure(spec: RunSpec, hyper: Hyper, matvec, step, eig_key, vectors_KxN, diverged):
    """λ1, λ2, λ_min (and residuals) of ``matvec`` by ``num_matvecs`` Lanczos steps started from
    the sum of ``vectors_KxN`` (the last measurement's Ritz vectors, zero at first) with the key
    ``fold_in(eig_key, step)`` (``eig_key`` as raw key data); with ``layer_sharpness`` also λ1
    of each parameter block. With ``top_k`` instead: the top K by the block Krylov space of
    ``vectors_KxN`` (:func:`dynloss_jax.eig.block_krylov`, ``top_k_blocks`` × K products, on
    the run's real parameters), the record's ``above_K`` marking those above
    ``top_k_above``/2 × the optimiser's threshold (c/η for GD), ``lam_min`` NaN.

    Returns ``(vectors_KxN, record)``: the Ritz vectors that warm-start the next measurement
    and the :class:`EigRecord` at ``step``.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(eig_key), step)
    above = None
    if spec.top_k:
        res = loop.track(
            matvec,
            vectors_KxN,
            key,
            k=spec.top_k,
            num_matvecs=0,
            blocks=spec.top_k_blocks,
            mask_N=real_mask(spec, hyper),
        )
        line = spec.top_k_above / 2 * objective.threshold(spec, hyper)
        above = jnp.where(diverged, False, res.top_K > line)
    else:
        res = loop.track(
            matvec,
            vectors_KxN,
            key,
            k=N_TOP,
            num_matvecs=spec.num_matvecs,
            lanczos=functools.partial(lanczos, spec, hyper),
        )
    vectors = jnp.nan_to_num(res.vectors_KxN)
    layer = None
    if spec.layer_sharpness:
        masks_LxN = jnp.asarray(layer_blocks(spec)[1], spec.dtype)
        if spec.padded:
            masks_LxN = masks_LxN * real_mask(spec, hyper)
        layer = spectrum.layer_sharpness_of(
            matvec, masks_LxN, jax.random.fold_in(key, 1), num_matvecs=spec.layer_matvecs
        )
    record = EigRecord(
        step,
        *nan_if(diverged, (res.top_K, res.lam_min, res.residual_K, res.residual_min)),
        layer_lam_L=None if layer is None else nan_if(diverged, layer),
        above_K=above,
    )
    return vectors, record


def measure_spectrum(spec: RunSpec, hyper: Hyper, matvec, w_N, step, kinds, diverged) -> dict:
    """The spectral density and/or trace (``kinds``) of ``matvec`` at the point ``w_N`` of
    ``step``: ``{"density": DensityRecord, "trace": TraceRecord}``. Probes are drawn from the
    run's seed and the step; in a padded program they live on the run's real parameters."""
    mask = real_mask(spec, hyper)
    if mask is not None:
        matvec = functools.partial(lambda m, mv, v: m * mv(m * v), mask, matvec)
    stream = jax.random.fold_in(jax.random.key(hyper.seed), SPECTRUM_STREAM)
    key = jax.random.fold_in(stream, step)
    out = {}
    if "density" in kinds:
        rho = spectrum.density_of(
            matvec,
            w_N,
            jax.random.fold_in(key, 0),
            num_matvecs=spec.density_matvecs,
            num_probes=spec.density_probes,
            mask_N=mask,
        )
        out["density"] = DensityRecord(step, *nan_if(diverged, tuple(rho)))
    if "trace" in kinds:
        estimate, se = spectrum.trace_of(
            matvec,
            w_N,
            jax.random.fold_in(key, 1),
            num_samples=spec.trace_samples,
            mask_N=mask,
        )
        out["trace"] = TraceRecord(step, *nan_if(diverged, (estimate, se)))
    return out


def measure_onset(spec: RunSpec, hyper: Hyper, operator, eig_key, t0, w_N, lam_K, residual_K):
    """``(lam_K, residual_K)``: λ1, λ2 (and residuals) of ``operator(w_N, t0)`` at an onset
    step ``t0`` from ``onset_matvecs`` Lanczos steps — once: computed when ``t0 >= 0`` and
    ``lam_K`` is still NaN, else ``lam_K``, ``residual_K`` are returned as they are (a
    ``lax.cond``: map it over runs sequentially, so that it stays a branch)."""

    def compute(_):
        matvec = operator(w_N, t0)
        key = jax.random.fold_in(jax.random.wrap_key_data(eig_key), t0 + (1 << 30))
        res = lanczos(spec, hyper, matvec, jnp.zeros_like(w_N), key, spec.onset_matvecs)
        return res.top_K, res.residual_K

    need = (t0 >= 0) & jnp.isnan(lam_K[0])
    return jax.lax.cond(need, compute, lambda _: (lam_K, residual_K), None)


def _class_gradients(spec: RunSpec, hyper: Hyper, data: Data, w_N, gamma_C):
    """g_CxN, g_c = ∇F^(c) of the run's loss at Γ (:func:`dynloss_jax.curvature.class_gradients`,
    full batch), restricted to a padded run's real parameters."""
    loss = objective.run_loss(spec, hyper)
    g_CxN = curvature.class_gradients(
        spec.model.apply, loss, w_N, data.x_train, data.y_train, gamma_C
    )
    mask = real_mask(spec, hyper)
    return g_CxN if mask is None else g_CxN * mask


def class_record(spec: RunSpec, hyper: Hyper, data: Data, w_N, gamma_C, logits_PxC, val_PxC):
    """Per-class progress at w_t (``class_records``), as the :class:`~dynloss_jax.engine.Record`
    fields, each of shape (C,) (:func:`dynloss_jax.curvature.class_progress_of_logits`):

    * ``class_loss_C``: (1/n_c) Σ_{j: y_j = c} ℓ_j of the loss minimised (Γ(t) included);
    * ``class_static_loss_C``, ``class_val_loss_C``: the same of the static loss (Γ ≡ 1) on the
      training and the validation points; ``class_acc_C``, ``class_val_acc_C``: accuracies;
    * ``class_grad_norm_C``: ‖g_c‖, g_c = ∇_w F^(c) = ∇_w (1/P) Σ_{j: y_j = c} ℓ_j (Σ_c g_c is
      the full-batch gradient).

    ``logits_PxC`` and ``val_PxC`` are the network's outputs at w_t on the two sets (already
    computed by the step and the record)."""
    ones_C = jnp.ones((spec.n_classes,), logits_PxC.dtype)
    loss = objective.run_loss(spec, hyper)
    static = objective.run_static_loss(spec, hyper)
    train = curvature.class_progress_of_logits(loss, logits_PxC, data.y_train, gamma_C)
    train_static = curvature.class_progress_of_logits(static, logits_PxC, data.y_train, ones_C)
    val = curvature.class_progress_of_logits(static, val_PxC, data.y_val, ones_C)
    g_CxN = _class_gradients(spec, hyper, data, w_N, gamma_C)
    return dict(
        class_loss_C=train.loss_C,
        class_static_loss_C=train_static.loss_C,
        class_acc_C=train.accuracy_C,
        class_val_loss_C=val.loss_C,
        class_val_acc_C=val.accuracy_C,
        class_grad_norm_C=jnp.linalg.norm(g_CxN, axis=1),
    )


def measure_classes(spec: RunSpec, hyper: Hyper, data: Data, w_N, step, vectors_KxN, diverged):
    """The class-resolved curvature of the tracked Ritz vectors u_k (rows of ``vectors_KxN``, unit
    norm) at w_t (``class_split``), as :class:`EigRecord` fields:

    * ``class_split_KxC[k, c] = u_kᵀ H^(c) u_k`` with H^(c) the Hessian of class c's part
      F^(c) = (1/P) Σ_{j: y_j = c} ℓ_j of the loss minimised at step t (Γ(t) inside ℓ_j), so
      Σ_c class_split_KxC[k, c] = u_kᵀ H u_k, the Ritz value λ_k
      (:func:`dynloss_jax.curvature.class_curvature`; for DCE and DMSE1, H^(c) = Γ_c H_c);
    * ``class_cos_KxC[k, c] = cos(u_k, g_c)`` and ``class_grad_norm_C = ‖g_c‖``, g_c = ∇F^(c);
    * ``emphasised``: c(t) = argmax_c Γ_c(t), −1 where every Γ_c is equal.

    Exact for any loss that is a mean over samples of a per-sample term (every loss of the paper;
    :func:`dynloss_jax.curvature.mean_over_samples_gap` checks a loss of one's own). In a padded
    program the vectors and gradients live on the run's real parameters, so every number is
    that of the unpadded run. NaN (c = −1) once the run has diverged."""
    gamma_C = objective.gamma_at(spec, step, hyper)
    loss = objective.run_loss(spec, hyper)
    apply = spec.model.apply
    S_KxC = curvature.class_curvature(
        apply, loss, w_N, data.x_train, data.y_train, gamma_C, vectors_KxN
    )
    g_CxN = _class_gradients(spec, hyper, data, w_N, gamma_C)
    cos_KxC = curvature.cosines(vectors_KxN, g_CxN)
    c = curvature.emphasised_class(gamma_C)
    split, cos, norms = nan_if(diverged, (S_KxC, cos_KxC, jnp.linalg.norm(g_CxN, axis=1)))
    return dict(
        class_split_KxC=split,
        class_cos_KxC=cos,
        class_grad_norm_C=norms,
        emphasised=jnp.where(diverged, -1, c).astype(jnp.int32),
    )


def measure_ggn_ntk(spec: RunSpec, hyper: Hyper, data: Data, w_N, step, eig_key, u1_N, diverged):
    """Beside λ of H at w_t (``ggn_ntk``), as :class:`EigRecord` fields:

    * ``ggn_lam_K``: λ1 ≥ λ2 of the Gauss–Newton matrix G = Jᵀ H_f J, J = ∂f/∂w on the training
      points (P·C × N), H_f = ∇²_f F_t the output-space Hessian of the loss minimised at t
      (:func:`dynloss_jax.curvature.ggn_matvec`);
    * ``ntk_lam_K``: λ1 ≥ λ2 of the NTK Θ = J Jᵀ on output space (P·C × P·C, no 1/P;
      :func:`dynloss_jax.curvature.ntk_matvec`), whose nonzero eigenvalues are those of JᵀJ;
    * ``functional_u1``: u1ᵀ (H − G) u1 = Σ_{j,i} (∂F/∂f_ji) u1ᵀ∇²f_ji u1 at the tracked u1
      (:func:`dynloss_jax.curvature.functional_curvature`): what the network's own curvature
      adds to λ1 (λ1(H) − λ1(G) ≤ it, up to the Ritz residuals).

    Each top pair by ``num_matvecs`` Lanczos steps from a random start drawn from
    ``fold_in(eig_key, step)`` (cold: no warm start is kept). In a padded program J is taken on
    the run's real parameters. NaN once the run has diverged."""
    key = jax.random.fold_in(jax.random.wrap_key_data(eig_key), step)
    gamma_C = objective.gamma_at(spec, step, hyper)
    loss = objective.run_loss(spec, hyper)
    apply, x, y = spec.model.apply, data.x_train, data.y_train
    mask = real_mask(spec, hyper)

    def ggn(v):
        return curvature.ggn_matvec(apply, loss, w_N, x, y, gamma_C, v)

    g = lanczos(spec, hyper, ggn, None, jax.random.fold_in(key, 2), spec.num_matvecs)

    def f(w):
        return apply(w, x)

    logits_PxC, vjp = jax.vjp(f, w_N)

    def ntk(u_M):
        (Jtu_N,) = vjp(u_M.reshape(logits_PxC.shape))
        if mask is not None:
            Jtu_N = Jtu_N * mask
        return jax.jvp(f, (w_N,), (Jtu_N,))[1].reshape(-1)

    zero_M = jnp.zeros((logits_PxC.size,), w_N.dtype)
    n = eig.lanczos(ntk, zero_M, jax.random.fold_in(key, 3), num_matvecs=spec.num_matvecs, k=N_TOP)
    fc = curvature.functional_curvature(apply, loss, w_N, x, y, gamma_C, u1_N[None])[0]
    ggn_lam, ntk_lam, fc = nan_if(diverged, (g.top_K, n.top_K, fc))
    return dict(ggn_lam_K=ggn_lam, ntk_lam_K=ntk_lam, functional_u1=fc)
