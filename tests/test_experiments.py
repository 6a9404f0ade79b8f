"""The Fig. 3, Fig. 4 and (A, T) scan experiments: their ``--quick`` path shrunk by
``DYNLOSS_SMOKE=1``, run in this process into a temporary folder; the arrays and summaries are
checked against NumPy recomputations and the physics they must obey, and ``--replot`` redraws
without training.

fig3's panel (a) and the (A, T) scan use the same static settings in smoke mode (DCE, width 4,
120 steps, static last period), so the scan reuses fig3's compiled program.
"""

import dataclasses
import json
import os
import signal

import numpy as np
import pytest

import dynloss_jax
from dynloss_jax import load_run, sweep
from dynloss_jax.losses import STATIC_OF
from experiments import (
    beyond_spiral,
    central_flow,
    common,
    fig3_width_sweep,
    fig3b_run_length,
    fig4_instability,
    sm_amplitude_period,
)


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("DYNLOSS_SMOKE", "1")


def forbid_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--replot must not train")

    monkeypatch.setattr(dynloss_jax, "run_sweep", refuse)
    monkeypatch.setattr(sweep, "run_sweep", refuse)


def run_then_replot(module, out, capsys, monkeypatch, *flags):
    """Runs ``--quick`` (with ``flags``) then ``--replot`` (with training forbidden); returns
    the printed table."""
    assert module.main(["--quick", "--out", str(out), "--quiet", *flags]) == 0
    first = capsys.readouterr().out
    png = out / module.PNG
    assert png.stat().st_size > 10_000
    png.unlink()
    with monkeypatch.context() as m:
        forbid_training(m)
        assert module.main(["--replot", "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert png.stat().st_size > 10_000
    assert first == second, "--replot must print the same table as the run"
    assert f"wrote {png}" in first
    return first


def mean_sem(a):
    a = np.asarray(a, float)
    return a.mean(), a.std(ddof=1) / np.sqrt(len(a))


def test_fig3_quick_smoke(tmp_path, capsys, monkeypatch, smoke):
    text = run_then_replot(fig3_width_sweep, tmp_path, capsys, monkeypatch)
    s = fig3_width_sweep.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    for panel, losses in (("a", ("ce", "dce")), ("b", ("mse", "dmse1", "dmse1o", "dmse2"))):
        suffix = "_b" if panel == "b" else ""
        period = s["period" + suffix]
        steps = s["periods" + suffix] * period
        run = load_run(tmp_path / panel)
        assert run.config["settings"]["period"] == [period]
        settings = run.config["settings"]
        assert run.coords["loss"] == list(losses)
        assert settings["static_last_period"] and settings["steps"] == steps
        assert settings["eta"] == [s[f"eta_{panel}"]]
        assert run["final_val_acc"].shape == (
            len(losses),
            len(s["widths"]),
            1,
            1,
            1,
            s[f"seeds_{panel}"],
        )
        # Γ: sums to C always, ≡ 1 during the static last period, and before it only at the
        # start of each period
        gamma = run["gamma"]
        np.testing.assert_allclose(gamma.sum(-1), 3.0, rtol=1e-12)
        last = run["record_step"] >= steps - period
        inside = ~last & (run["record_step"] % period != 0)
        dynamical = [i for i, loss in enumerate(losses) if loss.startswith("d")]
        assert np.all(gamma[dynamical][..., last, :] == 1.0)
        assert np.all(gamma[dynamical][..., inside, :].max(-1) > 1.0 + 1e-9)
        # the summary is the mean ± sem over seeds, and the paired difference, of the arrays
        acc = run["final_val_acc"]
        assert np.all((acc >= 0) & (acc <= 1)) and not run["diverged"].any()
        for row, wi in zip(summary[panel], range(len(s["widths"])), strict=True):
            for li, loss in enumerate(losses):
                m, e = mean_sem(acc[li, wi, 0, 0, 0])
                assert row[loss][:2] == pytest.approx([m, e], rel=1e-12, abs=1e-15)
                if STATIC_OF[loss] != loss:
                    d = acc[li, wi, 0, 0, 0] - acc[0, wi, 0, 0, 0]
                    key = f"{loss}-{STATIC_OF[loss]}"
                    assert row[key] == pytest.approx(list(mean_sem(d)), rel=1e-12, abs=1e-15)
                    assert f"{row[key][0]:+.3f} ± {row[key][1]:.3f}" in text
    assert "Fig. 3a" in text and "Fig. 3b" in text


def test_beyond_spiral_quick_smoke(tmp_path, capsys, monkeypatch, smoke):
    """Two of its seven sweeps (all are SweepConfigs built the same way; wine from the CLI and
    the optimisers' thresholds are tested elsewhere): the data set record, Γ over MNIST-1D's 10
    classes, the summary recomputed from the arrays, GD's threshold, and GD reaching 2/η."""
    pytest.importorskip("mnist1d")
    sweeps = ("mnist1d_ce", "opt_gd")
    text = run_then_replot(beyond_spiral, tmp_path, capsys, monkeypatch, "--sweeps", *sweeps)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(sweeps)
    s = beyond_spiral.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    run = load_run(tmp_path / "mnist1d_ce")
    data = run.config["data"]
    assert (data["name"], data["n_features"], data["n_classes"]) == ("mnist1d", 40, 10)
    assert data["n_train"] + data["n_val"] == 5000 and data["split_seed"] == 0
    gamma = run["gamma"]
    assert gamma.shape[-1] == 10
    np.testing.assert_allclose(gamma.sum(-1), 10.0, rtol=1e-12)
    assert gamma[run.coords["loss"].index("dce")].max() > 1.0 + 1e-9, "Γ must move under DCE"
    acc = run["final_val_acc"]
    for row, wi in zip(
        summary["accuracy"]["mnist1d_ce"], range(len(run.coords["width"])), strict=True
    ):
        for li, loss in enumerate(run.coords["loss"]):
            m, e = mean_sem(acc[li, wi, 0, 0, 0][~run["diverged"][li, wi, 0, 0, 0]])
            assert row[loss][:2] == pytest.approx([m, e], rel=1e-12, abs=1e-15)
            assert f"{row[loss][0]:.3f} ± {row[loss][1]:.3f}" in text
    run = load_run(tmp_path / "opt_gd")
    threshold = 2 / s["eta_gd"]
    assert run.config["settings"]["optimizer"] == "gd"
    assert run.config["threshold"]["value"] == [pytest.approx(threshold, rel=1e-12)]
    after = run["eig_step"] >= s["period"]
    row = summary["optimizers"]["gd"]
    for li, loss in enumerate(run.coords["loss"]):
        ratio = run["lam"][li, 0, 0, 0, 0][:, after, 0] / threshold
        assert row[loss]["ratio_max"] == pytest.approx(ratio.max(), rel=1e-12)
        assert row[loss]["ratio_median"] == pytest.approx(np.median(ratio), rel=1e-12)
        assert row[loss]["frac_above"] == pytest.approx(np.mean(ratio > 1), rel=1e-12)
    # full-batch GD at η = 1 sharpens up to its edge of stability 2/η within the smoke run
    assert row["ce"]["ratio_max"] > 0.9


def test_fig4_quick_smoke(tmp_path, capsys, monkeypatch, smoke):
    text = run_then_replot(fig4_instability, tmp_path, capsys, monkeypatch)
    s = fig4_instability.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    etas, lams = [], []
    family = load_run(tmp_path / "dce")  # one program for every η, each run its own length
    assert family.config["programs"] == 1 and family.coords["eta"] == list(s["etas_ce"])
    for eta in s["etas_ce"]:
        run = family.sel(eta=eta)
        steps = fig4_instability.run_length(run, eta)
        assert steps == round(s["steps_eta"] / eta)  # 100 000/η in the paper, scaled down
        onset = run["instability_step"]
        assert np.all((onset == -1) | ((onset >= 2) & (onset < steps)))
        # λ at the onset is the exact one stored by the engine; runs stop there
        np.testing.assert_array_equal(run["instability_lam"], run["instability_lam_k"][..., 0])
        fired = onset >= 0
        assert np.array_equal(np.isfinite(run["instability_lam"]), fired)
        assert np.all(run["stopped_step"][fired] > onset[fired])
        assert run.config["settings"]["stop_at_onset"]
        found = np.isfinite(run["instability_lam"][0])
        etas += [eta] * int(found.sum())
        lams += run["instability_lam"][0][found].tolist()
        row = next(r for r in summary["rows"] if r["eta"] == eta and r["loss"] == "dce")
        assert row["found"] == int(found.sum()) and row["runs"] == found.size
        assert row["steps"] == steps
    assert len(etas) >= 2, "the smoke settings must show instabilities, or this tests nothing"
    fit = summary["fits"]["dce"]
    if len(set(etas)) > 1 and len(etas) > 2:
        slope = np.polyfit(np.log(etas), np.log(lams), 1)[0]
        assert fit["slope"] == pytest.approx(slope, rel=1e-10)
    assert "fit log λ1" in text
    # the sensitivity of Fig. 4 to its rule, recomputed from the arrays: every rule of the
    # runs (the run's own and the watched ones) with its mean η·λ1/2 and slope
    sens = json.loads((tmp_path / "sensitivity.json").read_text())
    assert sens["sensitivity"] == summary["sensitivity"]
    rules = {}
    for eta in s["etas_ce"]:
        run = family.sel(eta=eta)
        assert run.config["settings"]["watch"] == list(s["watch"])
        own = [run["instability_step"], run["instability_lam"]]
        per_rule = [own] + [
            [run["watch_step"][..., i], run["watch_lam"][..., i]] for i in range(len(s["watch"]))
        ]
        for name, (step, lam) in zip(sens["sensitivity"], per_rule, strict=True):
            lam = lam.ravel()
            assert np.array_equal(np.isfinite(lam), step.ravel() >= 0)
            row = next(r for r in sens["sensitivity"][name]["rows"] if r["eta"] == eta)
            found = np.isfinite(lam)
            assert row["found"] == found.sum() and row["runs"] == lam.size
            if found.sum() > 1:
                m, e = mean_sem(eta * lam[found] / 2)
                assert row["ratio_mean"] == pytest.approx(m, rel=1e-12)
                assert row["ratio_sem"] == pytest.approx(e, rel=1e-9)
            rules.setdefault(name, []).append(found.sum())
    assert sum(rules[next(iter(rules))]) >= 2, "the run's own rule must fire in the smoke runs"
    assert any(sum(v) for k, v in rules.items() if k.startswith("second_difference"))
    # the dense runs: λ1 at every step, and the gap from each rule's onset to the crossing
    dense = load_run(tmp_path / "dense_dce")
    lam = dense["lam"][..., 0].reshape(-1)
    first = int(np.argmax(lam > 2 / 2.0))
    assert lam[first] > 1.0, "λ1 must cross 2/η in the dense smoke run, or this tests nothing"
    for items in sens["crossing"].values():
        (item,) = items
        onset = item["onset"][0]
        assert item["first_cross"] == [int(dense["eig_step"][first])]
        assert item["gap"] == [None if onset < 0 else int(dense["eig_step"][first]) - onset]
    # the per-run table beside the summary: its onsets and λ are the arrays', and the whole
    # summary is recomputed from it alone (as --replot does when the run folders are gone)
    rows = fig4_instability.read_table(tmp_path / fig4_instability.TABLE)
    main = [r for r in rows if r["kind"] == "main"]
    assert len(main) == family["instability_step"].size
    own = fig4_instability.rule_columns(fig4_instability.table_rules(rows)[0])
    for r in main:
        run = family.sel(eta=r["eta"], seed=r["seed"])
        step = int(run["instability_step"].ravel()[0])
        assert r[own[0]] == step
        lam1 = float(run["instability_lam_k"][..., 0].ravel()[0])
        assert r[own[1]] == lam1 or (np.isnan(lam1) and np.isnan(r[own[1]]))
    (d,) = [r for r in rows if r["kind"] == "dense"]
    assert d["crossed"] == 1 and d["cross_step"] == int(dense["eig_step"][first])
    again = fig4_instability.summarise_table(rows)
    assert json.dumps(again) == json.dumps(summary)


def test_fit_slope_recovers_a_power_law():
    rng = np.random.default_rng(0)
    eta = np.repeat([0.05, 0.1, 0.2, 0.4], 30)
    lam = 2.1 / eta * np.exp(0.05 * rng.standard_normal(eta.size))
    b, se, c, n = fig4_instability.fit_slope(eta, lam)
    slope, intercept = np.polyfit(np.log(eta), np.log(lam), 1)
    assert (b, c, n) == (
        pytest.approx(slope, rel=1e-12),
        pytest.approx(intercept, rel=1e-12),
        eta.size,
    )
    assert abs(b + 1) < 3 * se < 0.1
    assert np.isnan(fig4_instability.fit_slope([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])[0])


def test_fig3b_run_length_smoke(tmp_path, capsys, monkeypatch, smoke):
    # one padded program per length for the four losses of the MSE family, not four
    text = run_then_replot(fig3b_run_length, tmp_path, capsys, monkeypatch, "--pad-widths")
    s = fig3b_run_length.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    assert [part["steps"] for part in summary.values()] == [n * s["period"] for n in s["lengths"]]
    for key, part in summary.items():
        run = load_run(tmp_path / key)
        # held-out seeds: none of the scan's 0–4
        assert part["seeds"] == list(range(5, 5 + s["seeds"])) == run.coords["seed"]
        assert run.config["settings"]["static_last_period"]
        last = run["gamma"][..., -(s["period"] // run.config["settings"]["record_every"]) :, :]
        assert np.all(last == 1.0)  # Γ ≡ 1 over the last period
        for row, width in zip(part["rows"], run.coords["width"], strict=True):
            at = run.sel(width=width)
            for loss in run.coords["loss"]:
                val = at.sel(loss=loss)["final_val_acc"].ravel()
                train = at.sel(loss=loss)["final_train_acc"].ravel()
                assert row[loss][0] == pytest.approx(val.mean(), rel=1e-12)
                assert row["train_" + loss][0] == pytest.approx(train.mean(), rel=1e-12)
                if loss != "mse":
                    ref = at.sel(loss="mse")["final_val_acc"].ravel()
                    m, e = mean_sem(val - ref)
                    assert row[f"{loss}-mse"][0] == pytest.approx(m, abs=1e-12)
                    assert row[f"{loss}-mse"][1] == pytest.approx(e, abs=1e-12)
    assert "dmse1o-mse" in text and "steps, seeds 5–6" in text


def test_fig4_steps_scale_with_one_over_eta():
    from dynloss_jax.config import steps_for

    assert steps_for(0.05, 100_000, 100) == 2_000_000
    assert steps_for(0.3, 100_000, 100) == 333_400  # rounded up to k·100


def test_sm_quick_smoke(tmp_path, capsys, monkeypatch, smoke):
    text = run_then_replot(sm_amplitude_period, tmp_path, capsys, monkeypatch)
    s = sm_amplitude_period.SMOKE
    run = load_run(tmp_path)
    assert run.coords["amplitude"] == list(s["amplitudes"]) and 1.0 in run.coords["amplitude"]
    acc = run["final_val_acc"][0, 0, 0]  # (A, T, seed)
    # A = 1 is the static loss: Γ ≡ 1 whatever T, so those runs are bit-identical across T
    i1 = run.coords["amplitude"].index(1.0)
    assert np.all(run["gamma"][0, 0, 0, i1] == 1.0)
    np.testing.assert_array_equal(
        run["final_loss"][0, 0, 0, i1, 0], run["final_loss"][0, 0, 0, i1, 1]
    )
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    for ai in range(acc.shape[0]):
        for ti in range(acc.shape[1]):
            d = acc[ai, ti] - acc[i1, ti]
            np.testing.assert_allclose(
                summary["delta_mean"][ai][ti], d.mean(), rtol=1e-12, atol=1e-15
            )
            np.testing.assert_allclose(
                summary["val_acc_mean"][ai][ti], acc[ai, ti].mean(), rtol=1e-12
            )
    assert "static reference (A = 1)" in text
    # the second protocol: read at the end of the last dynamical period (step steps − T), from
    # the recorded curve, before the static period could undo anything
    val = run["val_acc"][0, 0, 0]
    for ti, period in enumerate(run.coords["period"]):
        (at,) = np.nonzero(run["record_step"] == s["steps"] - period)[0]
        for ai in range(acc.shape[0]):
            d = val[ai, ti, :, at] - val[i1, ti, :, at]
            np.testing.assert_allclose(summary["delta_dynamic_mean"][ai][ti], d.mean(), atol=1e-15)
            np.testing.assert_allclose(
                summary["val_acc_dynamic_mean"][ai][ti], val[ai, ti, :, at].mean(), atol=1e-15
            )
        # Γ at that step: the last dynamical period is still under way one step before it
        assert np.all(np.isfinite(val[:, ti, :, at]))
    assert "end of the last dynamical period" in text
    # the forgetting readings, recomputed from the stored curves by index arithmetic: record r
    # holds step r·record_every, so τ = T/2 of period k is record (k·T + T/2) / record_every
    every = s["record_every"]
    assert np.array_equal(run["record_step"], every * np.arange(s["steps"] // every))
    cval = run["class_val_acc"][0, 0, 0]  # (A, T, seed, record, class)
    n_classes = cval.shape[-1]
    for ti, period in enumerate(run.coords["period"]):
        f = summary["forgetting"][ti]
        n_dyn = s["steps"] // period - 1
        assert f["period"] == period and f["dynamical_periods"] == n_dyn
        rows = [(k * period + period // 2) // every for k in range(n_dyn)]
        lo, hi = (s["steps"] - 2 * period) // every, (s["steps"] - period) // every
        for ai in range(acc.shape[0]):
            peak = val[ai, ti][:, rows]  # (seed, K)
            np.testing.assert_allclose(f["per_seed"]["peak"][ai], peak, atol=0)
            np.testing.assert_allclose(f["peak_mean"][ai], peak.mean(0), atol=1e-15)
            sem = peak.std(0, ddof=1) / np.sqrt(len(peak))
            np.testing.assert_allclose(f["peak_sem"][ai], sem, atol=1e-15)
            np.testing.assert_allclose(
                f["class_peak_mean"][ai], cval[ai, ti][:, rows].mean(0), atol=1e-15
            )
            others = [
                min(cval[ai, ti, seed, r, c] for c in range(n_classes) if c != k % n_classes)
                for seed in range(s["seeds"])
                for k, r in enumerate(rows)
            ]
            np.testing.assert_allclose(
                f["others_peak_mean"][ai],
                np.reshape(others, (s["seeds"], n_dyn)).mean(0),
                atol=1e-15,
            )
            last_min = val[ai, ti, :, lo : hi + 1].min(-1)
            best = val[ai, ti, :, :lo].max(-1)
            np.testing.assert_allclose(f["last_min_mean"][ai], last_min.mean(), atol=1e-15)
            tau = np.argmin(val[ai, ti, :, lo : hi + 1], -1) * every / period
            np.testing.assert_allclose(f["per_seed"]["last_min_tau"][ai], tau, atol=1e-15)
            np.testing.assert_allclose(f["drop_mean"][ai], (best - last_min).mean(), atol=1e-15)
            d = last_min - val[i1, ti, :, lo : hi + 1].min(-1)
            np.testing.assert_allclose(f["delta_last_min_mean"][ai], d.mean(), atol=1e-15)
            if n_dyn > 1:
                pd = peak[:, :-1].max(-1) - peak[:, -1]
                np.testing.assert_allclose(f["peak_drop_mean"][ai], pd.mean(), atol=1e-15)
    assert "Forgetting readings" in text
    # the compact curves kept beside the summary give the same accuracies
    with np.load(tmp_path / sm_amplitude_period.CURVES) as c:
        np.testing.assert_allclose(c["val_correct"] / c["val_points"], val, atol=1e-12)
        np.testing.assert_allclose(c["class_val_correct"] / c["class_val_points"], cval, atol=1e-12)
        np.testing.assert_array_equal(c["record_step"], run["record_step"])
    assert (tmp_path / sm_amplitude_period.FORGETTING_PNG).stat().st_size > 10_000


def test_sm_forgetting_readings_on_a_planted_curve():
    """A curve with known values: τ = T/2 readings, the last dynamical period's minimum (its end
    point included), the best record before it, and the lowest non-emphasised class."""
    steps, period, every = 400, 100, 10
    record_step = np.arange(0, steps, every)
    rng = np.random.default_rng(0)
    val = rng.uniform(0.5, 0.6, (2, len(record_step)))  # two runs
    cval = rng.uniform(0.5, 0.6, (2, len(record_step), 3))
    val[0, 20] = 0.1  # step 200: start of the last dynamical period (steps − 2T)
    val[1, 30] = 0.2  # step 300: its end (steps − T), included
    val[1, 31] = 0.0  # step 310: the static period, excluded
    val[0, 7] = 0.9  # step 70, before the last dynamical period
    val[:, 25] = [0.3, 0.4]  # step 250: τ = T/2 of period 2
    cval[0, 15] = [0.9, 0.05, 0.7]  # step 150: τ = T/2 of period 1 (class 1 emphasised)
    r = sm_amplitude_period.forgetting_readings(record_step, val, cval, steps, period)
    assert r["peak_step"] == [50, 150, 250] and r["emphasised"] == [0, 1, 2]
    np.testing.assert_array_equal(r["peak"], val[:, [5, 15, 25]])
    np.testing.assert_array_equal(r["last_min"], [0.1, 0.2])
    np.testing.assert_array_equal(r["last_min_tau"], [0.0, 1.0])  # steps 200 and 300, T = 100
    assert r["best_before"][0] == 0.9
    np.testing.assert_array_equal(r["drop"], r["best_before"] - [0.1, 0.2])
    assert r["others_peak"][0, 1] == 0.7  # class 1 (0.05) is the emphasised one
    np.testing.assert_allclose(r["peak_drop"], val[:, [5, 15]].max(-1) - [0.3, 0.4])
    with pytest.raises(ValueError, match="not recorded"):
        sm_amplitude_period.forgetting_readings(record_step[::2], val[:, ::2], cval[:, ::2],
                                                steps, period)  # fmt: skip


def test_sm_refuses_a_period_that_does_not_divide_the_run(tmp_path, capsys, smoke):
    code = sm_amplitude_period.main(
        ["--quick", "--out", str(tmp_path), "--periods", "7", "--quiet"]
    )
    assert code == 2
    assert "periods=7" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_resume_loads_finished_sweeps_and_continues_an_interrupted_one(
    tmp_path, capsys, monkeypatch, smoke
):
    """An experiment stopped by SIGTERM in its second sweep (the signal sent to this process
    after two chunks), then run again with ``--resume``: the stop wrote a checkpoint, printed one
    line naming the sweep and the command to resume, and returned 143; the finished sweep is
    loaded, not rerun; the unfinished one continues from its checkpoint (not from the start) to
    the arrays of an uninterrupted run, bit for bit."""
    real_config_of = fig4_instability.config_of
    monkeypatch.setattr(  # several chunks per sweep, so there is a point to stop at
        fig4_instability,
        "config_of",
        lambda *a, **k: dataclasses.replace(real_config_of(*a, **k), chunk_steps=200),
    )
    args = ["--quick", "--quiet"]
    assert fig4_instability.main([*args, "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    real = sweep.run_sweep
    calls, chunk = [], []

    def interrupted(config, out, progress=None, **kw):
        calls.append((out.name, kw["resume"]))
        if out.name != "dense_dce" or kw["resume"]:
            return real(config, out, progress=progress, **kw)
        chunk.append(config.chunk)

        def signal_after_two_chunks(done, total):
            if done == 2 * config.chunk * config.seeds:
                os.kill(os.getpid(), signal.SIGTERM)  # the experiment's handler takes it

        return real(config, out, progress=signal_after_two_chunks, **kw)

    monkeypatch.setattr(dynloss_jax, "run_sweep", interrupted)
    out = tmp_path / "interrupted"
    assert fig4_instability.main([*args, "--out", str(out)]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fig4_instability: stopped by SIGTERM in "), err
    assert f"dense_dce at step {2 * chunk[0]:,} of" in err[0]
    assert err[0].endswith(
        f"python -m experiments.fig4_instability {' '.join(args)} --out {out} --resume"
    )
    stopped = load_run(out / "dense_dce")  # read as far as the checkpoint goes
    assert not stopped.complete and int(stopped["steps_done"].max()) == 2 * chunk[0]
    calls.clear()
    assert fig4_instability.main([*args, "--out", str(out), "--resume"]) == 0
    # the main sweep was finished: loaded, not rerun
    assert calls == [("dense_dce", True)]
    for name in ("dce", "dense_dce"):
        want = load_run(tmp_path / "whole" / name).arrays
        got = load_run(out / name).arrays
        for key, a in want.items():
            np.testing.assert_array_equal(got[key], a, err_msg=f"{name} {key}")
    assert fig4_instability.main([*args, "--out", str(out), "--resume", "--overwrite"]) == 2


def test_fig4_one_program_per_family_equals_one_per_eta():
    """Fig. 4 as one program per loss family (each run stopping at its own length) gives the
    onsets, λ there and records of one program per (loss, η), to rounding: the smoke sweep,
    where every run fires."""
    s = dict(fig4_instability.SMOKE, dense_seeds=0)
    runs, programs, sweeps = {}, {}, {}
    for layout in ("eta", "family"):
        configs = fig4_instability.configs({**s, "programs": layout})
        done = {key: dynloss_jax.run_sweep(c.validate()) for key, c in configs.items()}
        runs[layout] = fig4_instability.split(done)
        programs[layout] = sum(run.config["programs"] for run in done.values())
        sweeps[layout] = done
    assert programs == {"eta": len(s["etas_ce"]), "family": 1}
    assert list(runs["eta"]) == list(runs["family"]) == [("dce", eta) for eta in s["etas_ce"]]
    for key, a in runs["eta"].items():
        b = runs["family"][key]
        assert np.all(a["instability_step"] >= 0), "every smoke run must fire"
        for name in ("instability_step", "watch_step", "stopped_step", "diverged"):
            np.testing.assert_array_equal(b[name], a[name], err_msg=f"{key} {name}")
        for name in ("instability_lam_k", "watch_lam_k", "final_loss", "final_val_acc"):
            np.testing.assert_allclose(b[name], a[name], rtol=1e-10, err_msg=f"{key} {name}")
        n = a["loss"].shape[-1]
        np.testing.assert_allclose(b["loss"][..., :n], a["loss"], rtol=1e-10)
        assert np.all(np.isnan(b["loss"][..., n:]))
    # the comparison benchmarks.fig4_layouts stores for the full run says the same
    from benchmarks.fig4_layouts import compare_runs

    compared = compare_runs(sweeps["eta"], sweeps["family"])
    assert len(compared["rows"]) == len(s["etas_ce"])
    for row in compared["rows"]:
        assert all(v for k, v in row.items() if k.endswith(("_equal", "_same_nan"))), row
        assert all(v < 1e-10 for k, v in row.items() if k.endswith("_max_rel")), row


def test_dtype_flag_sets_the_precision_of_every_sweep(monkeypatch):
    """``--dtype float32`` reaches every sweep of an experiment; without it each keeps its own."""
    seen = {}
    monkeypatch.setattr(
        common, "sweep", lambda config, out, args, label: seen.update({out: config})
    )
    exp = fig4_instability
    for flag, dtype in ((["--dtype", "float32"], "float32"), ([], "float64")):
        args = common.parser(exp.__doc__, exp.OUT).parse_args(["--out", "x", *flag])
        seen.clear()
        common.run_all(exp, exp.SMOKE, common.Path("x"), args)
        assert len(seen) == len(exp.configs(exp.SMOKE)) > 1
        assert {c.dtype for c in seen.values()} == {dtype}


def test_central_flow_quick_smoke(tmp_path, capsys, monkeypatch, smoke):
    """The smoke preset meets the edge: the central flow's block activates and holds λ1 near
    2/η, GD's λ1 crosses 2/η, and ``central_rel_err`` is recomputed from the stored arrays (a
    moving average by convolution, not the module's cumulative sums); the same runs vmapped in
    one program equal them; an interrupted run resumes to the same arrays."""
    run_then_replot(central_flow, tmp_path, capsys, monkeypatch)
    s = central_flow.SMOKE
    summary = json.loads((tmp_path / common.SUMMARY).read_text())
    stored = np.load(tmp_path / central_flow.ARRAYS)
    w, eta = s["window"], s["eta"]
    for loss in ("ce", "dce"):
        a = {k[len(loss) + 2 :]: stored[k] for k in stored.files if k.startswith(loss + "__")}
        assert len(a["loss_gd"]) == central_flow.n_steps(s)
        r = summary[loss]
        onset = r["onset"]
        assert onset["central_active"] > 0 and onset["gd_lam_above"] > 0
        after = a["lam_central"][onset["central_active"] :, 0] * eta / 2
        # held at the edge once there (never far above it; it may leave downwards when Γ
        # flattens the landscape)
        assert np.all(after < 1.1) and np.all(np.abs(after[:3] - 1) < 0.1)
        smooth = np.convolve(a["loss_gd"], np.ones(w) / w, mode="valid")
        lo = w // 2
        ref = np.full(len(a["loss_gd"]), np.nan)
        ref[lo : lo + len(smooth)] = smooth
        ok = np.isfinite(ref)
        err = np.median(np.abs(a["predicted"][ok] - ref[ok]) / ref[ok])
        assert r["central_rel_err"] == pytest.approx(err, rel=1e-10)
        stable = np.median(np.abs(a["loss_stable"][ok] - ref[ok]) / ref[ok])
        assert r["stable_rel_err"] == pytest.approx(stable, rel=1e-10)
        # per period of Γ, the same medians over that period's steps
        T = s["period"]
        for p in r["per_period"]:
            lo_p, hi_p = p["steps"]
            sel = np.zeros(len(ref), bool)
            sel[lo_p:hi_p] = True
            sel &= ok
            want = np.median(np.abs(a["predicted"][sel] - ref[sel]) / ref[sel])
            assert p["central_rel_err"] == pytest.approx(want, rel=1e-10)
            assert hi_p - lo_p <= T
    # --resummarise recomputes the summary from the arrays alone: the same numbers
    before = (tmp_path / common.SUMMARY).read_text()
    assert central_flow.main(["--replot", "--resummarise", "--out", str(tmp_path)]) == 0
    np.testing.assert_equal(  # NaN equals NaN here
        json.loads((tmp_path / common.SUMMARY).read_text()), json.loads(before)
    )
    # in CE the central flow predicts GD's average better than gradient flow does
    assert summary["ce"]["central_rel_err"] < summary["ce"]["stable_rel_err"]
    # several runs vmapped in one program (what an accelerator runs by the thousand): seed 0
    # equals the run above, made alone in pieces, and seed 1 meets the edge too
    program, W0 = central_flow.many_flows(
        s, "dce", [s["seed"], s["seed"] + 1], central_flow.n_steps(s)
    )
    batched = program(W0)
    assert np.all(np.asarray(batched.active).max(axis=1) > 0), "every run must meet the edge"
    alone = {k[len("dce__") :]: stored[k] for k in stored.files if k.startswith("dce__")}
    for name in ("loss_gd", "loss_central", "predicted", "lam_central", "trace_X"):
        np.testing.assert_allclose(
            np.asarray(getattr(batched, name))[0], alone[name], rtol=1e-9, atol=1e-12
        )
    # an interrupted run (stopped after its second piece, checkpointing after every piece) is
    # refused without --resume and continued with it, to these arrays bit for bit; the
    # checkpoints are removed once the arrays are written
    real, seen = central_flow.printer, []

    def interrupting(label, quiet):
        def progress(done, total):
            seen.append(done)
            if len(seen) == 2:
                raise KeyboardInterrupt

        return progress

    args, out = ["--quick", "--quiet", "--checkpoint-every", "0"], tmp_path / "cut"
    monkeypatch.setattr(central_flow, "printer", interrupting)
    with pytest.raises(KeyboardInterrupt):
        central_flow.main([*args, "--out", str(out)])
    monkeypatch.setattr(central_flow, "printer", real)
    assert (out / "checkpoint_ce.npz").exists() and not (out / central_flow.ARRAYS).exists()
    assert central_flow.main([*args, "--out", str(out)]) == 2
    assert central_flow.main([*args, "--out", str(out), "--resume"]) == 0
    got = np.load(out / central_flow.ARRAYS)
    assert sorted(stored.files) == sorted(got.files)
    for key in stored.files:
        np.testing.assert_array_equal(got[key], stored[key], err_msg=key)
    assert not list(out.glob("checkpoint_*"))


def test_sm_stored_forgetting_readings_recompute_from_the_stored_curves():
    """The committed forgetting scan: every τ = T/2 reading, the last dynamical period's
    minimum and the drops of its summary, recomputed by index arithmetic from the committed
    validation curves (correct-point counts)."""
    from pathlib import Path

    folder = Path(__file__).parents[1] / "docs/results/sm_amplitude_period/long_periods/forgetting"
    for name in ("dce", "static_ce_width100"):
        summary = json.loads((folder / name / "summary.json").read_text())
        settings = json.loads((folder / name / "config.json").read_text())["settings"]
        steps, every = settings["steps"], settings["record_every"]
        with np.load(folder / name / "curves.npz") as c:
            val = c["val_correct"] / c["val_points"]  # (A, T, seed, record)
            cval = c["class_val_correct"] / c["class_val_points"]
            assert list(c["period"]) == summary["period"] and not c["diverged"].any()
        assert val.shape[-1] == steps // every
        i1 = summary["amplitude"].index(1.0)
        for ti, f in enumerate(summary["forgetting"]):
            period = f["period"]
            rows = [(k * period + period // 2) // every for k in range(steps // period - 1)]
            lo, hi = (steps - 2 * period) // every, (steps - period) // every
            for ai in range(len(summary["amplitude"])):
                v = val[ai, ti]
                np.testing.assert_allclose(f["peak_mean"][ai], v[:, rows].mean(0), atol=1e-12)
                np.testing.assert_allclose(
                    f["class_peak_mean"][ai], cval[ai, ti][:, rows].mean(0), atol=1e-12
                )
                last_min = v[:, lo : hi + 1].min(-1)
                np.testing.assert_allclose(f["last_min_mean"][ai], last_min.mean(), atol=1e-12)
                drop = v[:, :lo].max(-1) - last_min
                np.testing.assert_allclose(f["drop_mean"][ai], drop.mean(), atol=1e-12)
                d = last_min - val[i1, ti][:, lo : hi + 1].min(-1)
                sem = d.std(ddof=1) / np.sqrt(len(d))
                np.testing.assert_allclose(f["delta_last_min_mean"][ai], d.mean(), atol=1e-12)
                np.testing.assert_allclose(f["delta_last_min_sem"][ai], sem, atol=1e-12)
                # the older reading at step steps − T is the last period's end point
                np.testing.assert_allclose(
                    summary["val_acc_dynamic_mean"][ai][ti], v[:, hi].mean(), atol=1e-12
                )
