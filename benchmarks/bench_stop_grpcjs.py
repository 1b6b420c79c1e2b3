"""Stop cycles seen by grpc-js clients that retry UNAVAILABLE at the same address (issue 30).

The issue's INTERNAL (RST_STREAM) and CANCELLED answers during stops were seen by a Node.js
client; ``bench_stop.py`` drives its cycles with Python clients. This script runs the same kind
of cycle with the independent client of ``benchmarks/grpc-js-load`` in ``retry`` mode: each
cycle starts ``catur serve`` (``--drain-seconds``, ``--grace``), runs ``--clients`` calls in
flight back to back on a channel with the shipped retry policy (a call still ending UNAVAILABLE
is followed by the next, at the same address), sends SIGTERM ``--load`` seconds after the
client's first answer, and
counts every answer by code until the client's time is up (the server has exited by then).

    npm install --prefix benchmarks/grpc-js-load      # once
    .venv/bin/python benchmarks/bench_stop_grpcjs.py [--cycles 10] [--clients 4] [--load 1] [--drain 0.3] [--grace 5]

Bounded: each client run lasts load + 8 s; a server not exited 30 s after SIGTERM is killed
and counted as a hang. Prints a line per cycle and the totals; exit 1 if any call ended with
a code other than OK or UNAVAILABLE, or a stop hung.

``--smoke``: one short cycle (2 clients, 0.3 s of load, the client for load + 3 s); without
Node.js or the npm modules it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from catur.service.loadgen import node_client_ready, start_serve  # noqa: E402

CLIENT = ROOT / "benchmarks" / "grpc-js-load" / "load.js"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4, help="calls in flight (default 4)")
    ap.add_argument("--load", type=float, default=1.0, help="seconds of load before SIGTERM (default 1)")
    ap.add_argument("--drain", type=float, default=0.3)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--smoke", action="store_true", help="one short cycle: the path works, the numbers mean nothing")
    args = ap.parse_args(argv)
    tail = 8.0  # the client runs this long after the load: the stop happens within it
    if args.smoke:
        args.cycles, args.clients, args.load, args.drain, args.grace, tail = 1, 2, 0.3, 0.1, 1.0, 3.0
    if not node_client_ready(CLIENT, smoke=args.smoke):
        return 0
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    total: Counter = Counter()
    hangs = 0
    stops = []
    for c in range(args.cycles):
        server, target, _ = start_serve("--drain-seconds", str(args.drain), "--grace", str(args.grace), cwd=ROOT)
        seconds = args.load + tail
        client = subprocess.Popen(
            ["node", str(CLIENT), "retry", "--target", target, "--concurrency", str(args.clients), "--seconds", str(seconds),
             "--deadline-ms", "10000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        ready = client.stderr.readline()  # the client's first answer (node takes a while to start)
        if ready.strip() != "ready":
            server.kill()
            raise SystemExit(f"the grpc-js client did not start: {ready!r} {client.stderr.read()[-2000:]}")
        time.sleep(args.load)
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            hangs += 1
        stops.append(time.monotonic() - t0)
        server.stdout.close()
        out, _ = client.communicate(timeout=seconds + 30)
        run = json.loads(out.strip().splitlines()[-1])
        total.update(run["codes"])
        bad = {k: v for k, v in run["codes"].items() if k not in ("OK", "UNAVAILABLE")}
        print(f"cycle {c}: {run['codes']}; stop {stops[-1]:.2f} s{'; UNEXPECTED ' + str(run['examples']) if bad else ''}", flush=True)
    bad = sum(v for k, v in total.items() if k not in ("OK", "UNAVAILABLE"))
    print(f"{args.cycles} cycles, {args.clients} grpc-js clients retrying at the same address, drain {args.drain} s, grace {args.grace} s: "
          f"calls {dict(total)}; not OK/UNAVAILABLE {bad}; hangs {hangs}; SIGTERM to exit max {max(stops):.2f} s")
    return 1 if bad or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
