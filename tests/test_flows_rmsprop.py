"""RMSProp's flows (dynloss_jax.flows_rmsprop) against answers known by hand: the discrete process
is the project's RMSProp; with ν frozen (ρ = 1) the central flow is the GD central flow of the
rescaled loss; on a driven model with ν moving the oscillation follows a closed form; the
integration converges at fourth order; and on a small network RMSProp reaches its edge, where
the central flow holds the effective sharpness at 2/η and predicts RMSProp's averaged loss
better than the stable flow."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynloss_jax import central_flow, flows, optim
from dynloss_jax import flows_rmsprop as fr

ETA, C0, EPS, OMEGA = 0.1, 4.0, 0.2, 0.5


def curvature(t):
    return C0 * (1.0 + EPS * jnp.sin(OMEGA * t))


def curvature_dot(t):
    return C0 * EPS * OMEGA * jnp.cos(OMEGA * t)


def driven(w, t):
    """L(x, y, t) = ½ c(t)(1 + y) x² − y (as in test_flows): on x = 0 the effective sharpness
    along x is c(t)(1 + y)/P_x, and −∇L = (0, 1) pushes it up."""
    x, y = w
    return 0.5 * curvature(t) * (1.0 + y) * x**2 - y


def solve(alpha, beta, mask):
    p = central_flow.solve(alpha, beta, mask)
    return p.X, p.residual


def run(loss, w0, nu0, V0, **kw):
    kw.setdefault("eig_iterations", 0)
    kw.setdefault("solve", flows.closed_form_k1)
    return jax.jit(lambda w0, nu0, V0: fr.run_rmsprop_flows(loss, w0, nu0, V0, **kw))(w0, nu0, V0)


def test_the_discrete_process_is_the_projects_rmsprop():
    """The scan's RMSProp is optax.rmsprop as :func:`optim.make_optimizer` builds it."""
    w0 = jnp.array([0.3, 0.5])
    _, rec = run(
        driven, w0, jnp.zeros(2), jnp.eye(2)[:, :1], eta=ETA, rho=0.9, eps=1e-8, n_steps=30
    )
    opt = optim.make_optimizer("rmsprop", ETA, decay=0.9, eps=1e-8)
    w, s, losses = w0, opt.init(w0), []
    for k in range(30):
        loss, g = jax.value_and_grad(driven)(w, ETA * k)
        losses.append(float(loss))
        u, s = opt.update(g, s, w)
        w = optax.apply_updates(w, u)
    np.testing.assert_allclose(rec.loss_rms, losses, rtol=1e-12)


def test_frozen_preconditioner_is_the_gd_central_flow_of_the_rescaled_loss():
    """ρ = 1 freezes ν: RMSProp is GD with step η on z = √P·w, and its central flow (time term
    included) is :func:`flows.run_flows` on L(z/√P, t). On x = 0 it holds c(t)(1 + y)/P_x at
    2/η: y(t) = 2 P_x/(η c(t)) − 1."""
    p = jnp.array([1.5, 0.7])
    s = jnp.sqrt(p)
    y0 = 2 * float(p[0]) / (ETA * float(curvature(0.0))) - 1
    w0 = jnp.array([0.0, y0])
    state, rec = run(driven, w0, p**2, jnp.eye(2)[:, :1], eta=ETA, rho=1.0, eps=0.0, n_steps=200)
    gd_state, gd = jax.jit(
        lambda z0, U0: flows.run_flows(
            lambda z, t: driven(z / s, t),
            z0,
            U0,
            eta=ETA,
            n_steps=200,
            substeps=4,
            eig_iterations=0,
            solve=flows.closed_form_k1,
        )
    )(w0 * s, jnp.eye(2)[:, :1])
    np.testing.assert_allclose(state.w_central, gd_state.w_central / s, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rec.trace_X, gd.trace_X, rtol=1e-10)
    np.testing.assert_allclose(rec.predicted, gd.predicted, rtol=1e-10)
    np.testing.assert_allclose(rec.lam_central[:, 0], 2 / ETA, rtol=1e-10)
    y_end = 2 * float(p[0]) / (ETA * float(curvature(ETA * 200))) - 1
    assert float(state.w_central[1]) == pytest.approx(y_end, abs=1e-9)
    np.testing.assert_allclose(state.nu_central, p**2, rtol=0)  # frozen


def driven_sigma2(s, p_y, t, rho):
    """σ² = Σ_xx on the driven model with ν moving, ε = 0, s = √ν_x = P_x: holding
    c(1 + y) = (2/η)s, with dy/dt = (1 − ½cσ²)/P_y and dν_x/dt = r((2/η)² s² σ² − s²),
    r = (1 − ρ)/(ρη), gives σ² [4rs/(η³c) + c/(2P_y)] = 1/P_y + rs/(ηc) + 2sċ/(ηc²)."""
    c, dc = curvature(t), curvature_dot(t)
    r = (1 - rho) / (rho * ETA)
    return (1 / p_y + r * s / (ETA * c) + 2 * s * dc / (ETA * c**2)) / (
        4 * r * s / (ETA**3 * c) + c / (2 * p_y)
    )


