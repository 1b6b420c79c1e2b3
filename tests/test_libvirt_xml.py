"""The libvirt XML work of :mod:`catur.hypervisor`, without libvirt.

* golden: hand-written capabilities of an Intel 2-socket host and an AMD 2-socket NPS4 host
  (tests/data/libvirt/) read into the expected topology, CPU lists and distances; and the same
  hosts written out as a Linux sysfs tree give the same topology through
  ``catur topology detect``'s reader;
* cpuset grammar and memory units; node-info fallback; bad input named in one line;
* the usage rule on hand-made domains (pinned, unpinned, numatune only, guest cells, modes);
* hypothesis: over many hosts, usages and VMs, the XML a placement is written into pins every
  vCPU onto its instance's node only, its memnodes/memory follow the split, guest cells
  partition the VM, and reading it back counts exactly the placement; the usage rule conserves
  every domain's vCPUs and memory;
* without the bindings, ``catur libvirt`` says how to get them; ``./run`` installs the extra
  when it can (root with apt) and skips it with a message otherwise.

The tests against a real libvirt (test driver) are in test_libvirt_agent.py.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catur.decision import Decider
from catur.errors import CaturError
from catur.hypervisor.capabilities import (
    HostTopology, NoNumaCells, format_cpuset, parse_capabilities, parse_cpuset, to_kib, topology_from_nodeinfo,
)
from catur.hypervisor.domain import domain_usage, host_usage, parse_domain, read_xml
from catur.hypervisor.tuning import check_untuned, register_namespaces, to_text, unified_diff, vm_request, write_placement
from catur.request import VMRequest
from catur.topology import PRESETS, Topology, detect_topology, topology_from_dict

DATA = Path(__file__).parent / "data" / "libvirt"
INTEL = (DATA / "caps-intel-2s.xml").read_text()
AMD = (DATA / "caps-amd-2s-nps4.xml").read_text()


# --- golden capabilities ------------------------------------------------------------------------


def test_golden_intel_2s():
    host = parse_capabilities(INTEL, name="intel")
    t = host.topology
    assert host.source == "capabilities" and host.cell_ids == (0, 1)
    assert t.node_cores.tolist() == [40, 40]
    assert t.node_mem_mib.tolist() == [98058520 // 1024, 99063380 // 1024]
    assert t.node_socket.tolist() == [0, 1]
    assert t.distance.tolist() == [[10, 21], [21, 10]]
    # Linux numbers every core's first thread, then the siblings: node 0 is 0-19 and 40-59.
    assert host.node_cpuset(0) == "0-19,40-59" and host.node_cpuset(1) == "20-39,60-79"
    assert host.node_of_cpu(45) == 0 and host.node_of_cpu(65) == 1 and host.node_of_cpu(80) is None


def test_golden_amd_2s_nps4():
    host = parse_capabilities(AMD, name="amd")
    t = host.topology
    assert t.num_nodes == 8 and t.num_sockets == 2
    assert t.node_cores.tolist() == [8] * 8
    assert t.node_mem_mib.tolist() == [m // 1024 for m in (32877744, 33025136, 33025136, 33013060, 33025136, 33025136, 33025136, 32983540)]
    assert t.node_socket.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert t.distance[0].tolist() == [10, 11, 12, 12, 32, 32, 32, 32]
    assert t.distance[6].tolist() == [32, 32, 32, 32, 12, 12, 10, 11]
    for n in range(8):
        assert host.cpus[n] == tuple(range(4 * n, 4 * n + 4)) + tuple(range(4 * n + 32, 4 * n + 36))
    as_file = host.to_dict()
    assert as_file["nodes"][5] == {"cores": 8, "mem_gib": t.node_mem_mib[5] / 1024, "socket": 1}
    assert as_file["libvirt"]["cells"][5] == 5 and as_file["libvirt"]["cpus"][5] == "20-23,52-55"
    assert topology_from_dict(as_file) == t, "the JSON is a topology file as 'catur topology show' reads it"


def _sysfs_from_capabilities(text: str, root: Path) -> None:
    """Write the host the capabilities describe as Linux sysfs (what `catur topology detect` reads)."""
    caps = ET.fromstring(text)
    for cell in caps.findall("./host/topology/cells/cell"):
        node = root / "devices" / "system" / "node" / f"node{cell.get('id')}"
        node.mkdir(parents=True)
        cpus = [c for c in cell.findall("./cpus/cpu")]
        node.joinpath("cpulist").write_text(format_cpuset(int(c.get("id")) for c in cpus) + "\n")
        kib = int(cell.findtext("memory"))
        node.joinpath("meminfo").write_text(f"Node {cell.get('id')} MemTotal:       {kib} kB\nNode {cell.get('id')} MemFree: 1 kB\n")
        node.joinpath("distance").write_text(" ".join(s.get("value") for s in cell.findall("./distances/sibling")) + "\n")
        for c in cpus:
            topo = root / "devices" / "system" / "cpu" / f"cpu{c.get('id')}" / "topology"
            topo.mkdir(parents=True)
            topo.joinpath("physical_package_id").write_text(c.get("socket_id") + "\n")


@pytest.mark.parametrize("text", [INTEL, AMD], ids=["intel-2s", "amd-2s-nps4"])
def test_agrees_with_topology_detect(text, tmp_path):
    _sysfs_from_capabilities(text, tmp_path)
    assert parse_capabilities(text, name="host").topology == detect_topology(tmp_path, name="host")


def test_memory_only_cells_are_skipped_and_missing_distances_default():
    caps = """<capabilities><host><topology><cells num='3'>
      <cell id='0'><memory unit='GiB'>4</memory><cpus num='2'><cpu id='0' socket_id='0'/><cpu id='1' socket_id='0'/></cpus></cell>
      <cell id='1'><memory unit='GiB'>64</memory></cell>
      <cell id='2'><memory unit='MiB'>4096</memory><cpus num='2'><cpu id='2' socket_id='1'/><cpu id='3' socket_id='1'/></cpus></cell>
    </cells></topology></host></capabilities>"""
    host = parse_capabilities(caps)
    assert host.cell_ids == (0, 2) and host.node_of_cell(2) == 1 and host.node_of_cell(1) is None
    assert host.topology.node_mem_mib.tolist() == [4096, 4096]
    assert host.topology.distance.tolist() == [[10, 21], [21, 10]]


def test_capabilities_errors_name_the_problem():
    with pytest.raises(NoNumaCells, match="no NUMA cell"):
        parse_capabilities("<capabilities><host><topology><cells num='0'/></topology></host></capabilities>")
    with pytest.raises(CaturError, match="not well-formed"):
        parse_capabilities("<capabilities><host>")
    with pytest.raises(CaturError, match="expected a <capabilities>"):
        parse_capabilities("<domain/>")
    with pytest.raises(CaturError, match="cell 0 <memory>"):
        parse_capabilities("<capabilities><host><topology><cells><cell id='0'><memory>lots</memory></cell></cells></topology></host></capabilities>")


def test_nodeinfo_fallback():
    host = topology_from_nodeinfo(["x86_64", 65536, 64, 2400, 4, 1, 8, 2], name="h", nodes_per_socket=2)
    assert host.source == "nodeinfo" and host.topology.node_cores.tolist() == [16] * 4
    assert host.topology.node_mem_mib.tolist() == [16384] * 4 and host.topology.node_socket.tolist() == [0, 0, 1, 1]
    assert host.node_cpuset(3) == "48-63"
    with pytest.raises(CaturError, match="!= 64 CPUs"):
        topology_from_nodeinfo(["x86_64", 65536, 64, 2400, 4, 2, 8, 2])
    with pytest.raises(CaturError, match="nodes per socket"):
        topology_from_nodeinfo(["x86_64", 65536, 64, 2400, 4, 1, 8, 2], nodes_per_socket=3)


# --- grammar ---------------------------------------------------------------------------------------


def test_cpuset_grammar():
    assert parse_cpuset("0-3,^2,8", "x") == [0, 1, 3, 8]
    assert parse_cpuset(" 5 , 1-2 ", "x") == [1, 2, 5]
    assert format_cpuset([8, 0, 1, 2, 3, 10, 11]) == "0-3,8,10-11"
    for bad in ("", "a", "3-1", "1,,2", "^1", "1-"):
        with pytest.raises(CaturError, match="where"):
            parse_cpuset(bad, "where")


@given(st.sets(st.integers(0, 300), min_size=1))
def test_cpuset_round_trip(ids):
    assert parse_cpuset(format_cpuset(ids), "x") == sorted(ids)


def test_memory_units():
    assert to_kib("4", "GiB", "x") == 4 * 1024 * 1024
    assert to_kib("2048", None, "x") == 2048
    assert to_kib("1", "bytes", "x") == 1  # rounded up, as libvirt does
    assert to_kib("1", "MB", "x") == 977
    with pytest.raises(CaturError, match="unknown memory unit"):
        to_kib("1", "parsecs", "x")


# --- the usage rule ---------------------------------------------------------------------------------

HOST4 = topology_from_nodeinfo(["x86_64", 65536, 64, 2400, 4, 1, 8, 2], nodes_per_socket=2)


def usage_of(body: str, vcpus: int = 4, mem: str = "<memory unit='MiB'>4096</memory>"):
    spec = parse_domain(f"<domain type='test'><name>d</name>{mem}<vcpu{body.split('|')[0]}>{vcpus}</vcpu>{body.split('|')[1] if '|' in body else ''}<os><type>hvm</type></os></domain>")
    u = domain_usage(spec, HOST4)
    return u.node_vcpus.tolist(), u.node_mem_mib.tolist(), u.rule


def test_usage_rule():
    # <vcpu cpuset> alone: all vCPUs on that node, memory follows (first touch)
    assert usage_of(" cpuset='16-31'") == ([0, 4, 0, 0], [0, 4096, 0, 0], "pinned")
    # unpinned, no numatune: vCPUs near-evenly over all nodes, memory evenly (it runs anywhere)
    assert usage_of("", vcpus=6) == ([2, 2, 1, 1], [1024, 1024, 1024, 1024], "unpinned")
    # numatune only: unpinned vCPUs at home on its nodeset
    assert usage_of("|<numatune><memory mode='strict' nodeset='2-3'/></numatune>") == ([0, 0, 2, 2], [0, 0, 2048, 2048], "unpinned")
    # preferred: all memory on the preferred node
    assert usage_of(" cpuset='0-15'|<numatune><memory mode='preferred' nodeset='1'/></numatune>") == ([4, 0, 0, 0], [0, 4096, 0, 0], "pinned")
    # interleave: evenly over the set, whatever the vCPUs do
    assert usage_of(" cpuset='0-15'|<numatune><memory mode='interleave' nodeset='0,2'/></numatune>") == ([4, 0, 0, 0], [2048, 0, 2048, 0], "pinned")
    # strict over two nodes: in proportion to the vCPUs there
    pins = "<cputune>" + "".join(f"<vcpupin vcpu='{v}' cpuset='{'0-15' if v < 3 else '32-47'}'/>" for v in range(4)) + "</cputune>"
    assert usage_of(f"|{pins}<numatune><memory mode='strict' nodeset='0,2'/></numatune>") == ([3, 0, 1, 0], [3072, 0, 1024, 0], "pinned")
    # a vCPU pinned across nodes counts on the node with most of its CPUs (ties: lower node)
    assert usage_of("|<cputune><vcpupin vcpu='0' cpuset='10-20'/><vcpupin vcpu='1' cpuset='8-23'/></cputune>", vcpus=2)[0] == [2, 0, 0, 0]
    # partly pinned: the pinned vCPU where it is, the other spread
    assert usage_of("|<cputune><vcpupin vcpu='0' cpuset='48'/></cputune>", vcpus=2)[0] == [1, 0, 0, 1]
    assert usage_of("|<cputune><vcpupin vcpu='0' cpuset='48'/></cputune>", vcpus=2)[2] == "partly pinned"


def test_usage_rule_with_guest_cells():
    cells = ("<cpu><numa><cell id='0' cpus='0-1' memory='1024' unit='MiB'/><cell id='1' cpus='2-3' memory='3072' unit='MiB'/></numa></cpu>"
             "<numatune><memnode cellid='0' mode='strict' nodeset='1'/><memnode cellid='1' mode='strict' nodeset='3'/></numatune>")
    assert usage_of(f"|{cells}") == ([0, 2, 0, 2], [0, 1024, 0, 3072], "unpinned")


def test_host_usage_counts_resident_vms():
    specs = [parse_domain(f"<domain><name>v{i}</name><memory unit='GiB'>1</memory><vcpu cpuset='{c}'>2</vcpu></domain>")
             for i, c in enumerate(["0-15", "0-15", "32-47"])]
    usage = host_usage(HOST4, [domain_usage(s, HOST4) for s in specs])
    assert usage.used_vcpus.tolist() == [4, 0, 2, 0] and usage.vms.tolist() == [2, 0, 1, 0]
    assert usage.used_mem_mib.tolist() == [2048, 0, 1024, 0] and usage.unpinned == []


def test_bad_domain_xml_is_one_clear_error():
    with pytest.raises(CaturError, match="vm.xml: not well-formed XML"):
        read_xml("<domain><name>x</name>", "vm.xml")
    with pytest.raises(CaturError, match=r"<vcpu> must be a whole number"):
        parse_domain("<domain><name>x</name><memory>1</memory><vcpu>two</vcpu></domain>")
    with pytest.raises(CaturError, match="vcpupin vcpu='4'"):
        parse_domain("<domain><name>x</name><memory>1024</memory><vcpu>4</vcpu><cputune><vcpupin vcpu='4' cpuset='1'/></cputune></domain>")
    with pytest.raises(CaturError, match="mode='sometimes'"):
        parse_domain("<domain><name>x</name><memory>1024</memory><vcpu>4</vcpu><numatune><memory mode='sometimes' nodeset='0'/></numatune></domain>")


# --- writing a placement ------------------------------------------------------------------------------

PLAIN = """<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web7</name>
  <!-- provisioned by hand -->
  <memory unit='GiB'>8</memory>
  <vcpu>6</vcpu>
  <cputune><shares>2048</shares></cputune>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file' device='disk'><source file='/var/lib/libvirt/images/web7.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>
  <qemu:commandline><qemu:arg value='-nodefaults'/></qemu:commandline>
