"""``catur serve``, ``catur place``, ``catur depart``, ``catur replay`` and ``catur health``: the
placement service and its clients.

Only argparse is imported here; grpc and the rest load when a command runs, so other
``catur`` commands stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catur.cli.options import add_command
from catur.errors import CaturError
from catur.service import DEFAULT_LISTEN
from catur.service.admission import DEFAULT_WORKERS

EPILOG_SERVE = """examples:
  catur serve                                   # shipped model if any, else greedy; 127.0.0.1:50051
  catur serve --model models/registry --watch-interval 5 --metrics-port 9464
  catur serve --listen 0.0.0.0:50051 --tls-cert srv.pem --tls-key srv.key --tls-client-ca ca.pem
  catur serve --collect-dir /var/lib/catur/trace --collect-max-mb 2048   # also record the workload
  catur serve --listen 0.0.0.0:50051 --processes 4   # 4 processes on one port (SO_REUSEPORT); metrics on 9464..9467

Signals: SIGTERM/SIGINT = graceful stop in three phases:
  1. drain: health NOT_SERVING for --drain-seconds while every call is still answered, so
     load balancers and health-checking clients move traffic away;
  2. refuse: new calls get UNAVAILABLE (clients retry elsewhere) while the calls admitted
     finish, for up to --grace seconds;
  3. close: the port closes, the trace collector writes what it holds, exit 0.
  A second SIGTERM/SIGINT during the drain cuts it short (Ctrl-C twice stops at once).
