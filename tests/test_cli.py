"""The installed ``catur`` command, run as a user would: a subprocess, exit codes, stdout, files.

Every failure a user can cause must end with exit status 2 and one line on stderr starting with
``catur: error:``, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CATUR = Path(sys.executable).with_name("catur")
SUMMARY_KEYS = {"avg_defect", "defect_at_placement", "p99_defect", "ticket_ratio", "anomalies", "vms"}
PLOTS = ("defect_cdf.png", "daily_defect.png", "daily_anomalies.png")
N_VMS = 300

pytestmark = pytest.mark.skipif(not CATUR.exists(), reason=f"no installed catur command at {CATUR}")


def catur(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [str(CATUR), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, exactly one stderr line starting with 'catur: error:', no traceback; returns it."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("catur: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- traces written for the tests ---------------------------------------------------------------


def generated_vms(seed: int = 7, n: int = N_VMS) -> pd.DataFrame:
    """``n`` seeded VMs over 3 days; every VM leaves, and the last event is a departure."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 3 * 86400, n)).round(1)
    life = (rng.exponential(20000, n) + 1).round(1)
    return pd.DataFrame(
        {
            "vm_id": np.arange(n),
            "arrival_s": arrival,
            "lifetime_s": life,
            "vcpus": rng.choice([1, 2, 4, 8], n),
            "mem_gib": rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], n),
        }
    )


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, Path]:
    """The same VMs as a canonical CSV and as a Huawei-East-1 arrival+lifetime CSV."""
    folder = tmp_path_factory.mktemp("traces")
    vms = generated_vms()
    canonical = folder / "trace.csv"
    vms.assign(departure_s=vms.arrival_s + vms.lifetime_s)[
        ["vm_id", "arrival_s", "departure_s", "vcpus", "mem_gib"]
    ].to_csv(canonical, index=False)
    huawei = folder / "huawei-lt.csv"
    pd.DataFrame(
        {"vmid": vms.vm_id, "cpu": vms.vcpus, "mem": vms.mem_gib, "at": vms.arrival_s, "lt": vms.lifetime_s}
    ).to_csv(huawei, index=False)
    return {"canonical": canonical, "huawei-lt": huawei}


