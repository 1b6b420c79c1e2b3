"""Building and stopping the gRPC server: the placement service, health, reflection, TLS.

:func:`create_server` is what tests and ``catur serve`` call::

    service = Service(model="default", shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service)   # port 0: the OS picks one
    ...
    service.shutdown(server, grace=5.0)

The server carries three services: ``catur.v1.Placement``, the standard health service
(``grpc.health.v1.Health``; ``""`` and ``catur.v1.Placement`` report SERVING until shutdown
begins) and server reflection (listing those services, so ``grpcurl``-style tools can
discover the contract). Every unary RPC goes through
:class:`~catur.service.telemetry.MetricsInterceptor`.

``SO_REUSEPORT`` is turned off, so binding a port another process already serves fails
instead of silently sharing it.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from catur.errors import CaturError
from catur.service import DEFAULT_LISTEN
from catur.shield import ShieldConfig
from catur.v1 import placement_pb2_grpc as pb_grpc

from catur.service.collector import CollectorConfig, TraceCollector
from catur.service.serving import ModelHolder
from catur.service.servicer import DEFAULT_MAX_BATCH, DEFAULT_MAX_HOSTS, SERVICE_NAME, PlacementServicer
from catur.service.telemetry import MetricsInterceptor, ServiceMetrics

log = logging.getLogger("catur.service")

DEFAULT_WORKERS = 8
DEFAULT_MAX_CONCURRENT_RPCS = 512
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


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
        self.health = health.HealthServicer()
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

    def shutdown(self, server: grpc.Server, grace: float = 5.0) -> None:
        """Graceful stop: health NOT_SERVING first (load balancers drain), then let RPCs in
        flight finish for up to ``grace`` seconds, refusing new ones; then the trace collector
        writes what it holds and finishes its file."""
        self.health.enter_graceful_shutdown()
        self._stop_watch.set()
        server.stop(grace).wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.collector is not None:
            self.collector.close()


def create_server(
    address: str = "127.0.0.1:0",
    service: Service | None = None,
    *,
    tls: TLSConfig | None = None,
    max_workers: int = DEFAULT_WORKERS,
    max_concurrent_rpcs: int | None = DEFAULT_MAX_CONCURRENT_RPCS,
    **service_options,
) -> tuple[grpc.Server, int]:
    """Build and start a server on ``address`` (``HOST:PORT``; port 0 = any free port).

    ``service`` defaults to ``Service(**service_options)``. Returns the started server and the
    bound port. Past ``max_concurrent_rpcs`` RPCs in progress, grpc answers RESOURCE_EXHAUSTED.
    """
    if service is None:
        service = Service(**service_options)
    elif service_options:
        raise CaturError(f"give either a service or service options, not both: {sorted(service_options)}")
    if max_workers < 1:
        raise CaturError(f"max_workers must be >= 1, got {max_workers}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="catur-rpc"),
        interceptors=[MetricsInterceptor(service.metrics)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.so_reuseport", 0)],
    )
    pb_grpc.add_PlacementServicer_to_server(service.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
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
