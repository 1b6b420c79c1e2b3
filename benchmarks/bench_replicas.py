"""Two replicas behind round_robin; one receives SIGTERM under load (issue 30).

Each round starts two ``catur serve`` processes on free loopback ports and a
:class:`~catur.service.client.PlacementClient` over both addresses (the shipped service
config: round_robin, retries of UNAVAILABLE). ``--clients`` threads call ``Place`` back to
back; after ``--load`` seconds replica A gets SIGTERM (``--drain``, ``--grace``); the load goes
on until ``--after`` seconds past A's exit, then B is stopped too. A call that ends in
anything but OK is a failure.

    .venv/bin/python benchmarks/bench_replicas.py [--rounds 5] [--clients 4] [--load 1.5] [--drain 1] [--after 1.5]

Prints one line per round (calls OK, failures by code, A's SIGTERM-to-exit time, calls answered
by B after A's exit) and a total. Loopback only; each round bounded (a replica that has not
exited 60 s after SIGTERM is killed and counted as a hang).

``--smoke``: one short round (2 clients, 0.5 s of load, 0.2 s drain, 0.5 s after A's exit).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
from catur.service.loadgen import start_serve, valid_request  # noqa: E402

from catur.service.client import PlacementClient  # noqa: E402


def serve(drain: float, grace: float) -> tuple[subprocess.Popen, str]:
    proc, target, _ = start_serve("--drain-seconds", str(drain), "--grace", str(grace), cwd=ROOT)
    return proc, target


def stop(proc: subprocess.Popen) -> tuple[float, bool]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
        return time.monotonic() - t0, False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return time.monotonic() - t0, True


def one_round(args) -> dict:
    (a, target_a), (b, target_b) = serve(args.drain, args.grace), serve(args.drain, args.grace)
    codes: Counter = Counter()
    after_exit = 0
    a_exited = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    try:
        with PlacementClient([target_a, target_b], timeout=5) as client:
            request = valid_request()

            def load() -> None:
                nonlocal after_exit
                while not done.is_set():
                    try:
                        client.stub.Place(request, timeout=5)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                    with lock:
                        codes[code] += 1
                        after_exit += a_exited.is_set() and code == "OK"

            threads = [threading.Thread(target=load, daemon=True) for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(args.load)
            a_stop_s, a_hung = stop(a)
            a_exited.set()
            time.sleep(args.after)
            done.set()
            for t in threads:
                t.join(15)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                stop(proc)
            proc.stdout.close()
    return {"codes": codes, "a_stop_s": a_stop_s, "a_hung": a_hung, "after_exit": after_exit}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4, help="client threads sharing one channel (default 4)")
    ap.add_argument("--load", type=float, default=1.5, help="seconds of load before A's SIGTERM (default 1.5)")
    ap.add_argument("--drain", type=float, default=1.0, help="--drain-seconds of each replica (default 1)")
    ap.add_argument("--grace", type=float, default=5.0, help="--grace of each replica (default 5)")
    ap.add_argument("--after", type=float, default=1.5, help="seconds of load after A exits (default 1.5)")
    ap.add_argument("--smoke", action="store_true", help="one short round: the path works, the numbers mean nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.clients, args.load, args.drain, args.grace, args.after = 1, 2, 0.5, 0.2, 2.0, 0.5
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    total: Counter = Counter()
    hangs = 0
    for r in range(args.rounds):
        out = one_round(args)
        total.update(out["codes"])
        hangs += out["a_hung"]
        failed = sum(v for k, v in out["codes"].items() if k != "OK")
        print(f"round {r}: {dict(out['codes'])}; failed {failed}; A stopped in {out['a_stop_s']:.2f} s"
              f"{' (HUNG, killed)' if out['a_hung'] else ''}; OK answered by B after A exited {out['after_exit']}", flush=True)
    failed = sum(v for k, v in total.items() if k != "OK")
    print(f"{args.rounds} rounds, {args.clients} clients, drain {args.drain} s: calls {dict(total)}; failed calls {failed}; hangs {hangs}")
    return 1 if failed or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
