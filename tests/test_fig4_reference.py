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
