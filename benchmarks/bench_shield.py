"""Shielding on the default Huawei-East-1 scenario: anomalies, correctable anomalies, Pareto.

1. ``correctable`` — the model with and without the depth-1 shield, greedy, and every
   baseline on the test window (days 16–31), with correctable anomalies counted against the
   5-step oracle on ``--oracle-hosts`` sampled hosts (as ``catur evaluate --oracle-hosts``).
2. ``pareto`` — the shielded model for depth 1–3 and width n ∈ {1, 5, 10}% on ``--hosts``
   sampled hosts (depth 3 is costly), average defect against anomalies, plotted to
   ``--plot``.

    .venv/bin/python benchmarks/bench_shield.py correctable --model DIR
    .venv/bin/python benchmarks/bench_shield.py pareto --model DIR --hosts 8 --plot shield_pareto.png
    .venv/bin/python benchmarks/bench_shield.py pareto --smoke   # seconds: the shipped model, day 3 of a generated trace
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.policies import BASELINES
from catur.shield import ShieldConfig
from catur.sim.workload import Workload
from catur.sim.evaluate import evaluate_policies

TRACE = "../shared/traces/huawei-east-1-lt.csv.gz"
TEST_DAYS = "16:31"  # --smoke: 3:3


def streams(trace: str):
    return Workload(trace, days=TEST_DAYS, cpu_overcommit=1.02, target_utilization=0.95).streams()


def sample(all_streams, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(all_streams), size=min(count, len(all_streams)), replace=False))
    return [all_streams[i] for i in picked]


def cmd_correctable(args) -> None:
    everything = streams(args.trace)
    policies = [GREEDY, *BASELINES, DeciderSpec(args.model, label="catur"),
                DeciderSpec(args.model, shield=ShieldConfig(depth=1), label="catur+shield(d1)"),
                DeciderSpec(None, shield=ShieldConfig(depth=1), label="greedy+shield(d1)")]
    started = time.perf_counter()
    full = evaluate_policies(everything, policies)
    hosts = sample(everything, args.oracle_hosts)
    sampled = evaluate_policies(hosts, policies, count_correctable=True)
    print(f"{len(everything)} hosts, test days {TEST_DAYS}; oracle (k=5) on {len(hosts)} sampled hosts; {time.perf_counter() - started:.0f} s")
    print("| policy | avg defect | anomalies (all hosts) | anomalies (sample) | correctable (sample) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in sorted(full.items(), key=lambda kv: kv[1].summary.anomalies):
        s = sampled[name]
        print(f"| {name} | {100 * r.summary.avg_defect:.3f}% | {r.summary.anomalies} | {s.summary.anomalies} | {s.extra['correctable_anomalies']} |")


def cmd_pareto(args) -> None:
    hosts = sample(streams(args.trace), args.hosts)
    specs = [DeciderSpec(args.model, label="catur (no shield)"), DeciderSpec(None, label=GREEDY)]
    for depth in (1, 2, 3):
        for width in (0.01, 0.05, 0.10):
            specs.append(DeciderSpec(args.model, shield=ShieldConfig(depth=depth, width=width), label=f"d{depth} n{int(width * 100)}%"))
    rows = {}
    for spec in specs:
        started = time.perf_counter()
        result = evaluate_policies(hosts, [spec])[spec.name]
        rows[spec.name] = (result, time.perf_counter() - started)
        print(f"  {spec.name}: {100 * result.summary.avg_defect:.3f}% avg defect, {result.summary.anomalies} anomalies ({rows[spec.name][1]:.0f} s)", flush=True)
    print(f"\n{len(hosts)} sampled hosts, test days {TEST_DAYS}")
    print("| policy | avg defect | anomalies | interventions | unshielded | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (r, wall) in rows.items():
        print(f"| {name} | {100 * r.summary.avg_defect:.3f}% | {r.summary.anomalies} | {r.extra.get('shield_interventions', 0)} | {r.extra.get('unshielded', 0)} | {wall:.0f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (r, _) in rows.items():
        marker = "s" if "no shield" in name or name == GREEDY else "o"
        ax.scatter(r.summary.anomalies, 100 * r.summary.avg_defect, marker=marker)
        ax.annotate(name, (r.summary.anomalies, 100 * r.summary.avg_defect), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("performance anomalies (defect at placement > 0.40)")
    ax.set_ylabel("average resource defect (%)")
    workload = "Huawei-East-1" if args.trace == TRACE else Path(args.trace).name
    ax.set_title(f"Shield depth d and width n: {workload} days {TEST_DAYS.replace(':', '-')}, {len(hosts)} hosts")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("correctable", "pareto"))
    parser.add_argument("--model", help="model directory (e.g. from bench_learning.py main --out), or 'default'; "
                        "required unless --smoke")
    parser.add_argument("--trace", default=TRACE)
    parser.add_argument("--oracle-hosts", type=int, default=6)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--plot", default="shield_pareto.png")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: the shipped model (unless --model), day 3 of a "
                        "generated trace (unless --trace), 1 host (1 oracle host), the plot in a scratch folder (unless "
                        "--plot); its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        import _smoke

        global TEST_DAYS
        TEST_DAYS, args.model, args.hosts, args.oracle_hosts = "3:3", args.model or "default", 1, 1
        args.trace = _smoke.trace(vms=120) if args.trace == parser.get_default("trace") else args.trace
        args.plot = str(_smoke.scratch() / "shield_pareto.png") if args.plot == parser.get_default("plot") else args.plot
    elif not args.model:
        parser.error("--model is required (or --smoke)")
    {"correctable": cmd_correctable, "pareto": cmd_pareto}[args.experiment](args)


if __name__ == "__main__":
    main()
