"""Stopping, refusing and counting like a production service (issue 16, items 1-6).

* malformed request bodies (hypothesis, 200 of them) are answered INVALID_ARGUMENT with at
  most one log line each and no traceback;
* refused calls (the concurrency limit, a stopping server, unknown methods) and malformed
  ones appear in ``grpc_server_handled_total`` by code; handling time runs from arrival;
* health ``List``;
* the three stop phases in process (drain answers, refuse answers UNAVAILABLE while admitted
  calls finish), and serve -> load -> SIGTERM cycles: in process (cheap, several) and as
  ``catur serve`` processes (two; ``benchmarks/bench_stop.py`` runs 200);
* the signal pipe: signals are read in order, none is handled inside a handler.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _service_support import Blocker, valid_request
from catur.service.loadgen import check, not_serving_span, run_cycle
from catur.service.interceptor import CONCURRENCY_EXCEEDED, STOPPING, RateLimitedLog
from catur.service.server import Service, Signals, create_server
from catur.service.servicer import SERVICE_NAME
from catur.shield import ShieldConfig
from catur.v1 import placement_pb2 as pb

pytestmark = pytest.mark.timeout(180)


def value(service: Service, name: str, **labels) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def handled(service: Service, method: str, code: str, grpc_service: str = SERVICE_NAME) -> float:
    return value(service, "grpc_server_handled_total", grpc_type="unary", grpc_service=grpc_service, grpc_method=method, grpc_code=code)


@pytest.fixture(scope="module")
def live():
    service = Service(model=None, shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, channel
    finally:
        channel.close()
        service.shutdown(server, grace=0.5)


def raw(channel: grpc.Channel, method: str):
    """A callable sending raw bytes to ``method`` (no client-side serialization)."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


