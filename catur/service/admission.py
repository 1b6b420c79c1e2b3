"""Load shedding that keeps goodput: a concurrency limit from measured capacity, and admission
that knows each call's deadline.

Under overload a server that queues everything spends its time on calls whose clients have
already given up: the queue grows until every call waits longer than its deadline, and goodput
(answers that arrive in time) collapses. :class:`~catur.service.admission.CallAdmission` keeps the line short and refuses
the rest at once, cheaply, with a code the client can act on:

* **the concurrency limit** — at most ``limit`` calls are in the server (running or waiting
  for a slot); the next is refused RESOURCE_EXHAUSTED before any work. With
  :attr:`AdmissionConfig.limit` unset the limit is *adaptive*: Little's law gives the number
  of calls that wait ``target_queue_s`` at the measured capacity,
  ``limit = slots + capacity x target_queue_s``. The capacity is *measured*, as answers per
  second over windows of ``window_s`` during which calls waited for a slot (the server was
  saturated), so it includes everything the process spends per call (grpc's own work, the
  refusals, the trace collector), which the time a call holds its slot does not. The limit
  follows it, bounded to ``[min_limit, max_limit]``;
* **a guard against a collapsing limit** — a capacity measured while the process was starved
  of CPU (a busy neighbour, its own client on the same cores) is low, and the limit and the
  expected waits built on it would refuse calls the server could answer, which lowers the next
  measurement again. So the capacity never counts below ``min_capacity``, and the limit
  *probes upwards*: after a window in which calls were refused over the limit while the calls
  admitted waited at most ``target_queue_s`` on average (the line moved faster than the
  limit assumed), the limit grows by ``probe`` (10%) instead of following the capacity down;
  it falls back to Little's law after a window whose line waited longer than the target, or
  that refused nobody (a sawtooth under sustained overload, as in AIMD);
* **deadline-aware admission** — a call waits for one of ``slots`` run slots, first come first
  served. Before it waits, its expected wait is ``(calls ahead + 1) / capacity``; a call whose
  remaining deadline is shorter than that wait plus its own service time (a moving average of
  how long a call holds its slot) plus ``margin_s`` for the answer's way back cannot be
  answered in time and is refused
  RESOURCE_EXHAUSTED at once; a call whose deadline has already passed is answered
  DEADLINE_EXCEEDED. A call that waits past its deadline anyway (the estimate was low) gives
  up its place: DEADLINE_EXCEEDED, no work done.

Nothing here knows grpc: :class:`~catur.service.interceptor.CallInterceptor` counts the calls
in the server and asks :meth:`CallAdmission.over_limit` when one arrives, :meth:`CallAdmission.acquire`
once its body has been read, and :meth:`CallAdmission.release` when its work is done.
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


# One call decided at a time (``catur serve --workers``): a decision holds the GIL almost
# throughout, so a second deciding thread adds no throughput, and every extra one takes the GIL
# from grpc's serving thread, which then hands calls over late and lets them queue unseen in
# grpc's core until their deadlines pass (docs/results/serving.md, "The client on its own core").
DEFAULT_WORKERS = 1


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
        initial_capacity: Answers per second assumed before a saturated window was measured.
        window_s: Length of a capacity measurement window (seconds).
        smoothing: Weight of each new call in the service-time moving average.
        margin_s: Time kept for the answer's way back: a call is admitted only if its
            expected wait and service time end this long before its deadline.
        min_capacity: The least capacity (answers per second) ever assumed, whatever a
            starved window measured; ``None`` = a tenth of ``initial_capacity``, at most 50/s
            (50/s with the defaults).
        probe: How much the adaptive limit grows (a fraction, at least one call) after a
            window in which calls were refused over it while the line moved faster than
            ``target_queue_s``.
    """

    slots: int = DEFAULT_WORKERS
    limit: int | None = None
    target_queue_s: float = 0.2
    min_limit: int = 16
    max_limit: int = 512
    initial_service_s: float = 0.002
    initial_capacity: float = 500.0
    window_s: float = 0.5
    smoothing: float = 0.02
    margin_s: float = 0.05
    min_capacity: float | None = None
    probe: float = 0.1

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise CaturError(f"slots (workers) must be >= 1, got {self.slots}")
        if self.limit is not None and self.limit < 1:
            raise CaturError(f"the concurrency limit must be >= 1 (or adaptive), got {self.limit}")
        if not (self.target_queue_s > 0 and math.isfinite(self.target_queue_s)):
            raise CaturError(f"the target queueing delay must be > 0 seconds, got {self.target_queue_s}")
        if not 1 <= self.min_limit <= self.max_limit:
            raise CaturError(f"need 1 <= min_limit <= max_limit, got {self.min_limit} and {self.max_limit}")
        for name in ("initial_service_s", "initial_capacity", "window_s"):
            if not getattr(self, name) > 0:
                raise CaturError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_capacity is not None and not self.min_capacity > 0:
            raise CaturError(f"min_capacity must be > 0 calls per second, got {self.min_capacity}")
        if not 0 <= self.margin_s < 10:
            raise CaturError(f"margin_s must be in [0, 10) seconds, got {self.margin_s}")
        if not 0 < self.smoothing <= 1:
            raise CaturError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not 0 <= self.probe <= 1:
            raise CaturError(f"probe must be in [0, 1], got {self.probe}")

    @property
    def capacity_floor(self) -> float:
        """:attr:`min_capacity`, or its default."""
        return self.min_capacity if self.min_capacity is not None else min(50.0, self.initial_capacity / 10)

    @property
    def most_calls(self) -> int:
        """The most calls ever in the server at once (sizes grpc's thread pool)."""
        return self.limit if self.limit is not None else self.max_limit


