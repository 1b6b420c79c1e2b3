"""The gymnasium environments: API conformance, determinism, vector envs, masks and rewards.

Most tests use days 1-3 of the built-in ``default`` synthetic workload (a few dozen hosts,
built in a fraction of a second). The reward tests use a hand-built trace on a single
``intel-2s`` host (2 nodes × 40 cores × 90 GiB) whose every placement is followed on paper.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import catur.sim.env  # noqa: F401  (registers the env ids)
from catur.errors import CaturError
from catur.observation import MAX_NODES, OBS_DIM
from catur.policies import PRIMITIVES
from catur.sim.env import NodeActionEnv, NumaPlacementEnv
from catur.sim.workload import Workload
from catur.sim.shaping import LoadAwareShaping

ENV_IDS = ("catur/NumaPlacement-v0", "catur/NumaPlacementNodes-v0")
ENV_CLASSES = (NumaPlacementEnv, NodeActionEnv)
SMALL = dict(workload="default", days="1:3")
NAN = float("nan")
CBF, CMI, MBF, MMI = (PRIMITIVES.index(p) for p in ("core-best-fit", "core-most-idle", "mem-best-fit", "mem-most-idle"))


def clipped(defect: float) -> float:
    """One live VM's share of the reward."""
    return float(np.clip(1.0 - defect, -1.0, 1.0))


@pytest.fixture(scope="module")
def small_streams():
    """Host streams of days 1-3 of the default synthetic workload, built once."""
    return Workload("default", days="1:3").streams()


@pytest.fixture(scope="module")
def one_host_cluster(tmp_path_factory):
    """A cluster file with exactly one intel-2s host."""
    path = tmp_path_factory.mktemp("cluster") / "one.yaml"
    path.write_text("name: one\nhosts:\n  - topology: intel-2s\n    count: 1\n")
    return str(path)


def hand_trace() -> pd.DataFrame:
    """Four VMs on one intel-2s host; VM 'x' leaves before VM 1 arrives.

    With the actions used below: VM0 (30 vCPUs, 80 GiB, alpha 8) → node 0; x (4 vCPUs) →
    node 0, gone at t=8; VM1 (30 vCPUs, 20 GiB) → node 1 (every primitive); VM2 (20 vCPUs,
    15 GiB, beta 1.5) → node 0 by the core primitives (10 GiB local, 5 remote, node 0 at 50
    vCPUs: COR 0.25) or node 1 by the memory primitives (node 1 at 50 vCPUs: COR 0.25).
    """
    return pd.DataFrame(
        {
            "vm_id": [0, 1, 2, 3],
            "arrival_s": [0.0, 5.0, 10.0, 20.0],
            "departure_s": [NAN, 8.0, NAN, NAN],
            "vcpus": [30, 4, 30, 20],
            "mem_gib": [80.0, 1.0, 20.0, 15.0],
            "alpha": [8.0, 1.0, 1.0, 1.0],
            "beta": [1.0, 1.0, 1.0, 1.5],
        }
    )


def hand_env(cluster: str, cls=NumaPlacementEnv, **kwargs) -> NumaPlacementEnv:
    env = cls(hand_trace(), cluster=cluster, target_utilization=0, days=None, **kwargs)
    env.reset(seed=0, options={"start_arrival": 0})
    return env


def rollout(env, seed: int, steps: int = 60, actions=(0, 1, 2, 3, 3, 1)):
    """Observations, rewards, flags and infos of a fixed action sequence from ``reset(seed)``."""
    obs, info = env.reset(seed=seed)
    observations, rewards, infos, flags = [obs], [], [info], []
    n = env.action_space.n
    for t in range(steps):
        obs, reward, terminated, truncated, info = env.step(actions[t % len(actions)] % n)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        flags.append((terminated, truncated))
        if terminated or truncated:
            obs, info = env.reset()
            observations.append(obs)
            infos.append(info)
    return np.array(observations), np.array(rewards), infos, flags


