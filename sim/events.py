"""The order of a trace's events in time, shared by admission and replay.

At one instant, departures come first (a VM leaving frees room for one arriving that same
second), then arrivals in trace order; a VM that leaves the very instant it arrives leaves right after
its own arrival (it must be placed before it can be released), before later arrivals.
"""

from __future__ import annotations

import numpy as np


def event_order(arrival_s: np.ndarray, departure_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All events as ``(vm, is_arrival)`` arrays in time order; NaN departures never happen."""
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
