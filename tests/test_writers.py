"""The metric writers: what write_piece sends (against a record-by-record twin), SafeWriters with a
failing writer, and TensorBoard event files and a W&B offline run read back from disk."""

import glob
import json
import pathlib
import struct
import sys
import zlib

import numpy as np
import pytest

from dynloss_jax import writers as W

COORDS = [
    {"loss": "dce", "width": 16, "eta": 1.0, "seed": 0},
    {"loss": "dce", "width": 16, "eta": 0.5, "seed": np.int64(1)},
    {"loss": "ce", "width": 4, "eta": np.float64(2.0), "seed": 0},
]


class Recorder:
    """A writer that keeps every call."""

    def __init__(self):
        self.calls = []

    def write_scalars(self, step, scalars):
        self.calls.append(("scalars", step, dict(scalars)))

    def write_hparams(self, hparams):
        self.calls.append(("hparams", dict(hparams)))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


class Broken(Recorder):
    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        raise OSError("disk full")


class BrokenFlush(Recorder):
    def flush(self):
        super().flush()
        raise ValueError("closed")


def piece(seed=0, n_steps=5):
    """Records of R = 3 runs at S = n_steps steps, with NaN gaps (one step all NaN)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps) * 10 + 10 * n_steps * seed
    loss = rng.normal(size=(3, n_steps))
    loss[1, 2] = np.nan
    onset = np.full((3, n_steps), np.nan)
    onset[0, 3:] = 30.0
    loss[:, 1] = onset[:, 1] = np.nan  # nothing at steps[1]
    loss[2, 4] = np.inf  # a diverged run is written
    return steps, {"loss": loss, "onset": onset}


def expected_points(tags, steps, scalars):
    """{(tag, step): value} from the arrays' non-NaN entries, one entry at a time."""
    out = {}
    for name, a in scalars.items():
        for r, s in zip(*np.nonzero(~np.isnan(a)), strict=True):
            out[(f"{tags[r]}/{name}", int(steps[s]))] = a[r, s]
    return out


def test_run_tag():
    assert [W.run_tag(c) for c in COORDS] == [
        "loss=dce/width=16/eta=1/seed=0",
        "loss=dce/width=16/eta=0.5/seed=1",
        "loss=ce/width=4/eta=2/seed=0",
    ]
    assert W.run_tag({"eta": 1e-5, "A": 0.1}) == "eta=1e-05/A=0.1"


def test_write_piece_skips_nan_and_writes_tags_and_steps():
    tags = [W.run_tag(c) for c in COORDS]
    steps, scalars = piece()
    rec = Recorder()
    W.write_piece([rec], tags, steps, scalars)
    written = [c for c in rec.calls if c[0] == "scalars"]
    assert rec.calls[-1] == ("flush",) and len(written) == len(rec.calls) - 1
    # one call per step that has a value, in step order; steps[1] (all NaN) is not written
    want = expected_points(tags, steps, scalars)
    assert [c[1] for c in written] == sorted({step for _, step in want})
    assert int(steps[1]) not in [c[1] for c in written]
    got = {(tag, step): v for _, step, row in written for tag, v in row.items()}
    assert got.keys() == want.keys()
    np.testing.assert_array_equal([got[k] for k in want], list(want.values()))
    assert got[(f"{tags[2]}/loss", int(steps[4]))] == np.inf
    with pytest.raises(ValueError, match="expected"):
        W.write_piece([rec], tags[:2], steps, scalars)