# --- API conformance -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ENV_CLASSES, ids=lambda c: c.__name__)
def test_check_env_on_classes(cls, small_streams):
    """gymnasium's and SB3's env checkers pass on the env classes built directly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render modes.*")  # no spec without gym.make
        gym_check_env(cls("default", days="1:3"))
    sb3_check_env(cls("default", days="1:3"), warn=True)
    sb3_check_env(cls(streams=small_streams), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_via_gym_make(env_id):
    """Both checkers pass on the registered ids made with gymnasium.make, without warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(gym.make(env_id, **SMALL).unwrapped)
    assert [str(w.message) for w in caught] == []
    sb3_check_env(gym.make(env_id, **SMALL), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_on_canonical_dataframe(env_id, one_host_cluster):
    """The checkers also pass on a small canonical DataFrame workload."""
    env = gym.make(env_id, workload=hand_trace(), cluster=one_host_cluster, target_utilization=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped.*")
        gym_check_env(env.unwrapped)
    sb3_check_env(env, warn=True)


def test_spaces():
    """Observation is a float32 Box of OBS_DIM; actions are Discrete(4) / Discrete(MAX_NODES)."""
    env = NumaPlacementEnv(**SMALL)
    assert env.observation_space.shape == (OBS_DIM,)
    assert env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Discrete(len(PRIMITIVES))
    assert NodeActionEnv(**SMALL).action_space == gym.spaces.Discrete(MAX_NODES)


def test_step_before_reset_and_bad_episode_length():
    """step() before reset() and episode_arrivals < 1 raise CaturError."""
    env = NumaPlacementEnv(**SMALL)
    with pytest.raises(CaturError, match="reset"):
        env.step(0)
    with pytest.raises(CaturError, match="episode_arrivals"):
        NumaPlacementEnv(**SMALL, episode_arrivals=0)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ENV_CLASSES, ids=lambda c: c.__name__)
def test_same_seed_same_rollout(cls, small_streams):
    """Two envs reset with the same seed give identical observations, rewards and infos."""
    a = rollout(cls(streams=small_streams, episode_arrivals=25), seed=7)
    b = rollout(cls(streams=small_streams, episode_arrivals=25), seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert a[3] == b[3]
    # The same env re-seeded replays itself too.
    env = cls(streams=small_streams, episode_arrivals=25)
    first, again = rollout(env, seed=3), rollout(env, seed=3)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


@pytest.mark.parametrize("cls", ENV_CLASSES, ids=lambda c: c.__name__)
def test_different_seeds_differ(cls, small_streams):
    """Different seeds start on different hosts or arrivals, so rollouts differ."""
    a = rollout(cls(streams=small_streams, episode_arrivals=25), seed=0, steps=10)
    b = rollout(cls(streams=small_streams, episode_arrivals=25), seed=1, steps=10)
    assert a[2][0] != b[2][0] or not np.array_equal(a[0], b[0])


def test_check_env_with_resident_features(small_streams):
    """Both checkers pass with the resident part in the observation, which keeps the old layout first."""
    from catur.observation import OBS_DIM, RESIDENT_DIM

    env = NumaPlacementEnv(streams=small_streams, resident_features=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render modes.*")
        gym_check_env(env)
    sb3_check_env(NumaPlacementEnv(streams=small_streams, resident_features=True), warn=True)
    plain = NumaPlacementEnv(streams=small_streams)
    with_residents, _, _, _ = rollout(env, seed=3, steps=60)
    without, _, _, _ = rollout(plain, seed=3, steps=60)
    assert with_residents.shape[1] == OBS_DIM + RESIDENT_DIM and without.shape[1] == OBS_DIM
    assert np.array_equal(with_residents[:, :OBS_DIM], without)  # same rollout, same old part
    assert (with_residents[:, OBS_DIM:OBS_DIM + 2] > 0).any()  # some node holds residents
    assert all(env.observation_space.contains(o) for o in with_residents)


def test_observations_stay_in_the_box(small_streams):
    """Every observation met in a rollout lies in the observation space."""
    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=40)
    observations, rewards, _, _ = rollout(env, seed=11, steps=200)
    assert all(env.observation_space.contains(o) for o in observations)
    assert np.isfinite(rewards).all()


# --- vector envs and masks -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_sync_vector_env(env_id):
    """The env runs in gymnasium's SyncVectorEnv, reproducibly for a seed, with autoreset."""

    def run():
        venv = gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id, **SMALL, episode_arrivals=15) for _ in range(2)]
        )
        obs, _ = venv.reset(seed=5)
        seen, rewards, ends = [obs], [], 0
        for t in range(40):
            obs, reward, terminated, truncated, _ = venv.step(np.array([t % 4, (t + 1) % 4]))
            seen.append(obs)
            rewards.append(reward)
            ends += int((terminated | truncated).sum())
        venv.close()
        return np.array(seen), np.array(rewards), ends

    obs, rewards, ends = run()
    assert obs.shape == (41, 2, OBS_DIM)
    assert ends >= 4  # episodes of 15 steps ended and were reset
    again = run()
    np.testing.assert_array_equal(obs, again[0])
    np.testing.assert_array_equal(rewards, again[1])


