"""Property tests: invariants of the placement core over thousands of generated hosts, states and VMs.

Hosts are random topologies (1-8 nodes, random sockets, random symmetric distances) or the
shipped presets; usage states range from empty to far overloaded; requests range from tiny to
larger than the whole host (forcing vNUMA splits and overcommit), with explicit vNUMA counts
and alpha/beta weights. Every policy in :data:`catur.policies.POLICIES` is checked on every case.
"""

from __future__ import annotations

import math

import pytest

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.metrics import cor_after, defect_at_placement, node_cor, vm_cor
from catur.placement import place
from catur.policies import POLICIES, node_order
from catur.request import VMRequest, split_request, vnuma_count
from catur.sim.replay import HostTrace, replay_host
from catur.state import HostsState, apply, release
from catur.topology import Topology

from _strategies import topologies as topologies_strategy

ALL = list(POLICIES)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Which resources each policy's "feasible" needs (see catur.policies): a node that is feasible
# for the policy must have room for the instance's memory / vCPUs.
NEEDS_MEM = {"mem-best-fit", "mem-most-idle", "xen", "nova-pack", "nova-spread", "e-pvm", "tetris", "random"}
NEEDS_CORES = {"core-best-fit", "core-most-idle", "nova-pack", "nova-spread", "e-pvm", "tetris", "random"}


# --- strategies -----------------------------------------------------------------------------------


topologies = topologies_strategy()


