"""The placement service end to end, over real channels on OS-chosen loopback ports.

* replaying a trace through the service gives exactly the offline metrics (greedy, a model,
  the shipped model when present; shield depth 1 and 2), and so does ``catur replay``;
* bad requests (hypothesis) are answered INVALID_ARGUMENT and the server keeps serving;
* batch, deadlines, internal errors, health, reflection, the metrics endpoint (and
  ``promtool``/a real Prometheus when installed);
* hot reload keeps the old model on a corrupt one and never fails a request in flight;
* ``catur serve`` as a process: SIGHUP, SIGTERM graceful stop; TLS and mutual TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings

from _service_support import bad_requests, corrupt_model, make_model, random_trace, reap, small_streams, valid_request
from catur.decision import DeciderSpec
from catur.metrics import summarize
from catur.policy_model import default_model_dir
from catur.request import VMRequest
from catur.service.client import PlacementClient
from catur.service.serving import ModelHolder
from catur.sim.remote_replay import replay_remote
from catur.service.server import Service, TLSConfig, create_server
from catur.service.servicer import SERVICE_NAME
from catur.service.telemetry import ServiceMetrics
from catur.shield import ShieldConfig
from catur.sim.replay import replay_host
from catur.topology import PRESETS
from catur.v1 import placement_pb2 as pb

pytestmark = pytest.mark.timeout(120)
SHIPPED = (default_model_dir() / "manifest.json").exists()


@contextlib.contextmanager
def serving(service: Service, tls: TLSConfig | None = None):
    server, port = create_server("127.0.0.1:0", service, tls=tls, max_workers=4)
    try:
        yield port
    finally:
        service.shutdown(server, grace=0.5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "m1", seed=1, version="m1", fallback="mem-most-idle")


@pytest.fixture(scope="module")
def streams():
    return small_streams()


@pytest.fixture(scope="module")
def greedy_server():
    """A greedy, depth-1 shielded service shared by the tests that only need a live server."""
    service = Service(model=None, shield=ShieldConfig(depth=1))
    with serving(service) as port, PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
        yield service, client


def value(service: Service, name: str, **labels) -> float:
    return service.metrics.registry.get_sample_value(name, labels or None) or 0.0


# --- the service decides exactly like offline evaluation ---------------------------------------


def offline(streams, spec: DeciderSpec):
    rows, lifetime, placed, counters = [], [], [], Counter()
    for s in streams:
        result = replay_host(s.topology, s.trace, spec, seed=s.host)
        rows.append(s.rows[s.counted])
        lifetime.append(result.lifetime_defect[s.counted])
        placed.append(result.placement_defect[s.counted])
        counters.update(result.counters)
    rows = np.concatenate(rows)
    order = np.argsort(rows, kind="stable")
    lifetime, placed = np.concatenate(lifetime)[order], np.concatenate(placed)[order]
    return rows[order], lifetime, placed, summarize(lifetime, placed), counters


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("policy", ["greedy", "model", "shipped"])
def test_replay_through_the_service_equals_offline_evaluation(policy, depth, streams, model_dir):
    """Same trace, same decider: the per-VM defects, the summary and the shield/gate counts of a
    replay through the service equal offline replay_host with the equivalent DeciderSpec."""
    if policy == "shipped" and not SHIPPED:
        pytest.skip("the package ships no model (catur/models/default)")
    model = {"greedy": None, "model": str(model_dir), "shipped": "default"}[policy]
    spec = DeciderSpec(model, ShieldConfig(depth=depth))
    rows, lifetime, placed, summary, counters = offline(streams, spec)
    service = Service(model=model, shield=ShieldConfig(depth=depth))
    with serving(service) as port, PlacementClient(f"127.0.0.1:{port}") as client:
        name = client.server_info().policy_name
        assert name == spec.name
        remote = replay_remote(streams, client, name, concurrency=3)
    assert np.array_equal(remote.rows, rows)
    assert np.array_equal(remote.lifetime_defect, lifetime)
    assert np.array_equal(remote.placement_defect, placed)
    assert remote.summary == summary
    assert remote.extra == {key: counters[key] for key in ("shield_interventions", "shield_depth1", "unshielded", "gated")}
    assert value(service, "catur_shield_interventions_total") == counters["shield_interventions"]
    assert value(service, "catur_shield_fallbacks_total", fallback="depth-1") == counters["shield_depth1"]
    assert value(service, "catur_shield_fallbacks_total", fallback="unshielded") == counters["unshielded"]
    assert value(service, "catur_gate_fired_total") == counters["gated"]
    if policy == "model":
        assert counters["gated"] > 0  # the test model's gate fires, so the fallback path is covered
    if depth == 2:
        assert counters["shield_depth1"] > 0  # the look-ahead is exercised


@pytest.mark.slow
def test_catur_replay_command_prints_the_offline_table(tmp_path, capsys, model_dir):
    """`catur replay` against a model served with a depth-2 shield prints the numbers (and the
    JSON, intervention counts included) of `catur evaluate --model DIR --shield-depth 2`; an
    offline policy added with --also matches too."""
    from catur.cli import main

    trace = tmp_path / "trace.csv"
    random_trace(5).to_csv(trace, index=False)
    scenario = [str(trace), "--cluster", "mixed", "--cpu-overcommit", "1.3", "--target-utilization", "0.95", "--days", "2:3", "--quiet", "--jobs", "1"]
    assert main(["evaluate", *scenario, "--policies", "xen", "--model", str(model_dir), "--shield-depth", "2", "--json", str(tmp_path / "offline.json")]) == 0
    offline_out = capsys.readouterr().out
    service = Service(model=str(model_dir), shield=ShieldConfig(depth=2))
    with serving(service) as port:
        assert main(["replay", "--target", f"127.0.0.1:{port}", *scenario, "--also", "xen", "--json", str(tmp_path / "remote.json")]) == 0
    remote_out = capsys.readouterr().out
    offline_json = json.loads((tmp_path / "offline.json").read_text())["policies"]
    remote_json = json.loads((tmp_path / "remote.json").read_text())["policies"]
    assert set(remote_json) == {"catur+shield", "xen"}
    assert remote_json["catur+shield"] == offline_json["catur+shield"]
    assert remote_json["xen"] == offline_json["xen"]
    assert remote_json["catur+shield"]["shield_depth1"] > 0
    table = [line for line in offline_out.splitlines() if line.startswith(("catur+shield ", "xen "))]
    assert len(table) == 2 and all(line in remote_out for line in table)


# --- bad input, errors, deadlines --------------------------------------------------------------


@given(bad_requests())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_bad_requests_get_invalid_argument_over_the_wire(greedy_server, case):
    service, client = greedy_server
    msg, field = case
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Place(msg, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()


def test_server_keeps_serving_after_bad_requests(greedy_server):
    service, client = greedy_server
    bad = valid_request()
    bad.vm.vcpus = -3
    for _ in range(20):
        with pytest.raises(grpc.RpcError):
            client.stub.Place(bad)
    decision = client.place(PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(2, 4096), request_id="ok")
    assert decision.request_id == "ok" and decision.placement.total_vcpus == 2
    assert client.health() == "SERVING"
    assert value(service, "grpc_server_handled_total", grpc_type="unary", grpc_service=SERVICE_NAME, grpc_method="Place", grpc_code="INVALID_ARGUMENT") >= 20
    assert value(service, "catur_internal_errors_total") == 0


def test_batch_places_good_items_and_reports_bad_ones(greedy_server):
    service, client = greedy_server
    good = valid_request()
    bad = valid_request()
    bad.usage.used_vcpus.append(1)
    results = client.place_batch([good, bad, good])
    single = client.stub.Place(good)
    assert results[0].placement.cpu_nodes.tolist() == [i.cpu_node for i in single.instances]
    assert results[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[1].message.startswith("items[1]: usage.used_vcpus has 5 values")
    assert results[2].request_id == "r-1"
    for items in ([], [good] * (service.servicer.max_batch + 1)):
        with pytest.raises(grpc.RpcError) as info:
            client.stub.PlaceBatch(pb.PlaceBatchRequest(items=items))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_shared_window_over_hosts_of_different_sizes_stays_valid():
    """Requests without a host_id share a window per node count: a popular vnuma=4 type seen on
    4-node hosts does not make a 2-node host's (valid) request fail at depth 2."""
    service = Service(model=None, shield=ShieldConfig(depth=2))
    four = valid_request("amd-2s-nps2")
    four.host_id = ""
    four.vm.vnuma = 4
    for _ in range(10):
        service.servicer.place_one(four)
    two = valid_request("intel-2s")
    two.host_id = ""
    assert service.servicer.place_one(two).primitive
    assert len(service.servicer.windows) == 2


