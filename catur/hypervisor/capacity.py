"""What a new domain may use on each host node: free memory, or free huge pages.

A libvirt host has two kinds of guest memory, and a domain draws on exactly one:

* **ordinary memory** (no ``<memoryBacking><hugepages>``): a node's capacity is its memory
  *minus its huge page pools* (reserved pages are not available to ordinary allocations);
* **a huge page pool** (``<hugepages>`` with page size ``P``): a node's capacity is its pool
  of ``P`` pages, and nothing else (a page-backed guest cannot fall back to ordinary pages).

From that capacity, the domains Catur counts (running, and by default defined ones too: a
defined domain will claim its memory when it starts) are taken away; where libvirt reports
what is free now (``virNodeGetCellsFreeMemory``, ``virNodeGetFreePages``), the free amount
is also capped by that report minus the counted domains that are not running (they hold
nothing yet). :func:`placement_view` returns the result as the host state Catur's placement
works on:

* ordinary memory: the host's own topology, with ``used_mem_mib = memory - free`` per node,
  so the decider sees exactly the free memory;
* huge pages: the same topology **counted in pages** (node memory = pool pages, used =
  pool - free pages) and the request in pages, so every instance, and every node's share of
  it, is a whole number of pages; :meth:`PlacementView.to_mib` turns the answer back into MiB.

:func:`catur.fit.fit_placement` then says whether the answer fits, in the view's unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError
from catur.fit import FitVerdict, fit_placement, free_memory
from catur.hypervisor.capabilities import HostTopology
from catur.hypervisor.domain import DomainSpec, HostUsage
from catur.request import VMRequest
from catur.state import Placement
from catur.topology import Topology


@dataclass(frozen=True)
class ReportedFree:
    """What libvirt reports free right now, per node: ``mem_mib`` (ordinary memory,
    ``virNodeGetCellsFreeMemory``) and ``pages`` (``{page KiB: free pages per node}``,
    ``virNodeGetFreePages``); either may be missing (``None`` / no entry)."""

    mem_mib: tuple[int, ...] | None = None
    pages: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def pages_of(self, size_kib: int) -> tuple[int, ...] | None:
        return dict(self.pages).get(size_kib)


def page_label(size_kib: int) -> str:
    """``1048576`` → ``"1 GiB pages"``, ``2048`` → ``"2 MiB pages"``."""
    for unit, factor in (("GiB", 1 << 20), ("MiB", 1 << 10)):
        if size_kib % factor == 0:
            return f"{size_kib // factor} {unit} pages"
    return f"{size_kib} KiB pages"


@dataclass(frozen=True, eq=False)
class PlacementView:
    """The host state a domain is placed against, in the unit of the memory it draws on.

    ``mib_per_unit`` is 1 for ordinary memory and the page size in MiB for a page-backed
    domain; ``free`` is each node's free memory in that unit before the domain."""

    topology: Topology
    used_vcpus: np.ndarray
    used_mem: np.ndarray
    free: np.ndarray
    request: VMRequest
    unit: str
    mib_per_unit: int
    names: tuple[str, ...]

    def fit(self, placement: Placement) -> FitVerdict:
        """Does this placement (in the view's unit) fit each node's free memory?"""
        what = "memory" if self.mib_per_unit == 1 else "huge pages"
        return fit_placement(placement.node_mem_mib(), self.free, unit=self.unit, names=self.names, what=what)

    def to_mib(self, placement: Placement) -> Placement:
        """The placement with its memory in MiB (identity for ordinary memory)."""
        if self.mib_per_unit == 1:
            return placement
        return Placement(placement.cpu_nodes, placement.vcpus, placement.mem_mib * self.mib_per_unit, placement.policy)


def _counted(usage: HostUsage, page_kib: int | None, active: bool | None = None) -> np.ndarray:
    """MiB per node of the counted domains backed by ``page_kib`` pages (None: ordinary)."""
    out = np.zeros(usage.host.num_nodes, dtype=np.int64)
    for d in usage.domains:
        if d.hugepage_kib == page_kib and (active is None or d.active == active):
            out += d.node_mem_mib
    return out


def placement_view(host: HostTopology, usage: HostUsage, spec: DomainSpec, request: VMRequest,
                   reported: ReportedFree | None = None) -> PlacementView:
    """The host state (and request) ``spec`` is placed against (see the module docstring)."""
    reported = reported or ReportedFree()
    topo = host.topology
    names = tuple(host.cell_names())
    if spec.hugepage_kib is None:
        capacity = topo.node_mem_mib - host.hugepage_mib()
        cap_now = None
        if reported.mem_mib is not None:
            cap_now = np.maximum(np.asarray(reported.mem_mib, dtype=np.int64) - _counted(usage, None, active=False), 0)
        free = free_memory(np.maximum(capacity, 0), _counted(usage, None), cap_now)
        used = topo.node_mem_mib - free
        return PlacementView(topo, usage.used_vcpus, used, free, request, "MiB", 1, names)
    size = spec.hugepage_kib
    label = page_label(size)
    if size % 1024:
        raise CaturError(f"domain {spec.name!r}: backed by {size} KiB pages; Catur places guests backed by whole-MiB pages")
    if spec.mem_kib % size:
        raise CaturError(f"domain {spec.name!r}: memory of {spec.mem_kib} KiB is not a whole number of {label} "
                         f"({size} KiB); libvirt would round it up: give a multiple")
    per_page = size // 1024
    pool = np.asarray(host.hugepages.get(size, (0,) * host.num_nodes), dtype=np.int64)
    counted = -(-_counted(usage, size) // per_page)
    cap_now = None
    if reported.pages_of(size) is not None:
        inactive = -(-_counted(usage, size, active=False) // per_page)
        cap_now = np.maximum(np.asarray(reported.pages_of(size), dtype=np.int64) - inactive, 0)
    free = free_memory(pool, counted, cap_now)
    nodes = np.maximum(pool, 1)  # a node without a pool: one page, all of it used
    scaled = Topology(f"{topo.name} ({label})", topo.node_cores, nodes, topo.node_socket, topo.distance)
    pages_request = VMRequest(request.vcpus, spec.mem_kib // size, request.alpha, request.beta, request.vnuma)
    return PlacementView(scaled, usage.used_vcpus, nodes - free, free, pages_request, label, per_page, names)
