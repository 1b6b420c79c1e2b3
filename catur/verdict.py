"""Is a model worse than greedy? The one rule that ``catur train``, ``catur models promote`` and
``catur retrain`` apply, and the paired comparison it rests on.

**The comparison.** Two policies replayed on the same hosts place the same VMs (host
admission ignores NUMA, so every policy sees the same VM -> host assignment), so they can be
compared *host by host*. For each host ``h`` we keep the number of counted VMs ``n[h]`` and
each policy's sum of their lifetime defects ``m[h]`` (the model) and ``b[h]`` (the baseline).
The difference in average defect is ``(Σm - Σb) / Σn``, and its uncertainty comes from a
**paired bootstrap over hosts**: resample the hosts with replacement (``resamples`` times,
a fixed seed, so the same numbers always give the same interval) and take the 2.5% and 97.5%
quantiles of the resampled difference. Hosts, not VMs, are the unit: VMs on one host share
their nodes, so their defects move together and counting them as independent would make
every difference look clear. With fewer than two hosts there is no interval (it is
``(-inf, inf)``): one host never makes a difference statistically clear.

**The rule** (:attr:`Comparison.loses`). A model *loses* to a baseline when its average
defect is above the baseline's, or when the 95% interval of (model - baseline) lies wholly
above 0. A model that is worse on average is not shipped even when the difference is within
the noise: greedy is always available, costs nothing to serve (the registry can serve it as
a version), and the burden of proof is on the model. An exact tie (a model that decides like
greedy) does not lose.

**Clear differences** (:attr:`Comparison.clearly_worse`, :attr:`Comparison.clearly_better`):
the interval lies wholly above (below) 0. ``catur retrain`` calls a cluster *collapsed* only
on a clear loss, so noise on a small cluster never triggers fine-tuning; its promotion gate
refuses clear losses on any cluster and a loss (the rule above) on the whole window.

**What is recorded.** :func:`gate_record` is the JSON that training stores in the model's
manifest (``evaluation.gate``) and retraining in the registry's ``evaluation.json``: the
comparison, the per-host sums it came from, the rule's text. :func:`recorded_comparison`
reads it back for ``catur models promote``, recomputing from the per-host sums with
:func:`compare` (so promote applies the very same code), and understands older manifests
that only hold ``evaluation.avg_defect`` and ``evaluation.baselines.greedy`` (the average
rule alone, no interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from catur.errors import LosesToGreedy

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
RULE = (
    "loses to greedy when its average defect is above greedy's, or when the 95% paired "
    "bootstrap interval over hosts of (model - greedy) lies wholly above 0"
)


@dataclass(frozen=True)
class Comparison:
    """The model against one baseline on the same hosts: averages and the paired interval.

    Averages and the interval are fractions of defect (0.01 = 1%); ``diff_low``/``diff_high``
    bound ``model_defect - baseline_defect``.
    """

    baseline: str
    model_defect: float
    baseline_defect: float
    diff_low: float
    diff_high: float
    hosts: int
    vms: int
    confidence: float = CONFIDENCE

    @property
    def diff(self) -> float:
        return self.model_defect - self.baseline_defect

    @property
    def clearly_worse(self) -> bool:
        return self.diff_low > 0

    @property
    def clearly_better(self) -> bool:
        return self.diff_high < 0

    @property
    def loses(self) -> bool:
        """The gate's rule (module doc): worse on average, or clearly worse."""
        return self.diff > 0 or self.clearly_worse

    @property
    def outcome(self) -> str:
        if self.clearly_worse:
            return "clearly worse"
        if self.clearly_better:
            return "clearly better"
        if self.diff > 0:
            return "worse on average (within the noise)"
        if self.diff < 0:
            return "better on average (within the noise)"
        return "tie"

    def describe(self, name: str = "model") -> str:
        """One line: ``model 1.020% vs greedy 1.088%: -0.068 points (95% CI -0.1 to -0.02 over 8 hosts), clearly better``."""
        if self.vms == 0:  # read from an older manifest: the two averages, nothing per host
            basis = "recorded averages only, no interval"
        else:
            ci = "no interval"
            if math.isfinite(self.diff_low):
                ci = f"{100 * self.confidence:.0f}% CI {100 * self.diff_low:+.3f} to {100 * self.diff_high:+.3f}"
            basis = f"{ci}; {self.hosts} host{'s' if self.hosts != 1 else ''}, {self.vms:,} VMs"
        return (
            f"{name} {100 * self.model_defect:.3f}% vs {self.baseline} {100 * self.baseline_defect:.3f}%: "
            f"{100 * self.diff:+.3f} points ({basis}), {self.outcome}"
        )

    def to_dict(self) -> dict:
        """JSON-safe: an absent interval is written as nulls."""
        finite = math.isfinite(self.diff_low)
        return {
            "baseline": self.baseline,
            "model_avg_defect": self.model_defect,
            "baseline_avg_defect": self.baseline_defect,
            "diff": self.diff,
            "diff_ci": [self.diff_low, self.diff_high] if finite else [None, None],
            "confidence": self.confidence,
            "hosts": self.hosts,
            "vms": self.vms,
            "outcome": self.outcome,
            "loses": self.loses,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Comparison":
        low, high = data.get("diff_ci") or [None, None]
        return cls(
            baseline=str(data["baseline"]),
            model_defect=float(data["model_avg_defect"]),
            baseline_defect=float(data["baseline_avg_defect"]),
            diff_low=-math.inf if low is None else float(low),
            diff_high=math.inf if high is None else float(high),
            hosts=int(data.get("hosts", 0)),
            vms=int(data.get("vms", 0)),
            confidence=float(data.get("confidence", CONFIDENCE)),
        )


def host_sums(streams, rows: np.ndarray, defects: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    """``(host ids, vms[H], sum of defects[H])`` of one replay's per-VM results.

    ``streams`` are the replayed host streams (anything with ``host``, ``rows`` and
    ``counted``, like :class:`catur.sim.admission.HostStream`); ``rows``/``defects`` are a
    result's trace rows and lifetime defects (:class:`catur.sim.evaluate.PolicyResult`).
    Hosts come out in stream order; a VM of no listed stream is ignored.
    """
    host_rows = [np.asarray(s.rows)[np.asarray(s.counted)] for s in streams]
    all_rows = np.concatenate(host_rows) if host_rows else np.zeros(0, np.int64)
    owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(host_rows)]) if host_rows else np.zeros(0, np.int64)
    order = np.argsort(all_rows, kind="stable")
    sorted_rows = all_rows[order]
    rows = np.asarray(rows)
    at = np.clip(np.searchsorted(sorted_rows, rows), 0, max(len(sorted_rows) - 1, 0))
    keep = sorted_rows[at] == rows if len(sorted_rows) else np.zeros(len(rows), bool)
    index = owner[order][at][keep]
    vms = np.bincount(index, minlength=len(host_rows))
    sums = np.bincount(index, weights=np.asarray(defects, float)[keep], minlength=len(host_rows))
    return [int(s.host) for s in streams], vms, sums


