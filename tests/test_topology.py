"""Topologies: the shipped presets, user files (YAML and TOML), and reading a (fake) Linux sysfs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catur.topology import (
    PRESETS,
    Topology,
    default_distances,
    detect_topology,
    get_preset,
    load_topology_file,
    resolve_topology,
    topology_from_dict,
)


# --- presets ------------------------------------------------------------------------------------------


def test_intel_2s():
    """intel-2s: 2 sockets x 1 node, 40 cores and 90 GiB per node, distance 21."""
    t = get_preset("intel-2s")
    assert t.name == "intel-2s"
    assert t.num_nodes == 2 and t.num_sockets == 2
    assert t.node_cores.tolist() == [40, 40]
    assert t.node_mem_mib.tolist() == [90 * 1024] * 2
    assert t.node_socket.tolist() == [0, 1]
    assert t.distance.tolist() == [[10, 21], [21, 10]]


def test_amd_2s_nps2():
    """amd-2s-nps2: 4 nodes on 2 sockets, 32 cores and 72 GiB each, 12 within a socket, 32 across."""
    t = get_preset("amd-2s-nps2")
    assert t.num_nodes == 4 and t.num_sockets == 2
    assert t.node_cores.tolist() == [32] * 4
    assert t.node_mem_mib.tolist() == [72 * 1024] * 4
    assert t.node_socket.tolist() == [0, 0, 1, 1]
    assert t.distance.tolist() == [
        [10, 12, 32, 32],
        [12, 10, 32, 32],
        [32, 32, 10, 12],
        [32, 32, 12, 10],
    ]


def test_amd_2s_nps4():
    """amd-2s-nps4: 8 nodes, 4 per socket, 16 cores and 36 GiB each."""
    t = get_preset("amd-2s-nps4")
    assert t.num_nodes == 8 and t.num_sockets == 2
    assert t.node_cores.tolist() == [16] * 8
    assert t.node_mem_mib.tolist() == [36 * 1024] * 8
    assert t.node_socket.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert t.distance[0].tolist() == [10, 12, 12, 12, 32, 32, 32, 32]
    assert (t.distance == t.distance.T).all()


def test_presets_share_memory_per_core_and_totals():
    """Every preset has 2.25 GiB per core; the two AMD presets split the same 128 cores differently."""
    for t in PRESETS.values():
        assert t.total_mem_mib / t.total_cores == pytest.approx(2.25 * 1024)
    assert get_preset("amd-2s-nps2").total_cores == get_preset("amd-2s-nps4").total_cores == 128


def test_preset_arrays_are_read_only():
    """A preset is shared by everyone, so its arrays cannot be changed in place."""
    t = get_preset("intel-2s")
    with pytest.raises(ValueError):
        t.node_cores[0] = 1


def test_nodes_by_distance():
    """Nodes are ordered nearest first from each node (itself first, ties by index)."""
    t = get_preset("amd-2s-nps2")
    assert t.nodes_by_distance(0).tolist() == [0, 1, 2, 3]
    assert t.nodes_by_distance(3).tolist() == [3, 2, 0, 1]


def test_describe_mentions_every_node():
    """describe() gives one line per node plus the distance matrix."""
    text = get_preset("amd-2s-nps2").describe()
    assert "4 NUMA nodes, 2 sockets, 128 cores, 288 GiB" in text
    assert text.count("\n") >= 4 + 4


# --- user files ----------------------------------------------------------------------------------------


YAML = """\
name: lab-host
nodes:
  - {cores: 8, mem_gib: 16, socket: 0}
  - {cores: 8, mem_gib: 16, socket: 0}
  - {cores: 4, mem_mib: 6000, socket: 1}
distances:
  - [10, 11, 30]
  - [11, 10, 30]
  - [30, 30, 10]
"""

TOML = """\
name = "toml-host"

[[nodes]]
cores = 16
mem_gib = 32
socket = 0

[[nodes]]
cores = 16
mem_gib = 32.5
socket = 1
"""


def test_load_yaml(tmp_path: Path):
    """A YAML topology with an explicit distance matrix and a node given in MiB."""
    path = tmp_path / "lab.yaml"
    path.write_text(YAML)
    t = load_topology_file(path)
    assert t.name == "lab-host"
    assert t.node_cores.tolist() == [8, 8, 4]
    assert t.node_mem_mib.tolist() == [16384, 16384, 6000]
    assert t.node_socket.tolist() == [0, 0, 1]
    assert t.distance.tolist() == [[10, 11, 30], [11, 10, 30], [30, 30, 10]]
    assert resolve_topology(str(path)) == t  # a path works wherever a preset name does


def test_load_toml_with_default_distances(tmp_path: Path):
    """A TOML topology without distances gets 10 / 12 / 21 by socket; the name defaults to the file's."""
    path = tmp_path / "toml-host.toml"
    path.write_text(TOML)
    t = load_topology_file(path)
    assert t.name == "toml-host"
    assert t.node_cores.tolist() == [16, 16]
    assert t.node_mem_mib.tolist() == [32768, 33280]  # 32.5 GiB = 33280 MiB
    assert t.distance.tolist() == [[10, 21], [21, 10]]
    unnamed = tmp_path / "box.yml"
    unnamed.write_text("nodes:\n  - {cores: 2, mem_gib: 1}\n  - {cores: 2, mem_gib: 1}\n")
    t = load_topology_file(unnamed)
    assert t.name == "box"
    assert t.node_socket.tolist() == [0, 0]  # socket defaults to 0
    assert t.distance.tolist() == [[10, 12], [12, 10]]  # same socket -> 12


