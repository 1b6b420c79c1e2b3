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
objective can lose to greedy (docs/results/policy-quality.md). The lifetime oracle knows when every VM on the
host will leave (and when the VM in hand will), and for each candidate of the after-state
scorer's own set (the four primitives, every single node, one node set per socket) it computes
exactly how much the lifetime-averaged defects of the VM in hand and of every VM already there
would add up to from now on, *if no other VM arrived*; it takes the least. It does not know
future arrivals, so it is a yardstick of the value of lifetimes, not a bound on the metric.

**The foresight oracle** (:func:`foresight_oracle_place`) knows both: every lifetime and the
next ``k`` arrivals (the VM in hand included). For each candidate of the VM in hand it searches
every sequence of the four primitives for the other ``k − 1`` arrivals and scores each sequence
by the exact lifetime defect all of them and every VM already there would accrue from now on
if nothing else arrived (:func:`foresight_cost`); the candidate with the least best sequence
wins, and it plans again at the next arrival. With ``k = 1`` it is the lifetime oracle. It
optimises the headline metric itself over a horizon of ``k`` arrivals, so it is the yardstick
of what foresight buys that the k-step oracle (which minimises defect at placement) is not.
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


def _candidates(topology: Topology, used_vcpus, used_mem_mib, request: VMRequest):
    """The after-state scorer's candidate set for ``request`` on one host (residents unused:
    the oracles know the VMs themselves)."""
    batch = RequestBatch.of(topology, request)
    return afterstate_candidates(
        topology, used_vcpus[None], used_mem_mib[None], np.zeros((1, topology.num_nodes)), batch.vcpus, batch.alpha,
        batch.beta, batch.inst_vcpus, batch.inst_mem,
    )


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
    wide = _candidates(topology, used_vcpus, used_mem_mib, request)
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


# --- the foresight oracle: lifetimes and the next arrivals ----------------------------------------


@dataclass(frozen=True)
class Arrival:
    """A VM the foresight oracle knows will arrive (the first one is the VM in hand): its
    request, when it arrives and leaves, and the weight of its COR in its lifetime defect
    (``alpha / (vCPUs · lifetime)``; 0 for a VM that leaves as it arrives)."""

    request: VMRequest
    arrival_s: float
    leaves_s: float
    weight: float


@dataclass(frozen=True)
class KnownHost:
    """What the foresight oracle knows of the host now: the VMs on it (``live``, with their
    memory per node ``node_mem_mib[U, N]`` so later arrivals see the memory they free) and
    the next arrivals."""

    live: LiveVMs
    node_mem_mib: np.ndarray
    arrivals: list[Arrival]


def foresight_cost(
    topology: Topology, used_vcpus: np.ndarray, now: float, known: KnownHost, placements: list[Placement]
) -> float:
    """The exact lifetime defect still to accrue from ``now`` by every VM on the host and every
    known arrival placed as ``placements`` (one per arrival, in order), if nothing else arrives.

    Usage is piecewise constant between the boundaries (``now``, every departure, every
    arrival); in each segment node ``n``'s COR weighs ``Σ weight · vCPUs on n`` over the VMs
    present, and load ``used_vcpus`` holds that no known VM accounts for (a start state) stays.
    A VM that leaves as it arrives adds its defect at placement; every arrival adds
    ``beta · RMR``, fixed by its placement.
    """
    n = topology.num_nodes
    live = known.live
    new_x = np.array([p.node_vcpus(n) for p in placements], dtype=float).reshape(len(placements), n)
    starts = np.array([a.arrival_s for a in known.arrivals[: len(placements)]], dtype=float)
    ends = np.array([max(a.leaves_s, a.arrival_s) for a in known.arrivals[: len(placements)]], dtype=float)
    weights = np.array([a.weight for a in known.arrivals[: len(placements)]], dtype=float)
    live_ends = np.maximum(live.departure_s, now)
    bounds = np.unique(np.concatenate([[now], live_ends, np.maximum(starts, now), np.maximum(ends, now)]))
    mids = bounds[:-1]
    # Presence per segment: live VMs until they leave, arrivals from arrival to departure.
    live_on = mids[:, None] < live_ends[None, :]  # [m, U]
    new_on = (mids[:, None] >= starts[None, :]) & (mids[:, None] < ends[None, :])  # [m, A]
    untracked = used_vcpus - live.node_vcpus.sum(axis=0)
    usage = untracked[None, :] + live_on @ live.node_vcpus + new_on @ new_x  # [m, N]
    weight = live_on @ (live.weight[:, None] * live.node_vcpus) + new_on @ (weights[:, None] * new_x)  # [m, N]
    cost = float((np.diff(bounds)[:, None] * node_cor(topology.node_cores, usage) * weight).sum())
    for a, placement in zip(known.arrivals, placements):
        cost += a.request.beta * placement.rmr()
        if a.weight == 0.0:  # leaves as it arrives: the COR part of its defect at placement
            segment = int(np.searchsorted(bounds, max(a.arrival_s, now), side="right")) - 1
            present = usage[segment] if segment < len(mids) else untracked
            cost += defect_at_placement(topology.node_cores, present, placement, a.request.alpha, 0.0)
    return cost


