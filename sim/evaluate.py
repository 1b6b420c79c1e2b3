"""Offline evaluation: replay an admitted trace window under several policies and compare them.

The pipeline, one way: canonical trace → :func:`~catur.sim.admission.admit` (hosts) →
:func:`~catur.sim.admission.host_streams` (one event stream per host, for a window) → for each
policy, :func:`~catur.sim.replay.replay_host` on every host → per-VM defects → one
:class:`~catur.metrics.Summary` per policy.

Hosts are independent after admission, so hosts are replayed in parallel worker processes
(``jobs``); results are merged in host order, so the numbers do not depend on ``jobs``.
Within a worker, the hosts of a task are replayed together by the batched engine
(:mod:`catur.sim.batched`, identical results) wherever the policy allows it;
``CATUR_ENGINE=reference`` forces the one-host reference loop everywhere.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from catur.decision import DeciderSpec
from catur.errors import CaturError
from catur.metrics import MetricsConfig, Summary, summarize
from catur.policies import Policy
from catur.sim.admission import SECONDS_PER_DAY, Admission, HostStream
from catur.sim.distributed import check_engine
from catur.sim.batched import batchable, engine_name, replay_batched
from catur.sim.batch_policy import check_policy_name
from catur.sim.replay import replay_host
from catur.verdict import Comparison, compare, host_sums


@dataclass
class PolicyResult:
    """One policy's outcome over the counted VMs of a window, in trace-row order."""

    name: str
    summary: Summary
    rows: np.ndarray  # trace row of each counted VM
    lifetime_defect: np.ndarray
    placement_defect: np.ndarray
    extra: dict = field(default_factory=dict)  # e.g. correctable anomalies


class HostResult(NamedTuple):
    """One host's part of a policy's result: its counted VMs, by trace row."""

    rows: np.ndarray  # trace row of each counted VM
    lifetime_defect: np.ndarray
    placement_defect: np.ndarray
    correctable: int  # how many were correctable anomalies (0 unless they were counted)
    counters: dict  # the decider's interventions (empty for a plain policy)

    @classmethod
    def of(cls, stream: HostStream, replay) -> "HostResult":
        """The counted VMs of ``stream`` from its :class:`~catur.sim.replay.HostReplay`."""
        keep = stream.counted
        return cls(stream.rows[keep], replay.lifetime_defect[keep], replay.placement_defect[keep],
                   int(replay.correctable[keep].sum()), dict(replay.counters))


def _replay_streams(task: tuple) -> list[HostResult]:
    """Worker: replay some hosts under one policy; one :class:`HostResult` per host."""
    streams, policy, seed, correctable_above, oracle_k = task
    if engine_name() == "batched" and batchable(policy, correctable_above):
        # All hosts of the task at once (catur.sim.batched); identical numbers, much faster.
        results = replay_batched([(stream.topology, stream.trace) for stream in streams], policy)
    else:
        results = [
            replay_host(
                stream.topology,
                stream.trace,
                policy,
                seed=seed + stream.host,
                oracle_k=oracle_k,
                correctable_above=correctable_above,
            )
            for stream in streams
        ]
    return [HostResult.of(stream, result) for stream, result in zip(streams, results)]


def policy_label(policy: str | DeciderSpec | Policy) -> str:
    """The name a policy has in reports: a name as given, or a DeciderSpec's or a
    :class:`~catur.policies.Policy`'s own name (a policy of your own is reported by its name)."""
    return policy.name if isinstance(policy, (DeciderSpec, Policy)) else policy


def _chunks(streams: list[HostStream], parts: int) -> list[list[HostStream]]:
    """Split hosts into ``parts`` lists of about equal VM counts (largest first, greedy)."""
    parts = max(1, min(parts, len(streams)))
    buckets: list[list[HostStream]] = [[] for _ in range(parts)]
    load = np.zeros(parts)
    for stream in sorted(streams, key=lambda s: -s.trace.num_vms):
        i = int(load.argmin())
        buckets[i].append(stream)
        load[i] += stream.trace.num_vms
    return [b for b in buckets if b]


