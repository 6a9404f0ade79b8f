r"""Central flows for gradient descent: the projection problem, solved inside the compiled program.

The central flow (Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep
Learning with Central Flows", ICLR 2025, arXiv:2410.24206) models the time-averaged trajectory of
gradient descent with step size η at the edge of stability. In the project's time t = η·k (GD
step k; the paper counts steps, which puts a factor η in front of the velocity), with
g = ∇L(w), H = ∇²L(w) and u_1 … u_K orthonormal eigenvectors of H whose eigenvalues λ_i sit at
2/η (the *critical* ones),

    dw/dt = −g − ½ ∇_w⟨Σ, ∇²L(w)⟩ = −g − ½ Σ_ij X_ij h_ij,   Σ = Σ_ij X_ij u_i u_jᵀ,      (1)

with X ∈ S^K, X ⪰ 0, and h_ij = ∇_w F_ij, F_ij = u_iᵀ ∇²L(w) u_j with u held fixed (a third
derivative of L; h_ii = ∇λ_i). Along (1) the critical block changes as dF/dt = −Y with

    Y = α + β(X),   α_ij = ⟨h_ij, g⟩,   β(X)_ij = ½ Σ_kl ⟨h_ij, h_kl⟩ X_kl,                   (2)

and X is fixed by asking that the block not grow past 2/η while directions oscillate only where
it is held: the semidefinite complementarity problem (SDCP)

    X ⪰ 0,   Y = α + β(X) ⪰ 0,   ⟨X, Y⟩ = 0.                                           (3)

β is a Gram operator (self-adjoint, positive semidefinite on S^K), so (3) is exactly the KKT
system of the convex cone-constrained least-squares problem

    X = argmin_{X ⪰ 0}  ½⟨X, β(X)⟩ + ⟨α, X⟩,                                            (4)

and (1) is the Euclidean projection of the gradient-flow velocity −g onto the cone of velocities
v along which the block does not increase, [⟨h_ij, v⟩]_ij ⪯ 0, with multiplier X/2. For K = 1,
X = max(0, −α/β) = max(0, 2⟨−g, ∇λ⟩/‖∇λ‖²): the paper's σ².

Discretised, the condition becomes "after a step Δt the block is still at or below 2/η",
(2/η)I − F − Δt·dF/dt ⪰ 0: the same problem with α_ij = ⟨h_ij, g⟩ + (2/η·δ_ij − F_ij)/Δt. That is
the relaxation rate κ = 1/Δt of :mod:`dynloss_jax.flows`, and the problem that the public
implementation (alex-damian/central_flows_jax, ``flows.py``/``sdcp.py``) hands to cvxpy through a
host callback, there in η-scaled units (eigenvalues of ηH, uᵀu = η, time in steps): its A and B
are ηΔt·α and η²Δt·β, and its variable is X/η.

Coordinates: symmetric K×K matrices are vectors of M = K(K+1)/2 entries through the isometry
``svec`` (upper triangle row by row, off-diagonals times √2), so ⟨X, Y⟩ = svec(X)·svec(Y) and β
is an M×M positive semidefinite matrix, β = ½ D Dᵀ with rows D_(ij) = c_ij h_ij (c = 1 on the
diagonal, √2 off it). Given α and β, X does not depend on their common scale.

* :func:`solve_one` — the K = 1 closed form.
* :func:`solve` — any K: a Mehrotra predictor–corrector interior-point method on (3), then
  semismooth Newton steps on its natural map; fixed iteration counts, so it vmaps and jits, and a
  boolean mask switches eigen-directions off without recompiling. Returns X, Y and a residual.

Both are pure and take float32 or float64; the caller jits and vmaps. The small dense algebra
runs through :mod:`dynloss_jax.dense` (not LAPACK: see there why).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynloss_jax import dense


class Projection(NamedTuple):
    """The solution of the SDCP (3) for one instance."""

    X: jax.Array  # (K, K) ⪰ 0; zero in inactive rows and columns
    Y: jax.Array  # (K, K) α + β(X) ⪰ 0 on the active block; zero in inactive rows and columns
    residual: jax.Array  # dimensionless, 0 at the solution: see :func:`solve`


def num_pairs(k):
    """M = K(K+1)/2, the length of ``svec`` of a K×K symmetric matrix."""
    return k * (k + 1) // 2


def _side(m):
    k = int(round((np.sqrt(8 * m + 1) - 1) / 2))
    if num_pairs(k) != m:
        raise ValueError(f"{m} is not K(K+1)/2 for any K")
    return k


def svec(X_KxK):
    """(..., K, K) symmetric → (..., M): upper triangle row by row, off-diagonals times √2."""
    i, j = np.triu_indices(X_KxK.shape[-1])
    return X_KxK[..., i, j] * np.where(i == j, 1.0, np.sqrt(2.0)).astype(X_KxK.dtype)


def smat(x_M):
    """Inverse of :func:`svec`: (..., M) → (..., K, K) symmetric."""
    k = _side(x_M.shape[-1])
    i, j = np.triu_indices(k)
    v = x_M * np.where(i == j, 1.0, np.sqrt(0.5)).astype(x_M.dtype)
    X = jnp.zeros(x_M.shape[:-1] + (k, k), x_M.dtype)
    return X.at[..., i, j].set(v).at[..., j, i].set(v)


def solve_one(alpha_1x1, beta_1x1, mask_1=None):
    """K = 1: X = max(0, −α/β), Y = α + βX = max(α, 0), residual 0.

    With β = 0 and α < 0 there is no solution (the objective of (4) is unbounded below): X = 0
    and the residual is ∞.
    """
    active = jnp.ones((1,), bool) if mask_1 is None else mask_1
    a, b = alpha_1x1[0, 0], beta_1x1[0, 0]
    push = active[0] & (a < 0)
    x = jnp.where(push & (b > 0), -a / jnp.where(b > 0, b, 1), 0.0)
    y = jnp.where(active[0], a + b * x, 0.0)
    residual = jnp.where(push & (b <= 0), jnp.inf, 0.0).astype(x.dtype)
    return Projection(x.reshape(1, 1), y.reshape(1, 1), residual)


def _psd_part(Z):
    """Π₊(Z) = Q max(d, 0) Qᵀ, with Z's eigenvalues d and eigenvectors Q."""
    d, Q = dense.eigh(Z)
    return (Q * jnp.maximum(d, 0)) @ Q.T, d, Q


