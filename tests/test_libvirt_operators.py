"""Issue 31, the parts that need no libvirt: what an operator's domains and hosts really hold.

* refused: unsupported domain types, ``<vcpu current>`` above the vCPU count, numad's
  ``placement='auto'`` without ``--replace``, an asymmetric SLIT (naming the cells);
* kept: real distances when one cell omits ``<distances>``;
* counted: memory DIMMs, ``<currentMemory>``, unpinned vCPUs spread over the host (not all
  remainders on node 0);
* huge pages: pools read from the capabilities, not capacity for ordinary memory; page-backed
  guests placed in whole pages against their pool;
* the fit rule (:mod:`catur.fit`): a VM beyond free memory is refused with one line naming
  what is short and where; hypothesis checks that a fitting verdict never overfills a node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catur.decision import Decider
from catur.errors import CaturError
from catur.fit import fit_placement, fit_request, free_memory
from catur.hypervisor.capabilities import parse_capabilities
from catur.hypervisor.capacity import ReportedFree, placement_view
from catur.hypervisor.domain import domain_usage, host_usage, parse_domain
from catur.hypervisor.tuning import check_untuned, vm_request, write_placement

DATA = Path(__file__).parent / "data" / "libvirt"
INTEL = (DATA / "caps-intel-2s.xml").read_text()


def caps(cells: list[tuple[int, int, dict[int, int], str]]) -> str:
    """A capabilities document: one ``(cpus, MiB, {page KiB: pages}, distances XML)`` per cell."""
    out, cpu = [], 0
    for i, (ncpu, mib, pages, dist) in enumerate(cells):
        cpus = "".join(f"<cpu id='{cpu + c}' socket_id='{i}' core_id='{c}' siblings='{cpu + c}'/>" for c in range(ncpu))
        cpu += ncpu
        page_xml = "<pages unit='KiB' size='4'>0</pages>" + "".join(
            f"<pages unit='KiB' size='{size}'>{n}</pages>" for size, n in pages.items())
        out.append(f"<cell id='{i}'><memory unit='KiB'>{mib * 1024}</memory>{page_xml}{dist}"
                   f"<cpus num='{ncpu}'>{cpus}</cpus></cell>")
    return f"<capabilities><host><topology><cells num='{len(cells)}'>{''.join(out)}</cells></topology></host></capabilities>"


def dist(*values) -> str:
    return "<distances>" + "".join(f"<sibling id='{j}' value='{v}'/>" for j, v in enumerate(values)) + "</distances>"


def domain(name="vm", vcpus=2, mem_mib=1024, extra="", dtype="kvm", vcpu_attrs="", devices="", cpu=""):
    return (f"<domain type='{dtype}'><name>{name}</name><memory unit='MiB'>{mem_mib}</memory>"
            f"<vcpu{vcpu_attrs}>{vcpus}</vcpu>{extra}<os><type>hvm</type></os>{cpu}<devices>{devices}</devices></domain>")


# --- refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["lxc", "xen", "bogus"])
def test_unsupported_domain_types_are_refused(dtype):
    with pytest.raises(CaturError, match=f"domain type '{dtype}' is not supported; Catur writes NUMA tuning for kvm, qemu"):
        parse_domain(domain(dtype=dtype))


def test_current_above_the_vcpu_count_is_refused():
    with pytest.raises(CaturError, match=r"<vcpu current='9'> must be a whole number in 1\.\.8"):
        parse_domain(domain(vcpus=8, vcpu_attrs=" current='9'"))
    assert parse_domain(domain(vcpus=8, vcpu_attrs=" current='4'")).vcpus == 8


@pytest.mark.parametrize("where", ["vcpu", "numatune"])
def test_numad_placement_needs_replace(where):
    if where == "vcpu":
        spec = parse_domain(domain(vcpu_attrs=" placement='auto'"))
    else:
        spec = parse_domain(domain(extra="<numatune><memory mode='strict' placement='auto'/></numatune>"))
    with pytest.raises(CaturError, match="placement='auto'"):
        check_untuned(spec)


def test_asymmetric_distances_are_refused_naming_the_cells():
    text = caps([(2, 1024, {}, dist(10, 12, 21)), (2, 1024, {}, dist(16, 10, 21)), (2, 1024, {}, dist(21, 21, 10))])
    with pytest.raises(CaturError, match="asymmetric distances between cell 0 and cell 1: 0->1 is 12, 1->0 is 16"):
        parse_capabilities(text)


def test_one_cell_without_distances_keeps_the_real_values():
    warnings = []
    text = caps([(2, 1024, {}, dist(10, 13, 31)), (2, 1024, {}, ""), (2, 1024, {}, dist(31, 17, 10))])
    host = parse_capabilities(text, warn=warnings.append)
    # Row 1 comes from column 1 of the others (13 and 17); nothing is replaced by 10/12/21.
    assert host.topology.distance.tolist() == [[10, 13, 31], [13, 10, 17], [31, 17, 10]]
    assert len(warnings) == 1 and "cell(s) 1 list no (or partial) <distances>" in warnings[0]


def test_guest_topology_split_across_cells_is_detected():
    cpu = ("<cpu><topology sockets='1' cores='3' threads='2'/><numa>"
           "<cell id='0' cpus='0-2' memory='1' unit='GiB'/><cell id='1' cpus='3-5' memory='1' unit='GiB'/></numa></cpu>")
    spec = parse_domain(domain(vcpus=6, cpu=cpu))
    assert spec.split_cores() == [(2, 2)], "vCPUs 2 and 3 are one core's threads, in cells 0 and 1"
    aligned = cpu.replace("cpus='0-2'", "cpus='0-3'").replace("cpus='3-5'", "cpus='4-5'")
    assert parse_domain(domain(vcpus=6, cpu=aligned)).split_cores() == []


# --- counted ---------------------------------------------------------------------------------------


def test_memory_dimms_are_counted():
    cpu = "<cpu><numa><cell id='0' cpus='0-1' memory='2' unit='GiB'/><cell id='1' cpus='2-3' memory='2' unit='GiB'/></numa></cpu>"
    dimm = "<memory model='dimm'><target><size unit='GiB'>1</size><node>1</node></target></memory>"
    spec = parse_domain(domain(vcpus=4, cpu=cpu, devices=dimm * 2))
    assert spec.mem_mib == 6 * 1024 and [c.dimm_kib for c in spec.cells] == [0, 2 << 20]
    host = parse_capabilities(caps([(4, 16384, {}, ""), (4, 16384, {}, "")]))
    pinned = cpu.replace("<cpu>", "<cpu>")
    usage = domain_usage(parse_domain(domain(vcpus=4, cpu=pinned, devices=dimm * 2, extra=(
        "<cputune><vcpupin vcpu='0' cpuset='0-3'/><vcpupin vcpu='1' cpuset='0-3'/><vcpupin vcpu='2' cpuset='4-7'/>"
        "<vcpupin vcpu='3' cpuset='4-7'/></cputune>"))), host)
    assert usage.node_mem_mib.tolist() == [2048, 4096], "cell 1's DIMMs count where cell 1 runs"


def test_current_memory_is_what_a_running_domain_holds():
    host = parse_capabilities(caps([(4, 4096, {}, ""), (4, 4096, {}, "")]))
    spec = parse_domain(domain(mem_mib=8192, extra="<currentMemory unit='MiB'>2048</currentMemory>"))
    assert spec.mem_mib == 8192 and domain_usage(spec, host).node_mem_mib.sum() == 2048


def test_unpinned_leftovers_spread_over_the_host():
    """Six 1-vCPU unpinned domains on four nodes: [2, 2, 1, 1], not [6, 0, 0, 0]."""
    host = parse_capabilities(caps([(4, 4096, {}, "")] * 4))
    usages = [domain_usage(parse_domain(domain(name=f"u{i}", vcpus=1, mem_mib=256)), host) for i in range(6)]
    total = host_usage(host, usages)
    assert total.used_vcpus.tolist() == [2, 2, 1, 1]
    assert sum(d.node_vcpus for d in total.domains).tolist() == [2, 2, 1, 1], "each domain lists where it was counted"
    # Unpinned vCPUs homed on some nodes (their numatune) stay there.
    homed = [domain_usage(parse_domain(domain(name=f"h{i}", vcpus=1, extra=(
        "<numatune><memory mode='strict' nodeset='2-3'/></numatune>"))), host) for i in range(4)]
    assert host_usage(host, homed).used_vcpus.tolist() == [0, 0, 2, 2]


# --- huge pages ------------------------------------------------------------------------------------

GIB_PAGE = 1 << 20  # KiB


def test_hugepage_pools_are_not_ordinary_memory():
    """Cell 0: 64 GiB of which 24 GiB are 1 GiB pages; a 48 GiB ordinary VM must not get
    strict memory on cell 0 alone (only 40 GiB of ordinary memory there)."""
    host = parse_capabilities(caps([(8, 65536, {GIB_PAGE: 24}, ""), (8, 65536, {}, "")]))
    assert host.hugepages == {GIB_PAGE: (24, 0)} and host.hugepage_mib().tolist() == [24576, 0]
    spec = parse_domain(domain(vcpus=4, mem_mib=48 * 1024))
    usage = host_usage(host, [])
    view = placement_view(host, usage, spec, vm_request(spec))
    assert view.free.tolist() == [40 * 1024, 64 * 1024]
    decision = Decider().decide(view.topology, view.used_vcpus, view.used_mem, view.request)
    verdict = view.fit(decision.placement)
    assert verdict.fits and (decision.placement.node_mem_mib() <= view.free).all()
    # Pinned to cell 0 by a 40 GiB-cell-sized wish would spill, never overfill cell 0.
    assert decision.placement.node_mem_mib()[0] <= 40 * 1024


def test_page_backed_guest_cells_are_whole_pages_from_the_pool():
    host = parse_capabilities(caps([(8, 65536, {GIB_PAGE: 4}, ""), (8, 65536, {GIB_PAGE: 8}, "")]))
    backing = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>"
    spec = parse_domain(domain(vcpus=4, mem_mib=3 * 1024, extra=backing))
    assert spec.hugepage_kib == GIB_PAGE
    view = placement_view(host, host_usage(host, []), spec, vm_request(spec, vnuma=2))
    assert view.unit == "1 GiB pages" and view.free.tolist() == [4, 8] and view.request.mem_mib == 3
    decision = Decider().decide(view.topology, view.used_vcpus, view.used_mem, view.request)
    placed = view.to_mib(decision.placement)
    assert sorted(placed.mem_mib.sum(axis=1).tolist()) == [1024, 2048], "1.5 GiB guest cells are not whole 1 GiB pages"
    assert (placed.mem_mib % 1024 == 0).all()
    root = parse_domain(domain(vcpus=4, mem_mib=3 * 1024, extra=backing))
    from catur.hypervisor.domain import read_xml

    tuned = parse_domain(write_placement(read_xml(domain(vcpus=4, mem_mib=3 * 1024, extra=backing), "vm"), root, host, placed))
    assert sorted(c.mem_kib for c in tuned.cells) == [GIB_PAGE, 2 * GIB_PAGE]
    # A pool that is too small: the verdict says so, in pages, naming the cells.
    big = parse_domain(domain(vcpus=4, mem_mib=16 * 1024, extra=backing))
    view = placement_view(host, host_usage(host, []), big, vm_request(big))
    d = Decider().decide(view.topology, view.used_vcpus, view.used_mem, view.request)
    verdict = view.fit(d.placement)
    assert not verdict.fits and verdict.short == "huge pages: needs 16 1 GiB pages, only 12 1 GiB pages free (cell 0: 4, cell 1: 8)"


def test_page_backed_memory_must_be_whole_pages():
    host = parse_capabilities(caps([(8, 65536, {GIB_PAGE: 4}, "")]))
    backing = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>"
    spec = parse_domain(domain(mem_mib=1536, extra=backing))
    with pytest.raises(CaturError, match="not a whole number of 1 GiB pages"):
        placement_view(host, host_usage(host, []), spec, vm_request(spec))


def test_reported_free_caps_the_capacity():
    host = parse_capabilities(caps([(4, 4096, {}, ""), (4, 4096, {}, "")]))
    spec = parse_domain(domain(mem_mib=1024))
    view = placement_view(host, host_usage(host, []), spec, vm_request(spec), ReportedFree(mem_mib=(1000, 4096)))
    assert view.free.tolist() == [1000, 4096]


# --- the fit rule ----------------------------------------------------------------------------------


def test_fit_messages_name_what_is_short_and_where():
    v = fit_request(65536, [2048, 4096], names=["cell 0", "cell 1"])
    assert not v.fits and v.short == "memory: needs 65536 MiB, only 6144 MiB free (cell 0: 2048, cell 1: 4096)"
    v = fit_placement([3000, 0], [2048, 4096], names=["cell 0", "cell 1"])
    assert not v.fits and v.short == "memory: cell 0 would get 3000 MiB but has 2048 MiB free"
    assert fit_placement([2048, 10], [2048, 4096]).fits
    with pytest.raises(CaturError, match="free memory has 1 values; the host has 2 nodes"):
        free_memory([1, 2], [0, 0], [5])


@settings(max_examples=150, deadline=None)
@given(
    nodes=st.integers(1, 4), data=st.data(),
)
def test_a_fitting_verdict_never_overfills_a_node(nodes, data):
    """Whatever the host state, the greedy placement judged to fit puts at most each node's
    free memory there; and a request within the total free memory is always judged to fit
    (Catur spills memory over nodes before it overcommits one)."""
    host = parse_capabilities(caps([(4, data.draw(st.integers(512, 8192)), {}, "")] * nodes))
    used = np.array([data.draw(st.integers(0, int(m))) for m in host.topology.node_mem_mib])
    free = free_memory(host.topology.node_mem_mib, used)
    mem = data.draw(st.integers(1, int(host.topology.node_mem_mib.sum())))
    spec = parse_domain(domain(vcpus=data.draw(st.integers(1, 8)), mem_mib=mem))
    d = Decider().decide(host.topology, np.zeros(nodes, np.int64), used, vm_request(spec))
    verdict = fit_placement(d.placement.node_mem_mib(), free)
    assert verdict.fits == (mem <= free.sum())
    if verdict.fits:
        assert (d.placement.node_mem_mib() <= free).all()


@settings(max_examples=100, deadline=None)
@given(nodes=st.integers(1, 6), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=12))
def test_unpinned_spread_is_near_even_and_adds_up(nodes, sizes):
    """Any mix of unpinned domains homed on every node: the host's count differs by at most one
    vCPU between nodes, each domain keeps its vCPU total, and the domains add up to the host."""
    host = parse_capabilities(caps([(4, 4096, {}, "")] * nodes))
    usages = [domain_usage(parse_domain(domain(name=f"d{i}", vcpus=v, mem_mib=64)), host) for i, v in enumerate(sizes)]
    total = host_usage(host, usages)
    assert total.used_vcpus.max() - total.used_vcpus.min() <= 1 and total.used_vcpus.sum() == sum(sizes)
    assert [int(d.node_vcpus.sum()) for d in total.domains] == sizes
    assert (sum(d.node_vcpus for d in total.domains) == total.used_vcpus).all()
