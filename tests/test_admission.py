"""Host admission: cluster files, first-fit admission, sizing, day windows and per-host streams.

Admission is NUMA-agnostic (docs/howto/evaluate.md, "Host admission"): a host takes a VM if its aggregate free memory and
free vCPUs (cores × cpu_overcommit) hold it, the lowest host id wins, and VMs that fit nowhere
are rejected. These tests check that contract on hand-made traces and, with hypothesis, by
sweeping the events of many small generated traces.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.errors import CaturError
from catur.sim.admission import (
    SECONDS_PER_DAY,
    admit,
    host_streams,
    mem_mib_of,
    parse_days,
    peak_demand,
    size_cluster,
)
from catur.sim.cluster import CLUSTERS, ClusterSpec, cluster_from_dict, load_cluster
from catur.traces.events import event_order
from catur.topology import PRESETS

NAN = float("nan")
DAY = SECONDS_PER_DAY
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def trace(rows: list[tuple], **extra) -> pd.DataFrame:
    """A canonical trace from ``(arrival_s, departure_s, vcpus, mem_gib)`` rows."""
    arrival, departure, vcpus, mem = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    df = pd.DataFrame(
        {
            "vm_id": np.arange(len(rows), dtype=np.int64),
            "arrival_s": np.array(arrival, dtype=float),
            "departure_s": np.array(departure, dtype=float),
            "vcpus": np.array(vcpus, dtype=np.int64),
            "mem_gib": np.array(mem, dtype=float),
        }
    )
    for name, values in extra.items():
        df[name] = values
    return df


def random_trace(seed: int, n: int = 400, days: float = 5.0) -> pd.DataFrame:
    """A seeded trace of ``n`` VMs over ``days`` days, some still running at the end."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, days * DAY, n))
    departure = arrival + rng.exponential(DAY, n)
    departure[rng.random(n) < 0.2] = NAN
    return trace(
        list(
            zip(
                arrival,
                departure,
                rng.choice([1, 2, 4, 8, 16], n),
                rng.choice([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], n),
            )
        )
    )


def intel(count: int, overcommit: float = 1.0) -> ClusterSpec:
    return ClusterSpec("intel", ((PRESETS["intel-2s"], count),), overcommit)


# --- cluster files ------------------------------------------------------------------------------


def test_cluster_from_yaml_file(tmp_path: Path):
    """A YAML cluster file gives its groups in file order, host ids numbered group by group."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\n"
        "cpu_overcommit: 1.5\n"
        "hosts:\n"
        "  - topology: intel-2s\n"
        "    count: 3\n"
        "  - topology: amd-2s-nps2\n"
        "    count: 2\n"
    )
    spec = load_cluster(str(path))
    assert spec.name == "mine"
    assert spec.cpu_overcommit == 1.5
    assert [(t.name, c) for t, c in spec.groups] == [("intel-2s", 3), ("amd-2s-nps2", 2)]
    assert spec.num_hosts == 5
    assert [t.name for t in spec.host_topologies()] == ["intel-2s"] * 3 + ["amd-2s-nps2"] * 2
    cores, mem = spec.host_capacity()
    assert cores.tolist() == [80, 80, 80, 128, 128]
    assert mem.tolist() == [180 * 1024] * 3 + [288 * 1024] * 2


def test_cluster_from_toml_file_with_topology_file(tmp_path: Path):
    """A TOML cluster file works too, a group may name a topology file, and the name defaults to the stem."""
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nnodes:\n  - {cores: 4, mem_gib: 8, socket: 0}\n  - {cores: 4, mem_gib: 8, socket: 1}\n"
    )
    path = tmp_path / "lab.toml"
    path.write_text(
        "[[hosts]]\n"
        f"topology = {str(tmp_path / 'tiny.yaml')!r}\n"
        "count = 4\n"
        "[[hosts]]\n"
        "topology = 'amd-2s-nps4'\n"
    )
    spec = load_cluster(str(path))
    assert spec.name == "lab"
    assert spec.cpu_overcommit == 1.0
    assert [(t.name, c) for t, c in spec.groups] == [("tiny", 4), ("amd-2s-nps4", 1)]
    assert spec.host_capacity()[0].tolist() == [8, 8, 8, 8, 128]


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_shipped_cluster_names(name: str):
    """Every shipped cluster name loads, with one host per group and no overcommit."""
    spec = load_cluster(name)
    assert spec.name == name
    assert spec.cpu_overcommit == 1.0
    assert all(count == 1 for _, count in spec.groups)
    assert {t.name for t in spec.host_topologies()} <= set(PRESETS)


def test_mixed_cluster_is_intel_then_amd():
    """`mixed` is one 2-node Intel and one 4-node AMD group, in that order."""
    assert [t.name for t in load_cluster("mixed").host_topologies()] == ["intel-2s", "amd-2s-nps2"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("hosts:\n  - topology: no-such-host\n    count: 2\n", ["no-such-host"]),
        ("hosts:\n  - topology: intel-2s\n    count: -3\n", ["count", "-3"]),
        ("hosts:\n  - topology: intel-2s\n    count: 2.5\n", ["count", "2.5"]),
        ("hosts:\n  - topology: intel-2s\n    count: 0\n", ["no hosts"]),
        ("cpu_overcommit: 0.5\nhosts:\n  - topology: intel-2s\n", ["cpu_overcommit", "0.5"]),
        ("cpu_overcommit: fast\nhosts:\n  - topology: intel-2s\n", ["cpu_overcommit", "fast"]),
        ("hosts: []\n", ["hosts"]),
        ("name: x\n", ["hosts"]),
        ("hosts:\n  - count: 2\n", ["hosts[0]", "topology"]),
        ("hosts: [\n", ["YAML"]),
    ],
)
def test_bad_cluster_file(tmp_path: Path, text: str, words: list[str]):
    """A bad cluster file raises CaturError naming the bad value."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CaturError) as err:
        load_cluster(str(path))
    for word in words:
        assert word in str(err.value)


