"""Experiment: choose λ of ``resident-greedy`` on the validation days only (Huawei-East-1).

``resident-greedy`` (:mod:`catur.resident`) scores each primitive's candidate by the new VM's
defect plus λ · Σ_nodes residents(node) · ΔCOR(node). λ is picked here on days 13–15
(days 1–12 replayed first as warm-up, so hosts are realistically loaded; no day after 15 is
read), at overcommit 1.0 and 1.02 on the mixed cluster, target utilisation 0.95: the λ with
the lowest mean ratio to greedy over the two scenarios. The test days are reported by
``benchmarks/bench_quality.py``, never here.

    .venv/bin/python benchmarks/exp_resident_weight.py --trace ../shared/traces/huawei-east-1-lt.csv.gz
    .venv/bin/python benchmarks/exp_resident_weight.py --smoke     # seconds, on a generated trace
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.sim.workload import Workload
from catur.sim.evaluate import evaluate_policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="the trace (required unless --smoke)")
    parser.add_argument("--val-days", default="13:15")
    parser.add_argument("--weights", default="0.01,0.02,0.03,0.05,0.1,0.2")
    parser.add_argument("--overcommits", default="1.0,1.02")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", 
                        help="a run of seconds to check the script works: two weights, one overcommit, day 3 of a "
                        "generated trace (or of --trace); its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        import _smoke

        args.trace = args.trace or _smoke.trace()
        args.val_days, args.weights, args.overcommits, args.jobs = "3:3", "0.05,0.1", "1.02", 1
    elif not args.trace:
        parser.error("--trace is required (or --smoke)")
    started = time.perf_counter()
    weights = [float(w) for w in args.weights.split(",")]
    specs = [DeciderSpec(resident_weight=w, label=f"λ={w:g}") for w in weights]
    ratios: dict[float, list[float]] = {w: [] for w in weights}
    print("| overcommit | policy | avg defect (val) | vs greedy |\n|---|---|---:|---:|")
    for oc in (float(x) for x in args.overcommits.split(",")):
        streams = Workload(args.trace, cluster="mixed", days=args.val_days, target_utilization=0.95, cpu_overcommit=oc).streams()
        results = evaluate_policies(streams, [GREEDY, "xen", *specs], jobs=args.jobs)
        greedy = results[GREEDY].summary.avg_defect
        for name, result in results.items():
            value = result.summary.avg_defect
            print(f"| {oc:g} | {name} | {100 * value:.3f}% | {100 * (value / greedy - 1):+.1f}% |", flush=True)
        for w, spec in zip(weights, specs):
            ratios[w].append(results[spec.name].summary.avg_defect / greedy)
    best = min(weights, key=lambda w: np.mean(ratios[w]))
    print(f"\nchosen λ = {best:g} (mean ratio to greedy on validation {np.mean(ratios[best]):.4f}); "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
