"""Placements per second of every policy on one 4-node host (amd-2s-nps2), single process.

Each policy places the same sequence of requests drawn from the Huawei-East-1-like flavor mix
onto the same sequence of random host states (from empty to overloaded), so the policies are
timed on identical work. The baseline for ratios is `core-best-fit`, the simplest primitive,
measured in the same run.

    .venv/bin/python benchmarks/bench_placement.py [--placements 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from catur.placement import placement_function
from catur.policies import BASELINES, PRIMITIVES
from catur.request import VMRequest
from catur.topology import get_preset

# (vcpus, GiB) and weights: roughly Huawei-East-1's mix, with a few large VMs that split.
FLAVORS = [(1, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128)]
WEIGHTS = [0.35, 0.36, 0.14, 0.08, 0.04, 0.02, 0.007, 0.003]


def workload(n: int, seed: int = 0):
    topology = get_preset("amd-2s-nps2")
    rng = np.random.default_rng(seed)
    fill = rng.uniform(0.0, 1.1, size=(n, 1))
    used_vcpus = np.floor(fill * rng.uniform(0.7, 1.0, (n, topology.num_nodes)) * topology.node_cores).astype(np.int64)
    used_mem = np.floor(fill * rng.uniform(0.7, 1.0, (n, topology.num_nodes)) * topology.node_mem_mib).astype(np.int64)
    picks = rng.choice(len(FLAVORS), size=n, p=np.array(WEIGHTS) / sum(WEIGHTS))
    requests = [VMRequest(FLAVORS[i][0], FLAVORS[i][1] * 1024) for i in picks]
    return topology, used_vcpus, used_mem, requests


def rate(name, topology, used_vcpus, used_mem, requests, repeats) -> float:
    decide = placement_function(name)
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for i, request in enumerate(requests):
            decide(topology, used_vcpus[i], used_mem[i], request, rng=rng)
        best = min(best, time.perf_counter() - start)
    return len(requests) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--placements", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per policy")
    args = parser.parse_args()
    topology, used_vcpus, used_mem, requests = workload(args.placements)
    names = [*PRIMITIVES, "greedy", *BASELINES]
    rates = {name: rate(name, topology, used_vcpus, used_mem, requests, args.repeats) for name in names}
    base = rates["core-best-fit"]
    print(f"{args.placements} placements on amd-2s-nps2, best of {args.repeats}")
    print(f"| policy | placements/s | µs/placement | ratio to core-best-fit |")
    print(f"|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {rates[name]:,.0f} | {1e6 / rates[name]:.1f} | {rates[name] / base:.2f} |")


if __name__ == "__main__":
    main()