class FakeContext:
    """A servicer context whose deadline has passed (or whose client left)."""

    def __init__(self, active=True, remaining=0.0):
        self.active, self.remaining = active, remaining

    def is_active(self):
        return self.active

    def time_remaining(self):
        return self.remaining

    def abort(self, code, details):
        self.code, self.details = code, details
        raise grpc.RpcError(details)


@pytest.mark.parametrize("active, remaining, code", [(True, 0.0, grpc.StatusCode.DEADLINE_EXCEEDED), (False, 1.0, grpc.StatusCode.CANCELLED)])
def test_expired_or_cancelled_requests_are_not_decided(greedy_server, active, remaining, code):
    service, _ = greedy_server
    before = value(service, "catur_decision_seconds_count")
    for call, msg in ((service.servicer.Place, valid_request()), (service.servicer.PlaceBatch, pb.PlaceBatchRequest(items=[valid_request()]))):
        context = FakeContext(active, remaining)
        with pytest.raises(grpc.RpcError):
            call(msg, context)
        assert context.code == code
    assert value(service, "catur_decision_seconds_count") == before


def test_a_batch_stops_deciding_when_its_deadline_passes(greedy_server, monkeypatch):
    """With decisions slowed to 0.2 s, a 5-item batch with a 0.3 s deadline is abandoned by the
    server after the item that crossed the deadline instead of deciding all five."""
    service, client = greedy_server
    decider = service.models.current.decider
    real, calls = decider.decide, []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(decider, "decide", slow)
    with pytest.raises(grpc.RpcError) as info:
        client.stub.PlaceBatch(pb.PlaceBatchRequest(items=[valid_request()] * 5), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)  # let the server notice
    assert len(calls) == 2