def test_bad_cluster_toml_overcommit(tmp_path: Path):
    """cpu_overcommit < 1 in a TOML file is refused as well, naming the value."""
    path = tmp_path / "bad.toml"
    path.write_text("cpu_overcommit = 0.9\n[[hosts]]\ntopology = 'intel-2s'\ncount = 1\n")
    with pytest.raises(CaturError, match=r"cpu_overcommit.*0\.9"):
        load_cluster(str(path))


def test_unknown_cluster_name_lists_shipped_ones():
    """A name that is neither shipped nor a file is refused, listing the shipped names."""
    with pytest.raises(CaturError) as err:
        load_cluster("no-such-cluster")
    assert "no-such-cluster" in str(err.value)
    for name in CLUSTERS:
        assert name in str(err.value)


def test_cluster_spec_validates_directly():
    """ClusterSpec itself refuses negative counts and overcommit below 1 (also NaN)."""
    with pytest.raises(CaturError, match="-1"):
        ClusterSpec("c", ((PRESETS["intel-2s"], -1),))
    with pytest.raises(CaturError, match="0.99"):
        intel(1, 0.99)
    with pytest.raises(CaturError, match="nan"):
        intel(1, NAN)


def test_cluster_to_dict_round_trip():
    """to_dict() gives back what cluster_from_dict reads."""
    spec = load_cluster("mixed").scaled(3.2)
    again = cluster_from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    assert [c for _, c in again.groups] == [4, 4]


# --- admission: hand-made cases -----------------------------------------------------------------


def test_first_fit_takes_lowest_host_id():
    """Each VM goes to the lowest-numbered host with room; a departure reopens a low host."""
    # intel-2s hosts: 80 cores, 180 GiB each.
    df = trace(
        [
            (0, 50, 60, 10),  # host 0 (60/80 cores)
            (1, NAN, 30, 10),  # 60+30 > 80 on host 0 -> host 1
            (2, NAN, 20, 10),  # fits host 0 again (80/80)
            (3, NAN, 10, 170),  # host 0 full of cores, host 1 fits -> host 1 (40 cores, 180 GiB)
            (4, NAN, 1, 1),  # host 0 full of cores, host 1 full of memory -> host 2
            (60, NAN, 50, 10),  # host 0 freed 60 cores at t=50 -> host 0
        ]
    )
    adm = admit(df, intel(3))
    assert adm.host_of_vm.tolist() == [0, 1, 0, 1, 2, 0]
    assert adm.rejected == 0
    assert adm.num_hosts == 3
    assert adm.host_cluster == ["", "", ""]


