"""Evaluate a trace too big for memory: batches of clusters through the usual evaluation.

A partitioned trace (:mod:`catur.traces.partitioned`) is read a batch of whole clusters at a
time. Each batch goes down the same one-way pipeline as a trace read whole -- host admission
(:func:`~catur.sim.admission.admit`, all clusters of the batch in lock-step), per-host
streams for the window (:func:`~catur.sim.admission.host_streams`), replay under every
policy (:func:`~catur.sim.evaluate.evaluate_policies`) -- and its per-VM results are folded
into running summaries before the batch is dropped. Memory therefore depends on the batch
size (``batch_vms``), not on the trace's size; the summaries themselves are bounded:

* **headline metrics**: one :class:`~catur.metrics.SummaryAccumulator` per policy, whose
  sums are exact and whose p99 keeps only the top ~1% of values (8 MB per policy for 100M
  VMs). The numbers are **identical** to evaluating the same VMs in one piece;
* **per-day series** (for the daily plots): sums and counts per day, a few KB;
* **the defect CDF** (plot): a deterministic sample, every VM whose ``vm_id`` is a multiple
  of ``ceil(rows / cdf_sample)`` (every VM for traces up to ``cdf_sample`` rows).

Why batches of clusters give the same answer as the whole trace: clusters never share hosts;
batches are cut in label order, which is the order a single admission numbers hosts in, and
each batch's hosts are numbered on from the previous batch's (so the per-host seeds of
``random`` match too); the window comes from the whole trace's first arrival and last event
(from file statistics). Tests compare the two paths number for number.

Not streamed: the k-step oracle sample (``--oracle-hosts``) -- evaluate a sample of clusters
as an ordinary trace for that.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing
import os
import resource
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from catur.decision import DeciderSpec
from catur.errors import CaturError
from catur.metrics import MetricsConfig, SummaryAccumulator
from catur.sim.admission import SECONDS_PER_DAY, admit, check_target_utilization, host_streams, window_of
from catur.sim.cluster import ClusterSpec
from catur.sim.evaluate import Evaluation, PolicyResult, evaluate_policies, policy_label
from catur.topology import Topology
from catur.traces.partitioned import PartitionedTrace


@dataclass(frozen=True)
class StreamConfig:
    """How a streamed evaluation cuts its work.

    Attributes:
        batch_vms: Rows read and replayed at once (whole clusters; a bigger cluster is a
            batch alone). Memory grows with it: with 2 replay workers, about 1.7 GB in all
            at 1M (measured on a 10M-VM trace), 2.6 GB at 2M; larger batches admit more
            clusters per lock-step, but past 1M that no longer showed in the wall time.
        cdf_sample: About how many VMs' defects to keep for the defect-CDF plot.
    """

    batch_vms: int = 1_000_000
    cdf_sample: int = 200_000

    def __post_init__(self) -> None:
        for name in ("batch_vms", "cdf_sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CaturError(f"stream config: {name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class StreamTally:
    """What the batches' admissions add up to (duck-types :class:`~catur.sim.admission.Admission`
    for :func:`~catur.sim.evaluate.admission_summary`)."""

    hosts: list[Topology]
    rejected: int

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)


@dataclass(frozen=True)
class StreamedScenario:
    """The streamed counterpart of :class:`~catur.sim.admission.Scenario`, without streams."""

    spec: ClusterSpec
    admission: StreamTally
    start_s: float
    end_s: float
    origin_s: float


@dataclass
class StreamedEvaluation(Evaluation):
    """An :class:`Evaluation` whose per-day table was accumulated while streaming.

    Each policy's :class:`PolicyResult` carries the exact summary and counters; its
    ``rows``/``lifetime_defect``/``placement_defect`` arrays hold only the CDF sample
    (``rows`` = the sampled VMs' ``vm_id``), since the full arrays never exist at once.
    """

    daily: pd.DataFrame = field(default_factory=pd.DataFrame)

    def per_day(self, df: pd.DataFrame | None = None, origin_s: float | None = None) -> pd.DataFrame:
        return self.daily.copy()


class _PolicyFold:
    """One policy's running summary, counters, per-day sums and CDF sample."""

    def __init__(self, name: str, config: MetricsConfig, capacity: int, days: int, stride: int) -> None:
        self.name = name
        self.summary = SummaryAccumulator(config, capacity)
        self.extra: dict[str, int] = {}
        self.threshold = config.anomaly_threshold
        self.day_sum = np.zeros(days + 1)
        self.day_vms = np.zeros(days + 1, dtype=np.int64)
        self.day_anomalies = np.zeros(days + 1, dtype=np.int64)
        self.stride = stride
        self.sample: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, result: PolicyResult, day: np.ndarray, vm_id: np.ndarray) -> None:
        life, placed = result.lifetime_defect, result.placement_defect
        self.summary.add(life, placed)
        for key, value in result.extra.items():
            self.extra[key] = self.extra.get(key, 0) + int(value)
        size = self.day_sum.size
        self.day_sum += np.bincount(day, weights=life, minlength=size)[:size]
        self.day_vms += np.bincount(day, minlength=size)[:size]
        self.day_anomalies += np.bincount(day, weights=placed > self.threshold, minlength=size)[:size].astype(np.int64)
        keep = vm_id % self.stride == 0
        self.sample.append((vm_id[keep], life[keep], placed[keep]))

    def result(self) -> PolicyResult:
        ids = np.concatenate([s[0] for s in self.sample] or [np.zeros(0, np.int64)])
        life = np.concatenate([s[1] for s in self.sample] or [np.zeros(0)])
        placed = np.concatenate([s[2] for s in self.sample] or [np.zeros(0)])
        order = np.argsort(ids, kind="stable")  # the sample in vm_id order, whatever the batching
        summary = self.summary.result()
        return PolicyResult(self.name, summary, ids[order], life[order], placed[order], dict(self.extra))

    def daily(self) -> pd.DataFrame:
        days = np.flatnonzero(self.day_vms)
        return pd.DataFrame(
            {
                "policy": self.name,
                "day": days.astype(int),
                "avg_defect": self.day_sum[days] / self.day_vms[days],
                "anomalies": self.day_anomalies[days],
                "vms": self.day_vms[days],
            }
        )


