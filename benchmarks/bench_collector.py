"""What trace collection costs a placement: latency with and without ``--collect-dir``.

Two measurements, each comparing the same workload with collection off and on **in the same
run**, interleaved round by round (off, on, off, on, ...) so that a busy machine slows both
sides alike; the ratio on/off is the number to read:

1. **in process** — :meth:`PlacementServicer.place_one` (validation, decision, answer; no
   gRPC) on the amd-2s-nps2 workload of ``bench_placement.py``, greedy with a depth-1 shield,
   with no collector and with a :class:`~catur.service.collector.TraceCollector` writing to a
   temporary directory (its writer thread competes for the GIL, which is part of the cost);
2. **loopback gRPC** — two ``catur serve`` subprocesses, one with ``--collect-dir``, driven by
   ``K`` closed-loop client threads (``--workers``, default 1,4) calling ``Place``.

Afterwards the collected directories are read back (:func:`catur.traces.collected.
read_collected_trace`): the arrival rows collected must equal the placements answered, so the
cost is measured with nothing dropped. (Messages are reused round after round, so their
``vm_id`` repeats: the report counts those as repeated arrivals; rows are what is compared.)

    .venv/bin/python benchmarks/bench_collector.py [--decisions 20000] [--rounds 6] [--round-s 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_placement import workload  # noqa: E402
from bench_service import Server, closed_loop, messages, percentiles  # noqa: E402

import grpc  # noqa: E402

from catur.service.client import PlacementClient  # noqa: E402
from catur.service.collector import CollectorConfig, TraceCollector  # noqa: E402
from catur.service.serving import ModelHolder  # noqa: E402
from catur.service.servicer import PlacementServicer  # noqa: E402
from catur.service.telemetry import ServiceMetrics  # noqa: E402
from catur.shield import ShieldConfig  # noqa: E402
from catur.traces.collected import read_collected_trace  # noqa: E402


def with_vm_ids(msgs):
    for i, msg in enumerate(msgs):
        msg.vm_id = f"vm-{i}"
    return msgs


def in_process(msgs, rounds: int, directory: Path) -> dict[str, np.ndarray]:
    """Per-call seconds of place_one without and with a collector, interleaved by round."""
    metrics = ServiceMetrics()
    models = ModelHolder(None, ShieldConfig(depth=1), True, metrics)
    collector = TraceCollector(CollectorConfig(directory), metrics.registry)
    servicers = {"off": PlacementServicer(models, metrics), "on": PlacementServicer(models, metrics, collector=collector)}
    for servicer in servicers.values():  # warm up
        for msg in msgs[:200]:
            servicer.place_one(msg)
    times: dict[str, list[float]] = {"off": [], "on": []}
    per_round = max(1, len(msgs) // rounds)
    for r in range(rounds):
        chunk = msgs[r * per_round:(r + 1) * per_round]
        for label in ("off", "on") if r % 2 == 0 else ("on", "off"):
            servicer, out = servicers[label], times[label]
            for msg in chunk:
                t0 = time.perf_counter()
                servicer.place_one(msg)
                out.append(time.perf_counter() - t0)
    collector.close()
    return {k: np.asarray(v) for k, v in times.items()}


def loopback(msgs, workers: list[int], rounds: int, round_s: float, tmp: Path) -> tuple[dict, dict]:
    """Closed-loop results per (workers, off/on), accumulated over interleaved rounds."""
    directory = tmp / "served"
    servers = {"off": Server("none", 1), "on": Server("none", 1, ("--collect-dir", str(directory)))}
    results: dict[tuple[int, str], list[dict]] = {}
    try:
        for server in servers.values():
            with PlacementClient(server.target, timeout=5) as client:
                for msg in msgs[:200]:
                    client.stub.Place(msg)
        for k in workers:
            for r in range(rounds):
                for label in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    results.setdefault((k, label), []).append(closed_loop(servers[label].target, msgs, k, round_s))
    finally:
        for server in servers.values():
            server.stop()
    answered = sum(r["calls"] - r["errors"] for (k, label), runs in results.items() if label == "on" for r in runs) + 200
    _, report = read_collected_trace(directory)
    return results, {"answered": answered, "collected": report.arrivals, "files": report.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20000, help="in-process placements per side (default 20000)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per measurement (default 6)")
    parser.add_argument("--round-s", type=float, default=2.0, help="seconds per loopback round (default 2)")
    parser.add_argument("--workers", default="1,4", help="closed-loop client threads to try (default 1,4)")
    parser.add_argument("--skip-loopback", action="store_true", help="only the in-process measurement")
    args = parser.parse_args()
    if args.decisions < 100 or args.rounds < 2 or not 0 < args.round_s <= 60:
        raise SystemExit("--decisions >= 100, --rounds >= 2 and --round-s in (0, 60] please")
    topology, used_vcpus, used_mem, requests = workload(args.decisions)
    print(f"# Trace collection overhead\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, grpcio {grpc.__version__}; amd-2s-nps2 workload of bench_placement.py; "
          f"greedy, shield depth 1; collection off and on interleaved over {args.rounds} rounds.\n")
    with tempfile.TemporaryDirectory() as tmp_name, PlacementClient("127.0.0.1:1") as offline:
        tmp = Path(tmp_name)
        msgs = with_vm_ids(messages(offline, topology, used_vcpus, used_mem, requests))

        times = in_process(msgs, args.rounds, tmp / "in-process")
        _, report = read_collected_trace(tmp / "in-process")
        print(f"## In process: PlacementServicer.place_one ({len(times['on'])} calls per side)\n")
        print("| collection | p50 µs | p99 µs | mean µs |\n|---|---:|---:|---:|")
        for label in ("off", "on"):
            p50, p99, _ = percentiles(times[label])
            print(f"| {label} | {p50:.1f} | {p99:.1f} | {times[label].mean() * 1e6:.1f} |")
        p50_ratio = np.percentile(times["on"], 50) / np.percentile(times["off"], 50)
        print(f"\nratio on/off: p50 {p50_ratio:.3f}, p99 {np.percentile(times['on'], 99) / np.percentile(times['off'], 99):.3f}, "
              f"mean {times['on'].mean() / times['off'].mean():.3f}; arrival rows collected {report.arrivals} "
              f"of {len(times['on']) + 200} placements (200 warm-up), in {report.files} file(s)\n")

        if args.skip_loopback:
            return
        workers = [int(w) for w in args.workers.split(",")]
        results, check = loopback(msgs, workers, args.rounds, args.round_s, tmp)
        print(f"## Loopback gRPC, closed loop ({args.rounds} × {args.round_s:g} s per side and load)\n")
        print("| load | collection | calls | errors | calls/s | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|")
        summary = {}
        for (k, label), runs in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1] != "off")):
            calls = sum(r["calls"] for r in runs)
            errors = sum(r["errors"] for r in runs)
            per_s = float(np.mean([r["per_s"] for r in runs]))
            p50 = float(np.median([r["p50"] for r in runs]))
            p99 = float(np.median([r["p99"] for r in runs]))
            summary[(k, label)] = (per_s, p50, p99)
            print(f"| Place × {k} | {label} | {calls} | {errors} | {per_s:,.0f} | {p50:.0f} | {p99:.0f} |")
        print()
        for k in workers:
            off, on = summary[(k, "off")], summary[(k, "on")]
            print(f"- {k} thread(s): ratio on/off p50 {on[1] / off[1]:.3f}, p99 {on[2] / off[2]:.3f}, "
                  f"throughput {on[0] / off[0]:.3f}")
        print(f"- collected {check['collected']} arrival rows of {check['answered']} placements answered, "
              f"in {check['files']} file(s)")


if __name__ == "__main__":
    main()
