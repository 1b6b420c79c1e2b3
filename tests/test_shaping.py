"""Load-aware reward shaping: the rule on hand-built counterfactuals, and the wrapper on a host.

The rule (docs/howto/train-primitive-model.md): all four primitives score the same → 0; the best action keeps its
reward; any other action gets minus the best reward.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catur.policies import PRIMITIVES
from catur.sim.env import NumaPlacementEnv
from catur.sim.shaping import TIE_TOLERANCE, LoadAwareShaping, shaped_reward

NAN = float("nan")


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0, 117.25])
def test_all_equal_gives_zero(value):
    """When every primitive would earn the same, every action is shaped to 0."""
    options = np.full(4, value)
    assert [shaped_reward(options, a) for a in range(4)] == [0.0] * 4


def test_best_keeps_reward_others_get_minus_best():
    """The best action keeps its reward; the others get minus the best reward."""
    options = np.array([10.0, 12.5, 7.0, -3.0])
    assert [shaped_reward(options, a) for a in range(4)] == [-12.5, 12.5, -12.5, -12.5]


def test_ties_for_best_both_keep_it():
    """Two actions tied for best both keep the best reward."""
    options = np.array([4.0, 9.0, 9.0, 1.0])
    assert [shaped_reward(options, a) for a in range(4)] == [-9.0, 9.0, 9.0, -9.0]


def test_negative_best_reward():
    """With a negative best reward the others get its opposite (a positive number)."""
    options = np.array([-1.0, -5.0, -1.0, -2.0])
    assert [shaped_reward(options, a) for a in range(4)] == [-1.0, 1.0, -1.0, 1.0]


def test_tie_tolerance():
    """Differences within TIE_TOLERANCE count as ties; larger ones do not."""
    tiny = TIE_TOLERANCE / 10
    assert shaped_reward(np.array([5.0, 5.0 + tiny, 5.0, 5.0]), 0) == 0.0
    near = np.array([5.0, 5.0 + tiny, 3.0, 5.0])
    assert shaped_reward(near, 0) == pytest.approx(5.0 + tiny)
    assert shaped_reward(np.array([5.0, 5.0 + 1e-6, 5.0, 5.0]), 0) == pytest.approx(-(5.0 + 1e-6))


# --- the wrapper on a hand-built host --------------------------------------------------------


@pytest.fixture()
def shaped_env(tmp_path):
    """The wrapper around one intel-2s host receiving three VMs (see test_env.hand_trace).

    VM0 (30 vCPUs, 80 GiB, alpha 8) and VM1 (30 vCPUs, 20 GiB) leave every primitive the same
    reward; for VM2 (20 vCPUs, 15 GiB, beta 1.5) the core primitives earn 0.25 and the memory
    primitives 2.5.
    """
    cluster = tmp_path / "one.yaml"
    cluster.write_text("name: one\nhosts:\n  - topology: intel-2s\n    count: 1\n")
    df = pd.DataFrame(
        {
            "vm_id": [0, 1, 2],
            "arrival_s": [0.0, 10.0, 20.0],
            "departure_s": [NAN, NAN, NAN],
            "vcpus": [30, 30, 20],
            "mem_gib": [80.0, 20.0, 15.0],
            "alpha": [8.0, 1.0, 1.0],
            "beta": [1.0, 1.0, 1.5],
        }
    )

    def make():
        env = LoadAwareShaping(NumaPlacementEnv(df, cluster=str(cluster), target_utilization=0, days=None))
        env.reset(seed=0, options={"start_arrival": 0})
        return env

    return make


@pytest.mark.parametrize("action,expected", [(0, -2.5), (1, -2.5), (2, 2.5), (3, 2.5)])
def test_wrapper_values_and_raw_reward(shaped_env, action, expected):
    """The wrapper's reward follows the rule; info keeps raw_reward and the counterfactuals."""
    env = shaped_env()
    for raw in (1.0, 2.0):  # VM0, VM1: all primitives alike → 0
        _, reward, _, _, info = env.step(action)
        assert reward == 0.0
        assert info["raw_reward"] == raw
        assert info["shaped_reward"] == 0.0
    _, reward, terminated, _, info = env.step(action)
    assert reward == pytest.approx(expected)
    assert info["shaped_reward"] == reward
    assert info["raw_reward"] == pytest.approx(0.25 if action < 2 else 2.5)
    np.testing.assert_allclose(info["counterfactual_rewards"], [0.25, 0.25, 2.5, 2.5])
    assert info["primitive"] == PRIMITIVES[action]
    assert terminated


def test_wrapper_keeps_spaces_and_masks(shaped_env):
    """The wrapper exposes the env's spaces and all-True action masks."""
    env = shaped_env()
    assert env.action_space.n == len(PRIMITIVES)
    assert env.action_masks().tolist() == [True] * len(PRIMITIVES)


def test_wrapper_on_synthetic_rollout():
    """On a synthetic rollout the shaped reward is always 0 or ± the best counterfactual."""
    env = LoadAwareShaping(NumaPlacementEnv("default", days="1:3", episode_arrivals=40))
    env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(150):
        action = int(rng.integers(4))
        _, reward, terminated, truncated, info = env.step(action)
        options = info["counterfactual_rewards"]
        assert reward == shaped_reward(options, action)
        assert reward in (0.0, float(options.max()), -float(options.max()))
        assert info["raw_reward"] == pytest.approx(options[action], rel=1e-12, abs=1e-9)
        if terminated or truncated:
            env.reset()