# --- help and listings --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["evaluate", "--help"], ["topology", "--help"]])
def test_help(args: list[str]):
    """--help exits 0 and prints usage."""
    result = catur(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: catur")


def test_evaluate_help_lists_its_options():
    """catur evaluate --help documents the options the README uses."""
    out = catur("evaluate", "--help").stdout
    for option in ("--synthetic", "--days", "--cluster", "--policies", "--json", "--plots", "--jobs", "--oracle-hosts"):
        assert option in out


def test_no_command_prints_help():
    """Plain `catur` prints the help and exits non-zero."""
    result = catur()
    assert result.returncode == 2
    assert "evaluate" in result.stdout and "topology" in result.stdout


def test_policies():
    """catur policies lists the four primitives and the baselines with a summary each."""
    result = catur("policies")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "primitives:" in out and "baselines:" in out
    for name in ("core-best-fit", "core-most-idle", "mem-best-fit", "mem-most-idle", "xen", "nova-pack", "e-pvm", "tetris", "random"):
        assert f"  {name} " in out
    assert out.index("mem-most-idle") < out.index("baselines:") < out.index("xen")
    assert "  greedy " in out and "  resident-greedy " in out and "  oracle " in out


# --- topology -----------------------------------------------------------------------------------


def test_topology_show_preset():
    """catur topology show amd-2s-nps2 describes 4 nodes on 2 sockets with their distances."""
    result = catur("topology", "show", "amd-2s-nps2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 NUMA nodes" in out and "2 sockets" in out
    rows = [line.split() for line in out.splitlines()]
    node_rows = [r for r in rows if len(r) == 4 and r[0].isdigit() and r[2] == "32"]
    assert [r[0] for r in node_rows] == ["0", "1", "2", "3"]
    assert [r[1] for r in node_rows] == ["0", "0", "1", "1"]
    assert ["0", "10", "12", "32", "32"] in rows


def test_topology_list():
    """catur topology list names every preset."""
    result = catur("topology", "list")
    assert result.returncode == 0
    for name in ("intel-2s", "amd-2s-nps2", "amd-2s-nps4"):
        assert name in result.stdout


def test_topology_show_file_json(tmp_path: Path):
    """catur topology show FILE.yaml --json prints the topology in the file format."""
    path = tmp_path / "box.yaml"
    path.write_text(
        "name: box\n"
        "nodes:\n"
        "  - {cores: 8, mem_gib: 16, socket: 0}\n"
        "  - {cores: 8, mem_gib: 16, socket: 0}\n"
        "  - {cores: 6, mem_gib: 12.5, socket: 1}\n"
    )
    result = catur("topology", "show", path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "name": "box",
        "nodes": [
            {"cores": 8, "mem_gib": 16.0, "socket": 0},
            {"cores": 8, "mem_gib": 16.0, "socket": 0},
            {"cores": 6, "mem_gib": 12.5, "socket": 1},
        ],
        "distances": [[10, 12, 21], [12, 10, 21], [21, 21, 10]],
    }


def fake_sysfs(root: Path) -> Path:
    """A 3-node, 2-socket machine; node 2 is memory-only (CXL-like) and must be skipped."""
    nodes = {
        0: ("0-3,8-11", 32 * 1024 * 1024, "10 11 20"),
        1: ("4-7,12-15", 16 * 1024 * 1024, "11 10 20"),
        2: ("", 64 * 1024 * 1024, "20 20 10"),
    }
    node_dir = root / "devices" / "system" / "node"
    for nid, (cpulist, mem_kb, distance) in nodes.items():
        d = node_dir / f"node{nid}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpulist + "\n")
        (d / "meminfo").write_text(f"Node {nid} MemTotal:       {mem_kb} kB\nNode {nid} MemFree:  1 kB\n")
        (d / "distance").write_text(distance + "\n")
    (node_dir / "online").write_text("0-2\n")
    for cpu in range(16):
        d = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{0 if cpu in (0, 1, 2, 3, 8, 9, 10, 11) else 3}\n")
    return root


@pytest.mark.slow
def test_topology_detect_fake_sysfs(tmp_path: Path):
    """catur topology detect --sysfs reads nodes, memory, distances and sockets from a sysfs tree, and --save writes a file that show reads back."""
    root = fake_sysfs(tmp_path / "sys")
    saved = tmp_path / "detected.yaml"
    result = catur("topology", "detect", "--sysfs", root, "--name", "lab", "--json", "--save", saved)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "name": "lab",
        "nodes": [
            {"cores": 8, "mem_gib": 32.0, "socket": 0},
            {"cores": 8, "mem_gib": 16.0, "socket": 1},
        ],
        "distances": [[10, 11], [11, 10]],
    }
    again = catur("topology", "show", saved, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == data
    text = catur("topology", "detect", "--sysfs", root)
    assert text.returncode == 0 and "2 NUMA nodes" in text.stdout and "2 sockets" in text.stdout


@pytest.mark.skipif(not Path("/sys/devices/system/node").is_dir(), reason="no NUMA sysfs on this machine")
def test_topology_detect_this_machine():
    """catur topology detect works on the machine running the tests."""
    result = catur("topology", "detect", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes"] and all(node["cores"] > 0 for node in data["nodes"])
    n = len(data["nodes"])
    assert len(data["distances"]) == n and all(row[i] == 10 for i, row in enumerate(data["distances"]))


# --- evaluate -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["canonical", "huawei-lt"])
def test_evaluate_trace_json_and_plots(traces, tmp_path: Path, fmt: str):
    """catur evaluate on a trace file writes the documented JSON and three non-empty PNG plots."""
    out, plots = tmp_path / "out.json", tmp_path / "plots"
    result = catur(
        "evaluate", traces[fmt], "--policies", "xen,greedy,core-best-fit",
        "--json", out, "--plots", plots, "--jobs", "1", "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert all(name in result.stdout for name in ("xen", "greedy", "core-best-fit"))
    data = json.loads(out.read_text())
    assert set(data) == {"scenario", "policies"}
    scenario = data["scenario"]
    assert scenario["trace"] == traces[fmt].name
    assert scenario["vms_in_trace"] == N_VMS
    assert scenario["rejected_vms"] == 0
    assert scenario["hosts"] == sum(scenario["hosts_by_topology"].values()) >= 2
    assert scenario["cluster"] == "mixed" and scenario["oracle_sample"] is None
    assert list(data["policies"]) == ["xen", "greedy", "core-best-fit"]
    for name, entry in data["policies"].items():
        assert set(entry) == SUMMARY_KEYS, name
        assert entry["vms"] == N_VMS
        for key in ("avg_defect", "defect_at_placement", "p99_defect"):
            assert entry[key] >= 0, (name, key)
        assert 0 < entry["ticket_ratio"] < 1
    for name in PLOTS:
        path = plots / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_both_formats_give_the_same_numbers(traces, tmp_path: Path):
    """The canonical and the Huawei-lt copies of one trace evaluate to the same metrics."""
    results = []
    for fmt in ("canonical", "huawei-lt"):
        out = tmp_path / f"{fmt}.json"
        result = catur("evaluate", traces[fmt], "--policies", "xen,mem-best-fit", "--json", out, "--jobs", "1", "--quiet")
        assert result.returncode == 0, result.stderr
        results.append(json.loads(out.read_text())["policies"])
    assert results[0] == results[1]


def test_evaluate_oracle_hosts(traces, tmp_path: Path):
    """--oracle-hosts 1 adds an oracle entry and a correctable-anomaly count to every policy."""
    out = tmp_path / "out.json"
    result = catur(
        "evaluate", traces["canonical"], "--policies", "xen,greedy,core-best-fit",
        "--oracle-hosts", "1", "--oracle-k", "2", "--json", out, "--jobs", "1", "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "correctable" in result.stdout
    data = json.loads(out.read_text())
    policies = data["policies"]
    assert set(policies) == {"xen", "greedy", "core-best-fit", "oracle"}
    for name, entry in policies.items():
        assert SUMMARY_KEYS <= set(entry), name
        assert isinstance(entry["correctable_anomalies"], int), name
        assert 0 <= entry["correctable_anomalies"] <= entry["oracle_sample_anomalies"], name
    sample = data["scenario"]["oracle_sample"]
    assert sample["k"] == 2 and len(sample["hosts"]) == 1
    assert policies["oracle"]["vms"] == sample["vms"] <= N_VMS
    assert policies["xen"]["vms"] == N_VMS  # the other policies still cover every host


def test_evaluate_days_window(traces, tmp_path: Path):
    """--days 2:2 counts only the VMs that arrive on day 2."""
    out = tmp_path / "out.json"
    result = catur("evaluate", traces["canonical"], "--days", "2:2", "--policies", "xen", "--json", out, "--jobs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    arrival = generated_vms().arrival_s.to_numpy()
    assert data["policies"]["xen"]["vms"] == int(((arrival >= 86400) & (arrival < 2 * 86400)).sum())
    assert data["scenario"]["days"] == "2:2"
    assert data["scenario"]["window_s"] == [86400.0, 172800.0]


@pytest.mark.slow
def test_evaluate_parallel_matches_serial(traces, tmp_path: Path):
    """--jobs 2 gives the same JSON metrics as --jobs 1."""
    results = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}.json"
        result = catur("evaluate", traces["canonical"], "--policies", "greedy,random", "--json", out, "--jobs", jobs, "--quiet")
        assert result.returncode == 0, result.stderr
        results.append(json.loads(out.read_text())["policies"])
    assert results[0] == results[1]


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_preset():
    """An unknown topology preset is a one-line error naming it and the presets."""
    assert_user_error(catur("topology", "show", "no-such-host"), "'no-such-host'", "amd-2s-nps2")


def test_unknown_policy(traces):
    """An unknown policy is a one-line error listing the valid names, greedy and oracle included."""
    line = assert_user_error(
        catur("evaluate", traces["canonical"], "--policies", "xen,nope", "--quiet"), "'nope'"
    )
    for name in ("core-best-fit", "mem-most-idle", "xen", "greedy", "oracle", "random"):
        assert name in line


def test_missing_trace_file(tmp_path: Path):
    """A trace file that does not exist is a one-line error naming it."""
    missing = tmp_path / "nope.csv"
    assert_user_error(catur("evaluate", missing, "--quiet"), str(missing))


@pytest.mark.parametrize("days", ["abc", "0:3", "3:1", "40:50"])
def test_bad_days(traces, days: str):
    """A malformed or impossible --days is a one-line error quoting it."""
    assert_user_error(catur("evaluate", traces["canonical"], "--days", days, "--quiet"), repr(days))


def test_malformed_canonical_row(tmp_path: Path):
    """A bad value in a canonical CSV is a one-line error naming the file line, the field and the value."""
    path = tmp_path / "bad.csv"
    path.write_text(
        "vm_id,arrival_s,departure_s,vcpus,mem_gib\n"
        "0,0,100,2,4\n"
        "1,5,,2,4\n"
        "2,9,50,abc,4\n"
        "3,10,60,1,1\n"
    )
    assert_user_error(catur("evaluate", path, "--quiet"), "line 4", "'vcpus'", "'abc'")


def test_malformed_huawei_row(tmp_path: Path):
    """A negative lifetime in a Huawei-lt CSV is a one-line error naming the line and field."""
    path = tmp_path / "bad-lt.csv"
    path.write_text("vmid,cpu,mem,at,lt\n1,2,4,0,100\n2,2,4,5,-3\n")
    assert_user_error(catur("evaluate", path, "--quiet"), "line 3", "'lt'", "-3")


def test_unknown_cluster(traces):
    """An unknown cluster is a one-line error naming it."""
    assert_user_error(catur("evaluate", traces["canonical"], "--cluster", "huge", "--quiet"), "'huge'")


def test_bad_cluster_file(traces, tmp_path: Path):
    """A cluster file with cpu_overcommit < 1 is a one-line error naming the value."""
    path = tmp_path / "c.yaml"
    path.write_text("cpu_overcommit: 0.5\nhosts:\n  - topology: intel-2s\n    count: 2\n")
    assert_user_error(catur("evaluate", traces["canonical"], "--cluster", path, "--quiet"), "cpu_overcommit", "0.5")


def test_no_workload():
    """catur evaluate without a trace or --synthetic is a one-line error."""
    assert_user_error(catur("evaluate", "--quiet"), "--synthetic")


def test_bad_sysfs(tmp_path: Path):
    """catur topology detect on a tree without NUMA nodes is a one-line error."""
    assert_user_error(catur("topology", "detect", "--sysfs", tmp_path), str(tmp_path))


# --- the synthetic workload ---------------------------------------------------------------------


def test_evaluate_synthetic(tmp_path: Path):
    """catur evaluate --synthetic default --days 1:2 replays the built-in workload for xen and greedy."""
    pytest.importorskip("catur.traces.synthetic")
    out = tmp_path / "synthetic.json"
    result = catur(
        "evaluate", "--synthetic", "default", "--days", "1:2", "--policies", "xen,greedy",
        "--jobs", "1", "--quiet", "--json", out, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "synthetic:default" in result.stdout
    data = json.loads(out.read_text())
    assert data["scenario"]["trace"] == "synthetic:default"
    assert list(data["policies"]) == ["xen", "greedy"]
    assert data["policies"]["xen"]["vms"] == data["policies"]["greedy"]["vms"] > 0


def test_evaluate_duplicate_policy_names_count_once(traces, tmp_path):
    """A policy named twice in --policies is evaluated once: VM counts are not doubled."""
    out = tmp_path / "dup.json"
    result = catur("evaluate", traces["canonical"], "--policies", "xen,xen", "--jobs", "1", "--quiet", "--json", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert list(data["policies"]) == ["xen"]
    assert data["policies"]["xen"]["vms"] == data["scenario"]["vms_in_trace"] - data["scenario"]["rejected_vms"]


@pytest.mark.slow
def test_evaluate_full_oracle_is_kept_beside_the_sample(traces, tmp_path):
    """--policies ...,oracle with --oracle-hosts keeps the oracle's whole-cluster result."""
    out = tmp_path / "oracle.json"
    result = catur(
        "evaluate", traces["canonical"], "--policies", "xen,oracle", "--oracle-hosts", "1", "--oracle-k", "2",
        "--jobs", "1", "--quiet", "--json", out,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["policies"]["oracle"]["vms"] == data["policies"]["xen"]["vms"]
    assert "correctable_anomalies" in data["policies"]["xen"]


def test_evaluate_window_without_arrivals(traces):
    """A --days window in which no VM arrives is a one-line error, not a table of zeros."""
    assert_user_error(catur("evaluate", traces["canonical"], "--days", "3:3", "--cpu-overcommit", "1.0",
                            "--target-utilization", "0.9", "--jobs", "1", "--quiet", "--policies", "xen",
                            "--days", "4:4"), "nothing to evaluate")
