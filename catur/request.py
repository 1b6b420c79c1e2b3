"""VM requests and their split into vNUMA instances.

A :class:`VMRequest` is what a hypervisor asks Catur to place: vCPUs, memory (MiB, an integer,
like everything in Catur), the optional sensitivity weights ``alpha`` (to CPU overload) and
``beta`` (to remote memory), and an optional explicit vNUMA instance count.

A VM that fits no single node's capacity is split into the fewest near-equal instances that
do fit (:func:`split_request`); each instance later goes to a distinct node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _even_split(total: int, parts: int) -> np.ndarray:
    """``total`` in ``parts`` near-equal integers, larger ones first (sums exactly to total)."""
    base, extra = divmod(total, parts)
    return np.array([base + 1] * extra + [base] * (parts - extra), dtype=np.int64)


def vnuma_count(topology: Topology, request: VMRequest) -> int:
    """How many vNUMA instances the VM gets on this topology.

    An explicit ``request.vnuma`` must be between 1 and the node count. Otherwise: the smallest
    ``k`` such that at least ``k`` nodes can each hold a ``1/k`` share (rounded up) of the VM's
    vCPUs and memory by *capacity* (not by what is free). A VM too large even for one share
    per node gets one instance per node and overcommits. Either way there are never more
    instances than vCPUs: every instance needs at least one vCPU (an instance with none would
    hold memory that is local to none of the VM's vCPUs, yet count as local in RMR).
    """
    n = topology.num_nodes
    if request.vnuma is not None:
        if request.vnuma > n:
            raise CaturError(
                f"VM request: vnuma={request.vnuma} exceeds the {n} NUMA nodes of "
                f"topology {topology.name!r}"
            )
        if request.vnuma > request.vcpus:
            raise CaturError(
                f"VM request: vnuma={request.vnuma} exceeds vcpus={request.vcpus}; every "
                f"requested vNUMA instance needs at least one vCPU"
            )
        return request.vnuma
    most = min(n, request.vcpus)
    for k in range(1, most + 1):
        cpu_share = -(-request.vcpus // k)
        mem_share = -(-request.mem_mib // k)
        fits = (topology.node_cores >= cpu_share) & (topology.node_mem_mib >= mem_share)
        if int(fits.sum()) >= k:
            return k
    return most


def split_request(topology: Topology, request: VMRequest) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance ``(vcpus, mem_mib)`` int64 arrays; each sums exactly to the request."""
    k = vnuma_count(topology, request)
    return _even_split(request.vcpus, k), _even_split(request.mem_mib, k)
