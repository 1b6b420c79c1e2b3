"""A libvirt host's NUMA topology, read from its capabilities XML (or its node info).

libvirt describes the host in ``virConnectGetCapabilities``' XML::

    <capabilities><host><topology><cells num='2'>
      <cell id='0'>
        <memory unit='KiB'>2097152</memory>
        <distances><sibling id='0' value='10'/><sibling id='1' value='21'/></distances>
        <cpus num='8'><cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/> ...</cpus>
      </cell> ...

:func:`parse_capabilities` turns that into a :class:`HostTopology`: Catur's
:class:`~catur.topology.Topology` (what placement needs) plus, per Catur node, libvirt's cell
id and the host CPU ids, which is what a domain's ``cpuset`` and ``nodeset`` refer to. The
reading follows :func:`catur.topology.detect_topology` rule for rule (logical CPUs per node,
MemTotal in whole MiB, memory-only nodes skipped, sockets from the first CPU's package,
renumbered densely), so on a Linux host both give the same topology.

Some drivers report no cells (libvirt's test driver opened on a file does, and so does a
host without NUMA information): :func:`topology_from_nodeinfo` then builds a uniform host from
``virNodeGetInfo`` (nodes, sockets, cores, threads, memory), CPUs numbered node by node. Node
info cannot say which nodes share a socket (libvirt's ``sockets`` is *per node*), so the caller
says how many nodes a socket holds.

The cpuset grammar (``0-3,8,^2``) and libvirt's memory units are here too, for the domain side.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from catur.errors import CaturError
from catur.topology import Topology, default_distances

# libvirt's memory units (docs: "Memory Allocation"), as multiples of one byte.
_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 10**3, "k": 2**10, "kib": 2**10,
    "mb": 10**6, "m": 2**20, "mib": 2**20,
    "gb": 10**9, "g": 2**30, "gib": 2**30,
    "tb": 10**12, "t": 2**40, "tib": 2**40,
    "pb": 10**15, "p": 2**50, "pib": 2**50,
    "eb": 10**18, "e": 2**60, "eib": 2**60,
}


def to_kib(value: str | None, unit: str | None, where: str) -> int:
    """A libvirt size (``value`` in ``unit``, default KiB) in whole KiB, rounded up as libvirt does."""
    text = (value or "").strip()
    if not text.isdigit():
        raise CaturError(f"{where}: size must be a whole number, got {value!r}")
    factor = _UNITS.get((unit or "KiB").strip().lower())
    if factor is None:
        raise CaturError(f"{where}: unknown memory unit {unit!r}; known: {', '.join(sorted(_UNITS))}")
    return -(-int(text) * factor // 1024)


def parse_cpuset(text: str | None, where: str) -> list[int]:
    """Parse libvirt's cpuset/nodeset grammar (``0-3,8,^2``) into sorted ids.

    ``^N`` (or ``^N-M``) removes ids listed before it, as in libvirt's ``virBitmapParse``.
    """
    if text is None or not text.strip():
        raise CaturError(f"{where}: empty cpuset")
    chosen: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        exclude = part.startswith("^")
        part = part.removeprefix("^").strip()
        lo, dash, hi = part.partition("-")
        if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
            raise CaturError(f"{where}: bad cpuset {text!r} (expected e.g. '0-3,8,^2')")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise CaturError(f"{where}: bad cpuset {text!r}: range {first}-{last} runs backwards")
        ids = set(range(first, last + 1))
        chosen = chosen - ids if exclude else chosen | ids
    if not chosen:
        raise CaturError(f"{where}: cpuset {text!r} selects nothing")
    return sorted(chosen)


def format_cpuset(ids) -> str:
    """The shortest cpuset string for these ids: ``[0, 1, 2, 3, 8]`` → ``'0-3,8'``."""
    ordered = sorted({int(i) for i in ids})
    if not ordered:
        raise CaturError("cannot format an empty cpuset")
    parts, start, prev = [], ordered[0], ordered[0]
    for i in ordered[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


@dataclass(frozen=True, eq=False)
class HostTopology:
    """A libvirt host: Catur's topology plus libvirt's names for its nodes and CPUs.

    Attributes:
        topology: The :class:`~catur.topology.Topology` placement works on (node ``i`` is
            Catur's node index, always ``0..N-1``).
        cell_ids: libvirt's NUMA cell id of each Catur node (what ``nodeset`` and
            ``<memnode>`` name); equal to the node index on most hosts, not where memory-only
            cells were skipped.
        cpus: The host CPU ids of each node (what ``cpuset`` and ``<vcpupin>`` name).
        source: ``"capabilities"`` or ``"nodeinfo"`` (the uniform fallback).
        hugepages: The huge page pools, ``{page size in KiB: pages per node}`` (sizes above
            the host's base page; from ``<pages>`` in the capabilities). The pools are part of
            each node's memory but not available to ordinary guest memory: only a guest backed
            by pages of that size can use them.
    """

    topology: Topology
    cell_ids: tuple[int, ...]
    cpus: tuple[tuple[int, ...], ...]
    source: str = "capabilities"
    hugepages: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.topology.num_nodes
        if len(self.cell_ids) != n or len(self.cpus) != n:
            raise CaturError(f"host topology: {n} nodes but {len(self.cell_ids)} cell ids and {len(self.cpus)} CPU lists")
        for size, pages in self.hugepages.items():
            if len(pages) != n:
                raise CaturError(f"host topology: {size} KiB page pool has {len(pages)} values for {n} nodes")
        owner: dict[int, int] = {}
        for node, cpus in enumerate(self.cpus):
            for cpu in cpus:
                if cpu in owner:
                    raise CaturError(f"host topology: CPU {cpu} is in both node {owner[cpu]} and node {node}")
                owner[cpu] = node
        object.__setattr__(self, "_cpu_node", owner)
        lookup = np.full(max(owner, default=-1) + 1, -1, dtype=np.int64)
        lookup[list(owner)] = list(owner.values())
        object.__setattr__(self, "_cpu_node_array", lookup)
        object.__setattr__(self, "_cell_node", {c: i for i, c in enumerate(self.cell_ids)})

    @property
    def num_nodes(self) -> int:
        return self.topology.num_nodes

    def hugepage_mib(self) -> np.ndarray:
        """Per node, the MiB held in huge page pools (not available to ordinary memory)."""
        out = np.zeros(self.num_nodes, dtype=np.int64)
        for size, pages in self.hugepages.items():
            out += np.asarray(pages, dtype=np.int64) * int(size) // 1024
        return out

    def cell_names(self) -> list[str]:
        """``"cell <id>"`` per node: how messages name a node to a libvirt user."""
        return [f"cell {c}" for c in self.cell_ids]

    def node_of_cpu(self, cpu: int) -> int | None:
        """The Catur node holding host CPU ``cpu``, or ``None`` for a CPU the host lacks."""
        return self._cpu_node.get(int(cpu))  # type: ignore[attr-defined]

    def nodes_of_cpus(self, cpus) -> np.ndarray:
        """The Catur node of each host CPU id (``-1`` for CPUs the host lacks), as an array."""
        ids = np.asarray(cpus, dtype=np.int64)
        lookup = self._cpu_node_array  # type: ignore[attr-defined]
        inside = (ids >= 0) & (ids < lookup.shape[0])
        return np.where(inside, lookup[np.where(inside, ids, 0)], -1)

    def node_of_cell(self, cell_id: int) -> int | None:
        """The Catur node of libvirt cell ``cell_id``, or ``None`` (no such cell, or memory-only)."""
        return self._cell_node.get(int(cell_id))  # type: ignore[attr-defined]

    def node_cpuset(self, node: int) -> str:
        """The cpuset string of node ``node``'s CPUs, e.g. ``'8-15'``."""
        return format_cpuset(self.cpus[node])

    def to_dict(self) -> dict:
        """The topology file format (:meth:`Topology.to_dict`, which ``catur topology show`` and
        ``--topology FILE`` read) plus a ``libvirt`` section with each node's cell id and CPUs
        (an extra top-level key, which the topology reader ignores)."""
        out = self.topology.to_dict()
        out["libvirt"] = {
            "source": self.source,
            "cells": list(self.cell_ids),
            "cpus": [self.node_cpuset(node) for node in range(self.num_nodes)],
        }
        if self.hugepages:
            out["libvirt"]["hugepages"] = {f"{size}KiB": list(pages) for size, pages in sorted(self.hugepages.items())}
        return out


class NoNumaCells(CaturError):
    """The capabilities list no NUMA cell with CPUs (the caller may use node info instead)."""


def _parse_xml(text: str, source: str, root_tag: str) -> ET.Element:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CaturError(f"{source}: not well-formed XML: {exc}") from None
    if root.tag != root_tag:
        raise CaturError(f"{source}: expected a <{root_tag}> document, got <{root.tag}>")
    return root


def _int_attr(element: ET.Element, name: str, where: str, default: int | None = None) -> int:
    value = element.get(name)
    if value is None:
        if default is not None:
            return default
        raise CaturError(f"{where}: missing attribute {name!r}")
    try:
        return int(value)
    except ValueError:
        raise CaturError(f"{where}: attribute {name}={value!r} is not a whole number") from None


def parse_capabilities(
    text: str, name: str = "libvirt", source: str = "capabilities", warn: Callable[[str], None] | None = None,
) -> HostTopology:
    """Read the host's NUMA cells from a capabilities XML document.

    Raises :class:`CaturError` naming ``source`` for XML that is not capabilities, a cell with
    a bad value, an asymmetric distance matrix (naming the two cells), or a host that reports
    no NUMA cell with CPUs (callers may then fall back to :func:`topology_from_nodeinfo`).
    Distances that some cells give and others omit are completed (``warn`` is told how), never
    thrown away: see :func:`_distances`.
    """
    root = _parse_xml(text, source, "capabilities")
    cells = root.findall("./host/topology/cells/cell")
    rows = []
    for cell in cells:
        cell_id = _int_attr(cell, "id", f"{source}: <cell>")
        where = f"{source}: cell {cell_id}"
        memory = cell.find("memory")
        if memory is None:
            raise CaturError(f"{where}: no <memory>")
        mem_mib = to_kib(memory.text, memory.get("unit"), f"{where} <memory>") // 1024
        cpus = [(_int_attr(c, "id", f"{where} <cpu>"), _int_attr(c, "socket_id", f"{where} <cpu>", cell_id))
                for c in cell.findall("./cpus/cpu")]
        if not cpus:
            continue  # a memory-only node (CXL, HBM): no vCPU can be bound to it
        siblings = {_int_attr(s, "id", f"{where} <sibling>"): _int_attr(s, "value", f"{where} <sibling>")
                    for s in cell.findall("./distances/sibling")}
        pages = {}
        for page in cell.findall("pages"):
            size = to_kib(page.get("size"), page.get("unit"), f"{where} <pages size>")
            count = (page.text or "").strip()
            if not count.isdigit():
                raise CaturError(f"{where}: <pages size='{page.get('size')}'> must hold a whole number of pages, got {count!r}")
            pages[size] = int(count)
        rows.append((cell_id, sorted(c for c, _ in cpus), cpus[0][1], mem_mib, siblings, pages))
    if not rows:
        raise NoNumaCells(f"{source}: libvirt reports no NUMA cell with CPUs")
    rows.sort(key=lambda r: r[0])
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise CaturError(f"{source}: duplicate cell ids {ids}")
    _, socket = np.unique(np.array([r[2] for r in rows]), return_inverse=True)
    distance = _distances(ids, [r[4] for r in rows], socket, source, warn)
    topology = Topology(name, [len(r[1]) for r in rows], [r[3] for r in rows], socket, distance)
    # Huge pages: in each cell, every size above its base page (the smallest size it lists;
    # libvirt's test driver gives its cells different ones).
    huge = [{size: n for size, n in r[5].items() if size != min(r[5])} for r in rows]
    sizes = sorted({size for cell in huge for size in cell})
    hugepages = {size: tuple(cell.get(size, 0) for cell in huge) for size in sizes}
    hugepages = {size: pages for size, pages in hugepages.items() if any(pages)}
    return HostTopology(topology, tuple(ids), tuple(tuple(r[1]) for r in rows), "capabilities", hugepages)


def _distances(ids: list[int], siblings: list[dict[int, int]], socket: np.ndarray, source: str,
               warn: Callable[[str], None] | None) -> np.ndarray:
    """The SLIT from each cell's ``<distances>``.

    * Every cell lists every cell: that matrix. An asymmetric one is refused, naming the two
      cells (Catur's topology, and its spill order, assume ``d(i, j) == d(j, i)``).
    * No cell lists any (older libvirt, some drivers): 10/12/21 by socket.
    * Some cells list distances and some do not: a missing ``d(i, j)`` is taken from
      ``d(j, i)`` when cell ``j`` gave it, else from the default by socket; the real values
      stay, and ``warn`` names the cells that gave none.
    """
    default = default_distances(socket)
    n = len(ids)
    if not any(siblings):
        return default
    distance = default.copy()
    given = np.zeros((n, n), dtype=bool)
    for i, row in enumerate(siblings):
        for j, cell in enumerate(ids):
            if cell in row:
                distance[i, j], given[i, j] = row[cell], True
    for i in range(n):
        for j in range(n):
            if given[i, j] and given[j, i] and distance[i, j] != distance[j, i]:
                raise CaturError(
                    f"{source}: asymmetric distances between cell {ids[i]} and cell {ids[j]}: "
                    f"{ids[i]}->{ids[j]} is {distance[i, j]}, {ids[j]}->{ids[i]} is {distance[j, i]}; "
                    "Catur needs a symmetric SLIT (save the capabilities, make the two values equal, "
                    "and pass --capabilities FILE)"
                )
            if not given[i, j] and given[j, i]:
                distance[i, j] = distance[j, i]
    missing = [ids[i] for i in range(n) if not given[i].all()]
    if missing and warn is not None:
        guessed = int((~(given | given.T)).sum())
        warn(f"{source}: cell(s) {', '.join(map(str, missing))} list no (or partial) <distances>; their values were taken "
             f"from the other cells' rows" + (f", {guessed} entries from the default by socket (10/12/21)" if guessed else ""))
    return distance


def topology_from_nodeinfo(info, name: str = "libvirt", nodes_per_socket: int = 1) -> HostTopology:
    """A uniform host from ``virNodeGetInfo``'s ``[model, memory MiB, cpus, MHz, nodes,
    sockets per node, cores per socket, threads per core]``.

    Node ``i`` gets CPUs ``i*c .. i*c+c-1`` (``c`` = CPUs per node) and an equal share of the
    memory; consecutive groups of ``nodes_per_socket`` nodes form a socket.
    """
    try:
        _, memory_mib, cpus, _, nodes, sockets, cores, threads = (info[0], *map(int, info[1:8]))
    except (TypeError, ValueError, IndexError):
        raise CaturError(f"node info: expected libvirt's 8 fields, got {info!r}") from None
    per_node = sockets * cores * threads
    if nodes < 1 or per_node < 1 or nodes * per_node != cpus:
        raise CaturError(
            f"node info: {nodes} nodes x {sockets} sockets x {cores} cores x {threads} threads "
            f"!= {cpus} CPUs; libvirt reports such hosts as one node (read the capabilities instead)"
        )
    if isinstance(nodes_per_socket, bool) or nodes_per_socket < 1 or nodes % nodes_per_socket:
        raise CaturError(f"nodes per socket must divide the {nodes} nodes, got {nodes_per_socket!r}")
    socket = np.arange(nodes) // nodes_per_socket
    topology = Topology(
        name, [per_node] * nodes, [memory_mib // nodes] * nodes, socket, default_distances(socket)
    )
    cpu_ids = tuple(tuple(range(i * per_node, (i + 1) * per_node)) for i in range(nodes))
    return HostTopology(topology, tuple(range(nodes)), cpu_ids, "nodeinfo")


def fits_whole_mib(kib: int) -> int:
    """KiB rounded up to whole MiB (Catur's unit): a VM never gets less than it asked for."""
    return int(math.ceil(kib / 1024))
