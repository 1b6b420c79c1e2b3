"""Load shedding that keeps goodput: a concurrency limit from measured capacity, and admission
that knows each call's deadline.

Under overload a server that queues everything spends its time on calls whose clients have
already given up: the queue grows until every call waits longer than its deadline, and goodput
(answers that arrive in time) collapses. :class:`Admission` keeps the queue short and refuses
the rest at once, cheaply, with a code the client can act on:

* **the concurrency limit** — at most ``limit`` calls are in the server (running or waiting
  for a slot); the next is refused RESOURCE_EXHAUSTED before any work. With
  :attr:`AdmissionConfig.limit` unset the limit is *adaptive*: Little's law gives the number
  of calls that queue for ``target_queue_s`` at the measured capacity,
  ``limit = slots + capacity x target_queue_s``, where ``capacity = slots / service_time`` and
  ``service_time`` is a moving average of how long a call holds its slot (it grows when the
  CPU is shared, so the capacity is the one really available). The limit follows the measured
  service time, bounded to ``[min_limit, max_limit]``;
* **deadline-aware admission** — a call waits for one of ``slots`` run slots, first come first
  served. Before it waits, the expected wait is ``(calls ahead + 1) x service_time / slots``;
  a call whose remaining deadline is shorter than that wait plus its own service time cannot
  be answered in time and is refused RESOURCE_EXHAUSTED at once, and a call whose deadline has
  already passed is answered DEADLINE_EXCEEDED. A call that waits past its deadline anyway (the
  estimate was low) gives up its place: DEADLINE_EXCEEDED, no work done.

Nothing here knows grpc: :class:`~catur.service.interceptor.CallInterceptor` counts the calls
in the server and asks :meth:`Admission.over_limit` when one arrives, :meth:`Admission.acquire`
once its body has been read, and :meth:`Admission.release` when its work is done.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from catur.errors import CaturError

#: Why a call was refused; the interceptor maps each to a grpc status code.
CANNOT_MEET_DEADLINE = "cannot_meet_deadline"  # RESOURCE_EXHAUSTED
DEADLINE_PASSED = "deadline_passed"  # DEADLINE_EXCEEDED


@dataclass(frozen=True)
class AdmissionConfig:
    """How many calls run and wait at once.

    Args:
        slots: Calls that run at once (``catur serve --workers``); the rest wait in line.
        limit: A fixed concurrency limit (calls running + waiting); ``None`` = adaptive, from
            the measured capacity and ``target_queue_s``.
        target_queue_s: The longest a call should wait in line at full load (adaptive limit).
        min_limit, max_limit: Bounds of the adaptive limit.
        initial_service_s: The service time assumed before any call has been measured.
        smoothing: Weight of each new measurement in the service-time moving average.
    """

    slots: int = 8
    limit: int | None = None
    target_queue_s: float = 0.2
    min_limit: int = 16
    max_limit: int = 512
    initial_service_s: float = 0.002
    smoothing: float = 0.02

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise CaturError(f"slots (workers) must be >= 1, got {self.slots}")
        if self.limit is not None and self.limit < 1:
            raise CaturError(f"the concurrency limit must be >= 1 (or adaptive), got {self.limit}")
        if not (self.target_queue_s > 0 and math.isfinite(self.target_queue_s)):
            raise CaturError(f"target queueing delay must be > 0 seconds, got {self.target_queue_s}")
        if not 1 <= self.min_limit <= self.max_limit:
            raise CaturError(f"need 1 <= min_limit <= max_limit, got {self.min_limit} and {self.max_limit}")
        if not self.initial_service_s > 0:
            raise CaturError(f"initial_service_s must be > 0, got {self.initial_service_s}")
        if not 0 < self.smoothing <= 1:
            raise CaturError(f"smoothing must be in (0, 1], got {self.smoothing}")

    @property
    def most_calls(self) -> int:
        """The most calls ever in the server at once (sizes grpc's thread pool)."""
        return self.limit if self.limit is not None else self.max_limit


def adaptive_limit(config: AdmissionConfig, service_s: float) -> int:
    """The concurrency limit for a measured ``service_s`` (seconds a call holds its slot):
    the slots plus the calls that wait ``target_queue_s`` at capacity ``slots / service_s``."""
    queued = config.slots * config.target_queue_s / max(service_s, 1e-6)
    return int(min(config.max_limit, max(config.min_limit, config.slots + math.ceil(queued))))


class Admission:
    """The limit and the line of one server (thread-safe; see the module docstring)."""

    def __init__(self, config: AdmissionConfig = AdmissionConfig()) -> None:
        self.config = config
        self.service_s = config.initial_service_s
        self.limit = config.limit if config.limit is not None else adaptive_limit(config, self.service_s)
        self._lock = threading.Lock()
        self._running = 0  # holding a slot
        self._line: deque[threading.Event] = deque()  # waiting for a slot, first come first served

    @property
    def waiting(self) -> int:
        return len(self._line)

    def expected_wait(self, ahead: int) -> float:
        """Seconds a call with ``ahead`` calls in line before it waits for a slot."""
        return (ahead + 1) * self.service_s / self.config.slots

    def over_limit(self, in_server: int) -> bool:
        """Whether a call arriving with ``in_server`` calls already in the server is refused."""
        return in_server >= self.limit

    def acquire(self, remaining_s: float | None) -> str | None:
        """Wait for a run slot; None = got one (call :meth:`release` after the work), else why
        the call was refused (``remaining_s``: what is left of its deadline, None = none)."""
        with self._lock:
            if remaining_s is not None and remaining_s <= 0:
                return DEADLINE_PASSED
            if self._running < self.config.slots and not self._line:
                self._running += 1
                return None
            if remaining_s is not None and remaining_s < self.expected_wait(len(self._line)) + self.service_s:
                return CANNOT_MEET_DEADLINE
            turn = threading.Event()
            self._line.append(turn)
        # release() hands the slot over by setting the event (the count stays with the slot).
        if turn.wait(None if remaining_s is None else remaining_s):
            return None
        with self._lock:
            if turn.is_set():  # handed over just as the wait timed out: keep it
                return None
            self._line.remove(turn)
        return DEADLINE_PASSED

    def release(self, held_s: float) -> None:
        """A call that held a slot for ``held_s`` seconds is done: measure, hand the slot on."""
        with self._lock:
            alpha = self.config.smoothing
            self.service_s += alpha * (max(held_s, 0.0) - self.service_s)
            if self.config.limit is None:
                self.limit = adaptive_limit(self.config, self.service_s)
            if self._line:
                self._line.popleft().set()  # the slot passes to the next in line
            else:
                self._running -= 1
