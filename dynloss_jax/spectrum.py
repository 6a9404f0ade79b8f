"""The whole Hessian spectrum from Hessian-vector products: density, trace, per-layer λ1, λ_min.

For a loss F of parameters w (any pytree; N entries once flattened) and H = ∇²F(w), with
eigenpairs (λ_i, q_i):

* :func:`spectral_density` — stochastic Lanczos quadrature (SLQ). The spectral density
  φ(t) = (1/N) Σ_i δ(t − λ_i) is the expectation, over unit probes u (Rademacher/√N or uniform on
  the sphere), of the measure μ_u = Σ_i (q_iᵀu)² δ(t − λ_i). Each μ_u is replaced by its m-point
  Gauss rule from m Lanczos steps started at u: nodes θ_k = eigenvalues of the m × m tridiagonal
  T, weights τ_k = (e_1ᵀ s_k)², s_k the unit eigenvectors of T. The rule integrates polynomials
  of degree ≤ 2m − 1 exactly, so per probe Σ_k τ_k θ_k = uᵀHu and Σ_k τ_k θ_k² = ‖Hu‖² (m ≥ 2):
  over probes the first two moments average to tr(H)/N and tr(H²)/N.
* :func:`density_on_grid` — that density broadened by a Gaussian of width σ.
* :func:`hessian_trace` — tr H by Hutchinson or Hutch++ (Meyer et al. 2021), with its standard
  error.
* :func:`layer_sharpness` — λ1 of each diagonal block H_bb (one block per leaf of the pytree).
* :func:`smallest_eigenvalue` — λ_min with its residual ‖Hu − θu‖, labelled converged or not.

Lanczos here (:func:`lanczos_quadrature`) is the three-term recurrence with full
reorthogonalisation; when the Krylov space closes (β_j ≤ √ε·max‖Hv‖: m > N, a small block, a
probe inside an invariant subspace) the recurrence stops, later steps are masked out of T, and
their nodes get weight exactly 0, so any m gives finite nodes and weights that sum to 1.

Every function is pure and traceable, takes the key as ``key`` and is vmappable over parameters
and keys; the caller jits. Accuracy is pinned by ``tests/test_spectrum.py`` against dense
Hessians and quadratics with a prescribed spectrum. Cost and accuracy at width 100 (DCE on the
spiral, N = 603; ``python -m benchmarks.spectrum_cost``, ``docs/results/benchmarks/
spectrum_cost.json``, 2 loaded CPU cores): at equal products Hutch++ has ×8–15 smaller RMS trace
error than Hutchinson (30 products: 2.3 % vs 18 %; both standard errors calibrated), because λ1
carries most of ‖H‖²_F; ``spectral_density`` with its defaults (4 probes × 32 steps, 128
products) ≈ 41 ms but a noisy density (first moment −40 % off tr(H)/N at 4 probes: each probe's
quadrature is exact to 3e-14, the spread is the probes'); ``smallest_eigenvalue`` with 64
products ≈ 48 ms, relative error 1e-14; ``layer_sharpness`` (16 products per block) ≈ 23 ms,
every block's λ1 to 10 digits.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dynloss_jax import eig

PROBES = ("rademacher", "normal")
TRACE_METHODS = ("hutchinson", "hutch++")


class SpectralDensity(NamedTuple):
    """Gauss quadrature rules of the spectral measure, one per probe."""

    nodes: jax.Array  # (num_probes, m) Ritz values, ascending; masked ones repeat the smallest
    weights: jax.Array  # (num_probes, m) ≥ 0, each row sums to 1; exactly 0 at masked nodes


class Eigenvalue(NamedTuple):
    """One Ritz value θ with its residual r = ‖Hu − θu‖: some eigenvalue lies in [θ − r, θ + r]."""

    value: jax.Array
    residual: jax.Array
    converged: jax.Array  # r ≤ tol·|θ|


def _flat_operator(loss_fn, params):
    """(w_N, v_N ↦ H v_N): the gradient is linearised once, each product replays its tangent."""
    w_N, unravel = ravel_pytree(params)
    _, matvec = jax.linearize(jax.grad(lambda w: loss_fn(unravel(w))), w_N)
    return w_N, matvec


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, jnp.int32).astype(dtype)


def _positive(**counts):
    for name, (value, least) in counts.items():
        if int(value) < least:
            raise ValueError(f"{name} must be >= {least}, got {value!r}")


def lanczos_quadrature(matvec, v0_N, *, num_matvecs: int):
    """The m-point Gauss rule ``(nodes_M, weights_M)`` of the measure Σ_i (q_iᵀu)² δ(t − λ_i),
    u = v0/‖v0‖, from m = ``num_matvecs`` products of the symmetric operator ``matvec``.

    Lanczos: v_1 = u, w_j = H v_j, α_j = v_jᵀw_j, r_j = (I − VᵀV)² w_j (full
    reorthogonalisation, twice), β_j = ‖r_j‖, v_{j+1} = r_j/β_j; T = tridiag(β, α, β). The
    recurrence stops at the first β_j ≤ √ε·max_i‖w_i‖ (or after N vectors): the rows of later
    steps are decoupled from T and parked below its spectrum, their nodes are set to the smallest
    valid node and their weights to 0. Nodes ascend; weights are (e_1ᵀs_k)², renormalised to sum 1.
    Ritz values interlace: θ_1 ≥ λ_min and θ_m ≤ λ_max.
    """
    _positive(num_matvecs=(num_matvecs, 1))
    m, n, dtype = num_matvecs, v0_N.shape[0], v0_N.dtype
    tol = jnp.sqrt(jnp.finfo(dtype).eps)

    def step(carry, j):
        V, v, alive, scale = carry
        V = V.at[j].set(v)
        w = matvec(v)
        alpha = v @ w
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w = eig._orthogonalise(w, V)
        beta = jnp.linalg.norm(w)
        go_on = alive & (beta > tol * scale) & (j + 1 < n)
        v_next = jnp.where(go_on, w / jnp.where(go_on, beta, 1.0), 0.0)
        out = (jnp.where(alive, alpha, 0.0), jnp.where(go_on, beta, 0.0), alive)
        return (V, v_next, go_on, scale), out

    carry = (jnp.zeros((m, n), dtype), eig._unit(v0_N), jnp.array(True), jnp.zeros((), dtype))
    _, (alpha_M, beta_M, valid_M) = jax.lax.scan(step, carry, jnp.arange(m))
    T = jnp.diag(alpha_M) + jnp.diag(beta_M[:-1], 1) + jnp.diag(beta_M[:-1], -1)
    # Valid steps are a prefix; park the rest below the spectrum so they sort first.
    bound = 4.0 * jnp.max(jnp.abs(T)) + 1.0  # beyond Gershgorin
    theta_M, S_MxM = jnp.linalg.eigh(T - jnp.diag(jnp.where(valid_M, 0.0, bound)))
    first = m - jnp.sum(valid_M)
    kept_M = jnp.arange(m) >= first
    weights_M = jnp.where(kept_M, S_MxM[0] ** 2, 0.0)
    nodes_M = jnp.where(kept_M, theta_M, theta_M[first])
    return nodes_M, weights_M / jnp.sum(weights_M)


def spectral_density(
    loss_fn, params, *, key, num_matvecs: int = 32, num_probes: int = 4, probe: str = "rademacher"
) -> SpectralDensity:
    """SLQ estimate of the Hessian's spectral density at ``params``: ``num_probes`` Gauss rules of
    ``num_matvecs`` nodes each (shapes ``(num_probes, num_matvecs)``), from
    ``num_probes · num_matvecs`` HVPs (the probes run as one vmapped batch).

    ``probe``: ``"rademacher"`` (entries ±1, then scaled to unit norm) or ``"normal"`` (Gaussian,
    normalised); both give unbiased moments E[Σ_k τ_k θ_k^p] = tr(H^p)/N. With ``num_matvecs ≥ N``
    the nodes are the distinct eigenvalues of H in the probe's Krylov space and the weights the
    squared projections (q_iᵀu)².

    Example::

        rho = spectral_density(lambda p: loss(model.apply(p, x), y), params, key=key)
        density_G = density_on_grid(rho.nodes, rho.weights, grid_G, sigma=0.05)
    """
    w_N, matvec = _flat_operator(loss_fn, params)
    return density_of(matvec, w_N, key, num_matvecs=num_matvecs, num_probes=num_probes, probe=probe)


def density_of(
    matvec, w_N, key, *, num_matvecs: int, num_probes: int, probe: str = "rademacher", mask_N=None
) -> SpectralDensity:
    """:func:`spectral_density` of the flat operator ``matvec`` (w_N gives the size and dtype).

    ``mask_N`` (0/1) restricts the probes to a subspace, e.g. the real parameters of a padded
    network; ``matvec`` must then keep that subspace invariant (as v ↦ M H M v does), and the
    moments estimate tr(H_sub^p)/N_sub.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    _positive(num_matvecs=(num_matvecs, 1), num_probes=(num_probes, 1))
    shape = (num_probes, w_N.shape[0])
    if probe == "rademacher":
        z_SxN = _rademacher(key, shape, w_N.dtype)
    else:
        z_SxN = jax.random.normal(key, shape, w_N.dtype)
    if mask_N is not None:
        z_SxN = z_SxN * mask_N
    # probes one after another: vmapped quadratures of ≥ 24 steps deadlocked XLA:CPU on two
    # host devices (see dynloss_jax.sweep.run_sweep); a density is rare, the loop costs little
    nodes, weights = jax.lax.map(
        lambda z: lanczos_quadrature(matvec, z, num_matvecs=num_matvecs), z_SxN
    )
    return SpectralDensity(nodes, weights)


