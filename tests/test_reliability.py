"""Reliability: bad input refused before anything happens, diverged runs isolated, an interrupted
sweep resumed bit-identically, a signalled one stopped with a checkpoint, a folder read while its
sweep runs, a full disk survived, damaged results refused, and runs reproduced from their folder.

The small sweeps use the static settings of ``test_engine.py`` so their programs are compiled once
per test session; the kill and signal tests need real processes and runs of several chunks.
"""

import contextlib
import errno
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from shared import SMALL, dynloss
from shared import TINY as TINY_FLAGS

from dynloss_jax import results
from dynloss_jax.cli import main, summary_table
from dynloss_jax.results import RunFolderError, load_run
from dynloss_jax.strategy import Strategy
from dynloss_jax.sweep import ConfigError, SweepConfig, run_sweep

TINY = [*TINY_FLAGS, "--no-plot"]


def npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def assert_identical(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k], equal_nan=True), k


# ---------------------------------------------------------------------------------------------
# Validation at the API: ValueError naming the parameter, before any compile or write.

INVALID = [
    (dict(amplitude=(0.99,)), "amplitude"),
    (dict(amplitude=(float("inf"),)), "amplitude"),
    (dict(period=(0,)), "period"),
    (dict(period=(2.5,)), "period"),
    (dict(period=(10.0,)), "period"),
    (dict(eta=(0.0,)), "eta"),
    (dict(eta=(-0.1,)), "eta"),
    (dict(eta=(float("nan"),)), "eta"),
    (dict(eta=(float("inf"),)), "eta"),
    (dict(width=(0,)), "width"),
    (dict(width=(2.5,)), "width"),
    (dict(width=()), "width"),
    (dict(seeds=0), "seeds"),
    (dict(steps=0), "steps"),
    (dict(record_every=3), "record_every"),
    (dict(record_every=0), "record_every"),
    (dict(eig_every=5), "eig_every"),
    (dict(eig_every=6), "eig_every"),
    (dict(eig_every=-2), "eig_every"),
    (dict(eig_every=4, num_matvecs=1), "num_matvecs"),
    (dict(loss=("hinge",)), "loss"),
    (dict(init="he"), "init"),
    (dict(dtype="float16"), "dtype"),
    (dict(depth=0), "depth"),
    (dict(first_seed=-1), "first_seed"),
    (dict(n_classes=1), "n_classes"),
    (dict(points_per_class=1), "points_per_class"),
    (dict(chunk_steps=0), "chunk_steps"),
    (dict(val_seed=-1), "val_seed"),
    (dict(seeds=True), "seeds"),
    # a static last period needs whole periods: T = 15 would make Γ jump mid-triangle at step 25
    (dict(static_last_period=True, period=(15,)), "period"),
    (dict(static_last_period=True, period=(80,)), "period"),  # T > steps: all static
]


@pytest.mark.parametrize("change,param", INVALID, ids=[p for _, p in INVALID])
def test_invalid_settings_raise_value_error_naming_the_parameter(change, param, tmp_path):
    config = SweepConfig(**{**SMALL, "width": (3,), "eta": (0.1,), **change})
    with pytest.raises(ValueError) as info:
        config.validate()
    assert isinstance(info.value, ConfigError) and info.value.param == param
    assert param in str(info.value)
    out = tmp_path / "run"
    with pytest.raises(ConfigError):
        run_sweep(config, out)
    assert not out.exists()


def test_float64_without_x64_is_refused():
    config = SweepConfig(**{**SMALL, "width": (3,), "eta": (0.1,)})
    with jax.enable_x64(False):
        with pytest.raises(ConfigError, match="64-bit") as info:
            config.validate()
        assert info.value.param == "dtype"
        SweepConfig(**{**SMALL, "width": (3,), "eta": (0.1,), "dtype": "float32"}).validate()


