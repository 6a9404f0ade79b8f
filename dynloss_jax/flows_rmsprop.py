"""RMSProp beside its stable flow and its central flow, for a loss L(w, t) that may depend on
time, in one compiled scan: the preconditioned counterpart of :func:`dynloss_jax.flows.run_flows`.

RMSProp as the project defines it (:mod:`dynloss_jax.optim`, ``optax.rmsprop`` with ε outside the
root, no bias correction), from a state (w_k, ν_k) at time t_k = η·k:

    g_k = ∇L(w_k, t_k),   ν_{k+1} = ρ ν_k + (1 − ρ) g_k²,   w_{k+1} = w_k − η g_k / P_{k+1},
    P = √ν + ε  (diagonal).

Its edge of stability is on the preconditioned Hessian: with P frozen the step is GD on
P^{-1/2} H P^{-1/2}, stable while its top eigenvalue (the *effective* sharpness) is below 2/η.

The flows (``docs/central_flow.md``, section "RMSProp") act on (w, ν), with P = √ν + ε and
r = (1 − ρ)/(ρη):

* **stable flow**:  dw/dt = −P⁻¹ ∇L,   dν/dt = r (∇L² − ν);
* **central flow**: dw/dt = −P⁻¹ [∇L + ½ ∇_w⟨Σ, H⟩],   dν/dt = r (∇L² + diag(HΣH) − ν),

  Σ = U X Uᵀ, U = P^{-1/2} V with V the top-K eigenvectors of P^{-1/2} H P^{-1/2} (so
  UᵀPU = I and UᵀHU = Λ), X ⪰ 0 (K × K). On the edge Hu = (2/η) P u, so the oscillation adds
  diag(HΣH) = (2/η)² diag(PΣP) to the mean squared gradient: it raises ν, hence P, hence lowers
  the effective sharpness — RMSProp's second way of self-stabilising, beside the ∇⟨Σ, H⟩ term
  it shares with GD. X solves the same complementarity problem as for GD
  (:mod:`dynloss_jax.central_flow`), now for the block G = UᵀHU − (2/η) UᵀPU (U held fixed),
  whose change along the flow is dG/dt = d − β(X) with

      d_ij  = ∂_t F_ij − ∇F_ij · P⁻¹∇L − (2/η) Σ_n u_in u_jn P'_n r (∇L_n² − ν_n),
      β(X)_ij = Σ_kl X_kl [½ ∇F_ij · P⁻¹ ∇F_kl + (2/η) r (2/η)² Σ_n u_in u_jn P'_n P_n² u_kn u_ln],

  F = UᵀHU, P' = dP/dν = 1/(2√ν). β is a sum of two Gram operators, so the problem stays a
  convex one. The predicted time average of RMSProp's loss is L + ½⟨X, F⟩, as for GD.

The rate r carries 1/ρ: written with the ν the step uses, RMSProp's recursion is
ν_{k+1} − ν_k = ((1 − ρ)/ρ)(g_k² − ν_{k+1}) — the form alex-damian/central_flows_jax takes for
its flows. The flows' ν(t_k) is the discrete ν_{k+1} (the one step k uses): they start from
ν(0) = ρ ν₀ + (1 − ρ) g₀², which is well defined for the project's ν₀ = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynloss_jax.flows import _rk4, hvp, top_eigs

NU_TERMS = ("hessian", "reference", "none")
"""What the central flow adds to dν/dt for the oscillation: ``"hessian"`` diag(HΣH) (on the edge,
(2/η)² diag(PΣP)), the derived term; ``"reference"`` diag(Σ), our reading of
central_flows_jax's ``ds_dt_X`` (½ ∂²/∂g² of the ν update along u_i, u_j); ``"none"`` nothing."""


def preconditioner(nu_N, eps):
    """P = √ν + ε (ν clipped at 0)."""
    return jnp.sqrt(jnp.maximum(nu_N, 0.0)) + eps


def top_eigs_preconditioned(loss_fn, w_N, t, p_N, V0_NxK, iterations: int):
    """Top-K eigenpairs of P^{-1/2} H(w, t) P^{-1/2} (descending): :func:`flows.top_eigs` on the
    rescaled loss z ↦ L(z/√P, t) at z = √P·w, whose Hessian that is. Returns (λ_K, V_NxK
    orthonormal, residual_K); U = V/√P are the directions in w."""
    s = jnp.sqrt(p_N)
    return top_eigs(lambda z, tt: loss_fn(z / s, tt), w_N * s, t, V0_NxK, iterations)


