"""The reference loop (``catur.sim.replay.replay_host``) before and after it decided through the
one policy adapter (``catur.sim.batch_policy.BatchPolicy``, issue 15): the same host traces
replayed by both in one process, best of 3, ratios only.

    python benchmarks/bench_reference_loop.py [--base c819702]

The "before" loop is ``sim/replay.py`` as of ``--base``, read from git and loaded as a module
(it imports only the core, which both share). Results must be identical; the script checks.
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time

import numpy as np

from catur.sim.admission import admit, host_streams, parse_days  # noqa: E402
from catur.traces.synthetic import random_trace  # noqa: E402
from catur.sim.cluster import load_cluster  # noqa: E402
from catur.sim.replay import replay_host  # noqa: E402


def old_replay(base: str):
    source = subprocess.run(["git", "show", f"{base}:sim/replay.py"], capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("old_replay", f.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_replay"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module.replay_host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="c819702")
    args = parser.parse_args()
    before = old_replay(args.base)
    df = random_trace(7, n=3000, days=3.0)
    streams = host_streams(df, admit(df, load_cluster("mixed"), 0.95), *parse_days(None, df))
    for policy in ("xen", "core-best-fit", "greedy", "random"):
        times = {}
        for label, fn in (("before", before), ("after", replay_host)):
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                results = [fn(s.topology, s.trace, policy, seed=s.host) for s in streams]
                best = min(best, time.perf_counter() - t)
            times[label] = (best, results)
        for a, b in zip(times["before"][1], times["after"][1]):
            assert np.array_equal(a.lifetime_defect, b.lifetime_defect) and np.array_equal(a.placement_defect, b.placement_defect)
        vms = sum(s.trace.num_vms for s in streams)
        print(f"{policy}: {vms} VMs on {len(streams)} hosts; after/before wall {times['after'][0] / times['before'][0]:.2f} (identical results)")


if __name__ == "__main__":
    main()
