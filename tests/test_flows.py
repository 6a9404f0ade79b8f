"""The flows against answers known by hand: the eigen-solver against a dense Hessian, the
central flow of a model whose sharpness is driven in time (closed form), the order of the
Runge–Kutta scheme, and the stable flow's sharpness-limited step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import flows

ETA, C0, EPS, OMEGA = 0.1, 4.0, 0.2, 0.5


def curvature(t):
    """c(t) = c0 (1 + ε sin ωt): the sharpness along x is driven in time."""
    return C0 * (1.0 + EPS * jnp.sin(OMEGA * t))


def driven(w, t):
    """L(x, y, t) = ½ c(t)(1 + y) x² − y. On x = 0, λ1 = c(t)(1 + y) along x and −∇L = (0, 1)
    pushes it up; the central flow holds c(t)(1 + y) = 2/η, so y(t) = 2/(η c(t)) − 1, and
    dy/dt = 1 − ½σ²c gives σ² = 2/c + 4c'/(η c³)."""
    x, y = w
    return 0.5 * curvature(t) * (1.0 + y) * x**2 - y


def exact_y(t):
    return 2.0 / (ETA * curvature(t)) - 1.0


def exact_sigma2(t):
    c = curvature(t)
    dc = C0 * EPS * OMEGA * jnp.cos(OMEGA * t)
    return 2.0 / c + 4.0 * dc / (ETA * c**3)


def run_driven(substeps, n_steps=200, **kw):
    w0 = jnp.array([0.0, float(exact_y(0.0))])
    U0 = jnp.array([[1.0], [0.0]])
    f = jax.jit(
        lambda w0, U0: flows.run_flows(
            driven,
            w0,
            U0,
            eta=ETA,
            n_steps=n_steps,
            substeps=substeps,
            eig_iterations=0,
            solve=flows.closed_form_k1,
            **kw,
        )
    )
    return f(w0, U0)


def test_central_flow_of_a_driven_sharpness_follows_the_closed_form():
    state, rec = run_driven(4)
    t_end = ETA * 200
    assert float(state.w_central[0]) == 0.0
    assert float(state.w_central[1]) == pytest.approx(float(exact_y(t_end)), abs=1e-10)
    t = ETA * np.arange(200)
    np.testing.assert_allclose(rec.trace_X, exact_sigma2(t), rtol=1e-9)
    np.testing.assert_allclose(rec.lam_central[:, 0], 2.0 / ETA, rtol=1e-10)
    assert (np.asarray(rec.active) == 1).all()
    # the prediction of GD's time-averaged loss: L + ½σ²λ with λ = 2/η
    y = np.asarray(exact_y(t))
    np.testing.assert_allclose(rec.predicted, -y + exact_sigma2(t) / ETA, rtol=1e-8)


def test_without_the_time_term_the_sharpness_leaves_two_over_eta():
    """Dropping ∂_tF from the drive (the static flow applied to the frozen loss) lets λ drift
    off 2/η as c(t) moves: the time term is what holds it."""
    _, rec = run_driven(4, time_term=False)
    drift = np.abs(np.asarray(rec.lam_central[:, 0]) * ETA / 2 - 1).max()
    assert drift > 1e-2


def test_central_flow_converges_at_fourth_order():
    ends = [float(run_driven(n)[0].w_central[1]) for n in (1, 2, 4)]
    exact = float(exact_y(ETA * 200))
    e1, e2, e4 = (abs(e - exact) for e in ends)
    assert 10 < e1 / e2 < 20 and 10 < e2 / e4 < 20  # 2⁴ = 16


def quartic(w, t):
    """A static loss with several directions of different curvature and a cubic coupling."""
    d = jnp.arange(1, w.shape[0] + 1, dtype=w.dtype) ** 2
    return 0.5 * jnp.sum(d * w**2) + 0.1 * jnp.sum(w**3) * jnp.sum(w) + 0.0 * t


