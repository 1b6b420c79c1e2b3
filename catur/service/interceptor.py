"""The server interceptor: every call's arrival, admission, body, status code and duration.

grpcio decides a few outcomes before any application code sees the call, and none of them
reaches an ordinary timing interceptor:

* past ``maximum_concurrent_rpcs`` it answers ``RESOURCE_EXHAUSTED`` itself;
* a body its deserializer cannot parse becomes ``INTERNAL: Exception deserializing request!``
  with an ERROR traceback in the log, one per call, so any client can flood the log;
* a unary handler whose client went away while the call waited for a worker thread is never
  called at all.

:class:`CallInterceptor` takes those decisions itself, so each one is answered as a client
expects and counted in ``grpc_server_handled_total{grpc_code=...}``:

* **admission** — the concurrency limit (:mod:`catur.service.admission`: adaptive, from the
  measured capacity) is decided here, with grpc's status code and message
  (``RESOURCE_EXHAUSTED``, "Concurrent RPC limit exceeded!"), and the refusal itself rides
  grpc's cheapest path (:class:`FastRefusals`); an admitted call then waits for a run slot in
  a line that knows its deadline (refused at once when it cannot be answered in time);
  while the server stops (:meth:`CallInterceptor.close`), new calls are answered
  ``UNAVAILABLE``, which clients retry on another replica. Health checks are exempt from all
  of it: a probe must hear NOT_SERVING, not a refusal;
* **strict unary calls** — a client stream of more than one message sent to a unary method is
  ``INVALID_ARGUMENT`` (grpc would silently use the first message); a body over
  :data:`MAX_REQUEST_BYTES` is ``RESOURCE_EXHAUSTED``;
* **never OK after the deadline** — an answer ready only after its call's deadline is not
  sent: the call ends ``DEADLINE_EXCEEDED``, as its client already saw it;
* **codes as the client sees them** — a call whose client has gone is counted
  ``DEADLINE_EXCEEDED`` when its deadline passed, ``CANCELLED`` otherwise (:func:`wire_code`);
* **malformed bodies** — the request deserializer never raises: bytes that do not parse become
  a :class:`Malformed` marker, answered ``INVALID_ARGUMENT`` with one rate-limited log line
  (:class:`RateLimitedLog`), no traceback;
* **timing from arrival** — ``intercept_service`` runs on grpc's serving thread the moment a
  call is matched, before it waits for a worker; ``grpc_server_handling_seconds`` runs from
  there to the answer, so queueing shows in it.

How: grpc calls a *unary-request* handler only once its single message has arrived, and skips
it when the client left first, so a count of calls in progress kept around it would leak. A
*stream-request* handler is always called (with an iterator), and the wire format of a unary
call and of a client stream of one message is the same. So each unary-unary handler is
re-registered as stream-unary: its behaviour takes the one message from the iterator and calls
the servicer's method unchanged. Refusals and health checks run on a small separate pool
(grpc's ``experimental_thread_pool`` attribute, which the health service's ``Watch`` uses
too), so an overloaded server still refuses at once and answers its probes.
Streaming RPCs pass through, except that health ``Watch``'s body is guarded the same way.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent import futures

import grpc

from catur.service.admission import CANNOT_MEET_DEADLINE, DEADLINE_PASSED, CallAdmission
from catur.service.telemetry import ServiceMetrics

log = logging.getLogger("catur.service")

CONCURRENCY_EXCEEDED = "Concurrent RPC limit exceeded!"  # grpcio's own message, kept for clients
STOPPING = "the server is stopping; retry on another replica"
OVERSIZE = "the request body is larger than the server reads"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRFC A6: when the client's next attempt may come
STOPPING_PUSHBACK_MS = "1000"
ANSWERED_TOO_LATE = "the answer was ready only after the call's deadline; it is not sent"
TOO_MANY_MESSAGES = "a unary method takes exactly one request message; this call streamed more"
REFUSALS = {
    CANNOT_MEET_DEADLINE: (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded: the calls waiting ahead would not leave time to answer "
        "within this call's deadline; retry later with backoff or on another replica",
    ),
    DEADLINE_PASSED: (grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed before it could start"),
}
UNKNOWN_METHOD = ("unary", "unknown", "unknown")  # labels of calls to methods nobody serves


class Malformed:
    """What the deserializer returns for bytes that do not parse (never ``None``: grpc takes
    ``None`` for a failure and answers INTERNAL)."""

    __slots__ = ("size", "error")

    def __init__(self, size: int, error: str) -> None:
        self.size = size
        self.error = error


class Oversize:
    """What the deserializer returns for a body over :data:`MAX_REQUEST_BYTES`."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


