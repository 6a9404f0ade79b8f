"""A sweep as a job array (dynloss_jax.shards) filling one zarr store (dynloss_jax.store): the
store equals the one-process sweep bit for bit, whether its shards ran as submitit's local
processes, were interrupted and resumed, or some failed; concurrent writers never show a reader
a torn value."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("submitit")

from dynloss_jax import SweepConfig, run_sweep, shards, store  # noqa: E402
from dynloss_jax.results import load_run  # noqa: E402
from dynloss_jax.strategy import default_strategy  # noqa: E402
from dynloss_jax.sweep import Stopped  # noqa: E402
from tests.shared import dynloss  # noqa: E402

# Two programs (losses) × 2 η × 2 seeds, width 4, 12 points, 40 steps in pieces of 20, λ every
# 10 steps: 8 runs; 3 shards take 1, 2 (one of each program) and 1 blocks of 2 runs (η × seeds).
SETTINGS = dict(
    loss=("dmse1", "dce"),
    width=(4,),
    eta=(0.1, 0.3),
    amplitude=(5.0,),
    period=(10,),
    seeds=2,
    steps=40,
    record_every=2,
    eig_every=10,
    chunk_steps=20,
    points_per_class=4,
)
FLAGS = (
    "--loss dmse1 dce --width 4 --eta 0.1 0.3 --amplitude 5 --period 10 --seeds 2 --steps 40 "
    "--record-every 2 --eig-every 10 --chunk-steps 20 --points-per-class 4"
).split()


@pytest.fixture(scope="module")
def config():
    return SweepConfig(**SETTINGS).validate()


@pytest.fixture(scope="module")
def whole(config):
    """The one-process sweep (default CPU layout: one run at a time per device)."""
    return run_sweep(config)


def _made(config, out, jobs=3):
    plan = shards.plan_shards(config.grid_shape, 2, jobs)
    shards.create(config, out, plan, default_strategy())
    return plan


def _mask(run, boxes):
    """True on the grid cells inside ``boxes``."""
    inside = np.zeros(run.arrays["diverged"].shape, bool)
    for box in boxes:
        inside[tuple(slice(a, b) for a, b in box)] = True
    return inside


def _check_region(run, whole, boxes, *, done: bool):
    """Inside ``boxes`` ``run`` holds ``whole``'s bits (``done``) or blanks; steps arrays equal."""
    inside = _mask(run, boxes)
    for name, a in whole.arrays.items():
        got = run.arrays[name]
        assert got.dtype == a.dtype, name
        if got.shape[: inside.ndim] != inside.shape:
            assert np.array_equal(got, a), name  # record_step, eig_step
            continue
        want = a[inside] if done else np.full_like(a[inside], store.blank(a.dtype))
        assert np.array_equal(got[inside], want, equal_nan=True), name


def test_plan_covers_the_grid_once_in_whole_chunks(config):
    for jobs in (1, 3, 5, 8):
        plan = shards.plan_shards(config.grid_shape, 2, jobs)
        assert len(plan["shards"]) == jobs
        count = np.zeros(config.grid_shape, int)
        for boxes in plan["shards"]:
            assert boxes
            for box in boxes:
                for (a, b), c, n in zip(box, plan["chunks"], config.grid_shape, strict=True):
                    assert a % c == 0 and (b - a == c or b == n)  # one chunk
                count[tuple(slice(a, b) for a, b in box)] += 1
        assert (count == 1).all()
        # the runs handed to run_sweep are those of the boxes, by a loop over programs' runs
        for boxes in plan["shards"]:
            inside = _mask(type("R", (), {"arrays": {"diverged": count}})(), boxes)
            want = {}
            for gi, program in enumerate(config.programs()):
                n = 0
                for cell in program["cells"]:
                    for index in np.ndindex(*config.grid_shape[2:]):
                        if inside[tuple(cell) + index]:
                            want.setdefault(gi, []).append(n)
                        n += 1
            assert shards.shard_runs(config, boxes, False) == want
    with pytest.raises(ValueError, match="jobs"):
        shards.plan_shards(config.grid_shape, 2, 9)


@pytest.mark.slow  # three fresh processes compile the sweep: about 25 s on two cores
def test_local_job_array_equals_the_one_process_sweep(tmp_path, capsys, whole):
    """``dynloss submit --executor local --jobs 3``: three submitit subprocesses."""
    out = tmp_path / "sweep"
    code, text, err = dynloss(capsys, "submit", *FLAGS, "--executor", "local", "--jobs", 3,
                              "--out", out)  # fmt: skip
    assert code == 0, err
    assert "3 of 3 shards done (8 of 8 runs" in text
    run = load_run(out)
    assert run.complete and sorted(run.arrays) == sorted(whole.arrays)
    for name, a in whole.arrays.items():
        assert run.arrays[name].dtype == a.dtype, name
        assert np.array_equal(run.arrays[name], a, equal_nan=True), name
    assert not (out / shards.SHARDS / "0000").exists()  # a done shard's folder is removed
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(out / store.STORE, consolidated=False)
    assert np.array_equal(ds["lam"].values, whole.arrays["lam"], equal_nan=True)
    assert list(ds["eta"].values) == [0.1, 0.3]


