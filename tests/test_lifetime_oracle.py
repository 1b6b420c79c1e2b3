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
