"""The placement core: from a policy's node ranking to a complete placement.

:func:`place` is a pure function of (topology, one host's usage, request, policy): it reads the
state and returns a :class:`~catur.state.Placement`; it never changes the state. The simulator,
the training environment and the gRPC service all call it, so they cannot drift apart.

How a placement is built, for every policy alike:

1. **vNUMA split** (:func:`catur.request.split_request`): a VM that fits no single node's
   capacity becomes the fewest near-equal instances that do.
2. **CPU nodes**: the policy ranks the nodes for the (largest) instance. A one-instance VM takes
   the best-ranked node. A ``k``-instance VM takes ``k`` distinct nodes: the ``k`` best-ranked
   nodes of one socket, if some socket has ``k`` nodes that are all feasible (the socket whose
   nodes rank best overall wins); otherwise the ``k`` best-ranked nodes anywhere. Larger
   instances go to better-ranked nodes.
3. **Memory**, local first: each instance first takes what its own CPU node has free; then
   what is still missing comes from the nearest nodes by distance (ties: most free memory,
   then lowest index). Memory that fits nowhere lands on the instance's own node, which
   overcommits it; host admission makes that rare (it never overcommits a host's memory).

So a VM is always placed, even on a full host: vCPUs overcommit, memory spills. Those are
exactly the defects the metrics (:mod:`catur.metrics`) measure.
"""

from __future__ import annotations

import numpy as np

from catur.errors import unknown_name
from catur.metrics import defect_at_placement
from catur.policies import PRIMITIVES, POLICIES, NodeContext, Policy, get_policy, node_order
from catur.request import VMRequest, split_request
from catur.state import HostsState, Placement
from catur.topology import Topology


def place(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    policy: Policy | str,
    rng: np.random.Generator | None = None,
) -> Placement:
    """Place ``request`` on a host of ``topology`` with the given ``[N]`` usage arrays.

    ``rng`` is only used by policies that draw random numbers (``random``); pass a seeded
    generator for reproducible runs.
    """
    policy = get_policy(policy) if isinstance(policy, str) else policy
    return place_instances(topology, used_vcpus, used_mem_mib, split_request(topology, request), policy, rng)


def place_instances(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    instances: tuple[np.ndarray, np.ndarray],
    policy: Policy,
    rng: np.random.Generator | None = None,
) -> Placement:
    """:func:`place` for a request already split into ``(vcpus, mem_mib)`` instances."""
    inst_vcpus, inst_mem = instances
    ctx = NodeContext(
        topology.node_cores,
        topology.node_mem_mib,
        used_vcpus,
        used_mem_mib,
        int(inst_vcpus[0]),
        int(inst_mem[0]),
        rng,
    )
    ranking = policy.rank(ctx)
    order = node_order(ranking)
    cpu_nodes = choose_nodes(topology, order, ranking.feasible, len(inst_vcpus))
    mem = spread_memory(topology, used_mem_mib, cpu_nodes, inst_mem)
    return Placement(cpu_nodes, inst_vcpus, mem, policy.name)


def place_on_host(
    state: HostsState,
    host: int,
    request: VMRequest,
    policy: Policy | str,
    rng: np.random.Generator | None = None,
) -> Placement:
    """:func:`place` on one host of a :class:`~catur.state.HostsState`."""
    return place(
        state.topology, state.used_vcpus[host], state.used_mem_mib[host], request, policy, rng
    )


def primitive_placements(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, request: VMRequest
) -> dict[str, Placement]:
    """What each of the four primitives would do from this state (Catur's action space)."""
    instances = split_request(topology, request)  # once, not once per primitive
    return {
        name: place_instances(topology, used_vcpus, used_mem_mib, instances, POLICIES[name])
        for name in PRIMITIVES
    }


GREEDY = "greedy"


def greedy_place(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    rng: np.random.Generator | None = None,
) -> Placement:
    """``greedy``: try all four primitives, keep the lowest defect at placement.

    It is the k-step oracle with k = 1 and needs only the request in hand, so it is
    deployable, and a strong baseline: a learned policy earns its keep only where it beats it.
    Ties go to the primitive listed first in :data:`~catur.policies.PRIMITIVES`.
    """
    best, best_defect = None, np.inf
    for candidate in primitive_placements(topology, used_vcpus, used_mem_mib, request).values():
        value = defect_at_placement(topology.node_cores, used_vcpus, candidate, request.alpha, request.beta)
        if value < best_defect:
            best, best_defect = candidate, value
    return Placement(best.cpu_nodes, best.vcpus, best.mem_mib, GREEDY)


def decider(name: str):
    """A function ``(topology, used_vcpus, used_mem_mib, request, rng) -> Placement`` by name:
    any policy of :data:`~catur.policies.POLICIES`, or ``greedy``."""
    if name == GREEDY:
        return greedy_place
    if name not in POLICIES:
        raise unknown_name("policy", name, [*POLICIES, GREEDY])
    policy = POLICIES[name]

    def decide(topology, used_vcpus, used_mem_mib, request, rng=None):
        return place(topology, used_vcpus, used_mem_mib, request, policy, rng)

    return decide


def choose_nodes(
    topology: Topology, order: np.ndarray, feasible: np.ndarray, k: int
) -> np.ndarray:
    """``k`` distinct CPU nodes from a ranking, preferring a fully feasible single socket."""
    if k == 1:
        return order[:1].copy()
    position = np.empty_like(order)
    position[order] = np.arange(order.shape[0])
    best_socket_nodes: np.ndarray | None = None
    best_score = None
    for socket in np.unique(topology.node_socket):
        members = np.flatnonzero(topology.node_socket == socket)
        if members.shape[0] < k:
            continue
        top = members[np.argsort(position[members], kind="stable")[:k]]
        if not feasible[top].all():
            continue
        score = int(position[top].sum())
        if best_score is None or score < best_score:
            best_socket_nodes, best_score = top, score
    if best_socket_nodes is not None:
        return best_socket_nodes[np.argsort(position[best_socket_nodes], kind="stable")]
    return order[:k].copy()


def spread_memory(
    topology: Topology,
    used_mem_mib: np.ndarray,
    cpu_nodes: np.ndarray,
    inst_mem: np.ndarray,
) -> np.ndarray:
    """``int64[k, N]``: each instance's memory, local first, then nearest nodes, then overcommit.

    All instances take their local share before any spills, so one instance's spill never
    crowds out a sibling's local memory.
    """
    n = topology.num_nodes
    k = cpu_nodes.shape[0]
    free = np.maximum(topology.node_mem_mib - used_mem_mib, 0)
    mem = np.zeros((k, n), dtype=np.int64)
    missing = inst_mem.astype(np.int64).copy()
    for i in range(k):
        node = cpu_nodes[i]
        take = min(missing[i], free[node])
        mem[i, node] = take
        free[node] -= take
        missing[i] -= take
    for i in range(k):
        if missing[i] == 0:
            continue
        node = cpu_nodes[i]
        # Nearest first; among equally distant nodes, the one with most free memory.
        candidates = np.lexsort((np.arange(n), -free, topology.distance[node]))
        for other in candidates:
            if missing[i] == 0:
                break
            take = min(missing[i], free[other])
            if take > 0:
                mem[i, other] += take
                free[other] -= take
                missing[i] -= take
        mem[i, node] += missing[i]  # nowhere left: overcommit the instance's own node
        missing[i] = 0
    return mem
