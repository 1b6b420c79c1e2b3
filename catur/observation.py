"""What a learned policy sees: a fixed-size vector describing one host and one request.

The same encoding is used by the training environment, the policy object at evaluation time
and the gRPC service, so a model sees in production exactly what it saw in training.

Hosts of different sizes (2, 4, 8 nodes) share one layout: node features fill
:data:`MAX_NODES` slots, absent nodes are zeros with ``present = 0``. The vector
(:data:`OBS_DIM` float32 values) is, in order:

* per node slot (``MAX_NODES`` × 5): present, free cores / cores, free memory / memory
  (both clipped to [-1, 1]; negative = overcommitted), socket id / sockets, cores / largest
  node's cores;
* the request (6): vCPUs / mean node cores, memory / mean node memory (clipped to [0, 4]),
  vNUMA instances / nodes, alpha, beta, nodes / ``MAX_NODES``;
* the host (2): fraction of all cores and of all memory in use (clipped to [0, 2]);
* per primitive (4 × 5): the COR, RMR and defect the VM would get if that primitive placed
  it, its regret (defect minus the best primitive's), and the overload it adds for the
  neighbours (the growth of Σ vCPUs × COR over the host's nodes, per host core). This is the
  *counterfactual* view of the action space, computed with the placement core itself; it
  lets a policy see what each action does now, so learning can focus on what it does to
  later arrivals.

:data:`OBS_VERSION` changes whenever this layout does; a model records the version it was
trained with and refuses to load against another.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from catur.errors import CaturError
from catur.metrics import cor_after, node_cor
from catur.placement import primitive_placements
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.state import Placement
from catur.topology import Topology

OBS_VERSION = 1
MAX_NODES = 8
NODE_FEATURES = 5
REQUEST_FEATURES = 6
HOST_FEATURES = 2
CANDIDATE_FEATURES = 5
OBS_DIM = MAX_NODES * NODE_FEATURES + REQUEST_FEATURES + HOST_FEATURES + len(PRIMITIVES) * CANDIDATE_FEATURES


class Candidate(NamedTuple):
    """One primitive's placement of the request and what it would cost right now."""

    placement: Placement
    cor: float
    rmr: float
    defect: float


def candidates(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, request: VMRequest
) -> list[Candidate]:
    """Each primitive's placement, in :data:`~catur.policies.PRIMITIVES` order, with its cost."""
    out = []
    for placement in primitive_placements(topology, used_vcpus, used_mem_mib, request).values():
        cor = cor_after(topology.node_cores, used_vcpus, placement)
        rmr = placement.rmr()
        out.append(Candidate(placement, cor, rmr, request.alpha * cor + request.beta * rmr))
    return out


def encode(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    cands: list[Candidate] | None = None,
) -> np.ndarray:
    """The ``float32[OBS_DIM]`` observation; pass ``cands`` if already computed."""
    n = topology.num_nodes
    if n > MAX_NODES:
        raise CaturError(
            f"topology {topology.name!r} has {n} NUMA nodes; learned policies support up to {MAX_NODES}"
        )
    if cands is None:
        cands = candidates(topology, used_vcpus, used_mem_mib, request)
    cores = topology.node_cores
    mem = topology.node_mem_mib
    total_cores = float(cores.sum())
    obs = np.zeros(OBS_DIM, dtype=np.float32)
    nodes = obs[: MAX_NODES * NODE_FEATURES].reshape(MAX_NODES, NODE_FEATURES)
    nodes[:n, 0] = 1.0
    nodes[:n, 1] = np.minimum(np.maximum((cores - used_vcpus) / cores, -1.0), 1.0)
    nodes[:n, 2] = np.minimum(np.maximum((mem - used_mem_mib) / mem, -1.0), 1.0)
    nodes[:n, 3] = topology.node_socket / max(topology.num_sockets, 1)
    nodes[:n, 4] = cores / cores.max()
    i = MAX_NODES * NODE_FEATURES
    instances = cands[0].placement.num_instances
    obs[i : i + REQUEST_FEATURES] = (
        request.vcpus / cores.mean(),
        min(request.mem_mib / mem.mean(), 4.0),
        instances / n,
        request.alpha,
        request.beta,
        n / MAX_NODES,
    )
    i += REQUEST_FEATURES
    obs[i : i + HOST_FEATURES] = (
        min(used_vcpus.sum() / total_cores, 2.0),
        min(used_mem_mib.sum() / mem.sum(), 2.0),
    )
    i += HOST_FEATURES
    # Overload felt by the VMs already on the host (the new VM's own share is in c.cor): the
    # growth of Σ vCPUs × COR over the nodes, for all four candidates at once.
    after_vcpus = np.tile(used_vcpus, (len(cands), 1))
    for row, c in enumerate(cands):
        after_vcpus[row, c.placement.cpu_nodes] += c.placement.vcpus
    before = float(used_vcpus @ node_cor(cores, used_vcpus))
    neighbours = np.minimum((node_cor(cores, after_vcpus) @ used_vcpus - before) / total_cores, 4.0)
    table = obs[i:].reshape(len(cands), CANDIDATE_FEATURES)
    table[:, 0] = [c.cor for c in cands]
    table[:, 1] = [c.rmr for c in cands]
    table[:, 2] = [c.defect for c in cands]
    best = min(c.defect for c in cands)
    table[:, 3] = [c.defect - best for c in cands]  # in float64 first, like the other features
    table[:, 4] = neighbours
    return obs
