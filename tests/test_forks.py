"""Fork interventions (dynloss_jax.forks): stay is the unforked run bit for bit, leave with r = 1
is stay, the kick has the norm of the edge oscillation's displacement, and leave and frozen Γ
follow a Python loop of plain GD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynloss_jax as dl
from dynloss_jax import forks as fk
from dynloss_jax.data import load_dataset
from dynloss_jax.loop import trainer
from dynloss_jax.model import flat_model

WIDTH, ETA, A, T = 5, 1.0, 6.0, 20
STEPS, HORIZON, EVERY = (5, 12), 20, 5
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def setup():
    d = load_dataset("spiral", points_per_class=4)
    task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss="dce")
    tr = trainer(task, steps=60, width=WIDTH, eta=ETA, amplitude=A, period=T)
    out = jax.jit(
        lambda s: fk.forks(tr, s, steps=STEPS, horizon=HORIZON, record_every=EVERY, batch_size=1)
    )(jnp.asarray(SEEDS))

    def unforked(seed):  # the trainer's own run, w_0 … w_n
        def body(s, _):
            return tr.update(s)[0], s.w_N

        s, ws = jax.lax.scan(body, tr.init(seed), None, length=max(STEPS) + HORIZON)
        return jnp.concatenate([ws, s.w_N[None]])

    ws = np.stack([np.asarray(jax.jit(unforked)(s)) for s in SEEDS])
    return d, tr, out, ws


def test_stay_is_the_unforked_run_bit_for_bit(setup):
    d, tr, out, ws = setup
    stay = fk.BRANCHES.index("stay")
    labels_val = np.argmax(d.y_val, 1)
    for i in range(len(SEEDS)):
        for j, t in enumerate(STEPS):
            assert np.array_equal(np.asarray(out.final.w_N[i, j, stay]), ws[i, t + HORIZON])
            # the recorded per-class validation accuracy is that of the unforked weights
            for r, step in enumerate(np.asarray(out.records.step[i, j, stay])):
                hits = np.argmax(np.asarray(tr.spec.model.apply(ws[i, step], d.x_val)), 1)
                want = [np.mean(hits[labels_val == c] == c) for c in range(3)]
                np.testing.assert_array_equal(out.records.val_acc_RxC[i, j, stay, r], want)
    # the branches did differ from stay
    assert np.all(np.abs(out.final.w_N[:, :, 1:] - out.final.w_N[:, :, :1]).max(-1) > 1e-6)


def test_leave_with_r_one_is_stay():
    d = load_dataset("spiral", points_per_class=4)
    task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss="dce")
    tr = trainer(task, steps=60, width=WIDTH, eta=ETA, amplitude=A, period=T)
    out = jax.jit(
        lambda s: fk.forks(
            tr, s, steps=(7,), horizon=10, record_every=5, names=("stay", "leave"), r=1.0
        )  # fmt: skip
    )(jnp.asarray([3]))
    for leaf in (*jax.tree.leaves(out.records), *jax.tree.leaves(out.final)):
        leaf = np.asarray(leaf)
        np.testing.assert_array_equal(leaf[:, :, 0], leaf[:, :, 1])


def test_the_kick_has_the_norm_of_the_oscillations_displacement(setup):
    _, _, out, ws = setup
    kick = fk.BRANCHES.index("kick")
    for i in range(len(SEEDS)):
        for j, t in enumerate(STEPS):
            delta = (2 * ws[i, t] - ws[i, t - 1] - ws[i, t + 1]) / 4
            np.testing.assert_allclose(out.kick_norm[i, j, kick], np.linalg.norm(delta), rtol=1e-12)
            np.testing.assert_allclose(
                out.displacement_norm[i, j], np.linalg.norm(delta), rtol=1e-12
            )
    others = [b for b in range(len(fk.BRANCHES)) if b != kick]
    assert np.all(np.asarray(out.kick_norm)[:, :, others] == 0)
    assert np.all(np.asarray(out.kick_norm)[:, :, kick] > 0)


def test_the_displacement_of_a_pure_zigzag_is_its_amplitude():
    rng = np.random.default_rng(0)
    c, a = rng.normal(size=7), rng.normal(size=7)
    for t in (4, 5):
        w = {s: c + a * (-1) ** s for s in (t - 1, t, t + 1)}
        start = fk.Start(dl.loop.TrainState(jnp.asarray(w[t]), (), t), w[t - 1], w[t + 1])
        np.testing.assert_allclose(np.asarray(fk.displacement(start)), a * (-1) ** t, rtol=1e-14)


def test_leave_and_frozen_gamma_follow_a_python_loop(setup):
    d, _, out, ws = setup
    model = flat_model(WIDTH)
    x, y = jnp.asarray(d.x_train), jnp.asarray(d.y_train)
    dce = dl.get_loss("dce")

    def gamma(t):
        return dl.schedule.triangle()(t, 3, amplitude=A, period=T)

    grad = jax.jit(jax.grad(lambda w, g: dce(model.apply(w, x), y, g)))
    for name, eta, frozen in (("leave", 0.1 * ETA, False), ("freeze_gamma", ETA, True)):
        b = fk.BRANCHES.index(name)
        i, j, t = 1, 1, STEPS[1]
        w = jnp.asarray(ws[i, t])
        for s in range(t, t + HORIZON):
            w = w - eta * grad(w, gamma(t if frozen else s))
        np.testing.assert_allclose(out.final.w_N[i, j, b], w, rtol=1e-10, atol=1e-13)
    assert not np.allclose(gamma(STEPS[1]), gamma(STEPS[1] + HORIZON - 1))  # Γ did move


def test_unknown_branches_and_bad_steps_are_refused():
    with pytest.raises(ValueError, match="unknown branch"):
        fk.branch("wander")
    with pytest.raises(ValueError, match="r must be > 0"):
        fk.branch("leave", r=0.0)
    d = load_dataset("spiral", points_per_class=4)
    tr = trainer(dl.Task(data=(d.x_train, d.y_train), loss="dce"), steps=20, width=3, eta=1.0,
                 amplitude=2.0, period=10)  # fmt: skip
    with pytest.raises(ValueError, match="ascending"):
        fk.starts(tr, 0, (5, 3))
