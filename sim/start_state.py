"""Start states: a cluster whose hosts are already partly used when the trace begins.

Every replay used to start from empty hosts, which flatters every policy: real hosts are
fragmented when a VM arrives. A :class:`StartState` gives each host its topology and the
vCPUs and memory already used on each of its NUMA nodes. Replays (the reference loop, the
batched engine, a replay through the service) start each host from that usage, and admission
sees only what is left.

Where it comes from
-------------------

A *free-per-node* file such as Huawei Cloud's ``PM_res.csv`` (``CPU1,RAM1,CPU2,RAM2``, read by
:func:`catur.traces.readers.read_node_free`) says how much is **free** on each node, not how
big the node is. Usage is ``capacity - free``, so the capacity must come from somewhere:

* **inferred** (default): every server is taken to be one host model, whose node ``k`` has
  the largest free vCPUs and the largest free memory seen on node ``k`` of any server — the
  smallest model consistent with the whole file (no server can have more free than its
  capacity). Each node is its own socket (SLIT distance 21 between nodes), as on the usual
  two-socket server. For ``PM_res.csv`` this gives 2 nodes of 136 cores and 202 GiB; 234 of
  its 1,710 servers have 60 cores and 202 GiB free on both nodes, the largest common shape,
  so the file holds different server models and the inferred model overstates the small
  ones' usage. When you know the real models, say so:
* **a cluster file** (``--cluster``): its hosts, in order, are the file's servers, one per
  row (the host count must equal the row count); node counts must match, and no server may
  have more free than its host's capacity (the error names the line and the field).

Resident VMs
------------

The used part is *resident load*, not VMs: it has no sizes, no lifetimes and no placements.
It occupies capacity for the whole replay — it counts in every node's COR, so a trace VM
placed on a node already overcommitted by resident load gets a COR above 0 — but it is **not
part of any metric**: no resident VM is in ``vms``, the averages or the anomalies. Only the
trace's VMs are measured, on hosts as loaded as the data says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catur.errors import CaturError
from catur.sim.cluster import ClusterSpec, load_cluster
from catur.topology import DEFAULT_REMOTE_DISTANCE, LOCAL_DISTANCE, MIB_PER_GIB, Topology
from catur.traces.readers import NodeFree, read_node_free

INFERRED_NAME = "inferred"


@dataclass(frozen=True, eq=False)
class StartState:
    """Each host's topology and its initial per-node usage (vCPUs, MiB).

    Attributes:
        source: Where it was read from (for reports).
        spec: The hosts as a cluster (host ``i`` = row ``i`` of the file) and the vCPU
            overcommit admission allows.
        used_vcpus: ``int64[H, N]`` vCPUs in use on each node at the start.
        used_mem_mib: ``int64[H, N]`` MiB in use on each node at the start.
        capacity: ``"inferred"`` or the cluster file the capacities came from.
        rows_skipped: Bad rows of the file dropped (only when asked to skip them).
    """

    source: str
    spec: ClusterSpec
    used_vcpus: np.ndarray
    used_mem_mib: np.ndarray
    capacity: str
    rows_skipped: int = 0

    @property
    def num_hosts(self) -> int:
        return int(self.used_vcpus.shape[0])

    def host_used(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vcpus[H], mem_mib[H])`` in use per host, summed over nodes (for admission)."""
        return self.used_vcpus.sum(axis=1), self.used_mem_mib.sum(axis=1)

    def to_dict(self) -> dict:
        """Facts for the evaluation's JSON ``scenario``."""
        cores, mem = self.spec.host_capacity()
        return {
            "source": self.source,
            "hosts": self.num_hosts,
            "capacity": self.capacity,
            "rows_skipped": self.rows_skipped,
            "host_models": {
                t.name: {"hosts": c, "node_cores": t.node_cores.tolist(),
                         "node_mem_gib": (t.node_mem_mib / MIB_PER_GIB).tolist()}
                for t, c in self.spec.groups if c
            },
            "used_vcpus_fraction": round(float(self.used_vcpus.sum() / cores.sum()), 4),
            "used_mem_fraction": round(float(self.used_mem_mib.sum() / mem.sum()), 4),
        }


def clean_placements(results: dict) -> None:
    """Add ``placed_clean`` to each policy result's ``extra``: the counted VMs placed with no
    vCPU overcommit on their nodes and all memory local (no spill).

    That is a defect of exactly 0 at placement for a VM whose ``alpha`` and ``beta`` are > 0,
    as every VM of a ``VM_data`` file is (the format has no weights: both are 1). A VM with a
    weight of 0 ignores that resource and counts as clean if the other is.
    """
    for result in results.values():
        result.extra["placed_clean"] = int((result.placement_defect == 0).sum())