def test_a_layout_that_cannot_be_honoured_writes_nothing(tmp_path):
    config = SweepConfig(**{**SMALL, "width": (3,), "eta": (0.1,)})
    with pytest.raises(ValueError, match="devices"):
        run_sweep(config, tmp_path / "run", strategy=Strategy(batch_size=0, n_devices=99))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Divergence isolation.


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """η = 1e5 diverges (the loss grows ~1e10 per step and overflows near step 30); η = 0.1
    trains. One compiled program runs both."""
    out = tmp_path_factory.mktemp("div") / "run"
    return run_sweep(SweepConfig(**{**SMALL, "width": (5,), "eta": (0.1, 1e5), "seeds": 2}), out)


def test_the_diverged_runs_are_flagged_with_their_step(diverging):
    div = diverging["diverged"][0, 0, :, 0, 0]
    np.testing.assert_array_equal(div, [[False, False], [True, True]])
    steps = diverging["diverged_step"][0, 0, :, 0, 0]
    np.testing.assert_array_equal(steps[0], [-1, -1])
    loss = diverging["loss"][0, 0, 1, 0, 0]  # (seed, record)
    record_step = diverging["record_step"]
    for s in range(2):
        assert 0 < steps[1, s] < 40
        # finite (and exploding) records before the divergence step, NaN after it
        before = record_step <= steps[1, s]
        assert np.all(np.isfinite(loss[s][before])) and loss[s][before][-1] > 1e200
        assert np.all(np.isnan(loss[s][record_step > steps[1, s]]))
        assert np.isnan(diverging["final_val_acc"][0, 0, 1, 0, 0, s])


def test_hessian_records_of_a_diverged_run_are_nan_after_its_step():
    """λ is measured at the frozen parameters of a diverged run; those numbers describe no
    trained network, so they are NaN from the divergence on (finite before it, and for the run
    that trains)."""
    run = run_sweep(
        SweepConfig(**{**SMALL, "width": (5,), "eta": (0.1, 1e5), "eig_every": 4, "num_matvecs": 6})
    )
    eig_step = run["eig_step"]
    assert np.array_equal(eig_step, np.arange(0, 40, 4))
    for name in ("lam", "lam_min", "residual", "residual_min"):
        a = run[name][0, 0, :, 0, 0, 0]  # (eta, eig[, k]) of seed 0
        a = a.reshape(a.shape[0], a.shape[1], -1)
        assert np.all(np.isfinite(a[0])), name
        step = int(run["diverged_step"][0, 0, 1, 0, 0, 0])
        assert 0 < step < 36
        assert np.all(np.isfinite(a[1][eig_step <= step])), name
        assert np.all(np.isnan(a[1][eig_step > step])), name


def test_resume_with_another_layout_is_refused(tmp_path, capsys):
    """A vmapped layout differs from a sequential one at rounding level, so a resume must use
    the layout the folder was started with; the refusal says which one."""
    from dynloss_jax import results

    config = SweepConfig(**{**SMALL, "width": (3,), "eta": (0.1,)})
    out = tmp_path / "run"
    results.start_folder(out, config.settings(), Strategy(0, 1).layout(), resume=False)
    (out / "checkpoint-0-state.npz").write_bytes(b"")  # makes the folder non-empty, unfinished
    with pytest.raises(ConfigError, match="--batch-size 0 --devices 1") as info:
        run_sweep(config, out, resume=True, strategy=Strategy(1, 2))
    assert info.value.param == "resume"
    args = (
        "--loss dmse1 --width 3 --eta 0.1 --amplitude 5 --period 10 --steps 40 --record-every 2 "
        "--chunk-steps 20 --points-per-class 4 --quiet --no-plot"
    ).split()
    code, _, err = dynloss(
        capsys, "train", *args, "--out", out, "--resume", "--batch-size", "1", "--devices", "2"
    )
    assert code == 2 and "batch size 0 on 1 device(s)" in err, err


def test_the_other_runs_equal_the_same_runs_made_alone(diverging):
    alone = run_sweep(SweepConfig(**{**SMALL, "width": (5,), "eta": (0.1,), "seeds": 2}))
    kept = diverging.sel(eta=0.1)
    for name in (
        "loss",
        "static_loss",
        "train_acc",
        "val_acc",
        "gamma",
        "final_loss",
        "final_val_acc",
        "final_train_acc",
        "diverged",
        "diverged_step",
    ):
        np.testing.assert_allclose(kept[name], alone[name], rtol=1e-12, atol=1e-14, err_msg=name)
    assert np.all(np.isfinite(kept["loss"]))


