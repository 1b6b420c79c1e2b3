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
* :func:`judge` compares, per group, the model with each primitive and with ``greedy``, host
  by host (:mod:`catur.verdict`: a paired bootstrap interval over the group's hosts), and
  :func:`overall` with greedy on the whole window. A group has *collapsed* only on a
  statistically clear loss (the interval wholly above 0) to one of them, so a small cluster's
  noise never triggers fine-tuning and no fixed VM count is needed: few hosts give a wide
  interval. :func:`healthy` is the collapse test (no clear loss anywhere, also not to greedy
  on the whole window); :func:`passes` the promotion gate (no clear loss on any group, and
  not losing to greedy on the whole window by :mod:`catur.verdict`'s rule, the one ``catur
  train`` and ``catur models promote`` apply); :func:`worst_groups` the groups to fine-tune
  on, worst first.

A canonical parquet copy of the trace is kept with the window: the training environments of a
fine-tune read that file, so they admit the very same hosts (same host ids) as this replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.metrics import MetricsConfig, Summary, summarize
from catur.policies import PRIMITIVES
from catur.verdict import Comparison, compare, host_sums

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

    def streams_of(self, group: str) -> list:
        return [s for s, g in zip(self.streams, self.labels) if g == group]

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
    from catur.sim.admission import parse_days, prepare_scenario
    from catur.traces.canonical import write_canonical
    from catur.traces.readers import read_trace

    df, _ = read_trace(config.trace, config.format)
    trace_path = work / "trace.parquet"
    write_canonical(df, trace_path)
    df, _ = read_trace(trace_path)  # exactly what the training environments will read
    days = config.days or default_recent_days(df)
    group_by = resolve_group_by(config.group_by, df)
    scenario = prepare_scenario(df, config.cluster, days, config.target_utilization, config.cpu_overcommit)
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


@dataclass(frozen=True, eq=False)
class GroupResult(Summary):
    """A policy's :class:`~catur.metrics.Summary` on one group, plus what a paired comparison
    needs: the group's host ids and, per host, its VM count and sum of lifetime defects."""

    hosts: list = field(default_factory=list)
    host_vms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    host_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))


def evaluate_by_group(
    window: Window, policies: list, *, jobs: int | None, seed: int, progress: bool = True, desc: str = "replay"
) -> dict[str, dict[str, GroupResult]]:
    """``{policy: {group: GroupResult}}`` over the recent window (one replay, split by group)."""
    from tqdm import tqdm

    from catur.sim.evaluate import evaluate_policies

    total = sum(s.trace.num_vms for s in window.streams) * len(policies)
    with tqdm(total=total, unit="VM", desc=desc, disable=not progress or None, leave=False) as bar:
        results = evaluate_policies(window.streams, policies, jobs=jobs, seed=seed, progress=bar.update)
    out: dict[str, dict[str, GroupResult]] = {}
    for name, result in results.items():
        groups = window.group_of_row[result.rows]
        out[name] = {}
        for g in window.groups:
            mine = groups == g
            summary = summarize(result.lifetime_defect[mine], result.placement_defect[mine], MetricsConfig())
            hosts, vms, sums = host_sums(window.streams_of(g), result.rows[mine], result.lifetime_defect[mine])
            out[name][g] = GroupResult(**summary.to_dict(), hosts=hosts, host_vms=vms, host_sums=sums)
    return out


# --- the verdict -------------------------------------------------------------------------------

GREEDY = "greedy"


