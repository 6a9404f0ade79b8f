"""Several widths and one loss family in one compiled program equal the runs made one by one.

A padded program (``RunSpec`` with tuple ``width`` and ``loss``) must give, for every run, the
numbers of the unpadded single-loss program of that run — losses, accuracies, Γ, λ1, λ2, λ_min,
the residuals, the first-instability values and the real parameters, float64, over 240 steps of
Hessian tracking (float32 to its rounding) — while the padded parameters stay exactly zero; a
padded sweep (programs, cells, collector, checkpoints) equals the unpadded one.
"""

import jax
import numpy as np
import pytest

from dynloss_jax import engine
from dynloss_jax.data import Data, make_data, spiral
from dynloss_jax.model import embedding, flat_model
from dynloss_jax.spec import RunSpec, make_hyper
from tests.shared import dynloss

TOL = 1e-12
RESIDUAL_ATOL = 1e-11
WIDTHS = (2, 5, 16)
COMMON = dict(n_steps=240, record_every=4, eig_every=20, num_matvecs=12, static_last_period=True)
# Per (loss, width) cell: two runs, different η, A, T and seed. (At η = 1.5 the MSE runs of
# width 3 kill every hidden unit, leaving the output biases' exactly triple eigenvalue 2, which
# Lanczos from a random start sees once or twice depending on rounding: the MSE family runs at
# smaller η, as in Fig. 3b.)
RUNS = dict(eta=[0.5, 1.5], amplitude=[10.0, 3.0], period=[60, 40], seed=[3, 7])
MSE_RUNS = dict(RUNS, eta=[0.05, 0.2])


def _data():
    x, y = spiral(10, seed=0)
    xv, yv = spiral(10, seed=1)
    return make_data(x, y, xv, yv)


def _program(spec, hyper, data):
    init, advance, finalize = engine.compiled(spec, spec.n_steps)
    state = init(hyper, data)
    state, records, eig_records, _ = advance(state, hyper, data)
    state = engine.compiled_onset(spec)(state, hyper, data)
    final = finalize(state, hyper, data)
    return state, records, eig_records, final


def _compare(losses, widths, depth=1, runs=RUNS):
    data = _data()
    cells = [(m, i) for m in range(len(losses)) for i in range(len(widths))]
    n = len(runs["seed"])
    merged = make_hyper(
        **{k: v * len(cells) for k, v in runs.items()},
        member=[m for m, _ in cells for _ in range(n)],
        width_index=[i for _, i in cells for _ in range(n)],
    )
    spec = RunSpec(loss=tuple(losses), width=tuple(widths), depth=depth, **COMMON)
    state, records, eigs, final = _program(spec, merged, data)
    checked = 0
    for c, (m, i) in enumerate(cells):
        alone = RunSpec(loss=losses[m], width=widths[i], depth=depth, **COMMON)
        ref_state, ref_records, ref_eigs, ref_final = _program(alone, make_hyper(**runs), data)
        rows = slice(c * n, (c + 1) * n)
        pairs = {
            **records._asdict(),
            **{f"final_{k}": v for k, v in final._asdict().items()},
            "lam": eigs.lam_K,
            "lam_min": eigs.lam_min,
            "onset_lam": state.onset_lam_K,
            "onset": state.detector.onset,
            "residual": eigs.residual_K,
            "residual_min": eigs.residual_min,
            "onset_residual": state.onset_residual_K,
        }
        want = {
            **ref_records._asdict(),
            **{f"final_{k}": v for k, v in ref_final._asdict().items()},
            "lam": ref_eigs.lam_K,
            "lam_min": ref_eigs.lam_min,
            "onset_lam": ref_state.onset_lam_K,
            "onset": ref_state.detector.onset,
            "residual": ref_eigs.residual_K,
            "residual_min": ref_eigs.residual_min,
            "onset_residual": ref_state.onset_residual_K,
        }
        for name, got in pairs.items():
            if got is None:  # an opt-in record that is off (class_records, ...)
                assert want[name] is None, name
                continue
            # A converged pair's residual is itself rounding (~1e-12 for λ of a few units), so
            # residuals agree to 1e-12 relative to λ, not to 1e-12 of their own size.
            atol = RESIDUAL_ATOL if "residual" in name else TOL
            np.testing.assert_allclose(
                np.asarray(got)[rows], want[name], rtol=TOL, atol=atol, err_msg=name
            )
            checked += 1
        positions = spec.positions(i)
        w = np.asarray(state.w_N)[rows]
        np.testing.assert_allclose(w[:, positions], ref_state.w_N, rtol=TOL, atol=TOL)
        padding = np.ones(w.shape[1], bool)
        padding[positions] = False
        assert np.all(w[:, padding] == 0.0)
        assert np.all(np.isfinite(np.asarray(eigs.lam_K)[rows]))
    return checked


def test_embedding_places_the_unpadded_network_in_the_padded_one():
    small, big = flat_model(3), flat_model(7)
    w = np.asarray(small.init(jax.random.key(0)))
    padded = np.zeros(big.n_params)
    padded[embedding(3, 7)] = w
    x = np.random.default_rng(0).normal(size=(5, 2))
    # equal to rounding: the output sums run over 7 hidden units, 4 of them zero
    np.testing.assert_allclose(small.apply(w, x), big.apply(padded, x), rtol=1e-15, atol=1e-15)
    assert sorted(set(embedding(3, 7))) == sorted(embedding(3, 7))  # no position twice
    with pytest.raises(ValueError, match="padded_width"):
        embedding(8, 7)


@pytest.mark.slow  # ~80 s; the float32 comparison below stays in the default suite
def test_ce_and_dce_over_three_widths_in_one_program_equal_the_separate_runs():
    assert _compare(("ce", "dce"), WIDTHS) > 0


