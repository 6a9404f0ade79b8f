"""``benchmarks.gpu_check``: its tiny mode on the CPU writes every part and key with real
numbers; a part that overruns its box is cut and the JSON still written; the array comparison
and the float32 study on known inputs."""

import json
import math

import numpy as np
import pytest

from benchmarks import gpu_check


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    assert gpu_check.main(["--tiny", "--quiet", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_tiny_check_runs_every_part(tiny):
    assert tiny["backend"] == "cpu" and tiny["tiny"] is True
    assert {p: e["status"] for p, e in tiny["parts"].items()} == dict.fromkeys(
        gpu_check.PARTS, "done"
    )
    for part in gpu_check.PARTS:
        assert tiny["parts"][part]["wall_s"] > 0
    assert "device_kind" in tiny["environment"] and tiny["load_avg_after"]


def test_tiny_check_throughput_keys(tiny):
    d = tiny["parts"]["default"]
    for name in ("engine", "engine_no_tracking", "authors_workflow", "authors_workflow_async"):
        assert d[name]["seed_steps_per_s"] > 0 and d[name]["seed_steps"] > 0
    assert d["speedup_vs_async_peer"] == pytest.approx(
        d["engine"]["seed_steps_per_s"] / d["authors_workflow_async"]["seed_steps_per_s"]
    )
    b = tiny["parts"]["big"]
    assert b["workload"]["seeds"] == 16
    assert all(b[k]["seed_steps_per_s"] > 0 for k in ("f64", "f64_no_tracking", "f32"))
    f = tiny["parts"]["flows"]
    assert f["workload"]["runs"] == 4 and f["flow_steps_per_s"] > 0 and f["finite"]


def test_tiny_check_reproduces_the_stored_reference(tiny):
    """The reference sweep run again on this CPU: the rerun is bit-identical, every onset of
    the stored sweep is found again, and λ there and Γ agree (across CPUs with other vector
    extensions, rounding may move the trajectories a little; λ at onset stays close)."""
    r = tiny["parts"]["reference"]
    assert r["determinism"] == {
        "arrays": r["determinism"]["arrays"],
        "bit_identical": True,
        "differ": [],
    }
    assert r["determinism"]["arrays"] > 20
    vs = r["vs_reference"]
    assert not any(e.get("missing") for e in vs.values())
    assert vs["gamma"]["max_rel"] < 1e-12
    assert vs["instability_lam"]["same_nan"] and vs["instability_lam"]["max_rel"] < 1e-6
    stored = np.load(gpu_check.REFERENCE / "arrays.npz")
    assert (stored["instability_step"] >= 0).all()  # the comparison sees real onsets


def test_tiny_check_experiments_and_f32_study(tiny):
    for part in ("fig3a", "fig3a_f32", "fig4", "fig4_f32"):
        e = tiny["parts"][part]
        assert e["programs"] >= 1 and e["sweeps"] and e["seconds"] > 0
    assert tiny["parts"]["fig4_f32"]["dtype"] == "float32"
    study = tiny["f32_study"]
    assert study["fig3a"]["compared"] == 2  # CE and DCE at the smoke preset's one width
    rows = study["fig4"]["rows"]
    assert study["fig4"]["compared"] == len(rows) == 2
    assert all(r["found_f64"] == r["runs"] and r["found_f32"] == r["runs"] for r in rows)
    assert all(math.isfinite(r["ratio_f64"]) and math.isfinite(r["ratio_f32"]) for r in rows)


def test_a_part_past_its_box_is_cut_and_the_json_written(tmp_path):
    out = tmp_path / "cut.json"
    assert (
        gpu_check.main(["--tiny", "--quiet", "--parts", "fig4", "--budget", "2", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["parts"]["fig4"]["status"] == "timed_out"
    assert report["f32_study"] == {}


def test_compare_arrays_on_known_differences():
    ref = {"x": np.array([1.0, np.nan, 2.0]), "k": np.array([1, 2, 3]), "gone": np.zeros(2)}
    new = {"x": np.array([1.1, np.nan, 2.0]), "k": np.array([1, 5, 3])}
    vs = gpu_check.compare_arrays(new, ref)
    assert vs["x"]["max_abs"] == pytest.approx(0.1)
    assert vs["x"]["max_rel"] == pytest.approx(0.1)
    assert vs["x"]["same_nan"] and not vs["x"]["identical"]
    assert vs["k"] == {"identical": False, "differ": 1}
    assert vs["gone"] == {"missing": True}


def test_f32_study_in_units_of_the_combined_error():
    row = {"width": 10, "ce": (0.5, 0.03, 5), "dce": (0.6, 0.0, 5)}
    parts = {
        "fig3a": {"status": "done", "summary": {"a": [row]}},
        "fig3a_f32": {
            "status": "done",
            "summary": {"a": [{"width": 10, "ce": (0.55, 0.04, 5), "dce": (0.6, 0.0, 5)}]},
        },
    }
    s = gpu_check.f32_study(parts)["fig3a"]
    assert s["rows"][0]["ce"]["z"] == pytest.approx(0.05 / 0.05)
    assert s["rows"][0]["dce"]["z"] == 0.0
    assert s["max_abs_z"] == pytest.approx(1.0) and s["compared"] == 2
    assert "fig4" not in gpu_check.f32_study(parts)


def test_stored_fig4_precision_study_recomputes_from_the_stored_summaries(tmp_path):
    folder = gpu_check.ROOT / "docs" / "results" / "fig4_instability"
    out = tmp_path / "study.json"
    f64, f32 = folder / "summary.json", folder / "float32" / "summary.json"
    assert gpu_check.main(["--compare", str(f64), str(f32), "--out", str(out)]) == 0
    new = json.loads(out.read_text())["fig4"]
    stored = json.loads((folder / "float32" / "f32_vs_f64.json").read_text())["fig4"]
    assert new == stored and new["compared"] == 12
    assert all(r["found_f32"] == r["runs"] == 60 for r in new["rows"])