def test_memory_is_never_overcommitted_even_with_cpu_overcommit():
    """cpu_overcommit lets a host take more vCPUs than cores, but its memory still must hold the VM."""
    # cpu_overcommit 1.5: 120 vCPUs and 180 GiB per host
    df = trace([(0, NAN, 100, 100), (1, NAN, 19, 60), (2, NAN, 1, 90), (3, NAN, 2, 1)])
    adm = admit(df, intel(2, overcommit=1.5))
    # VM 1 takes host 0 to 119 vCPUs on 80 cores; VM 2 has vCPU room there but not memory;
    # VM 3 (2 vCPUs) would overcommit host 0 past 120.
    assert adm.host_of_vm.tolist() == [0, 0, 1, 1]


def test_rejected_vms_are_counted_when_cluster_is_too_small():
    """VMs that fit no host are rejected (-1) and counted; VMs larger than any host always are."""
    df = trace(
        [
            (0, NAN, 80, 10),
            (1, NAN, 80, 10),
            (2, NAN, 1, 1),  # both hosts full of cores
            (3, NAN, 90, 1),  # bigger than any host
            (4, NAN, 1, 200),  # bigger than any host's memory
        ]
    )
    adm = admit(df, intel(2))
    assert adm.host_of_vm.tolist() == [0, 1, -1, -1, -1]
    assert adm.rejected == 3


def test_rejected_vm_does_not_free_capacity_when_it_leaves():
    """A rejected VM's departure gives nothing back to any host."""
    df = trace([(0, NAN, 80, 10), (1, 5, 10, 1), (6, NAN, 1, 1)])
    adm = admit(df, intel(1))
    assert adm.host_of_vm.tolist() == [0, -1, -1]


def test_departure_frees_room_for_arrival_at_same_instant():
    """A VM leaving at t frees its host for a VM arriving at the same t."""
    df = trace([(0, 10, 80, 10), (10, NAN, 80, 10)])
    assert admit(df, intel(1)).host_of_vm.tolist() == [0, 0]


def test_admit_is_deterministic():
    """Admitting the same trace twice gives the same hosts, with and without auto-sizing."""
    df = random_trace(1)
    for target in (None, 0.9):
        a, b = admit(df, load_cluster("mixed"), target), admit(df, load_cluster("mixed"), target)
        assert np.array_equal(a.host_of_vm, b.host_of_vm)
        assert [t.name for t in a.hosts] == [t.name for t in b.hosts]
        assert a.specs[""].to_dict() == b.specs[""].to_dict()


# --- admission: invariants over generated traces ------------------------------------------------


def check_admission(df: pd.DataFrame, spec: ClusterSpec) -> None:
    """Sweep the events in time order, checking capacity at every step and first fit at arrivals."""
    adm = admit(df, spec)
    assert adm.host_of_vm.shape == (len(df),)
    cores, mem = spec.host_capacity()
    vcpu_cap = cores * spec.cpu_overcommit
    used_v = np.zeros(spec.num_hosts, dtype=np.int64)
    used_m = np.zeros(spec.num_hosts, dtype=np.int64)
    vcpus = df["vcpus"].to_numpy(np.int64)
    mem_mib = mem_mib_of(df)
    vms, arriving = event_order(df["arrival_s"].to_numpy(float), df["departure_s"].to_numpy(float))
    for vm, is_arrival in zip(vms.tolist(), arriving.tolist()):
        host = int(adm.host_of_vm[vm])
        if is_arrival:
            room = (used_v + vcpus[vm] <= vcpu_cap) & (used_m + mem_mib[vm] <= mem)
            if host < 0:
                assert not room.any(), f"VM {vm} rejected although host {int(room.argmax())} had room"
                continue
            assert room[host], f"VM {vm} admitted to host {host} without room"
            assert not room[:host].any(), f"VM {vm} skipped lower host {int(room.argmax())}"
            used_v[host] += vcpus[vm]
            used_m[host] += mem_mib[vm]
        elif host >= 0:
            used_v[host] -= vcpus[vm]
            used_m[host] -= mem_mib[vm]
        assert (used_v <= vcpu_cap).all() and (used_m <= mem).all()
        assert (used_v >= 0).all() and (used_m >= 0).all()
    assert adm.rejected == int((adm.host_of_vm < 0).sum())


@st.composite
def small_traces(draw) -> pd.DataFrame:
    """Up to 40 VMs on a coarse clock (many simultaneous events), sizes up to beyond one host."""
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        arrival = draw(st.integers(0, 30))
        life = draw(st.one_of(st.none(), st.integers(0, 20)))
        vcpus = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 48, 64, 100, 130]))
        mem = draw(st.sampled_from([0.5, 1.0, 4.0, 16.0, 64.0, 100.0, 170.0, 250.0]))
        rows.append((arrival, NAN if life is None else arrival + life, vcpus, mem))
    return trace(sorted(rows, key=lambda r: r[0]))


