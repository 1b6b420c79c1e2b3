"""Host admission: which host each VM of a trace runs on, before any NUMA decision.

Public traces have no host ids, so a cluster-level allocator assigns VMs to hosts first, using
only aggregate host capacity (DESIGN.md §1): a host takes a VM if its total free memory holds
the VM's memory (memory is never overcommitted) and its free vCPUs — cores times
``cpu_overcommit`` minus vCPUs admitted — hold the VM's vCPUs. Among hosts that fit, the
allocator takes the **lowest host id** (first fit), which packs hosts the way cloud allocators
do to keep whole hosts free. VMs that fit no host are *rejected* and counted; they take part in
no policy's metrics.

Because admission ignores NUMA, the VM→host assignment is the same for every NUMA policy:
comparisons are fair, and hosts are independent of each other afterwards (parallel replay).
Traces that carry ``host_id`` skip this step.

:func:`size_cluster` picks the host count for a utilisation target, and :func:`host_streams`
cuts the admitted trace into one :class:`~catur.sim.replay.HostTrace` per host for a window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.sim.cluster import ClusterSpec
from catur.traces.events import event_order, running_total
from catur.sim.replay import HostTrace
from catur.topology import MIB_PER_GIB, Topology

SECONDS_PER_DAY = 86400.0


def mem_mib_of(df: pd.DataFrame) -> np.ndarray:
    """The trace's memory column in whole MiB (Catur's unit)."""
    return np.round(df["mem_gib"].to_numpy(dtype=float) * MIB_PER_GIB).astype(np.int64)


def peak_demand(df: pd.DataFrame) -> tuple[int, int]:
    """Peak concurrent ``(vcpus, mem_mib)`` of a trace (each at its own peak instant)."""
    arrival, departure = df["arrival_s"].to_numpy(float), df["departure_s"].to_numpy(float)
    _, vcpus = running_total(arrival, departure, df["vcpus"].to_numpy(np.int64))
    _, mem = running_total(arrival, departure, mem_mib_of(df))
    return int(vcpus.max(initial=0)), int(mem.max(initial=0))


def size_cluster(df: pd.DataFrame, spec: ClusterSpec, target_utilization: float) -> ClusterSpec:
    """Scale ``spec`` so the trace's peak demand is ``target_utilization`` of the binding resource.

    The binding resource is whichever (vCPUs against cores × overcommit, or memory) needs more
    hosts. Proportions between host groups are kept; each used group gets at least one host.
    """
    if not 0.0 < target_utilization <= 1.0:
        raise CaturError(f"target utilization must be in (0, 1], got {target_utilization!r}")
    peak_vcpus, peak_mem = peak_demand(df)
    cores, mem = spec.host_capacity()
    factor = max(
        peak_vcpus / (cores.sum() * spec.cpu_overcommit * target_utilization),
        peak_mem / (mem.sum() * target_utilization),
    )
    return spec.scaled(factor)


@dataclass(frozen=True, eq=False)
class Admission:
    """The outcome of admission.

    Attributes:
        host_of_vm: ``int64[n]`` host id of each trace row (-1 = rejected: no host had room).
        hosts: Topology of each host, by host id.
        host_cluster: Cluster label of each host ("" for single-cluster traces).
        specs: The (possibly auto-sized) cluster spec used, per cluster label.
    """

    host_of_vm: np.ndarray
    hosts: list[Topology]
    host_cluster: list[str]
    specs: dict[str, ClusterSpec]

    @property
    def rejected(self) -> int:
        return int((self.host_of_vm < 0).sum())

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)


def _first_fit(df: pd.DataFrame, spec: ClusterSpec) -> np.ndarray:
    """Host id per VM (-1 when none fits), by first fit on aggregate capacity."""
    cores, mem = spec.host_capacity()
    free_vcpus = np.floor(cores * spec.cpu_overcommit).astype(np.int64)
    free_mem = mem.copy()
    vcpus = df["vcpus"].to_numpy(np.int64)
    mem_mib = mem_mib_of(df)
    host_of_vm = np.full(len(df), -1, dtype=np.int64)
    vms, arrivals = event_order(df["arrival_s"].to_numpy(float), df["departure_s"].to_numpy(float))
    for vm, arriving in zip(vms.tolist(), arrivals.tolist()):
        if arriving:
            fits = (free_vcpus >= vcpus[vm]) & (free_mem >= mem_mib[vm])
            host = int(fits.argmax())
            if fits[host]:
                host_of_vm[vm] = host
                free_vcpus[host] -= vcpus[vm]
                free_mem[host] -= mem_mib[vm]
        else:
            host = host_of_vm[vm]
            if host >= 0:
                free_vcpus[host] += vcpus[vm]
                free_mem[host] += mem_mib[vm]
    return host_of_vm


def admit(
    df: pd.DataFrame, spec: ClusterSpec, target_utilization: float | None = None
) -> Admission:
    """Assign every VM of a canonical trace to a host of ``spec``.

    With ``target_utilization``, the cluster is first sized by :func:`size_cluster`. A trace
    with a ``cluster`` column is admitted cluster by cluster, each onto its own copy of the
    spec (sized separately), with host ids numbered on across clusters. A trace with a
    ``host_id`` column keeps its assignment; ``spec`` must then have enough hosts.
    """
    n = len(df)
    if "host_id" in df.columns and df["host_id"].notna().all():
        host_ids = df["host_id"].to_numpy(np.int64)
        if n and host_ids.max() >= spec.num_hosts:
            raise CaturError(
                f"trace names host_id {int(host_ids.max())} but cluster {spec.name!r} has only "
                f"{spec.num_hosts} hosts"
            )
        hosts = spec.host_topologies()
        return Admission(host_ids, hosts, [""] * len(hosts), {"": spec})
    labels = df["cluster"].astype(str).to_numpy() if "cluster" in df.columns else np.full(n, "")
    host_of_vm = np.full(n, -1, dtype=np.int64)
    hosts: list[Topology] = []
    host_cluster: list[str] = []
    specs: dict[str, ClusterSpec] = {}
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        part = df.iloc[rows]
        sized = size_cluster(part, spec, target_utilization) if target_utilization else spec
        local = _first_fit(part, sized)
        admitted = local >= 0
        host_of_vm[rows[admitted]] = local[admitted] + len(hosts)
        tops = sized.host_topologies()
        hosts.extend(tops)
        host_cluster.extend([label] * len(tops))
        specs[label] = sized
    return Admission(host_of_vm, hosts, host_cluster, specs)


def parse_days(days: str | None, df: pd.DataFrame) -> tuple[float, float]:
    """``"16:31"`` → the window ``[start_s, end_s)`` of days 16 to 31 (1-based, inclusive).

    Day 1 starts at the trace's first arrival, rounded down to a whole day. ``None`` or ``":"``
    is the whole trace; an open side (``"16:"``, ``":15"``) runs to the trace's edge (just past
    its last event).
    """
    arrivals = df["arrival_s"].to_numpy(float)
    origin = np.floor(arrivals.min() / SECONDS_PER_DAY) * SECONDS_PER_DAY if len(df) else 0.0
    departures = df["departure_s"].to_numpy(float)
    last = np.nanmax(np.concatenate([arrivals, departures])) if len(df) else 0.0
    # Windows are half-open [start, end): an open end must still include an arrival at the
    # trace's very last instant, so it ends just after it.
    last = float(np.nextafter(last, np.inf))
    if days is None or days.strip() in ("", ":"):
        return float(origin), float(last)
    try:
        first_text, _, last_text = days.partition(":")
        first_day = int(first_text) if first_text.strip() else 1
        last_day = int(last_text) if last_text.strip() else None
    except ValueError:
        raise CaturError(f"--days must look like 16:31 (first and last day, 1-based), got {days!r}") from None
    if first_day < 1 or (last_day is not None and last_day < first_day):
        raise CaturError(f"--days {days!r}: days are 1-based and first <= last")
    start = origin + (first_day - 1) * SECONDS_PER_DAY
    end = origin + last_day * SECONDS_PER_DAY if last_day is not None else float(last)
    if start >= last:
        raise CaturError(f"--days {days!r}: the trace ends on day {int((last - origin) // SECONDS_PER_DAY) + 1}")
    return float(start), float(min(end, max(last, start)))


@dataclass(frozen=True, eq=False)
class HostStream:
    """One host's share of a window: its trace, and which trace rows its VMs are."""

    host: int
    topology: Topology
    trace: HostTrace
    rows: np.ndarray  # trace row of each VM in `trace`
    counted: np.ndarray  # bool: arrived inside the window (the rest is warm-up)


