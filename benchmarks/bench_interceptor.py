"""What the call interceptor costs a ``Place`` call over loopback gRPC.

Two servers in this process on the same greedy servicer: one built by
:func:`catur.service.server.create_server` (with :class:`~catur.service.interceptor.
CallInterceptor`: admission, status counting, timing from arrival, the safe deserializer, the
stream-unary re-registration), one a bare ``grpc.server`` with the servicer added and no
interceptor. A client thread calls ``Place`` back to back on each for ``--round-s`` seconds,
alternating servers round by round (``--rounds`` each), so a busy machine slows both alike;
the ratio with/without is the number to read.

    .venv/bin/python benchmarks/bench_interceptor.py [--rounds 4] [--round-s 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from catur.service.loadgen import valid_request
from catur.service.server import Service, create_server  # noqa: E402
from catur.v1 import placement_pb2_grpc as pb_grpc  # noqa: E402


def closed_loop(port: int, seconds: float) -> list[float]:
    latencies = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.PlacementStub(channel)
        msg = valid_request()
        stub.Place(msg, timeout=5)  # connect first
        stop = time.perf_counter() + seconds
        while (t0 := time.perf_counter()) < stop:
            stub.Place(msg, timeout=5)
            latencies.append(time.perf_counter() - t0)
    return latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--round-s", type=float, default=2.0)
    args = ap.parse_args(argv)
    print(f"# {platform.node()} {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}, grpcio {grpc.__version__}")
    with_service = Service(model=None)
    with_server, with_port = create_server("127.0.0.1:0", with_service, max_workers=4)
    bare_service = Service(model=None)
    bare_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_PlacementServicer_to_server(bare_service.servicer, bare_server)
    bare_port = bare_server.add_insecure_port("127.0.0.1:0")
    bare_server.start()
    results: dict[str, list[float]] = {"with interceptor": [], "bare grpc": []}
    try:
        for _ in range(args.rounds):
            results["with interceptor"] += closed_loop(with_port, args.round_s)
            results["bare grpc"] += closed_loop(bare_port, args.round_s)
    finally:
        with_service.shutdown(with_server, grace=1)
        bare_server.stop(1).wait()
    seconds = args.rounds * args.round_s
    print("| server | calls | calls/s | p50 µs | p99 µs |")
    print("|---|---:|---:|---:|---:|")
    stats = {}
    for name, lat in results.items():
        a = np.array(lat) * 1e6
        stats[name] = (len(a) / seconds, np.percentile(a, 50), np.percentile(a, 99))
        print(f"| {name} | {len(a)} | {stats[name][0]:,.0f} | {stats[name][1]:.0f} | {stats[name][2]:.0f} |")
    w, b = stats["with interceptor"], stats["bare grpc"]
    print(f"ratio with/without: calls/s {w[0] / b[0]:.3f}, p50 {w[1] / b[1]:.3f}, p99 {w[2] / b[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
