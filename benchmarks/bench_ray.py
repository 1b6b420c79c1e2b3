"""Ray engine against the local process pool: the same evaluation, timed both ways in one run.

Replays a synthetic workload (or a trace file) under every primitive, ``greedy`` and every
baseline, once with the local engine (``jobs`` worker processes) and once on a local Ray
instance with as many CPUs, and reports wall times, the ratio, the mean task length and
whether the two results are identical VM by VM (they must be). Ray's start-up is timed
apart: a cluster is started once and serves many evaluations.

    .venv/bin/python benchmarks/bench_ray.py                          # synthetic default, all days
    .venv/bin/python benchmarks/bench_ray.py --days 16:31 --jobs 2
    .venv/bin/python benchmarks/bench_ray.py ../shared/traces/huawei-east-1-lt.csv.gz --days 16:31
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from catur.placement import GREEDY
from catur.policies import BASELINES, PRIMITIVES
from catur.sim.admission import prepare_scenario
from catur.sim.distributed import RayEngine
from catur.sim.evaluate import evaluate_policies


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def identical(one: dict, two: dict) -> bool:
    return list(one) == list(two) and all(
        one[n].summary == two[n].summary
        and np.array_equal(one[n].rows, two[n].rows)
        and np.array_equal(one[n].lifetime_defect, two[n].lifetime_defect)
        and np.array_equal(one[n].placement_defect, two[n].placement_defect)
        for n in one
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", nargs="?", help="trace file (default: --synthetic)")
    parser.add_argument("--synthetic", default="default", help="synthetic workload when no trace is given (default: default)")
    parser.add_argument("--days", help="FIRST:LAST window (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="local worker processes = Ray CPUs (default 2)")
    parser.add_argument("--policies", help="comma-separated (default: primitives, greedy, baselines)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine, interleaved; the best counts (default 1)")
    args = parser.parse_args()

    if args.trace:
        from catur.traces.readers import read_trace

        df, _ = read_trace(args.trace)
        label = args.trace
    else:
        from catur.traces.synthetic import generate

        df, label = generate(args.synthetic), f"synthetic:{args.synthetic}"
    streams = prepare_scenario(df, "mixed", args.days, 0.9, None).streams
    policies = args.policies.split(",") if args.policies else [*PRIMITIVES, GREEDY, *BASELINES]
    vms = sum(s.trace.num_vms for s in streams)
    tasks = len(policies) * min(len(streams), 4 * args.jobs if args.jobs > 1 else 1)
    print(f"{label} days {args.days or 'all'}: {len(streams)} hosts, {vms:,} VMs replayed per policy, "
          f"{len(policies)} policies, {tasks} tasks")

    start_s, engine = timed(lambda: RayEngine(num_cpus=args.jobs))
    local_s = ray_s = float("inf")
    with engine:  # the local pool runs while Ray idles: its workers sleep, as on a shared cluster
        logging.getLogger("ray").setLevel(logging.ERROR)
        for _ in range(args.repeat):  # interleaved, so a change in machine load hits both
            wall, local = timed(lambda: evaluate_policies(streams, policies, jobs=args.jobs))
            local_s = min(local_s, wall)
            wall, remote = timed(lambda: evaluate_policies(streams, policies, engine="ray", jobs=args.jobs))
            ray_s = min(ray_s, wall)
    print("| engine | CPUs | wall s | VM placements/s | mean task ms (wall × CPUs / tasks) | ratio to local |")
    print("|---|---:|---:|---:|---:|---:|")
    placements = vms * len(policies)
    for name, wall in (("local (process pool)", local_s), ("ray (local instance, started)", ray_s)):
        print(f"| {name} | {args.jobs} | {wall:.2f} | {placements / wall:,.0f} | "
              f"{1000 * wall * args.jobs / tasks:.0f} | {local_s / wall:.2f} |")
    print(f"Ray start-up (once per cluster, not in the row above): {start_s:.1f} s; "
          f"ray incl. start-up: ratio {local_s / (ray_s + start_s):.2f}")
    print(f"identical results: {identical(local, remote)}")


if __name__ == "__main__":
    main()
