"""Replay one host's VM arrivals and departures through a placement policy.

This is the reference replay loop: plain Python over events, one host at a time, calling the
same placement core (:func:`catur.placement.place`) and metrics (:mod:`catur.metrics`) as the
service. It is the yardstick that faster engines must agree with.

Events at the same instant are ordered departures first (a VM leaving frees room for one
arriving at that second), then by VM order in the trace. The one exception is a VM that
departs the instant it arrives: its departure directly follows its own arrival.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError
from catur.metrics import (
    CorClock,
    MetricsConfig,
    Summary,
    cor_after,
    defect,
    defect_at_placement,
    lifetime_mean_cor,
    summarize,
)
from catur.policies import Policy
from catur.request import RequestBatch, VMRequest
# ORACLE and check_policy_name are also imported from here (their home before the adapter).
from catur.sim.batch_policy import (  # noqa: F401
    INTERVENTIONS, ORACLE, ORACLE_ARRIVALS, ORACLE_FORESIGHT, ORACLE_LIFETIME, BatchPolicy, check_policy_name, resolve_policy,
)
from catur.state import HostsState, Placement, apply, release
from catur.traces.events import event_order
from catur.topology import Topology


@dataclass(frozen=True, eq=False)
class HostTrace:
    """The VMs one host receives, as arrays of equal length (one entry per VM).

    ``departure_s`` is NaN for a VM still running at the end; ``vnuma`` is 0 where the VM
    does not ask for a vNUMA count. ``end_s`` is when the trace window closes (running VMs are
    integrated up to it); by default the last arrival or departure.

    ``start_vcpus`` and ``start_mem_mib`` (``int64[N]``, optional) are what the host already
    uses on each node when the trace begins (a start state, :mod:`catur.sim.start_state`):
    resident load that occupies capacity and counts in COR for the whole replay, but is no VM
    of the trace and enters no metric. None: the host starts empty.
    """

    arrival_s: np.ndarray
    departure_s: np.ndarray
    vcpus: np.ndarray
    mem_mib: np.ndarray
    alpha: np.ndarray | None = None
    beta: np.ndarray | None = None
    vnuma: np.ndarray | None = None
    end_s: float | None = None
    start_vcpus: np.ndarray | None = None
    start_mem_mib: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.arrival_s).shape[0]
        fields = {
            "arrival_s": (self.arrival_s, float, None),
            "departure_s": (self.departure_s, float, None),
            "vcpus": (self.vcpus, np.int64, None),
            "mem_mib": (self.mem_mib, np.int64, None),
            "alpha": (self.alpha, float, 1.0),
            "beta": (self.beta, float, 1.0),
            "vnuma": (self.vnuma, np.int64, 0),
        }
        for name, (values, dtype, default) in fields.items():
            if values is None:
                arr = np.full(n, default, dtype=dtype)
            else:
                arr = np.asarray(values, dtype=float)
                if dtype is np.int64:
                    # Refuse what a plain int64 cast would silently truncate (2.5) or choke on (NaN).
                    bad = ~np.isfinite(arr) | (arr != np.round(arr))
                    if bad.any():
                        i = int(np.flatnonzero(bad.ravel())[0])
                        raise CaturError(
                            f"host trace: {name} must be whole numbers, got {arr.ravel()[i]!r} "
                            f"for VM {i}"
                        )
                    arr = arr.astype(np.int64)
            if arr.shape != (n,):
                raise CaturError(f"host trace: {name} has {arr.shape[0]} entries, expected {n}")
            object.__setattr__(self, name, arr)
        if not np.isfinite(self.arrival_s).all():
            raise CaturError("host trace: arrival_s must be finite")
        if np.isinf(self.departure_s).any():
            i = int(np.flatnonzero(np.isinf(self.departure_s))[0])
            raise CaturError(
                f"host trace: departure_s of VM {i} is {self.departure_s[i]}; use NaN for a VM "
                f"still running at the end"
            )
        early = self.departure_s < self.arrival_s
        if early.any():
            i = int(np.flatnonzero(early)[0])
            raise CaturError(
                f"host trace: VM {i} departs at {self.departure_s[i]} before it arrives at "
                f"{self.arrival_s[i]}"
            )
        if self.end_s is None:
            times = np.concatenate([self.arrival_s, self.departure_s[~np.isnan(self.departure_s)]])
            object.__setattr__(self, "end_s", float(times.max()) if times.size else 0.0)
        elif n and self.end_s < self.arrival_s.max():
            raise CaturError(f"host trace: end_s={self.end_s} is before the last arrival")
        if (self.start_vcpus is None) != (self.start_mem_mib is None):
            raise CaturError("host trace: give both start_vcpus and start_mem_mib, or neither")

    def start_state(self, topology: Topology) -> HostsState:
        """The one-host state this trace begins from: its start usage, or an empty host."""
        if self.start_vcpus is None:
            return HostsState(topology, 1)
        return HostsState.from_usage(topology, self.start_vcpus, self.start_mem_mib)

    @property
    def num_vms(self) -> int:
        return int(self.arrival_s.shape[0])

    def request(self, i: int) -> VMRequest:
        vnuma = int(self.vnuma[i])
        return VMRequest(
            int(self.vcpus[i]),
            int(self.mem_mib[i]),
            float(self.alpha[i]),
            float(self.beta[i]),
            vnuma if vnuma > 0 else None,
        )

    def events(self) -> list[tuple[float, int, int]]:
        """``(time, kind, vm)`` in time order (:func:`catur.traces.events.event_order`); kind 0 =
        departure, 1 = arrival."""
        vms, arriving = event_order(self.arrival_s, self.departure_s)
        times = np.where(arriving, self.arrival_s[vms], self.departure_s[vms])
        return list(zip(times.tolist(), arriving.astype(int).tolist(), vms.tolist()))


@dataclass
class HostReplay:
    """Per-VM outcome of replaying one host: placements and defects, in trace order."""

    placements: list[Placement | None] = field(default_factory=list)
    cor_at_placement: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rmr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    placement_defect: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lifetime_defect: np.ndarray = field(default_factory=lambda: np.zeros(0))
    correctable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Decider interventions: shield_interventions, shield_depth1, unshielded, gated
    counters: Counter = field(default_factory=Counter)

    def summary(self, config: MetricsConfig = MetricsConfig()) -> Summary:
        return summarize(self.lifetime_defect, self.placement_defect, config)


def replay_host(
    topology: Topology,
    trace: HostTrace,
    policy: Policy | str | Decider | DeciderSpec,
    seed: int = 0,
    *,
    oracle_k: int = 5,
    correctable_above: float | None = None,
    on_event: Callable[[float, bool, int], None] | None = None,
) -> HostReplay:
    """Run every event of ``trace`` on a host of ``topology`` with ``policy``, starting from
    the trace's start usage (empty unless it has one; :meth:`HostTrace.start_state`).

    ``policy`` is a :class:`~catur.policies.Policy`, a policy name, ``"greedy"``,
    ``"oracle"`` — the k-step oracle (:mod:`catur.sim.oracle`) with look-ahead ``oracle_k`` —
    ``"oracle-lifetime"``, ``"oracle-foresight"`` (lifetimes and the next ``oracle_k`` arrivals) —
    a :class:`~catur.decision.Decider` (model, shield, gate; one recent-request window per
    host, like the service keeps per host id), whose interventions land in ``counters``, or
    any callable ``(topology, used_vcpus, used_mem_mib, request, rng=None) -> Placement``.
    A callable with a true ``uses_residents`` attribute (``resident-greedy``) also gets the
    host's per-node resident counts (``residents=``); one with ``uses_ages`` gets, instead,
    each live VM's instance nodes and age in seconds (``resident_ages=(nodes, ages)``).
    With ``correctable_above`` set (an anomaly threshold), every VM placed with a defect above
    it is checked against the oracle, and :attr:`HostReplay.correctable` marks those the
    oracle would have placed at or below it. ``on_event(time, arriving, vm)`` is called before
    each event is handled, so a callable policy knows which VM it decides for and when (the
    replay through a service sends the VM's id and time, and the departures, from it).
    """
    policy = resolve_policy(policy)
    use_oracle = isinstance(policy, str) and policy in (ORACLE, ORACLE_ARRIVALS)
    sees_departures = policy != ORACLE_ARRIVALS
    foresight = isinstance(policy, str) and policy == ORACLE_FORESIGHT
    knows_lifetimes = isinstance(policy, str) and policy in (ORACLE_LIFETIME, ORACLE_FORESIGHT)
    if knows_lifetimes:
        from catur.sim.oracle import Arrival, KnownHost, LiveVMs, foresight_oracle_place, lifetime_oracle_place
    if use_oracle or foresight or correctable_above is not None:
        from catur.sim.oracle import Lookahead, lookahead_events, oracle_place

        if oracle_k < 1:
            raise CaturError(f"oracle look-ahead k must be >= 1, got {oracle_k}")
    counters: Counter = Counter()
    # Every other form decides through the one adapter, as a batch of one host; a rule that
    # weighs residents by their age (``uses_ages``) needs the live VMs, which only this loop has.
    aged = not use_oracle and getattr(policy, "uses_ages", False)
    decide = None if use_oracle or aged or knows_lifetimes else BatchPolicy(topology, policy, 1, seeds=[seed])
    rng = np.random.default_rng(seed) if aged else None
    host_row = np.zeros(1, dtype=np.int64)
    n = trace.num_vms
    state = trace.start_state(topology)
    clock = CorClock(topology.node_cores, start_s=float(trace.arrival_s.min()) if n else 0.0)
    clock.set_usage(state.used_vcpus[0])  # resident load counts in COR from the start
    out = HostReplay(
        placements=[None] * n,
        cor_at_placement=np.zeros(n),
        rmr=np.zeros(n),
        placement_defect=np.zeros(n),
        lifetime_defect=np.zeros(n),
    )
    cor_integral_at_arrival = np.zeros(n)
    mean_cor = np.zeros(n)
    out.correctable = np.zeros(n, dtype=bool)
    out.counters = counters
    events = trace.events()
    requests = [trace.request(i) for i in range(n)]
    live: dict[int, Placement] = {}

    def oracle_choice(pos: int) -> Placement:
        ahead = lookahead_events(events, pos, oracle_k)
        if not sees_departures:
            ahead = [event for event in ahead if event[0]]
        look = Lookahead(ahead, requests, live)
        return oracle_place(topology, state.used_vcpus[0], state.used_mem_mib[0], look)

    if knows_lifetimes:  # what only the lifetime oracle reads: when each VM leaves, and its COR weight
        leaves = np.where(np.isnan(trace.departure_s), trace.end_s, trace.departure_s)
        # alpha / (vCPUs · lifetime): how a second of COR weighs in a VM's lifetime defect.
        lifetimes = leaves - trace.arrival_s
        cor_weight = np.divide(trace.alpha, trace.vcpus * lifetimes, out=np.zeros(n), where=lifetimes > 0)

    def lifetime_choice(vm: int, t: float, pos: int) -> Placement:
        vms = list(live)
        known = LiveVMs(
            np.array([live[v].node_vcpus(topology.num_nodes) for v in vms], dtype=float).reshape(len(vms), topology.num_nodes),
            leaves[vms], cor_weight[vms],
        )
        if foresight:  # and the next arrivals, the VM in hand first
            arriving = [v for is_arrival, v in lookahead_events(events, pos, oracle_k) if is_arrival]
            node_mem = np.array([live[v].node_mem_mib() for v in vms], dtype=float).reshape(len(vms), topology.num_nodes)
            host = KnownHost(known, node_mem, [
                Arrival(requests[v], float(trace.arrival_s[v]), float(leaves[v]), float(cor_weight[v])) for v in arriving
            ])
            return foresight_oracle_place(topology, state.used_vcpus[0], state.used_mem_mib[0], t, host)
        return lifetime_oracle_place(
            topology, state.used_vcpus[0], state.used_mem_mib[0], requests[vm], t, float(leaves[vm]), float(lifetimes[vm]), known
        )

    def close(vm: int, t: float) -> None:
        placement = out.placements[vm]
        grown = clock.weighted_integral(placement) - cor_integral_at_arrival[vm]
        lifetime = t - trace.arrival_s[vm]
        mean_cor[vm] = lifetime_mean_cor(grown, placement.total_vcpus, lifetime, out.cor_at_placement[vm])

    for pos, (t, kind, vm) in enumerate(events):
        if on_event is not None:
            on_event(float(t), bool(kind == 1), int(vm))
        clock.advance(t)
        if kind == 1:
            request = requests[vm]
            if use_oracle:
                placement = oracle_choice(pos)
            elif knows_lifetimes:
                placement = lifetime_choice(vm, float(t), pos)
            elif aged:
                ages = (
                    [live[v].cpu_nodes for v in live],
                    np.array([t - trace.arrival_s[v] for v in live], dtype=float),
                )
                placement = policy(topology, state.used_vcpus[0], state.used_mem_mib[0], request, rng=rng, resident_ages=ages)
            else:
                decision = decide(
                    state.used_vcpus, state.used_mem_mib, RequestBatch.of(topology, request), host_row, state.residents
                )
                placement = decision.placement(0)
                if decision.counts is not None:
                    for name, count in zip(INTERVENTIONS, decision.counts[0].tolist()):
                        counters[name] += count
            out.cor_at_placement[vm] = cor_after(topology.node_cores, state.used_vcpus[0], placement)
            out.rmr[vm] = placement.rmr()
            if correctable_above is not None:
                placed = defect(request.alpha, request.beta, out.cor_at_placement[vm], out.rmr[vm])
                if placed > correctable_above:
                    better = oracle_choice(pos)
                    out.correctable[vm] = (
                        defect_at_placement(
                            topology.node_cores, state.used_vcpus[0], better, request.alpha, request.beta
                        )
                        <= correctable_above
                    )
            apply(state, 0, placement)
            out.placements[vm] = placement
            live[vm] = placement
            cor_integral_at_arrival[vm] = clock.weighted_integral(placement)
        else:
            close(vm, t)
            release(state, 0, out.placements[vm])
            del live[vm]
        clock.set_usage(state.used_vcpus[0])
    clock.advance(max(trace.end_s, clock.now))
    for vm in np.flatnonzero(np.isnan(trace.departure_s)):
        close(int(vm), clock.now)
    out.placement_defect = defect(trace.alpha, trace.beta, out.cor_at_placement, out.rmr)
    out.lifetime_defect = defect(trace.alpha, trace.beta, mean_cor, out.rmr)
    return out


def compare_policies(
    topology: Topology,
    trace: HostTrace,
    policies: Sequence[str],
    config: MetricsConfig = MetricsConfig(),
    seed: int = 0,
) -> dict[str, Summary]:
    """Replay the same host trace under each policy; summaries by policy name."""
    return {name: replay_host(topology, trace, name, seed).summary(config) for name in policies}