def test_summaries_exclude_diverged_runs_and_the_table_says_so(diverging, capsys):
    mean, sem, n = diverging.summary("final_val_acc")
    acc = diverging["final_val_acc"][0, 0, 0, 0, 0]
    assert n[0, 0, 0, 0, 0] == 2 and n[0, 0, 1, 0, 0] == 0
    assert mean[0, 0, 0, 0, 0] == pytest.approx(acc.mean(), rel=1e-15)
    assert sem[0, 0, 0, 0, 0] == pytest.approx(acc.std(ddof=1) / np.sqrt(2), rel=1e-12, abs=0)
    assert np.isnan(mean[0, 0, 1, 0, 0])
    table = summary_table(diverging)
    assert "nan" not in table.lower()
    line = next(line for line in table.splitlines() if line.startswith("eta=100000.0"))
    assert "—" in line and line.split()[-2:] == ["0", "2"]  # 0 runs kept, 2 diverged
    assert "2 of 4 runs diverged" in table and "excluded" in table
    # the figure of a run with diverged seeds is drawn without complaint
    code, _, err = dynloss(capsys, "plot", diverging.path)
    assert code == 0 and err == ""


# ---------------------------------------------------------------------------------------------
# Checkpoint and resume: SIGKILL a running ``dynloss train`` after its first checkpoint.

KILL = (
    "--loss dce --width 8 --eta 1 --amplitude 5 --period 5000 --seeds 2 --steps "
    "20000 --record-every 100 --chunk-steps 1000 --checkpoint-every 0 --quiet --no-plot"
).split()


def test_killed_sweep_resumes_bit_identically(capsys, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynloss_jax", "train", *KILL, "--out", str(killed)],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = killed / "checkpoint-0-state.npz"
    deadline = time.monotonic() + 300
    try:
        while not first.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # mid-run: the next chunk is being computed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    saved = json.loads((killed / "config.json").read_text())
    chunks = sorted(p.name for p in killed.glob("checkpoint-0-chunk-*.npz"))
    assert saved["complete"] is False and 1 <= len(chunks) < 20
    assert not (killed / "arrays.npz").exists()
    with pytest.raises(RunFolderError, match="unfinished"):
        load_run(killed, unfinished=False)
    code, _, err = dynloss(capsys, "rerun", killed)  # a rerun needs a finished run
    assert code == 2 and "--resume" in err

    # resuming with other settings is refused, and touches nothing
    before = sorted(p.name for p in killed.iterdir())
    changed = [("30000" if a == "20000" else a) for a in KILL]
    code, _, err = dynloss(capsys, "train", *changed, "--out", killed, "--resume")
    assert code == 2 and "--resume" in err and "steps" in err
    assert sorted(p.name for p in killed.iterdir()) == before

    code, _, _ = dynloss(capsys, "train", *KILL, "--out", killed, "--resume")
    assert code == 0
    assert sorted(p.name for p in killed.iterdir()) == ["arrays.npz", "config.json"]
    code, _, _ = dynloss(capsys, "train", *KILL, "--out", tmp_path / "straight")
    assert code == 0
    assert_identical(npz(killed / "arrays.npz"), npz(tmp_path / "straight" / "arrays.npz"))
    assert load_run(killed).config["complete"] is True
    # a finished run has nothing to resume
    code, _, err = dynloss(capsys, "train", *KILL, "--out", killed, "--resume")
    assert code == 2 and "finished" in err


# ---------------------------------------------------------------------------------------------
# A graceful stop: SIGTERM / SIGINT to a running ``dynloss train``, read while it runs, resumed.
# Two processes at once (float64 stopped by SIGTERM with a checkpoint after every piece, read
# while it runs; float32 stopped by SIGINT before its first timed checkpoint), compared with
# uninterrupted runs made here.

STOP = (
    "--loss dce --width 8 --eta 1 --amplitude 5 --period 500 --seeds 2 --steps 6000 "
    "--record-every 100 --eig-every 100 --num-matvecs 6 --chunk-steps 500 --quiet --no-plot"
).split()
STOPS = {  # name: (signal, extra flags)
    "term": (signal.SIGTERM, ["--checkpoint-every", "0"]),
    "int": (signal.SIGINT, ["--dtype", "float32"]),
}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """Each process signalled once its first piece has run; the float64 folder is also read
    (``load_run``, ``dynloss status``) while its sweep runs. Returns, per name, the folder, a copy
    of it as the stop left it, the exit code, stderr, what was read live, and whether a
    checkpoint existed when the signal was sent."""
    root = tmp_path_factory.mktemp("stop")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "dynloss_jax", "train", *STOP, *extra, "--out", root / name],
            cwd=root,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, (_, extra) in STOPS.items()
    }
    got = {name: {"out": root / name} for name in STOPS}
    deadline = time.monotonic() + 300
    try:
        waiting = dict(STOPS)
        while waiting:
            for name, (sig, _) in list(waiting.items()):
                out, proc = root / name, procs[name]
                assert proc.poll() is None, proc.communicate()
                if not (out / "progress.json").exists():  # written after the first piece
                    continue
                if name == "term":  # read while it runs: nothing here touches the process
                    got[name]["live"] = load_run(out)
                    got[name]["status"] = io.StringIO()
                    with contextlib.redirect_stdout(got[name]["status"]):
                        assert main(["status", str(out)]) == 0
                got[name]["checkpoint_before"] = (out / "checkpoint-0-state.npz").exists()
                proc.send_signal(sig)
                del waiting[name]
            assert time.monotonic() < deadline, "the runs did not start within 300 s"
            time.sleep(0.002)
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=300)
            got[name].update(code=proc.returncode, err=err.decode())
            shutil.copytree(root / name, root / f"{name}-as-stopped")
            got[name]["as_stopped"] = root / f"{name}-as-stopped"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return got


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    for name, (_, extra) in STOPS.items():
        assert main(["train", *STOP, *extra, "--out", str(root / name)]) == 0
    return {name: root / name for name in STOPS}


