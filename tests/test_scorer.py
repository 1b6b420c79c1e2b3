"""The decision slot (:mod:`catur.scorer`) and the population-batched evolution strategies.

What must hold, and how it is checked:

* every policy kind fills the same slot: greedy, resident-greedy, a rule version, the
  primitive-action model, the after-state scorer and a population are :class:`Scorer`\\ s, and
  a new scorer plugs into :class:`~catur.decision.Decider` with no change there;
* only the features a scorer names are computed, and each has the very value it has in the
  full table (hypothesis, many generated hosts and requests);
* the one-pass candidates of a one-instance VM (the primitives gathered from the single-node
  placements) are bit for bit the candidates built the general way;
* a :class:`~catur.afterstate.ScorerPopulation` scores every row exactly as its member's
  one-layer model does alone, a population replay gives each member exactly the sums of its
  own replay, and one ES generation gives the same fitness and weights as replaying the
  perturbations one by one (the arithmetic before the population batch).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from catur.afterstate import (
    FEATURES, AfterStateModel, ScorerPopulation, afterstate_candidates, candidate_batch, candidate_features,
)
from catur.decision import Decider
from catur.errors import CaturError
from catur.metrics import placement_costs
from catur.policy_model import RulePolicy, load_policy, rule_manifest
from catur.request import RequestBatch, VMRequest
from catur.scorer import AFTERSTATE_CANDIDATES, GREEDY, ResidentGreedy, Scorer, check_scorer
from catur.topology import get_preset

from test_properties import cases

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RESIDENT_RULE = {"defect": -1.0, "resident_rise": -0.05}


def _request_arrays(topo, request):
    return RequestBatch.of(topo, request)


def test_every_policy_kind_is_a_scorer():
    shipped = [load_policy(name) for name in ("default", "ppo-synthetic")]
    kinds = [GREEDY, ResidentGreedy(0.05), RulePolicy(rule_manifest("greedy")), *shipped,
             ScorerPopulation.of([AfterStateModel.linear(RESIDENT_RULE)], np.zeros(1))]
    for scorer in kinds:
        assert isinstance(scorer, Scorer) and check_scorer(scorer) is scorer
    with pytest.raises(CaturError, match="not a scorer .* lacks candidates, features"):
        Decider(object())
    with pytest.raises(CaturError, match="resident-greedy needs a weight > 0"):
        ResidentGreedy(0.0)


class DefectOnly:
    """A scorer from outside the package: the after-state candidates, by defect alone."""

    candidates = AFTERSTATE_CANDIDATES
    features = ("defect",)
    policy = "catur"
    version = "defect-only"
    uses_residents = False
    residents_required = False
    gate = None

    def __init__(self) -> None:
        self.tables = []

    def score(self, table, rows=None):
        self.tables.append(table)
        return np.where(table.valid, -table.features[..., 0], -np.inf)


def test_a_new_scorer_plugs_into_the_decider_and_gets_only_its_features():
    topo = get_preset("amd-2s-nps2")
    used_v, used_m = np.array([30, 10, 2, 33]), np.array([10000, 60000, 2000, 70000])
    scorer = DefectOnly()
    decision = Decider(scorer).decide(topo, used_v, used_m, VMRequest(4, 8192))
    table = scorer.tables[0]
    assert table.feature_names == ("defect",) and table.features.shape == (1, 4 + topo.num_nodes, 1)
    assert decision.model_version == "defect-only" and decision.policy == "catur"
    # The same scores as the shipped rule's: the lowest-defect candidate wins.
    assert decision.defect == table.defect[0][table.valid[0]].min()


@settings(max_examples=200, **SETTINGS)
@given(cases())
def test_named_features_are_the_full_tables_columns(case):
    """Any subset of features, in any order, has exactly the values of the full table."""
    topo, used_v, used_m, request, _ = case
    batch = _request_arrays(topo, request)
    residents = np.arange(topo.num_nodes, dtype=float)[None] % 5
    full = afterstate_candidates(topo, used_v[None], used_m[None], residents, batch.vcpus, batch.alpha, batch.beta,
                                 batch.inst_vcpus, batch.inst_mem)
    rng = np.random.default_rng(int(used_v.sum()) + request.vcpus)
    names = tuple(rng.permutation(FEATURES)[: rng.integers(1, len(FEATURES) + 1)])
    some = afterstate_candidates(topo, used_v[None], used_m[None], residents, batch.vcpus, batch.alpha, batch.beta,
                                 batch.inst_vcpus, batch.inst_mem, names)
    assert some.feature_names == names
    np.testing.assert_array_equal(some.features, full.features[..., [FEATURES.index(f) for f in names]])
    with pytest.raises(CaturError, match="unknown after-state feature 'defekt'"):
        candidate_features(topo, used_v[None], used_m[None], residents, full.placements, full.cor, full.rmr, full.defect,
                           batch.vcpus, ("defekt",))


@settings(max_examples=300, **SETTINGS)
@given(cases())
def test_one_pass_candidates_equal_the_general_build(case):
    """A one-instance VM's table (single-node placements built once, the primitives gathered
    from them) is bit for bit the general build: the primitives placed on their own, every
    column costed and featurised on its own."""
    topo, used_v, used_m, request, _ = case
    batch = _request_arrays(topo, request)
    residents = (np.arange(topo.num_nodes, dtype=float) * 3)[None]
    fast = afterstate_candidates(topo, used_v[None], used_m[None], residents, batch.vcpus, batch.alpha, batch.beta,
                                 batch.inst_vcpus, batch.inst_mem)
    placements, valid = candidate_batch(topo, used_v[None], used_m[None], batch.inst_vcpus, batch.inst_mem)
    cor, rmr, defect = placement_costs(topo.node_cores, used_v[None], placements, batch.alpha[:, None], batch.beta[:, None])
    features = candidate_features(topo, used_v[None], used_m[None], residents, placements, cor, rmr, defect, batch.vcpus)
    np.testing.assert_array_equal(fast.valid, valid)
    for mine, general in ((fast.placements.cpu_nodes, placements.cpu_nodes), (fast.placements.vcpus, placements.vcpus),
                          (fast.placements.mem_mib, placements.mem_mib), (fast.cor, cor), (fast.rmr, rmr),
                          (fast.defect, np.where(valid, defect, np.inf)), (fast.features, features)):
        np.testing.assert_array_equal(mine, general)


@settings(max_examples=100, **SETTINGS)
@given(cases())
def test_a_population_scores_each_row_as_its_member_alone(case):
    topo, used_v, used_m, request, _ = case
    batch = _request_arrays(topo, request)
    table = afterstate_candidates(topo, np.repeat(used_v[None], 3, 0), np.repeat(used_m[None], 3, 0),
                                  np.ones((3, topo.num_nodes)), *(np.repeat(a, 3, 0) for a in (
                                      batch.vcpus, batch.alpha, batch.beta, batch.inst_vcpus, batch.inst_mem)))
    rng = np.random.default_rng(request.vcpus)
    models = [AfterStateModel.linear({f: float(w) for f, w in zip(FEATURES, rng.normal(size=len(FEATURES)))})
              for _ in range(4)]
    member_of = np.array([2, 0, 3, 1, 2])  # hosts 0..4
    population = ScorerPopulation.of(models, member_of)
    rows = np.array([4, 1, 3])  # the batch's rows are hosts 4, 1 and 3
    scores = population.score(table, rows)
    for i, host in enumerate(rows):
        np.testing.assert_array_equal(scores[i], models[member_of[host]].score(table)[i])


# --- evolution strategies: one batch per generation --------------------------------------------


@pytest.fixture(scope="module")
def hosts():
    from catur.sim.admission import prepare_scenario
    from catur.sim.workload import Workload
    from catur.training.afterstate import Hosts

    df = Workload("adversarial", seed=1).read()[0]
    scenario = prepare_scenario(df, "mixed", "16:16", 0.9, 1.02)
    streams = [s for s in scenario.streams if s.counted.any()]
    return Hosts("adversarial 16:16 mixed", streams[:5])


def test_a_population_replay_gives_each_member_its_own_replay(hosts):
    from catur.training.afterstate import warm_start

    rng = np.random.default_rng(3)
    population = warm_start(0.05) + rng.normal(scale=0.5, size=(3, len(FEATURES))) * (np.arange(len(FEATURES)) % 3 == 1)
    picked = np.array([0, 2, 3, 4])
    sums, counts = hosts.replay_population(population, picked)
    assert sums.shape == (3, 4)
    for w, weights in enumerate(population):
        alone_sums, alone_counts = hosts.replay(weights, picked)
        np.testing.assert_array_equal(sums[w], alone_sums)
        np.testing.assert_array_equal(counts, alone_counts)


def test_a_generation_matches_the_perturbations_replayed_one_by_one(hosts):
    """The same rng draws, the same fitness and the same step as replaying each of the
    ``2 · pairs`` perturbations on its own (the trainer before the population batch)."""
    from catur.training import afterstate as ta

    ta._POOL_SETS[:] = [hosts]
    scales = ta.feature_scales(ta._POOL_SETS, np.random.default_rng(0))
    step = ta.EvolutionStep(2, 3, 0.3, 0.5, scales, ta.trainable(scales))
    start = ta.warm_start(0.05)
    weights, fitness = step.take(None, start, [0], np.random.default_rng(11))

    rng = np.random.default_rng(11)  # the sequential arithmetic, draw for draw
    picked = np.sort(rng.choice(len(hosts.streams), size=3, replace=False))
    eps = rng.standard_normal((2, len(FEATURES))) * step.free
    steps = eps * step.noise * step.scales
    one_by_one = [hosts.replay(start + sign * s, picked) for s in steps for sign in (1.0, -1.0)]
    expected = np.array([[r[0].sum() / r[1].sum() for r in one_by_one]])
    np.testing.assert_array_equal(fitness, expected)
    shaped = ta.centred_ranks(expected[0]).reshape(2, 2)
    gradient = ((shaped[:, 0] - shaped[:, 1])[:, None] * eps).mean(axis=0)
    np.testing.assert_array_equal(weights, start - step.learning_rate * gradient * step.noise * step.scales)