def test_interrupted_shard_resumes_bit_identically(tmp_path, config, whole, capsys):
    out = tmp_path / "sweep"
    plan = _made(config, out)
    calls = []

    def after_one_piece():
        calls.append(1)
        return "test stop" if len(calls) > 1 else None

    with pytest.raises(Stopped) as stopped:
        shards.run_shard(config, out, 1, checkpoint_every=0, stop=after_one_piece)
    assert stopped.value.step == 20 and stopped.value.saved
    code, text, _ = dynloss(capsys, "status", out)
    assert code == 0 and "shard 1: running (4 runs), 25% of 160 run-steps" in text
    assert "stopped by test stop" in text
    _check_region(load_run(out), whole, plan["shards"][1], done=False)  # nothing written yet
    shards.run_shard(config, out, 1, checkpoint_every=0)  # a requeued job: resumes
    run = load_run(out)
    assert not run.complete
    _check_region(run, whole, plan["shards"][1], done=True)
    _check_region(run, whole, plan["shards"][0] + plan["shards"][2], done=False)


def test_failed_shard_leaves_the_others_intact_and_status_names_it(tmp_path, config, whole, capsys):
    out = tmp_path / "sweep"
    plan = _made(config, out)
    (out / shards.SHARDS).mkdir()
    (out / shards.SHARDS / "0001").write_text("not a folder")  # shard 1 cannot start
    shards.run_shard(config, out, 0)
    with pytest.raises(ValueError, match="not a folder"):
        shards.run_shard(config, out, 1)
    shards.run_shard(config, out, 2)
    code, text, _ = dynloss(capsys, "status", out)
    assert code == 0
    assert "2 of 3 shards done (4 of 8 runs in the store); failed: shard 1" in text
    assert "shard 1: failed (4 runs): ConfigError" in text
    run = load_run(out)
    assert not run.complete
    _check_region(run, whole, plan["shards"][0] + plan["shards"][2], done=True)
    _check_region(run, whole, plan["shards"][1], done=False)
    steps_done = run.arrays["steps_done"]
    assert (steps_done[_mask(run, plan["shards"][1])] == 0).all()
    assert (steps_done[~_mask(run, plan["shards"][1])] == 40).all()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from dynloss_jax import store
    path, program = Path(sys.argv[1]), int(sys.argv[2])
    for r in range(6):
        if r == 3:  # half written: wait until the reader has looked
            (path.parent / f"half-{program}").touch()
            while not (path.parent / "go").exists():
                time.sleep(0.01)
        box = (slice(program, program + 1), slice(r, r + 1))
        x = np.full((2, 6, 50_000), np.nan)
        x[box] = 1000 * program + r + np.arange(50_000) / 50_000
        store.write_region(path, {"x": x}, [box], np.full((2, 6), 7))
    """
)


def test_concurrent_writers_and_a_reader_never_see_a_torn_value(tmp_path):
    path = tmp_path / "store.zarr"
    coords = {"program": [0, 1], "run": list(range(6))}
    store.create_store(
        path,
        coords=coords,
        templates={"x": np.zeros((1, 1, 50_000))},
        axes={"x": ["program", "run", "value"]},
        steps={},
        chunks=(1, 1),
        attrs={"axes": coords, "array_axes": {"x": ["program", "run", "value"]}},
    )
    expected = 1000 * np.arange(2)[:, None, None] + np.arange(6)[None, :, None]
    expected = expected + np.arange(50_000) / 50_000
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(p)], env=env) for p in (0, 1)
    ]
    import zarr

    def check(run):
        done = run.arrays.get("steps_done", np.full((2, 6), 7))
        x = run.arrays["x"]
        raw = zarr.open_group(str(path), mode="r")["x"][...]  # unmasked
        for p in range(2):
            for r in range(6):
                row = raw[p, r]
                assert np.isnan(row).all() or np.array_equal(row, expected[p, r])  # never torn
                if done[p, r]:
                    assert np.array_equal(x[p, r], expected[p, r])
                else:
                    assert np.isnan(x[p, r]).all()
        return done

    try:
        while not all((tmp_path / f"half-{p}").exists() for p in (0, 1)):
            assert all(w.poll() in (None, 0) for w in writers)
            check(store.load_store(path))
            time.sleep(0.01)
        halfway = check(store.load_store(path))
        assert np.array_equal(halfway > 0, np.arange(6)[None, :].repeat(2, 0) < 3)
        (tmp_path / "go").touch()
        while any(w.poll() is None for w in writers):
            check(store.load_store(path))
        assert [w.wait() for w in writers] == [0, 0]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    final = store.load_store(path)
    assert final.complete and "steps_done" not in final.arrays
    assert np.array_equal(final.arrays["x"], expected)


@pytest.mark.slow  # a fresh process compiles and runs 400 steps, then again after the requeue
def test_preempted_local_job_is_requeued_and_resumes_bit_identically(tmp_path):
    """submitit's pre-emption signal (USR2) to a running local job: it checkpoints itself,
    exits and is started again, and the new process resumes the shard from its last
    checkpoint; the store then equals the one-process sweep."""
    config = SweepConfig(**{**SETTINGS, "loss": ("dce",), "steps": 400, "width": (16,)})
    out = tmp_path / "sweep"
    (job,) = shards.submit(config.validate(), out, jobs=1, checkpoint_every=0)
    state = out / shards.SHARDS / "0000" / "checkpoint-0-state.npz"
    while not state.exists():
        assert job.state in ("RUNNING", "UNKNOWN", "PENDING"), job.state
        time.sleep(0.05)
    (task,) = _children(job._process.pid)  # submitit's local controller runs the task
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before pre-empting or at the time limit
    assert job.exception() is None, job.stderr()
    log = job.stderr()
    assert "this job is preempted" in log, log
    assert job.result() == "shard 0 done"  # returned by the requeued process
    whole = run_sweep(config)
    run = load_run(out)
    assert run.complete
    for name, a in whole.arrays.items():
        assert np.array_equal(run.arrays[name], a, equal_nan=True), name


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
