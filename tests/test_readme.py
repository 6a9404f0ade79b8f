"""The README's "Start here" works as written: its set-up line leaves the ``dynloss`` command of
"Command line" on the PATH. The fast test reads the README; the slow one runs the set-up line in
a fresh virtual environment made in a copy of this checkout, then ``dynloss --help`` and a tiny
``dynloss train``."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## `` heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def first_bash_block(text: str) -> list[str]:
    """The command lines of the first ```bash block (comments and blank lines dropped)."""
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def start_commands() -> list[str]:
    """The two commands of "Start here": the main job and the tests, each with the set-up."""
    commands = first_bash_block(section("Start here"))
    assert len(commands) == 2, commands
    return commands


def setup_line() -> str:
    """The set-up both commands begin with (the part before their last ``&&``)."""
    main_job, tests = (c.rsplit(" && ", 1) for c in start_commands())
    assert main_job[0] == tests[0], (main_job, tests)
    assert main_job[1].startswith("python -m experiments.") and tests[1] == "python -m pytest"
    return main_job[0]


def test_start_here_activates_what_command_line_types():
    line = setup_line()
    assert re.search(r"&& \. \.venv/bin/activate &&", line), line
    assert 'pip install -q -e ".[test]"' in line
    commands = first_bash_block(section("Command line"))
    assert len(commands) > 5
    # every example types the command by its name (continuation lines aside)
    heads = {c.split()[0] for c in commands if not c.startswith(" ")}
    assert heads == {"dynloss"}
    subcommands = {c.split()[1] for c in commands if not c.startswith(" ")}
    assert subcommands == {"train", "plot", "status", "rerun"}
    # the commands after the set-up line use what it activated, not a path into .venv
    for c in first_bash_block(section("Start here")):
        assert ".venv/bin/python" not in c and ".venv/bin/pip" not in c


@pytest.mark.slow
def test_start_here_leaves_dynloss_working_in_a_fresh_venv(tmp_path):
    """Copies the tracked files of this checkout (not its environments or results), runs the
    README's set-up line there in bash, then the commands as "Command line" writes them."""
    copy = tmp_path / "clone"
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    # a shell as a new user has it: no virtual environment active, no test settings
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    tiny = (
        "dynloss train --loss dce --width 3 --steps 20 --record-every 2 --chunk-steps 20 "
        "--points-per-class 4 --period 10 --amplitude 5 --quiet --no-plot --out runs/tiny"
    )
    script = f"set -e\n{setup_line()}\ncommand -v dynloss\ndynloss --help\n{tiny}\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    where, _, rest = done.stdout.partition("\n")
    assert Path(where) == copy / ".venv" / "bin" / "dynloss"
    assert rest.startswith("usage: dynloss") and "``" not in rest
    for sub in ("train", "plot", "status", "rerun"):
        assert f"    {sub} " in rest
    assert "dce, width 3, η=1.0" in rest  # the summary table of the tiny run
    assert (copy / "runs" / "tiny" / "arrays.npz").is_file()
