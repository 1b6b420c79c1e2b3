"""The collapse check of ``catur retrain``: the recent window per cluster, and the verdict.

The paper's trigger for retraining is performance: a learned policy has *collapsed* on a
cluster when a single fixed primitive does better there. This module answers that question
for one window of a trace:

* :func:`load_window` reads the trace (any format :func:`~catur.traces.readers.read_trace`
  knows, or a collected directory), admits it onto the modelled cluster exactly as ``catur
  evaluate`` does, cuts the host streams of the recent days and labels each host with its
  **group**: the trace's ``cluster`` column (each cluster is admitted onto its own hosts), or
  the host topology when there is no such column, or ``all``;
* :func:`evaluate_by_group` replays the window once per policy (in parallel worker
  processes) and splits each policy's per-VM defects by group;
* :func:`judge` compares, per group, the model's average defect with each primitive's;
  :func:`passes` is the promotion rule (beats every primitive on every group with enough VMs
  to judge), :func:`worst_groups` the groups to fine-tune on, worst first.

A canonical parquet copy of the trace is kept with the window: the training environments of a
fine-tune read that file, so they admit the very same hosts (same host ids) as this replay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.metrics import MetricsConfig, Summary, summarize
from catur.policies import PRIMITIVES

GROUP_BY = ("auto", "cluster", "topology", "all")


# --- the recent window, per cluster ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Window:
    """The recent window admitted onto the cluster, its hosts and their groups.

    ``trace_path`` is a canonical parquet copy of the trace: the training environments read
    it, so they admit exactly the same hosts (same host ids) as this replay.
    """

    df: pd.DataFrame
    trace_path: Path
    days: str
    start_s: float
    end_s: float
    trace_end_s: float
    streams: list
    labels: list[str]  # group of each stream
    group_of_row: np.ndarray  # group of each trace row ("" = not in any counted stream)
    group_by: str

    @property
    def groups(self) -> list[str]:
        return sorted(set(self.labels))

    def hosts_of(self, groups: list[str]) -> tuple[int, ...]:
        return tuple(int(s.host) for s, g in zip(self.streams, self.labels) if g in groups)


def default_recent_days(df: pd.DataFrame, count: int = 3) -> str:
    """The trace's last ``count`` days as ``FIRST:LAST``."""
    from catur.sim.admission import SECONDS_PER_DAY, parse_days

    origin, end = parse_days(None, df)
    last = max(1, int(np.ceil((end - origin) / SECONDS_PER_DAY)))
    return f"{max(1, last - count + 1)}:{last}"


def resolve_group_by(group_by: str, df: pd.DataFrame) -> str:
    if group_by == "auto":
        return "cluster" if "cluster" in df.columns else "topology"
    if group_by == "cluster" and "cluster" not in df.columns:
        raise CaturError("--group-by cluster: the trace has no 'cluster' column; use topology or all")
    return group_by


def load_window(config, work: Path, log: Callable[[str], None]) -> Window:
    """Read the trace, keep a canonical copy in ``work``, admit it and cut the recent window.

    ``config`` is a :class:`~catur.training.retrain.RetrainConfig` (or anything with its
    ``trace, format, days, group_by, cluster, target_utilization, cpu_overcommit``).
    """
    from catur.sim.admission import parse_days
    from catur.sim.workload import Workload
    from catur.traces.canonical import write_canonical

    df, _ = Workload(config.trace, format=config.format, from_scenario=False).read()
    trace_path = work / "trace.parquet"
    write_canonical(df, trace_path)
    recent = Workload(trace_path, config.cluster, None, config.target_utilization, config.cpu_overcommit)
    df, _ = recent.read()  # exactly what the training environments will read
    days = config.days or default_recent_days(df)
    group_by = resolve_group_by(config.group_by, df)
    scenario = replace(recent, days=days).scenario(df)
    streams = [s for s in scenario.streams if s.counted.any()]
    if not streams:
        raise CaturError(f"--days {days}: no admitted VM of {config.trace} arrives in the recent window")
    if group_by == "cluster":
        labels = [scenario.admission.host_cluster[s.host] for s in streams]
    elif group_by == "topology":
        labels = [s.topology.name for s in streams]
    else:
        labels = ["all"] * len(streams)
    group_of_row = np.full(len(df), "", dtype=object)
    for stream, label in zip(streams, labels):
        group_of_row[stream.rows] = label
    _, trace_end = parse_days(None, df)
    log(
        f"recent window: days {days} of {config.trace}, {sum(int(s.counted.sum()) for s in streams):,} VMs on "
        f"{len(streams)} hosts; groups by {group_by}: {', '.join(sorted(set(labels)))}"
    )
    return Window(df, trace_path, days, scenario.start_s, scenario.end_s, trace_end, streams, labels, group_of_row, group_by)


