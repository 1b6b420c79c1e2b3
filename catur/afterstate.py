"""After-state candidate scoring: a network that scores where a VM would go by what it leaves behind.

The first learned policies saw one observation and gave four logits, one per primitive. That
design has two limits: it can only choose among four placements, and it must learn from the
observation what each placement *does*. An after-state scorer turns this around:

1. **Candidates** (:func:`candidate_batch`): the four primitives' placements, plus every
   distinct single-node placement (a one-instance VM on node ``j``, for every ``j``), plus,
   for a VM with ``k`` vNUMA instances, one node set per socket (the ``k`` nodes of that
   socket with the most free cores). Columns that do not exist for a request (a socket with
   fewer than ``k`` nodes) are marked invalid and never chosen.
2. **After-state features** (:func:`candidate_features`, :data:`FEATURES`): for each
   candidate, what the host would look like after it — the VM's own defect, how much the
   COR of the VMs already on its nodes rises (``resident_rise``: Σ residents · ΔCOR, the
   quantity ``resident-greedy`` weighs), how much any later arrival on those nodes would
   suffer (``cor_rise``), the host's overload and imbalance after, how full the chosen nodes'
   memory is, what one more VM like this one would get next (``copy_*``) — and a little
   context (host load, VM size).
3. **One shared-weight network** (:class:`AfterStateModel`) maps each candidate's feature
   vector to a score, the same weights for every candidate; the highest valid score wins
   (ties: the first column, so primitives before single nodes). The network sees the number
   of nodes only through the few-node copies of the ranking features (``*_on_few_nodes``:
   the feature on a host of at most :data:`FEW_NODES` nodes, 0 elsewhere), so one model
   serves 2-, 4- and 8-node hosts, with a correction for the smaller ones where trained.

With only the first layer's ``defect`` weight at −1 and ``resident_rise`` at −λ, the network
*is* ``resident-greedy`` over this wider candidate set: that is the warm start of training
(:mod:`catur.training.afterstate`), which then optimises the exact objective — the replay's
average lifetime defect — on randomised scenarios.

A model directory of this kind holds ``weights.npz`` (``w0, b0, ...``, loaded without pickle)
and a ``manifest.json`` with ``"kind": "afterstate"``, the format, the feature names in order,
the activation, and training and evaluation records. :func:`catur.policy_model.load_policy`
loads any kind; older primitive-action models load as before.

Everything here is array code over a leading host axis, like the rest of the core: one
request on one host is a batch of one, and the network multiplies row by row, so a row's
score has the same bits alone or in a batch of thousands.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import reduce as _fold
from operator import add as _add, itemgetter, sub as _sub
from pathlib import Path
from typing import ClassVar

import numpy as np

from catur import mlp
from catur.configfile import check_keys
from catur.errors import CaturError
from catur.metrics import node_cor, placement_costs
from catur.observation import CandidateTable
from catur.placement import primitive_batches, primitive_first_nodes, spread_memory
from catur.request import RequestBatch
from catur.policies import PRIMITIVES
from catur.scorer import AFTERSTATE_CANDIDATES, MODEL_POLICY
from catur.state import PlacementBatch
from catur.topology import Topology

AFTERSTATE_FORMAT = "catur-afterstate/1"
AFTERSTATE_KIND = "afterstate"
RESIDENT_SCALE = 32.0

#: The after-state features of a candidate that :func:`candidate_features` computes directly.
BASE_FEATURES = (
    "defect",  # the VM's own defect at placement: alpha·COR + beta·RMR
    "rmr",  # its remote memory ratio (so COR and remote memory can weigh differently)
    "resident_rise",  # Σ_nodes residents · ΔCOR: the COR rise felt by the VMs already there
    "cor_rise",  # Σ_nodes ΔCOR: what a later arrival on those nodes would feel
    "overload_after",  # Σ_nodes max(vCPUs − cores, 0) / host cores, after
    "imbalance_after",  # standard deviation over nodes of vCPUs / cores, after
    "chosen_cpu_after",  # vCPU-weighted mean of vCPUs / cores on the chosen nodes, after
    "chosen_mem_after",  # mean memory used / memory on the chosen nodes, after
    "chosen_residents",  # mean resident count on the chosen nodes / 32
    "spans_nodes",  # instances − 1 over the node count: a spread VM
    "host_cpu_load",  # context: host vCPUs / cores before (the same for every candidate)
    "vm_size",  # context: VM vCPUs / mean node cores
    # Fragmentation: what the host can still take locally. Without overcommit most defect is
    # remote memory, which comes from a VM that finds no node with room for it.
    "largest_free_cores_after",  # max over nodes of free cores / cores, after
    "largest_free_mem_after",  # max over nodes of free memory / memory, after
    "mem_imbalance_after",  # standard deviation over nodes of memory used / memory, after
    # "A copy arrives next": VMs of one type often arrive in bursts, so how the after-state
    # would take one more instance like this one prices the harm to the next arrival directly.
    "copy_cor_after",  # the least COR a copy of one instance would see on any node, after
    "copy_remote_after",  # the share of a copy's memory no single node could hold, after
)
#: Hosts of at most this many NUMA nodes are "few-node" hosts (a 2-socket host with one or
#: two nodes per socket): there a spread VM crosses a socket and a single node is a large
#: share of the host, so the same after-state is worth something else than on an 8-node host.
FEW_NODES = 4
#: The features that rank candidates (the context ones do not), repeated under the name
#: ``<feature>_on_few_nodes``: equal to the feature on a few-node host and 0 elsewhere. A
#: one-layer scorer's weight on such a copy is a *correction* that applies to few-node hosts
#: only, so a model keeps one set of weights for 8-node hosts and another for 2- and 4-node
#: hosts, while the network still reads one feature vector per candidate.
FEW_NODE_CORRECTED = (
    "defect", "rmr", "resident_rise", "cor_rise", "overload_after", "imbalance_after", "chosen_cpu_after",
    "chosen_mem_after", "chosen_residents", "largest_free_cores_after", "largest_free_mem_after", "mem_imbalance_after",
)
FEW_NODE_SUFFIX = "_on_few_nodes"
#: Every feature of a candidate, in the order of the feature axis; a model reads those its
#: manifest names.
FEATURES = BASE_FEATURES + tuple(name + FEW_NODE_SUFFIX for name in FEW_NODE_CORRECTED)
_CORRECTED_COLUMNS = np.array([BASE_FEATURES.index(name) for name in FEW_NODE_CORRECTED])
# Written by training (format ... export_check), by the registry (version, trained_version), by
# ``catur retrain`` (retrain: the parent and window of a fine-tuned scorer) and by hand (a note).
MANIFEST_KEYS = (
    "format", "kind", "features", "activation", "version", "trained_version", "training", "evaluation", "export_check",
    "versions", "note", "retrain",
)
ACTIVATIONS = mlp.ACTIVATIONS


# --- candidates -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def candidate_names(topology: Topology, instances: int) -> tuple[str, ...]:
    """Column names of :func:`candidate_batch`: the primitives, then ``node-j`` (one instance)
    or ``socket-j`` (several: the ``j``-th socket in id order) for each of the ``N`` extra columns."""
    extra = "node" if instances == 1 else "socket"
    return (*PRIMITIVES, *(f"{extra}-{j}" for j in range(topology.num_nodes)))


def candidate_batch(
    topology: Topology, used_vcpus: np.ndarray, used_mem_mib: np.ndarray, inst_vcpus: np.ndarray, inst_mem: np.ndarray
) -> tuple[PlacementBatch, np.ndarray]:
    """``(placements [B, 4 + N], valid bool[B, 4 + N])`` for ``B`` hosts (``used_*[B, N]``,
    instances ``[B, k]``); see the module doc. Invalid columns hold a copy of the first
    primitive's placement, so every column is a well-formed placement."""
    b, n = used_vcpus.shape
    k = inst_vcpus.shape[1]
    prims = primitive_batches(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
    valid = np.ones((b, len(PRIMITIVES) + n), dtype=bool)
    if k == 1:
        cpu_nodes = np.broadcast_to(np.arange(n)[None, :, None], (b, n, 1))
    else:
        # Per socket: its k nodes with the most free cores (ties: lowest index), if it has k.
        free = topology.node_cores - used_vcpus
        cpu_nodes = np.repeat(prims.cpu_nodes[:, :1], n, axis=1).copy()
        sockets = np.unique(topology.node_socket)
        valid[:, len(PRIMITIVES) + len(sockets):] = False
        for column, socket in enumerate(sockets):
            members = np.flatnonzero(topology.node_socket == socket)
            if members.shape[0] < k:
                valid[:, len(PRIMITIVES) + column] = False
                continue
            order = np.argsort(-free[:, members], axis=1, kind="stable")[:, :k]
            cpu_nodes[:, column] = members[order]
    flat_nodes = cpu_nodes.reshape(b * n, k)
    mem = spread_memory(topology, np.repeat(used_mem_mib, n, axis=0), flat_nodes, np.repeat(inst_mem, n, axis=0))
    vcpus = np.repeat(inst_vcpus[:, None, :], n, axis=1)
    extra = PlacementBatch(np.ascontiguousarray(cpu_nodes), vcpus, mem.reshape(b, n, k, n))
    placements = PlacementBatch(
        np.concatenate([prims.cpu_nodes, extra.cpu_nodes], axis=1),
        np.concatenate([prims.vcpus, extra.vcpus], axis=1),
        np.concatenate([prims.mem_mib, extra.mem_mib], axis=1),
    )
    return placements, valid


# --- features -------------------------------------------------------------------------------------


_sum = np.add.reduce  # .sum() without its Python wrapper: the same reduction, on the hot path


class _AfterState:
    """What the features of ``C`` candidates on ``B`` hosts are computed from: the inputs,
    and the after-state quantities they share, each computed on first use, so a table of a
    few features costs only what those features need."""

    def __init__(self, topology: Topology, used_vcpus, used_mem_mib, residents, placements: PlacementBatch,
                 cor, rmr, defect, vcpus) -> None:
        self.topology, self.used_vcpus, self.used_mem_mib, self.residents = topology, used_vcpus, used_mem_mib, residents
        self.placements, self.cor, self.rmr, self.defect, self.vcpus = placements, cor, rmr, defect, vcpus
        self.n = topology.num_nodes
        self.cores, self.total_cores = _cores(topology)

    @functools.cached_property
    def node_vcpus(self) -> np.ndarray:  # [B, C, N]
        return self.placements.node_vcpus(self.n)

    @functools.cached_property
    def after(self) -> np.ndarray:
        return self.used_vcpus[:, None, :] + self.node_vcpus

    @functools.cached_property
    def rise(self) -> np.ndarray:
        return node_cor(self.cores, self.after) - node_cor(self.cores, self.used_vcpus)[:, None, :]

    @functools.cached_property
    def share(self) -> np.ndarray:
        return self.after / self.cores

    @functools.cached_property
    def on_node(self) -> np.ndarray:
        return self.node_vcpus > 0

    @functools.cached_property
    def chosen(self) -> np.ndarray:
        return np.maximum(_sum(self.on_node, -1), 1)

    @functools.cached_property
    def mem_used_after(self) -> np.ndarray:
        return self.used_mem_mib[:, None, :] + self.placements.node_mem_mib()

    @functools.cached_property
    def mem_after(self) -> np.ndarray:
        return self.mem_used_after / self.topology.node_mem_mib


@functools.lru_cache(maxsize=256)
def _cores(topology: Topology) -> tuple[np.ndarray, float]:
    """The nodes' cores as floats and their total, once per host model (the hot path)."""
    cores = topology.node_cores.astype(float)
    cores.flags.writeable = False
    return cores, cores.sum()


def _spread(values: np.ndarray, n: int) -> np.ndarray:
    """Standard deviation over the last axis, as sum / n (not .std() or .mean(): the same
    numbers without numpy's overhead on the tiny arrays of the decision hot path)."""
    centred = values - _sum(values, -1)[..., None] / n
    return np.sqrt(_sum(centred * centred, -1) / n)


def _least_copy_cor(s: _AfterState) -> np.ndarray:
    # One instance of the VM (every column places the same VM: its first instance's size).
    # COR rises with a node's load share, so the least COR a copy sees is that of the least
    # loaded node after it: one clip of one minimum, not a COR per node.
    least_share = np.minimum.reduce(s.share + s.placements.vcpus[..., :1] / s.cores, -1)
    return np.minimum(np.maximum(least_share - 1.0, 0.0), 1.0)


def _copy_remote(s: _AfterState) -> np.ndarray:
    copy_mem = _sum(s.placements.mem_mib[..., 0, :], -1)  # [B, C]
    free_mem = np.maximum(np.maximum.reduce(s.topology.node_mem_mib - s.mem_used_after, -1), 0)
    return np.maximum(copy_mem - free_mem, 0) / np.maximum(copy_mem, 1)


#: How each base feature is computed: ``[B, C]``, or a scalar / ``[B, 1]`` that broadcasts.
_BASE = {
    "defect": lambda s: s.defect,
    "rmr": lambda s: s.rmr,
    "resident_rise": lambda s: _sum(s.rise * s.residents[:, None, :], -1),
    "cor_rise": lambda s: _sum(s.rise, -1),
    "overload_after": lambda s: _sum(np.maximum(s.after - s.cores, 0), -1) / s.total_cores,
    "imbalance_after": lambda s: _spread(s.share, s.n),
    "chosen_cpu_after": lambda s: _sum(s.share * s.node_vcpus, -1) / np.maximum(_sum(s.node_vcpus, -1), 1),
    "chosen_mem_after": lambda s: _sum(s.mem_after * s.on_node, -1) / s.chosen,
    "chosen_residents": lambda s: _sum(s.residents[:, None, :] * s.on_node, -1) / (s.chosen * RESIDENT_SCALE),
    "spans_nodes": lambda s: (s.placements.cpu_nodes.shape[-1] - 1) / s.n,
    "host_cpu_load": lambda s: _sum(s.used_vcpus, 1)[:, None] / s.total_cores,
    "vm_size": lambda s: s.vcpus[:, None] / (s.total_cores / s.n),
    "largest_free_cores_after": lambda s: np.maximum.reduce(np.maximum(1.0 - s.share, 0.0), -1),
    "largest_free_mem_after": lambda s: np.maximum.reduce(np.maximum(1.0 - s.mem_after, 0.0), -1),
    "mem_imbalance_after": lambda s: _spread(s.mem_after, s.n),
    "copy_cor_after": _least_copy_cor,
    "copy_remote_after": _copy_remote,
}
#: Every feature's column: its base feature, and whether it is a few-node copy.
_COLUMNS = {
    **{name: (name, False) for name in BASE_FEATURES},
    **{name + FEW_NODE_SUFFIX: (name, True) for name in FEW_NODE_CORRECTED},
}
assert tuple(_COLUMNS) == FEATURES


def _column(name: str):
    """``(base feature's name, is a few-node copy)`` of a feature name; a clear error for an unknown one."""
    if name not in _COLUMNS:
        raise CaturError(f"unknown after-state feature {name!r}; known: {', '.join(FEATURES)}")
    return _COLUMNS[name]


# --- one host, one instance: the same features as Python numbers ---------------------------------
#
# The service decides one request at a time: a batch of one host, where every numpy call on
# the [1, N, N] arrays above costs more than the arithmetic it does (a 4-node host's features
# are about 60 such calls). For that case (one host, a one-instance VM) the single-node
# candidates are featurised by the row path below, operation for operation the array path's
# arithmetic on Python floats: the same IEEE-754 double operations in the same order, sums
# over nodes in numpy's own reduction order (:func:`_reduction_sum`), so every feature has
# the very bits the array path gives it (tests/test_one_host_table.py checks this over
# generated hosts of 1 to 16 nodes, and numpy's order itself, which a numpy upgrade could
# change; tests/test_batched.py checks batched = one by one). Candidate ``j`` changes node ``j`` only,
# so a sum over nodes of a quantity that is zero elsewhere is that one term (adding exact
# zeros changes nothing), and a sum of whole numbers is exact in any order.

#: numpy sums a contiguous axis of up to this many doubles in the fixed order that
#: :func:`_reduction_sum` reproduces; larger hosts take the array path.
_REDUCTION_BLOCK = 128


def _reduction_sum(values: list[float]) -> float:
    """``np.add.reduce`` of ``values`` (at most :data:`_REDUCTION_BLOCK`, a contiguous last axis),
    in numpy's order: from 0.0, left to right below 8 terms; from 8 on, eight running sums
    over strides of 8, combined pairwise, then the rest left to right (numpy's pairwise sum).
    Not the builtin ``sum``, which compensates its rounding from Python 3.12 on."""
    n = len(values)
    if n < 8:
        return _fold(_add, values, 0.0)
    acc = values[:8]
    end = n - n % 8
    for i in range(8, end, 8):
        for j in range(8):
            acc[j] += values[i + j]
    return _fold(_add, values[end:], ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])))


