"""Fig. 4's reference clock (``experiments.fig4_reference``): the flow starts from the sweep's
own network, data and Γ (its initial λ1 is the engine's, and the dense Hessian's), and the
crossing it reports does not depend on how the run is cut into pieces."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from dynloss_jax import SweepConfig, run_sweep
from experiments import fig4_reference as ref

STORED = Path(__file__).parents[1] / "docs/results/fig4_instability/per_run/dense_to_cap_dce"


def small_settings():
    """The stored DCE dense-to-cap sweep's settings at width 16 (fast, same data and Γ)."""
    s = json.loads((STORED / "sweeps/dense_dce.json").read_text())["settings"]
    return dict(s, width=[16])


def rows(etas=(2.0,), seeds=(0, 1), cap=800):
    return [
        {"loss": "dce", "eta": eta, "amplitude": 50.0, "period": 200, "seed": seed, "step_cap": cap}
        for eta in etas
        for seed in seeds
    ]


def test_the_flow_starts_where_the_engine_starts():
    import jax
    import jax.numpy as jnp

    settings = small_settings()
    rs = rows()
    loss_fn, W0, hyper = ref.group_problem(settings, "dce", 2.0, rs)
    dense = [
        float(
            jnp.linalg.eigvalsh(
                jax.hessian(loss_fn)(W0[i], 0.0, jax.tree.map(lambda a, i=i: a[i], hyper))
            )[-1]
        )
        for i in range(len(rs))
    ]
    config = SweepConfig.from_settings(
        dict(
            settings,
            loss=["dce"],
            eta=[2.0],
            amplitude=[50.0],
            period=[200],
            steps=2,
            steps_eta=0.0,
            eig_every=1,
            num_matvecs=40,
            stop_at_onset=False,
            watch=[],
        )
    )
    run = run_sweep(config)
    engine = np.asarray(run["lam"])[..., 0, 0].ravel()  # step 0, every seed
    np.testing.assert_allclose(engine, dense, rtol=1e-8)
    assert len(set(np.round(dense, 6))) == 2  # two seeds, two networks


@pytest.mark.slow
def test_the_crossing_does_not_depend_on_the_pieces():
    settings = small_settings()
    rs = rows()
    found = []
    for piece in (150, 800):
        args = argparse.Namespace(k=2, piece=piece, substeps=2, eig_iterations=3)
        found.append(ref.run_group(settings, "dce", 2.0, rs, args, progress=lambda _: None))
    crossings = [[f["flow_cross_step"] for f in one] for one in found]
    assert crossings[0] == crossings[1]
    assert all(c is not None and 0 < c < 800 for c in crossings[0])  # the flow does cross
    for a, b in zip(*found, strict=True):
        assert abs(a["flow_lam1_at_cross"] - b["flow_lam1_at_cross"]) < 1e-9
        assert a["flow_lam1_at_cross"] > 1.0  # 2/η


def mini_table(folder: Path, onsets=(150, -1), lam1s=(0.9, float("nan"))) -> list[dict]:
    """A Fig. 4 folder of two dense runs at width 16 (a stand-in for a stored one): its rows'
    onsets and λ1 are set here, so the summary's arithmetic can be checked by hand."""
    from experiments import fig4_instability as fig4

    (folder / "sweeps").mkdir(parents=True)
    stored = json.loads((STORED / "sweeps/dense_dce.json").read_text())
    stored["settings"] = dict(small_settings(), period=[200], amplitude=[50.0], eta=[2.0])
    (folder / "sweeps/dense_dce.json").write_text(json.dumps(stored))
    table = [
        dict(
            kind="dense",
            loss="dce",
            width=16,
            eta=2.0,
            amplitude=50.0,
            period=200,
            seed=seed,
            step_cap=800,
            stopped_step=800,
            diverged=0,
            lam_every=1,
            lam_last_step=799,
            cross_step=300 + seed,
            crossed=1,
            **{"onset[calibrated]": onset, "lam1[calibrated]": lam1, "lam2[calibrated]": 0.5},
        )
        for seed, onset, lam1 in zip((0, 1), onsets, lam1s, strict=True)
    ]
    fig4.write_table(table, folder / "runs.csv")
    return table


@pytest.mark.slow
def test_the_command_writes_the_table_and_reuses_earlier_flows(tmp_path, capsys):
    mini_table(tmp_path / "table")
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["--table", str(tmp_path / "table"), "--piece", "200", "--quiet"]
    assert ref.main([*base, "--out", str(first)]) == 0
    assert ref.main([*base, "--out", str(second), "--reuse", str(first)]) == 0
    a = (first / "reference.csv").read_text()
    assert a == (second / "reference.csv").read_text()
    assert json.loads((second / "run_info.json").read_text())["group_seconds"] == {}
    flow = ref.read_reference(first / "reference.csv")
    crossing = [f["flow_cross_step"] for f in flow]
    assert all(c is not None for c in crossing)
    summary = json.loads((first / "summary.json").read_text())["by_eta"]["dce eta=2"]
    assert summary["onset_minus_flow"]["calibrated"]["n"] == 1  # run 1 has no onset
    assert summary["onset_minus_flow"]["calibrated"]["median"] == 150 - crossing[0]
    assert summary["gd_minus_flow"]["median"] == np.median([300 - crossing[0], 301 - crossing[1]])
    assert summary["ratio_at_onset"]["calibrated"] == {"n": 1, "mean": 2.0 * 0.9 / 2, "sem": None}
    other = ["--out", str(tmp_path / "x"), "--reuse", str(first), "--substeps", "4"]
    assert ref.main([*base, *other]) == 2  # flows of other settings are not reused
