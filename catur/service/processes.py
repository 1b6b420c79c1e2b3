"""Several serving processes on one port: grpc's multiprocessing pattern for Python.

grpcio serves every call's events (its arrival, its request message, its answer) from one
Python thread per process, under the GIL, so one ``catur serve`` process uses about one core
however many the machine has, and under overload calls wait inside grpc's C core for that
thread (see ``docs/results/serving.md``). ``catur serve --processes N`` starts N copies of
itself, each its own grpc server bound to the same address with ``SO_REUSEPORT``, and
supervises them (:func:`run_processes`):

* **start** — the first copy binds (port 0 = any free port), the others bind the port it got.
  Once all listen, the command prints the first copy's line, as a single process would, then
  one line per other copy (its pid and metrics endpoint);
* **signals** — SIGTERM, SIGINT and SIGHUP are passed on to every copy: each stops in its own
  three phases (drain, refuse, close) or reloads its model. The copies run in their own
  session, so a Ctrl-C at a terminal reaches them once, through this process;
* **a copy that exits by itself** stops the others; the exit status is the first non-zero one.

What it does *not* do is balance calls: the kernel hands each new **connection** to one
process, and a connection stays there. A client with one channel (one connection) is served by
one process; many clients, as a fleet of hypervisors is, spread over all of them.

Metrics: one Prometheus endpoint per process, ``--metrics-port P`` giving P, P+1, ...
(port 0: each picks a free one, printed on its line); sum them in queries. prometheus_client's
multiprocess mode is not used: it cannot carry the gauges the service computes when scraped
(the concurrency limit, the measured capacity, the calls in flight).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

from catur.errors import CaturError
from catur.service.server import Signals

log = logging.getLogger("catur.service")

LISTENING = "listening on "  # what `catur serve` prints once it listens


def child_argv(argv: list[str], listen: str, metrics_port: int) -> list[str]:
    """The arguments of one copy: the command's own, then overrides (argparse keeps the last
    value of an option): one process, the shared port, this copy's metrics port."""
    return [*argv, "--processes", "1", "--reuse-port", "--listen", listen, "--metrics-port", str(metrics_port)]


def _start(command: list[str], index: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline().strip()
    if LISTENING not in line:
        proc.kill()
        proc.wait()
        raise CaturError(f"serving process {index} did not start (exit status {proc.returncode}); its error is above")
    return proc, line


def _address(line: str) -> str:
    """``HOST:PORT`` from a ``catur serve: listening on HOST:PORT (...)`` line."""
    return line.split(LISTENING, 1)[1].split()[0]


def run_processes(
    argv: list[str], processes: int, listen: str, metrics_port: int, command: tuple[str, ...] = (sys.executable, "-m", "catur.cli")
) -> int:
    """Run ``processes`` copies of ``catur <argv>`` on ``listen`` until a stop signal, passing
    signals on (see the module docstring); returns the exit status."""
    if processes < 2:
        raise CaturError(f"run_processes is for 2 or more processes, got {processes}")
    procs: list[subprocess.Popen] = []
    status = 0
    with Signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        try:
            lines = []
            for index in range(processes):
                metrics = metrics_port + index if metrics_port > 0 else metrics_port
                address = listen if index == 0 else _address(lines[0])
                proc, line = _start([*command, *child_argv(argv, address, metrics)], index)
                procs.append(proc)
                lines.append(line)
            print(lines[0].replace(LISTENING, f"{processes} processes (pids {', '.join(str(p.pid) for p in procs)}) {LISTENING}", 1), flush=True)
            for index, line in enumerate(lines[1:], start=1):
                print(f"catur serve: process {index + 1} of {processes} (pid {procs[index].pid}): {line.split(': ', 1)[-1]}", flush=True)
            stopping = False
            while any(p.poll() is None for p in procs):
                signum = signals.next(timeout=0.5)
                if signum is None:
                    if not stopping and any(p.poll() is not None for p in procs):
                        exited = next(i for i, p in enumerate(procs) if p.poll() is not None)
                        log.error("serving process %d exited (status %s): stopping the others", exited + 1, procs[exited].returncode)
                        status = status or procs[exited].returncode or 1
                        stopping = True
                        for p in procs:
                            if p.poll() is None:
                                p.send_signal(signal.SIGTERM)
                    continue
                stopping = stopping or signum != signal.SIGHUP
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signum)
        finally:
            for p in procs:
                if p.poll() is None:  # only after an error: a normal stop waited for every copy
                    p.send_signal(signal.SIGTERM)
                p.wait()
                p.stdout.close()
    status = status or next((p.returncode for p in procs if p.returncode), 0)
    return 1 if status < 0 else status  # a copy killed by a signal