def evaluate_by_group(
    window: Window, policies: list, *, jobs: int | None, seed: int, progress: bool = True, desc: str = "replay"
) -> dict[str, dict[str, Summary]]:
    """``{policy: {group: Summary}}`` over the recent window (one replay, split by group)."""
    from catur.sim.pipeline import EvaluateOptions, replay

    options = EvaluateOptions(jobs=jobs, progress=progress)
    results, _ = replay(window.streams, policies, options, seed=seed, desc=desc, leave=False)
    out: dict[str, dict[str, Summary]] = {}
    for name, result in results.items():
        groups = window.group_of_row[result.rows]
        out[name] = {
            g: summarize(result.lifetime_defect[groups == g], result.placement_defect[groups == g], MetricsConfig())
            for g in window.groups
        }
    return out


# --- the verdict -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupVerdict:
    """How the model fares against the primitives on one cluster of the recent window."""

    group: str
    vms: int
    model: float  # the model's average defect
    anomalies: int
    primitives: dict[str, float]
    greedy: float | None
    judged: bool  # enough VMs to judge (min_vms)

    @property
    def best_primitive(self) -> str:
        return min(self.primitives, key=self.primitives.get)

    @property
    def best_primitive_defect(self) -> float:
        return self.primitives[self.best_primitive]

    @property
    def beats_every_primitive(self) -> bool:
        """Strictly below every primitive; a tie counts as losing — except a tie at exactly 0
        (a cluster so idle that nothing is ever overloaded), where there is nothing to beat."""
        if self.model == 0.0 and self.best_primitive_defect == 0.0:
            return True
        return all(self.model < d for d in self.primitives.values())

    @property
    def gap(self) -> float:
        """How far the model is above (> 0) or below (< 0) the best primitive, relative to it."""
        # A best primitive at exactly 0 (an idle cluster) would make any loss infinite; a
        # floor keeps the gap finite, JSON-safe and still ordered.
        return (self.model - self.best_primitive_defect) / max(self.best_primitive_defect, 1e-9)

    @property
    def failing(self) -> bool:
        return self.judged and not self.beats_every_primitive

    def to_dict(self) -> dict:
        return {
            "vms": self.vms,
            "avg_defect": self.model,
            "anomalies": self.anomalies,
            "best_primitive": self.best_primitive,
            "best_primitive_avg_defect": self.best_primitive_defect,
            "gap_to_best_primitive": self.gap,
            "beats_every_primitive": self.beats_every_primitive,
            "judged": self.judged,
            "primitives": dict(self.primitives),
            "greedy": self.greedy,
        }


def judge(model: dict[str, Summary], baselines: dict[str, dict[str, Summary]], min_vms: int) -> dict[str, GroupVerdict]:
    """Per group: the model's summary against every primitive's (``baselines[policy][group]``)."""
    verdicts = {}
    for group, summary in model.items():
        verdicts[group] = GroupVerdict(
            group=group,
            vms=summary.vms,
            model=summary.avg_defect,
            anomalies=summary.anomalies,
            primitives={p: baselines[p][group].avg_defect for p in PRIMITIVES},
            greedy=baselines["greedy"][group].avg_defect if "greedy" in baselines else None,
            judged=summary.vms >= min_vms,
        )
    return verdicts


def passes(verdicts: dict[str, GroupVerdict]) -> bool:
    """The promotion rule: beats every primitive on every judged group (and some group is judged)."""
    judged = [v for v in verdicts.values() if v.judged]
    return bool(judged) and all(v.beats_every_primitive for v in judged)


def worst_groups(verdicts: dict[str, GroupVerdict], limit: int | None = None) -> list[str]:
    """The failing groups, the largest relative gap to the best primitive first."""
    failing = sorted((v for v in verdicts.values() if v.failing), key=lambda v: (-v.gap, v.group))
    return [v.group for v in failing][:limit]


def badness(verdicts: dict[str, GroupVerdict]) -> tuple[int, float]:
    """Order candidates: fewer failing groups first, then the smaller worst gap."""
    gaps = [v.gap for v in verdicts.values() if v.judged]
    return sum(v.failing for v in verdicts.values()), max(gaps, default=0.0)


def describe_failures(verdicts: dict[str, GroupVerdict]) -> str:
    parts = [
        f"{v.group} ({100 * v.model:.3f}% vs {v.best_primitive} {100 * v.best_primitive_defect:.3f}%)"
        for v in sorted(verdicts.values(), key=lambda v: -v.gap)
        if v.failing
    ]
    return "; ".join(parts)
