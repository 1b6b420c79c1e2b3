"""Resident counts in the host state and the ``resident-greedy`` rule (catur.resident).

Invariants over generated hosts and VM sequences: resident counts never go negative, placing
then releasing a VM restores them, and they always equal the number of live VMs bound to each
node. The rule is greedy when there are no residents (or λ = 0), the replay engines agree on
it, and it is what the Decider (the service's path) decides.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError
from catur.placement import greedy_place, place
from catur.policies import POLICIES
from catur.request import VMRequest
from catur.resident import (
    RESIDENT_GREEDY,
    AgeWeights,
    fit_age_weights,
    resident_greedy_place,
    resident_penalty,
)
from catur.sim.replay import HostTrace, replay_host
from catur.state import HostsState, PlacementBatch, apply, release
from catur.topology import get_preset

from _strategies import topologies as topologies_strategy
from test_properties import requests, traces, usages

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
topologies = topologies_strategy()


def _bound_count(placements, num_nodes):
    out = np.zeros(num_nodes, dtype=np.int64)
    for p in placements:
        out[p.cpu_nodes] += 1
    return out


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_resident_counts_follow_the_live_vms_and_never_go_negative(data):
    """Place and release VMs in any interleaving: counts never negative, always = live VMs bound per node."""
    topo = data.draw(topologies)
    name = data.draw(st.sampled_from(list(POLICIES)))
    reqs = data.draw(st.lists(requests(topo), min_size=1, max_size=8))
    state = HostsState(topo, 1)
    rng = np.random.default_rng(0)
    live = []
    for req in reqs:
        before = state.copy()
        p = place(topo, state.used_vcpus[0], state.used_mem_mib[0], req, name, rng)
        apply(state, 0, p)
        live.append(p)
        assert (state.residents >= 0).all()
        assert np.array_equal(state.residents[0], _bound_count(live, topo.num_nodes))
        if data.draw(st.booleans()):  # release it at once: exactly the state before
            release(state, 0, p)
            live.pop()
            assert state == before
    for i in data.draw(st.permutations(range(len(live)))):
        release(state, 0, live[i])
        assert (state.residents >= 0).all()
    assert state == HostsState(topo, 1)


def test_releasing_twice_is_refused_and_leaves_the_counts():
    topo = get_preset("intel-2s")
    state = HostsState(topo, 1)
    p = greedy_place(topo, state.used_vcpus[0], state.used_mem_mib[0], VMRequest(2, 1024))
    apply(state, 0, p)
    release(state, 0, p)
    with pytest.raises(CaturError, match="negative"):
        release(state, 0, p)
    assert (state.residents == 0).all()


def test_from_usage_checks_the_resident_counts():
    topo = get_preset("intel-2s")
    state = HostsState.from_usage(topo, [4, 0], [1024, 0], [3, 0])
    assert state.residents.tolist() == [[3, 0]]
    with pytest.raises(CaturError, match="residents"):
        HostsState.from_usage(topo, [4, 0], [1024, 0], [-1, 0])
    with pytest.raises(CaturError, match="residents"):
        HostsState.from_usage(topo, [4, 0], [1024, 0], [1, 0, 0])


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_without_residents_the_rule_is_greedy(data):
    """No residents, or λ = 0: resident-greedy places exactly as greedy does."""
    topo = data.draw(topologies)
    used_v, used_m = data.draw(usages(topo))
    req = data.draw(requests(topo))
    g = greedy_place(topo, used_v, used_m, req)
    zero = resident_greedy_place(topo, used_v, used_m, req, residents=np.zeros(topo.num_nodes))
    unweighted = resident_greedy_place(topo, used_v, used_m, req, residents=np.full(topo.num_nodes, 5), weight=0.0)
    assert g.to_dict() | {"policy": ""} == zero.to_dict() | {"policy": ""} == unweighted.to_dict() | {"policy": ""}


@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_the_penalty_counts_residents_times_cor_rise(data):
    """The penalty is never negative, and zero on nodes the VM does not overload further."""
    topo = data.draw(topologies)
    used_v, used_m = data.draw(usages(topo))
    req = data.draw(requests(topo))
    counts = np.array(data.draw(st.lists(st.integers(0, 30), min_size=topo.num_nodes, max_size=topo.num_nodes)))
    p = greedy_place(topo, used_v, used_m, req)
    batch = PlacementBatch(p.cpu_nodes[None, None], p.vcpus[None, None], p.mem_mib[None, None])
    penalty = float(resident_penalty(topo.node_cores, used_v[None], counts[None], batch)[0, 0])
    assert penalty >= 0
    after = used_v + p.node_vcpus(topo.num_nodes)
    rise = np.clip((after - topo.node_cores) / topo.node_cores, 0, 1) - np.clip((used_v - topo.node_cores) / topo.node_cores, 0, 1)
    assert np.isclose(penalty, float(rise @ counts))


def test_the_rule_avoids_the_crowded_node():
    """Two nodes, equally overloaded by the new VM; one holds many VMs, the other one: go to the lonely one."""
    topo = get_preset("intel-2s")
    cores = int(topo.node_cores[0])
    used_v = np.array([cores, cores])  # both nodes exactly full: any vCPU overloads either
    used_m = np.array([1024, 0])  # so mem-most-idle goes to node 1 and mem-best-fit to node 0
    req = VMRequest(2, 1024)
    crowded_first = np.array([20, 1])
    p = resident_greedy_place(topo, used_v, used_m, req, residents=crowded_first, weight=0.05)
    assert p.cpu_nodes.tolist() == [1]
    p = resident_greedy_place(topo, used_v, used_m, req, residents=crowded_first[::-1].copy(), weight=0.05)
    assert p.cpu_nodes.tolist() == [0]


@settings(max_examples=100, **SETTINGS)
@given(traces())
def test_the_named_policy_and_the_decider_agree(case):
    """'resident-greedy' by name (replay's own rule) and a Decider with the same λ place every VM alike."""
    topo, trace = case
    by_name = replay_host(topo, trace, RESIDENT_GREEDY)
    from catur.resident import DEFAULT_WEIGHT

    by_decider = replay_host(topo, trace, DeciderSpec(resident_weight=DEFAULT_WEIGHT))
    assert [p.to_dict()["instances"] for p in by_name.placements] == [p.to_dict()["instances"] for p in by_decider.placements]
    assert np.array_equal(by_name.lifetime_defect, by_decider.lifetime_defect)


def test_decider_says_whether_residents_were_used():
    topo = get_preset("amd-2s-nps2")
    used_v = np.zeros(topo.num_nodes, dtype=np.int64)
    used_m = np.zeros(topo.num_nodes, dtype=np.int64)
    rule = Decider(resident_weight=0.03)
    assert rule.policy_name == RESIDENT_GREEDY
    old = rule.decide(topo, used_v, used_m, VMRequest(2, 2048))  # an old-style request: totals only
    assert not old.residents_used and old.policy == "greedy"
    new = rule.decide(topo, used_v, used_m, VMRequest(2, 2048), residents=np.zeros(topo.num_nodes, dtype=np.int64))
    assert new.residents_used and new.policy == RESIDENT_GREEDY
    assert not Decider().decide(topo, used_v, used_m, VMRequest(2, 2048), residents=np.ones(topo.num_nodes)).residents_used
    with pytest.raises(CaturError, match="resident weight"):
        Decider(resident_weight=-1)


def test_age_weights_fall_with_age_and_refuse_bad_edges():
    rng = np.random.default_rng(0)
    arrival = rng.uniform(0, 86400 * 10, 5000)
    life = rng.pareto(1.5, 5000) * 3600 + 60
    weights = fit_age_weights(arrival, arrival + life, end_s=float((arrival + life).max()))
    w = weights(np.array([0.0, 1e3, 1e4, 1e5, 1e6]))
    assert ((w >= 0) & (w <= 1)).all() and w[0] > 0.5
    with pytest.raises(CaturError, match="ascending"):
        AgeWeights((10.0, 5.0), (1.0, 1.0, 1.0))
    with pytest.raises(CaturError, match="weights"):
        AgeWeights((10.0,), (1.0,))
    with pytest.raises(CaturError, match="no VM"):
        fit_age_weights(np.array([1.0]), np.array([1.0]), 1.0)


def test_an_aged_decider_gets_the_live_vms_ages():
    """A replay callable with ``uses_ages`` sees every live VM's nodes and age."""
    topo = get_preset("intel-2s")
    seen = []

    def decide(topology, used_vcpus, used_mem_mib, request, rng=None, resident_ages=None):
        nodes, ages = resident_ages
        seen.append(ages.tolist())
        return greedy_place(topology, used_vcpus, used_mem_mib, request)

    decide.uses_ages = True
    trace = HostTrace(np.array([0.0, 10.0, 30.0]), np.array([100.0, 20.0, np.nan]), np.array([1, 1, 1]), np.array([512, 512, 512]))
    replay_host(topo, trace, decide)
    assert seen == [[], [10.0], [30.0]]


def test_aged_rule_with_unit_weights_is_the_counted_rule():
    """Every age weighing 1: the aged rule places exactly as resident-greedy does."""
    from catur.resident import DEFAULT_WEIGHT, AgedResidentGreedy

    rng = np.random.default_rng(4)
    n = 40
    arrival = np.sort(rng.uniform(0, 5000, n))
    trace = HostTrace(arrival, arrival + rng.uniform(10, 3000, n), rng.integers(1, 12, n), rng.integers(512, 16384, n))
    topo = get_preset("amd-2s-nps2")
    aged = replay_host(topo, trace, AgedResidentGreedy(AgeWeights((), (1.0,)), DEFAULT_WEIGHT))
    counted = replay_host(topo, trace, RESIDENT_GREEDY)
    assert np.array_equal(aged.lifetime_defect, counted.lifetime_defect)


def test_the_arrivals_only_oracle_is_a_known_policy():
    from catur.sim.replay import ORACLE_ARRIVALS

    topo = get_preset("intel-2s")
    trace = HostTrace(np.array([0.0, 1.0, 2.0]), np.array([1.5, np.nan, np.nan]), np.array([4, 30, 8]), np.array([1024, 2048, 1024]))
    out = replay_host(topo, trace, ORACLE_ARRIVALS, oracle_k=3)
    assert all(p is not None for p in out.placements)