def test_safe_writers_warn_once_and_others_receive_everything():
    tags = [W.run_tag(c) for c in COORDS]
    broken, good, broken_flush = Broken(), Recorder(), BrokenFlush()
    safe = W.SafeWriters([broken, good, broken_flush])
    with pytest.warns(RuntimeWarning) as caught:
        safe.write_hparams({"eta": 1.0})
        for seed in range(3):
            W.write_piece(safe, tags, *piece(seed))
        safe.close()
    # one warning per failing writer, naming it and its exception
    assert len(caught) == 2
    first, second = (str(w.message) for w in caught)
    assert "Broken object" in first and "OSError" in first and "disk full" in first
    assert "BrokenFlush" in second and "ValueError" in second and "closed" in second
    # each broken writer was called up to its failure and never again
    assert [c[0] for c in broken.calls] == ["hparams", "scalars"]
    kinds = [c[0] for c in broken_flush.calls]
    assert kinds[-1] == "flush" and kinds.count("flush") == 1 and "close" not in kinds
    # the good one received what a writer on its own receives
    alone = Recorder()
    alone.write_hparams({"eta": 1.0})
    for seed in range(3):
        W.write_piece(alone, tags, *piece(seed))
    alone.close()
    assert len(good.calls) == len(alone.calls)
    for a, b in zip(good.calls, alone.calls, strict=True):
        assert a[:2] == b[:2]
        if a[0] == "scalars":
            np.testing.assert_array_equal(list(a[2].values()), list(b[2].values()))
            assert list(a[2]) == list(b[2])


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tensorboard\]"'):
        W.TensorBoardWriter("unused")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[wandb\]"'):
        W.WandbWriter("unused")