def test_unexpected_errors_become_internal_and_are_counted(greedy_server, monkeypatch):
    service, client = greedy_server

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service.models.current.decider, "decide", broken)
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Place(valid_request())
    assert info.value.code() == grpc.StatusCode.INTERNAL and "RuntimeError" in info.value.details()
    [result] = client.place_batch([valid_request()])
    assert result.code == grpc.StatusCode.INTERNAL.value[0]
    assert value(service, "catur_internal_errors_total") == 2
    monkeypatch.undo()
    assert client.place(PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(1, 1024)).placement.total_vcpus == 1


# --- health, reflection, info, metrics -------------------------------------------------------------


def test_health_reflection_and_server_info(greedy_server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    _, client = greedy_server
    assert client.health() == "SERVING"
    assert client.health(SERVICE_NAME) == "SERVING"
    services = set(ProtoReflectionDescriptorDatabase(client.channel).get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    file = ProtoReflectionDescriptorDatabase(client.channel).FindFileContainingSymbol(SERVICE_NAME)
    assert file.name == "catur/v1/placement.proto"
    info = client.server_info()
    assert (info.policy, info.policy_name, info.model_version, info.shield.depth) == ("greedy", "greedy+shield", "", 1)
    assert list(info.primitives) == ["core-best-fit", "core-most-idle", "mem-best-fit", "mem-most-idle"]
    assert {p.name for p in info.presets} == set(PRESETS) and info.max_batch == 1024


METRIC_NAMES = [
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "catur_decision_seconds_bucket",
    "catur_decisions_total",
    "catur_shield_interventions_total",
    "catur_shield_fallbacks_total",
    "catur_gate_fired_total",
    "catur_predicted_anomalies_total",
    "catur_batch_items_total",
    "catur_internal_errors_total",
    "catur_model_info",
    "catur_model_loaded_timestamp_seconds",
    "catur_model_reloads_total",
    "catur_model_reload_failures_total",
    "catur_host_windows",
]


@pytest.fixture(scope="module")
def metrics_endpoint(greedy_server):
    from prometheus_client import start_http_server

    service, client = greedy_server
    client.place(PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(2, 4096))
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=service.metrics.registry)
    yield httpd.server_port
    httpd.shutdown()
    thread.join(timeout=5)


def test_metrics_endpoint_is_scraped(metrics_endpoint):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_endpoint}/metrics", timeout=5).read().decode()
    for name in METRIC_NAMES:
        assert f"\n{name}" in text, name
    assert 'le="1e-05"' in text  # buckets down to 10 µs
    assert 'catur_model_info{policy="greedy",version=""} 1.0' in text
    assert 'grpc_code="OK",grpc_method="Place",grpc_service="catur.v1.Placement"' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_metrics(metrics_endpoint):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_endpoint}/metrics", timeout=5).read()
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_endpoint(metrics_endpoint, tmp_path):
    """A Prometheus server on loopback scrapes the endpoint; its query API then returns our series."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: catur\n    static_configs: [{{targets: ['127.0.0.1:{metrics_endpoint}']}}]\n"
    )
    web = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        query = f"http://127.0.0.1:{web}/api/v1/query?query=grpc_server_handled_total"
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline and not found:
            time.sleep(0.5)
            try:
                answer = json.loads(urllib.request.urlopen(query, timeout=2).read())
            except OSError:
                continue
            found = answer.get("data", {}).get("result", [])
        assert found, "Prometheus did not scrape grpc_server_handled_total within 30 s"
        assert {r["metric"]["job"] for r in found} == {"catur"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


# --- reload ---------------------------------------------------------------------------------------


def test_reload_swaps_models_and_refuses_corrupt_ones(tmp_path):
    metrics = ServiceMetrics()
    live = tmp_path / "live"
    make_model(live, seed=1, version="v1")
    holder = ModelHolder(str(live), ShieldConfig(depth=1), metrics=metrics)
    assert holder.current.version == "v1"
    make_model(live, seed=2, version="v2")
    assert holder.reload("test") and holder.current.version == "v2"
    assert metrics.registry.get_sample_value("catur_model_reloads_total") == 1
    assert metrics.registry.get_sample_value("catur_model_info", {"version": "v2", "policy": "catur"}) == 1
    assert metrics.registry.get_sample_value("catur_model_info", {"version": "v1", "policy": "catur"}) is None
    for failures, how in enumerate(("json", "obs", "weights", "shape", "nan"), start=1):
        make_model(live, seed=2, version="v2")
        corrupt_model(live, how)
        serving = holder.current
        assert not holder.reload(how), how
        assert holder.current is serving and holder.current.version == "v2"
        assert holder.last_error, how
        assert metrics.registry.get_sample_value("catur_model_reload_failures_total") == failures
        decision = holder.current.decider.decide(PRESETS["intel-2s"], np.zeros(2, np.int64), np.zeros(2, np.int64), VMRequest(2, 4096))
        assert decision.model_version == "v2"
    shutil.rmtree(live)
    assert not holder.reload("gone") and holder.current.version == "v2"


def test_a_broken_model_refuses_to_start(tmp_path):
    make_model(tmp_path / "m", seed=1)
    corrupt_model(tmp_path / "m", "obs")
    with pytest.raises(ValueError, match="obs_version"):
        Service(model=str(tmp_path / "m"))


@pytest.mark.parametrize("pointer", ["symlink", "text"])
def test_the_watch_follows_the_registry_pointer(tmp_path, pointer):
    registry = tmp_path / "registry"
    for version in ("v1", "v2"):
        make_model(registry / version, seed=int(version[1]), version=version)

    def promote(version: str) -> None:
        tmp = registry / "current.tmp"
        if pointer == "symlink":
            os.symlink(version, tmp)
        else:
            tmp.write_text(version + "\n")
        os.replace(tmp, registry / "current")  # atomic promotion

    promote("v1")
    metrics = ServiceMetrics()
    holder = ModelHolder(str(registry), ShieldConfig(depth=1), metrics=metrics)
    assert holder.current.version == "v1"
    stop = threading.Event()
    thread = holder.watch(0.02, stop)
    try:
        promote("v2")
        deadline = time.monotonic() + 5
        while holder.current.version != "v2" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.current.version == "v2"
        corrupt_model(registry / "v1", "json")
        promote("v1")  # a broken promotion: v2 keeps serving
        deadline = time.monotonic() + 5
        while not metrics.registry.get_sample_value("catur_model_reload_failures_total") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metrics.registry.get_sample_value("catur_model_reload_failures_total") == 1
        assert holder.current.version == "v2"
    finally:
        stop.set()
        thread.join(timeout=5)


def test_reloads_never_fail_requests_in_flight(tmp_path):
    """Four clients hammer the service while the model is swapped (and a corrupt one refused)
    over and over: every request succeeds, decided by one of the two good models."""
    registry = tmp_path / "registry"
    make_model(registry / "a", seed=1, version="a")
    make_model(registry / "b", seed=2, version="b")
    make_model(registry / "bad", seed=3, version="bad")
    corrupt_model(registry / "bad", "weights")
    (registry / "current").write_text("a")
    service = Service(model=str(registry), shield=ShieldConfig(depth=2))
    seen, errors, stop = Counter(), [], threading.Event()

    def hammer(port: int, worker: int) -> None:
        rng = np.random.default_rng(worker)
        with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            while not stop.is_set():
                used = rng.integers(0, 30, 4)
                try:
                    d = client.place(PRESETS["amd-2s-nps2"], used, used * 2048, VMRequest(4, 8192), host_id=f"h{worker}")
                    seen[d.model_version] += 1
                except grpc.RpcError as exc:  # pragma: no cover - the failure being tested for
                    errors.append(exc)

    with serving(service) as port:
        workers = [threading.Thread(target=hammer, args=(port, w)) for w in range(4)]
        for w in workers:
            w.start()
        try:
            for i in range(30):
                (registry / "current").write_text(("a", "bad", "b")[i % 3])
                service.models.reload("test")
                time.sleep(0.01)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=10)
    assert not errors
    assert set(seen) <= {"a", "b"} and sum(seen.values()) > 30
    assert value(service, "catur_model_reload_failures_total") == 10


def test_shutdown_drains_rpcs_in_flight_and_reports_not_serving(monkeypatch):
    """Graceful stop: health flips to NOT_SERVING, an RPC in flight (0.4 s) still completes,
    and the port stops answering."""
    service = Service(model=None)
    decider = service.models.current.decider
    real = decider.decide

    def slow(*args, **kwargs):
        time.sleep(0.4)
        return real(*args, **kwargs)

    monkeypatch.setattr(decider, "decide", slow)
    server, port = create_server("127.0.0.1:0", service)
    client = PlacementClient(f"127.0.0.1:{port}", timeout=5)
    try:
        future = client.stub.Place.future(valid_request())
        time.sleep(0.1)  # the call is in the decider now
        service.shutdown(server, grace=3)
        assert future.result().primitive  # finished, not cut off
        status = service.health.Check(health_pb2.HealthCheckRequest(service=""), None).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            client.stub.Place(valid_request(), timeout=1)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        client.close()


# --- catur serve as a process ----------------------------------------------------------------


def test_catur_serve_reloads_on_sighup_and_stops_gracefully_on_sigterm(tmp_path):
    live = tmp_path / "live"
    make_model(live, seed=1, version="v1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "catur.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "0",
         "--model", str(live), "--watch-interval", "0", "--grace", "2", "--drain-seconds", "0.2", "--shield-depth", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        metrics_port = int(line.split("metrics on 127.0.0.1:")[1].split(";")[0])
        with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            assert client.place(PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(2, 4096)).model_version == "v1"
            make_model(live, seed=2, version="v2")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while client.server_info().model_version != "v2" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.server_info().model_version == "v2"
            corrupt_model(live, "json")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            scrape = ""
            while "catur_model_reload_failures_total 1.0" not in scrape and time.monotonic() < deadline:
                time.sleep(0.05)
                scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            assert "catur_model_reload_failures_total 1.0" in scrape
            assert client.place(PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(2, 4096)).model_version == "v2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log = proc.stderr.read()
        assert "refused, model v2 keeps serving" in log
        assert "health NOT_SERVING" in log and "stopped" in log
    finally:
        reap(proc)


# --- TLS -----------------------------------------------------------------------------------------


def test_tls_and_mutual_tls(certificates):
    c = certificates
    request = (PRESETS["intel-2s"], [0, 0], [0, 0], VMRequest(2, 4096))
    service = Service(model=None)
    with serving(service, TLSConfig(str(c["server_cert"]), str(c["server_key"]))) as port:
        with PlacementClient(f"localhost:{port}", timeout=5, root_certificates=c["ca"]) as client:
            assert client.place(*request).placement.total_vcpus == 2
        with PlacementClient(f"127.0.0.1:{port}", timeout=2) as plain, pytest.raises(grpc.RpcError) as info:
            plain.place(*request)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    service = Service(model=None)
    with serving(service, TLSConfig(str(c["server_cert"]), str(c["server_key"]), str(c["ca"]))) as port:
        with PlacementClient(f"localhost:{port}", timeout=2, root_certificates=c["ca"]) as anonymous, pytest.raises(grpc.RpcError):
            anonymous.place(*request)
        with PlacementClient(
            f"localhost:{port}", timeout=5, root_certificates=c["ca"], client_cert=c["client_cert"], client_key=c["client_key"]
        ) as client:
            assert client.place(*request).placement.total_vcpus == 2
            assert client.health() == "SERVING"


def test_catur_place_sends_a_resident_list(tmp_path, capsys):
    """`catur place --resident-vms` (inline or @FILE): the scorer uses the derived counts and the
    answer says so; a malformed list ends with a one-line error naming the entry."""
    from catur.cli.main import main

    service = Service(model="default", shield=ShieldConfig(depth=1))
    listed = '[{"vcpus": [8, 0], "mem_mib": [16384, 0], "age_s": 86400}, {"vcpus": [0, 4]}]'
    (tmp_path / "vms.json").write_text(listed)
    base = ["place", "--topology", "intel-2s", "--vcpus", "4", "--mem-mib", "8192", "--used-vcpus", "30,12",
            "--used-mem-mib", "61440,20480"]
    with serving(service) as port:
        target = ["--target", f"127.0.0.1:{port}"]
        for given in (listed, f"@{tmp_path / 'vms.json'}"):
            assert main([*base, *target, "--resident-vms", given]) == 0
            assert json.loads(capsys.readouterr().out)["inputs_used"] == ["usage", "residents", "resident_vms"]
        assert main([*base, *target, "--resident-vms", '[{"vcpu": [1, 0]}]']) == 2
        assert "entry 0 must be an object with vcpus" in capsys.readouterr().err
        assert main([*base, *target, "--resident-vms", "[{"]) == 2
        assert "--resident-vms: not JSON" in capsys.readouterr().err
        # The service's own check, relayed: more vCPUs listed than the node has in use.
        assert main([*base, *target, "--resident-vms", '[{"vcpus": [31, 0]}]']) != 0
        assert "usage.resident_vms put 31 vcpus on node 0" in capsys.readouterr().err
