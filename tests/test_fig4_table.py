"""Fig. 4's per-run table: the declared onset definition, and the report's numbers recomputed
from the committed table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynloss_jax import SweepConfig
from dynloss_jax.instability import CALIBRATED, DEFAULT, get_detector
from experiments import fig4_instability


def test_declared_onset_definition_is_the_default():
    # declared in docs/reproduction.md (Fig. 4) before the per-run rerun: the calibrated rule
    # with k = 5, growth = 1.01, n = 24, window = 64, rise = 1e-3
    declared = "calibrated:k=5,growth=1.01,n=24,window=64,rise=0.001"
    assert DEFAULT == "calibrated"
    assert CALIBRATED == dict(k=5.0, growth=1.01, n=24, window=64, rise=1e-3)
    assert get_detector().name == declared
    assert get_detector(fig4_instability.FULL["detector"]).name == declared
    assert get_detector(SweepConfig().detector).name == declared


def _synthetic_rows(ratio_c, deltas, etas=(0.25, 0.5, 1.0, 2.0)):
    """A table with λ1 = 2·r_c·exp(±δ)/η: the ratio η·λ1/2 depends on the condition c only
    (log-symmetric seed noise that cancels within each cell), so the slope is exactly −1."""
    import math

    conditions = [(25.0, 5000), (50.0, 5000), (75.0, 10000)]
    rows = []
    for eta in etas:
        for (amplitude, period), r in zip(conditions, ratio_c, strict=True):
            for seed, d in enumerate(deltas):
                lam = 2 * r * math.exp(d) / eta
                rows.append(
                    {
                        "kind": "main",
                        "loss": "dce",
                        "width": 100,
                        "eta": eta,
                        "amplitude": amplitude,
                        "period": period,
                        "seed": seed,
                        "step_cap": int(1000 / eta),
                        "stopped_step": -1,
                        "diverged": 0,
                        "lam_every": 0,
                        "lam_last_step": None,
                        "cross_step": None,
                        "crossed": None,
                        "onset[calibrated]": 100 + seed,
                        "lam1[calibrated]": lam,
                        "lam2[calibrated]": lam / 3,
                        # a watched rule that fires only in seed 0
                        "onset[first_difference]": 200 if seed == 0 else -1,
                        "lam1[first_difference]": 2 / eta if seed == 0 else float("nan"),
                        "lam2[first_difference]": 0.5 if seed == 0 else float("nan"),
                    }
                )
    return rows


def test_summary_of_a_synthetic_table_has_the_known_slope_and_clustered_error(tmp_path):
    import numpy as np

    ratio_c = (0.8, 0.9, 0.95)
    deltas = (0.05, -0.05, 0.02, -0.02)  # cancel in the mean of log λ of each cell
    rows = _synthetic_rows(ratio_c, deltas)
    path = tmp_path / "runs.csv"
    fig4_instability.write_table(rows, path)
    back = fig4_instability.read_table(path)
    assert fig4_instability.table_rules(back) == ["calibrated", "first_difference"]
    s = fig4_instability.summarise_table(back)

    # the closed form: cell means of log λ are log(2 r_c) − log η, so their residuals about
    # the fit are e_c = log r_c − mean(log r), the same at every η
    x = np.log([0.25, 0.5, 1.0, 2.0])
    e = np.log(ratio_c) - np.mean(np.log(ratio_c))
    n_cells = 4 * len(ratio_c)
    sxx = len(ratio_c) * np.sum((x - x.mean()) ** 2)
    se_clustered = np.sqrt(4 * np.sum(e**2) / (n_cells - 2) / sxx)
    # per run: the same residuals plus ±δ, over 4 seeds per cell
    resid_run = np.sum([(ec + d) ** 2 for ec in e for d in deltas]) * 4
    n_runs = n_cells * len(deltas)
    se_run = np.sqrt(resid_run / (n_runs - 2) / (len(deltas) * sxx))

    fit = s["fits"]["dce"]
    assert fit["slope"] == pytest.approx(-1, abs=1e-12)
    assert fit["slope_clustered"] == pytest.approx(-1, abs=1e-12)
    assert fit["cells"] == n_cells and fit["points"] == n_runs
    assert fit["slope_se_clustered"] == pytest.approx(se_clustered, rel=1e-9)
    assert fit["slope_se"] == pytest.approx(se_run, rel=1e-9)
    assert fit["slope_se_clustered"] > fit["slope_se"]

    # mean η·λ1/2 per η: the mean over conditions and seeds of r_c·exp(δ), the same at every η
    expected = np.mean([r * np.exp(d) for r in ratio_c for d in deltas])
    own = s["sensitivity"][next(iter(s["sensitivity"]))]
    assert [r["ratio_mean"] for r in own["rows"]] == pytest.approx([expected] * 4, rel=1e-12)
    assert own["fits"]["dce"]["ratio_min"] == pytest.approx(expected, rel=1e-12)
    assert own["found"] == own["runs"] == n_runs
    # the watched rule: one onset per cell, each exactly at 2/η
    watched = s["sensitivity"][get_detector("first_difference").name]
    assert watched["found"] == n_cells and watched["runs"] == n_runs
    assert all(r["ratio_mean"] == pytest.approx(1.0) for r in watched["rows"])
    assert watched["fits"]["dce"]["slope"] == pytest.approx(-1, abs=1e-12)
    # the rejection count: two rule × loss fits, both of slope exactly −1, neither rejected
    for kind in ("minus_one_in_se", "minus_one_in_se_clustered"):
        assert s["rejections"][kind]["fits"] == 2
        assert s["rejections"][kind]["rejected"] == 0


def test_crossing_and_never_crossed_from_a_synthetic_dense_table():
    rows = _synthetic_rows((0.9, 0.9, 0.9), (0.0, 0.0))
    dense = []
    for r in rows[:4]:  # η = 0.25, three conditions × two seeds: take four runs
        d = dict(r, kind="dense", lam_every=1, lam_last_step=3999)
        dense.append(d)
    dense[0].update(cross_step=150, crossed=1)  # onset 100: gap 50
    dense[1].update(cross_step=90, crossed=1)  # onset 101: gap −11
    dense[2].update(cross_step=None, crossed=0)
    dense[3].update(cross_step=None, crossed=0)
    s = fig4_instability.summarise_table(rows + dense)
    assert s["dense"]["all"] == {"runs": 4, "crossed": 2}
    gaps = s["crossing"][next(iter(s["crossing"]))][0]
    assert gaps["gap"] == [50, -11, None, None]
    assert (gaps["gap_min"], gaps["gap_median"], gaps["gap_max"]) == (-11, 19.5, 50)


# ---------------------------------------------------------------------------------------------
# The committed per-run table of the 10-seed rerun (docs/results/fig4_instability/per_run/):
# the report's Fig. 4 numbers recomputed from it, independently of summarise_table.

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "fig4_instability"
PER_RUN = RESULTS / "per_run"
REPORT = Path(__file__).resolve().parents[1] / "docs" / "reproduction.md"


def _fig4_section() -> str:
    text = REPORT.read_text()
    start = text.index("## Fig. 4:")
    return text[start : text.index("\n## ", start + 1)]


def _independent(rows, kind="main"):
    """Per rule label and loss: per η the ratios η·λ1/2 at the onsets and the runs; the slope
    of log λ1 on log η (np.polyfit) with its per-run s.e. and its s.e. on the (η, A, T) means of
    log λ1."""
    out = {}
    rows = [r for r in rows if r["kind"] == kind]
    labels = fig4_instability.table_rules(rows)
    for label in labels:
        lam_col = f"lam1[{label}]"
        for loss in sorted({r["loss"] for r in rows}):
            mine = [r for r in rows if r["loss"] == loss]
            ok = [r for r in mine if np.isfinite(r[lam_col])]
            etas = sorted({r["eta"] for r in mine})
            ratios = {e: [e * r[lam_col] / 2 for r in ok if r["eta"] == e] for e in etas}
            x = np.log([r["eta"] for r in ok])
            y = np.log([r[lam_col] for r in ok])
            (b, _), cov = np.polyfit(x, y, 1, cov="unscaled")
            resid = y - np.polyval([b, _], x)
            se = np.sqrt(cov[0, 0] * np.sum(resid**2) / (len(x) - 2))
            cells = {}
            for r in ok:
                cells.setdefault((r["eta"], r["amplitude"], r["period"]), []).append(
                    np.log(r[lam_col])
                )
            xc = np.log([k[0] for k in cells])
            yc = np.array([np.mean(v) for v in cells.values()])
            (bc, cc), covc = np.polyfit(xc, yc, 1, cov="unscaled")
            residc = yc - (bc * xc + cc)
            sec = np.sqrt(covc[0, 0] * np.sum(residc**2) / (len(xc) - 2))
            out[label, loss] = {
                "ratios": ratios,
                "runs": len(mine),
                "found": len(ok),
                "slope": b,
                "se": se,
                "slope_clustered": bc,
                "se_clustered": sec,
            }
    return out


def _dash(lo: float, hi: float) -> str:
    a, b = f"{lo:.2f}", f"{hi:.2f}"
    return a if a == b else f"{a}–{b}"


def _minus(x: float) -> str:
    return f"{x:.3f}".replace("-", "−")


def test_committed_table_reproduces_the_stored_summary_and_the_report():
    rows = fig4_instability.read_table(PER_RUN / fig4_instability.TABLE)
    summary = json.loads((PER_RUN / "summary.json").read_text())
    # 1. the stored summary is the table's, to the last bit
    assert json.dumps(fig4_instability.summarise_table(rows)) == json.dumps(summary)

    # 2. the earlier stored run (same settings, summaries only) agrees on every field it had
    def same(old, new, path=""):
        if isinstance(old, dict):
            for k, v in old.items():
                same(v, new[k], f"{path}/{k}")
        elif isinstance(old, list):
            assert len(old) == len(new), path
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                same(a, b, f"{path}[{i}]")
        else:
            assert json.dumps(old) == json.dumps(new), path

    same(json.loads((RESULTS / "summary.json").read_text()), summary)
    # 3. an independent recomputation of the report's numbers, and the report's table
    section = _fig4_section()
    ind = _independent(rows)
    sens = summary["sensitivity"]
    for entry in sens.values():
        label = entry["label"]
        cells, slopes, found, runs = [], [], 0, 0
        for loss, fit in entry["fits"].items():
            mine = ind[label, loss]
            means = [np.mean(v) for v in mine["ratios"].values() if v]
            assert fit["ratio_min"] == pytest.approx(min(means), rel=1e-12)
            assert fit["ratio_max"] == pytest.approx(max(means), rel=1e-12)
            assert fit["slope"] == pytest.approx(mine["slope"], rel=1e-9)
            assert fit["slope_se"] == pytest.approx(mine["se"], rel=1e-9)
            assert fit["slope_clustered"] == pytest.approx(mine["slope_clustered"], rel=1e-9)
            assert fit["slope_se_clustered"] == pytest.approx(mine["se_clustered"], rel=1e-9)
            cells.append(_dash(min(means), max(means)))
            slopes.append(
                f"{_minus(mine['slope'])} ± {mine['se']:.3f} (± {mine['se_clustered']:.3f})"
            )
            found += mine["found"]
            runs += mine["runs"]
        assert entry["found"] == found and entry["runs"] == runs
        line = f"| {found} | " + " | ".join(cells) + " | " + " | ".join(slopes) + " |"
        assert line in section, f"the report's row for {label} should read: {line}"
    # the count of rule × loss fits more than 3 s.e. from −1, as the report states it
    for kind, key in (("minus_one_in_se", "se"), ("minus_one_in_se_clustered", "se_clustered")):
        hits = sum(abs(m["slope"] + 1) > 3 * m[key] for m in ind.values())
        assert summary["rejections"][kind]["rejected"] == hits
    n = summary["rejections"]["minus_one_in_se_clustered"]
    assert f"{n['rejected']} of {n['fits']}" in section


def test_replot_from_the_table_alone(tmp_path, capsys):
    """--replot on a folder holding only runs.csv (no run folders) draws the figure and prints
    the table of the summary recomputed from it."""
    rows = _synthetic_rows((0.8, 0.9, 0.95), (0.05, -0.05))
    fig4_instability.write_table(rows, tmp_path / fig4_instability.TABLE)
    (tmp_path / "sweeps").mkdir()  # folders without a run in them do not count
    assert fig4_instability.main(["--replot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    slope = fig4_instability.summarise_table(rows)["fits"]["dce"]
    assert f"b = {slope['slope']:.3f} ± {slope['slope_se']:.3f} (per run)" in out
    assert (tmp_path / fig4_instability.PNG).exists()