def _psd_part_derivative(d, Q):
    """M×M matrix of H ↦ Q (Ω ∘ QᵀHQ) Qᵀ, an element of the generalised Jacobian of Π₊ at Z.

    Ω_ij = (d_i⁺ − d_j⁺)/(d_i − d_j), taken as 1 when d_i, d_j > 0 and 0 when both are ≤ 0.
    """
    k = d.shape[-1]
    pos = d > 0
    both, neither = pos[:, None] & pos[None, :], ~pos[:, None] & ~pos[None, :]
    gap = jnp.where(both | neither, 1.0, d[:, None] - d[None, :])
    dp = jnp.maximum(d, 0)
    omega = jnp.where(both, 1.0, jnp.where(neither, 0.0, (dp[:, None] - dp[None, :]) / gap))
    basis = smat(jnp.eye(num_pairs(k), dtype=d.dtype))
    return jax.vmap(lambda E: svec(Q @ (omega * (Q.T @ E @ Q)) @ Q.T))(basis).T


def _inverse_sqrt(X):
    """X^{-1/2} of a positive definite X (eigenvalues floored at the smallest normal number)."""
    x, V = dense.eigh(X)
    r = V / jnp.sqrt(jnp.maximum(x, jnp.finfo(x.dtype).tiny))
    return r @ V.T


def _max_step(R_2xKxK, dZ_2xKxK):
    """sup{t : Z + t dZ ⪰ 0 for both Z} given R = Z^{-1/2}: −1/λ_min(R dZ R) if negative, or ∞."""
    w = jax.vmap(lambda R, dZ: dense.eigh(R @ dZ @ R)[0][0])(R_2xKxK, dZ_2xKxK)
    return jnp.min(jnp.where(w < 0, -1 / w, jnp.inf))


def _sym(A):
    return 0.5 * (A + A.T)


