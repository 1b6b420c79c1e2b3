"""PPO over the candidates: the vectorised env's books and reward, the shared-weight policy, its
export, and the ``train-scorer --algo ppo`` command end to end on a tiny trace.

The key invariant: with no shaping and scale 1, an episode's rewards sum to minus the host's
sum of counted VMs' lifetime defects, the numerator of the headline metric, exactly as the
replay engine computes it for the same decisions (checked on generated hosts: random
topologies, vNUMA splits, overcommit, instant departures, VMs running to the window's end).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _trace_support import _trace
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batched import SETTINGS, host_traces, topologies

from catur.afterstate import FEATURES, AfterStateModel, afterstate_candidates
from catur.decision import Decider
from catur.errors import CaturError
from catur.policy_model import load_policy
from catur.sim.batched import replay_batched
from catur.sim.candidate_vec_env import CandidateVecEnv, RewardConfig
from catur.sim.env import CANDIDATE_SLOTS, CandidateEnv
from catur.sim.workload import Workload
from catur.topology import PRESETS
from catur.training.ppo_policy import (
    CandidateNetworks, CandidateScorerPolicy, actor_layers, export_actor, policy_agreement, start_temperature,
)

GREEDY_SCORER = AfterStateModel.linear({"defect": -1.0})
EXACT = RewardConfig(scale=1.0, shaping_weight=0.0)


def _stream(topology, trace, counted=None):
    counted = np.ones(trace.num_vms, dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
    return SimpleNamespace(topology=topology, trace=trace, counted=counted)


def _play(env: CandidateVecEnv, model: AfterStateModel, limit: int = 10_000):
    """Step ``env`` with ``model``'s argmax until every slot finished an episode: per slot, the
    sum of its first episode's rewards (float32, as SB3 takes them), of its objective costs
    (float64) and its last info."""
    obs = env.reset()
    returns = np.zeros(env.num_envs)
    costs = np.zeros(env.num_envs)
    first: dict[int, tuple[float, float, dict]] = {}
    for _ in range(limit):
        scores = model.scores(obs.reshape(env.num_envs, CANDIDATE_SLOTS, -1))
        obs, rewards, dones, infos = env.step(np.argmax(np.where(env.action_masks(), scores, -np.inf), axis=1))
        returns += rewards
        costs += [info["objective_cost"] for info in infos]
        for i in np.flatnonzero(dones):
            first.setdefault(int(i), (float(returns[i]), float(costs[i]), infos[i]))
            returns[i] = costs[i] = 0.0
        if len(first) == env.num_envs:
            return first
    raise AssertionError("episodes did not end")


# --- the vectorised env -----------------------------------------------------------------------------


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_rewards_sum_to_the_exact_lifetime_objective(data):
    """Per host: the rewards of a whole episode (no shaping, scale 1) are minus the sum of its
    counted VMs' lifetime defects that the replay engine gives for the same scorer's decisions."""
    topology = data.draw(topologies)
    trace = data.draw(host_traces(topology))
    counted = data.draw(st.lists(st.booleans(), min_size=trace.num_vms, max_size=trace.num_vms))
    model = data.draw(st.sampled_from([GREEDY_SCORER, load_policy("default")]))
    stream = _stream(topology, trace, counted)
    env = CandidateVecEnv([stream], num_envs=2, reward=EXACT)
    replay = replay_batched([(topology, trace)], Decider(model), min_batch_hosts=1)[0]
    expected = -replay.lifetime_defect[np.asarray(counted)].sum()
    for total, cost, info in _play(env, model).values():
        assert -cost == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert total == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert info["episode"]["l"] == trace.num_vms and not info["TimeLimit.truncated"]


def test_steps_place_as_the_single_host_candidate_env():
    """The same actions give the same usage, observation (up to CandidateEnv's clipping) and masks."""
    stream = max((s for s in Workload("default", days="1:2", cpu_overcommit=1.2).streams() if s.counted.all()),
                 key=lambda s: s.trace.num_vms)
    single = CandidateEnv(streams=[stream], episode_arrivals=10_000)
    obs_single, _ = single.reset(seed=0, options={"host_index": 0, "start_arrival": 0})
    env = CandidateVecEnv([stream], num_envs=1)
    obs = env.reset()
    rng = np.random.default_rng(1)
    group = env.groups[0]
    for _ in range(min(stream.trace.num_vms - 1, 150)):
        np.testing.assert_allclose(np.clip(obs[0], -1.0, 8.0), obs_single, rtol=1e-6, atol=1e-6)
        mask = env.action_masks()[0]
        np.testing.assert_array_equal(mask, single.action_masks())
        action = int(rng.choice(np.flatnonzero(mask)))
        obs_single, _, terminated, _, info = single.step(action)
        obs, _, dones, infos = env.step(np.array([action]))
        np.testing.assert_array_equal(group.state.used_vcpus[0], single._state.used_vcpus[0])
        np.testing.assert_array_equal(group.state.used_mem_mib[0], single._state.used_mem_mib[0])
        np.testing.assert_array_equal(group.state.residents[0], single._state.residents[0])
        assert not dones[0] and not terminated and not infos[0]["invalid_action"]


def test_masks_invalid_actions_truncation_and_resets():
    topology = PRESETS["amd-2s-nps4"]
    streams = [s for s in Workload("adversarial", days="16:16", seed=1, cluster="amd-2s-nps4").streams() if s.counted.any()]
    env = CandidateVecEnv(streams, num_envs=5, episode_arrivals=3, seed=3)
    obs = env.reset()
    assert obs.shape == (5, CANDIDATE_SLOTS * len(FEATURES)) and env.action_masks().shape == (5, CANDIDATE_SLOTS)
    masks = env.action_masks()
    # Padded slots (an 8-node host has 12 columns, all real) and invalid socket columns are masked and zero.
    rows = obs.reshape(5, CANDIDATE_SLOTS, -1)
    assert ((rows != 0).any(axis=-1) == masks).all()
    assert masks[:, : 4].all() and topology.num_nodes == 8
    bad = np.full(5, CANDIDATE_SLOTS + 3)
    _, _, dones, infos = env.step(bad)
    assert all(info["invalid_action"] for info in infos) and not dones.any()
    env.step(np.zeros(5, dtype=np.int64))
    obs, _, dones, infos = env.step(np.zeros(5, dtype=np.int64))
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] and info["episode"]["l"] == 3
        assert info["terminal_observation"].shape == (CANDIDATE_SLOTS * len(FEATURES),)
    # Restarted at a stream's start: its first arriving VM on the stream's start usage (empty).
    for group in env.groups:
        assert (group.pos == 0).all() and (group.decisions == 0).all() and (group.state.used_vcpus == 0).all()
    with pytest.raises(CaturError, match="num_envs must be >= 1"):
        CandidateVecEnv(streams, num_envs=0)
    with pytest.raises(CaturError, match="with arrivals"):
        CandidateVecEnv([], num_envs=1)


