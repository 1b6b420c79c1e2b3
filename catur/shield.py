"""Speculative shielding (the paper's Algorithm 1): filter risky primitives with a look-ahead.

Per request, before the policy's choice is taken:

1. each primitive's placement is simulated; a primitive is **rejected** if the placed VM's
   defect would exceed the threshold (0.40, the anomaly threshold);
2. with depth ``d > 1``, a primitive is also rejected if, in the state it leads to, some
   *popular* VM type would have no allowed primitive within the remaining depth ``d − 1``.
   Popular types are the (vCPUs, memory) shapes whose share of recent requests is at least
   the width ``n`` (default 5%), counted by :class:`TypeStats`;
3. the allowed primitive with the highest policy score wins. If none is allowed, the shield
   retries at depth 1; if still none, it takes the unshielded choice and says so.

Deeper or wider shields trade average defect for fewer anomalies. The shield only reads the
placement core's pure functions, so the simulator and the service shield identically.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError
from catur.metrics import ANOMALY_THRESHOLD
from catur.observation import Candidate, candidates
from catur.request import VMRequest
from catur.topology import Topology


@dataclass(frozen=True)
class ShieldConfig:
    """Shield parameters. ``depth = 0`` turns the shield off.

    Attributes:
        depth: Look-ahead depth (1 = only the request in hand).
        width: Share of recent requests (0–1) above which a VM type counts as popular.
        threshold: Defect above which a placement is rejected (the anomaly threshold).
        window: How many recent requests :class:`TypeStats` remembers.
        max_types: At most this many popular types are checked (the most frequent first).
    """

    depth: int = 1
    width: float = 0.05
    threshold: float = ANOMALY_THRESHOLD
    window: int = 1000
    max_types: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise CaturError(f"shield depth must be a whole number >= 0, got {self.depth!r}")
        for name in ("width", "threshold", "window", "max_types"):
            if isinstance(getattr(self, name), bool):
                raise CaturError(f"shield {name} must be a number, got {getattr(self, name)!r}")
        if not (isinstance(self.width, (int, float)) and 0.0 < self.width <= 1.0):
            raise CaturError(f"shield width must be in (0, 1], got {self.width!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise CaturError(f"shield threshold must be finite and >= 0, got {self.threshold!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise CaturError(f"shield window must be >= 1, got {self.window!r}")
        if not isinstance(self.max_types, int) or self.max_types < 1:
            raise CaturError(f"shield max_types must be >= 1, got {self.max_types!r}")

    @property
    def enabled(self) -> bool:
        return self.depth > 0


class TypeStats:
    """Arrival frequencies of VM types (vCPUs, MiB, alpha, beta) over the last ``window`` requests."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._recent: deque = deque()
        self._counts: Counter = Counter()

    def observe(self, request: VMRequest) -> None:
        key = (request.vcpus, request.mem_mib, request.alpha, request.beta, request.vnuma)
        self._recent.append(key)
        self._counts[key] += 1
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]

    def popular(self, width: float, limit: int) -> list[VMRequest]:
        """Types whose share of the remembered requests is at least ``width``, most frequent first."""
        total = len(self._recent)
        if not total:
            return []
        out = []
        for (vcpus, mem, alpha, beta, vnuma), count in self._counts.most_common(limit):
            if count / total >= width:
                out.append(VMRequest(vcpus, mem, alpha, beta, vnuma))
        return out


def _after(used_vcpus: np.ndarray, used_mem: np.ndarray, cand: Candidate) -> tuple[np.ndarray, np.ndarray]:
    vcpus = used_vcpus.copy()
    vcpus[cand.placement.cpu_nodes] += cand.placement.vcpus
    return vcpus, used_mem + cand.placement.node_mem_mib()


def _has_allowed_action(
    topology: Topology, used_vcpus, used_mem, request: VMRequest, depth: int, popular, threshold: float
) -> bool:
    """Whether ``request`` has some primitive allowed at ``depth`` from this state."""
    for cand in candidates(topology, used_vcpus, used_mem, request):
        if _allowed(topology, used_vcpus, used_mem, cand, depth, popular, threshold):
            return True
    return False


