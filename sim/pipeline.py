"""The one evaluation entry point: a workload and some policies in, an :class:`Evaluation` out.

::

    from catur.sim.pipeline import EvaluateOptions, evaluate
    from catur.sim.workload import Workload

    evaluation = evaluate(Workload("trace.csv.gz", days="16:31"), ["xen", "greedy"],
                          EvaluateOptions(jobs=2, oracle_hosts=4))
    print(evaluation.to_json()["policies"]["greedy"]["avg_defect"])

:func:`evaluate` owns every way a workload is evaluated, so ``catur evaluate``, ``catur demo``,
``catur replay`` and the retraining job all run the same code:

* **whole**: the trace is read into memory (:meth:`Workload.read`), admitted and cut to the
  window (:meth:`Workload.scenario`), and every policy replays every host
  (:func:`catur.sim.evaluate.evaluate_policies`);
* **oracle sample** (``oracle_hosts``): the k-step oracle, and each policy's correctable
  anomalies, on a few randomly sampled hosts (the oracle is exhaustive, hence the sample);
* **streamed**: a partitioned directory is evaluated a batch of clusters at a time
  (:func:`catur.sim.streaming.evaluate_streamed`), with identical numbers;
* **external rows** (:class:`ExternalPolicy`): a row replayed outside the engine — through a
  running placement service (:func:`catur.sim.remote_replay.replay_remote`) — on the same
  admitted hosts, reported in the same table.

The scenario facts of the JSON output (what was replayed, on what, how) are assembled here
too (:func:`scenario_facts`). Nothing here parses arguments or prints results: the CLI turns
options into a :class:`Workload` and :class:`EvaluateOptions`, calls :func:`evaluate`, and
prints. Dependencies point one way: CLI → pipeline → engine.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from catur.decision import DeciderSpec
from catur.errors import CaturError
from catur.metrics import MetricsConfig
from catur.policy_model import weights_sha256
from catur.sim.admission import HostStream, Scenario, parse_days
from catur.sim.distributed import check_engine
from catur.sim.evaluate import Evaluation, PolicyResult, admission_summary, evaluate_policies, policy_label, versus_baseline
from catur.sim.batch_policy import ORACLE, check_policy_name
from catur.sim.streaming import StreamConfig
from catur.sim.workload import Workload


@dataclass(frozen=True)
class EvaluateOptions:
    """How an evaluation runs (what it runs on is the :class:`Workload`).

    Attributes:
        jobs: Worker processes (``None``: the CPU count; with Ray, the cluster's CPUs).
        metrics: Anomaly threshold and ticket sigmoid.
        oracle_hosts: Also run the k-step oracle, and count correctable anomalies, on this many
            randomly sampled hosts (0 = off). Not available for a streamed trace.
        oracle_k: The oracle's look-ahead in arrivals, the VM in hand included.
        engine: ``"local"`` worker processes or ``"ray"`` (:mod:`catur.sim.distributed`).
        ray_address: The Ray cluster to join (``None``: a private local instance).
        batch_vms: VMs read and replayed at once from a partitioned (streamed) trace.
        baseline: Compare every policy with this one, host by host (the paired bootstrap of
            :mod:`catur.verdict`): ``Evaluation.versus``, a column of the table and
            ``versus_baseline`` in the JSON. It is evaluated too if not among the policies.
        progress: Show progress bars on standard error.
        log: Where notes go (e.g. how many malformed rows were skipped); ``None`` = nowhere.
    """

    jobs: int | None = None
    metrics: MetricsConfig = MetricsConfig()
    oracle_hosts: int = 0
    oracle_k: int = 5
    engine: str = "local"
    ray_address: str | None = None
    batch_vms: int = StreamConfig.batch_vms
    baseline: str | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.oracle_hosts < 0 or self.oracle_k < 1:
            raise CaturError(
                f"--oracle-hosts must be >= 0 and --oracle-k >= 1, got {self.oracle_hosts} and {self.oracle_k}"
            )
        if self.jobs is not None and self.jobs < 1:
            raise CaturError(f"--jobs must be >= 1, got {self.jobs}")
        check_engine(self.engine)
        if self.engine != "ray" and self.ray_address:
            raise CaturError(f"--ray-address {self.ray_address} needs --engine ray")

    def bar(self, total: int, desc: str, leave: bool = True):
        """A progress bar over VMs (silent when ``progress`` is off or stderr is no terminal)."""
        from tqdm import tqdm

        return tqdm(total=total, unit="VM", desc=desc, disable=not self.progress or None, file=sys.stderr, leave=leave)

    def note(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


@dataclass
class Prepared:
    """A workload read whole and admitted: the trace, its label and the scenario."""

    workload: Workload
    df: pd.DataFrame
    scenario: Scenario

    @property
    def origin_s(self) -> float:
        """Start of day 1 (the per-day plots count days from it)."""
        return parse_days(None, self.df)[0]


@dataclass(frozen=True)
class ExternalPolicy:
    """A row replayed outside the engine, on the same admitted hosts: ``replay(prepared,
    progress)`` returns its :class:`PolicyResult` (``progress(n)`` after ``n`` VMs)."""

    name: str
    replay: Callable[[Prepared, Callable[[int], None]], PolicyResult]
    desc: str = "replaying"


def prepare(workload: Workload, options: EvaluateOptions = EvaluateOptions()) -> Prepared:
    """Read ``workload`` whole, admit it and cut its window."""
    df, skipped = workload.read()
    if skipped:
        options.note(f"skipped {skipped} malformed rows of {workload.source}")
    scenario = workload.scenario(df)
    start = scenario.admission.start
    if start is not None and start.rows_skipped:
        options.note(f"skipped {start.rows_skipped} malformed rows of {workload.start_state}")
    return Prepared(workload, df, scenario)


def check_policies(policies: Sequence[str | DeciderSpec]) -> list[str | DeciderSpec]:
    """Known names and loadable models only (fails here, with the reason, before any work and
    not in a worker), each policy once, in the order given."""
    from catur.policy_model import load_policy

    for policy in policies:
        if isinstance(policy, str):
            check_policy_name(policy)
        elif isinstance(policy, DeciderSpec) and policy.model is not None:
            load_policy(policy.model)
    return list({policy_label(p): p for p in policies}.values())


def evaluate(
    workload: Workload,
    policies: Sequence[str | DeciderSpec],
    options: EvaluateOptions = EvaluateOptions(),
    *,
    external: Sequence[ExternalPolicy] = (),
    facts: dict | None = None,
) -> Evaluation:
    """Evaluate ``policies`` (names as in ``catur policies``, or :class:`DeciderSpec`) on
    ``workload``; see the module doc for the ways it runs.

    ``external`` rows come first in the results, then ``policies`` in order. ``facts`` are
    added to the scenario's JSON facts (e.g. which service was replayed through). A
    partitioned directory is streamed unless there are external rows (which need the trace
    whole). The returned :class:`Evaluation` carries the trace (``None`` when streamed) and
    the start of day 1, for the per-day plots.
    """
    started = time.perf_counter()
    if options.baseline is not None and options.baseline not in {policy_label(p) for p in policies}:
        policies = [*policies, options.baseline]  # compared with, so replayed too
    policies = check_policies(policies)
    with contextlib.ExitStack() as held:
        if options.engine == "ray":
            # Connect first, so a bad address fails before a big trace is read; one connection
            # serves every evaluation below.
            from catur.sim.distributed import RayEngine

            held.enter_context(RayEngine(options.ray_address, num_cpus=options.jobs))
        if workload.streamed and not external:
            if options.baseline is not None:
                raise CaturError("--baseline is not available for a partitioned trace (streamed, so no host is kept whole): "
                                 "evaluate some of its clusters as a file")
            evaluation = _evaluate_streamed(workload, policies, options)
        else:
            prepared = prepare(workload, options)
            results: dict[str, PolicyResult] = {}
            for row in external:
                with options.bar(_vms(prepared.scenario.streams), row.desc) as bar:
                    results[row.name] = row.replay(prepared, bar.update)
            oracle_sample = None
            if policies or not external:
                replayed, oracle_sample = replay(prepared.scenario.streams, policies, options, seed=workload.seed)
                results.update(replayed)
            if prepared.scenario.admission.start is not None:  # real fragmented hosts: count clean placements
                from catur.sim.start_state import clean_placements

                clean_placements(results)
            evaluation = Evaluation(
                scenario_facts(workload, prepared.scenario, options.metrics, vms_in_trace=len(prepared.df),
                               **_policy_facts(policies, options, oracle_sample)),
                results,
                trace=prepared.df,
                origin_s=prepared.origin_s,
            )
            if options.baseline is not None:
                evaluation.versus = versus_baseline(results, prepared.scenario.streams, options.baseline)
                evaluation.scenario["baseline"] = options.baseline
    if facts:
        evaluation.scenario.update(facts)
    evaluation.scenario["wall_s"] = round(time.perf_counter() - started, 3)
    return evaluation


def replay(
    streams: list[HostStream], policies: Sequence[str | DeciderSpec], options: EvaluateOptions = EvaluateOptions(),
    *, seed: int = 0, desc: str = "replaying", leave: bool = True,
) -> tuple[dict[str, PolicyResult], dict | None]:
    """Every policy on every host stream, then, with ``oracle_hosts``, the oracle sample:
    returns the results and the sample's facts (``None`` without one). ``seed`` seeds the
    random policy (offset by host) and the oracle's host sample."""
    engine = {"engine": options.engine, "ray_address": options.ray_address}
    config = options.metrics
    with options.bar(_vms(streams) * len(policies), desc, leave) as bar:
        results = evaluate_policies(
            streams, policies, jobs=options.jobs, seed=seed, config=config, progress=bar.update, **engine
        )
    if not options.oracle_hosts:
        return results, None
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(streams), size=min(options.oracle_hosts, len(streams)), replace=False))
    sample = [streams[i] for i in picked]
    # The sampled run adds the oracle's own row unless it already ran on every host.
    names = [p for p in policies if p != ORACLE] + ([] if ORACLE in results else [ORACLE])
    with options.bar(_vms(sample) * len(names), "oracle sample") as bar:
        sampled = evaluate_policies(
            sample, names, jobs=options.jobs, seed=seed, config=config, progress=bar.update,
            count_correctable=True, oracle_k=options.oracle_k, **engine,
        )
    for name, result in sampled.items():
        if name == ORACLE:
            results[ORACLE] = result
            result.extra["oracle_sample_anomalies"] = result.summary.anomalies
        else:
            results[name].extra["correctable_anomalies"] = result.extra["correctable_anomalies"]
            results[name].extra["oracle_sample_anomalies"] = result.summary.anomalies
    sample_facts = {"hosts": [int(s.host) for s in sample], "k": options.oracle_k,
                    "vms": int(next(iter(sampled.values())).summary.vms)}
    return results, sample_facts


