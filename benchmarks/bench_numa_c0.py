"""Huawei Cloud's NUMA dataset: C1-C3 packed onto the fragmented servers of PM_res.csv.

Runs the installed ``catur evaluate VM_data_Cn.csv --start-state PM_res.csv --model default
--shield-depth 1`` for each sequence (every policy of ``catur policies``, ``greedy``, the
shipped model and the shielded model), then C1 once more on the same number of *empty*
servers of the inferred host model (a start-state file with every node fully free), and
prints the markdown tables quoted in docs/results/numa-dataset.md. The numbers are deterministic (``random``
is seeded), so a rerun prints the same table; only wall times vary.

    .venv/bin/python benchmarks/bench_numa_c0.py ../shared/traces/numa-topology-c0
    .venv/bin/python benchmarks/bench_numa_c0.py --smoke   # seconds: a generated 12-server stand-in
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catur.sim.start_state import load_start_state


def evaluate(trace: Path, start: Path, out: Path, jobs: int) -> tuple[float, dict]:
    catur = Path(sys.executable).with_name("catur")
    began = time.perf_counter()
    subprocess.run(
        [str(catur), "evaluate", str(trace), "--start-state", str(start), "--model", "default",
         "--shield-depth", "1", "--jobs", str(jobs), "--quiet", "--json", str(out)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began, json.loads(out.read_text())


def table(results: dict[str, dict]) -> list[str]:
    """One row per policy (ordered by C1's average defect), three columns per sequence."""
    names = list(results)
    first = results[names[0]]["policies"]
    order = sorted(first, key=lambda p: (first[p]["avg_defect"], p))
    head = "| policy | " + " | ".join(f"{n} avg defect | {n} anomalies | {n} clean | {n} ticket ratio" for n in names) + " |"
    lines = [head, "|---" * (1 + 4 * len(names)) + "|"]
    for policy in order:
        cells = []
        for n in names:
            p = results[n]["policies"][policy]
            cells += [f"{100 * p['avg_defect']:.3f}%", str(p["anomalies"]), str(p["placed_clean"]), f"{100 * p['ticket_ratio']:.3f}%"]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


def facts(name: str, result: dict, wall: float) -> str:
    s = result["scenario"]
    g = s["placement_groups"]
    shielded = result["policies"]["catur+shield"]
    return (
        f"- {name}: {s['vms_in_trace']} VMs, {s['rejected_vms']} rejected {g['rejected_by_reason']}, "
        f"affinity members placed apart {g['affinity_split_vms']} (in {g['affinity_split_groups']} groups); "
        f"catur+shield: unshielded {shielded['unshielded']}, shield interventions {shielded['shield_interventions']}, "
        f"gate fired {shielded['gated']}; {wall:.1f} s wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", help="the dataset folder (PM_res.csv, VM_data_C1..C3.csv); required unless --smoke")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: a generated stand-in of the dataset (12 "
                        "servers, 60 VMs per sequence) unless a folder is given; its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        import _smoke

        args.folder, args.jobs = args.folder or _smoke.numa_dataset(), 1
    elif not args.folder:
        parser.error("the dataset folder is required (or --smoke)")
    folder = Path(args.folder)
    start = folder / "PM_res.csv"
    state = load_start_state(start)
    (topology, count), = state.spec.groups
    with tempfile.TemporaryDirectory() as tmp:
        results, walls = {}, {}
        for n in ("C1", "C2", "C3"):
            walls[n], results[n] = evaluate(folder / f"VM_data_{n}.csv", start, Path(tmp) / f"{n}.json", args.jobs)
        empty = Path(tmp) / "empty.csv"
        row = ",".join(f"{c},{m / 1024:g}" for c, m in zip(topology.node_cores, topology.node_mem_mib))
        empty.write_text("CPU1,RAM1,CPU2,RAM2\n" + f"{row}\n" * count)
        walls["C1 empty"], results["C1 empty"] = evaluate(folder / "VM_data_C1.csv", empty, Path(tmp) / "empty.json", args.jobs)
    start_facts = results["C1"]["scenario"]["start_state"]
    print(f"start state: {start_facts}")
    print("\n".join(table({n: results[n] for n in ("C1", "C2", "C3")})))
    for n in ("C1", "C2", "C3"):
        print(facts(n, results[n], walls[n]))
    print(f"\nC1 on {count} empty servers of the same model:")
    print("\n".join(table({"C1 fragmented": results["C1"], "C1 empty": results["C1 empty"]})))
    print(facts("C1 empty", results["C1 empty"], walls["C1 empty"]))


if __name__ == "__main__":
    main()
