"""The quality grid: every policy that matters, on every held-out workload and scenario.

The yardstick of issue 12. A cell is one workload's test window on one cluster at one vCPU
overcommit (target utilisation 0.95). Per cell it reports:

* ``xen`` and the best of the paper's baselines (xen, nova-pack, tetris, e-pvm);
* ``greedy`` (the best deployable one-step rule) and ``resident-greedy`` (:mod:`catur.resident`);
* the shipped model (``catur``, i.e. ``--model default``) without and with the depth-1 shield;
* the 5-step oracle on a few sampled hosts (``--oracle-hosts``; it reads the future, so it is
  a yardstick, not a policy), with greedy and the others on the *same* hosts beside it; or,
  with ``--oracle oracle-foresight``, the oracle that knows every lifetime and the next
  ``--oracle-k`` arrivals and minimises the headline metric itself over them (the 5-step
  oracle minimises defect at placement, and loses to greedy on some cells);
* *vs greedy*: each policy's average defect relative to greedy's, with a bootstrap 95%
  confidence interval over hosts (hosts resampled with replacement, ``--boot`` draws);
* the share of the greedy→oracle gap each policy closes on the sampled hosts
  ``(greedy − policy) / (greedy − oracle)``.

Workloads (test windows only; earlier days are replayed first as warm-up): Huawei-East-1
days 16–31, Azure 2017 dev days 3–4 (its last two), and the synthetic drift workloads
``temporal-shift`` and ``adversarial`` days 16–31 (drift from day 15). Scenarios: overcommit
1.0 and 1.02, on the ``mixed`` cluster and on ``amd-2s-nps4`` hosts. Plus one cell of real
fragmentation (``numa-c1``): Huawei Cloud's ``VM_data_C1.csv`` packed onto the 1,710
fragmented servers of ``PM_res.csv`` (:mod:`catur.sim.start_state`; the servers set the
cluster and there is no window, so it is one cell, not four). ``--model`` names the model in
the ``catur`` rows (default: the shipped default). Everything goes through
the one evaluation pipeline (:func:`catur.sim.admission.prepare_scenario`,
:func:`catur.sim.evaluate.evaluate_policies`).

    .venv/bin/python benchmarks/bench_quality.py --traces ../shared/traces --json quality.json
    .venv/bin/python benchmarks/bench_quality.py --traces ../shared/traces --only huawei --clusters mixed --overcommits 1.02

A real trace that is missing is skipped with a note; the synthetic workloads always run.
``--smoke`` checks in seconds that the script still runs: two cells (day 3 of a generated
trace on ``mixed`` at overcommit 1.02, and a generated stand-in of the NUMA dataset's C1 on
its servers), a 2-step oracle on 2 hosts, 100 bootstrap draws.

    .venv/bin/python benchmarks/bench_quality.py --smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.resident import RESIDENT_GREEDY
from catur.shield import ShieldConfig
from catur.sim.admission import prepare_scenario
from catur.sim.evaluate import evaluate_policies
from catur.sim.replay import ORACLE, ORACLE_FORESIGHT
from catur.sim.workload import Workload

PAPER_BASELINES = ("xen", "nova-pack", "tetris", "e-pvm")
WORKLOADS = {  # name: (source, test days); a source ending in .gz is a file under --traces
    "huawei": ("huawei-east-1-lt.csv.gz", "16:31"),
    "temporal-shift": ("temporal-shift", "16:31"),
    "adversarial": ("adversarial", "16:31"),
    "azure": ("azure2017-dev-events.csv.gz", "3:4"),
    "numa-c1": ("numa-topology-c0/VM_data_C1.csv", None),
}
# Real fragmentation: the trace goes onto these servers as they are (no cluster, no window).
START_STATES = {"numa-c1": "numa-topology-c0/PM_res.csv"}
COMPARED = (RESIDENT_GREEDY, "catur", "catur+shield")


def host_sums(result, host_of_row: dict, hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per host (in ``hosts`` order): the sum of the counted VMs' lifetime defects, and their count."""
    index = {h: i for i, h in enumerate(hosts.tolist())}
    where = np.array([index[host_of_row[r]] for r in result.rows.tolist()], dtype=np.int64)
    return np.bincount(where, result.lifetime_defect, len(hosts)), np.bincount(where, minlength=len(hosts)).astype(float)


def read_workload(name: str, source: str, traces: str):
    """The trace of grid workload ``name`` (:func:`trace_source`; ``None`` when it is missing)."""
    source = trace_source(name, source, traces)
    return None if source is None else Workload(source).read()[0]


