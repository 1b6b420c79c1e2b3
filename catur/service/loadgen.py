"""Load for a placement service, shared by the tests and the benchmarks: a valid request, and
serve -> load -> SIGTERM cycles of ``catur serve`` with what each shows.

It lives in the package (not in ``tests/``) so that benchmarks import it like any module:
``tests/test_service_lifecycle.py`` runs a few cycles, ``benchmarks/bench_stop.py`` 200, and
``benchmarks/bench_interceptor.py`` and the service tests send :func:`valid_request`. A cycle:

1. starts ``catur serve --collect-dir DIR --drain-seconds D --grace G`` (greedy, no metrics
   port: the lightest server that still collects), or with ``process=False`` the same
   server in this process, stopped by :meth:`Service.shutdown` (no signal, no exit; much
   cheaper, so the test suite runs more of those cycles);
2. runs ``clients`` hypervisor-like threads, each on its own channel, sending ``Place`` (every
   third thread ``PlaceBatch`` of ``batch`` items, calls that take a while) with fresh vm_ids
   and a ``Depart`` for every other VM placed; a thread stops at its first UNAVAILABLE, as a
   client behind a load balancer would move to another replica;
3. polls health (``Check``) every ``poll_s`` seconds from another thread;
4. sends SIGTERM after ``load_s`` seconds and waits for the exit: past ``hang_s`` the stop
   is *slow*, and past six times that, a *hang* (then SIGKILL).

Times are taken on the client side, so "during the drain" is judged with a margin.

:func:`check` turns the record into a list of problems: a hang or a non-zero exit; any call
answered other than OK or UNAVAILABLE (an in-flight call cancelled or failed); a call
started in the first half of the drain refused (the half: a call reaches the server a little
after the client sends it, and on a busy machine a little can be a lot); health seen SERVING after
NOT_SERVING, or NOT_SERVING for less than the drain before the port closed; a placement answered OK or a departure
recorded that is missing from the collected files.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from catur.v1 import placement_pb2 as pb
from catur.v1 import placement_pb2_grpc as pb_grpc


def node_client_problem(client: Path) -> str | None:
    """Why the Node.js load client at ``client`` (``benchmarks/grpc-js-load/load.js``) cannot
    run here, or None: no ``node`` on PATH, or its npm modules not installed."""
    import shutil

    if shutil.which("node") is None:
        return "no 'node' on PATH (the grpc-js client needs Node.js)"
    if not (client.parent / "node_modules" / "@grpc" / "grpc-js").exists():
        return f"the grpc-js client's modules are missing: run 'npm install --prefix {client.parent}' first"
    return None


def node_client_ready(client: Path, smoke: bool) -> bool:
    """Whether a benchmark can run the Node.js client at ``client``. If not, a ``--smoke`` run
    prints why ("skipped: ...") and the benchmark returns 0; a real run stops with the reason."""
    problem = node_client_problem(client)
    if problem is None:
        return True
    if smoke:
        print(f"skipped: {problem}")
        return False
    raise SystemExit(problem)


def valid_request(preset: str = "amd-2s-nps2") -> pb.PlaceRequest:
    """A valid PlaceRequest on the shipped ``preset`` with some usage on every node."""
    from catur.topology import PRESETS

    n = PRESETS[preset].num_nodes
    return pb.PlaceRequest(
        topology=pb.HostTopology(preset=preset),
        usage=pb.NodeUsage(used_vcpus=[3] * n, used_mem_mib=[4096] * n),
        vm=pb.VM(vcpus=4, mem_mib=8192),
        request_id="r-1",
        host_id="h-1",
    )


@dataclass
class CycleRecord:
    """What one cycle saw (times are ``time.monotonic()`` on the test side)."""

    drain_s: float
    started_s: float = 0.0  # seconds from Popen to "listening"
    sigterm_at: float = 0.0
    exit_s: float = 0.0  # SIGTERM to exit
    returncode: int | None = None
    hung: bool = False
    slow: bool = False  # not exited within hang_s, but exited by itself later (exit_s says when)
    grace_expired: bool = False  # the server cut calls still running at the grace's end
    calls: Counter = field(default_factory=Counter)  # status code name -> count
    bad_calls: list = field(default_factory=list)  # (started_at, code, details)
    early_refusals: list = field(default_factory=list)  # UNAVAILABLE on a call started during the drain
    placed: set = field(default_factory=set)
    departed: set = field(default_factory=set)
    health: list = field(default_factory=list)  # (at, "SERVING" / "NOT_SERVING" / error code name)
    watch: list = field(default_factory=list)  # an open Watch's statuses, then its final code
    stderr: str = ""


def _client_options(retrying: bool) -> list:
    if not retrying:
        return []
    from catur.service.client import service_config

    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config())]


def _request(vm_id: str, host: str) -> pb.PlaceRequest:
    return pb.PlaceRequest(
        topology=pb.HostTopology(preset="intel-2s"),
        usage=pb.NodeUsage(used_vcpus=[2, 3], used_mem_mib=[4096, 8192]),
        vm=pb.VM(vcpus=2, mem_mib=4096),
        host_id=host,
        vm_id=vm_id,
    )


class _Process:
    """``catur serve`` in a subprocess, stopped by SIGTERM."""

    def __init__(self, directory: Path, drain_s: float, grace_s: float) -> None:
        self.proc = subprocess.Popen(
            # -X faulthandler: a hung server is stopped with SIGABRT, which dumps every thread's stack.
            [sys.executable, "-X", "faulthandler", "-m", "catur.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1",
             "--model", "none", "--watch-interval", "0", "--log-level", "WARNING", "--collect-dir", str(directory),
             "--drain-seconds", str(drain_s), "--grace", str(grace_s)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on 127.0.0.1:" not in line:
            self.close()
            raise RuntimeError(f"catur serve did not start: {line!r}")
        self.target = "127.0.0.1:" + line.split("listening on 127.0.0.1:")[1].split()[0]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)  # stacks to stderr (faulthandler), then gone
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


class _InProcess:
    """The same server in this process (:class:`Service` + ``create_server``), stopped by
    calling :meth:`Service.shutdown` from a thread: everything but the signal and the exit."""

    def __init__(self, directory: Path, drain_s: float, grace_s: float) -> None:
        from catur.service.collector import CollectorConfig
        from catur.service.server import Service, create_server
        from catur.shield import ShieldConfig

        self.service = Service(model=None, shield=ShieldConfig(depth=1), collect=CollectorConfig(directory))
        self.server, port = create_server("127.0.0.1:0", self.service)
        self.target = f"127.0.0.1:{port}"
        self.drain_s, self.grace_s = drain_s, grace_s
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._shutdown, daemon=True)

    def _shutdown(self) -> None:
        try:
            self.service.shutdown(self.server, self.grace_s, drain=self.drain_s)
        except BaseException as exc:  # pragma: no cover - reported as a failed exit
            self.error = exc

    def stop(self) -> None:
        self.thread.start()

    def wait(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            return None
        return 0 if self.error is None else 1

    def close(self) -> str:
        return "" if self.error is None else repr(self.error)


def run_cycle(
    directory: Path,
    *,
    process: bool = True,
    clients: int = 6,
    batch: int = 200,
    load_s: float = 0.4,
    drain_s: float = 0.3,
    grace_s: float = 5.0,
    poll_s: float = 0.002,
    hang_s: float = 20.0,
    tag: str = "c",
    retrying: bool = False,
    watch: bool = False,
) -> CycleRecord:
    """One cycle (see the module docstring). ``retrying``: the clients use the shipped service
    config (retries of UNAVAILABLE) and keep calling the same address after an UNAVAILABLE
    until the server has exited, as a single replica's clients do. ``watch``: a health
    ``Watch`` stream stays open through the stop; its statuses and final code are recorded."""
    record = CycleRecord(drain_s=drain_s)
    t0 = time.monotonic()
    server = (_Process if process else _InProcess)(directory, drain_s, grace_s)
    try:
        record.started_s = time.monotonic() - t0
        target = server.target
        lock = threading.Lock()
        watching = threading.Event()

        exited = threading.Event()

        def client(k: int) -> None:
            with grpc.insecure_channel(target, options=_client_options(retrying)) as channel:
                stub = pb_grpc.PlacementStub(channel)
                i = 0
                while True:
                    i += 1
                    ids = [f"{tag}-{k}-{i}-{j}" for j in range(batch if k % 3 == 2 else 1)]
                    # Built before the clock starts: a 200-item batch takes a while on a busy machine.
                    message = pb.PlaceBatchRequest(items=[_request(v, f"h{k}") for v in ids]) if len(ids) > 1 else _request(ids[0], f"h{k}")
                    started = time.monotonic()
                    try:
                        if len(ids) > 1:
                            resp = stub.PlaceBatch(message, timeout=10)
                            done = [v for v, r in zip(ids, resp.results) if r.WhichOneof("outcome") == "placement"]
                        else:
                            stub.Place(message, timeout=10)
                            done = ids
                        with lock:
                            record.calls["OK"] += 1
                            record.placed.update(done)
                        if i % 2 == 0:
                            started = time.monotonic()
                            if stub.Depart(pb.DepartRequest(vm_id=ids[0], host_id=f"h{k}"), timeout=10).recorded:
                                with lock:
                                    record.departed.add(ids[0])
                            with lock:
                                record.calls["OK"] += 1
                    except grpc.RpcError as exc:
                        code = exc.code()
                        with lock:
                            record.calls[code.name] += 1
                            if code != grpc.StatusCode.UNAVAILABLE:
                                record.bad_calls.append((started, code.name, exc.details()))
                            elif record.sigterm_at and started < record.sigterm_at + drain_s / 2:
                                record.early_refusals.append((started, exc.details()))
                        if code == grpc.StatusCode.UNAVAILABLE and (not retrying or exited.is_set()):
                            return
                        if code != grpc.StatusCode.UNAVAILABLE and retrying:
                            return

        def watcher() -> None:
            with grpc.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                watching.set()
                while True:
                    try:
                        status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                        record.health.append((time.monotonic(), health_pb2.HealthCheckResponse.ServingStatus.Name(status)))
                    except grpc.RpcError as exc:
                        record.health.append((time.monotonic(), exc.code().name))
                        return
                    time.sleep(poll_s)

        def watch_stream() -> None:
            with grpc.insecure_channel(target) as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=hang_s * 6)
                try:
                    for answer in stream:
                        record.watch.append(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
                    record.watch.append(stream.code().name)
                except grpc.RpcError as exc:
                    record.watch.append(exc.code().name)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        threads.append(threading.Thread(target=watcher, daemon=True))
        if watch:
            threads.append(threading.Thread(target=watch_stream, daemon=True))
        for t in threads:
            t.start()
        watching.wait(5)
        time.sleep(load_s)
        record.sigterm_at = time.monotonic()
        server.stop()
        record.returncode = server.wait(hang_s)
        if record.returncode is None:  # slow or hung: a busy machine can be very slow; wait and see
            record.slow = True
            record.returncode = server.wait(hang_s * 5)
            record.hung = record.returncode is None
        record.exit_s = time.monotonic() - record.sigterm_at
        exited.set()
        for t in threads:
            t.join(timeout=15)
    finally:
        record.stderr = server.close()
        record.grace_expired = "still running after the" in record.stderr
    return record


def not_serving_span(record: CycleRecord) -> tuple[float, bool]:
    """Seconds from the first NOT_SERVING the watcher saw to the port closing (its first
    error; the last NOT_SERVING if none came), and whether the answers ran SERVING*,
    NOT_SERVING+, then errors, in that order."""
    states = [s for _, s in record.health]
    first = next((i for i, s in enumerate(states) if s == "NOT_SERVING"), None)
    if first is None:
        return 0.0, False
    last = max(i for i, s in enumerate(states) if s == "NOT_SERVING")
    ordered = all(s == "SERVING" for s in states[:first]) and all(s == "NOT_SERVING" for s in states[first:last + 1])
    ordered = ordered and all(s not in ("SERVING", "NOT_SERVING") for s in states[last + 1:])
    closed = record.health[last + 1][0] if last + 1 < len(states) else record.health[last][0]
    return closed - record.health[first][0], ordered


def check(record: CycleRecord, directory: Path) -> list[str]:
    """The problems this cycle shows (empty: none)."""
    from catur.traces.collected import read_collected

    problems = []
    if record.hung:
        problems.append(f"hung: no exit {record.exit_s:.1f} s after SIGTERM; stacks: {record.stderr[-3000:]}")
    elif record.slow:
        problems.append(f"slow: exit {record.exit_s:.1f} s after SIGTERM")
    elif record.returncode != 0:
        problems.append(f"exit status {record.returncode}: {record.stderr[-500:]}")
    if record.bad_calls:
        problems.append(f"{len(record.bad_calls)} calls failed: {record.bad_calls[:3]}")
    if record.early_refusals:
        problems.append(f"{len(record.early_refusals)} calls started during the drain were refused: {record.early_refusals[:3]}")
    if record.watch and record.watch[-2:] != ["NOT_SERVING", "OK"]:
        problems.append(f"the open Watch did not end NOT_SERVING then OK: {record.watch[-4:]}")
    span, ordered = not_serving_span(record)
    if not ordered:
        problems.append(f"health answers out of order: {[s for _, s in record.health][-8:]}")
    if span < record.drain_s:
        problems.append(f"NOT_SERVING seen for {span:.3f} s before the port closed, less than the {record.drain_s} s drain")
    if record.placed:
        df = read_collected(directory)
        collected = set(df["source_vm_id"].astype(str))
        missing = record.placed - collected
        if missing:
            problems.append(f"{len(missing)} of {len(record.placed)} placements answered OK are not on disk, e.g. {sorted(missing)[:3]}")
        gone = set(df.loc[df["departure_s"].notna(), "source_vm_id"].astype(str))
        lost = record.departed - gone
        if lost:
            problems.append(f"{len(lost)} of {len(record.departed)} departures recorded are not on disk, e.g. {sorted(lost)[:3]}")
    else:
        problems.append("no placement was answered before the stop")
    return problems


def start_serve(*options: str, cwd=None, stderr=None):
    """Start ``catur serve`` as a process on a free loopback port: greedy, no model watch,
    WARNING logs, metrics off unless ``options`` say otherwise (later options win). Returns
    ``(process, "127.0.0.1:PORT", metrics port or None)`` once it listens; ``cwd`` picks the
    ``catur`` package run (another commit's export, for a baseline)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "catur.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--model", "none",
         "--watch-interval", "0", "--log-level", "WARNING", *options],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=cwd,
    )
    line = proc.stdout.readline()
    if "listening on 127.0.0.1:" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"catur serve did not start: {line!r}")
    target = "127.0.0.1:" + line.split("listening on 127.0.0.1:")[1].split()[0]
    metrics = int(line.split("metrics on 127.0.0.1:")[1].split(";")[0]) if "metrics on 127.0.0.1:" in line else None
    return proc, target, metrics
