"""``resident-greedy``: greedy that also counts the VMs already on each node.

Why. The headline metric averages *every* VM's defect over its life. Placing a VM on a node
raises that node's COR, and so the COR of every VM already bound there, for as long as both
live. ``greedy`` scores a candidate by the new VM's own defect only; two candidates that
overload nodes equally look the same to it, even when one node holds one big VM and the
other twenty small ones. This rule adds that cost:

    score(candidate) = defect of the new VM  +  λ · Σ_nodes residents(node) · ΔCOR(node)

where ``residents(node)`` is how many VMs have a vNUMA instance bound to the node
(:attr:`catur.state.HostsState.residents`; the gRPC contract's ``NodeUsage.residents``) and
``ΔCOR(node)`` how much the candidate raises that node's COR. The candidate with the lowest
score wins (ties: the primitive listed first, as in ``greedy``). With no residents, or
``λ = 0``, it *is* ``greedy``, bit for bit.

λ (:data:`DEFAULT_WEIGHT`) was chosen on training days only: Huawei-East-1 days 1–12 as
warm-up, judged on the validation days 13–15 (``benchmarks/exp_resident_weight.py``; the
figures are in docs/results/policy-quality.md, "Resident-aware placement and the quality grid"). It is a
parameter: ``weight`` here, ``resident_weight`` of :class:`catur.decision.Decider` and
:class:`catur.decision.DeciderSpec`.

**Ages.** A resident that is about to leave suffers a COR rise for a short part of its life;
one that just arrived, for most of it. ``residents`` may therefore be *effective* counts: each
resident weighted by the expected share of its life still ahead at its current age
(:func:`age_weights`, fitted on training lifetimes by :func:`fit_age_weights`). Plain counts
are that with every weight 1.

Everything here is array code over a leading host axis, like the rest of the placement core:
one request on one host is a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError
from catur.metrics import node_cor, placement_costs
from catur.placement import primitive_batches
from catur.request import VMRequest, split_request
from catur.state import Placement, PlacementBatch
from catur.topology import Topology

RESIDENT_GREEDY = "resident-greedy"
# Chosen on Huawei-East-1 days 13-15 (after warm-up on days 1-12) among λ in {0.01, 0.02,
# 0.03, 0.05, 0.1, 0.2}: the lowest mean ratio to greedy over overcommit 1.0 and 1.02
# (benchmarks/exp_resident_weight.py; the table is in docs/results/policy-quality.md).
DEFAULT_WEIGHT = 0.05


def check_weight(weight: float) -> float:
    """``weight`` as a float, or a :class:`CaturError` naming it when it is not finite and >= 0."""
    value = float(weight)
    if not np.isfinite(value) or value < 0:
        raise CaturError(f"resident weight must be a finite number >= 0, got {weight!r}")
    return value


def resident_penalty(
    cores: np.ndarray, used_vcpus: np.ndarray, residents: np.ndarray, placements: PlacementBatch
) -> np.ndarray:
    """``float64[B, P]``: Σ_nodes residents(node) · ΔCOR(node) for each of ``P`` candidates per host.

    ``used_vcpus`` and ``residents`` are ``[B, N]`` (``residents`` may be effective, float
    counts); ``placements`` is a ``[B, P]`` batch of candidates.
    """
    n = cores.shape[0]
    before = node_cor(cores, used_vcpus)
    after = node_cor(cores, used_vcpus[:, None, :] + placements.node_vcpus(n))
    return ((after - before[:, None, :]) * residents[:, None, :]).sum(axis=-1)


def resident_scores(
    cores: np.ndarray, used_vcpus: np.ndarray, residents: np.ndarray, placements: PlacementBatch,
    defects: np.ndarray, weight: float,
) -> np.ndarray:
    """``float64[B, P]`` scores, higher is better: minus (defect + λ · resident penalty).
    With ``weight == 0`` exactly ``-defects`` (greedy's scores)."""
    if weight == 0:
        return -defects
    return -(defects + weight * resident_penalty(cores, used_vcpus, residents, placements))


def resident_greedy_batch(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    residents: np.ndarray,
    inst_vcpus: np.ndarray,
    inst_mem: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    weight: float = DEFAULT_WEIGHT,
) -> PlacementBatch:
    """The rule for ``B`` hosts at once (``[B, N]`` state, ``[B, k]`` instances): each row's
    best-scoring primitive candidate."""
    options = primitive_batches(topology, used_vcpus, used_mem_mib, inst_vcpus, inst_mem)
    _, _, defects = placement_costs(topology.node_cores, used_vcpus, options, alpha[:, None], beta[:, None])
    scores = resident_scores(topology.node_cores, used_vcpus, residents, options, defects, weight)
    return options.select(np.argmax(scores, axis=1), RESIDENT_GREEDY)


def resident_greedy_place(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    request: VMRequest,
    rng: np.random.Generator | None = None,
    *,
    residents: np.ndarray | None = None,
    weight: float = DEFAULT_WEIGHT,
) -> Placement:
    """One request on one host; ``residents`` ``[N]`` (``None``: unknown, which is greedy)."""
    inst_vcpus, inst_mem = split_request(topology, request)
    counts = np.zeros(topology.num_nodes) if residents is None else np.asarray(residents, dtype=float)
    return resident_greedy_batch(
        topology, used_vcpus[None], used_mem_mib[None], counts[None], inst_vcpus[None], inst_mem[None],
        np.array([request.alpha]), np.array([request.beta]), weight,
    ).placement(0)


# A replay decider that wants the host's resident counts says so with this attribute.
resident_greedy_place.uses_residents = True  # type: ignore[attr-defined]


# --- ages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgeWeights:
    """A step function of age: ``weight[i]`` for ages in ``[edges_s[i-1], edges_s[i])``
    (``edges_s`` ascending; the last weight for every age beyond the last edge)."""

    edges_s: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.edges_s) + 1:
            raise CaturError(f"age weights: {len(self.weights)} weights for {len(self.edges_s)} edges (need edges + 1)")
        if list(self.edges_s) != sorted(self.edges_s):
            raise CaturError(f"age weights: edges must be ascending, got {list(self.edges_s)}")

    def __call__(self, ages_s: np.ndarray) -> np.ndarray:
        return np.asarray(self.weights)[np.searchsorted(np.asarray(self.edges_s), ages_s, side="right")]


