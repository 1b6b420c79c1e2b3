"""Issue 31 against a real libvirt (the test driver, no daemon): what an operator runs.

* a domain that cannot fit exits 3 with one line, and nothing is written or defined;
* ``place --define`` in a row does not double-book (defined domains count by default);
* a page-backed domain on a host with 1 GiB pools: whole-page guest cells, schema-valid;
* ``place --domain NAME``: ``--dry-run`` (a diff, nothing changed), ``--config`` (the
  persistent XML rewritten, counted as Catur's afterwards), ``--live`` (the calls virsh makes);
* ``place --json``;
* refusals through the CLI (domain type, ``current``, numad, asymmetric SLIT), the split-core
  warning;
* the departure follower: only domains Catur placed, once per lifetime, a restart is no
  departure.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

if os.environ.get("CATUR_REQUIRE_LIBVIRT"):  # .ci/run sets it: CI must run these, never skip them
    import libvirt  # noqa: F401
    assert shutil.which("virt-xml-validate") and shutil.which("xmllint"), "CI needs libvirt-clients and libxml2-utils"
libvirt = pytest.importorskip("libvirt", reason="the libvirt bindings are not installed (pip install 'catur[libvirt]')")

from catur.hypervisor.capabilities import parse_capabilities  # noqa: E402
from catur.hypervisor.domain import parse_domain  # noqa: E402
from catur.hypervisor.libvirt_host import DepartureFollower, apply_live, open_connection  # noqa: E402
from catur.state import Placement  # noqa: E402
from test_libvirt_agent import NEW_VM, follower_running, keep_default, run_cli, validate, wait_for  # noqa: E402

DEFAULT = ["-c", "test:///default"]
GIB_PAGE = 1 << 20


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    return path


def names(conn) -> set[str]:
    return {d.name() for d in conn.listAllDomains()}


def test_a_domain_that_cannot_fit_exits_3_and_defines_nothing(capsys, tmp_path):
    vm = write(tmp_path, "big", NEW_VM.format(name="big", vcpus=4, mem=64 * 1024))
    with keep_default() as conn:
        code, out, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process", "--define")
        assert code == 3 and out == ""
        assert err.strip().splitlines() == [
            f"catur: error: {vm}: domain 'big' does not fit: memory: needs 65536 MiB, only 4096 MiB free "
            "(cell 0: 1024, cell 1: 3072); nothing written"
        ], "the running 'test' domain holds 2048 MiB (its currentMemory), 1024 on each cell"
        assert "big" not in names(conn)
        code, out, _ = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process", "--json")
        verdict = json.loads(out)["fit"]
        assert code == 3 and verdict["fits"] is False and verdict["free"] == [1024, 3072] and verdict["needed"] == 65536


def test_define_in_a_row_does_not_double_book(capsys, tmp_path):
    """Three 6-vCPU domains defined one after the other: each sees the ones before."""
    cells = []
    with keep_default() as conn:
        for i in range(3):
            vm = write(tmp_path, f"row{i}", NEW_VM.format(name=f"row{i}", vcpus=6, mem=256))
            code, out, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process", "--define", "--json")
            assert code == 0, err
            cells.append(json.loads(out)["cells"])
        code, out, _ = run_cli(capsys, "libvirt", "usage", *DEFAULT, "--json")
        used = [n["used_vcpus"] for n in json.loads(out)["nodes"]]
        # 'test' (2 unpinned) + 18: before the fix all three landed on cell 0 ([19, 1]).
        assert cells[0] != cells[1] and sum(used) == 20 and max(used) <= 13, (cells, used)
        # --running-only is the old view: the three defined domains are not counted.
        code, out, _ = run_cli(capsys, "libvirt", "usage", *DEFAULT, "--json", "--running-only")
        assert sum(n["used_vcpus"] for n in json.loads(out)["nodes"]) == 2


def hugepage_caps(conn, pools: dict[int, tuple[int, int]]) -> str:
    """test:///default's capabilities with 1 GiB pools of ``pools[cell]`` pages."""
    text = conn.getCapabilities()
    for cell, (pages, _) in pools.items():
        marker = f"<cell id='{cell}'>"
        head, tail = text.split(marker, 1)
        tail = tail.replace("<pages unit='KiB' size='1048576'>0</pages>", f"<pages unit='KiB' size='1048576'>{pages}</pages>", 1)
        text = head + marker + tail
    return text


