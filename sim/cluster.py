"""Clusters: how many hosts of which topology, and how far vCPUs may be overcommitted.

A cluster is described in a small YAML or TOML file::

    name: mixed
    cpu_overcommit: 1.0          # host-level vCPUs allowed per core at admission
    hosts:
      - topology: intel-2s       # a preset name or a topology file
        count: 60
      - topology: amd-2s-nps2
        count: 30

Host ids are assigned group by group in file order: above, hosts 0-59 are ``intel-2s`` and
60-89 are ``amd-2s-nps2``. With ``--target-utilization``, counts are scaled (keeping the
proportions) so that the trace's peak demand reaches the target; see
:func:`catur.sim.admission.size_cluster`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catur.configfile import check_keys, read_config_file
from catur.errors import CaturError
from catur.topology import Topology, resolve_topology


@dataclass(frozen=True)
class ClusterSpec:
    """Host groups ``(topology, count)`` and the admission's vCPU overcommit factor."""

    name: str
    groups: tuple[tuple[Topology, int], ...]
    cpu_overcommit: float = 1.0

    def __post_init__(self) -> None:
        if not self.groups:
            raise CaturError(f"cluster {self.name!r}: needs at least one host group")
        for topology, count in self.groups:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise CaturError(
                    f"cluster {self.name!r}: host count for {topology.name!r} must be a "
                    f"whole number >= 0, got {count!r}"
                )
        if self.num_hosts == 0:
            raise CaturError(f"cluster {self.name!r}: has no hosts")
        if not math.isfinite(self.cpu_overcommit) or self.cpu_overcommit < 1.0:
            raise CaturError(
                f"cluster {self.name!r}: cpu_overcommit must be >= 1.0, got {self.cpu_overcommit!r}"
            )

    @property
    def num_hosts(self) -> int:
        return sum(count for _, count in self.groups)

    def host_topologies(self) -> list[Topology]:
        """The topology of each host, indexed by host id."""
        return [topology for topology, count in self.groups for _ in range(count)]

    def host_capacity(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cores, mem_mib)`` per host as arrays, indexed by host id."""
        tops = self.host_topologies()
        return (
            np.array([t.total_cores for t in tops], dtype=np.int64),
            np.array([t.total_mem_mib for t in tops], dtype=np.int64),
        )

    def scaled(self, factor: float) -> "ClusterSpec":
        """The same mix with every group's count multiplied by ``factor`` (at least 1 host)."""
        groups = tuple((t, max(1, math.ceil(c * factor))) if c else (t, 0) for t, c in self.groups)
        return ClusterSpec(self.name, groups, self.cpu_overcommit)

    def describe(self) -> str:
        parts = ", ".join(f"{c}× {t.name}" for t, c in self.groups if c)
        return f"{self.name}: {self.num_hosts} hosts ({parts}), cpu_overcommit {self.cpu_overcommit:g}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cpu_overcommit": self.cpu_overcommit,
            "hosts": [{"topology": t.name, "count": c} for t, c in self.groups],
        }


# The keys a cluster file may hold, at the top and in each host group; anything else is
# refused with the closest valid key (a typo such as ``cnt:`` is otherwise silent).
CLUSTER_KEYS = ("name", "cpu_overcommit", "hosts")
GROUP_KEYS = ("topology", "count")


def cluster_from_dict(spec: dict, *, source: str = "cluster") -> ClusterSpec:
    """Build a :class:`ClusterSpec` from the mapping a cluster file holds."""
    if not isinstance(spec, dict):
        raise CaturError(f"{source}: a cluster must be a mapping with a 'hosts' list")
    check_keys(spec, CLUSTER_KEYS, source)
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise CaturError(f"{source}: 'hosts' must be a non-empty list of {{topology, count}}")
    groups = []
    for i, group in enumerate(hosts):
        if not isinstance(group, dict):
            raise CaturError(f"{source}: hosts[{i}] must be a mapping with 'topology' and 'count'")
        check_keys(group, GROUP_KEYS, source, f"hosts[{i}]")
        if "topology" not in group:
            raise CaturError(f"{source}: hosts[{i}] needs a 'topology' (a preset name or a topology file)")
        count = group.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise CaturError(f"{source}: hosts[{i}].count must be a whole number, got {count!r}")
        groups.append((resolve_topology(str(group["topology"])), count))
    overcommit = spec.get("cpu_overcommit", 1.0)
    if isinstance(overcommit, bool) or not isinstance(overcommit, (int, float)):
        raise CaturError(f"{source}: cpu_overcommit must be a number, got {overcommit!r}")
    return ClusterSpec(str(spec.get("name", Path(source).stem)), tuple(groups), float(overcommit))


# Shipped cluster mixes. `mixed` is the default benchmark cluster: half 2-node Intel hosts,
# half 4-node AMD hosts, by host count. Counts are placeholders scaled by the target
# utilisation, so only the proportions matter when auto-sizing.
CLUSTERS: dict[str, dict] = {
    "mixed": {"name": "mixed", "hosts": [{"topology": "intel-2s", "count": 1}, {"topology": "amd-2s-nps2", "count": 1}]},
    "intel-2s": {"name": "intel-2s", "hosts": [{"topology": "intel-2s", "count": 1}]},
    "amd-2s-nps2": {"name": "amd-2s-nps2", "hosts": [{"topology": "amd-2s-nps2", "count": 1}]},
    "amd-2s-nps4": {"name": "amd-2s-nps4", "hosts": [{"topology": "amd-2s-nps4", "count": 1}]},
}


# The mix used when none is named (``--cluster`` left out).
DEFAULT_CLUSTER = "mixed"


def load_cluster(name_or_path: str | None) -> ClusterSpec:
    """A shipped cluster mix by name, or a cluster file (``.yaml``/``.yml``/``.toml``);
    None is :data:`DEFAULT_CLUSTER`."""
    if name_or_path is None:
        name_or_path = DEFAULT_CLUSTER
    if name_or_path in CLUSTERS:
        return cluster_from_dict(CLUSTERS[name_or_path], source=name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise CaturError(
            f"unknown cluster {name_or_path!r}: not a file, and not one of {', '.join(CLUSTERS)}"
        )
    return cluster_from_dict(read_config_file(path, "cluster"), source=str(path))