def tfrecords(path):
    """The payloads of a TFRecord file: 8-byte length, its masked CRC-32C, payload, its CRC."""
    from tensorboardX.crc32c import crc32c

    def masked(b):
        c = crc32c(b)
        return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, pos = pathlib.Path(path).read_bytes(), 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (n,) = struct.unpack("<Q", header)
        (crc_n,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        payload = data[pos + 12 : pos + 12 + n]
        (crc_p,) = struct.unpack("<I", data[pos + 12 + n : pos + 16 + n])
        assert crc_n == masked(header) and crc_p == masked(payload)
        yield payload
        pos += 16 + n


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    tags = [W.run_tag(c) for c in COORDS]
    pieces = [piece(seed) for seed in range(2)]
    writer = W.TensorBoardWriter(tmp_path)
    writer.write_hparams({"loss": "dce", "width": 16, "eta": np.float64(0.5)})
    for steps, scalars in pieces:
        W.write_piece(writer, tags, steps, scalars)
    writer.close()

    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    got, hparams = {}, None
    for payload in tfrecords(path):
        event = Event.FromString(payload)
        for v in event.summary.value:
            if v.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
                hparams = (
                    data.session_start_info.hparams
                    if data.HasField("session_start_info")
                    else hparams
                )
            else:
                assert (v.tag, event.step) not in got
                got[(v.tag, event.step)] = v.simple_value
    want = {}
    for steps, scalars in pieces:
        want |= expected_points(tags, steps, scalars)
    assert got.keys() == want.keys()
    # TensorBoard stores float32
    np.testing.assert_array_equal(
        np.float32([got[k] for k in want]), np.float32(list(want.values()))
    )
    assert hparams["loss"].string_value == "dce"
    assert hparams["width"].number_value == 16 and hparams["eta"].number_value == 0.5


def wandb_records(path):
    """The records of a W&B transaction log (``run-*.wandb``): a 7-byte header ``:W&B``, then
    LevelDB-log blocks of 32 KiB, each record a 7-byte header (CRC-32 of type and data, length,
    type: 1 full, 2 first, 3 middle, 4 last) and its data, a ``Record`` protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = pathlib.Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a header: zero padding
            pos += block - pos % block
            continue
        crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk = data[pos + 7 : pos + 7 + n]
        assert crc == zlib.crc32(bytes([kind]) + chunk)
        parts, pos = parts + chunk, pos + 7 + n
        if kind in (1, 4):
            yield Record.FromString(parts)
            parts = b""


def test_wandb_offline_run_reads_back(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")

    tags = [W.run_tag(c) for c in COORDS]
    # two programs of a sweep, the second starting again at step 0 (W&B's own step only grows)
    steps, first = piece(0, n_steps=40)
    _, second = piece(1, n_steps=40)
    programs = [
        (tags[:2], steps, {k: a[:2] for k, a in first.items()}),
        (tags[2:], steps, {k: a[2:] for k, a in second.items()}),
    ]
    writer = W.WandbWriter(tmp_path, project="dynloss-test")
    writer.write_hparams({"loss": "dce", "width": 16, "eta": np.float64(0.5)})
    for program in programs:
        W.write_piece(writer, *program)
    writer.close()
    # run.finish() returns while W&B's service may still be writing the log's last block;
    # stopping the service waits for it
    wandb.teardown()

    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert pathlib.Path(path).stat().st_size > 32768  # records cross a block boundary
    rows, config, metrics = [], {}, []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        items = {
            "history": record.history.item,
            "config": record.config.update,
            "run": record.run.config.update,
        }.get(kind, [])
        values = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in items}
        if kind == "metric":
            metrics.append((record.metric.glob_name, record.metric.step_metric))
        if kind == "history":
            rows.append({k: v for k, v in values.items() if not k.startswith("_")})
        elif items:
            config |= values
    # the run holds, row by row, what a writer receives, with the step as a metric
    rec = Recorder()
    for program in programs:
        W.write_piece(rec, *program)
    want = [{"step": c[1], **c[2]} for c in rec.calls if c[0] == "scalars"]
    assert [r.keys() for r in rows] == [w.keys() for w in want]
    for r, w in zip(rows, want, strict=True):
        np.testing.assert_array_equal([r[k] for k in w], list(w.values()))
    assert ("*", "step") in metrics  # the x-axis of every metric is the logged step
    assert config["loss"] == "dce" and config["width"] == 16 and config["eta"] == 0.5


def test_a_sweep_streams_its_records_to_a_writer_and_survives_a_failing_one():
    """run_sweep(writers=...): every run's records reach the writer with the run's tag and step,
    equal to the returned arrays; a writer that raises is dropped with a warning."""
    from dynloss_jax import SweepConfig, run_sweep

    class Memory:
        def __init__(self):
            self.rows, self.hparams = {}, None

        def write_scalars(self, step, scalars):
            self.rows.setdefault(step, {}).update(scalars)

        def write_hparams(self, hparams):
            self.hparams = hparams

        def flush(self):
            pass

        def close(self):
            pass

    class Broken(Memory):
        def write_scalars(self, step, scalars):
            raise OSError("disk full")

    memory = Memory()
    config = SweepConfig(
        loss=("ce", "dce"), width=(4,), eta=(1.0,), amplitude=(5.0,), period=(10,), seeds=2,
        steps=20, record_every=5, eig_every=10, points_per_class=6,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="disk full"):
        run = run_sweep(config, writers=[Broken(), memory])
    assert memory.hparams["steps"] == 20
    tag = "loss=dce/width=4/eta=1/amplitude=5/period=10/seed=1"
    loss = run.value("loss", loss="dce", seed=1)
    assert [memory.rows[t][f"{tag}/loss"] for t in (0, 5, 10, 15)] == list(loss)
    lam = run.value("lam", loss="dce", seed=1)
    assert memory.rows[10][f"{tag}/lam1"] == lam[1, 0]
    assert memory.rows[10][f"{tag}/eta_lam1_over_2"] == lam[1, 0] / 2


def test_dynloss_train_log_tensorboard_writes_the_runs_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    from dynloss_jax import cli, load_run

    out, logdir = tmp_path / "run", tmp_path / "tb"
    code = cli.main(
        ["train", "--loss", "dce", "--width", "4", "--steps", "20", "--period", "10",
         "--amplitude", "5", "--points-per-class", "6", "--eig-every", "10", "--record-every",
         "5", "--log", "tensorboard", str(logdir), "--out", str(out), "--no-plot", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (path,) = glob.glob(str(logdir / "events.out.tfevents.*"))
    got = {
        (v.tag, e.step): v.simple_value
        for e in map(Event.FromString, tfrecords(path))
        for v in e.summary.value
    }
    tag = "loss=dce/width=4/eta=1/amplitude=5/period=10/seed=0/loss"
    loss = load_run(out).value("loss")
    assert [got[(tag, t)] for t in (0, 5, 10, 15)] == list(np.float32(loss))
