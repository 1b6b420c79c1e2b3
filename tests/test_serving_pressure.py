"""Serving under pressure (issue 30): admission, strict protocol, metrics that match the wire,
stops that end every stream cleanly, the client's retry config, TLS.

* the adaptive limit and the deadline-aware line (:mod:`catur.service.admission`), as pure
  logic and through a live server: a call that cannot be answered in time is refused at once
  and does no work;
* for each refused or malformed kind (oversize body, expired deadline, over the limit, random
  bytes, a client stream to a unary method), the ``grpc_server_handled_total`` delta equals
  the codes the clients received;
* reflection answers under ``v1`` and ``v1alpha``; the explicit topology name is capped;
* a stop ends an open health ``Watch`` with NOT_SERVING and OK, and the Watch does not hold it;
* the shipped service config (retry on UNAVAILABLE, round_robin over two addresses) carries a
  client through a replica's stop;
* TLS and mutual TLS through ``catur serve`` processes with generated certificates.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from _service_support import Blocker, start_serve, valid_request
from catur.errors import CaturError
from catur.service.admission import CANNOT_MEET_DEADLINE, DEADLINE_PASSED, AdmissionConfig, CallAdmission, adaptive_limit
from catur.service.client import PlacementClient, service_config
from catur.service.server import Service, create_server
from catur.service.servicer import SERVICE_NAME
from catur.v1 import placement_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)


def handled(service: Service, method: str = "Place") -> Counter:
    """``grpc_server_handled_total`` of ``method`` by code, as a Counter."""
    out = Counter()
    for metric in service.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "grpc_server_handled_total" and sample.labels.get("grpc_method") == method:
                out[sample.labels["grpc_code"]] += int(sample.value)
    return +out


# --- admission as logic ------------------------------------------------------------------------------


def test_the_adaptive_limit_is_slots_plus_the_calls_that_wait_the_target_at_measured_capacity():
    config = AdmissionConfig(slots=8, target_queue_s=0.2, min_limit=16, max_limit=512, window_s=0.05)
    # 800 answers/s; 0.2 s of line = 160 calls waiting.
    assert adaptive_limit(config, 800.0) == 8 + 160
    assert adaptive_limit(config, 10.0) == 16  # a slow server: the floor
    assert adaptive_limit(config, 1e6) == 512  # a fast one: the ceiling
    # Saturated windows (calls waiting for the one slot) measure the capacity: ~100 answers/s.
    admission = CallAdmission(dataclasses.replace(config, slots=1, initial_capacity=5000.0))
    assert admission.acquire(None) is None
    waiter_results = []
    t_end = time.monotonic() + 0.6
    while time.monotonic() < t_end:
        waiter = threading.Thread(target=lambda: waiter_results.append(admission.acquire(None)))
        waiter.start()
        while admission.waiting == 0:  # the next call is in line: the window is saturated
            time.sleep(0.001)
        time.sleep(0.01)  # ... while the running call takes 10 ms
        admission.release(0.01)
        waiter.join(5)
    admission.release(0.01)
    assert set(waiter_results) == {None}
    assert 40 < admission.capacity < 110, admission.capacity  # ~1 answer per 10 ms, less on a busy machine
    assert admission.limit == adaptive_limit(admission.config, admission.capacity)
    assert admission.service_s < 0.01
    assert CallAdmission(AdmissionConfig(slots=8, limit=40)).limit == 40  # fixed stays fixed


@pytest.mark.parametrize("bad", [dict(slots=0), dict(limit=0), dict(target_queue_s=0), dict(target_queue_s=float("nan")),
                                 dict(min_limit=10, max_limit=5), dict(smoothing=0)])
def test_bad_admission_settings_are_refused_naming_the_value(bad):
    with pytest.raises(CaturError) as info:
        AdmissionConfig(**bad)
    assert str(list(bad.values())[-1]) in str(info.value)


def test_a_call_that_cannot_be_answered_in_time_is_refused_at_once():
    admission = CallAdmission(AdmissionConfig(slots=1, initial_service_s=0.1, initial_capacity=10.0))
    assert admission.acquire(5.0) is None  # the slot is free
    assert admission.acquire(0.0) == DEADLINE_PASSED
    # One call running, none waiting: a wait of ~0.1 s plus 0.1 s of its own work.
    assert admission.acquire(0.15) == CANNOT_MEET_DEADLINE
    got = []
    waiter = threading.Thread(target=lambda: got.append(admission.acquire(5.0)))
    waiter.start()
    time.sleep(0.05)
    assert admission.waiting == 1
    admission.release(0.1)  # the slot passes to the waiter
    waiter.join(5)
    assert got == [None] and admission.waiting == 0
    # A call whose estimate was too low gives up its place when its deadline passes.
    admission.service_s, admission.capacity = 1e-4, 1e4
    t0 = time.monotonic()
    assert admission.acquire(0.2) == DEADLINE_PASSED
    assert time.monotonic() - t0 >= 0.19 and admission.waiting == 0
    admission.release(0.1)
    assert admission.acquire(None) is None  # the slot was handed back, not lost


def test_on_arrival_a_dead_call_or_one_the_line_leaves_no_time_for_is_refused():
    admission = CallAdmission(AdmissionConfig(slots=2, initial_service_s=0.01, initial_capacity=100.0, margin_s=0.05))
    assert admission.early_refusal(-0.1, in_server=0) == DEADLINE_PASSED
    assert admission.early_refusal(0.05, in_server=0) == CANNOT_MEET_DEADLINE  # 10 ms of work + 50 ms margin
    assert admission.early_refusal(0.07, in_server=1) is None  # a free slot: no wait
    # 2 running + 20 waiting: 21 calls ahead at 100/s = 0.21 s of wait.
    assert admission.early_refusal(0.2, in_server=22) == CANNOT_MEET_DEADLINE
    assert admission.early_refusal(0.5, in_server=22) is None


def _window(admission: CallAdmission, *, wait_s: float, full: bool) -> None:
    """One measurement window: a call holds the one slot while another waits ``wait_s`` in
    line (a busy window answering about 1/wait_s calls per second); with ``full``, a call is
    refused over the limit meanwhile."""
    assert admission.acquire(None) is None
    waiter = threading.Thread(target=admission.acquire, args=(None,))
    waiter.start()
    while admission.waiting == 0:
        time.sleep(0.001)
    if full:
        assert admission.over_limit(admission.limit)
    time.sleep(wait_s)
    admission.release(wait_s)  # the window ends here (window_s is shorter than wait_s)
    waiter.join(5)
    admission.release(0.0)  # the waiter's call is done too (window just restarted: no measure)


def test_a_limit_measured_while_starved_probes_upwards_while_the_line_moves():
    """A capacity measured while the process was starved (5 answers/s against 100 assumed)
    would pull the limit down; with calls refused over it while the line moved faster than
    the target, the limit grows by the probe instead; a window that refuses nobody returns it
    to Little's law."""
    config = AdmissionConfig(slots=1, target_queue_s=1.0, min_limit=2, max_limit=300, initial_capacity=100.0, window_s=0.1)
    admission = CallAdmission(config)
    assert admission.limit == 1 + 100
    _window(admission, wait_s=0.2, full=True)
    assert admission.capacity < 100  # the starved window did measure less ...
    assert admission.limit == 101 + 11  # ... but the limit probed upwards by 10%
    _window(admission, wait_s=0.2, full=True)
    assert admission.limit == 112 + 12
    _window(admission, wait_s=0.2, full=False)
    assert admission.limit == adaptive_limit(config, admission.capacity) < 101