@dataclass(frozen=True)
class GroupVerdict:
    """How the model fares against the primitives and greedy on one cluster of the window.

    ``versus`` holds the paired comparison (:class:`catur.verdict.Comparison`) with each
    primitive and greedy. The cluster has collapsed (``failing``) when one of them is clearly
    better than the model there.
    """

    group: str
    vms: int
    model: float  # the model's average defect
    anomalies: int
    primitives: dict[str, float]
    greedy: float | None
    versus: dict[str, Comparison]

    @property
    def best_primitive(self) -> str:
        return min(self.primitives, key=self.primitives.get)

    @property
    def best_primitive_defect(self) -> float:
        return self.primitives[self.best_primitive]

    @property
    def best_baseline(self) -> str:
        """The best of the primitives and greedy on this cluster."""
        return min(self.versus, key=lambda name: self.versus[name].baseline_defect)

    @property
    def best_baseline_defect(self) -> float:
        return self.versus[self.best_baseline].baseline_defect

    @property
    def beats_every_primitive(self) -> bool:
        """Strictly below every primitive (reported; the verdict itself is ``failing``). A tie
        at exactly 0 (an idle cluster) counts as beating them: there is nothing to beat."""
        if self.model == 0.0 and self.best_primitive_defect == 0.0:
            return True
        return all(self.model < d for d in self.primitives.values())

    @property
    def clear_losses(self) -> list[str]:
        """The baselines (primitives, greedy) clearly better than the model here."""
        return [name for name, c in self.versus.items() if c.clearly_worse]

    @property
    def gap(self) -> float:
        """How far the model is above (> 0) or below (< 0) the best baseline, relative to it."""
        # A best baseline at exactly 0 (an idle cluster) would make any loss infinite; a
        # floor keeps the gap finite, JSON-safe and still ordered.
        return (self.model - self.best_baseline_defect) / max(self.best_baseline_defect, 1e-9)

    @property
    def failing(self) -> bool:
        return bool(self.clear_losses)

    def to_dict(self) -> dict:
        return {
            "vms": self.vms,
            "hosts": next(iter(self.versus.values())).hosts if self.versus else 0,
            "avg_defect": self.model,
            "anomalies": self.anomalies,
            "best_primitive": self.best_primitive,
            "best_primitive_avg_defect": self.best_primitive_defect,
            "best_baseline": self.best_baseline,
            "gap_to_best_baseline": self.gap,
            "beats_every_primitive": self.beats_every_primitive,
            "clear_losses": self.clear_losses,
            "failing": self.failing,
            "primitives": dict(self.primitives),
            "greedy": self.greedy,
            "versus": {name: c.to_dict() for name, c in self.versus.items()},
        }


def judge(model: dict[str, GroupResult], baselines: dict[str, dict[str, GroupResult]]) -> dict[str, GroupVerdict]:
    """Per group: the model against every primitive and greedy (``baselines[policy][group]``)."""
    verdicts = {}
    for group, mine in model.items():
        versus = {
            name: compare(mine.host_vms, mine.host_sums, baselines[name][group].host_sums, name)
            for name in [*PRIMITIVES, GREEDY]
            if name in baselines
        }
        verdicts[group] = GroupVerdict(
            group=group,
            vms=mine.vms,
            model=mine.avg_defect,
            anomalies=mine.anomalies,
            primitives={p: baselines[p][group].avg_defect for p in PRIMITIVES},
            greedy=baselines[GREEDY][group].avg_defect if GREEDY in baselines else None,
            versus=versus,
        )
    return verdicts


def pooled(by_group: dict[str, GroupResult]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """``(hosts, vms, sums)`` of a policy over every group (groups never share a host)."""
    groups = sorted(by_group)
    return (
        [h for g in groups for h in by_group[g].hosts],
        np.concatenate([by_group[g].host_vms for g in groups]),
        np.concatenate([by_group[g].host_sums for g in groups]),
    )


def overall(model: dict[str, GroupResult], baselines: dict[str, dict[str, GroupResult]]) -> Comparison:
    """The model against greedy on the whole window, host by host."""
    _, vms, sums = pooled(model)
    return compare(vms, sums, pooled(baselines[GREEDY])[2], GREEDY)


def healthy(verdicts: dict[str, GroupVerdict], whole: Comparison) -> bool:
    """The collapse test: no clear loss on any group, nor to greedy on the whole window."""
    return not any(v.failing for v in verdicts.values()) and not whole.clearly_worse


def passes(verdicts: dict[str, GroupVerdict], whole: Comparison) -> bool:
    """The promotion gate: no clear loss on any group, and not losing to greedy on the whole
    window (:attr:`catur.verdict.Comparison.loses`: worse on average, or clearly worse)."""
    return not any(v.failing for v in verdicts.values()) and not whole.loses


def worst_groups(verdicts: dict[str, GroupVerdict], limit: int | None = None) -> list[str]:
    """The failing groups, the largest relative gap to the best baseline first."""
    failing = sorted((v for v in verdicts.values() if v.failing), key=lambda v: (-v.gap, v.group))
    return [v.group for v in failing][:limit]


def badness(verdicts: dict[str, GroupVerdict], whole: Comparison) -> tuple[int, bool, float]:
    """Order candidates: fewer failing groups first, then not losing to greedy overall, then
    the smaller worst gap."""
    gaps = [v.gap for v in verdicts.values()]
    return sum(v.failing for v in verdicts.values()), whole.loses, max(gaps, default=0.0)


def describe_failures(verdicts: dict[str, GroupVerdict], whole: Comparison | None = None) -> str:
    parts = [
        f"{v.group or '(all)'} ({100 * v.model:.3f}%, clearly worse than "
        + ", ".join(f"{name} {100 * v.versus[name].baseline_defect:.3f}%" for name in v.clear_losses)
        + ")"
        for v in sorted(verdicts.values(), key=lambda v: -v.gap)
        if v.failing
    ]
    if whole is not None and whole.loses:
        parts.append(f"the whole window ({whole.describe('model')})")
    return "; ".join(parts)