def _usage_at(used_vcpus, used_mem_mib, now: float, known: KnownHost, placed: list[Placement], t: float):
    """Per-node vCPUs and MiB at time ``t`` (an arrival): minus the live VMs gone by then, plus
    the arrivals already placed that are still there."""
    gone = np.maximum(known.live.departure_s, now) <= t
    vcpus = used_vcpus - known.live.node_vcpus[gone].sum(axis=0)
    mem = used_mem_mib - known.node_mem_mib[gone].sum(axis=0)
    for a, p in zip(known.arrivals, placed):
        if a.arrival_s <= t < max(a.leaves_s, a.arrival_s):
            vcpus = vcpus + p.node_vcpus(len(vcpus))
            mem = mem + p.node_mem_mib()
    return vcpus, mem


def foresight_costs(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, now: float, known: KnownHost
):
    """``(candidates, cost float[C])``: per candidate of the after-state set for the VM in hand
    (``known.arrivals[0]``), the least :func:`foresight_cost` over the four primitives'
    placements of every later known arrival (an exhaustive search; branches whose placements
    are identical are explored once). Invalid candidates cost ``inf``."""
    first = known.arrivals[0]
    wide = _candidates(topology, used_vcpus, used_mem_mib, first.request)
    used_vcpus = np.asarray(used_vcpus, dtype=float)

    def search(placed: list[Placement]) -> float:
        if len(placed) == len(known.arrivals):
            return foresight_cost(topology, used_vcpus, now, known, placed)
        arrival = known.arrivals[len(placed)]
        vcpus, mem = _usage_at(used_vcpus, used_mem_mib, now, known, placed, arrival.arrival_s)
        choices = _distinct_choices(topology, np.rint(vcpus).astype(np.int64), mem, arrival.request)
        return min(search([*placed, choice]) for choice in choices)

    costs = np.full(wide.valid.shape[1], np.inf)
    seen: list[tuple[Placement, float]] = []
    for column in np.flatnonzero(wide.valid[0]):
        candidate = wide.placements.placement((0, int(column)))
        same = next((cost for p, cost in seen if _same(p, candidate)), None)
        costs[column] = same if same is not None else search([candidate])
        if same is None:
            seen.append((candidate, costs[column]))
    return wide, costs


def foresight_oracle_place(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, now: float, known: KnownHost
) -> Placement:
    """The foresight oracle's placement for the VM in hand: the candidate of least
    :func:`foresight_costs` (ties: the first column, so primitives first)."""
    wide, cost = foresight_costs(topology, used_vcpus, used_mem_mib, now, known)
    best = wide.placements.placement((0, int(np.argmin(cost))))
    return Placement(best.cpu_nodes, best.vcpus, best.mem_mib, "oracle-foresight")