def test_slots_are_shared_among_topologies_and_reset_onto_their_own():
    streams = [s for s in Workload("default", days="1:1").streams() if s.counted.any()]
    env = CandidateVecEnv(streams, num_envs=7)
    env.reset()
    assert sum(len(g.slots) for g in env.groups) == 7 and len(env.groups) == len({s.topology.name for s in streams})
    for group in env.groups:
        assert all(s.topology.name == group.topology.name for s in group.streams)


def test_load_aware_term_is_the_regret_at_placement():
    """A non-best candidate pays its immediate defect above the best one's; the best pays 0."""
    streams = [s for s in Workload("default", days="1:2", cpu_overcommit=1.3, target_utilization=0.97).streams() if s.counted.any()]
    env = CandidateVecEnv(streams, num_envs=4, reward=RewardConfig(scale=1.0, shaping_weight=1.0))
    env.reset()
    for _ in range(40):
        tables = {int(g.slots[j]): (t, i) for g in env.groups for part, t in g.tables for i, j in enumerate(part)}
        worst = np.array([int(np.argmax(np.where(tables[s][0].valid[tables[s][1]], tables[s][0].defect[tables[s][1]], -np.inf)))
                          for s in range(4)])
        _, rewards, _, infos = env.step(worst)
        for s in range(4):
            table, row = tables[s]
            defects = table.defect[row][table.valid[row]]
            assert infos[s]["regret"] == pytest.approx(defects.max() - defects.min())
            assert rewards[s] == pytest.approx(-(infos[s]["objective_cost"] + infos[s]["regret"]), rel=1e-5)


