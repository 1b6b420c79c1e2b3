"""The ``./run`` wrapper: the install lives in the repository, the command runs where you are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "run"
CATUR = Path(sys.executable).with_name("catur")

pytestmark = pytest.mark.skipif(not CATUR.exists() or shutil.which("bash") is None, reason="needs bash and an installed catur")


@pytest.fixture
def ready_venv(tmp_path: Path) -> Path:
    """A stand-in for an installed venv: ./run finds its python, its catur and a fresh stamp,
    so it skips the install and runs the real catur command."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "catur").symlink_to(CATUR)
    (venv / ".catur-installed-dev").touch()
    return venv


def run(*args: str, cwd: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CATUR_VENV": str(venv), "MPLBACKEND": "Agg"}
    return subprocess.run(["bash", str(RUN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_relative_paths_are_read_from_the_callers_directory(tmp_path: Path, ready_venv: Path):
    from catur.traces.synthetic import generate

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    generate("default", seed=1).head(100).to_parquet(elsewhere / "my.parquet")
    result = run("traces", "stats", "my.parquet", cwd=elsewhere, venv=ready_venv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("my.parquet (canonical)")
    assert "VMs            100" in result.stdout


def test_outputs_are_written_in_the_callers_directory(tmp_path: Path, ready_venv: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("topology", "show", "intel-2s", "--json", cwd=elsewhere, venv=ready_venv)
    assert result.returncode == 0, result.stderr
    (elsewhere / "host.yaml").write_text("nodes:\n  - {cores: 4, mem_gib: 8}\n")
    result = run("topology", "show", "host.yaml", cwd=elsewhere, venv=ready_venv)
    assert result.returncode == 0 and "host" in result.stdout, result.stderr


def test_a_missing_file_is_named_as_the_caller_wrote_it(tmp_path: Path, ready_venv: Path):
    result = run("traces", "stats", "nothere.parquet", cwd=tmp_path, venv=ready_venv)
    assert result.returncode == 2
    assert "nothere.parquet" in result.stderr and "Traceback" not in result.stderr


def test_demo_output_is_ignored_by_git_in_the_checkout():
    """`./run demo` from the repository root writes ./catur-demo/, which git ignores."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "catur-demo/results.json"], cwd=REPO)
    assert result.returncode == 0, "catur-demo/ is not ignored by git"