class RMSCritical(NamedTuple):
    lam_K: jax.Array  # top-K effective eigenvalues (of P^{-1/2} H P^{-1/2}) at the step's start
    U_NxK: jax.Array  # P^{-1/2} V: the directions in w
    mask_K: jax.Array
    X_KxK: jax.Array  # covariance of the oscillation in the basis U (Σ = U X Uᵀ)
    residual: jax.Array
    F_KxK: jax.Array  # UᵀHU
    G_KxK: jax.Array  # UᵀHU − (2/η) UᵀPU: zero on a held block


def central_velocity_rmsprop(
    loss_fn: Callable,
    w_N,
    nu_N,
    t,
    U_NxK,
    lam_K,
    *,
    eta: float,
    rho: float,
    eps: float,
    edge_tol: float,
    kappa: float,
    solve: Callable,
    time_term: bool = True,
    nu_term: str = "hessian",
):
    """(dw/dt, dν/dt) of RMSProp's central flow at (w, ν, t), the directions U (in w, held from
    the step's start) and their effective eigenvalues λ given; also the block. A direction takes
    part when λ ≥ (1 − ``edge_tol``)·2/η; κ relaxes a block that drifted off the edge
    (α gains κ·(−G)); ``time_term=False`` drops ∂_tF; ``nu_term`` as in :data:`NU_TERMS`."""
    if nu_term not in NU_TERMS:
        raise ValueError(f"nu_term must be one of {NU_TERMS}, got {nu_term!r}")
    k = U_NxK.shape[1]
    dtype = w_N.dtype
    mask = lam_K >= (1.0 - edge_tol) * 2.0 / eta
    i, j = jnp.triu_indices(k)

    def block(w, s):  # F = UᵀH(w, s)U with U fixed
        HU = jax.vmap(lambda v: hvp(loss_fn, w, s, v), in_axes=1, out_axes=1)(U_NxK)
        F = U_NxK.T @ HU
        return 0.5 * (F + F.T)

    g = jax.grad(loss_fn)(w_N, t)
    F, dF_dt = jax.jvp(lambda s: block(w_N, s), (t,), (jnp.ones_like(t),))
    dF_dw_MxN = jax.jacrev(lambda w: block(w, t)[i, j])(w_N)
    p = preconditioner(nu_N, eps)
    p_inv = 1.0 / p
    root = jnp.sqrt(jnp.maximum(nu_N, jnp.finfo(dtype).tiny))
    dp_dnu = 0.5 / root
    rate = (1.0 - rho) / (rho * eta)
    q_MxN = U_NxK.T[i] * U_NxK.T[j]  # u_i ⊙ u_j
    if nu_term == "hessian":
        osc_MxN = (2.0 / eta) ** 2 * p**2 * q_MxN  # (Hu_i) ⊙ (Hu_j) on the edge
    elif nu_term == "reference":
        osc_MxN = q_MxN
    else:
        osc_MxN = jnp.zeros_like(q_MxN)
    dnu_stable = rate * (g**2 - nu_N)
    dG_stable_M = (
        (dF_dt[i, j] if time_term else 0.0)
        - dF_dw_MxN @ (p_inv * g)
        - (2.0 / eta) * q_MxN @ (dp_dnu * dnu_stable)
    )
    # dG_M = dG_stable_M − K_MxM @ wX_M with wX = (2 − δ_ij) X_ij over the pairs i ≤ j
    K_MxM = 0.5 * dF_dw_MxN @ (p_inv[:, None] * dF_dw_MxN.T) + (2.0 / eta) * rate * q_MxN @ (
        dp_dnu[:, None] * osc_MxN.T
    )
    scale = jnp.where(i == j, 1.0, jnp.sqrt(2.0)).astype(dtype)
    beta_MxM = scale[:, None] * K_MxM * scale[None, :]  # svec coordinates
    beta_MxM = 0.5 * (beta_MxM + beta_MxM.T)
    drive = jnp.zeros((k, k), dtype).at[i, j].set(dG_stable_M).at[j, i].set(dG_stable_M)
    UtPU = U_NxK.T @ (p[:, None] * U_NxK)
    G = F - 2.0 / eta * 0.5 * (UtPU + UtPU.T)
    alpha = -drive - kappa * G
    X, residual = solve(alpha, beta_MxM, mask)
    wX_M = jnp.where(i == j, 1.0, 2.0).astype(dtype) * X[i, j]
    dw = -p_inv * (g + 0.5 * wX_M @ dF_dw_MxN)
    dnu = rate * (g**2 + wX_M @ osc_MxN - nu_N)
    return (dw, dnu), RMSCritical(lam_K, U_NxK, mask, X, residual, F, G)