@pytest.mark.slow
def test_depth_two_padded_equals_unpadded():
    assert _compare(("dce",), (2, 6), depth=2) > 0


def test_a_program_refuses_losses_of_two_families():
    with pytest.raises(ValueError, match="static loss"):
        RunSpec(loss=("ce", "mse"), width=(2, 3), n_steps=10)


SWEEP = (
    "--amplitude 1 8 --period 20 --seeds 2 --steps 200 --record-every 5 --eig-every 20 "
    "--num-matvecs 10 --points-per-class 10 --chunk-steps 100 --static-last-period --quiet "
    "--no-plot"
).split()


def test_pad_widths_makes_ce_dce_over_three_widths_one_program(tmp_path, capsys):
    from dynloss_jax import load_run

    out = tmp_path / "run"
    flags = "--loss ce dce --width 4 8 16 --steps 10 --points-per-class 4 --quiet --no-plot"
    code, _, err = dynloss(capsys, "train", *flags.split(), "--pad-widths", "--out", out)
    assert code == 0, err
    config = load_run(out).config
    assert config["programs"] == 1 and config["layout"]["pad_widths"] is True


@pytest.mark.slow  # ~80 s; the float32 comparison below stays in the default suite
def test_padded_mse_family_sweep_equals_the_unpadded_one(tmp_path, capsys):
    """The sweep layer (programs, cells, the collector) on the MSE family, MSE among them: the
    padded sweep's arrays equal the unpadded sweep's (CE/DCE at the engine level above)."""
    from dynloss_jax import load_run

    losses = ["mse", "dmse2", "dmse1o"]
    folders = {}
    for flag in ("--pad-widths", "--no-pad-widths"):
        out = tmp_path / flag
        code, _, err = dynloss(
            capsys,
            "train",
            "--loss",
            *losses,
            "--width",
            "4",
            "8",
            "--eta",
            *map(str, MSE_RUNS["eta"]),
            *SWEEP,
            flag,
            "--out",
            out,
        )
        assert code == 0, err
        folders[flag] = load_run(out)
    padded, separate = folders["--pad-widths"], folders["--no-pad-widths"]
    assert padded.config["programs"] == 1 and separate.config["programs"] == 6
    assert set(padded.arrays) == set(separate.arrays)
    for name, want in separate.arrays.items():
        got = padded.arrays[name]
        assert got.shape == want.shape, name
        atol = RESIDUAL_ATOL if "residual" in name else TOL
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=TOL, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert np.isfinite(separate.arrays["lam"]).all()


@pytest.mark.slow
def test_interrupted_padded_sweep_resumes_bit_identically_and_refuses_another_layout(tmp_path):
    """Nine runs (three widths × three seeds: odd, so the two devices get a padding copy) in one
    padded program, interrupted after two chunks and resumed: the arrays equal an uninterrupted
    run's bit for bit; resuming with the unpadded layout is refused with the flag to use."""
    from dynloss_jax import ConfigError, SweepConfig, load_run, run_sweep
    from dynloss_jax.strategy import Strategy

    config = SweepConfig(
        loss=("dce",),
        width=(2, 5, 9),
        eta=(1.0,),
        amplitude=(8.0,),
        period=(20,),
        seeds=3,
        steps=120,
        record_every=5,
        eig_every=20,
        num_matvecs=8,
        chunk_steps=40,
        points_per_class=10,
    )
    padded = Strategy(batch_size=1, n_devices=2, pad_widths=True)
    whole = run_sweep(config, tmp_path / "whole", strategy=padded)
    assert whole.config["programs"] == 1

    class Interrupt(Exception):
        pass

    def stop_after_two_chunks(done, total):
        if done >= 2 * 40 * 9:
            raise Interrupt

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        run_sweep(config, out, strategy=padded, progress=stop_after_two_chunks, checkpoint_every=0)
    with pytest.raises(ConfigError, match="--pad-widths"):
        run_sweep(config, out, resume=True, strategy=Strategy(1, 2, pad_widths=False))
    run_sweep(config, out, resume=True, strategy=padded)
    got = load_run(out).arrays
    for name, want in load_run(tmp_path / "whole").arrays.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_float32_padded_equals_unpadded():
    """The same comparison in float32 over 60 steps, to float32 rounding."""
    data = _data()
    data = Data(*(a.astype(np.float32) for a in data))
    common = dict(n_steps=60, record_every=4, eig_every=20, num_matvecs=10, dtype="float32")
    runs = dict(eta=[0.5, 1.0], amplitude=[10.0, 3.0], period=[60, 40], seed=[3, 7])
    spec = RunSpec(loss="dce", width=(3, 8), **common)
    merged = make_hyper(
        **{k: v * 2 for k, v in runs.items()}, width_index=[0, 0, 1, 1], dtype="float32"
    )
    state, records, eigs, _ = _program(spec, merged, data)
    for c, (loss, width) in enumerate([("dce", 3), ("dce", 8)]):
        alone = RunSpec(loss=loss, width=width, **common)
        ref_state, ref_records, ref_eigs, _ = _program(
            alone, make_hyper(**runs, dtype="float32"), data
        )
        rows = slice(2 * c, 2 * c + 2)
        np.testing.assert_allclose(records.loss[rows], ref_records.loss, rtol=1e-5)
        np.testing.assert_allclose(eigs.lam_K[rows], ref_eigs.lam_K, rtol=1e-4)
        w = np.asarray(state.w_N)[rows]
        i = spec.widths.index(width)
        np.testing.assert_allclose(w[:, spec.positions(i)], ref_state.w_N, rtol=1e-4, atol=1e-5)
        padding = np.ones(w.shape[1], bool)
        padding[spec.positions(i)] = False
        assert np.all(w[:, padding] == 0.0)