def infer_topology(free_cores: np.ndarray, free_mem_gib: np.ndarray, name: str = INFERRED_NAME) -> Topology:
    """The smallest host model consistent with every server's free amounts (module docs):
    node ``k`` gets the largest free vCPUs and the largest free GiB seen on node ``k``."""
    cores = np.asarray(free_cores).max(axis=0)
    mem_mib = np.round(np.asarray(free_mem_gib).max(axis=0) * MIB_PER_GIB).astype(np.int64)
    if (cores <= 0).any() or (mem_mib <= 0).any():
        raise CaturError(
            f"cannot infer a host model: some node is never seen with free CPU or RAM "
            f"(largest free per node: cores {cores.tolist()}, GiB {(mem_mib / MIB_PER_GIB).tolist()}); "
            f"give the capacities with --cluster"
        )
    n = cores.shape[0]
    distance = np.full((n, n), DEFAULT_REMOTE_DISTANCE)
    np.fill_diagonal(distance, LOCAL_DISTANCE)
    return Topology(name, cores, mem_mib, np.arange(n), distance)


def start_state_from_free(free: NodeFree, spec: ClusterSpec | None = None) -> StartState:
    """Usage = capacity - free, with capacities from ``spec`` (one host per row) or inferred."""
    hosts = free.free_cores.shape[0]
    if spec is None:
        topology = infer_topology(free.free_cores, free.free_mem_gib)
        spec = ClusterSpec(INFERRED_NAME, ((topology, hosts),))
        capacity = INFERRED_NAME
    else:
        capacity = spec.name
        if spec.num_hosts != hosts:
            raise CaturError(
                f"{free.source}: {hosts} servers, but cluster {spec.name!r} has {spec.num_hosts} "
                f"hosts; a start state's cluster needs exactly one host per row"
            )
    topologies = spec.host_topologies()
    nodes = free.free_cores.shape[1]
    cores = np.zeros((hosts, nodes), dtype=np.int64)
    mem = np.zeros((hosts, nodes), dtype=np.int64)
    for i, topology in enumerate(topologies):
        if topology.num_nodes != nodes:
            raise CaturError(
                f"{free.source}: servers have {nodes} NUMA nodes, but host {i} of cluster "
                f"{spec.name!r} is {topology.name!r} with {topology.num_nodes}"
            )
        cores[i], mem[i] = topology.node_cores, topology.node_mem_mib
    free_mem_mib = np.round(free.free_mem_gib * MIB_PER_GIB).astype(np.int64)
    for label, free_values, capacity_values, unit in (
        ("CPU", free.free_cores, cores, "cores"),
        ("RAM", free_mem_mib, mem, "MiB"),
    ):
        over = free_values > capacity_values
        if over.any():
            row, node = (int(x) for x in np.argwhere(over)[0])
            shown = free.free_cores[row, node] if label == "CPU" else free.free_mem_gib[row, node]
            raise CaturError(
                f"{free.source}, line {free.lines[row]}: field '{label}{node + 1}' = {shown:g}: "
                f"more free than node {node} of host model {topologies[row].name!r} has "
                f"({capacity_values[row, node]} {unit}; {int(over.sum()) - 1} more such values)"
            )
    return StartState(free.source, spec, cores - free.free_cores, mem - free_mem_mib, capacity, free.rows_skipped)


def load_start_state(
    path: str | Path, cluster: str | None = None, *, cpu_overcommit: float | None = None,
    skip_bad_rows: bool = False,
) -> StartState:
    """Read a free-per-node file (``PM_res.csv``) into a :class:`StartState`.

    ``cluster`` (a cluster file or shipped mix name) gives the capacities, else they are
    inferred; ``cpu_overcommit`` overrides the cluster's (default 1.0). ``skip_bad_rows``
    drops bad server rows (counted in ``rows_skipped``) instead of failing: with a cluster
    file, the host count must then match the rows kept.
    """
    from dataclasses import replace

    spec = load_cluster(cluster) if cluster else None
    state = start_state_from_free(read_node_free(path, skip_bad_rows), spec)
    if cpu_overcommit is not None:
        state = replace(state, spec=replace(state.spec, cpu_overcommit=cpu_overcommit))
    return state