#: The largest request body answered; a larger one is answered RESOURCE_EXHAUSTED (grpc's
#: own default limit, 4 MiB). grpc itself reads up to :data:`GRPC_RECEIVE_LIMIT` so that the
#: refusal is this module's, counted exactly; past that grpc refuses on its own.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
GRPC_RECEIVE_LIMIT = 2 * MAX_REQUEST_BYTES


def safe_deserializer(deserialize):
    """Wrap a request deserializer so that it returns :class:`Malformed` instead of raising,
    and :class:`Oversize` for a body over :data:`MAX_REQUEST_BYTES`."""
    if deserialize is None:
        return None

    def parse(data: bytes):
        if len(data) > MAX_REQUEST_BYTES:
            return Oversize(len(data))
        try:
            return deserialize(data)
        except Exception as exc:  # a DecodeError, or anything a broken body provokes
            return Malformed(len(data), f"{type(exc).__name__}: {exc}"[:200])

    return parse


class _Verdict:
    """grpcio's ``concurrency_exceeded`` for one call: False unless the interceptor refuses it."""

    __slots__ = ("refuse", "read", "deadline")

    def __init__(self, deadline: float | None = None) -> None:
        self.refuse = False
        self.read = False
        self.deadline = deadline  # the call's deadline, time.time() seconds; None = none or unknown

    def __bool__(self) -> bool:
        self.read = True
        return self.refuse


class FastRefusals:
    """Passed to ``grpc.server`` as ``maximum_concurrent_rpcs``: lets the interceptor refuse a
    call over the limit the cheapest way grpcio has, on its serving thread with no worker thread
    and no Python handler (its own "Concurrent RPC limit exceeded!" path).

    For each call grpcio computes ``active_rpc_count >= maximum_concurrent_rpcs``, then runs the
    interceptor, then tests the result. The comparison lands in :meth:`__le__` (the reflected
    ``>=``), which returns a :class:`_Verdict` whose truth the interceptor sets in between. If a
    grpcio ever reads the verdict before the interceptor runs, :meth:`take` sees it was read and
    the interceptor refuses on its own (slower) path instead: never a wrong answer.

    Why it matters: at three times the capacity two calls in three are refused, and a refusal
    that costs a worker thread, a handler and an exception eats the capacity it protects.
    """

    def __init__(self) -> None:
        self._verdict: _Verdict | None = None

    def __le__(self, active_rpc_count: int) -> _Verdict:
        self._verdict = _Verdict(_arriving_deadline())
        return self._verdict

    def take(self) -> _Verdict | None:
        """This call's verdict, if grpcio has not read it yet."""
        verdict, self._verdict = self._verdict, None
        return verdict if verdict is not None and not verdict.read else None


def _arriving_deadline() -> float | None:
    """The deadline of the call grpcio is matching now (``time.time()`` seconds), read from its
    serving loop's ``event`` (two frames up: ``__le__``, then grpcio's
    ``_process_event_and_continue``); None when there is none or it cannot be read.

    grpc's Python API shows a call's deadline only once a worker thread runs its handler, and on
    a busy server calls can wait long before that; knowing it on arrival lets a call that is
    already dead, or cannot be answered in time, be refused on grpcio's cheap path instead of
    taking a thread, two reads and an exception first.
    """
    try:
        event = sys._getframe(2).f_locals.get("event")
        deadline = event.call_details.deadline
    except Exception:  # another grpcio layout: no early deadline, the handler still checks it
        return None
    return deadline if isinstance(deadline, float) and deadline < NO_DEADLINE else None


