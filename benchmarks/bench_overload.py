"""Goodput under overload, measured by a client that is not Catur's own (issue 30).

Starts ``catur serve`` (greedy, the default adaptive limit unless ``--serve-args`` says
otherwise) on a free loopback port, then drives it with the Node.js client in
``benchmarks/grpc-js-load/`` (``@grpc/grpc-js``, built from the ``.proto`` alone):

1. **saturation** — a closed loop of ``--concurrency`` calls in flight for ``--saturation-s``
   seconds: OK answers per second = the saturation rate S;
2. **overload** — for each factor in ``--factors`` (default 2,3), calls sent at factor x S per
   second for ``--seconds`` (default 20) seconds, each with a ``--deadline-ms`` (default 2000)
   deadline: OK per second (answers within the sending window), OK after their deadline,
   calls by status code, CANCELLED share; and the server's ``grpc_server_handled_total``
   deltas for the same run, by code (summed over the processes of ``--processes N``).

``--channels K`` has the client spread its calls over K connections (many clients, as a fleet
of hypervisors is); one connection is served by one process of a ``--processes N`` server.
``--client-procs P`` splits the load over P client processes (each with K connections): a
single Node.js process on a busy machine gets one thread's share of the CPU and sends late.
Each overload line ends with "client starved" when the client's send lag p99 exceeds a tenth
of the deadline: such a run measures the client as much as the server.

Bounded: each client run stops at its duration + the deadline + 5 s; the whole script at
about ``saturation-s + len(factors) x (seconds + 10)`` seconds. Loopback only.

    npm install --prefix benchmarks/grpc-js-load      # once (node_modules is not committed)
    .venv/bin/python benchmarks/bench_overload.py [--seconds 20] [--factors 2,3] [--serve-args "--workers 4"]
    .venv/bin/python benchmarks/bench_overload.py --channels 4 --serve-args "--processes 2"   # 4 connections, 2 processes
    git archive main | tar -x -C /tmp/catur-main      # a baseline: main's server, same client
    .venv/bin/python benchmarks/bench_overload.py --server-root /tmp/catur-main

Prints one line per run and a verdict per factor against the issue's bars (OK/s >= 80% of S,
no OK after its deadline, CANCELLED < 1%). On a shared machine the client and the server
compete for the same cores: the load average is printed with each run.

``--smoke``: a run of a few seconds through the same path (1.5 s of saturation, 2 s at 2x,
the verdict printed but not the exit code); without Node.js or the npm modules it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from catur.service.loadgen import node_client_ready, start_serve  # noqa: E402

CLIENT = ROOT / "benchmarks" / "grpc-js-load" / "load.js"
STARVED_FRACTION = 0.1  # client send lag p99 beyond this share of the deadline: the client, not the server, is measured


def handled(metrics_ports: list[int]) -> Counter:
    """``grpc_server_handled_total`` of Place, by code, summed over the server's metrics
    endpoints (one per process)."""
    out: Counter = Counter()
    for port in metrics_ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_method="Place"' in line:
                code = line.split('grpc_code="')[1].split('"')[0]
                out[code] += int(float(line.rsplit(" ", 1)[1]))
    return out


def gauge(metrics_port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def parse_cpus(text: str | None, option: str) -> set[int] | None:
    """``"0"``, ``"0,2"`` or ``"1-3"`` as a set of CPU numbers (``None`` stays ``None``: no pinning)."""
    if not text:
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise SystemExit(f"{option}: {text!r} is not a CPU list like 0 or 0,2 or 1-3") from None
    unknown = cpus - os.sched_getaffinity(0)
    if unknown:
        raise SystemExit(f"{option}: CPU(s) {sorted(unknown)} not available here (this process may use {sorted(os.sched_getaffinity(0))})")
    return cpus


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of process ``pid`` and of its descendants to ``cpus`` (threads and
    processes started later inherit it)."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            children = (task / "children").read_text().split()
        except (ProcessLookupError, FileNotFoundError):  # a thread that just ended
            continue
        for child in children:
            pin(int(child), cpus)


CLIENT_CPUS: set[int] | None = None  # --client-cpus: every client process is pinned here


def node(mode: str, share: str, total: float, procs: int, *args: str, timeout: float) -> dict:
    """Run the grpc-js client in ``procs`` processes at once, each with ``total / procs`` of
    ``share`` (``--rate`` or ``--concurrency``), and merge their reports: counts and rates
    summed; of the percentiles, the median client's p50 and the worst client's p99."""
    parts = [total / procs] * procs if share == "--rate" else [total // procs + (i < total % procs) for i in range(procs)]
    running = [subprocess.Popen(["node", str(CLIENT), mode, share, f"{part:g}", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=(lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if CLIENT_CPUS else None)
               for part in parts]
    reports = []
    cpu_before = _children_cpu()
    for proc in running:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"grpc-js client failed: {err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    cpu = _children_cpu() - cpu_before  # the client processes just waited for
    if procs == 1:
        return {**reports[0], "client_cpu_s": cpu}
    codes: Counter = Counter()
    for report in reports:
        codes.update(report["codes"])
    sent = sum(r["sent"] for r in reports)

    def worst(key: str, q: str) -> float:
        return max((r[key][q] or 0) for r in reports)

    return {
        "codes": dict(codes), "sent": sent, "ok_per_s": sum(r["ok_per_s"] for r in reports),
        "ok_after_deadline": sum(r["ok_after_deadline"] for r in reports),
        "cancelled_fraction": codes["CANCELLED"] / sent if sent else 0.0,
        "send_lag_ms": {"p50": statistics.median(r["send_lag_ms"]["p50"] or 0 for r in reports), "p99": worst("send_lag_ms", "p99")},
        "latency_ms": {"p50": statistics.median(r["latency_ms"]["p50"] or 0 for r in reports), "p99": worst("latency_ms", "p99")},
        "client_cpu_s": cpu,
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saturation-s", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32, help="calls in flight in the saturation run (default 32)")
    ap.add_argument("--factors", default="2,3", help="offered load as multiples of the saturation rate (default 2,3)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each overload run (default 20)")
    ap.add_argument("--deadline-ms", type=float, default=2000.0)
    ap.add_argument("--channels", type=int, default=1, help="connections each client process spreads its calls over (default 1)")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes sharing the load (default 1): on a busy "
                    "machine one Node.js process gets one thread's share of the CPU, and sends late")
    ap.add_argument("--serve-args", default="", help="extra 'catur serve' options, e.g. \"--max-concurrent-rpcs 512\"")
    ap.add_argument("--server-root", type=Path, default=ROOT, help="run the catur package found in this directory "
                    "(e.g. an export of another commit: git archive main | tar -x -C /tmp/catur-main), for a baseline")
    ap.add_argument("--server-cpus", metavar="LIST", help="pin the server (all its threads and processes) to these CPUs, "
                    "e.g. 0: with --client-cpus, client and server stop competing for the same cores")
    ap.add_argument("--client-cpus", metavar="LIST", help="pin the client processes to these CPUs, e.g. 1")
    ap.add_argument("--smoke", action="store_true", help="a tiny bounded run (a few seconds): the path works, the numbers mean nothing")
    args = ap.parse_args(argv)
    if args.client_procs < 1 or args.channels < 1 or args.concurrency < args.client_procs:
        ap.error(f"need --client-procs >= 1, --channels >= 1 and --concurrency >= --client-procs, got "
                 f"{args.client_procs}, {args.channels} and {args.concurrency}")
    if args.smoke:
        args.saturation_s, args.concurrency, args.factors, args.seconds = 1.5, 8, "2", 2.0
    if not node_client_ready(CLIENT, smoke=args.smoke):
        return 0
    global CLIENT_CPUS
    server_cpus, CLIENT_CPUS = parse_cpus(args.server_cpus, "--server-cpus"), parse_cpus(args.client_cpus, "--client-cpus")
    factors = [float(f) for f in args.factors.split(",") if f.strip()]
    proc, target, metrics_port = start_serve("--metrics-port", "0", "--drain-seconds", "0", "--grace", "2",
                                             *shlex.split(args.serve_args), cwd=args.server_root)
    metrics_ports = [metrics_port]
    serve_args = shlex.split(args.serve_args)
    processes = int(serve_args[serve_args.index("--processes") + 1]) if "--processes" in serve_args else 1
    for _ in range(processes - 1):  # `catur serve --processes N` prints one line per other process
        metrics_ports.append(int(proc.stdout.readline().split("metrics on 127.0.0.1:")[1].split(";")[0]))
    pin(proc.pid, server_cpus)
    try:
        print(f"# {os.cpu_count()} CPUs; catur serve from {args.server_root} {args.serve_args or '(defaults)'} on {target}; "
              f"{args.client_procs} client process(es) x {args.channels} connection(s)"
              + (f"; server on CPU {args.server_cpus}, client on CPU {args.client_cpus}" if server_cpus or CLIENT_CPUS else ""), flush=True)
        def server_gauge(name: str) -> str:
            try:
                return "/".join(f"{gauge(port, name):.0f}" for port in metrics_ports)
            except StopIteration:  # a server without load shedding (a baseline)
                return "-"

        sat = node("closed", "--concurrency", args.concurrency, args.client_procs, "--target", target, "--channels", str(args.channels),
                   "--seconds", str(args.saturation_s), "--deadline-ms", str(args.deadline_ms),
                   timeout=args.saturation_s + args.deadline_ms / 1000 + 30)
        rate = sat["ok_per_s"]
        print(f"saturation: {rate:.0f} OK/s (closed loop, {args.concurrency} in flight, {args.saturation_s:g} s; "
              f"codes {sat['codes']}; p50 {sat['latency_ms']['p50']:.0f} ms; load average {os.getloadavg()[0]:.1f}; "
              f"server limit {server_gauge('catur_concurrency_limit')}, "
              f"capacity {server_gauge('catur_capacity_calls_per_second')}/s)", flush=True)
        failed = False
        for factor in factors:
            before = handled(metrics_ports)
            run = node("open", "--rate", round(factor * rate), args.client_procs, "--target", target, "--channels", str(args.channels),
                       "--seconds", str(args.seconds), "--deadline-ms", str(args.deadline_ms),
                       timeout=args.seconds + args.deadline_ms / 1000 + 30)
            time.sleep(0.5)  # the server counts an answer just after sending it
            delta = handled(metrics_ports) - before
            ok_share = run["ok_per_s"] / rate
            cancelled = run["cancelled_fraction"]
            good = ok_share >= 0.8 and run["ok_after_deadline"] == 0 and cancelled < 0.01
            failed |= not good
            lag = run["send_lag_ms"]["p99"] or 0
            # A client that sends its calls late did not offer the load it claims, and one whose
            # own timers fire late sees late OKs and CANCELLED that the server did not cause.
            starved = lag > STARVED_FRACTION * args.deadline_ms
            print(f"{factor:g}x = {factor * rate:.0f}/s for {args.seconds:g} s, deadline {args.deadline_ms:g} ms: "
                  f"{run['ok_per_s']:.0f} OK/s = {100 * ok_share:.0f}% of saturation; OK after deadline {run['ok_after_deadline']}; "
                  f"CANCELLED {100 * cancelled:.2f}%; client codes {run['codes']}; server counted {dict(delta)}; "
                  f"OK p50/p99 {run['latency_ms']['p50'] or 0:.0f}/{run['latency_ms']['p99'] or 0:.0f} ms; "
                  f"client send lag p99 {run['send_lag_ms']['p99'] or 0:.0f} ms; "
                  f"client CPU {run['client_cpu_s']:.1f} s ({1000 * run['client_cpu_s'] / max(1, run['sent']):.2f} ms/call); "
                  f"load average {os.getloadavg()[0]:.1f}; "
                  f"server limit {server_gauge('catur_concurrency_limit')} -> {'meets' if good else 'MISSES'} the bars"
                  + (f" (client starved: send lag p99 {lag:.0f} ms > {STARVED_FRACTION:.0%} of the deadline; not a measurement "
                     "of the server alone)" if starved else ""),
                  flush=True)
        return 1 if failed and not args.smoke else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
