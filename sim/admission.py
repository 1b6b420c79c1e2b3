"""Host admission: which host each VM of a trace runs on, before any NUMA decision.

Public traces have no host ids, so a cluster-level allocator assigns VMs to hosts first, using
only aggregate host capacity (docs/howto/evaluate.md, "Host admission"): a host takes a VM if its total free memory holds
the VM's memory (memory is never overcommitted) and its free vCPUs — cores times
``cpu_overcommit`` minus vCPUs admitted — hold the VM's vCPUs. Among hosts that fit, the
allocator takes the **lowest host id** (first fit), which packs hosts the way cloud allocators
do to keep whole hosts free. VMs that fit no host are *rejected* and counted; they take part in
no policy's metrics.

Because admission ignores NUMA, the VM→host assignment is the same for every NUMA policy:
comparisons are fair, and hosts are independent of each other afterwards (parallel replay).
Traces that carry ``host_id`` skip this step.

With a start state (:mod:`catur.sim.start_state`) hosts begin partly used: admission sees only
what is left, and every host's replay starts from that usage. Traces labelled with placement
groups (``strategy``/``group``/``domain``) are admitted by :mod:`catur.sim.groups`, the same
first fit honouring anti-affinity, affinity and fault domains.

:func:`size_cluster` picks the host count for a utilisation target, and :func:`host_streams`
cuts the admitted trace into one :class:`~catur.sim.replay.HostTrace` per host for a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.sim.cluster import ClusterSpec
from catur.sim.groups import GroupOutcome, first_fit_groups, has_groups
from catur.sim.start_state import StartState, load_start_state
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


#: The default sizing target: the cluster is scaled so the trace's peak demand is this fraction
#: of the binding resource (``catur evaluate``, ``train``, ``retrain`` and the env all use it).
TARGET_UTILIZATION = 0.9


def check_target_utilization(value: float | None) -> None:
    """A sizing target is in [0, 1]; 0 or ``None`` means "keep the cluster file's host counts"."""
    if value is not None and not 0 <= value <= 1:
        raise CaturError(f"target utilization must be in [0, 1], got {value}")


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
        start: The start state hosts began from (None: empty hosts).
        groups: What placement-group labels did (None: the trace has none).
    """

    host_of_vm: np.ndarray
    hosts: list[Topology]
    host_cluster: list[str]
    specs: dict[str, ClusterSpec]
    start: StartState | None = None
    groups: GroupOutcome | None = None

    @property
    def rejected(self) -> int:
        return int((self.host_of_vm < 0).sum())

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)


# First fit in lock-step. A size no host can match (padding arrivals) and a capacity nothing
# fits (padding hosts, and the "rejected" column every cluster gets at index H): far apart
# enough that T padding arrivals subtracted from the rejected column never overflow int64.
_NO_VM = np.int64(1) << 40
_NO_ROOM = -(np.int64(1) << 50)