class RMSFlowState(NamedTuple):
    w_rms: jax.Array
    nu_rms: jax.Array  # the discrete ν_k (before step k's update)
    w_rms_prev: jax.Array
    w_stable: jax.Array
    nu_stable: jax.Array
    w_central: jax.Array
    nu_central: jax.Array
    V_rms: jax.Array  # eigenvector iterations, in the rescaled coordinates √P·w
    V_stable: jax.Array
    V_central: jax.Array


class RMSFlowRecord(NamedTuple):
    """Per RMSProp step k (t = η·k); eigenvalues are effective ones, of P^{-1/2} H P^{-1/2}."""

    loss_rms: jax.Array  # L(w_k, t_k)
    loss_mid: jax.Array  # L(m_k, t_k), m_k = (w_{k−1} + 2w_k + w_{k+1})/4
    loss_stable: jax.Array
    loss_central: jax.Array
    predicted: jax.Array  # L + ½⟨X, F⟩ at the central flow's point
    lam_rms: jax.Array  # (K,) at w_k with the P of step k (ν_{k+1})
    lam_stable: jax.Array
    lam_central: jax.Array
    active: jax.Array
    trace_X: jax.Array
    residual: jax.Array
    root_nu_rms: jax.Array  # mean over coordinates of √ν (the ν step k uses)
    root_nu_stable: jax.Array
    root_nu_central: jax.Array
    dist_mid_central: jax.Array
    dist_rms_central: jax.Array
    dist_stable_central: jax.Array
    stability: jax.Array  # dt·λ1 of the stable flow's step
    above: jax.Array  # how many of RMSProp's top-K effective eigenvalues are above c/η


