"""Per-class records and the class split of the tracked eigenvalues in the compiled run
(``class_records``, ``class_split``): against a Python-loop replay of the run with dense Hessians
of each class's part, for the paper's DCE, for a task's own loss, and in a padded program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynloss_jax as dl
from dynloss_jax import engine
from dynloss_jax.config import ConfigError
from dynloss_jax.data import load_dataset, make_data
from dynloss_jax.model import flat_model
from dynloss_jax.spec import RunSpec, make_hyper
from dynloss_jax.sweep import run_sweep

WIDTH, STEPS, EIG_EVERY, SEED = 4, 30, 10, 2
FLAGS = dict(class_records=True, class_split=True)
# Lanczos with as many steps as parameters (width 4: 27) is exact, so the in-run Ritz vectors
# are the dense eigenvectors
RUN = dict(steps=STEPS, record_every=5, eig_every=EIG_EVERY, num_matvecs=27, chunk_steps=STEPS)


def _data():
    return load_dataset("spiral", points_per_class=4)


def own_dmse2(logits, y, gamma):
    """A loss of one's own: squared errors with each output's target scaled by Γ (DMSE2)."""
    return jnp.mean(jnp.sum((logits - gamma * y) ** 2, axis=-1))


def _class_part(loss, apply, x, y, idx, gamma):
    """F^(c)(w) = (n_c/P) · loss on class c's points ``idx`` alone (independent of the
    per-sample split the library uses)."""
    return lambda w: idx.size / y.shape[0] * loss(apply(w, x[idx]), y[idx], gamma)


def _replay(loss, static, eta, amplitude, period, data):
    """GD in a Python loop from the engine's initialisation of SEED; the expected records."""
    model = flat_model(WIDTH)
    w = model.init(jax.random.split(jax.random.key(SEED))[0])
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xv, yv = jnp.asarray(data.x_val), jnp.asarray(data.y_val)
    ones = jnp.ones(3)
    labels = np.argmax(data.y_train, 1)
    index_sets = [np.flatnonzero(labels == c) for c in range(3)]
    out = {k: [] for k in ("split", "vec", "lam", "grad_eig", "emph", "rec")}

    @jax.jit
    def dense(w, g):
        parts = [_class_part(loss, model.apply, x, y, idx, g) for idx in index_sets]
        grads = jnp.stack([jax.grad(p)(w) for p in parts])
        H = jax.hessian(lambda v: loss(model.apply(v, x), y, g))(w)
        return grads, H, jnp.stack([jax.hessian(p)(w) for p in parts])

    for t in range(STEPS):
        g = dl.schedule.triangle()(t, 3, amplitude=amplitude, period=period)
        grads, H, Hc = (np.asarray(a) for a in dense(w, g))
        if t % EIG_EVERY == 0:
            vals, vecs = np.linalg.eigh(H)
            U = vecs[:, ::-1][:, :2].T
            out["split"].append([[u @ h @ u for h in Hc] for u in U])
            out["lam"].append(vals[::-1][:2])
            out["vec"].append(U)
            out["grad_eig"].append(grads)
            out["emph"].append(-1 if np.ptp(np.asarray(g)) == 0 else int(np.argmax(g)))
        if t % 5 == 0:
            rec = {}
            sets = (
                ("train", x, y, loss, g), ("static", x, y, static, ones),
                ("val", xv, yv, static, ones),
            )  # fmt: skip
            for name, xs, ys, fn, gg in sets:
                logits = model.apply(w, xs)
                labels = np.argmax(ys, 1)
                per = [fn(logits[j : j + 1], ys[j : j + 1], gg) for j in range(ys.shape[0])]
                per = np.asarray(per)
                hit = np.argmax(np.asarray(logits), 1) == labels
                rec[name] = [per[labels == c].mean() for c in range(3)]
                rec[name + "_acc"] = [hit[labels == c].mean() for c in range(3)]
            rec["grad_norm"] = np.linalg.norm(grads, axis=1)
            out["rec"].append(rec)
        w = w - eta * jnp.asarray(grads.sum(0))
    return out