# make_vec_env asks for render_mode="rgb_array"; the envs do not render (metadata says so).
@pytest.mark.filterwarnings("ignore:.*render_mode='rgb_array'.*:UserWarning")
@pytest.mark.parametrize("env_id,width", [(ENV_IDS[0], len(PRIMITIVES)), (ENV_IDS[1], MAX_NODES)])
def test_sb3_make_vec_env_and_action_masks(env_id, width):
    """SB3's make_vec_env builds a DummyVecEnv that steps, and get_action_masks reads its masks."""
    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs={**SMALL, "episode_arrivals": 15})
    assert isinstance(venv, DummyVecEnv)
    obs = venv.reset()
    assert obs.shape == (2, OBS_DIM)
    for _ in range(40):
        masks = get_action_masks(venv)
        assert masks.shape == (2, width) and masks.dtype == bool
        actions = np.array([int(np.flatnonzero(m)[-1]) for m in masks])
        obs, rewards, dones, infos = venv.step(actions)
        assert obs.shape == (2, OBS_DIM) and np.isfinite(rewards).all()
    venv.close()


def test_get_action_masks_on_single_envs(one_host_cluster):
    """get_action_masks works through gym.make wrappers and the shaping wrapper."""
    env = gym.make(ENV_IDS[0], **SMALL)
    env.reset(seed=0)
    assert get_action_masks(env).tolist() == [True] * len(PRIMITIVES)
    shaped = LoadAwareShaping(NumaPlacementEnv(**SMALL))
    shaped.reset(seed=0)
    assert get_action_masks(shaped).tolist() == [True] * len(PRIMITIVES)
    nodes = gym.make(ENV_IDS[1], workload=hand_trace(), cluster=one_host_cluster, target_utilization=0)
    nodes.reset(seed=0)
    assert get_action_masks(nodes).tolist() == [True, True] + [False] * (MAX_NODES - 2)


def test_invalid_node_action_is_core_most_idles_node(one_host_cluster):
    """On a 2-node host a padded node action acts as core-most-idle's node and is flagged."""
    env = hand_env(one_host_cluster, NodeActionEnv)
    twin = hand_env(one_host_cluster, NodeActionEnv)
    for e in (env, twin):  # VM0 → node 0 (valid action)
        _, _, _, _, info = e.step(0)
        assert info["invalid_action"] is False
        assert info["primitive"] == "node-0"
    # Next VM: node 0 has 10 free cores, node 1 has 40: core-most-idle picks node 1.
    obs, reward, term, trunc, info = env.step(7)
    obs2, reward2, term2, trunc2, info2 = twin.step(1)
    assert info["invalid_action"] is True and info2["invalid_action"] is False
    assert info["primitive"] == info2["primitive"] == "node-1"
    np.testing.assert_array_equal(obs, obs2)
    assert (reward, term, trunc) == (reward2, term2, trunc2)
    assert {k: v for k, v in info.items() if k != "invalid_action"} == {
        k: v for k, v in info2.items() if k != "invalid_action"
    }


def test_node_action_places_on_that_node(one_host_cluster):
    """A valid node action binds the VM's vCPUs to that node."""
    env = hand_env(one_host_cluster, NodeActionEnv)
    env.step(1)  # VM0 (30 vCPUs, 80 GiB) on node 1
    np.testing.assert_array_equal(env._used_vcpus, [0, 30])


# --- rewards and episode ends ----------------------------------------------------------------


