"""The batched replay engine: many hosts' event streams replayed at once, in lock-step.

After admission, hosts are independent (docs/howto/evaluate.md, "Host admission"), so nothing forces one host's replay to
wait for another's. This engine replays thousands of hosts together: at step ``s`` every host
processes its own ``s``-th event (its arrivals and departures are still in its own time
order), so each step is a handful of array operations over all hosts instead of one Python
iteration per host. Hosts are sorted by event count, longest first, so the hosts still
running at step ``s`` are always a prefix of the arrays and finished hosts cost nothing.

One step, for the hosts whose event is a *departure*: close the VM's lifetime COR integral
and take its vCPUs and memory off the host. For the hosts whose event is an *arrival*: the
policy decides for all of them in one call (:class:`catur.sim.batch_policy.BatchPolicy`, the
adapter the reference loop uses too) — a ranking policy ranks every host's nodes at
once (:func:`catur.placement.place_batch`), ``greedy`` places with all four primitives and
keeps each row's best, a :class:`~catur.decision.Decider` encodes all observations and scores
them with **one** batched matrix product of the model per layer (a vector-matrix product per
row inside one numpy call, so each row's bits do not depend on the batch), then gates and
shields them as arrays (:meth:`~catur.decision.Decider.decide_batch`). VMs with several vNUMA instances are decided
in their own sub-batch per instance count.

There is no second copy of any rule here: the engine calls the same placement core, metrics,
observation encoding, model, gate and shield as :func:`catur.sim.replay.replay_host` (the
reference loop) and the service — those functions take a leading host axis, and the one-host
path is their batch of one. The engine only keeps the books (which VM is where, the COR
clock of every host), so its results are **identical** to the reference loop: same
placements, and bit-identical defects (``tests/test_batched.py`` checks ~1,600 generated
host traces per run, in batches of 2-6 hosts, for every deterministic policy and deciders).

What goes through the reference loop instead (:func:`batchable` says which): ``random``
(one generator per host, drawn in that host's order), the ``oracle`` and correctable-anomaly
counting (look-ahead over future events), and arbitrary callables (e.g. a remote service);
also groups of fewer than :data:`MIN_BATCH_HOSTS` hosts of one topology, which replay faster
one by one (a step has a fixed cost of a few hundred microseconds). A shield deeper than 1 is
batched too, but its look-ahead runs per host.

Why numpy and not numba: a compiled per-host loop would be a second copy of the placement
rules, metrics, encoding and shield. Array code over a host axis reuses them as they are;
its price is the fixed cost per step, so the gain grows with the number of hosts replayed
together (see ``benchmarks/bench_engine.py``).

``CATUR_ENGINE=reference`` (environment) makes :func:`catur.sim.evaluate.evaluate_policies`
use the reference loop for everything, e.g. to compare the engines.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Sequence

import numpy as np

from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError
from catur.metrics import CorClock, defect, lifetime_mean_cor, placement_costs
from catur.placement import GREEDY
from catur.policies import POLICIES, Policy
from catur.request import RequestBatch, VMRequest, split_requests
from catur.resident import RESIDENT_GREEDY
from catur.sim.batch_policy import INTERVENTIONS, BatchPolicy, resolve_policy
from catur.sim.replay import HostReplay, HostTrace, replay_host
from catur.state import HostsState, Placement, add_usage, remove_usage
from catur.topology import Topology
from catur.traces.events import event_order

ENGINE_ENV = "CATUR_ENGINE"
ENGINES = ("batched", "reference")
# Hosts are replayed in batches of at most this many VMs (all their events at once): about
# 200-300 bytes of state per VM, so ~250 MB per batch, and thousands of hosts per batch.
MAX_BATCH_VMS = 1_000_000
# Fewer hosts of one topology than this replay faster one by one (a lock-step step costs
# about what one event of the reference loop does, and the longest host sets the pace).
MIN_BATCH_HOSTS = 8
# The Decider's counters (catur.sim.batch_policy.INTERVENTIONS), one int64 column each.
DECIDER_COUNTERS = INTERVENTIONS


def engine_name() -> str:
    """The engine chosen by the ``CATUR_ENGINE`` environment variable (default ``batched``)."""
    name = os.environ.get(ENGINE_ENV, "batched").strip() or "batched"
    if name not in ENGINES:
        raise CaturError(f"{ENGINE_ENV}={name!r} is not an engine; choose one of: {', '.join(ENGINES)}")
    return name


def batchable(policy: object, correctable_above: float | None = None) -> bool:
    """Whether :func:`replay_batched` can replay ``policy`` (else use the reference loop)."""
    if correctable_above is not None:
        return False  # the oracle looks ahead at each host's future events
    if isinstance(policy, (Decider, DeciderSpec)):
        return True
    if isinstance(policy, Policy):
        return not policy.needs_rng
    if isinstance(policy, str):
        return policy in (GREEDY, RESIDENT_GREEDY) or (policy in POLICIES and not POLICIES[policy].needs_rng)
    return False


def replay_batched(
    hosts: Sequence[tuple[Topology, HostTrace]],
    policy: Policy | str | Decider | DeciderSpec,
    *,
    keep_placements: bool = False,
    max_batch_vms: int = MAX_BATCH_VMS,
    min_batch_hosts: int | None = None,
) -> list[HostReplay]:
    """Replay every ``(topology, trace)`` host from its start usage (empty unless the trace
    has one), all at once.

    Returns one :class:`~catur.sim.replay.HostReplay` per host, in input order, with exactly
    the values :func:`~catur.sim.replay.replay_host` gives (its ``correctable`` all False).
    ``placements`` are filled only with ``keep_placements`` (building an object per VM costs
    time). Hosts are grouped by topology and replayed in batches of up to ``max_batch_vms``
    VMs, which bounds memory (200-300 bytes per VM); a group of fewer than
    ``min_batch_hosts`` hosts (default :data:`MIN_BATCH_HOSTS`) goes through the reference
    loop, which is faster there. A Decider's scorer is told each row's host as its index in
    ``hosts`` (``rows``; a population scores each host with its member), which only this
    engine passes: replay such a scorer with ``min_batch_hosts=1``.
    """
    if not batchable(policy):
        raise CaturError(f"policy {policy!r} cannot be replayed in batches; use catur.sim.replay.replay_host")
    policy = resolve_policy(policy)
    out: list[HostReplay | None] = [None] * len(hosts)
    groups: dict[tuple, list[int]] = {}
    for i, (topology, _) in enumerate(hosts):
        groups.setdefault(_topology_key(topology), []).append(i)
    for members in groups.values():
        topology = hosts[members[0]][0]
        if len(members) < (MIN_BATCH_HOSTS if min_batch_hosts is None else min_batch_hosts):
            for i in members:
                out[i] = replay_host(hosts[i][0], hosts[i][1], policy)
            continue
        for chunk in _bounded(members, [hosts[i][1].num_vms for i in members], max_batch_vms):
            decide = BatchPolicy(topology, policy, len(chunk), host_ids=chunk)
            for i, result in zip(chunk, _replay_group(topology, [hosts[i][1] for i in chunk], decide, keep_placements)):
                out[i] = result
    return out  # type: ignore[return-value]


def _topology_key(topology: Topology) -> tuple:
    """Hosts of equal topologies (by value) share a batch."""
    arrays = (topology.node_cores, topology.node_mem_mib, topology.node_socket, topology.distance)
    return tuple(a.tobytes() for a in arrays) + (topology.num_nodes,)


def _bounded(members: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """``members`` in consecutive runs of at most ``limit`` VMs (a larger host runs alone)."""
    runs: list[list[int]] = [[]]
    total = 0
    for member, size in zip(members, sizes):
        if runs[-1] and total + size > limit:
            runs.append([])
            total = 0
        runs[-1].append(member)
        total += size
    return runs


def _replay_group(
    topology: Topology, traces: list[HostTrace], decide: BatchPolicy, keep_placements: bool
) -> list[HostReplay]:
    """Replay hosts of one topology in lock-step (see the module docstring)."""
    n_nodes = topology.num_nodes
    h = len(traces)
    # Hosts longest first, so the hosts still running at any step are a prefix.
    orders = [event_order(t.arrival_s, t.departure_s) for t in traces]
    counts = np.array([o[0].shape[0] for o in orders], dtype=np.int64)
    perm = np.argsort(-counts, kind="stable")
    traces = [traces[i] for i in perm]
    orders = [orders[i] for i in perm]
    counts = counts[perm]
    vms_per_host = np.array([t.num_vms for t in traces], dtype=np.int64)
    first_vm = np.concatenate([[0], np.cumsum(vms_per_host)[:-1]]).astype(np.int64)

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(t, name) for t in traces])

    arrival, departure = joined("arrival_s"), joined("departure_s")
    vcpus, mem_mib, alpha, beta, vnuma = (joined(f) for f in ("vcpus", "mem_mib", "alpha", "beta", "vnuma"))
    num_vms = arrival.shape[0]
    host_of_vm = np.repeat(np.arange(h), vms_per_host)
    k, inst_vcpus, inst_mem = split_requests(topology, vcpus, mem_mib, vnuma)
    # Every host's events, concatenated; host i's s-th event is at ev_start[i] + s.
    ev_vm = np.concatenate([o[0] + first_vm[i] for i, o in enumerate(orders)])
    ev_arrival = np.concatenate([o[1] for o in orders])
    ev_time = np.where(ev_arrival, arrival[ev_vm], departure[ev_vm])
    ev_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    steps = int(counts[0]) if h else 0
    active = np.searchsorted(-counts, -np.arange(steps), side="left")  # hosts with more than s events

    # Each host starts as its trace says (a start state), through the same state constructor
    # as the reference loop; then its usage is kept by catur.state's functions.
    starts = [t.start_state(topology) for t in traces]
    state = HostsState(topology, h)
    state.used_vcpus[:] = np.concatenate([start.used_vcpus for start in starts])
    state.used_mem_mib[:] = np.concatenate([start.used_mem_mib for start in starts])
    state.residents[:] = np.concatenate([start.residents for start in starts])  # VMs bound to each node
    used_vcpus, used_mem = state.used_vcpus, state.used_mem_mib
    clock = CorClock(topology.node_cores, np.array([t.arrival_s.min() if t.num_vms else 0.0 for t in traces]))
    clock.set_usage(used_vcpus, slice(0, h))
    # Per VM: where it is (instances padded with node 0 and 0 vCPUs, which add nothing to
    # the weighted COR integral), what it takes per node, and its metrics.
    width = inst_vcpus.shape[1]
    vm_nodes = np.zeros((num_vms, width), dtype=np.int64)
    vm_vcpus = np.zeros((num_vms, width), dtype=np.int64)
    vm_node_vcpus = np.zeros((num_vms, n_nodes), dtype=np.int64)
    vm_node_mem = np.zeros((num_vms, n_nodes), dtype=np.int64)
    vm_mem = np.zeros((num_vms, width, n_nodes), dtype=np.int64) if keep_placements else None
    cor_at_placement = np.zeros(num_vms)
    rmr = np.zeros(num_vms)
    integral_at_arrival = np.zeros(num_vms)
    mean_cor = np.zeros(num_vms)
    counters = np.zeros((h, len(DECIDER_COUNTERS)), dtype=np.int64)

    def close(rows: np.ndarray, vms: np.ndarray, t: np.ndarray) -> None:
        grown = clock.weighted_integrals(rows, vm_nodes[vms], vm_vcpus[vms]) - integral_at_arrival[vms]
        mean_cor[vms] = lifetime_mean_cor(grown, vcpus[vms], t - arrival[vms], cor_at_placement[vms])

    def place(rows: np.ndarray, vms: np.ndarray, size: int) -> None:
        """Decide for VMs ``vms`` (all with ``size`` instances) arriving on hosts ``rows``."""
        requests = RequestBatch(
            vcpus[vms], mem_mib[vms], alpha[vms], beta[vms], inst_vcpus[vms, :size], inst_mem[vms, :size],
            _request_objects(vms, vcpus, mem_mib, alpha, beta, vnuma) if decide.needs_requests else None,
        )
        before = used_vcpus[rows]
        # The policy numbers hosts as the chunk does (rows are in longest-first order here).
        decision = decide(before, used_mem[rows], requests, perm[rows], state.residents[rows])
        placements, counts_now = decision.placements, decision.counts
        cor_at_placement[vms], rmr[vms], _ = placement_costs(
            topology.node_cores, before, placements, alpha[vms], beta[vms]
        )
        node_vcpus, node_mem = placements.node_vcpus(n_nodes), placements.node_mem_mib()
        add_usage(state, rows, node_vcpus, node_mem)
        vm_node_vcpus[vms], vm_node_mem[vms] = node_vcpus, node_mem
        vm_nodes[vms, :size], vm_vcpus[vms, :size] = placements.cpu_nodes, placements.vcpus
        if vm_mem is not None:
            vm_mem[vms, :size] = placements.mem_mib
        integral_at_arrival[vms] = clock.weighted_integrals(rows, placements.cpu_nodes, placements.vcpus)
        if counts_now is not None:
            counters[rows] += counts_now

    for s in range(steps):
        a = int(active[s])
        hosts = slice(0, a)
        ev = ev_start[:a] + s
        vm, arriving, t = ev_vm[ev], ev_arrival[ev], ev_time[ev]
        clock.advance(t, hosts)
        leaving = np.flatnonzero(~arriving)
        if leaving.size:
            gone = vm[leaving]
            close(leaving, gone, t[leaving])
            remove_usage(state, leaving, vm_node_vcpus[gone], vm_node_mem[gone])
        coming = np.flatnonzero(arriving)
        if coming.size:
            new = vm[coming]
            sizes = k[new]
            if sizes.min() == sizes.max():  # the usual case: one instance each
                place(coming, new, int(sizes[0]))
            else:  # vNUMA VMs: one sub-batch per instance count
                for size in np.unique(sizes):
                    same = sizes == size
                    place(coming[same], new[same], int(size))
        clock.set_usage(used_vcpus[:a], hosts)

    # The window closes: VMs still running are integrated up to its end.
    end = np.maximum(np.array([t.end_s for t in traces], dtype=float), clock.now)
    clock.advance(end, np.arange(h))
    running = np.flatnonzero(np.isnan(departure))
    if running.size:
        close(host_of_vm[running], running, clock.now[host_of_vm[running]])
    placement_defect = defect(alpha, beta, cor_at_placement, rmr)
    lifetime_defect = defect(alpha, beta, mean_cor, rmr)

    results: list[HostReplay | None] = [None] * h
    for i in range(h):
        part = slice(int(first_vm[i]), int(first_vm[i] + vms_per_host[i]))
        m = part.stop - part.start
        replay = HostReplay(
            placements=[None] * m,
            cor_at_placement=cor_at_placement[part].copy(),
            rmr=rmr[part].copy(),
            placement_defect=placement_defect[part].copy(),
            lifetime_defect=lifetime_defect[part].copy(),
            correctable=np.zeros(m, dtype=bool),
        )
        if decide.counts and m:
            replay.counters = Counter(dict(zip(DECIDER_COUNTERS, counters[i].tolist())))
        if keep_placements:
            replay.placements = [
                Placement(vm_nodes[j, : k[j]].copy(), vm_vcpus[j, : k[j]].copy(), vm_mem[j, : k[j]].copy())
                for j in range(part.start, part.stop)
            ]
        results[int(perm[i])] = replay
    return results  # type: ignore[return-value]


def _request_objects(vms, vcpus, mem_mib, alpha, beta, vnuma) -> tuple[VMRequest, ...]:
    """The same requests :meth:`HostTrace.request` builds, for the deep shield's statistics."""
    return tuple(
        VMRequest(int(vcpus[j]), int(mem_mib[j]), float(alpha[j]), float(beta[j]), int(vnuma[j]) or None)
        for j in vms
    )
