"""Bad input raises CaturError (a ValueError) whose message names the bad value or field."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from catur.errors import CaturError
from catur.metrics import CorClock, MetricsConfig, summarize
from catur.placement import place
from catur.policies import get_policy
from catur.request import VMRequest, split_request
from catur.sim.replay import HostTrace, replay_host
from catur.state import HostsState, apply, release
from catur.topology import Topology, detect_topology, get_preset, load_topology_file, resolve_topology

NAN = float("nan")


def t2() -> Topology:
    return Topology("t2", [4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 10]])


def test_catur_error_is_a_value_error():
    """Callers that catch ValueError keep working."""
    assert issubclass(CaturError, ValueError)


# --- VM requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(vcpus=0, mem_mib=1024), ["vcpus", ">= 1", "0"]),
        (dict(vcpus=-2, mem_mib=1024), ["vcpus", "-2"]),
        (dict(vcpus=2.5, mem_mib=1024), ["vcpus", "whole number", "2.5"]),
        (dict(vcpus=NAN, mem_mib=1024), ["vcpus", "nan"]),
        (dict(vcpus="4", mem_mib=1024), ["vcpus", "'4'"]),
        (dict(vcpus=True, mem_mib=1024), ["vcpus", "True"]),
        (dict(vcpus=2, mem_mib=0), ["mem_mib", "0"]),
        (dict(vcpus=2, mem_mib=-512), ["mem_mib", "-512"]),
        (dict(vcpus=2, mem_mib=math.inf), ["mem_mib", "inf"]),
        (dict(vcpus=2, mem_mib=1024, alpha=-1), ["alpha", "-1"]),
        (dict(vcpus=2, mem_mib=1024, alpha=NAN), ["alpha", "nan"]),
        (dict(vcpus=2, mem_mib=1024, beta="high"), ["beta", "'high'"]),
        (dict(vcpus=2, mem_mib=1024, vnuma=0), ["vnuma", "0"]),
        (dict(vcpus=2, mem_mib=1024, vnuma=1.5), ["vnuma", "1.5"]),
    ],
)
def test_bad_request(kwargs, words):
    """A bad VM request field is refused, naming the field and the value."""
    with pytest.raises(CaturError) as err:
        VMRequest(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_vnuma_more_than_nodes():
    """An explicit vnuma larger than the host's node count is refused when placing."""
    req = VMRequest(8, 1024, vnuma=3)
    with pytest.raises(CaturError, match=r"vnuma=3 exceeds the 2 NUMA nodes of topology 't2'"):
        split_request(t2(), req)
    with pytest.raises(CaturError, match="vnuma=3"):
        place(t2(), np.zeros(2, int), np.zeros(2, int), req, "xen")


def test_vnuma_more_than_vcpus():
    """An explicit vnuma larger than the vCPU count is refused (every instance needs a vCPU)."""
    with pytest.raises(CaturError, match=r"vnuma=2 exceeds vcpus=1"):
        split_request(t2(), VMRequest(1, 1024, vnuma=2))


# --- topologies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        # mismatched lengths
        (([4, 4], [4096, 4096, 4096], [0, 1], [[10, 21], [21, 10]]), ["node_mem_mib", "(3,)", "(2,)"]),
        (([4, 4], [4096, 4096], [0], [[10, 21], [21, 10]]), ["node_socket", "(1,)"]),
        (([4, 4], [4096, 4096], [0, 1], [[10, 21, 21], [21, 10, 21]]), ["distance", "(2, 3)", "(2, 2)"]),
        (([4, 4], [4096, 4096], [0, 1], [[10, 21], [21]]), ["distance"]),  # ragged
        # bad values
        (([4, 4], [4096, 4096], [0, 1], [[10, 21], [31, 10]]), ["distance", "symmetric"]),
        (([4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 11]]), ["distance", "diagonal", "11"]),
        (([4, 4], [4096, 4096], [0, 1], [[10, 9], [9, 10]]), ["off-diagonal"]),
        (([4, 0], [4096, 4096], [0, 1], [[10, 21], [21, 10]]), ["node_cores", "0"]),
        (([4, -4], [4096, 4096], [0, 1], [[10, 21], [21, 10]]), ["node_cores", "-4"]),
        (([4, 4], [4096, NAN], [0, 1], [[10, 21], [21, 10]]), ["node_mem_mib", "finite", "nan"]),
        (([4, 4.5], [4096, 4096], [0, 1], [[10, 21], [21, 10]]), ["node_cores", "whole", "4.5"]),
        (([4, 4], [4096, 4096], [0, -1], [[10, 21], [21, 10]]), ["node_socket", "-1"]),
        (([], [], [], []), ["node_cores", "non-empty"]),
        (([4, "x"], [4096, 4096], [0, 1], [[10, 21], [21, 10]]), ["node_cores", "numeric"]),
    ],
)
def test_bad_topology(args, words):
    """A topology with bad arrays is refused, naming the field (and the bad shape or value)."""
    with pytest.raises(CaturError) as err:
        Topology("bad", *args)
    assert "'bad'" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_unknown_preset():
    """An unknown preset name is named in the error, along with the known ones."""
    with pytest.raises(CaturError, match=r"unknown topology preset 'intel-4s'.*amd-2s-nps2.*intel-2s"):
        get_preset("intel-4s")
    with pytest.raises(CaturError, match="'no-such-host'"):
        resolve_topology("no-such-host")


