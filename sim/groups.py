"""Placement groups at admission: anti-affinity, affinity and fault domains.

Some traces label VMs with a placement strategy and a group (Huawei Cloud's NUMA dataset:
columns ``strategy``, ``group``, ``domain``; :mod:`catur.traces.huawei_numa`). Admission still
chooses hosts NUMA-agnostically by first fit on aggregate capacity (:mod:`catur.sim.admission`),
but honours the labels:

``anti-affinity``
    Members of a group never share a host. A member for which every host with room already
    holds a member is **rejected** (reason ``anti-affinity``).
``affinity``
    Members of a group share a host *when they can*: a member goes to the lowest-numbered host
    that already holds members of its group and has room; if none has room (or it is the
    first member) it goes wherever first fit puts it. A member placed away from its group's
    hosts is counted (``affinity_split_vms``; ``affinity_split_groups`` counts the groups that
    end up on more than one host). Affinity never rejects a VM that fits somewhere.
``fault_domain``
    Members of a group spread over their ``domain`` values: two members with *different*
    domains never share a host (a host is a single point of failure, so losing one takes out
    at most one domain of the group); members with the same domain may. A member no host can
    take under that rule is **rejected** (reason ``fault_domain``).

Group numbers are per strategy: ``anti-affinity`` group 0 and ``affinity`` group 0 are two
different groups. A VM with no strategy is plain first fit. Rejected VMs are counted by
reason (``no_room``: no host had the capacity at all, labels or not) and take part in no
policy's metrics, as any VM admission rejects. Departures (when a trace has them) give back
capacity and group membership.

Admission is online, like a cloud allocator: it does not know how many members a group will
have, so the first member of an affinity group lands wherever first fit puts it, often on a
host with room for little more (on the dataset's fragmented servers 317-367 affinity members
per sequence end up apart from their group).

The loop walks events in time order in Python with array work over hosts per VM: for a
5,000-VM sequence of the dataset on its 1,710 servers it took 0.5-0.7 s here. Without labels
it chooses exactly the hosts of :func:`catur.sim.admission.first_fit` (a property test checks
it), which stays the fast path for unlabelled traces.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.traces.events import event_order

LABEL_COLUMNS = ("strategy", "group", "domain")
REJECT_REASONS = ("no_room", "anti-affinity", "fault_domain")


def has_groups(df: pd.DataFrame) -> bool:
    """Whether a trace carries placement-group labels that admission must honour."""
    return "strategy" in df.columns and bool(df["strategy"].notna().any())


@dataclass
class GroupOutcome:
    """What the labels did: rejections by reason, and affinity members placed apart."""

    rejected: Counter = field(default_factory=Counter)
    affinity_split_vms: int = 0
    affinity_split_groups: int = 0
    labelled_vms: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "labelled_vms": {s: int(self.labelled_vms.get(s, 0)) for s in ("affinity", "anti-affinity", "fault_domain")},
            "rejected_by_reason": {r: int(self.rejected.get(r, 0)) for r in REJECT_REASONS},
            "affinity_split_vms": self.affinity_split_vms,
            "affinity_split_groups": self.affinity_split_groups,
        }


def first_fit_groups(
    df: pd.DataFrame,
    vcpus: np.ndarray,
    mem_mib: np.ndarray,
    free_vcpus: np.ndarray,
    free_mem_mib: np.ndarray,
) -> tuple[np.ndarray, GroupOutcome]:
    """Host id per trace row (-1 = rejected) by first fit honouring the labels (module docs).

    ``free_vcpus``/``free_mem_mib`` are ``int64[H]``: what admission may still give on each
    host (cores times overcommit minus what is used; memory minus what is used). They are
    not modified.
    """
    n = len(df)
    free_v = np.array(free_vcpus, dtype=np.int64)
    free_m = np.array(free_mem_mib, dtype=np.int64)
    hosts = free_v.shape[0]
    strategy = df["strategy"].astype("string").to_numpy(dtype=object, na_value=None)
    group = _labels(df, "group", n)
    domain = _labels(df, "domain", n)
    outcome = GroupOutcome(labelled_vms=Counter(s for s in strategy if s is not None))
    # (strategy, group) -> members per host; fault domains: (group) -> host -> domain -> count.
    members: dict[tuple[str, int], np.ndarray] = defaultdict(lambda: np.zeros(hosts, dtype=np.int64))
    domains: dict[int, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))
    split_groups: set[int] = set()
    host_of = np.full(n, -1, dtype=np.int64)
    vms, arriving = event_order(df["arrival_s"].to_numpy(float), df["departure_s"].to_numpy(float))
    for vm, arrives in zip(vms.tolist(), arriving.tolist()):
        s = strategy[vm]
        key = (s, group[vm]) if s is not None else None
        if not arrives:
            host = host_of[vm]
            if host < 0:
                continue
            free_v[host] += vcpus[vm]
            free_m[host] += mem_mib[vm]
            if key is not None:
                members[key][host] -= 1
                if s == "fault_domain":
                    domains[group[vm]][host][domain[vm]] -= 1
            continue
        room = (free_v >= vcpus[vm]) & (free_m >= mem_mib[vm])
        if not room.any():
            outcome.rejected["no_room"] += 1
            continue
        allowed = room
        if s == "anti-affinity":
            allowed = room & (members[key] == 0)
        elif s == "fault_domain":
            taken = np.zeros(hosts, dtype=bool)
            for host, counts in domains[group[vm]].items():
                taken[host] = any(c > 0 and d != domain[vm] for d, c in counts.items())
            allowed = room & ~taken
        if not allowed.any():
            outcome.rejected[s] += 1
            continue
        host = int(np.argmax(allowed))  # lowest host id allowed: first fit
        if s == "affinity":
            together = allowed & (members[key] > 0)
            if together.any():
                host = int(np.argmax(together))
            elif members[key].any():  # the group lives elsewhere, all of it full
                outcome.affinity_split_vms += 1
                split_groups.add(group[vm])
        host_of[vm] = host
        free_v[host] -= vcpus[vm]
        free_m[host] -= mem_mib[vm]
        if key is not None:
            members[key][host] += 1
            if s == "fault_domain":
                domains[group[vm]][host][domain[vm]] += 1
    outcome.affinity_split_groups = len(split_groups)
    return host_of, outcome


def _labels(df: pd.DataFrame, name: str, n: int) -> list:
    """A group or domain column as Python ints (-1 where missing), for dict keys."""
    if name not in df.columns:
        return [-1] * n
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isnan(values) & (values != np.round(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CaturError(f"trace row {i + 1}: field {name!r} = {values[i]!r}: must be a whole number")
    return np.where(np.isnan(values), -1, values).astype(np.int64).tolist()
