"""Gradient descent beside its flows: the stable flow and the central flow, for a loss L(w, t)
that may depend on time (a dynamical loss), in one compiled scan.

Time is t = η·k for GD step k. The processes, all started from the same w₀:

* **GD**: w_{k+1} = w_k − η ∇L(w_k, t_k), and its second-order midpoints
  m_k = (w_{k−1} + 2w_k + w_{k+1})/4, which cancel a period-2 oscillation to second order.
* **Stable flow**: gradient flow dw/dt = −∇L(w, t), which GD follows while λ1 < 2/η.
* **Central flow** (Cohen, Damian et al., ICLR 2025): gradient flow with the oscillation's
  mean effect added,

      dw/dt = −∇L(w, t) − ½ ∇_w ⟨Σ, H(w, t)⟩,   Σ = U X Uᵀ,  X ⪰ 0 (K × K),

  where U holds the top-K eigenvectors of H. With F = UᵀHU (U held fixed under the gradient),
  dF/dt = ∂_tF + Σ_ij ∇F_ij · dw/dt = d − β(X), with the drive d_ij = ∂_tF_ij − ∇F_ij·∇L and
  β(X)_ij = ½ Σ_kl (∇F_ij·∇F_kl) X_kl. X solves the complementarity problem that keeps the
  critical eigenvalues at 2/η: X ⪰ 0, Y = β(X) − d + κ(2/η·I − F) ⪰ 0, ⟨X, Y⟩ = 0 (κ pulls a
  block that drifted off 2/η back; κ = 0 is the exact flow). The loss it predicts for GD's time
  average is L(w, t) + ½⟨X, F⟩. What time dependence adds is the term ∂_tF in the drive: a
  landscape that sharpens on its own (∂_tλ > 0) needs a larger oscillation to hold λ at 2/η;
  one that flattens releases it. ``docs/central_flow.md`` derives this.

Directions enter through a mask: of the top K eigenvalues those within ``edge_tol`` of 2/η
take part (no recompilation when the count changes); κ > 0 relaxes a block that drifted off
2/η back to it at rate κ. The flows are integrated with the classical 4th-order Runge–Kutta
scheme: the central flow with ``substeps`` steps per GD step (dt = η/substeps; its λ is held at
2/η, so dt·λ1 = 2/substeps), the stable flow with its step limited by its own sharpness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

RK4_STABLE = 2.785  # |1 + z + z²/2 + z³/6 + z⁴/24| ≤ 1 on the negative axis for z ≥ −2.785


class Critical(NamedTuple):
    """The critical block at (w, t): its eigen-data and the central flow's oscillation."""

    lam_K: jax.Array  # top-K eigenvalues of H(w, t)
    U_NxK: jax.Array  # their eigenvectors
    mask_K: jax.Array  # which take part (λ ≥ c/η)
    X_KxK: jax.Array  # the oscillation's covariance in the basis U
    residual: jax.Array  # of the complementarity problem
    F_KxK: jax.Array  # UᵀHU


def hvp(loss_fn, w_N, t, v_N):
    """H(w, t)·v by forward-over-reverse differentiation."""
    return jax.jvp(lambda w: jax.grad(loss_fn)(w, t), (w_N,), (v_N,))[1]


def top_eigs(loss_fn, w_N, t, U0_NxK, iterations: int):
    """The top-K eigenpairs of H(w, t) (descending), by subspace iteration warm-started from
    ``U0`` followed by Rayleigh–Ritz; ``iterations = 0`` gives the exact eigenpairs of the dense
    Hessian (small N only). Returns (λ_K, U_NxK, residual_K = ‖Hu − λu‖)."""
    k = U0_NxK.shape[1]
    matmat = jax.vmap(lambda v: hvp(loss_fn, w_N, t, v), in_axes=1, out_axes=1)
    if iterations == 0:
        lam, V = jnp.linalg.eigh(jax.hessian(loss_fn)(w_N, t))
        lam, U = lam[::-1][:k], V[:, ::-1][:, :k]
    else:
        # shift by the spectrum's scale so that negative eigenvalues do not dominate the power
        # iteration; the Ritz step on the last block gives the eigenpairs.
        U = jnp.linalg.qr(U0_NxK)[0]

        def body(U, _):
            HU = matmat(U)
            shift = jnp.abs(jnp.sum(U * HU, 0)).max()
            return jnp.linalg.qr(HU + shift * U)[0], None

        U = jax.lax.scan(body, U, None, length=iterations)[0]
        T = U.T @ matmat(U)
        lam, S = jnp.linalg.eigh(0.5 * (T + T.T))
        lam, U = lam[::-1], U @ S[:, ::-1]
    residual = jnp.linalg.norm(matmat(U) - U * lam, axis=0)
    return lam, U, residual


