"""One decision, the way both the simulator and the service make it: policy, gate, shield.

:class:`Decider` answers "where does this VM go on this host?":

1. every primitive's placement and immediate cost are computed with the placement core
   (:func:`catur.observation.candidates`);
2. the **policy** scores the four primitives: the trained model's scores when a model is
   loaded, otherwise ``greedy``'s (minus each primitive's defect at placement);
3. the **uncertainty gate** (when the model carries gate statistics) checks whether the
   observation looks like the training data; if not, the model's scores are replaced by the
   fallback primitive's preference (the manifest's ``fallback_primitive``, else greedy);
4. the **shield** (:mod:`catur.shield`) filters risky primitives and picks the allowed one
   with the best score.

The resulting :class:`Decision` says what was chosen and who intervened, and carries the
predicted COR/RMR, so the service can report it and the simulator can count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError
from catur.gate import UncertaintyGate
from catur.model import PolicyModel
from catur.observation import candidates, encode
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.shield import ShieldConfig, TypeStats, shield
from catur.state import Placement
from catur.topology import Topology


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


class Decider:
    """Makes decisions with an optional model, shield and gate; holds no per-host state.

    Args:
        model: A trained :class:`~catur.model.PolicyModel`, or ``None`` for ``greedy``.
        shield_config: Shield parameters; ``None`` or depth 0 disables the shield.
        use_gate: Use the model's uncertainty gate when its manifest has one.
    """

    def __init__(
        self,
        model: PolicyModel | None = None,
        shield_config: ShieldConfig | None = None,
        use_gate: bool = True,
    ) -> None:
        self.model = model
        self.shield_config = shield_config if shield_config and shield_config.enabled else None
        self.gate = None
        self.fallback = None
        if model is not None:
            if use_gate and model.manifest.get("gate"):
                self.gate = UncertaintyGate.from_dict(model.manifest["gate"], str(model.path))
            fallback = model.manifest.get("fallback_primitive")
            if fallback is not None and fallback not in PRIMITIVES:
                raise CaturError(f"{model.path}: fallback_primitive {fallback!r} is not a primitive")
            self.fallback = fallback

    @property
    def model_version(self) -> str:
        return self.model.version if self.model is not None else ""

    @property
    def policy_name(self) -> str:
        return "catur" if self.model is not None else "greedy"

    def decide(
        self,
        topology: Topology,
        used_vcpus: np.ndarray,
        used_mem_mib: np.ndarray,
        request: VMRequest,
        stats: TypeStats | None = None,
    ) -> Decision:
        """Decide for ``request`` on a host with these ``[N]`` usage arrays.

        ``stats`` holds the recent requests of this host (or cluster) for the shield's
        popular types; the caller observes requests into it after deciding.
        """
        cands = candidates(topology, used_vcpus, used_mem_mib, request)
        greedy_scores = -np.array([c.defect for c in cands])
        gated, distance = False, 0.0
        if self.model is None:
            scores, policy = greedy_scores, "greedy"
        else:
            obs = encode(topology, used_vcpus, used_mem_mib, request, cands)
            scores, policy = np.asarray(self.model.scores(obs), dtype=float), "catur"
            if self.gate is not None:
                gated, distance = self.gate.fires(obs)
                if gated:
                    if self.fallback is None:
                        scores, policy = greedy_scores, "greedy"
                    else:
                        scores = np.where(np.array(PRIMITIVES) == self.fallback, 1.0, 0.0)
                        policy = self.fallback
        if self.shield_config is not None:
            verdict = shield(topology, used_vcpus, used_mem_mib, cands, scores, self.shield_config, stats)
            choice, intervened, fallback, reason = verdict.choice, verdict.intervened, verdict.fallback, verdict.reason
        else:
            choice, intervened, fallback, reason = int(np.argmax(scores)), False, "", ""
        chosen = cands[choice]
        placement = Placement(chosen.placement.cpu_nodes, chosen.placement.vcpus, chosen.placement.mem_mib, policy)
        return Decision(
            placement=placement,
            primitive=PRIMITIVES[choice],
            scores=tuple(float(s) for s in scores),
            policy=policy,
            shield_intervened=intervened,
            shield_fallback=fallback,
            shield_reason=reason,
            gated=gated,
            gate_distance=distance,
            cor=chosen.cor,
            rmr=chosen.rmr,
            defect=chosen.defect,
            model_version=self.model_version,
        )


@dataclass(frozen=True)
class DeciderSpec:
    """A picklable recipe for a :class:`Decider` (worker processes build their own).

    ``model`` is a model directory, ``"default"`` for the shipped model, or ``None`` for greedy.
    The name in reports is ``catur`` (a model) or ``greedy``, with ``+shield`` when shielded
    and ``-nogate`` when the gate is off.
    """

    model: str | None = None
    shield: ShieldConfig | None = None
    use_gate: bool = True
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        name = "catur" if self.model is not None else "greedy"
        if self.shield is not None and self.shield.enabled:
            name += "+shield"
        if self.model is not None and not self.use_gate:
            name += "-nogate"
        return name

    def build(self) -> Decider:
        return Decider(_load_model(self.model) if self.model is not None else None, self.shield, self.use_gate)


_MODEL_CACHE: dict[str, PolicyModel] = {}


def _load_model(directory: str) -> PolicyModel:
    """Load once per process: evaluation builds a decider per task."""
    if directory not in _MODEL_CACHE:
        _MODEL_CACHE[directory] = PolicyModel.load(directory)
    return _MODEL_CACHE[directory]
