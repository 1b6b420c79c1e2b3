"""Host NUMA topologies: nodes with cores and memory, sockets, and a distance matrix.

A :class:`Topology` describes one host model. Every per-node quantity is a numpy array indexed
by node, so the placement core can work on many hosts of the same model at once.

Topologies come from three places:

* the shipped presets (:data:`PRESETS`): ``intel-2s``, ``amd-2s-nps2``, ``amd-2s-nps4``;
* a YAML or TOML file written by the user (:func:`load_topology_file`);
* the machine Catur runs on, read from Linux sysfs (:func:`detect_topology`).

Memory is held in MiB as integers throughout Catur: placing and then releasing a VM must give
back the exact state, which float GiB arithmetic cannot promise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catur.configfile import CONFIG_SUFFIXES, check_keys, read_config_file
from catur.errors import CaturError, unknown_name

MIB_PER_GIB = 1024

# ACPI SLIT conventions: 10 means local; the defaults below are used when a user file gives
# sockets but no distance matrix.
LOCAL_DISTANCE = 10
DEFAULT_SAME_SOCKET_DISTANCE = 12
DEFAULT_REMOTE_DISTANCE = 21


def gib_to_mib(gib: float) -> int:
    """Round a GiB size to whole MiB (Catur's memory unit)."""
    return int(round(float(gib) * MIB_PER_GIB))


@dataclass(frozen=True, eq=False)
class Topology:
    """One host model: ``N`` NUMA nodes, their sockets, and the distances between them.

    Attributes:
        name: A label (a preset name, or the name a user file gives).
        node_cores: ``int64[N]`` physical CPUs per node that VMs may use.
        node_mem_mib: ``int64[N]`` memory per node, in MiB.
        node_socket: ``int64[N]`` socket index of each node.
        distance: ``int64[N, N]`` SLIT distances; 10 on the diagonal, symmetric.

    The constructor validates everything and raises :class:`CaturError` naming the bad field.
    Arrays are copied and made read-only, so a topology can be shared freely.
    """

    name: str
    node_cores: np.ndarray
    node_mem_mib: np.ndarray
    node_socket: np.ndarray
    distance: np.ndarray
    # Derived, for the placement core: node order by distance from each node (nearest first,
    # the node itself first). Ties are broken later by free memory, so only distance matters.
    _by_distance: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cores = _int_array(self.node_cores, "node_cores", self.name)
        mem = _int_array(self.node_mem_mib, "node_mem_mib", self.name)
        socket = _int_array(self.node_socket, "node_socket", self.name)
        dist = _int_array(self.distance, "distance", self.name)
        n = cores.shape[0] if cores.ndim == 1 else -1
        if cores.ndim != 1 or n == 0:
            raise CaturError(f"topology {self.name!r}: node_cores must be a non-empty 1-D list")
        for label, arr in (("node_mem_mib", mem), ("node_socket", socket)):
            if arr.shape != (n,):
                raise CaturError(
                    f"topology {self.name!r}: {label} has shape {arr.shape}, "
                    f"expected ({n},) to match node_cores"
                )
        if dist.shape != (n, n):
            raise CaturError(
                f"topology {self.name!r}: distance has shape {dist.shape}, expected ({n}, {n})"
            )
        if (cores <= 0).any():
            raise CaturError(f"topology {self.name!r}: node_cores must be > 0, got {cores.tolist()}")
        if (mem <= 0).any():
            raise CaturError(f"topology {self.name!r}: node_mem_mib must be > 0, got {mem.tolist()}")
        if (socket < 0).any():
            raise CaturError(f"topology {self.name!r}: node_socket must be >= 0, got {socket.tolist()}")
        if (np.diag(dist) != LOCAL_DISTANCE).any():
            raise CaturError(
                f"topology {self.name!r}: distance diagonal must be {LOCAL_DISTANCE}, "
                f"got {np.diag(dist).tolist()}"
            )
        off_diagonal = dist[~np.eye(n, dtype=bool)]
        if (off_diagonal <= LOCAL_DISTANCE).any():
            raise CaturError(
                f"topology {self.name!r}: off-diagonal distances must exceed {LOCAL_DISTANCE}"
            )
        if not (dist == dist.T).all():
            raise CaturError(f"topology {self.name!r}: distance matrix must be symmetric")
        for label, arr in (
            ("node_cores", cores),
            ("node_mem_mib", mem),
            ("node_socket", socket),
            ("distance", dist),
        ):
            arr.flags.writeable = False
            object.__setattr__(self, label, arr)
        # Stable sort keeps lower node ids first among equal distances.
        by_distance = np.argsort(dist, axis=1, kind="stable")
        by_distance.flags.writeable = False
        object.__setattr__(self, "_by_distance", by_distance)

    @property
    def num_nodes(self) -> int:
        return int(self.node_cores.shape[0])

    @property
    def num_sockets(self) -> int:
        return int(np.unique(self.node_socket).shape[0])

    @property
    def total_cores(self) -> int:
        return int(self.node_cores.sum())

    @property
    def total_mem_mib(self) -> int:
        return int(self.node_mem_mib.sum())

    def nodes_by_distance(self, node: int) -> np.ndarray:
        """All nodes ordered nearest first from ``node`` (``node`` itself first)."""
        return self._by_distance[node]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return (
            self.name == other.name
            and np.array_equal(self.node_cores, other.node_cores)
            and np.array_equal(self.node_mem_mib, other.node_mem_mib)
            and np.array_equal(self.node_socket, other.node_socket)
            and np.array_equal(self.distance, other.distance)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.node_cores.tobytes(), self.node_mem_mib.tobytes()))

    def to_dict(self) -> dict:
        """A plain description, the same shape that :func:`topology_from_dict` reads."""
        return {
            "name": self.name,
            "nodes": [
                {
                    "cores": int(c),
                    "mem_gib": float(m) / MIB_PER_GIB,
                    "socket": int(s),
                }
                for c, m, s in zip(self.node_cores, self.node_mem_mib, self.node_socket)
            ],
            "distances": self.distance.tolist(),
        }

    def describe(self) -> str:
        """A human-readable summary: one line per node, then the distance matrix."""
        lines = [
            f"topology {self.name}: {self.num_nodes} NUMA nodes, {self.num_sockets} sockets, "
            f"{self.total_cores} cores, {self.total_mem_mib / MIB_PER_GIB:g} GiB",
            f"{'node':>6} {'socket':>6} {'cores':>6} {'mem GiB':>9}",
        ]
        for i in range(self.num_nodes):
            lines.append(
                f"{i:>6} {int(self.node_socket[i]):>6} {int(self.node_cores[i]):>6} "
                f"{self.node_mem_mib[i] / MIB_PER_GIB:>9g}"
            )
        lines.append("distances:")
        header = "      " + "".join(f"{j:>5}" for j in range(self.num_nodes))
        lines.append(header)
        for i in range(self.num_nodes):
            lines.append(f"{i:>6}" + "".join(f"{int(d):>5}" for d in self.distance[i]))
        return "\n".join(lines)