def test_unknown_policy():
    """An unknown policy name is named in the error, along with the known ones."""
    with pytest.raises(CaturError, match=r"unknown policy 'best-fit'.*core-best-fit"):
        get_policy("best-fit")
    with pytest.raises(CaturError, match="'nova'"):
        place(t2(), np.zeros(2, int), np.zeros(2, int), VMRequest(1, 1), "nova")


# --- topology files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("nodes:\n  - {cores: 4, mem_gib: 4, sockets: 0}\n", ["nodes[0]", "sockets"]),  # typo'd field
        ("nodes:\n  - {mem_gib: 4}\n", ["nodes[0]", "cores"]),
        ("nodes:\n  - {cores: 4}\n", ["nodes[0]", "mem_gib"]),
        ("nodes:\n  - {cores: 4, mem_gib: 4}\n  - {cores: four, mem_gib: 4}\n", ["nodes[1].cores", "'four'"]),
        ("nodes:\n  - {cores: 4, mem_gib: .nan}\n", ["nodes[0].mem_gib", "nan"]),
        ("nodes:\n  - {cores: 4, mem_gib: true}\n", ["nodes[0].mem_gib", "True"]),
        ("nodes: []\n", ["nodes", "non-empty"]),
        ("nodes:\n  - 4\n", ["nodes[0]", "mapping"]),
        ("- 1\n- 2\n", ["mapping", "list"]),
        ("nodes:\n  - {cores: 4, mem_gib: 4}\n  - {cores: 4, mem_gib: 4}\ndistances: [[10, 21], [20, 10]]\n",
         ["symmetric"]),
        ("nodes: [ {cores: 4\n", ["YAML"]),  # not YAML at all
    ],
)
def test_bad_yaml_topology(tmp_path: Path, text, words):
    """A bad YAML topology file is refused, naming the file and the bad field or value."""
    path = tmp_path / "host.yaml"
    path.write_text(text)
    with pytest.raises(CaturError) as err:
        load_topology_file(path)
    assert "host" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_bad_toml_topology(tmp_path: Path):
    """A TOML file that does not parse is refused, naming the file."""
    path = tmp_path / "host.toml"
    path.write_text("[[nodes]]\ncores = = 4\n")
    with pytest.raises(CaturError, match="host.toml"):
        load_topology_file(path)


def test_missing_topology_file(tmp_path: Path):
    """A topology file that does not exist is named in the error."""
    with pytest.raises(CaturError, match="nope.yaml"):
        load_topology_file(tmp_path / "nope.yaml")


def test_detect_without_sysfs(tmp_path: Path):
    """detect_topology on a directory without NUMA information says where it looked."""
    with pytest.raises(CaturError, match="devices/system/node"):
        detect_topology(sysfs_root=tmp_path)
    (tmp_path / "devices" / "system" / "node").mkdir(parents=True)
    with pytest.raises(CaturError, match="no node"):
        detect_topology(sysfs_root=tmp_path)


# --- state -------------------------------------------------------------------------------------------------


