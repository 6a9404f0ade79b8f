"""The anchor's own case (alex-damian/central_flows_jax, examples/mlp.ipynb) at smoke size."""

import json

import numpy as np
import pytest

from experiments import central_flow_anchor as anchor
from experiments import common


def test_central_flow_anchor_quick_smoke(tmp_path, capsys, monkeypatch):
    """The smoke preset (η = 0.4, 60 steps) meets the edge: the central flow's block activates
    where the stable flow's λ1 crosses 2/η and holds λ1 at 2/η from then on (a static loss gives
    it no reason to leave), GD's λ1 crosses 2/η, ``central_rel_err`` and ``stable_rel_err`` are
    recomputed from the stored arrays (a moving average by convolution, not the module's
    cumulative sums), and ``--replot`` prints the same table without running anything."""
    monkeypatch.setenv("DYNLOSS_SMOKE", "1")
    assert anchor.main(["--quick", "--out", str(tmp_path), "--quiet"]) == 0
    first = capsys.readouterr().out
    png = tmp_path / anchor.PNG
    assert png.stat().st_size > 10_000
    png.unlink()
    with monkeypatch.context() as m:

        def refuse(*args, **kwargs):
            raise AssertionError("--replot must not run the flows")

        m.setattr(anchor, "run_flows_anchor", refuse)
        assert anchor.main(["--replot", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == first
    assert png.stat().st_size > 10_000

    s = anchor.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    a = np.load(tmp_path / anchor.ARRAYS)
    assert len(a["loss_gd"]) == len(a["loss_gd32"]) == s["steps"]
    onset = summary["onset"]
    assert 0 < onset["central_active"] == onset["stable_lam_above"]
    assert onset["gd_lam_above"] > 0
    after = a["lam_central"][onset["central_active"] :, 0] * s["eta"] / 2
    assert np.all(np.abs(after - 1) < 0.03) and abs(after[-1] - 1) < 0.005
    assert np.all(a["active"][onset["central_active"] :] > 0)
    # before the onset the central flow is gradient flow: its prediction is the stable loss
    before = slice(0, onset["central_active"])
    np.testing.assert_allclose(a["predicted"][before], a["loss_stable"][before], rtol=1e-9)
    # float32 GD is the float64 run to rounding until the edge
    assert summary["gd_float32"]["rel_diff_before_onset"] < 1e-5

    w = s["window"]
    smooth = np.convolve(a["loss_gd"], np.ones(w) / w, mode="valid")
    lo = w // 2
    ref = np.full(len(a["loss_gd"]), np.nan)
    ref[lo : lo + len(smooth)] = smooth
    ok = np.isfinite(ref)
    err = np.median(np.abs(a["predicted"][ok] - ref[ok]) / ref[ok])
    assert summary["central_rel_err"] == pytest.approx(err, rel=1e-10)
    stable = np.median(np.abs(a["loss_stable"][ok] - ref[ok]) / ref[ok])
    assert summary["stable_rel_err"] == pytest.approx(stable, rel=1e-10)