# --- malformed bodies -------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_200_random_bodies_get_invalid_argument_without_tracebacks(live):
    """Random bytes to Place: every one answered INVALID_ARGUMENT (bytes that happen to parse
    fail validation instead), at most one log line each, none with a traceback, and all of
    them counted by code."""
    service, channel = live
    place = raw(channel, f"/{SERVICE_NAME}/Place")
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    before = handled(service, "Place", "INVALID_ARGUMENT")
    malformed_before = value(service, "catur_malformed_requests_total")
    bodies: list[bytes] = []
    codes: list[grpc.StatusCode] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=600))
    def send(body):
        bodies.append(body)
        with pytest.raises(grpc.RpcError) as info:
            place(body, timeout=5)
        codes.append(info.value.code())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (body, info.value.details())

    try:
        send()
    finally:
        root.removeHandler(records)
    assert len(bodies) == 200 and set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert handled(service, "Place", "INVALID_ARGUMENT") - before == 200
    unparsable = value(service, "catur_malformed_requests_total") - malformed_before
    assert unparsable > 20  # most random bytes are not a PlaceRequest
    assert len(records.records) <= 200
    assert not [r for r in records.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    assert not [r for r in records.records if "Exception deserializing" in r.getMessage()]


@pytest.mark.parametrize("method", [f"/{SERVICE_NAME}/Place", f"/{SERVICE_NAME}/PlaceBatch", f"/{SERVICE_NAME}/Depart",
                                    f"/{SERVICE_NAME}/GetServerInfo", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/List"])
def test_a_body_that_cannot_parse_is_invalid_argument_on_every_method(live, method, caplog):
    service, channel = live
    before = value(service, "catur_malformed_requests_total")
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, method)(b"\xff\xff\xff\xff", timeout=5)  # a truncated varint field tag
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request body: cannot parse 4 bytes" in info.value.details()
    assert value(service, "catur_malformed_requests_total") == before + 1
    assert not [r for r in caplog.records if r.exc_info]


def test_a_malformed_watch_request_is_invalid_argument_and_a_good_one_streams(live):
    service, channel = live
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(watch(b"\xff\xff\xff\xff", timeout=5)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()


def test_the_malformed_log_is_rate_limited():
    logger = logging.getLogger("catur.test.ratelimit")
    records = _Records()
    logger.addHandler(records)
    logger.propagate = False
    try:
        limited = RateLimitedLog(interval_s=0.2, logger=logger)
        assert [limited.warning("bad %d", i) for i in range(50)].count(True) == 1
        time.sleep(0.25)
        assert limited.warning("bad again")
    finally:
        logger.removeHandler(records)
    assert [r.getMessage() for r in records.records] == ["bad 0", "bad again (49 more like it not logged)"]


# --- refusals, counted ----------------------------------------------------------------------------


def test_refused_calls_are_counted_by_code_and_health_is_exempt(monkeypatch):
    service = Service(model=None)
    blocker = Blocker(service, monkeypatch)
    server, port = create_server("127.0.0.1:0", service, max_workers=4, max_concurrent_rpcs=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        from catur.v1 import placement_pb2_grpc as pb_grpc

        stub = pb_grpc.PlacementStub(channel)
        held = [stub.Place.future(valid_request(), timeout=10) for _ in range(2)]
        for _ in held:
            assert blocker.entered.acquire(timeout=5)
        assert value(service, "catur_rpcs_in_flight") == 2
        with pytest.raises(grpc.RpcError) as info:
            stub.Place(valid_request(), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == CONCURRENCY_EXCEEDED  # grpc's own message, unchanged
        # Probes are answered at the limit: a busy server is not a dead one.
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:  # an unknown method: counted, not as its own series
            raw(channel, "/catur.v1.Placement/NoSuchMethod")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        blocker.release.set()
        assert all(f.result().primitive for f in held)
        assert handled(service, "Place", "RESOURCE_EXHAUSTED") == 1
        assert handled(service, "Place", "OK") == 2
        assert value(service, "grpc_server_started_total", grpc_type="unary", grpc_service=SERVICE_NAME, grpc_method="Place") == 3
        assert handled(service, "unknown", "UNIMPLEMENTED", grpc_service="unknown") == 1
        assert handled(service, "Check", "OK", grpc_service="grpc.health.v1.Health") == 1
        assert value(service, "catur_rpcs_in_flight") == 0
    finally:
        channel.close()
        service.shutdown(server, grace=1)


def test_handling_time_runs_from_arrival_not_from_the_handler(monkeypatch):
    """One worker, three calls of 0.3 s each sent together: the last waits ~0.6 s for the
    worker, and the histogram shows it (the old interceptor timed only the 0.3 s handler)."""
    service = Service(model=None)
    Blocker(service, monkeypatch, sleep=0.3)
    server, port = create_server("127.0.0.1:0", service, max_workers=1)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        from catur.v1 import placement_pb2_grpc as pb_grpc

        stub = pb_grpc.PlacementStub(channel)
        calls = [stub.Place.future(valid_request(), timeout=10) for _ in range(3)]
        assert all(c.result().primitive for c in calls)
        labels = dict(grpc_type="unary", grpc_service=SERVICE_NAME, grpc_method="Place")
        total = value(service, "grpc_server_handling_seconds_count", **labels)
        under_half_s = value(service, "grpc_server_handling_seconds_bucket", le="0.5", **labels)
        assert total == 3 and under_half_s <= 2
        assert value(service, "grpc_server_handling_seconds_sum", **labels) >= 0.3 + 0.6 + 0.9 - 0.2
    finally:
        channel.close()
        service.shutdown(server, grace=1)


# --- health List ------------------------------------------------------------------------------------


def test_health_list_reports_every_service(monkeypatch):
    service = Service(model=None)
    server, port = create_server("127.0.0.1:0", service)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        answer = health.List(health_pb2.HealthListRequest(), timeout=5)
        assert {k: v.status for k, v in answer.statuses.items()} == {"": serving, SERVICE_NAME: serving}
        stopping = threading.Thread(target=service.shutdown, args=(server,), kwargs={"grace": 1, "drain": 0.6})
        stopping.start()
        time.sleep(0.2)
        answer = health.List(health_pb2.HealthListRequest(), timeout=5)
        assert {k: v.status for k, v in answer.statuses.items()} == {"": not_serving, SERVICE_NAME: not_serving}
        stopping.join(10)
    finally:
        channel.close()


# --- the stop phases ----------------------------------------------------------------------------------


def test_drain_answers_then_refuse_lets_admitted_calls_finish(monkeypatch):
    """During the drain: NOT_SERVING and still answering. After it: new calls UNAVAILABLE
    (counted), while a call admitted during the drain finishes OK, within the grace."""
    service = Service(model=None)
    blocker = Blocker(service, monkeypatch)
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    from catur.v1 import placement_pb2_grpc as pb_grpc

    stub = pb_grpc.PlacementStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    stopping = threading.Thread(target=service.shutdown, args=(server,), kwargs={"grace": 5, "drain": 0.5})
    try:
        t0 = time.monotonic()
        stopping.start()
        time.sleep(0.1)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        slow = stub.Place.future(valid_request(), timeout=10)  # admitted during the drain
        assert blocker.entered.acquire(timeout=5)
        while time.monotonic() - t0 < 0.8:  # past the drain: refusing
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as info:
            stub.Place(valid_request(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == STOPPING
        # Retrying clients are told to wait before their next attempt (gRFC A6 pushback).
        assert ("grpc-retry-pushback-ms", "1000") in tuple(info.value.trailing_metadata())
        assert stopping.is_alive()  # waiting for the admitted call
        blocker.release.set()
        assert slow.result().primitive  # finished, not cancelled
        stopping.join(10)
        assert not stopping.is_alive()
        assert handled(service, "Place", "UNAVAILABLE") == 1 and handled(service, "Place", "OK") == 1
    finally:
        blocker.release.set()
        channel.close()


def test_a_call_still_running_after_the_grace_is_cancelled(monkeypatch):
    service = Service(model=None)
    blocker = Blocker(service, monkeypatch)
    server, port = create_server("127.0.0.1:0", service, max_workers=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    from catur.v1 import placement_pb2_grpc as pb_grpc

    try:
        stuck = pb_grpc.PlacementStub(channel).Place.future(valid_request(), timeout=10)
        assert blocker.entered.acquire(timeout=5)
        t0 = time.monotonic()
        service.shutdown(server, grace=0.5)
        assert 0.4 < time.monotonic() - t0 < 5
        with pytest.raises(grpc.RpcError) as info:
            stuck.result()
        # grpc cuts it with "Cancelling all calls" (UNAVAILABLE in grpcio 1.85: retryable).
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    finally:
        blocker.release.set()
        channel.close()


@pytest.mark.parametrize("cycle", range(6))
def test_stop_cycles_in_process(tmp_path, cycle):
    # Drains long enough that "a call started in the first half of the drain" is not confused
    # by a busy CI machine delaying its arrival (see catur.service.loadgen.check).
    record = run_cycle(tmp_path / "collected", process=False, clients=4, load_s=0.2, drain_s=0.6, grace_s=5, tag=f"p{cycle}")
    assert check(record, tmp_path / "collected") == []
    assert record.calls["OK"] > 0 and record.calls["UNAVAILABLE"] == 4  # each client refused once, then stopped


@pytest.mark.slow
@pytest.mark.parametrize("cycle", range(2))
def test_stop_cycles_of_catur_serve(tmp_path, cycle):
    """serve -> load -> SIGTERM with collection on: exit 0, no hang, no failed call, every
    answered row on disk, NOT_SERVING for the drain before the port closes."""
    record = run_cycle(tmp_path / "collected", process=True, clients=4, load_s=0.3, drain_s=1.0, grace_s=5, tag=f"s{cycle}")
    assert check(record, tmp_path / "collected") == []
    span, ordered = not_serving_span(record)
    assert ordered and span >= 1.0


# --- the signal pipe --------------------------------------------------------------------------------


def test_signals_are_read_in_order_from_the_pipe():
    # Whatever handled SIGTERM before (the default, or a library's own, e.g. Ray's after an
    # earlier test started it) is what handles it after.
    before = signal.getsignal(signal.SIGTERM)
    with Signals(signal.SIGHUP, signal.SIGTERM) as signals:
        assert signals.next(0.05) is None
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        assert [signals.next(5) for _ in range(3)] == [signal.SIGHUP, signal.SIGHUP, signal.SIGTERM]
        t0 = time.monotonic()
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        assert signals.wait_for_stop(5) is True and time.monotonic() - t0 < 2
        assert signals.wait_for_stop(0.1) is False
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_serve_loop_holds_no_lock_a_signal_handler_needs():
    """The hang of issue 16: a handler calling Event.set() while the main thread sat in
    Event.wait(). Here the handler is a no-op; a flood of signals while the main thread waits
    in next() must neither hang nor lose the stop."""
    with Signals(signal.SIGHUP, signal.SIGTERM) as signals:
        def flood():
            for _ in range(300):
                os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=flood).start()
        seen = []
        while (s := signals.next(10)) == signal.SIGHUP:
            seen.append(s)
        assert s == signal.SIGTERM and len(seen) >= 1


@pytest.mark.parametrize("flag, value", [("--drain-seconds", "-1"), ("--drain-seconds", "nan"), ("--grace", "-0.5")])
def test_bad_stop_settings_are_one_line_errors(flag, value, capsys):
    from catur.cli import main

    assert main(["serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--model", "none", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"catur: error: {flag} must be >= 0, got {float(value)}"