def test_page_backed_domain_gets_whole_page_cells_from_the_pool(capsys, tmp_path):
    backing = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>\n  <vcpu>"
    with keep_default() as conn:
        caps = tmp_path / "caps.xml"
        caps.write_text(hugepage_caps(conn, {0: (1, 0), 1: (2, 0)}))
        vm = write(tmp_path, "huge", NEW_VM.format(name="huge", vcpus=4, mem=3072).replace("<vcpu>", backing))
        code, out, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--capabilities", str(caps), "--domain-xml", str(vm),
                                 "--in-process", "--vnuma", "2")
        assert code == 0, err
        validate(write(tmp_path, "huge-out", out))
        spec = parse_domain(out)
        assert sorted(c.mem_kib for c in spec.cells) == [GIB_PAGE, 2 * GIB_PAGE], "not 1.5 GiB each: whole pages"
        assert sorted((inst.cpu_cell, inst.mem_mib) for inst in spec.recorded) == [(0, ((0, 1024),)), (1, ((1, 2048),))]
        # Four pages wanted, three in the pools: refused in pages, naming the cells.
        vm = write(tmp_path, "huge4", NEW_VM.format(name="huge4", vcpus=2, mem=4096).replace("<vcpu>", backing))
        code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--capabilities", str(caps), "--domain-xml", str(vm), "--in-process")
        assert code == 3 and "huge pages: needs 4 1 GiB pages, only 3 1 GiB pages free (cell 0: 1, cell 1: 2)" in err


def test_tune_an_existing_domain(capsys, tmp_path):
    with keep_default() as conn:
        dom = conn.defineXML(NEW_VM.format(name="old1", vcpus=4, mem=512))
        before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        code, diff, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "old1", "--in-process", "--dry-run")
        assert code == 0 and diff.startswith("--- domain old1 (before)") and "+    <vcpupin vcpu=\"0\"" in diff
        assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before, "--dry-run changes nothing"
        code, out, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "old1", "--in-process", "--config", "--json")
        assert code == 0 and "defined domain old1" in err
        summary = json.loads(out)
        assert summary["written"] == {"defined": True, "live": False} and summary["fit"]["fits"] is True
        assert summary["policy"] == "greedy" and sum(i["vcpus"] for i in summary["instances"]) == 4
        tuned = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert set(tuned.vcpupin) == {0, 1, 2, 3} and tuned.recorded
        validate(write(tmp_path, "old1", dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        code, out, _ = run_cli(capsys, "libvirt", "usage", *DEFAULT, "--json")
        assert any(d["name"] == "old1" and d["rule"] == "recorded" for d in json.loads(out)["domains"])
        # Tuned now: a second run is refused without --replace.
        code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "old1", "--in-process", "--config")
        assert code == 2 and "already has NUMA tuning" in err
        # --live on the test driver: it has no live vCPU pinning; one clear line.
        dom.create()
        code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "old1", "--in-process", "--live", "--replace")
        assert code == 2 and err.strip().splitlines()[-1].startswith("catur: error: libvirt refused to tune running domain 'old1'")
        code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "nosuch", "--in-process")
        assert code == 2 and "no domain 'nosuch'" in err
        code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain", "old1", "--in-process", "--define")
        assert code == 2 and "--define is for a new domain" in err


