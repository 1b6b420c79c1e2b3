"""Trace collection in the placement service, and reading the collected trace back.

* round trip over a real channel: Place, PlaceBatch and Depart recorded, read_collected joins
  them into the canonical trace; Depart without collection is a no-op answered OK;
* a replay through a collecting service leaves a collected trace equal to the replayed one;
* rotation by rows and by time; the byte budget deletes the oldest files, never a placement;
* faults: a full queue drops (and counts) rows without slowing placements; write errors
  (directory replaced, read-only) are counted and the server keeps serving, then recovers;
* bad Depart (and collection fields of Place) refused naming the field;
* hypothesis: read_collected over random interleavings of arrivals and departures across files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _service_support import random_trace
from catur.errors import CaturError
from catur.request import VMRequest
from catur.service.client import PlacementClient
from catur.service.collector import CollectorConfig, TraceCollector
from catur.service.server import Service, create_server
from catur.shield import ShieldConfig
from catur.topology import PRESETS
from catur.traces.collected import (
    ARRIVAL,
    collected_file_name,
    collected_files,
    departure_row,
    read_collected,
    read_collected_trace,
    rows_to_table,
)
from catur.traces.readers import read_trace
from catur.v1 import placement_pb2 as pb

pytestmark = pytest.mark.timeout(120)
INTEL = PRESETS["intel-2s"]


@contextlib.contextmanager
def serving(service: Service):
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    try:
        with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            yield client
    finally:
        service.shutdown(server, grace=0.5)


def value(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


def metric(metrics, name: str, **labels) -> float:
    """A collector metric's value (``name`` without the ``catur_collector_`` prefix)."""
    return metrics.registry.get_sample_value(f"catur_collector_{name}", labels or None) or 0.0


