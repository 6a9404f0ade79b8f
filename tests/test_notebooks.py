"""The notebooks run top to bottom in smoke mode and convert to .ipynb.

Each ``notebooks/*.py`` (jupytext percent format) is executed as a Python script in a subprocess
with ``SMOKE=1`` and the Agg backend, in a temporary folder so that whatever it writes lands
there; any exception in any cell fails the test. ``jupytext --to ipynb`` must convert each one
into a notebook whose first cell is markdown and whose first code cell holds the SMOKE switch.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))
TIMEOUT_S = 600  # far above the ~1 min a smoke run takes on 2 busy cores: a hang, not a budget


def test_notebooks_are_there_as_percent_scripts_only():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_dynamical_losses.py",
        "02_edge_of_stability.py",
        "03_sweeps.py",
        "04_spectrum.py",
        "05_your_own_loss.py",
    ]
    assert not list(NOTEBOOKS[0].parent.glob("*.ipynb")), "commit notebooks as .py only"
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "# %% [markdown]" in text and 'SMOKE = os.environ.get("SMOKE") == "1"' in text
        assert 'jax.config.update("jax_enable_x64", True)' in text
        assert "dynloss_jax.use_cpu_cores()" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    env = dict(os.environ, SMOKE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, (
        f"{path.name} failed after {elapsed:.0f} s:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    assert "Traceback" not in done.stderr
    print(f"{path.name}: {elapsed:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupytext_converts_to_ipynb(path, tmp_path):
    out = tmp_path / (path.stem + ".ipynb")
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", "--output", str(out), str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    nb = json.loads(out.read_text())
    cells = nb["cells"]
    assert nb["nbformat"] == 4 and len(cells) >= 6
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert 'SMOKE = os.environ.get("SMOKE") == "1"' in "".join(code[0]["source"])
    assert all(not c.get("outputs") for c in code)
    assert sum(c["cell_type"] == "markdown" for c in cells) >= 3
