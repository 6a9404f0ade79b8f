"""Several widths and one loss family in one compiled program equal the runs made one by one.

A padded program (``RunSpec`` with tuple ``width`` and ``loss``) must give, for every run, the
numbers of the unpadded single-loss program of that run — losses, accuracies, Γ, λ1, λ2, λ_min,
the residuals, the first-instability values and the real parameters, float64, over 240 steps of
Hessian tracking — while the padded parameters stay exactly zero.
"""

import jax
import numpy as np
import pytest

from dynloss_jax import engine
from dynloss_jax.data import spiral
from dynloss_jax.model import embedding, flat_model
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
    return engine.make_data(x, y, xv, yv)


def _program(spec, hyper, data):
    init, advance, finalize = engine.compiled(spec, spec.n_steps)
    state = init(hyper, data)
    state, records, eig_records = advance(state, hyper, data)
    state = engine.compiled_onset(spec)(state, hyper, data)
    final = finalize(state, hyper, data)
    return state, records, eig_records, final


def _compare(losses, widths, depth=1, runs=RUNS):
    data = _data()
    cells = [(m, i) for m in range(len(losses)) for i in range(len(widths))]
    n = len(runs["seed"])
    merged = engine.make_hyper(
        **{k: v * len(cells) for k, v in runs.items()},
        member=[m for m, _ in cells for _ in range(n)],
        width_index=[i for _, i in cells for _ in range(n)],
    )
    spec = engine.RunSpec(loss=tuple(losses), width=tuple(widths), depth=depth, **COMMON)
    state, records, eigs, final = _program(spec, merged, data)
    checked = 0
    for c, (m, i) in enumerate(cells):
        alone = engine.RunSpec(loss=losses[m], width=widths[i], depth=depth, **COMMON)
        ref_state, ref_records, ref_eigs, ref_final = _program(
            alone, engine.make_hyper(**runs), data
        )
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


def test_ce_and_dce_over_three_widths_in_one_program_equal_the_separate_runs():
    assert _compare(("ce", "dce"), WIDTHS) > 0


def test_mse_family_in_one_program_equals_the_separate_runs():
    assert _compare(("mse", "dmse1", "dmse1o", "dmse2"), (3, 9), runs=MSE_RUNS) > 0


def test_depth_two_padded_equals_unpadded():
    assert _compare(("dce",), (2, 6), depth=2) > 0


def test_a_program_refuses_losses_of_two_families():
    with pytest.raises(ValueError, match="static loss"):
        engine.RunSpec(loss=("ce", "mse"), width=(2, 3), n_steps=10)


SWEEP = (
    "--width 4 8 16 --amplitude 1 8 --period 20 --seeds 2 --steps 200 "
    "--record-every 5 --eig-every 20 --num-matvecs 10 --points-per-class 10 --chunk-steps 100 "
    "--static-last-period --quiet --no-plot"
).split()


@pytest.mark.parametrize(
    "losses, etas", [(["ce", "dce"], ["0.5", "1.5"]), (["mse", "dmse2", "dmse1o"], ["0.05", "0.2"])]
)
def test_padded_sweep_is_one_program_per_family_and_equals_the_unpadded_one(
    tmp_path, capsys, losses, etas
):
    from dynloss_jax import load_run

    folders = {}
    for flag in ("--pad-widths", "--no-pad-widths"):
        out = tmp_path / flag
        code, _, err = dynloss(
            capsys, "train", "--loss", *losses, "--eta", *etas, *SWEEP, flag, "--out", out
        )
        assert code == 0, err
        folders[flag] = load_run(out)
    padded, separate = folders["--pad-widths"], folders["--no-pad-widths"]
    assert padded.config["programs"] == 1
    assert padded.config["layout"]["pad_widths"] is True
    assert separate.config["programs"] == len(losses) * 3
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
