"""One generation of the scorer's evolution strategies: perturbations one by one vs one batch.

A generation replays ``2 · pairs`` perturbed weight vectors on ``hosts_per_replay`` sampled
hosts of a training window (:class:`catur.training.afterstate.EvolutionStep`). Replayed one
after another, the lock-step engine's fixed cost per step is paid ``2 · pairs`` times on a
batch of about ten hosts; replayed as one batch of hosts × perturbations
(:meth:`~catur.training.afterstate.Hosts.replay_population`), it is paid once. This script
times both on the same window, the same weights and the same random draws, generation by
generation in turns (one process each, no pool), checks that both give the same fitness bit
for bit, and prints the wall time per generation and the ratio.

Defaults are the trainer's (``pairs`` 6, ``hosts_per_replay`` 10) on a training draw like
``catur train-scorer``'s: a window of a workload on the ``mixed`` cluster. ``--smoke`` runs a
tiny version (one pair, three hosts, one day) in seconds, for CI.

    .venv/bin/python benchmarks/bench_es_generation.py                       # synthetic temporal-shift, days 10:12
    .venv/bin/python benchmarks/bench_es_generation.py --workload /work/shared/traces/huawei-east-1-lt.csv.gz --days 4:5
    .venv/bin/python benchmarks/bench_es_generation.py --smoke

``--only after`` times the current ``EvolutionStep`` alone (with the API every version has),
so the same command run against an older checkout times that version's generation.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="temporal-shift",
                        help="a synthetic scenario name or a trace path (default temporal-shift)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic workload seed (default 1, a training seed)")
    parser.add_argument("--days", default="10:12", help="window of days (default 10:12)")
    parser.add_argument("--cluster", default="mixed", help="cluster of the window (default mixed: 2-, 4- and 8-node hosts)")
    parser.add_argument("--overcommit", type=float, default=1.0, help="vCPU overcommit of the window (default 1.0)")
    parser.add_argument("--target", type=float, default=0.9, help="target utilisation of the window (default 0.9)")
    parser.add_argument("--pairs", type=int, default=6, help="antithetic pairs per generation (default 6, the trainer's)")
    parser.add_argument("--hosts-per-replay", type=int, default=10, help="hosts per replay (default 10, the trainer's)")
    parser.add_argument("--generations", type=int, default=3, help="generations timed per way (default 3)")
    parser.add_argument("--only", choices=("both", "before", "after"), default="both",
                        help="time one by one (before), one batch (after) or both in turns (default)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run: 1 pair, 3 hosts, 1 generation, one day")
    args = parser.parse_args()
    if args.smoke:
        args.pairs, args.hosts_per_replay, args.generations, args.days = 1, 3, 1, args.days.split(":")[0] + ":" + args.days.split(":")[0]
    if args.pairs < 1 or args.hosts_per_replay < 1 or args.generations < 1:
        parser.error("--pairs, --hosts-per-replay and --generations must be >= 1")

    from catur.sim.admission import prepare_scenario
    from catur.sim.workload import Workload
    from catur.training import afterstate as ta

    started = time.perf_counter()
    seed = {"seed": args.seed} if not os.path.exists(args.workload) else {}
    df = Workload(args.workload, **seed).read()[0]
    scenario = prepare_scenario(df, args.cluster, args.days, args.target, args.overcommit)
    streams = [s for s in scenario.streams if s.counted.any()]
    hosts = ta.Hosts(f"{args.workload} {args.days} {args.cluster}", streams)
    ta._POOL_SETS[:] = [hosts]
    rng = np.random.default_rng(0)
    scales = ta.feature_scales(ta._POOL_SETS, rng)
    free = ta.trainable(scales)
    weights = ta.warm_start(0.05)
    vms = sum(int(s.trace.num_vms) for s in streams)
    print(f"# ES generation: {2 * args.pairs} perturbations x {args.hosts_per_replay} hosts\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{hosts.label}: {len(streams)} hosts, {vms} VMs (~{vms / max(len(streams), 1):.0f} per host); "
          f"set up in {time.perf_counter() - started:.0f} s\n")

    ways = {"before": False, "after": True} if args.only == "both" else {args.only: args.only == "after"}
    times: dict[str, list[float]] = {way: [] for way in ways}
    cpu: dict[str, list[float]] = {way: [] for way in ways}  # this process's CPU time: less noisy on a shared box
    fitness: dict[str, list[np.ndarray]] = {way: [] for way in ways}
    for generation in range(args.generations):
        order = list(ways) if generation % 2 == 0 else list(reversed(ways))  # take turns going first
        for way in order:
            options = {} if args.only != "both" else {"batched": ways[way]}
            step = ta.EvolutionStep(args.pairs, args.hosts_per_replay, 0.3, 0.5, scales, free, **options)
            t0, c0 = time.perf_counter(), time.process_time()
            _, f = step.take(None, weights, [0], np.random.default_rng(100 + generation))
            times[way].append(time.perf_counter() - t0)
            cpu[way].append(time.process_time() - c0)
            fitness[way].append(f)
    print("| generation | " + " | ".join(f"{way} wall s | {way} CPU s" for way in ways) + " |")
    print("|---:|" + "---:|---:|" * len(ways))
    for g in range(args.generations):
        print(f"| {g} | " + " | ".join(f"{times[way][g]:.2f} | {cpu[way][g]:.2f}" for way in ways) + " |")
    medians = {way: float(np.median(t)) for way, t in times.items()}
    cpu_medians = {way: float(np.median(t)) for way, t in cpu.items()}
    print("| median | " + " | ".join(f"{medians[way]:.2f} | {cpu_medians[way]:.2f}" for way in ways) + " |\n")
    if len(ways) == 2:
        same = all(np.array_equal(a, b) for a, b in zip(fitness["before"], fitness["after"]))
        print(f"one batch: {medians['before'] / medians['after']:.1f}x less wall time ({cpu_medians['before'] / cpu_medians['after']:.1f}x "
              f"less CPU time) per generation than one by one (medians over {args.generations}); "
              f"same fitness bit for bit: {same}")
        if not same:
            raise SystemExit("the batched generation's fitness differs from the one-by-one replays")


if __name__ == "__main__":
    main()
