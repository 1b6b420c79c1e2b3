"""What a learned policy sees: a fixed-size vector describing one host and one request.

The same encoding is used by the training environment, the policy object at evaluation time
and the gRPC service, so a model sees in production exactly what it saw in training. The
batched replay engine encodes many hosts at once (:func:`encode_batch`, ``[B, OBS_DIM]``);
:func:`encode` is its batch of one, so each row is bit for bit what one host alone gets.

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

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from catur.errors import CaturError
from catur.metrics import node_cor, placement_costs
from catur.placement import primitive_batches
from catur.policies import PRIMITIVES
from catur.request import RequestBatch, VMRequest
from catur.resident import resident_penalty
from catur.state import Placement, PlacementBatch
from catur.topology import Topology

OBS_VERSION = 1
MAX_NODES = 8
NODE_FEATURES = 5
REQUEST_FEATURES = 6
HOST_FEATURES = 2
CANDIDATE_FEATURES = 5
OBS_DIM = MAX_NODES * NODE_FEATURES + REQUEST_FEATURES + HOST_FEATURES + len(PRIMITIVES) * CANDIDATE_FEATURES
# The optional resident part (:func:`resident_features`), appended after the OBS_DIM values:
# per node slot the resident VM count / RESIDENT_SCALE, per primitive the resident penalty.
RESIDENT_SCALE = 32.0
RESIDENT_DIM = MAX_NODES + len(PRIMITIVES)


class Candidate(NamedTuple):
    """One primitive's placement of the request and what it would cost right now."""

    placement: Placement
    cor: float
    rmr: float
    defect: float


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """The candidates for ``B`` requests on ``B`` hosts, costed: what a scorer reads
    (:class:`catur.scorer.Scorer`), what the shield filters and what a decision reports.

    ``placements`` is a ``[B, C]`` :class:`~catur.state.PlacementBatch` whose columns are
    ``names``: the four primitives in :data:`~catur.policies.PRIMITIVES` order, or an
    after-state scorer's wider set (:func:`catur.afterstate.candidate_names`, the primitives
    first). ``cor``, ``rmr`` and ``defect`` are ``float64[B, C]`` (an invalid column's defect
    is ``+inf``, so no shield allows it), ``valid`` ``bool[B, C]`` (``None``: every column).
    ``features`` (``float64[B, C, F]``) holds the after-state features named
    ``feature_names`` (:data:`catur.afterstate.FEATURES`), only those a scorer asked for, in
    its order. The decision's context (``topology``, the ``[B, N]`` usage and resident counts,
    ``requests``) rides along for a scorer that reads the host as a whole: the primitive-action
    model's observation (:meth:`observation`, computed once per table). A list of
    :class:`Candidate` is row ``b`` (:meth:`row`).
    """

    placements: PlacementBatch
    cor: np.ndarray
    rmr: np.ndarray
    defect: np.ndarray
    names: tuple[str, ...] = PRIMITIVES
    valid: np.ndarray | None = None
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    topology: Topology | None = None
    used_vcpus: np.ndarray | None = None
    used_mem_mib: np.ndarray | None = None
    residents: np.ndarray | None = None  # the counts the scores used (None: the request carried none)
    requests: RequestBatch | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def row(self, b: int) -> list[Candidate]:
        return [
            Candidate(
                self.placements.placement((b, i), policy=name),
                float(self.cor[b, i]),
                float(self.rmr[b, i]),
                float(self.defect[b, i]),
            )
            for i, name in enumerate(self.names)
        ]

    def observation(self) -> np.ndarray:
        """``float32[B, OBS_DIM]``: :func:`encode_batch` of this table's context and primitive
        candidates, computed on first use (the model and its gate read the same array)."""
        if "observation" not in self._cache:
            if self.requests is None:
                raise CaturError("this candidate table carries no request context to encode")
            self._cache["observation"] = encode_batch(self.topology, self.used_vcpus, self.used_mem_mib, self.requests, self)
        return self._cache["observation"]

    @classmethod
    def from_candidates(cls, cands: list[Candidate]) -> "CandidateTable":
        """A table of one row from a list of candidates."""
        placements = PlacementBatch(
            np.stack([c.placement.cpu_nodes for c in cands])[None],
            np.stack([c.placement.vcpus for c in cands])[None],
            np.stack([c.placement.mem_mib for c in cands])[None],
        )
        cor, rmr, defect = (np.array([[getattr(c, f) for c in cands]]) for f in ("cor", "rmr", "defect"))
        return cls(placements, cor, rmr, defect)


def candidate_table(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, requests: RequestBatch,
    residents: np.ndarray | None = None,
) -> CandidateTable:
    """:func:`candidates` for a batch: ``used_*[B, N]``, one request per host (``residents``
    ``[B, N]``, when known, ride along for a scorer that weighs them)."""
    placements = primitive_batches(topology, used_vcpus, used_mem_mib, requests.inst_vcpus, requests.inst_mem)
    cor, rmr, defect = placement_costs(
        topology.node_cores, used_vcpus, placements, requests.alpha[:, None], requests.beta[:, None]
    )
    return CandidateTable(placements, cor, rmr, defect, topology=topology, used_vcpus=used_vcpus, used_mem_mib=used_mem_mib,
                          residents=residents, requests=requests)


def candidates(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, request: VMRequest
) -> list[Candidate]:
    """Each primitive's placement, in :data:`~catur.policies.PRIMITIVES` order, with its cost."""
    batch = RequestBatch.of(topology, request)
    return candidate_table(topology, used_vcpus[None], used_mem_mib[None], batch).row(0)