def adaptive_limit(config: AdmissionConfig, capacity: float) -> int:
    """The concurrency limit at a measured ``capacity`` (answers per second): the slots plus
    the calls that wait ``target_queue_s`` at that rate."""
    queued = capacity * config.target_queue_s
    return int(min(config.max_limit, max(config.min_limit, config.slots + math.ceil(queued))))


class _Turn(threading.Event):
    """A call's place in line: set when the slot passes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = time.monotonic()


class CallAdmission:
    """The limit and the line of one server (thread-safe; see the module docstring)."""

    def __init__(self, config: AdmissionConfig = AdmissionConfig()) -> None:
        self.config = config
        self.service_s = config.initial_service_s
        self.capacity = max(config.initial_capacity, config.capacity_floor)
        self.limit = config.limit if config.limit is not None else adaptive_limit(config, self.capacity)
        self._lock = threading.Lock()
        self._running = 0  # holding a slot
        self._line: deque[_Turn] = deque()  # waiting for a slot, first come first served
        self._window_start = time.monotonic()
        self._window_done = 0  # answers in this window
        self._window_busy = False  # a call waited for a slot in this window
        self._window_full = False  # a call was refused over the limit in this window
        self._window_waited = 0.0  # seconds the calls admitted in this window waited in line
        self._window_admitted = 0

    @property
    def waiting(self) -> int:
        return len(self._line)

    def expected_wait(self, ahead: int) -> float:
        """Seconds a call with ``ahead`` calls in line before it waits for a slot."""
        return (ahead + 1) / self.capacity

    def over_limit(self, in_server: int) -> bool:
        """Whether a call arriving with ``in_server`` calls already in the server is refused."""
        if in_server >= self.limit:
            self._window_full = True  # a plain store: no lock on the refusal path
            return True
        return False

    def early_refusal(self, remaining_s: float, in_server: int) -> str | None:
        """On arrival, before the call takes a thread: None to admit it, else why not (its
        deadline has passed, or the calls already in the server leave it no time)."""
        if remaining_s <= 0:
            return DEADLINE_PASSED
        ahead = max(0, in_server - self.config.slots)
        if remaining_s < (self.expected_wait(ahead) if in_server >= self.config.slots else 0.0) + self.service_s + self.config.margin_s:
            return CANNOT_MEET_DEADLINE
        return None

    def acquire(self, remaining_s: float | None) -> str | None:
        """Wait for a run slot; None = got one (call :meth:`release` after the work), else why
        the call was refused (``remaining_s``: what is left of its deadline, None = none)."""
        with self._lock:
            if remaining_s is not None and remaining_s <= 0:
                return DEADLINE_PASSED
            if self._running < self.config.slots and not self._line:
                self._running += 1
                self._window_admitted += 1
                return None
            if remaining_s is not None and remaining_s < self.expected_wait(len(self._line)) + self.service_s + self.config.margin_s:
                return CANNOT_MEET_DEADLINE
            turn = _Turn()
            self._line.append(turn)
            self._window_busy = True
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
        now = time.monotonic()
        with self._lock:
            self.service_s += self.config.smoothing * (max(held_s, 0.0) - self.service_s)
            self._window_done += 1
            if self._line:
                turn = self._line.popleft()
                self._window_waited += now - turn.queued
                self._window_admitted += 1
                turn.set()  # the slot passes to the next in line
            else:
                self._running -= 1
            elapsed = now - self._window_start
            if elapsed >= self.config.window_s:
                self._measure(self._window_done / elapsed)
                self._window_start, self._window_done, self._window_busy = now, 0, bool(self._line)
                self._window_full, self._window_waited, self._window_admitted = False, 0.0, 0

    def _measure(self, rate: float) -> None:
        """A window's answer rate: the capacity when calls waited (saturated); when none did,
        only a floor under it (the server could have done more). Then the adaptive limit:
        Little's law at that capacity, or a probe above it (see the module docstring)."""
        config = self.config
        if self._window_busy:
            self.capacity += 0.5 * (rate - self.capacity)  # halfway: a few windows settle it
        else:
            self.capacity = max(self.capacity, rate)
        self.capacity = max(self.capacity, config.capacity_floor)
        if config.limit is not None:
            return
        littles = adaptive_limit(config, self.capacity)
        mean_wait = self._window_waited / self._window_admitted if self._window_admitted else 0.0
        if self._window_full and mean_wait <= config.target_queue_s:
            # Calls were refused while the line moved faster than the target: the capacity
            # is underestimated (measured while starved, say). Probe upwards; a window whose
            # line waits longer than the target, or refuses nobody, returns to Little's law.
            self.limit = min(config.max_limit, max(littles, self.limit + max(1, math.ceil(self.limit * config.probe))))
        else:
            self.limit = littles