def test_top_eigs_warm_subspace_iteration_matches_the_dense_hessian():
    w = jax.random.normal(jax.random.key(0), (12,), jnp.float64) * 0.3
    U0 = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (12, 3), jnp.float64))[0]
    lam, U, res = flows.top_eigs(quartic, w, 0.0, U0, iterations=300)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(quartic)(w, 0.0)))[::-1][:3]
    np.testing.assert_allclose(lam, dense, rtol=1e-9)
    assert float(res.max()) < 1e-6
    # warm start: a few iterations from the converged vectors keep them
    lam2, _, res2 = flows.top_eigs(quartic, w, 0.0, U, iterations=2)
    np.testing.assert_allclose(lam2, dense, rtol=1e-12)
    assert float(res2.max()) < 1e-6


def test_stable_flow_converges_and_keeps_its_step_below_the_limit():
    """The stable flow (gradient flow) on the quartic model from a point where λ1 > 2/η:
    sharpness-limited steps keep dt·λ1 ≤ 1, and the end point converges at fourth order."""
    w0 = jnp.full(6, 0.4, jnp.float64)
    U0 = jnp.eye(6, 1, dtype=jnp.float64)

    def end(substeps):
        state, rec = jax.jit(
            lambda w0, U0: flows.run_flows(
                quartic,
                w0,
                U0,
                eta=0.5,
                n_steps=20,
                substeps=substeps,
                max_substeps=256,
                eig_iterations=0,
                solve=flows.closed_form_k1,
            )
        )(w0, U0)
        return np.asarray(state.w_stable), rec

    _, rec = end(1)  # the step is set by the sharpness: n = ⌈η·λ1⌉ > 1
    assert float(rec.lam_stable[0, 0]) > 2 / 0.5  # the flow starts beyond GD's edge
    assert float(np.max(rec.stability)) <= 1.0 + 1e-12
    assert float(np.min(rec.stability)) > 0.5
    # with more substeps than the sharpness asks for, the end point converges at 4th order
    a, b, c = (end(n)[0] for n in (40, 80, 160))
    assert 10 < np.abs(a - b).max() / np.abs(b - c).max() < 20


def test_closed_form_k1_is_the_complementarity_solution():
    a = jnp.array([[-3.0]])
    b = jnp.array([[2.0]])
    X, res = flows.closed_form_k1(a, b, jnp.array([True]))
    assert float(X[0, 0]) == 1.5 and float(res) == 0.0
    X, res = flows.closed_form_k1(-a, b, jnp.array([True]))
    assert float(X[0, 0]) == 0.0 and float(res) == 0.0
    X, _ = flows.closed_form_k1(a, b, jnp.array([False]))
    assert float(X[0, 0]) == 0.0


def test_two_critical_directions_each_follow_their_own_closed_form():
    """Two copies of the driven model, x_d along which c_d(t)(1 + y_d) is held at 2/η, with
    c_2 oscillating at another frequency: the block has K = 2, solved in-graph by
    :func:`dynloss_jax.central_flow.solve`, and each y_d follows 2/(η c_d) − 1."""
    from dynloss_jax import central_flow

    def c2(t):
        return 3.0 * (1.0 + 0.1 * jnp.cos(0.8 * t))  # |ċ| < η c²/2: held at the edge

    def loss(w, t):
        x1, y1, x2, y2 = w
        return 0.5 * curvature(t) * (1.0 + y1) * x1**2 - y1 + 0.5 * c2(t) * (1.0 + y2) * x2**2 - y2

    def solve(alpha, beta, mask):
        p = central_flow.solve(alpha, beta, mask)
        return p.X, p.residual

    w0 = jnp.array([0.0, float(exact_y(0.0)), 0.0, 2.0 / (ETA * float(c2(0.0))) - 1.0])
    U0 = jnp.eye(4)[:, :2]
    state, rec = jax.jit(
        lambda w0, U0: flows.run_flows(
            loss, w0, U0, eta=ETA, n_steps=100, substeps=4, eig_iterations=0, solve=solve
        )
    )(w0, U0)
    t_end = ETA * 100
    assert float(state.w_central[1]) == pytest.approx(float(exact_y(t_end)), abs=1e-8)
    assert float(state.w_central[3]) == pytest.approx(2.0 / (ETA * float(c2(t_end))) - 1, abs=1e-8)
    assert (np.asarray(rec.active) == 2).all()
    np.testing.assert_allclose(rec.lam_central, 2.0 / ETA, rtol=1e-8)
    assert float(np.max(rec.residual)) < 1e-8