SPECS = [
    intel(2),
    ClusterSpec("mixed", ((PRESETS["intel-2s"], 1), (PRESETS["amd-2s-nps2"], 1)), 1.5),
    ClusterSpec("nps4", ((PRESETS["amd-2s-nps4"], 3),), 1.25),
]


@pytest.mark.slow
@settings(max_examples=250, **SETTINGS)
@given(small_traces(), st.sampled_from(SPECS))
def test_admission_never_overcommits_and_is_first_fit(df: pd.DataFrame, spec: ClusterSpec):
    """On generated traces, no host ever holds more memory than it has or more vCPUs than cores × overcommit, and every VM takes the lowest host with room (or is rejected when none has)."""
    check_admission(df, spec)


@pytest.mark.parametrize("seed", [0, 1])
def test_admission_invariants_on_a_larger_trace(seed: int):
    """The same sweep on a 400-VM trace over an auto-sized cluster (some hosts run full)."""
    df = random_trace(seed)
    sized = size_cluster(df, load_cluster("mixed"), 0.95)
    check_admission(df, sized)


# --- sizing -------------------------------------------------------------------------------------


def concurrent_trace(n: int, vcpus: int, mem_gib: float) -> pd.DataFrame:
    """``n`` equal VMs that arrive one after another and all run to the end."""
    return trace([(float(i), NAN, vcpus, mem_gib) for i in range(n)])


def utilisation(df: pd.DataFrame, spec: ClusterSpec) -> tuple[float, float]:
    peak_v, peak_m = peak_demand(df)
    cores, mem = spec.host_capacity()
    return peak_v / (cores.sum() * spec.cpu_overcommit), peak_m / mem.sum()


@pytest.mark.parametrize(
    "df, spec, target, binding",
    [
        (concurrent_trace(200, 4, 4.0), intel(1), 0.9, "cpu"),  # 1 GiB per vCPU: cores bind
        (concurrent_trace(200, 1, 8.0), intel(1), 0.9, "mem"),  # 8 GiB per vCPU: memory binds
        (concurrent_trace(300, 4, 4.0), load_cluster("mixed"), 0.8, "cpu"),
        (concurrent_trace(300, 2, 16.0), load_cluster("amd-2s-nps4"), 0.5, "mem"),
        (concurrent_trace(250, 4, 7.0), intel(1, 1.5), 0.9, "mem"),  # overcommit shifts the bind
    ],
)
def test_size_cluster_reaches_target(df: pd.DataFrame, spec: ClusterSpec, target: float, binding: str):
    """Peak demand over the binding resource's capacity is <= target, and one host fewer per group would exceed it."""
    sized = size_cluster(df, spec, target)
    assert sized.cpu_overcommit == spec.cpu_overcommit
    assert [t.name for t, _ in sized.groups] == [t.name for t, _ in spec.groups]
    cpu, mem = utilisation(df, sized)
    util = cpu if binding == "cpu" else mem
    other = mem if binding == "cpu" else cpu
    assert util <= target + 1e-12
    assert other <= util
    smaller = ClusterSpec("smaller", tuple((t, c - 1) for t, c in sized.groups), sized.cpu_overcommit)
    assert max(utilisation(df, smaller)) > target  # so the sizing is as tight as whole hosts allow


def test_size_cluster_keeps_proportions():
    """Group counts scale together (3:1 stays about 3:1)."""
    spec = ClusterSpec("p", ((PRESETS["intel-2s"], 3), (PRESETS["amd-2s-nps2"], 1)))
    sized = size_cluster(concurrent_trace(400, 8, 8.0), spec, 0.9)
    a, b = (c for _, c in sized.groups)
    assert b >= 1 and a / b == pytest.approx(3, rel=0.25)


def test_size_cluster_overcommit_needs_fewer_hosts():
    """With cpu_overcommit 2 a CPU-bound trace needs about half the hosts."""
    df = concurrent_trace(400, 4, 2.0)  # peak 1600 vCPUs, 800 GiB
    assert size_cluster(df, intel(1), 0.9).num_hosts == math.ceil(1600 / (80 * 0.9)) == 23
    assert size_cluster(df, intel(1, 2.0), 0.9).num_hosts == math.ceil(1600 / (160 * 0.9)) == 12