def stop_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("dynloss:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", list(STOPS))
def test_a_signal_stops_the_run_with_a_checkpoint_and_one_line(stopped, name):
    sig = STOPS[name][0]
    got = stopped[name]
    assert got["code"] == 128 + sig, got["err"]
    line = stop_line(got["err"])
    m = re.match(rf"dynloss: stopped by {sig.name} at step ([\d,]+) of 6,000 ", line)
    assert m, line
    step = int(m.group(1).replace(",", ""))
    assert 0 < step < 6_000  # mid-run: the signal arrived before the end
    assert f"checkpoint in {got['out']}" in line
    assert line.endswith(f"--out {got['out']} --resume")
    run = load_run(got["as_stopped"])
    assert not run.complete and np.all(run["steps_done"] == step)
    if name == "int":  # no timed checkpoint was due yet: the stop itself wrote this one
        assert not got["checkpoint_before"]
        assert sorted(p.name for p in got["as_stopped"].glob("checkpoint-*")) == [
            "checkpoint-0-chunk-0.npz",
            "checkpoint-0-state.npz",
        ]


@pytest.mark.parametrize("name", list(STOPS))
def test_resume_after_a_signal_is_bit_identical(stopped, uninterrupted, name, capsys):
    extra = STOPS[name][1]
    code, _, _ = dynloss(capsys, "train", *STOP, *extra, "--out", stopped[name]["out"], "--resume")
    assert code == 0
    want = npz(uninterrupted[name] / "arrays.npz")
    assert want["loss"].dtype == (np.float32 if name == "int" else np.float64)
    assert_identical(npz(stopped[name]["out"] / "arrays.npz"), want)