def _tasks_per_policy(jobs: int, policies: int) -> int:
    """Into how many host chunks each policy's replay is cut. The batched engine runs fastest
    with many hosts per task, so hosts are cut only as finely as keeping every worker busy
    needs: about two tasks per worker in all (every policy gets at least one chunk)."""
    return 1 if jobs <= 1 else max(1, -(-2 * jobs // max(policies, 1)))


def evaluate_policies(
    streams: list[HostStream],
    policies: Sequence[str | DeciderSpec],
    *,
    jobs: int | None = None,
    seed: int = 0,
    config: MetricsConfig = MetricsConfig(),
    progress: Callable[[int], None] | None = None,
    count_correctable: bool = False,
    oracle_k: int = 5,
    engine: str = "local",
    ray_address: str | None = None,
) -> dict[str, PolicyResult]:
    """Replay every host stream under each policy (names as in ``catur policies``, plus
    ``greedy`` and ``oracle``).

    ``progress(n)`` is called with the number of VM placements just finished, for a progress
    bar. ``jobs`` defaults to the CPU count; ``jobs=1`` runs in this process. With
    ``count_correctable``, each result's ``extra["correctable_anomalies"]`` counts the
    anomalies the ``oracle_k``-step oracle would have avoided (costly: use few hosts).

    ``engine="ray"`` runs the same tasks on Ray (:mod:`catur.sim.distributed`): a local
    instance with ``jobs`` CPUs, or the cluster at ``ray_address`` (``HOST:PORT`` or ``auto``),
    whose CPU count then sizes the tasks unless ``jobs`` is given. Results are merged the
    same way, so both engines give identical numbers.
    """
    # A name given twice is evaluated once; a DeciderSpec goes by its report name.
    by_name = {policy_label(p): p for p in policies}
    policies = list(by_name)
    for name, policy in by_name.items():
        if isinstance(policy, str):
            check_policy_name(name)  # fail fast, before any work, on an unknown name
    if not any(stream.counted.any() for stream in streams):
        raise CaturError("nothing to evaluate: no admitted VM arrives in the window")
    check_engine(engine)
    ray_engine = None
    if engine == "ray":
        from catur.sim.distributed import RayEngine

        ray_engine = RayEngine(ray_address, num_cpus=jobs)  # connects now: a bad address fails before any work
        jobs = jobs or ray_engine.cpus
    jobs = jobs or os.cpu_count() or 1
    tasks_per_policy = _tasks_per_policy(jobs, len(policies))
    chunks = _chunks(streams, tasks_per_policy)  # one list per chunk, shared by every policy's task
    tasks = [
        (chunk, by_name[name], seed, config.anomaly_threshold if count_correctable else None, oracle_k)
        for name in policies
        for chunk in chunks
    ]
    parts: dict[str, list] = {name: [] for name in policies}
    # Each engine yields (task index, result); Ray in the order tasks finish. The merge below
    # sorts by trace row and sums counters, so the order does not change any number.
    if ray_engine is not None:
        results = ray_engine.map(_replay_streams, tasks)
    elif jobs == 1:
        results = enumerate(map(_replay_streams, tasks))
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        results = enumerate(pool.map(_replay_streams, tasks))
    try:
        for i, result in results:
            chunk, policy = tasks[i][:2]
            parts[policy_label(policy)].extend(result)
            if progress:
                progress(sum(s.trace.num_vms for s in chunk))
    finally:
        if ray_engine is not None:
            results.close()  # cancels tasks still pending after an error
            ray_engine.close()
        elif jobs != 1:
            pool.shutdown(cancel_futures=True)
    out = {}
    for name in policies:
        out[name] = merge_host_results(name, parts[name], config)
        if count_correctable:
            out[name].extra["correctable_anomalies"] = sum(p.correctable for p in parts[name])
    return out


def merge_host_results(name: str, parts: list[HostResult], config: MetricsConfig) -> PolicyResult:
    """One policy's per-host parts merged in trace-row order and summarised, so the result
    does not depend on how hosts were split. The deciders' counters are summed into
    ``extra`` (how often the shield and the gate stepped in, warm-up included)."""
    rows = np.concatenate([p.rows for p in parts])
    order = np.argsort(rows, kind="stable")
    lifetime = np.concatenate([p.lifetime_defect for p in parts])[order]
    at_placement = np.concatenate([p.placement_defect for p in parts])[order]
    result = PolicyResult(name, summarize(lifetime, at_placement, config), rows[order], lifetime, at_placement)
    for part in parts:
        for key, value in part.counters.items():
            result.extra[key] = result.extra.get(key, 0) + int(value)
    return result


@dataclass
class Evaluation:
    """Everything ``catur evaluate`` reports: the scenario and each policy's result.

    ``trace`` (the canonical trace evaluated, ``None`` when it was streamed) and ``origin_s``
    (the start of day 1) are what the per-day table and plots need; they are not in the JSON.
    """

    scenario: dict
    results: dict[str, PolicyResult]
    trace: pd.DataFrame | None = field(default=None, repr=False)
    origin_s: float | None = None
    # With a baseline (``catur evaluate --baseline``): each policy against it, host by host.
    versus: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The documented JSON shape: ``{"scenario": {...}, "policies": {NAME: {...}}}``."""
        policies = {}
        for name, result in self.results.items():
            entry = result.summary.to_dict()
            entry.update(result.extra)
            if name in self.versus:
                entry["versus_baseline"] = self.versus[name].to_dict()
            policies[name] = entry
        return {"scenario": self.scenario, "policies": policies}

    def per_day(self, df: pd.DataFrame, origin_s: float) -> pd.DataFrame:
        """Per policy and arrival day: mean lifetime defect and anomaly count."""
        frames = []
        arrival = df["arrival_s"].to_numpy(float)
        for name, result in self.results.items():
            day = ((arrival[result.rows] - origin_s) // SECONDS_PER_DAY).astype(int) + 1
            frame = pd.DataFrame(
                {
                    "policy": name,
                    "day": day,
                    "defect": result.lifetime_defect,
                    "anomaly": result.placement_defect > self.scenario["anomaly_threshold"],
                }
            )
            frames.append(frame.groupby(["policy", "day"], as_index=False).agg(
                avg_defect=("defect", "mean"), anomalies=("anomaly", "sum"), vms=("defect", "size")
            ))
        return pd.concat(frames, ignore_index=True)


def versus_baseline(results: dict[str, PolicyResult], streams: list[HostStream], baseline: str) -> dict[str, Comparison]:
    """Every policy against ``baseline`` on the same hosts: the paired bootstrap over hosts of
    :mod:`catur.verdict` (hosts are the unit: VMs on one host share their nodes). A row
    replayed on a sample of the hosts (the oracle's) is compared on its sample only."""
    if baseline not in results:
        raise CaturError(f"--baseline {baseline}: not among the evaluated policies ({', '.join(results)})")
    _, base_vms, base_sums = host_sums(streams, results[baseline].rows, results[baseline].lifetime_defect)
    out = {}
    for name, result in results.items():
        _, vms, sums = host_sums(streams, result.rows, result.lifetime_defect)
        on = vms > 0  # the hosts this row replayed
        if not on.any():
            continue
        out[name] = compare(vms[on], sums[on], base_sums[on], baseline)
    return out


def admission_summary(admission: Admission) -> dict:
    """Scenario facts about the cluster: hosts per topology, rejected VMs."""
    counts: dict[str, int] = {}
    for topology in admission.hosts:
        counts[topology.name] = counts.get(topology.name, 0) + 1
    return {"hosts": admission.num_hosts, "hosts_by_topology": counts, "rejected_vms": admission.rejected}
