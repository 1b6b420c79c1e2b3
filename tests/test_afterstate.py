"""The after-state scorer (issue 12, item 3): candidates, features, model files, decisions,
the env view, the torch export and the trainer's gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from catur.afterstate import (
    BASE_FEATURES,
    FEATURES,
    FEW_NODE_CORRECTED,
    FEW_NODE_SUFFIX,
    AfterStateModel,
    afterstate_candidates,
    candidate_batch,
)
from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError, LosesToGreedy
from catur.policy_model import PolicyModel, load_policy, model_kind
from catur.policies import PRIMITIVES
from catur.request import RequestBatch, VMRequest, split_request
from catur.resident import DEFAULT_WEIGHT
from catur.shield import ShieldConfig
from catur.sim.replay import replay_host
from catur.state import HostsState, apply, release
from catur.topology import get_preset

from test_properties import cases, traces

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RESIDENT_RULE = {"defect": -1.0, "resident_rise": -DEFAULT_WEIGHT}


def _wide(topo, used_v, used_m, request, residents=None):
    batch = RequestBatch.of(topo, request)
    counts = np.zeros((1, topo.num_nodes)) if residents is None else np.asarray(residents, float)[None]
    return afterstate_candidates(topo, used_v[None], used_m[None], counts, batch.vcpus, batch.alpha, batch.beta,
                                 batch.inst_vcpus, batch.inst_mem)


@settings(max_examples=300, **SETTINGS)
@given(cases())
def test_every_candidate_is_a_whole_placement(case):
    """Every valid candidate binds all vCPUs to distinct nodes and splits exactly the requested memory."""
    topo, used_v, used_m, request, _ = case
    wide = _wide(topo, used_v, used_m, request)
    inst_vcpus, inst_mem = split_request(topo, request)
    k = inst_vcpus.shape[0]
    assert wide.valid.shape == (1, len(PRIMITIVES) + topo.num_nodes)
    assert wide.valid[0, : len(PRIMITIVES)].all()  # the primitives always exist
    for c in np.flatnonzero(wide.valid[0]):
        p = wide.placements.placement((0, int(c)))
        assert len(set(p.cpu_nodes.tolist())) == k
        assert p.total_vcpus == request.vcpus
        assert p.mem_mib.sum(axis=1).tolist() == inst_mem.tolist()  # memory split sums to each instance's request
        assert (p.mem_mib >= 0).all()
    assert np.isinf(wide.defect[0, ~wide.valid[0]]).all()
    assert wide.features.shape == (1, wide.valid.shape[1], len(FEATURES)) and np.isfinite(wide.features).all()


def test_single_node_candidates_cover_every_node():
    topo = get_preset("amd-2s-nps4")
    used_v = np.zeros(topo.num_nodes, dtype=np.int64)
    used_m = np.zeros(topo.num_nodes, dtype=np.int64)
    wide = _wide(topo, used_v, used_m, VMRequest(4, 4096))
    extra = wide.placements.cpu_nodes[0, len(PRIMITIVES):, 0]
    assert extra.tolist() == list(range(topo.num_nodes))
    assert wide.names[len(PRIMITIVES):] == tuple(f"node-{j}" for j in range(topo.num_nodes))
    assert wide.valid.all()


def test_fragmentation_features_say_what_the_host_can_still_take():
    topo = get_preset("intel-2s")  # 2 nodes
    cores, mem = topo.node_cores, topo.node_mem_mib
    used_v = np.array([cores[0] // 2, 0], dtype=np.int64)
    used_m = np.array([mem[0] // 2, 0], dtype=np.int64)
    request = VMRequest(4, 4096)
    wide = _wide(topo, used_v, used_m, request)
    column = {name: i for i, name in enumerate(wide.names)}
    f = {name: wide.features[0, :, FEATURES.index(name)] for name in
         ("largest_free_cores_after", "largest_free_mem_after", "mem_imbalance_after")}
    # On node 0 the empty node 1 stays whole; on node 1 the largest free share is node 0's half.
    assert f["largest_free_cores_after"][column["node-0"]] == pytest.approx(1.0)
    assert f["largest_free_cores_after"][column["node-1"]] == pytest.approx(max(0.5, 1 - 4 / cores[1]))
    assert f["largest_free_mem_after"][column["node-0"]] == pytest.approx(1.0)
    share0, share1 = (mem[0] // 2 + 4096) / mem[0], 0.0
    assert f["mem_imbalance_after"][column["node-0"]] == pytest.approx(abs(share0 - share1) / 2)
    # Evening memory out lowers the imbalance: node 1 (the empty one) is the more even choice.
    assert f["mem_imbalance_after"][column["node-1"]] < f["mem_imbalance_after"][column["node-0"]]


def test_copy_features_price_a_second_vm_like_this_one():
    """``copy_cor_after``/``copy_remote_after``: what one more instance like this one would
    get on the after-state (the least COR on any node; the memory no node could hold)."""
    topo = get_preset("intel-2s")  # 2 nodes
    cores, mem = topo.node_cores, topo.node_mem_mib
    # Node 0: every core taken, memory nearly full; node 1: cores for exactly one such VM.
    vcpus, mib = 8, 8192
    used_v = np.array([cores[0], cores[1] - vcpus], dtype=np.int64)
    used_m = np.array([mem[0] - mib // 2, mem[1] - mib - 1024], dtype=np.int64)
    wide = _wide(topo, used_v, used_m, VMRequest(vcpus, mib))
    column = {name: i for i, name in enumerate(wide.names)}
    cor = wide.features[0, :, FEATURES.index("copy_cor_after")]
    remote = wide.features[0, :, FEATURES.index("copy_remote_after")]
    # On node 1 it fills the last cores: a copy then overloads either node by its own size.
    assert cor[column["node-1"]] == pytest.approx(min(vcpus / cores[1], vcpus / cores[0]))
    # On node 0 (overloaded anyway) node 1 keeps room for a copy without overcommit.
    assert cor[column["node-0"]] == pytest.approx(0.0)
    # Memory: on node 1 no node keeps a copy's 8 GiB (node 0 has half of it free, node 1 1 GiB).
    assert remote[column["node-1"]] == pytest.approx((mib - mib // 2) / mib)
    assert 0.0 <= remote.min() and remote.max() <= 1.0 and 0.0 <= cor.min() and cor.max() <= 1.0


@pytest.mark.parametrize("preset", ["intel-2s", "amd-2s-nps2", "amd-2s-nps4"])
def test_few_node_copies_are_the_features_on_small_hosts_and_zero_on_large_ones(preset):
    topo = get_preset(preset)
    rng = np.random.default_rng(3)
    used_v = (rng.uniform(0, 0.9, topo.num_nodes) * topo.node_cores).astype(np.int64)
    used_m = (rng.uniform(0, 0.8, topo.num_nodes) * topo.node_mem_mib).astype(np.int64)
    wide = _wide(topo, used_v, used_m, VMRequest(8, 16384), residents=rng.integers(0, 9, topo.num_nodes))
    base = wide.features[..., [BASE_FEATURES.index(f) for f in FEW_NODE_CORRECTED]]
    copies = wide.features[..., [FEATURES.index(f + FEW_NODE_SUFFIX) for f in FEW_NODE_CORRECTED]]
    assert np.abs(base).sum() > 0
    np.testing.assert_array_equal(copies, base if topo.num_nodes <= 4 else np.zeros_like(base))


def test_multi_instance_candidates_are_one_node_set_per_socket():
    topo = get_preset("amd-2s-nps4")  # 2 sockets of 4 nodes
    used_v = np.array([0, 30, 0, 30, 5, 5, 40, 0], dtype=np.int64)
    used_m = np.zeros(topo.num_nodes, dtype=np.int64)
    wide = _wide(topo, used_v, used_m, VMRequest(8, 8192, vnuma=2))
    valid_extra = np.flatnonzero(wide.valid[0, len(PRIMITIVES):])
    assert valid_extra.tolist() == [0, 1]  # one set per socket, the rest invalid
    for column, socket in zip(valid_extra, (0, 1)):
        nodes = wide.placements.cpu_nodes[0, len(PRIMITIVES) + column]
        assert (topo.node_socket[nodes] == socket).all()
        members = np.flatnonzero(topo.node_socket == socket)
        free = topo.node_cores[members] - used_v[members]
        assert sorted((topo.node_cores[nodes] - used_v[nodes]).tolist()) == sorted(free)[-2:]  # the two freest


@settings(max_examples=150, **SETTINGS)
@given(cases())
def test_a_defect_only_scorer_picks_a_least_defect_candidate(case):
    topo, used_v, used_m, request, _ = case
    wide = _wide(topo, used_v, used_m, request)
    decision = Decider(AfterStateModel.linear({"defect": -1.0})).decide(topo, used_v, used_m, request)
    assert decision.defect == pytest.approx(wide.defect[0][wide.valid[0]].min(), abs=1e-6)


@pytest.mark.slow
@settings(max_examples=100, **SETTINGS)
@given(traces())
def test_a_batch_decides_each_row_as_alone(case):
    """The batched engine (many hosts at once) and the reference loop place every VM alike."""
    from catur.sim.batched import replay_batched

    topo, trace = case
    model = AfterStateModel.linear({**RESIDENT_RULE, "chosen_mem_after": 0.3, "imbalance_after": 0.1})
    alone = replay_host(topo, trace, Decider(model))
    batched = replay_batched([(topo, trace)] * 3, Decider(model), min_batch_hosts=1)
    for replay in batched:
        assert np.array_equal(replay.lifetime_defect, alone.lifetime_defect)


def test_residents_change_the_choice_and_old_requests_are_answered():
    topo = get_preset("intel-2s")
    used_v = np.array([40, 40], dtype=np.int64)  # both nodes full: a 4-vCPU VM overloads either alike
    used_m = np.zeros(2, dtype=np.int64)
    decider = Decider(AfterStateModel.linear(RESIDENT_RULE))
    old = decider.decide(topo, used_v, used_m, VMRequest(4, 1024))  # totals only, as old clients send
    assert not old.residents_used and old.policy == "catur"
    crowded_first = decider.decide(topo, used_v, used_m, VMRequest(4, 1024), residents=np.array([20, 1]))
    crowded_second = decider.decide(topo, used_v, used_m, VMRequest(4, 1024), residents=np.array([1, 20]))
    assert crowded_first.residents_used
    assert crowded_first.placement.cpu_nodes.tolist() == [1] and crowded_second.placement.cpu_nodes.tolist() == [0]
    assert len(crowded_first.scores) == len(PRIMITIVES)  # the contract's scores stay the primitives'


def test_the_shield_applies_to_every_candidate():
    topo = get_preset("intel-2s")
    used_v = np.array([70, 0], dtype=np.int64)
    used_m = np.zeros(2, dtype=np.int64)
    # A scorer that wants the most loaded node: the shield must overrule it.
    decider = Decider(AfterStateModel.linear({"chosen_cpu_after": 1.0}), ShieldConfig(depth=1))
    decision = decider.decide(topo, used_v, used_m, VMRequest(4, 1024))
    assert decision.shield_intervened and decision.placement.cpu_nodes.tolist() == [1]


def test_model_files_round_trip_and_say_their_kind(tmp_path):
    model = AfterStateModel.linear(RESIDENT_RULE, version="test-1")
    model.save(tmp_path / "m")
    loaded = load_policy(tmp_path / "m")
    assert isinstance(loaded, AfterStateModel) and loaded.version == "test-1"
    assert model_kind(loaded.manifest) == "afterstate" and model_kind(load_policy("ppo-synthetic").manifest) == "primitive"
    for (w, b), (w2, b2) in zip(model.layers, loaded.layers):
        assert np.array_equal(w, w2) and np.array_equal(b, b2)
    with pytest.raises(CaturError, match="after-state scorer, not a primitive-action model"):
        PolicyModel.load(tmp_path / "m")
    # A DeciderSpec (what evaluate and the service build) loads it by path.
    decision = DeciderSpec(str(tmp_path / "m")).build().decide(
        get_preset("intel-2s"), np.zeros(2, np.int64), np.zeros(2, np.int64), VMRequest(2, 1024)
    )
    assert decision.model_version == "test-1" and decision.policy == "catur"


def test_a_model_reads_the_features_its_manifest_names(tmp_path):
    """An older scorer (fewer features, e.g. the 12 of catur-afterstate/1's first release) still
    loads and decides as a full-width scorer with zero weights on the features it lacks."""
    rng = np.random.default_rng(3)
    full = rng.normal(size=len(FEATURES))
    older = [f for f in FEATURES if not f.startswith(("largest_free", "mem_imbalance"))]
    shuffled = list(rng.permutation(older))
    wide = AfterStateModel.linear({f: (w if f in older else 0.0) for f, w in zip(FEATURES, full)})
    w = np.array([[full[FEATURES.index(f)]] for f in shuffled], np.float32)
    narrow = AfterStateModel({**wide.manifest, "features": shuffled}, ((w, np.zeros(1, np.float32)),))
    narrow.save(tmp_path / "old")
    loaded = load_policy(tmp_path / "old")
    features = rng.normal(size=(50, 9, len(FEATURES)))
    assert np.allclose(loaded.scores(features), wide.scores(features), atol=1e-5)
    assert np.array_equal(loaded.scores(features).argmax(axis=1), wide.scores(features).argmax(axis=1))
    assert loaded.inputs(features).shape == (50, 9, len(older))


def test_bad_scorer_files_name_the_problem(tmp_path):
    AfterStateModel.linear(RESIDENT_RULE).save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({**manifest, "featurs": []}))
    with pytest.raises(CaturError, match="did you mean 'features'"):
        load_policy(tmp_path / "m")
    for bad in (["defect", "defekt"], ["defect", "defect"], []):
        (tmp_path / "m" / "manifest.json").write_text(json.dumps({**manifest, "features": bad}))
        with pytest.raises(CaturError, match="reads features"):
            load_policy(tmp_path / "m")
    # Known features, but the weights have a row per feature of the full list.
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({**manifest, "features": ["defect"]}))
    with pytest.raises(CaturError, match=rf"layer 0 has shape \({len(FEATURES)}, 1\)"):
        load_policy(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "m" / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(CaturError, match="weights.npz: not a readable weights file"):
        load_policy(tmp_path / "m")
    with pytest.raises(CaturError, match="last layer has 2 outputs, expected 1"):
        AfterStateModel(manifest, ((np.zeros((len(FEATURES), 2), np.float32), np.zeros(2, np.float32)),))
    with pytest.raises(CaturError, match="unknown after-state features"):
        AfterStateModel.linear({"defekt": -1.0})


@settings(max_examples=50, **SETTINGS)
@given(traces())
def test_resident_counts_in_the_state_never_go_negative(case):
    """Place every VM with the scorer, then release them all: counts stay >= 0 and return to zero."""
    topo, trace = case
    state = HostsState(topo, 1)
    decider = Decider(AfterStateModel.linear(RESIDENT_RULE))
    placed = []
    for i in range(trace.num_vms):
        decision = decider.decide(topo, state.used_vcpus[0], state.used_mem_mib[0], trace.request(i), residents=state.residents[0])
        apply(state, 0, decision.placement)
        placed.append(decision.placement)
        assert (state.residents >= 0).all()
    for placement in reversed(placed):
        release(state, 0, placement)
        assert (state.residents >= 0).all()
    assert not state.residents.any() and not state.used_vcpus.any()


# --- the env view ---------------------------------------------------------------------------------


def test_both_env_checkers_pass_with_the_candidate_view():
    import gymnasium
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import catur  # noqa: F401  (registers the ids)
    from catur.sim.env import CANDIDATE_SLOTS, CandidateEnv

    check_env(CandidateEnv("default", days="1:2", episode_arrivals=32), skip_render_check=True)
    sb3_check_env(CandidateEnv("default", days="1:2", episode_arrivals=32))
    env = gymnasium.make("catur/NumaPlacementCandidates-v0", workload="default", days="1:2")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (CANDIDATE_SLOTS * len(FEATURES),)
    mask = env.action_masks()
    assert mask[: len(PRIMITIVES)].all() and mask.sum() <= CANDIDATE_SLOTS
    bad = int(np.flatnonzero(~mask)[0]) if (~mask).any() else CANDIDATE_SLOTS - 1
    _, _, _, _, info = env.step(bad if not mask[bad] else 0)
    assert info["invalid_action"] == (not mask[bad])


# --- the torch export and the trainer ---------------------------------------------------------------


def test_the_numpy_scorer_decides_exactly_as_its_torch_network():
    from catur.training.afterstate import decisions_agree, torch_network

    rng = np.random.default_rng(0)
    topo = get_preset("amd-2s-nps4")
    candidates = []
    for _ in range(200):
        used_v = rng.integers(0, 40, topo.num_nodes)
        used_m = rng.integers(0, int(topo.node_mem_mib.min()), topo.num_nodes)
        request = VMRequest(int(rng.integers(1, 16)), int(rng.integers(512, 32768)))
        candidates.append(_wide(topo, used_v, used_m, request, rng.integers(0, 30, topo.num_nodes)))
    features = np.concatenate([c.features for c in candidates])
    valid = np.concatenate([c.valid for c in candidates])
    linear = AfterStateModel.linear({**RESIDENT_RULE, "chosen_mem_after": 0.2, "imbalance_after": -0.3})
    w0 = rng.normal(size=(len(FEATURES), 6)).astype(np.float32)
    hidden = AfterStateModel(linear.manifest, ((w0, np.zeros(6, np.float32)), (rng.normal(size=(6, 1)).astype(np.float32), np.zeros(1, np.float32))))
    for model in (linear, hidden):
        assert decisions_agree(model, features, valid) == 1.0
        assert len(torch_network(model)) == 2 * len(model.layers) - 1
    # And a Decider acts on exactly these scores: its choice is their argmax.
    topo2 = get_preset("intel-2s")
    used_v, used_m = np.array([20, 28], np.int64), np.array([1000, 50000], np.int64)
    wide = _wide(topo2, used_v, used_m, VMRequest(6, 4096), np.array([3, 9]))
    batch = Decider(linear).decide_batch(topo2, used_v[None], used_m[None], RequestBatch.of(topo2, VMRequest(6, 4096)),
                                         residents=np.array([[3, 9]]))
    assert batch.choice[0] == np.argmax(linear.score(wide)[0])


# One validation scenario instead of the recipe's four: the trainer's logic is the same, in a
# quarter of the replays (the suite's time budget).
ONE_VALIDATION_SET = (("amd-2s-nps4", 1.02),)


def _tiny_sources():
    from catur.training.afterstate import Source

    return [Source("adversarial", "adversarial", "16:17", "18:19", train_seed=1, val_seed=2)]


@pytest.mark.slow
def test_training_writes_a_scorer_that_beats_greedy_on_validation(tmp_path):
    """A short continuation run (from resident-greedy's weights, the warm start's own) writes a
    model that beats greedy, records each generation per source, and keeps no generation that
    is worse than its start on a source."""
    from catur.training.afterstate import ScorerTrainConfig, train_scorer

    AfterStateModel.linear(RESIDENT_RULE).save(tmp_path / "start")
    config = ScorerTrainConfig(generations=2, pairs=1, eval_every=1, scenarios_per_source=1, hosts_per_replay=3, jobs=1,
                               init_from=str(tmp_path / "start"), validation=ONE_VALIDATION_SET)
    logged: list[str] = []
    result = train_scorer(_tiny_sources(), config, tmp_path / "s", progress=False, log=logged.append)
    model = load_policy(tmp_path / "s")
    assert isinstance(model, AfterStateModel)
    gate = model.manifest["evaluation"]["gate"]
    assert not gate["loses_to_greedy"] and result.gate == gate
    assert model.manifest["export_check"]["agreement"] == 1.0
    history = model.manifest["training"]["history"]
    assert [h["generation"] for h in history] == [0, 1, 2]
    assert model.manifest["training"]["train_sets"][0].startswith("adversarial 16:17")
    kept = history[model.manifest["training"]["best_generation"]]
    assert not kept.get("regressed_sources")
    for h in history[1:]:
        versus = h["vs_start_by_source"]["adversarial"]
        assert versus["diff_low"] <= versus["diff"] <= versus["diff_high"]
        assert h["regressed_sources"] == (["adversarial"] if versus["diff_low"] > 0 else [])
        if h["regressed_sources"] and h["selection_score"] < history[0]["selection_score"]:
            assert any("not kept: clearly worse than the starting model on adversarial" in line for line in logged)


@pytest.mark.slow
def test_a_few_node_correction_moves_only_its_own_weights(tmp_path):
    """``train_features=few-nodes`` from a model: every generation keeps the starting weights of
    the base features (so 8-node decisions are unchanged) and moves the few-node copies."""
    from catur.training.afterstate import ScorerTrainConfig, expand_feature_names, train_scorer

    AfterStateModel.linear(RESIDENT_RULE).save(tmp_path / "start")
    config = ScorerTrainConfig(generations=1, pairs=1, eval_every=1, scenarios_per_source=1, hosts_per_replay=3, jobs=1,
                               init_from=str(tmp_path / "start"), clusters=("mixed",), validation=(("mixed", 1.02),),
                               train_features=expand_feature_names(["few-nodes"]), allow_worse=True)
    train_scorer(_tiny_sources(), config, tmp_path / "s", progress=False, log=lambda _: None)
    model = load_policy(tmp_path / "s")
    start = np.array([RESIDENT_RULE.get(f, 0.0) for f in FEATURES])
    corrections = np.array([f.endswith(FEW_NODE_SUFFIX) for f in FEATURES])
    history = model.manifest["training"]["history"]
    for h in history:
        np.testing.assert_allclose(np.array(h["weights"])[~corrections], start[~corrections])
    moved = np.array(history[-1]["weights"])[corrections]
    assert np.abs(moved).sum() > 0 and moved[FEW_NODE_CORRECTED.index("defect")] == 0.0  # the scale stays fixed
    assert model.manifest["training"]["train_features"] == [f + FEW_NODE_SUFFIX for f in FEW_NODE_CORRECTED]
    with pytest.raises(CaturError, match="unknown features \\['defekt'\\]"):
        ScorerTrainConfig(train_features=("defekt",))


@pytest.mark.slow
def test_a_balanced_generation_replays_one_draw_of_every_source(tmp_path, monkeypatch):
    """``balanced``: each generation's perturbed replays cover a training draw of every source
    (antithetic pairs on each), not one draw of one source."""
    from catur.training import afterstate
    from catur.training.afterstate import ScorerTrainConfig, Source, source_of, train_scorer

    generations: list[list[str]] = []
    real_map = afterstate._map

    def recording_map(pool, tasks):
        if tasks and not isinstance(tasks[0][1], str) and tasks[0][2] is not None:  # perturbed replays on sampled hosts
            # one task per draw (and pool process): its weights are the population it replays
            generations.append([afterstate._POOL_SETS[index].label for index, population, _ in tasks for _ in population])
        return real_map(pool, tasks)

    monkeypatch.setattr(afterstate, "_map", recording_map)
    sources = [*_tiny_sources(), Source("temporal-shift", "temporal-shift", "16:17", "18:19", train_seed=1, val_seed=2)]
    config = ScorerTrainConfig(generations=2, pairs=1, eval_every=2, scenarios_per_source=2, hosts_per_replay=2, jobs=1,
                               balanced=True, validation=ONE_VALIDATION_SET, allow_worse=True)
    train_scorer(sources, config, tmp_path / "s", progress=False, log=lambda _: None)
    assert len(generations) == 2
    for labels in generations:
        assert len(labels) == 2 * 2  # one pair (two replays) on each of two sources
        assert sorted({source_of(label) for label in labels}) == ["adversarial", "temporal-shift"]
    assert load_policy(tmp_path / "s").manifest["training"]["balanced"] is True


def test_train_scorer_names_an_unknown_feature(tmp_path, capsys):
    from catur.cli.main import main

    with pytest.raises(SystemExit) as stop:
        main(["train-scorer", "--out", str(tmp_path / "s"), "--train-features", "few-nodes,defekt"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "unknown features ['defekt']" in error and "few-nodes" in error


@pytest.mark.slow
def test_training_refuses_a_scorer_that_loses_to_greedy(tmp_path, monkeypatch):
    from catur.training import afterstate
    from catur.training.afterstate import ScorerTrainConfig, train_scorer

    # A start that prefers the *worst* own defect, and no generation to repair it.
    monkeypatch.setattr(afterstate, "warm_start", lambda weight: np.eye(len(FEATURES))[FEATURES.index("defect")])
    config = ScorerTrainConfig(generations=0, scenarios_per_source=1, jobs=1, validation=ONE_VALIDATION_SET)
    with pytest.raises(LosesToGreedy, match="loses to greedy on the validation windows"):
        train_scorer(_tiny_sources(), config, tmp_path / "s", progress=False, log=lambda m: None)
    assert not (tmp_path / "s").exists()


# --- served and filed like any model ------------------------------------------------------------------


def test_the_service_answers_old_and_new_requests_with_a_scorer(tmp_path):
    from _service_support import valid_request
    from catur.service import convert
    from catur.service.serving import ModelHolder
    from catur.service.servicer import PlacementServicer

    AfterStateModel.linear(RESIDENT_RULE, version="scorer-test").save(tmp_path / "m")
    servicer = PlacementServicer(ModelHolder(str(tmp_path / "m"), ShieldConfig(depth=1)))
    old = servicer.place_one(valid_request())  # no usage.residents: an old client
    assert list(old.inputs_used) == ["usage"] and old.policy == "catur" and old.model_version == "scorer-test"
    assert old.instances and len(old.scores) == len(PRIMITIVES)
    msg = valid_request()
    msg.usage.residents.extend([min(v, 3) for v in msg.usage.used_vcpus])
    new = servicer.place_one(msg)
    assert list(new.inputs_used) == ["usage", "residents"] and convert.decision_from_proto(new).residents_used


def test_the_registry_files_a_scorer_and_promote_reads_its_gate(tmp_path):
    from catur.registry import Registry
    from test_gates import losing_record

    good = AfterStateModel.linear(RESIDENT_RULE)
    good.save(tmp_path / "good")
    bad = AfterStateModel(
        {**good.manifest, "evaluation": {"gate": losing_record(allowed_worse=True)}}, good.layers
    )
    bad.save(tmp_path / "bad")
    reg = Registry(tmp_path / "reg", create=True)
    first = reg.add(tmp_path / "good", note="scorer")
    reg.promote(first.version)
    assert isinstance(load_policy(reg.current().path), AfterStateModel)
    loser = reg.add(tmp_path / "bad", note="loses")
    with pytest.raises(LosesToGreedy):
        reg.promote(loser.version)
    assert reg.current().version == first.version


def test_the_shipped_default_is_a_scorer_that_did_not_lose_to_greedy():
    from catur.verdict import recorded_comparison

    model = load_policy("default")
    assert isinstance(model, AfterStateModel)
    comparison = recorded_comparison(model.manifest)
    assert comparison is not None and not comparison.loses and comparison.hosts > 100
    assert model.manifest["export_check"]["agreement"] == 1.0
    # Selected on validation windows only: no test window (Huawei 16-31, Azure 3-4) was read.
    windows = model.manifest["evaluation"]["windows"] + model.manifest["training"]["train_sets"]
    assert not any(" 16:31 " in w or " 3:4 " in w for w in windows)


def test_a_continuation_keeps_no_weights_that_clearly_lose_a_source():
    from catur.training.afterstate import regressed_sources, source_comparisons, source_means

    labels = ["huawei 13:15 mixed oc 1.0", "huawei 13:15 mixed oc 1.02", "azure 2:2 mixed oc 1.0", "azure 2:2 mixed oc 1.02"]
    start = source_means(labels, np.array([0.80, 0.80, 0.95, 0.95]))
    assert start == pytest.approx({"huawei": 0.80, "azure": 0.95})
    rng = np.random.default_rng(0)
    vms = [rng.integers(50, 100, 30).astype(float) for _ in labels]
    start_parts = [(v * rng.uniform(0.01, 0.03, 30), v) for v in vms]

    def scaled(factors):  # every host of a set's defect sum times a factor, plus host noise of ±10%
        return [(s * f * rng.uniform(0.9, 1.1, 30), v) for (s, v), f in zip(start_parts, factors)]

    # Better on Azure, 10% worse on every Huawei host: refused, and Huawei is named.
    comparisons = source_comparisons(labels, scaled([1.10, 1.10, 0.85, 0.85]), start_parts)
    assert regressed_sources(comparisons) == ["huawei"]
    assert comparisons["huawei"].diff_low > 0 and comparisons["azure"].clearly_better
    # Half a percent worse on one Huawei set, within the hosts' noise, is no clear loss: kept.
    assert regressed_sources(source_comparisons(labels, scaled([1.005, 1.0, 0.9, 0.9]), start_parts)) == []
    # Host by host against the same start: the very start is never a loss.
    assert regressed_sources(source_comparisons(labels, start_parts, start_parts)) == []


def test_continuing_from_a_scorer_starts_from_its_weights(tmp_path):
    from catur.training.afterstate import ScorerTrainConfig, start_weights

    AfterStateModel.linear({"defect": -2.0, "resident_rise": -0.3, "cor_rise": -1.0}).save(tmp_path / "m")
    weights = start_weights(ScorerTrainConfig(init_from=str(tmp_path / "m")))
    assert weights[FEATURES.index("defect")] == -1.0 and weights[FEATURES.index("cor_rise")] == pytest.approx(-0.5)
    with pytest.raises(CaturError, match="not a one-layer after-state scorer"):
        start_weights(ScorerTrainConfig(init_from="ppo-synthetic"))


def test_a_continuation_replaces_its_start_only_when_clearly_better():
    """``why_not_kept``: clearly worse on a source refuses; with ``needs_clear_gain`` (the
    default), a gain inside the noise on every source refuses too; a clear gain on one source
    and no clear loss keeps. The Huawei-East-1 case: −0.024 points [−0.108, +0.054]."""
    from catur.training.afterstate import ScorerTrainConfig, why_not_kept
    from catur.verdict import Comparison

    def versus(low: float, high: float) -> Comparison:
        return Comparison("start", 0.01 + (low + high) / 2, 0.01, low, high, hosts=40, vms=1000)

    huawei = {"huawei": versus(-0.00108, 0.00054)}
    assert why_not_kept(huawei, needs_clear_gain=True) == "not clearly better than the starting model on any source"
    assert why_not_kept(huawei, needs_clear_gain=False) == ""
    assert why_not_kept({"a": versus(-0.002, -0.0003), "b": versus(-0.001, 0.001)}, needs_clear_gain=True) == ""
    assert why_not_kept({"a": versus(-0.002, -0.0003), "b": versus(0.0001, 0.002)}, needs_clear_gain=True) == (
        "clearly worse than the starting model on b")
    assert ScorerTrainConfig().continuation_needs_clear_gain is True
