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

from catur.errors import CaturError, unknown_name
from catur.metrics import placement_costs
from catur.policies import PRIMITIVES, POLICIES, NodeContext, Policy, Ranking, get_policy, node_order
from catur.request import VMRequest, split_request
from catur.state import HostsState, Placement, PlacementBatch
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
    """:func:`place` for a request already split into ``(vcpus, mem_mib)`` instances:
    :func:`place_batch` without the host axis."""
    inst_vcpus, inst_mem = instances
    batch = place_batch(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem, policy, rng)
    return Placement(batch.cpu_nodes, inst_vcpus.copy(), batch.mem_mib, policy.name)


def place_batch(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    inst_vcpus: np.ndarray,
    inst_mem: np.ndarray,
    policy: Policy,
    rng: np.random.Generator | None = None,
) -> PlacementBatch:
    """Place ``B`` VMs, one on each of ``B`` hosts of ``topology``, all with ``policy``.

    ``used_*`` are ``[B, N]`` (row ``b`` = host ``b``'s usage), the instances ``[B, k]`` (every
    VM of a batch has the same instance count ``k``). Each row gets exactly what
    :func:`place_instances` gives that host alone — it *is* that function, for ``B`` rows at
    once: rankings are elementwise, :func:`~catur.policies.node_order` sorts each row, and
    memory is spread row by row in array form. Without the host axis (``[N]`` usage, ``[k]``
    instances) it places one VM, which is what :func:`place_instances` does. A policy that
    draws random numbers places one VM at a time only (one generator per host).
    """
    if policy.needs_rng and used_vcpus.ndim > 1 and used_vcpus.shape[0] != 1:
        raise CaturError(f"policy {policy.name!r} draws random numbers per host; place one VM at a time")
    ranking = policy.rank(_context(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem, rng))
    return _complete(topology, ranking, used_mem_mib, inst_vcpus, inst_mem, policy.name)


def _context(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem, rng=None) -> NodeContext:
    # The largest instance (the first) ranks the nodes.
    return NodeContext(
        topology.node_cores, topology.node_mem_mib, used_vcpus, used_mem_mib, inst_vcpus[..., :1], inst_mem[..., :1], rng
    )


def _complete(
    topology: Topology, ranking: Ranking, used_mem_mib: np.ndarray, inst_vcpus: np.ndarray, inst_mem: np.ndarray, name: str
) -> PlacementBatch:
    """From rankings ``[B, ..., N]`` (one per host, or several per host) to placements: CPU
    nodes from the order, then memory. Extra axes after the host axis share that host's
    usage and request."""
    order = node_order(ranking)
    shape = order.shape[:-1]
    n, k = topology.num_nodes, inst_vcpus.shape[-1]
    if len(shape) <= 1:  # one ranking per host (or a single host)
        cpu_nodes = choose_nodes(topology, order, ranking.feasible, k)
        return PlacementBatch(cpu_nodes, inst_vcpus, spread_memory(topology, used_mem_mib, cpu_nodes, inst_mem), name)
    # Several rankings per host: lay them out as rows, and give each row its host's state.
    per_host = int(np.prod(shape[1:]))
    cpu_nodes = choose_nodes(topology, order.reshape(-1, n), ranking.feasible.reshape(-1, n), k)
    mem = spread_memory(
        topology, np.repeat(used_mem_mib, per_host, axis=0), cpu_nodes, np.repeat(inst_mem, per_host, axis=0)
    )
    vcpus = np.repeat(inst_vcpus, per_host, axis=0).reshape(shape + (k,))
    return PlacementBatch(cpu_nodes.reshape(shape + (k,)), vcpus, mem.reshape(shape + (k, n)), name)


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
    inst_vcpus, inst_mem = split_request(topology, request)
    batch = primitive_batches(topology, used_vcpus[None], used_mem_mib[None], inst_vcpus[None], inst_mem[None])
    return {name: batch.placement((0, i), policy=name) for i, name in enumerate(PRIMITIVES)}


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
    inst_vcpus, inst_mem = split_request(topology, request)
    alpha, beta = np.array([request.alpha]), np.array([request.beta])
    return greedy_batch(topology, used_vcpus[None], used_mem_mib[None], inst_vcpus[None], inst_mem[None], alpha, beta).placement(0)