def _svec_pairs(k: int):
    return jnp.triu_indices(k)


def central_velocity(
    loss_fn: Callable,
    w_N,
    t,
    U_NxK,
    lam_K,
    *,
    eta: float,
    edge_tol: float,
    kappa: float,
    solve: Callable,
    time_term: bool = True,
    activation: str = "step",
):
    """dw/dt of the central flow at (w, t) given the top eigenpairs; also the block.
    ``activation="step"``: a direction takes part when its eigenvalue in ``lam_K`` (those of the
    GD step's start, so the set is held over the step's substeps) is at least
    (1 − ``edge_tol``)·2/η; the others move freely until the next step. ``"barrier"``: all K
    directions take part and the block is kept below the edge as a matrix,
    dF/dt ⪯ κ(2/η·I − F) — a direction below the edge enters the moment it would reach it
    within 1/κ (pass κ = 1/dt for "within one substep"), and a pair of close eigenvalues cannot
    push the block's top eigenvalue past 2/η through their coupling. ``time_term=False`` drops
    ∂_tF from the drive (the static central flow applied to the loss frozen at each instant)."""
    if activation not in ("step", "barrier"):
        raise ValueError(f"activation must be 'step' or 'barrier', got {activation!r}")
    k = U_NxK.shape[1]

    def block(w, s):  # F = UᵀH(w, s)U with U fixed
        HU = jax.vmap(lambda v: hvp(loss_fn, w, s, v), in_axes=1, out_axes=1)(U_NxK)
        F = U_NxK.T @ HU
        return 0.5 * (F + F.T)

    i, j = _svec_pairs(k)
    g = jax.grad(loss_fn)(w_N, t)
    F, dF_dt = jax.jvp(lambda s: block(w_N, s), (t,), (jnp.ones_like(t),))
    if activation == "step":
        mask = lam_K >= (1.0 - edge_tol) * 2.0 / eta
    else:
        mask = jnp.ones((k,), bool)
    dF_dw_MxN = jax.jacrev(lambda w: block(w, t)[i, j])(w_N)  # the pairs i ≤ j only
    drive_M = (dF_dt[i, j] if time_term else 0.0) - dF_dw_MxN @ g
    drive = jnp.zeros((k, k), w_N.dtype).at[i, j].set(drive_M).at[j, i].set(drive_M)
    scale = jnp.where(i == j, 1.0, jnp.sqrt(2.0)).astype(w_N.dtype)
    G_MxN = dF_dw_MxN * scale[:, None]  # svec basis: ⟨X, F⟩ = svec(X)·svec(F)
    beta_MxM = 0.5 * G_MxN @ G_MxN.T
    alpha = -drive + kappa * (2.0 / eta * jnp.eye(k, dtype=w_N.dtype) - F)
    X, residual = solve(alpha, beta_MxM, mask)
    # ∇⟨X, F⟩ = Σ_ij X_ij ∇F_ij = Σ_{i≤j} (2 − δ_ij) X_ij ∇F_ij
    weight_M = jnp.where(i == j, 1.0, 2.0).astype(w_N.dtype) * X[i, j]
    velocity = -g - 0.5 * weight_M @ dF_dw_MxN
    return velocity, Critical(lam_K, U_NxK, mask, X, residual, F)


class FlowState(NamedTuple):
    w_gd: jax.Array
    w_gd_prev: jax.Array
    w_stable: jax.Array
    w_central: jax.Array
    U_gd: jax.Array
    U_stable: jax.Array
    U_central: jax.Array


class FlowRecord(NamedTuple):
    """Per GD step k (t = η·k)."""

    loss_gd: jax.Array  # L(w_k, t_k)
    loss_mid: jax.Array  # L(m_k, t_k), m_k = (w_{k−1} + 2w_k + w_{k+1})/4 (m_0 uses w_{−1} = w_0)
    loss_stable: jax.Array
    loss_central: jax.Array  # L at the central flow's point
    predicted: jax.Array  # L + ½⟨X, F⟩: the central flow's prediction of GD's time average
    lam_gd: jax.Array  # (K,) top eigenvalues at w_k
    lam_stable: jax.Array
    lam_central: jax.Array
    active: jax.Array  # directions in the central flow's block
    trace_X: jax.Array
    residual: jax.Array  # of the projection problem
    dist_mid_central: jax.Array  # ‖m_k − w_central(t_k)‖
    dist_gd_central: jax.Array
    dist_stable_central: jax.Array
    stability: jax.Array  # dt·λ1 of the stable flow at the step's start (RK4 stable to 2.785)
    above: jax.Array  # how many of GD's top-K eigenvalues are above c/η