@dataclass
class StreamRun:
    """Bookkeeping of a streamed run, for reports and for tests of its memory bound."""

    batches: int = 0
    clusters: int = 0
    largest_batch_vms: int = 0
    rows_skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    peak_rss_mib: dict = field(default_factory=dict)
    worker_peak_mib: float = 0.0  # the largest replay worker's peak (MiB), 0 without workers


def _release_memory() -> None:
    """Give a dropped batch's memory back to the operating system.

    A batch's millions of rows pass through many same-sized temporary arrays; glibc keeps
    such freed blocks in its heap (its mmap threshold adapts upwards) and pyarrow's allocator
    keeps its own, so without this the process would hold several freed batches' worth of
    memory. ``malloc_trim`` exists only in glibc: elsewhere this just collects garbage.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 -- glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


def peak_rss_mib() -> dict:
    """Peak resident memory so far of this process and of its largest finished child, in
    MiB (Linux reports ``ru_maxrss`` in KiB). Streaming's replay workers descend from a fork
    server and report their own peak instead (:attr:`StreamRun.worker_peak_mib`)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main": round(own, 1), "largest_worker": round(kids, 1)}


def _replay_batch(streams: list, policies: Sequence[str | DeciderSpec], seed: int, config: MetricsConfig,
                  options: dict) -> tuple[dict[str, PolicyResult], float]:
    """Worker: one batch's replay, all its hosts in one task (the widest lock-step); also
    this worker's peak memory so far (MiB), since the main process cannot see it."""
    results = evaluate_policies(streams, policies, jobs=1, seed=seed, config=config, **options)
    return results, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Pending:
    """A batch handed to the replay, with what folding its results needs."""

    results: "Future | dict"
    arrival: np.ndarray
    vm_id: np.ndarray
    done_when_folded: int  # rows x policies to count as done when folded (progress)


