"""What the greedy gate (catur.verdict) says about a model on a validation window.

The same comparison ``catur train`` makes at the end of a run and ``catur models promote``
reads back: the model (alone: no uncertainty gate, no shield, as training evaluates it)
against greedy and the best primitive, host by host, with the 95% paired bootstrap interval
over hosts. Prints one markdown row per setting for the results pages (docs/results/).

    # the shipped model on the setting it was validated on (synthetic default, days 13-15):
    # the 8 hosts training sampled (reproduces the manifest), then every host of the window
    .venv/bin/python benchmarks/bench_gate.py --model default --hosts 8
    .venv/bin/python benchmarks/bench_gate.py --model default
    # the shipped model on Huawei-East-1's validation days (bench_learning.py's setting)
    .venv/bin/python benchmarks/bench_gate.py --model default --trace ../shared/traces/huawei-east-1-lt.csv.gz \\
        --cpu-overcommit 1.02 --target-utilization 0.95 --days 13:15
    # seconds, to check that the script runs: day 3 of a generated trace, 3 hosts
    .venv/bin/python benchmarks/bench_gate.py --smoke
"""

from __future__ import annotations

import argparse
import time

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.policies import PRIMITIVES
from catur.sim.evaluate import evaluate_policies
from catur.training.train import TrainConfig, _sample_streams
from catur.verdict import Comparison, gate_record, host_sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model directory or 'default' (the shipped model)")
    parser.add_argument("--trace", help="trace file (default: the synthetic default workload)")
    parser.add_argument("--days", default="13:15", help="validation window (default 13:15)")
    parser.add_argument("--cluster", default="mixed")
    parser.add_argument("--cpu-overcommit", type=float)
    parser.add_argument("--target-utilization", type=float, default=0.9)
    parser.add_argument("--hosts", type=int, help="sample this many hosts as catur train does (default: every host)")
    parser.add_argument("--seed", type=int, default=0, help="the host sample's seed (training's --seed)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: 3 hosts of day 3 of a generated trace "
                        "(or of --trace); its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        import _smoke

        args.trace = args.trace or _smoke.trace()
        args.days, args.hosts, args.jobs = "3:3", 3, 1

    config = TrainConfig(
        workload=args.trace or "default", cluster=args.cluster, eval_days=args.days, target_utilization=args.target_utilization,
        cpu_overcommit=args.cpu_overcommit, seed=args.seed, eval_hosts=args.hosts or 1,
    )
    streams, sample = _sample_streams(config, args.days)
    if args.hosts is None:
        sample = [s for s in streams if s.counted.any()]
    started = time.perf_counter()
    spec = DeciderSpec(model=args.model, use_gate=False, label="catur")
    results = evaluate_policies(sample, [spec, *PRIMITIVES, GREEDY], jobs=args.jobs, seed=args.seed)
    hosts, vms, _ = host_sums(sample, results[GREEDY].rows, results[GREEDY].lifetime_defect)
    sums = {name: host_sums(sample, r.rows, r.lifetime_defect)[2] for name, r in results.items()}
    record = gate_record(hosts, vms, sums, "catur")
    greedy, best = (Comparison.from_dict(record["versus"][k]) for k in ("greedy", "best_primitive"))
    seconds = time.perf_counter() - started
    print("| model | workload | days | hosts | VMs | model | greedy | best primitive | model − greedy (95% CI) | outcome | gate |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    lo, hi = record["versus"]["greedy"]["diff_ci"]
    ci = f"{100 * greedy.diff:+.3f} ({100 * lo:+.3f} to {100 * hi:+.3f})" if lo is not None else f"{100 * greedy.diff:+.3f} (no interval)"
    print(
        f"| {args.model} | {args.trace or 'synthetic default'} | {args.days} | {greedy.hosts} | {greedy.vms:,} | "
        f"{100 * greedy.model_defect:.3f}% | {100 * greedy.baseline_defect:.3f}% | {best.baseline} {100 * best.baseline_defect:.3f}% | "
        f"{ci} | {greedy.outcome} | {'**loses**' if greedy.loses else 'passes'} |"
    )
    print(f"\n({seconds:.0f} s; model vs best primitive: {best.describe('model')})")


if __name__ == "__main__":
    main()