def quadrature_moment(nodes, weights, order: int):
    """Per-probe moment Σ_k τ_k θ_k^p, shape ``nodes.shape[:-1]``; its mean over probes
    estimates tr(H^p)/N (exactly the probe's uᵀH^p u for p ≤ 2m − 1)."""
    return jnp.sum(weights * nodes**order, axis=-1)


def density_on_grid(nodes, weights, grid_G, sigma):
    """ρ(t_g) = mean over probes of Σ_k τ_k 𝒩(t_g; θ_k, σ²), shape ``(G,)``.

    ``nodes``, ``weights``: ``(..., m)`` (any leading probe axes, averaged). Each probe's
    weights sum to 1, so ∫ρ dt = 1 (up to the mass outside the grid).
    """
    m = nodes.shape[-1]
    nodes_QxM, weights_QxM = jnp.reshape(nodes, (-1, m)), jnp.reshape(weights, (-1, m))
    z = (grid_G[:, None, None] - nodes_QxM[None]) / sigma
    phi = jnp.exp(-0.5 * z**2) / (jnp.sqrt(2.0 * jnp.pi) * sigma)
    return jnp.mean(jnp.sum(phi * weights_QxM[None], axis=-1), axis=-1)


def hessian_trace(loss_fn, params, *, key, num_samples: int = 30, method: str = "hutch++"):
    """``(estimate, standard_error)`` of tr H from ``num_samples`` HVPs, Rademacher probes z.

    Default Hutch++: on the width-100 network it had ×8–15 smaller RMS error than Hutchinson at
    equal products (``benchmarks/spectrum_cost.py``); both standard errors were calibrated.

    ``"hutchinson"``: t_i = z_iᵀHz_i, estimate = mean t_i (unbiased, Var t = 2(‖H‖_F² − Σ H_ii²)),
    standard error = std(t, ddof=1)/√n.

    ``"hutch++"``: s = n // 3 sketch probes S, Q = orth(HS) (s HVPs); exact part tr(QᵀHQ)
    (s HVPs); the rest by Hutchinson on the deflated (I − QQᵀ)H(I − QQᵀ) with r = n − 2s probes.
    Estimate = tr(QᵀHQ) + mean_i g_iᵀ(I − QQᵀ)H(I − QQᵀ)g_i; the standard error is that of the
    r deflated samples (given Q). It wins when a few eigenvalues carry most of ‖H‖_F.
    """
    w_N, matvec = _flat_operator(loss_fn, params)
    return trace_of(matvec, w_N, key, num_samples=num_samples, method=method)


