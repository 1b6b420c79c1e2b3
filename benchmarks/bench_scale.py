"""Traces at scale: generate a synthetic month of N VMs, then evaluate it streamed, timing both
and measuring peak memory, at several N (memory should stay flat as N grows).

    .venv/bin/python benchmarks/bench_scale.py                      # 1M and 10M VMs
    .venv/bin/python benchmarks/bench_scale.py --sizes 1000000      # just 1M
    .venv/bin/python benchmarks/bench_scale.py --with-100m          # adds 100M (~1.8 GB disk)
    .venv/bin/python benchmarks/bench_scale.py --sizes 1000000 --policies xen --json out.json

For each size: (1) ``catur traces generate --scenario default --vms N --out DIR/N`` as a
child process; (2) for each policy, a child process that evaluates the directory the way
``catur evaluate DIR`` does (:func:`catur.sim.streaming.evaluate_streamed`: read a batch of
clusters, admit, replay, fold, drop), whole trace counted, ``mixed`` cluster at target
utilisation 0.9. Policies: ``xen``, and ``shield`` = the shipped model with a depth-1
shield alone (``catur evaluate DIR --model default --shield-depth 1`` also runs the
unshielded model; this isolates the shielded one). Each step reports wall time and peak
memory two ways: the largest single process (``ru_maxrss`` of the main process and of its
largest worker) and the peak *sum* over the process tree (sampled from ``/proc`` every
0.2 s; shared pages count once per process, so it is an upper bound). Prints a markdown
table and writes JSON. Disk use of each trace is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATUR = Path(sys.executable).with_name("catur")


def _tree_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            with open(f"/proc/{entry}/status") as handle:
                kib = next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = kib
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time, exit status, peak tree RSS (sampled) and output tail."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_tree_rss_mib": round(peak[0] / 1024, 1), "output": output}


def dir_size_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def child_evaluate(args: argparse.Namespace) -> None:
    """(In a child process.) Evaluate one policy on a partitioned trace; print JSON."""
    from catur.decision import DeciderSpec
    from catur.shield import ShieldConfig
    from catur.sim.cluster import load_cluster
    from catur.sim.streaming import StreamConfig, evaluate_streamed
    from catur.traces.partitioned import PartitionedTrace

    policy = DeciderSpec(model="default", shield=ShieldConfig(depth=1)) if args.policy == "shield" else args.policy
    started = time.perf_counter()
    trace = PartitionedTrace.open(args.trace)
    evaluation, scenario, run = evaluate_streamed(
        trace, load_cluster("mixed"), [policy], target_utilization=0.9, jobs=args.jobs,
        stream=StreamConfig(batch_vms=args.batch_vms),
    )
    (result,) = evaluation.results.values()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = run.peak_rss_mib.get("largest_worker", 0.0)  # replay workers report their own peak
    print("RESULT " + json.dumps({
        "policy": result.name, "wall_s": round(time.perf_counter() - started, 1),
        "vms": result.summary.vms, "hosts": scenario.admission.num_hosts,
        "avg_defect": result.summary.avg_defect, "anomalies": result.summary.anomalies,
        "batches": run.batches, "largest_batch_vms": run.largest_batch_vms,
        "rss_main_mib": round(own, 1), "rss_largest_worker_mib": round(kids, 1), **result.extra,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated VM counts")
    parser.add_argument("--with-100m", action="store_true", help="also 100,000,000 VMs")
    parser.add_argument("--policies", default="xen,shield", help="xen and/or shield (model + depth-1 shield)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (generation and replay)")
    parser.add_argument("--batch-vms", type=int, default=1_000_000, help="streaming batch size")
    parser.add_argument("--work", help="directory for the traces (default: a temporary one, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the generated traces")
    parser.add_argument("--reuse", action="store_true",
                        help="with --work: evaluate a complete trace already generated there (its generation "
                             "time is then not measured) instead of generating it again")
    parser.add_argument("--json", help="write the results here")
    # Internal: the measured child process.
    parser.add_argument("--child-trace", dest="trace", help=argparse.SUPPRESS)
    parser.add_argument("--child-policy", dest="policy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trace:
        child_evaluate(args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.with_100m:
        sizes.append(100_000_000)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="catur-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            out = work / f"vms-{size}"
            if args.reuse and (out / "_catur_trace.json").exists():
                gen = {"wall_s": None, "peak_tree_rss_mib": None}  # generated earlier: not measured here
            else:
                if out.exists():
                    shutil.rmtree(out)
                gen = run_measured([str(CATUR), "traces", "generate", "--scenario", "default", "--vms", str(size),
                                    "--out", str(out), "--jobs", str(args.jobs), "--quiet"])
            manifest = json.loads((out / "_catur_trace.json").read_text())
            row = {"vms_requested": size, "vms": manifest["rows"], "clusters": manifest["clusters"],
                   "disk_mib": dir_size_mib(out), "generate_wall_s": gen["wall_s"],
                   "generate_peak_tree_rss_mib": gen["peak_tree_rss_mib"], "policies": {}}
            print(f"generated {manifest['rows']:,} VMs ({manifest['clusters']} clusters, {row['disk_mib']} MiB) "
                  f"in {gen['wall_s']} s, peak {gen['peak_tree_rss_mib']} MiB", flush=True)
            for policy in args.policies.split(","):
                ev = run_measured([sys.executable, __file__, "--child-trace", str(out), "--child-policy", policy,
                                   "--jobs", str(args.jobs), "--batch-vms", str(args.batch_vms)])
                line = next(l for l in ev["output"].splitlines() if l.startswith("RESULT "))
                result = json.loads(line[len("RESULT "):])
                result.update(wall_s=ev["wall_s"], peak_tree_rss_mib=ev["peak_tree_rss_mib"])
                row["policies"][policy] = result
                print(f"  {policy}: {ev['wall_s']} s, peak tree {ev['peak_tree_rss_mib']} MiB "
                      f"(main {result['rss_main_mib']}, largest worker {result['rss_largest_worker_mib']}), "
                      f"{result['vms']:,} VMs on {result['hosts']:,} hosts, avg defect {100 * result['avg_defect']:.3f}%",
                      flush=True)
            rows.append(row)
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| VMs | clusters | disk MiB | generate s | generate peak MiB | policy | evaluate s | peak MiB (tree) | main / largest worker MiB | hosts |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        for policy, r in row["policies"].items():
            print(f"| {row['vms']:,} | {row['clusters']:,} | {row['disk_mib']} | {row['generate_wall_s']} | "
                  f"{row['generate_peak_tree_rss_mib']} | {policy} | {r['wall_s']} | {r['peak_tree_rss_mib']} | "
                  f"{r['rss_main_mib']} / {r['rss_largest_worker_mib']} | {r['hosts']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, "jobs": args.jobs,
                                               "batch_vms": args.batch_vms, "results": rows}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
