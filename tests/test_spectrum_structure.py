"""``experiments.spectrum_structure`` shrunk by ``DYNLOSS_SMOKE=1``: the stored outlier reports
and NTK records against independent computations (a dense Jacobian of the engine's own
initialisation, the reports' own parts summing to each eigenvalue, a NumPy recomputation of the
summary), and the phenomenon the experiment reports (the top C(C − 1) eigenvectors overlap the
between-class range far above chance) seen in the smoke run itself."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynloss_jax as dl
import dynloss_jax.environment
from dynloss_jax import load_run
from dynloss_jax.loop import trainer
from experiments import spectrum_structure as ss


@pytest.mark.slow
def test_spectrum_structure_quick_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DYNLOSS_SMOKE", "1")
    out = tmp_path / "ss"
    assert ss.main(["--quick", "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    s = ss.SMOKE
    run = load_run(out)
    reports = json.loads((out / ss.OUTLIERS).read_text())["reports"]
    assert len(reports) == len(ss.LOSSES) * s["outlier_seeds"] * len(s["outlier_steps"])
    n_params = reports[0]["n_params"]
    for rep in reports:
        parts = np.add(np.add(rep["between"], rep["within"]), rep["functional"])
        np.testing.assert_allclose(parts, rep["lam"], rtol=1e-8, atol=1e-10 * rep["lam"][0])
        assert rep["factor_residual"] < 1e-12
        np.testing.assert_allclose(np.sum(rep["pairs"], axis=(1, 2)), rep["between"],
                                   rtol=1e-8, atol=1e-14)  # fmt: skip
    # the phenomenon: overlap with the between-class range far above a random subspace's r/N
    overlap = np.mean([rep["overlap"] for rep in reports])
    assert overlap > 3 * 6 / n_params, (overlap, 6 / n_params)

    # the summary recomputed from the reports in NumPy
    summary = json.loads((out / "summary.json").read_text())
    for loss in ss.LOSSES:
        for t in s["outlier_steps"]:
            mine = [r for r in reports if r["loss"] == loss and r["step"] == t]
            gaps = np.array([r["lam"][5] / r["lam"][6] for r in mine])
            got = summary["outliers"][loss][str(t)]["gap"]
            assert got[0] == pytest.approx(gaps.mean(), rel=1e-12)
            assert got[1] == pytest.approx(gaps.std(ddof=1) / np.sqrt(len(gaps)), rel=1e-9)

    # the NTK's λ1 at step 0 against a dense Jacobian of the engine's initialisation
    settings = run.config["settings"]
    keys = ("data", "points_per_class", "n_classes", "train_seed", "val_seed", "split_seed")
    d = dl.SweepConfig(**{k: settings[k] for k in keys}).dataset()
    task = dl.Task(data=(d.x_train, d.y_train, d.x_val, d.y_val), loss="ce")
    tr = trainer(task, steps=s["steps"], width=s["width"], eta=s["eta"],
                 amplitude=s["amplitude"], period=s["period"])  # fmt: skip
    assert int(run["eig_step"][0]) == 0
    for seed in range(s["seeds"]):
        w = tr.init(seed).w_N
        J = jax.jacobian(lambda w_: tr.spec.model.apply(w_, jnp.asarray(d.x_train)))(w)
        J = np.asarray(J).reshape(-1, w.shape[0])
        want = np.linalg.eigvalsh(J @ J.T)[-1]
        got = np.asarray(run["ntk_lam"])[0, ..., 0].reshape(s["seeds"], -1)[seed, 0]
        # a Ritz value of 8 Lanczos steps: a lower bound, here within 1e-6
        assert want * (1 - 1e-6) <= got <= want * (1 + 1e-12)

    # run_info records the source state (the commit the run was made at)
    info = json.loads((out / "run_info.json").read_text())
    assert info["git_commit"] == dl.environment.source()["git_commit"]
    assert info["git_commit"] is None or isinstance(info["git_dirty"], bool)

    # --replot prints the same table without training
    (out / ss.PNG).unlink()
    assert ss.main(["--replot", "--out", str(out)]) == 0
    assert capsys.readouterr().out == first
    assert (out / ss.PNG).stat().st_size > 10_000