def bootstrap_ratio(sums_p, sums_g, counts, draws: int, rng) -> tuple[float, float, float]:
    """Policy mean / greedy mean − 1 over all hosts, and its bootstrap 95% interval over hosts."""
    point = sums_p.sum() / sums_g.sum() - 1.0
    idx = rng.integers(0, len(counts), size=(draws, len(counts)))
    ratios = sums_p[idx].sum(axis=1) / sums_g[idx].sum(axis=1) - 1.0
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(point), float(low), float(high)


def run_cell(df, workload: str, days: str, cluster: str, overcommit: float, args, rng, start_state=None) -> dict:
    started = time.perf_counter()
    if start_state is None:
        scenario = prepare_scenario(df, cluster, days, 0.95, overcommit)
    else:
        scenario = prepare_scenario(df, None, None, None, None, start_state)
    streams = [s for s in scenario.streams if s.counted.any()]
    catur = DeciderSpec(args.model, label="catur")
    catur_shield = DeciderSpec(args.model, ShieldConfig(depth=1), label="catur+shield")
    policies = [*PAPER_BASELINES, GREEDY, RESIDENT_GREEDY, catur, catur_shield]
    results = evaluate_policies(streams, policies, jobs=args.jobs)
    host_of_row = {r: s.host for s in streams for r in s.rows[s.counted].tolist()}
    hosts = np.array(sorted({s.host for s in streams}))
    sums = {name: host_sums(r, host_of_row, hosts)[0] for name, r in results.items()}
    counts = host_sums(results[GREEDY], host_of_row, hosts)[1]
    avg = {name: float(r.summary.avg_defect) for name, r in results.items()}
    best_baseline = min(PAPER_BASELINES, key=lambda n: avg[n])
    cell = {
        "workload": workload, "days": days, "cluster": cluster, "overcommit": overcommit,
        "hosts": len(hosts), "vms": int(counts.sum()), "avg_defect": avg, "best_baseline": best_baseline,
        "vs_greedy": {}, "oracle": None,
    }
    for name in COMPARED:
        cell["vs_greedy"][name] = bootstrap_ratio(sums[name], sums[GREEDY], counts, args.boot, rng)
    if args.oracle_hosts > 0:
        pick = np.sort(rng.choice(len(streams), size=min(args.oracle_hosts, len(streams)), replace=False))
        sample = [streams[i] for i in pick]
        oracle = evaluate_policies(sample, [args.oracle], jobs=args.jobs, oracle_k=args.oracle_k)[args.oracle]
        on_sample = np.isin(hosts, [s.host for s in sample])
        mean = lambda name: float(sums[name][on_sample].sum() / counts[on_sample].sum())  # noqa: E731
        o, g = float(oracle.summary.avg_defect), mean(GREEDY)
        cell["oracle"] = {
            "hosts": [s.host for s in sample], "name": args.oracle, "k": args.oracle_k, "oracle": o, "greedy": g,
            **{name: mean(name) for name in COMPARED},
            "gap_closed": {name: ((g - mean(name)) / (g - o) if g > o else None) for name in COMPARED},
        }
    cell["seconds"] = time.perf_counter() - started
    return cell


def trace_source(name: str, source: str, traces: str) -> str | None:
    """A workload's source: a file under ``traces`` for a real trace (``None``, with a note,
    when it is missing), else the synthetic workload's name."""
    if not source.endswith((".gz", ".csv")):
        return source
    path = Path(traces) / source
    if not path.exists():
        print(f"skipping {name}: {path} not found")
        return None
    return str(path)


def pct(x: float) -> str:
    return f"{100 * x:.3f}%"


def ci(v) -> str:
    point, low, high = v
    return f"{100 * point:+.1f}% [{100 * low:+.1f}, {100 * high:+.1f}]"


