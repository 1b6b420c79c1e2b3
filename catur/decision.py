"""One decision, the way both the simulator and the service make it: candidates, scorer, gate, shield.

:class:`Decider` answers "where does this VM go on this host?" in four steps, the same for
every policy that fills the decision slot (:class:`catur.scorer.Scorer`):

1. **candidates**: the placements the scorer chooses among, costed by the placement core
   (:func:`candidate_table_for`): the four primitives, or the after-state scorer's wider set
   (the primitives, every single node, a node set per socket) with the after-state
   features the scorer reads, and only those;
2. the **scorer** gives each candidate a score: a trained model's, ``greedy``'s (minus each
   candidate's defect at placement) or, with a ``resident_weight`` and the host's per-node
   resident counts given, ``resident-greedy``'s (:mod:`catur.resident`);
3. the **uncertainty gate** (when the scorer carries one) checks whether the observation
   looks like the training data; if not, the scores are replaced by the fallback
   primitive's preference (the manifest's ``fallback_primitive``, else greedy);
4. the **shield** (:mod:`catur.shield`) filters risky candidates and picks the allowed one
   with the best score.

The resulting :class:`Decision` says what was chosen and who intervened, and carries the
predicted COR/RMR, so the service can report it and the simulator can count it.

:meth:`Decider.decide_batch` makes ``B`` such decisions at once, one per host, as array code
(the batched replay engine's path); :meth:`Decider.decide` is its batch of one, so a request
gets the same decision alone, in a batch, in the simulator and in the service.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.afterstate import afterstate_candidates
from catur.errors import CaturError
from catur.observation import CandidateTable, candidate_table
from catur.policy_model import load_policy
from catur.request import RequestBatch, VMRequest
from catur.resident import RESIDENT_GREEDY, check_weight
from catur.scorer import AFTERSTATE_CANDIDATES, GREEDY, ResidentGreedy, Scorer, check_scorer
from catur.shield import ShieldConfig, TypeStats, shield, shield_depth1, shield_reason
from catur.state import Placement, PlacementBatch
from catur.topology import Topology
from catur.policies import PRIMITIVES


@dataclass(frozen=True)
class Decision:
    """The answer for one VM, with the reasons behind it."""

    placement: Placement
    primitive: str
    scores: tuple[float, ...]
    policy: str  # "catur" (model), "greedy", or a primitive name when forced
    shield_intervened: bool
    shield_fallback: str  # "", "depth-1" or "unshielded" (see ShieldVerdict)
    shield_reason: str
    gated: bool
    gate_distance: float
    cor: float
    rmr: float
    defect: float
    model_version: str
    # Whether the host's per-node resident counts were given and used for this decision
    # (a request without them is decided from the usage totals alone).
    residents_used: bool = False


def candidate_table_for(
    scorer: Scorer,
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    requests: RequestBatch,
    residents: np.ndarray | None = None,
) -> CandidateTable:
    """The candidates ``scorer`` chooses among for ``B`` requests on ``B`` hosts, costed, with
    the features it reads (only those) and the decision's context: one vectorised pass."""
    if scorer.candidates == AFTERSTATE_CANDIDATES:
        counts = residents if residents is not None else np.zeros(used_vcpus.shape)
        return afterstate_candidates(
            topology, used_vcpus, used_mem_mib, counts, requests.vcpus, requests.alpha, requests.beta,
            requests.inst_vcpus, requests.inst_mem, scorer.features, requests,
        )
    return candidate_table(topology, used_vcpus, used_mem_mib, requests, residents)