@pytest.mark.parametrize("target", [0.0, -0.5, 1.5, NAN])
def test_size_cluster_bad_target(target: float):
    """A target outside (0, 1] is refused, naming it."""
    with pytest.raises(CaturError, match="target utilization"):
        size_cluster(concurrent_trace(3, 1, 1.0), intel(1), target)


def test_admit_with_target_sizes_then_admits_everything():
    """With a target below 1 on a trace of small VMs, every VM is admitted."""
    df = random_trace(2)
    adm = admit(df, load_cluster("mixed"), 0.9)
    assert adm.rejected == 0
    assert adm.num_hosts == adm.specs[""].num_hosts == size_cluster(df, load_cluster("mixed"), 0.9).num_hosts


# --- host ids and clusters in the trace ---------------------------------------------------------


def test_trace_host_ids_are_kept():
    """A trace with host_id keeps its assignment, even one first fit would not choose."""
    df = trace([(0, NAN, 1, 1), (1, NAN, 1, 1), (2, NAN, 1, 1)], host_id=[2, 0, 2])
    adm = admit(df, intel(3))
    assert adm.host_of_vm.tolist() == [2, 0, 2]
    assert adm.rejected == 0
    assert adm.num_hosts == 3


def test_trace_host_id_beyond_cluster_is_refused():
    """A host_id the cluster does not have is refused, naming it."""
    df = trace([(0, NAN, 1, 1), (1, NAN, 1, 1)], host_id=[0, 7])
    with pytest.raises(CaturError, match=r"host_id 7.*2 hosts"):
        admit(df, intel(2))


def test_cluster_column_admits_each_cluster_on_its_own_hosts():
    """VMs of each `cluster` label go to that cluster's own hosts, numbered on in label order."""
    rows = [(float(i), NAN, 60, 10) for i in range(6)]
    df = trace(rows, cluster=["b", "a", "b", "a", "b", "a"])
    adm = admit(df, intel(3))
    assert adm.num_hosts == 6
    assert adm.host_cluster == ["a"] * 3 + ["b"] * 3
    # each 60-core VM fills a host: a's VMs (rows 1, 3, 5) on hosts 0-2, b's on hosts 3-5
    assert adm.host_of_vm.tolist() == [3, 0, 4, 1, 5, 2]
    assert set(adm.specs) == {"a", "b"}


def test_cluster_column_sizes_each_cluster_separately():
    """With a target, each cluster is sized on its own demand and admitted as if alone."""
    big = random_trace(3, n=300)
    small = random_trace(4, n=40)
    df = pd.concat([big.assign(cluster="big"), small.assign(cluster="small")], ignore_index=True)
    df["vm_id"] = np.arange(len(df))
    df = df.sort_values(["arrival_s", "vm_id"], kind="stable", ignore_index=True)
    adm = admit(df, load_cluster("mixed"), 0.9)
    big_rows = np.flatnonzero(df["cluster"] == "big")
    small_rows = np.flatnonzero(df["cluster"] == "small")
    alone_big = admit(df.iloc[big_rows].reset_index(drop=True).drop(columns="cluster"), load_cluster("mixed"), 0.9)
    alone_small = admit(df.iloc[small_rows].reset_index(drop=True).drop(columns="cluster"), load_cluster("mixed"), 0.9)
    assert adm.specs["big"].num_hosts == alone_big.num_hosts > alone_small.num_hosts == adm.specs["small"].num_hosts
    assert np.array_equal(adm.host_of_vm[big_rows], alone_big.host_of_vm)
    assert np.array_equal(adm.host_of_vm[small_rows], alone_small.host_of_vm + alone_big.num_hosts)
    assert adm.host_cluster == ["big"] * alone_big.num_hosts + ["small"] * alone_small.num_hosts


# --- day windows --------------------------------------------------------------------------------


@pytest.fixture
def month() -> pd.DataFrame:
    """VMs from day 3.25 after the epoch (so day 1 starts at 3 * DAY) to 40 days later."""
    origin = 3 * DAY
    return trace(
        [
            (origin + 0.25 * DAY, origin + 2 * DAY, 1, 1),
            (origin + 20 * DAY, NAN, 1, 1),
            (origin + 39 * DAY, origin + 40.5 * DAY, 1, 1),
        ]
    )


