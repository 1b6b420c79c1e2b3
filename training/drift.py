"""Statistical drift of the request mix: early warnings for ``catur retrain``.

The paper's retraining trigger is *performance*: replay the recent window and see whether
the model still beats every primitive. That needs a replay of every policy, so it runs on a
schedule. The signals here are cheap and come earlier: they compare the requests of a
*reference* window (what the model was trained on) with those of the *recent* window, and
say whether the mix moved, before the defect numbers do.

Per feature — VM size (``vcpus``, ``mem_gib``) and lifetime — two classic two-sample tests:

* **PSI** (population stability index): bin the values, ``p`` = the reference share of a
  bin, ``q`` = the recent share, ``PSI = Σ (q − p) · ln(q / p)``. Zero when nothing moved;
  by the usual rule of thumb < 0.1 is *stable*, 0.1–0.25 *moderate*, > 0.25 *significant*.
  Bins: one per distinct value when the two samples together have few (VM sizes are a
  flavor catalogue), else the reference's deciles. Empty bins count as a share of ``eps``
  so the logarithm stays finite.
* **KS** (two-sample Kolmogorov–Smirnov): the largest gap between the two empirical CDFs,
  in [0, 1], with its asymptotic p-value (Numerical Recipes' ``probks``; no SciPy needed).
  With tens of thousands of VMs even a tiny gap is "significant", so read the statistic
  as an effect size and PSI for the level.

**Lifetimes are censored**: VMs still running when the trace ends have no departure, and a
recent window has more of them than an old one. Comparing raw observed lifetimes would
report a drift towards short VMs that is only the window's position. So both windows use
lifetimes *capped* at ``cap_s`` (default one day): a VM that left is ``min(lifetime, cap)``,
a VM still running that arrived at least ``cap_s`` before the trace's end is ``cap``, and a
VM still running that arrived later is unknown and left out — the same rule for both windows.

The **uncertainty-gate rate** (:func:`gate_rate`) is the fraction of observations on which
the model's gate (:mod:`catur.gate`) fires: the threshold sits at the training data's 99.9th
percentile, so about 0.1% on data like the training data, and a rate well above that says
the model is meeting requests it has not seen.

Everything here is a pure function of arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from catur.errors import CaturError

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
MAX_CATEGORIES = 32  # up to this many distinct values, each value is its own PSI bin
PSI_BINS = 10  # otherwise: the reference's deciles
PSI_EPS = 1e-4  # the share an empty bin counts as
LIFETIME_CAP_S = 86_400.0
FEATURES = ("vcpus", "mem_gib", "lifetime_s")


def _sample(values: object, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise CaturError(f"drift: the {name} sample is empty")
    if not np.isfinite(x).all():
        raise CaturError(f"drift: the {name} sample has NaN or infinite values")
    return x


def psi_bins(reference: np.ndarray, recent: np.ndarray, bins: int = PSI_BINS, max_categories: int = MAX_CATEGORIES) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every reference and every recent value (see the module doc for the rule)."""
    reference, recent = _sample(reference, "reference"), _sample(recent, "recent")
    categories = np.union1d(reference, recent)
    if categories.size <= max_categories:
        return np.searchsorted(categories, reference), np.searchsorted(categories, recent)
    inner = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return np.searchsorted(inner, reference, side="right"), np.searchsorted(inner, recent, side="right")


def psi(reference: object, recent: object, bins: int = PSI_BINS, eps: float = PSI_EPS) -> float:
    """Population stability index of ``recent`` against ``reference`` (>= 0; 0 = same mix)."""
    ref_bins, rec_bins = psi_bins(reference, recent, bins)
    size = int(max(ref_bins.max(), rec_bins.max())) + 1
    p = np.maximum(np.bincount(ref_bins, minlength=size) / ref_bins.size, eps)
    q = np.maximum(np.bincount(rec_bins, minlength=size) / rec_bins.size, eps)
    return float(max(((q - p) * np.log(q / p)).sum(), 0.0))