def test_default_distances():
    """default_distances: 10 on the diagonal, 12 within a socket, 21 across."""
    assert default_distances([0, 0, 1]).tolist() == [[10, 12, 21], [12, 10, 21], [21, 21, 10]]


def test_to_dict_round_trip():
    """to_dict() gives back the same topology through topology_from_dict()."""
    for t in PRESETS.values():
        assert topology_from_dict(t.to_dict()) == t


def test_resolve_preset_name():
    """resolve_topology() accepts a preset name."""
    assert resolve_topology("amd-2s-nps4") is PRESETS["amd-2s-nps4"]


# --- Linux sysfs -------------------------------------------------------------------------------------


def fake_sysfs(root: Path, nodes: dict[int, tuple[str, int, str]], packages: dict[int, int]) -> Path:
    """Build ``root/devices/system/{node,cpu}`` with nodes {id: (cpulist, MemTotal kB, distance)}."""
    for nid, (cpulist, mem_kb, distance) in nodes.items():
        d = root / "devices" / "system" / "node" / f"node{nid}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpulist + "\n")
        (d / "meminfo").write_text(
            f"Node {nid} MemTotal:       {mem_kb} kB\nNode {nid} MemFree:        1024 kB\n"
        )
        (d / "distance").write_text(distance + "\n")
    # sysfs also has non-node entries next to the nodes; they must be ignored
    node_dir = root / "devices" / "system" / "node"
    (node_dir / "possible").write_text("0-3\n")
    (node_dir / "power").mkdir()
    for cpu, package in packages.items():
        d = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{package}\n")
    return root


def test_detect_two_sockets(tmp_path: Path):
    """Two nodes with CPU ranges, MemTotal in kB and a distance row each."""
    root = fake_sysfs(
        tmp_path,
        {
            0: ("0-3,8-11", 16 * 1024 * 1024, "10 21"),  # 8 CPUs, 16 GiB
            1: ("4-7,12-15", 8 * 1024 * 1024, "21 10"),  # 8 CPUs, 8 GiB
        },
        {c: (0 if c in (0, 1, 2, 3, 8, 9, 10, 11) else 1) for c in range(16)},
    )
    t = detect_topology(sysfs_root=root, name="box")
    assert t.name == "box"
    assert t.node_cores.tolist() == [8, 8]
    assert t.node_mem_mib.tolist() == [16384, 8192]
    assert t.node_socket.tolist() == [0, 1]
    assert t.distance.tolist() == [[10, 21], [21, 10]]


def test_detect_skips_memory_only_node(tmp_path: Path):
    """A node without CPUs (e.g. CXL memory) is skipped, and its distance column dropped."""
    root = fake_sysfs(
        tmp_path,
        {
            0: ("0-1", 4 * 1024 * 1024, "10 12 40 21"),
            1: ("2-3", 4 * 1024 * 1024, "12 10 40 21"),
            2: ("", 64 * 1024 * 1024, "40 40 10 40"),  # memory only
            3: ("4,5,6", 2 * 1024 * 1024, "21 21 40 10"),
        },
        {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1},
    )
    t = detect_topology(sysfs_root=root)
    assert t.num_nodes == 3
    assert t.node_cores.tolist() == [2, 2, 3]
    assert t.node_mem_mib.tolist() == [4096, 4096, 2048]
    assert t.node_socket.tolist() == [0, 0, 1]  # nodes 0 and 1 share package 0
    assert t.distance.tolist() == [[10, 12, 21], [12, 10, 21], [21, 21, 10]]


def test_detect_without_package_ids(tmp_path: Path):
    """Without physical_package_id files each node counts as its own socket; socket ids are made dense."""
    root = fake_sysfs(tmp_path, {0: ("0", 1024 * 1024, "10 20"), 1: ("1", 1024 * 1024, "20 10")}, {})
    t = detect_topology(sysfs_root=root)
    assert t.node_socket.tolist() == [0, 1]
    assert t.node_cores.tolist() == [1, 1]


def test_detect_dense_socket_ids(tmp_path: Path):
    """Package ids 0 and 3 become sockets 0 and 1."""
    root = fake_sysfs(tmp_path, {0: ("0-1", 1024 * 1024, "10 21"), 1: ("2-3", 1024 * 1024, "21 10")},
                      {0: 0, 1: 0, 2: 3, 3: 3})
    assert detect_topology(sysfs_root=root).node_socket.tolist() == [0, 1]


def test_detect_this_machine_if_linux():
    """On a Linux host with NUMA sysfs, detection gives a valid topology."""
    if not Path("/sys/devices/system/node/node0").is_dir():
        pytest.skip("no NUMA sysfs here")
    t = detect_topology()
    assert isinstance(t, Topology) and t.num_nodes >= 1
    assert np.diag(t.distance).tolist() == [10] * t.num_nodes
