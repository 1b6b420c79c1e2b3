"""Building and stopping the gRPC server: the placement service, health, reflection, TLS.

:func:`create_server` is what tests and ``catur serve`` call::

    service = Service(model="default", shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service)   # port 0: the OS picks one
    ...
    service.shutdown(server, grace=5.0, drain=2.0)

The server carries three services: ``catur.v1.Placement``, the standard health service
(``grpc.health.v1.Health``: ``Check``, ``Watch`` and ``List``; ``""`` and ``catur.v1.Placement``
report SERVING until shutdown begins) and server reflection under ``grpc.reflection.v1`` and
``v1alpha`` (listing those services, so ``grpcurl``-style tools can discover the contract). Every unary RPC goes through
:class:`~catur.service.interceptor.CallInterceptor`, which admits, counts and times it.

Stopping (:meth:`Service.shutdown`) has three phases, so that neither a load balancer nor a
client sees a call cut off:

1. **drain** (``drain`` seconds): health reports NOT_SERVING while every call is still
   answered, so load balancers and ``grpc`` health-checking clients move traffic away;
2. **refuse**: new calls are answered UNAVAILABLE (retried by clients on another replica;
   a retry pushback makes retrying clients pause) while the calls admitted so far finish, for up to ``grace`` seconds; open health ``Watch``
   streams end with OK after their NOT_SERVING (:meth:`HealthService.end_watches`), so none
   holds the stop or is cut off by the closing port;
3. **close**: the port closes; a call still running when the grace ends is cancelled. Then
   the trace collector writes what it holds.

``SO_REUSEPORT`` is turned off, so binding a port another process already serves fails
instead of silently sharing it, unless ``reuse_port`` asks for it: then several processes
serve one port (``catur serve --processes N`` or ``--reuse-port``,
:mod:`catur.service.processes`) and the kernel spreads the connections over them.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from catur.errors import CaturError
from catur.service import DEFAULT_LISTEN
from catur.shield import ShieldConfig
from catur.v1 import placement_pb2_grpc as pb_grpc

from catur.service.collector import CollectorConfig, TraceCollector
from catur.service.serving import ModelHolder
from catur.service.servicer import DEFAULT_MAX_BATCH, DEFAULT_MAX_HOSTS, SERVICE_NAME, PlacementServicer
from catur.service.admission import DEFAULT_WORKERS, AdmissionConfig, CallAdmission
from catur.service.interceptor import GRPC_RECEIVE_LIMIT, CallInterceptor
from catur.service.telemetry import ServiceMetrics

log = logging.getLogger("catur.service")

DEFAULT_MAX_CONCURRENT_RPCS = None  # adaptive: see catur.service.admission
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# grpcio-reflection serves only v1alpha; v1's messages are the same on the wire, so the same
# servicer answers under v1's names too (grpcurl and others try v1 first).
REFLECTION_V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
MAX_HEALTH_LIST = 100
# Channel arguments create_server sets itself (a second value would be ambiguous).
SERVER_SET_OPTIONS = ("grpc.so_reuseport", "grpc.max_receive_message_length")
# Before the port closes, the stop waits until no call has arrived for this long (at most half
# the grace): see CallInterceptor.wait_idle. Half a second covers a client that builds its
# next request after an answer on a busy machine.
QUIET_S = 0.5
# ... but for at most this long once the admitted calls are done: clients that retry
# UNAVAILABLE at the same address never fall quiet (their calls are refused until the port
# closes, and then they fail to connect: UNAVAILABLE again, which they retry elsewhere).
SETTLE_S = 1.0


class HealthService(health.HealthServicer):
    """grpcio-health-checking's servicer (``Check``, ``Watch``) plus ``List``, which the current
    ``grpc.health.v1`` proto defines and the installed servicer leaves UNIMPLEMENTED.

    ``List`` answers a snapshot of every service whose status was set, as ``Check`` would
    answer each; past :data:`MAX_HEALTH_LIST` services it answers RESOURCE_EXHAUSTED, as the
    proto asks.
    """

    def __init__(self) -> None:
        super().__init__()
        self._names: set[str] = {""}
        self._ended = False

    def end_watches(self) -> None:
        """End every open ``Watch`` stream with OK after the status it last sent (NOT_SERVING
        once a stop began), and end any later ``Watch`` right after its first answer. Called
        when a stop starts refusing calls, so no stream holds the stop until the grace ends
        or is cut off by the closing port (which clients see as an error)."""
        with self._lock:
            self._ended = True
            callbacks = [cb for group in self._send_response_callbacks.values() for cb in group]
            for group in self._send_response_callbacks.values():
                group.clear()
        for send in callbacks:
            send(None)  # None = end the stream with OK (grpc's non-blocking streaming)

    def Watch(self, request, context, send_response_callback=None):
        result = super().Watch(request, context, send_response_callback)
        if send_response_callback is not None:
            with self._lock:
                ended = self._ended
                if ended:
                    self._send_response_callbacks.get(request.service, set()).discard(send_response_callback)
            if ended:
                send_response_callback(None)
        return result

    def _on_close_callback(self, send_response_callback, service):
        # The parent's callback removes the stream's entry with set.remove (which raises for a
        # stream end_watches() took out) and ends it again (a second status: an error). A
        # stream already ended is left alone.
        def callback():
            with self._lock:
                group = self._send_response_callbacks.get(service, set())
                open_ = send_response_callback in group
                group.discard(send_response_callback)
            if open_:
                send_response_callback(None)

        return callback

    def set(self, service: str, status) -> None:
        with self._lock:  # the parent's lock (an RLock): names and statuses change together
            self._names.add(service)
            super().set(service, status)

    def List(self, request, context):
        with self._lock:
            names = sorted(self._names)
            if len(names) > MAX_HEALTH_LIST:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{len(names)} services; at most {MAX_HEALTH_LIST} are listed")
            statuses = {name: self.Check(health_pb2.HealthCheckRequest(service=name), context) for name in names}
        return health_pb2.HealthListResponse(statuses=statuses)


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CaturError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc


@dataclass(frozen=True)
class TLSConfig:
    """Server TLS: PEM certificate chain and key; with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        cert = _read(self.cert_file, "TLS certificate")
        key = _read(self.key_file, "TLS key")
        client_ca = _read(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


class Service:
    """Everything one server runs: the model holder, the servicer, health, metrics.

    Args:
        model: What to serve (see :class:`~catur.service.serving.ModelHolder`): ``None``/"none"
            for greedy, "auto", "default", a model directory or a registry directory.
        shield: Shield settings (default: depth 1, width 5%); ``None`` or depth 0 turns it off.
        use_gate: Use the model's uncertainty gate.
        metrics: A :class:`ServiceMetrics` (a fresh registry by default).
        max_hosts: Most host_id windows kept by the shield.
        max_batch: Most items per PlaceBatch call.
        collect: Trace collection settings (None = off): answered placements and departure
            notices are recorded under ``collect.directory`` (:mod:`catur.service.collector`).
        collector_hook: Test hook passed to the collector (``before_write``).
    """

    def __init__(
        self,
        model: str | None = None,
        shield: ShieldConfig | None = ShieldConfig(),
        use_gate: bool = True,
        metrics: ServiceMetrics | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        max_batch: int = DEFAULT_MAX_BATCH,
        collect: CollectorConfig | None = None,
        collector_hook=None,
    ) -> None:
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self.models = ModelHolder(model, shield, use_gate, self.metrics)
        self.collector = (
            TraceCollector(collect, self.metrics.registry, before_write=collector_hook) if collect is not None else None
        )
        self.servicer = PlacementServicer(
            self.models, self.metrics, max_hosts=max_hosts, max_batch=max_batch, collector=self.collector
        )
        self.health = HealthService()
        self.calls: CallInterceptor | None = None  # set by create_server
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start_watch(self, interval_s: float) -> None:
        """Poll the model's files every ``interval_s`` seconds and reload on change (0 = off)."""
        if self._watcher is None:
            self._watcher = self.models.watch(interval_s, self._stop_watch)

    def shutdown(
        self,
        server: grpc.Server,
        grace: float = 5.0,
        drain: float = 0.0,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """Graceful stop in three phases (see the module docstring): ``drain`` seconds of
        NOT_SERVING while answering, then up to ``grace`` seconds for the calls admitted to
        finish while new ones are refused UNAVAILABLE, then the port closes and the trace
        collector writes what it holds and finishes its file.

        ``wait(seconds)`` sleeps through the drain and returns True if it was cut short (the
        serve command passes one that returns at a second SIGTERM/SIGINT); default: sleep.
        """
        self.health.enter_graceful_shutdown()
        self._stop_watch.set()
        if drain > 0:
            log.info("draining: health NOT_SERVING for %.1f s while still answering", drain)
            if wait is not None and wait(drain):
                log.info("second stop signal: drain cut short")
            elif wait is None:
                time.sleep(drain)
        started = time.monotonic()
        self.health.end_watches()
        if self.calls is not None:
            self.calls.close()
            if not self.calls.wait_idle(grace, quiet=min(QUIET_S, grace / 2), settle=min(SETTLE_S, grace / 2)):
                log.warning("%d RPCs still running after the %.1f s grace are cancelled", self.calls.in_flight, grace)
        server.stop(max(0.0, grace - (time.monotonic() - started))).wait()
        if self.calls is not None:
            self.calls.shutdown()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.collector is not None:
            self.collector.close()


class Signals:
    """Signals as a stream the main thread reads: the self-pipe, via :func:`signal.set_wakeup_fd`.

    The handlers only append the signal's number to a list (no lock, nothing that can wait);
    the interpreter's C-level handler also writes a byte into a socket, which wakes
    :meth:`next` from its ``select``. So nothing inside a handler can wait on a lock the
    interrupted main thread holds (the hang of a ``threading.Event.set()`` in a handler while
    the main thread sits in ``Event.wait``), and a full socket buffer loses no signal (the
    bytes only wake; the list is what counts).

        with Signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            while (signum := signals.next()) == signal.SIGHUP:
                reload()

    Only the main thread may use it (a rule of :mod:`signal`). On exit the previous handlers
    and wakeup fd are restored.
    """

    def __init__(self, *signums: int) -> None:
        self.signums = signums
        self._received: list[int] = []

    def __enter__(self) -> Signals:
        self._reader, self._writer = socket.socketpair()
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.signums}
        return self

    def _on_signal(self, signum: int, frame) -> None:
        self._received.append(signum)  # atomic; runs in the main thread between bytecodes

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def next(self, timeout: float | None = None) -> int | None:
        """The next signal received (in order), waiting up to ``timeout`` seconds (None =
        forever); None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._received:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            # A signal landing between the check above and select() has written its byte:
            # select returns at once.
            if select.select([self._reader], [], [], left)[0]:
                try:
                    while self._reader.recv(4096):
                        pass
                except BlockingIOError:
                    pass
        return self._received.pop(0)

    def wait_for_stop(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if a stop signal (anything but SIGHUP) cut it short."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            signum = self.next(left)
            if signum is not None and signum != signal.SIGHUP:
                return True
        return False


def add_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """Server reflection under ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``: one
    servicer (grpcio-reflection's), the v1 method registered by a generic handler with the
    v1alpha messages, which are the same on the wire."""
    servicer = reflection.ReflectionServicer(service_names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1_SERVICE_NAME, {"ServerReflectionInfo": v1}),))


def create_server(
    address: str = "127.0.0.1:0",
    service: Service | None = None,
    *,
    tls: TLSConfig | None = None,
    max_workers: int = DEFAULT_WORKERS,
    max_concurrent_rpcs: int | None = DEFAULT_MAX_CONCURRENT_RPCS,
    admission: AdmissionConfig | None = None,
    grpc_options: tuple[tuple[str, int | str], ...] = (),
    reuse_port: bool = False,
    **service_options,
) -> tuple[grpc.Server, int]:
    """Build and start a server on ``address`` (``HOST:PORT``; port 0 = any free port).

    ``service`` defaults to ``Service(**service_options)``. Returns the started server and the
    bound port. ``max_workers`` calls run at once; the others wait in line, and past the
    concurrency limit (``max_concurrent_rpcs``; ``None`` = adaptive, from the measured service
    time and a target queueing delay) the interceptor answers RESOURCE_EXHAUSTED ("Concurrent
    RPC limit exceeded!", as grpc would). ``admission`` sets all of it at once
    (:class:`~catur.service.admission.AdmissionConfig`; then ``max_workers`` and
    ``max_concurrent_rpcs`` must be left at their defaults). Health checks are not counted.
    ``grpc_options`` are extra grpc channel arguments for the server (``catur serve
    --grpc-arg``), e.g. ``(("grpc.max_concurrent_streams", 32),)``; the two the server sets
    itself (:data:`SERVER_SET_OPTIONS`) are refused. ``reuse_port`` lets other processes bind
    the same port (``SO_REUSEPORT``; off by default, so a port already served is an error).
    """
    for key, _ in grpc_options:
        if key in SERVER_SET_OPTIONS:
            raise CaturError(f"the grpc option {key} is set by the server itself; it cannot be overridden")
    if service is None:
        service = Service(**service_options)
    elif service_options:
        raise CaturError(f"give either a service or service options, not both: {sorted(service_options)}")
    if admission is None:
        admission = AdmissionConfig(slots=max_workers, limit=max_concurrent_rpcs)  # validates both
    elif max_workers != DEFAULT_WORKERS or max_concurrent_rpcs is not None:
        raise CaturError("give either admission or max_workers/max_concurrent_rpcs, not both")
    if service.calls is not None:
        raise CaturError("this service already has a server; build a new Service for another one")
    # grpc's own maximum_concurrent_rpcs refuses before any hook sees the call (uncounted):
    # the interceptor enforces the limit instead, with grpc's status code and message. Every
    # admitted call gets a thread at once (so it can read its deadline and be refused early);
    # only admission.slots of them run, the others wait in line (catur.service.admission).
    service.calls = CallInterceptor(service.metrics, CallAdmission(admission), exempt_services=(HEALTH_SERVICE_NAME,))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=admission.most_calls + 4, thread_name_prefix="catur-rpc"),
        interceptors=[service.calls],
        maximum_concurrent_rpcs=service.calls.fast_refusals,  # the interceptor decides: see FastRefusals
        options=[("grpc.so_reuseport", int(reuse_port)), ("grpc.max_receive_message_length", GRPC_RECEIVE_LIMIT), *grpc_options],
    )
    pb_grpc.add_PlacementServicer_to_server(service.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    add_reflection(server, (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME))
    try:
        port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise CaturError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise CaturError(f"cannot listen on {address} (address in use or not local?)")
    service.set_serving(True)
    server.start()
    log.info("serving %s on %s (port %d, %s)", SERVICE_NAME, address, port, "TLS" if tls else "plaintext")
    return server, port