def assert_partial_equals_finished(partial, finished):
    """Shapes as the finished run's; NaN beyond each run's saved step; equal before it."""
    done = partial["steps_done"]
    assert done.shape == finished["final_val_acc"].shape
    for key in ("record_step", "eig_step"):
        np.testing.assert_array_equal(partial[key], finished[key])
    for key in ("loss", "static_loss", "train_acc", "val_acc", "gamma", "lam", "residual"):
        a, b = partial[key], finished[key]
        assert a.shape == b.shape and a.dtype == b.dtype, key
        steps = finished["record_step" if key not in ("lam", "residual") else "eig_step"]
        for index in np.ndindex(done.shape):
            reached = steps < done[index]
            np.testing.assert_array_equal(a[index][reached], b[index][reached], err_msg=key)
            assert np.all(np.isnan(a[index][~reached])), key
    for key in ("final_val_acc", "instability_step"):
        assert key not in partial.arrays  # known only at the end


def test_load_run_reads_a_folder_while_its_sweep_runs(stopped, uninterrupted):
    live = stopped["term"]["live"]  # read while the process ran
    assert not live.complete and "unfinished" in repr(live)
    assert 0 < live["steps_done"].max() < 6_000
    finished = load_run(uninterrupted["term"])
    assert_partial_equals_finished(live, finished)
    assert_partial_equals_finished(load_run(stopped["term"]["as_stopped"]), finished)
    np.testing.assert_array_equal(live["diverged"], finished["diverged"])


def test_status_and_plot_of_an_unfinished_folder(stopped, uninterrupted, capsys, tmp_path):
    text = stopped["term"]["status"].getvalue()  # printed while the sweep ran
    out = stopped["term"]["out"]
    assert text.startswith(f"{out}: unfinished — last update ")
    m = re.search(r"done: ([\d,]+) of 12,000 run-steps \(\d+%\), ([^ ]+) run-steps/s, about ", text)
    assert m and 0 < int(m.group(1).replace(",", "")) < 12_000, text
    assert float(m.group(2)) > 0 and "left" in text
    assert "runs: 2, at step " in text and "last checkpoint: " in text and " ago" in text
    code, stdout, _ = dynloss(capsys, "status", stopped["term"]["as_stopped"])
    assert code == 0 and "unfinished — stopped by SIGTERM " in stdout, stdout
    code, stdout, _ = dynloss(capsys, "status", uninterrupted["term"])
    assert code == 0 and "finished — 2 runs of 6,000 steps" in stdout
    code, stdout, err = dynloss(
        capsys, "plot", stopped["term"]["as_stopped"], "--png", tmp_path / "partial.png"
    )
    assert code == 0 and "unfinished run" in stdout, err
    assert (tmp_path / "partial.png").stat().st_size > 10_000


def test_a_second_signal_stops_at_once(monkeypatch, capsys):
    """The first signal is only noted (the sweep asks ``stop()`` between pieces); the second ends
    the process on the spot (``os._exit``, here caught) with the shell's code for the signal."""
    from dynloss_jax import cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", lambda code: exits.append(code))
    stop = cli.GracefulStop(lambda name: f"dynloss: stopped at once by {name}")
    before = signal.getsignal(signal.SIGTERM)
    with stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() == "SIGTERM" and stop.exit_code == 143 and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        assert exits == [130]
    assert "dynloss: stopped at once by SIGINT" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# ---------------------------------------------------------------------------------------------
# A failed write (a full disk) leaves the previous checkpoint, says so in one line, and resumes.


def no_space_at(monkeypatch, target: str, after: int):
    """``atomic_write_npz`` raises ENOSPC when writing a file named ``target``, after ``after``
    successful writes of such files."""
    real, seen = results.atomic_write_npz, []

    def write(path, arrays):
        if target in Path(path).name:
            seen.append(path)
            if len(seen) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) + ".tmp")
        return real(path, arrays)

    monkeypatch.setattr(results, "atomic_write_npz", write)