def host_streams(
    df: pd.DataFrame, admission: Admission, start_s: float, end_s: float
) -> list[HostStream]:
    """Per-host event streams for the window ``[start_s, end_s)``.

    Each host replays every admitted VM that arrives before ``end_s`` — VMs from before the
    window are warm-up, so the window starts with a realistically loaded host — and only VMs
    arriving inside the window are counted. Departures after ``end_s`` are cut: such VMs run
    to the window's end.
    """
    arrival = df["arrival_s"].to_numpy(float)
    departure = df["departure_s"].to_numpy(float).copy()
    departure[departure > end_s] = np.nan
    vcpus = df["vcpus"].to_numpy(np.int64)
    mem = mem_mib_of(df)
    optional = {c: df[c].to_numpy() for c in ("alpha", "beta", "vnuma") if c in df.columns}
    keep = (admission.host_of_vm >= 0) & (arrival < end_s)
    rows_all = np.flatnonzero(keep)
    hosts_of_rows = admission.host_of_vm[rows_all]
    order = np.argsort(hosts_of_rows, kind="stable")
    rows_all, hosts_of_rows = rows_all[order], hosts_of_rows[order]
    bounds = np.flatnonzero(np.diff(hosts_of_rows)) + 1
    streams = []
    for rows in np.split(rows_all, bounds):
        if rows.size == 0:
            continue
        host = int(admission.host_of_vm[rows[0]])
        extra = {}
        for name, values in optional.items():
            column = pd.to_numeric(pd.Series(values[rows]), errors="coerce")
            default = 0 if name == "vnuma" else 1.0
            extra[name] = column.fillna(default).to_numpy()
        trace = HostTrace(arrival[rows], departure[rows], vcpus[rows], mem[rows], end_s=end_s, **extra)
        streams.append(HostStream(host, admission.hosts[host], trace, rows, arrival[rows] >= start_s))
    return streams


@dataclass(frozen=True, eq=False)
class Scenario:
    """A trace window admitted onto a cluster: what every replay (evaluation, the training
    environment, a replay through the service) starts from."""

    spec: ClusterSpec
    admission: Admission
    start_s: float
    end_s: float
    streams: list[HostStream]


def prepare_scenario(
    df: pd.DataFrame,
    cluster: str,
    days: str | None,
    target_utilization: float | None,
    cpu_overcommit: float | None = None,
) -> Scenario:
    """Load the cluster (``cpu_overcommit`` overrides its file), admit the trace (sized to
    ``target_utilization`` unless 0/None) and cut the per-host streams of ``days``."""
    from dataclasses import replace

    from catur.sim.cluster import load_cluster

    if target_utilization is not None and not 0 <= target_utilization <= 1:
        raise CaturError(f"target utilization must be in [0, 1], got {target_utilization}")
    spec = load_cluster(cluster)
    if cpu_overcommit is not None:
        spec = replace(spec, cpu_overcommit=cpu_overcommit)
    start_s, end_s = parse_days(days, df)
    admission = admit(df, spec, target_utilization or None)
    return Scenario(spec, admission, start_s, end_s, host_streams(df, admission, start_s, end_s))
