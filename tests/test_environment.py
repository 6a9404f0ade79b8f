"""The source state a run records: the checkout's commit and whether any tracked file of it
(package, experiments, benchmarks) differs from that commit."""

import shutil
import subprocess
from pathlib import Path

import pytest

from dynloss_jax import environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_source_reads_the_commit_and_changes_to_any_tracked_file(tmp_path, monkeypatch):
    # a copy of the checkout, so that the test can change a tracked file outside the package
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setattr(environment, "__file__", str(clone / "dynloss_jax" / "environment.py"))
    assert environment.source() == {"git_commit": head, "git_dirty": False}
    (clone / "untracked.txt").write_text("not part of the code\n")
    assert environment.source()["git_dirty"] is False  # untracked files do not count
    changed = clone / "benchmarks" / "eagerness.py"
    changed.write_text(changed.read_text() + "\n# changed\n")
    assert environment.source() == {"git_commit": head, "git_dirty": True}
