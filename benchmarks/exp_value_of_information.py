"""Experiment: what is each piece of information worth? (Huawei-East-1, issue 12 item 6)

Three questions, on the default scenario (mixed cluster, target 0.95, overcommit ``--overcommit``):

1. **Foresight.** The k-step oracle for k = 1, 2, 3, 5, 8 on a few sampled hosts of the test
   days (k = 1 is greedy; the oracle searches every primitive sequence for the next k
   arrivals of its host). Greedy and resident-greedy are shown on the same hosts.
2. **Departures.** The 5-step oracle that knows the next arrivals but not the departures
   between them (``oracle-arrivals-only``): how much of its gain is knowing who leaves.
3. **Ages.** ``resident-greedy`` with plain counts against the same rule with each resident
   weighted by the expected share of its life still ahead at its age
   (:func:`catur.resident.fit_age_weights`, fitted on days 1–12 lifetimes). λ of the aged
   rule is chosen on the validation days 13–15 among ``--aged-weights``; both rules are then
   reported on every host of the test days 16–31.
4. **Lifetimes.** The lifetime oracle (``oracle-lifetime``, :mod:`catur.sim.oracle`): it
   knows when every VM will leave, but not who arrives next, and places each VM where the
   exact lifetime objective is least if nothing else arrived. Beside it, on the same
   ``--lifetime-hosts`` sampled hosts: greedy, resident-greedy and the shipped model with the
   depth-1 shield.

    .venv/bin/python benchmarks/exp_value_of_information.py --trace ../shared/traces/huawei-east-1-lt.csv.gz
    .venv/bin/python benchmarks/exp_value_of_information.py --trace ../shared/traces/huawei-east-1-lt.csv.gz \
        --skip oracle,ages --cluster amd-2s-nps4 --lifetime-hosts 10
    .venv/bin/python benchmarks/exp_value_of_information.py --smoke   # seconds: days 1 / 2 / 3 of a generated trace
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.resident import DEFAULT_WEIGHT, RESIDENT_GREEDY, AgedResidentGreedy, fit_age_weights
from catur.sim.admission import parse_days
from catur.sim.workload import Workload
from catur.sim.evaluate import evaluate_policies
from catur.shield import ShieldConfig
from catur.sim.replay import ORACLE, ORACLE_ARRIVALS, ORACLE_LIFETIME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="the trace (required unless --smoke)")
    parser.add_argument("--overcommit", type=float, default=1.02)
    parser.add_argument("--ks", default="1,2,3,5,8", help="look-aheads of the oracle ('' for none)")
    parser.add_argument("--oracle-hosts", type=int, default=2)
    parser.add_argument("--aged-weights", default="0.05,0.1", help="λ tried for the aged rule on validation")
    parser.add_argument("--cluster", default="mixed")
    parser.add_argument("--lifetime-hosts", type=int, default=10, help="hosts sampled for the lifetime oracle")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: oracle,ages,lifetimes")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: days 1, 2 and 3 of a generated trace (or of "
                        "--trace) as the fitting, validation and test windows, k = 1 and 2, 2 hosts; its numbers mean nothing")
    args = parser.parse_args()
    fit_days, val_days, test_days = "1:12", "13:15", "16:31"
    if args.smoke:
        import _smoke

        args.trace = args.trace or _smoke.trace()
        fit_days, val_days, test_days = "1:1", "2:2", "3:3"
        args.ks, args.oracle_hosts, args.lifetime_hosts, args.jobs = "1,2", 2, 2, 1
    elif not args.trace:
        parser.error("--trace is required (or --smoke)")
    started = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    scenario = dict(cluster=args.cluster, target_utilization=0.95, cpu_overcommit=args.overcommit)
    test = Workload(args.trace, days=test_days, **scenario).streams()
    rows = []

    def row(part, name, value, greedy, hosts):
        rows.append((part, name, value, greedy, hosts))
        print(f"{part:<10} {name:<34} {100 * value:.3f}% (greedy {100 * greedy:.3f}%, {hosts}; "
              f"{time.perf_counter() - started:.0f} s)", flush=True)

    if "oracle" not in skip:
        rng = np.random.default_rng(args.seed)
        sample = [test[i] for i in np.sort(rng.choice(len(test), size=args.oracle_hosts, replace=False))]
        label = f"{len(sample)} hosts ({', '.join(str(s.host) for s in sample)})"
        base = evaluate_policies(sample, [GREEDY, RESIDENT_GREEDY], jobs=args.jobs)
        g = base[GREEDY].summary.avg_defect
        row("foresight", RESIDENT_GREEDY, base[RESIDENT_GREEDY].summary.avg_defect, g, label)
        for k in (int(x) for x in args.ks.split(",") if x.strip()):
            value = evaluate_policies(sample, [ORACLE], jobs=args.jobs, oracle_k=k)[ORACLE].summary.avg_defect
            row("foresight", f"oracle k={k}", value, g, label)
        value = evaluate_policies(sample, [ORACLE_ARRIVALS], jobs=args.jobs, oracle_k=5)[ORACLE_ARRIVALS].summary.avg_defect
        row("departures", "oracle k=5, arrivals only", value, g, label)
    if "ages" not in skip:
        df = Workload(args.trace).read()[0]
        _, train_end = parse_days(fit_days, df)
        train = df[df["arrival_s"] < train_end]
        departure = train["departure_s"].to_numpy(float).copy()
        departure[departure > train_end] = np.nan  # not yet known on day 12
        weights = fit_age_weights(train["arrival_s"].to_numpy(float), departure, train_end)
        print(f"age weights (fitted on days {fit_days.replace(':', '-')}): " + ", ".join(
            f"<{e / 3600:g} h: {w:.2f}" for e, w in zip(weights.edges_s, weights.weights)
        ) + f", older: {weights.weights[-1]:.2f}")
        val = Workload(args.trace, days=val_days, **scenario).streams()
        lams = [float(x) for x in args.aged_weights.split(",")]
        tried = evaluate_policies(val, [GREEDY, *(AgedResidentGreedy(weights, lam) for lam in lams)], jobs=args.jobs)
        g_val = tried.pop(GREEDY).summary.avg_defect
        for policy, result in tried.items():
            row("ages/val", f"aged rule λ={policy.weight:g}", result.summary.avg_defect, g_val, "all hosts")
        chosen = min(tried, key=lambda p: tried[p].summary.avg_defect)
        final = evaluate_policies(test, [GREEDY, RESIDENT_GREEDY, chosen], jobs=args.jobs)
        g = final[GREEDY].summary.avg_defect
        row("ages/test", f"counts only, λ={DEFAULT_WEIGHT:g}", final[RESIDENT_GREEDY].summary.avg_defect, g, "all hosts")
        row("ages/test", f"aged, λ={chosen.weight:g} (chosen on val)", final[chosen].summary.avg_defect, g, "all hosts")
    if "lifetimes" not in skip:
        rng = np.random.default_rng(args.seed)
        sample = [test[i] for i in np.sort(rng.choice(len(test), size=min(args.lifetime_hosts, len(test)), replace=False))]
        label = f"{len(sample)} hosts"
        catur = DeciderSpec("default", ShieldConfig(depth=1), label="catur+shield")
        got = evaluate_policies(sample, [GREEDY, RESIDENT_GREEDY, catur, ORACLE_LIFETIME], jobs=args.jobs)
        g = got[GREEDY].summary.avg_defect
        for name in (RESIDENT_GREEDY, "catur+shield", ORACLE_LIFETIME):
            row("lifetimes", name, got[name].summary.avg_defect, g, label)
    print("\n| part | policy | avg defect | greedy (same hosts) | vs greedy | hosts |\n|---|---|---:|---:|---:|---|")
    for part, name, value, greedy, hosts in rows:
        print(f"| {part} | {name} | {100 * value:.3f}% | {100 * greedy:.3f}% | {100 * (value / greedy - 1):+.1f}% | {hosts} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
