"""Offline evaluation: parallel replay, the greedy policy, the k-step oracle and the JSON report.

The oracle scenarios are tiny hand-built hosts (2 nodes × 4 cores × 4 GiB) whose every
placement can be followed on paper; the invariants (greedy never worse than a primitive,
oracle with k = 1 is greedy) are checked on hypothesis-generated states and traces.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _service_support import random_trace as shared_random_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.errors import CaturError
from catur.metrics import MetricsConfig, defect_at_placement
from catur.placement import GREEDY, greedy_place, primitive_placements
from catur.policies import POLICIES, PRIMITIVES
from catur.request import VMRequest
from catur.sim.admission import SECONDS_PER_DAY, admit, host_streams, parse_days
from catur.sim.cluster import load_cluster
from catur.sim.evaluate import (
    Evaluation,
    admission_summary,
    check_policy_name,
    evaluate_policies,
)
from catur.sim.oracle import Lookahead, lookahead_costs, lookahead_events, oracle_place
from catur.sim.replay import ORACLE, HostTrace, replay_host
from catur.state import HostsState, apply, release
from catur.topology import PRESETS, Topology

NAN = float("nan")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUMMARY_KEYS = {"avg_defect", "defect_at_placement", "p99_defect", "ticket_ratio", "anomalies", "vms"}

# 2 nodes on 2 sockets, 4 cores and 4 GiB each: small enough to follow every decision by hand.
T2 = Topology("t2", [4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 10]])


def random_trace(seed: int, n: int = 500, days: float = 4.0) -> pd.DataFrame:
    return shared_random_trace(seed, n, days, mean_life_days=0.5)


@pytest.fixture(scope="module")
def streams():
    """Host streams of days 2-4 of a 500-VM trace on an auto-sized mixed cluster (a few hosts)."""
    df = random_trace(11)
    admission = admit(df, load_cluster("mixed"), 0.95)
    streams = host_streams(df, admission, *parse_days("2:4", df))
    assert len(streams) >= 3
    return streams


# --- parallel replay ----------------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_do_not_change_the_numbers(streams):
    """evaluate_policies gives identical per-VM defects and summaries with jobs=1 and jobs=2, random policy and correctable counts included."""
    policies = ["xen", GREEDY, "random", "core-best-fit"]
    kwargs = dict(seed=3, count_correctable=True, oracle_k=2)
    one = evaluate_policies(streams, policies, jobs=1, **kwargs)
    two = evaluate_policies(streams, policies, jobs=2, **kwargs)
    assert list(one) == list(two) == policies
    for name in policies:
        a, b = one[name], two[name]
        assert a.summary == b.summary
        assert np.array_equal(a.rows, b.rows)
        assert np.array_equal(a.lifetime_defect, b.lifetime_defect)
        assert np.array_equal(a.placement_defect, b.placement_defect)
        assert a.extra == b.extra
        assert (np.diff(a.rows) > 0).all()  # merged back in trace-row order


def test_results_cover_the_counted_vms(streams):
    """Each policy reports exactly the window's counted VMs, and progress counts every replayed VM."""
    done: list[int] = []
    results = evaluate_policies(streams, ["xen", "core-most-idle"], jobs=1, progress=done.append)
    counted = np.sort(np.concatenate([s.rows[s.counted] for s in streams]))
    for result in results.values():
        assert result.rows.tolist() == counted.tolist()
        assert result.summary.vms == counted.size
    assert sum(done) == 2 * sum(s.trace.num_vms for s in streams)


def test_same_seed_same_random_results(streams):
    """The random policy is reproducible for a seed and differs for another."""
    a = evaluate_policies(streams, ["random"], jobs=1, seed=1)["random"]
    b = evaluate_policies(streams, ["random"], jobs=1, seed=1)["random"]
    c = evaluate_policies(streams, ["random"], jobs=1, seed=2)["random"]
    assert np.array_equal(a.placement_defect, b.placement_defect)
    assert not np.array_equal(a.lifetime_defect, c.lifetime_defect)


