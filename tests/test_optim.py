"""Optimisers by name and their edge-of-stability thresholds.

References are independent of the code under test: the hand-derived iteration matrices of each
optimiser on F(w) = ½ wᵀHw (checked against the Jacobian of optax's own update), quadratics
built with a prescribed spectrum H = Q diag(λ) Qᵀ, second moments summed by hand, and Python
loops over optax transformations constructed directly.

What is exact and what is approximate: for gd, momentum and nesterov the quadratic *is* the
linear system, so the thresholds are exact. For adam and rmsprop they are the thresholds of the
frozen-preconditioner linearisation: the simulations below run optax's real update, but before
each step the second-moment state ν is set so that the update's P = √ν̂ + ε equals a fixed P
(and Adam's count starts at 1000, so m̂ = m to rounding: the t → ∞ limit the threshold is
derived for). Real Adam and RMSprop adapt P to the gradients, which is what makes them
self-stabilise (Cohen et al. 2022); that is not tested here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynloss_jax import optim

N = 6
ETA = 0.05
STEPS = 300
MOMENTUM_NAMES = ("gd", "momentum", "nesterov")


def _orthogonal(n, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))[0]


def _spectrum(n, top):
    """Top curvature ``top``, the rest spread over (0, 0.9·top)."""
    return np.r_[top, np.linspace(0.05, 0.9, n - 1) * top][:n]


def _iteration_matrix(name, x, beta):
    """Hand-derived one-step map of (w, v) on the 1-D quadratic λw²/2, with x = ηλ and the
    trace v scaled by η (so the matrix depends on x only): see the module docstring."""
    if name == "gd":
        return np.array([[1 - x]])
    if name == "momentum":  # v' = βv + λw, w' = w − ηv'
        return np.array([[1 - x, -beta], [x, beta]])
    # nesterov: v' = βv + λw, w' = w − η(λw + βv')
    return np.array([[1 - (1 + beta) * x, -(beta**2)], [x, beta]])


def _radius(m):
    return np.max(np.abs(np.linalg.eigvals(m)))


def _with(opt_state, cls, **fields):
    """The state with the fields of its first ``cls`` node replaced."""
    return tuple(s._replace(**fields) if isinstance(s, cls) else s for s in opt_state)


def _iterate(step, w, state, steps, stop=1e4):
    """Relative norms ‖w_t‖/‖w_0‖ along a Python loop, stopped once they pass ``stop``."""
    norm0, norms, extra = float(jnp.linalg.norm(w)), [], []
    for _ in range(steps):
        w, state, *more = step(w, state)
        norms.append(float(jnp.linalg.norm(w)) / norm0)
        extra.extend(float(e) for e in more)
        if not norms[-1] < stop:
            break
    return np.array(norms), np.array(extra)


# ---------------------------------------------------------------------------------------------
# 1. gd, momentum, nesterov: exact thresholds on quadratics.


@pytest.mark.parametrize(
    "name, beta",
    [("gd", 0.0)]
    + [(name, beta) for name in ("momentum", "nesterov") for beta in (0.0, 0.5, 0.9, 0.99)],
)
def test_iteration_matrix_is_optax_and_has_unit_radius_at_the_threshold(name, beta):
    """The hand-derived matrix equals the Jacobian of optax's update on λw²/2; its spectral
    radius is 1 exactly at ηλ = η·threshold, below 1 just under it and above 1 just over."""
    hp = {} if name == "gd" else {"beta": beta}
    lam = 3.0
    opt = optim.make_optimizer(name, ETA, **hp)

    def one_step(z):  # z = (w, ηv)
        w = z[:1]
        state = opt.init(w)
        if name != "gd":
            state = _with(state, optax.TraceState, trace=z[1:] / ETA)
        updates, state = opt.update(lam * w, state)
        w = w + updates
        return w if name == "gd" else jnp.concatenate([w, ETA * state[0].trace])

    jac = jax.jacfwd(one_step)(jnp.zeros(1 if name == "gd" else 2))
    np.testing.assert_allclose(jac, _iteration_matrix(name, ETA * lam, beta), atol=1e-15)
    x_edge = ETA * optim.stability_threshold(name, ETA, **hp)
    assert abs(_radius(_iteration_matrix(name, x_edge, beta)) - 1) < 1e-10
    assert _radius(_iteration_matrix(name, 0.999 * x_edge, beta)) < 1
    assert _radius(_iteration_matrix(name, 1.001 * x_edge, beta)) > 1


def test_thresholds_closed_forms():
    eta = 0.1
    assert optim.stability_threshold("gd", eta) == pytest.approx(20.0, rel=1e-15)
    assert optim.stability_threshold("momentum", eta, beta=0.5) == pytest.approx(30.0, rel=1e-15)
    assert optim.stability_threshold("nesterov", eta, beta=0.5) == pytest.approx(15.0, rel=1e-15)
    assert optim.stability_threshold("adam", eta, b1=0.5) == pytest.approx(60.0, rel=1e-15)
    assert optim.stability_threshold("rmsprop", eta) == pytest.approx(20.0, rel=1e-15)
    # β = 0 (β₁ = 0) reduces every momentum variant to plain (preconditioned) GD
    for name, key in [("momentum", "beta"), ("nesterov", "beta"), ("adam", "b1")]:
        assert optim.stability_threshold(name, eta, **{key: 0.0}) == pytest.approx(20.0)
    etas = jnp.array([0.1, 0.2])
    np.testing.assert_allclose(
        optim.stability_threshold("momentum", etas, beta=0.9), [38.0, 19.0], rtol=1e-15
    )


@functools.cache
def _step_fn(name):
    """Jitted optimiser step on ½wᵀHw; η and β are traced arguments."""

    @jax.jit
    def step(w, state, h, eta, hp):
        updates, state = optim.make_optimizer(name, eta, **hp).update(h @ w, state)
        return w + updates, state

    return step


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, N])
@pytest.mark.parametrize("name", MOMENTUM_NAMES)
def test_quadratic_stable_below_and_divergent_above_the_threshold(name, n, dtype):
    """Top curvature at 0.98× threshold: ‖w‖ decays 100-fold in 300 steps; at 1.02×: it grows
    more than 1000-fold (the other curvatures lie well inside the stable range)."""
    hp = {} if name == "gd" else {"beta": 0.9}
    q = _orthogonal(n)
    threshold = optim.stability_threshold(name, ETA, **hp)
    w0 = jnp.asarray(q @ np.ones(n), dtype)
    eta = jnp.asarray(ETA, dtype)
    hp_arrays = {k: jnp.asarray(v, dtype) for k, v in hp.items()}
    for factor in (0.98, 1.02):
        h = jnp.asarray((q * _spectrum(n, factor * threshold)) @ q.T, dtype)
        state = optim.make_optimizer(name, ETA, **hp).init(w0)

        def step(w, s, h=h):
            return _step_fn(name)(w, s, h, eta, hp_arrays)

        norms, _ = _iterate(step, w0, state, STEPS)
        assert np.all(np.isfinite(norms))
        if factor < 1:
            assert norms.size == STEPS and norms[-1] < 1e-2, norms[-1]
        else:
            assert norms[-1] > 1e3, norms[-1]


# ---------------------------------------------------------------------------------------------
# 2. adam and rmsprop: the frozen-preconditioner linearisation.


def _preconditioned_problem(factor, threshold, seed=1):
    """Diagonal P ∈ [0.2, 3] and H = P^{1/2} S P^{1/2}, S with a prescribed spectrum whose top
    value is ``factor·threshold``: the eigenvalues of P⁻¹H are those of S."""
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(0.2), np.log(3.0), N))
    q = _orthogonal(N, seed)
    s = (q * _spectrum(N, factor * threshold)) @ q.T
    return p, np.sqrt(p)[:, None] * s * np.sqrt(p)[None, :]


@functools.cache
def _frozen_step(name):
    """Jitted ``step(w, state, h, p)``: optax's real update (default hyperparameters, η = ETA)
    with ν set beforehand so that this update's P equals ``p``.

    Adam: the update uses ν' = β₂ν + (1−β₂)g² and P = √(ν'/(1−β₂ᵗ⁺¹)) + ε, so
    ν = ((p−ε)²(1−β₂ᵗ⁺¹) − (1−β₂)g²)/β₂; rmsprop the same with no bias correction. Also returns
    the relative error of :func:`optim.preconditioner` on the new state against ``p``.
    """
    hp = optim.hyperparams(name)
    opt = optim.make_optimizer(name, ETA, **hp)
    decay = hp["b2"] if name == "adam" else hp["decay"]
    cls = optax.ScaleByAdamState if name == "adam" else optax.ScaleByRmsState

    @jax.jit
    def step(w, state, h, p):
        g = h @ w
        target = (p - hp["eps"]) ** 2
        if name == "adam":
            target = target * (1 - decay ** (state[0].count + 1))
        state = _with(state, cls, nu=(target - (1 - decay) * g**2) / decay)
        updates, state = opt.update(g, state)
        p_seen = optim.preconditioner(name, state, hp)
        return w + updates, state, jnp.max(jnp.abs(p_seen - p) / p)

    return step, opt, hp


def _frozen_init(name, w):
    step, opt, _ = _frozen_step(name)
    state = opt.init(w)
    if name == "adam":  # m̂ = m: the t → ∞ limit (from t = 0 the first steps are larger)
        state = _with(state, optax.ScaleByAdamState, count=jnp.int32(1000))
    return state


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_frozen_preconditioner_iteration_matrix(name):
    """With P fixed and m̂ = m, the map (w, m) → (w', m') of optax's update (its Jacobian) is
    [[I − η(1−β₁)P⁻¹H, −ηβ₁P⁻¹], [(1−β₁)H, β₁I]] for adam and I − ηP⁻¹H for rmsprop; its
    spectral radius is 1 exactly when λ₁(P⁻¹H) equals the stated threshold."""
    step, _, hp = _frozen_step(name)
    threshold = optim.stability_threshold(name, ETA)
    state = _frozen_init(name, jnp.zeros(N))

    def one_step(z, h, p):
        if name == "rmsprop":
            return step(z, state, h, p)[0]
        w, state_, _ = step(z[:N], _with(state, optax.ScaleByAdamState, mu=z[N:]), h, p)
        return jnp.concatenate([w, state_[0].mu])

    jacobian = jax.jit(jax.jacfwd(one_step))
    for factor in (0.999, 1.0, 1.001):
        p, h = _preconditioned_problem(factor, threshold)
        pinv = np.diag(1 / p)
        if name == "adam":
            b1 = hp["b1"]
            want = np.block(
                [
                    [np.eye(N) - ETA * (1 - b1) * pinv @ h, -ETA * b1 * pinv],
                    [(1 - b1) * h, b1 * np.eye(N)],
                ]
            )
        else:
            want = np.eye(N) - ETA * pinv @ h
        size = 2 * N if name == "adam" else N
        jac = jacobian(jnp.zeros(size), jnp.asarray(h), jnp.asarray(p))
        np.testing.assert_allclose(jac, want, rtol=1e-12, atol=1e-14)
        radius = _radius(want)
        if factor == 1.0:
            assert abs(radius - 1) < 1e-10, radius
        else:
            assert (radius < 1) == (factor < 1), (factor, radius)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_frozen_preconditioner_stable_below_and_divergent_above(name):
    """Optax's update with P frozen (see :func:`_frozen_step`): at 0.98× the threshold on
    λ₁(P⁻¹H) ‖w‖ decays 100-fold in 300 steps, at 1.02× it grows more than 1000-fold, and
    :func:`optim.preconditioner` returns the frozen P at every step (to rounding)."""
    step, _, hp = _frozen_step(name)
    threshold = optim.stability_threshold(name, ETA, **hp)
    w0 = jnp.asarray(_orthogonal(N, 2) @ np.ones(N))
    for factor in (0.98, 1.02):
        p, h = map(jnp.asarray, _preconditioned_problem(factor, threshold))
        norms, p_err = _iterate(
            lambda w, s, h=h, p=p: step(w, s, h, p), w0, _frozen_init(name, w0), STEPS
        )
        assert np.all(np.isfinite(norms))
        # ν is set by cancelling (1−β)g² against a target, so P carries a rounding error ∝ ‖w‖²
        assert np.all(p_err < 1e-10 * (1 + norms**2)), np.max(p_err / (1 + norms**2))
        if factor < 1:
            assert norms.size == STEPS and norms[-1] < 1e-2, norms[-1]
        else:
            assert norms[-1] > 1e3, norms[-1]


# ---------------------------------------------------------------------------------------------
# 3. The preconditioner read from the state.


def test_adam_preconditioner_equals_bias_corrected_second_moment_by_hand():
    """P = √(ν/(1−β₂ᵗ)) + ε with ν = (1−β₂) Σ_s β₂^{t−s} g_s², on a pytree of parameters; and P
    is the denominator of the t-th update: −update·P/η = m̂ = m/(1−β₁ᵗ)."""
    b1, b2, eps, eta = 0.8, 0.95, 1e-3, 0.1
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    rng = np.random.default_rng(3)
    grads = [
        jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params) for _ in range(7)
    ]
    opt = optim.make_optimizer("adam", eta, b1=b1, b2=b2, eps=eps)
    state = opt.init(params)
    hp = {"b1": b1, "b2": b2, "eps": eps}
    np.testing.assert_allclose(optim.preconditioner("adam", state, hp)["a"], eps)  # t = 0
    for t, g in enumerate(grads, start=1):
        updates, state = opt.update(g, state)
        p = optim.preconditioner("adam", state, hp)
        for key in params:
            gs = np.stack([np.asarray(gr[key]) for gr in grads[:t]])
            weights = b2 ** np.arange(t - 1, -1, -1.0)
            nu = (1 - b2) * np.tensordot(weights, gs**2, axes=1)
            np.testing.assert_allclose(p[key], np.sqrt(nu / (1 - b2**t)) + eps, rtol=1e-12)
            m = (1 - b1) * np.tensordot(b1 ** np.arange(t - 1, -1, -1.0), gs, axes=1)
            np.testing.assert_allclose(-updates[key] * p[key] / eta, m / (1 - b1**t), rtol=1e-12)


def test_other_preconditioners():
    rng = np.random.default_rng(4)
    w = jnp.zeros(5)
    grads = [jnp.asarray(rng.normal(size=5)) for _ in range(4)]
    decay, eps = 0.7, 1e-4
    opt = optim.make_optimizer("rmsprop", 0.1, decay=decay, eps=eps)
    state = opt.init(w)
    for g in grads:
        _, state = opt.update(g, state)
    nu = sum((1 - decay) * decay ** (3 - s) * np.asarray(g) ** 2 for s, g in enumerate(grads))
    p = optim.preconditioner("rmsprop", state, {"decay": decay, "eps": eps})
    np.testing.assert_allclose(p, np.sqrt(nu) + eps, rtol=1e-12)
    for name in ("momentum", "nesterov"):
        state = optim.make_optimizer(name, 0.1).init(w)
        np.testing.assert_array_equal(optim.preconditioner(name, state), np.ones(5))
    gd_state = optim.make_optimizer("gd", 0.1).init(w)
    np.testing.assert_array_equal(optim.preconditioner("gd", gd_state, params=w), np.ones(5))
    with pytest.raises(ValueError, match="params"):
        optim.preconditioner("gd", gd_state)


def test_preconditioned_matvec_has_the_spectrum_of_p_inverse_h():
    """P^{-1/2} H P^{-1/2}, assembled column by column from the matvec, is symmetric with the
    eigenvalues of P⁻¹H; on a pytree it acts leaf by leaf."""
    p, h = _preconditioned_problem(1.0, 10.0)
    matvec = optim.preconditioned_matvec(lambda v: jnp.asarray(h) @ v, jnp.asarray(p))
    dense = np.asarray(jax.vmap(matvec)(jnp.eye(N))).T
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=1e-13)
    want = np.sort(np.linalg.eigvals(np.diag(1 / p) @ h).real)[::-1]
    np.testing.assert_allclose(np.linalg.eigvalsh(dense)[::-1], want, rtol=1e-12)
    np.testing.assert_allclose(want[0], 10.0, rtol=1e-12)
    tree = optim.preconditioned_matvec(
        lambda v: {"a": 2 * v["a"], "b": -v["b"]}, {"a": jnp.full(2, 4.0), "b": jnp.full(3, 0.25)}
    )
    out = tree({"a": jnp.ones(2), "b": jnp.ones(3)})
    np.testing.assert_allclose(out["a"], 0.5)
    np.testing.assert_allclose(out["b"], -4.0)


# ---------------------------------------------------------------------------------------------
# 4. Traced hyperparameters: vmap over runs of a compiled scan against Python-loop optax.

X = np.random.default_rng(5).normal(size=(12, 3))
Y = np.random.default_rng(6).normal(size=(12, 2))
SWEEP = {  # three runs per optimiser: η and hyperparameters per run
    "gd": {"eta": [0.05, 0.1, 0.2]},
    "momentum": {"eta": [0.05, 0.1, 0.02], "beta": [0.0, 0.5, 0.9]},
    "nesterov": {"eta": [0.05, 0.1, 0.02], "beta": [0.3, 0.5, 0.9]},
    "adam": {
        "eta": [0.01, 0.03, 0.05],
        "b1": [0.0, 0.9, 0.5],
        "b2": [0.9, 0.999, 0.99],
        "eps": [1e-8, 1e-3, 1e-6],
    },
    "rmsprop": {"eta": [0.01, 0.03, 0.05], "decay": [0.5, 0.9, 0.99], "eps": [1e-8, 1e-3, 1e-6]},
}


def _mlp_loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return 0.5 * jnp.mean((hidden @ params["w2"] - y) ** 2)


_mlp_grad = jax.jit(jax.grad(_mlp_loss))


def _optax_twin(name, eta, **hp):
    """The optax transformation each name stands for, built directly from Python floats."""
    if name == "gd":
        return optax.sgd(eta)
    if name == "momentum":
        return optax.sgd(eta, momentum=hp["beta"])
    if name == "nesterov":
        return optax.sgd(eta, momentum=hp["beta"], nesterov=True)
    if name == "adam":
        return optax.adam(eta, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    return optax.rmsprop(eta, decay=hp["decay"], eps=hp["eps"], eps_in_sqrt=False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(SWEEP))
def test_vmapped_sweep_in_a_scan_equals_python_loop(name, dtype):
    """20 steps on a tiny tanh network: jit(vmap over runs(lax.scan)) with η and the
    hyperparameters traced, state in the scan carry, against one Python loop per run."""
    steps = 20
    key_1, key_2 = jax.random.split(jax.random.key(7))
    params0 = {
        "w1": jax.random.normal(key_1, (3, 4), dtype),
        "b1": jnp.zeros(4, dtype),
        "w2": jax.random.normal(key_2, (4, 2), dtype),
    }
    x, y = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
    sweep = {k: jnp.asarray(v, dtype) for k, v in SWEEP[name].items()}

    @jax.jit
    @jax.vmap
    def run(sweep_run):
        hp = dict(sweep_run)
        opt = optim.make_optimizer(name, hp.pop("eta"), **hp)

        def body(carry, _):
            params, state = carry
            updates, state = opt.update(jax.grad(_mlp_loss)(params, x, y), state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(body, (params0, opt.init(params0)), None, length=steps)[0][0]

    got = run(sweep)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    for r in range(3):
        hp = {k: float(v[r]) for k, v in SWEEP[name].items()}
        opt = _optax_twin(name, hp.pop("eta"), **hp)
        params, state = params0, opt.init(params0)
        if r == 0:  # an array-only pytree, as a scan carry or a checkpoint needs
            state_mine = optim.make_optimizer(name, 0.1).init(params0)
            assert jax.tree.structure(state_mine) == jax.tree.structure(state)
            assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state_mine))
        for _ in range(steps):
            updates, state = opt.update(_mlp_grad(params, x, y), state, params)
            params = optax.apply_updates(params, updates)
        for key in params:
            assert got[key].dtype == dtype
            np.testing.assert_allclose(got[key][r], params[key], rtol=rtol, atol=rtol * 1e-2)
        assert not np.allclose(params["w1"], params0["w1"])  # the runs did move


# ---------------------------------------------------------------------------------------------
# 5. Names, values, labels.


def test_bad_names_and_values_raise_with_the_name():
    with pytest.raises(ValueError, match="adamw"):
        optim.make_optimizer("adamw", 0.1)
    with pytest.raises(ValueError, match="eta"):
        optim.make_optimizer("gd", -0.1)
    with pytest.raises(ValueError, match="eta"):
        optim.make_optimizer("momentum", jnp.array([0.1, np.nan]))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 1.0"):
        optim.make_optimizer("momentum", 0.1, beta=1.0)
    with pytest.raises(ValueError, match="b2"):
        optim.make_optimizer("adam", 0.1, b2=-0.5)
    with pytest.raises(ValueError, match="eps"):
        optim.make_optimizer("rmsprop", 0.1, eps=-1.0)
    with pytest.raises(ValueError, match="beta"):  # a hyperparameter adam does not take
        optim.make_optimizer("adam", 0.1, beta=0.9)
    with pytest.raises(ValueError, match="b1"):
        optim.stability_threshold("adam", 0.1, b1=1.0)
    with pytest.raises(ValueError, match="sgd"):
        optim.stability_threshold("sgd", 0.1)
    with pytest.raises(ValueError, match="lbfgs"):
        optim.threshold_label("lbfgs")
    with pytest.raises(ValueError, match="decay"):
        optim.preconditioner("rmsprop", (), {"decay": 2.0})
    # traced values are not checked (they are only known inside the compiled program)
    jax.jit(lambda b: optim.make_optimizer("adam", 0.1, b1=b).init(jnp.ones(2)))(1.5)


def test_registry_and_labels():
    assert tuple(optim.HYPERPARAMS) == ("gd", "momentum", "nesterov", "adam", "rmsprop")
    assert optim.HYPERPARAMS["adam"] == {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert optim.hyperparams("adam", b1=0.5) == {"b1": 0.5, "b2": 0.999, "eps": 1e-8}
    for name, hp in optim.HYPERPARAMS.items():
        assert set(hp) <= set(optim.RANGES)
        assert optim.threshold_label(name)
    assert optim.threshold_label("gd") == "2/η"
    assert optim.threshold_label("momentum") == "2(1+β)/η"
    assert optim.threshold_label("adam") == "(2+2β₁)/((1−β₁)η) on P⁻¹H"