def _evaluate_streamed(workload: Workload, policies: list, options: EvaluateOptions) -> Evaluation:
    """:func:`evaluate` for a partitioned directory (:mod:`catur.sim.streaming`)."""
    from catur.sim.cluster import load_cluster
    from catur.sim.streaming import evaluate_streamed
    from catur.traces.partitioned import PartitionedTrace

    if workload.start_state:
        raise CaturError("--start-state is not available for a partitioned trace: its clusters are sized from the trace, a start state fixes the hosts")
    if options.oracle_hosts:
        raise CaturError("--oracle-hosts is not available for a partitioned trace: evaluate a few of its clusters as a file for the oracle sample")
    stream = StreamConfig(batch_vms=options.batch_vms)
    trace = PartitionedTrace.open(workload.source)
    spec = load_cluster(workload.cluster)
    if workload.cpu_overcommit is not None:
        spec = replace(spec, cpu_overcommit=workload.cpu_overcommit)
    total = trace.num_rows * len({policy_label(p) for p in policies})
    with options.bar(total, "streaming") as bar:
        evaluation, scenario, run = evaluate_streamed(
            trace, spec, policies, days=workload.days, target_utilization=workload.target_utilization,
            stream=stream, jobs=options.jobs, seed=workload.seed, config=options.metrics,
            skip_bad_rows=workload.skip_bad_rows, progress=bar.update,
            evaluate_options={"engine": options.engine, "ray_address": options.ray_address},
        )
    if run.rows_skipped:
        options.note(f"skipped {run.rows_skipped} malformed rows of {workload.source}")
    evaluation.scenario.update(scenario_facts(
        workload, scenario, options.metrics,
        vms_in_trace=trace.num_rows,
        **_policy_facts(policies, options, None),
        streaming={"batches": run.batches, "clusters": run.clusters, "batch_vms": stream.batch_vms,
                   "largest_batch_vms": run.largest_batch_vms, "peak_rss_mib": run.peak_rss_mib},
    ))
    evaluation.origin_s = scenario.origin_s
    return evaluation


