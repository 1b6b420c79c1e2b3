"""The lifetime oracle's arithmetic: what it predicts a candidate costs is what the replay measures.

:func:`catur.sim.oracle.lifetime_costs` says, for each candidate placement of the VM in hand,
how much lifetime defect the host's VMs will still accrue if nothing else arrives. On a host
whose VMs all arrive at one instant and then only leave, "nothing else arrives" is true for
the last arrival, so its predicted cost must equal the replay's total lifetime defect (less
the remote-memory part of the VMs placed before, fixed by then): one check of the segment
integrals, the departure bookkeeping and the weights together, on many generated hosts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.request import VMRequest
from catur.sim.oracle import LiveVMs, lifetime_costs
from catur.sim.replay import ORACLE_LIFETIME, HostTrace, replay_host
from catur.state import Placement
from catur.topology import get_preset

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def burst_hosts(draw):
    """A host whose VMs all arrive at t = 0, then leave at drawn times (some stay to the end)."""
    topo = get_preset(draw(st.sampled_from(["intel-2s", "amd-2s-nps2", "amd-2s-nps4"])))
    n = draw(st.integers(1, 12))
    vcpus = np.array(draw(st.lists(st.integers(1, 24), min_size=n, max_size=n)))
    mem = np.array(draw(st.lists(st.integers(256, 65536), min_size=n, max_size=n)))
    stay = draw(st.lists(st.floats(1.0, 1000.0), min_size=n, max_size=n))
    forever = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    departure = np.array([np.nan if f else s for s, f in zip(stay, forever)])
    alpha = np.array(draw(st.lists(st.floats(0.5, 2.0), min_size=n, max_size=n)))
    trace = HostTrace(np.zeros(n), departure, vcpus, mem, alpha, np.ones(n), np.zeros(n, dtype=np.int64), end_s=1200.0)
    return topo, trace


@settings(max_examples=60, **SETTINGS)
@given(burst_hosts())
def test_the_predicted_cost_of_the_last_arrival_is_what_the_replay_measures(case):
    topo, trace = case
    out = replay_host(topo, trace, ORACLE_LIFETIME)
    assert all(p is not None for p in out.placements)  # every VM placed exactly once
    last = trace.num_vms - 1
    earlier = out.placements[:last]
    used_v = sum((p.node_vcpus(topo.num_nodes) for p in earlier), np.zeros(topo.num_nodes, np.int64))
    used_m = sum((p.node_mem_mib() for p in earlier), np.zeros(topo.num_nodes, np.int64))
    leaves = np.where(np.isnan(trace.departure_s), trace.end_s, trace.departure_s)
    live = LiveVMs(
        np.array([p.node_vcpus(topo.num_nodes) for p in earlier], dtype=float).reshape(last, topo.num_nodes),
        leaves[:last], trace.alpha[:last] / (trace.vcpus[:last] * leaves[:last]),
    )
    request = VMRequest(int(trace.vcpus[last]), int(trace.mem_mib[last]), alpha=float(trace.alpha[last]), beta=1.0)
    wide, cost = lifetime_costs(topo, used_v, used_m, request, 0.0, float(leaves[last]), float(leaves[last]), live)
    # The replay chose the least-cost candidate, and the metric is that cost plus what is fixed.
    fixed = float(sum(trace.beta[i] * out.rmr[i] for i in range(last)))
    assert out.lifetime_defect.sum() == pytest.approx(fixed + cost.min(), rel=1e-9, abs=1e-12)
    chosen = out.placements[last]
    for c in np.flatnonzero(np.isfinite(cost)):
        p = wide.placements.placement((0, int(c)))
        if np.array_equal(p.cpu_nodes, chosen.cpu_nodes) and np.array_equal(p.mem_mib, chosen.mem_mib):
            assert cost[c] == pytest.approx(cost.min(), rel=1e-12, abs=1e-15)


def test_it_weighs_the_residents_lifetimes():
    """Two equally loaded nodes, one whose residents stay long and one whose residents leave
    soon: overloading either hurts the new VM alike, but only the short-lived side spares the
    residents. Greedy cannot tell the nodes apart; the lifetime oracle can."""
    topo = get_preset("intel-2s")
    cores = int(topo.node_cores[0])
    # VM 0 on node 0 stays to the end, VM 1 on node 1 leaves at t = 10; both fill their node.
    used_v = np.array([cores, cores], np.int64)
    used_m = np.zeros(2, np.int64)
    live = LiveVMs(np.array([[cores, 0], [0, cores]], float), np.array([1000.0, 10.0]), np.array([1 / (cores * 1000.0)] * 2))
    wide, cost = lifetime_costs(topo, used_v, used_m, VMRequest(4, 1024), 0.0, 1000.0, 1000.0, live)
    node = {name: i for i, name in enumerate(wide.names)}
    assert cost[node["node-1"]] < cost[node["node-0"]]
    assert np.isinf(cost[~wide.valid[0]]).all()
    placement = Placement(np.array([1]), np.array([4]), np.array([[0, 1024]]))
    assert wide.placements.placement((0, node["node-1"])).cpu_nodes.tolist() == placement.cpu_nodes.tolist()


# --- the foresight oracle: lifetimes and the next arrivals -------------------------------------------


@st.composite
def staggered_hosts(draw):
    """A host whose VMs arrive one by one (strictly increasing times) and leave at drawn times;
    some leave as they arrive, some stay to the end."""
    topo = get_preset(draw(st.sampled_from(["intel-2s", "amd-2s-nps2", "amd-2s-nps4"])))
    n = draw(st.integers(1, 7))
    arrival = np.cumsum(draw(st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n)))
    kind = draw(st.lists(st.sampled_from(["stays", "leaves", "instant"]), min_size=n, max_size=n))
    stay = draw(st.lists(st.floats(1.0, 500.0), min_size=n, max_size=n))
    departure = np.array([np.nan if k == "stays" else a if k == "instant" else a + s for a, k, s in zip(arrival, kind, stay)])
    vcpus = np.array(draw(st.lists(st.integers(1, 24), min_size=n, max_size=n)))
    mem = np.array(draw(st.lists(st.integers(256, 65536), min_size=n, max_size=n)))
    alpha = np.array(draw(st.lists(st.floats(0.5, 2.0), min_size=n, max_size=n)))
    beta = np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n)))
    trace = HostTrace(arrival, departure, vcpus, mem, alpha, beta, np.zeros(n, dtype=np.int64), end_s=float(arrival[-1]) + 600.0)
    return topo, trace


def _known(topo, trace, placements=None):
    from catur.sim.oracle import Arrival, KnownHost

    leaves = np.where(np.isnan(trace.departure_s), trace.end_s, trace.departure_s)
    lifetimes = leaves - trace.arrival_s
    weight = np.divide(trace.alpha, trace.vcpus * lifetimes, out=np.zeros(trace.num_vms), where=lifetimes > 0)
    n = topo.num_nodes
    live = LiveVMs(np.zeros((0, n)), np.zeros(0), np.zeros(0))
    arrivals = [Arrival(trace.request(i), float(trace.arrival_s[i]), float(leaves[i]), float(weight[i])) for i in range(trace.num_vms)]
    return KnownHost(live, np.zeros((0, n)), arrivals)


@settings(max_examples=60, **SETTINGS)
@given(staggered_hosts(), st.sampled_from(["greedy", "mem-most-idle"]))
def test_the_foresight_cost_of_a_whole_trace_is_what_the_replay_measures(case, policy):
    """Placed as a replay placed them, every VM of the trace known from the first arrival on:
    :func:`foresight_cost` is the replay's total lifetime defect (segments, weights, VMs that
    leave as they arrive, and remote memory together)."""
    from catur.sim.oracle import foresight_cost

    topo, trace = case
    out = replay_host(topo, trace, policy)
    zero = np.zeros(topo.num_nodes)
    cost = foresight_cost(topo, zero, float(trace.arrival_s[0]), _known(topo, trace), list(out.placements))
    assert cost == pytest.approx(out.lifetime_defect.sum(), rel=1e-9, abs=1e-12)


@pytest.mark.slow
@settings(max_examples=40, **SETTINGS)
@given(staggered_hosts())
def test_the_foresight_oracle_with_the_whole_future_beats_every_primitive_sequence(case):
    """Knowing every arrival (k = all of them), the oracle's replay is no worse than what it
    predicted at the first arrival (it may only find better later, with the VM in hand's wider
    candidate set), which is no worse than greedy's; with k = 1 it is the lifetime oracle."""
    from catur.sim.oracle import foresight_costs
    from catur.sim.replay import ORACLE_FORESIGHT

    topo, trace = case
    out = replay_host(topo, trace, ORACLE_FORESIGHT, oracle_k=trace.num_vms)
    assert all(p is not None for p in out.placements)
    zero = np.zeros(topo.num_nodes, np.int64)
    _, predicted = foresight_costs(topo, zero, zero, float(trace.arrival_s[0]), _known(topo, trace))
    total = out.lifetime_defect.sum()
    assert total <= predicted.min() * (1 + 1e-9) + 1e-12
    assert predicted.min() <= replay_host(topo, trace, "greedy").lifetime_defect.sum() * (1 + 1e-9) + 1e-12
    one = replay_host(topo, trace, ORACLE_FORESIGHT, oracle_k=1)
    assert one.lifetime_defect.sum() == pytest.approx(replay_host(topo, trace, ORACLE_LIFETIME).lifetime_defect.sum(), rel=1e-12)