@pytest.mark.parametrize(
    "days, window",
    [
        ("16:31", (15, 31)),
        ("1:1", (0, 1)),
        ("16:", (15, 40.5)),
        (":15", (0, 15)),
        (None, (0, 40.5)),
        (":", (0, 40.5)),
        ("", (0, 40.5)),
        (" 2 : 3 ", (1, 3)),
        ("30:99", (29, 40.5)),  # a last day past the trace's end stops at the end
    ],
)
def test_parse_days(month: pd.DataFrame, days, window):
    """Days are 1-based and inclusive from the first arrival's day; open sides run to the trace's edges."""
    start, end = parse_days(days, month)
    origin = 3 * DAY
    assert (start, end) == pytest.approx((origin + window[0] * DAY, origin + window[1] * DAY))


@pytest.mark.parametrize("days", ["abc", "3-5", "x:3", "3:y", "1.5:3", "0:3", "-1:3", "5:3", "2:0", "42:50", "42:"])
def test_parse_days_bad(month: pd.DataFrame, days: str):
    """A malformed, reversed, zero-based or past-the-end --days is refused, quoting it."""
    with pytest.raises(CaturError) as err:
        parse_days(days, month)
    assert repr(days) in str(err.value)


# --- per-host streams ---------------------------------------------------------------------------


def test_host_streams_window():
    """Warm-up VMs are replayed but not counted, departures after the window become NaN, later arrivals and rejected VMs are left out."""
    df = trace(
        [
            (0.2 * DAY, 0.5 * DAY, 2, 2),  # 0: warm-up, gone before the window
            (0.8 * DAY, 1.5 * DAY, 2, 2),  # 1: warm-up, leaves inside the window
            (1.2 * DAY, 2.5 * DAY, 2, 2),  # 2: counted, leaves after the window -> NaN
            (1.4 * DAY, 1.6 * DAY, 2, 2),  # 3: counted
            (1.5 * DAY, NAN, 500, 2),  # 4: rejected (bigger than a host)
            (1.7 * DAY, NAN, 2, 2),  # 5: counted, never leaves
            (2.0 * DAY, NAN, 2, 2),  # 6: arrives at the window's end -> left out
            (2.2 * DAY, NAN, 2, 2),  # 7: after the window -> left out
        ]
    )
    adm = admit(df, intel(1))
    assert adm.rejected == 1
    start, end = parse_days("2:2", df)
    assert (start, end) == (DAY, 2 * DAY)
    (stream,) = host_streams(df, adm, start, end)
    assert stream.host == 0 and stream.topology.name == "intel-2s"
    assert stream.rows.tolist() == [0, 1, 2, 3, 5]
    assert stream.counted.tolist() == [False, False, True, True, True]
    dep = stream.trace.departure_s
    assert dep[:2].tolist() == [0.5 * DAY, 1.5 * DAY] and dep[3] == 1.6 * DAY
    assert np.isnan(dep[2]) and np.isnan(dep[4])
    assert stream.trace.end_s == end
    assert stream.trace.mem_mib.tolist() == [2048] * 5
    assert df["departure_s"][2] == 2.5 * DAY  # the input trace is not modified


def test_host_streams_split_by_host_and_carry_weights():
    """Each host gets its own stream in host order; alpha/beta/vnuma come along, missing values defaulted."""
    df = trace(
        [(0, NAN, 80, 1), (1, NAN, 80, 1), (2, 10, 4, 1), (3, NAN, 4, 1)],
        alpha=[0.5, NAN, 2.0, 1.0],
        beta=[1.0, 1.0, 0.0, NAN],
        vnuma=[2, 0, NAN, 1],
    )
    adm = admit(df, intel(3))
    assert adm.host_of_vm.tolist() == [0, 1, 2, 2]
    streams = host_streams(df, adm, 0.0, 20.0)
    assert [s.host for s in streams] == [0, 1, 2]
    assert [s.rows.tolist() for s in streams] == [[0], [1], [2, 3]]
    assert streams[0].trace.alpha.tolist() == [0.5] and streams[0].trace.vnuma.tolist() == [2]
    assert streams[1].trace.alpha.tolist() == [1.0]
    assert streams[2].trace.beta.tolist() == [0.0, 1.0] and streams[2].trace.vnuma.tolist() == [0, 1]


