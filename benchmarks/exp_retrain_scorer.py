"""``catur retrain`` with an after-state scorer as the current version, on Huawei-East-1.

    .venv/bin/python benchmarks/exp_retrain_scorer.py --trace ../shared/traces/huawei-east-1-lt.csv.gz \\
        --out /tmp/exp_retrain_scorer
    .venv/bin/python benchmarks/exp_retrain_scorer.py --smoke   # seconds: 4 days of a generated trace

The shipped default is a one-layer after-state scorer, and ``catur retrain`` fine-tunes a
scorer by evolution strategies from its own weights. Two runs on the recent window
(``--recent``, default days 16–18), per host topology, in the scenario of the other Huawei
benchmarks (``mixed``, 2% vCPU overcommit, 95% target utilisation):

1. **The shipped default as current**, check only (``--max-iterations 0``): is it healthy
   on days it was never trained or selected on?
2. **A collapsed scorer, made by hand** (it prefers the placement that leaves the nodes most
   unevenly loaded: ``imbalance_after`` +1, ``defect`` −0.05), the way the retrain tests make a
   collapsed primitive-action model: ``catur retrain`` with ``--generations`` per iteration.

Then every model, greedy and the primitives per topology on the recent window and on the
held-out days after it (``--test``, default 19–31). Prints Markdown tables for the results pages (docs/results/)
and writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from exp_retrain_huawei import SCENARIO, SMOKE_RETRAIN, per_group, report, smoke_args

from catur.afterstate import AfterStateModel
from catur.registry import Registry
from catur.training.retrain import RetrainConfig, run_retrain

COLLAPSED = {"defect": -0.05, "imbalance_after": 1.0}
# --smoke: days 3 / 4 of a generated trace, one generation, one iteration, in process.
SMOKE_SIZES = dict(recent="3:3", test="4:4", generations=1, max_iterations=1, jobs=1)


def retrain(registry: Registry, args: argparse.Namespace, out: Path, max_iterations: int):
    return run_retrain(
        RetrainConfig(registry=str(registry.root), trace=args.trace, days=args.recent, group_by="topology",
                      max_iterations=max_iterations, generations=args.generations, budget_minutes=args.budget_minutes,
                      jobs=args.jobs, gate_samples=0, report=str(out), **SCENARIO,
                      **(dict(eval_hosts=SMOKE_RETRAIN["eval_hosts"], improve_generations=1) if args.smoke else {})),
        log=lambda m: print(f"retrain: {m}", flush=True), progress=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="the trace (required unless --smoke)")
    parser.add_argument("--out", default="/tmp/exp_retrain_scorer")
    parser.add_argument("--recent", default="16:18", help="the retrain window (default 16:18)")
    parser.add_argument("--test", default="19:31", help="held-out days after it (default 19:31)")
    parser.add_argument("--generations", type=int, default=8, help="evolution-strategy generations per iteration")
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: days 3 and 4 of a generated trace (or of "
                        "--trace) as recent window and test, one generation, one iteration, --out in a scratch folder "
                        "unless given; its numbers mean nothing")
    args = parser.parse_args()
    smoke_args(args, parser, SMOKE_SIZES)

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    timings: dict[str, float] = {}

    shipped = Registry(out / "registry-default", create=True)
    shipped.promote(shipped.add("default", note="the shipped default").version, reason="start")
    t0 = time.perf_counter()
    check = retrain(shipped, args, out / "report-default", max_iterations=0)
    timings["check_default_s"] = time.perf_counter() - t0

    collapsed_dir = AfterStateModel.linear(COLLAPSED, version="collapsed-by-hand").save(out / "collapsed")
    registry = Registry(out / "registry", create=True)
    registry.promote(registry.add(collapsed_dir, note="collapsed by hand").version, reason="start", force=True)
    t0 = time.perf_counter()
    outcome = retrain(registry, args, out / "report-collapsed", max_iterations=args.max_iterations)
    timings["retrain_s"] = time.perf_counter() - t0
    retrained = Path(registry.current().path) if outcome.promoted else (Path(outcome.candidate_dir) if outcome.candidate_dir else None)

    models = {"collapsed scorer (by hand)": collapsed_dir}
    if retrained is not None and (retrained / "weights.npz").exists():
        models[f"retrained scorer ({outcome.status}, {len(outcome.iterations)} it.)"] = retrained
    models["shipped default"] = Path(shipped.current().path)
    t0 = time.perf_counter()
    recent = per_group(args.trace, args.recent, models, args.jobs, out)
    test = per_group(args.trace, args.test, models, args.jobs, out)
    timings["evaluation_s"] = time.perf_counter() - t0

    result = {
        "default_check": {"status": check.status, "exit_code": check.exit_code, "reason": check.reason},
        "outcome": {"status": outcome.status, "exit_code": outcome.exit_code, "reason": outcome.reason,
                    "iterations": [it.to_dict() for it in outcome.iterations]},
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "recent": recent, "test": test, "args": vars(args),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print()
    print(f"shipped default, check only: {check.status} (exit {check.exit_code}): {check.reason}")
    report("collapsed scorer", outcome, timings, recent, test, list(models), args)


if __name__ == "__main__":
    main()