def test_a_line_slower_than_the_target_brings_the_limit_down_even_when_full():
    config = AdmissionConfig(slots=1, target_queue_s=0.05, min_limit=2, max_limit=300, initial_capacity=100.0, window_s=0.1)
    admission = CallAdmission(config)
    assert admission.limit == 1 + 5
    _window(admission, wait_s=0.2, full=True)  # the waiter waited 0.2 s > 0.05 s
    assert admission.limit == adaptive_limit(config, admission.capacity) < 6


def test_the_capacity_never_counts_below_its_floor():
    admission = CallAdmission(AdmissionConfig(slots=1, initial_capacity=100.0, min_capacity=40.0, window_s=0.05))
    for _ in range(3):  # starved windows: ~10 answers/s each
        _window(admission, wait_s=0.1, full=False)
    assert admission.capacity == 40.0
    assert AdmissionConfig().capacity_floor == 50.0  # default: a tenth of the initial capacity
    with pytest.raises(CaturError, match="min_capacity.*-1"):
        AdmissionConfig(min_capacity=-1)
    with pytest.raises(CaturError, match="probe.*2"):
        AdmissionConfig(probe=2)


class _LateContext:
    """A servicer context whose deadline passes while the handler runs."""

    def __init__(self) -> None:
        self.code_ = None
        self.details = None

    def time_remaining(self):
        return -0.01

    def abort(self, code, details):
        self.code_, self.details = code, details
        raise RuntimeError("aborted")  # grpc raises too

    def code(self):
        return self.code_

    def is_active(self):
        return True


