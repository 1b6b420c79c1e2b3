"""Wall time and events per second of `catur evaluate` over a whole trace, all non-oracle policies.

Runs the installed `catur evaluate` twice on the same trace: with 2 worker processes and with
1 (the baseline in the same run), and reports both and their ratio. Events are arrivals plus
departures replayed, summed over policies.

    .venv/bin/python benchmarks/bench_evaluate.py ../shared/traces/huawei-east-1-lt.csv.gz
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catur.placement import GREEDY
from catur.policies import BASELINES, PRIMITIVES
from catur.traces.readers import read_trace


def run(trace: str, jobs: int, extra: list[str]) -> tuple[float, dict]:
    catur = Path(sys.executable).with_name("catur")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        start = time.perf_counter()
        subprocess.run(
            [str(catur), "evaluate", trace, "--jobs", str(jobs), "--quiet", "--json", str(out), *extra],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        return wall, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("extra", nargs="*", help="more `catur evaluate` options (after --)")
    args = parser.parse_args()
    df, _ = read_trace(args.trace)
    events_per_policy = len(df) + int(df["departure_s"].notna().sum())
    policies = len([*PRIMITIVES, GREEDY, *BASELINES])
    events = events_per_policy * policies
    print(f"{Path(args.trace).name}: {len(df):,} VMs, {events_per_policy:,} events per policy, {policies} policies")
    print("| jobs | wall s | events/s | ratio to jobs=1 |")
    print("|---:|---:|---:|---:|")
    walls = {}
    for jobs in (1, 2):
        walls[jobs], _ = run(args.trace, jobs, args.extra)
    for jobs in (1, 2):
        print(f"| {jobs} | {walls[jobs]:.1f} | {events / walls[jobs]:,.0f} | {walls[1] / walls[jobs]:.2f} |")


if __name__ == "__main__":
    main()