</domain>
"""


def _placed(text: str, host: HostTopology, used_vcpus=None, used_mem=None, **kw):
    register_namespaces(text)
    root = read_xml(text, "vm.xml")
    spec = parse_domain(root, "vm.xml")
    n = host.num_nodes
    decision = Decider().decide(host.topology, used_vcpus if used_vcpus is not None else np.zeros(n, np.int64),
                                used_mem if used_mem is not None else np.zeros(n, np.int64), vm_request(spec))
    return root, spec, decision.placement, write_placement(root, spec, host, decision.placement, **kw)


def test_write_keeps_everything_else():
    host = parse_capabilities(INTEL)
    root, spec, placement, out = _placed(PLAIN, host)
    text = to_text(out)
    assert "<!-- provisioned by hand -->" in text and "<qemu:arg value=\"-nodefaults\" />" in text
    assert "<shares>2048</shares>" in text and "web7.qcow2" in text and "ns0:" not in text
    diff = unified_diff(root, out, "vm.xml")
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    # only the root (it gains the catur namespace) and <vcpu> (it gains placement and cpuset) change
    assert len(removed) == 2 and removed[0].startswith("-<domain ") and removed[1] == "-  <vcpu>6</vcpu>", diff
    node = int(placement.cpu_nodes[0])
    assert f"<vcpupin vcpu=\"5\" cpuset=\"{host.node_cpuset(node)}\" />" in text


def test_tuned_domain_refused_unless_replace():
    host = parse_capabilities(INTEL)
    tuned = PLAIN.replace("<vcpu>6</vcpu>", "<vcpu cpuset='0-3'>6</vcpu>").replace(
        "<shares>2048</shares>", "<shares>2048</shares><vcpupin vcpu='0' cpuset='7'/>")
    spec = parse_domain(tuned, "vm.xml")
    with pytest.raises(CaturError, match=r"vm.xml: domain 'web7' already has NUMA tuning \(<vcpu cpuset>, <vcpupin>\); pass --replace"):
        check_untuned(spec, "vm.xml")
    _, _, placement, out = _placed(tuned, host, replace=True)
    pins = out.findall("./cputune/vcpupin")
    assert len(pins) == 6 and all(p.get("cpuset") == host.node_cpuset(int(placement.cpu_nodes[0])) for p in pins)
    assert out.find("./cputune/shares").text == "2048"


def test_existing_uneven_cells_are_resized_to_the_instances():
    host = parse_capabilities(AMD)
    text = PLAIN.replace("<os>", "<cpu mode='host-passthrough'><numa><cell id='0' cpus='0' memory='1' unit='GiB' memAccess='shared'/>"
                         "<cell id='1' cpus='1-5' memory='7' unit='GiB'/></numa></cpu><os>")
    _, _, placement, out = _placed(text, host)
    cells = out.findall("./cpu/numa/cell")
    assert [c.get("cpus") for c in cells] == ["0-2", "3-5"] and cells[0].get("memAccess") == "shared"
    assert [int(c.get("memory")) for c in cells] == [4 * 1024 * 1024] * 2
    assert out.find("cpu").get("mode") == "host-passthrough" and placement.num_instances == 2


def _host_strategy():
    """Uniform hosts of the presets, with Linux's interleaved CPU numbering (sibling threads
    numbered after all first threads)."""

    def build(preset: str) -> HostTopology:
        t: Topology = PRESETS[preset]
        half = t.node_cores // 2
        total = int(half.sum())
        cpus, start = [], 0
        for n in range(t.num_nodes):
            first = tuple(range(start, start + int(half[n])))
            cpus.append(first + tuple(c + total for c in first))
            start += int(half[n])
        return HostTopology(t, tuple(range(t.num_nodes)), tuple(cpus))

    return st.sampled_from(list(PRESETS)).map(build)


@settings(max_examples=150, deadline=None)
@given(host=_host_strategy(), data=st.data(), mode=st.sampled_from(["auto", "strict", "preferred", "restrictive"]),
       cells=st.booleans())
def test_written_tuning_matches_the_placement(host, data, mode, cells):
    t = host.topology
    n = t.num_nodes
    fill = data.draw(st.floats(0, 1.3))
    used_v = np.array([data.draw(st.integers(0, int(c * fill) + 1)) for c in t.node_cores], dtype=np.int64)
    used_m = np.array([data.draw(st.integers(0, int(m * min(fill, 1.0)))) for m in t.node_mem_mib], dtype=np.int64)
    vcpus = data.draw(st.integers(1, int(t.node_cores.max()) * 2))
    mem_kib = data.draw(st.integers(1024, int(t.node_mem_mib.max()) * 2 * 1024))
    guest = ""
    if cells and vcpus >= 2:
        guest = (f"<cpu><numa><cell id='0' cpus='0' memory='{mem_kib // 2}'/><cell id='1' cpus='1-{vcpus - 1}' "
                 f"memory='{mem_kib - mem_kib // 2}'/></numa></cpu>")
    text = f"<domain type='test'><name>v</name><memory>{mem_kib}</memory><vcpu>{vcpus}</vcpu><os><type>hvm</type></os>{guest}</domain>"
    root, spec, placement, out = _placed(text, host, used_v, used_m, memory_mode=mode)
    back = parse_domain(out)
    k = placement.num_instances
    # vCPUs: each pinned exactly once, onto its instance's node's CPUs only
    bounds = np.concatenate([[0], np.cumsum(placement.vcpus)])
    assert sorted(back.vcpupin) == list(range(vcpus))
    for i in range(k):
        node_cpus = set(host.cpus[int(placement.cpu_nodes[i])])
        for v in range(bounds[i], bounds[i + 1]):
            assert set(back.vcpupin[v]) == node_cpus
    assert set(back.vcpu_cpuset) == {c for node in placement.cpu_nodes for c in host.cpus[int(node)]}
    # memory policy follows the split
    policies = [back.memnodes[c.id] for c in back.cells] if back.cells else [(back.memory_mode, back.memory_nodeset)]
    assert len(policies) == k
    for i, (m, nodeset) in enumerate(policies):
        home, split = int(placement.cpu_nodes[i]), set(np.flatnonzero(placement.mem_mib[i]).tolist())
        if split == {home}:
            assert set(nodeset) == {home} and m == ("strict" if mode == "auto" else mode)
        elif mode in ("auto", "preferred"):
            assert (m, nodeset) == ("preferred", (home,))
        else:
            assert m == mode and set(nodeset) == split | {home}
    # guest cells partition the VM's vCPUs and memory
    if k > 1 or guest:
        assert [c.vcpus for c in back.cells] == [tuple(range(bounds[i], bounds[i + 1])) for i in range(k)]
        assert sum(c.mem_kib for c in back.cells) == mem_kib
    # read back: exactly the placement (Catur's record agrees with the tuning)
    usage = domain_usage(back, host)
    assert usage.rule == "recorded"
    assert usage.node_vcpus.tolist() == placement.node_vcpus(n).tolist()
    assert usage.node_mem_mib.tolist() == placement.node_mem_mib().tolist()
    # ... and without the record, the rule alone gives the same whenever nothing spilled
    metadata = out.find("metadata")
    out.remove(metadata)
    plain = domain_usage(parse_domain(out), host)
    assert plain.rule == "pinned" and plain.node_vcpus.tolist() == placement.node_vcpus(n).tolist()
    if all(set(np.flatnonzero(placement.mem_mib[i])) == {int(placement.cpu_nodes[i])} for i in range(k)):
        assert plain.node_mem_mib.tolist() == placement.node_mem_mib().tolist()


def test_record_ignored_when_tuning_was_changed_by_hand():
    host = parse_capabilities(INTEL)
    _, _, placement, out = _placed(PLAIN, host)
    other = 1 - int(placement.cpu_nodes[0])
    for pin in out.findall("./cputune/vcpupin"):
        pin.set("cpuset", host.node_cpuset(other))
    usage = domain_usage(parse_domain(out), host)
    assert usage.rule == "pinned" and usage.node_vcpus[other] == 6


def test_vm_request_from_cells():
    spec = parse_domain(PLAIN.replace("<os>", "<cpu><numa><cell id='0' cpus='0-2' memory='4' unit='GiB'/><cell id='1' cpus='3-5' memory='4' unit='GiB'/></numa></cpu><os>"))
    assert vm_request(spec) == VMRequest(6, 8192, vnuma=2)
    with pytest.raises(CaturError, match="2 guest NUMA cells but --vnuma 3"):
        vm_request(spec, vnuma=3)


def test_without_the_bindings_the_cli_says_how_to_get_them(monkeypatch, capsys, tmp_path):
    import sys

    from catur.cli import main

    monkeypatch.setitem(sys.modules, "libvirt", None)  # `import libvirt` now raises ImportError
    code = main(["libvirt", "topology", "--connect", "test:///default"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("catur: error: the libvirt Python bindings are not installed: pip install 'catur[libvirt]'")
    assert len(err.strip().splitlines()) == 1


@st.composite
def domains(draw):
    """Domain XML with any mix of pinning, memory policy and guest cells (on HOST4's CPUs and
    cells, plus a few the host lacks)."""
    vcpus = draw(st.integers(1, 12))
    mem_kib = draw(st.integers(1, 64 * 1024 * 1024))
    cpusets = st.sets(st.integers(0, 70), min_size=1, max_size=20).map(format_cpuset)
    nodesets = st.sets(st.integers(0, 5), min_size=1, max_size=4).map(format_cpuset)
    parts = []
    cpuset = draw(st.none() | cpusets)
    pins = draw(st.dictionaries(st.integers(0, vcpus - 1), cpusets, max_size=vcpus))
    parts.append("<cputune>" + "".join(f"<vcpupin vcpu='{v}' cpuset='{c}'/>" for v, c in pins.items()) + "</cputune>")
    k = draw(st.integers(0, min(vcpus, 3)))
    tune = ""
    if draw(st.booleans()):
        tune += f"<memory mode='{draw(st.sampled_from(['strict', 'preferred', 'interleave', 'restrictive']))}' nodeset='{draw(nodesets)}'/>"
    if k:
        bounds = sorted(draw(st.sets(st.integers(1, vcpus - 1), min_size=k - 1, max_size=k - 1))) if k > 1 else []
        edges = [0, *bounds, vcpus]
        sizes = [draw(st.integers(1, 4 * 1024 * 1024)) for _ in range(k)]
        parts.append("<cpu><numa>" + "".join(
            f"<cell id='{i}' cpus='{edges[i]}-{edges[i + 1] - 1}' memory='{sizes[i]}'/>" for i in range(k)) + "</numa></cpu>")
        mem_kib = sum(sizes)
        for i in range(k):
            if draw(st.booleans()):
                tune += f"<memnode cellid='{i}' mode='{draw(st.sampled_from(['strict', 'preferred', 'interleave']))}' nodeset='{draw(nodesets)}'/>"
    if tune:
        parts.append(f"<numatune>{tune}</numatune>")
    vcpu = f"<vcpu cpuset='{cpuset}'>{vcpus}</vcpu>" if cpuset else f"<vcpu>{vcpus}</vcpu>"
    return f"<domain><name>g</name><memory>{mem_kib}</memory>{vcpu}{''.join(parts)}</domain>"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(domains())
def test_usage_rule_conserves_vcpus_and_memory(text):
    spec = parse_domain(text)
    usage = domain_usage(spec, HOST4)
    assert usage.node_vcpus.sum() == spec.vcpus and usage.node_mem_mib.sum() == spec.mem_mib
    assert (usage.node_vcpus >= 0).all() and (usage.node_mem_mib >= 0).all()
    assert usage.rule in ("pinned", "partly pinned", "unpinned")


def test_run_script_installs_the_libvirt_extra_when_it_can_and_skips_it_otherwise(tmp_path):
    """./run's setup_libvirt: without root or apt it only says how to get the extra (and ./run
    goes on); as root with apt it installs libvirt's development files, once."""
    import re
    import subprocess

    script = (Path(__file__).parent.parent / "run").read_text()
    function = re.search(r"^setup_libvirt\(\) \{.*?^\}", script, re.S | re.M).group(0)
    venv, fakes = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    fakes.mkdir()
    for name, body in {"python": "exit 1", "pkg-config": "exit 1", "apt-get": f'echo "$*" >> {tmp_path}/apt.log',
                       "timeout": 'shift; exec "$@"'}.items():
        target = (venv / "bin" / name) if name == "python" else (fakes / name)
        target.write_text(f"#!/bin/sh\n{body}\n")
        target.chmod(0o755)

    def setup(uid: int) -> subprocess.CompletedProcess:
        repo = Path(__file__).parent.parent  # ./run's REPO: where pyproject.toml is
        program = f'set -euo pipefail\nREPO={repo}\nVENV={venv}\nid() {{ echo {uid}; }}\n{function}\nsetup_libvirt\necho done'
        return subprocess.run(["bash", "-c", program], cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                              env={**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"}, timeout=60)

    user = setup(1000)
    assert user.returncode == 0 and user.stdout.strip() == "done"
    assert "the libvirt extra is not installed" in user.stderr and "apt-get install libvirt-dev" in user.stderr
    assert not (tmp_path / "apt.log").exists(), "no apt-get without root"
    (venv / ".catur-libvirt-apt-tried").unlink()
    root = setup(0)
    assert root.returncode == 0 and "installing libvirt's development files" in root.stderr
    assert "libvirt-dev" in (tmp_path / "apt.log").read_text()
    again = setup(0)
    assert again.returncode == 0 and "installing libvirt's development files" not in again.stderr, "apt is tried once"
