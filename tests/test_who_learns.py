"""The who-learns experiment: its ``--quick`` path shrunk by ``DYNLOSS_SMOKE=1``, run into a
temporary folder; ``split_max_err``, the alignments and the branch numbers of ``summary.json``
are recomputed from the stored arrays by plain loops, and ``--replot`` redraws without
training."""

import json

import numpy as np
import pytest

import dynloss_jax
from dynloss_jax import load_run, sweep
from experiments import who_learns


def _alignment_by_loops(run, loss_index, edge):
    """split error and alignments over edge steps, one measurement at a time."""
    split = np.asarray(run["class_split"])[loss_index, 0, 0, 0, 0]
    lam = np.asarray(run["lam"])[loss_index, 0, 0, 0, 0]
    cos = np.asarray(run["class_cos"])[loss_index, 0, 0, 0, 0]
    emph = np.asarray(run["emphasised"])[loss_index, 0, 0, 0, 0]
    eta = run.config["settings"]["eta"][0]
    err, with_c, other, best = 0.0, [], [], []
    for s in range(split.shape[0]):
        for e in range(split.shape[1]):
            err = max(err, abs(sum(split[s, e, 0]) - lam[s, e, 0]) / abs(lam[s, e, 0]))
            c = int(emph[s, e])
            if c < 0 or lam[s, e, 0] < edge * 2 / eta:
                continue
            a = [abs(v) for v in cos[s, e, 0]]
            with_c.append(a[c])
            other.append(np.mean([a[k] for k in range(len(a)) if k != c]))
            best.append(int(np.argmax(a)) == c)
    if not with_c:
        return err, None, None, None
    return err, np.mean(with_c), np.mean(other), np.mean(best)


@pytest.mark.slow
def test_who_learns_quick_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DYNLOSS_SMOKE", "1")
    out = tmp_path / "w"
    assert who_learns.main(["--quick", "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    # the command is how this process was launched (under pytest, pytest's own), so only its form
    assert info["command"].startswith("python -m ") and info["environment"]
    errs, aligned = [], 0
    for case in ("spiral", "digits"):
        run = load_run(out / case)
        assert run.axes["class_split"][-3:] == ["eig", "k", "class"]
        for i, loss in enumerate(run.config["settings"]["loss"]):
            got = summary["cases"][f"{case}_{loss}"]
            err, with_c, other, best = _alignment_by_loops(run, i, summary["edge"])
            errs.append(err)
            assert got["split_max_err"] == pytest.approx(err, rel=1e-12, abs=1e-18)
            assert err < 1e-10
            if with_c is None:
                assert got["alignment_emphasised"] is None
                continue
            aligned += 1
            assert got["alignment_emphasised"] == pytest.approx(with_c, rel=1e-12)
            assert got["alignment_other"] == pytest.approx(other, rel=1e-12)
            assert got["best_is_emphasised"] == pytest.approx(best, rel=1e-12)
            # the branch numbers from the stored fork records
            forks = who_learns.load_forks(out, case, loss)
            for j, t in enumerate(forks["fork_steps"]):
                acc = forks["val_acc_RxC"][:, j]  # seed, branch, record, class
                for b, name in enumerate(who_learns.BRANCH_NAMES):
                    change = acc[:, b, -1] - acc[:, b, 0]
                    entry = got["branches"][str(t)][name]
                    np.testing.assert_allclose(entry["val_acc_change_mean"], change.mean(0))
                    sem = change.std(0, ddof=1) / np.sqrt(change.shape[0])
                    np.testing.assert_allclose(entry["val_acc_change_sem"], sem)
                # the kick's norm is the displacement's; the forks start from the sweep's runs
                np.testing.assert_allclose(
                    forks["kick_norm"][:, j, who_learns.BRANCH_NAMES.index("kick")],
                    forks["displacement_norm"][:, j], rtol=1e-12,
                )  # fmt: skip
            # λ1 at each start, measured on the replayed state, decides the edge seeds
            lam1 = forks["start_lam1"]
            eta = run.config["settings"]["eta"][0]
            for j, t in enumerate(forks["fork_steps"]):
                entry = got["branches"][str(t)]
                assert entry["n_edge_seeds"] == int(np.sum(lam1[:, j] >= 0.95 * 2 / eta))
    assert aligned >= 1  # the smoke run has edge steps somewhere, so alignments were checked
    assert summary["split_max_err"] == pytest.approx(max(errs), rel=1e-12, abs=1e-18)
    assert set(summary["branches"]) >= {"stay", "leave", "kick", "freeze_gamma"}
    png = out / who_learns.PNG
    png.unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("--replot must not train")

    monkeypatch.setattr(dynloss_jax, "run_sweep", refuse)
    monkeypatch.setattr(sweep, "run_sweep", refuse)
    assert who_learns.main(["--replot", "--out", str(out)]) == 0
    assert capsys.readouterr().out == first
    assert png.stat().st_size > 10_000
