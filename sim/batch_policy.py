"""Any policy, as one call: decide for a batch of hosts → placements and intervention counts.

A replay can be asked to run a policy in five forms: a ranking :class:`~catur.policies.Policy`,
a policy name, ``"greedy"``, a :class:`~catur.decision.Decider` (or the
:class:`~catur.decision.DeciderSpec` that builds one), or any callable ``(topology,
used_vcpus, used_mem_mib, request, rng=None) -> Placement`` (e.g. a client asking a running
service). :class:`BatchPolicy` is the one place that turns each form into the same call::

    decide = BatchPolicy(topology, "xen", num_hosts=3)
    decision = decide(used_vcpus[B, N], used_mem[B, N], requests, rows)   # rows: host of each row
    decision.placements          # a PlacementBatch, one VM per row
    decision.placement(0)        # row 0 as a named Placement
    decision.counts              # int64[B, 4] shield and gate interventions (a Decider), else None

Both replay engines call it: the batched engine with many hosts of one topology at once
(:mod:`catur.sim.batched`), the reference loop with a batch of one
(:func:`catur.sim.replay.replay_host`); the training environment places its warm-up VMs
through it. Ranking policies, ``greedy`` and deciders run on the whole batch with the
placement core's batched functions, which give each row the same bits as a batch of one.
Policies that draw random numbers (``random``) and plain callables run row by row, each host
with its own generator (seeded per host, drawn in that host's order), so the numbers do not
depend on how hosts are batched. A Decider with a shield deeper than 1 keeps one window of
recent requests per host, as the service keeps one per host id.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, NamedTuple, Sequence

import numpy as np

from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError, unknown_name
from catur.placement import GREEDY, greedy_batch, place_batch, place_instances
from catur.policies import POLICIES, Policy
from catur.request import RequestBatch
from catur.resident import RESIDENT_GREEDY, resident_greedy_batch
from catur.shield import TypeStats
from catur.state import Placement, PlacementBatch
from catur.topology import Topology


ORACLE = "oracle"
# The oracle that knows the next k arrivals but not the departures between them (it plans as
# if nobody left): how much of the oracle's gain comes from knowing who leaves.
ORACLE_ARRIVALS = "oracle-arrivals-only"
# The oracle that knows every VM's lifetime (not the future arrivals) and places each VM where
# the exact lifetime objective is least if nothing else arrived (catur.sim.oracle).
ORACLE_LIFETIME = "oracle-lifetime"
# The oracle that knows every lifetime and the next k arrivals, and minimises the exact
# lifetime objective over them (catur.sim.oracle): what foresight buys on the headline metric.
ORACLE_FORESIGHT = "oracle-foresight"
ORACLES = (ORACLE, ORACLE_ARRIVALS, ORACLE_LIFETIME, ORACLE_FORESIGHT)
# Names that stay names (not ranking policies): the rules and the oracles.
NAMED_RULES = (GREEDY, RESIDENT_GREEDY, *ORACLES)


# How often a Decider's shield and gate stepped in, counted per host by every replay (the
# reference loop, the batched engine, the replay through a service) under these names.
INTERVENTIONS = ("shield_interventions", "shield_depth1", "unshielded", "gated")


def intervention_counters() -> Counter:
    """Zeroed counters of :data:`INTERVENTIONS`, in that order."""
    return Counter(dict.fromkeys(INTERVENTIONS, 0))


def count_interventions(counters: Counter, decision) -> None:
    """Add one decision's interventions (a :class:`~catur.decision.Decision` or the service's
    answer: ``shield_intervened``, ``shield_fallback``, ``gated``)."""
    counters["shield_interventions"] += decision.shield_intervened
    counters["shield_depth1"] += decision.shield_fallback == "depth-1"
    counters["unshielded"] += decision.shield_fallback == "unshielded"
    counters["gated"] += decision.gated


def check_policy_name(name: str) -> None:
    """Raise a :class:`CaturError` listing every valid name if ``name`` is not a policy that
    replay knows: the ranking policies, ``greedy``, ``resident-greedy`` and the oracles."""
    if name not in NAMED_RULES and name not in POLICIES:
        raise unknown_name("policy", name, [*POLICIES, *NAMED_RULES])


def resolve_policy(policy: Policy | str | Decider | DeciderSpec | Callable):
    """The one reading of a policy argument, for every replay engine: a
    :class:`~catur.decision.DeciderSpec` becomes its :class:`~catur.decision.Decider`, a ranking
    policy's name its :class:`~catur.policies.Policy`; ``"greedy"``, ``"resident-greedy"`` and
    the oracles stay names; a Policy, a Decider or any callable ``(topology, used_vcpus, used_mem_mib, request,
    rng=None) -> Placement`` is returned as it is. An unknown name fails, listing the known."""
    if isinstance(policy, DeciderSpec):
        return policy.build()
    if isinstance(policy, str):
        check_policy_name(policy)
        return policy if policy in NAMED_RULES else POLICIES[policy]
    if isinstance(policy, (Policy, Decider)) or callable(policy):
        return policy
    raise CaturError(f"not a policy: {policy!r}")


class BatchDecision(NamedTuple):
    """What :class:`BatchPolicy` decided for a batch: one placement per row, the name of the
    policy that chose each (one name for all rows, or one per row), and a Decider's
    interventions per row (:data:`catur.sim.replay.INTERVENTIONS` order; ``None`` otherwise)."""

    placements: PlacementBatch
    names: str | Sequence[str]
    counts: np.ndarray | None

    def placement(self, i: int) -> Placement:
        """Row ``i`` as a :class:`~catur.state.Placement` named after the policy that chose it."""
        name = self.names if isinstance(self.names, str) else str(self.names[i])
        return self.placements.placement(i, policy=name)


class BatchPolicy:
    """A policy of any form (see the module doc) as one call over a batch of hosts of one
    topology: ``(used_vcpus[B, N], used_mem[B, N], requests, rows) -> BatchDecision``.

    Args:
        topology: The hosts' topology.
        policy: The policy, in any form but ``"oracle"`` (the oracle looks ahead at each host's
            future events: :func:`catur.sim.replay.replay_host` runs it).
        num_hosts: How many hosts ``rows`` may name (for per-host state).
        seeds: Per host, the seed of the generator a random policy or a callable gets
            (default: 0 for every host).
        host_ids: Per host, its number in the caller's list of hosts, passed to a Decider as
            the rows' hosts (default: ``rows`` themselves).
    """

    def __init__(
        self, topology: Topology, policy, num_hosts: int, seeds: Sequence[int] | None = None,
        host_ids: Sequence[int] | None = None,
    ) -> None:
        policy = resolve_policy(policy)
        if isinstance(policy, str) and policy in ORACLES:
            raise CaturError("the oracle looks ahead at each host's events; replay it with catur.sim.replay.replay_host")
        self.topology = topology
        self.policy = policy
        self.counts = isinstance(policy, Decider)
        self.row_by_row = not self.counts and not isinstance(policy, str) and (
            not isinstance(policy, Policy) or policy.needs_rng
        )
        self.deep = self.counts and policy.shield_config is not None and policy.shield_config.depth > 1
        # The deep shield's statistics and callables take VMRequest objects.
        self.needs_requests = self.deep or (self.row_by_row and not isinstance(policy, Policy))
        self.stats = [TypeStats(policy.shield_config.window) for _ in range(num_hosts)] if self.deep else None
        # The caller's number of each host (a Decider's scorer may read it: a population
        # scores each host with its own member); default: the rows' own numbers.
        self.host_ids = None if host_ids is None else np.asarray(host_ids, dtype=np.int64)
        seeds = [0] * num_hosts if seeds is None else list(seeds)
        self.rngs = [np.random.default_rng(s) for s in seeds] if self.row_by_row else None

    def __call__(
        self, used_vcpus: np.ndarray, used_mem: np.ndarray, requests: RequestBatch, rows: np.ndarray,
        residents: np.ndarray | None = None,
    ) -> BatchDecision:
        """Decide for each row; ``residents[B, N]`` (VMs bound to each node, ``None`` = unknown:
        zeros) reach the policies that weigh them (``resident-greedy``, a Decider with a resident
        weight, a callable with a true ``uses_residents`` attribute)."""
        topology, policy = self.topology, self.policy
        if residents is None:
            residents = np.zeros_like(used_vcpus)
        if self.row_by_row:
            return self._row_by_row(used_vcpus, used_mem, requests, rows, residents)
        if isinstance(policy, Policy):
            batch = place_batch(topology, used_vcpus, used_mem, requests.inst_vcpus, requests.inst_mem, policy)
            return BatchDecision(batch, policy.name, None)
        if policy == GREEDY:
            args = (requests.inst_vcpus, requests.inst_mem, requests.alpha, requests.beta)
            return BatchDecision(greedy_batch(topology, used_vcpus, used_mem, *args), GREEDY, None)
        if policy == RESIDENT_GREEDY:
            args = (requests.inst_vcpus, requests.inst_mem, requests.alpha, requests.beta)
            placements = resident_greedy_batch(topology, used_vcpus, used_mem, residents, *args)
            return BatchDecision(placements, RESIDENT_GREEDY, None)
        stats = [self.stats[r] for r in rows] if self.deep else None
        hosts = rows if self.host_ids is None else self.host_ids[rows]
        batch = policy.decide_batch(topology, used_vcpus, used_mem, requests, stats, residents, hosts)
        if self.deep:
            for window, request in zip(stats, requests.requests):
                window.observe(request)
        fallback = batch.fallback
        counts = np.stack([batch.intervened, fallback == "depth-1", fallback == "unshielded", batch.gated], axis=1)
        return BatchDecision(batch.placements, batch.policy, counts.astype(np.int64))

    def _row_by_row(self, used_vcpus, used_mem, requests: RequestBatch, rows: np.ndarray, residents) -> BatchDecision:
        """A random policy or a callable: each row on its own, with its host's generator."""
        if isinstance(self.policy, Policy):  # the requests are split already: place their instances
            chosen = [
                place_instances(self.topology, used_vcpus[i], used_mem[i], (requests.inst_vcpus[i], requests.inst_mem[i]),
                                self.policy, self.rngs[int(r)])
                for i, r in enumerate(rows)
            ]
        else:  # a callable that weighs residents (a client sending them, as a hypervisor would) gets them
            extra = (lambda i: {"residents": residents[i]}) if getattr(self.policy, "uses_residents", False) else (lambda i: {})
            chosen = [
                self.policy(self.topology, used_vcpus[i], used_mem[i], request, rng=self.rngs[int(r)], **extra(i))
                for i, (request, r) in enumerate(zip(requests.requests, rows))
            ]
        batch = PlacementBatch(
            np.stack([p.cpu_nodes for p in chosen]), np.stack([p.vcpus for p in chosen]),
            np.stack([p.mem_mib for p in chosen]),
        )
        return BatchDecision(batch, [p.policy for p in chosen], None)


__all__ = [
    "BatchDecision", "BatchPolicy", "NAMED_RULES", "ORACLE", "ORACLES", "ORACLE_ARRIVALS", "ORACLE_FORESIGHT", "ORACLE_LIFETIME",
]