def test_barrier_keeps_a_direction_that_starts_just_below_the_edge_from_overshooting():
    """The driven model started with its sharpness 0.5 % below 2/η, outside the per-step mask's
    band (edge_tol = 1e-3): under ``activation="step"`` the direction moves freely for a whole
    GD step (dy/dt = 1 raises c(1 + y) by c·η, 2 % of 2/η) and then stays above the edge (κ = 0:
    nothing pulls it back), which the exact flow never does; under ``"barrier"`` it enters as it
    reaches the edge and then follows the closed form y(t) = 2/(η c(t)) − 1."""
    edge = 2.0 / ETA
    y0 = 0.995 * edge / float(curvature(0.0)) - 1.0
    w0 = jnp.array([0.0, y0])
    U0 = jnp.array([[1.0], [0.0]])

    def run(activation):
        return jax.jit(
            lambda w0, U0: flows.run_flows(
                driven,
                w0,
                U0,
                eta=ETA,
                n_steps=40,
                substeps=4,
                eig_iterations=0,
                solve=flows.closed_form_k1,
                activation=activation,
            )
        )(w0, U0)

    _, old = run("step")
    assert float(np.max(old.lam_central[:, 0])) > 1.01 * edge  # the defect
    state, new = run("barrier")
    assert float(np.max(new.lam_central[:, 0])) <= (1.0 + 1e-4) * edge
    assert float(state.w_central[1]) == pytest.approx(float(exact_y(ETA * 40)), abs=1e-4)


def test_activation_and_eig_every_must_be_known():
    with pytest.raises(ValueError, match="activation"):
        run_driven(2, n_steps=1, activation="stage")
    with pytest.raises(ValueError, match="eig_every"):
        run_driven(2, n_steps=1, eig_every="stage")


def test_eigenpairs_refreshed_every_substep_keep_the_closed_form():
    """With the eigenpairs refreshed at every substep the driven model still follows
    y(t) = 2/(η c(t)) − 1 with λ1 at 2/η."""
    state, rec = run_driven(4, n_steps=50, eig_every="substep")
    assert float(state.w_central[1]) == pytest.approx(float(exact_y(ETA * 50)), abs=1e-9)
    np.testing.assert_allclose(rec.lam_central[:, 0], 2.0 / ETA, rtol=1e-9)


SHORT_DCE_SUBSTEPS = (8, 16)


@pytest.fixture(scope="module")
def short_dce():
    """DCE on the spiral at the smallest settings where GD and the flows meet the edge (width 16,
    A = 20, T = 60 steps, η = 2.5, K = 2), with the barrier active set, at 8 and 16 RK4
    substeps per GD step: ``{substeps: records}``."""
    from experiments import central_flow as cf

    s = dict(cf.SMOKE, losses=("dce",), activation="barrier", piece=60)
    return s, {n: cf.run_one(dict(s, substeps=n), "dce", quiet=True) for n in SHORT_DCE_SUBSTEPS}