def trace_of(matvec, w_N, key, *, num_samples: int, method: str = "hutch++", mask_N=None):
    """:func:`hessian_trace` of the flat operator ``matvec``; ``mask_N`` (0/1) restricts the
    probes (and the Hutch++ sketch) to a subspace that ``matvec`` keeps invariant, giving the
    trace of H on it."""
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    _positive(num_samples=(num_samples, 2 if method == "hutchinson" else 4))
    n, dtype = w_N.shape[0], w_N.dtype
    batched = jax.vmap(matvec)

    def probes(k, count):
        z = _rademacher(k, (count, n), dtype)
        return z if mask_N is None else z * mask_N

    if method == "hutchinson":
        exact, r, probe_key = jnp.zeros((), dtype), num_samples, key
    else:
        s = num_samples // 3
        r = num_samples - 2 * s
        sketch_key, probe_key = jax.random.split(key)
        Q_NxS, _ = jnp.linalg.qr(batched(probes(sketch_key, s)).T)
        exact = jnp.sum(Q_NxS.T * batched(Q_NxS.T))
    z_RxN = probes(probe_key, r)
    if method == "hutch++":
        z_RxN = z_RxN - (z_RxN @ Q_NxS) @ Q_NxS.T
    t_R = jnp.sum(z_RxN * batched(z_RxN), axis=1)
    return exact + jnp.mean(t_R), jnp.std(t_R, ddof=1) / np.sqrt(r)