def _spread_row(values: list[float], n: int) -> float:
    """:func:`_spread` of one row."""
    mean = _reduction_sum(values) / n
    return math.sqrt(_reduction_sum([(x - mean) * (x - mean) for x in values]) / n)


@functools.lru_cache(maxsize=256)
def _node_numbers(topology: Topology) -> tuple[list[float], list[int], float, np.ndarray, np.ndarray]:
    """Once per host model: the nodes' cores (floats), memory (MiB) and total cores as Python
    numbers, the node ids as a column (for :func:`~catur.placement.spread_memory`) and the
    identity matrix (row ``j``: a one-instance VM's memory all on node ``j``, per MiB)."""
    cores, total = _cores(topology)
    ids = np.arange(topology.num_nodes)[:, None]
    eye = np.eye(topology.num_nodes, dtype=np.int64)
    ids.flags.writeable = eye.flags.writeable = False
    return cores.tolist(), topology.node_mem_mib.tolist(), float(total), ids, eye


class _NodeRow:
    """One host's ``N`` single-node candidates of a one-instance VM (candidate ``j``: the VM
    alone on node ``j``), as Python numbers: what :class:`_AfterState` holds for the batch,
    per node. Each list is indexed by the candidate's node. ``spread`` is
    :func:`~catur.placement.spread_memory`'s ``[N, 1, N]`` layout of the VM's memory, or
    ``None`` when it fits on every node (then candidate ``j`` holds it all on node ``j``).

    ``np.maximum(x, 0.0)`` is written ``x if x >= 0.0 else 0.0`` (and so on): the same value
    for the numbers here (never NaN), without the builtin ``max``'s cost."""

    def __init__(self, topology: Topology, used: list, used_mem: list, residents: list, spread: np.ndarray | None,
                 vcpus: int, mem: int, request_vcpus: int, alpha: float, beta: float) -> None:
        self.n = topology.num_nodes
        self.cores, self.node_mem, self.total_cores = _node_numbers(topology)[:3]
        self.used, self.used_mem, self.residents, self.spread = used, used_mem, residents, spread
        self.v, self.mem, self.request_vcpus = vcpus, mem, request_vcpus
        # metrics.node_cor before and with the VM on each node, and vCPUs / cores likewise.
        self.cor_before, self.cor_with = before, with_vm = [], []
        for u, c in zip(used, self.cores):
            x, y = (u - c) / c, (u + vcpus - c) / c
            x, y = x if x >= 0.0 else 0.0, y if y >= 0.0 else 0.0
            before.append(x if x <= 1.0 else 1.0)
            with_vm.append(y if y <= 1.0 else 1.0)
        self.share_before = [u / c for u, c in zip(used, self.cores)]
        self.share_with = [(u + vcpus) / c for u, c in zip(used, self.cores)]
        self.rise = [a - b for a, b in zip(with_vm, before)]
        # The costs at placement (metrics.placement_costs of a one-instance placement).
        self.own_mem = [mem] * self.n if spread is None else [row[j] for j, row in enumerate(self.mem_rows)]
        self.cor = [(vcpus * x) / vcpus for x in with_vm]
        self.rmr = [(mem - own) / mem for own in self.own_mem]
        self.defect = [alpha * c + beta * r for c, r in zip(self.cor, self.rmr)]

    @functools.cached_property
    def mem_rows(self) -> list[list[int]]:
        """Each candidate's MiB on every node."""
        if self.spread is None:
            return [[self.mem if i == j else 0 for i in range(self.n)] for j in range(self.n)]
        return self.spread[:, 0].tolist()

    def shares(self, j: int) -> list[float]:
        """Every node's vCPUs / cores after candidate ``j``."""
        out = self.share_before.copy()
        out[j] = self.share_with[j]
        return out

    @functools.cached_property
    def mem_after(self) -> list[list[float]]:
        """Every node's memory used / memory after each candidate."""
        return [[(um + m) / size for um, m, size in zip(self.used_mem, row, self.node_mem)] for row in self.mem_rows]

    def overload_after(self) -> list[float]:
        # Whole numbers of vCPUs over cores: their sum is exact in any order, so node j's
        # change is added to the host's total.
        over, over_with = [], []
        for u, c in zip(self.used, self.cores):
            x, y = u - c, u + self.v - c
            over.append(x if x >= 0.0 else 0.0)
            over_with.append(y if y >= 0.0 else 0.0)
        total = _fold(_add, over, 0.0)
        return [(total - x + y) / self.total_cores for x, y in zip(over, over_with)]

    def imbalance_after(self) -> list[float]:
        return [_spread_row(self.shares(j), self.n) for j in range(self.n)]

    def chosen_cpu_after(self) -> list[float]:
        v = self.v
        scale = v if v >= 1 else 1
        return [(s * v) / scale for s in self.share_with]

    def least_copy_cor(self) -> list[float]:
        copy = [self.v / c for c in self.cores]
        return [min(max(min(s + x for s, x in zip(self.shares(j), copy)) - 1.0, 0.0), 1.0) for j in range(self.n)]

    def copy_remote(self) -> list[float]:
        out = []
        for row in self.mem_rows:
            copy_mem = _fold(_add, row, 0)
            free_mem = max(max(size - (um + m) for size, um, m in zip(self.node_mem, self.used_mem, row)), 0)
            out.append(max(copy_mem - free_mem, 0) / max(copy_mem, 1))
        return out