def test_nothing_to_evaluate():
    """An empty list of host streams is refused."""
    with pytest.raises(CaturError, match="nothing to evaluate"):
        evaluate_policies([], ["xen"], jobs=1)


# --- greedy -------------------------------------------------------------------------------------


@st.composite
def host_states(draw):
    """A topology (preset or T2), a usage from empty to overloaded, and a request."""
    topology = draw(st.sampled_from([T2, *PRESETS.values()]))
    load = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.5]))
    used_v = np.array([draw(st.integers(0, int(load * c))) for c in topology.node_cores], dtype=np.int64)
    used_m = np.array(
        [draw(st.integers(0, int(min(load, 1.0) * m))) for m in topology.node_mem_mib], dtype=np.int64
    )
    total_cores = int(topology.total_cores)
    vcpus = draw(st.integers(1, total_cores + 8))
    mem = draw(st.integers(1, int(topology.total_mem_mib)))
    alpha = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    beta = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    return topology, used_v, used_m, VMRequest(vcpus, mem, alpha, beta)


@settings(max_examples=300, **SETTINGS)
@given(host_states())
def test_greedy_never_worse_than_a_primitive(state):
    """greedy's defect at placement is the smallest of the four primitives' from the same state."""
    topology, used_v, used_m, request = state
    before = (used_v.copy(), used_m.copy())
    chosen = greedy_place(topology, used_v, used_m, request)
    assert chosen.policy == GREEDY
    mine = defect_at_placement(topology.node_cores, used_v, chosen, request.alpha, request.beta)
    others = {
        name: defect_at_placement(topology.node_cores, used_v, p, request.alpha, request.beta)
        for name, p in primitive_placements(topology, used_v, used_m, request).items()
    }
    assert set(others) == set(PRIMITIVES)
    for name, value in others.items():
        assert mine <= value, f"greedy {mine} > {name} {value}"
    assert mine == min(others.values())
    assert np.array_equal(used_v, before[0]) and np.array_equal(used_m, before[1])  # pure


def test_greedy_ties_go_to_the_first_primitive():
    """On an empty host every primitive is perfect; greedy then takes core-best-fit's choice."""
    request = VMRequest(2, 1024)
    chosen = greedy_place(T2, np.zeros(2, np.int64), np.zeros(2, np.int64), request)
    first = primitive_placements(T2, np.zeros(2, np.int64), np.zeros(2, np.int64), request)[PRIMITIVES[0]]
    assert chosen.cpu_nodes.tolist() == first.cpu_nodes.tolist()
    assert np.array_equal(chosen.mem_mib, first.mem_mib)


# --- the k-step oracle --------------------------------------------------------------------------


def host_trace(vms: list[tuple[float, float, int, int]]) -> HostTrace:
    """A host trace from ``(arrival_s, departure_s, vcpus, mem_mib)`` per VM."""
    arrival, departure, vcpus, mem = (np.array(c) for c in zip(*vms))
    return HostTrace(arrival.astype(float), departure.astype(float), vcpus, mem)


def cpu_nodes(replay) -> list[int]:
    return [int(p.cpu_nodes[0]) for p in replay.placements]