def wait_for(condition, timeout: float = 10.0) -> None:
    """Poll until ``condition()`` is true (the writer thread works asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def place(client, vm_id: str, t: float | None = None, vcpus: int = 2, host: str = "h1", **kw):
    return client.place(INTEL, [0, 0], [0, 0], VMRequest(vcpus, vcpus * 1024, **kw), host_id=host, vm_id=vm_id, time_s=t)


def rows_in(path: Path) -> int:
    return pq.read_metadata(path).num_rows


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_over_a_real_channel(tmp_path):
    """Place (with and without a time), PlaceBatch, Depart: after a graceful stop the directory
    reads back as the canonical trace, unjoinable notices reported, counters right."""
    directory = tmp_path / "trace"
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=CollectorConfig(directory))
    before = time.time()
    with serving(service) as client:
        assert client.server_info().collecting
        place(client, "1", 100.0, vcpus=4, alpha=2.0)
        place(client, "2", 101.0, vcpus=8, host="h2")
        items = [
            client.request(INTEL, [0, 0], [0, 0], VMRequest(2, 512, vnuma=2 if k else None), host_id="h3",
                           vm_id=f"b{k}", cluster="west", time_s=102.0 + k)
            for k in range(2)
        ]
        assert [len(d.placement.cpu_nodes) for d in client.place_batch(items)] == [1, 2]
        place(client, "now")  # no time: the server's clock
        assert client.depart("1", "h1", 150.0) is True
        assert client.depart("b1", "h3", 160.0) is True
        assert client.depart("ghost", "h9", 170.0) is True  # recorded, but joins nothing
    after = time.time()
    registry = service.metrics.registry
    assert value(registry, "catur_collector_rows_written_total", event="arrival") == 5
    assert value(registry, "catur_collector_rows_written_total", event="departure") == 3
    assert value(registry, "catur_collector_files_rotated_total", trigger="stop") == 1
    assert value(registry, "catur_collector_bytes") == sum(p.stat().st_size for p in collected_files(directory))
    assert not list(directory.glob("*.tmp"))

    df, report = read_collected_trace(directory)
    assert (report.vms, report.arrivals, report.departures, report.unknown_departures, report.running) == (5, 5, 3, 1, 3)
    assert any("'ghost'" in reason and "never placed" in reason for reason in report.reasons)
    df = df.set_index("source_vm_id")
    assert df.loc["1", "arrival_s"] == 100.0 and df.loc["1", "departure_s"] == 150.0
    assert df.loc["b1", "departure_s"] == 160.0 and np.isnan(df.loc["2", "departure_s"])
    assert before <= df.loc["now", "arrival_s"] <= after
    assert df.loc["2", "vcpus"] == 8 and df.loc["2", "mem_gib"] == 8.0 and df.loc["2", "source_host"] == "h2"
    assert df.loc["1", "alpha"] == 2.0 and df.loc["2", "alpha"] == 1.0  # not carried: the default
    assert df.loc["b1", "vnuma"] == 2 and df.loc["b0", "vnuma"] == 0
    assert df.loc["b0", "cluster"] == "west" and df.loc["1", "cluster"] == ""
    assert set(df["policy"]) == {"greedy"} and "host_id" not in df.columns
    assert (df["instances"] >= 1).all()
    # Ids are not all numbers ("b0", "now"): VMs are numbered in arrival order.
    assert df.sort_values("arrival_s")["vm_id"].tolist() == [0, 1, 2, 3, 4]
    assert read_trace(directory)[0].equals(read_collected(directory))  # the format is detected


def test_depart_without_collection_is_a_no_op(greedy_service):
    client = greedy_service
    assert client.server_info().collecting is False
    assert client.depart("vm-1", "h1") is False
    assert client.depart("vm-1") is False  # host_id is optional


@pytest.fixture(scope="module")
def greedy_service():
    with serving(Service(model=None, shield=ShieldConfig(depth=1))) as client:
        yield client


@pytest.mark.parametrize(
    "request_, field",
    [
        (pb.DepartRequest(host_id="h1"), "vm_id is required"),
        (pb.DepartRequest(vm_id="x" * 257), "vm_id has 257 characters"),
        (pb.DepartRequest(vm_id="v", host_id="h" * 300), "host_id has 300 characters"),
        (pb.DepartRequest(vm_id="v", time_s=float("nan")), "time_s must be a finite number"),
        (pb.DepartRequest(vm_id="v", time_s=float("inf")), "time_s must be a finite number"),
    ],
)
def test_bad_depart_requests_are_refused_naming_the_field(greedy_service, request_, field):
    with pytest.raises(grpc.RpcError) as info:
        greedy_service.stub.Depart(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()
    assert greedy_service.depart("fine") is False  # and the server keeps serving


@pytest.mark.parametrize(
    "field, set_, message",
    [
        ("vm_id", lambda m: setattr(m, "vm_id", "v" * 257), "vm_id has 257 characters"),
        ("cluster", lambda m: setattr(m, "cluster", "c" * 999), "cluster has 999 characters"),
        ("time_s", lambda m: setattr(m, "time_s", float("-inf")), "time_s must be a finite number"),
    ],
)
def test_bad_collection_fields_of_place_are_refused(greedy_service, field, set_, message):
    msg = greedy_service.request(INTEL, [0, 0], [0, 0], VMRequest(1, 512))
    set_(msg)
    with pytest.raises(grpc.RpcError) as info:
        greedy_service.stub.Place(msg, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()


def test_collector_config_is_validated(tmp_path):
    for bad in (dict(rotate_rows=0), dict(max_bytes=10), dict(queue_size=-1), dict(rotate_seconds=float("inf")),
                dict(rotate_seconds=0), dict(row_group_rows=True)):
        with pytest.raises(CaturError, match=next(iter(bad))):
            CollectorConfig(tmp_path, **bad)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CaturError, match="cannot create the trace collection directory"):
        TraceCollector(CollectorConfig(tmp_path / "file" / "sub"))


# --- replay through a collecting service ----------------------------------------------------------


def test_replay_through_a_collecting_service_collects_the_replayed_trace(tmp_path, capsys):
    """`catur replay` of a two-cluster trace through `--collect-dir` service: the collected trace
    has the same VMs, sizes, weights, clusters and times as the admitted trace."""
    from catur.cli import main

    df = random_trace(11, n=160, days=2.0)
    df["cluster"] = np.where(np.arange(len(df)) % 3 == 0, "east", "west")
    trace = tmp_path / "trace.parquet"
    df.to_parquet(trace)
    directory = tmp_path / "collected"
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=CollectorConfig(directory, rotate_rows=64))
    with serving(service) as client:
        target = client.target
        code = main(["replay", "--target", target, str(trace), "--cluster", "mixed", "--target-utilization", "0.9",
                     "--quiet", "--jobs", "1", "--concurrency", "3"])
        assert code == 0
    capsys.readouterr()
    assert value(service.metrics.registry, "catur_collector_files_rotated_total", trigger="rows") >= 3
    collected, report = read_collected_trace(directory)
    assert report.unknown_departures == report.duplicate_arrivals == report.early_departures == 0

    from catur.sim.admission import prepare_scenario

    admitted = prepare_scenario(df, "mixed", None, 0.9).admission.host_of_vm >= 0
    expected = df.loc[admitted].sort_values(["arrival_s", "vm_id"], ignore_index=True)
    assert 0 < len(expected) and len(collected) == len(expected)
    for column in ("vm_id", "arrival_s", "departure_s", "vcpus", "mem_gib", "alpha"):
        assert np.array_equal(collected[column].to_numpy(), expected[column].to_numpy(), equal_nan=True), column
    assert collected["cluster"].tolist() == expected["cluster"].tolist()
    assert collected["source_host"].nunique() > 1


def test_replay_sends_no_departures_to_a_service_that_does_not_collect(greedy_service):
    from _service_support import small_streams
    from catur.sim.remote_replay import replay_remote

    calls = []
    original = greedy_service.depart
    greedy_service.depart = lambda *a, **k: calls.append(a)  # instance attribute: this client only
    try:
        replay_remote(small_streams()[:2], greedy_service, "greedy+shield")
        assert calls == []
        replay_remote(small_streams()[:2], greedy_service, "greedy+shield", departures=True)
        assert len(calls) > 0
    finally:
        greedy_service.depart = original


# --- rotation and budget ---------------------------------------------------------------------------


def test_rotation_by_rows(tmp_path):
    collector = TraceCollector(CollectorConfig(tmp_path, rotate_rows=5, row_group_rows=2))
    for k in range(23):
        assert collector.record_departure("h", f"v{k}", float(k))
    collector.close()
    files = collected_files(tmp_path)
    assert [rows_in(p) for p in files] == [5, 5, 5, 5, 3]
    m = collector.metrics
    assert metric(m, "files_rotated_total", trigger="rows") == 4 and metric(m, "files_rotated_total", trigger="stop") == 1
    assert metric(m, "rows_written_total", event="departure") == 23
    times = pd.concat([pq.read_table(p).to_pandas() for p in files])["time_s"].tolist()
    assert times == [float(k) for k in range(23)]  # names sort by time: files in order


def test_rotation_by_time(tmp_path):
    collector = TraceCollector(CollectorConfig(tmp_path, rotate_seconds=0.2))
    try:
        collector.record_departure("h", "a")
        # Finished without a stop (the counter moves just after the rename: wait on it).
        wait_for(lambda: metric(collector.metrics, "files_rotated_total", trigger="seconds") == 1)
        assert len(collected_files(tmp_path)) == 1
        collector.record_departure("h", "b")
        wait_for(lambda: metric(collector.metrics, "files_rotated_total", trigger="seconds") == 2)
    finally:
        collector.close()
    assert metric(collector.metrics, "files_rotated_total", trigger="stop") == 0  # nothing left to finish
    assert [rows_in(p) for p in collected_files(tmp_path)] == [1, 1]


def test_budget_deletes_the_oldest_files_and_never_a_placement(tmp_path):
    """A budget of about three files: all 60 placements succeed, the oldest files go, the
    newest VMs are all there, and the counters add up."""
    config = CollectorConfig(tmp_path, rotate_rows=5, row_group_rows=5, max_bytes=12_000)
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=config)
    with serving(service) as client:
        for k in range(60):
            assert place(client, str(k), float(k)).placement.cpu_nodes.size == 1
    m = service.collector.metrics
    rotated = sum(metric(m, "files_rotated_total", trigger=t) for t in ("rows", "bytes", "seconds", "stop"))
    files = collected_files(tmp_path)
    assert rotated == 12 and metric(m, "files_deleted_total") == rotated - len(files) > 0
    sizes = [p.stat().st_size for p in files]
    assert sum(sizes) <= config.max_bytes and metric(m, "bytes") == sum(sizes)
    df, report = read_collected_trace(tmp_path)
    kept = df["vm_id"].tolist()
    assert kept == list(range(60 - len(kept), 60))  # the newest, contiguous up to the last one
    assert metric(m, "rows_written_total", event="arrival") == 60 and metric(m, "rows_dropped_total", reason="queue_full") == 0


def test_budget_leaves_other_files_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("x" * 50_000)  # bigger than the budget, not ours
    collector = TraceCollector(CollectorConfig(tmp_path, rotate_rows=1, max_bytes=9000))
    for k in range(6):
        collector.record_departure("h", str(k), float(k))
    collector.close()
    assert (tmp_path / "notes.txt").exists() and len(collected_files(tmp_path)) == 2
    assert metric(collector.metrics, "files_deleted_total") == 4


# --- faults ----------------------------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_without_slowing_placements(tmp_path):
    """The writer is stuck (a hook blocks it): placements stay fast, rows beyond the queue are
    dropped and counted exactly, Depart says so, and the queued rows are written afterwards."""
    entered, release = threading.Event(), threading.Event()

    def stuck_disk():
        entered.set()
        release.wait(60)

    config = CollectorConfig(tmp_path, queue_size=5, row_group_rows=1)
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=config, collector_hook=stuck_disk)
    with serving(service) as client:
        place(client, "0", 0.0)
        assert entered.wait(10)  # the writer holds row 0 and is stuck
        latencies = []
        for k in range(1, 50):
            t0 = time.perf_counter()
            place(client, str(k), float(k))
            latencies.append(time.perf_counter() - t0)
        assert client.depart("3", "h1", 99.0) is False  # the queue is still full
        m = service.collector.metrics
        assert metric(m, "rows_dropped_total", reason="queue_full") == 49 - 5 + 1
        assert max(latencies) < 1.0  # a blocking put would wait for the release below
        release.set()
    assert metric(m, "rows_written_total", event="arrival") == 6
    assert read_collected(tmp_path)["vm_id"].tolist() == [0, 1, 2, 3, 4, 5]


def test_write_errors_are_counted_and_the_server_keeps_serving(tmp_path):
    """The directory is replaced by a file: every write fails, is counted, placements go on;
    once the directory can be made again, collection resumes by itself."""
    directory = tmp_path / "trace"
    config = CollectorConfig(directory, rotate_rows=1, row_group_rows=1)
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=config)
    m = service.collector.metrics
    with serving(service) as client:
        place(client, "0", 0.0)
        wait_for(lambda: metric(m, "files_rotated_total", trigger="rows") == 1)
        shutil.rmtree(directory)
        directory.write_text("in the way")
        for k in range(1, 4):
            place(client, str(k), float(k))
        wait_for(lambda: metric(m, "write_errors_total") == 3)
        assert metric(m, "rows_dropped_total", reason="write_error") == 3
        assert client.depart("0", "h1", 9.0) is True  # queued; its write fails too
        wait_for(lambda: metric(m, "write_errors_total") == 4)
        directory.unlink()
        for k in range(4, 6):
            place(client, str(k), float(k))
        assert client.health() == "SERVING"
    assert metric(m, "rows_written_total", event="arrival") == 3  # rows 0, 4, 5: 0's file went with the directory
    assert read_collected(directory)["vm_id"].tolist() == [4, 5]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_directory_is_a_counted_write_error(tmp_path):  # pragma: no cover - not as root
    collector = TraceCollector(CollectorConfig(tmp_path, rotate_rows=1))
    tmp_path.chmod(0o500)
    try:
        assert collector.record_departure("h", "a")
        wait_for(lambda: metric(collector.metrics, "write_errors_total") == 1)
    finally:
        tmp_path.chmod(0o700)
        collector.close()
    assert metric(collector.metrics, "rows_dropped_total", reason="write_error") == 1


def test_crash_leftovers_are_removed_once_stale(tmp_path, caplog):
    """A collector starting on a directory deletes the ``.tmp`` files a crash left (untouched
    for more than 2 × rotate_seconds + 60 s), keeps a young one that a live writer may own,
    and touches nothing else; readers never saw the leftovers."""
    finished = write_file(tmp_path, [arrival("a", 1.0)], seq=1)
    stale = tmp_path / (collected_file_name(1_700_000_000, 99, 1) + ".tmp")
    young = tmp_path / (collected_file_name(1_700_000_100, 98, 1) + ".tmp")
    other = tmp_path / "notes.tmp"
    for path in (stale, young, other):
        path.write_bytes(b"PAR1 no footer")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(other, (an_hour_ago, an_hour_ago))
    with caplog.at_level("WARNING", logger="catur.service.collector"):
        collector = TraceCollector(CollectorConfig(tmp_path, rotate_seconds=600.0))
        collector.close()
    assert not stale.exists()
    assert young.exists() and other.exists() and finished.exists()
    assert stale.name in caplog.text and young.name not in caplog.text
    assert collected_files(tmp_path) == [finished]


def test_rows_after_close_are_counted_as_stopped(tmp_path):
    collector = TraceCollector(CollectorConfig(tmp_path))
    collector.close()
    assert collector.record_departure("h", "late") is False
    assert metric(collector.metrics, "rows_dropped_total", reason="stopped") == 1
    collector.close()  # idempotent


# --- reading ----------------------------------------------------------------------------------------


def write_file(directory: Path, rows: list[tuple], seq: int) -> Path:
    path = directory / collected_file_name(1_700_000_000 + seq, 1, seq)
    pq.write_table(rows_to_table(rows), path)
    return path


def arrival(vm_id: str, t: float, vcpus: int = 1, host: str = "h") -> tuple:
    return (ARRIVAL, t, t, host, vm_id, "", vcpus, 1024 * vcpus, None, 1, None, None, "greedy", "core-best-fit", "")


def test_bad_files_and_rows_are_named(tmp_path):
    write_file(tmp_path, [arrival("1", 5.0)], 1)
    (tmp_path / collected_file_name(1_700_000_009, 1, 9)).write_bytes(b"PAR1 broken")
    (tmp_path / "catur-trace-20240101T000000.000000Z-p1-000001.parquet.tmp").write_bytes(b"half written")
    with pytest.raises(CaturError, match=r"p1-000009\.parquet: cannot read as a collected trace file"):
        read_collected(tmp_path)
    df, report = read_collected_trace(tmp_path, skip_bad_rows=True)
    assert len(df) == 1 and report.files_skipped == 1

    other = tmp_path / "other"
    other.mkdir()
    write_file(other, [arrival("1", 5.0), arrival("2", 6.0, vcpus=0)], 1)
    with pytest.raises(CaturError, match=r"row 2 \(vm 2\): field 'vcpus' = 0: must be >= 1 on an arrival"):
        read_collected(other)
    assert read_collected_trace(other, skip_bad_rows=True)[0]["vm_id"].tolist() == [1]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pd.DataFrame({"vm_id": [1]}).to_parquet(foreign / collected_file_name(1_700_000_002, 1, 2))
    with pytest.raises(CaturError, match="not a catur collected trace file"):
        read_collected(foreign)


def test_an_empty_directory_is_refused_clearly(tmp_path):
    with pytest.raises(CaturError, match=r"no collected trace files .*\(catur serve --collect-dir\)"):
        read_trace(tmp_path)
    with pytest.raises(CaturError, match="not found"):
        read_collected(tmp_path / "missing")


@st.composite
def collected_events(draw):
    """VMs with arrivals, departures, and the mess a live service produces: repeated
    arrivals and departures, departures of unknown VMs, departures before arrival; all rows
    shuffled and split over several files."""
    n = draw(st.integers(1, 12))
    numeric = draw(st.booleans())
    ids = [str(k * 7) if numeric else f"vm-{k}" for k in range(n)]
    rows, expected = [], []
    counts = dict(duplicate_arrivals=0, duplicate_departures=0, unknown_departures=0, early_departures=0)
    for vm in ids:
        t = float(draw(st.integers(0, 1000)))
        vcpus = draw(st.integers(1, 64))
        rows.append(arrival(vm, t, vcpus, host=f"h{vcpus % 3}"))
        life = draw(st.none() | st.integers(0, 500))
        departure = np.nan if life is None else t + life
        if life is not None:
            rows.append(departure_row(departure, 0.0, "h", vm))
            if draw(st.booleans()):
                rows.append(departure_row(departure + draw(st.integers(1, 50)), 0.0, "h", vm))
                counts["duplicate_departures"] += 1
        if draw(st.booleans()):
            rows.append(arrival(vm, t + draw(st.integers(1, 50)), vcpus + 1))
            counts["duplicate_arrivals"] += 1
        if draw(st.integers(0, 4)) == 0:
            rows.append(departure_row(t - draw(st.integers(1, 50)), 0.0, "h", vm))
            counts["early_departures"] += 1
        expected.append((vm, t, departure, vcpus))
    for k in range(draw(st.integers(0, 3))):
        rows.append(departure_row(float(draw(st.integers(0, 1500))), 0.0, "h", f"ghost-{k}"))
        counts["unknown_departures"] += 1
    order = draw(st.permutations(range(len(rows))))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=3)))
    shuffled = [rows[i] for i in order]
    files = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)]) if b > a]
    return files, expected, counts, numeric


@pytest.mark.slow
@given(collected_events())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_read_collected_joins_any_interleaving(tmp_path_factory, case):
    files, expected, counts, numeric = case
    directory = tmp_path_factory.mktemp("collected")
    for seq, rows in enumerate(files):
        write_file(directory, rows, seq)
    df, report = read_collected_trace(directory)
    assert report.rows_read == sum(len(rows) for rows in files)
    for key, count in counts.items():
        assert getattr(report, key) == count, key
    assert report.rows_skipped == sum(counts.values())
    want = pd.DataFrame(expected, columns=["source_vm_id", "arrival_s", "departure_s", "vcpus"])
    got = df.set_index("source_vm_id").loc[want["source_vm_id"]]
    assert len(df) == len(want)
    assert np.array_equal(got["arrival_s"].to_numpy(), want["arrival_s"].to_numpy())
    assert np.array_equal(got["departure_s"].to_numpy(), want["departure_s"].to_numpy(), equal_nan=True)
    assert np.array_equal(got["vcpus"].to_numpy(), want["vcpus"].to_numpy())
    assert np.array_equal(got["mem_gib"].to_numpy(), want["vcpus"].to_numpy() * 1.0)
    if numeric:
        assert (got["vm_id"].astype(str) == want["source_vm_id"].to_numpy()).all()
    else:  # numbered in arrival order
        assert df["vm_id"].tolist() == list(range(len(df)))
    assert df["arrival_s"].is_monotonic_increasing and report.running == int(np.isnan(want["departure_s"]).sum())


def test_the_cli_serves_with_collection_and_reads_it_back(tmp_path, capsys):
    """`catur depart` against a collecting server; `catur traces convert DIR out.parquet`; bad
    --collect-* values end with a one-line error."""
    from catur.cli import main

    directory = tmp_path / "c"
    service = Service(model=None, shield=ShieldConfig(depth=1), collect=CollectorConfig(directory))
    with serving(service) as client:
        assert main(["place", "--target", client.target, "--topology", "intel-2s", "--vcpus", "2", "--mem-mib", "2048",
                     "--vm-id", "vm-9", "--host-id", "h", "--cluster", "c1", "--time", "5"]) == 0
        assert main(["depart", "--target", client.target, "--vm-id", "vm-9", "--host-id", "h", "--time", "8.5"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"recorded": True}
    out = tmp_path / "out.parquet"
    assert main(["traces", "convert", str(directory), str(out)]) == 0
    converted = pd.read_parquet(out)
    assert converted[["arrival_s", "departure_s", "vcpus"]].values.tolist() == [[5.0, 8.5, 2]]
    assert converted["cluster"].tolist() == ["c1"]
    assert main(["serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--collect-dir", str(directory),
                 "--collect-max-mb", "0"]) == 2
    assert "catur: error: --collect-max-mb must be > 0" in capsys.readouterr().err