def primitive_batches(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, inst_vcpus: np.ndarray, inst_mem: np.ndarray
) -> PlacementBatch:
    """:func:`primitive_placements` for a batch of hosts (``[B, N]`` usage, ``[B, k]``
    instances): one :class:`~catur.state.PlacementBatch` of shape ``[B, 4]``, the primitives
    in :data:`~catur.policies.PRIMITIVES` order. The four rankings are stacked and completed
    together, so the four candidates cost one pass of the placement core, not four."""
    ranking = _primitive_rankings(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
    return _complete(topology, ranking, used_mem_mib, inst_vcpus, inst_mem, "")


def primitive_first_nodes(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, inst_vcpus: np.ndarray, inst_mem: np.ndarray
) -> np.ndarray:
    """``int64[B, 4]``: the node each primitive ranks first for ``B`` one-instance VMs, which
    is the CPU node :func:`primitive_batches` gives them (without spreading their memory:
    a caller that has every single-node placement already takes the primitives' from it)."""
    return node_order(_primitive_rankings(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem))[..., 0]


def _primitive_rankings(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem) -> Ranking:
    """The four primitives' rankings, stacked ``[B, 4, N]``."""
    ctx = _context(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
    rankings = [POLICIES[name].rank(ctx) for name in PRIMITIVES]
    # [4, B, N] → [B, 4, N]: the primitives become an extra axis after the host axis. (Each
    # primitive ranks by one integer key, so the keys stack into one array unchanged.)
    return Ranking(
        np.array([r.feasible for r in rankings]).swapaxes(0, 1),
        tuple(np.array(keys).swapaxes(0, 1) for keys in zip(*(r.keys for r in rankings), strict=True)),
        np.array([r.overload for r in rankings]).swapaxes(0, 1),
    )


def greedy_batch(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    inst_vcpus: np.ndarray,
    inst_mem: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
) -> PlacementBatch:
    """:func:`greedy_place` for a batch of hosts: each row's lowest-defect primitive (ties:
    the first listed, as ``argmin`` takes the first minimum)."""
    options = primitive_batches(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
    _, _, defects = placement_costs(topology.node_cores, used_vcpus, options, alpha[:, None], beta[:, None])
    return options.select(np.argmin(defects, axis=1), GREEDY)


def placement_function(name: str):
    """A function ``(topology, used_vcpus, used_mem_mib, request, rng) -> Placement`` by name:
    any policy of :data:`~catur.policies.POLICIES`, or ``greedy``. (Not to be confused with
    :class:`catur.decision.Decider`, the model + gate + shield that serves requests.)"""
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
    """``k`` distinct CPU nodes from a ranking, preferring a fully feasible single socket.

    ``order`` and ``feasible`` may be ``[B, N]`` (a batch of hosts): the answer is then
    ``[B, k]``. One instance takes the best-ranked node, for all rows at once; several
    instances (rare: vNUMA VMs) go through the one-host rule below row by row.
    """
    if k == 1:
        return order[..., :1].copy()
    if order.ndim == 2:
        return np.stack([choose_nodes(topology, o, f, k) for o, f in zip(order, feasible)])
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
    crowds out a sibling's local memory. Instances spill in order, each from what the ones
    before it left free.

    With a leading batch axis (``used_mem_mib[B, N]``, ``cpu_nodes[B, k]``,
    ``inst_mem[B, k]``) the answer is ``int64[B, k, N]``, each row as if placed alone: the
    spill, a greedy fill of the nearest nodes, is written as a running sum over the nodes in
    spill order (a node gives ``min(free, what is still missing after the nodes before it)``),
    which is the same integer arithmetic as filling them one by one.
    """
    n = topology.num_nodes
    free = np.maximum(topology.node_mem_mib - used_mem_mib, 0)
    # Local first, every instance at once (their CPU nodes are distinct): a one-hot of each
    # instance's node picks its free memory and places its take.
    own = cpu_nodes[..., None] == np.arange(n)
    take = np.minimum(inst_mem, (free[..., None, :] * own).sum(axis=-1))
    mem = own * take[..., None]
    missing = inst_mem - take
    if not missing.any():
        return mem
    if cpu_nodes.ndim == 1:  # one VM: spill as a batch of one
        mem, free, missing, cpu_nodes = mem[None], free[None], missing[None], cpu_nodes[None]
    free = free - mem.sum(axis=-2)
    for i in range(cpu_nodes.shape[1]):
        short = np.flatnonzero(missing[:, i])
        if short.size == 0:
            continue
        node = cpu_nodes[short, i]
        room = free[short]
        # Nearest first; among equally distant nodes, the one with most free memory.
        # (np.lexsort is stable: equal nodes stay in index order.)
        spill_order = np.lexsort((-room, topology.distance[node]), axis=-1)
        room = np.take_along_axis(room, spill_order, axis=-1)
        still_missing = missing[short, i, None] - (np.cumsum(room, axis=-1) - room)
        got = np.minimum(np.maximum(still_missing, 0), room)
        mem[short[:, None], i, spill_order] += got
        free[short[:, None], spill_order] -= got
        # Nowhere left: overcommit the instance's own node.
        mem[short, i, node] += missing[short, i] - got.sum(axis=-1)
    return mem[0] if own.ndim == 2 else mem
