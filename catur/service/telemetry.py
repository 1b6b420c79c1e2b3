"""Prometheus metrics of the placement service (the interceptor that fills the ``grpc_server_*``
ones is :mod:`catur.service.interceptor`).

Each :class:`ServiceMetrics` has its own :class:`prometheus_client.CollectorRegistry` (so
several servers can live in one process, as in the tests); ``catur serve`` exposes it with
``prometheus_client.start_http_server`` on ``--metrics-port`` (loopback by default).

Metrics (no label takes request-dependent values: no VM, request or host ids):

=========================================  =========  ==============================================
name                                       type       labels / meaning
=========================================  =========  ==============================================
``grpc_server_started_total``              counter    grpc_type, grpc_service, grpc_method
``grpc_server_handled_total``              counter    ... and grpc_code: every answer, refusals
                                                      (RESOURCE_EXHAUSTED, UNAVAILABLE while stopping,
                                                      DEADLINE_EXCEEDED), malformed bodies and client
                                                      streams (INVALID_ARGUMENT) included
``grpc_server_handling_seconds``           histogram  RPC time from arrival (queueing included)
``catur_rpcs_in_flight``                   gauge      calls admitted and not yet answered
``catur_concurrency_limit``                gauge      calls admitted at most (adaptive or fixed)
``catur_service_seconds``                  gauge      moving average of a call's time in a run slot
``catur_capacity_calls_per_second``        gauge      measured answers per second at saturation
``catur_malformed_requests_total``         counter    request bodies that did not parse
``catur_decision_seconds``                 histogram  time of one decision (policy + gate + shield)
``catur_decisions_total``                  counter    primitive, policy (catur / greedy / primitive)
``catur_shield_interventions_total``       counter    the shield overrode the policy's first choice
``catur_shield_fallbacks_total``           counter    fallback = depth-1 / unshielded
``catur_gate_fired_total``                 counter    the uncertainty gate routed to the fallback
``catur_predicted_anomalies_total``        counter    decisions whose predicted defect > 0.40
``catur_batch_items_total``                counter    outcome = placed / invalid / error
``catur_internal_errors_total``            counter    unexpected exceptions (answered INTERNAL)
``catur_model_info``                       gauge      version, policy: 1 for the serving model
``catur_model_loaded_timestamp_seconds``   gauge      when the serving model was loaded
``catur_model_reloads_total``              counter    successful reloads
``catur_model_reload_failures_total``      counter    reloads refused (corrupt or mismatched model)
``catur_host_windows``                     gauge      host_id request windows held
``catur_host_windows_evicted_total``       counter    windows dropped (least recently used)
=========================================  =========  ==============================================

With trace collection on, the ``catur_collector_*`` metrics join the same registry (rows
written and dropped, files rotated and deleted, bytes on disk): see
:mod:`catur.service.collector`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from catur.metrics import ANOMALY_THRESHOLD

# Decision latency is tens of microseconds; prometheus_client's default buckets start at 5 ms.
LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class ServiceMetrics:
    """All metrics of one service instance, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        grpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter("grpc_server_started", "RPCs started on the server.", grpc_labels, registry=r)
        self.handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, by status code.", (*grpc_labels, "grpc_code"), registry=r
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds", "Time from an RPC's arrival to its answer (queueing included).", grpc_labels, buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("catur_rpcs_in_flight", "Calls admitted and not yet answered (health checks excluded).", registry=r)
        self.concurrency_limit = Gauge(
            "catur_concurrency_limit", "Calls admitted at most (running + waiting); adaptive unless fixed by --max-concurrent-rpcs.", registry=r
        )
        self.service_seconds = Gauge(
            "catur_service_seconds", "Moving average of the time a call holds a run slot (the measured service time).", registry=r
        )
        self.capacity = Gauge(
            "catur_capacity_calls_per_second", "Measured capacity: answers per second while calls waited for a slot.", registry=r
        )
        self.malformed = Counter(
            "catur_malformed_requests", "Request bodies that did not parse as the method's message (answered INVALID_ARGUMENT).", registry=r
        )
        self.decision_seconds = Histogram(
            "catur_decision_seconds", "Time of one placement decision (policy, gate, shield).", buckets=LATENCY_BUCKETS, registry=r
        )
        self.decisions = Counter("catur_decisions", "Placement decisions, by chosen primitive and scoring policy.", ("primitive", "policy"), registry=r)
        self.shield_interventions = Counter("catur_shield_interventions", "Decisions where the shield overrode the policy's first choice.", registry=r)
        self.shield_fallbacks = Counter("catur_shield_fallbacks", "Decisions where the shield fell back (depth-1 retry, or unshielded).", ("fallback",), registry=r)
        self.gate_fired = Counter("catur_gate_fired", "Decisions where the uncertainty gate routed the request to the fallback policy.", registry=r)
        self.anomalies = Counter(
            "catur_predicted_anomalies", f"Decisions whose predicted defect at placement exceeds {ANOMALY_THRESHOLD}.", registry=r
        )
        self.batch_items = Counter("catur_batch_items", "PlaceBatch items, by outcome.", ("outcome",), registry=r)
        self.internal_errors = Counter("catur_internal_errors", "Unexpected exceptions, answered with INTERNAL.", registry=r)
        self.model_info = Gauge("catur_model_info", "The serving model (value 1).", ("version", "policy"), registry=r)
        self.model_loaded = Gauge("catur_model_loaded_timestamp_seconds", "When the serving model was loaded (Unix time).", registry=r)
        self.reloads = Counter("catur_model_reloads", "Successful model reloads.", registry=r)
        self.reload_failures = Counter(
            "catur_model_reload_failures", "Model reloads refused (corrupt or mismatched model); the previous model kept serving.", registry=r
        )
        self.host_windows = Gauge("catur_host_windows", "Recent-request windows held, one per host_id.", registry=r)
        self.host_windows_evicted = Counter("catur_host_windows_evicted", "Host windows dropped, least recently used first.", registry=r)
        for fallback in ("depth-1", "unshielded"):
            self.shield_fallbacks.labels(fallback)
        for outcome in ("placed", "invalid", "error"):
            self.batch_items.labels(outcome)
        self._decision_children: dict[tuple[str, str], object] = {}
        self._current_info: tuple[str, str] | None = None

    def record_decision(self, decision, seconds: float) -> None:
        """Count one decision: primitive, interventions, gate, predicted anomaly, latency."""
        key = (decision.primitive, decision.policy)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()
        self.decision_seconds.observe(seconds)
        if decision.shield_intervened:
            self.shield_interventions.inc()
        if decision.shield_fallback:
            self.shield_fallbacks.labels(decision.shield_fallback).inc()
        if decision.gated:
            self.gate_fired.inc()
        if decision.defect > ANOMALY_THRESHOLD:
            self.anomalies.inc()

    def set_model(self, version: str, policy: str, loaded_at: float) -> None:
        """Point ``catur_model_info`` at the serving model (the previous label set is removed)."""
        if self._current_info is not None and self._current_info != (version, policy):
            try:
                self.model_info.remove(*self._current_info)
            except KeyError:  # pragma: no cover
                pass
        self.model_info.labels(version, policy).set(1)
        self._current_info = (version, policy)
        self.model_loaded.set(loaded_at)