def _int_array(values: object, label: str, name: str) -> np.ndarray:
    """Convert to a fresh int64 array; refuse NaN, infinities and fractional values."""
    try:
        raw = np.array(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise CaturError(f"topology {name!r}: {label} must be numeric, got {values!r}") from exc
    if not np.isfinite(raw).all():
        raise CaturError(f"topology {name!r}: {label} must be finite, got {raw.tolist()}")
    if (raw != np.round(raw)).any():
        raise CaturError(f"topology {name!r}: {label} must be whole numbers, got {raw.tolist()}")
    return raw.astype(np.int64)


def default_distances(node_socket: list[int] | np.ndarray) -> np.ndarray:
    """SLIT-style distances from socket membership: 10 local, 12 same socket, 21 remote."""
    socket = np.asarray(node_socket)
    same = socket[:, None] == socket[None, :]
    dist = np.where(same, DEFAULT_SAME_SOCKET_DISTANCE, DEFAULT_REMOTE_DISTANCE)
    np.fill_diagonal(dist, LOCAL_DISTANCE)
    return dist


def uniform_topology(
    name: str,
    sockets: int,
    nodes_per_socket: int,
    cores_per_node: int,
    mem_gib_per_node: float,
    same_socket_distance: int,
    remote_distance: int,
) -> Topology:
    """A topology whose nodes are all alike, grouped evenly into sockets."""
    n = sockets * nodes_per_socket
    socket = np.repeat(np.arange(sockets), nodes_per_socket)
    same = socket[:, None] == socket[None, :]
    dist = np.where(same, same_socket_distance, remote_distance)
    np.fill_diagonal(dist, LOCAL_DISTANCE)
    return Topology(
        name=name,
        node_cores=np.full(n, cores_per_node),
        node_mem_mib=np.full(n, gib_to_mib(mem_gib_per_node)),
        node_socket=socket,
        distance=dist,
    )


# The shipped host models. Sizes are usable capacity per node (what VMs may take), chosen so
# that all three presets have the same memory per core (2.25 GiB), the ratio of the 2-node
# 40-core / 90-GiB hosts used with Huawei-East-1 by VMAgent. Distances follow what the
# firmware of such machines reports.
PRESETS: dict[str, Topology] = {
    "intel-2s": uniform_topology("intel-2s", 2, 1, 40, 90, 0, 21),
    "amd-2s-nps2": uniform_topology("amd-2s-nps2", 2, 2, 32, 72, 12, 32),
    "amd-2s-nps4": uniform_topology("amd-2s-nps4", 2, 4, 16, 36, 12, 32),
}


def get_preset(name: str) -> Topology:
    """The preset called ``name``; a :class:`CaturError` listing the presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_name("topology preset", name, list(PRESETS)) from None


# The keys a topology file may hold, at the top and in each node (see topology_from_dict).
# ``libvirt`` is the section ``catur libvirt topology --json`` adds (each node's cell id and
# CPUs): accepted so that output stays a topology file, and not read.
TOPOLOGY_KEYS = ("name", "nodes", "distances", "libvirt")
NODE_KEYS = ("cores", "mem_gib", "mem_mib", "socket")


def topology_from_dict(spec: dict, *, source: str = "topology") -> Topology:
    """Build a topology from a mapping, as found in a user's YAML/TOML file.

    The shape is::

        name: my-host
        nodes:                      # one entry per NUMA node
          - {cores: 32, mem_gib: 128, socket: 0}
          - {cores: 32, mem_gib: 128, socket: 1}
        distances: [[10, 21], [21, 10]]   # optional; default 10 / 12 / 21 by socket

    ``mem_mib`` may be given instead of ``mem_gib``. ``source`` names the file in errors; an
    unknown key (``distance:`` for ``distances:``) is one, with the closest valid key.
    """
    if not isinstance(spec, dict):
        raise CaturError(f"{source}: a topology must be a mapping, got {type(spec).__name__}")
    check_keys(spec, TOPOLOGY_KEYS, source)
    name = str(spec.get("name", Path(source).stem))
    nodes = spec.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise CaturError(f"{source}: 'nodes' must be a non-empty list of nodes")
    cores, mem, socket = [], [], []
    for i, node in enumerate(nodes):
        where = f"{source}: nodes[{i}]"
        if not isinstance(node, dict):
            raise CaturError(f"{where} must be a mapping with cores and mem_gib")
        check_keys(node, NODE_KEYS, source, f"nodes[{i}]")
        if "cores" not in node:
            raise CaturError(f"{where}: missing 'cores'")
        cores.append(_number(node["cores"], f"{where}.cores"))
        if "mem_mib" in node:
            mem.append(_number(node["mem_mib"], f"{where}.mem_mib"))
        elif "mem_gib" in node:
            mem.append(gib_to_mib(_number(node["mem_gib"], f"{where}.mem_gib")))
        else:
            raise CaturError(f"{where}: missing 'mem_gib' (or 'mem_mib')")
        socket.append(_number(node.get("socket", 0), f"{where}.socket"))
    distances = spec.get("distances")
    if distances is None:
        distances = default_distances(socket)
    return Topology(name, cores, mem, socket, distances)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CaturError(f"{where} must be a finite number, got {value!r}")
    return value


def load_topology_file(path: str | Path) -> Topology:
    """Read a user topology from a ``.yaml``/``.yml`` or ``.toml`` file."""
    return topology_from_dict(read_config_file(path, "topology"), source=str(path))


def resolve_topology(name_or_path: str) -> Topology:
    """A preset name, or else the path of a topology file."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if Path(name_or_path).suffix in CONFIG_SUFFIXES or Path(name_or_path).exists():
        return load_topology_file(name_or_path)
    raise unknown_name("topology preset", name_or_path, list(PRESETS))


# --- Reading the running machine's topology from Linux sysfs --------------------------------

_MEMTOTAL = re.compile(r"MemTotal:\s+(\d+)\s*kB")


def _parse_cpulist(text: str) -> list[int]:
    """Parse a sysfs cpulist such as ``0-3,8-11`` into CPU ids."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def detect_topology(sysfs_root: str | Path = "/sys", name: str = "detected") -> Topology:
    """Read this machine's NUMA topology from ``<sysfs_root>/devices/system/node``.

    Cores per node come from each node's ``cpulist`` (logical CPUs, as the hypervisor schedules
    them), memory from ``meminfo``'s MemTotal, distances from ``distance``, and sockets from
    each node's first CPU's ``topology/physical_package_id``. Memory-only nodes (no CPUs,
    e.g. CXL) are skipped, since a VM's vCPUs cannot be bound to them.
    """
    root = Path(sysfs_root)
    node_dir = root / "devices" / "system" / "node"
    if not node_dir.is_dir():
        raise CaturError(f"no NUMA information at {node_dir} (is this Linux with sysfs?)")
    node_ids = sorted(
        int(p.name[4:]) for p in node_dir.iterdir() if re.fullmatch(r"node\d+", p.name)
    )
    if not node_ids:
        raise CaturError(f"no node* directories under {node_dir}")
    cores, mem, socket, rows, kept = [], [], [], [], []
    for nid in node_ids:
        d = node_dir / f"node{nid}"
        try:
            cpus = _parse_cpulist((d / "cpulist").read_text())
            meminfo = (d / "meminfo").read_text()
            distance = [int(x) for x in (d / "distance").read_text().split()]
        except (OSError, ValueError) as exc:
            raise CaturError(f"cannot read NUMA node {d}: {exc}") from exc
        if not cpus:
            continue
        match = _MEMTOTAL.search(meminfo)
        if match is None:
            raise CaturError(f"{d / 'meminfo'}: no MemTotal line")
        package = root / "devices" / "system" / "cpu" / f"cpu{cpus[0]}" / "topology" / "physical_package_id"
        try:
            socket.append(int(package.read_text().strip()))
        except (OSError, ValueError):
            socket.append(nid)  # no package information: treat each node as its own socket
        cores.append(len(cpus))
        mem.append(int(match.group(1)) // 1024)
        rows.append(distance)
        kept.append(node_ids.index(nid))
    if not cores:
        raise CaturError(f"no NUMA node under {node_dir} has CPUs")
    dist = np.array(rows)[:, kept]
    # Renumber sockets densely from 0, in the order of the package ids.
    _, dense_socket = np.unique(np.array(socket), return_inverse=True)
    return Topology(name, cores, mem, dense_socket, dist)