def kolmogorov_p(statistic: float, n: int, m: int) -> float:
    """Asymptotic p-value of a two-sample KS ``statistic`` for samples of sizes ``n`` and ``m``."""
    if statistic <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * statistic
    # Q_KS(λ) = 2 Σ (−1)^(j−1) exp(−2 j² λ²); for small λ the series does not settle and
    # the answer is 1 (no evidence of a difference).
    total, sign, previous = 0.0, 2.0, 0.0
    for j in range(1, 101):
        term = sign * math.exp(-2.0 * j * j * lam * lam)
        total += term
        if abs(term) <= 1e-3 * previous or abs(term) <= 1e-8 * abs(total):
            return float(min(max(total, 0.0), 1.0))
        sign, previous = -sign, abs(term)
    return 1.0


def ks_2samp(reference: object, recent: object) -> tuple[float, float]:
    """``(statistic, p_value)`` of the two-sample Kolmogorov–Smirnov test."""
    a, b = np.sort(_sample(reference, "reference")), np.sort(_sample(recent, "recent"))
    points = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, points, side="right") / a.size - np.searchsorted(b, points, side="right") / b.size)
    statistic = float(gap.max())
    return statistic, kolmogorov_p(statistic, a.size, b.size)


def level(psi_value: float) -> str:
    """The rule-of-thumb reading of a PSI value."""
    if psi_value >= PSI_SIGNIFICANT:
        return "significant"
    return "moderate" if psi_value >= PSI_MODERATE else "stable"


def capped_lifetimes(arrival_s: np.ndarray, departure_s: np.ndarray, trace_end_s: float, cap_s: float = LIFETIME_CAP_S) -> np.ndarray:
    """Lifetimes capped at ``cap_s``; NaN where still running and too recent to know (module doc)."""
    if not cap_s > 0:
        raise CaturError(f"drift: the lifetime cap must be > 0 s, got {cap_s!r}")
    arrival = np.asarray(arrival_s, dtype=float)
    departure = np.asarray(departure_s, dtype=float)
    running = np.isnan(departure)
    life = np.minimum(np.where(running, np.inf, departure - arrival), cap_s)
    return np.where(running & (trace_end_s - arrival < cap_s), np.nan, life)


def window_features(df: pd.DataFrame, start_s: float, end_s: float, trace_end_s: float, cap_s: float = LIFETIME_CAP_S) -> dict[str, np.ndarray]:
    """The drift features of the VMs arriving in ``[start_s, end_s)`` of a canonical trace."""
    arrival = df["arrival_s"].to_numpy(float)
    inside = (arrival >= start_s) & (arrival < end_s)
    life = capped_lifetimes(arrival[inside], df["departure_s"].to_numpy(float)[inside], trace_end_s, cap_s)
    return {
        "vcpus": df["vcpus"].to_numpy(float)[inside],
        "mem_gib": df["mem_gib"].to_numpy(float)[inside],
        "lifetime_s": life[~np.isnan(life)],
    }


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature between the reference and the recent window."""

    feature: str
    psi: float
    level: str
    ks: float
    p_value: float
    n_reference: int
    n_recent: int
    reference_mean: float
    recent_mean: float

    def to_dict(self) -> dict:
        return asdict(self)


def feature_drift(feature: str, reference: object, recent: object) -> FeatureDrift:
    """PSI and KS of one feature (both samples non-empty)."""
    a, b = _sample(reference, f"reference {feature}"), _sample(recent, f"recent {feature}")
    value = psi(a, b)
    statistic, p_value = ks_2samp(a, b)
    return FeatureDrift(feature, value, level(value), statistic, p_value, int(a.size), int(b.size), float(a.mean()), float(b.mean()))


def compare_windows(reference: dict[str, np.ndarray], recent: dict[str, np.ndarray]) -> dict[str, FeatureDrift]:
    """:func:`feature_drift` of every feature the two :func:`window_features` share; a feature
    with an empty side (e.g. no lifetime known yet) is left out."""
    out = {}
    for name in FEATURES:
        if name in reference and name in recent and len(reference[name]) and len(recent[name]):
            out[name] = feature_drift(name, reference[name], recent[name])
    return out


def gate_rate(gate, observations: np.ndarray) -> float:
    """Fraction of ``observations`` (rows) on which the uncertainty ``gate`` fires."""
    x = np.atleast_2d(np.asarray(observations, dtype=float))
    if x.shape[0] == 0:
        raise CaturError("drift: no observations to measure the gate rate on")
    return float(np.mean([gate.fires(row)[0] for row in x]))
