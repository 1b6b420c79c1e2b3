"""Experiment: does knowing the *mix* of arriving requests beat greedy? (Huawei-East-1)

``greedy`` keeps, for the VM in hand, the primitive with the lowest defect now; the k-step
oracle beats it by reading the future. The deployable middle ground tried here: learn the
request mix (vCPUs, memory, alpha, beta, vNUMA and their shares) from the training days, and
for each primitive's candidate add ``weight`` × the expected defect greedy would give the
*next* VM, drawn from that mix, from the state the candidate leaves. The weight is chosen on
the validation days; the test days report it. Two diagnostics sit beside it: the mix of the
test days themselves (which no deployed policy could know), and a mix learned online from
each host's last ``--window`` requests.

    .venv/bin/python benchmarks/exp_lookahead.py --trace ../shared/traces/huawei-east-1-lt.csv.gz
    .venv/bin/python benchmarks/exp_lookahead.py --smoke     # seconds: days 1 / 2 / 3 of a generated trace

Everything is the placement core's array code (``primitive_batches``, ``placement_costs``,
``candidate_table``): ``hosts × 4 candidates × types`` rows per decision in one batch.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from catur.metrics import placement_costs, summarize
from catur.observation import candidate_table
from catur.placement import GREEDY, primitive_batches
from catur.request import RequestBatch, VMRequest, split_requests
from catur.sim.workload import Workload
from catur.sim.evaluate import evaluate_policies
from catur.sim.replay import replay_host

SCENARIO = dict(cluster="mixed", target_utilization=0.95, cpu_overcommit=1.02, seed=0)


def request_mix(requests, top: int = 32) -> tuple[list[VMRequest], np.ndarray]:
    """The ``top`` most frequent request types and their shares (renormalised over them)."""
    counts = Counter((r.vcpus, r.mem_mib, r.alpha, r.beta, r.vnuma) for r in requests)
    common = counts.most_common(top)
    weights = np.array([c for _, c in common], dtype=float)
    return [VMRequest(*key) for key, _ in common], weights / weights.sum()


def expected_next_defect(topology, used_vcpus, used_mem, types, weights) -> np.ndarray:
    """``[R]``: the expected defect at placement greedy gives the next VM, drawn from the mix,
    from each of ``R`` host states; types are batched by their vNUMA instance count."""
    rows = used_vcpus.shape[0]
    k, inst_vcpus, inst_mem = split_requests(
        topology, [t.vcpus for t in types], [t.mem_mib for t in types], [t.vnuma or 0 for t in types]
    )
    alpha, beta = np.array([t.alpha for t in types]), np.array([t.beta for t in types])
    total = np.zeros(rows)
    for count in np.unique(k):
        group = np.flatnonzero(k == count)
        n = len(group)
        vcpus, mem = np.repeat(used_vcpus, n, axis=0), np.repeat(used_mem, n, axis=0)  # row r*n+j
        options = primitive_batches(
            topology, vcpus, mem, np.tile(inst_vcpus[group, :count], (rows, 1)), np.tile(inst_mem[group, :count], (rows, 1))
        )
        _, _, defects = placement_costs(
            topology.node_cores, vcpus, options, np.tile(alpha[group], rows)[:, None], np.tile(beta[group], rows)[:, None]
        )
        total += defects.min(axis=1).reshape(rows, n) @ weights[group]
    return total


class MixLookahead:
    """A replay policy: each primitive's own defect + ``weight`` × the next VM's expected defect.

    With ``window`` set, the mix is learned online from this host's last ``window`` requests
    (the fixed mix until the first request); otherwise it is the fixed mix throughout."""

    def __init__(self, mix, weight: float, window: int | None = None) -> None:
        self.mix, self.weight, self.window = mix, weight, window
        self.recent: deque = deque(maxlen=window or 1)

    def __call__(self, topology, used_vcpus, used_mem, request, rng=None):
        table = candidate_table(topology, used_vcpus[None], used_mem[None], RequestBatch.of(topology, request))
        types, weights = request_mix(self.recent) if self.window and self.recent else self.mix
        n = topology.num_nodes
        after_vcpus = used_vcpus[None] + table.placements.node_vcpus(n)[0]
        after_mem = used_mem[None] + table.placements.node_mem_mib()[0]
        cost = table.defect[0] + self.weight * expected_next_defect(topology, after_vcpus, after_mem, types, weights)
        if self.window:
            self.recent.append(request)
        return table.placements.placement((0, int(np.argmin(cost))), policy="mix-lookahead")


def _replay_online(task):
    stream, mix, weight, window = task
    result = replay_host(stream.topology, stream.trace, MixLookahead(mix, weight, window))
    return result.lifetime_defect[stream.counted], result.placement_defect[stream.counted]


def online_summary(streams, mix, weight, window, jobs):
    with ProcessPoolExecutor(jobs) as pool:
        parts = list(pool.map(_replay_online, [(s, mix, weight, window) for s in streams]))
    return summarize(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def window_requests(streams):
    return [s.trace.request(i) for s in streams for i in np.flatnonzero(s.counted)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", help="the trace (required unless --smoke)")
    parser.add_argument("--train-days", default="1:12")
    parser.add_argument("--val-days", default="13:15")
    parser.add_argument("--test-days", default="16:31")
    parser.add_argument("--weights", default="0.25,0.5,1.0", help="look-ahead weights tried on validation")
    parser.add_argument("--window", type=int, default=1000, help="online mix: requests remembered per host")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: days 1, 2 and 3 of a generated trace (or of "
                        "--trace) as the training, validation and test windows, one weight; its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        import _smoke

        args.trace = args.trace or _smoke.trace(vms=150)
        args.train_days, args.val_days, args.test_days, args.weights, args.window, args.jobs = "1:1", "2:2", "3:3", "0.5", 50, 1
    elif not args.trace:
        parser.error("--trace is required (or --smoke)")
    started = time.perf_counter()
    windows = {name: Workload(args.trace, days=days, **SCENARIO).streams()
               for name, days in (("train", args.train_days), ("val", args.val_days), ("test", args.test_days))}
    mix = request_mix(window_requests(windows["train"]))
    for name, streams in windows.items():  # how the mix moves between the windows
        types, shares = request_mix(window_requests(streams), top=10**6)  # every type: true shares
        print(f"{name} mix (top 4 of {len(types)} types): "
              + ", ".join(f"{t.vcpus} vCPU/{t.mem_mib / 1024:g} GiB {100 * w:.1f}%" for t, w in zip(types[:4], shares[:4])))
    rows = []

    def row(window, name, summary):
        rows.append((window, name, summary))
        print(f"  {window:>4} {name:<44} {100 * summary.avg_defect:.3f}%  ({time.perf_counter() - started:.0f} s)", flush=True)

    for window in ("val", "test"):
        for name, result in evaluate_policies(windows[window], [GREEDY, "xen"], jobs=args.jobs).items():
            row(window, name, result.summary)
    val = {}
    for weight in (float(w) for w in args.weights.split(",")):
        val[weight] = evaluate_policies(windows["val"], [MixLookahead(mix, weight)], jobs=args.jobs).popitem()[1].summary
        row("val", f"training mix, weight {weight}", val[weight])
    chosen = min(val, key=lambda w: val[w].avg_defect)
    test = evaluate_policies(windows["test"], [MixLookahead(mix, chosen)], jobs=args.jobs).popitem()[1].summary
    row("test", f"training mix, weight {chosen} (chosen on val)", test)
    oracle_mix = request_mix(window_requests(windows["test"]))
    cheat = evaluate_policies(windows["test"], [MixLookahead(oracle_mix, chosen)], jobs=args.jobs).popitem()[1].summary
    row("test", f"test days' own mix, weight {chosen} (not deployable)", cheat)
    row("test", f"online mix, last {args.window} per host, weight {chosen}", online_summary(windows["test"], mix, chosen, args.window, args.jobs))
    print("\n| window | policy | avg defect | at placement | anomalies |\n|---|---|---:|---:|---:|")
    for window, name, s in rows:
        print(f"| {window} | {name} | {100 * s.avg_defect:.3f}% | {100 * s.defect_at_placement:.3f}% | {s.anomalies} |")


if __name__ == "__main__":
    main()
