"""A hidden-layer after-state scorer against the one-layer one it started from, on test windows.

Issue 29 asks for "the hidden-layer scorer on the grid, against the linear one". Per cell (one
workload's test window on one cluster at one vCPU overcommit, target utilisation 0.95, as in
``bench_quality.py``, whose workloads and test windows this reuses) it replays greedy, the
one-layer scorer (``--linear``, default: the shipped default) and the hidden-layer scorer
(``--model``), without the shield (the scorers alone; ``--shield-depth 1`` puts both behind
the shield, as the shipped configuration serves), on the same hosts, and reports each
scorer against greedy and the hidden one against the linear one: the change of average
lifetime defect with its 95% paired bootstrap interval over hosts (:mod:`catur.verdict`, as
``catur evaluate --baseline`` prints it).

    .venv/bin/python benchmarks/bench_hidden_scorer.py --model models/hidden8 --traces ../shared/traces \\
        --only huawei,azure --json hidden.json

``--smoke`` runs one cell of a generated trace in seconds, with the hidden scorer's warm start
(a network that carries the default's weights, :func:`catur.training.scorer_network.hidden_start`)
as the model: it must tie with the default exactly, and the script says so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_quality import WORKLOADS, trace_source
from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.shield import ShieldConfig
from catur.sim.admission import prepare_scenario
from catur.sim.evaluate import evaluate_policies, versus_baseline
from catur.sim.workload import Workload

LINEAR, HIDDEN = "linear", "hidden"


def run_cell(df, workload: str, days: str, cluster: str, overcommit: float, args) -> dict:
    started = time.perf_counter()
    scenario = prepare_scenario(df, cluster, days, 0.95, overcommit)
    streams = [s for s in scenario.streams if s.counted.any()]
    shield = ShieldConfig(depth=args.shield_depth) if args.shield_depth else None
    policies = [GREEDY, DeciderSpec(args.linear, shield, label=LINEAR), DeciderSpec(args.model, shield, label=HIDDEN)]
    results = evaluate_policies(streams, policies, jobs=args.jobs)
    return {
        "workload": workload, "days": days, "cluster": cluster, "overcommit": overcommit, "hosts": len(streams),
        "vms": int(results[GREEDY].summary.vms),
        "avg_defect": {name: float(r.summary.avg_defect) for name, r in results.items()},
        "vs_greedy": {name: c.to_dict() for name, c in versus_baseline(results, streams, GREEDY).items() if name != GREEDY},
        "hidden_vs_linear": versus_baseline(results, streams, LINEAR)[HIDDEN].to_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def relative(c: dict) -> str:
    """``+1.23% [-0.4, +2.9]``: the change relative to the baseline's average, with its interval."""
    base = c["baseline_avg_defect"]
    low, high = (100 * x / base for x in c["diff_ci"])
    return f"{100 * c['diff'] / base:+.2f}% [{low:+.1f}, {high:+.1f}]"


def markdown(cells: list[dict]) -> str:
    lines = ["| workload | cluster | oc | hosts | greedy | linear | hidden | linear vs greedy | hidden vs greedy | "
             "hidden vs linear [95% CI] |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        a = c["avg_defect"]
        lines.append(
            f"| {c['workload']} {c['days']} | {c['cluster']} | {c['overcommit']} | {c['hosts']} | {100 * a[GREEDY]:.3f}% | "
            f"{100 * a[LINEAR]:.3f}% | {100 * a[HIDDEN]:.3f}% | {relative(c['vs_greedy'][LINEAR])} | "
            f"{relative(c['vs_greedy'][HIDDEN])} | {relative(c['hidden_vs_linear'])} ({c['hidden_vs_linear']['outcome']}) |")
    mean = lambda name, to: np.mean([c["avg_defect"][name] / c["avg_defect"][to] - 1 for c in cells])  # noqa: E731
    lines.append("")
    lines.append(f"Mean over {len(cells)} cells: linear {100 * mean(LINEAR, GREEDY):+.2f}% vs greedy, hidden "
                 f"{100 * mean(HIDDEN, GREEDY):+.2f}% vs greedy, hidden {100 * mean(HIDDEN, LINEAR):+.2f}% vs linear; "
                 f"hidden clearly better than linear on {sum(c['hidden_vs_linear']['diff_ci'][1] < 0 for c in cells)}, "
                 f"clearly worse on {sum(c['hidden_vs_linear']['diff_ci'][0] > 0 for c in cells)}.")
    return "\n".join(lines)


def _warm_start_model(folder: Path) -> str:
    """The smoke run's model: ``--init-from default --hidden 6`` at generation 0."""
    from catur.policy_model import load_policy
    from catur.training.afterstate import scorer_weights
    from catur.training.scorer_network import Architecture, hidden_start

    default = load_policy("default")
    arch = Architecture(default.features, 6)
    params = hidden_start(scorer_weights(default, "default"), arch, np.ones(len(arch.features)), np.random.default_rng(0))
    arch.model(params, version="hidden-warm-start").save(folder / "hidden")
    return str(folder / "hidden")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the hidden-layer scorer (a model directory)")
    parser.add_argument("--linear", default="default", help="the one-layer scorer to compare with (default: the shipped default)")
    parser.add_argument("--traces", default="../shared/traces", help="folder of the real traces")
    parser.add_argument("--only", default="huawei,azure", help="comma-separated workloads of bench_quality.py (default %(default)s)")
    parser.add_argument("--clusters", default="mixed,amd-2s-nps4")
    parser.add_argument("--overcommits", default="1.0,1.02")
    parser.add_argument("--shield-depth", type=int, default=0, metavar="D",
                        help="put both scorers behind the shield of this look-ahead depth (default 0: the scorers alone)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="also write every cell here")
    parser.add_argument("--smoke", action="store_true", help="one cell of a generated trace (day 3, mixed, overcommit 1.02) "
                        "with the hidden scorer's warm start as the model, in seconds")
    args = parser.parse_args()
    workloads = {name: WORKLOADS[name] for name in args.only.split(",")}
    if args.smoke:
        import _smoke

        workloads = {"smoke": (_smoke.trace(vms=150), "3:3")}
        args.model, args.clusters, args.overcommits, args.jobs = _warm_start_model(_smoke.scratch()), "mixed", "1.02", 1
    if not args.model:
        parser.error("--model DIR (the hidden-layer scorer) is required")
    started = time.perf_counter()
    cells = []
    for name, (source, days) in workloads.items():
        source = trace_source(name, source, args.traces)
        if source is None:
            continue
        df = Workload(source).read()[0]
        for cluster in args.clusters.split(","):
            for oc in map(float, args.overcommits.split(",")):
                cell = run_cell(df, name, days, cluster, oc, args)
                cells.append(cell)
                a = cell["avg_defect"]
                print(f"{name} {cluster} oc={oc}: greedy {100 * a[GREEDY]:.3f}% linear {100 * a[LINEAR]:.3f}% hidden "
                      f"{100 * a[HIDDEN]:.3f}%; hidden vs linear {relative(cell['hidden_vs_linear'])} ({cell['seconds']:.0f} s, "
                      f"{time.perf_counter() - started:.0f} s total)", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(cells, indent=1))
    print()
    print(markdown(cells))
    if args.smoke:
        tie = all(c["avg_defect"][HIDDEN] == c["avg_defect"][LINEAR] for c in cells)
        print(f"\nsmoke: the warm start {'ties with' if tie else 'DIFFERS from'} the default exactly")
        if not tie:
            raise SystemExit(1)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