@pytest.mark.parametrize("days", ["2:3", "1:1", "4:"])
def test_host_streams_count_exactly_the_window(days: str):
    """Across hosts, the counted VMs are exactly the admitted ones arriving inside the window, each once."""
    df = random_trace(5)
    adm = admit(df, load_cluster("mixed"), 0.9)
    start, end = parse_days(days, df)
    streams = host_streams(df, adm, start, end)
    counted = np.sort(np.concatenate([s.rows[s.counted] for s in streams]))
    arrival = df["arrival_s"].to_numpy()
    expected = np.flatnonzero((adm.host_of_vm >= 0) & (arrival >= start) & (arrival < end))
    assert counted.tolist() == expected.tolist()
    replayed = np.concatenate([s.rows for s in streams])
    assert len(set(replayed.tolist())) == replayed.size
    for s in streams:
        assert (adm.host_of_vm[s.rows] == s.host).all()
        assert (arrival[s.rows] < end).all()
        assert not (s.trace.departure_s > end).any()


@pytest.mark.parametrize("days", [None, ":", "1:", "1:1"])
def test_whole_trace_window_counts_every_admitted_vm(days):
    """A window open to (or past) the trace's end counts every admitted VM, also one arriving at the trace's last instant."""
    df = trace([(0.0, 50.0, 1, 1), (100.0, NAN, 1, 1), (200.0, NAN, 1, 1)])
    adm = admit(df, intel(1))
    streams = host_streams(df, adm, *parse_days(days, df))
    assert sum(int(s.counted.sum()) for s in streams) == 3
    single = trace([(300.0, NAN, 2, 2)])
    (stream,) = host_streams(single, admit(single, intel(1)), *parse_days(days, single))
    assert stream.counted.tolist() == [True]


# --- event order --------------------------------------------------------------------------------


def test_event_order_departures_first_and_instant_departure_after_own_arrival():
    """At one instant: ordinary departures first, then arrivals in trace order, an instant departure right after its own arrival."""
    arrival = np.array([0.0, 5.0, 5.0, 5.0, 5.0, 7.0])
    departure = np.array([5.0, 5.0, NAN, 9.0, 5.0, 7.0])
    vm, is_arrival = event_order(arrival, departure)
    events = list(zip(vm.tolist(), is_arrival.tolist()))
    assert events == [
        (0, True),
        (0, False),  # t=5: VM 0 leaves before anyone arrives
        (1, True),
        (1, False),  # VM 1 leaves the instant it arrives: right after its own arrival
        (2, True),
        (3, True),
        (4, True),
        (4, False),
        (5, True),
        (5, False),
        (3, False),  # t=9
    ]


def test_event_order_empty_and_running():
    """No VMs give no events; NaN departures never happen."""
    vm, is_arrival = event_order(np.zeros(0), np.zeros(0))
    assert vm.size == 0 and is_arrival.size == 0
    vm, is_arrival = event_order(np.array([1.0, 0.0]), np.array([NAN, NAN]))
    assert vm.tolist() == [1, 0] and is_arrival.all()


@settings(max_examples=200, **SETTINGS)
@given(
    st.lists(
        st.tuples(st.integers(0, 10), st.one_of(st.none(), st.integers(0, 5))),
        min_size=1,
        max_size=30,
    )
)
def test_event_order_properties(rows):
    """Each VM arrives once and leaves at most once after its arrival; times never go back; at a tie, a departure precedes an arrival unless it is an instant one."""
    arrival = np.array([float(a) for a, _ in rows])
    departure = np.array([NAN if life is None else float(a + life) for a, life in rows])
    vm, is_arrival = event_order(arrival, departure)
    times = np.where(is_arrival, arrival[vm], departure[vm])
    assert (np.diff(times) >= 0).all()
    assert sorted(vm[is_arrival].tolist()) == list(range(len(rows)))
    assert sorted(vm[~is_arrival].tolist()) == np.flatnonzero(~np.isnan(departure)).tolist()
    position = {(int(v), bool(a)): i for i, (v, a) in enumerate(zip(vm, is_arrival))}
    for i, (v, a) in enumerate(zip(vm.tolist(), is_arrival.tolist())):
        if not a:
            assert position[(v, True)] < i
            instant = departure[v] == arrival[v]
            if instant:
                assert position[(v, True)] == i - 1
            else:
                earlier_same_time_arrival = [
                    j for j in range(i) if is_arrival[j] and times[j] == times[i]
                ]
                assert not earlier_same_time_arrival
