"""The middle layer (dynloss_jax.loop): a task's trainer and the Hessian tracker as pure
(init, update) pairs, equal to the engine's run of the same task and to dense Hessians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynloss_jax as dl
from dynloss_jax.data import load_dataset
from dynloss_jax.loop import hessian_tracker, trainer


def _task():
    d = load_dataset("spiral", points_per_class=10)
    return dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss="dce")


def test_a_hand_loop_of_trainer_and_tracker_equals_the_engine():
    task = _task()
    point = dict(width=6, eta=1.0, amplitude=5.0, period=20)
    tr = trainer(task, steps=40, **point)
    tracker = hessian_tracker(k=2)

    def interval(carry, _):
        state, ts = carry
        ts, tracked = tracker.update(ts, tr.hessian(state), state.step)
        state, info = jax.lax.scan(lambda s, _: tr.update(s), state, None, length=10)
        return (state, ts), (info.loss, tracked.values_K, tracked.residuals_K)

    state = tr.init(3)
    # the engine's eigen key for seed 3: the second half of split(key(3))
    ts = tracker.init(jax.random.split(jax.random.key(3))[1], state.w_N.shape[0], jnp.float64)
    _, (loss, lam, res) = jax.jit(lambda c: jax.lax.scan(interval, c, None, length=4))((state, ts))
    run = dl.run_sweep(task, grid={k: [v] for k, v in point.items()} | {"seed": [3]}, steps=40,
                       record_every=1, eig_every=10)  # fmt: skip
    np.testing.assert_allclose(np.ravel(loss), np.squeeze(run["loss"]), rtol=1e-12)
    np.testing.assert_allclose(np.reshape(lam, (4, 2)), np.squeeze(run["lam"]), rtol=1e-10)
    assert np.all(np.asarray(res) < 1e-6)


@pytest.mark.parametrize("blocks", [0, 3])
def test_the_tracker_follows_dense_eigenvalues_along_a_trajectory(blocks):
    """Warm-started along 5 GD steps of a quadratic-plus-cubic loss whose Hessian moves."""
    rng = np.random.default_rng(0)
    n = 40
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    h = jnp.asarray(q @ np.diag(np.r_[9.0, 7.0, 6.5, np.linspace(3, -2, n - 3)]) @ q.T)

    def loss(w):
        return 0.5 * w @ h @ w + jnp.sum(w**3) / 6  # Hessian H + diag(w)

    tracker = hessian_tracker(k=3 if blocks else 2, num_matvecs=20, blocks=blocks, above=1.5)
    w = jnp.asarray(rng.normal(size=n)) * 0.3
    ts = tracker.init(jax.random.key(0), n, jnp.float64, lambda v: dl.eig.hvp(loss, w, v))
    for t in range(5):
        ts, got = tracker.update(ts, lambda v, w=w: dl.eig.hvp(loss, w, v), t, threshold=2 / 0.25)
        dense = np.sort(np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(w))))[::-1]
        k = got.values_K.shape[0]
        # Lanczos (20 products) to rounding; 3 warm blocks of 3 to ~1e-7, within the residuals
        np.testing.assert_allclose(got.values_K, dense[:k], rtol=1e-6 if blocks else 1e-10)
        assert np.all(np.abs(got.values_K - dense[:k]) <= got.residuals_K + 1e-12)
        assert np.array_equal(got.above_K, dense[:k] > 1.5 / 0.25)
        w = w - 0.05 * jax.grad(loss)(w)


def test_the_central_and_stable_flows_run_on_a_task_of_ones_own():
    """A flax model and a loss written here: the flows' GD is the trainer's GD step by step, and
    the flows give finite losses (dynloss_jax.flows takes any loss(w, t))."""
    import flax.linen as nn

    from dynloss_jax import flows

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, param_dtype=jnp.float64)(
                jnp.tanh(nn.Dense(5, param_dtype=jnp.float64)(x))
            )

    def my_dce(logits, y, gamma, beta):
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y * gamma**beta, axis=-1))

    d = load_dataset("spiral", points_per_class=10)
    task = dl.Task(model=Net(), data=(d.x_train, d.y_train), loss=my_dce)
    eta = 0.5
    tr = trainer(task, steps=20, eta=eta, beta=2.0, amplitude=5.0, period=10)
    state = tr.init(0)
    U0 = jax.random.normal(jax.random.key(1), (state.w_N.shape[0], 1), jnp.float64)
    _, rec = flows.run_flows(
        lambda w, t: tr.loss(w, t / eta), state.w_N, U0, eta=eta, n_steps=20, substeps=2,
        eig_iterations=2, solve=flows.closed_form_k1,
    )  # fmt: skip
    losses = []
    for _ in range(20):
        state, info = tr.update(state)
        losses.append(info.loss)
    np.testing.assert_allclose(rec.loss_gd, losses, rtol=1e-12)
    assert np.all(np.isfinite(rec.loss_central)) and np.all(np.isfinite(rec.loss_stable))
