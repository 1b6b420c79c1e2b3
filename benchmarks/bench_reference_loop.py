"""The reference loop (``catur.sim.replay.replay_host``) before and after it decided through the
one policy adapter (``catur.sim.batch_policy.BatchPolicy``, issue 15): the same host traces
replayed by both in one process, best of 3, ratios only.

    python benchmarks/bench_reference_loop.py [--base c819702]
    python benchmarks/bench_reference_loop.py --smoke    # seconds: 300 VMs, best of 1

The "before" loop is ``sim/replay.py`` as of ``--base``, read from git and loaded as a module
with the core it imported then (``catur/*.py`` of ``--base``, as a package ``catur_before``:
the core has moved on since). Results must be identical; the script checks.
"""
import argparse
import atexit
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from catur.sim.admission import admit, host_streams, parse_days  # noqa: E402
from catur.traces.synthetic import random_trace  # noqa: E402
from catur.sim.cluster import load_cluster  # noqa: E402
from catur.sim.replay import replay_host  # noqa: E402


def old_replay(base: str):
    """``replay_host`` as of ``base``, with the core it imported then: ``catur/*.py`` and
    ``traces/events.py`` of ``base`` become a package ``catur_before`` beside today's ``catur``
    (the core has changed since; the data it is handed, topologies and traces, has not)."""
    root = Path(tempfile.mkdtemp(prefix="catur-before-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / "catur_before"
    (package / "sim").mkdir(parents=True)
    (package / "traces").mkdir()
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"{base}:catur"], capture_output=True, text=True)
    if listed.returncode != 0:  # a copy without the history (a tarball, a shallow clone): nothing to compare with
        raise LookupError(f"git ls-tree {base}:catur failed: {listed.stderr.strip() or listed.returncode}")
    files = {f"catur/{name}": package / name for name in listed.stdout.split() if name.endswith(".py")}
    files |= {"sim/replay.py": package / "sim" / "replay.py", "traces/events.py": package / "traces" / "events.py"}
    for source, target in files.items():
        text = subprocess.run(["git", "show", f"{base}:{source}"], capture_output=True, text=True, check=True).stdout
        target.write_text(re.sub(r"\b(from|import) catur\b", r"\1 catur_before", text))
    for folder in (package / "sim", package / "traces"):
        (folder / "__init__.py").touch()
    sys.path.insert(0, str(root))
    return importlib.import_module("catur_before.sim.replay").replay_host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="c819702")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: 300 VMs, best of 1 (its ratios mean nothing); "
                        "skipped with a note where the git history is missing")
    args = parser.parse_args()
    vms, repeats = (300, 1) if args.smoke else (3000, 3)
    try:
        before = old_replay(args.base)
    except LookupError as error:
        if not args.smoke:
            raise SystemExit(f"bench_reference_loop: {error}; run it in a git clone with its history")
        print(f"smoke run skipped: {error}")
        return
    df = random_trace(7, n=vms, days=3.0)
    streams = host_streams(df, admit(df, load_cluster("mixed"), 0.95), *parse_days(None, df))
    for policy in ("xen", "core-best-fit", "greedy", "random"):
        times = {}
        for label, fn in (("before", before), ("after", replay_host)):
            best = 1e9
            for _ in range(repeats):
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