#: :data:`_BASE` for :class:`_NodeRow`: a list over the candidates' nodes.
_ROW_BASE = {
    "defect": lambda r: r.defect,
    "rmr": lambda r: r.rmr,
    "resident_rise": lambda r: [x * k for x, k in zip(r.rise, r.residents)],
    "cor_rise": lambda r: r.rise,
    "overload_after": _NodeRow.overload_after,
    "imbalance_after": _NodeRow.imbalance_after,
    "chosen_cpu_after": _NodeRow.chosen_cpu_after,
    "chosen_mem_after": lambda r: [(um + own) / size for um, own, size in zip(r.used_mem, r.own_mem, r.node_mem)],
    "chosen_residents": lambda r: [k / RESIDENT_SCALE for k in r.residents],
    "spans_nodes": lambda r: [0 / r.n] * r.n,
    "host_cpu_load": lambda r: [_fold(_add, r.used, 0) / r.total_cores] * r.n,
    "vm_size": lambda r: [r.request_vcpus / (r.total_cores / r.n)] * r.n,
    "largest_free_cores_after": lambda r: [max(max(1.0 - s, 0.0) for s in r.shares(j)) for j in range(r.n)],
    "largest_free_mem_after": lambda r: [max(max(1.0 - m, 0.0) for m in row) for row in r.mem_after],
    "mem_imbalance_after": lambda r: [_spread_row(row, r.n) for row in r.mem_after],
    "copy_cor_after": _NodeRow.least_copy_cor,
    "copy_remote_after": _NodeRow.copy_remote,
}
assert tuple(_ROW_BASE) == BASE_FEATURES


