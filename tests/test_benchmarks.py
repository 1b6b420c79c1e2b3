"""No benchmark can rot: each script of ``benchmarks/`` starts, and most run end to end at tiny
sizes, in the suite. The numbers they print at these sizes mean nothing; that they run does.

The sizes below are the scripts' own options, turned down. The scripts that need the real
traces in ``../shared/traces`` or train for minutes even at their smallest sizes are checked
to start (``--help``) only: giving each a ``--smoke`` size is still to do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))

# script -> tiny arguments ("{tmp}" is a scratch directory, "{trace}" a small canonical trace).
SMOKE = {
    "bench_collector.py": ["--decisions", "100", "--rounds", "2", "--skip-loopback"],
    "bench_engine.py": ["--hosts", "20", "--reference-hosts", "4", "--days", "0.5", "--policies", "xen"],
    "bench_evaluate.py": ["{trace}"],
    "bench_interceptor.py": ["--rounds", "1", "--round-s", "0.2"],
    "bench_placement.py": ["--placements", "200", "--repeats", "1"],
    "bench_registry.py": ["--versions", "2", "--switches", "2"],
    "bench_rowwise_matmul.py": [],
    "bench_scale.py": ["--sizes", "2000", "--policies", "xen", "--jobs", "1", "--batch-vms", "2000", "--work", "{tmp}"],
    "bench_service.py": ["--decisions", "100", "--in-process-only", "--policies", "greedy"],
    "bench_stop.py": ["--cycles", "1", "--clients", "1", "--batch", "2", "--load", "0.2", "--drain", "0.1", "--grace", "1", "--in-process"],
    # The grpc-js ones print "skipped: ..." and exit 0 without Node.js or the npm modules.
    "bench_stop_grpcjs.py": ["--smoke"],
    "bench_replicas.py": ["--smoke"],
}
# Of those, the ones that take a few seconds at most (the others are marked slow: a server, a
# process pool or a timing loop takes longer even at these sizes).
FAST_SMOKE = {"bench_placement.py", "bench_registry.py", "bench_collector.py"}
# Slower than a few seconds even at these sizes (a Ray instance, a git checkout of an old engine).
SLOW_SMOKE = {
    "bench_ray.py": ["--days", "16:16", "--jobs", "1", "--policies", "xen"],
    "bench_es_generation.py": ["--smoke"],
    "bench_overload.py": ["--smoke"],  # ~12 s: a server, the grpc-js client three times
}
# Train or search for minutes at any size, or take no options: checked to start only.
START_ONLY = {
    "bench_numa_c0.py", "bench_gate.py", "bench_learning.py", "bench_libvirt.py", "bench_quality.py", "bench_reference_loop.py",
    "bench_shield.py", "exp_copy_features.py", "exp_lookahead.py", "exp_resident_weight.py", "exp_retrain_huawei.py",
    "exp_retrain_scorer.py", "exp_validate_all_hosts.py", "exp_value_of_information.py",
    # A libvirt host: started only here.
    "libvirt_sweep.py",
}


def run(script: str, args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    args = [a.replace("{tmp}", str(tmp_path / "work")).replace("{trace}", str(tmp_path / "trace.parquet")) for a in args]
    if any("trace.parquet" in a for a in args):
        from catur.traces.synthetic import random_trace

        random_trace(0, n=300, days=2.0).to_parquet(tmp_path / "trace.parquet")
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})


def test_every_script_is_accounted_for():
    assert set(SCRIPTS) == set(SMOKE) | set(SLOW_SMOKE) | START_ONLY


def test_no_benchmark_reaches_into_tests():
    """Shared helpers live in the package (e.g. catur.service.loadgen), importable by both."""
    for script in SCRIPTS:
        text = (BENCHMARKS / script).read_text()
        assert not re.search(r"sys\.path\.insert\([^)]*tests|from _\w+_support import|\"tests\"\)", text), script


# Run in one interpreter: starting Python and importing Catur once, not once per script.
START = """
import runpy, sys
failed = []
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (0, None):
            failed.append(script)
    else:
        failed.append(script + " (did not exit after --help)")
print("FAILED:", failed)
"""


@pytest.mark.slow
def test_every_benchmark_starts():
    """Every script imports and answers --help (the two without options: one imports only, the
    other, bench_rowwise_matmul, runs whole in its smoke test)."""
    scripts = [str(BENCHMARKS / s) for s in sorted(START_ONLY | set(SMOKE) | set(SLOW_SMOKE)) if s not in ("exp_validate_all_hosts.py", "bench_rowwise_matmul.py")]
    done = subprocess.run([sys.executable, "-c", START, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "FAILED: []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('benchmarks/exp_validate_all_hosts.py')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("script", [pytest.param(s, marks=[] if s in FAST_SMOKE else [pytest.mark.slow]) for s in sorted(SMOKE)])
def test_benchmark_smoke_run(script, tmp_path):
    done = run(script, SMOKE[script], tmp_path)
    assert done.returncode == 0, f"{script} {' '.join(SMOKE[script])}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script} printed nothing"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SLOW_SMOKE))
def test_slow_benchmark_smoke_run(script, tmp_path):
    done = run(script, SLOW_SMOKE[script], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
