"""No benchmark can rot: each script of ``benchmarks/`` starts, and most run end to end at tiny
sizes, in the suite. The numbers they print at these sizes mean nothing; that they run does.

The sizes below are the scripts' own options, turned down, or their ``--smoke`` flag: a tiny
run of the same code on data the project generates (``benchmarks/_smoke.py``: a small
synthetic trace, a stand-in for the NUMA dataset) where the script normally reads a real
trace from ``../shared/traces``, which a user's machine does not have. The scripts that only
start here (``--help``) would be those that need something the suite cannot provide; none does
at present (the grpc-js ones print "skipped" and exit 0 without Node.js).
"""

from __future__ import annotations

import os
import re
import shutil
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
    # --smoke: the script's own tiny run (a generated trace where it normally reads a real one).
    "bench_gate.py": ["--smoke"],
    "bench_hidden_scorer.py": ["--smoke"],
    "bench_libvirt.py": ["--smoke"],
    "bench_quality.py": ["--smoke"],
    "bench_reference_loop.py": ["--smoke"],
    "bench_scorer_pair.py": ["--model", "default", "--smoke"],
    "bench_shield.py": [["correctable", "--smoke"], ["pareto", "--smoke", "--plot", "{tmp}/pareto.png"]],  # two runs
    "exp_copy_features.py": ["--smoke"],
    "exp_lookahead.py": ["--smoke"],
    "exp_resident_weight.py": ["--smoke"],
    "exp_value_of_information.py": ["--smoke"],
    "libvirt_sweep.py": ["--smoke"],
    # The grpc-js ones print "skipped: ..." and exit 0 without Node.js or the npm modules.
    "bench_stop_grpcjs.py": ["--smoke"],
    "bench_replicas.py": ["--smoke"],
}
# Of those, the ones that take a few seconds at most (the others are marked slow: a server, a
# process pool, a timing loop or several evaluations take longer even at these sizes).
FAST_SMOKE = {"bench_placement.py", "bench_registry.py", "bench_collector.py", "bench_gate.py", "bench_libvirt.py",
              "bench_quality.py", "exp_resident_weight.py", "bench_scorer_pair.py"}
# Slower than ~10 s even at these sizes (a Ray instance, training, four `catur evaluate` processes).
SLOW_SMOKE = {
    "bench_ray.py": ["--days", "16:16", "--jobs", "1", "--policies", "xen"],
    "bench_es_generation.py": ["--smoke"],
    "bench_overload.py": ["--smoke"],  # ~12 s: a server, the grpc-js client three times
    "bench_learning.py": ["main", "--smoke"],
    "bench_numa_c0.py": ["--smoke"],
    "exp_retrain_huawei.py": ["--smoke"],
    "exp_retrain_scorer.py": ["--smoke"],
    "exp_validate_all_hosts.py": ["--smoke"],
}
# Checked to start only: none left (the grpc-js ones skip their smoke run without Node.js).
START_ONLY: set[str] = set()
# Run on libvirt's test driver (no daemon), so they need the bindings (and the sweep
# virt-xml-validate and xmllint): skipped without them, unless CATUR_REQUIRE_LIBVIRT (CI) is set.
NEEDS_LIBVIRT = {"bench_libvirt.py", "libvirt_sweep.py"}


def runs(args: list) -> list[list[str]]:
    """A script's smoke runs: one list of arguments, or a list of them."""
    return args if args and isinstance(args[0], list) else [args]


def run(script: str, args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    args = [a.replace("{tmp}", str(tmp_path / "work")).replace("{trace}", str(tmp_path / "trace.parquet")) for a in args]
    if any("trace.parquet" in a for a in args):
        from catur.traces.synthetic import random_trace

        random_trace(0, n=300, days=2.0).to_parquet(tmp_path / "trace.parquet")
    (tmp_path / "work").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})


def skip_without_libvirt(script: str) -> None:
    if script not in NEEDS_LIBVIRT or os.environ.get("CATUR_REQUIRE_LIBVIRT"):  # CI must run these, never skip them
        return
    pytest.importorskip("libvirt", reason="the libvirt bindings are not installed (pip install 'catur[libvirt]')")
    if script == "libvirt_sweep.py" and (shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None):
        pytest.skip("virt-xml-validate or xmllint is not installed")


def test_every_script_is_accounted_for():
    assert set(SCRIPTS) == set(SMOKE) | set(SLOW_SMOKE) | START_ONLY
    assert not (set(SMOKE) & set(SLOW_SMOKE)) and FAST_SMOKE <= set(SMOKE) and NEEDS_LIBVIRT <= set(SMOKE) | set(SLOW_SMOKE)


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
    """Every script imports and answers --help (but bench_rowwise_matmul, which has no options
    and runs whole in its smoke test)."""
    scripts = [str(BENCHMARKS / s) for s in sorted(START_ONLY | set(SMOKE) | set(SLOW_SMOKE)) if s != "bench_rowwise_matmul.py"]
    done = subprocess.run([sys.executable, "-c", START, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "FAILED: []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.parametrize("script", [pytest.param(s, marks=[] if s in FAST_SMOKE else [pytest.mark.slow]) for s in sorted(SMOKE)])
def test_benchmark_smoke_run(script, tmp_path):
    skip_without_libvirt(script)
    for args in runs(SMOKE[script]):
        done = run(script, args, tmp_path)
        assert done.returncode == 0, f"{script} {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), f"{script} {' '.join(args)} printed nothing"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SLOW_SMOKE))
def test_slow_benchmark_smoke_run(script, tmp_path):
    skip_without_libvirt(script)
    for args in runs(SLOW_SMOKE[script]):
        done = run(script, args, tmp_path, timeout=600)
        assert done.returncode == 0, f"{script} {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), f"{script} {' '.join(args)} printed nothing"