@functools.lru_cache(maxsize=256)
def _row_plan(names: tuple[str, ...], few: bool) -> tuple:
    """The :data:`_ROW_BASE` function of each of ``names`` (a few-node copy on a host of more
    than :data:`FEW_NODES` nodes: zeros), once per model and host size."""
    return tuple(_zeros if copy and not few else _ROW_BASE[base] for base, copy in map(_column, names))


def _zeros(row: _NodeRow) -> list[float]:
    return [0.0] * row.n


def candidate_features(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    residents: np.ndarray,
    placements: PlacementBatch,
    cor: np.ndarray,
    rmr: np.ndarray,
    defect: np.ndarray,
    vcpus: np.ndarray,
    names: tuple[str, ...] = FEATURES,
) -> np.ndarray:
    """``float64[B, C, F]``: the features ``names`` (default all of :data:`FEATURES`, in that
    order) of each of ``C`` candidates on ``B`` hosts.

    ``cor``/``rmr``/``defect`` are the candidates' costs at placement (``[B, C]``,
    :func:`catur.metrics.placement_costs`), ``residents[B, N]`` the per-node resident counts
    (zeros when unknown), ``vcpus[B]`` the requests' vCPUs. Only the named features, and what
    they need, are computed: a model pays for the features its manifest names. A column's
    value does not depend on which others are asked for.
    """
    state = _AfterState(topology, used_vcpus, used_mem_mib, residents, placements, cor, rmr, defect, vcpus)
    few = topology.num_nodes <= FEW_NODES
    # One array, filled column by column in the asked order (the decision hot path: no stacking).
    out = np.empty(defect.shape + (len(names),))
    for j, name in enumerate(names):
        base, copy = _column(name)
        # A few-node copy is its base feature on a host of at most FEW_NODES nodes, else 0
        # (the host's node count is the same for every row of a batch).
        out[..., j] = 0.0 if copy and not few else _BASE[base](state)
    return out


