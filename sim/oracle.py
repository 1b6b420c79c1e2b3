"""The k-step oracle: the best primitive sequence for a host's next k arrivals, known in advance.

At each arrival the oracle looks at the next ``k`` arrivals on the same host (the VM in hand
included, and the departures between them), tries every sequence of the four primitives for
them, and keeps the first decision of the sequence whose placed VMs have the smallest total
defect at placement. Ties go to the smaller defect of the VM in hand, then to the primitive
listed first. With ``k = 1`` it is the deployable ``greedy`` policy; with ``k > 1`` it needs
the future, so it is an upper bound for evaluation, not a policy to deploy.

Branches whose placements are identical are explored once (primitives often agree), which
keeps the exhaustive ``4^k`` search affordable in practice.

The oracle also defines **correctable anomalies**: an anomaly (a VM placed with defect above
the threshold) that the oracle, from the same state with the same knowledge of the next ``k``
arrivals, would have placed at or below the threshold.

**The lifetime oracle** (:func:`lifetime_oracle_place`) answers another question: what would
knowing every *lifetime* buy? The k-step oracle minimises defect *at placement*, while the
headline metric averages each VM's defect over its life, so a longer horizon of the wrong
objective can lose to greedy (BENCHMARKS.md). The lifetime oracle knows when every VM on the
host will leave (and when the VM in hand will), and for each candidate of the after-state
scorer's own set (the four primitives, every single node, one node set per socket) it computes
exactly how much the lifetime-averaged defects of the VM in hand and of every VM already there
would add up to from now on, *if no other VM arrived*; it takes the least. It does not know
future arrivals, so it is a yardstick of the value of lifetimes, not a bound on the metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.afterstate import afterstate_candidates
from catur.errors import CaturError
from catur.metrics import defect_at_placement, node_cor
from catur.placement import primitive_placements
from catur.policies import PRIMITIVES
from catur.request import RequestBatch, VMRequest
from catur.state import Placement
from catur.topology import Topology


@dataclass(frozen=True)
class Lookahead:
    """What the oracle knows: upcoming events ``(is_arrival, vm)`` starting with the VM in hand.

    ``requests`` and ``alpha``/``beta`` are per VM of the host trace; ``placed`` holds the
    placements of VMs already on the host (for departures inside the look-ahead).
    """

    events: list[tuple[bool, int]]
    requests: list
    placed: dict[int, Placement]


def _same(a: Placement, b: Placement) -> bool:
    return np.array_equal(a.cpu_nodes, b.cpu_nodes) and np.array_equal(a.mem_mib, b.mem_mib)


def _grouped_choices(topology, used_vcpus, used_mem, request) -> list[tuple[Placement, list[int]]]:
    """Distinct placements the primitives make, each with the primitive indices that make it."""
    groups: list[tuple[Placement, list[int]]] = []
    for index, candidate in enumerate(primitive_placements(topology, used_vcpus, used_mem, request).values()):
        for choice, members in groups:
            if _same(candidate, choice):
                members.append(index)
                break
        else:
            groups.append((candidate, [index]))
    return groups


def _distinct_choices(topology, used_vcpus, used_mem, request) -> list[Placement]:
    """One placement per primitive, duplicates dropped (first primitive kept)."""
    return [choice for choice, _ in _grouped_choices(topology, used_vcpus, used_mem, request)]


def _search(topology: Topology, used_vcpus, used_mem, look: Lookahead, pos: int, branch: dict) -> float:
    """Least total defect of the arrivals in ``look.events[pos:]`` from this usage."""
    while pos < len(look.events) and not look.events[pos][0]:
        vm = look.events[pos][1]
        placement = branch.get(vm) or look.placed.get(vm)
        if placement is not None:
            used_vcpus = used_vcpus.copy()
            used_vcpus[placement.cpu_nodes] -= placement.vcpus
            used_mem = used_mem - placement.node_mem_mib()
        pos += 1
    if pos >= len(look.events):
        return 0.0
    vm = look.events[pos][1]
    request = look.requests[vm]
    best = np.inf
    for choice in _distinct_choices(topology, used_vcpus, used_mem, request):
        cost = defect_at_placement(topology.node_cores, used_vcpus, choice, request.alpha, request.beta)
        if cost >= best:
            continue  # defects are >= 0, so this branch cannot win
        next_vcpus = used_vcpus.copy()
        next_vcpus[choice.cpu_nodes] += choice.vcpus
        branch[vm] = choice
        cost += _search(topology, next_vcpus, used_mem + choice.node_mem_mib(), look, pos + 1, branch)
        del branch[vm]
        best = min(best, cost)
    return best


def _first_choices(topology: Topology, used_vcpus, used_mem_mib, look: Lookahead):
    """For each distinct first placement of the VM in hand: (placement, primitive indices,
    its own defect, the least total defect of the look-ahead's arrivals that starts with it)."""
    if not look.events or not look.events[0][0]:
        raise CaturError("the oracle's look-ahead must start with the arrival to place")
    vm = look.events[0][1]
    request = look.requests[vm]
    out = []
    for choice, members in _grouped_choices(topology, used_vcpus, used_mem_mib, request):
        first = defect_at_placement(topology.node_cores, used_vcpus, choice, request.alpha, request.beta)
        next_vcpus = used_vcpus.copy()
        next_vcpus[choice.cpu_nodes] += choice.vcpus
        rest = _search(topology, next_vcpus, used_mem_mib + choice.node_mem_mib(), look, 1, {vm: choice})
        out.append((choice, members, first, first + rest))
    return out


def oracle_place(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, look: Lookahead
) -> Placement:
    """The oracle's placement for the VM in hand (``look.events[0]``, an arrival)."""
    best = min(_first_choices(topology, used_vcpus, used_mem_mib, look), key=lambda c: (c[3], c[2]))
    return Placement(best[0].cpu_nodes, best[0].vcpus, best[0].mem_mib, "oracle")


def lookahead_costs(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, look: Lookahead
) -> np.ndarray:
    """``float[4]``: per primitive, the least total defect at placement of the look-ahead's
    arrivals when the VM in hand goes where that primitive puts it (the oracle's value of
    each action; its argmin is the oracle's choice up to tie-breaking). Used to teach a
    policy what a choice costs later (:mod:`catur.training.train`'s oracle warm start)."""
    costs = np.empty(len(PRIMITIVES))
    for _, members, _, total in _first_choices(topology, used_vcpus, used_mem_mib, look):
        costs[members] = total
    return costs


def lookahead_events(events: list[tuple[float, int, int]], pos: int, k: int) -> list[tuple[bool, int]]:
    """From ``events[pos]`` (an arrival), the events up to and including the k-th arrival."""
    out: list[tuple[bool, int]] = []
    arrivals = 0
    for _, kind, vm in events[pos:]:
        out.append((kind == 1, vm))
        arrivals += kind == 1
        if arrivals == k:
            break
    return out


@dataclass(frozen=True)
class LiveVMs:
    """What the lifetime oracle knows of the VMs on the host: ``node_vcpus[U, N]``, when each
    leaves (``departure_s[U]``, the window's end for those that stay) and the weight of its
    COR in its lifetime defect, ``alpha / (vCPUs · lifetime)`` (``weight[U]``)."""

    node_vcpus: np.ndarray
    departure_s: np.ndarray
    weight: np.ndarray


def lifetime_costs(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    now: float,
    leaves_s: float,
    lifetime_s: float,
    live: LiveVMs,
):
    """``(candidates, cost float[C])``: per candidate of the after-state set, the sum of the
    lifetime defects still to accrue from ``now`` — the VM in hand's (it leaves at ``leaves_s``
    after ``lifetime_s`` in all) and every live VM's — if nothing else arrives. Invalid
    candidates cost ``inf``.

    The host's usage is piecewise constant between departures: segment ``j`` runs from
    boundary ``b[j]`` to ``b[j + 1]`` (``b[0] = now``, then every departure time), with the
    live VMs that have not left yet, plus the candidate while the VM in hand stays. A VM's
    COR integral up to its departure is the cumulative sum of ``Δt · COR`` over the segments
    before it.
    """
    batch = RequestBatch.of(topology, request)
    zeros = np.zeros((1, topology.num_nodes))
    wide = afterstate_candidates(
        topology, used_vcpus[None], used_mem_mib[None], zeros, batch.vcpus, batch.alpha, batch.beta,
        batch.inst_vcpus, batch.inst_mem,
    )
    x = wide.placements.node_vcpus(topology.num_nodes)[0]  # [C, N]
    bounds = np.unique(np.concatenate([[now, max(leaves_s, now)], np.maximum(live.departure_s, now)]))
    ends = np.searchsorted(bounds, np.maximum(live.departure_s, now))  # segments each live VM lives
    own_end = int(np.searchsorted(bounds, max(leaves_s, now)))
    # Usage before the candidate in each segment: minus the VMs gone by its start.
    gone = np.zeros((len(bounds), topology.num_nodes))
    np.add.at(gone, ends, live.node_vcpus)
    base = used_vcpus[None, :] - np.cumsum(gone, axis=0)[:-1]  # [m, N]
    present = (np.arange(len(bounds) - 1) < own_end)[None, :, None]  # the VM in hand stays
    cor = node_cor(topology.node_cores, base[None] + x[:, None, :] * present)  # [C, m, N]
    dt = np.diff(bounds)
    integral = np.concatenate([np.zeros((x.shape[0], 1, x.shape[1])), np.cumsum(dt[None, :, None] * cor, axis=1)], axis=1)
    residents = (integral[:, ends, :] * live.node_vcpus[None]).sum(axis=-1) @ live.weight  # [C]
    if lifetime_s > 0:
        own = request.alpha / request.vcpus / lifetime_s * (integral[:, own_end, :] * x).sum(axis=-1)
        own = own + request.beta * wide.rmr[0]
    else:  # a VM that leaves as it arrives keeps its defect at placement
        own = wide.defect[0]
    return wide, np.where(wide.valid[0], residents + own, np.inf)


def lifetime_oracle_place(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    now: float,
    leaves_s: float,
    lifetime_s: float,
    live: LiveVMs,
) -> Placement:
    """The lifetime oracle's placement (see the module doc): the candidate of least
    :func:`lifetime_costs` (ties: the first column, so primitives first)."""
    wide, cost = lifetime_costs(topology, used_vcpus, used_mem_mib, request, now, leaves_s, lifetime_s, live)
    best = wide.placements.placement((0, int(np.argmin(cost))))
    return Placement(best.cpu_nodes, best.vcpus, best.mem_mib, "oracle-lifetime")
