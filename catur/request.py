"""VM requests and their split into vNUMA instances.

A :class:`VMRequest` is what a hypervisor asks Catur to place: vCPUs, memory (MiB, an integer,
like everything in Catur), the optional sensitivity weights ``alpha`` (to CPU overload) and
``beta`` (to remote memory), and an optional explicit vNUMA instance count.

A VM that fits no single node's capacity is split into the fewest near-equal instances that
do fit (:func:`split_request`); each instance later goes to a distinct node.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from catur.errors import CaturError
from catur.topology import Topology


@dataclass(frozen=True)
class VMRequest:
    """A VM to place. Validated on construction; errors name the bad field and value.

    Attributes:
        vcpus: Virtual CPUs, >= 1.
        mem_mib: Memory in MiB, >= 1.
        alpha: Weight of CPU overload (COR) in this VM's defect, >= 0. Default 1.
        beta: Weight of remote memory (RMR) in this VM's defect, >= 0. Default 1.
        vnuma: Explicit number of vNUMA instances, or ``None`` to let Catur choose the fewest
            that fit.
    """

    vcpus: int
    mem_mib: int
    alpha: float = 1.0
    beta: float = 1.0
    vnuma: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vcpus", _positive_int(self.vcpus, "vcpus"))
        object.__setattr__(self, "mem_mib", _positive_int(self.mem_mib, "mem_mib"))
        for label in ("alpha", "beta"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise CaturError(f"VM request: {label} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise CaturError(f"VM request: {label} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, label, float(value))
        if self.vnuma is not None:
            object.__setattr__(self, "vnuma", _positive_int(self.vnuma, "vnuma"))


def _positive_int(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise CaturError(f"VM request: {label} must be a number, got {value!r}")
    if not math.isfinite(value) or value != int(value):
        raise CaturError(f"VM request: {label} must be a whole number, got {value!r}")
    if value < 1:
        raise CaturError(f"VM request: {label} must be >= 1, got {value!r}")
    return int(value)


def even_splits(totals: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Each ``totals[b]`` in ``parts[b]`` near-equal integers, larger ones first (each row sums
    exactly to its total): ``int64[B, max(parts)]``, zeros past each row's ``parts``."""
    base, extra = np.divmod(np.asarray(totals, dtype=np.int64), parts)
    column = np.arange(int(parts.max()) if parts.size else 0)
    out = base[:, None] + (column < extra[:, None])
    out[column >= parts[:, None]] = 0
    return out


def vnuma_count(topology: Topology, request: VMRequest) -> int:
    """How many vNUMA instances the VM gets on this topology.

    An explicit ``request.vnuma`` must be between 1 and the node count. Otherwise: the smallest
    ``k`` such that at least ``k`` nodes can each hold a ``1/k`` share (rounded up) of the VM's
    vCPUs and memory by *capacity* (not by what is free). A VM too large even for one share
    per node gets one instance per node and overcommits. Either way there are never more
    instances than vCPUs: every instance needs at least one vCPU (an instance with none would
    hold memory that is local to none of the VM's vCPUs, yet count as local in RMR).
    """
    return int(vnuma_counts(topology, [request.vcpus], [request.mem_mib], [request.vnuma or 0])[0])


def vnuma_counts(topology: Topology, vcpus, mem_mib, vnuma) -> np.ndarray:
    """:func:`vnuma_count` of many VMs at once (arrays; ``vnuma`` 0 = let Catur choose)."""
    vcpus = np.asarray(vcpus, dtype=np.int64)
    mem_mib = np.asarray(mem_mib, dtype=np.int64)
    vnuma = np.asarray(vnuma, dtype=np.int64)
    n = topology.num_nodes
    explicit = vnuma > 0
    if explicit.any():
        too_many = np.flatnonzero(explicit & (vnuma > n))
        if too_many.size:
            raise CaturError(
                f"VM request: vnuma={int(vnuma[too_many[0]])} exceeds the {n} NUMA nodes of "
                f"topology {topology.name!r}"
            )
        no_vcpu = np.flatnonzero(explicit & (vnuma > vcpus))
        if no_vcpu.size:
            i = no_vcpu[0]
            raise CaturError(
                f"VM request: vnuma={int(vnuma[i])} exceeds vcpus={int(vcpus[i])}; every "
                f"requested vNUMA instance needs at least one vCPU"
            )
    # Rows still looking for their smallest fitting k (at most one per vCPU, and per node).
    count = np.where(explicit, vnuma, np.minimum(n, vcpus))
    open_ = ~explicit
    for k in range(1, n + 1):
        open_ &= count > k - 1  # k beyond the row's maximum: it keeps that maximum
        if not open_.any():
            break
        cpu_share = -(-vcpus[:, None] // k)
        mem_share = -(-mem_mib[:, None] // k)
        fits = ((topology.node_cores >= cpu_share) & (topology.node_mem_mib >= mem_share)).sum(axis=1) >= k
        done = open_ & fits
        count[done] = k
        open_ &= ~done
    return count


def split_request(topology: Topology, request: VMRequest) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance ``(vcpus, mem_mib)`` int64 arrays (read-only); each sums exactly to the
    request."""
    return _split_one(topology, request.vcpus, request.mem_mib, request.vnuma or 0)


@functools.lru_cache(maxsize=4096)
def _split_one(topology: Topology, vcpus: int, mem_mib: int, vnuma: int) -> tuple[np.ndarray, np.ndarray]:
    # A pure function of few distinct inputs (VM flavors on host models), asked once per
    # decision: remembering it keeps the array code's fixed cost off the one-VM path.
    _, inst_vcpus, inst_mem = split_requests(topology, [vcpus], [mem_mib], [vnuma])
    inst_vcpus, inst_mem = inst_vcpus[0], inst_mem[0]
    inst_vcpus.flags.writeable = False
    inst_mem.flags.writeable = False
    return inst_vcpus, inst_mem


class RequestBatch(NamedTuple):
    """``B`` requests as arrays, each split into the same number ``k`` of vNUMA instances:
    what the batched decision code (:meth:`catur.decision.Decider.decide_batch`) takes.

    ``vcpus``, ``mem_mib``, ``alpha``, ``beta`` are ``[B]``; ``inst_vcpus`` and ``inst_mem``
    ``[B, k]`` (from :func:`split_requests`). ``requests`` optionally keeps the
    :class:`VMRequest` objects (the deep shield's statistics key on them).
    """

    vcpus: np.ndarray
    mem_mib: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    inst_vcpus: np.ndarray
    inst_mem: np.ndarray
    requests: tuple[VMRequest, ...] | None = None

    @classmethod
    def of(cls, topology: Topology, request: VMRequest) -> "RequestBatch":
        """A batch of one."""
        inst_vcpus, inst_mem = split_request(topology, request)
        return cls(
            np.array([request.vcpus]),
            np.array([request.mem_mib]),
            np.array([request.alpha]),
            np.array([request.beta]),
            inst_vcpus[None],
            inst_mem[None],
            (request,),
        )


def split_requests(topology: Topology, vcpus, mem_mib, vnuma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split_request` of many VMs at once: ``(k[B], vcpus[B, K], mem_mib[B, K])``, each
    row padded with zeros past its ``k`` instances (``K`` = the largest ``k``)."""
    k = vnuma_counts(topology, vcpus, mem_mib, vnuma)
    return k, even_splits(vcpus, k), even_splits(mem_mib, k)
