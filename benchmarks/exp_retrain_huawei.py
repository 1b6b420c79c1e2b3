"""The paper's continuous-training experiment, in spirit, on Huawei-East-1.

    .venv/bin/python benchmarks/exp_retrain_huawei.py --trace ../shared/traces/huawei-east-1-lt.csv.gz \\
        --out /tmp/exp_retrain
    .venv/bin/python benchmarks/exp_retrain_huawei.py --smoke   # seconds: 4 days of a generated trace

1. **A model trained on little data.** MaskablePPO with load-aware shaping and *no* greedy
   warm start (the paper's recipe, not ours) on day 1 of Huawei-East-1, validated on day 2:
   2 of the first 15 days, the closest whole-day split to the paper's "10% of days 1–15".
2. It becomes the registry's current model, and ``catur retrain`` runs on the recent window
   (``--recent``, default days 16–18): collapse check per host topology (the trace has no
   cluster column, so the ``intel-2s`` and ``amd-2s-nps2`` hosts are the two "clusters"),
   fine-tuning on the losing ones, validation on all, promotion only if it beats every
   primitive everywhere. Iterations and wall time are recorded.
3. **From scratch**, for comparison: ``catur train``'s own recipe (greedy warm start of 20,000
   observations, then PPO) on the same recent window, with as many RL steps as the retrain
   job used in all its iterations.
4. Every model and every primitive (and greedy) is evaluated per topology on the recent
   window and on the held-out days after it (``--test``, default 19–31).

Scenario flags are those of the other Huawei benchmarks: ``mixed`` cluster, 2% vCPU
overcommit at admission, 95% target utilisation (44 hosts). Prints Markdown tables for
docs/results/continuous-training.md and writes ``results.json`` and the retrain report under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.policies import PRIMITIVES
from catur.registry import Registry
from catur.training.collapse import evaluate_by_group, load_window
from catur.training.retrain import RetrainConfig, run_retrain
from catur.training.train import TrainConfig, train

SCENARIO = dict(cluster="mixed", cpu_overcommit=1.02, target_utilization=0.95)
# --smoke: days 1 / 2 / 3 / 4 of a generated trace, 512 RL steps, one iteration, everything in process.
SMOKE_DAYS = dict(initial_days="1:1", initial_eval_days="2:2", recent="3:3", test="4:4")
SMOKE_SIZES = dict(initial_timesteps=512, timesteps=512, warm_start=256, scratch_warm_start=256, max_iterations=1, jobs=1)
SMOKE_TRAIN = dict(n_envs=1, gate_samples=200, eval_hosts=2)  # TrainConfig: no environment worker to start, small fits
SMOKE_RETRAIN = dict(gate_samples=200, eval_hosts=2)  # RetrainConfig


def smoke_args(args: argparse.Namespace, parser: argparse.ArgumentParser, sizes: dict) -> None:
    """Turn ``args`` into a smoke run's (``--smoke``): a generated trace unless ``--trace``, the
    output in a scratch folder unless ``--out``; without ``--smoke``, insist on ``--trace``."""
    if not args.smoke:
        if not args.trace:
            parser.error("--trace is required (or --smoke)")
        return
    import _smoke

    args.trace = args.trace or _smoke.trace(days=4, vms=400)
    if args.out == parser.get_default("out"):
        args.out = str(_smoke.scratch() / "out")
    for name, value in sizes.items():
        setattr(args, name, value)


def per_group(trace: str, days: str, models: dict[str, Path], jobs: int, work: Path) -> dict:
    """``{policy: {topology: avg_defect}}`` on ``days`` for the models, primitives and greedy."""
    config = RetrainConfig(registry="-", trace=trace, days=days, group_by="topology", **SCENARIO)
    window = load_window(config, work, print)
    specs = [DeciderSpec(model=str(path), use_gate=False, label=name) for name, path in models.items()]
    results = evaluate_by_group(window, [*specs, *PRIMITIVES, GREEDY], jobs=jobs, seed=0, desc=f"days {days}")
    out = {name: {g: s.avg_defect for g, s in by_group.items()} for name, by_group in results.items()}
    out["_vms"] = {g: s.vms for g, s in results[GREEDY].items()}
    return out


def table(title: str, results: dict, models: list[str]) -> str:
    groups = list(results["_vms"])
    lines = [f"**{title}**", "", "| policy | " + " | ".join(f"{g} ({results['_vms'][g]:,} VMs)" for g in groups) + " | beats every primitive on every topology |",
             "|---|" + "---:|" * len(groups) + "---|"]
    for name in [*models, GREEDY, *PRIMITIVES]:
        row = [f"{100 * results[name][g]:.3f}%" for g in groups]
        verdict = ""
        if name not in PRIMITIVES:
            verdict = "yes" if all(results[name][g] < min(results[p][g] for p in PRIMITIVES) for g in groups) else "no"
        lines.append(f"| {name} | " + " | ".join(row) + f" | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="the trace (required unless --smoke)")
    parser.add_argument("--out", default="/tmp/exp_retrain")
    parser.add_argument("--initial-days", default="1:1", help="training window of the first model (default 1:1)")
    parser.add_argument("--initial-eval-days", default="2:2")
    parser.add_argument("--initial-timesteps", type=int, default=20_000)
    parser.add_argument("--recent", default="16:18", help="the retrain window (default 16:18)")
    parser.add_argument("--test", default="19:31", help="held-out days after it (default 19:31)")
    parser.add_argument("--timesteps", type=int, default=20_000, help="RL steps per retrain iteration")
    parser.add_argument("--warm-start", type=int, default=5_000, help="greedy observations per retrain iteration")
    parser.add_argument("--scratch-warm-start", type=int, default=20_000)
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: days 1, 2, 3 and 4 of a generated trace (or "
                        "of --trace) as initial training, its validation, recent window and test, 512 RL steps, one "
                        "iteration, --out in a scratch folder unless given; its numbers mean nothing")
    args = parser.parse_args()
    smoke_args(args, parser, SMOKE_DAYS | SMOKE_SIZES)
    small, small_retrain = (SMOKE_TRAIN, SMOKE_RETRAIN) if args.smoke else ({}, {})

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    timings = {}

    t0 = time.perf_counter()
    initial = out / "initial"
    train(TrainConfig(workload=args.trace, train_days=args.initial_days, eval_days=args.initial_eval_days,
                      timesteps=args.initial_timesteps, eval_every=max(1, args.initial_timesteps // 4), warm_start=0, allow_worse=True, **SCENARIO, **small),
          initial, progress=False)
    timings["initial_training_s"] = time.perf_counter() - t0

    registry = Registry(out / "registry", create=True)
    registry.promote(registry.add(initial, note=f"PPO from scratch on days {args.initial_days}").version, reason="initial", force=True)  # a weak start, on purpose
    t0 = time.perf_counter()
    outcome = run_retrain(
        RetrainConfig(registry=str(registry.root), trace=args.trace, days=args.recent, group_by="topology",
                      budget_minutes=args.budget_minutes, max_iterations=args.max_iterations, timesteps=args.timesteps,
                      warm_start=args.warm_start, jobs=args.jobs, report=str(out / "retrain-report"),
                      **SCENARIO, **small_retrain),
        log=lambda m: print(f"retrain: {m}", flush=True),
    )
    timings["retrain_s"] = time.perf_counter() - t0
    iterations = len(outcome.iterations)
    retrained = Path(registry.current().path) if outcome.promoted else (Path(outcome.candidate_dir) if outcome.candidate_dir else None)

    t0 = time.perf_counter()
    scratch = out / "scratch"
    train(TrainConfig(workload=args.trace, train_days=args.recent, eval_days=args.recent,
                      timesteps=max(1, iterations) * args.timesteps, eval_every=args.timesteps // 2,
                      warm_start=args.scratch_warm_start, allow_worse=True, **SCENARIO, **small),
          scratch, progress=False)
    timings["scratch_training_s"] = time.perf_counter() - t0

    models = {"initial (day 1, no warm start)": initial}
    if retrained is not None:
        models[f"retrained ({outcome.status}, {iterations} it.)"] = retrained
    models["from scratch"] = scratch
    recent = per_group(args.trace, args.recent, models, args.jobs, out)
    test = per_group(args.trace, args.test, models, args.jobs, out)

    result = {"outcome": {"status": outcome.status, "exit_code": outcome.exit_code, "reason": outcome.reason,
                          "iterations": [it.to_dict() for it in outcome.iterations], "drift": outcome.drift},
              "timings_s": {k: round(v, 1) for k, v in timings.items()}, "recent": recent, "test": test, "args": vars(args)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print()
    report("retrain", outcome, timings, recent, test, list(models), args)


def report(name: str, outcome, timings: dict, recent: dict, test: dict, models: list[str], args: argparse.Namespace) -> None:
    """Print a retrain outcome, its iterations, the wall times and both per-topology tables."""
    print(f"{name}: {outcome.status} (exit {outcome.exit_code}) after {len(outcome.iterations)} iteration(s): {outcome.reason}")
    for it in outcome.iterations:
        print(f"  iteration {it.number}: fine-tuned on {', '.join(it.groups)} ({it.hosts} hosts), {it.wall_s:.0f} s, passes: {it.passes}")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print()
    print(table(f"Recent window, days {args.recent} (what retrain validated on)", recent, models))
    print()
    print(table(f"Held out, days {args.test}", test, models))


if __name__ == "__main__":
    main()