def _rk4(f, y, t, dt):
    k1 = f(y, t)
    k2 = f(y + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = f(y + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = f(y + dt * k3, t + dt)
    return y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def stable_advance(loss_fn, w_N, t, lam1, *, eta: float, substeps: int, max_substeps: int):
    """Gradient flow dw/dt = −∇L(w, t) over one GD step's time η from (w, t): n = max(substeps,
    ⌈η·λ1⌉) classical RK4 steps (at most ``max_substeps``), so that dt·λ1 ≤ 1 where λ1 is the
    sharpness at the start (RK4 is stable to 2.785). Returns (w(t + η), dt)."""

    def f(w, s):
        return -jax.grad(loss_fn)(w, s)

    n = jnp.clip(jnp.ceil(eta * lam1), substeps, max_substeps).astype(jnp.int32)
    dt = eta / n.astype(w_N.dtype)

    def body(carry):
        j, w = carry
        return j + 1, _rk4(f, w, t + j.astype(w.dtype) * dt, dt)

    w = jax.lax.while_loop(lambda c: c[0] < n, body, (jnp.zeros((), jnp.int32), w_N))[1]
    return w, dt


class StableRecord(NamedTuple):
    """Per GD step k (t = η·k), of gradient flow alone."""

    loss: jax.Array  # L(w(t_k), t_k)
    lam: jax.Array  # (K,) top eigenvalues of H(w(t_k), t_k)
    residual: jax.Array  # (K,) ‖Hu − λu‖ of each: |λ_true − λ| ≤ residual for the nearest one


def stable_flow(
    loss_fn: Callable,
    w0_N,
    U0_NxK,
    *,
    eta: float,
    n_steps: int,
    substeps: int = 2,
    max_substeps: int = 64,
    eig_iterations: int = 3,
    state=None,
    first_step=0,
):
    """Gradient flow alone from ``w0``, its top-K eigenvalues at every GD step's time t = η·k:
    the reference clock of the edge of stability, at a fraction of :func:`run_flows`' cost
    (no GD, no central flow). GD approaches this flow as η → 0; at a finite η GD's own λ1
    can run ahead of or behind the flow's (by thousands of steps under DMSE2 in Fig. 4's
    runs, ``docs/reproduction.md``), so the flow's first step with λ1 > 2/η is a clock of the
    edge that no oscillation of GD and no loss-based rule touches, not GD's own crossing. The
    eigenpairs are warm-started from the last step's (``eig_iterations``
    subspace iterations a step, then Rayleigh–Ritz; the residual is recorded, bounding each
    eigenvalue's error). Returns ``((w, U), records)``; a long run goes in pieces: pass the
    returned ``state`` and the next ``first_step``. Pure: jit and vmap it from outside."""

    def step(carry, k):
        w, U = carry
        t = eta * k.astype(w.dtype)
        lam, U, res = top_eigs(loss_fn, w, t, U, eig_iterations)
        w_next, _ = stable_advance(
            loss_fn, w, t, lam[0], eta=eta, substeps=substeps, max_substeps=max_substeps
        )
        return (w_next, U), StableRecord(loss_fn(w, t), lam, res)

    if state is None:
        state = (w0_N, U0_NxK)
    return jax.lax.scan(step, state, first_step + jnp.arange(n_steps))


def run_flows(
    loss_fn: Callable,
    w0_N,
    U0_NxK,
    *,
    eta: float,
    n_steps: int,
    substeps: int = 4,
    max_substeps: int = 64,
    eig_iterations: int = 8,
    threshold: float = 1.5,
    edge_tol: float = 1e-3,
    kappa: float = 0.0,
    solve: Callable,
    time_term: bool = True,
    activation: str = "step",
    eig_every: str = "step",
    state: FlowState | None = None,
    first_step=0,
):
    """GD, its midpoints, the stable flow and the central flow from ``w0`` for ``n_steps`` GD
    steps; returns the final :class:`FlowState` and the :class:`FlowRecord` of every step
    (leading axis ``n_steps``). A long run goes in pieces: pass the returned ``state`` and the
    next ``first_step`` (``w0`` and ``U0`` are then ignored). ``loss_fn(w_N, t)`` takes time
    t = η·step; ``U0`` (N × K) starts the eigenvector iterations. The central flow takes
    ``substeps`` RK4 steps per GD step; the stable flow, whose λ1 is not held at 2/η, takes
    n = max(substeps, ⌈η·λ1⌉) of them (at most ``max_substeps``), so that dt·λ1 ≤ 1 (RK4 is
    stable to 2.785). ``activation`` decides which directions take part
    (:func:`central_velocity`): ``"step"`` those within ``edge_tol`` of 2/η at the GD step's
    start, held over its substeps, with drift relaxed at rate ``kappa``; ``"barrier"`` all K,
    the block kept at or below 2/η as a matrix with the rate 1/dt (one substep; ``kappa`` and
    ``edge_tol`` are then unused). ``eig_every="substep"`` refreshes the central flow's
    eigenpairs (and its active set) at every substep, warm-started from the last, instead of
    once per GD step. ``threshold`` c marks the eigenvalues above c/η in the records
    (``above``). Pure: jit and vmap it from outside."""
    dt = eta / substeps
    if activation == "barrier":
        kappa = 1.0 / dt
    if eig_every not in ("step", "substep"):
        raise ValueError(f"eig_every must be 'step' or 'substep', got {eig_every!r}")

    def eigs(w, t, U):
        return top_eigs(loss_fn, w, t, U, eig_iterations)

    def central(w, t, U, lam):
        return central_velocity(
            loss_fn,
            w,
            t,
            U,
            lam,
            eta=eta,
            edge_tol=edge_tol,
            kappa=kappa,
            solve=solve,
            time_term=time_term,
            activation=activation,
        )

    def step(state: FlowState, k):
        t = eta * k.astype(w0_N.dtype)
        # GD
        lam_gd, U_gd, _ = eigs(state.w_gd, t, state.U_gd)
        loss_gd, g = jax.value_and_grad(loss_fn)(state.w_gd, t)
        w_next = state.w_gd - eta * g
        mid = 0.25 * (state.w_gd_prev + 2.0 * state.w_gd + w_next)
        # stable flow
        lam_s, U_s, _ = eigs(state.w_stable, t, state.U_stable)
        w_stable, dt_s = stable_advance(
            loss_fn,
            state.w_stable,
            t,
            lam_s[0],
            eta=eta,
            substeps=substeps,
            max_substeps=max_substeps,
        )
        # central flow: the critical eigenvectors (and which take part) from the step's start,
        # held for its substeps; F, ∇F and ∂_tF are evaluated at every stage
        lam_c, U_c, _ = eigs(state.w_central, t, state.U_central)
        _, crit = central(state.w_central, t, U_c, lam_c)

        def central_f(w, s):
            return central(w, s, U_c, lam_c)[0]

        if eig_every == "step":
            w_central = jax.lax.fori_loop(
                0,
                substeps,
                lambda j, w: _rk4(central_f, w, t + j * dt, dt),
                state.w_central,
            )
        else:  # the eigenpairs followed substep by substep

            def refreshed(j, carry):
                w, U = carry
                lam, U, _ = eigs(w, t + j * dt, U)
                return _rk4(lambda y, s: central(y, s, U, lam)[0], w, t + j * dt, dt), U

            w_central, U_c = jax.lax.fori_loop(0, substeps, refreshed, (state.w_central, U_c))
        record = FlowRecord(
            loss_gd=loss_gd,
            loss_mid=loss_fn(mid, t),
            loss_stable=loss_fn(state.w_stable, t),
            loss_central=loss_fn(state.w_central, t),
            predicted=loss_fn(state.w_central, t) + 0.5 * jnp.sum(crit.X_KxK * crit.F_KxK),
            lam_gd=lam_gd,
            lam_stable=lam_s,
            lam_central=crit.lam_K,
            active=crit.mask_K.sum(),
            trace_X=jnp.trace(crit.X_KxK),
            residual=crit.residual,
            dist_mid_central=jnp.linalg.norm(mid - state.w_central),
            dist_gd_central=jnp.linalg.norm(state.w_gd - state.w_central),
            dist_stable_central=jnp.linalg.norm(state.w_stable - state.w_central),
            stability=dt_s * lam_s[0],
            above=(lam_gd >= threshold / eta).sum(),
        )
        new = FlowState(w_next, state.w_gd, w_stable, w_central, U_gd, U_s, U_c)
        return new, record

    if state is None:
        state = FlowState(w0_N, w0_N, w0_N, w0_N, U0_NxK, U0_NxK, U0_NxK)
    return jax.lax.scan(step, state, first_step + jnp.arange(n_steps))


def closed_form_k1(alpha_1x1, beta_1x1, mask_1):
    """The K = 1 projection: X = max(0, −α/β) (Y = α + βX ≥ 0, XY = 0)."""
    a, b = alpha_1x1[0, 0], beta_1x1[0, 0]
    x = jnp.where(mask_1[0] & (b > 0), jnp.maximum(0.0, -a / jnp.where(b > 0, b, 1.0)), 0.0)
    y = a + b * x
    return x.reshape(1, 1), jnp.abs(x * y) + jnp.maximum(-y, 0.0) * mask_1[0]