def encode(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    cands: list[Candidate] | None = None,
) -> np.ndarray:
    """The ``float32[OBS_DIM]`` observation; pass ``cands`` if already computed."""
    batch = RequestBatch.of(topology, request)
    if cands is None:
        table = candidate_table(topology, used_vcpus[None], used_mem_mib[None], batch)
    else:
        table = CandidateTable.from_candidates(cands)
    return encode_batch(topology, used_vcpus[None], used_mem_mib[None], batch, table)[0]


@functools.lru_cache(maxsize=256)
def _topology_features(topology: Topology) -> tuple[np.ndarray, float, float, float, int]:
    """What the observation takes from the topology alone, computed once per host model:
    the node slots' present / socket / size columns and the nodes-per-slot feature (as the
    vector's leading part), mean cores, mean memory, total cores, total memory."""
    n = topology.num_nodes
    cores = topology.node_cores
    head = np.zeros(MAX_NODES * NODE_FEATURES + REQUEST_FEATURES, dtype=np.float32)
    nodes = head[: MAX_NODES * NODE_FEATURES].reshape(MAX_NODES, NODE_FEATURES)
    nodes[:n, 0] = 1.0
    nodes[:n, 3] = topology.node_socket / max(topology.num_sockets, 1)
    nodes[:n, 4] = cores / cores.max()
    head[MAX_NODES * NODE_FEATURES + 5] = n / MAX_NODES
    head.flags.writeable = False
    return head, cores.mean(), topology.node_mem_mib.mean(), float(cores.sum()), topology.node_mem_mib.sum()


def encode_batch(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    requests: RequestBatch,
    table: CandidateTable,
) -> np.ndarray:
    """:func:`encode` for ``B`` hosts at once: ``float32[B, OBS_DIM]``, row ``b`` exactly what
    :func:`encode` gives host ``b`` alone (every feature is elementwise or a per-row sum)."""
    n = topology.num_nodes
    if n > MAX_NODES:
        raise CaturError(
            f"topology {topology.name!r} has {n} NUMA nodes; learned policies support up to {MAX_NODES}"
        )
    b = used_vcpus.shape[0]
    cores = topology.node_cores
    mem = topology.node_mem_mib
    static, mean_cores, mean_mem, total_cores, total_mem = _topology_features(topology)
    obs = np.zeros((b, OBS_DIM), dtype=np.float32)
    obs[:, : static.shape[0]] = static
    nodes = obs[:, : MAX_NODES * NODE_FEATURES].reshape(b, MAX_NODES, NODE_FEATURES)
    nodes[:, :n, 1] = np.minimum(np.maximum((cores - used_vcpus) / cores, -1.0), 1.0)
    nodes[:, :n, 2] = np.minimum(np.maximum((mem - used_mem_mib) / mem, -1.0), 1.0)
    i = MAX_NODES * NODE_FEATURES
    obs[:, i] = requests.vcpus / mean_cores
    obs[:, i + 1] = np.minimum(requests.mem_mib / mean_mem, 4.0)
    obs[:, i + 2] = requests.inst_vcpus.shape[1] / n  # vNUMA instances per node
    obs[:, i + 3] = requests.alpha
    obs[:, i + 4] = requests.beta
    i += REQUEST_FEATURES
    obs[:, i] = np.minimum(used_vcpus.sum(axis=1) / total_cores, 2.0)
    obs[:, i + 1] = np.minimum(used_mem_mib.sum(axis=1) / total_mem, 2.0)
    i += HOST_FEATURES
    # Overload felt by the VMs already on the host (the new VM's own share is in the COR
    # column): the growth of Σ vCPUs × COR over the nodes, for all four candidates at once.
    after_vcpus = used_vcpus[:, None, :] + table.placements.node_vcpus(n)
    before = (used_vcpus * node_cor(cores, used_vcpus)).sum(axis=-1)
    grown = (node_cor(cores, after_vcpus) * used_vcpus[:, None, :]).sum(axis=-1)
    neighbours = np.minimum((grown - before[:, None]) / total_cores, 4.0)
    candidate_part = obs[:, i:].reshape(b, len(PRIMITIVES), CANDIDATE_FEATURES)
    candidate_part[:, :, 0] = table.cor
    candidate_part[:, :, 1] = table.rmr
    candidate_part[:, :, 2] = table.defect
    # in float64 first, like the other features
    candidate_part[:, :, 3] = table.defect - table.defect.min(axis=1, keepdims=True)
    candidate_part[:, :, 4] = neighbours
    return obs


def resident_features(
    topology: Topology, used_vcpus: np.ndarray, residents: np.ndarray, table: CandidateTable
) -> np.ndarray:
    """``float32[B, RESIDENT_DIM]``: the optional resident part of an observation.

    Per node slot, how many VMs are bound there (/ :data:`RESIDENT_SCALE`, clipped to [0, 8];
    absent nodes 0); per primitive, Σ residents · ΔCOR over the nodes (:mod:`catur.resident`,
    clipped to [0, 8]): how much that candidate hurts the VMs already on the host, counted by
    VM rather than by vCPU. An observation with this part is ``OBS_DIM + RESIDENT_DIM`` long;
    models trained without it keep the plain ``OBS_DIM`` layout.
    """
    b, n = used_vcpus.shape[0], topology.num_nodes
    out = np.zeros((b, RESIDENT_DIM), dtype=np.float32)
    out[:, :n] = np.minimum(residents / RESIDENT_SCALE, 8.0)
    penalty = resident_penalty(topology.node_cores, used_vcpus, residents, table.placements)
    out[:, MAX_NODES:] = np.minimum(penalty, 8.0)
    return out
