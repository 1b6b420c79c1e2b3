"""Model registry operations: how long add, promote, rollback, listing and pruning take.

    .venv/bin/python benchmarks/bench_registry.py             # 20 versions, 200 switches
    .venv/bin/python benchmarks/bench_registry.py --versions 50 --switches 500

Uses the shipped model (``catur/models/default``) in a temporary registry. ``add`` copies,
fsyncs, checksums and loads the model; ``promote``/``rollback`` re-verify the target
(checksums + full load) and switch the ``current`` link with fsyncs. Prints the median and
the 90th percentile of each operation.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from catur.registry import Registry


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=20, help="versions to add (default 20)")
    parser.add_argument("--switches", type=int, default=200, help="promote/rollback pairs (default 200)")
    args = parser.parse_args()
    if args.versions < 2 or args.switches < 1:
        raise SystemExit("--versions >= 2 and --switches >= 1 please")
    with tempfile.TemporaryDirectory(prefix="catur-registry-bench-") as root:
        registry = Registry(root, create=True)
        adds = [timed(lambda: registry.add("default", note="bench")) for _ in range(args.versions)]
        names = [v.version for v in registry.versions()]
        registry.promote(names[0])
        promotes, rollbacks = [], []
        for i in range(args.switches):
            promotes.append(timed(lambda: registry.promote(names[1 + i % (len(names) - 1)])))
            rollbacks.append(timed(lambda: registry.rollback()))
        listing = [timed(registry.versions) for _ in range(50)]
        current = [timed(registry.current) for _ in range(50)]
        before = len(registry.versions())
        pruning = [timed(lambda: registry.prune(2))]
        pruned = before - len(registry.versions())
    print(f"{args.versions} versions of the shipped model, {args.switches} promote/rollback pairs\n")
    print("| operation | calls | median ms | p90 ms |")
    print("|---|---:|---:|---:|")
    for name, samples in [("add", adds), ("promote", promotes), ("rollback", rollbacks),
                          (f"versions() over {args.versions}", listing), ("current()", current),
                          (f"prune(keep=2), removing {pruned} versions", pruning)]:
        ms = 1000 * np.asarray(samples)
        print(f"| {name} | {len(ms)} | {np.median(ms):.2f} | {np.percentile(ms, 90):.2f} |")


if __name__ == "__main__":
    main()
