"""What the benchmarks' ``--smoke`` runs share: a tiny trace the project generates itself.

A smoke run (``python benchmarks/SCRIPT.py ... --smoke``) takes the script's real code path end
to end at tiny sizes, in seconds, so that the suite (``tests/test_benchmarks.py``) notices when
a script rots. Its numbers mean nothing. It needs nothing outside the repository: where the
script normally reads a real trace (``../shared/traces``), the smoke run replays a small
seeded canonical trace from :func:`catur.traces.synthetic.random_trace` instead, unless a
trace is given.

Scripts import this module only when ``--smoke`` is given (``python benchmarks/SCRIPT.py``
puts ``benchmarks/`` on ``sys.path``), so ``--help`` and the normal runs never need it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

def scratch() -> Path:
    """A temporary folder, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="catur-smoke-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def trace(days: int = 3, vms: int = 300, seed: int = 0) -> str:
    """Write ``vms`` VMs arriving over ``days`` days (a canonical Parquet trace) to a scratch
    folder and return its path; days ``1`` to ``days`` are the windows a smoke run can name."""
    from catur.traces.synthetic import random_trace

    path = scratch() / "smoke-trace.parquet"
    random_trace(seed, n=vms, days=float(days)).to_parquet(path)
    print(f"smoke run: {vms} generated VMs over {days} days ({path}); the numbers below mean nothing", flush=True)
    return str(path)


def numa_dataset(servers: int = 12, vms: int = 60, seed: int = 0) -> str:
    """A tiny stand-in for Huawei Cloud's NUMA dataset (``numa-topology-c0``): a scratch folder
    with ``PM_res.csv`` (the free vCPUs and GiB of each of ``servers`` two-node servers, the
    first one empty) and ``VM_data_C1.csv`` to ``VM_data_C3.csv`` (``vms`` requests each, with
    affinity, anti-affinity and fault-domain groups, the large ones spanning both nodes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder = scratch() / "numa-topology-smoke"
    folder.mkdir()
    free = [(40, 80, 40, 80), *(tuple(int(x) for x in row) for row in rng.integers(0, 41, size=(servers - 1, 4)))]
    (folder / "PM_res.csv").write_text("CPU1,RAM1,CPU2,RAM2\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in free))
    for n in (1, 2, 3):
        rows = []
        for _ in range(vms):
            v = int(rng.choice([2, 4, 8, 16, 32]))
            strategy = str(rng.choice(["", "affinity", "anti-affinity", "fault_domain"]))
            group, domain = int(rng.integers(0, 3)), int(rng.integers(0, 3))
            rows.append(f"{v},{2 * v},{2 if v >= 32 else 1},{strategy},{group if strategy else ''},"
                        f"{domain if strategy == 'fault_domain' else ''}\n")
        (folder / f"VM_data_C{n}.csv").write_text("flavor_vcpus,flavor_ram,numa,strategy,group,domain\n" + "".join(rows))
    print(f"smoke run: a generated stand-in for the NUMA dataset ({servers} servers, {vms} VMs per sequence, {folder}); "
          "the numbers below mean nothing", flush=True)
    return str(folder)