def test_an_answer_ready_after_the_deadline_is_not_sent_as_ok():
    from catur.service.interceptor import ANSWERED_TOO_LATE, CallInterceptor
    from catur.service.telemetry import ServiceMetrics

    metrics = ServiceMetrics()
    calls = CallInterceptor(metrics, None)
    answered = []
    serve = calls._serve(lambda request, context: answered.append(request) or "the answer", ("unary", SERVICE_NAME, "Place"),
                         time.perf_counter(), counted=False)
    context = _LateContext()
    with pytest.raises(RuntimeError, match="aborted"):
        serve(iter([valid_request()]), context)
    assert answered and context.code_ == grpc.StatusCode.DEADLINE_EXCEEDED and context.details == ANSWERED_TOO_LATE
    counts = {s.labels["grpc_code"]: s.value for m in metrics.registry.collect() for s in m.samples
              if s.name == "grpc_server_handled_total"}
    assert counts == {"DEADLINE_EXCEEDED": 1.0}
    calls.shutdown()


def test_the_interceptor_reads_each_calls_deadline_on_arrival(server_of, monkeypatch):
    """The early refusal needs the deadline before grpcio hands the call to a thread; it is read
    from grpcio's serving loop (:func:`catur.service.interceptor._arriving_deadline`). If a
    grpcio release moves it, this test says so (the server still works, only later)."""
    service = Service(model=None)
    channel = server_of(service)
    seen = []
    real_take = service.calls.fast_refusals.take

    def take():
        verdict = real_take()
        seen.append(None if verdict is None else verdict.deadline)
        return verdict

    monkeypatch.setattr(service.calls.fast_refusals, "take", take)
    stub = pb_grpc.PlacementStub(channel)
    sent = time.time()
    stub.Place(valid_request(), timeout=3)
    stub.Place(valid_request())  # no deadline
    assert len(seen) == 2 and seen[1] is None
    assert seen[0] is not None and abs(seen[0] - (sent + 3)) < 1.0


# --- a live server --------------------------------------------------------------------------------


@pytest.fixture
def server_of():
    made = []

    def make(service: Service, **options):
        server, port = create_server("127.0.0.1:0", service, **options)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        made.append((service, server, channel))
        return channel

    yield make
    for service, server, channel in made:
        channel.close()
        service.shutdown(server, grace=0.5)


def _codes(futures) -> Counter:
    out = Counter()
    for f in futures:
        try:
            f.result()
            out["OK"] += 1
        except grpc.RpcError as exc:
            out[exc.code().name] += 1
    return out


