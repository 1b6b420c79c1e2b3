"""Exact, mergeable sums and percentiles: the same figure from one array or many batches.

:func:`catur.metrics.summarize` turns per-VM defects into the paper's headline figures (mean
defect, mean at placement, p99, ticket ratio, anomaly count). Evaluating a 100M-VM trace
cannot hold 100M defects per policy in memory, so the figures must be folded batch by batch;
and a streamed evaluation should give *the same numbers*, bit for bit, as evaluating the same
VMs at once. Two small tools make every figure exact whatever the batching:

* :class:`ExactSum` — a float64 sum with no rounding until the end. Each value is split into
  an integer mantissa and a binary exponent (``numpy.frexp``), and integer mantissas are added
  per exponent (``numpy.bincount``, whose float64 partial sums stay exact because each batch's
  per-exponent total is kept below 2**53). :meth:`ExactSum.value` converts the exact total to
  the nearest float64, so it equals :func:`math.fsum` over all values, in any order and any
  batching. Means are that correctly rounded sum divided by the count.
* :class:`TopValues` — the largest ``k`` values seen, enough for an exact high percentile.
  The 99th percentile of ``n`` values (numpy's default "linear" method) needs only the order
  statistics at ``floor(0.99 (n - 1))`` and the next one, i.e. the top ``n - floor(0.99 (n -
  1))`` values, about 1% of ``n``. That count never decreases as ``n`` grows, so keeping the
  top count for an *upper bound* on ``n`` (the trace's row count) is always enough; 100M VMs
  need 1M values (8 MB) per policy. :func:`percentile_from_top` then interpolates exactly as
  :func:`numpy.percentile` does (tests compare them on many generated arrays).

:class:`catur.metrics.SummaryAccumulator` combines them into a
:class:`~catur.metrics.Summary`; :func:`catur.metrics.summarize` is its one-batch case, so the
in-memory and the streamed paths share one piece of code. This module knows nothing about
defects: it is plain arithmetic, imported by :mod:`catur.metrics`, never the other way.
"""

from __future__ import annotations

import math

import numpy as np

from catur.errors import CaturError

# numpy.frexp exponents of finite float64 values lie in [-1073, 1024]; one bin each.
_EXP_MIN = -1073
_EXP_BINS = 1024 - _EXP_MIN + 1
_MANTISSA_BITS = 53  # frexp mantissa m in [0.5, 1): m * 2**53 is an exact integer
_LOW_BITS = 26  # mantissas are added as (high, low) halves so per-bin sums stay below 2**53
_CHUNK = 1 << 24  # values per bincount: |high| < 2**27, so a chunk's sum stays below 2**51
_MAX_COUNT = 1 << 36  # int64 per-exponent totals stay exact up to 2**36 values of |high| < 2**27


class ExactSum:
    """The exact sum of float64 values, added in any order and batching, rounded once.

    >>> s = ExactSum(); s.add(np.array([1e16, 1.0, -1e16])); s.value()
    1.0
    """

    def __init__(self) -> None:
        self._high = np.zeros(_EXP_BINS, dtype=np.int64)
        self._low = np.zeros(_EXP_BINS, dtype=np.int64)
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        """Add every value of ``values`` (any shape; must be finite)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(x).all():
            raise CaturError("exact sum: values must be finite (got NaN or infinity)")
        self.count += x.size
        if self.count > _MAX_COUNT:
            raise CaturError(f"exact sum: more than {_MAX_COUNT:,} values would overflow its counters")
        x = x[x != 0]  # most defects are exactly 0, and zeros add nothing
        for start in range(0, x.size, _CHUNK):
            mantissa, exponent = np.frexp(x[start : start + _CHUNK])
            whole = (mantissa * float(1 << _MANTISSA_BITS)).astype(np.int64)
            high = whole >> _LOW_BITS  # arithmetic shift: floor, so low is in [0, 2**26)
            low = whole - (high << _LOW_BITS)
            where = exponent - _EXP_MIN
            # float64 bincount is exact here: every partial sum is an integer below 2**53.
            self._high += np.bincount(where, weights=high, minlength=_EXP_BINS).astype(np.int64)
            self._low += np.bincount(where, weights=low, minlength=_EXP_BINS).astype(np.int64)

    def merge(self, other: "ExactSum") -> None:
        """Add another sum's values to this one."""
        self._high += other._high
        self._low += other._low
        self.count += other.count

    def value(self) -> float:
        """The exact sum rounded once to float64 (equals ``math.fsum`` of the values)."""
        total = 0
        for b in np.flatnonzero(self._high | self._low).tolist():
            total += ((int(self._high[b]) << _LOW_BITS) + int(self._low[b])) << b
        # Python's int / int is correctly rounded, so this is the one rounding.
        return total / (1 << (_MANTISSA_BITS - _EXP_MIN))


def top_needed(n: int, q: float = 99.0) -> int:
    """How many of the largest of ``n`` values numpy's linear ``q``-th percentile reads."""
    if n <= 0:
        return 0
    virtual = (n - 1) * (np.float64(q) / 100)
    if virtual >= n - 1:
        return 1
    return n - int(math.floor(virtual))


def percentile_from_top(top: np.ndarray, n: int, q: float = 99.0) -> float:
    """``numpy.percentile(values, q)`` from only the largest values and the count ``n``.

    ``top`` must hold at least :func:`top_needed` ``(n, q)`` of the largest values (any
    order). The arithmetic is numpy's "linear" method step by step (virtual index
    ``(n - 1) q / 100``, its floor, and numpy's two-sided interpolation), so the result is
    identical, not just close.
    """
    need = top_needed(n, q)
    if need == 0:
        raise CaturError("percentile of no values")
    if top.size < need:
        raise CaturError(f"percentile: needs the top {need} of {n} values, has {top.size}")
    desc = -np.sort(-np.asarray(top, dtype=np.float64))[:need]  # largest first
    virtual = (n - 1) * (np.float64(q) / 100)
    if virtual >= n - 1:
        return float(desc[0])
    prev = int(math.floor(virtual))
    # Ascending position p is descending position n - 1 - p.
    a, b = desc[n - 1 - prev], desc[n - 2 - prev]
    gamma = virtual - np.float64(prev)
    diff = b - a
    if gamma >= 0.5:
        return float(b - diff * (1 - gamma))
    return float(a + diff * gamma)


class TopValues:
    """The ``k`` largest float64 values seen so far (unordered), in O(k) memory."""

    def __init__(self, k: int) -> None:
        if k < 0:
            raise CaturError(f"top values: k must be >= 0, got {k}")
        self.k = int(k)
        self._parts: list[np.ndarray] = []
        self._size = 0

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if self.k == 0 or x.size == 0:
            return
        if x.size > self.k:
            x = np.partition(x, x.size - self.k)[x.size - self.k :]
        self._parts.append(x.copy())
        self._size += x.size
        if self._size > 2 * self.k:  # compact: amortised O(1) per value, memory below 3k
            self._compact()

    def _compact(self) -> None:
        x = np.concatenate(self._parts) if self._parts else np.zeros(0)
        if x.size > self.k:
            x = np.partition(x, x.size - self.k)[x.size - self.k :]
        self._parts, self._size = [x], x.size

    def values(self) -> np.ndarray:
        self._compact()
        return self._parts[0]

    @property
    def held(self) -> int:
        """How many values are held now (at most 3k): the memory bound, for tests."""
        return self._size


__all__ = ["ExactSum", "TopValues", "percentile_from_top", "top_needed"]
