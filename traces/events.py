"""The order of a trace's events in time, and running totals over it.

Everything that walks a trace in time — host admission, replay, peak statistics, the
synthetic generator's sizing — uses these two functions, so they all agree on ties:

* :func:`event_order` (for replay and admission): at one instant, departures come first (a VM
  leaving frees room for one arriving that same second), then arrivals in trace order; a VM
  that leaves the very instant it arrives leaves right after its own arrival (it must be
  placed before it can be released).
* :func:`running_total` (for statistics): the live sum — of VMs, vCPUs or memory — after each
  event, departures first at a tie, so back-to-back VMs are never counted together and a VM
  with zero lifetime is never live.

A NaN departure means "still running at the end": that VM never leaves.
"""

from __future__ import annotations

import numpy as np


def event_order(arrival_s: np.ndarray, departure_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All events as ``(vm, is_arrival)`` arrays in time order."""
    n = arrival_s.shape[0]
    departs = ~np.isnan(departure_s)
    leaving = np.flatnonzero(departs)
    vm = np.concatenate([np.arange(n), leaving])
    time = np.concatenate([arrival_s, departure_s[departs]])
    is_arrival = np.concatenate([np.ones(n, dtype=bool), np.zeros(leaving.size, dtype=bool)])
    # Ordinary departures rank 0, arrivals 1; an instant departure ranks with arrivals and
    # sorts just after its own arrival (same vm, then `after` = 1).
    instant = departure_s[departs] == arrival_s[departs]
    rank = np.concatenate([np.ones(n, dtype=np.int8), instant.astype(np.int8)])
    after = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(leaving.size, dtype=np.int8)])
    order = np.lexsort((after, vm, rank, time))
    return vm[order], is_arrival[order]


def running_total(
    arrival_s: np.ndarray, departure_s: np.ndarray, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Event times, sorted, and the live total (VM count, or sum of ``weight``) after each."""
    leaves = ~np.isnan(departure_s)
    times = np.concatenate([departure_s[leaves], arrival_s])
    w = np.ones(arrival_s.shape[0], dtype=np.int64) if weight is None else np.asarray(weight)
    steps = np.concatenate([-w[leaves], w])
    # Departures are listed first, so a stable sort puts them first among equal times.
    order = np.argsort(times, kind="stable")
    return times[order], np.cumsum(steps[order])