def afterstate_candidates(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    residents: np.ndarray,
    vcpus: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    inst_vcpus: np.ndarray,
    inst_mem: np.ndarray,
    names: tuple[str, ...] = FEATURES,
    requests: RequestBatch | None = None,
) -> CandidateTable:
    """Build, cost and featurise every candidate for ``B`` requests (``vcpus``, ``alpha``,
    ``beta`` ``[B]``, instances ``[B, k]``) on ``B`` hosts (``used_*``, ``residents`` ``[B, N]``):
    a :class:`~catur.observation.CandidateTable` with ``valid`` and the features ``names``
    (and ``requests``, the same requests as a batch, as its context when given).

    One vectorised pass: for a one-instance VM every candidate is a single-node placement (a
    primitive's is the one on the node it ranks first), so the ``N`` single-node placements
    are built, costed and featurised once and the primitives' columns are gathered from
    them: the same numbers as building the primitives separately (every column depends on
    its own placement only), for a fraction of the array calls. For one host (a service
    request) those single-node candidates are costed and featurised as Python numbers
    (:class:`_NodeRow`), bit for bit the array path's values, for a fraction of its time.
    """
    b, n = used_vcpus.shape
    if inst_vcpus.shape[1] == 1 and b == 1 and n <= _REDUCTION_BLOCK:
        table = _one_host_table(topology, used_vcpus, used_mem_mib, residents, vcpus, alpha, beta, inst_vcpus, inst_mem, names)
    elif inst_vcpus.shape[1] == 1:
        first = primitive_first_nodes(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)  # [B, 4]
        node_ids = np.tile(np.arange(n), b)  # [B·N]: host b's node j is row b·N + j
        mem = spread_memory(topology, np.repeat(used_mem_mib, n, axis=0), node_ids[:, None], np.repeat(inst_mem, n, axis=0))
        vcpus_each = np.repeat(inst_vcpus, n, axis=0)  # [B·N, 1]
        nodes = PlacementBatch(node_ids.reshape(b, n, 1), vcpus_each.reshape(b, n, 1), mem.reshape(b, n, 1, n))
        cor, rmr, defect = placement_costs(topology.node_cores, used_vcpus, nodes, alpha[:, None], beta[:, None])
        features = candidate_features(topology, used_vcpus, used_mem_mib, residents, nodes, cor, rmr, defect, vcpus, names)
        # Every column of the table as a row of the flat [B·N] node arrays: the primitives'
        # first nodes, then the nodes in order. One flat integer index per array.
        columns = np.concatenate([first, node_ids.reshape(b, n)], axis=1)  # [B, 4 + N]
        flat = (columns + (n * np.arange(b))[:, None]).ravel()
        c = columns.shape[1]
        placements = PlacementBatch(columns[..., None], vcpus_each[flat].reshape(b, c, 1), mem[flat].reshape(b, c, 1, n))
        table = (placements, cor.ravel()[flat].reshape(b, c), rmr.ravel()[flat].reshape(b, c), defect.ravel()[flat].reshape(b, c),
                 features.reshape(b * n, -1)[flat].reshape(b, c, -1), np.ones(columns.shape, dtype=bool))
    else:
        placements, valid = candidate_batch(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
        cor, rmr, defect = placement_costs(topology.node_cores, used_vcpus, placements, alpha[:, None], beta[:, None])
        features = candidate_features(topology, used_vcpus, used_mem_mib, residents, placements, cor, rmr, defect, vcpus, names)
        table = (placements, cor, rmr, np.where(valid, defect, np.inf), features, valid)
    placements, cor, rmr, defect, features, valid = table
    return CandidateTable(placements, cor, rmr, defect, candidate_names(topology, inst_vcpus.shape[1]), valid, features,
                          tuple(names), topology, used_vcpus, used_mem_mib, residents, requests)


def _one_host_table(topology, used_vcpus, used_mem_mib, residents, vcpus, alpha, beta, inst_vcpus, inst_mem, names):
    """:func:`afterstate_candidates`' one-pass table for one host and a one-instance VM, its
    costs and features from :class:`_NodeRow`: the same placements and bits as the array
    path, for a fraction of its array calls."""
    n = topology.num_nodes
    _, node_mem, _, ids, eye = _node_numbers(topology)
    first = primitive_first_nodes(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)  # [1, 4]
    # (.item() and .tolist(): Python numbers straight from the arrays of one row.)
    used_mem, v, mem = used_mem_mib.tolist()[0], inst_vcpus.item(), inst_mem.item()
    spread = None
    if min(map(_sub, node_mem, used_mem)) < mem:
        # Some node lacks room: spread_memory lays out the spill. (Where the memory fits its
        # node, spread_memory's local-first step puts it all there, which needs no call.)
        spread = spread_memory(topology, np.repeat(used_mem_mib, n, axis=0), ids, np.repeat(inst_mem, n, axis=0))  # [N, 1, N]
    row = _NodeRow(topology, used_vcpus.tolist()[0], used_mem, residents.tolist()[0], spread, v, mem, vcpus.item(),
                   float(alpha.item()), float(beta.item()))
    per_feature = [feature(row) for feature in _row_plan(tuple(names), n <= FEW_NODES)]
    columns = [*first[0].tolist(), *range(n)]  # the primitives' first nodes, then every node
    c, gather = len(columns), itemgetter(*columns)
    features = np.array(gather(list(zip(*per_feature)) if names else [()] * n), dtype=float).reshape(1, c, len(names))
    costs = np.array([gather(row.cor), gather(row.rmr), gather(row.defect)])  # [3, C]
    cpu_nodes = np.array(columns).reshape(1, c, 1)
    placed_mem = eye[cpu_nodes] * mem if spread is None else spread[cpu_nodes[..., 0]]  # [1, C, 1, N]
    placements = PlacementBatch(cpu_nodes, _constant((1, c, 1), v, inst_vcpus.dtype), placed_mem)
    return placements, costs[:1], costs[1:2], costs[2:], features, _constant((1, c), True, np.dtype(bool))


@functools.lru_cache(maxsize=1024)
def _constant(shape: tuple[int, ...], value, dtype: np.dtype) -> np.ndarray:
    """A read-only array of one value, built once: a one-host table's vCPUs in every column
    and its all-valid mask (nothing writes to a table's arrays; a write would raise)."""
    out = np.full(shape, value, dtype=dtype)
    out.flags.writeable = False
    return out


# --- the model ------------------------------------------------------------------------------------


def _check_manifest(manifest: object, source: str) -> dict:
    if not isinstance(manifest, dict):
        raise CaturError(f"{source}: the manifest must be a JSON object")
    check_keys(manifest, MANIFEST_KEYS, source)
    if manifest.get("format") != AFTERSTATE_FORMAT:
        raise CaturError(f"{source}: format={manifest.get('format')!r}, this Catur reads {AFTERSTATE_FORMAT!r}")
    features = manifest.get("features")
    if (
        not isinstance(features, list) or not features or len(set(map(str, features))) != len(features)
        or not set(features) <= set(FEATURES)
    ):
        unknown = sorted(set(map(str, features)) - set(FEATURES)) if isinstance(features, list) else features
        raise CaturError(
            f"{source}: the model reads features {features!r} (unknown or repeated: {unknown!r}); "
            f"this Catur computes {list(FEATURES)!r}"
        )
    if manifest.get("activation") not in ACTIVATIONS:
        raise CaturError(f"{source}: unknown activation {manifest.get('activation')!r}; known: {', '.join(ACTIVATIONS)}")
    return manifest


def afterstate_manifest(activation: str = "tanh", **extra) -> dict:
    """A fresh manifest of this kind (training adds its records)."""
    return {"format": AFTERSTATE_FORMAT, "kind": AFTERSTATE_KIND, "features": list(FEATURES), "activation": activation, **extra}


@dataclass(frozen=True, eq=False)
class AfterStateModel:
    """The shared-weight scorer: ``layers`` map ``F`` features to one score per candidate.

    ``layers[i] = (w float32[in, out], b float32[out])``; hidden layers use the manifest's
    activation, the last layer has one output and none. A :class:`catur.scorer.Scorer` over
    the after-state candidates: it reads the features its manifest names, and only those
    are computed for it.
    """

    manifest: dict
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    path: Path | None = None

    # The scorer protocol (catur.scorer.Scorer).
    candidates: ClassVar[str] = AFTERSTATE_CANDIDATES
    policy: ClassVar[str] = MODEL_POLICY
    uses_residents: ClassVar[bool] = True  # zeros when a request carries no counts
    residents_required: ClassVar[bool] = False
    gate: ClassVar[None] = None

    def __post_init__(self) -> None:
        source = str(Path(self.path) / "manifest.json") if self.path else "after-state model"
        _check_manifest(self.manifest, source)
        mlp.check_layers(self.layers, len(self.manifest["features"]), 1, str(Path(self.path) / "weights.npz") if self.path else source)
        # The columns of a table of all FEATURES this model reads (older models know fewer):
        # usually a prefix, taken as a view; otherwise a column selection.
        columns = [FEATURES.index(f) for f in self.manifest["features"]]
        prefix = columns == list(range(len(columns)))
        object.__setattr__(self, "_columns", slice(0, len(columns)) if prefix else np.array(columns))

    @classmethod
    def linear(cls, weights: dict[str, float], **manifest) -> "AfterStateModel":
        """A one-layer scorer with the named feature weights (the rest 0): e.g.
        ``{"defect": -1, "resident_rise": -0.05}`` is ``resident-greedy`` over the candidates."""
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise CaturError(f"unknown after-state features {sorted(unknown)}; known: {', '.join(FEATURES)}")
        w = np.array([[weights.get(f, 0.0)] for f in FEATURES], dtype=np.float32)
        return cls(afterstate_manifest(**manifest), ((w, np.zeros(1, np.float32)),))

    @property
    def version(self) -> str:
        if self.manifest.get("version"):
            return str(self.manifest["version"])
        return mlp.digest(self.layers)

    @property
    def features(self) -> tuple[str, ...]:
        """The after-state features this model reads, in its input order."""
        return tuple(self.manifest["features"])

    def inputs(self, features: np.ndarray) -> np.ndarray:
        """The columns of ``float[..., F]`` (all of :data:`FEATURES`) this model reads, as float32."""
        return np.asarray(np.asarray(features)[..., self._columns], dtype=np.float32)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """``float64[...]`` scores of ``float[..., F]`` candidate features (all of
        :data:`FEATURES`; higher is better)."""
        return self._forward(self.inputs(features))

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        """``float64[B, C]``: every candidate's score (invalid ones ``-inf``); the scorer
        protocol. ``rows`` (the hosts of the batch) do not matter to one model."""
        return np.where(table.valid, self._forward(table_inputs(table, self.features)), -np.inf)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        flat = mlp.forward(self.layers, x.reshape(-1, x.shape[-1]), self.manifest["activation"])  # [R, 1]
        return flat.reshape(x.shape[:-1]).astype(float)

    def save(self, directory: str | Path) -> Path:
        return mlp.save(directory, self.layers, self.manifest)

    @classmethod
    def load(cls, directory: str | Path, manifest: dict) -> "AfterStateModel":
        """The model in ``directory`` whose parsed manifest is ``manifest`` (see
        :func:`catur.policy_model.load_policy`)."""
        layers = mlp.load(Path(directory) / "weights.npz")
        return cls(manifest, layers, Path(directory))


def table_inputs(table: CandidateTable, names: tuple[str, ...]) -> np.ndarray:
    """``float32[B, C, len(names)]``: the features ``names`` of a table, as a network reads
    them (a table built for this scorer holds exactly these; another is selected from)."""
    if table.feature_names == names:
        return np.asarray(table.features, dtype=np.float32)
    missing = sorted(set(names) - set(table.feature_names))
    if missing:
        raise CaturError(f"the candidate table lacks the features {missing}")
    return np.asarray(table.features[..., [table.feature_names.index(f) for f in names]], dtype=np.float32)


class _Population:
    """The scorer protocol's constants of a population of after-state models (one member per host)."""

    candidates: ClassVar[str] = AFTERSTATE_CANDIDATES
    policy: ClassVar[str] = MODEL_POLICY
    uses_residents: ClassVar[bool] = True
    residents_required: ClassVar[bool] = False
    gate: ClassVar[None] = None


@dataclass(frozen=True, eq=False)
class ScorerPopulation(_Population):
    """``W`` one-layer scorers as one scorer: each host of a batch is scored by its member.

    ``weights`` is ``float32[W, F]`` over ``features``, ``bias`` ``float32[W]``; ``member_of``
    maps a host (a row index the replay passes as ``rows``, see
    :class:`catur.sim.batch_policy.BatchPolicy`) to its member. Replaying every host once per
    member in one lock-step batch evaluates a whole population (evolution strategies'
    perturbations) for the fixed per-step cost of one replay. Each row is scored by the same
    per-row vector-matrix product as :class:`AfterStateModel` (``[1, F] @ [F, 1]``), so a
    member decides bit for bit as the one-layer model with its weights would alone.
    """

    weights: np.ndarray
    bias: np.ndarray
    member_of: np.ndarray
    features: tuple[str, ...] = FEATURES
    version: str = "population"

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != len(self.features) or np.shape(self.bias) != (w.shape[0],):
            raise CaturError(f"a population needs weights [W, {len(self.features)}] and bias [W], got {w.shape} and {np.shape(self.bias)}")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", np.asarray(self.bias, dtype=np.float32))
        object.__setattr__(self, "member_of", np.asarray(self.member_of, dtype=np.int64))

    @classmethod
    def of(cls, models: list[AfterStateModel], member_of: np.ndarray) -> "ScorerPopulation":
        """The population of one-layer ``models`` (all reading the same features)."""
        if not models or any(len(m.layers) != 1 or m.features != models[0].features for m in models):
            raise CaturError("a scorer population is made of one-layer scorers that read the same features")
        weights = np.stack([m.layers[0][0][:, 0] for m in models])
        return cls(weights, np.array([m.layers[0][1][0] for m in models]), member_of, models[0].features)

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        x = table_inputs(table, self.features)
        b, c, f = x.shape
        member = self.member_of[np.arange(b) if rows is None else rows]
        w = np.repeat(self.weights[member], c, axis=0)[:, :, None]  # [B·C, F, 1]
        flat = (x.reshape(b * c, 1, f) @ w)[:, 0, 0] + np.repeat(self.bias[member], c)
        return np.where(table.valid, flat.astype(float).reshape(b, c), -np.inf)


@dataclass(frozen=True, eq=False)
class NetworkPopulation(_Population):
    """``W`` scorers of one architecture, of any depth, as one scorer: :class:`ScorerPopulation`
    for networks with hidden layers (evolution strategies over a hidden-layer scorer).

    ``layers[i] = (w float32[W, in, out], b float32[W, out])``: member ``m``'s network is
    ``layers[i][0][m], layers[i][1][m]``; ``member_of`` maps a host (``rows``) to its member.
    Each candidate row gathers its member's weights and goes through the same per-row
    vector-matrix products as :func:`catur.mlp.forward` (``[1, in] @ [in, out]`` per row, now
    a stack of such products, one per row), the same bias addition and activation, so every
    member scores bit for bit as the :class:`AfterStateModel` with its layers would alone
    (``tests/test_hidden_scorer.py`` checks this over generated networks and candidate sets).
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    member_of: np.ndarray
    activation: str
    features: tuple[str, ...] = FEATURES
    version: str = "population"

    def __post_init__(self) -> None:
        layers = tuple((np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in self.layers)
        width, members = len(self.features), (layers[0][0].shape[0] if layers else 0)
        for i, (w, b) in enumerate(layers):
            if w.ndim != 3 or w.shape[:2] != (members, width) or b.shape != (members, w.shape[2]):
                raise CaturError(f"a network population's layer {i} needs w [W, {width}, n] and b [W, n] for W = {members}, "
                                 f"got {w.shape} and {b.shape}")
            width = w.shape[2]
        if not layers or width != 1 or self.activation not in ACTIVATIONS:
            raise CaturError(f"a network population needs layers ending in one output and an activation of "
                             f"{', '.join(ACTIVATIONS)}; got {width if layers else 0} outputs, {self.activation!r}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "member_of", np.asarray(self.member_of, dtype=np.int64))

    @classmethod
    def of(cls, models: list[AfterStateModel], member_of: np.ndarray) -> "NetworkPopulation":
        """The population of ``models``: the same features, activation and layer shapes."""
        first = models[0] if models else None
        if first is None or any(
            m.features != first.features or m.manifest["activation"] != first.manifest["activation"]
            or [w.shape for w, _ in m.layers] != [w.shape for w, _ in first.layers] for m in models
        ):
            raise CaturError("a network population is made of scorers with the same features, activation and layer shapes")
        layers = tuple(
            (np.stack([m.layers[i][0] for m in models]), np.stack([m.layers[i][1] for m in models]))
            for i in range(len(first.layers))
        )
        return cls(layers, member_of, first.manifest["activation"], first.features)

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        x = table_inputs(table, self.features)
        b, c, f = x.shape
        member = np.repeat(self.member_of[np.arange(b) if rows is None else rows], c)  # [B·C]
        act, last = ACTIVATIONS[self.activation], len(self.layers) - 1
        h = x.reshape(b * c, f)
        for i, (w, bias) in enumerate(self.layers):
            h = (h[:, None, :] @ w[member])[:, 0, :] + bias[member]
            if i < last:
                h = act(h)
        return np.where(table.valid, h[:, 0].astype(float).reshape(b, c), -np.inf)


__all__ = [
    "AFTERSTATE_FORMAT", "AFTERSTATE_KIND", "AfterStateModel", "FEATURES", "FEW_NODES", "FEW_NODE_CORRECTED",
    "FEW_NODE_SUFFIX", "NetworkPopulation", "ScorerPopulation", "afterstate_candidates", "afterstate_manifest",
    "candidate_batch", "candidate_features", "candidate_names", "table_inputs",
]