def solve(alpha_KxK, beta_MxM, mask_K=None, *, ipm_steps=20, newton_steps=10):
    """The SDCP (3): X ⪰ 0, Y = α + β(X) ⪰ 0, ⟨X, Y⟩ = 0, i.e. argmin_{X⪰0} ½⟨X,β(X)⟩ + ⟨α,X⟩.

    ``alpha_KxK`` symmetric; ``beta_MxM`` positive semidefinite in ``svec`` coordinates
    (M = K(K+1)/2), positive definite on the active block for a unique solution; ``mask_K``
    (bool, default all on) marks the active eigen-directions: X is then zero in inactive rows and
    columns and its active block solves the problem restricted to the active ones.

    Method, after scaling to λ_max(β) = 1 and ‖α‖_F = 1 (inactive pairs decoupled: β = identity,
    α = the identity's diagonal there): ``ipm_steps`` Mehrotra predictor–corrector steps of an
    infeasible primal–dual interior-point method (HKM direction, from X = Y = I; frozen once
    ⟨X,Y⟩/K and ‖Y − α − β(X)‖ are below 1000 ε), then ``newton_steps`` semismooth Newton steps on
    the natural map F(x) = x − Π₊(x − βx − α), keeping the iterate of least ‖F‖. Each step costs a
    few K×K eigendecompositions and one M×M solve.

    The residual is ‖F‖ at the returned X in those scaled units, ‖X − Π₊(X − Y/‖β‖)‖_F/(‖α‖_F/‖β‖),
    or Y's negative part ‖Π₋(Y)‖_F/‖α‖_F if larger (an unbounded problem, β singular with α
    pushing along its null space, shows there). The distance to the solution is at most
    2 cond(β) · residual · ‖α‖_F/‖β‖.
    """
    k = alpha_KxK.shape[-1]
    m = num_pairs(k)
    if beta_MxM.shape[-2:] != (m, m):
        raise ValueError(f"beta must be {m}×{m} for K = {k}, got {beta_MxM.shape}")
    dtype = jnp.result_type(alpha_KxK, beta_MxM, jnp.float32)
    active = jnp.ones((k,), bool) if mask_K is None else mask_K
    i, j = np.triu_indices(k)
    on_M = active[i] & active[j]
    on_MM = on_M[:, None] & on_M[None, :]
    on_KK = active[:, None] & active[None, :]
    eye_M, eye_K = jnp.eye(m, dtype=dtype), jnp.eye(k, dtype=dtype)

    a = jnp.where(on_M, svec(alpha_KxK.astype(dtype)), 0.0)
    B = jnp.where(on_MM, _sym(beta_MxM.astype(dtype)), 0.0)
    norm_B = dense.eigh(B)[0][-1]
    norm_B = jnp.where(norm_B > 0, norm_B, 1.0)
    unit = jnp.linalg.norm(a) / norm_B  # the natural scale of X; α = 0 has X = 0 exactly
    nonzero = unit > 0
    unit = jnp.where(nonzero, unit, 1.0)
    Bs = jnp.where(on_MM, B / norm_B, eye_M)
    as_ = jnp.where(on_M, a / (norm_B * unit), jnp.asarray(i == j, dtype))
    alpha_s = smat(as_)
    basis = smat(eye_M)
    tol = 1000 * jnp.finfo(dtype).eps

    def beta(X):
        return smat(Bs @ svec(X))

    def direction(X, Y_inv, rd, mu, corr):
        """HKM direction: dX + sym(X β(dX) Y⁻¹) = sym(μY⁻¹ − X − corr Y⁻¹ + X rd Y⁻¹)."""
        S = jax.vmap(lambda E: svec(_sym(X @ E @ Y_inv)))(basis).T
        rhs = svec(_sym(mu * Y_inv - X - corr @ Y_inv + X @ rd @ Y_inv))
        dX = smat(dense.solve(eye_M + S @ Bs, rhs))
        return dX, beta(dX) - rd

    def ipm_step(carry, _):
        X, Y, done = carry
        R = jax.vmap(_inverse_sqrt)(jnp.stack([X, Y]))  # X^{-1/2}, Y^{-1/2}
        Y_inv = R[1] @ R[1]
        rd = Y - beta(X) - alpha_s
        mu = jnp.sum(X * Y) / k
        done = done | ((mu < tol) & (jnp.linalg.norm(rd) < tol))
        dXa, dYa = direction(X, Y_inv, rd, 0.0, jnp.zeros_like(X))
        ta = jnp.minimum(1.0, _max_step(R, jnp.stack([dXa, dYa])))
        mu_a = jnp.sum((X + ta * dXa) * (Y + ta * dYa)) / k
        sigma = jnp.minimum(1.0, mu_a / mu) ** 3
        dX, dY = direction(X, Y_inv, rd, sigma * mu, dXa @ dYa)
        t = jnp.minimum(1.0, 0.99 * _max_step(R, jnp.stack([dX, dY])))
        X_new, Y_new = _sym(X + t * dX), _sym(Y + t * dY)
        keep = done | ~(jnp.isfinite(X_new).all() & jnp.isfinite(Y_new).all())
        return (jnp.where(keep, X, X_new), jnp.where(keep, Y, Y_new), done), None

    (X, _, _), _ = jax.lax.scan(ipm_step, (eye_K, eye_K, jnp.bool_(False)), None, ipm_steps)

    def natural_map(x):
        P, d, Q = _psd_part(smat(x - Bs @ x - as_))
        return x - svec(P), d, Q

    def newton_step(carry, _):
        x, best, best_F = carry
        F, d, Q = natural_map(x)
        F_norm = jnp.linalg.norm(F)
        better = F_norm < best_F
        best, best_F = jnp.where(better, x, best), jnp.where(better, F_norm, best_F)
        J = eye_M - _psd_part_derivative(d, Q) @ (eye_M - Bs)
        dx = dense.solve(J, -F)
        # full steps: from the interior-point start they converge fast, and the best is kept
        return (jnp.where(jnp.isfinite(dx).all(), x + dx, best), best, best_F), None

    x0 = svec(X)
    carry = (x0, x0, jnp.asarray(jnp.inf, dtype))
    (x, best, best_F), _ = jax.lax.scan(newton_step, carry, None, newton_steps)
    x = jnp.where(jnp.linalg.norm(natural_map(x)[0]) < best_F, x, best)

    X = jnp.where(on_KK & nonzero, _psd_part(smat(x - Bs @ x - as_))[0], 0.0)
    x = svec(X)
    # Y's negative part as well: where (4) is unbounded (β singular, α pushing along its null
    # space) X runs off to where the natural map rounds to zero
    y_neg = jnp.minimum(dense.eigh(smat(Bs @ x + as_))[0], 0.0)
    residual = jnp.maximum(jnp.linalg.norm(natural_map(x)[0]), jnp.linalg.norm(y_neg))
    X = X * unit
    Y = jnp.where(on_KK, smat(a + B @ svec(X)), 0.0)
    return Projection(X, Y, residual)