def run_rmsprop_flows(
    loss_fn: Callable,
    w0_N,
    nu0_N,
    V0_NxK,
    *,
    eta: float,
    rho: float,
    eps: float,
    n_steps: int,
    substeps: int = 4,
    max_substeps: int = 64,
    eig_iterations: int = 8,
    threshold: float = 1.5,
    edge_tol: float = 1e-3,
    kappa: float = 0.0,
    solve: Callable,
    time_term: bool = True,
    nu_term: str = "hessian",
    state: RMSFlowState | None = None,
    first_step=0,
):
    """RMSProp (decay ``rho``, ``eps`` outside the root, from (w₀, ν₀)), its midpoints, its
    stable flow and its central flow for ``n_steps`` steps; returns the final
    :class:`RMSFlowState` and the :class:`RMSFlowRecord` of every step. The flows start from
    (w₀, ρν₀ + (1 − ρ)∇L(w₀, 0)²), the preconditioner of RMSProp's first step. The central flow
    takes ``substeps`` RK4 steps per RMSProp step, the stable flow max(substeps, ⌈η·λ1⌉) (at most
    ``max_substeps``); other arguments as in :func:`dynloss_jax.flows.run_flows`. Pure: jit and
    vmap it from outside. ``rho = 1`` freezes ν (preconditioned GD)."""
    dt = eta / substeps
    dtype = w0_N.dtype

    def eigs(w, nu, t, V):
        return top_eigs_preconditioned(loss_fn, w, t, preconditioner(nu, eps), V, eig_iterations)

    def central(w, nu, t, U, lam):
        return central_velocity_rmsprop(
            loss_fn,
            w,
            nu,
            t,
            U,
            lam,
            eta=eta,
            rho=rho,
            eps=eps,
            edge_tol=edge_tol,
            kappa=kappa,
            solve=solve,
            time_term=time_term,
            nu_term=nu_term,
        )

    rate = (1.0 - rho) / (rho * eta)

    def stable_f(y, s):
        w, nu = y
        g = jax.grad(loss_fn)(w, s)
        return (-g / preconditioner(nu, eps), rate * (g**2 - nu))

    def rk4(f, y, s, h):
        flat = lambda y: jnp.concatenate(y)  # noqa: E731
        n = y[0].shape[0]

        def ff(z, s):
            return flat(f((z[:n], z[n:]), s))

        z = _rk4(ff, flat(y), s, h)
        return z[:n], z[n:]

    def step(st: RMSFlowState, k):
        t = eta * k.astype(dtype)
        # RMSProp
        loss_r, g = jax.value_and_grad(loss_fn)(st.w_rms, t)
        nu_next = rho * st.nu_rms + (1.0 - rho) * g**2
        p_r = preconditioner(nu_next, eps)
        w_next = st.w_rms - eta * g / p_r
        mid = 0.25 * (st.w_rms_prev + 2.0 * st.w_rms + w_next)
        lam_r, V_r, _ = eigs(st.w_rms, nu_next, t, st.V_rms)
        # stable flow
        lam_s, V_s, _ = eigs(st.w_stable, st.nu_stable, t, st.V_stable)
        n_stable = jnp.clip(jnp.ceil(eta * lam_s[0]), substeps, max_substeps).astype(jnp.int32)
        dt_s = eta / n_stable.astype(dtype)

        def stable_body(c):
            j, y = c
            return j + 1, rk4(stable_f, y, t + j.astype(dtype) * dt_s, dt_s)

        _, (w_s, nu_s) = jax.lax.while_loop(
            lambda c: c[0] < n_stable,
            stable_body,
            (jnp.zeros((), jnp.int32), (st.w_stable, st.nu_stable)),
        )
        # central flow: directions (and which take part) from the step's start
        lam_c, V_c, _ = eigs(st.w_central, st.nu_central, t, st.V_central)
        U_c = V_c / jnp.sqrt(preconditioner(st.nu_central, eps))[:, None]
        _, crit = central(st.w_central, st.nu_central, t, U_c, lam_c)

        def central_f(y, s):
            return central(y[0], y[1], s, U_c, lam_c)[0]

        w_c, nu_c = jax.lax.fori_loop(
            0,
            substeps,
            lambda j, y: rk4(central_f, y, t + j * dt, dt),
            (st.w_central, st.nu_central),
        )
        loss_c = loss_fn(st.w_central, t)
        record = RMSFlowRecord(
            loss_rms=loss_r,
            loss_mid=loss_fn(mid, t),
            loss_stable=loss_fn(st.w_stable, t),
            loss_central=loss_c,
            predicted=loss_c + 0.5 * jnp.sum(crit.X_KxK * crit.F_KxK),
            lam_rms=lam_r,
            lam_stable=lam_s,
            lam_central=lam_c,
            active=crit.mask_K.sum(),
            trace_X=jnp.trace(crit.X_KxK),
            residual=crit.residual,
            root_nu_rms=jnp.sqrt(nu_next).mean(),
            root_nu_stable=jnp.sqrt(jnp.maximum(st.nu_stable, 0.0)).mean(),
            root_nu_central=jnp.sqrt(jnp.maximum(st.nu_central, 0.0)).mean(),
            dist_mid_central=jnp.linalg.norm(mid - st.w_central),
            dist_rms_central=jnp.linalg.norm(st.w_rms - st.w_central),
            dist_stable_central=jnp.linalg.norm(st.w_stable - st.w_central),
            stability=dt_s * lam_s[0],
            above=(lam_r >= threshold / eta).sum(),
        )
        new = RMSFlowState(w_next, nu_next, st.w_rms, w_s, nu_s, w_c, nu_c, V_r, V_s, V_c)
        return new, record

    if state is None:
        g0 = jax.grad(loss_fn)(w0_N, jnp.zeros((), dtype))
        nu_flow = rho * nu0_N + (1.0 - rho) * g0**2
        state = RMSFlowState(
            w0_N, nu0_N, w0_N, w0_N, nu_flow, w0_N, nu_flow, V0_NxK, V0_NxK, V0_NxK
        )
    return jax.lax.scan(step, state, first_step + jnp.arange(n_steps))