def _allowed(topology, used_vcpus, used_mem, cand: Candidate, depth: int, popular, threshold: float) -> bool:
    if cand.defect > threshold:
        return False
    if depth <= 1 or not popular:
        return True
    next_vcpus, next_mem = _after(used_vcpus, used_mem, cand)
    return all(
        _has_allowed_action(topology, next_vcpus, next_mem, vm_type, depth - 1, popular, threshold)
        for vm_type in popular
        # A type asking for more vNUMA instances than this host has nodes cannot arrive here
        # (it was seen on a larger host sharing the window).
        if vm_type.vnuma is None or vm_type.vnuma <= topology.num_nodes
    )


@dataclass(frozen=True)
class ShieldVerdict:
    """Which primitive the shield picked and why.

    ``fallback`` is ``""`` when the first pass allowed something, ``"depth-1"`` when only the
    retry at depth 1 did, and ``"unshielded"`` when nothing was allowed. ``intervened`` is
    True when the pick differs from the policy's own first choice.
    """

    choice: int
    allowed: tuple[bool, ...]
    intervened: bool
    fallback: str
    reason: str


def shield(
    topology: Topology,
    used_vcpus: np.ndarray,
    used_mem_mib: np.ndarray,
    cands: list[Candidate],
    scores: np.ndarray,
    config: ShieldConfig,
    stats: TypeStats | None,
) -> ShieldVerdict:
    """Apply the shield to the candidates of one request, given the policy's ``scores``."""
    preferred = int(np.argmax(scores))
    popular = stats.popular(config.width, config.max_types) if (stats and config.depth > 1) else []
    for depth, fallback in ((config.depth, ""), (1, "depth-1")):
        allowed = tuple(
            _allowed(topology, used_vcpus, used_mem_mib, c, depth, popular, config.threshold) for c in cands
        )
        choice, found = best_allowed(np.asarray(scores)[None], np.array([allowed]))
        if found[0]:
            i = int(choice[0])
            reason = shield_reason(i != preferred, "", cands[preferred].defect, config.threshold, depth)
            return ShieldVerdict(i, allowed, i != preferred, fallback, reason)
        if config.depth == 1:
            break
    reason = shield_reason(False, "unshielded", cands[preferred].defect, config.threshold, config.depth)
    return ShieldVerdict(preferred, tuple(False for _ in cands), False, "unshielded", reason)


def shield_reason(intervened: bool, fallback: str, preferred_defect: float, threshold: float, depth: int) -> str:
    """Why the shield did what it did, in words (empty when it let the policy's choice through)."""
    if fallback == "unshielded":
        return "no primitive keeps the defect under the threshold"
    if not intervened:
        return ""
    if preferred_defect > threshold:
        return f"defect {preferred_defect:.3f} > {threshold:g}"
    return f"a popular VM type would have no safe placement within depth {depth}"


def best_allowed(scores: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores``/``allowed`` (``[B, 4]``): the allowed primitive with the highest
    score (ties: the first listed), and whether any was allowed."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(order.shape[0])
    ranked = allowed[rows[:, None], order]
    first = np.argmax(ranked, axis=1)  # the first allowed one in score order
    return order[rows, first], ranked.any(axis=1)


def shield_depth1(defects: np.ndarray, scores: np.ndarray, config: ShieldConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shield at depth 1 for ``B`` requests at once (``defects``/``scores`` ``[B, 4]``):
    ``(choice, intervened, unshielded)`` arrays, exactly :func:`shield`'s verdict row by row.

    At depth 1 a primitive is allowed when its own defect is within the threshold; popular
    types play no part, so no per-host statistics are needed.
    """
    preferred = np.argmax(scores, axis=1)
    choice, found = best_allowed(scores, ~(defects > config.threshold))
    choice = np.where(found, choice, preferred)
    return choice, choice != preferred, ~found