def evaluate_streamed(
    trace: PartitionedTrace,
    spec: ClusterSpec,
    policies: Sequence[str | DeciderSpec],
    *,
    days: str | None = None,
    target_utilization: float | None = None,
    stream: StreamConfig = StreamConfig(),
    jobs: int | None = None,
    seed: int = 0,
    config: MetricsConfig = MetricsConfig(),
    skip_bad_rows: bool = False,
    progress: Callable[[int], None] | None = None,
    on_batch: Callable[[list[str], pd.DataFrame], None] | None = None,
    evaluate_options: dict | None = None,
) -> tuple[StreamedEvaluation, StreamedScenario, StreamRun]:
    """Evaluate ``policies`` on a partitioned trace, one batch of clusters at a time.

    Arguments are those of :func:`~catur.sim.admission.prepare_scenario` and
    :func:`~catur.sim.evaluate.evaluate_policies` (``evaluate_options`` are passed on to the
    latter, e.g. ``engine``). ``progress(n)`` advances by VMs done (rows x policies in all);
    ``on_batch(labels, df)`` sees each batch as it is read (tests use it to check the memory
    bound). Returns the evaluation (its ``scenario`` dict is left to the caller to fill), the
    scenario facts and the run's bookkeeping.

    Parallelism: with the local engine and ``jobs > 1``, ``jobs`` worker processes each
    replay a whole batch (all its hosts in one lock-step, the engine's best case) while this
    process reads and admits the next one; at most ``jobs`` batches are in flight, so memory
    is about ``jobs + 1`` batches. Results are folded in batch order, so the numbers do not
    depend on ``jobs``. Other engines (Ray) get one batch at a time and spread it themselves.
    """
    check_target_utilization(target_utilization)
    options = dict(evaluate_options or {})
    start_s, end_s = window_of(days, trace.first_arrival_s, trace.last_event_s)
    origin_s, _ = window_of(None, trace.first_arrival_s, trace.last_event_s)
    names = list(dict.fromkeys(policy_label(p) for p in policies))
    num_days = int(math.ceil((max(end_s, origin_s) - origin_s) / SECONDS_PER_DAY)) + 1
    stride = max(1, math.ceil(trace.num_rows / stream.cdf_sample))
    folds = {name: _PolicyFold(name, config, trace.num_rows, num_days, stride) for name in names}
    local = options.get("engine", "local") == "local"
    workers = (jobs or os.cpu_count() or 1) if local else 1
    # Workers come from a fork server: a fork of this process would carry whatever batch it
    # holds at that moment into every worker.
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))
        if workers > 1 else None
    )
    pending: deque[_Pending] = deque()
    hosts: list[Topology] = []
    rejected = 0
    run = StreamRun()

    def fold_oldest() -> None:
        done = pending.popleft()
        results = done.results
        if isinstance(results, Future):
            results, worker_mib = results.result()
            run.worker_peak_mib = max(run.worker_peak_mib, worker_mib)
        for name, result in results.items():
            day = ((done.arrival[result.rows] - origin_s) // SECONDS_PER_DAY).astype(np.int64) + 1
            folds[name].add(result, day, done.vm_id[result.rows])
        if progress:
            progress(done.done_when_folded)
        run.peak_rss_mib = peak_rss_mib()

    try:
        for labels in trace.batches(stream.batch_vms):
            df, skipped, reasons = trace.read(labels, skip_bad_rows)
            run.rows_skipped += skipped
            run.skip_reasons = (run.skip_reasons + reasons)[:5]
            run.batches += 1
            run.clusters += len(labels)
            run.largest_batch_vms = max(run.largest_batch_vms, len(df))
            if on_batch:
                on_batch(labels, df)
            admission = admit(df, spec, target_utilization or None)
            streams = host_streams(df, admission, start_s, end_s, host_offset=len(hosts))
            hosts.extend(admission.hosts)
            rejected += admission.rejected
            replayed = sum(s.trace.num_vms for s in streams) * len(names)
            arrival, vm_id = df["arrival_s"].to_numpy(float), df["vm_id"].to_numpy(np.int64)
            # Rows the replay never sees (rejected, arriving after the window) count as done.
            done = len(df) * len(names) - replayed
            del df, admission
            if not any(s.counted.any() for s in streams):
                results: Future | dict = {}  # warm-up only: replaying it changes no number
                done += replayed
            elif pool is not None:
                results = pool.submit(_replay_batch, streams, policies, seed, config, options)
                done += replayed
            else:  # in this process (jobs=1), or one batch at a time through Ray
                results = evaluate_policies(
                    streams, policies, jobs=jobs if not local else 1, seed=seed, config=config,
                    progress=progress, **options,
                )
            del streams
            _release_memory()
            pending.append(_Pending(results, arrival, vm_id, done))
            # With workers, keep all of them busy while the next batch is read and admitted:
            # up to `workers` batches in flight (one more for an instant after submitting).
            while len(pending) > (workers if pool is not None else 0):
                fold_oldest()
        while pending:
            fold_oldest()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    run.peak_rss_mib = peak_rss_mib()
    if run.worker_peak_mib:
        run.peak_rss_mib["largest_worker"] = round(max(run.worker_peak_mib, run.peak_rss_mib["largest_worker"]), 1)
    if not any(f.summary.vms for f in folds.values()):
        raise CaturError("nothing to evaluate: no admitted VM arrives in the window")
    results = {name: fold.result() for name, fold in folds.items()}
    daily = pd.concat([fold.daily() for fold in folds.values()], ignore_index=True)
    scenario = StreamedScenario(spec, StreamTally(hosts, rejected), start_s, end_s, origin_s)
    return StreamedEvaluation({}, results, daily=daily), scenario, run


__all__ = ["StreamConfig", "StreamRun", "StreamedEvaluation", "StreamedScenario", "evaluate_streamed", "peak_rss_mib"]