@pytest.mark.slow
def test_short_period_dce_flow_meets_the_edge_and_the_barrier_holds_it(short_dce):
    s, runs = short_dce
    for rec in runs.values():
        lam = np.asarray(rec["lam_central"][:, 0]) * s["eta"] / 2
        assert float(lam.max()) > 0.999  # the flow meets the edge
        assert float(np.max(rec["trace_X"])) > 0  # and oscillates there
        assert float(lam.max()) < 1.02  # the barrier keeps λ1 within 2 % of 2/η


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="not converged: the predicted loss moved by up to 3.1 % between 8 and 16 substeps "
    "on this case when the test was written (on the study's case, "
    "docs/results/central_flow/convergence/, the largest moves sit where Γ switches classes)",
)
def test_short_period_dce_prediction_is_converged_in_its_step_at_every_step(short_dce):
    """The claim the study asks for: between the two finest substep counts the central flow's
    predicted loss changes by less than 1 % at every step (the maximum over steps, not a
    median). It does not hold yet; strict, so that a change that makes it hold is noticed."""
    _, runs = short_dce
    p8, p16 = (np.asarray(runs[n]["predicted"]) for n in SHORT_DCE_SUBSTEPS)
    assert float(np.max(np.abs(p8 - p16) / np.abs(p16))) < 0.01


def test_stable_flow_alone_follows_the_closed_form_and_crosses_two_over_eta_on_time():
    """L = ½ a(1 + c t) Σ d_i w_i²: gradient flow w_i(t) = w_i(0) exp(−a d_i (t + c t²/2)),
    λ1(t) = a(1 + c t); the reference clock crosses 2/η at the first GD step k with
    a(1 + c η k) > 2/η. Checked against that closed form, with ``run_flows``' own stable flow
    (the same steps) and over two pieces."""
    eta, a, c = 0.5, 3.0, 0.02
    d = jnp.array([1.0, 0.5, 0.2])

    def loss(w, t):
        return 0.5 * a * (1.0 + c * t) * jnp.sum(d * w**2)

    w0 = jnp.array([0.3, -0.2, 0.5])
    U0 = jnp.array([[0.6], [0.8], [0.0]])
    n = 60
    _, rec = jax.jit(lambda w: flows.stable_flow(loss, w, U0, eta=eta, n_steps=n))(w0)
    t = eta * np.arange(n)
    lam_exact = a * (1.0 + c * t)
    err = np.abs(np.asarray(rec.lam[:, 0]) - lam_exact)
    assert err[10:].max() < 1e-7 * lam_exact.max()  # warm-started: converged after 10 steps
    assert np.all(err <= np.asarray(rec.residual[:, 0]) + 1e-12)  # the recorded error bound
    # the trajectory, through the loss it records (RK4 at dt·λ1 ≤ 1/8: 16 substeps a step)
    fine = flows.stable_flow(loss, w0, U0, eta=eta, n_steps=20, substeps=16)[1]
    tt = t[:20, None]
    w_exact = np.asarray(w0) * np.exp(-a * np.asarray(d) * (tt + c * tt**2 / 2))
    loss_exact = 0.5 * a * (1.0 + c * tt[:, 0]) * (np.asarray(d) * w_exact**2).sum(1)
    np.testing.assert_allclose(np.asarray(fine.loss), loss_exact, rtol=1e-5)
    crossed = np.flatnonzero(np.asarray(rec.lam[:, 0]) > 2.0 / eta)
    k_exact = int(np.floor((2.0 / (eta * a) - 1.0) / (c * eta))) + 1
    assert crossed.size and crossed[0] == k_exact
    # the same flow inside run_flows (which it shares its step with), and in two pieces
    rf = flows.run_flows(
        loss,
        w0,
        U0,
        eta=eta,
        n_steps=n,
        substeps=2,
        eig_iterations=3,
        solve=lambda al, be, m: (jnp.zeros_like(al), jnp.zeros(())),
    )[1]
    np.testing.assert_allclose(np.asarray(rf.lam_stable), np.asarray(rec.lam), rtol=1e-12)
    state, first = flows.stable_flow(loss, w0, U0, eta=eta, n_steps=25)
    second = flows.stable_flow(loss, w0, U0, eta=eta, n_steps=n - 25, state=state, first_step=25)
    np.testing.assert_allclose(np.asarray(second[1].lam), np.asarray(rec.lam[25:]), rtol=1e-12)