@st.composite
def usages(draw, topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    """Per-node used vCPUs and MiB, from empty to several times capacity (overloaded)."""
    load = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    used_v = [draw(st.integers(0, int(load * c))) for c in topo.node_cores]
    used_m = [draw(st.integers(0, int(min(load, 2.0) * m))) for m in topo.node_mem_mib]
    return np.array(used_v, dtype=np.int64), np.array(used_m, dtype=np.int64)


@st.composite
def requests(draw, topo: Topology) -> VMRequest:
    """Small VMs, VMs up to a few nodes' size, and VMs larger than the whole host."""
    scale = draw(st.sampled_from(["node", "node", "host"]))
    if scale == "node":
        vcpus = draw(st.integers(1, 2 * int(topo.node_cores.max())))
        mem = draw(st.integers(1, 2 * int(topo.node_mem_mib.max())))
    else:
        vcpus = draw(st.integers(1, 2 * topo.total_cores))
        mem = draw(st.integers(1, 2 * topo.total_mem_mib))
    vnuma = draw(st.one_of(st.none(), st.integers(1, min(topo.num_nodes, vcpus))))
    alpha = draw(st.floats(0, 4, allow_nan=False))
    beta = draw(st.floats(0, 4, allow_nan=False))
    return VMRequest(vcpus, mem, alpha, beta, vnuma)


@st.composite
def cases(draw):
    topo = draw(topologies)
    used_v, used_m = draw(usages(topo))
    return topo, used_v, used_m, draw(requests(topo)), draw(st.integers(0, 2**32 - 1))


@st.composite
def traces(draw):
    """A topology and a trace of 1-12 VMs, with same-instant events and zero-length lives."""
    topo = draw(topologies)
    m = draw(st.integers(1, 12))
    vms = [draw(requests(topo)) for _ in range(m)]
    arrival = [draw(st.integers(0, 40)) for _ in range(m)]
    departure = [
        a + d if d is not None else math.nan
        for a, d in zip(arrival, (draw(st.one_of(st.none(), st.integers(0, 40))) for _ in range(m)))
    ]
    events = arrival + [d for d in departure if not math.isnan(d)]
    end_s = draw(st.one_of(st.none(), st.integers(max(events), max(events) + 20)))
    trace = HostTrace(
        arrival_s=arrival,
        departure_s=departure,
        vcpus=[r.vcpus for r in vms],
        mem_mib=[r.mem_mib for r in vms],
        alpha=[r.alpha for r in vms],
        beta=[r.beta for r in vms],
        vnuma=[r.vnuma or 0 for r in vms],
        end_s=end_s,
    )
    return topo, trace


# --- (a) + (b): every policy places every valid request, and the placement is well formed -------


@pytest.mark.slow
@settings(max_examples=700, **SETTINGS)
@given(cases())
def test_every_policy_places_every_valid_request(case):
    """No policy raises; instances sit on distinct nodes and their vCPUs/memory add up exactly."""
    topo, used_v, used_m, req, seed = case
    inst_v, inst_m = split_request(topo, req)
    k = vnuma_count(topo, req)
    if req.vnuma is not None:
        assert k == req.vnuma
    for name in ALL:
        before = (used_v.copy(), used_m.copy())
        p = place(topo, used_v, used_m, req, name, np.random.default_rng(seed))
        assert np.array_equal(used_v, before[0]) and np.array_equal(used_m, before[1])  # pure
        assert p.policy == name
        assert p.cpu_nodes.shape == (k,) and p.vcpus.shape == (k,) and p.mem_mib.shape == (k, topo.num_nodes)
        assert len(set(p.cpu_nodes.tolist())) == k
        assert ((p.cpu_nodes >= 0) & (p.cpu_nodes < topo.num_nodes)).all()
        # vCPUs: near-equal, larger first, every instance has at least one, sum is the request
        assert p.vcpus.tolist() == inst_v.tolist()
        assert p.vcpus.min() >= 1 and p.vcpus.max() - p.vcpus.min() <= 1
        assert (np.diff(p.vcpus) <= 0).all()
        assert p.total_vcpus == req.vcpus
        # memory: no negative entries, each row is its instance's memory, total is the request
        assert (p.mem_mib >= 0).all()
        assert p.mem_mib.sum(axis=1).tolist() == inst_m.tolist()
        assert inst_m.max() - inst_m.min() <= 1
        assert p.total_mem_mib == req.mem_mib


# --- (c): apply and release are exact inverses ----------------------------------------------------


@pytest.mark.slow
@settings(max_examples=400, **SETTINGS)
@given(cases())
def test_apply_then_release_restores_the_state(case):
    """Applying a placement adds exactly its vCPUs/MiB per node; releasing it gives back the same state."""
    topo, used_v, used_m, req, seed = case
    for name in ALL:
        state = HostsState.from_usage(topo, used_v, used_m)
        original = state.copy()
        p = place(topo, used_v, used_m, req, name, np.random.default_rng(seed))
        apply(state, 0, p)
        assert np.array_equal(state.used_vcpus[0], used_v + p.node_vcpus(topo.num_nodes))
        assert np.array_equal(state.used_mem_mib[0], used_m + p.node_mem_mib())
        release(state, 0, p)
        assert state == original


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_many_vms_released_in_any_order_leave_an_empty_host(data):
    """Several VMs placed one after another and released in a random order leave the host empty."""
    topo = data.draw(topologies)
    name = data.draw(st.sampled_from(ALL))
    reqs = data.draw(st.lists(requests(topo), min_size=1, max_size=8))
    state = HostsState(topo, 1)
    rng = np.random.default_rng(0)
    placed = []
    for req in reqs:
        p = place(topo, state.used_vcpus[0], state.used_mem_mib[0], req, name, rng)
        apply(state, 0, p)
        placed.append(p)
    assert state.used_vcpus.sum() == sum(r.vcpus for r in reqs)
    assert state.used_mem_mib.sum() == sum(r.mem_mib for r in reqs)
    for i in data.draw(st.permutations(range(len(placed)))):
        release(state, 0, placed[i])
    assert state == HostsState(topo, 1)


# --- (d): metric ranges --------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=500, **SETTINGS)
@given(cases())
def test_metrics_stay_in_range(case):
    """Node COR, a VM's COR and RMR lie in [0, 1]; its defect lies in [0, alpha + beta]."""
    topo, used_v, used_m, req, seed = case
    cors = node_cor(topo.node_cores, used_v)
    assert ((cors >= 0) & (cors <= 1)).all()
    for name in ALL:
        p = place(topo, used_v, used_m, req, name, np.random.default_rng(seed))
        cor = cor_after(topo.node_cores, used_v, p)
        assert 0.0 <= cor <= 1.0
        # cor_after agrees with COR read off the state after applying the placement
        after = used_v + p.node_vcpus(topo.num_nodes)
        assert math.isclose(cor, vm_cor(p, node_cor(topo.node_cores, after)), abs_tol=1e-12)
        assert 0.0 <= p.rmr() <= 1.0
        d = defect_at_placement(topo.node_cores, used_v, p, req.alpha, req.beta)
        assert 0.0 <= d <= req.alpha + req.beta + 1e-12


# --- placement rules: fallback, memory layout ------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=500, **SETTINGS)
@given(cases())
def test_one_instance_goes_to_a_feasible_or_least_overloaded_node(case):
    """A one-instance VM goes to a feasible node if the policy has one, else to a least-overloaded node."""
    topo, used_v, used_m, req, seed = case
    inst_v, inst_m = split_request(topo, req)
    if len(inst_v) != 1:
        return
    free_c = topo.node_cores - used_v
    free_m = topo.node_mem_mib - used_m
    core_over = (used_v + inst_v[0] - topo.node_cores) / topo.node_cores
    mem_over = (used_m + inst_m[0] - topo.node_mem_mib) / topo.node_mem_mib
    for name in ALL:
        feasible = np.ones(topo.num_nodes, dtype=bool)
        overload = np.full(topo.num_nodes, -np.inf)
        if name in NEEDS_CORES:
            feasible &= free_c >= inst_v[0]
            overload = np.maximum(overload, core_over)
        if name in NEEDS_MEM:
            feasible &= free_m >= inst_m[0]
            overload = np.maximum(overload, mem_over)
        node = int(place(topo, used_v, used_m, req, name, np.random.default_rng(seed)).cpu_nodes[0])
        if feasible.any():
            assert feasible[node], name
        else:
            assert overload[node] == overload.min(), name


@pytest.mark.slow
@settings(max_examples=500, **SETTINGS)
@given(cases())
def test_memory_is_local_first_then_nearest(case):
    """Memory is local first, spills only to nodes no farther than any node left with free memory, and overcommits only a full host."""
    topo, used_v, used_m, req, seed = case
    free = np.maximum(topo.node_mem_mib - used_m, 0)
    for name in ALL:
        p = place(topo, used_v, used_m, req, name, np.random.default_rng(seed))
        taken = p.node_mem_mib()
        if free.sum() >= req.mem_mib:
            # the host has room: no node receives more than it had free
            assert (taken <= free).all(), name
        if p.num_instances != 1:
            continue
        node, row = int(p.cpu_nodes[0]), p.mem_mib[0]
        assert row[node] >= min(req.mem_mib, int(free[node])), name  # local first
        left = free - np.minimum(taken, free)  # free memory each node still has afterwards
        remote = [j for j in range(topo.num_nodes) if j != node and row[j] > 0]
        for j in remote:
            nearer = topo.distance[node] < topo.distance[node, j]
            # every strictly nearer node was drained before node j was used
            assert (left[nearer] == 0).all(), name
        if remote and req.mem_mib > free.sum():
            assert row[node] > free[node]  # what fits nowhere overcommits the own node


# --- (f): fitting placements have no defect --------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=600, **SETTINGS)
@given(cases())
def test_fitting_policies_give_zero_rmr_and_cor(case):
    """If k nodes have room for an instance's memory (cores), memory-aware (core-aware) policies get RMR (COR) 0."""
    topo, used_v, used_m, req, seed = case
    inst_v, inst_m = split_request(topo, req)
    k = len(inst_v)
    mem_room = (topo.node_mem_mib - used_m) >= inst_m[0]
    core_room = (topo.node_cores - used_v) >= inst_v[0]
    for name in ALL:
        p = place(topo, used_v, used_m, req, name, np.random.default_rng(seed))
        fits = np.ones(topo.num_nodes, dtype=bool)
        if name in NEEDS_MEM:
            fits &= mem_room
        if name in NEEDS_CORES:
            fits &= core_room
        if fits.sum() >= k:
            if name in NEEDS_MEM:
                assert p.rmr() == 0.0, name
            if name in NEEDS_CORES:
                assert cor_after(topo.node_cores, used_v, p) == 0.0, name
        # For every policy: remote memory only when some instance's own node lacked room.
        node_free = (topo.node_mem_mib - used_m)[p.cpu_nodes]
        if (node_free >= p.mem_mib.sum(axis=1)).all():
            assert p.rmr() == 0.0, name


# --- (e) + (g): replay -------------------------------------------------------------------------------


def _lifetime_cor_oracle(topo: Topology, trace: HostTrace, placements) -> np.ndarray:
    """Each VM's mean COR over its life, by stepping through the events (independent of CorClock)."""
    events = trace.events()
    state = HostsState(topo, 1)
    segments = []  # (start, end, node COR) between consecutive events
    for idx, (t, kind, vm) in enumerate(events):
        if kind == 1:
            apply(state, 0, placements[vm])
        else:
            release(state, 0, placements[vm])
        nxt = events[idx + 1][0] if idx + 1 < len(events) else max(trace.end_s, t)
        if nxt > t:
            segments.append((t, nxt, node_cor(topo.node_cores, state.used_vcpus[0])))
    end = max(trace.end_s, events[-1][0])
    out = np.zeros(trace.num_vms)
    for vm, p in enumerate(placements):
        a = trace.arrival_s[vm]
        d = end if np.isnan(trace.departure_s[vm]) else trace.departure_s[vm]
        if d == a:
            out[vm] = math.nan  # zero-length life: the defect at placement is used instead
            continue
        total = sum((min(e, d) - max(s, a)) * vm_cor(p, cor) for s, e, cor in segments if min(e, d) > max(s, a))
        out[vm] = total / (d - a)
    return out


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(traces(), st.sampled_from(ALL), st.integers(0, 1000))
def test_replay_places_every_vm_once_on_the_right_state(case, name, seed):
    """Replay places every VM exactly once, on the state its earlier events left, and releases each once."""
    topo, trace = case
    result = replay_host(topo, trace, name, seed=seed)
    m = trace.num_vms
    assert len(result.placements) == m and all(p is not None for p in result.placements)
    # Redo the event stream by hand: each placement must be what the policy gives on the state
    # left by every earlier arrival and departure (so each departure released exactly its VM).
    state = HostsState(topo, 1)
    rng = np.random.default_rng(seed)
    for t, kind, vm in trace.events():
        p = result.placements[vm]
        if kind == 1:
            again = place(topo, state.used_vcpus[0], state.used_mem_mib[0], trace.request(vm), name, rng)
            assert p.to_dict() == again.to_dict()
            assert math.isclose(result.cor_at_placement[vm], cor_after(topo.node_cores, state.used_vcpus[0], p))
            apply(state, 0, p)
        else:
            release(state, 0, p)  # raises if this VM was already released
    running = [vm for vm in range(m) if np.isnan(trace.departure_s[vm])]
    expected = HostsState(topo, 1)
    for vm in running:
        apply(expected, 0, result.placements[vm])
    assert state == expected  # empty when every VM departs
    # metrics in range, and consistent with each other
    a, b = trace.alpha, trace.beta
    assert ((result.cor_at_placement >= 0) & (result.cor_at_placement <= 1)).all()
    assert ((result.rmr >= 0) & (result.rmr <= 1)).all()
    assert np.allclose(result.placement_defect, a * result.cor_at_placement + b * result.rmr)
    assert ((result.lifetime_defect >= 0) & (result.lifetime_defect <= a + b + 1e-9)).all()
    # lifetime COR matches an independent integration of COR between events
    oracle = _lifetime_cor_oracle(topo, trace, result.placements)
    oracle = np.where(np.isnan(oracle), result.cor_at_placement, oracle)
    assert np.allclose(result.lifetime_defect, a * oracle + b * result.rmr, rtol=1e-9, atol=1e-9)
    s = result.summary()
    assert s.vms == m and 0 <= s.anomalies <= m and 0.0 <= s.ticket_ratio <= 1.0
    assert math.isclose(s.avg_defect, float(result.lifetime_defect.mean()), rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(traces(), st.integers(0, 1000))
def test_same_seed_same_replay(case, seed):
    """`random` replays identically with the same seed; deterministic policies ignore the seed."""
    topo, trace = case

    def fingerprint(result):
        return (
            [p.to_dict() for p in result.placements],
            result.cor_at_placement.tolist(),
            result.rmr.tolist(),
            result.lifetime_defect.tolist(),
        )

    assert fingerprint(replay_host(topo, trace, "random", seed)) == fingerprint(
        replay_host(topo, trace, "random", seed)
    )
    for name in ("core-best-fit", "xen", "tetris"):
        assert fingerprint(replay_host(topo, trace, name, seed)) == fingerprint(
            replay_host(topo, trace, name, seed + 1)
        )


@settings(max_examples=300, **SETTINGS)
@given(cases())
def test_node_order_is_a_permutation_feasible_first(case):
    """A ranking's node order lists every node once, feasible nodes before infeasible ones."""
    topo, used_v, used_m, req, seed = case
    inst_v, inst_m = split_request(topo, req)
    from catur.policies import NodeContext

    ctx = NodeContext(topo.node_cores, topo.node_mem_mib, used_v, used_m, int(inst_v[0]), int(inst_m[0]),
                      np.random.default_rng(seed))
    for policy in POLICIES.values():
        ranking = policy.rank(ctx)
        order = node_order(ranking)
        assert sorted(order.tolist()) == list(range(topo.num_nodes))
        feas = ranking.feasible[order]
        assert not (~feas[:-1] & feas[1:]).any()  # no feasible node after an infeasible one
