"""The landscape module (plane slices, projections, top Hessian eigenvectors, filter-normalised
random planes) and the Fig. 1 and Fig. 2 experiments run end to end in their smallest (smoke)
form."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dynloss_jax import engine, landscape, load_run
from dynloss_jax.data import spiral
from dynloss_jax.losses import get_loss
from dynloss_jax.model import flat_model
from dynloss_jax.spec import RunSpec, make_hyper


def _orthonormal(key, n, k):
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(key, (n, k))))
    return q.T  # k × n, orthonormal rows


def _quadratic(n, seed=0):
    """f(w) = ½ wᵀHw + gᵀw + c with H = Q diag(λ) Qᵀ, λ = 5, 3, then values in (−1, 1)."""
    rng = np.random.default_rng(seed)
    lam = np.concatenate([[5.0, 3.0], rng.uniform(-1, 1, n - 2)])
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    h = q @ np.diag(lam) @ q.T
    g, c = rng.normal(size=n), 0.7

    def f(w):
        return 0.5 * w @ (jnp.asarray(h) @ w) + jnp.asarray(g) @ w + c

    return f, h, g, c, lam, q


def test_quadratic_slice_is_the_exact_paraboloid():
    n = 12
    f, h, g, c, _, _ = _quadratic(n)
    w0 = np.random.default_rng(1).normal(size=n)
    v1, v2 = _orthonormal(jax.random.key(2), n, 2)
    a = np.linspace(-1.0, 1.0, 7)
    b = np.linspace(-0.5, 2.0, 5)  # a different grid, so a transposed result would fail
    got = np.asarray(
        landscape.plane_slice(
            f, jnp.asarray(w0), jnp.asarray(v1), jnp.asarray(v2), jnp.asarray(a), jnp.asarray(b)
        )
    )
    grad = h @ w0 + g
    f0 = 0.5 * w0 @ h @ w0 + g @ w0 + c
    aa, bb = np.meshgrid(a, b, indexing="ij")
    want = (
        f0
        + aa * (grad @ v1)
        + bb * (grad @ v2)
        + 0.5 * (aa**2 * (v1 @ h @ v1) + 2 * aa * bb * (v1 @ h @ v2) + bb**2 * (v2 @ h @ v2))
    )
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_projection_recovers_known_plane_coordinates():
    n, k = 20, 9
    v1, v2, n1, n2 = _orthonormal(jax.random.key(3), n, 4)
    rng = np.random.default_rng(4)
    w_t = rng.normal(size=n)
    a, b = rng.normal(size=k), rng.normal(size=k)
    off = rng.normal(size=(k, 2))  # components orthogonal to the plane are dropped
    points = w_t + a[:, None] * v1 + b[:, None] * v2 + off[:, :1] * n1 + off[:, 1:] * n2
    pa, pb = landscape.project(
        jnp.asarray(points), jnp.asarray(w_t), jnp.asarray(v1), jnp.asarray(v2)
    )
    np.testing.assert_allclose(pa, a, atol=1e-12)
    np.testing.assert_allclose(pb, b, atol=1e-12)
    pa0, pb0 = landscape.project(
        jnp.asarray(w_t)[None], jnp.asarray(w_t), jnp.asarray(v1), jnp.asarray(v2)
    )
    np.testing.assert_array_equal(np.asarray(pa0), [0.0])
    np.testing.assert_array_equal(np.asarray(pb0), [0.0])


def test_top_vectors_of_a_prescribed_spectrum():
    n = 30
    f, _, _, _, lam, q = _quadratic(n, seed=5)
    res = jax.jit(lambda key, w: landscape.hessian_top_vectors(key, f, w, k=2, num_matvecs=n))(
        jax.random.key(6), jnp.zeros(n)
    )
    np.testing.assert_allclose(res.top_K, [5.0, 3.0], rtol=1e-10)
    for i in range(2):
        v = np.asarray(res.vectors_KxN[i])
        assert abs(abs(v @ q[:, i]) - 1) < 1e-10
        assert v[np.argmax(np.abs(v))] > 0  # the sign convention
    assert np.all(np.asarray(res.residual_K) < 1e-8)


def _small_network_loss(width=4, n_points=4, seed=0):
    model = flat_model(width, 3)
    x, y = spiral(n_points, 3, seed=seed)  # 12 points
    gamma = jnp.asarray([2.0, 0.6, 0.4])
    loss = get_loss("dce")

    def f(w):
        return loss(model.apply(w, jnp.asarray(x)), jnp.asarray(y), gamma)

    return model, f


def test_top_vectors_match_dense_hessian_on_a_small_network():
    model, f = _small_network_loss()
    w = model.init(jax.random.key(0))
    dense = np.asarray(jax.jit(jax.hessian(f))(w))
    evals, evecs = np.linalg.eigh(dense)
    assert evals[-2] - evals[-3] > 1e-3 * evals[-1]  # the top-2 eigenvectors are well defined
    res = jax.jit(
        lambda key, w: landscape.hessian_top_vectors(key, f, w, k=2, num_matvecs=model.n_params)
    )(jax.random.key(1), w)
    np.testing.assert_allclose(res.top_K, evals[::-1][:2], rtol=1e-9)
    for i in range(2):
        overlap = float(np.asarray(res.vectors_KxN[i]) @ evecs[:, -1 - i])
        assert abs(abs(overlap) - 1) < 1e-8
    v = np.asarray(res.vectors_KxN)
    np.testing.assert_allclose(v @ v.T, np.eye(2), atol=1e-10)


def test_network_slice_matches_pointwise_evaluation():
    model, f = _small_network_loss()
    w = model.init(jax.random.key(2))
    v1, v2 = _orthonormal(jax.random.key(3), model.n_params, 2)
    a, b = jnp.asarray([-1.0, 0.0, 0.5]), jnp.asarray([-0.3, 0.0, 0.2, 1.0])
    got = jax.jit(landscape.plane_slice, static_argnums=0)(
        f, w, jnp.asarray(v1), jnp.asarray(v2), a, b
    )
    f_jit = jax.jit(f)
    want = [[float(f_jit(w + ai * v1 + bj * v2)) for bj in b] for ai in a]
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert float(got[1, 1]) == pytest.approx(float(f(w)), rel=1e-14)


def test_hessian_top_vectors_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_matvecs"):
        landscape.hessian_top_vectors(
            jax.random.key(0), lambda w: w @ w, jnp.zeros(4), k=3, num_matvecs=2
        )


# --- filter-normalised random directions (Li et al. 2018) ------------------------------------

# Jitted once per layout (leaf_shapes is static), so the tests share compilations.
_direction = jax.jit(landscape.filter_normalized_direction, static_argnums=2)
_plane = jax.jit(landscape.random_plane, static_argnums=2)


@functools.cache
def _net(width, depth, dtype="float64"):
    """The real flat model (its layout: ``leaf_shapes``, ``unravel``) and parameters whose entries
    have scales spread over 0.1–3, so kernel columns have distinctly different norms. Drawn with
    NumPy rather than ``model.init``: only the layout matters here, and compiling flax's init
    would cost more than the tests."""
    model = flat_model(width, 3, depth=depth, dtype=dtype)
    rng = np.random.default_rng(10 * depth + width)
    w = rng.normal(size=model.n_params) * rng.uniform(0.1, 3.0, size=model.n_params)
    return model, jnp.asarray(w, dtype)


def _layers(model, w_N):
    """{layer name: (kernel (fan_in, fan_out), bias)} of a flat vector, read through flax's own
    unravel (an independent path to the layout the direction code walks by offsets)."""
    params = model.unravel(jnp.asarray(w_N))["params"]
    return {name: (np.asarray(p["kernel"]), np.asarray(p["bias"])) for name, p in params.items()}


def _assert_filter_normalised(model, w_N, d_N, rtol=1e-12):
    assert d_N.shape == (model.n_params,) and d_N.dtype == w_N.dtype
    w_layers, d_layers = _layers(model, w_N), _layers(model, d_N)
    assert w_layers.keys() == d_layers.keys()
    for name, (wk, wb) in w_layers.items():
        dk, db = d_layers[name]
        np.testing.assert_allclose(
            np.linalg.norm(dk, axis=0), np.linalg.norm(wk, axis=0), rtol=rtol, err_msg=name
        )
        assert np.all(wb != 0), name  # so d's zero biases are set, not copied from w
        np.testing.assert_array_equal(db, 0.0, err_msg=name)
    # random, not the parameters themselves (which have the right column norms too)
    wk_all, dk_all = (
        np.concatenate([k.ravel() for k, _ in x.values()]) for x in (w_layers, d_layers)
    )
    assert abs(wk_all @ dk_all) < 0.9 * np.linalg.norm(wk_all) * np.linalg.norm(dk_all)


@pytest.mark.parametrize(
    "width, depth, dtype, rtol",
    [(5, 1, "float64", 1e-12), (4, 2, "float64", 1e-12), (4, 2, "float32", 1e-6)],
)
def test_filter_normalised_direction_has_the_parameters_column_norms(width, depth, dtype, rtol):
    model, w = _net(width, depth, dtype)
    assert len(model.leaf_shapes) == 2 * (depth + 1)
    d = _direction(jax.random.key(1), w, model.leaf_shapes)
    _assert_filter_normalised(model, w, d, rtol=rtol)


@pytest.mark.parametrize("c", [3.0, 0.25, -2.0])
def test_scaling_a_units_incoming_weights_scales_its_filter(c):
    """Filter normalisation's point: the direction follows the scale of each unit. Scaling
    hidden unit j's incoming weights by c scales that filter of d by |c| and leaves the rest of d
    unchanged (same key)."""
    model, w = _net(4, 2)
    params = model.unravel(w)
    j = 2
    kernel = params["params"]["Dense_1"]["kernel"]
    params["params"]["Dense_1"]["kernel"] = kernel.at[:, j].multiply(c)
    w_scaled = ravel_pytree(params)[0]
    assert np.sum(np.asarray(w_scaled) != np.asarray(w)) == kernel.shape[0]
    key = jax.random.key(3)
    d = _layers(model, _direction(key, w, model.leaf_shapes))
    d_scaled = _layers(model, _direction(key, w_scaled, model.leaf_shapes))
    for name in d:
        for got, want in zip(d_scaled[name], d[name], strict=True):
            if name == "Dense_1" and got.ndim == 2:
                np.testing.assert_allclose(got[:, j], abs(c) * want[:, j], rtol=1e-12)
                got, want = np.delete(got, j, axis=1), np.delete(want, j, axis=1)
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_directions_are_deterministic_in_the_key_and_differ_across_keys():
    model, w = _net(4, 2)
    shapes = model.leaf_shapes
    key = jax.random.key(5)
    d = np.asarray(_direction(key, w, shapes))
    np.testing.assert_array_equal(_direction(key, w, shapes), d)
    other = np.asarray(_direction(jax.random.key(6), w, shapes))
    kernels = d != 0  # biases are 0 in both
    assert np.all(other[kernels] != d[kernels])
    d1, d2 = (np.asarray(v) for v in _plane(key, w, shapes))
    e1, e2 = _plane(key, w, shapes)
    np.testing.assert_array_equal(e1, d1)
    np.testing.assert_array_equal(e2, d2)
    for v in (d1, d2):
        _assert_filter_normalised(model, w, v)
    assert abs(d1 @ d2) < 0.9 * np.linalg.norm(d1) * np.linalg.norm(d2)  # independent draws
    assert np.all(d1[kernels] != d2[kernels])


def test_project_onto_recovers_coefficients_on_a_non_orthogonal_plane():
    n, k = 20, 9
    q1, q2, n1, n2 = _orthonormal(jax.random.key(7), n, 4)
    d1, d2 = 2.0 * q1, 0.6 * q1 + 0.5 * q2  # cos(d1, d2) ≈ 0.77, different lengths
    rng = np.random.default_rng(8)
    w_t = rng.normal(size=n)
    a, b = rng.normal(size=k), rng.normal(size=k)
    off = rng.normal(size=(k, 2))  # components orthogonal to the plane are dropped
    points = w_t + a[:, None] * d1 + b[:, None] * d2 + off[:, :1] * n1 + off[:, 1:] * n2
    args = jnp.asarray(points), jnp.asarray(w_t), jnp.asarray(d1), jnp.asarray(d2)
    pa, pb = landscape.project_onto(*args)
    np.testing.assert_allclose(pa, a, atol=1e-12)
    np.testing.assert_allclose(pb, b, atol=1e-12)
    naive_a, _ = landscape.project(*args)  # dot products alone are wrong on this plane
    assert np.max(np.abs(np.asarray(naive_a) - a)) > 0.1
    # On the real network's filter-normalised plane.
    model, w = _net(4, 2)
    r1, r2 = _plane(jax.random.key(10), w, model.leaf_shapes)
    pts = w + jnp.asarray(a)[:, None] * r1 + jnp.asarray(b)[:, None] * r2
    ra, rb = landscape.project_onto(pts, w, r1, r2)
    np.testing.assert_allclose(ra, a, atol=1e-12)
    np.testing.assert_allclose(rb, b, atol=1e-12)


def test_project_onto_equals_project_for_orthonormal_directions():
    n, k = 20, 9
    v1, v2 = (jnp.asarray(v) for v in _orthonormal(jax.random.key(11), n, 2))
    rng = np.random.default_rng(12)
    w_t, points = jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=(k, n)))
    got, want = landscape.project_onto(points, w_t, v1, v2), landscape.project(points, w_t, v1, v2)
    for g, e in zip(got, want, strict=True):
        assert g.shape == (k,)
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-13)


def test_random_plane_under_vmap_and_jit():
    model, w = _net(4, 2)
    shapes, n = model.leaf_shapes, model.n_params
    keys = jax.random.split(jax.random.key(14), 3)
    rng = np.random.default_rng(15)
    w_KxN = jnp.asarray(np.asarray(w) * rng.uniform(0.5, 2.0, size=(3, n)))
    planes = jax.jit(jax.vmap(lambda key, w: landscape.random_plane(key, w, shapes)))
    d1_KxN, d2_KxN = planes(keys, w_KxN)  # one plane per (key, point)
    assert d1_KxN.shape == d2_KxN.shape == (3, n)
    for i in range(3):
        e1, e2 = _plane(keys[i], w_KxN[i], shapes)
        np.testing.assert_allclose(d1_KxN[i], e1, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(d2_KxN[i], e2, rtol=1e-13, atol=1e-15)
        _assert_filter_normalised(model, w_KxN[i], d1_KxN[i])
    assert not np.allclose(d1_KxN[0], d1_KxN[1])


def test_project_onto_under_vmap_and_jit_matches_numpy_lstsq():
    model, w = _net(4, 2)
    n = model.n_params
    rng = np.random.default_rng(16)
    d1_KxN, d2_KxN = (jnp.asarray(rng.normal(size=(3, n))) for _ in range(2))
    traj_TxN = np.asarray(w) + 0.1 * rng.normal(size=(5, n))
    a_KxT, b_KxT = jax.jit(jax.vmap(landscape.project_onto, (None, None, 0, 0)))(
        jnp.asarray(traj_TxN), w, d1_KxN, d2_KxN
    )
    assert a_KxT.shape == b_KxT.shape == (3, 5)
    for i in range(3):
        basis_Nx2 = np.stack([d1_KxN[i], d2_KxN[i]], axis=1)
        coef_2xT = np.linalg.lstsq(basis_Nx2, (traj_TxN - np.asarray(w)).T, rcond=None)[0]
        np.testing.assert_allclose(a_KxT[i], coef_2xT[0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b_KxT[i], coef_2xT[1], rtol=1e-10, atol=1e-13)


def test_filter_normalized_direction_rejects_a_mismatched_layout():
    model = flat_model(3, 3)
    w = jnp.zeros(model.n_params)
    with pytest.raises(ValueError, match="flat vector"):
        landscape.filter_normalized_direction(jax.random.key(1), w[:-1], model.leaf_shapes)
    with pytest.raises(ValueError, match="kernels"):
        landscape.filter_normalized_direction(jax.random.key(1), jnp.zeros(8), ((2, 2, 2),))


# --- the experiments, smallest form ----------------------------------------------------------


def _horizontal_lines(ax):
    return {
        round(float(line.get_ydata()[0]), 9)
        for line in ax.get_lines()
        if len(set(np.asarray(line.get_ydata(), float))) == 1 and len(line.get_ydata()) == 2
    }


@pytest.fixture(scope="module")
def fig2_folder(tmp_path_factory):
    from experiments import fig2_dynamics

    out = tmp_path_factory.mktemp("fig2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNLOSS_SMOKE", "1")
        assert fig2_dynamics.main(["--quick", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def fig1_folder(tmp_path_factory):
    from experiments import fig1_sharpness

    out = tmp_path_factory.mktemp("fig1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNLOSS_SMOKE", "1")
        assert fig1_sharpness.main(["--quick", "--quiet", "--out", str(out)]) == 0
    return out


def test_fig2_smoke_writes_a_consistent_folder(fig2_folder):
    from experiments import fig2_dynamics

    assert (fig2_folder / fig2_dynamics.PNG).stat().st_size > 10_000
    run = load_run(fig2_folder)
    snaps, s = fig2_dynamics.load_snapshots(fig2_folder)
    smoke = fig2_dynamics.SMOKE
    assert run.coords["width"] == [smoke["width"]] and run.coords["loss"] == ["dce"]
    scale = smoke["period"] / fig2_dynamics.PAPER_PERIOD
    want_steps = sorted({round(t * scale) for t in fig2_dynamics.PAPER_SNAPSHOTS})
    np.testing.assert_array_equal(snaps["step_S"], want_steps)
    n_snap, n_window = len(want_steps), smoke["next_steps"] + 1
    n_params = flat_model(smoke["width"], 3).n_params
    assert snaps["w_SxLxN"].shape == (n_snap, n_window, n_params)
    assert snaps["slice_SxGxG"].shape == (n_snap, smoke["grid"], smoke["grid"])
    for name in ("lam_Sx2", "slice_SxGxG", "proj_a_SxL", "proj_b_SxL", "replay_loss_SxL"):
        assert np.all(np.isfinite(snaps[name])), name
    assert np.all(snaps["lam_Sx2"][:, 0] >= snaps["lam_Sx2"][:, 1])
    # x_t is the plane's origin, and the slice's centre is F_t(x_t) of the replayed run.
    np.testing.assert_array_equal(snaps["proj_a_SxL"][:, 0], 0.0)
    mid = smoke["grid"] // 2
    np.testing.assert_allclose(
        snaps["slice_SxGxG"][:, mid, mid], snaps["replay_loss_SxL"][:, 0], rtol=1e-12
    )
    # The replay reproduces the recorded run: F over every window equals the recorded F.
    recorded = np.squeeze(run["loss"])
    for i, t in enumerate(snaps["step_S"]):
        window = t + np.arange(n_window)
        seen = window < len(recorded)
        np.testing.assert_allclose(
            snaps["replay_loss_SxL"][i][seen], recorded[window[seen]], rtol=1e-12
        )
    # Projected steps: the first step's displacement is −η∇F_t(x_t), projected on v1 and v2.
    spec = RunSpec(loss="dce", width=smoke["width"], n_steps=smoke["steps"], record_every=1)
    x, y = spiral()
    from dynloss_jax.schedule import gamma

    for i, t in enumerate(snaps["step_S"]):
        g = gamma(int(t), n_classes=3, amplitude=smoke["amplitude"], period=smoke["period"])

        def f(w, g=g):
            return get_loss("dce")(spec.model.apply(w, jnp.asarray(x)), jnp.asarray(y), g)

        step = -smoke["eta"] * np.asarray(jax.jit(jax.grad(f))(jnp.asarray(snaps["w_SxLxN"][i, 0])))
        v1, v2 = snaps["v_Sx2xN"][i]
        np.testing.assert_allclose(
            [snaps["proj_a_SxL"][i, 1], snaps["proj_b_SxL"][i, 1]],
            [step @ v1, step @ v2],
            rtol=1e-8,
            atol=1e-12,
        )
    # λ1 of the snapshot's Lanczos agrees with the run's λ1 where both were measured.
    eig_step = run["eig_step"]
    lam = np.squeeze(run["lam"])
    for i, t in enumerate(snaps["step_S"]):
        if t in eig_step:
            np.testing.assert_allclose(
                snaps["lam_Sx2"][i, 0], lam[list(eig_step).index(t), 0], rtol=1e-6
            )
    summary = fig2_dynamics.summarise({"": run})
    assert [r["step"] for r in summary["snapshots"]] == list(snaps["step_S"])
    assert all(r["replay_max_rel_diff"] == 0.0 for r in summary["snapshots"])
    text = fig2_dynamics.table({"": run}, summary)
    assert "2/η = 2" in text


def _capture_plots(monkeypatch, module):
    figures, draw = [], module.plot

    def plot(*args):
        figures.append(draw(*args))
        return figures[-1]

    monkeypatch.setattr(module, "plot", plot)
    return figures


def _refuse(*args, **kwargs):
    raise AssertionError("--replot must not train")


def test_fig2_replot_needs_no_training_and_draws_2_over_eta(fig2_folder, monkeypatch):
    import dynloss_jax
    from experiments import fig2_dynamics

    monkeypatch.setattr(dynloss_jax, "run_sweep", _refuse)
    monkeypatch.setattr(dynloss_jax.sweep, "run_sweep", _refuse)
    monkeypatch.setattr(fig2_dynamics, "compute_snapshots", _refuse)
    figures = _capture_plots(monkeypatch, fig2_dynamics)
    png = fig2_folder / fig2_dynamics.PNG
    png.unlink()
    assert fig2_dynamics.main(["--replot", "--out", str(fig2_folder)]) == 0
    assert png.stat().st_size > 10_000
    (fig,) = figures
    assert 2.0 / fig2_dynamics.SMOKE["eta"] in _horizontal_lines(fig.axes[4])  # panel (e)
    assert len(fig.axes) >= 5 + len(fig2_dynamics.PAPER_SNAPSHOTS)


def test_fig1_smoke_lam_is_the_dense_hessian_at_step_0(fig1_folder):
    from experiments import fig1_sharpness

    smoke = fig1_sharpness.SMOKE
    assert (fig1_folder / fig1_sharpness.PNG).stat().st_size > 10_000
    run = load_run(fig1_folder)
    n_eig = smoke["steps"] // smoke["eig_every"]
    assert run["lam"].shape == (
        1,
        len(smoke["widths"]),
        len(smoke["etas"]),
        1,
        1,
        smoke["seeds"],
        n_eig,
        2,
    )
    assert np.all(np.isfinite(run["lam"])) and np.all(np.isfinite(run["loss"]))
    assert not run["diverged"].any()
    # Step 0: λ1 is the top eigenvalue of the dense Hessian of CE at the initial parameters.
    width = smoke["widths"][0]
    spec = RunSpec(loss="ce", width=width, n_steps=smoke["steps"], record_every=1)
    x, y = spiral()
    for seed in range(smoke["seeds"]):
        hyper = jax.tree.map(
            lambda a: a[0], make_hyper(eta=[1.0], amplitude=[1.0], period=[100], seed=[seed])
        )
        w0 = engine.init_state(spec, hyper).w_N

        def f(w):
            return get_loss("ce")(spec.model.apply(w, jnp.asarray(x)), jnp.asarray(y), None)

        top = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(f))(w0)))[::-1][:2]
        for ei in range(len(smoke["etas"])):
            np.testing.assert_allclose(run["lam"][0, 0, ei, 0, 0, seed, 0], top, rtol=1e-6)
    rows = json.loads((fig1_folder / "summary.json").read_text())
    assert len(rows) == len(smoke["widths"]) * len(smoke["etas"])
    final = run["eig_step"] >= (1 - fig1_sharpness.END) * smoke["steps"]
    for r in rows:
        assert r["two_over_eta"] == pytest.approx(2 / r["eta"])
        assert r["eta_lam1_late"][0] == pytest.approx(r["eta"] * r["lam1_late"][0])
        # λ1 over the last tenth, its share above 2/η and the peak of the mean curve
        at = run.sel(width=r["width"], eta=r["eta"])
        lam = np.asarray(at["lam"])[..., 0].reshape(smoke["seeds"], -1)
        assert r["lam1_final"][0] == pytest.approx(lam[:, final].mean(axis=1).mean(), rel=1e-12)
        assert r["frac_above_final"] == pytest.approx(np.mean(lam[:, final] > 2 / r["eta"]))
        curve = lam.mean(axis=0)
        assert r["lam1_peak"] == pytest.approx(curve.max(), rel=1e-12)
        assert r["lam1_peak_step"] == run["eig_step"][np.argmax(curve)]


def test_fig1_replot_needs_no_training_and_draws_2_over_eta(fig1_folder, monkeypatch):
    import dynloss_jax
    from experiments import fig1_sharpness

    monkeypatch.setattr(dynloss_jax, "run_sweep", _refuse)
    monkeypatch.setattr(dynloss_jax.sweep, "run_sweep", _refuse)
    figures = _capture_plots(monkeypatch, fig1_sharpness)
    png = fig1_folder / fig1_sharpness.PNG
    png.unlink()
    assert fig1_sharpness.main(["--replot", "--out", str(fig1_folder)]) == 0
    assert png.stat().st_size > 10_000
    (fig,) = figures
    assert {2.0 / eta for eta in fig1_sharpness.SMOKE["etas"]} <= _horizontal_lines(fig.axes[1])
