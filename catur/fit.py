"""Does a VM fit a host's free memory? One verdict, one line naming what is short and where.

Catur's placement never fails: vCPUs may overcommit a node (that is COR, which the defect
measures), and memory that fits nowhere lands on the instance's own node
(:func:`catur.placement.spread_memory`). That is right for simulation, where the defect is
the point, but a hypervisor cannot give a guest memory it does not have: a VM whose memory
exceeds what the host has free must be *refused*, not placed "with defect 0".

The rule here is memory only, and per node:

* a node's **free memory** is its capacity minus what is in use on it, and never more than
  what the host itself reports free there (``reported_free``, e.g. libvirt's
  ``virNodeGetCellsFreeMemory`` or free huge pages), when the caller has that;
* a **request fits** when its memory is at most the sum of the nodes' free memory (Catur
  spills memory over nodes, so this is the whole condition before placement);
* a **placement fits** when each node gets at most its free memory.

Quantities are in whatever unit the caller counts memory in (MiB for ordinary memory, pages
for a page-backed guest: ``unit`` names it in the message). Pure functions over numpy arrays:
the libvirt agent (``catur libvirt place``) and the service (``PlaceRequest.fit_only``) share
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError


@dataclass(frozen=True, eq=False)
class FitVerdict:
    """Whether a VM fits, and if not, one line saying what is short and where.

    Attributes:
        fits: The memory fits the free memory (per node, for a placement).
        needed: The VM's memory (in ``unit``).
        free: Each node's free memory before the VM (``int64[N]``, in ``unit``).
        short: ``""`` when it fits; otherwise e.g. ``"memory: needs 65536 MiB, 6144 MiB free
            (cell 0: 2048, cell 1: 4096)"``.
        unit: What the quantities count (``"MiB"``, ``"1 GiB pages"`` ...).
    """

    fits: bool
    needed: int
    free: np.ndarray
    short: str = ""
    unit: str = "MiB"

    def to_dict(self) -> dict:
        return {"fits": self.fits, "needed": self.needed, "free": self.free.tolist(), "unit": self.unit, "short": self.short}


def free_memory(node_mem, used_mem, reported_free=None) -> np.ndarray:
    """Each node's free memory: capacity minus use, capped by what the host reports free."""
    free = np.maximum(np.asarray(node_mem, dtype=np.int64) - np.asarray(used_mem, dtype=np.int64), 0)
    if reported_free is not None:
        reported = np.asarray(reported_free, dtype=np.int64)
        if reported.shape != free.shape:
            raise CaturError(f"free memory has {reported.size} values; the host has {free.size} nodes")
        if (reported < 0).any():
            raise CaturError(f"free memory must be >= 0 on every node, got {reported.tolist()}")
        free = np.minimum(free, reported)
    return free


def _names(n: int, names) -> list[str]:
    return list(names) if names is not None else [f"node {i}" for i in range(n)]


def fit_request(needed: int, free, *, unit: str = "MiB", names=None, what: str = "memory") -> FitVerdict:
    """Does ``needed`` fit the nodes' ``free`` memory at all (spilling over nodes allowed)?"""
    free = np.asarray(free, dtype=np.int64)
    total = int(free.sum())
    if int(needed) <= total:
        return FitVerdict(True, int(needed), free, "", unit)
    labels = _names(free.size, names)
    per_node = ", ".join(f"{label}: {int(f)}" for label, f in zip(labels, free))
    short = f"{what}: needs {int(needed)} {unit}, only {total} {unit} free ({per_node})"
    return FitVerdict(False, int(needed), free, short, unit)


def fit_placement(node_mem_placed, free, *, unit: str = "MiB", names=None, what: str = "memory") -> FitVerdict:
    """Does a placement's memory per node (``node_mem_placed[N]``) fit each node's ``free``?

    The message names the first node that is short, and by how much."""
    placed = np.asarray(node_mem_placed, dtype=np.int64)
    free = np.asarray(free, dtype=np.int64)
    needed = int(placed.sum())
    if needed > int(free.sum()):
        return fit_request(needed, free, unit=unit, names=names, what=what)
    over = np.flatnonzero(placed > free)
    if over.size == 0:
        return FitVerdict(True, needed, free, "", unit)
    i = int(over[0])
    label = _names(free.size, names)[i]
    short = f"{what}: {label} would get {int(placed[i])} {unit} but has {int(free[i])} {unit} free"
    return FitVerdict(False, needed, free, short, unit)