class FakeDomain:
    """What apply_live calls, recorded (libvirt's test driver refuses live pinning)."""

    def __init__(self):
        self.pins, self.numa, self.metadata = {}, None, None

    def isActive(self):
        return True

    def name(self):
        return "fake"

    def pinVcpuFlags(self, vcpu, cpumap, flags):
        assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
        self.pins[vcpu] = [i for i, on in enumerate(cpumap) if on]

    def setNumaParameters(self, params, flags):
        self.numa = (params, flags)

    def setMetadata(self, kind, xml, prefix, uri, flags):
        self.metadata = (prefix, uri, xml)


def test_live_tuning_makes_the_calls_virsh_makes():
    from catur.hypervisor.tuning import write_placement
    from catur.hypervisor.domain import read_xml
    import numpy as np

    host = parse_capabilities((Path(__file__).parent / "data" / "libvirt" / "caps-intel-2s.xml").read_text())
    text = NEW_VM.format(name="live", vcpus=3, mem=3072)
    placement = Placement(np.array([1, 0]), np.array([2, 1]), np.array([[0, 2048], [512, 512]]), "greedy")
    tuned = write_placement(read_xml(text, "live"), parse_domain(text), host, placement)
    dom = FakeDomain()
    apply_live(dom, host, placement, tuned)
    assert dom.pins == {0: list(host.cpus[1]), 1: list(host.cpus[1]), 2: list(host.cpus[0])}
    assert dom.numa == ({libvirt.VIR_DOMAIN_NUMA_NODESET: "0-1"}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert dom.metadata[0] == "catur" and "instance" in dom.metadata[2]


@pytest.mark.parametrize("change,message", [
    (("<domain type='test'>", "<domain type='lxc'>"), "domain type 'lxc' is not supported"),
    (("<vcpu>", "<vcpu current='9'>"), "<vcpu current='9'> must be a whole number in 1..8"),
    (("<vcpu>", "<vcpu placement='auto'>"), "placement='auto' (numad chooses its nodes)"),
])
def test_refusals_through_the_cli(change, message, capsys, tmp_path):
    vm = write(tmp_path, "r", NEW_VM.format(name="r", vcpus=8, mem=256).replace(*change))
    code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_asymmetric_capabilities_name_the_cells(capsys, tmp_path):
    with keep_default() as conn:
        text = conn.getCapabilities()  # it lists no <distances>: give cell 0 a 12 and cell 1 a 21
        for row in ("<sibling id='0' value='10'/><sibling id='1' value='12'/>", "<sibling id='0' value='21'/><sibling id='1' value='10'/>"):
            head, tail = text.split("<cpus num='8'>", 1)
            text = f"{head}<distances>{row}</distances><cpus  num='8'>{tail}"
    caps = write(tmp_path, "caps", text)
    code, _, err = run_cli(capsys, "libvirt", "topology", *DEFAULT, "--capabilities", str(caps))
    assert code == 2 and "asymmetric distances between cell 0 and cell 1: 0->1 is 12, 1->0 is 21" in err


def test_split_guest_topology_warns(capsys, tmp_path):
    vm = write(tmp_path, "t", NEW_VM.format(name="t", vcpus=6, mem=600).replace(
        "<os>", "<cpu><topology sockets='1' dies='1' cores='3' threads='2'/></cpu>\n  <os>"))
    code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process", "--vnuma", "2")
    assert code == 0 and "puts the threads of 1 core(s) (first at vCPU 2) in different guest NUMA cells" in err


def test_departures_only_for_catur_domains_once_per_lifetime(capsys, tmp_path):
    # Only the two domains of this test are judged: the test driver's event loop is shared by
    # the whole process, so events of domains that earlier tests removed may still arrive, and
    # a domain gone before its XML is read is reported (it may have been Catur's; the
    # follower's documented trade-off).
    life = "11111111-2222-3333-4444-555555555555"
    departed: list[str] = []
    with keep_default() as conn:
        follower = DepartureFollower("test:///default", lambda vm_id, t: departed.append(vm_id), tick_s=0.05)
        with follower_running(follower):
            wait_for(lambda: follower.connection is not None)
            vm = write(tmp_path, "life", NEW_VM.format(name="life", vcpus=1, mem=128).replace(
                "<name>life</name>", f"<name>life</name><uuid>{life}</uuid>"))
            code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process", "--define")
            assert code == 0, err
            dom = conn.lookupByName("life")
            for _ in range(2):  # two restarts: not departures
                dom.create()
                dom.destroy()
            other = conn.defineXML(NEW_VM.format(name="other", vcpus=1, mem=128))  # not placed by Catur
            other_id = other.UUIDString()
            mine = lambda: [d for d in departed if d in (life, other_id)]  # noqa: E731
            # The follower reads its XML first (one gone before that is reported, as maybe Catur's).
            wait_for(lambda: other_id in follower.read)
            other.undefine()
            time.sleep(0.3)
            assert mine() == []
            dom.undefine()
            wait_for(lambda: mine() == [life])
            # Defined anew (a new lifetime) and undefined again: one more.
            conn.defineXML(parse_domain_text(tmp_path, capsys, vm)).undefine()
            wait_for(lambda: len(mine()) == 2)
            time.sleep(0.3)
    assert mine() == [life] * 2 and follower.failures == 0


def parse_domain_text(tmp_path, capsys, vm) -> str:
    code, out, _ = run_cli(capsys, "libvirt", "place", *DEFAULT, "--domain-xml", str(vm), "--in-process")
    assert code == 0
    return out


def test_transient_domain_departs_when_it_stops():
    departed: list[str] = []
    with keep_default() as conn:
        follower = DepartureFollower("test:///default", lambda vm_id, t: departed.append(vm_id), tick_s=0.05,
                                     vm_ids=["22222222-2222-3333-4444-555555555555"])
        with follower_running(follower):
            wait_for(lambda: follower.connection is not None)
            dom = conn.createXML(NEW_VM.format(name="tr", vcpus=1, mem=128).replace(
                "<name>tr</name>", "<name>tr</name><uuid>22222222-2222-3333-4444-555555555555</uuid>"), 0)
            dom.destroy()
            wait_for(lambda: departed == ["22222222-2222-3333-4444-555555555555"])


def test_through_the_service_pages_and_fit(capsys, tmp_path):
    """--target: a page-backed domain is asked in pages (whole-page cells come back), and a
    domain that does not fit exits 3 whatever the service answered."""
    from catur.service.server import Service, create_server
    from catur.shield import ShieldConfig

    service = Service(model=None, shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service, max_workers=2)
    backing = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>\n  <vcpu>"
    try:
        with keep_default() as conn:
            caps = tmp_path / "caps.xml"
            caps.write_text(hugepage_caps(conn, {0: (2, 0), 1: (2, 0)}))
            target = ["--target", f"127.0.0.1:{port}", "--host-id", "h1", "--capabilities", str(caps)]
            vm = write(tmp_path, "svc-huge", NEW_VM.format(name="svc-huge", vcpus=4, mem=3072).replace("<vcpu>", backing))
            code, out, err = run_cli(capsys, "libvirt", "place", *DEFAULT, *target, "--domain-xml", str(vm), "--json")
            assert code == 0, err
            summary = json.loads(out)
            assert summary["backing"] == "1 GiB pages" and summary["fit"]["unit"] == "1 GiB pages"
            assert all(mib % 1024 == 0 for i in summary["instances"] for mib in i["mem_mib"].values())
            big = write(tmp_path, "svc-big", NEW_VM.format(name="svc-big", vcpus=2, mem=32 * 1024))
            code, _, err = run_cli(capsys, "libvirt", "place", *DEFAULT, *target, "--domain-xml", str(big), "--define")
            assert code == 3 and "does not fit" in err and "svc-big" not in names(conn)
    finally:
        service.shutdown(server, grace=0.5)
