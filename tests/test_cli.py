"""The ``dynloss`` command: a tiny sweep end to end, ``dynloss plot``, and refusals of bad input.

The command runs in this process (``main(argv)``), so it shares the compiled programs of the other
tests; the same settings as ``test_engine.py``'s sweeps are used on purpose.
"""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from shared import TINY, count_compiles, dynloss

from dynloss_jax.cli import main

GRID = ["loss", "width", "eta", "amplitude", "period", "seed"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    try:
        code = main(["train", *TINY, "--out", str(out)])
    except SystemExit as e:
        code = e.code
    assert code == 0
    return out


def test_train_writes_a_complete_run_folder(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == ["arrays.npz", "config.json", "training.png"]
    config = json.loads((tiny / "config.json").read_text())
    s = config["settings"]
    assert (s["loss"], s["width"], s["eta"], s["amplitude"], s["period"]) == (
        ["dmse1"],
        [3, 5],
        [0.1, 0.3],
        [5.0],
        [10],
    )
    assert (s["seeds"], s["steps"], s["record_every"], s["points_per_class"], s["dtype"]) == (
        2,
        40,
        2,
        4,
        "float64",
    )
    assert config["axes"] == {
        "loss": ["dmse1"],
        "width": [3, 5],
        "eta": [0.1, 0.3],
        "amplitude": [5.0],
        "period": [10],
        "seed": [0, 1],
    }
    assert {"python", "jax", "jaxlib", "numpy", "flax", "optax"} <= set(config["versions"])
    assert config["versions"]["jax"] == jax.__version__
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert config["git_commit"] == (head or None)
    assert isinstance(config["git_dirty"], bool) or config["git_commit"] is None
    assert config["backend"] == jax.default_backend() and config["x64"] is True
    assert (
        config["command"][:2] == ["dynloss", "train"] and "--points-per-class" in config["command"]
    )
    assert config["complete"] is True
    blob = (tiny / "arrays.npz").read_bytes()
    assert config["checksums"]["arrays.npz"] == hashlib.sha256(blob).hexdigest()


def test_arrays_have_the_named_axes_of_config(tiny):
    config = json.loads((tiny / "config.json").read_text())
    sizes = {a: len(v) for a, v in config["axes"].items()}
    sizes.update(record=20, k=2, **{"class": 3})
    with np.load(tiny / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == set(config["array_axes"])
    for name, axes in config["array_axes"].items():
        assert arrays[name].shape == tuple(sizes[a] for a in axes), name
    assert config["array_axes"]["val_acc"] == GRID + ["record"]
    assert config["array_axes"]["gamma"] == GRID + ["record", "class"]
    np.testing.assert_array_equal(arrays["record_step"], np.arange(0, 40, 2))
    assert not arrays["diverged"].any()


def test_printed_table_is_mean_and_sem_over_seeds(tiny, capsys, tmp_path):
    # print the table again by re-running into a new folder (compiled programs are cached)
    code, out, _ = dynloss(capsys, "train", *TINY, "--no-plot", "--out", tmp_path / "again")
    assert code == 0
    with np.load(tiny / "arrays.npz") as z:
        train, val = z["final_train_acc"], z["final_val_acc"]
    lines = out.splitlines()
    assert "train acc" in lines[0] and "val acc" in lines[0] and "diverged" in lines[0]
    for wi, width in enumerate([3, 5]):
        for ei, eta in enumerate([0.1, 0.3]):
            line = next(line for line in lines if line.startswith(f"width={width}, eta={eta} "))
            for a in (train, val):
                seeds = a[0, wi, ei, 0, 0]
                want = f"{seeds.mean():.4f} ± {seeds.std(ddof=1) / np.sqrt(2):.4f}"
                assert want in line
            assert re.search(r"\s2\s+0$", line)  # 2 runs, 0 diverged
    assert "nan" not in out.lower()


def test_plot_draws_a_png(tiny, capsys, tmp_path):
    png = tmp_path / "fig.png"
    code, out, _ = dynloss(capsys, "plot", tiny, "--png", png)
    assert code == 0 and str(png) in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line naming the flag, the value and the allowed range; nothing
# written, nothing compiled.

BASE = {
    "--loss": "dce",
    "--width": "3",
    "--steps": "40",
    "--period": "10",
    "--record-every": "2",
    "--seeds": "2",
}
BAD = [
    ({"--amplitude": "0.5"}, "--amplitude 0.5", ">= 1"),
    ({"--amplitude": "nan"}, "--amplitude nan", ">= 1"),
    ({"--period": "0"}, "--period", ">= 1"),
    ({"--period": "2.5"}, "--period", "integer"),
    ({"--eta": "0"}, "--eta 0.0", "> 0"),
    ({"--eta": "-1"}, "--eta -1.0", "> 0"),
    ({"--eta": "inf"}, "--eta inf", "finite"),
    ({"--eta": "nan"}, "--eta nan", "finite"),
    ({"--eta": "fast"}, "--eta", "number"),
    ({"--width": "0"}, "--width 0", ">= 1"),
    ({"--width": "2.5"}, "--width", "integer"),
    ({"--loss": "hinge"}, "--loss hinge", "ce, dce, mse, dmse1, dmse1o, dmse2"),
    ({"--seeds": "0"}, "--seeds 0", ">= 1"),
    ({"--steps": "0"}, "--steps 0", ">= 1"),
    ({"--record-every": "3"}, "--record-every 3", "must divide --steps (40)"),
    ({"--eig-every": "5"}, "--eig-every 5", "multiple of --record-every (2)"),
    ({"--eig-every": "6"}, "--eig-every 6", "must divide --steps (40)"),
    ({"--eig-every": "-2"}, "--eig-every -2", ">= 0"),
    ({"--eig-every": "4", "--num-matvecs": "1"}, "--num-matvecs 1", ">= 2"),
    ({"--init": "he"}, "--init he", "glorot, lecun"),
    ({"--dtype": "float16"}, "--dtype float16", "float64, float32"),
    ({"--depth": "0"}, "--depth 0", ">= 1"),
    ({"--first-seed": "-1"}, "--first-seed -1", "in [0, "),
    ({"--chunk-steps": "0"}, "--chunk-steps 0", ">= 1"),
    ({"--points-per-class": "1"}, "--points-per-class 1", ">= 2"),
    ({"--batch-size": "-1"}, "--batch-size -1", ">= 0"),
    ({"--devices": "99"}, "--devices 99", "between 0 and"),
]


@pytest.mark.parametrize("change,names,allowed", BAD, ids=[" ".join(c) for c, _, _ in BAD])
def test_bad_flag_exits_2_with_one_line_and_writes_nothing(
    change, names, allowed, capsys, tmp_path
):
    flags = {**BASE, **change}
    args = [a for k, v in flags.items() for a in (k, v)]
    out = tmp_path / "run"
    with count_compiles() as compiles:
        code, stdout, stderr = dynloss(capsys, "train", *args, "--out", out)
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert names in stderr and allowed in stderr, stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert compiles == []


def test_missing_out_and_unknown_command(capsys):
    code, _, err = dynloss(capsys, "train", "--loss", "dce")
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
    code, _, err = dynloss(capsys, "trian")
    assert code == 2 and "trian" in err and len(err.strip().splitlines()) == 1


def test_existing_non_empty_out_is_refused_and_left_alone(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    args = [a for k, v in BASE.items() for a in (k, v)]
    with count_compiles() as compiles:
        code, _, err = dynloss(capsys, "train", *args, "--out", tmp_path)
    assert code == 2 and f"--out {tmp_path}" in err and "--overwrite" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # --resume on a folder that holds no run is refused too
    code, _, err = dynloss(capsys, "train", *args, "--out", tmp_path, "--resume")
    assert code == 2 and "not a run folder" in err
    code, _, err = dynloss(capsys, "train", *args, "--out", tmp_path, "--resume", "--overwrite")
    assert code == 2 and "cannot be combined" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # an --out that is a file, or inside one
    code, _, err = dynloss(capsys, "train", *args, "--out", tmp_path / "notes.txt")
    assert code == 2 and "not a folder" in err
    code, _, err = dynloss(capsys, "train", *args, "--out", tmp_path / "notes.txt" / "run")
    assert code == 2 and "is a file" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert compiles == []


def _hand_written_folder(folder: Path, flags: dict, *, complete: bool) -> None:
    """A run folder's config.json as a sweep of ``flags`` writes it (settings only)."""
    from dynloss_jax.cli import _parser, config_from_args

    args = _parser().parse_args(["train", *(a for kv in flags.items() for a in kv), "--out", "x"])
    folder.mkdir()
    settings = config_from_args(args).settings()
    (folder / "config.json").write_text(json.dumps({"settings": settings, "complete": complete}))


@pytest.mark.parametrize("complete", [False, True], ids=["unfinished", "finished"])
def test_a_used_folder_of_the_same_settings_says_whether_to_resume(complete, capsys, tmp_path):
    folder = tmp_path / "run"
    _hand_written_folder(folder, BASE, complete=complete)
    before = (folder / "config.json").read_text()
    args = [a for k, v in BASE.items() for a in (k, v)]
    with count_compiles() as compiles:
        code, _, err = dynloss(capsys, "train", *args, "--out", folder)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--out {folder}: " in err and "other settings" not in err
        if complete:
            assert "holds a finished run of these settings; nothing to do" in err
            assert "--overwrite" in err and "--resume" not in err
            code, _, err = dynloss(capsys, "train", *args, "--out", folder, "--resume")
            assert code == 2 and f"--resume {folder}: " in err
            assert "finished run of these settings; nothing to resume" in err
        else:
            assert "holds an unfinished run of these settings: continue it with --resume" in err
    assert compiles == [] and (folder / "config.json").read_text() == before


def test_a_used_folder_of_other_settings_names_each_difference(capsys, tmp_path):
    folder = tmp_path / "run"
    _hand_written_folder(folder, {**BASE, "--width": "3"}, complete=False)
    before = (folder / "config.json").read_text()
    changed = {**BASE, "--width": "3 5", "--steps": "80"}
    args = [a for k, v in changed.items() for a in (k, *v.split())]
    for extra, flag in [([], "--out"), (["--resume"], "--resume")]:
        with count_compiles() as compiles:
            code, _, err = dynloss(capsys, "train", *args, "--out", folder, *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{flag} {folder}: holds an unfinished run with other settings (" in err
        differences = re.search(r"other settings \((.*)\):", err).group(1).split("; ")
        assert sorted(differences) == [
            "--steps 40 in the folder, 80 now",
            "--width 3 in the folder, 3 5 now",
        ]
        assert "--overwrite" in err and "another --out" in err
        assert compiles == [] and (folder / "config.json").read_text() == before
    # finished, the same words say so
    config = json.loads(before)
    (folder / "config.json").write_text(json.dumps({**config, "complete": True}))
    code, _, err = dynloss(capsys, "train", *args, "--out", folder)
    assert code == 2 and "holds a finished run with other settings (" in err


def test_plot_of_a_missing_folder_exits_2(tiny, capsys, tmp_path):
    code, _, err = dynloss(capsys, "plot", tmp_path / "nothing")
    assert code == 2 and "not a run folder" in err and len(err.strip().splitlines()) == 1
    code, _, err = dynloss(capsys, "plot", tiny, "--png", tmp_path / "no" / "fig.png")
    assert code == 2 and "--png" in err and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the same record is checked by the momentum run on wine (test_optimizers)
def test_train_on_wine_from_the_cli_records_the_data_set(capsys, tmp_path):
    """--data picks a data set of the optional extra; its classes and features set the network,
    and config.json records the data set, its sizes and split."""
    pytest.importorskip("sklearn")
    out = tmp_path / "wine"
    code, stdout, _ = dynloss(
        capsys,
        "train",
        "--data",
        "wine",
        "--loss",
        "ce",
        "dce",
        "--width",
        "4",
        "--steps",
        "20",
        "--record-every",
        "5",
        "--period",
        "10",
        "--amplitude",
        "5",
        "--quiet",
        "--no-plot",
        "--out",
        out,
    )
    assert code == 0, stdout
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["data"] == "wine"
    assert config["data"]["n_train"] == 133 and config["data"]["n_features"] == 13
    with np.load(out / "arrays.npz") as z:
        assert z["gamma"].shape[-1] == 3 and np.all(np.isfinite(z["final_val_acc"]))


def test_a_data_set_of_a_missing_extra_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    code, _, err = dynloss(capsys, "train", "--data", "iris", "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--data iris" in err and 'pip install -e ".[data]"' in err


def test_help_is_plain_text_with_the_examples(capsys):
    import dynloss_jax.cli as cli

    for command in ([], ["train"], ["plot"], ["status"], ["rerun"]):
        code, out, _ = dynloss(capsys, *command, "--help")
        assert code == 0 and out.startswith("usage: dynloss")
        for markup in ("``", "::", ":func:", ":class:", ":data:"):
            assert markup not in out, (command, markup)
    code, out, _ = dynloss(capsys, "--help")
    # every example line of the module's docstring, as written there
    examples = [line.strip() for line in cli.__doc__.splitlines() if line.startswith("    ")]
    assert len(examples) == 5
    for line in examples:
        assert f"\n  {line}" in out or f"\n      {line}" in out, line
    assert "The dynloss command: train a sweep, submit it as a job array, plot a run" in out
    assert cli.plain("see :func:`~a.b` and ``x``::") == "see a.b and x:"