Load shedding: --workers calls are decided at once, the others wait in line; past the
concurrency limit (auto: workers + measured capacity x --target-queue-ms) a call is refused
RESOURCE_EXHAUSTED at once, and so is a call whose deadline the line ahead leaves no time for;
no work is done for either. Clients should retry UNAVAILABLE (catur.service.client.service_config).
SIGHUP = reload the model (a corrupt or mismatched model is refused, the previous one keeps
serving, catur_model_reload_failures_total counts it).
--model: none (greedy), resident-greedy (greedy that also weighs the VMs already on each node,
for requests that send usage.residents), auto (default: the shipped model if the package has one,
else greedy), default (the shipped model), a model directory (manifest.json + weights.npz), or a registry
directory whose 'current' symlink or text file names the model directory to serve.
"""

EPILOG_PLACE = """examples:
  catur place --topology amd-2s-nps2 --vcpus 8 --mem-mib 16384
  catur place --topology intel-2s --vcpus 4 --mem-mib 8192 --used-vcpus 30,12 --used-mem-mib 61440,20480 --host-id h7
  catur place --topology intel-2s --vcpus 4 --mem-mib 8192 --used-vcpus 30,12 --used-mem-mib 61440,20480 --residents 11,3
      (a service run with --model resident-greedy then also weighs how many VMs each node holds;
       the answer's inputs_used says whether the counts were used)
  catur place --topology intel-2s --vcpus 4 --mem-mib 8192 --used-vcpus 30,12 --used-mem-mib 61440,20480 \
      --resident-vms '[{"vcpus": [8, 0], "mem_mib": [16384, 0], "age_s": 86400}, {"vcpus": [0, 4]}]'
      (the VMs on the host instead of counts: the counts are derived from the list)
"""

EPILOG_REPLAY = """examples:
  catur replay --target 127.0.0.1:50051 --synthetic default --days 8:14
  catur replay --target 127.0.0.1:50051 trace.csv.gz --cluster intel-2s --also greedy,xen
  catur replay --target 127.0.0.1:50051 VM_data_C1.csv --start-state PM_res.csv --also xen
      (real fragmented hosts: each host's usage starts from the start state and is sent
      with every request, as a hypervisor would)

Admits the trace onto the cluster exactly as 'catur evaluate' does, then replays each host's
arrivals and departures through the service (host state kept here, host_id = host number),
and prints the same metrics table as 'catur evaluate'. For the same model and shield, the
numbers equal offline evaluation's.

Each placement carries the VM's trace vm_id, cluster and arrival time; when the service
collects traces (catur serve --collect-dir), departures are sent too (Depart, with their
trace times), so the service's collected trace equals the replayed one.
"""


def add_client_arguments(p: argparse.ArgumentParser, timeout: float, timeout_help: str = "deadline in seconds") -> None:
    """Where a client command connects: --target and --timeout (its default per command)."""
    p.add_argument("--target", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"service address (default {DEFAULT_LISTEN})")
    p.add_argument("--timeout", type=float, default=timeout, help=f"{timeout_help} (default {timeout:g})")


def _limit(text: str) -> int | None:
    """``--max-concurrent-rpcs``: a whole number >= 1, or ``auto`` (None: adaptive)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or 'auto', got {value}")
    return value


def _grpc_arg(text: str) -> tuple[str, int | str]:
    """``--grpc-arg KEY=VALUE``: a grpc channel argument; VALUE an integer or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("grpc.") or not value:
        raise argparse.ArgumentTypeError(f"expected grpc.KEY=VALUE (e.g. grpc.max_concurrent_streams=32), got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        return key, value


def add_client_tls_arguments(p: argparse.ArgumentParser) -> None:
    """Add the client-side TLS options (``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``) to
    ``p``."""
    g = p.add_argument_group("TLS (client)")
    g.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --tls-ca)")
    g.add_argument("--tls-ca", metavar="PEM", help="CA certificate that signed the server's certificate")
    g.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS")
    g.add_argument("--tls-key", metavar="PEM", help="client key, for mutual TLS")
    g.add_argument("--tls-server-name", metavar="NAME", help="name to check the server certificate against")


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur serve``, ``place``, ``depart``, ``replay`` and ``health`` on ``sub``."""
    p = add_command(
        sub, "serve", cmd_serve,
        help="run the gRPC placement service",
        description="Serve NUMA placement decisions over gRPC (catur.v1.Placement), with health, "
        "reflection, Prometheus metrics, TLS and hot model reload.",
        epilog=EPILOG_SERVE,
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 = any free port)")
    p.add_argument("--model", default="auto", metavar="DIR|default|none|resident-greedy|auto", help="model to serve (default: auto)")
    p.add_argument("--no-gate", action="store_true", help="ignore the model's uncertainty gate")
    p.add_argument("--shield-depth", type=int, default=1, metavar="D", help="shield look-ahead depth; 0 = off (default 1)")
    p.add_argument("--shield-width", type=float, default=5.0, metavar="N", help="a VM type is popular when at least N%% of a host's recent requests have it (default 5, as in 'catur evaluate')")
    p.add_argument("--shield-window", type=int, default=1000, metavar="K", help="recent requests remembered per host_id (default 1000)")
    p.add_argument("--max-hosts", type=int, default=4096, help="most host_id windows kept by a depth >= 2 shield, least recently used dropped; ~90 KiB each (default 4096)")
    p.add_argument("--max-batch", type=int, default=1024, help="most items per PlaceBatch call (default 1024)")
    g = p.add_argument_group("load shedding (see docs/howto/serving-under-pressure.md)")
    g.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="calls decided at once; the others wait in line, first come first "
                   "served (default %(default)s: decisions hold Python's GIL, so more deciding threads add no throughput and "
                   "delay grpc's own thread; for more cores use --processes)")
    g.add_argument("--max-concurrent-rpcs", type=_limit, default=None, metavar="N|auto",
                   help="most calls in the server (running + waiting; health checks not counted); past it, RESOURCE_EXHAUSTED at once. "
                   "auto (default): workers + measured capacity x --target-queue-ms, between --min-limit and --max-limit")
    g.add_argument("--target-queue-ms", type=float, default=200.0, metavar="MS",
                   help="with the auto limit, the longest a call should wait in line at full load (default 200)")
    g.add_argument("--min-limit", type=int, default=16, metavar="N", help="floor of the auto limit (default 16)")
    g.add_argument("--max-limit", type=int, default=512, metavar="N", help="ceiling of the auto limit (default 512)")
    g.add_argument("--processes", type=int, default=1, metavar="N",
                   help="serving processes on the one port, each its own grpc server with its own --workers (grpcio serves "
                   "a process's calls from one Python thread); the kernel spreads connections, not calls, over them; metrics "
                   "on --metrics-port, +1, ... (default 1)")
    g.add_argument("--reuse-port", action="store_true",
                   help="let other processes serve the same port (SO_REUSEPORT), e.g. one catur serve per core under systemd "
                   "(default: off, a port already served is an error)")
    g.add_argument("--grpc-arg", type=_grpc_arg, action="append", default=[], metavar="grpc.KEY=VALUE",
                   help="an extra grpc server channel argument (repeatable), e.g. grpc.max_concurrent_streams=32 or "
                   "grpc.server_max_unrequested_time_in_server=1; measured effects in docs/results/serving.md (none is on by default)")
    p.add_argument("--metrics-port", type=int, default=9464, metavar="PORT", help="Prometheus endpoint port (default 9464; 0 = any free port; -1 = off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="Prometheus endpoint address (default 127.0.0.1)")
    p.add_argument("--watch-interval", type=float, default=5.0, metavar="S", help="seconds between checks of the model files for a new model (default 5; 0 = off)")
    p.add_argument("--drain-seconds", type=float, default=5.0, metavar="S", help="on SIGTERM, seconds of health NOT_SERVING while still answering, before new calls are refused (default 5: a load balancer polling health every 2 s sees it twice; 0 = refuse at once)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S", help="after the drain, seconds the calls in flight may take to finish (default 5)")
    g = p.add_argument_group("TLS (server)")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    g.add_argument("--tls-key", metavar="PEM", help="server private key")
    g.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (default INFO)")
    g = p.add_argument_group("trace collection (off unless --collect-dir; see docs/howto/collect-traces.md)")
    g.add_argument("--collect-dir", metavar="DIR", help="record every answered placement and Depart notice as parquet files in DIR; read them back with 'catur evaluate DIR' or 'catur traces convert DIR out.parquet'")
    g.add_argument("--collect-max-mb", type=float, default=1024.0, metavar="N", help="budget of the files in DIR, MiB; past it the oldest files are deleted (default 1024)")
    g.add_argument("--collect-rotate-rows", type=int, default=100_000, metavar="N", help="start a new file after N rows (default 100000)")
    g.add_argument("--collect-rotate-seconds", type=float, default=600.0, metavar="S", help="start a new file when the current one's first row is S seconds old: at most S seconds of records are lost in a crash (default 600)")
    g.add_argument("--collect-queue", type=int, default=65_536, metavar="N", help="rows waiting for the writer; beyond, rows are dropped and counted, never waited for (default 65536)")

    p = add_command(
        sub, "place", cmd_place,
        help="ask a running placement service where one VM goes",
        description="Send one PlaceRequest to a running 'catur serve' and print the answer as JSON.",
        epilog=EPILOG_PLACE,
    )
    add_client_arguments(p, timeout=5.0)
    p.add_argument("--topology", required=True, metavar="PRESET|FILE", help="host topology: a preset or a YAML/TOML file")
    p.add_argument("--vcpus", type=int, required=True, help="VM vCPUs")
    p.add_argument("--mem-mib", type=int, required=True, help="VM memory in MiB")
    p.add_argument("--alpha", type=float, help="weight of CPU overload in the defect (default 1)")
    p.add_argument("--beta", type=float, help="weight of remote memory in the defect (default 1)")
    p.add_argument("--vnuma", type=int, help="vNUMA instances (default: the fewest that fit)")
    p.add_argument("--used-vcpus", metavar="A,B,..", help="vCPUs in use per node (default: all 0)")
    p.add_argument("--used-mem-mib", metavar="A,B,..", help="MiB in use per node (default: all 0)")
    p.add_argument("--residents", metavar="A,B,..", help="VMs bound to each node (optional; default: not sent)")
    p.add_argument("--resident-vms", metavar="JSON", help="the VMs on the host, a JSON list of {\"vcpus\": [per node], "
                   "\"mem_mib\": [per node], \"age_s\": seconds} (mem_mib and age_s optional), or @FILE holding it")
    p.add_argument("--host-id", default="", help="host id (the service keeps a request window per host)")
    p.add_argument("--request-id", default="", help="request id, echoed back")
    p.add_argument("--vm-id", default="", help="the VM's id: a collecting service joins it with 'catur depart --vm-id'")
    p.add_argument("--cluster", default="", help="the host's cluster (recorded by a collecting service)")
    p.add_argument("--time", type=float, metavar="S", help="arrival time in seconds (recorded by a collecting service; default: the server's clock)")
    add_client_tls_arguments(p)

    p = add_command(
        sub, "depart", cmd_depart,
        help="tell a running placement service that a VM left its host (for trace collection)",
        description="Send the hypervisor's departure notice (catur.v1.Placement/Depart) for one VM to "
        "a running 'catur serve'.",
        epilog=EPILOG_DEPART,
    )
    add_client_arguments(p, timeout=5.0)
    p.add_argument("--vm-id", required=True, help="the VM's id, as given to 'catur place --vm-id'")
    p.add_argument("--host-id", default="", help="the host the VM left")
    p.add_argument("--time", type=float, metavar="S", help="departure time in seconds (default: the server's clock)")
    add_client_tls_arguments(p)

    p = add_command(
        sub, "replay", cmd_replay,
        help="replay a trace through a running placement service and report the metrics",
        description="Play a trace against a running 'catur serve' as a fleet of hypervisors would "
        "and print the same metrics table as 'catur evaluate'.",
        epilog=EPILOG_REPLAY,
    )
    add_client_arguments(p, timeout=5.0, timeout_help="deadline of each call in seconds")
    p.add_argument("--concurrency", type=int, default=4, help="hosts replayed at once (default 4; results do not depend on it)")
    p.add_argument("--host-prefix", default="", help="prefix of the host_id sent (default none: the host number)")
    p.add_argument("--also", metavar="POLICIES", help="also evaluate these policies offline, in the same table (e.g. greedy,xen)")
    add_replay_scenario_arguments(p)
    add_client_tls_arguments(p)

    p = add_command(
        sub, "health", cmd_health,
        help="ask a running placement service whether it is serving (for health checks)",
        description="Call the standard gRPC health service (grpc.health.v1.Health/Check) of a "
        "running 'catur serve' and print its status.",
        epilog=EPILOG_HEALTH,
    )
    add_client_arguments(p, timeout=3.0)
    p.add_argument("--service", default="", metavar="NAME", help="service to ask about (default '': the whole server; or catur.v1.Placement)")
    add_client_tls_arguments(p)


def add_replay_scenario_arguments(p: argparse.ArgumentParser) -> None:
    """The scenario and output options of 'catur evaluate' (same names, same defaults)."""
    from catur.cli.evaluate import add_output_arguments, add_workload_arguments

    add_workload_arguments(p)
    add_output_arguments(p.add_argument_group("output"))


def _client(args: argparse.Namespace):
    from catur.service.client import PlacementClient

    return PlacementClient(
        args.target,
        timeout=args.timeout,
        tls=args.tls,
        root_certificates=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
        server_name=args.tls_server_name,
    )


def _rpc_error(exc, target: str) -> CaturError:
    return CaturError(f"service at {target}: {exc.code().name}: {exc.details()}")


# --- serve -----------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """``catur serve``: run the gRPC placement service until SIGTERM/SIGINT, then drain, refuse and
    close; returns 0 after a clean stop."""
    import logging
    import signal

    from catur.service.admission import AdmissionConfig
    from catur.service.server import Service, Signals, TLSConfig, create_server
    from catur.shield import ShieldConfig

    logging.basicConfig(level=args.log_level, format="%(asctime)s catur-serve %(levelname)s %(message)s", stream=sys.stderr)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CaturError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise CaturError("--tls-client-ca needs --tls-cert and --tls-key")
    for flag in ("grace", "drain_seconds", "watch_interval"):
        if not getattr(args, flag) >= 0:  # also refuses nan
            raise CaturError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.workers < 1:
        raise CaturError(f"--workers must be >= 1, got {args.workers}")
    if args.processes < 1:
        raise CaturError(f"--processes must be >= 1, got {args.processes}")
    if not (args.target_queue_ms > 0 and args.target_queue_ms < float("inf")):
        raise CaturError(f"--target-queue-ms must be > 0, got {args.target_queue_ms}")
    if not 1 <= args.min_limit <= args.max_limit:
        raise CaturError(f"--min-limit and --max-limit: need 1 <= min <= max, got {args.min_limit} and {args.max_limit}")
    if args.processes > 1:
        from catur.service.processes import run_processes

        return run_processes(args.argv, args.processes, args.listen, args.metrics_port)
    shield = ShieldConfig(depth=args.shield_depth, width=args.shield_width / 100.0, window=args.shield_window)
    collect = None
    if args.collect_dir:
        from catur.service.collector import CollectorConfig

        if not args.collect_max_mb > 0:
            raise CaturError(f"--collect-max-mb must be > 0, got {args.collect_max_mb}")
        collect = CollectorConfig(
            args.collect_dir,
            rotate_rows=args.collect_rotate_rows,
            rotate_seconds=args.collect_rotate_seconds,
            max_bytes=int(args.collect_max_mb * (1 << 20)),
            queue_size=args.collect_queue,
        )
    service = Service(
        model=args.model, shield=shield, use_gate=not args.no_gate, max_hosts=args.max_hosts, max_batch=args.max_batch,
        collect=collect,
    )
    tls = TLSConfig(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    admission = AdmissionConfig(
        slots=args.workers, limit=args.max_concurrent_rpcs, target_queue_s=args.target_queue_ms / 1000.0,
        min_limit=args.min_limit, max_limit=args.max_limit,
    )
    server, port = create_server(args.listen, service, tls=tls, admission=admission, grpc_options=tuple(args.grpc_arg),
                                 reuse_port=args.reuse_port)
    metrics_server = None
    metrics_port = None
    if args.metrics_port >= 0:
        from prometheus_client import start_http_server

        try:
            started = start_http_server(args.metrics_port, addr=args.metrics_host, registry=service.metrics.registry)
        except OSError as exc:
            server.stop(0)
            raise CaturError(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc.strerror}") from exc
        metrics_server = started[0] if isinstance(started, tuple) else None
        metrics_port = metrics_server.server_port if metrics_server is not None else args.metrics_port
    host = args.listen.rpartition(":")[0]
    serving = service.models.current
    print(
        f"catur serve: listening on {host}:{port} ({'TLS' if tls else 'plaintext'}); "
        f"metrics on {f'{args.metrics_host}:{metrics_port}' if metrics_port is not None else 'off'}; "
        f"policy {serving.policy} {serving.version or ''}".rstrip()
        + (f"; collecting traces in {args.collect_dir}" if collect else ""),
        flush=True,
    )
    log = logging.getLogger("catur.service")
    # Signals arrive through a self-pipe read here, never handled inside a signal handler.
    with Signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        service.start_watch(args.watch_interval)
        while (signum := signals.next()) == signal.SIGHUP:
            service.models.reload("SIGHUP")
        log.info(
            "stopping on %s: health NOT_SERVING, %.1f s drain, then up to %.1f s for RPCs in flight",
            signal.Signals(signum).name, args.drain_seconds, args.grace,
        )
        service.shutdown(server, args.grace, drain=args.drain_seconds, wait=signals.wait_for_stop)
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("stopped")
    return 0


# --- place -----------------------------------------------------------------------------------------


def _int_list(text: str | None, label: str, n: int) -> list[int]:
    if text is None:
        return [0] * n
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CaturError(f"{label} must be comma-separated whole numbers, got {text!r}") from None
    if len(values) != n:
        raise CaturError(f"{label} has {len(values)} values; the topology has {n} nodes")
    return values


def cmd_place(args: argparse.Namespace) -> int:
    """``catur place``: ask a running service (or decide in process) where one VM goes and print the
    answer."""
    import grpc

    from catur.request import VMRequest
    from catur.topology import resolve_topology

    topology = resolve_topology(args.topology)
    used_vcpus = _int_list(args.used_vcpus, "--used-vcpus", topology.num_nodes)
    used_mem = _int_list(args.used_mem_mib, "--used-mem-mib", topology.num_nodes)
    residents = _int_list(args.residents, "--residents", topology.num_nodes) if args.residents else None
    resident_vms = _resident_vms(args.resident_vms) if args.resident_vms else None
    request = VMRequest(
        args.vcpus,
        args.mem_mib,
        1.0 if args.alpha is None else args.alpha,
        1.0 if args.beta is None else args.beta,
        args.vnuma,
    )
    with _client(args) as client:
        try:
            decision = client.place(
                topology, used_vcpus, used_mem, request, host_id=args.host_id, request_id=args.request_id,
                vm_id=args.vm_id, cluster=args.cluster, time_s=args.time, residents=residents,
                resident_vms=resident_vms,
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc, args.target) from None
    print(json.dumps(decision.to_dict(), indent=2))
    return 0


def _resident_vms(text: str) -> list:
    """``--resident-vms``: a JSON list of objects (or ``@FILE``), checked enough to name the bad
    entry here; the service checks the values against the host."""
    from catur.service.convert import resident_vm

    source = "--resident-vms"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise CaturError(f"--resident-vms {source}: cannot read it ({exc.strerror or exc})") from None
    try:
        vms = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaturError(f"{source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(vms, list):
        raise CaturError(f"{source}: expected a JSON list of VMs, got {type(vms).__name__}")
    out = []
    for i, vm in enumerate(vms):
        if not isinstance(vm, dict) or "vcpus" not in vm or set(vm) - {"vcpus", "mem_mib", "age_s"}:
            raise CaturError(f"{source}: entry {i} must be an object with vcpus (and optionally mem_mib, age_s), got {vm!r}")
        try:
            out.append(resident_vm(vm))
        except (TypeError, ValueError, OverflowError) as exc:
            raise CaturError(f"{source}: entry {i}: {exc}") from None
    return out


# --- depart ----------------------------------------------------------------------------------------

EPILOG_DEPART = """examples:
  catur place --topology intel-2s --vcpus 4 --mem-mib 8192 --host-id h7 --vm-id vm-0042
  catur depart --host-id h7 --vm-id vm-0042          # ... and when that VM is deleted
  catur depart --host-id h7 --vm-id vm-0042 --time 1718000000.5

Only a service started with --collect-dir records departures (it joins them with the
placement of the same --vm-id into the VM's lifetime); any other answers OK and does nothing.
Prints {"recorded": true|false}: false when the service does not collect, or dropped the
record because its collector was behind (counted in catur_collector_rows_dropped_total).
"""


def cmd_depart(args: argparse.Namespace) -> int:
    """``catur depart``: tell the service that a VM left its host (recorded when the service
    collects traces)."""
    import grpc

    with _client(args) as client:
        try:
            recorded = client.depart(args.vm_id, args.host_id, args.time)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, args.target) from None
    print(json.dumps({"recorded": recorded}))
    return 0


# --- health ----------------------------------------------------------------------------------------

EPILOG_HEALTH = """examples:
  catur health                                          # 127.0.0.1:50051, the whole server
  catur health --target catur:50051 --service catur.v1.Placement --timeout 2
  HEALTHCHECK CMD ["catur", "health"]                   # a Dockerfile's container health check

Exit status: 0 = SERVING; 1 = anything else (NOT_SERVING while a graceful stop drains, an
unknown service name, nothing listening, the deadline passed), as container health checks
expect. Kubernetes needs no command: its native 'grpc:' probe calls the same health service.
"""


def cmd_health(args: argparse.Namespace) -> int:
    """``catur health``: 0 if the service reports SERVING, 1 otherwise (for container health
    checks)."""
    import grpc

    with _client(args) as client:
        try:
            status = client.health(args.service)
        except grpc.RpcError as exc:
            # Unreachable is a health answer ("unhealthy"), not bad input: exit 1, not 2.
            print(f"catur health: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"{args.target}{' ' + args.service if args.service else ''}: {status}")
    return 0 if status == "SERVING" else 1


# --- replay ----------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """``catur replay``: send a trace through a running service, keeping each host's state on the
    client side as a hypervisor would, and print the same table as ``catur evaluate``."""
    import grpc

    from catur.cli.evaluate import options_from_args, report, workload_from_args
    from catur.sim.pipeline import ExternalPolicy, check_policies, evaluate
    from catur.sim.remote_replay import replay_remote

    also = check_policies([p.strip() for p in args.also.split(",") if p.strip()] if args.also else [])
    workload, options = workload_from_args(args), options_from_args(args)
    with _client(args) as client:
        try:
            info = client.server_info()
            name = info.policy_name or info.policy
            if name in also:
                raise CaturError(f"--also {name}: that is the service's own row; drop it from --also")

            def through_service(prepared, progress):
                return replay_remote(
                    prepared.scenario.streams, client, name, seed=prepared.workload.seed, config=options.metrics,
                    concurrency=args.concurrency, host_prefix=args.host_prefix, progress=progress,
                    vm_ids=prepared.df["vm_id"].to_numpy(), clusters=prepared.scenario.admission.host_cluster,
                )

            evaluation = evaluate(
                workload, also, options,
                external=[ExternalPolicy(name, through_service, desc=f"replaying via {args.target}")],
                facts={"service": {"target": args.target, "policy": name, "model_version": info.model_version,
                                   "shield_depth": info.shield.depth}},
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc, args.target) from None
    report(evaluation, args.json, args.plots)
    return 0