class Decider:
    """Makes decisions with a scorer, its gate and a shield; holds no per-host state.

    Args:
        model: Any :class:`~catur.scorer.Scorer` (a loaded model directory of any kind:
            :func:`catur.policy_model.load_policy`), or ``None`` for ``greedy``.
        shield_config: Shield parameters; ``None`` or depth 0 disables the shield.
        use_gate: Use the scorer's uncertainty gate when it has one.
        resident_weight: Without a model, λ of ``resident-greedy`` (:mod:`catur.resident`);
            0 (the default) is plain ``greedy``. Used only for requests that carry resident
            counts; the others are decided by ``greedy``.
    """

    def __init__(
        self,
        model: Scorer | None = None,
        shield_config: ShieldConfig | None = None,
        use_gate: bool = True,
        resident_weight: float = 0.0,
    ) -> None:
        self.resident_weight = check_weight(resident_weight)
        if model is not None and self.resident_weight:
            raise CaturError("resident_weight applies to the rule without a model; a model brings its own scores")
        if model is None:
            model = ResidentGreedy(self.resident_weight) if self.resident_weight else GREEDY
        self.scorer: Scorer = check_scorer(model)
        self.shield_config = shield_config if shield_config and shield_config.enabled else None
        self.gate = self.scorer.gate if use_gate else None

    @property
    def model_version(self) -> str:
        return self.scorer.version

    @property
    def uses_residents(self) -> bool:
        """Whether per-node resident counts change this decider's answers."""
        return self.scorer.uses_residents

    @property
    def policy_name(self) -> str:
        return self.scorer.policy

    def decide(
        self,
        topology: Topology,
        used_vcpus: np.ndarray,
        used_mem_mib: np.ndarray,
        request: VMRequest,
        stats: TypeStats | None = None,
        residents: np.ndarray | None = None,
    ) -> Decision:
        """Decide for ``request`` on a host with these ``[N]`` usage arrays.

        ``stats`` holds the recent requests of this host (or cluster) for the shield's
        popular types; the caller observes requests into it after deciding. ``residents``
        (``[N]``, optional) counts the VMs bound to each node. This is :meth:`decide_batch`
        for a batch of one.
        """
        batch = RequestBatch.of(topology, request)
        used_vcpus, used_mem_mib = np.asarray(used_vcpus)[None], np.asarray(used_mem_mib)[None]
        counts = None if residents is None else np.asarray(residents)[None]
        return self.decide_batch(topology, used_vcpus, used_mem_mib, batch, [stats], counts).decision(0)

    def decide_batch(
        self,
        topology: Topology,
        used_vcpus: np.ndarray,
        used_mem_mib: np.ndarray,
        requests: RequestBatch,
        stats: list[TypeStats | None] | None = None,
        residents: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> "DecisionBatch":
        """Decide for ``B`` requests, one on each of ``B`` hosts (``used_*[B, N]``) at once.

        Every step is array code over the batch: the candidates and their features, the
        scorer (one batched matrix product per layer for a network), the gate's distances,
        and the depth-1 shield. A deeper shield looks ahead per host (``stats[b]`` is host
        ``b``'s recent requests). Row ``b`` is exactly the decision :meth:`decide` makes for
        host ``b`` alone. ``residents`` (``[B, N]``, optional) are the hosts' per-node
        resident counts; ``rows`` (``int64[B]``, default ``0..B-1``) the hosts' numbers in
        the caller's replay, which a scorer may read (a population scores each host with
        its member).
        """
        b = used_vcpus.shape[0]
        # A scorer that needs resident counts leaves a request without them to greedy.
        scorer = self.scorer if residents is not None or not self.scorer.residents_required else GREEDY
        residents_used = residents is not None and scorer.uses_residents
        table = candidate_table_for(scorer, topology, used_vcpus, used_mem_mib, requests, residents)
        scores = np.asarray(scorer.score(table, np.arange(b) if rows is None else rows), dtype=float)
        policy = np.full(b, scorer.policy, dtype=object)
        gated, distance = np.zeros(b, dtype=bool), np.zeros(b)
        if self.gate is not None:
            distance = self.gate.distances(table)
            gated = distance > self.gate.threshold
            if gated.any():
                fallback = self.gate.fallback
                if fallback is None:
                    fixed, policy[gated] = -table.defect, GREEDY.policy
                else:
                    fixed, policy[gated] = np.where(np.array(table.names) == fallback, 1.0, 0.0), fallback
                scores = np.where(gated[:, None], fixed, scores)
        return self._shielded(topology, used_vcpus, used_mem_mib, table, scores, policy, stats, gated, distance, residents_used)

    def _shielded(
        self, topology, used_vcpus, used_mem_mib, table: CandidateTable, scores, policy, stats, gated, distance, residents_used
    ) -> "DecisionBatch":
        """The shield over the policy's ``scores`` (``[B, C]``), and the batch's answer."""
        b = used_vcpus.shape[0]
        config = self.shield_config
        fallback = np.full(b, "", dtype=object)
        if config is None:
            choice, intervened = np.argmax(scores, axis=1), np.zeros(b, dtype=bool)
        elif config.depth == 1:
            choice, intervened, unshielded = shield_depth1(table.defect, scores, config)
            fallback[unshielded] = "unshielded"
        else:  # the look-ahead is per host: its popular types come from that host's requests
            verdicts = [
                shield(topology, used_vcpus[i], used_mem_mib[i], table.row(i), scores[i], config, stats[i] if stats else None)
                for i in range(b)
            ]
            choice = np.array([v.choice for v in verdicts], dtype=np.int64)
            intervened = np.array([v.intervened for v in verdicts], dtype=bool)
            fallback[:] = [v.fallback for v in verdicts]
        return DecisionBatch(self, table, scores, choice, policy, intervened, fallback, gated, distance, residents_used)


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """:meth:`Decider.decide_batch`'s answer: ``B`` decisions as arrays.

    ``placements`` holds each row's chosen placement; :meth:`decision` gives row ``b`` as a
    :class:`Decision`. ``fallback`` is the shield's ``""``, ``"depth-1"`` or ``"unshielded"``.
    """

    decider: Decider
    table: CandidateTable
    scores: np.ndarray  # float64[B, C]: C = 4 primitives, or an after-state scorer's candidates
    choice: np.ndarray  # int64[B], index into table.names
    policy: np.ndarray  # object[B]: "catur", "greedy" or the gate's fallback primitive
    intervened: np.ndarray  # bool[B]
    fallback: np.ndarray  # object[B]
    gated: np.ndarray  # bool[B]
    gate_distance: np.ndarray  # float64[B]
    residents_used: bool = False

    @property
    def placements(self) -> PlacementBatch:
        return self.table.placements.select(self.choice)

    def decision(self, i: int) -> Decision:
        """Row ``i`` as a :class:`Decision`."""
        choice = int(self.choice[i])
        chosen = self.table.placements.placement((i, choice), policy=str(self.policy[i]))
        config = self.decider.shield_config
        preferred = int(np.argmax(self.scores[i]))
        reason = ""
        if config is not None:
            reason = shield_reason(
                bool(self.intervened[i]), str(self.fallback[i]), float(self.table.defect[i, preferred]),
                config.threshold, config.depth,
            )
        return Decision(
            placement=chosen,
            primitive=self.table.names[choice],
            # The contract's scores are the primitives' (an after-state scorer's first columns).
            scores=tuple(float(s) for s in self.scores[i][: len(PRIMITIVES)]),
            policy=str(self.policy[i]),
            shield_intervened=bool(self.intervened[i]),
            shield_fallback=str(self.fallback[i]),
            shield_reason=reason,
            gated=bool(self.gated[i]),
            gate_distance=float(self.gate_distance[i]),
            cor=float(self.table.cor[i, choice]),
            rmr=float(self.table.rmr[i, choice]),
            defect=float(self.table.defect[i, choice]),
            model_version=self.decider.model_version,
            residents_used=self.residents_used,
        )


@dataclass(frozen=True)
class DeciderSpec:
    """A picklable recipe for a :class:`Decider` (worker processes build their own).

    ``model`` is a model directory, ``"default"`` for the shipped model, or ``None`` for greedy
    (``resident-greedy`` with a ``resident_weight``). The name in reports is ``catur`` (a
    model), ``greedy`` or ``resident-greedy``, with ``+shield`` when shielded and ``-nogate``
    when the gate is off.
    """

    model: str | None = None
    shield: ShieldConfig | None = None
    use_gate: bool = True
    label: str | None = None
    resident_weight: float = 0.0

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        name = "catur" if self.model is not None else (RESIDENT_GREEDY if self.resident_weight else "greedy")
        if self.shield is not None and self.shield.enabled:
            name += "+shield"
        if self.model is not None and not self.use_gate:
            name += "-nogate"
        return name

    def build(self) -> Decider:
        model = _load_model(self.model) if self.model is not None else None
        return Decider(model, self.shield, self.use_gate, self.resident_weight)


_MODEL_CACHE: dict[str, Scorer] = {}


def _load_model(directory: str) -> Scorer:
    """Load once per process: evaluation builds a decider per task."""
    if directory not in _MODEL_CACHE:
        _MODEL_CACHE[directory] = load_policy(directory)
    return _MODEL_CACHE[directory]
