"""Synthetic VM workloads, calibrated to public traces and shipped inside the package.

This is the trace Catur runs on when you have downloaded nothing: ``generate("default")``
returns a month of Huawei-East-1-like VM arrivals and departures as a canonical trace, a
pandas DataFrame with one row per VM:

===============  =======  =============================================================
column           dtype    meaning
===============  =======  =============================================================
``vm_id``        int64    0..n-1, in arrival order
``arrival_s``    float64  seconds from the start of the window
``departure_s``  float64  seconds; NaN = still running at the window's end
``vcpus``        int64    virtual CPUs
``mem_gib``      float64  memory, GiB
``cluster``      string   only for multi-cluster scenarios: which cluster the VM is for
===============  =======  =============================================================

Rows are sorted by ``arrival_s`` then ``vm_id``. ``df.attrs`` records the scenario, the seed,
the window length (``window_s``) and the lifetime scale that was applied.

How a trace is built (vectorised numpy; Python loops run over hours, tables and size classes,
never over VMs, so a million VMs take about a second):

1. **Arrivals.** Requests arrive as a Poisson process whose hourly rate is
   ``arrivals_per_hour`` x the hour-of-day profile x a random per-day factor (busy and quiet
   days) x a random, autocorrelated per-hour factor (bursts). Each request is a *batch* of
   identical VMs arriving in the same second, as tenants scale out a service (44% of
   Huawei-East-1 VMs arrive that way).
2. **Flavors.** Each batch draws a (vcpus, mem_gib) flavor from the flavor table; the batch
   size then depends on the flavor's size class. Batch probabilities are corrected for that,
   so the flavor table's shares hold *per VM*, which is how the public statistics are quoted.
3. **Lifetimes.** Each batch draws one lifetime from an empirical quantile table of its size
   class (log-linear interpolation between quantiles), and each VM jitters it a little.
   ``peak_concurrency``, when set, then rescales all lifetimes by one factor so the busiest
   moment of the window has that many live VMs.
4. **Warm-up** (optional): the process starts ``warmup_days`` before the window, and the VMs
   still running when it opens are kept with ``arrival_s = 0``. Without it the cluster starts
   empty and, with month-long lifetimes, fills up for weeks, a drift nobody asked for.
5. **Drift** (optional): a temporal shift, several clusters, an adversarial injection.

Every random part has its own seeded stream (``numpy.random.SeedSequence.spawn``), so turning a
drift knob does not reshuffle the rest: for the same seed, ``adversarial`` is ``default`` with
the injected VMs' flavors (and lifetime classes) swapped, every other row identical.

Calibration: against Huawei-East-1 at its own rate (156 VMs/h, 31 days, no warm-up, lifetime
scale 1), the generator reproduces the flavor shares, the hourly profile, the busiest-hour
ratio (6x the mean hour), the mean lifetime and the mean concurrency (~750 live VMs). Its peak
is lower (~1,300 against 2,432): the real trace's peak comes from a mid-month surge of
long-lived VMs, which a stationary model does not reproduce. Small demo workloads keep the
cluster as full as the real one by stretching lifetimes (``peak_concurrency``) instead.

The calibration tables below were measured from the public traces described in
``../shared/traces/README.md`` (not needed at runtime; the numbers are embedded here). The
measuring script reads them with pandas; each table's comment gives its expression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from catur.errors import CaturError, unknown_name
from catur.traces.events import running_total

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0

# --------------------------------------------------------------------------------------------
# Validation helpers: every error names the class, the field and the value.
# --------------------------------------------------------------------------------------------


def _fail(owner: object, label: str, value: object, why: str) -> None:
    raise CaturError(f"{type(owner).__name__}.{label} {why}, got {value!r}")


def _is_num(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def _bad_int(value: object) -> bool:
    if not _is_num(value) or not math.isfinite(value):  # type: ignore[arg-type]
        return True
    return value != int(value)  # type: ignore[call-overload]


def _check_num(
    owner: object, label: str, lo: float | None = None, lo_open: bool = False, hi: float | None = None
) -> None:
    """Check a numeric field (finite, within bounds) and store it as a float."""
    value = getattr(owner, label)
    if not _is_num(value) or not math.isfinite(value):
        _fail(owner, label, value, "must be a finite number")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        _fail(owner, label, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        _fail(owner, label, value, f"must be <= {hi:g}")
    object.__setattr__(owner, label, float(value))


def _coerce_tuple(owner: object, label: str, value: object) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        _fail(owner, label, value, "must be a sequence")
    return tuple(value)  # type: ignore[arg-type]


def _coerce_flavors(owner: object, label: str, value: object) -> tuple[Flavor, ...]:
    """Accept Flavor rows or plain (vcpus, mem_gib, share) triples, e.g. from a YAML file."""
    rows = []
    for row in _coerce_tuple(owner, label, value):
        if not hasattr(row, "__len__") or len(row) != 3:
            _fail(owner, label, row, "rows must be (vcpus, mem_gib, share)")
        vcpus, mem, share = row
        if _bad_int(vcpus) or vcpus < 1:
            _fail(owner, label, row, "vcpus must be a whole number >= 1")
        if not _is_num(mem) or not math.isfinite(mem) or mem <= 0:
            _fail(owner, label, row, "mem_gib must be > 0")
        if not _is_num(share) or not math.isfinite(share) or share < 0:
            _fail(owner, label, row, "share must be >= 0")
        rows.append(Flavor(int(vcpus), float(mem), float(share)))
    if not rows or sum(f.share for f in rows) <= 0:
        _fail(owner, label, value, "needs at least one flavor with a positive share")
    return tuple(rows)


# --------------------------------------------------------------------------------------------
# Calibration tables.
#
# Huawei-East-1 = huawei-east-1-lt.csv.gz (vmid,cpu,mem,at,lt), read as
#   h = pd.read_csv(path).sort_values(["at", "vmid"])
# Azure-2017   = azure2017-dev-events.csv.gz (vmid,cpu,memory,time,type), creates (type 0)
#   joined to deletes (type 1) on vmid; lifetime = delete time - create time.
# --------------------------------------------------------------------------------------------


class Flavor(NamedTuple):
    """A VM size and its relative weight in a mix (weights need not sum to 1)."""

    vcpus: int
    mem_gib: float
    share: float


# h.groupby(["cpu", "mem"]).size() / len(h), flavors with >= 0.1% of VMs (99.996% of all VMs).
# 71.1% have 1 vCPU; 6.05% have more than 10 GiB.
HUAWEI_FLAVORS: tuple[Flavor, ...] = (
    Flavor(1, 2.0, 0.46370), Flavor(1, 1.0, 0.21878), Flavor(2, 4.0, 0.12826),
    Flavor(4, 8.0, 0.08047), Flavor(1, 4.0, 0.02871), Flavor(2, 8.0, 0.01954),
    Flavor(8, 16.0, 0.01744), Flavor(4, 16.0, 0.01687), Flavor(8, 32.0, 0.00880),
    Flavor(16, 32.0, 0.00861), Flavor(12, 24.0, 0.00549), Flavor(64, 128.0, 0.00217),
    Flavor(32, 64.0, 0.00113),
)  # fmt: skip

# The same for Azure-2017 creates, flavors with >= 0.01% of VMs (99.97%): 1.75 GiB per vCPU
# families instead of Huawei's 1/2/4, and nothing above 8 vCPUs worth counting.
AZURE_FLAVORS: tuple[Flavor, ...] = (
    Flavor(1, 1.75, 0.60363), Flavor(2, 3.5, 0.18525), Flavor(4, 7.0, 0.09917),
    Flavor(8, 14.0, 0.08996), Flavor(1, 0.75, 0.01585), Flavor(8, 56.0, 0.00551),
    Flavor(2, 14.0, 0.00019), Flavor(4, 28.0, 0.00019),
)  # fmt: skip

# Arrivals per hour of day on the trace's own clock (hour 0 = the trace's first second),
# divided by the mean: np.bincount((h["at"] // 3600) % 24) / mean. Huawei's quietest eight
# hours (16-23) get ~0.58x the mean, its busiest (1) 2.3x. Azure's processed file is flat.
HUAWEI_HOURLY: tuple[float, ...] = (
    1.750, 2.266, 1.354, 1.154, 0.876, 1.271, 1.491, 1.250, 1.243, 1.031, 0.806, 0.952,
    1.157, 0.968, 0.904, 0.853, 0.650, 0.563, 0.631, 0.568, 0.544, 0.465, 0.616, 0.636,
)  # fmt: skip
AZURE_HOURLY: tuple[float, ...] = (
    1.296, 1.173, 1.004, 1.017, 1.109, 0.918, 0.925, 0.948, 0.947, 1.107, 1.060, 0.710,
    0.907, 0.943, 0.939, 0.894, 0.966, 0.843, 1.289, 1.078, 1.005, 0.940, 1.114, 0.870,
)  # fmt: skip

# Day-to-day variation: standard deviation of log(arrivals per day). Huawei's 31 daily counts
# run from 1,193 to 6,071 (np.log(np.bincount(h["at"] // 86400)).std() = 0.41); Azure's three
# full days are within 6% of each other.
HUAWEI_DAILY_SIGMA = 0.41
AZURE_DAILY_SIGMA = 0.056
# Bursts: log(VMs per hour) / (profile x day's mean) has sd 0.44 in Huawei-East-1, and
# log-counts minus their 24 h moving average have lag-1 autocorrelation 0.5. Part of the 0.44 is
# Poisson and batch noise, so the per-hour factor's sd was fitted by simulation at Huawei's
# rate: 0.4 reproduces the 0.44 and the busiest hour at 6.1x the mean hour (trace: 6.1).
HUAWEI_HOURLY_SIGMA = 0.4
HUAWEI_HOURLY_CORR = 0.5

# Lifetime quantiles (seconds) at these probability levels, per vCPU size class:
#   np.quantile(h.loc[class, "lt"], LIFETIME_LEVELS).
# Lifetimes are far from lognormal (Huawei: median 43 min, mean 4.8 h, 1% beyond 5.6 days),
# and small VMs live longer than mid-size ones, hence a table per class. The dense top levels
# keep the heavy tail, which carries most of the VM-hours: 2.5% of Huawei VMs live > 1 day and
# hold 65% of all VM-seconds.
LIFETIME_LEVELS: tuple[float, ...] = (
    0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6,
    0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
)  # fmt: skip


@dataclass(frozen=True)
class LifetimeTable:
    """Empirical lifetime distribution per vCPU size class.

    Attributes:
        class_bounds: Upper vCPU bound of each class but the last, increasing; a VM with
            ``vcpus <= class_bounds[i]`` (and above the previous bound) is in class ``i``, a
            VM above every bound in the last class. ``(1, 4, 16)`` gives 1 | 2-4 | 5-16 | 17+.
        levels: Probability levels, strictly increasing from 0 to 1.
        quantiles_s: One row per class: lifetime in seconds at each level, positive and
            non-decreasing. Sampling interpolates log-lifetime linearly between levels.
    """

    class_bounds: tuple[int, ...]
    levels: tuple[float, ...]
    quantiles_s: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        bounds = _coerce_tuple(self, "class_bounds", self.class_bounds)
        if any(_bad_int(b) or b < 1 for b in bounds) or list(bounds) != sorted(set(bounds)):
            _fail(self, "class_bounds", bounds, "must be increasing whole numbers >= 1")
        levels = _coerce_tuple(self, "levels", self.levels)
        lv = np.asarray(levels, dtype=float)
        if len(lv) < 2 or lv[0] != 0.0 or lv[-1] != 1.0 or not (np.diff(lv) > 0).all():
            _fail(self, "levels", levels, "must increase strictly from 0 to 1")
        try:
            rows = tuple(tuple(float(x) for x in row) for row in self.quantiles_s)
        except (TypeError, ValueError):
            _fail(self, "quantiles_s", self.quantiles_s, "must be rows of numbers")
        if len(rows) != len(bounds) + 1:
            why = f"needs {len(bounds) + 1}, one per class"
            _fail(self, "quantiles_s", f"{len(rows)} rows", why)
        for row in rows:
            q = np.asarray(row)
            ok = q.shape == lv.shape and np.isfinite(q).all() and (q > 0).all()
            if not ok or (np.diff(q) < 0).any():
                why = f"rows need {len(lv)} positive non-decreasing seconds"
                _fail(self, "quantiles_s", row, why)
        object.__setattr__(self, "class_bounds", tuple(int(b) for b in bounds))
        object.__setattr__(self, "levels", tuple(float(x) for x in lv))
        object.__setattr__(self, "quantiles_s", rows)

    def classify(self, vcpus: np.ndarray) -> np.ndarray:
        """The size class of each VM."""
        return np.searchsorted(np.asarray(self.class_bounds), vcpus, side="left")

    def sample(self, vcpus: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Lifetimes (s) for VMs of these sizes at uniform draws ``u`` in [0, 1)."""
        lv = np.asarray(self.levels)
        logq = np.log(np.asarray(self.quantiles_s))
        cls = self.classify(vcpus)
        j = np.clip(np.searchsorted(lv, u, side="right"), 1, len(lv) - 1)
        frac = (u - lv[j - 1]) / (lv[j] - lv[j - 1])
        return np.exp(logq[cls, j - 1] + frac * (logq[cls, j] - logq[cls, j - 1]))

    def mean_s(self) -> np.ndarray:
        """Exact mean lifetime of each class under the interpolated distribution."""
        dp = np.diff(np.asarray(self.levels))
        q = np.asarray(self.quantiles_s)
        lo, hi = q[:, :-1], q[:, 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            seg = np.where(hi > lo, (hi - lo) / np.log(hi / lo), lo)
        return (seg * dp).sum(axis=1)


# Huawei-East-1, classes 1 | 2-4 | 5-16 | 17-64 vCPUs (82,720 / 28,513 / 4,692 / 388 VMs; means
# 16.7k / 18.2k / 14.0k / 78.4k s). Only VMs that departed inside the 31 days are in the file,
# so nothing here exceeds ~29 days.
HUAWEI_LIFETIMES = LifetimeTable(
    class_bounds=(1, 4, 16),
    levels=LIFETIME_LEVELS,
    quantiles_s=(
        (1, 26, 28, 58, 69, 109, 211, 341, 599, 1778, 2518, 2821, 3150, 3567, 4070, 5091, 6506,
         8581, 12009, 16024, 24320, 31410, 43310, 55895, 94456, 433875, 596719, 832347,
         1076290, 2540293),
        (10, 26, 26, 28, 29, 31, 57, 59, 63, 172, 342, 513, 842, 1225, 1553, 1900, 2631, 3513,
         4929, 5892, 9974, 13833, 19973, 96002, 309379, 549799, 795869, 1127208, 1258033,
         2113085),
        (25, 27, 28, 28, 29, 29, 30, 31, 31, 32, 34, 55, 58, 59, 59, 61, 126, 201, 506, 584,
         3320, 11072, 21965, 78566, 174508, 342549, 652303, 1223701, 1743985, 1809271),
        (55, 270, 273, 282, 299, 315, 7666, 12656, 14533, 17241, 19610, 28009, 31687, 36754,
         44127, 47150, 49400, 51086, 53905, 62246, 112969, 124387, 345839, 940973, 988687,
         1028462, 1158730, 1159618, 1160354, 1161089),
    ),
)  # fmt: skip

# Azure-2017 completed VMs, classes 1 | 2-4 | 5+ vCPUs (155,183 / 66,827 / 22,832; means
# 8.9k / 8.4k / 6.6k s). The file bins lifetimes, so the quantiles are bin midpoints, and the
# 3.8-day window caps them at 3.5 days; 5.5% of its VMs are still running at the end.
AZURE_LIFETIMES = LifetimeTable(
    class_bounds=(1, 4),
    levels=LIFETIME_LEVELS,
    quantiles_s=(
        (150, 150, 150, 450, 450, 750, 750, 1050, 1050, 1050, 1350, 1350, 1650, 1650, 1950,
         2250, 2550, 3450, 5700, 16500, 30900, 38100, 48900, 59700, 66900, 129900, 129900,
         129900, 216300, 302700),
        (150, 150, 150, 450, 450, 750, 750, 750, 1050, 1050, 1350, 1350, 1650, 1950, 2250,
         2550, 3450, 5700, 5700, 9300, 23700, 30900, 45300, 66900, 81300, 129900, 129900,
         129900, 129900, 302700),
        (150, 150, 450, 450, 450, 750, 1050, 1050, 1350, 1650, 1950, 2550, 3450, 5700, 5700,
         5700, 5700, 5700, 9300, 9300, 12900, 12900, 16500, 34500, 56100, 70500, 77700,
         129900, 216300, 216300),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class BatchModel:
    """How many identical VMs one request brings, per vCPU size class.

    A batch is a run of VMs with the same arrival second and flavor. Huawei-East-1 VMs come
    1.78 per batch on average, but 1-vCPU VMs 2.1 and 8-16 vCPU VMs 1.1, so the chance of a
    single VM is per class, while the size of a multi-VM batch follows one shared histogram,
    cut at each class's largest observed batch.

    Attributes:
        class_bounds: As :attr:`LifetimeTable.class_bounds`.
        p_single: Per class, the probability that a batch is one VM, in [0, 1].
        max_size: Per class, the largest batch, >= 2 (ignored where ``p_single`` is 1).
        size_weights: Relative frequency of batch sizes 2, 3, 4, ... (index 0 is size 2).
    """

    class_bounds: tuple[int, ...]
    p_single: tuple[float, ...]
    max_size: tuple[int, ...]
    size_weights: tuple[float, ...]

    def __post_init__(self) -> None:
        bounds = _coerce_tuple(self, "class_bounds", self.class_bounds)
        if any(_bad_int(b) or b < 1 for b in bounds) or list(bounds) != sorted(set(bounds)):
            _fail(self, "class_bounds", bounds, "must be increasing whole numbers >= 1")
        n = len(bounds) + 1
        p1 = _coerce_tuple(self, "p_single", self.p_single)
        if len(p1) != n or any(not _is_num(p) or not 0 <= p <= 1 for p in p1):
            _fail(self, "p_single", p1, f"needs {n} probabilities in [0, 1]")
        mx = _coerce_tuple(self, "max_size", self.max_size)
        if len(mx) != n or any(_bad_int(m) or m < 2 for m in mx):
            _fail(self, "max_size", mx, f"needs {n} whole numbers >= 2")
        w = _coerce_tuple(self, "size_weights", self.size_weights)
        if not w or any(not _is_num(x) or x < 0 for x in w) or sum(w) <= 0:
            _fail(self, "size_weights", w, "must be non-negative weights with a positive sum")
        object.__setattr__(self, "class_bounds", tuple(int(b) for b in bounds))
        object.__setattr__(self, "p_single", tuple(float(p) for p in p1))
        object.__setattr__(self, "max_size", tuple(int(m) for m in mx))
        object.__setattr__(self, "size_weights", tuple(float(x) for x in w))

    def classify(self, vcpus: np.ndarray) -> np.ndarray:
        """The size class of each batch's flavor."""
        return np.searchsorted(np.asarray(self.class_bounds), vcpus, side="left")

    def _multi_cdf(self, c: int) -> np.ndarray:
        w = np.asarray(self.size_weights)[: max(self.max_size[c] - 1, 1)]
        if w.sum() <= 0:  # the class's cut leaves no weight: batches of 2
            w = np.ones(1)
        return np.cumsum(w) / w.sum()

    def mean_size(self) -> np.ndarray:
        """Expected VMs per batch, per class."""
        out = []
        for c, p1 in enumerate(self.p_single):
            pmf = np.diff(self._multi_cdf(c), prepend=0.0)
            out.append(p1 + (1 - p1) * float((pmf * np.arange(2, 2 + len(pmf))).sum()))
        return np.asarray(out)

    def sample(self, vcpus: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Batch sizes for batches of these flavors at uniform draws ``u`` in [0, 1)."""
        cls = self.classify(vcpus)
        size = np.ones(len(u), dtype=np.int64)
        for c, p1 in enumerate(self.p_single):  # a loop over classes, not VMs
            multi = (cls == c) & (u >= p1)
            if multi.any():
                v = (u[multi] - p1) / (1 - p1)
                size[multi] = 2 + np.searchsorted(self._multi_cdf(c), v, side="right")
        return size


# Batches of Huawei-East-1: key = h[["at", "cpu", "mem"]]; a batch starts where the key changes.
# Singles per class 1 | 2-4 | 5-16 | 17+: 78.9% / 93.3% / 96.1% / 67.6% of batches; largest
# batch 46 / 38 / 21 / 34; the shared histogram counts batches of 2, 3, ... 46 VMs.
HUAWEI_BATCHES = BatchModel(
    class_bounds=(1, 4, 16),
    p_single=(0.789, 0.933, 0.961, 0.676),
    max_size=(46, 38, 21, 34),
    size_weights=(
        3405, 1386, 833, 725, 559, 435, 323, 251, 274, 198, 148, 151, 145, 147, 141, 113, 117,
        120, 173, 27, 22, 16, 16, 23, 14, 24, 19, 12, 15, 8, 11, 10, 3, 8, 4, 3, 3, 1, 1, 1,
        2, 0, 1, 1, 1,
    ),
)  # fmt: skip
# Azure's file spreads arrivals evenly inside 5-minute bins, so it shows no batches.
NO_BATCHES = BatchModel(
    class_bounds=(1,), p_single=(1.0, 1.0), max_size=(2, 2), size_weights=(1.0,)
)

# Within a Huawei batch, log-lifetimes differ by sd 0.26 on average
# (median 0.06: most batches leave together, a few scatter).
HUAWEI_BATCH_LIFETIME_SIGMA = 0.26

# Headline statistics of the real traces, for documentation and tests (same commands as above;
# peak concurrency = max over time of live VMs, departures before arrivals at equal times).
HUAWEI_STATS = {
    "vms": 116_313, "days": 31.0, "arrivals_per_hour": 156.3, "share_1_vcpu": 0.7112,
    "share_mem_over_10_gib": 0.0605, "mean_lifetime_s": 17_192.0, "median_lifetime_s": 2_592.0,
    "peak_concurrency": 2_432, "share_in_batches": 0.44,
}  # fmt: skip
AZURE_STATS = {
    "vms": 259_159, "days": 3.82, "arrivals_per_hour": 2_827.0, "share_1_vcpu": 0.6195,
    "mean_lifetime_s": 8_537.0, "share_running_at_end": 0.055, "peak_concurrency": 20_547,
}  # fmt: skip

# A compute-optimised family for the multi-cluster scenario (made up, not measured): Huawei-East-1's
# vCPU distribution (h["cpu"].value_counts(normalize=True)) at 1 GiB per vCPU, the ratio of its
# 1-vCPU/1-GiB flavor (22% of all its VMs).
COMPUTE_FLAVORS: tuple[Flavor, ...] = (
    Flavor(1, 1.0, 0.7112), Flavor(2, 2.0, 0.1478), Flavor(4, 4.0, 0.0973),
    Flavor(8, 8.0, 0.0262), Flavor(12, 12.0, 0.0055), Flavor(16, 16.0, 0.0086),
    Flavor(32, 32.0, 0.0011), Flavor(64, 64.0, 0.0022),
)  # fmt: skip

# Off-ratio flavors for the adversarial injection: 16 GiB per vCPU, or 0.25, where the
# calibrated mixes have 0.75-4.
ADVERSARIAL_FLAVORS: tuple[Flavor, ...] = (
    Flavor(1, 16.0, 0.4), Flavor(2, 32.0, 0.2), Flavor(16, 4.0, 0.4),
)


# --------------------------------------------------------------------------------------------
# Configuration.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemporalShift:
    """The workload changes character at ``at_day``, as in the paper's month-long traces.

    Before the shift the mix is memory-heavy; after it, utilisation rises (more arrivals,
    longer lifetimes), so a policy trained on the first half meets a fuller cluster later.

    Attributes:
        at_day: Day (0-based, may be fractional) the second regime starts; ``None`` = mid-window.
        early_mem_tilt: Before the shift, each flavor's weight is multiplied by
            ``(GiB per vCPU) ** early_mem_tilt``; 2 makes 4 GiB/vCPU flavors 16x likelier
            relative to 1 GiB/vCPU ones (Huawei's mix: 2.1 -> 2.6 GiB per vCPU overall).
            0 leaves the mix alone.
        late_arrival_factor: Arrival rate multiplier after the shift, > 0.
        late_lifetime_factor: Lifetime multiplier for VMs arriving after the shift, > 0.
    """

    at_day: float | None = None
    early_mem_tilt: float = 2.0
    late_arrival_factor: float = 1.5
    late_lifetime_factor: float = 1.5

    def __post_init__(self) -> None:
        if self.at_day is not None:
            _check_num(self, "at_day", lo=0.0)
        _check_num(self, "early_mem_tilt")
        _check_num(self, "late_arrival_factor", lo=0.0, lo_open=True)
        _check_num(self, "late_lifetime_factor", lo=0.0, lo_open=True)


@dataclass(frozen=True)
class Cluster:
    """One cluster of a multi-cluster workload, with its own flavor mix.

    Attributes:
        name: Written in the trace's ``cluster`` column.
        share: Relative share of all VMs that go to this cluster, > 0.
        flavors: This cluster's flavor table; ``None`` = the config's ``flavors``.
        mem_tilt: Weights times ``(GiB per vCPU) ** mem_tilt``: > 0 memory-optimised,
            < 0 compute-optimised.
        size_tilt: Weights times ``vcpus ** size_tilt``: > 0 favours large VMs.
    """

    name: str
    share: float = 1.0
    flavors: tuple[Flavor, ...] | None = None
    mem_tilt: float = 0.0
    size_tilt: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(self, "name", self.name, "must be a non-empty string")
        _check_num(self, "share", lo=0.0, lo_open=True)
        if self.flavors is not None:
            object.__setattr__(self, "flavors", _coerce_flavors(self, "flavors", self.flavors))
        _check_num(self, "mem_tilt")
        _check_num(self, "size_tilt")


@dataclass(frozen=True)
class Adversarial:
    """From ``from_day`` on, a ``fraction`` of VMs get flavors unlike anything seen before.

    Attributes:
        from_day: First day (0-based) with injected VMs; 15 = the paper's test half (days 16+).
        fraction: Chance that a VM arriving from then on is replaced, in (0, 1].
        flavors: The off-ratio flavors injected, drawn by share.
    """

    from_day: float = 15.0
    fraction: float = 0.1
    flavors: tuple[Flavor, ...] = ADVERSARIAL_FLAVORS

    def __post_init__(self) -> None:
        _check_num(self, "from_day", lo=0.0)
        _check_num(self, "fraction", lo=0.0, lo_open=True, hi=1.0)
        object.__setattr__(self, "flavors", _coerce_flavors(self, "flavors", self.flavors))


# Guard against a typo that would ask for billions of VMs.
MAX_EXPECTED_VMS = 50_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic workload. Frozen; validated on construction.

    Build variants with :func:`dataclasses.replace`, e.g.
    ``replace(SCENARIOS["default"], days=7, seed=3)``. Errors are :class:`CaturError` naming
    the field and value.

    Attributes:
        name: Label recorded in ``df.attrs["source"]``.
        days: Window length in days (may be fractional), > 0.
        arrivals_per_hour: Mean VM arrivals per hour over the window, before any temporal
            shift. Huawei-East-1 had 156; the default scenario uses 40 (a quarter) so a
            month replays in seconds.
        peak_concurrency: If set, every lifetime is multiplied by one factor, found by a few
            secant steps, that makes the window's peak of live VMs land within 1% of this.
            This keeps a cluster as full as the real one at a fraction of the VM count. It is
            matched before any adversarial injection (which then changes the peak a little).
            A target below what lifetimes cannot shrink away (a batch of 40 VMs arrives in one
            second) gets the closest peak found. Exclusive with ``lifetime_scale``.
        lifetime_scale: Fixed multiplier on every lifetime, > 0.
        seed: Seed for all randomness, >= 0 (``generate(..., seed=)`` overrides it).
        flavors: Flavor table ((vcpus, mem_gib, share) rows); shares are per VM.
        hourly_profile: 24 non-negative arrival weights by hour of day (normalised to mean 1).
        warmup_days: Days of arrivals simulated before the window, >= 0. VMs still alive at 0
            start the trace at ``arrival_s = 0`` (in their original order), so the window
            opens on a cluster in its steady state instead of an empty one.
        daily_sigma: Sd of the log of each day's arrival factor, >= 0; 0 = every day alike.
        hourly_sigma: Sd of the log of each hour's burst factor, >= 0.
        hourly_corr: Lag-1 correlation of the hourly burst factors, in [0, 0.99]. Day and
            hour factors together are normalised to mean 1 over the simulated span.
        lifetimes: Lifetime quantile table per size class.
        batches: Batch-size model per size class.
        batch_lifetime_sigma: Sd of the per-VM log-normal jitter around the batch lifetime,
            >= 0 (mean-preserving).
        temporal_shift: Optional :class:`TemporalShift`.
        clusters: Optional :class:`Cluster` list; when given, a ``cluster`` column is added.
        adversarial: Optional :class:`Adversarial` injection.
    """

    name: str = "custom"
    days: float = 31.0
    arrivals_per_hour: float = 40.0
    peak_concurrency: int | None = None
    lifetime_scale: float = 1.0
    seed: int = 0
    flavors: tuple[Flavor, ...] = HUAWEI_FLAVORS
    hourly_profile: tuple[float, ...] = HUAWEI_HOURLY
    warmup_days: float = 0.0
    daily_sigma: float = HUAWEI_DAILY_SIGMA
    hourly_sigma: float = HUAWEI_HOURLY_SIGMA
    hourly_corr: float = HUAWEI_HOURLY_CORR
    lifetimes: LifetimeTable = HUAWEI_LIFETIMES
    batches: BatchModel = HUAWEI_BATCHES
    batch_lifetime_sigma: float = HUAWEI_BATCH_LIFETIME_SIGMA
    temporal_shift: TemporalShift | None = None
    clusters: tuple[Cluster, ...] = ()
    adversarial: Adversarial | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(self, "name", self.name, "must be a non-empty string")
        _check_num(self, "days", lo=0.0, lo_open=True, hi=3660.0)
        _check_num(self, "arrivals_per_hour", lo=0.0, lo_open=True)
        _check_num(self, "lifetime_scale", lo=0.0, lo_open=True)
        if self.peak_concurrency is not None:
            if _bad_int(self.peak_concurrency) or self.peak_concurrency < 1:
                why = "must be a whole number >= 1"
                _fail(self, "peak_concurrency", self.peak_concurrency, why)
            if self.lifetime_scale != 1.0:
                why = "cannot be set with peak_concurrency"
                _fail(self, "lifetime_scale", self.lifetime_scale, why)
            object.__setattr__(self, "peak_concurrency", int(self.peak_concurrency))
        if _bad_int(self.seed) or self.seed < 0:
            _fail(self, "seed", self.seed, "must be a whole number >= 0")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "flavors", _coerce_flavors(self, "flavors", self.flavors))
        prof = _coerce_tuple(self, "hourly_profile", self.hourly_profile)
        if len(prof) != 24 or any(not _is_num(x) or x < 0 for x in prof) or sum(prof) <= 0:
            _fail(self, "hourly_profile", prof, "needs 24 non-negative weights with a positive sum")
        object.__setattr__(self, "hourly_profile", tuple(float(x) for x in prof))
        _check_num(self, "warmup_days", lo=0.0, hi=3660.0)
        _check_num(self, "daily_sigma", lo=0.0, hi=3.0)
        _check_num(self, "hourly_sigma", lo=0.0, hi=3.0)
        _check_num(self, "hourly_corr", lo=0.0, hi=0.99)
        _check_num(self, "batch_lifetime_sigma", lo=0.0, hi=3.0)
        for label, kind in (("lifetimes", LifetimeTable), ("batches", BatchModel)):
            if not isinstance(getattr(self, label), kind):
                _fail(self, label, getattr(self, label), f"must be a {kind.__name__}")
        for label, kind in (("temporal_shift", TemporalShift), ("adversarial", Adversarial)):
            value = getattr(self, label)
            if value is not None and not isinstance(value, kind):
                _fail(self, label, value, f"must be a {kind.__name__} or None")
        clusters = _coerce_tuple(self, "clusters", self.clusters)
        if any(not isinstance(c, Cluster) for c in clusters):
            _fail(self, "clusters", clusters, "must be Cluster objects")
        names = [c.name for c in clusters]
        if len(set(names)) != len(names):
            _fail(self, "clusters", names, "names must be distinct")
        object.__setattr__(self, "clusters", clusters)
        shift = self.temporal_shift
        if shift is not None and shift.at_day is not None and shift.at_day >= self.days:
            _fail(self, "temporal_shift.at_day", shift.at_day, f"must be < days ({self.days})")
        if self.adversarial is not None and self.adversarial.from_day >= self.days:
            why = f"must be < days ({self.days})"
            _fail(self, "adversarial.from_day", self.adversarial.from_day, why)
        late = shift.late_arrival_factor if shift is not None else 1.0
        span = self.days + self.warmup_days
        expected = self.arrivals_per_hour * span * 24 * max(1.0, late)
        if expected > MAX_EXPECTED_VMS:
            why = f"asks for ~{expected:,.0f} VMs over {span:g} days (limit {MAX_EXPECTED_VMS:,})"
            _fail(self, "arrivals_per_hour", self.arrivals_per_hour, why)

    @property
    def window_s(self) -> float:
        """Window length in seconds."""
        return float(self.days) * SECONDS_PER_DAY


# --------------------------------------------------------------------------------------------
# Scenarios.
# --------------------------------------------------------------------------------------------

# Every scenario is a month of ~30k VMs (a quarter of Huawei-East-1's rate) whose lifetimes are
# stretched so the cluster peaks at 2,000 live VMs, near Huawei-East-1's 2,432: a full cluster
# that replays in seconds. Two months of warm-up make the month start full and stay level.
_DEFAULT = SyntheticConfig(
    name="default", days=31.0, arrivals_per_hour=40.0, peak_concurrency=2000, warmup_days=62.0
)

SCENARIOS: dict[str, SyntheticConfig] = {
    # Huawei-East-1's flavor mix, daily cycle, batches and lifetime shape.
    "default": _DEFAULT,
    # Azure-2017's flavor mix, flat daily profile, lifetimes; no batches.
    "azure-like": replace(
        _DEFAULT, name="azure-like", flavors=AZURE_FLAVORS, hourly_profile=AZURE_HOURLY,
        daily_sigma=AZURE_DAILY_SIGMA, lifetimes=AZURE_LIFETIMES, batches=NO_BATCHES,
        batch_lifetime_sigma=0.0,
    ),
    # Days 0-14 memory-heavy; from day 15 (the paper's test half) 1.5x arrivals, 1.5x lifetimes.
    # A lower base rate keeps the month near 30k VMs.
    "temporal-shift": replace(
        _DEFAULT, name="temporal-shift", arrivals_per_hour=32.0,
        temporal_shift=TemporalShift(at_day=15.0),
    ),
    # Three clusters fed by one arrival stream, each with its own mix: Huawei's (2.1 GiB per
    # vCPU overall), Huawei's tilted to memory (3.0), and a larger-VM 1:1 compute family (1.0).
    "multi-cluster": replace(
        _DEFAULT, name="multi-cluster",
        clusters=(
            Cluster("general", share=0.5),
            Cluster("memory-optimized", share=0.25, mem_tilt=3.0),
            Cluster("compute-optimized", share=0.25, flavors=COMPUTE_FLAVORS, size_tilt=0.5),
        ),
    ),
    # The default workload; from day 15, 10% of VMs get off-ratio flavors.
    "adversarial": replace(
        _DEFAULT, name="adversarial", adversarial=Adversarial(from_day=15.0, fraction=0.1)
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Generation.
# --------------------------------------------------------------------------------------------


def _tilted(
    flavors: tuple[Flavor, ...], mem_tilt: float, size_tilt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vcpus, mem_gib, per-VM probability) of a flavor table after tilting."""
    vcpus = np.array([f.vcpus for f in flavors], dtype=np.int64)
    mem = np.array([f.mem_gib for f in flavors], dtype=float)
    w = np.array([f.share for f in flavors], dtype=float)
    w = w * (mem / vcpus) ** mem_tilt * vcpus.astype(float) ** size_tilt
    return vcpus, mem, w / w.sum()


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: the index of each ``u`` in a cumulative table (guarding round-off)."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def live_vms(arrival_s: np.ndarray, departure_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event times, sorted, and the number of live VMs just after each
    (:func:`catur.traces.events.running_total`: departures first at a tie)."""
    return running_total(arrival_s, departure_s)


def peak_concurrency(trace: pd.DataFrame) -> int:
    """The largest number of VMs alive at once in a canonical trace."""
    if len(trace) == 0:
        return 0
    _, live = live_vms(trace["arrival_s"].to_numpy(float), trace["departure_s"].to_numpy(float))
    return int(live.max())


def _clip_to_window(
    arrival: np.ndarray, departure: np.ndarray, end: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask of VMs alive inside [0, end), their arrivals clipped to 0, departures NaN past end."""
    keep = departure > 0
    dep = departure[keep]
    return keep, np.maximum(arrival[keep], 0.0), np.where(dep < end, dep, np.nan)


def _peak(arrival: np.ndarray, life: np.ndarray, scale: float, end: float) -> int:
    _, arr, dep = _clip_to_window(arrival, arrival + scale * life, end)
    return int(live_vms(arr, dep)[1].max()) if len(arr) else 0


def _scale_for_peak(arrival: np.ndarray, life: np.ndarray, end: float, target: int) -> float:
    """A lifetime factor whose peak lands within 1% of ``target`` (or the closest found).

    Peak concurrency rises monotonically with the factor, roughly as a power below 1 (long
    lifetimes hit the window's end), so secant steps on log-log axes converge in a few tries.
    """
    tried = [(1.0, _peak(arrival, life, 1.0, end))]
    scale = target / max(tried[0][1], 1)
    for _ in range(12):
        tried.append((scale, _peak(arrival, life, scale, end)))
        (k0, p0), (k1, p1) = tried[-2], tried[-1]
        if abs(p1 - target) <= 0.01 * target:
            break
        slope = 1.0
        if k1 != k0 and p0 > 0 and p1 > 0 and p1 != p0:
            slope = float(np.clip(math.log(p1 / p0) / math.log(k1 / k0), 0.2, 1.5))
        scale = k1 * float(np.clip((target / max(p1, 1)) ** (1 / slope), 0.125, 8.0))
    return min(tried, key=lambda kp: (abs(kp[1] - target), kp[0]))[0]


def resolve_scenario(scenario: str | SyntheticConfig) -> SyntheticConfig:
    """The config of a scenario name (a key of :data:`SCENARIOS`), or the config itself."""
    if isinstance(scenario, SyntheticConfig):
        return scenario
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise unknown_name("synthetic scenario", scenario, list(SCENARIOS))
        return SCENARIOS[scenario]
    raise CaturError(f"scenario must be a name or a SyntheticConfig, got {scenario!r}")


def generate(scenario: str | SyntheticConfig = "default", seed: int | None = None) -> pd.DataFrame:
    """A synthetic canonical trace for a named scenario (see :data:`SCENARIOS`) or a config.

    Args:
        scenario: A key of :data:`SCENARIOS` or a :class:`SyntheticConfig`.
        seed: Overrides the config's seed. Same config and seed give an identical frame.
    """
    config = resolve_scenario(scenario)
    if seed is not None:
        config = replace(config, seed=seed)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(8)]
    r_days, r_times, r_cluster, r_flavor, r_batch, r_life, r_jitter, r_adv = streams
    end = config.window_s
    shift = config.temporal_shift
    shift_s = math.inf
    if shift is not None:
        shift_s = (shift.at_day if shift.at_day is not None else config.days / 2) * SECONDS_PER_DAY
    late_rate = shift.late_arrival_factor if shift is not None else 1.0

    # Per (period, cluster): the flavor table as batch probabilities. A batch of flavor f
    # brings m(f) VMs on average, so P(batch is f) ~ p_vm(f) / m(f) keeps per-VM shares exact,
    # and the batch rate is the VM rate times E[1/m] = sum p_vm(f) / m(f).
    mean_batch = config.batches.mean_size()
    clusters = config.clusters or (Cluster("-", 1.0),)
    cl_share = np.array([c.share for c in clusters]) / sum(c.share for c in clusters)
    tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    batches_per_vm = np.zeros((2, len(clusters)))
    for period in (0, 1):
        early_tilt = shift.early_mem_tilt if (shift is not None and period == 0) else 0.0
        for k, cl in enumerate(clusters):
            mix = cl.flavors or config.flavors
            vc, mem, p = _tilted(mix, cl.mem_tilt + early_tilt, cl.size_tilt)
            pb = p / mean_batch[config.batches.classify(vc)]
            batches_per_vm[period, k] = pb.sum()
            tables[period, k] = (vc, mem, np.cumsum(pb) / pb.sum())
    rate_factor = batches_per_vm @ cl_share  # batches per VM, per period

    # 1. Batch arrival times: Poisson counts per hour, uniform within the hour.
    # With a warm-up the process starts before 0; VMs still alive at 0 are kept (below).
    origin = -config.warmup_days * SECONDS_PER_DAY
    n_hours = int(math.ceil((end - origin) / SECONDS_PER_HOUR - 1e-9))
    start = origin + np.arange(n_hours) * SECONDS_PER_HOUR
    width = np.minimum(SECONDS_PER_HOUR, end - start)
    hour = np.floor(start / SECONDS_PER_HOUR).astype(np.int64)  # hour on the trace clock
    day = np.floor(start / SECONDS_PER_DAY).astype(np.int64)
    day -= day[0]
    day_factor = np.exp(config.daily_sigma * r_days.standard_normal(int(day[-1]) + 1))
    # Bursts: an AR(1) log-factor per hour, so a busy hour tends to be followed by another.
    noise = r_days.standard_normal(n_hours)
    rho, burst = config.hourly_corr, np.empty(n_hours)
    burst[0] = noise[0]
    for i in range(1, n_hours):  # a loop over hours, not VMs
        burst[i] = rho * burst[i - 1] + math.sqrt(1 - rho * rho) * noise[i]
    busy = day_factor[day] * np.exp(config.hourly_sigma * burst)
    busy /= (busy * width).sum() / width.sum()  # mean 1 over the window
    profile = np.asarray(config.hourly_profile)
    profile = profile / profile.mean()
    late_frac = np.clip((start + width - shift_s) / width, 0.0, 1.0)
    vm_rate = config.arrivals_per_hour * profile[hour % 24] * busy
    per_vm = (1 - late_frac) * rate_factor[0] + late_frac * late_rate * rate_factor[1]
    batch_rate = vm_rate * per_vm
    counts = r_times.poisson(batch_rate * width / SECONDS_PER_HOUR)
    t_batch = np.repeat(start, counts) + r_times.random(counts.sum()) * np.repeat(width, counts)
    t_batch.sort()
    nb = len(t_batch)

    # 2. Cluster and flavor of each batch, from its period's tables.
    period = (t_batch >= shift_s).astype(np.int64)
    cluster = np.zeros(nb, dtype=np.int64)
    u_cluster, u_flavor = r_cluster.random(nb), r_flavor.random(nb)
    for p in (0, 1):
        in_p = period == p
        share_p = cl_share * batches_per_vm[p]
        cluster[in_p] = _pick(np.cumsum(share_p) / share_p.sum(), u_cluster[in_p])
    b_vcpus = np.empty(nb, dtype=np.int64)
    b_mem = np.empty(nb, dtype=float)
    for (p, k), (vc, mem, cdf) in tables.items():  # a loop over tables, not VMs
        sel = (period == p) & (cluster == k)
        idx = _pick(cdf, u_flavor[sel])
        b_vcpus[sel], b_mem[sel] = vc[idx], mem[idx]

    # 3. Batch sizes, then one row per VM.
    size = config.batches.sample(b_vcpus, r_batch.random(nb))
    arrival = np.repeat(t_batch, size)
    vcpus, mem_gib = np.repeat(b_vcpus, size), np.repeat(b_mem, size)
    vm_cluster = np.repeat(cluster, size)
    u_life = np.repeat(r_life.random(nb), size)
    n = len(arrival)

    # 4. Lifetimes: the batch's draw from the VM's class, mean-preserving jitter, drift, scale.
    sigma = config.batch_lifetime_sigma
    drift = np.exp(sigma * r_jitter.standard_normal(n) - sigma**2 / 2)
    if shift is not None:
        drift = np.where(arrival >= shift_s, drift * shift.late_lifetime_factor, drift)
    life = config.lifetimes.sample(vcpus, u_life) * drift
    scale = config.lifetime_scale
    if config.peak_concurrency is not None and n > 0:
        scale = _scale_for_peak(arrival, life, end, config.peak_concurrency)

    # 5. Adversarial injection, per VM, after the scale is fixed: the trace is its base trace
    # with some VMs' flavors (and so lifetime classes) swapped, nothing else moved. Drawn for
    # every VM so the stream never depends on the day.
    u_adv, u_adv_flavor = r_adv.random(n), r_adv.random(n)
    if config.adversarial is not None:
        adv = config.adversarial
        hit = (arrival >= adv.from_day * SECONDS_PER_DAY) & (u_adv < adv.fraction)
        avc, amem, ap = _tilted(adv.flavors, 0.0, 0.0)
        idx = _pick(np.cumsum(ap), u_adv_flavor[hit])
        vcpus[hit], mem_gib[hit] = avc[idx], amem[idx]
        life[hit] = config.lifetimes.sample(vcpus[hit], u_life[hit]) * drift[hit]
    # Drop warm-up VMs gone by 0; the rest start at 0, as if already running when the window
    # opens. Departures at or past the end become NaN: still running when the window closes.
    keep, arrival, departure = _clip_to_window(arrival, arrival + scale * life, end)
    vcpus, mem_gib, vm_cluster = vcpus[keep], mem_gib[keep], vm_cluster[keep]
    n = len(arrival)

    frame = {
        "vm_id": np.arange(n, dtype=np.int64),
        "arrival_s": arrival,
        "departure_s": departure,
        "vcpus": vcpus,
        "mem_gib": mem_gib,
    }
    if config.clusters:
        names = np.array([c.name for c in clusters], dtype=object)
        frame["cluster"] = pd.array(names[vm_cluster], dtype="string")
    trace = pd.DataFrame(frame)
    trace.attrs.update(
        source=f"synthetic:{config.name}", seed=config.seed, window_s=end, lifetime_scale=scale
    )
    return trace


__all__ = [
    "ADVERSARIAL_FLAVORS", "AZURE_FLAVORS", "AZURE_LIFETIMES", "AZURE_STATS", "Adversarial",
    "BatchModel", "COMPUTE_FLAVORS", "Cluster", "Flavor", "HUAWEI_BATCHES", "HUAWEI_FLAVORS",
    "HUAWEI_LIFETIMES", "HUAWEI_STATS", "LifetimeTable", "SCENARIOS", "SyntheticConfig",
    "TemporalShift", "generate", "live_vms", "peak_concurrency",
]  # fmt: skip


def random_trace(seed: int, n: int = 300, days: float = 3.0, mean_life_days: float = 0.7) -> pd.DataFrame:
    """A small seeded canonical trace for tests and benchmarks: ``n`` VMs over ``days`` days,
    mixed sizes, alpha weights, exponential lifetimes, 10% still running at the end."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, days * SECONDS_PER_DAY, n))
    departure = arrival + rng.exponential(mean_life_days * SECONDS_PER_DAY, n)
    departure[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "vm_id": np.arange(n),
            "arrival_s": arrival,
            "departure_s": departure,
            "vcpus": rng.choice([1, 2, 4, 8, 16, 32], n, p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05]),
            "mem_gib": rng.choice([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], n),
            "alpha": rng.choice([0.5, 1.0, 2.0], n),
        }
    )