def markdown(cells: list[dict]) -> str:
    lines = [
        "| workload | cluster | oc | xen | best baseline | greedy | resident-greedy | catur | catur+shield "
        "| resident vs greedy [95% CI] | catur+shield vs greedy [95% CI] | oracle / greedy (sample) "
        "| gap closed: resident, catur+shield |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        a = c["avg_defect"]
        o = c["oracle"]
        sample = f"{pct(o['oracle'])} / {pct(o['greedy'])} ({len(o['hosts'])} hosts)" if o else "—"
        gap = "—"
        if o and o["gap_closed"][RESIDENT_GREEDY] is not None:
            gap = f"{100 * o['gap_closed'][RESIDENT_GREEDY]:.0f}%, {100 * o['gap_closed']['catur+shield']:.0f}%"
        lines.append(
            f"| {c['workload']}{' ' + c['days'] if c['days'] else ''} | {c['cluster']} | {'—' if c['overcommit'] is None else format(c['overcommit'], 'g')} | {pct(a['xen'])} "
            f"| {c['best_baseline']} {pct(a[c['best_baseline']])} | {pct(a[GREEDY])} | {pct(a[RESIDENT_GREEDY])} "
            f"| {pct(a['catur'])} | {pct(a['catur+shield'])} | {ci(c['vs_greedy'][RESIDENT_GREEDY])} "
            f"| {ci(c['vs_greedy']['catur+shield'])} | {sample} | {gap} |"
        )
    return "\n".join(lines)


def summary(cells: list[dict]) -> str:
    """The issue's must-show figures, for each compared policy."""
    out = []
    for name in COMPARED:
        ratios = np.array([c["vs_greedy"][name][0] for c in cells])
        worse = sum(c["vs_greedy"][name][1] > 0 for c in cells)  # CI entirely above greedy
        gaps = [c["oracle"]["gap_closed"][name] for c in cells if c["oracle"] and c["oracle"]["gap_closed"][name] is not None]
        third = sum(g >= 1 / 3 for g in gaps)
        out.append(
            f"- {name}: mean vs greedy over {len(cells)} cells {100 * ratios.mean():+.2f}%; "
            f"cells worse than greedy beyond the CI: {worse}; a third of the gap closed on {third} of {len(gaps)} cells"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", default="../shared/traces", help="folder of the real traces")
    parser.add_argument("--only", help="comma-separated workloads (default: all of " + ", ".join(WORKLOADS) + ")")
    parser.add_argument("--clusters", default="mixed,amd-2s-nps4")
    parser.add_argument("--overcommits", default="1.0,1.02")
    parser.add_argument("--oracle-hosts", type=int, default=3, help="hosts sampled per cell for the oracle (0: none)")
    parser.add_argument("--oracle", default=ORACLE, choices=[ORACLE, ORACLE_FORESIGHT],
                        help="the yardstick: the k-step oracle on defect at placement (default), or the foresight "
                        "oracle on the lifetime metric (lifetimes and the next k arrivals; slower: try --oracle-k 2)")
    parser.add_argument("--oracle-k", type=int, default=5)
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap draws for the CI over hosts")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="default", help="the model of the catur rows (default: the shipped default)")
    parser.add_argument("--json", help="also write every cell here")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: one cell of a generated trace (day 3, mixed, "
                        "overcommit 1.02) and one of a generated stand-in of the NUMA dataset, a 2-step oracle on 2 "
                        "hosts; its numbers mean nothing")
    args = parser.parse_args()
    workloads, start_states = WORKLOADS, START_STATES
    if args.smoke:
        import _smoke

        numa = Path(_smoke.numa_dataset(servers=8, vms=40))
        workloads = {"smoke": (_smoke.trace(vms=150), "3:3"), "smoke-numa-c1": (str(numa / "VM_data_C1.csv"), None)}
        start_states, args.traces = {"smoke-numa-c1": "PM_res.csv"}, str(numa)
        args.only, args.clusters, args.overcommits, args.oracle_hosts, args.oracle_k, args.boot, args.jobs = (
            None, "mixed", "1.02", 2, 2, 100, 1)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    names = args.only.split(",") if args.only else list(workloads)
    cells = []
    for name in names:
        source, days = workloads[name]
        df = read_workload(name, source, args.traces)
        if df is None:
            continue
        start = str(Path(args.traces) / start_states[name]) if name in start_states else None
        scenarios = [("PM_res", None)] if start else [(c, float(x)) for c in args.clusters.split(",") for x in args.overcommits.split(",")]
        for cluster, oc in scenarios:
            cell = run_cell(df, name, days, cluster, oc, args, rng, start)
            cells.append(cell)
            a = cell["avg_defect"]
            print(
                f"{name} {cluster} oc={oc}: greedy {pct(a[GREEDY])} resident {pct(a[RESIDENT_GREEDY])} "
                f"catur+shield {pct(a['catur+shield'])} xen {pct(a['xen'])} oracle-sample "
                f"{pct(cell['oracle']['oracle']) if cell['oracle'] else '-'} ({cell['seconds']:.0f} s, "
                f"{time.perf_counter() - started:.0f} s total)",
                flush=True,
            )
            if args.json:
                Path(args.json).write_text(json.dumps(cells, indent=1))
    print()
    print(markdown(cells))
    print()
    print(summary(cells))
    print(f"\nwhole grid: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