def test_release_twice():
    """Releasing a VM twice is refused and leaves the state unchanged."""
    state = HostsState(t2())
    p = place(t2(), state.used_vcpus[0], state.used_mem_mib[0], VMRequest(2, 1024), "xen")
    apply(state, 0, p)
    release(state, 0, p)
    with pytest.raises(CaturError, match="already released"):
        release(state, 0, p)
    assert state == HostsState(t2())


def test_release_on_wrong_host():
    """Releasing a VM from a host it was never placed on is refused."""
    state = HostsState(t2(), num_hosts=2)
    p = place(t2(), state.used_vcpus[0], state.used_mem_mib[0], VMRequest(2, 1024), "xen")
    apply(state, 0, p)
    with pytest.raises(CaturError, match="host 1"):
        release(state, 1, p)


@pytest.mark.parametrize(
    "used_v, used_m, words",
    [
        ([1, 2, 3], [0, 0, 0], ["used_vcpus", "2 nodes"]),
        ([1, 2], [0, -5], ["used_mem_mib", "-5"]),
        ([1, NAN], [0, 0], ["used_vcpus", "finite"]),
        ([1.5, 0], [0, 0], ["used_vcpus", "whole", "1.5"]),
    ],
)
def test_bad_usage_state(used_v, used_m, words):
    """A usage state with the wrong shape or negative / NaN entries is refused, naming the array."""
    with pytest.raises(CaturError) as err:
        HostsState.from_usage(t2(), used_v, used_m)
    for word in words:
        assert word in str(err.value)


def test_zero_hosts():
    """A state needs at least one host."""
    with pytest.raises(CaturError, match="num_hosts"):
        HostsState(t2(), num_hosts=0)


# --- traces -------------------------------------------------------------------------------------------------


def trace(**changes) -> HostTrace:
    fields = dict(arrival_s=[0, 5], departure_s=[10, NAN], vcpus=[2, 2], mem_mib=[1024, 1024])
    fields.update(changes)
    return HostTrace(**fields)


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(departure_s=[10, 3]), ["VM 1", "departs at 3.0", "before it arrives at 5.0"]),
        (dict(departure_s=[10, math.inf]), ["departure_s", "VM 1", "inf"]),
        (dict(vcpus=[2, 2, 2]), ["vcpus", "3 entries", "expected 2"]),
        (dict(arrival_s=[0, NAN]), ["arrival_s", "finite"]),
        (dict(vcpus=[2, 2.5]), ["vcpus", "whole", "2.5", "VM 1"]),
        (dict(mem_mib=[NAN, 1024]), ["mem_mib", "nan", "VM 0"]),
        (dict(end_s=4), ["end_s=4", "last arrival"]),
    ],
)
def test_bad_host_trace(changes, words):
    """A host trace with a bad column is refused, naming the column and the VM."""
    with pytest.raises(CaturError) as err:
        trace(**changes)
    for word in words:
        assert word in str(err.value)


def test_bad_vm_in_trace_is_named_at_replay():
    """A trace VM with zero vCPUs is refused when it is replayed, naming the field."""
    with pytest.raises(CaturError, match="vcpus must be >= 1, got 0"):
        replay_host(t2(), trace(vcpus=[2, 0]), "xen")
    with pytest.raises(CaturError, match="vnuma=4"):
        replay_host(t2(), trace(vcpus=[8, 2], vnuma=[4, 0]), "xen")


# --- metrics -------------------------------------------------------------------------------------------------


def test_bad_metrics_config():
    """Metric parameters must be finite, and c1 positive."""
    with pytest.raises(CaturError, match="ticket_c1"):
        MetricsConfig(ticket_c1=0)
    with pytest.raises(CaturError, match="anomaly_threshold"):
        MetricsConfig(anomaly_threshold=NAN)


def test_summarize_needs_matching_lengths():
    """Lifetime and placement defects must come one per VM each."""
    with pytest.raises(CaturError, match="one value per VM"):
        summarize(np.zeros(3), np.zeros(2))


def test_clock_refuses_time_going_back():
    """The COR clock refuses events out of order, naming both times."""
    clock = CorClock(np.array([4, 4]))
    clock.advance(10)
    with pytest.raises(CaturError, match="time 5 after 10"):
        clock.advance(5)


def test_unknown_policy_in_replay():
    """replay_host names an unknown policy."""
    with pytest.raises(CaturError, match="'pack'"):
        replay_host(get_preset("intel-2s"), trace(), "pack")