def test_reward_is_hand_computed_sum_over_live_vms(one_host_cluster):
    """Reward = Σ live VMs clip(1 − (alpha·COR + beta·RMR), −1, 1), equal to the counterfactual."""
    env = hand_env(one_host_cluster)
    steps = [
        # (action, counterfactual reward of each primitive, by hand)
        (CMI, [clipped(0.0)] * 4),  # VM0 alone on node 0
        (CBF, [clipped(0.0) * 2] * 4),  # x joins node 0 (34 vCPUs): nobody overloaded
        (CBF, [clipped(0.0) * 2] * 4),  # x has left; VM1 on node 1: only VM0 and VM1 count
        (
            CBF,
            [
                # core primitives: VM2 on node 0 (50 vCPUs, COR 0.25), RMR 5/15, beta 1.5;
                # VM0 (alpha 8) gets 8 · 0.25 = 2 → clipped to −1.
                clipped(8 * 0.25) + clipped(0.0) + clipped(0.25 + 1.5 * 5 / 15),
                clipped(8 * 0.25) + clipped(0.0) + clipped(0.25 + 1.5 * 5 / 15),
                # memory primitives: VM2 on node 1 (50 vCPUs, COR 0.25), all memory local.
                clipped(0.0) + clipped(0.25) + clipped(0.25),
                clipped(0.0) + clipped(0.25) + clipped(0.25),
            ],
        ),
    ]
    assert steps[3][1] == pytest.approx([0.25, 0.25, 2.5, 2.5])
    for action, expected in steps:
        options = env.counterfactual_rewards()
        np.testing.assert_allclose(options, expected, rtol=0, atol=1e-12)
        _, reward, *_ = env.step(action)
        assert reward == options[action]


@pytest.mark.parametrize("action", range(len(PRIMITIVES)))
def test_counterfactual_reward_matches_step_for_every_action(action, small_streams):
    """From the same state, counterfactual_rewards()[a] is exactly the reward of step(a)."""
    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=30)
    env.reset(seed=action)
    for t in range(60):
        options = env.unwrapped.counterfactual_rewards()
        assert options.shape == (len(PRIMITIVES),)
        a = (action + t) % len(PRIMITIVES)
        _, reward, terminated, truncated, _ = env.step(a)
        # Same terms, summed in another order (the new VM last): equal up to rounding.
        assert reward == pytest.approx(options[a], rel=1e-12, abs=1e-9)
        if terminated or truncated:
            env.reset()


def test_lookahead_costs_of_the_env(small_streams):
    """lookahead_costs(1) is each primitive's own defect at placement; longer look-aheads only
    add the later arrivals' defects; it is refused before reset and for k < 1."""
    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=30)
    with pytest.raises(CaturError, match="reset"):
        env.lookahead_costs(1)
    env.reset(seed=4)
    for t in range(40):
        one = env.lookahead_costs(1)
        assert one.tolist() == [c.defect for c in env._cands]
        five = env.lookahead_costs(5)
        assert (five >= one - 1e-12).all()
        _, _, terminated, truncated, _ = env.step(int(np.argmin(five)))
        if terminated or truncated:
            env.reset()
    with pytest.raises(CaturError, match="k must be >= 1, got 0"):
        env.lookahead_costs(0)


def test_step_info_reports_the_placement(one_host_cluster):
    """info carries the placed VM's defect, COR, RMR, primitive and anomaly flag."""
    env = hand_env(one_host_cluster)
    env.step(CMI), env.step(CBF), env.step(CBF)
    _, _, _, _, info = env.step(CBF)
    assert info["primitive"] == "core-best-fit"
    assert info["cor"] == pytest.approx(0.25)
    assert info["rmr"] == pytest.approx(5 / 15, abs=1e-3)
    assert info["defect"] == pytest.approx(0.25 + 1.5 * 5 / 15, abs=1e-3)
    assert info["anomaly"] is True


def test_terminates_at_end_of_host_stream(one_host_cluster):
    """The episode terminates (not truncates) after the host's last arrival."""
    env = hand_env(one_host_cluster)
    flags = [env.step(0)[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(True, False)]
    # The terminal observation is still a valid point of the observation space.
    env = hand_env(one_host_cluster, episode_arrivals=4)
    for _ in range(3):
        env.step(0)
    obs, _, terminated, truncated, _ = env.step(0)
    assert (terminated, truncated) == (True, False)
    assert env.observation_space.contains(obs)


def test_truncates_at_episode_arrivals(one_host_cluster):
    """The episode truncates after episode_arrivals steps when the stream goes on."""
    env = hand_env(one_host_cluster, episode_arrivals=2)
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[2:4] == (False, True)


def test_reset_options_pick_host_and_start(small_streams):
    """reset(options=host_index/start_arrival) starts on that host; hosts are sampled otherwise."""
    env = NumaPlacementEnv(streams=small_streams)
    _, info = env.reset(seed=0, options={"host_index": 3, "start_arrival": 0})
    assert info["host"] == small_streams[3].host
    hosts = {env.reset(seed=s)[1]["host"] for s in range(20)}
    assert len(hosts) > 1
