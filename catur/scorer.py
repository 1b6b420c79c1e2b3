"""The decision slot: what every policy that scores candidates implements.

A decision (:class:`catur.decision.Decider`) is four steps: **candidates** (where the VM
could go, costed), a **scorer** (one score per candidate, higher is better), the model's
**gate** (when it has one) and the **shield**. Every scoring policy fills the same slot, a
:class:`Scorer`:

* ``greedy`` (:data:`GREEDY`: minus each candidate's defect at placement) and a registry's
  rule version (:class:`catur.policy_model.RulePolicy`, greedy under a version name);
* ``resident-greedy`` (:class:`ResidentGreedy`: minus defect and λ · the COR rise felt by
  the VMs already on the nodes);
* the after-state scorer (:class:`catur.afterstate.AfterStateModel`, any depth of network)
  and a population of one-layer scorers evaluated together
  (:class:`catur.afterstate.ScorerPopulation`, evolution strategies' perturbations);
* the primitive-action model (:class:`catur.policy_model.PolicyModel`): the special case
  whose candidates are the four primitives and whose input is the host's observation
  (:meth:`catur.observation.CandidateTable.observation`) rather than per-candidate features.

A scorer says which **candidate set** it chooses among (:data:`PRIMITIVE_CANDIDATES`: the
four primitives; :data:`AFTERSTATE_CANDIDATES`: the primitives, every single node, a node
set per socket) and which after-state **features** it reads; the decider builds exactly that
table (:func:`catur.decision.candidate_table_for`), computing only those features, and hands
it to :meth:`Scorer.score` with the rows' host indices. Nothing downstream asks what kind of
model it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from catur.errors import CaturError
from catur.gate import UncertaintyGate
from catur.observation import CandidateTable
from catur.resident import RESIDENT_GREEDY, check_weight, resident_scores

#: The four primitives' placements (columns in :data:`catur.policies.PRIMITIVES` order).
PRIMITIVE_CANDIDATES = "primitives"
#: The after-state scorer's wider set (:func:`catur.afterstate.candidate_names`, primitives first).
AFTERSTATE_CANDIDATES = "afterstate"
CANDIDATE_SETS = (PRIMITIVE_CANDIDATES, AFTERSTATE_CANDIDATES)
#: The policy name of a learned scorer's decisions.
MODEL_POLICY = "catur"


@dataclass(frozen=True, eq=False)
class ModelGate:
    """A model's uncertainty gate (:mod:`catur.gate`) and what decides when it fires:
    ``fallback``, a primitive's name, or ``None`` for greedy. It reads the table's
    observation (the primitive-action view of the host and request)."""

    check: UncertaintyGate
    fallback: str | None = None

    @property
    def threshold(self) -> float:
        return self.check.threshold

    def distances(self, table: CandidateTable) -> np.ndarray:
        """``float64[B]``: each row's distance to the training observations."""
        return self.check.distances(table.observation())


@runtime_checkable
class Scorer(Protocol):
    """One score per candidate, for a batch of ``B`` hosts at once.

    Attributes:
        candidates: The candidate set it chooses among (:data:`CANDIDATE_SETS`).
        features: The after-state features (:data:`catur.afterstate.FEATURES`) it reads,
            in its input order; only these are computed for its tables. ``()`` for none.
        policy: The name its decisions report (``"catur"``, ``"greedy"``, ``"resident-greedy"``).
        version: The model version decisions report (``""`` for a plain rule).
        uses_residents: Whether the hosts' per-node resident counts change its scores.
        residents_required: Whether it needs those counts; a request without them is then
            decided by :data:`GREEDY` (``resident-greedy``), otherwise by this scorer with
            zero counts (the after-state scorer).
        gate: Its uncertainty gate, or ``None``.
    """

    candidates: str
    features: tuple[str, ...]
    policy: str
    version: str
    uses_residents: bool
    residents_required: bool
    gate: ModelGate | None

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        """``float64[B, C]`` scores of ``table``'s candidates (invalid ones ``-inf``).
        ``rows`` (``int64[B]``, default ``0..B-1``) are the hosts of the batch's rows, as the
        replay numbers them: a scorer that differs per host (a population) reads them."""
        ...


@dataclass(frozen=True)
class Greedy:
    """``greedy`` as a scorer: minus each primitive's defect at placement (ties: the first)."""

    version: str = ""

    candidates: ClassVar[str] = PRIMITIVE_CANDIDATES
    features: ClassVar[tuple[str, ...]] = ()
    policy: ClassVar[str] = "greedy"
    uses_residents: ClassVar[bool] = False
    residents_required: ClassVar[bool] = False
    gate: ClassVar[None] = None

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        return -table.defect


GREEDY = Greedy()


@dataclass(frozen=True)
class ResidentGreedy:
    """``resident-greedy`` (:mod:`catur.resident`) as a scorer over the primitives."""

    weight: float

    candidates: ClassVar[str] = PRIMITIVE_CANDIDATES
    features: ClassVar[tuple[str, ...]] = ()
    policy: ClassVar[str] = RESIDENT_GREEDY
    version: ClassVar[str] = ""
    uses_residents: ClassVar[bool] = True
    residents_required: ClassVar[bool] = True
    gate: ClassVar[None] = None

    def __post_init__(self) -> None:
        if check_weight(self.weight) == 0:
            raise CaturError("resident-greedy needs a weight > 0 (with 0 it is greedy: use catur.scorer.GREEDY)")

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        return resident_scores(table.topology.node_cores, table.used_vcpus, table.residents, table.placements, table.defect,
                               self.weight)


def check_scorer(scorer: object) -> Scorer:
    """``scorer`` if it implements :class:`Scorer` with a known candidate set, else a
    :class:`CaturError` saying what is missing."""
    if not isinstance(scorer, Scorer):
        missing = [name for name in ("candidates", "features", "policy", "version", "uses_residents", "residents_required",
                                     "gate", "score") if not hasattr(scorer, name)]
        raise CaturError(f"{type(scorer).__name__} is not a scorer (catur.scorer.Scorer); it lacks {', '.join(missing)}")
    if scorer.candidates not in CANDIDATE_SETS:
        raise CaturError(f"{type(scorer).__name__} scores candidate set {scorer.candidates!r}; known: {', '.join(CANDIDATE_SETS)}")
    return scorer


__all__ = [
    "AFTERSTATE_CANDIDATES", "CANDIDATE_SETS", "GREEDY", "Greedy", "MODEL_POLICY", "ModelGate", "PRIMITIVE_CANDIDATES",
    "ResidentGreedy", "Scorer", "check_scorer",
]