@pytest.mark.parametrize("target,after", [("state", 2), ("arrays", 0)], ids=["checkpoint", "final"])
def test_a_full_disk_keeps_the_last_checkpoint_and_resume_continues(
    finished, target, after, monkeypatch, capsys, tmp_path
):
    out = tmp_path / "run"
    flags = [*TINY, "--checkpoint-every", "0"]
    with monkeypatch.context() as m:
        no_space_at(m, target, after)
        code, _, err = dynloss(capsys, "train", *flags, "--out", out)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert f"to {out}: No space left on device (ENOSPC)" in err
    assert err.strip().endswith(f"--out {out} --resume")
    # the last good checkpoint: the first of two programs whole (its four runs at step 40) when
    # the second one's first checkpoint failed, both when the final arrays.npz could not be
    # written
    run = load_run(out)
    assert not run.complete
    reached = sorted(run["steps_done"].ravel())
    assert reached == ([40] * 8 if target == "arrays" else [0] * 4 + [40] * 4), reached
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    code, _, _ = dynloss(capsys, "train", *flags, "--out", out, "--resume")
    assert code == 0
    assert_identical(npz(out / "arrays.npz"), npz(finished / "arrays.npz"))


# ---------------------------------------------------------------------------------------------
# Pieces: the compiled length shortens when a piece runs long, and changes no number.


def test_shorter_piece_is_a_divisor_that_fits_the_target():
    from dynloss_jax.sweep import shorter_piece

    assert shorter_piece(5000, 100, 9.0, 5.0) == 5000  # under twice the target: kept
    assert shorter_piece(5000, 100, 20.0, 5.0) == 1000  # 4 ms a step: 1250 fit, 1000 divides
    assert shorter_piece(5000, 100, 1e6, 5.0) == 100  # never below one block
    assert shorter_piece(100, 100, 1e6, 5.0) == 100


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_shortened_pieces_change_no_number(dtype, tmp_path):
    """A clock on which every piece seems to take 100 s: the first piece (a whole chunk of 20
    steps) makes the sweep recompile for pieces of one block (4 steps), with a checkpoint after
    each; the arrays equal those of whole chunks bit for bit."""
    clock = iter(itertools.count(0.0, 100.0)).__next__
    config = SweepConfig(
        **{**SMALL, "width": (4,), "eta": (0.5, 2.0), "eig_every": 4, "num_matvecs": 6},
        dtype=dtype,
    )
    reports = []
    pieces = run_sweep(
        config,
        tmp_path / "run",
        checkpoint_every=0,
        clock=clock,
        progress=lambda done, total: reports.append(done),
    )
    assert reports == [40, 48, 56, 64, 72, 80]  # two runs: 20 steps, then 4 at a time
    whole = run_sweep(config)
    assert_identical(pieces.arrays, whole.arrays)


