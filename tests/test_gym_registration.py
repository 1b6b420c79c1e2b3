"""Gymnasium habits: ``import catur`` registers the envs, ``make()``'s result has ``action_masks()``,
and the ``make()`` example of docs/howto/from-python.md runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib.common.maskable.utils import get_action_masks

import catur

FROM_PYTHON = Path(__file__).resolve().parents[1] / "docs" / "howto" / "from-python.md"
SMALL = {"workload": "default", "days": "1:2", "episode_arrivals": 20}


@pytest.mark.parametrize("imports", ["gymnasium, catur", "catur, gymnasium", "catur.errors, gymnasium.spaces, gymnasium"])
def test_import_catur_registers_the_ids_without_importing_the_simulator(imports):
    """In a fresh interpreter, whichever of catur and gymnasium comes first: the ids exist but
    catur.sim is not loaded; make() then loads it and builds the env."""
    code = (
        f"import sys, {imports}\n"
        "import gymnasium\n"
        "assert 'catur/NumaPlacement-v0' in gymnasium.registry\n"
        "assert 'catur/NumaPlacementNodes-v0' in gymnasium.registry\n"
        "assert not any(m.startswith('catur.sim') for m in sys.modules), sorted(m for m in sys.modules if m.startswith('catur'))\n"
        "env = gymnasium.make('catur/NumaPlacement-v0', workload='default', days='1:1', episode_arrivals=5)\n"
        "obs, info = env.reset(seed=1)\n"
        "print(type(env.unwrapped).__name__, obs.shape)\n"
    )
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NumaPlacementEnv (68,)"


def test_import_catur_alone_does_not_import_gymnasium():
    """The CLI and the service never need gymnasium: registration waits for its import."""
    code = "import sys, catur, catur.cli.main\nprint('gymnasium' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_importing_the_env_module_does_not_register_twice():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import importlib

        import catur.sim.env

        importlib.reload(catur)
    assert gym.spec("catur/NumaPlacement-v0").entry_point == catur.ENV_IDS["catur/NumaPlacement-v0"]


@pytest.mark.parametrize("env_id,width", [("catur/NumaPlacement-v0", 4), ("catur/NumaPlacementNodes-v0", 8)])
def test_action_masks_reachable_through_makes_wrappers(env_id, width):
    env = gym.make(env_id, **SMALL)
    env.reset(seed=3)
    mask = env.action_masks()
    assert mask.shape == (width,) and mask.dtype == bool
    assert np.array_equal(mask, env.unwrapped.action_masks())
    assert np.array_equal(mask, get_action_masks(env))
    assert np.array_equal(mask, env.get_wrapper_attr("action_masks")())
    if width == 8:  # the node variant allows only the host's real nodes
        assert mask.sum() == env.unwrapped._stream.topology.num_nodes
    # Under a user's own wrapper the documented ways still reach it.
    wrapped = gym.wrappers.RecordEpisodeStatistics(env)
    assert np.array_equal(get_action_masks(wrapped), mask)
    env.close()


def test_masks_follow_the_host_after_reset():
    env = gym.make("catur/NumaPlacementNodes-v0", workload="default", cluster="mixed", days="1:2", episode_arrivals=5)
    sizes = set()
    for seed in range(12):
        env.reset(seed=seed)
        sizes.add((int(env.action_masks().sum()), env.unwrapped._stream.topology.num_nodes))
    assert all(a == b for a, b in sizes) and len(sizes) == 2  # 2-node and 4-node hosts both seen


def page_python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.slow
def test_from_python_page_examples_run(capsys):
    blocks = page_python_blocks(FROM_PYTHON)
    assert any("gymnasium.make(" in b for b in blocks), "the From Python page lost its make() example"
    for block in blocks:
        exec(compile(block, str(FROM_PYTHON), "exec"), {"__name__": "from_python_page"})
    assert "True" in capsys.readouterr().out


@pytest.mark.parametrize("page", ["add-a-policy.md", "trace-formats.md"])
def test_how_to_python_examples_run(page, tmp_path, monkeypatch, capsys):
    """The Python blocks of the how-to guides run as written (in a scratch directory)."""
    path = FROM_PYTHON.parent / page
    blocks = page_python_blocks(path)
    assert blocks, f"{page} has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(path), "exec"), {"__name__": "how_to_page"})
    assert capsys.readouterr().out.strip()