def _check(run, want):
    split = np.squeeze(run["class_split"])  # (eig, k, class)
    lam = np.squeeze(run["lam"])
    # the split sums to the tracked λ_k, and each term is the dense u_kᵀ H^(c) u_k
    assert np.max(np.abs(split.sum(-1) - lam) / np.abs(lam)) < 1e-10
    np.testing.assert_allclose(lam, np.array(want["lam"]), rtol=1e-10)
    scale = np.abs(np.array(want["split"])).max()
    np.testing.assert_allclose(split, np.array(want["split"]), rtol=0, atol=1e-10 * scale)
    grads = np.array(want["grad_eig"])  # (eig, class, N)
    vecs = np.array(want["vec"])  # (eig, k, N)
    cos = np.einsum("ekn,ecn->ekc", vecs, grads) / np.linalg.norm(grads, axis=-1)[:, None, :]
    np.testing.assert_allclose(np.abs(np.squeeze(run["class_cos"])), np.abs(cos), atol=1e-9)
    np.testing.assert_allclose(
        np.squeeze(run["eig_class_grad_norm"]), np.linalg.norm(grads, axis=-1), rtol=1e-10
    )
    np.testing.assert_array_equal(np.squeeze(run["emphasised"]), want["emph"])
    recs = want["rec"]
    for name, key in (
        ("class_loss", "train"), ("class_static_loss", "static"), ("class_val_loss", "val"),
        ("class_acc", "train_acc"), ("class_val_acc", "val_acc"), ("class_grad_norm", "grad_norm"),
    ):  # fmt: skip
        np.testing.assert_allclose(
            np.squeeze(run[name]), np.array([r[key] for r in recs]), rtol=1e-10, err_msg=name
        )
    # the classes differ (no mix-up of classes passes)
    assert np.min(np.ptp(split, axis=-1)) > 1e-6


@pytest.mark.parametrize("loss, static, eta", [("dce", "ce", 1.0), ("dmse1", "mse", 0.2)])
def test_in_run_class_split_and_records_equal_dense_per_class_hessians(loss, static, eta):
    data = _data()
    config = dl.SweepConfig(
        loss=(loss,), width=(WIDTH,), eta=(eta,), amplitude=(6.0,), period=(20,), seeds=1,
        first_seed=SEED, points_per_class=4, **RUN, **FLAGS,
    )  # fmt: skip
    run = run_sweep(config)
    want = _replay(dl.get_loss(loss), dl.get_loss(static), eta, 6.0, 20, data)
    _check(run, want)
    assert run.axes["class_split"][-3:] == ["eig", "k", "class"]
    ds = run.to_xarray()
    assert ds["class_cos"].dims[-3:] == ("eig", "k", "class")


def test_a_tasks_own_loss_gets_the_same_class_split():
    data = _data()
    task = dl.Task(data=(data.x_train, data.y_train, data.x_val, data.y_val), loss=own_dmse2)
    grid = dict(width=[WIDTH], eta=[0.3], amplitude=[4.0], period=[20], seed=[SEED])
    run = run_sweep(task, grid=grid, **RUN, **FLAGS)
    ones = jnp.ones(3)
    want = _replay(own_dmse2, lambda z, y, g: own_dmse2(z, y, ones), 0.3, 4.0, 20, data)
    _check(run, want)