# --- the policy -------------------------------------------------------------------------------------


def _networks(hidden: int = 6, seed: int = 0) -> CandidateNetworks:
    torch.manual_seed(seed)
    nets = CandidateNetworks(len(FEATURES), hidden, 16, temperature=3.0, input_scale=list(np.linspace(0.5, 2.0, len(FEATURES))))
    if hidden:
        torch.nn.init.normal_(nets.branch[-1].weight)
    return nets


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 8))
def test_logits_are_permutation_equivariant(seed, hidden):
    rng = np.random.default_rng(seed)
    nets = _networks(hidden, seed % 7)
    x = rng.normal(size=(3, CANDIDATE_SLOTS, len(FEATURES))).astype(np.float32)
    perm = rng.permutation(CANDIDATE_SLOTS)
    with torch.no_grad():
        logits = nets.forward_actor(torch.from_numpy(x.reshape(3, -1))).numpy()
        permuted = nets.forward_actor(torch.from_numpy(x[:, perm].reshape(3, -1))).numpy()
        values = nets.forward_critic(torch.from_numpy(x.reshape(3, -1))).numpy()
        values_permuted = nets.forward_critic(torch.from_numpy(x[:, perm].reshape(3, -1))).numpy()
    np.testing.assert_allclose(permuted, logits[:, perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values_permuted, values, rtol=1e-5, atol=1e-5)  # pooled: order does not matter


@pytest.mark.parametrize("hidden", [0, 5])
def test_export_decides_as_the_actor_on_2_4_and_8_node_hosts(hidden):
    """One network for every host size; the numpy export scores like the torch actor and decides identically."""
    nets = _networks(hidden)
    model = export_actor(nets)
    assert len(model.layers) == (2 if hidden else 1) and model.manifest["activation"] == ("relu" if hidden else "tanh")
    rng = np.random.default_rng(0)
    tables = []
    for name in ("intel-2s", "amd-2s-nps2", "amd-2s-nps4"):  # 2, 4 and 8 nodes
        topo = PRESETS[name]
        b, n = 64, topo.num_nodes
        used = (rng.uniform(0, 1.1, size=(b, n)) * topo.node_cores).astype(np.int64)
        mem = (rng.uniform(0, 0.9, size=(b, n)) * topo.node_mem_mib).astype(np.int64)
        vcpus = rng.choice([1, 2, 4, 8], size=b)
        tables.append(afterstate_candidates(topo, used, mem, rng.integers(0, 20, size=(b, n)).astype(float), vcpus,
                                            np.ones(b), np.ones(b), vcpus[:, None], (vcpus * 1024)[:, None]))
    for table in tables:
        with torch.no_grad():
            torch_scores = nets.scores(torch.from_numpy(np.asarray(table.features, np.float32))).numpy()
        np.testing.assert_allclose(model.scores(table.features), torch_scores, rtol=1e-4, atol=1e-4)
    assert policy_agreement(nets, model, tables) == 1.0


def test_the_warm_started_policy_decides_as_the_default():
    from sb3_contrib import MaskablePPO

    from catur.training.afterstate import scorer_weights

    default = load_policy("default")
    weights = scorer_weights(default, "default")
    streams = [s for s in Workload("default", days="1:2", cpu_overcommit=1.1).streams() if s.counted.any()]
    env = CandidateVecEnv(streams, num_envs=8)
    ppo = MaskablePPO(CandidateScorerPolicy, env, n_steps=16, batch_size=64, seed=0, device="cpu",
                      policy_kwargs={"actor_init": weights.tolist(), "temperature": 50.0,
                                     "input_scale": list(np.linspace(0.5, 2.0, len(FEATURES))), "hidden": 3})
    obs = env.reset()
    for _ in range(30):
        actions, _ = ppo.predict(obs, deterministic=True, action_masks=env.action_masks())
        x = obs.reshape(8, CANDIDATE_SLOTS, -1)
        ours = np.argmax(np.where(env.action_masks(), default.scores(x), -np.inf), axis=1)
        rows = np.arange(8)
        assert ((actions == ours) | (x[rows, actions] == x[rows, ours]).all(-1)).all()
        obs, *_ = env.step(actions)
    assert export_actor(ppo.policy.mlp_extractor).layers[0][0].shape == (len(FEATURES), 3 + 2)


def test_the_start_temperature_gives_the_asked_probability():
    from catur.training.ppo_policy import best_mass

    default = load_policy("default")
    rng = np.random.default_rng(2)
    topo = PRESETS["amd-2s-nps4"]
    used = (rng.uniform(0, 1.1, size=(200, 8)) * topo.node_cores).astype(np.int64)
    mem = (rng.uniform(0, 0.9, size=(200, 8)) * topo.node_mem_mib).astype(np.int64)
    vcpus = rng.choice([1, 2, 4], size=200)
    table = afterstate_candidates(topo, used, mem, np.zeros((200, 8)), vcpus, np.ones(200), np.ones(200), vcpus[:, None],
                                  (vcpus * 2048)[:, None])
    t = start_temperature(default, [table], 0.8)
    assert best_mass(np.where(table.valid, default.score(table), 0.0), table.valid, t) == pytest.approx(0.8, abs=1e-3)


def test_maskable_ppo_learns_on_the_vec_env():
    """SB3's VecEnv contract: MaskablePPO collects rollouts (masks, resets, bootstrapping on
    truncation) and updates for a few hundred steps on a tiny synthetic workload."""
    from sb3_contrib import MaskablePPO

    streams = [s for s in Workload("adversarial", days="16:16", seed=1).streams() if s.counted.any()]
    env = CandidateVecEnv(streams, num_envs=6, episode_arrivals=20)
    ppo = MaskablePPO(CandidateScorerPolicy, env, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu",
                      policy_kwargs={"hidden": 4})
    ppo.learn(total_timesteps=384)
    assert ppo.num_timesteps == 384 and len(ppo.ep_info_buffer) > 0
    assert all(np.isfinite(p.detach().numpy()).all() for p in ppo.policy.parameters())
    layers, _ = actor_layers(ppo.policy.mlp_extractor)
    assert layers[0][0].shape == (len(FEATURES), 6)


# --- the command ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_scorer_with_ppo_writes_a_loadable_checked_model(tmp_path, capsys):
    from catur.cli.main import main

    trace = _trace(tmp_path / "a.csv", 6, vms_per_day=150)
    out = tmp_path / "model"
    code = main(["train-scorer", trace, "--train-days", "1:3", "--validate-days", "4:5", "--cluster", "mixed",
                 "--algo", "ppo", "--timesteps", "256", "--envs", "4", "--n-steps", "32", "--checkpoints", "1",
                 "--hidden", "3", "--scenarios-per-source", "1", "--ppo-exclude-start", "--allow-worse", "--out", str(out),
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "PPO, 256 decisions" in printed and "validation: scorer" in printed
    model = load_policy(out)
    assert isinstance(model, AfterStateModel) and len(model.layers) == 2
    manifest = model.manifest
    assert manifest["training"]["algorithm"] == "ppo" and manifest["training"]["timesteps_done"] == 256
    assert [h["timesteps"] for h in manifest["training"]["history"]] == [0, 256]  # step 0 and the end
    assert manifest["training"]["best_step"] == 256  # --ppo-exclude-start: step 0 validated, not kept
    assert manifest["export_check"]["agreement"] == 1.0 and manifest["export_check"]["policy_agreement"] == 1.0
    assert "gate" in manifest["evaluation"]


def test_bad_ppo_settings_are_named():
    from catur.training.ppo_scorer import PPOScorerConfig

    for bad, message in (({"envs": 0}, "envs >= 1"), ({"hidden": -1}, "hidden and checkpoints must be >= 0"),
                         ({"start_probability": 1.0}, "start_probability"), ({"shaping_weight": -0.5}, "shaping weight")):
        with pytest.raises(CaturError, match=message):
            PPOScorerConfig(**bad)
    with pytest.raises(CaturError, match="shaping weight"):
        RewardConfig(shaping_weight=-1.0)