def scenario_facts(workload: Workload, scenario, config: MetricsConfig, **extra) -> dict:
    """The ``scenario`` object of the JSON output: what was replayed, on what, how.

    ``scenario`` is a :class:`~catur.sim.admission.Scenario` or a streamed run's
    :class:`~catur.sim.streaming.StreamedScenario` (both have ``spec``, ``admission``,
    ``start_s`` and ``end_s``). ``extra`` adds entries (``vms_in_trace`` among them).
    """
    # A streamed evaluation's admission is a tally of its batches: no start state, no groups.
    start = getattr(scenario.admission, "start", None)
    groups = getattr(scenario.admission, "groups", None)
    if start is not None:
        extra = {"start_state": start.to_dict(), **extra}
    if groups is not None:
        extra = {"placement_groups": groups.to_dict(), **extra}
    return {
        "trace": workload.label,
        "vms_in_trace": None,
        "days": workload.days or "all",
        "window_s": [scenario.start_s, scenario.end_s],
        "cluster": scenario.spec.name,
        "cpu_overcommit": scenario.spec.cpu_overcommit,
        "target_utilization": (workload.target_utilization or None) if start is None else None,
        **admission_summary(scenario.admission),
        "anomaly_threshold": config.anomaly_threshold,
        "ticket_c1": config.ticket_c1,
        "ticket_c2": config.ticket_c2,
        "seed": workload.seed,
        **extra,
        "wall_s": None,
    }


def _policy_facts(policies: list, options: EvaluateOptions, oracle_sample: dict | None) -> dict:
    """Which model and shield the compared deciders used, the oracle sample, the engine."""
    specs = [p for p in policies if isinstance(p, DeciderSpec)]
    model = next((s.model for s in specs if s.model is not None), None)
    shield = next(({"depth": s.shield.depth, "width": s.shield.width} for s in specs if s.shield is not None), None)
    facts = {"model": model}
    if model is not None:  # which model was measured: checked by catur models add --evaluation
        facts["model_sha256"] = weights_sha256(model)
    return {**facts, "shield": shield, "oracle_sample": oracle_sample, "engine": options.engine}


def _vms(streams) -> int:
    return sum(s.trace.num_vms for s in streams)


__all__ = ["EvaluateOptions", "ExternalPolicy", "Prepared", "check_policies", "evaluate", "prepare",
           "replay", "scenario_facts"]
