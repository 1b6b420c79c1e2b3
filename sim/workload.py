"""What a replay runs on: one spec for "this trace (or synthetic workload), on this cluster,
for these days".

Every replay in Catur starts the same way: a canonical trace → host admission onto a
modelled cluster (sized to a target utilisation) → one event stream per host for a window of
days. :class:`Workload` is that recipe, written once and shared by ``catur evaluate``, ``catur
replay``, the demo, the training environment (:mod:`catur.sim.env`), the retraining job and
the evaluation pipeline (:func:`catur.sim.pipeline.evaluate`)::

    Workload("default", days="16:31")                              # a synthetic scenario
    Workload("trace.csv.gz", cluster="intel-2s", target_utilization=0.8)
    Workload(df, days="1:3")                                       # a DataFrame in hand
    Workload("month/")                # a partitioned directory: streamed by the pipeline
    Workload("VM_data_C1.csv", start_state="PM_res.csv")  # real fragmented hosts (sim.start_state)

``source`` is a synthetic scenario name (:data:`catur.traces.synthetic.SCENARIOS`), a trace
path (any format :func:`catur.traces.readers.read_trace` reads), or a canonical DataFrame.
``from_scenario`` says which a string is: ``None`` (default) takes a scenario name as synthetic and
anything else as a path; ``True``/``False`` force it (the CLI's ``--synthetic NAME`` versus a
trace argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from catur.errors import CaturError
from catur.sim.admission import TARGET_UTILIZATION, HostStream, Scenario, check_target_utilization, prepare_scenario


@dataclass(frozen=True)
class Workload:
    """A trace window admitted onto a cluster (see the module doc).

    Attributes:
        source: Synthetic scenario name, trace path, or canonical DataFrame.
        cluster: A shipped cluster mix or a YAML/TOML cluster file (``None``: the default mix;
            with a start state, capacities inferred from it).
        days: ``FIRST:LAST`` (1-based, inclusive) window of arrivals; ``None`` = all.
        target_utilization: Size the cluster so peak demand is this fraction of the binding
            resource; 0 or ``None`` keeps the cluster file's host counts.
        cpu_overcommit: vCPUs admitted per host core (``None``: the cluster file's).
        seed: Seed of a synthetic workload (and of the random policy, in evaluations).
        format: Trace format name, or ``"auto"`` to detect it.
        skip_bad_rows: Drop malformed trace rows (counted) instead of failing.
        from_scenario: Whether a string ``source`` is a scenario name (``None``: if it is one).
        start_state: A free-per-node file (``PM_res.csv``): its servers are the hosts, each
            starting as used as the file says (:mod:`catur.sim.start_state`).
    """

    source: object = "default"
    cluster: str | None = None
    days: str | None = None
    target_utilization: float | None = TARGET_UTILIZATION
    cpu_overcommit: float | None = None
    seed: int = 0
    format: str = "auto"
    skip_bad_rows: bool = False
    from_scenario: bool | None = None
    start_state: str | None = None

    def __post_init__(self) -> None:
        check_target_utilization(self.target_utilization)

    @property
    def is_synthetic(self) -> bool:
        if self.from_scenario is not None:
            return self.from_scenario
        from catur.traces.synthetic import SCENARIOS

        return isinstance(self.source, str) and self.source in SCENARIOS

    @property
    def label(self) -> str:
        """How reports name the workload: ``synthetic:NAME``, the file's name, or ``DataFrame``."""
        if isinstance(self.source, pd.DataFrame):
            return "DataFrame"
        if self.is_synthetic:
            return f"synthetic:{self.source}"
        return Path(self.source).name

    @property
    def streamed(self) -> bool:
        """Whether the pipeline streams it: a partitioned directory, a batch of clusters at a time."""
        if isinstance(self.source, pd.DataFrame) or self.is_synthetic or self.format not in ("auto", "partitioned"):
            return False
        from catur.traces.partitioned import is_partitioned

        return bool(self.source) and is_partitioned(self.source)

    def read(self) -> tuple[pd.DataFrame, int]:
        """The canonical trace, whole, and how many malformed rows were skipped."""
        if isinstance(self.source, pd.DataFrame):
            return self.source, 0
        if self.is_synthetic:
            from catur.traces.synthetic import generate

            return generate(self.source, seed=self.seed), 0
        from catur.traces.readers import read_trace

        if self.from_scenario is None and not Path(self.source).exists():
            from catur.traces.synthetic import SCENARIOS

            raise CaturError(
                f"workload {self.source!r} is neither a trace file nor a synthetic scenario ({', '.join(SCENARIOS)})"
            )
        df, report = read_trace(self.source, fmt=self.format, skip_bad_rows=self.skip_bad_rows)
        return df, report.rows_skipped

    def scenario(self, df: pd.DataFrame) -> Scenario:
        """``df`` (this workload's trace) admitted onto the cluster (or the start state's
        hosts) and cut to the window. Malformed start-state rows skipped (``skip_bad_rows``)
        are counted in ``scenario.admission.start.rows_skipped``."""
        start = None
        if self.start_state:
            from catur.sim.start_state import load_start_state

            start = load_start_state(self.start_state, self.cluster, cpu_overcommit=self.cpu_overcommit,
                                     skip_bad_rows=self.skip_bad_rows)
        return prepare_scenario(df, self.cluster, self.days, self.target_utilization, self.cpu_overcommit, start)

    def streams(self) -> list[HostStream]:
        """The host streams with at least one VM arriving in the window (training episodes)."""
        streams = [s for s in self.scenario(self.read()[0]).streams if s.counted.any()]
        if not streams:
            raise CaturError(f"workload {self.source!r}: no host has VMs arriving in days {self.days}")
        return streams


__all__ = ["Workload"]
