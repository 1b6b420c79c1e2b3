"""Huawei Cloud's NUMA dataset: the VM_data reader, the PM_res start state, placement-group
admission, 2-NUMA flavours, resident load, and replay through a service.

Hand-made small files throughout; the real files in ``../shared/traces/numa-topology-c0``
are read when that folder exists (or ``CATUR_SHARED_TRACES`` points at a copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.errors import CaturError
from catur.sim.admission import admit, host_streams, parse_days, prepare_scenario
from catur.sim.batched import replay_batched
from catur.sim.cluster import ClusterSpec
from catur.sim.groups import first_fit_groups
from catur.sim.replay import replay_host
from catur.sim.start_state import infer_topology, load_start_state
from catur.topology import MIB_PER_GIB, PRESETS
from catur.traces.readers import detect_format, read_node_free, read_trace

SHARED_TRACES = Path(os.environ.get("CATUR_SHARED_TRACES", Path(__file__).resolve().parents[2] / "shared" / "traces"))
VM_HEADER = "flavor_vcpus,flavor_ram,numa,strategy,group,domain"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def vm_file(tmp_path: Path, *rows: str, name: str = "VM_data_test.csv") -> Path:
    return write(tmp_path / name, VM_HEADER, *rows)


def free_file(tmp_path: Path, *rows: str, name: str = "PM_test.csv") -> Path:
    return write(tmp_path / name, "CPU1,RAM1,CPU2,RAM2", *rows)


# --- VM_data reader ----------------------------------------------------------------------------


def test_vm_data_is_detected_and_read_in_file_order_one_second_apart(tmp_path):
    path = vm_file(tmp_path, "8,16,1,fault_domain,0.0,1.0", "32,64,2,,,", "4,8,1,anti-affinity,3,", "2,4,1,affinity,3.0,")
    assert detect_format(path) == "huawei-numa-vms"
    df, report = read_trace(path)
    assert (report.format, report.rows_read, report.rows_skipped, report.vms) == ("huawei-numa-vms", 4, 0, 4)
    assert df["vm_id"].tolist() == [0, 1, 2, 3]
    assert df["arrival_s"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert df["departure_s"].isna().all()  # never depart
    assert df["vcpus"].tolist() == [8, 32, 4, 2]
    assert df["mem_gib"].tolist() == [16.0, 64.0, 8.0, 4.0]  # GiB as given
    assert df["vnuma"].tolist() == [1, 2, 1, 1]
    assert df["strategy"].tolist()[0] == "fault_domain" and pd.isna(df["strategy"].iloc[1])
    assert df["group"].tolist()[2:] == [3, 3] and pd.isna(df["group"].iloc[1])
    assert df["domain"].iloc[0] == 1 and df["domain"].iloc[2:].isna().all()  # domain only for fault_domain
    from catur.traces.stats import format_stats, trace_stats

    stats = trace_stats(df)
    assert stats["vnuma"] == {1: 3, 2: 1}
    assert stats["placement_groups"] == {
        "affinity": {"vms": 1, "groups": 1, "largest": 1},
        "anti-affinity": {"vms": 1, "groups": 1, "largest": 1},
        "fault_domain": {"vms": 1, "groups": 1, "largest": 1},
    }
    assert "vNUMA asked     1: 3, 2: 1 VMs" in format_stats(stats)


@pytest.mark.parametrize(
    "row, field, why",
    [
        ("0,16,1,,,", "flavor_vcpus", "must be >= 1"),
        ("8,-1,1,,,", "flavor_ram", "must be > 0"),
        ("8,abc,1,,,", "flavor_ram", "is not a number"),
        ("8,16,0,,,", "numa", "must be >= 1"),
        ("2,4,3,,,", "numa", "exceeds flavor_vcpus 2"),
        ("8,16,1.5,,,", "numa", "is not a whole number"),
        ("8,16,1,spread,0,", "strategy", "is not a placement strategy"),
        ("8,16,1,affinity,,", "group", "needs a group"),
        ("8,16,1,fault_domain,2,", "domain", "needs a domain"),
        ("8,16,1,anti-affinity,-1,", "group", "must be >= 0"),
    ],
)
def test_bad_vm_data_rows_name_file_line_field_and_value(tmp_path, row, field, why):
    path = vm_file(tmp_path, "8,16,1,,,", row)
    with pytest.raises(CaturError) as err:
        read_trace(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line 3 (vm 1): field {field!r} = ") and why in message
    df, report = read_trace(path, skip_bad_rows=True)
    assert report.rows_skipped == 1 and df["vm_id"].tolist() == [0]


# --- PM_res start state --------------------------------------------------------------------------


def test_free_per_node_file_is_not_a_trace_and_reads_as_a_start_state(tmp_path):
    path = free_file(tmp_path, "16,32,32,64", "40,80,24,48", "4,8,0,0")
    with pytest.raises(CaturError, match="not a VM trace: pass it as --start-state"):
        read_trace(path)
    free = read_node_free(path)
    assert free.free_cores.tolist() == [[16, 32], [40, 24], [4, 0]]
    assert free.free_mem_gib.tolist() == [[32, 64], [80, 48], [8, 0]]


@pytest.mark.parametrize(
    "row, message",
    [
        ("16,32,-2,64", "line 3: field 'CPU2' = -2: must be >= 0"),
        ("16,32,x,64", "line 3: field 'CPU2' = 'x': is not a number"),
        ("16,32,2.5,64", "line 3: field 'CPU2' = 2.5: is not a whole number"),
        ("16,,2,64", "line 3: field 'RAM1' = <missing>: is missing"),
    ],
)
def test_bad_free_rows(tmp_path, row, message):
    path = free_file(tmp_path, "16,32,32,64", row)
    with pytest.raises(CaturError, match=message):
        read_node_free(path)
    assert read_node_free(path, skip_bad_rows=True).free_cores.shape == (1, 2)


def test_free_file_needs_cpu_ram_pairs(tmp_path):
    path = write(tmp_path / "x.csv", "CPU1,RAM1,CPU2", "1,2,3")
    with pytest.raises(CaturError, match="header must be CPU1,RAM1,CPU2,RAM2"):
        read_node_free(path)


def test_capacity_is_inferred_as_the_largest_free_per_node(tmp_path):
    """The smallest host model consistent with every row: node k = largest free on node k;
    used = capacity - free, exactly, in MiB."""
    path = free_file(tmp_path, "16,32,32,64", "40,80,24,48.5", "4,8,0,0")
    state = load_start_state(path)
    (topology, count), = state.spec.groups
    assert count == 3 and topology.name == "inferred"
    assert topology.node_cores.tolist() == [40, 32]
    assert topology.node_mem_mib.tolist() == [80 * MIB_PER_GIB, 64 * MIB_PER_GIB]
    assert topology.distance.tolist() == [[10, 21], [21, 10]] and topology.node_socket.tolist() == [0, 1]
    assert state.used_vcpus.tolist() == [[24, 0], [0, 8], [36, 32]]
    assert state.used_mem_mib.tolist() == [[48 * 1024, 0], [0, 64 * 1024 - 48 * 1024 - 512], [72 * 1024, 64 * 1024]]
    assert state.spec.cpu_overcommit == 1.0
    facts = state.to_dict()
    assert facts["used_vcpus_fraction"] == round(100 / 216, 4)


def test_infer_refuses_a_node_never_seen_free():
    with pytest.raises(CaturError, match="give the capacities with --cluster"):
        infer_topology(np.array([[4, 0], [8, 0]]), np.array([[8.0, 0], [8.0, 0]]))


def test_a_cluster_file_overrides_the_capacity(tmp_path):
    free = free_file(tmp_path, "16,32,32,64", "40,80,24,48")
    cluster = write(tmp_path / "c.yaml", "name: c0", "cpu_overcommit: 1.5", "hosts:", "  - topology: intel-2s", "    count: 2")
    state = load_start_state(free, str(cluster))
    assert state.capacity == "c0" and state.spec.cpu_overcommit == 1.5
    assert state.used_vcpus.tolist() == [[24, 8], [0, 16]]  # intel-2s: 40 cores, 90 GiB per node
    assert state.used_mem_mib.tolist() == [[58 * 1024, 26 * 1024], [10 * 1024, 42 * 1024]]
    three = write(tmp_path / "c3.yaml", "hosts:", "  - topology: intel-2s", "    count: 3")
    with pytest.raises(CaturError, match="2 servers, but cluster 'c3' has 3 hosts"):
        load_start_state(free, str(three))
    small = free_file(tmp_path, "16,32,41,64", name="small.csv")
    one = write(tmp_path / "c1.yaml", "hosts:", "  - topology: intel-2s", "    count: 1")
    with pytest.raises(CaturError, match=r"small.csv, line 2: field 'CPU2' = 41: more free than node 1"):
        load_start_state(small, str(one))
    four = write(tmp_path / "c4.yaml", "hosts:", "  - topology: amd-2s-nps2", "    count: 1")
    with pytest.raises(CaturError, match="servers have 2 NUMA nodes"):
        load_start_state(small, str(four))


# --- placement groups at admission -------------------------------------------------------------


def labelled(*vms: tuple) -> pd.DataFrame:
    """A static trace from (vcpus, mem_gib, strategy, group, domain) tuples."""
    n = len(vms)
    return pd.DataFrame({
        "vm_id": np.arange(n), "arrival_s": np.arange(n, dtype=float), "departure_s": np.full(n, np.nan),
        "vcpus": [v[0] for v in vms], "mem_gib": [float(v[1]) for v in vms],
        "strategy": pd.array([v[2] for v in vms], dtype="string"),
        "group": [v[3] for v in vms], "domain": [v[4] for v in vms],
    })


def groups_fit(df: pd.DataFrame, free_v, free_m_gib):
    mem = np.round(df["mem_gib"].to_numpy() * MIB_PER_GIB).astype(np.int64)
    return first_fit_groups(df, df["vcpus"].to_numpy(), mem, np.array(free_v), np.array(free_m_gib) * MIB_PER_GIB)


def test_anti_affinity_members_never_share_a_host_and_the_excess_is_rejected():
    df = labelled(*[(2, 4, "anti-affinity", 0, None)] * 4, (2, 4, None, None, None), (2, 4, "anti-affinity", 1, None))
    host_of, outcome = groups_fit(df, [100] * 3, [100] * 3)
    assert host_of.tolist() == [0, 1, 2, -1, 0, 0]  # the 4th member: every host holds one
    assert outcome.rejected == {"anti-affinity": 1}
    assert outcome.to_dict()["rejected_by_reason"] == {"no_room": 0, "anti-affinity": 1, "fault_domain": 0}


def test_affinity_members_share_a_host_when_they_can_and_splits_are_counted():
    # Host 0 is nearly full: member 1 goes to host 1, members 2-3 follow it there; member 4
    # no longer fits on host 1 and lands on host 2: counted as placed apart.
    df = labelled((4, 4, None, None, None), *[(4, 4, "affinity", 7, None)] * 4)
    host_of, outcome = groups_fit(df, [6, 12, 100], [100, 100, 100])
    assert host_of.tolist() == [0, 1, 1, 1, 2]
    assert (outcome.affinity_split_vms, outcome.affinity_split_groups) == (1, 1)
    assert not outcome.rejected  # affinity never rejects a VM that fits somewhere


def test_fault_domain_members_spread_over_domains():
    df = labelled(*[(2, 4, "fault_domain", 0, d) for d in (0, 0, 1, 2, 1)], (2, 4, "fault_domain", 0, 3))
    host_of, outcome = groups_fit(df, [100] * 3, [100] * 3)
    # Same domain may share (first two on host 0); different domains never do.
    assert host_of.tolist() == [0, 0, 1, 2, 1, -1]  # a 4th domain on 3 hosts cannot be placed
    assert outcome.rejected == {"fault_domain": 1}


def test_group_numbers_are_per_strategy_and_no_room_is_its_own_reason():
    df = labelled((2, 4, "anti-affinity", 0, None), (2, 4, "affinity", 0, None), (200, 4, None, None, None))
    host_of, outcome = groups_fit(df, [100, 100], [100, 100])
    assert host_of.tolist() == [0, 0, -1]  # affinity group 0 is not anti-affinity group 0
    assert outcome.rejected == {"no_room": 1}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_group_rules_hold_on_generated_traces(data):
    """Invariants over many generated labelled sequences: no host over capacity, anti-affinity
    members apart, different fault domains apart, every VM either placed or rejected (counted)."""
    n = data.draw(st.integers(1, 40))
    hosts = data.draw(st.integers(1, 6))
    vms = [
        (
            data.draw(st.sampled_from([1, 2, 4, 8])),
            data.draw(st.sampled_from([1, 2, 8])),
            strategy := data.draw(st.sampled_from([None, "affinity", "anti-affinity", "fault_domain"])),
            data.draw(st.integers(0, 2)) if strategy else None,
            data.draw(st.integers(0, 2)) if strategy == "fault_domain" else None,
        )
        for _ in range(n)
    ]
    df = labelled(*vms)
    free_v = np.array(data.draw(st.lists(st.integers(0, 16), min_size=hosts, max_size=hosts)))
    free_m = np.array(data.draw(st.lists(st.integers(0, 24), min_size=hosts, max_size=hosts)))
    host_of, outcome = groups_fit(df, free_v, free_m)
    placed = host_of >= 0
    assert int((~placed).sum()) == sum(outcome.rejected.values())
    used_v = np.bincount(host_of[placed], weights=df["vcpus"][placed], minlength=hosts)
    used_m = np.bincount(host_of[placed], weights=df["mem_gib"][placed], minlength=hosts)
    assert (used_v <= free_v).all() and (used_m <= free_m).all()
    for (strategy, group), part in df[placed].groupby(["strategy", "group"]):
        where = host_of[part.index]
        if strategy == "anti-affinity":
            assert len(set(where)) == len(where)
        if strategy == "fault_domain":
            for host in set(where):
                assert part["domain"][where == host].nunique() == 1


# --- replay from a start state -----------------------------------------------------------------


def test_two_numa_flavour_is_two_instances_on_distinct_nodes(tmp_path):
    free = free_file(tmp_path, "40,80,40,80")
    path = vm_file(tmp_path, "32,64,2,,,", "2,4,1,,,")
    df, _ = read_trace(path)
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    (stream,) = scenario.streams
    for policy in ("core-best-fit", "xen", "greedy"):
        replay = replay_host(stream.topology, stream.trace, policy)
        big = replay.placements[0]
        assert big.num_instances == 2 and set(big.cpu_nodes.tolist()) == {0, 1}
        assert big.vcpus.tolist() == [16, 16] and big.rmr() == 0.0
        assert replay.placements[1].num_instances == 1


def test_resident_load_counts_in_cor_but_in_no_metric(tmp_path):
    """Host 0 has 8 of 40 cores free on each node (16 in all, so admission takes a 16-vCPU
    VM there): whichever node gets the VM, resident vCPUs overload it; only the trace's VM is
    counted, and on an empty host the same VM has no overload."""
    free = free_file(tmp_path, "8,64,8,64", "40,80,40,80")  # capacity inferred 40 cores, 80 GiB
    df, _ = read_trace(vm_file(tmp_path, "16,8,1,,,"))
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    (stream,) = scenario.streams
    assert stream.host == 0 and stream.trace.start_vcpus.tolist() == [32, 32]
    replay = replay_host(stream.topology, stream.trace, "core-most-idle")
    # 32 resident + 16 new on a 40-core node: COR 8/40 = 0.2.
    assert replay.cor_at_placement[0] == pytest.approx(8 / 40)
    assert replay.placement_defect.shape == (1,)
    empty = replay_host(stream.topology, stream.trace.__class__(
        stream.trace.arrival_s, stream.trace.departure_s, stream.trace.vcpus, stream.trace.mem_mib,
        vnuma=stream.trace.vnuma), "core-most-idle")
    assert empty.cor_at_placement[0] == 0.0  # the same VM on an empty host


def test_batched_engine_equals_reference_from_a_start_state(tmp_path):
    rng = np.random.default_rng(3)
    rows = [f"{c1},{r1},{c2},{r2}" for c1, r1, c2, r2 in rng.integers(0, 41, size=(12, 4))]
    free = free_file(tmp_path, "40,80,40,80", *rows)
    sizes = rng.choice([1, 2, 4, 8, 16, 32], 200)
    vm_rows = [f"{v},{2 * v},{2 if v >= 32 else 1},,," for v in sizes]
    df, _ = read_trace(vm_file(tmp_path, *vm_rows))
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    hosts = [(s.topology, s.trace) for s in scenario.streams]
    assert len(hosts) >= 8
    for policy in ("greedy", "xen", "mem-best-fit"):
        batched = replay_batched(hosts, policy, min_batch_hosts=1)
        for (topology, trace), got in zip(hosts, batched):
            want = replay_host(topology, trace, policy)
            assert np.array_equal(got.lifetime_defect, want.lifetime_defect)
            assert np.array_equal(got.placement_defect, want.placement_defect)


def test_start_state_admission_sees_only_what_is_left(tmp_path):
    free = free_file(tmp_path, "2,4,2,4", "20,40,20,40")
    df, _ = read_trace(vm_file(tmp_path, "8,8,1,,,", "64,8,1,,,"))
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    # Host 0 has 4 vCPUs free in all: the 8-vCPU VM goes to host 1; 64 vCPUs fit nowhere.
    assert scenario.admission.host_of_vm.tolist() == [1, -1]
    assert scenario.admission.rejected == 1


# --- the command line and the service ----------------------------------------------------------


def small_case(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    rows = [f"{c1},{r1},{c2},{r2}" for c1, r1, c2, r2 in rng.integers(0, 41, size=(9, 4))]
    free = free_file(tmp_path, "40,80,40,80", *rows)
    vms = []
    for i in range(120):
        v = int(rng.choice([2, 4, 8, 16, 32]))
        strategy, group, domain = rng.choice(["", "affinity", "anti-affinity", "fault_domain"]), int(rng.integers(0, 3)), int(rng.integers(0, 3))
        vms.append(f"{v},{2 * v},{2 if v >= 32 else 1},{strategy},{group if strategy else ''},{domain if strategy == 'fault_domain' else ''}")
    return vm_file(tmp_path, *vms), free


def test_catur_evaluate_reports_clean_and_rejected_vms(tmp_path, capsys):
    from catur.cli import main

    trace, free = small_case(tmp_path)
    out_json = tmp_path / "out.json"
    assert main(["evaluate", str(trace), "--start-state", str(free), "--policies", "greedy,xen,core-best-fit",
                 "--model", "default", "--shield-depth", "1", "--quiet", "--jobs", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "start state" in out and "placement groups: rejected by reason" in out and " clean " in out
    result = json.loads(out_json.read_text())
    scenario = result["scenario"]
    groups = scenario["placement_groups"]
    assert scenario["rejected_vms"] == sum(groups["rejected_by_reason"].values())
    assert scenario["rejected_vms"] > 0  # the small case is crowded: some VMs fit nowhere
    assert scenario["start_state"]["hosts"] == 10 and scenario["start_state"]["capacity"] == "inferred"
    for name in ("greedy", "xen", "core-best-fit", "catur", "catur+shield"):
        entry = result["policies"][name]
        assert entry["vms"] == 120 - scenario["rejected_vms"]  # every placed VM, no resident load
        assert 0 < entry["placed_clean"] <= entry["vms"]


def test_catur_replay_through_a_service_equals_offline(tmp_path, capsys):
    """The same files through `catur replay` against a running service (greedy, shield depth 1)
    give the offline numbers of `catur evaluate --shield-depth 1`."""
    from catur.cli import main
    from catur.service.server import Service, create_server
    from catur.shield import ShieldConfig

    trace, free = small_case(tmp_path)
    scenario = [str(trace), "--start-state", str(free), "--quiet", "--jobs", "1"]
    assert main(["evaluate", *scenario, "--policies", "xen", "--shield-depth", "1", "--json", str(tmp_path / "offline.json")]) == 0
    capsys.readouterr()
    service = Service(model=None, shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    try:
        assert main(["replay", "--target", f"127.0.0.1:{port}", *scenario, "--also", "xen", "--json", str(tmp_path / "remote.json")]) == 0
    finally:
        service.shutdown(server, grace=0.5)
    offline = json.loads((tmp_path / "offline.json").read_text())
    remote = json.loads((tmp_path / "remote.json").read_text())
    assert set(remote["policies"]) == {"greedy+shield", "xen"}
    for name in ("greedy+shield", "xen"):
        assert remote["policies"][name] == offline["policies"][name]
    assert remote["scenario"]["start_state"] == offline["scenario"]["start_state"]


# --- the real files ------------------------------------------------------------------------------


def shared(name: str) -> Path:
    path = SHARED_TRACES / "numa-topology-c0" / name
    if not path.exists():
        pytest.skip(f"real file {path} not available")
    return path


@pytest.mark.real_traces
@pytest.mark.parametrize("name", ["VM_data_C1.csv", "VM_data_C2.csv", "VM_data_C3.csv"])
def test_real_request_sequences_load(name):
    df, report = read_trace(shared(name))
    assert (report.format, report.vms, report.rows_skipped) == ("huawei-numa-vms", 4_998, 0)
    assert set(df.loc[df["vnuma"] == 2, "vcpus"]) == {32, 48, 64}  # "numa = 2 for 32+ vCPU"
    assert set(df["strategy"].dropna()) == {"affinity", "anti-affinity", "fault_domain"}


@pytest.mark.real_traces
def test_real_start_state_loads_and_packs_c1():
    state = load_start_state(shared("PM_res.csv"))
    (topology, count), = state.spec.groups
    assert count == 1_710 and topology.node_cores.tolist() == [136, 136]
    assert topology.node_mem_mib.tolist() == [202 * MIB_PER_GIB] * 2
    assert (state.used_vcpus >= 0).all() and (state.used_mem_mib >= 0).all()
    df, _ = read_trace(shared("VM_data_C1.csv"))
    admission = admit(df, ClusterSpec("unused", ((PRESETS["intel-2s"], 1),)), None, state)
    assert admission.num_hosts == 1_710 and admission.groups is not None
    streams = host_streams(df, admission, *parse_days(None, df))
    assert sum(int(s.counted.sum()) for s in streams) == len(df) - admission.rejected


def test_bad_start_state_row_is_a_clear_cli_error_or_skipped(tmp_path, capsys):
    from catur.cli import main

    trace = vm_file(tmp_path, "2,4,1,,,")
    free = free_file(tmp_path, "40,80,40,80", "8,x,8,8")
    assert main(["evaluate", str(trace), "--start-state", str(free), "--policies", "xen", "--quiet", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"catur: error: {free}, line 3: field 'RAM1' = 'x': is not a number" in err
    out_json = tmp_path / "out.json"
    assert main(["evaluate", str(trace), "--start-state", str(free), "--policies", "xen", "--quiet", "--jobs", "1",
                 "--skip-bad-rows", "--json", str(out_json)]) == 0
    assert "skipped 1 malformed rows" in capsys.readouterr().err
    scenario = json.loads(out_json.read_text())["scenario"]
    assert scenario["start_state"]["hosts"] == 1 and scenario["start_state"]["rows_skipped"] == 1
    wrong = write(tmp_path / "two.yaml", "hosts:", "  - topology: intel-2s", "    count: 2")
    assert main(["evaluate", str(trace), "--start-state", str(free), "--cluster", str(wrong), "--skip-bad-rows", "--quiet"]) == 2
    assert "1 servers, but cluster 'two' has 2 hosts" in capsys.readouterr().err


def test_clean_means_no_overcommit_and_no_remote_memory(tmp_path):
    """`placed_clean` (a defect of 0 at placement) counts exactly the VMs whose nodes are not
    overcommitted after placing them and whose memory is all local."""
    from catur.sim.evaluate import evaluate_policies
    from catur.sim.start_state import clean_placements

    trace, free = small_case(tmp_path)
    df, _ = read_trace(trace)
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    for policy in ("xen", "core-best-fit", "mem-best-fit"):
        results = evaluate_policies(scenario.streams, [policy], jobs=1)
        clean_placements(results)
        expected = 0
        for stream in scenario.streams:
            replay = replay_host(stream.topology, stream.trace, policy)
            expected += int(((replay.cor_at_placement == 0) & (replay.rmr == 0))[stream.counted].sum())
        assert results[policy].extra["placed_clean"] == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_group_first_fit_without_labels_is_admissions_first_fit(data):
    """The labelled admission walks VMs one by one; with no labels it must choose exactly the
    hosts of the lock-step first fit (departures included), so labels are the only difference."""
    from catur.sim.admission import first_fit

    n = data.draw(st.integers(1, 40))
    arrival = np.sort(np.array(data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), dtype=float))
    life = np.array(data.draw(st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=n, max_size=n)), dtype=float)
    df = pd.DataFrame({
        "vm_id": np.arange(n), "arrival_s": arrival, "departure_s": arrival + life,
        "vcpus": data.draw(st.lists(st.sampled_from([1, 2, 4, 8, 16]), min_size=n, max_size=n)),
        "mem_gib": [float(m) for m in data.draw(st.lists(st.sampled_from([1, 2, 8, 32]), min_size=n, max_size=n))],
        "strategy": pd.array([None] * n, dtype="string"),
    })
    hosts = data.draw(st.integers(1, 4))
    spec = ClusterSpec("t", ((PRESETS["intel-2s"], hosts),))
    used_v = np.array(data.draw(st.lists(st.integers(0, 80), min_size=hosts, max_size=hosts)))
    used_m = np.array(data.draw(st.lists(st.integers(0, 180), min_size=hosts, max_size=hosts))) * MIB_PER_GIB
    mem = np.round(df["mem_gib"].to_numpy() * MIB_PER_GIB).astype(np.int64)
    cores, capacity = spec.host_capacity()
    ours, _ = first_fit_groups(df, df["vcpus"].to_numpy(), mem, cores - used_v, capacity - used_m)
    theirs = first_fit(df["vcpus"].to_numpy(), mem, arrival, df["departure_s"].to_numpy(), [np.arange(n)], [spec], [(used_v, used_m)])
    assert ours.tolist() == theirs.tolist()


def test_warm_start_of_a_time_based_trace(tmp_path):
    """A trace with arrivals and departures on a start state: admission never gives a host
    more memory than the start state leaves (at any instant), and the batched engine replays
    the hosts from their start usage exactly like the reference loop."""
    from _service_support import random_trace

    from catur.sim.admission import mem_mib_of
    from catur.traces.events import event_order

    rng = np.random.default_rng(4)
    rows = [f"{c},{m},{c2},{m2}" for c, m, c2, m2 in rng.integers(8, 41, size=(11, 4))]
    free = free_file(tmp_path, "40,80,40,80", *rows)
    df = random_trace(2, n=400)
    scenario = prepare_scenario(df, None, None, None, start_state=free)
    admission, start = scenario.admission, scenario.admission.start
    assert admission.start is start and admission.groups is None and admission.rejected > 0
    mem, host_of = mem_mib_of(df), admission.host_of_vm
    left = start.spec.host_capacity()[1] - start.used_mem_mib.sum(axis=1)
    vms, arriving = event_order(df["arrival_s"].to_numpy(), df["departure_s"].to_numpy())
    for vm, arrives in zip(vms, arriving):
        if host_of[vm] >= 0:
            left[host_of[vm]] += -mem[vm] if arrives else mem[vm]
            assert left.min() >= 0
    hosts = [(s.topology, s.trace) for s in scenario.streams]
    for policy in ("greedy", "nova-spread"):
        batched = replay_batched(hosts, policy, min_batch_hosts=1)
        for (topology, trace), got in zip(hosts, batched):
            assert trace.start_vcpus is not None
            want = replay_host(topology, trace, policy)
            assert np.array_equal(got.lifetime_defect, want.lifetime_defect)