def compare(
    vms: np.ndarray,
    model_sums: np.ndarray,
    baseline_sums: np.ndarray,
    baseline: str = "greedy",
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """The paired bootstrap comparison (module doc) from per-host VM counts and defect sums."""
    vms = np.asarray(vms, dtype=float)
    diff = np.asarray(model_sums, dtype=float) - np.asarray(baseline_sums, dtype=float)
    if not (vms.shape == diff.shape == np.shape(baseline_sums)) or vms.ndim != 1:
        raise ValueError(f"compare: per-host arrays differ in shape: {vms.shape}, {np.shape(model_sums)}, {np.shape(baseline_sums)}")
    used = vms > 0
    vms, diff = vms[used], diff[used]
    model_sums, baseline_sums = np.asarray(model_sums, float)[used], np.asarray(baseline_sums, float)[used]
    total = vms.sum()
    if total == 0:
        raise ValueError("compare: no VM to compare on")
    low, high = -math.inf, math.inf
    if len(vms) >= 2:
        rng = np.random.default_rng(seed)
        # Each row: how many times each host is drawn in one resample (a multinomial draw is
        # exactly "H hosts with replacement"), so a resample's difference is two dot products.
        counts = rng.multinomial(len(vms), np.full(len(vms), 1.0 / len(vms)), size=resamples).astype(float)
        resampled = (counts @ diff) / (counts @ vms)
        tail = 100 * (1 - confidence) / 2
        low, high = (float(x) for x in np.percentile(resampled, [tail, 100 - tail]))
    return Comparison(
        baseline=baseline,
        model_defect=float(model_sums.sum() / total),
        baseline_defect=float(baseline_sums.sum() / total),
        diff_low=low,
        diff_high=high,
        hosts=int(len(vms)),
        vms=int(total),
        confidence=confidence,
    )


def gate_record(hosts: list[int], vms: np.ndarray, sums: dict[str, np.ndarray], model: str, *, allowed_worse: bool = False) -> dict:
    """What training and retraining record: the comparisons of ``model`` with greedy and the
    best primitive present in ``sums`` (``{policy: per-host sums}``), the per-host data
    (so :func:`recorded_comparison` recomputes with the same code), and the rule."""
    versus = {"greedy": compare(vms, sums[model], sums["greedy"], "greedy")}
    primitives = [p for p in sums if p not in (model, "greedy")]
    if primitives:
        best = min(primitives, key=lambda p: float(np.sum(sums[p])))
        versus["best_primitive"] = compare(vms, sums[model], sums[best], best)
    return {
        "rule": RULE,
        "loses_to_greedy": versus["greedy"].loses,
        "allowed_worse": bool(allowed_worse and versus["greedy"].loses),
        "versus": {k: c.to_dict() for k, c in versus.items()},
        "per_host": {
            "hosts": [int(h) for h in hosts],
            "vms": [int(n) for n in vms],
            "model": [float(x) for x in sums[model]],
            "greedy": [float(x) for x in sums["greedy"]],
        },
    }


def gate_or_refuse(
    hosts: list[int], vms: np.ndarray, sums: dict[str, np.ndarray], *, allowed_worse: bool, log, losing: str, out
) -> dict:
    """What training does at its end: :func:`gate_record` of ``sums["catur"]``, both comparisons
    logged, and a :class:`~catur.errors.LosesToGreedy` (``"{losing} (...); not written to
    OUT"``) when it loses and ``allowed_worse`` is off."""
    verdict = gate_record(hosts, vms, sums, "catur", allowed_worse=allowed_worse)
    for key in ("greedy", "best_primitive"):
        log(f"validation: {Comparison.from_dict(verdict['versus'][key]).describe('catur')}")
    if verdict["loses_to_greedy"] and not allowed_worse:
        versus = Comparison.from_dict(verdict["versus"]["greedy"])
        raise LosesToGreedy(f"{losing} ({versus.describe('model')}); not written to {out} (--allow-worse writes it anyway)")
    return verdict


def _from_gate(gate: object) -> Comparison | None:
    if not isinstance(gate, dict):
        return None
    per_host = gate.get("per_host")
    if isinstance(per_host, dict) and all(isinstance(per_host.get(k), list) for k in ("vms", "model", "greedy")):
        try:
            return compare(per_host["vms"], per_host["model"], per_host["greedy"], "greedy")
        except (ValueError, TypeError):
            pass
    versus = gate.get("versus")
    if isinstance(versus, dict) and isinstance(versus.get("greedy"), dict):
        try:
            return Comparison.from_dict(versus["greedy"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def recorded_comparison(manifest: dict | None, evaluation: dict | None = None) -> Comparison | None:
    """The recorded comparison with greedy of a model version, or ``None`` when none is recorded.

    Looks, in order, at a registry ``evaluation.json`` (``gate``, written by ``catur retrain``
    or given with ``catur models add --evaluation``), then at the manifest's ``evaluation``
    (written by ``catur train``): its ``gate`` if present, else — older manifests — its
    ``avg_defect`` against ``baselines.greedy`` (no per-host data: no interval).
    """
    for source in (evaluation, (manifest or {}).get("evaluation") if isinstance(manifest, dict) else None):
        if not isinstance(source, dict):
            continue
        found = _from_gate(source.get("gate"))
        if found is not None:
            return found
        baselines = source.get("baselines")
        model, greedy = source.get("avg_defect"), baselines.get("greedy") if isinstance(baselines, dict) else None
        if isinstance(model, (int, float)) and isinstance(greedy, (int, float)):
            hosts = source.get("hosts")
            return Comparison("greedy", float(model), float(greedy), -math.inf, math.inf, len(hosts) if isinstance(hosts, list) else 0, 0)
    return None