def block_names(params) -> list[str]:
    """Names of the leaves of ``params`` in flattening order, e.g. ``"Dense_0/kernel"`` (a
    leading ``params`` collection is dropped; a bare array is ``"w"``)."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if len(parts) > 1 and parts[0] == "params":
            parts = parts[1:]
        names.append("/".join(parts) or "w")
    return names


def layer_sharpness(loss_fn, params, *, key, num_matvecs: int = 16) -> dict[str, jax.Array]:
    """λ1(H_bb), the largest eigenvalue of the diagonal block of each leaf b of ``params``:
    ``{name: λ1}`` with names from :func:`block_names` (for the MLP ``Dense_0/bias``,
    ``Dense_0/kernel``, ``Dense_1/bias``, ``Dense_1/kernel``).

    Lanczos (:func:`lanczos_quadrature`) on the masked operator v ↦ M_b H M_b v (M_b the 0/1
    mask of the block's entries) from a masked Gaussian start: the Krylov space stays inside the
    block, where the operator is H_bb, and closes after N_b steps for a block smaller than m, so
    no spurious 0 from the masked-out null space enters. λ1 is the largest Ritz value (a lower
    bound, exact once m ≥ N_b). All blocks run as one vmapped batch: ``num_matvecs`` HVPs each.
    """
    _positive(num_matvecs=(num_matvecs, 1))
    if isinstance(params, (jax.Array, np.ndarray)):
        raise ValueError(
            "layer_sharpness needs the parameters as a pytree of blocks (e.g. flax params); "
            "a single array would be one block, λ1 of the whole Hessian"
        )
    w_N, matvec = _flat_operator(loss_fn, params)
    masks_LxN = jnp.asarray(block_masks([np.shape(leaf) for leaf in jax.tree.leaves(params)]))
    lam_L = layer_sharpness_of(matvec, masks_LxN.astype(w_N.dtype), key, num_matvecs=num_matvecs)
    return dict(zip(block_names(params), lam_L, strict=True))


def block_masks(leaf_shapes) -> np.ndarray:
    """0/1 masks ``(L, N)`` of the entries of each leaf in the flat vector (leaves in order)."""
    sizes = [int(np.prod(shape)) for shape in leaf_shapes]
    ends = np.cumsum(sizes)
    masks_LxN = np.zeros((len(sizes), int(ends[-1])))
    for i, (start, end) in enumerate(zip(ends - sizes, ends, strict=True)):
        masks_LxN[i, start:end] = 1.0
    return masks_LxN


def layer_sharpness_of(matvec, masks_LxN, key, *, num_matvecs: int):
    """λ1 of each block M_b H M_b of the flat operator ``matvec``, shape ``(L,)`` (see
    :func:`layer_sharpness`); ``masks_LxN`` are 0/1 rows in the operator's dtype."""
    _positive(num_matvecs=(num_matvecs, 1))
    v0_LxN = masks_LxN * jax.random.normal(key, masks_LxN.shape, masks_LxN.dtype)

    def top(mask_N, v0_N):
        nodes, _ = lanczos_quadrature(
            lambda v: mask_N * matvec(mask_N * v), v0_N, num_matvecs=num_matvecs
        )
        return nodes[-1]

    return jax.vmap(top)(masks_LxN, v0_LxN)


def smallest_eigenvalue(
    loss_fn, params, *, key, num_matvecs: int = 64, tol: float = 1e-8
) -> Eigenvalue:
    """λ_min of H: the smallest Ritz value θ of :func:`dynloss_jax.eig.lanczos` with
    ``num_matvecs`` HVPs from a random start, its residual r = ‖Hu − θu‖ (from the stored
    products, so exact) and ``converged = r ≤ tol·|θ|``.

    θ ≥ λ_min always (interlacing) and some eigenvalue lies within r of θ; when converged that
    one is λ_min unless the start missed its eigenvector (probability 0 for a random start), so
    |θ − λ_min| ≤ tol·|θ|. Otherwise θ is an upper bound — label it so. The error is often far
    below r (≈ r²/gap for an isolated λ_min), so r is a conservative label.

    No spectral shift helps: the Krylov space of σI − H is that of H, and the Ritz values of
    σI − H are σ − θ, so a shift by a λ1 estimate changes nothing but rounding. What λ_min
    needs is more steps, because it sits at the edge of the dense bulk (at width 100, 64 steps
    gave it to 1e-14: ``benchmarks/spectrum_cost.py``).
    """
    _positive(num_matvecs=(num_matvecs, 1))
    w_N, matvec = _flat_operator(loss_fn, params)
    res = eig.lanczos(matvec, jnp.zeros_like(w_N), key, num_matvecs=num_matvecs, k=1)
    return Eigenvalue(res.lam_min, res.residual_min, res.residual_min <= tol * jnp.abs(res.lam_min))
