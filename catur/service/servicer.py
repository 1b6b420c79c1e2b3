"""The thin gRPC servicer: validate, decide with the serving model, answer.

Everything of substance lives elsewhere: validation and conversion in
:mod:`catur.service.convert`, the decision in :class:`catur.decision.Decider` (the very code
offline replay runs), the model in :mod:`catur.service.serving`. This module adds only what a
service needs on top:

* **host windows** — the shield (depth >= 2) needs each host's recent requests to know the
  popular VM types. The servicer keeps one :class:`~catur.shield.TypeStats` per ``host_id``
  and NUMA node count (empty host_id = one window shared per node count), updated right after each decision exactly like
  :func:`catur.sim.replay.replay_host` does, so a hypervisor replaying a trace through the
  service gets the offline numbers. At most ``max_hosts`` windows are kept (least recently
  used dropped). With the shield off or at depth 1 no window is kept: they would not be read;
* **deadlines** — a request whose deadline has passed, or whose client has gone, is not
  decided (DEADLINE_EXCEEDED / CANCELLED); a batch checks between items;
* **errors** — :class:`~catur.errors.CaturError` (bad input) becomes INVALID_ARGUMENT with its
  message; any other exception is logged, counted and answered INTERNAL. Nothing escapes;
* **fit** — every answer carries the placement's fit verdict (:mod:`catur.fit`); a request
  with ``fit_only`` is decided the same way but is a question, not an arrival: it updates no
  window and is not recorded;
* **trace collection** — with a :class:`~catur.service.collector.TraceCollector`, every answered
  placement and every ``Depart`` notice is handed to it (a non-blocking queue put); without
  one, ``Depart`` is validated and answered OK, nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import grpc

import catur
from catur.errors import CaturError
from catur.policies import PRIMITIVES
from catur.shield import TypeStats
from catur.topology import PRESETS
from catur.v1 import placement_pb2 as pb
from catur.v1 import placement_pb2_grpc as pb_grpc

from catur.service.convert import (
    MAX_NODES,
    TopologyCache,
    decision_to_proto,
    explicit_to_proto,
    parse_depart_request,
    parse_place_request,
)
from catur.service.serving import ModelHolder
from catur.service.telemetry import ServiceMetrics

log = logging.getLogger("catur.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Placement"].full_name  # "catur.v1.Placement"
DEFAULT_MAX_HOSTS = 4096  # ~90 KiB per full 1000-request window: ~360 MiB at most
DEFAULT_MAX_BATCH = 1024
MAX_DETAILS = 1000

CATUR_VERSION = catur.__version__


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class HostWindows:
    """One recent-request window per host id, least recently used dropped past ``max_hosts``.

    Each entry carries its own lock: deciding and then observing a request of one host is
    atomic with respect to other requests of the same host, as in a sequential replay.
    """

    def __init__(self, window: int, max_hosts: int = DEFAULT_MAX_HOSTS, metrics: ServiceMetrics | None = None) -> None:
        if max_hosts < 1:
            raise CaturError(f"max_hosts must be >= 1, got {max_hosts}")
        self.window = window
        self.max_hosts = max_hosts
        self.metrics = metrics
        self._lock = threading.Lock()
        self._items: OrderedDict[object, tuple[threading.Lock, TypeStats]] = OrderedDict()

    def get(self, host_id: object) -> tuple[threading.Lock, TypeStats]:
        with self._lock:
            entry = self._items.get(host_id)
            if entry is not None:
                self._items.move_to_end(host_id)
                return entry
            entry = self._items[host_id] = (threading.Lock(), TypeStats(self.window))
            evicted = 0
            while len(self._items) > self.max_hosts:
                self._items.popitem(last=False)
                evicted += 1
            size = len(self._items)
        if self.metrics is not None:
            self.metrics.host_windows.set(size)
            if evicted:
                self.metrics.host_windows_evicted.inc(evicted)
        return entry

    def __len__(self) -> int:
        return len(self._items)


def _check_alive(context) -> None:
    if context is None:
        return
    if not context.is_active():
        raise _Abort(grpc.StatusCode.CANCELLED, "the client cancelled the request")
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed before it was decided")


class PlacementServicer(pb_grpc.PlacementServicer):
    """Implements ``catur.v1.Placement`` over a :class:`ModelHolder`.

    Args:
        models: The serving model holder (hot reload swaps its model under the servicer).
        metrics: Where to count decisions and errors.
        max_hosts: Most host_id windows kept (see :class:`HostWindows`).
        max_batch: Most items in one PlaceBatch call.
        collector: Where answered placements and departures are recorded (None = nowhere);
            a :class:`~catur.service.collector.TraceCollector`.
    """

    def __init__(
        self,
        models: ModelHolder,
        metrics: ServiceMetrics | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        max_batch: int = DEFAULT_MAX_BATCH,
        collector=None,
    ) -> None:
        if max_batch < 1:
            raise CaturError(f"max_batch must be >= 1, got {max_batch}")
        self.models = models
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self.max_batch = max_batch
        shield = models.shield
        self.windows = HostWindows(shield.window if shield else 1, max_hosts, self.metrics)
        self.topologies = TopologyCache()
        self.collector = collector

    # --- the work, free of grpc -----------------------------------------------------------------

    def place_one(self, msg: pb.PlaceRequest) -> pb.PlaceResponse:
        """Decide one request; raises :class:`CaturError` on bad input."""
        parsed = parse_place_request(msg, self.topologies)
        serving = self.models.current  # read once: a reload does not affect this request
        decider = serving.decider
        shield = decider.shield_config
        if shield is not None and shield.depth > 1:
            # Keyed by node count too: a window shared by hosts of different sizes (empty
            # host_id) must not hold a type with more vNUMA instances than this host has nodes.
            lock, stats = self.windows.get((parsed.host_id, parsed.topology.num_nodes))
            with lock:
                t0 = time.perf_counter()
                decision = decider.decide(
                    parsed.topology, parsed.used_vcpus, parsed.used_mem_mib, parsed.request, stats, parsed.residents
                )
                if not parsed.fit_only:  # a question, not an arrival: the window stays as it was
                    stats.observe(parsed.request)
                seconds = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            decision = decider.decide(
                parsed.topology, parsed.used_vcpus, parsed.used_mem_mib, parsed.request, residents=parsed.residents
            )
            seconds = time.perf_counter() - t0
        self.metrics.record_decision(decision, seconds)
        if self.collector is not None and not parsed.fit_only:
            self.collector.record_arrival(msg, parsed, decision)
        return decision_to_proto(decision, parsed.request_id, parsed.residents_from_list, parsed.fit(decision.placement))

    def depart(self, msg: pb.DepartRequest) -> pb.DepartResponse:
        """Record a departure notice; raises :class:`CaturError` on bad input."""
        parsed = parse_depart_request(msg)
        if self.collector is None:
            return pb.DepartResponse(recorded=False)
        return pb.DepartResponse(recorded=self.collector.record_departure(parsed.host_id, parsed.vm_id, parsed.time_s))

    def server_info(self) -> pb.ServerInfo:
        serving = self.models.current
        decider = serving.decider
        shield = decider.shield_config
        info = pb.ServerInfo(
            model_version=serving.version,
            policy=decider.policy_name,
            policy_name=policy_name(decider, self.models.use_gate),
            gate_enabled=decider.gate is not None,
            primitives=list(PRIMITIVES),
            max_nodes=MAX_NODES,
            max_batch=self.max_batch,
            model_loaded_unix_s=serving.loaded_at,
            model_source=serving.source,
            catur_version=CATUR_VERSION,
            collecting=self.collector is not None,
        )
        if shield is not None:
            info.shield.depth = shield.depth
            info.shield.width = shield.width
            info.shield.threshold = shield.threshold
            info.shield.window = shield.window
            info.shield.max_types = shield.max_types
        for name, topology in PRESETS.items():
            info.presets.add(name=name, topology=explicit_to_proto(topology))
        return info

    # --- grpc methods -----------------------------------------------------------------------------

    def _guard(self, context, work):
        try:
            return work()
        except _Abort as exc:
            code, details = exc.code, exc.details
        except CaturError as exc:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Exception as exc:
            log.exception("internal error")
            self.metrics.internal_errors.inc()
            code, details = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}): {exc}"
        context.abort(code, details[:MAX_DETAILS])

    def Place(self, request, context):
        def work():
            _check_alive(context)
            return self.place_one(request)

        return self._guard(context, work)

    def PlaceBatch(self, request, context):
        def work():
            n = len(request.items)
            if n == 0:
                raise CaturError("items is empty: send at least one PlaceRequest")
            if n > self.max_batch:
                raise CaturError(f"items has {n} entries; at most {self.max_batch} per call")
            out = pb.PlaceBatchResponse()
            for i, item in enumerate(request.items):
                _check_alive(context)
                result = out.results.add()
                try:
                    result.placement.CopyFrom(self.place_one(item))
                    outcome = "placed"
                except CaturError as exc:
                    result.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                    result.error.message = f"items[{i}]: {exc}"[:MAX_DETAILS]
                    outcome = "invalid"
                except Exception as exc:
                    log.exception("internal error in items[%d]", i)
                    self.metrics.internal_errors.inc()
                    result.error.code = grpc.StatusCode.INTERNAL.value[0]
                    result.error.message = f"items[{i}]: internal error ({type(exc).__name__}): {exc}"[:MAX_DETAILS]
                    outcome = "error"
                self.metrics.batch_items.labels(outcome).inc()
            return out

        return self._guard(context, work)

    def GetServerInfo(self, request, context):
        return self._guard(context, self.server_info)

    def Depart(self, request, context):
        return self._guard(context, lambda: self.depart(request))


def policy_name(decider, use_gate: bool = True) -> str:
    """The name offline evaluation gives this decider (:attr:`catur.decision.DeciderSpec.name`)."""
    name = decider.policy_name
    if decider.shield_config is not None:
        name += "+shield"
    if decider.model_version and not use_gate:  # a model (or rule version) is loaded, as DeciderSpec names it
        name += "-nogate"
    return name