def run_driven_nu(substeps, n_steps=150, **kw):
    """The driven model from the edge, ν_x = 1, ν_y = 1 (ν₀ chosen so that ρν₀ + (1 − ρ)g₀²
    is that)."""
    rho = 0.9
    y0 = 2.0 / (ETA * float(curvature(0.0))) - 1  # s = 1
    w0 = jnp.array([0.0, y0])
    nu_flow = jnp.array([1.0, 1.0])
    g0 = jax.grad(driven)(w0, 0.0)
    nu0 = (nu_flow - (1 - rho) * g0**2) / rho
    return run(
        driven,
        w0,
        nu0,
        jnp.eye(2)[:, :1],
        eta=ETA,
        rho=rho,
        eps=0.0,
        n_steps=n_steps,
        substeps=substeps,
        **kw,
    )


def test_oscillation_feeds_the_preconditioner_as_the_closed_form_says():
    """With ν moving, the oscillation's diag(HΣH) = (2/η)² P² Σ raises ν_x, and X follows the
    closed form at the flow's own state; the effective sharpness stays at 2/η."""
    state, rec = run_driven_nu(4)
    assert (np.asarray(rec.active) == 1).all()
    np.testing.assert_allclose(rec.lam_central[:, 0], 2 / ETA, rtol=1e-9)
    assert float(state.nu_central[0]) > 1.0  # the oscillation raised ν_x from 1
    t = ETA * np.arange(150)
    # s = √ν_x from the record of mean √ν over (x, y), ν_y staying 1 (dν_y/dt = r(1 − ν_y))
    s = 2 * np.asarray(rec.root_nu_central) - 1
    # the edge: c(1 + y) = (2/η)s, with y = −L at x = 0
    y = -np.asarray(rec.loss_central)
    np.testing.assert_allclose(np.asarray(curvature(t)) * (1 + y), 2 / ETA * s, rtol=1e-9)
    sigma2 = np.asarray(driven_sigma2(s, 1.0, t, 0.9))
    # X in the basis u = e_x/√s is s·σ²
    np.testing.assert_allclose(np.asarray(rec.trace_X) / s, sigma2, rtol=1e-8)
    assert float(state.nu_central[1]) == pytest.approx(1.0, abs=1e-12)


def test_central_flow_with_moving_preconditioner_converges_at_fourth_order():
    ends = [np.asarray(run_driven_nu(n, n_steps=100)[0].nu_central) for n in (1, 2, 4)]
    e12, e24 = np.abs(ends[0] - ends[1]).max(), np.abs(ends[1] - ends[2]).max()
    assert 10 < e12 / e24 < 20  # 2⁴ = 16


def small_network():
    """A tanh network 4 → 8 → 1 (49 parameters) fitted by ½·mean squared error to 16 points."""
    n, d, width = 16, 4, 8
    kx, _, kw = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, d))
    y = jnp.sin(x.sum(1))
    scale = jnp.concatenate(
        [jnp.full(d * width, d**-0.5), jnp.zeros(width), jnp.full(width, width**-0.5), jnp.zeros(1)]
    )
    w0 = jax.random.normal(kw, scale.shape) * scale

    def loss(w, t):
        W1 = w[: d * width].reshape(d, width)
        b1, w2, b2 = w[d * width : (d + 1) * width], w[(d + 1) * width : -1], w[-1]
        return 0.5 * jnp.mean((jnp.tanh(x @ W1 + b1) @ w2 + b2 - y) ** 2 + 0.0 * t)

    return loss, w0


def test_rmsprop_reaches_its_edge_and_the_central_flow_predicts_its_average():
    """RMSProp (η = 0.009, ρ = 0.99, ν₀ = g₀²) on the small network, two directions tracked (a
    second one reaches the edge near the end): its effective sharpness
    rises to 2/η (ν falls with the gradient); from then on the central flow holds its own at
    2/η while the stable flow's passes 4/η, and the central flow's predicted loss is closer to
    RMSProp's loss averaged over 25 steps than the stable flow's loss is."""
    loss, w0 = small_network()
    eta, steps, window = 0.009, 500, 25
    V0 = jnp.linalg.qr(jax.random.normal(jax.random.key(5), (w0.shape[0], 2)))[0]
    nu0 = jax.grad(loss)(w0, 0.0) ** 2
    _, rec = run(
        loss,
        w0,
        nu0,
        V0,
        eta=eta,
        rho=0.99,
        eps=1e-8,
        n_steps=steps,
        eig_iterations=4,
        kappa=0.1,
        solve=solve,
    )
    lam_rms = np.asarray(rec.lam_rms[:, 0]) * eta
    assert (lam_rms > 2).any(), "RMSProp never reached its edge: the test case is void"
    active = np.asarray(rec.active) > 0
    assert active.any(), "the central flow never reached the edge"
    onset = int(np.argmax(active))
    assert onset < int(np.argmax(lam_rms > 2)) + 20  # it meets the edge when RMSProp does
    lam_c = np.asarray(rec.lam_central[onset:, 0]) * eta
    assert np.abs(lam_c - 2).max() < 0.02
    assert float(rec.lam_stable[-1, 0]) * eta > 4
    avg = np.convolve(np.asarray(rec.loss_rms), np.ones(window) / window, mode="valid")
    keep = slice(onset + window // 2, steps - window + 1 + window // 2)

    def err(pred):
        return np.median(np.abs(np.asarray(pred)[keep] - avg[onset:]) / avg[onset:])

    central_err, stable_err = err(rec.predicted), err(rec.loss_stable)
    assert central_err < 0.7 * stable_err, (central_err, stable_err)