# ---------------------------------------------------------------------------------------------
# Damaged folders are refused with a clear message.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("ok") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def damage_truncate(d):
    blob = (d / "arrays.npz").read_bytes()
    (d / "arrays.npz").write_bytes(blob[: len(blob) // 2])


def damage_flip_byte(d):
    blob = bytearray((d / "arrays.npz").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (d / "arrays.npz").write_bytes(bytes(blob))


def damage_edit_setting(d):
    config = json.loads((d / "config.json").read_text())
    config["settings"]["eta"] = [0.1, 0.35]
    (d / "config.json").write_text(json.dumps(config, indent=2))


def damage_swap_arrays(d):
    """Arrays replaced and their checksum updated, but config.json's own digest not."""
    arrays = npz(d / "arrays.npz")
    arrays["final_val_acc"] = arrays["final_val_acc"] + 0.01
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    (d / "arrays.npz").write_bytes(blob)
    config = json.loads((d / "config.json").read_text())
    config["checksums"]["arrays.npz"] = results.sha256(blob)
    (d / "config.json").write_text(json.dumps(config, indent=2))


def damage_truncate_config(d):
    text = (d / "config.json").read_text()
    (d / "config.json").write_text(text[: len(text) // 2])


def damage_delete_arrays(d):
    (d / "arrays.npz").unlink()


DAMAGE = [
    (damage_truncate, "checksum mismatch"),
    (damage_flip_byte, "checksum mismatch"),
    (damage_edit_setting, "edited"),
    (damage_swap_arrays, "edited"),
    (damage_truncate_config, "cannot read JSON"),
    (damage_delete_arrays, "cannot read"),
]


@pytest.mark.parametrize("damage,message", DAMAGE, ids=[d.__name__ for d, _ in DAMAGE])
def test_damaged_folder_is_refused_by_load_run_and_plot(
    finished, damage, message, capsys, tmp_path
):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    load_run(d)  # the copy is fine
    damage(d)
    with pytest.raises(RunFolderError, match=message):
        load_run(d)
    before = sorted(p.name for p in d.iterdir())
    code, out, err = dynloss(capsys, "plot", d)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    code, _, err = dynloss(capsys, "rerun", d)
    assert code == 2 and message in err
    assert sorted(p.name for p in d.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no rerun folder either


# ---------------------------------------------------------------------------------------------
# Reproducibility.


def test_same_command_twice_gives_identical_arrays(finished, tmp_path):
    assert main(["train", *TINY, "--out", str(tmp_path / "again")]) == 0
    assert_identical(npz(finished / "arrays.npz"), npz(tmp_path / "again" / "arrays.npz"))
    a = json.loads((finished / "config.json").read_text())
    b = json.loads((tmp_path / "again" / "config.json").read_text())
    assert a["checksums"]["arrays.npz"] == b["checksums"]["arrays.npz"]


def test_rerun_reproduces_a_folder_bit_for_bit(finished, capsys, tmp_path):
    out = tmp_path / "rerun"
    code, stdout, _ = dynloss(capsys, "rerun", finished, "--out", out, "--quiet")
    assert code == 0 and "bit-identical" in stdout
    assert_identical(npz(finished / "arrays.npz"), npz(out / "arrays.npz"))
    assert load_run(out).config["command"] == ["dynloss", "rerun", str(finished)]
    # the new folder is not overwritten without --overwrite
    code, _, err = dynloss(capsys, "rerun", finished, "--out", out, "--quiet")
    assert code == 2 and "--overwrite" in err


def test_rerun_reports_arrays_that_differ(finished, capsys, tmp_path):
    # a folder whose numbers are not what its settings produce (but whose checksums are valid)
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    run = load_run(d)
    arrays = dict(run.arrays, final_val_acc=run["final_val_acc"] + 0.01)
    config = {k: v for k, v in run.config.items() if k not in ("checksums", "array_axes")}
    results.save_run(d, config, arrays, run.axes)
    code, stdout, _ = dynloss(capsys, "rerun", d, "--out", tmp_path / "rerun", "--quiet")
    assert code == 1 and "differ" in stdout and "final_val_acc" in stdout
    assert "final_train_acc" not in stdout.split("differ")[-1]


def test_config_records_what_a_rerun_needs(finished):
    config = load_run(finished).config
    settings = SweepConfig.from_settings(config["settings"])
    assert settings.validate().settings() == config["settings"]
    for key in ("versions", "git_commit", "backend", "devices", "strategy", "x64", "command"):
        assert key in config
    assert config["settings"]["dtype"] == "float64" and config["axes"]["seed"] == [0, 1]


def test_config_records_the_environment_that_decides_the_bits(finished):
    env = load_run(finished).config["environment"]
    for key in ("jax", "jaxlib", "backend", "device_kind", "cpu_model", "cpu_vector_extensions"):
        assert key in env
    assert env["backend"] == "cpu" and env["xla_flags"] == os.environ.get("XLA_FLAGS", "")


def test_rerun_says_which_environment_fields_differ(finished, capsys, tmp_path):
    # the same run, recorded as if made on another CPU with another jaxlib
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    run = load_run(d)
    config = {k: v for k, v in run.config.items() if k not in ("checksums", "array_axes")}
    env = dict(config["environment"], jaxlib="0.0.1")
    env["cpu_vector_extensions"] = [*env["cpu_vector_extensions"], "avx9000"]
    config["environment"] = env
    results.save_run(d, config, dict(run.arrays), run.axes)
    code, stdout, err = dynloss(capsys, "rerun", d, "--out", tmp_path / "rerun", "--quiet")
    assert code == 0 and "bit-identical" in stdout  # same machine: the bits still agree
    assert "environment differs" in err
    assert "jaxlib: '0.0.1' -> " in err and "lost ['avx9000']" in err
    assert "device_kind" not in err  # unchanged fields are not listed
    code, _, err = dynloss(capsys, "rerun", finished, "--out", tmp_path / "again", "--quiet")
    assert code == 0 and "environment: the same" in err