def first_fit(
    vcpus: np.ndarray,
    mem_mib: np.ndarray,
    arrival_s: np.ndarray,
    departure_s: np.ndarray,
    groups: Sequence[np.ndarray],
    specs: Sequence[ClusterSpec],
    used: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Host id per VM by first fit on aggregate capacity, for many clusters at once.

    ``groups[c]`` are the rows (indices into the per-VM arrays) of cluster ``c``, admitted
    onto ``specs[c]``; the result gives each row its host id *within its cluster's spec*
    (-1 = no host had room; rows in no group stay -1). Clusters are independent, so they
    advance in lock-step: step ``k`` first applies, in every cluster, the departures that
    precede its ``k``-th arrival (their hosts are known by then), then places every
    cluster's ``k``-th arrival with array operations over a ``[cluster, host]`` table. The
    Python loop runs over arrivals of the longest cluster, not over all VMs, so 300 clusters
    cost about as many steps as one. Departures after a cluster's last arrival change no
    decision and are skipped. A single cluster is the one-row case of the same code.
    ``used[c]``, if given, is ``(vcpus[H], mem_mib[H])`` already in use on cluster ``c``'s
    hosts when the trace starts (a start state).
    """
    n = vcpus.shape[0]
    vcpus = np.asarray(vcpus, dtype=np.int64)
    mem_mib = np.asarray(mem_mib, dtype=np.int64)
    num = len(groups)
    host_of = np.full(n + 1, -1, dtype=np.int64)  # slot n: where padding arrivals "land"
    if num == 0 or n == 0:
        return host_of[:n]
    width = max(spec.num_hosts for spec in specs)  # H; column H = "rejected"
    free_v = np.full((num, width + 1), _NO_ROOM, dtype=np.int64)
    free_m = np.full((num, width + 1), _NO_ROOM, dtype=np.int64)
    arrivals: list[np.ndarray] = []
    dep_step, dep_vm, dep_cluster = [], [], []
    for c, (rows, spec) in enumerate(zip(groups, specs)):
        cores, mem = spec.host_capacity()
        free_v[c, : cores.size] = np.floor(cores * spec.cpu_overcommit).astype(np.int64)
        free_m[c, : mem.size] = mem
        if used is not None:
            free_v[c, : cores.size] -= used[c][0]
            free_m[c, : mem.size] -= used[c][1]
        rows = np.asarray(rows, dtype=np.int64)
        vms, arriving = event_order(arrival_s[rows], departure_s[rows])
        before = np.cumsum(arriving) - arriving  # arrivals earlier in the cluster's order
        arrivals.append(rows[vms[arriving]])
        leaving = ~arriving & (before < arrivals[-1].size)
        dep_step.append(before[leaving])
        dep_vm.append(rows[vms[leaving]])
        dep_cluster.append(np.full(int(leaving.sum()), c, dtype=np.int64))
    steps = max(a.size for a in arrivals)
    d_step, d_vm, d_cluster = (np.concatenate(x) for x in (dep_step, dep_vm, dep_cluster))
    order = np.argsort(d_step, kind="stable")
    d_vm, d_cluster = d_vm[order], d_cluster[order]
    d_base, d_v, d_m = d_cluster * (width + 1), vcpus[d_vm], mem_mib[d_vm]
    bounds = np.searchsorted(d_step[order], np.arange(steps + 1)).tolist()
    arrival_vm = np.full((steps, num), n, dtype=np.int64)  # [step, cluster], padded with n
    for c, rows in enumerate(arrivals):
        arrival_vm[: rows.size, c] = rows
    size_v, size_m = np.append(vcpus, _NO_VM), np.append(mem_mib, _NO_VM)
    flat_v, flat_m = free_v.ravel(), free_m.ravel()
    base = np.arange(num, dtype=np.int64) * (width + 1)
    rejected = base + width
    fits = np.empty_like(free_v, dtype=bool)
    room = np.empty_like(fits)
    host_of[:n] = width  # host_of holds the flat column; rejected VMs sit in column H
    for t0 in range(0, steps, 4096):  # sizes gathered per block of steps: bounded memory
        vm_block = arrival_vm[t0 : t0 + 4096]
        v_block, m_block = size_v[vm_block], size_m[vm_block]
        v_col, m_col = v_block[:, :, None], m_block[:, :, None]
        for k in range(vm_block.shape[0]):
            s0, s1 = bounds[t0 + k], bounds[t0 + k + 1]
            if s1 > s0:  # departures before this arrival give their room back
                flat = d_base[s0:s1] + host_of[d_vm[s0:s1]]
                np.add.at(flat_v, flat, d_v[s0:s1])
                np.add.at(flat_m, flat, d_m[s0:s1])
            np.greater_equal(free_v, v_col[k], out=fits)
            np.greater_equal(free_m, m_col[k], out=room)
            fits &= room
            flat = base + fits.argmax(axis=1)  # lowest host id with room (0 if none)
            flat = np.where(fits.ravel()[flat], flat, rejected)
            host_of[vm_block[k]] = flat - base
            flat_v[flat] -= v_block[k]
            flat_m[flat] -= m_block[k]
    out = host_of[:n]
    out[out == width] = -1
    return out


def admit(
    df: pd.DataFrame, spec: ClusterSpec, target_utilization: float | None = None,
    start: StartState | None = None,
) -> Admission:
    """Assign every VM of a canonical trace to a host of ``spec``.

    With ``start``, the hosts are the start state's (``spec`` and ``target_utilization`` are
    not used: its host count is fixed by the data) and begin with its usage; a trace with
    placement-group labels is admitted honouring them (:func:`catur.sim.groups.first_fit_groups`).
    With ``target_utilization``, the cluster is first sized by :func:`size_cluster`. A trace
    with a ``cluster`` column is admitted cluster by cluster (in label order, all clusters in
    lock-step: :func:`first_fit`), each onto its own copy of the spec (sized separately),
    with host ids numbered on across clusters. A trace with a
    ``host_id`` column keeps its assignment; ``spec`` must then have enough hosts.
    """
    n = len(df)
    if start is not None or has_groups(df):
        return _admit_onto(df, start.spec if start is not None else spec, start, target_utilization)
    if "host_id" in df.columns and df["host_id"].notna().all():
        host_ids = df["host_id"].to_numpy(np.int64)
        if n and host_ids.max() >= spec.num_hosts:
            raise CaturError(
                f"trace names host_id {int(host_ids.max())} but cluster {spec.name!r} has only "
                f"{spec.num_hosts} hosts"
            )
        hosts = spec.host_topologies()
        return Admission(host_ids, hosts, [""] * len(hosts), {"": spec})
    if "cluster" in df.columns:
        # Labels sort as strings; a missing label is the cluster "" (as in a single-cluster trace).
        codes, names = pd.factorize(df["cluster"].astype("string").fillna(""), sort=True)
        codes = np.asarray(codes, dtype=np.int64)
    else:
        codes, names = np.zeros(n, dtype=np.int64), np.array([""], dtype=object)
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if n else []
    specs: dict[str, ClusterSpec] = {}
    for rows in groups:
        part = df.iloc[rows]
        label = str(names[codes[rows[0]]])
        specs[label] = size_cluster(part, spec, target_utilization) if target_utilization else spec
    local = first_fit(
        df["vcpus"].to_numpy(np.int64), mem_mib_of(df), df["arrival_s"].to_numpy(float),
        df["departure_s"].to_numpy(float), groups, list(specs.values()),
    )
    host_of_vm = np.full(n, -1, dtype=np.int64)
    hosts: list[Topology] = []
    host_cluster: list[str] = []
    for rows, (label, sized) in zip(groups, specs.items()):
        admitted = rows[local[rows] >= 0]
        host_of_vm[admitted] = local[admitted] + len(hosts)
        tops = sized.host_topologies()
        hosts.extend(tops)
        host_cluster.extend([label] * len(tops))
    return Admission(host_of_vm, hosts, host_cluster, specs)


def _admit_onto(
    df: pd.DataFrame, spec: ClusterSpec, start: StartState | None, target_utilization: float | None
) -> Admission:
    """:func:`admit` for a start state or a labelled trace: one cluster, first fit (honouring
    placement groups when the trace has labels)."""
    if "cluster" in df.columns and df["cluster"].astype("string").fillna("").nunique() > 1:
        what = "a start state" if start is not None else "placement-group labels"
        raise CaturError(f"a trace with {what} is admitted onto one cluster; this one has a 'cluster' column with several labels")
    if "host_id" in df.columns and df["host_id"].notna().any():
        raise CaturError("a trace with host_id has its hosts already: it takes no start state or placement-group labels")
    if start is None and target_utilization:
        spec = size_cluster(df, spec, target_utilization)
    vcpus, mem = df["vcpus"].to_numpy(np.int64), mem_mib_of(df)
    used = start.host_used() if start is not None else None
    outcome = None
    if has_groups(df):
        cores, capacity = spec.host_capacity()
        free_v = np.floor(cores * spec.cpu_overcommit).astype(np.int64)
        free_m = capacity.copy()
        if used is not None:
            free_v, free_m = free_v - used[0], free_m - used[1]
        host_of_vm, outcome = first_fit_groups(df, vcpus, mem, free_v, free_m)
    else:
        host_of_vm = first_fit(
            vcpus, mem, df["arrival_s"].to_numpy(float), df["departure_s"].to_numpy(float),
            [np.arange(len(df))], [spec], None if used is None else [used],
        )
    hosts = spec.host_topologies()
    return Admission(host_of_vm, hosts, [""] * len(hosts), {"": spec}, start, outcome)


def parse_days(days: str | None, df: pd.DataFrame) -> tuple[float, float]:
    """``"16:31"`` → the window ``[start_s, end_s)`` of days 16 to 31 (1-based, inclusive).

    Day 1 starts at the trace's first arrival, rounded down to a whole day. ``None`` or ``":"``
    is the whole trace; an open side (``"16:"``, ``":15"``) runs to the trace's edge (just past
    its last event).
    """
    arrivals = df["arrival_s"].to_numpy(float)
    departures = df["departure_s"].to_numpy(float)
    first = float(arrivals.min()) if len(df) else 0.0
    last = float(np.nanmax(np.concatenate([arrivals, departures]))) if len(df) else 0.0
    return window_of(days, first, last)


def window_of(days: str | None, first_arrival_s: float, last_event_s: float) -> tuple[float, float]:
    """:func:`parse_days` from a trace's first arrival and last event alone (a streamed trace
    knows these from its file statistics without loading its rows)."""
    origin = np.floor(first_arrival_s / SECONDS_PER_DAY) * SECONDS_PER_DAY + 0.0  # no -0.0
    # Windows are half-open [start, end): an open end must still include an arrival at the
    # trace's very last instant, so it ends just after it.
    last = float(np.nextafter(last_event_s, np.inf))
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
    df: pd.DataFrame, admission: Admission, start_s: float, end_s: float, host_offset: int = 0
) -> list[HostStream]:
    """Per-host event streams for the window ``[start_s, end_s)``.

    Each host replays every admitted VM that arrives before ``end_s`` — VMs from before the
    window are warm-up, so the window starts with a realistically loaded host — and only VMs
    arriving inside the window are counted. Departures after ``end_s`` are cut: such VMs run
    to the window's end. ``host_offset`` is added to every stream's host id: a trace admitted
    in batches of clusters numbers its hosts on across batches, as one admission would.
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
        if admission.start is not None:  # the host begins as loaded as the start state says
            extra["start_vcpus"] = admission.start.used_vcpus[host]
            extra["start_mem_mib"] = admission.start.used_mem_mib[host]
        trace = HostTrace(arrival[rows], departure[rows], vcpus[rows], mem[rows], end_s=end_s, **extra)
        streams.append(
            HostStream(host + host_offset, admission.hosts[host], trace, rows, arrival[rows] >= start_s)
        )
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
    cluster: str | None,
    days: str | None,
    target_utilization: float | None,
    cpu_overcommit: float | None = None,
    start_state: str | StartState | None = None,
) -> Scenario:
    """Load the cluster (``cpu_overcommit`` overrides its file), admit the trace (sized to
    ``target_utilization`` unless 0/None) and cut the per-host streams of ``days``.

    ``cluster`` None is the default mix, ``mixed``. With ``start_state`` (a free-per-node
    file such as ``PM_res.csv``, or a loaded :class:`StartState`) the hosts are its servers,
    starting as used as it says; ``cluster``, if given, then supplies their capacities
    (:mod:`catur.sim.start_state`), and ``target_utilization`` is not used.
    """
    from dataclasses import replace

    from catur.sim.cluster import load_cluster

    check_target_utilization(target_utilization)
    start = None
    if isinstance(start_state, StartState):
        start = start_state
    elif start_state is not None:
        start = load_start_state(start_state, cluster, cpu_overcommit=cpu_overcommit)
    if start is not None:
        spec = start.spec
    else:
        spec = load_cluster(cluster)
        if cpu_overcommit is not None:
            spec = replace(spec, cpu_overcommit=cpu_overcommit)
    start_s, end_s = parse_days(days, df)
    admission = admit(df, spec, target_utilization or None, start)
    return Scenario(spec, admission, start_s, end_s, host_streams(df, admission, start_s, end_s))