# Ages at which the weight may change: 10 min, 1 h, 6 h, 1 day, 3 days, 1 week.
AGE_EDGES_S = (600.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)


def fit_age_weights(arrival_s: np.ndarray, departure_s: np.ndarray, end_s: float, edges_s=AGE_EDGES_S) -> AgeWeights:
    """Expected share of a VM's life still ahead at each age, from observed lifetimes.

    For ages ``a`` at the bucket edges (and 0), over the VMs that lived past ``a``:
    mean ``(L − a) / L``. VMs still running at ``end_s`` count with their life so far (a
    lower bound, so long-lived VMs weigh a little less than they should). The weight of a
    bucket is the mean of its two ends' values.
    """
    life = np.where(np.isnan(departure_s), end_s - arrival_s, departure_s - arrival_s)
    life = life[life > 0]
    if life.size == 0:
        raise CaturError("age weights: no VM with a positive lifetime to fit them on")
    points = np.array([0.0, *edges_s])
    share = np.array([np.mean((life[life > a] - a) / life[life > a]) if (life > a).any() else 0.0 for a in points])
    mids = [(share[i] + share[i + 1]) / 2 for i in range(len(edges_s))] + [share[-1]]
    return AgeWeights(tuple(float(e) for e in edges_s), tuple(float(w) for w in mids))


def effective_residents(num_nodes: int, nodes: list[np.ndarray], ages_s: np.ndarray, weights: AgeWeights) -> np.ndarray:
    """``float64[N]``: per node, the residents bound there weighted by :class:`AgeWeights` of their
    ages (``nodes[i]`` are resident ``i``'s instance nodes)."""
    out = np.zeros(num_nodes)
    w = weights(np.asarray(ages_s, dtype=float))
    for resident_nodes, weight in zip(nodes, w):
        out[resident_nodes] += weight
    return out


@dataclass(frozen=True)
class AgedResidentGreedy:
    """``resident-greedy`` with each resident weighted by :class:`AgeWeights` of its age.

    A replay decider (``uses_ages``: the replay passes every live VM's instance nodes and age
    as ``resident_ages``). The service contract carries counts only, so this variant is an
    experiment on the value of ages (``benchmarks/exp_value_of_information.py``), not a
    served policy.
    """

    weights: AgeWeights
    weight: float = DEFAULT_WEIGHT
    uses_ages: bool = True

    def __call__(self, topology, used_vcpus, used_mem_mib, request, rng=None, resident_ages=None) -> Placement:
        nodes, ages = resident_ages if resident_ages is not None else ([], np.zeros(0))
        effective = effective_residents(topology.num_nodes, nodes, ages, self.weights)
        return resident_greedy_place(topology, used_vcpus, used_mem_mib, request, residents=effective, weight=self.weight)