# VM 0 takes node 0 (3 of its 4 GiB). core-best-fit then packs VM 1 onto node 0 too (its 2 free
# cores fit exactly), where only 1 GiB of VM 1's 2 GiB is free: RMR 0.5, an anomaly. Node 1
# would have held VM 1 entirely.
AVOIDABLE = [(0.0, NAN, 2, 3072), (1.0, NAN, 2, 2048), (2.0, NAN, 1, 1024)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_oracle_avoids_core_best_fit_anomaly_and_marks_it_correctable(k: int):
    """core-best-fit's RMR anomaly on VM 1 is avoided by the oracle and counted as correctable."""
    trace = host_trace(AVOIDABLE)
    packed = replay_host(T2, trace, "core-best-fit", correctable_above=0.4, oracle_k=k)
    assert cpu_nodes(packed) == [0, 0, 1]
    assert packed.placement_defect.tolist() == [0.0, 0.5, 0.0]
    assert packed.correctable.tolist() == [False, True, False]
    oracle = replay_host(T2, trace, ORACLE, oracle_k=k)
    assert cpu_nodes(oracle) == [0, 1, 0]
    assert (oracle.placement_defect <= 0.4).all()
    assert oracle.placement_defect.sum() == 0.0
    assert all(p.policy == ORACLE for p in oracle.placements)


# VM 0 (2 vCPUs) takes node 0. Greedy puts VM 1 (3 vCPUs) on node 1 at no cost, and then the
# 4-vCPU VM 2 overloads either node: 6 vCPUs on node 0's 4 cores, COR 0.5, an anomaly. Looking
# one arrival ahead, the oracle accepts COR 0.25 for VM 1 on node 0, leaving node 1 free for VM 2.
NEEDS_LOOKAHEAD = [(0.0, NAN, 2, 1024), (1.0, NAN, 3, 1024), (2.0, NAN, 4, 1024)]


def test_lookahead_beats_greedy():
    """With k >= 2 the oracle takes a small defect now to avoid the anomaly greedy cannot avoid later."""
    trace = host_trace(NEEDS_LOOKAHEAD)
    greedy = replay_host(T2, trace, GREEDY, correctable_above=0.4, oracle_k=2)
    assert cpu_nodes(greedy) == [0, 1, 0]
    assert greedy.placement_defect.tolist() == [0.0, 0.0, 0.5]
    # From the state greedy left, no choice for VM 2 is <= 0.4: not correctable there.
    assert not greedy.correctable.any()
    assert replay_host(T2, trace, ORACLE, oracle_k=1).placement_defect.tolist() == [0.0, 0.0, 0.5]
    for k in (2, 3, 5):
        oracle = replay_host(T2, trace, ORACLE, oracle_k=k)
        assert cpu_nodes(oracle) == [0, 0, 1]
        assert oracle.placement_defect.tolist() == [0.0, 0.25, 0.0]


def test_oracle_sees_departures_inside_its_lookahead():
    """When VM 0 leaves before VM 2 arrives, the oracle knows node 0 frees up and pays nothing."""
    vms = [(0.0, 1.5, 2, 1024), (1.0, NAN, 3, 1024), (2.0, NAN, 4, 1024)]
    oracle = replay_host(T2, host_trace(vms), ORACLE, oracle_k=2)
    assert cpu_nodes(oracle) == [0, 1, 0]
    assert oracle.placement_defect.tolist() == [0.0, 0.0, 0.0]


def test_oracle_k_must_be_positive():
    """An oracle look-ahead below 1 is refused, naming it."""
    with pytest.raises(CaturError, match="k must be >= 1, got 0"):
        replay_host(T2, host_trace(AVOIDABLE), ORACLE, oracle_k=0)


@st.composite
def host_traces(draw):
    """Up to 25 VMs on a coarse clock, sized from tiny to more than a node, some leaving."""
    topology = draw(st.sampled_from([T2, PRESETS["intel-2s"], PRESETS["amd-2s-nps2"]]))
    n = draw(st.integers(1, 25))
    cores = int(topology.node_cores[0])
    mem = int(topology.node_mem_mib[0])
    vms = []
    for _ in range(n):
        arrival = draw(st.integers(0, 20))
        life = draw(st.one_of(st.none(), st.integers(0, 15)))
        vms.append(
            (
                float(arrival),
                NAN if life is None else float(arrival + life),
                draw(st.integers(1, cores + cores // 2)),
                draw(st.integers(1, mem + mem // 2)),
            )
        )
    vms.sort(key=lambda v: v[0])
    alpha = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=n, max_size=n))
    arrival, departure, vcpus, mem_mib = (np.array(c) for c in zip(*vms))
    return topology, HostTrace(arrival, departure, vcpus, mem_mib, alpha=alpha)


@pytest.mark.slow
@settings(max_examples=120, **SETTINGS)
@given(host_traces())
def test_oracle_with_k1_is_greedy(case):
    """The oracle with k = 1 makes greedy's decisions, VM for VM, on generated host traces."""
    topology, trace = case
    greedy = replay_host(topology, trace, GREEDY)
    oracle = replay_host(topology, trace, ORACLE, oracle_k=1)
    for g, o in zip(greedy.placements, oracle.placements):
        assert g.cpu_nodes.tolist() == o.cpu_nodes.tolist()
        assert np.array_equal(g.mem_mib, o.mem_mib)
    assert np.array_equal(greedy.placement_defect, oracle.placement_defect)
    assert np.array_equal(greedy.lifetime_defect, oracle.lifetime_defect)


@settings(max_examples=60, **SETTINGS)
@given(host_traces())
def test_correctable_anomalies_are_anomalies(case):
    """Only anomalies can be correctable, and with k = 1 every anomaly greedy would avoid is."""
    topology, trace = case
    replay = replay_host(topology, trace, "core-most-idle", correctable_above=0.4, oracle_k=1)
    assert not (replay.correctable & (replay.placement_defect <= 0.4)).any()
    # Rebuild the host's state at each arrival and ask greedy (the 1-step oracle) directly.
    state = HostsState(topology, 1)
    for _, kind, vm in trace.events():
        placement = replay.placements[vm]
        if kind == 1:
            if replay.placement_defect[vm] > 0.4:
                request = trace.request(vm)
                better = greedy_place(topology, state.used_vcpus[0], state.used_mem_mib[0], request)
                value = defect_at_placement(
                    topology.node_cores, state.used_vcpus[0], better, request.alpha, request.beta
                )
                assert replay.correctable[vm] == (value <= 0.4)
            apply(state, 0, placement)
        else:
            release(state, 0, placement)


# --- the oracle's value of each action (what the oracle warm start teaches) ---------------------


def test_lookahead_costs_on_the_hand_case():
    """After VM 0 takes node 0, putting VM 1 on node 1 costs VM 2 an anomaly (0.5 in total),
    putting it on node 0 costs 0.25: each primitive gets the cost of where it puts VM 1."""
    trace = host_trace(NEEDS_LOOKAHEAD)
    used_vcpus, used_mem = np.array([2, 0]), np.array([1024, 0])
    look = Lookahead([(True, 1), (True, 2)], [trace.request(i) for i in range(3)], {})
    costs = lookahead_costs(T2, used_vcpus, used_mem, look)
    nodes = [int(p.cpu_nodes[0]) for p in primitive_placements(T2, used_vcpus, used_mem, trace.request(1)).values()]
    assert set(nodes) == {0, 1}  # the primitives disagree here, so both values appear
    assert costs.tolist() == [0.25 if node == 0 else 0.5 for node in nodes]
    assert int(oracle_place(T2, used_vcpus, used_mem, look).cpu_nodes[0]) == 0


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(host_traces(), st.integers(1, 4))
def test_lookahead_costs_agree_with_the_oracle(case, k):
    """On generated host traces, at every arrival of a greedy replay: with k = 1 the costs are
    each primitive's own defect; for any k the oracle places the VM where the least-cost
    primitive (ties: smaller own defect, then listed first) does, and costs never fall below
    the k = 1 costs (later arrivals only add defect)."""
    topology, trace = case
    replay = replay_host(topology, trace, GREEDY)
    events = trace.events()
    requests = [trace.request(i) for i in range(trace.num_vms)]
    state, live = HostsState(topology, 1), {}
    for pos, (_, kind, vm) in enumerate(events):
        placement = replay.placements[vm]
        if kind == 0:
            release(state, 0, placement)
            live.pop(vm)
            continue
        used_vcpus, used_mem = state.used_vcpus[0], state.used_mem_mib[0]
        options = primitive_placements(topology, used_vcpus, used_mem, requests[vm])
        own = np.array([defect_at_placement(topology.node_cores, used_vcpus, p, requests[vm].alpha, requests[vm].beta) for p in options.values()])
        one = lookahead_costs(topology, used_vcpus, used_mem, Lookahead(lookahead_events(events, pos, 1), requests, live))
        assert np.array_equal(one, own)
        look = Lookahead(lookahead_events(events, pos, k), requests, live)
        costs = lookahead_costs(topology, used_vcpus, used_mem, look)
        assert (costs >= own - 1e-12).all()
        best = list(options.values())[int(np.lexsort((np.arange(len(costs)), own, costs))[0])]
        chosen = oracle_place(topology, used_vcpus, used_mem, look)
        assert chosen.cpu_nodes.tolist() == best.cpu_nodes.tolist() and np.array_equal(chosen.mem_mib, best.mem_mib)
        apply(state, 0, placement)
        live[vm] = placement


# --- policy names -------------------------------------------------------------------------------


def test_unknown_policy_lists_valid_names(streams):
    """An unknown policy name is refused before any work, listing every valid name."""
    with pytest.raises(CaturError) as err:
        evaluate_policies(streams, ["xen", "no-such-policy"], jobs=2)
    message = str(err.value)
    assert "no-such-policy" in message
    for name in [*POLICIES, GREEDY, ORACLE]:
        assert name in message


def test_check_policy_name():
    """check_policy_name accepts every policy, greedy and oracle; refuses others naming them."""
    for name in [*POLICIES, GREEDY, ORACLE]:
        check_policy_name(name)
    with pytest.raises(CaturError, match="'Xen'"):
        check_policy_name("Xen")


def test_replay_host_unknown_policy():
    """replay_host refuses an unknown policy name, naming it and listing the valid ones."""
    with pytest.raises(CaturError) as err:
        replay_host(T2, host_trace(AVOIDABLE), "best")
    assert "'best'" in str(err.value) and "core-best-fit" in str(err.value) and GREEDY in str(err.value)


# --- the report's JSON --------------------------------------------------------------------------


def test_evaluation_json_shape(streams):
    """Evaluation.to_json() is {"scenario": {...}, "policies": {NAME: {summary keys, extras}}} and is JSON-serialisable."""
    results = evaluate_policies(streams, ["xen", GREEDY], jobs=1, config=MetricsConfig(0.3))
    results[GREEDY].extra["correctable_anomalies"] = 2
    scenario = {"trace": "t", "anomaly_threshold": 0.3}
    data = Evaluation(scenario, results).to_json()
    assert set(data) == {"scenario", "policies"}
    assert data["scenario"] == scenario
    assert list(data["policies"]) == ["xen", GREEDY]
    assert set(data["policies"]["xen"]) == SUMMARY_KEYS
    assert set(data["policies"][GREEDY]) == SUMMARY_KEYS | {"correctable_anomalies"}
    entry = data["policies"]["xen"]
    assert isinstance(entry["anomalies"], int) and isinstance(entry["vms"], int)
    for key in ("avg_defect", "defect_at_placement", "p99_defect", "ticket_ratio"):
        assert isinstance(entry[key], float) and 0.0 <= entry[key]
    assert entry["vms"] == results["xen"].summary.vms
    assert entry["anomalies"] == int((results["xen"].placement_defect > 0.3).sum())
    assert json.loads(json.dumps(data)) == data


def test_per_day_table(streams):
    """per_day() gives one row per policy and arrival day, VM counts adding up to the summary."""
    df = random_trace(11)
    results = evaluate_policies(streams, ["xen", GREEDY], jobs=1)
    origin, _ = parse_days(None, df)
    daily = Evaluation({"anomaly_threshold": 0.4}, results).per_day(df, origin)
    assert set(daily["policy"]) == {"xen", GREEDY}
    assert set(daily["day"]) <= {2, 3, 4}
    for name, result in results.items():
        part = daily[daily["policy"] == name]
        assert part["vms"].sum() == result.summary.vms
        assert part["anomalies"].sum() == result.summary.anomalies


def test_admission_summary():
    """admission_summary counts hosts per topology and rejected VMs."""
    df = random_trace(12, n=100)
    admission = admit(df, load_cluster("mixed"), 0.9)
    summary = admission_summary(admission)
    assert summary["hosts"] == admission.num_hosts == sum(summary["hosts_by_topology"].values())
    assert set(summary["hosts_by_topology"]) == {"intel-2s", "amd-2s-nps2"}
    assert summary["rejected_vms"] == admission.rejected