NO_DEADLINE = 1e15  # grpc's "infinite" deadline reads as ~9.2e18


class RateLimitedLog:
    """Logs at most one WARNING line per ``interval_s``; the next line says how many it skipped.

    Bad input from clients is worth a line (an agent out of step with the contract), but never
    one per request: the log must not be a channel any client can flood.
    """

    def __init__(self, interval_s: float = 1.0, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self.logger = logger
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._skipped = 0

    def warning(self, message: str, *args) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                self._skipped += 1
                return False
            skipped, self._skipped, self._last = self._skipped, 0, now
        if skipped:
            message += " (%d more like it not logged)"
            args = (*args, skipped)
        self.logger.warning(message, *args)
        return True


class CallInterceptor(grpc.ServerInterceptor):
    """Admits, counts and times every unary call (see the module docstring).

    Args:
        metrics: Where ``grpc_server_*`` and ``catur_rpcs_in_flight`` are recorded.
        admission: The concurrency limit and the run slots (:mod:`catur.service.admission`);
            ``None`` = no limit, every call runs at once.
        exempt_services: Services answered even past the limit or while stopping.
        control_workers: Threads of the pool that answers refusals and exempt calls.

    :attr:`fast_refusals` goes to ``grpc.server(maximum_concurrent_rpcs=...)`` (see
    :class:`FastRefusals`).
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        admission: CallAdmission | None = None,
        exempt_services: tuple[str, ...] = ("grpc.health.v1.Health",),
        control_workers: int = 2,
    ) -> None:
        self.metrics = metrics
        self.admission = admission
        self.fast_refusals = FastRefusals()
        self.exempt_services = frozenset(exempt_services)
        self.malformed_log = RateLimitedLog()
        self._control_pool = futures.ThreadPoolExecutor(control_workers, thread_name_prefix="catur-control")
        self._lock = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._last_activity = -float("inf")
        self._labels: dict[str, tuple] = {}
        self._started: dict[tuple, object] = {}
        self._children: dict[tuple, tuple] = {}
        metrics.in_flight.set_function(lambda: self._in_flight)
        if admission is not None:
            metrics.concurrency_limit.set_function(lambda: admission.limit)
            metrics.service_seconds.set_function(lambda: admission.service_s)
            metrics.capacity.set_function(lambda: admission.capacity)

    # --- stopping ---------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new non-exempt calls with UNAVAILABLE from now on; calls admitted go on."""
        with self._lock:
            self._closing = True

    def wait_idle(self, timeout: float, quiet: float = 0.1, settle: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds until no admitted call is running and no call has
        arrived or finished for ``quiet`` seconds; True if that happened in time. Once no
        call is running, the wait for the quiet spell lasts at most ``settle`` seconds (None =
        up to the timeout), then returns True: clients that retry UNAVAILABLE at the same
        address never fall quiet, and must not hold the stop to its grace.

        Why the quiet spell: when the port closes, grpc's core cancels (CANCELLED, which
        clients do not retry) any call it has received but not yet handed to the application.
        A client whose call was just answered often sends its next one at once; waiting until
        the calls stop coming lets each such call be refused UNAVAILABLE (retried elsewhere)
        instead. Health checks do not count (probes never stop coming).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        settled = None  # when the quiet wait must end
        with self._lock:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return not self._in_flight
                if self._in_flight:
                    self._lock.wait(deadline - now)
                    continue
                if settled is None:
                    settled = deadline if settle is None else min(deadline, now + settle)
                if now - self._last_activity >= quiet or now >= settled:
                    return True
                self._lock.wait(min(settled, self._last_activity + quiet) - now)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def shutdown(self) -> None:
        """Release the control pool (after the server has stopped)."""
        self._control_pool.shutdown(wait=False)

    # --- grpc hook --------------------------------------------------------------------------

    def _method_labels(self, full_method: str) -> tuple:
        labels = self._labels.get(full_method)
        if labels is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            labels = self._labels[full_method] = ("unary", service, method)
        return labels

    def _start(self, labels: tuple) -> None:
        child = self._started.get(labels)
        if child is None:
            child = self._started[labels] = self.metrics.started.labels(*labels)
        child.inc()

    def _count(self, labels: tuple, code: grpc.StatusCode | None, seconds: float | None = None) -> None:
        """Count one answer (and observe its time from arrival). The metric children are
        cached: ``labels()`` takes a lock and builds a key on every call."""
        key = (labels, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.handled.labels(*labels, code.name if code is not None else "OK"),
                self.metrics.handling.labels(*labels),
            )
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def intercept_service(self, continuation, handler_call_details):
        arrived = time.perf_counter()  # on grpc's serving thread, before any queueing
        verdict = self.fast_refusals.take()
        handler = continuation(handler_call_details)
        if handler is None:
            # grpc answers UNIMPLEMENTED; the method name is the client's choice, so it is not
            # used as a label (a client could mint any number of series).
            self._start(UNKNOWN_METHOD)
            self._count(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED)
            return None
        if handler.unary_stream is not None:
            return self._guard_stream(handler, self._method_labels(handler_call_details.method))
        if handler.unary_unary is None:
            return handler
        labels = self._method_labels(handler_call_details.method)
        self._start(labels)
        exempt = labels[1] in self.exempt_services
        refusal = None
        if not exempt:
            with self._lock:
                self._last_activity = time.monotonic()
                if self._closing:
                    refusal = (grpc.StatusCode.UNAVAILABLE, STOPPING)
                elif self.admission is not None and self.admission.over_limit(self._in_flight):
                    refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED, CONCURRENCY_EXCEEDED)
                elif verdict is not None and verdict.deadline is not None and self.admission is not None and (
                    early := self.admission.early_refusal(verdict.deadline - time.time(), self._in_flight)
                ):
                    refusal = (REFUSALS[early][0], CONCURRENCY_EXCEEDED)
                else:
                    self._in_flight += 1
        if refusal is not None and refusal[1] == CONCURRENCY_EXCEEDED and verdict is not None:
            # grpcio answers RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!", counted here;
            # a call refused for a deadline already past is counted DEADLINE_EXCEEDED, which
            # its client has already seen from its own timer.
            verdict.refuse = True
            self._count(labels, refusal[0], time.perf_counter() - arrived)
            return handler
        if refusal is not None:
            behavior = self._refuse(labels, arrived, *refusal)
        else:
            behavior = self._serve(handler.unary_unary, labels, arrived, counted=not exempt)
        if exempt or refusal is not None:
            behavior.experimental_thread_pool = self._control_pool
        return grpc.stream_unary_rpc_method_handler(
            behavior,
            request_deserializer=safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _reject_malformed(self, labels: tuple, request: Malformed, context) -> None:
        """Count, log (rate-limited) and answer INVALID_ARGUMENT (``abort`` raises)."""
        self.metrics.malformed.inc()
        self.malformed_log.warning(
            "malformed request body for %s from %s (%d bytes, %s); answered INVALID_ARGUMENT",
            "/".join(labels[1:]), context.peer(), request.size, request.error,
        )
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed request body: cannot parse {request.size} bytes as the request message ({request.error})",
        )

    def _guard_stream(self, handler, labels: tuple):
        """A unary-request, streaming-response handler (health ``Watch``): only its body is
        guarded, so a malformed one is INVALID_ARGUMENT, not INTERNAL with a traceback. (Such
        streams live as long as their client; they are not counted or timed.)"""
        inner = handler.unary_stream

        def watch(request, context, *args, **kwargs):
            if isinstance(request, Malformed):
                self._reject_malformed(labels, request, context)
            if isinstance(request, Oversize):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{OVERSIZE}: {request.size} bytes; at most {MAX_REQUEST_BYTES}")
            return inner(request, context, *args, **kwargs)

        for attribute in ("experimental_non_blocking", "experimental_thread_pool"):  # grpc reads them off the behaviour
            if hasattr(inner, attribute):
                setattr(watch, attribute, getattr(inner, attribute))
        return grpc.unary_stream_rpc_method_handler(
            watch, request_deserializer=safe_deserializer(handler.request_deserializer), response_serializer=handler.response_serializer
        )

    def _refuse(self, labels: tuple, arrived: float, code: grpc.StatusCode, details: str):
        stopping = code == grpc.StatusCode.UNAVAILABLE

        def refuse(request_iterator, context):
            self._count(labels, code, time.perf_counter() - arrived)
            if stopping:
                # Clients that retry (the shipped service config) wait this long before their
                # next attempt, instead of their backoff's 50 ms: the calls stop arriving, the
                # stop's quiet spell comes, and the port closes with no call on its way in
                # (grpc's core would cut such a call CANCELLED, which nobody retries).
                context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, STOPPING_PUSHBACK_MS),))
            context.abort(code, details)

        return refuse

    def _read_one(self, labels: tuple, request_iterator, context):
        """The call's one request message: INVALID_ARGUMENT if there is none, more than one (a
        client stream sent to a unary method) or it does not parse. A unary client sends its
        message and its half-close together, so the second read returns at once."""
        try:
            request = next(request_iterator)
        except StopIteration:
            # grpc's reader ends the same way when grpc itself refused the body (larger than
            # GRPC_RECEIVE_LIMIT): then it has already answered the client
            # RESOURCE_EXHAUSTED and ends the call, which a call that merely sent nothing
            # does not. Say the same, so the count matches what the client saw.
            ended = threading.Event()
            if not context.add_callback(ended.set) or ended.wait(0.5):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVERSIZE)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
        if isinstance(request, Malformed):
            self._reject_malformed(labels, request, context)
        if isinstance(request, Oversize):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{OVERSIZE}: {request.size} bytes; at most {MAX_REQUEST_BYTES}")
        try:
            next(request_iterator)
        except StopIteration:
            return request
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, TOO_MANY_MESSAGES)

    def _serve(self, inner, labels: tuple, arrived: float, counted: bool):
        admission = self.admission if counted else None

        def serve(request_iterator, context):
            code = grpc.StatusCode.UNKNOWN
            try:
                try:
                    request = self._read_one(labels, request_iterator, context)
                    if admission is not None:
                        refused = admission.acquire(context.time_remaining())
                        if refused is not None:
                            context.abort(*REFUSALS[refused])
                    held = time.perf_counter()
                    try:
                        response = inner(request, context)
                    finally:
                        if admission is not None:
                            admission.release(time.perf_counter() - held)
                    if (remaining := context.time_remaining()) is not None and remaining <= 0:
                        # Never OK after the deadline: the client has given up (its library
                        # reports DEADLINE_EXCEEDED); say so and count it so.
                        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, ANSWERED_TOO_LATE)
                except grpc.RpcError:  # the client went away (or its body was refused) while reading
                    code = wire_code(context, grpc.StatusCode.CANCELLED)
                    raise
                except BaseException:
                    code = wire_code(context, grpc.StatusCode.UNKNOWN)
                    raise
                code = wire_code(context, grpc.StatusCode.OK)
                return response
            finally:
                self._count(labels, code, time.perf_counter() - arrived)
                if counted:
                    with self._lock:
                        self._last_activity = time.monotonic()  # its client may send another
                        self._in_flight -= 1
                        if not self._in_flight:
                            self._lock.notify_all()

        return serve


def wire_code(context, default: grpc.StatusCode) -> grpc.StatusCode:
    """The status code the client receives: the one the handler set; else, for a call whose
    client is gone, DEADLINE_EXCEEDED when its deadline has passed (what the client's library
    reports) and CANCELLED when the client cancelled; else ``default``."""
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
    return default