def test_the_flags_change_no_other_number():
    data = _data()
    base = dict(loss="dce", n_steps=20, record_every=5, eig_every=10, num_matvecs=12)
    hyper = make_hyper(eta=[1.0], amplitude=[6.0], period=[20], seed=[SEED])
    d = make_data(data.x_train, data.y_train, data.x_val, data.y_val)

    def run(spec, h):
        init, advance, _ = engine.compiled(spec, 20)
        _, records, eig_records, _ = advance(init(h, d), h, d)
        return records, eig_records

    off = run(RunSpec(width=3, **base), hyper)
    on = run(RunSpec(width=3, **base, **FLAGS), hyper)
    for a, b in ((off[0].loss, on[0].loss), (off[0].val_acc, on[0].val_acc),
                 (off[1].lam_K, on[1].lam_K)):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_a_padded_run_has_the_unpadded_class_records_and_split():
    data = _data()
    base = dict(loss="dce", n_steps=20, record_every=5, eig_every=10, num_matvecs=12, **FLAGS)
    hyper = make_hyper(eta=[1.0], amplitude=[6.0], period=[20], seed=[SEED])
    d = make_data(data.x_train, data.y_train, data.x_val, data.y_val)

    def run(spec, h):
        init, advance, _ = engine.compiled(spec, 20)
        _, records, eig_records, _ = advance(init(h, d), h, d)
        return records, eig_records

    on = run(RunSpec(width=3, **base), hyper)
    padded_hyper = hyper._replace(width_index=np.zeros(1, np.int32))
    padded = run(RunSpec(width=(3, 5), **base), padded_hyper)
    for name in ("class_loss_C", "class_val_acc_C", "class_grad_norm_C"):
        np.testing.assert_allclose(
            getattr(padded[0], name), getattr(on[0], name), rtol=1e-10, err_msg=name
        )
    for name in ("class_split_KxC", "class_grad_norm_C"):
        np.testing.assert_allclose(
            getattr(padded[1], name), getattr(on[1], name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(
        np.abs(padded[1].class_cos_KxC), np.abs(on[1].class_cos_KxC), atol=1e-9
    )
    assert np.all(np.isfinite(np.asarray(padded[1].class_split_KxC)))


@pytest.mark.parametrize(
    "flag, settings, words",
    [("class_split", {}, "--eig-every"),
     ("class_split", dict(eig_every=10, optimizer="adam"), "P^-1/2 H P^-1/2"),
     ("ggn_ntk", {}, "--eig-every"),
     ("ggn_ntk", dict(eig_every=10, optimizer="rmsprop"), "P^-1/2 H P^-1/2")],
)  # fmt: skip
def test_what_cannot_be_split_or_compared_is_refused(flag, settings, words):
    with pytest.raises(ConfigError, match=words.replace("^", r"\^")):
        dl.SweepConfig(steps=20, record_every=5, **{flag: True}, **settings).validate()
    with pytest.raises(ValueError, match=flag):
        RunSpec(loss="dce", width=3, n_steps=20, record_every=5, **{flag: True}, **settings)


def _dense_ggn_ntk(apply, loss, w, x, y, g):
    """Dense G = Jᵀ H_f J, Θ = J Jᵀ and H at w, J = ∂f/∂w (P·C × N) by forward mode."""
    P, C = y.shape
    J = np.asarray(jax.jacfwd(lambda v: apply(v, x).reshape(-1))(w))
    z = apply(w, x).reshape(-1)
    H_f = np.asarray(jax.hessian(lambda z: loss(z.reshape(P, C), y, g))(z))
    H = np.asarray(jax.hessian(lambda v: loss(apply(v, x), y, g))(w))
    return J.T @ H_f @ J, J @ J.T, H


def _top2(M):
    return np.sort(np.linalg.eigvalsh(M))[::-1][:2]


def test_in_run_gauss_newton_and_ntk_equal_dense_jacobians():
    data = _data()
    config = dl.SweepConfig(
        loss=("dce",), width=(WIDTH,), eta=(1.0,), amplitude=(6.0,), period=(20,), seeds=1,
        first_seed=SEED, points_per_class=4, ggn_ntk=True, **RUN,
    )  # fmt: skip
    run = run_sweep(config)
    model = flat_model(WIDTH)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    dce = dl.get_loss("dce")
    w = model.init(jax.random.split(jax.random.key(SEED))[0])
    grad = jax.jit(jax.grad(lambda v, g: dce(model.apply(v, x), y, g)))
    want = {"ggn": [], "ntk": [], "fc": []}
    for t in range(STEPS):
        g = dl.schedule.triangle()(t, 3, amplitude=6.0, period=20)
        if t % EIG_EVERY == 0:
            G, Theta, H = _dense_ggn_ntk(model.apply, dce, w, x, y, g)
            u1 = np.linalg.eigh(H)[1][:, -1]
            want["ggn"].append(_top2(G))
            want["ntk"].append(_top2(Theta))
            want["fc"].append(u1 @ (H - G) @ u1)
        w = w - grad(w, g)
    np.testing.assert_allclose(np.squeeze(run["ggn_lam"]), np.array(want["ggn"]), rtol=1e-10)
    np.testing.assert_allclose(np.squeeze(run["ntk_lam"]), np.array(want["ntk"]), rtol=1e-9)
    scale = np.abs(np.squeeze(run["lam"])).max()
    np.testing.assert_allclose(
        np.squeeze(run["functional_u1"]), np.array(want["fc"]), rtol=0, atol=1e-10 * scale
    )
    # the network's own curvature is not negligible here: H and G differ at the top
    assert np.max(np.abs(np.array(want["fc"]))) > 1e-4 * scale


def test_for_a_linear_model_the_gauss_newton_top_is_the_hessians():
    data = _data()

    def init(key):
        return {"W": 0.5 * jax.random.normal(key, (2, 3)), "b": jnp.zeros(3)}

    def apply(params, x):
        return x @ params["W"] + params["b"]

    task = dl.Task(model=(init, apply), data=(data.x_train, data.y_train), loss="dce")
    grid = dict(eta=[1.0], amplitude=[6.0], period=[20], seed=[SEED])
    run = run_sweep(task, grid=grid, steps=20, record_every=5, eig_every=10, num_matvecs=9,
                    ggn_ntk=True)  # fmt: skip
    np.testing.assert_allclose(run["ggn_lam"], run["lam"], rtol=1e-10)
    assert np.max(np.abs(run["functional_u1"])) < 1e-13 * np.max(np.abs(run["lam"]))
    assert np.min(np.abs(run["lam"])) > 1e-3
