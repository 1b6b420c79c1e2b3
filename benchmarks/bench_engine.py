"""Events per second of the batched replay engine against the reference loop, same run, same streams.

For each host count, a synthetic workload (``traces.synthetic``'s default scenario: Huawei-like
flavors, batches and lifetimes, scaled up in rate and peak so the cluster has about that many
hosts) is admitted onto the ``mixed`` cluster (half ``intel-2s``, half ``amd-2s-nps2``) at 90%
target utilisation, and the window's host streams (warm-up VMs included) are replayed under
each policy by

* the **reference loop** (:func:`catur.sim.replay.replay_host`, one host after another), on
  the first ``--reference-hosts`` hosts only when there are more — its events/s does not
  depend on how many hosts there are, and replaying 5,000 hosts one by one three times takes
  long — and
* the **batched engine** (:func:`catur.sim.batched.replay_batched`), on all hosts at once
  (its events/s grows with the number of hosts replayed together),

both in one process, one after the other, and their events/s (arrivals + departures replayed
per second of wall time, setup included) and the ratio are printed. Both engines give the
same numbers; this script also checks that on the reference hosts. Single process: with
``catur evaluate --jobs 2`` both engines scale the same way over worker processes.

    .venv/bin/python benchmarks/bench_engine.py [--hosts 100,1000,5000] [--reference-hosts 300]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from catur.decision import DeciderSpec
from catur.shield import ShieldConfig
from catur.sim.admission import prepare_scenario
from catur.sim.batched import replay_batched
from catur.sim.replay import replay_host
from catur.traces.synthetic import SCENARIOS, generate

# The default scenario gives about 350 hosts at this rate and peak; both scale with the hosts.
BASE_HOSTS, BASE_RATE, BASE_PEAK = 350, 400.0, 20_000


def workload(hosts: int, days: float, seed: int = 0) -> list:
    """Host streams of a synthetic window admitted onto about ``hosts`` mixed hosts."""
    f = hosts / BASE_HOSTS
    config = replace(
        SCENARIOS["default"], days=days, warmup_days=2 * days, arrivals_per_hour=BASE_RATE * f,
        peak_concurrency=int(BASE_PEAK * f),
    )
    return prepare_scenario(generate(config, seed=seed), "mixed", None, 0.9).streams


def events(streams) -> int:
    return sum(s.trace.num_vms + int((~np.isnan(s.trace.departure_s)).sum()) for s in streams)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="100,1000,5000", help="approximate host counts (default 100,1000,5000)")
    parser.add_argument("--reference-hosts", type=int, default=300,
                        help="replay at most this many hosts with the reference loop (0 = all; default 300)")
    parser.add_argument("--days", type=float, default=2.0, help="window length in days (default 2; warm-up is twice that)")
    parser.add_argument("--policies", default="xen,greedy,catur+shield",
                        help="policies: xen, greedy, catur+shield (the shipped model, depth-1 shield)")
    args = parser.parse_args()
    policies = {
        "xen": "xen",
        "greedy": "greedy",
        "catur+shield": DeciderSpec("default", ShieldConfig(depth=1)),
    }
    chosen = [p.strip() for p in args.policies.split(",")]
    print("| hosts | policy | events (batched) | batched events/s | events (reference) | reference events/s | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for target in [int(h) for h in args.hosts.split(",")]:
        streams = workload(target, args.days)
        ref_streams = streams if args.reference_hosts <= 0 else streams[: args.reference_hosts]
        all_hosts = [(s.topology, s.trace) for s in streams]
        for name in chosen:
            policy = policies[name]
            batched_s, batched = timed(lambda: replay_batched(all_hosts, policy))
            ref_s, reference = timed(lambda: [replay_host(s.topology, s.trace, policy) for s in ref_streams])
            for want, got in zip(reference, batched):
                if not (np.array_equal(want.lifetime_defect, got.lifetime_defect)
                        and np.array_equal(want.placement_defect, got.placement_defect)):
                    raise SystemExit(f"{name}: the engines disagree; this is a bug")
            batched_rate, ref_rate = events(streams) / batched_s, events(ref_streams) / ref_s
            print(f"| {len(streams):,} | {name} | {events(streams):,} | {batched_rate:,.0f} | {events(ref_streams):,} "
                  f"| {ref_rate:,.0f} | {batched_rate / ref_rate:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
