"""Two after-state scorers head to head on test windows: e.g. a PPO-trained one against the
ES-trained shipped default, and both against greedy, with paired-bootstrap intervals.

A cell is one workload's test window on one cluster at one vCPU overcommit (target utilisation
0.95), admitted exactly as ``benchmarks/bench_quality.py`` and ``catur evaluate`` admit it
(:func:`catur.sim.admission.prepare_scenario`, :func:`catur.sim.evaluate.evaluate_policies`).
Per cell it replays greedy, ``--model`` and ``--versus`` (unshielded: the scorers as trained)
on every host and reports each one's average lifetime defect and the paired differences
(:func:`catur.verdict.compare`: the 95% paired bootstrap over hosts, in points of defect):
model vs versus, model vs greedy, versus vs greedy. Only the test windows are read (the grid's:
Huawei-East-1 days 16–31, Azure 2017 days 3–4).

    .venv/bin/python benchmarks/bench_scorer_pair.py --model models/ppo --versus default \\
        --traces ../shared/traces --only huawei,azure --clusters mixed,amd-2s-nps4 --overcommits 1.0,1.02
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_quality import WORKLOADS, host_sums, read_workload
from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.sim.admission import prepare_scenario
from catur.sim.evaluate import evaluate_policies
from catur.verdict import compare

MODEL, VERSUS = "model", "versus"


def run_cell(df, workload: str, days: str, cluster: str, overcommit: float, args) -> dict:
    started = time.perf_counter()
    scenario = prepare_scenario(df, cluster, days, 0.95, overcommit)
    streams = [s for s in scenario.streams if s.counted.any()]
    policies = [GREEDY, DeciderSpec(args.model, label=MODEL), DeciderSpec(args.versus, label=VERSUS)]
    results = evaluate_policies(streams, policies, jobs=args.jobs)
    host_of_row = {r: s.host for s in streams for r in s.rows[s.counted].tolist()}
    hosts = np.array(sorted({s.host for s in streams}))
    sums = {name: host_sums(r, host_of_row, hosts)[0] for name, r in results.items()}
    counts = host_sums(results[GREEDY], host_of_row, hosts)[1]
    pairs = {"model_vs_versus": (MODEL, VERSUS), "model_vs_greedy": (MODEL, GREEDY), "versus_vs_greedy": (VERSUS, GREEDY)}
    cell = {"workload": workload, "days": days, "cluster": cluster, "overcommit": overcommit, "hosts": len(hosts),
            "vms": int(counts.sum()), "avg_defect": {n: float(s.sum() / counts.sum()) for n, s in sums.items()}}
    for key, (a, b) in pairs.items():
        c = compare(counts, sums[a], sums[b], b)
        cell[key] = {"diff": c.diff, "low": c.diff_low, "high": c.diff_high, "outcome": c.outcome,
                     "relative": float(sums[a].sum() / sums[b].sum() - 1.0)}
    cell["seconds"] = time.perf_counter() - started
    return cell


def markdown(cells: list[dict]) -> str:
    def pair(c: dict) -> str:
        return f"{100 * c['relative']:+.2f}% ({100 * c['diff']:+.3f} pt [{100 * c['low']:+.3f}, {100 * c['high']:+.3f}])"

    lines = ["| cell | hosts | VMs | greedy | model | versus | model vs versus | model vs greedy | versus vs greedy |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for c in cells:
        a = c["avg_defect"]
        lines.append(f"| {c['workload']} {c['days']} {c['cluster']} oc {c['overcommit']} | {c['hosts']} | {c['vms']:,} | "
                     f"{100 * a[GREEDY]:.3f}% | {100 * a[MODEL]:.3f}% | {100 * a[VERSUS]:.3f}% | {pair(c['model_vs_versus'])} | "
                     f"{pair(c['model_vs_greedy'])} | {pair(c['versus_vs_greedy'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the scorer under test (a model directory or 'default')")
    parser.add_argument("--versus", default="default", help="the scorer it is compared with (default: the shipped default)")
    parser.add_argument("--traces", default="../shared/traces", help="folder of the real traces")
    parser.add_argument("--only", default="huawei", help="comma-separated workloads of the grid (default huawei)")
    parser.add_argument("--clusters", default="mixed,amd-2s-nps4")
    parser.add_argument("--overcommits", default="1.0,1.02")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="also write every cell here")
    parser.add_argument("--smoke", action="store_true", help="a run of seconds on a generated trace (day 3, mixed, "
                        "overcommit 1.02), the shipped default against itself; its numbers mean nothing")
    args = parser.parse_args()
    workloads = WORKLOADS
    if args.smoke:
        import _smoke

        workloads = {"smoke": (_smoke.trace(vms=150), "3:3")}
        args.only, args.clusters, args.overcommits, args.jobs = "smoke", "mixed", "1.02", 1
    started = time.perf_counter()
    cells = []
    for name in args.only.split(","):
        source, days = workloads[name]
        df = read_workload(name, source, args.traces)
        if df is None:
            continue
        for cluster in args.clusters.split(","):
            for oc in (float(x) for x in args.overcommits.split(",")):
                cell = run_cell(df, name, days, cluster, oc, args)
                cells.append(cell)
                a = cell["avg_defect"]
                print(f"{name} {cluster} oc={oc}: greedy {100 * a[GREEDY]:.3f}% model {100 * a[MODEL]:.3f}% versus "
                      f"{100 * a[VERSUS]:.3f}% ({cell['seconds']:.0f} s)", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(cells, indent=1))
    print()
    print(markdown(cells))
    if cells:
        mean = lambda key: float(np.mean([c[key]["relative"] for c in cells]))  # noqa: E731
        print(f"\ncell means: model vs versus {100 * mean('model_vs_versus'):+.2f}%, model vs greedy "
              f"{100 * mean('model_vs_greedy'):+.2f}%, versus vs greedy {100 * mean('versus_vs_greedy'):+.2f}%")
    print(f"\n{len(cells)} cells: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