def test_calls_over_the_deadline_budget_are_refused_without_work(server_of, monkeypatch):
    """One slot, calls of 0.3 s: with a 0.5 s deadline only the first two can be answered in
    time; the others are refused at once (RESOURCE_EXHAUSTED), not decided, and counted."""
    service = Service(model=None)
    slow = Blocker(service, monkeypatch, sleep=0.3)
    channel = server_of(service, admission=AdmissionConfig(slots=1, limit=50, initial_service_s=0.3, initial_capacity=1 / 0.3))
    stub = pb_grpc.PlacementStub(channel)
    t0 = time.monotonic()
    calls = [stub.Place.future(valid_request(), timeout=0.8) for _ in range(6)]
    seen = _codes(calls)
    assert seen["OK"] >= 1 and seen["RESOURCE_EXHAUSTED"] >= 3, seen
    assert set(seen) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
    assert seen["OK"] <= slow.decided <= seen["OK"] + seen["DEADLINE_EXCEEDED"]  # refused calls did no work
    assert handled(service) == seen
    assert time.monotonic() - t0 < 5


def test_metrics_match_what_clients_saw_for_every_refused_kind(server_of, monkeypatch):
    service = Service(model=None)
    slow = Blocker(service, monkeypatch)
    channel = server_of(service, admission=AdmissionConfig(slots=1, limit=3, initial_service_s=1e-4, initial_capacity=1e4))
    stub = pb_grpc.PlacementStub(channel)

    def slow_refusal(labels, arrived, code, details):
        assert code != grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit is refused by grpcio's own path"
        return real_refuse(labels, arrived, code, details)

    real_refuse = service.calls._refuse
    monkeypatch.setattr(service.calls, "_refuse", slow_refusal)
    raw = channel.unary_unary(f"/{SERVICE_NAME}/Place", request_serializer=None, response_deserializer=None)
    stream = channel.stream_unary(f"/{SERVICE_NAME}/Place", request_serializer=None, response_deserializer=None)
    good = valid_request().SerializeToString()
    seen = Counter()
    slow.release.set()

    def call(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
            seen["OK"] += 1
        except grpc.RpcError as exc:
            seen[exc.code().name] += 1
            return exc

    # Oversize: 5 MiB of bytes (grpc reads at most 4 MiB).
    assert call(raw, b"\x0a" * (5 << 20), timeout=10).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Random bytes, and a client stream of two good messages to the unary method.
    assert call(raw, b"\xff\xfe\x00garbage", timeout=5).code() == grpc.StatusCode.INVALID_ARGUMENT
    exc = call(stream, iter([good, good]), timeout=5)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one request message" in exc.details()
    assert call(stream, iter([good]), timeout=5) is None  # a stream of one is a unary call on the wire
    assert slow.entered.acquire(timeout=5)
    # Over the limit: one call runs (held), two wait (limit 3); the next is refused.
    slow.release.clear()
    held = [stub.Place.future(valid_request(), timeout=10) for _ in range(1)]
    assert slow.entered.acquire(timeout=5)
    expiring = stub.Place.future(valid_request(), timeout=0.5)  # waits in line past its deadline
    waiting = stub.Place.future(valid_request(), timeout=10)
    time.sleep(0.2)
    assert call(stub.Place, valid_request(), timeout=5).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    time.sleep(0.6)
    slow.release.set()
    seen.update(_codes([*held, expiring, waiting]))
    assert seen == Counter(OK=3, RESOURCE_EXHAUSTED=2, INVALID_ARGUMENT=2, DEADLINE_EXCEEDED=1)
    deadline = time.monotonic() + 5
    while handled(service) != seen and time.monotonic() < deadline:  # the last counts land after the answers
        time.sleep(0.05)
    assert handled(service) == seen


def test_reflection_answers_under_v1_and_v1alpha(server_of):
    channel = server_of(Service(model=None))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for version in ("v1", "v1alpha"):
        method = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (answer,) = list(method(iter([request]), timeout=5))
        assert SERVICE_NAME in {s.name for s in answer.list_services_response.service}


def test_the_explicit_topology_name_is_capped(server_of):
    stub = pb_grpc.PlacementStub(server_of(Service(model=None)))
    request = valid_request()
    request.topology.explicit.nodes.add(cores=8, mem_mib=16384, socket=0)
    request.usage.used_vcpus[:] = [0]
    request.usage.used_mem_mib[:] = [0]
    request.topology.explicit.name = "n" * 256
    assert stub.Place(request, timeout=5).primitive
    request.topology.explicit.name = "n" * 1_000_000
    with pytest.raises(grpc.RpcError) as info:
        stub.Place(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "topology.explicit.name" in info.value.details()


# --- stopping ---------------------------------------------------------------------------------------


def test_a_watch_gets_not_serving_then_ends_ok_and_does_not_hold_the_stop():
    service = Service(model=None)
    server, port = create_server("127.0.0.1:0", service)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        statuses = []
        reader = threading.Thread(target=lambda: statuses.extend(r.status for r in stream))
        reader.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        service.shutdown(server, grace=5, drain=0.3)
        took = time.monotonic() - t0
        reader.join(5)
        s = health_pb2.HealthCheckResponse
        assert statuses == [s.SERVING, s.NOT_SERVING]
        assert stream.code() == grpc.StatusCode.OK  # a clean end, not INTERNAL or CANCELLED
        assert took < 0.3 + 2.5  # drain + the quiet spell at most, never the 5 s grace
    finally:
        channel.close()


# --- the client side ---------------------------------------------------------------------------------


def test_the_shipped_service_config_retries_unavailable_only_and_balances_two_addresses():
    config = json.loads(service_config(round_robin=True))
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": SERVICE_NAME}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "hedgingPolicy" not in method
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}  # a draining replica gets no new calls
    single = json.loads(service_config(round_robin=False))
    assert "loadBalancingConfig" not in single and "healthCheckConfig" not in single


def test_a_client_of_two_replicas_sees_no_failure_when_one_stops():
    services = [Service(model=None) for _ in range(2)]
    started = [create_server("127.0.0.1:0", s) for s in services]
    ports = [port for _, port in started]
    failures = Counter()
    ok = 0
    stop = threading.Event()
    with PlacementClient([f"127.0.0.1:{p}" for p in ports], timeout=5) as client:
        request = valid_request()

        def load():
            nonlocal ok
            while not stop.is_set():
                try:
                    client.stub.Place(request, timeout=5)
                    ok += 1
                except grpc.RpcError as exc:
                    failures[exc.code().name] += 1

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both subchannels connected and answering
        services[0].shutdown(started[0][0], grace=3, drain=0.3)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
    services[1].shutdown(started[1][0], grace=1)
    answered_by = [sum(handled(s).values()) for s in services]
    assert not failures, failures
    assert ok > 0 and all(answered_by), answered_by  # both replicas served


# --- TLS through catur serve ---------------------------------------------------------------------------


def _serve(*extra):
    proc, target, _ = start_serve("--drain-seconds", "0", "--grace", "1", *extra, stderr=subprocess.PIPE)
    return proc, int(target.rsplit(":", 1)[1])


def _stop(proc) -> None:
    import signal

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    proc.stdout.close()
    proc.stderr.close()


def test_tls_and_mutual_tls_end_to_end_through_catur_serve(certificates):
    c = certificates
    request = valid_request()
    proc, port = _serve("--tls-cert", str(c["server_cert"]), "--tls-key", str(c["server_key"]))
    try:
        with PlacementClient(f"localhost:{port}", timeout=5, root_certificates=c["ca"]) as client:
            assert client.stub.Place(request, timeout=5).primitive
        with PlacementClient(f"localhost:{port}", timeout=2) as plain, pytest.raises(grpc.RpcError) as info:
            plain.stub.Place(request, timeout=2)  # plaintext to a TLS port: no answer
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        _stop(proc)
    proc, port = _serve("--tls-cert", str(c["server_cert"]), "--tls-key", str(c["server_key"]), "--tls-client-ca", str(c["ca"]))
    try:
        with PlacementClient(f"localhost:{port}", timeout=2, root_certificates=c["ca"]) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                anonymous.stub.Place(request, timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake is refused
        with PlacementClient(
            f"localhost:{port}", timeout=5, root_certificates=c["ca"], client_cert=c["client_cert"], client_key=c["client_key"]
        ) as client:
            assert client.stub.Place(request, timeout=5).primitive
            assert client.health() == "SERVING"
    finally:
        _stop(proc)


@pytest.mark.parametrize("args, message", [
    (["--target-queue-ms", "0"], "--target-queue-ms must be > 0, got 0.0"),
    (["--target-queue-ms", "nan"], "--target-queue-ms must be > 0, got nan"),
    (["--min-limit", "9", "--max-limit", "3"], "--min-limit and --max-limit: need 1 <= min <= max, got 9 and 3"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--processes", "0"], "--processes must be >= 1, got 0"),
])
def test_bad_load_shedding_settings_are_one_line_errors_naming_the_flag(args, message, capsys):
    from catur.cli import main

    assert main(["serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--model", "none", *args]) == 2
    assert capsys.readouterr().err.strip() == f"catur: error: {message}"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_concurrent_rpcs_takes_a_positive_number_or_auto(value, capsys):
    from catur.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--max-concurrent-rpcs", value])
    assert info.value.code == 2
    assert "--max-concurrent-rpcs" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["max_concurrent_streams=3", "grpc.max_concurrent_streams", "grpc.x="])
def test_grpc_arg_takes_a_grpc_key_and_a_value(value, capsys):
    from catur.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--grpc-arg", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--grpc-arg" in err and repr(value) in err


def test_grpc_args_reach_the_server_and_its_own_are_not_overridden(server_of):
    from catur.cli import main
    from catur.cli.service import _grpc_arg

    assert _grpc_arg("grpc.max_concurrent_streams=4") == ("grpc.max_concurrent_streams", 4)
    assert _grpc_arg("grpc.primary_user_agent=x=y") == ("grpc.primary_user_agent", "x=y")
    # One stream per connection: calls from one channel queue at the client, and are answered.
    channel = server_of(Service(model=None), grpc_options=(("grpc.max_concurrent_streams", 1),))
    stub = pb_grpc.PlacementStub(channel)
    assert _codes([stub.Place.future(valid_request(), timeout=10) for _ in range(5)]) == Counter(OK=5)
    with pytest.raises(CaturError, match="grpc.so_reuseport is set by the server itself"):
        create_server("127.0.0.1:0", Service(model=None), grpc_options=(("grpc.so_reuseport", 1),))
    assert main(["serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--model", "none",
                 "--grpc-arg", "grpc.max_receive_message_length=5"]) == 2


def test_several_processes_serve_one_port_and_stop_together():
    """``catur serve --processes 2``: two grpc servers on one port (SO_REUSEPORT), the kernel
    spreading connections over them; each counts its own calls on its own metrics port; one
    SIGTERM to the command stops both cleanly."""
    import os
    import signal
    import urllib.request

    proc, target, metrics = start_serve("--processes", "2", "--metrics-port", "0", "--drain-seconds", "0.1", "--grace", "2")
    try:
        first = proc.stdout.readline()
        assert "process 2 of 2" in first and target in first, first
        metrics_ports = [metrics, int(first.split("metrics on 127.0.0.1:")[1].split(";")[0])]
        pids = [int(first.split("(pid ")[1].split(")")[0])]
        # 16 connections: the chance that all land on one of the two processes is 2^-15.
        channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(16)]
        for channel in channels:
            assert pb_grpc.PlacementStub(channel).Place(valid_request(), timeout=10).primitive
            channel.close()
        per_process = []
        for port in metrics_ports:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            per_process.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                   if line.startswith("grpc_server_handled_total{") and 'grpc_method="Place"' in line))
        assert sum(per_process) == 16 and min(per_process) > 0, per_process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in pids:  # the copies are gone too
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_a_port_already_served_is_refused_unless_both_reuse_it():
    proc, target, _ = start_serve("--reuse-port")
    try:
        port = target.rsplit(":", 1)[1]
        second = subprocess.run([*_serve_command(), "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "cannot listen on" in second.stderr
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def _serve_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "catur.cli", "serve", "--metrics-port", "-1", "--model", "none", "--watch-interval", "0"]
