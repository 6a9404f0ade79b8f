"""λ at the first instability, exactly at the onset step, and runs that stop there.

The cases are chosen so that every run has a real onset under the default (calibrated) rule
(the tests fail if one does not): DCE at width 32 on the full spiral, η = 2, A = 50, T = 500
(onsets near step 400–420), and DMSE2 at width 16 on 30 points per class, η = 0.4, A = 50,
T = 100 (seed 4: onset at step 309); seed 5 of the DMSE2 case never fires within its 400 steps
under that rule and stands for the runs that reach the limit.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynloss_jax import SweepConfig, engine, run_sweep
from dynloss_jax.losses import get_loss
from dynloss_jax.schedule import gamma
from dynloss_jax.spec import RunSpec, make_hyper

CASES = {
    "dce": dict(
        loss=("dce",),
        width=(32,),
        eta=(2.0,),
        amplitude=(50.0,),
        period=(500,),
        steps=1000,
        points_per_class=100,
        first_seed=0,
        seeds=2,
    ),
    "dmse2": dict(
        loss=("dmse2",),
        width=(16,),
        eta=(0.4,),
        amplitude=(50.0,),
        period=(100,),
        steps=400,
        points_per_class=30,
        first_seed=4,
        seeds=1,
    ),
}


def _dense_top2(config, w_N, t0):
    spec = RunSpec.from_config(config, **config.programs()[0])
    data = config.arrays()
    g = gamma(int(t0), n_classes=3, amplitude=config.amplitude[0], period=config.period[0])

    def f(w):
        return get_loss(spec.loss)(spec.model.apply(w, data.x_train), data.y_train, g)

    h = np.asarray(jax.jit(jax.hessian(f))(jnp.asarray(w_N)))
    return np.linalg.eigvalsh(h)[::-1][:2]


@pytest.fixture(scope="module", params=sorted(CASES))
def stopped(request):
    """The compiled engine run with stop_at_onset, its final state kept."""
    config = SweepConfig(**CASES[request.param], record_every=1, stop_at_onset=True).validate()
    spec = RunSpec.from_config(config, **config.programs()[0])
    hyper = make_hyper(**config.runs())
    data = config.arrays()
    init, advance, _ = engine.compiled(spec, config.steps)
    state, records, _, _ = advance(init(hyper, data), hyper, data)
    state = engine.compiled_onset(spec)(state, hyper, data)
    return config, jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, records)


def test_lambda_at_the_onset_equals_the_dense_hessian_there(stopped):
    config, state, _ = stopped
    onsets = state.detector.onset
    assert np.all(onsets > 0), onsets  # every run of these cases has an onset
    for i, t0 in enumerate(onsets):
        want = _dense_top2(config, state.onset_w_N[i], t0)
        np.testing.assert_allclose(state.onset_lam_K[i], want, rtol=1e-10)
        assert np.all(state.onset_residual_K[i] < 1e-8 * want[0])


def test_the_onset_parameters_are_those_of_the_onset_step(stopped):
    """w at the onset, kept from the last steps' history, equals the parameters after t0 steps of
    the same run without stopping."""
    config, state, _ = stopped
    full = RunSpec.from_config(config, **config.programs()[0])
    full = RunSpec(**{**full.__dict__, "stop_at_onset": False})
    data = config.arrays()
    runs = config.runs()
    for i, t0 in enumerate(state.detector.onset):
        hyper = make_hyper(**{k: [v[i]] for k, v in runs.items()})
        init, advance, _ = engine.compiled(full, int(t0))
        after, _, _, _ = advance(init(hyper, data), hyper, data)
        np.testing.assert_allclose(
            state.onset_w_N[i], np.asarray(after.w_N[0]), rtol=1e-12, atol=1e-14
        )


def test_a_stopped_run_records_nan_after_its_stop(stopped):
    config, state, records = stopped
    for i, t0 in enumerate(state.detector.onset):
        stop = state.stopped_step[i]
        assert t0 < stop <= config.steps
        loss = records.loss[i]
        assert np.all(np.isfinite(loss[:stop])) and np.all(np.isnan(loss[stop:]))
    # every run agrees on the step of each record, stopped or not
    np.testing.assert_array_equal(records.step[0], np.arange(config.steps))
    assert np.all(state.step == config.steps)


def test_stop_at_onset_gives_the_same_onsets_as_the_full_run_and_tracking_agrees():
    """DMSE2 with seeds 4 (fires at step 309) and 5 (does not): stopping changes neither the
    onset step nor λ there; λ tracked at every step (40 Lanczos steps) reads the same λ at the
    onset step, so the onset value does not depend on the tracking interval; the run without an
    onset goes on to the limit with the same records as without stopping."""
    base = dict(CASES["dmse2"], first_seed=4, seeds=2, record_every=1)
    stop = run_sweep(SweepConfig(**base, stop_at_onset=True))
    full = run_sweep(SweepConfig(**base, eig_every=1, num_matvecs=40))
    onset = stop["instability_step"].ravel()
    assert onset[0] > 0 and onset[1] == -1, onset
    np.testing.assert_array_equal(onset, full["instability_step"].ravel())
    np.testing.assert_allclose(stop["instability_lam_k"], full["instability_lam_k"], rtol=1e-12)
    np.testing.assert_array_equal(stop["stopped_step"].ravel()[1], -1)
    lam_tracked = full["lam"].reshape(2, -1, 2)[0, onset[0]]
    np.testing.assert_allclose(stop["instability_lam_k"].reshape(2, 2)[0], lam_tracked, rtol=1e-9)
    np.testing.assert_array_equal(stop["loss"].reshape(2, -1)[1], full["loss"].reshape(2, -1)[1])
    assert np.isnan(stop["instability_lam"].ravel()[1])


def test_where_the_onset_falls_against_the_first_lambda1_above_2_over_eta():
    """Where each rule's onset sits relative to the edge of stability, with λ1 tracked at every
    step; the numbers are this case's, measured, and the bounds fail if a rule moves.

    DCE, width 32, η = 2, four seeds: λ1 first exceeds 2/η near step 450. Γ moves the valley
    every step, which drives the iterate along v1, and the response of that forced oscillation
    grows as 1/(2 − ηλ1) while λ1 rises towards 2/η — a coherent, growing period-2 component of
    F from η·λ1/2 ≈ 0.5 on. The calibrated rule, which fires on any such growth faster than
    1 % a step above the run's own floor, finds it 25–70 steps before the crossing, at
    η·λ1/2 between 0.45 and 0.75, and the crossing lies after its reported interval; the
    second-difference rule at 1e-5·|F| waits until the zigzag is larger, at most 12 steps
    before the crossing, at 0.8–1.0. DMSE2 (seed 4) has its onset within 3 steps of the
    crossing, inside the reported interval."""
    config = SweepConfig(
        **{**CASES["dce"], "seeds": 4},
        record_every=1,
        eig_every=1,
        num_matvecs=20,
        watch=("second_difference",),
    )
    run = run_sweep(config)
    eta = config.eta[0]
    lam = run["lam"][..., 0].reshape(4, -1)
    onset, hi = run["instability_step"].ravel(), run["instability_hi"].ravel()
    sd = run["watch_step"][..., 0].ravel()
    assert np.all(onset > 0) and np.all(sd > 0), (onset, sd)
    for s in range(4):
        crossing = np.nonzero(lam[s] > 2 / eta)[0]
        assert crossing.size, f"seed {s}: λ1 never exceeds 2/η"
        assert 25 <= crossing[0] - onset[s] <= 70 and crossing[0] > hi[s], (s, onset[s], crossing)
        assert 0.45 <= eta * run["instability_lam"].ravel()[s] / 2 <= 0.75
        assert 0 <= crossing[0] - sd[s] <= 12, (s, sd[s], crossing[0])
        assert 0.8 <= eta * run["watch_lam"][..., 0].ravel()[s] / 2 <= 1.0
    config = SweepConfig(**CASES["dmse2"], record_every=1, eig_every=1, num_matvecs=20)
    run = run_sweep(config)
    lam = run["lam"][..., 0].ravel()
    crossing = np.nonzero(lam > 2 / config.eta[0])[0][0]
    lo, onset, hi = (
        int(run[k].ravel()[0]) for k in ("instability_lo", "instability_step", "instability_hi")
    )
    assert lo <= crossing <= hi and abs(onset - crossing) <= 3, (lo, onset, hi, crossing)


def test_per_run_step_limits_equal_runs_of_their_own_length():
    """``steps_eta``: runs of several η in one program, each ending after its own steps_eta/η
    steps, equal runs of that length alone (to rounding: the programs differ) — without and with
    stop_at_onset. The run of η = 0.4 (limit 400, the program's length) has an onset at 309 and
    the one of η = 0.8 (limit 200) is cut at its limit: its ``stopped_step`` is 200, its
    records after it NaN; the final values are those of the step it stopped at."""
    base = dict(CASES["dmse2"], first_seed=4, seeds=1, record_every=10)
    both = SweepConfig(**{**base, "eta": (0.4, 0.8)}, steps_eta=160.0).validate()
    assert [both.run_steps(eta) for eta in both.eta] == [400, 200]
    for stop in (False, True):
        merged = run_sweep(dataclasses.replace(both, stop_at_onset=stop))
        assert merged.config["programs"] == 1
        for eta in both.eta:
            steps = both.run_steps(eta)
            alone = run_sweep(
                SweepConfig(**{**base, "eta": (eta,), "steps": steps}, stop_at_onset=stop)
            )
            got = merged.sel(eta=eta)
            for name in ("final_loss", "final_val_acc", "instability_lam"):
                np.testing.assert_allclose(got[name], alone[name], rtol=1e-10, err_msg=name)
            for name in ("instability_step", "diverged"):
                np.testing.assert_array_equal(got[name], alone[name])
            n = alone["loss"].shape[6]  # the records: the grid's six axes, then the record's
            for name in ("loss", "val_acc", "gamma"):
                np.testing.assert_allclose(got[name][:, :, :, :, :, :, :n], alone[name], rtol=1e-10)
                assert np.all(np.isnan(got[name][:, :, :, :, :, :, n:]))
            fired = int(alone["instability_step"].ravel()[0]) >= 0
            if steps < both.steps and not (stop and fired):
                assert int(got["stopped_step"].ravel()[0]) == steps
            else:
                np.testing.assert_array_equal(got["stopped_step"], alone["stopped_step"])
        onset = merged["instability_step"].ravel()
        assert onset[0] == 309 and onset[1] == -1, onset  # one onset, one run cut at its limit
