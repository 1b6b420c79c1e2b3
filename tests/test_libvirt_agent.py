"""``catur libvirt`` against a real libvirt, through its test driver (no daemon needed).

Two hosts: ``test:///default`` (2 nodes of 8 CPUs, 2048 and 4096 MiB) and
tests/data/libvirt/node-2s4n.xml, a 2-socket, 4-node host with pinned running domains (the test
driver reports no NUMA cells for a host read from a file, so it is read through node info with
``--nodes-per-socket 2``). Shown here:

* topology and usage are read correctly (the CLI's JSON);
* ``place`` output passes ``virt-xml-validate`` (domain schema) and defines; every pinned CPU
  belongs to the chosen node; memory nodes match the split; round trip: usage after the
  definition equals usage before plus the placement; every ``--memory-mode`` of a spilling
  wide VM validates and defines;
* bad input (malformed XML, an already tuned domain, an unreachable URI) is one line, exit 2;
* ``--target``: the service is asked (and records the arrival); the departure follower sends
  ``Depart`` when the domain is undefined, so the collected trace has the VM's lifetime;
* the follower reconnects when libvirt goes away, and ``catur libvirt events`` stops cleanly
  on SIGTERM.

Skipped, with the reason, where the libvirt bindings (``catur[libvirt]``) or virt-xml-validate
are missing; ``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CATUR_REQUIRE_LIBVIRT"):  # .ci/run sets it: CI must run these, never skip them
    import libvirt  # noqa: F401
    assert shutil.which("virt-xml-validate") and shutil.which("xmllint"), "CI needs libvirt-clients and libxml2-utils"
libvirt = pytest.importorskip("libvirt", reason="the libvirt bindings are not installed (pip install 'catur[libvirt]')")

from catur.cli import main  # noqa: E402
from catur.decision import DeciderSpec  # noqa: E402
from catur.hypervisor.domain import parse_domain, read_xml  # noqa: E402
from catur.hypervisor.libvirt_host import DepartureFollower, define, open_connection, read_host, read_usage  # noqa: E402
from catur.hypervisor.tuning import to_text, vm_request, write_placement  # noqa: E402
from catur.shield import ShieldConfig  # noqa: E402

DATA = Path(__file__).parent / "data" / "libvirt"
NODE_URI = f"test://{(DATA / 'node-2s4n.xml').resolve()}"
HOST4 = ["--connect", NODE_URI, "--nodes-per-socket", "2"]

NEW_VM = """<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type>hvm</type></os>
  <devices><disk type='file' device='disk'><source file='/guest/{name}.img'/><target dev='vda' bus='virtio'/></disk></devices>
</domain>
"""


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def keep_default():
    """test:///default keeps its state while a connection to it is open: hold one."""
    conn = open_connection("test:///default")
    try:
        yield conn
    finally:
        for dom in conn.listAllDomains():
            if dom.name() != "test":
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
        conn.close()


def validate(path: Path) -> None:
    tool = shutil.which("virt-xml-validate")
    if tool is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate (libvirt-clients) or xmllint (libxml2-utils) is not installed")
    proc = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- topology and usage --------------------------------------------------------------------------


def test_topology_of_the_default_test_host(capsys):
    code, out, _ = run_cli(capsys, "libvirt", "topology", "--connect", "test:///default", "--json")
    assert code == 0
    topo = json.loads(out)
    assert [n["cores"] for n in topo["nodes"]] == [8, 8]
    assert [n["mem_gib"] * 1024 for n in topo["nodes"]] == [2048, 4096]
    assert topo["libvirt"]["cpus"] == ["0-7", "8-15"] and topo["distances"] == [[10, 21], [21, 10]]


def test_topology_of_the_two_socket_four_node_host(capsys, tmp_path):
    saved = tmp_path / "host.yaml"
    code, out, err = run_cli(capsys, "libvirt", "topology", *HOST4, "--json", "--save", str(saved))
    assert code == 0 and "no NUMA cells" in err
    topo = json.loads(out)
    assert [(n["cores"], n["mem_gib"], n["socket"]) for n in topo["nodes"]] == [(16, 16.0, 0), (16, 16.0, 0), (16, 16.0, 1), (16, 16.0, 1)]
    assert topo["libvirt"] == {"source": "nodeinfo", "cells": [0, 1, 2, 3], "cpus": ["0-15", "16-31", "32-47", "48-63"]}
    assert topo["distances"][0] == [10, 12, 21, 21]
    from catur.topology import load_topology_file

    assert load_topology_file(saved).node_socket.tolist() == [0, 0, 1, 1]


def test_usage_of_the_pinned_domains(capsys):
    code, out, _ = run_cli(capsys, "libvirt", "usage", *HOST4, "--json", "--running-only")
    assert code == 0
    usage = json.loads(out)
    nodes = usage["nodes"]
    # web1 4 on node 0; batch1 6+6 on nodes 1 and 3; db1 8 on node 2; scratch1 (unpinned) 2 over all
    assert [n["used_vcpus"] for n in nodes] == [5, 7, 8, 6]
    assert [n["used_mem_mib"] for n in nodes] == [4096 + 512, 6144 + 512, 8192 + 512, 6144 + 512]
    assert [n["vms"] for n in nodes] == [2, 2, 2, 2]
    assert usage["unpinned"] == ["scratch1"]
    rules = {d["name"]: d["rule"] for d in usage["domains"]}
    assert rules == {"web1": "pinned", "db1": "pinned", "batch1": "pinned", "scratch1": "unpinned"}
    code, out, _ = run_cli(capsys, "libvirt", "usage", *HOST4, "--json")  # defined domains count by default
    with_defined = json.loads(out)["nodes"]
    assert [n["used_vcpus"] for n in with_defined] == [5, 11, 8, 6]
    assert [n["used_mem_mib"] for n in with_defined] == [4608, 6656 + 4096, 8704, 6656]
    code, out, _ = run_cli(capsys, "libvirt", "usage", *HOST4, "--running-only")
    assert code == 0 and "unpinned (counted by the rule, not by pinning): scratch1" in out
    # What the agent sends the service: residents count vCPUs only (scratch1's 2 are on nodes 0
    # and 1, its memory everywhere), and the list adds up to the totals.
    conn = open_connection(NODE_URI)
    try:
        host_usage = read_usage(conn, read_host(conn, nodes_per_socket=2), include_defined=False)
    finally:
        conn.close()
    assert host_usage.residents.tolist() == [2, 2, 1, 1]
    listed = host_usage.resident_vms()
    assert len(listed) == 4 and sum(vm["vcpus"] for vm in listed).tolist() == [5, 7, 8, 6]
    assert sum(vm["mem_mib"] for vm in listed).tolist() == [n["used_mem_mib"] for n in nodes]


# --- place -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vcpus,mem", [(4, 2048), (12, 12288), (24, 20480), (6, 30000)], ids=["small", "node", "wide", "spill"])
def test_place_validates_defines_and_round_trips(vcpus, mem, tmp_path):
    """On the 4-node host (one connection, so the definition stays): the written XML is valid,
    pins only onto the chosen nodes, follows the memory split, defines, and the host's usage
    afterwards is the usage before plus the placement."""
    conn = open_connection(NODE_URI)
    try:
        host = read_host(conn, nodes_per_socket=2)
        before = read_usage(conn, host, include_defined=True)
        text = NEW_VM.format(name=f"new-{vcpus}", vcpus=vcpus, mem=mem)
        root = read_xml(text, "new.xml")
        spec = parse_domain(root)
        decision = DeciderSpec(shield=ShieldConfig(depth=1)).build().decide(
            host.topology, before.used_vcpus, before.used_mem_mib, vm_request(spec))
        placement = decision.placement
        xml = to_text(write_placement(root, spec, host, placement))
        path = tmp_path / "new.xml"
        path.write_text(xml)
        validate(path)
        dom = define(conn, xml)
        back = parse_domain(dom.XMLDesc(0))
        for i, node in enumerate(placement.cpu_nodes):
            first = int(placement.vcpus[:i].sum())
            for v in range(first, first + int(placement.vcpus[i])):
                assert set(back.vcpupin[v]) <= set(host.cpus[int(node)]), f"vCPU {v} pinned off node {node}"
        split = [set(np.flatnonzero(row).tolist()) for row in placement.mem_mib]
        policies = [back.memnodes[c.id] for c in back.cells] if back.cells else [(back.memory_mode, back.memory_nodeset)]
        for i, (mode, nodeset) in enumerate(policies):
            home = int(placement.cpu_nodes[i])
            if split[i] == {home}:
                assert (mode, nodeset) == ("strict", (home,))
            else:  # a spill: preferred on the home node (the default --memory-mode auto)
                assert (mode, nodeset) == ("preferred", (home,))
        after = read_usage(conn, host, include_defined=True)
        n = host.num_nodes
        assert after.used_vcpus.tolist() == (before.used_vcpus + placement.node_vcpus(n)).tolist()
        assert after.used_mem_mib.tolist() == (before.used_mem_mib + placement.node_mem_mib()).tolist()
        if vcpus == 24:
            assert placement.num_instances == 2 and len(back.cells) == 2
        if vcpus == 6:
            assert len(split[0]) > 1, "30000 MiB cannot fit one 16 GiB node: it must spill"
    finally:
        conn.close()


def test_place_cli_in_process_define_and_dry_run(capsys, tmp_path):
    vm = tmp_path / "vm.xml"
    vm.write_text(NEW_VM.format(name="cli1", vcpus=4, mem=1024))
    with keep_default() as conn:
        code, diff, _ = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(vm), "--in-process", "--dry-run")
        assert code == 0 and diff.startswith("--- ") and "+  <vcpu placement=\"static\" cpuset=" in diff
        # The shipped scorer weighs the domains already there (the test host runs one).
        code, _, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(vm), "--in-process",
                               "--model", "default", "--dry-run")
        assert code == 0 and "weighing the VMs already on its nodes (1)" in err
        assert "cli1" not in [d.name() for d in conn.listAllDomains()], "--dry-run defines nothing"
        code, out, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(vm), "--in-process", "--define")
        assert code == 0 and "defined domain cli1" in err
        (tmp_path / "out.xml").write_text(out)
        validate(tmp_path / "out.xml")
        dom = conn.lookupByName("cli1")
        assert parse_domain(dom.XMLDesc(0)).vcpupin.keys() == {0, 1, 2, 3}
        code, out, _ = run_cli(capsys, "libvirt", "usage", "-c", "test:///default", "--include-defined", "--json")
        assert any(d["name"] == "cli1" and d["rule"] == "recorded" for d in json.loads(out)["domains"])


def test_place_errors_are_one_line_and_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><name>x</name><vcpu>2</vcpu>")
    code, out, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(bad), "--in-process")
    assert code == 2 and err.startswith(f"catur: error: {bad}: not well-formed XML") and len(err.strip().splitlines()) == 1
    tuned = tmp_path / "tuned.xml"
    tuned.write_text(NEW_VM.format(name="t", vcpus=2, mem=512).replace("<vcpu>", "<vcpu cpuset='0-1'>"))
    code, _, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(tuned), "--in-process")
    assert code == 2 and "already has NUMA tuning (<vcpu cpuset>); pass --replace" in err
    code, out, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(tuned), "--in-process", "--replace")
    assert code == 0 and "<vcpupin" in out
    ok = tmp_path / "ok.xml"
    ok.write_text(NEW_VM.format(name="u", vcpus=2, mem=512))
    unreachable = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    code, _, err = run_cli(capsys, "libvirt", "place", "-c", unreachable, "--domain-xml", str(ok), "--in-process")
    assert code == 2 and err.startswith(f"catur: error: cannot connect to libvirt at {unreachable!r}")
    assert len(err.strip().splitlines()) == 1


# --- the service, and departures ---------------------------------------------------------------------


@contextmanager
def follower_running(follower: DepartureFollower):
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        follower.request_stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the follower did not stop"


def wait_for(predicate, timeout=10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_place_through_the_service_and_departure_in_the_collected_trace(capsys, tmp_path):
    from catur.service.client import PlacementClient
    from catur.service.collector import CollectorConfig
    from catur.service.server import Service, create_server
    from catur.traces.collected import read_collected

    service = Service(model=None, shield=ShieldConfig(depth=1), collect=CollectorConfig(tmp_path / "trace"))
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    vm = tmp_path / "vm.xml"
    vm.write_text(NEW_VM.format(name="svc1", vcpus=2, mem=1024))
    try:
        with keep_default() as conn, PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            follower = DepartureFollower("test:///default", lambda vm_id, t: client.depart(vm_id, "h1", t), tick_s=0.05)
            with follower_running(follower):
                wait_for(lambda: follower.connection is not None)
                code, diff, err = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(vm),
                                          "--target", f"127.0.0.1:{port}", "--host-id", "h1", "--dry-run")
                assert code == 0 and diff.startswith("--- ") and "recorded as a VM that left at once" in err
                code, out, _ = run_cli(capsys, "libvirt", "place", "-c", "test:///default", "--domain-xml", str(vm),
                                       "--target", f"127.0.0.1:{port}", "--host-id", "h1", "--define")
                assert code == 0
                uuid = parse_domain(out).uuid
                assert uuid, "a <uuid> is added so the placement and the departure share the VM's id"
                dom = conn.lookupByUUIDString(uuid)
                dom.create()
                dom.destroy()  # STOPPED, but still defined: not a departure
                dom.undefine()  # UNDEFINED while not running: one Depart
                wait_for(lambda: follower.departed == 1)
                time.sleep(0.3)
                assert follower.departed == 1 and follower.failures == 0
    finally:
        service.shutdown(server, grace=0.5)
    trace = read_collected(tmp_path / "trace")
    assert len(trace) == 2 and not trace["departure_s"].isna().any(), "the dry run's VM departed at once too"
    row = trace[trace["source_vm_id"] == uuid]
    assert len(row) == 1 and row["vcpus"].iloc[0] == 2 and row["mem_gib"].iloc[0] == 1.0
    assert not np.isnan(row["departure_s"].iloc[0]) and row["departure_s"].iloc[0] >= row["arrival_s"].iloc[0]


def test_follower_reconnects_when_libvirt_goes_away():
    departed: list[str] = []
    attempts = []

    def opener(uri):
        attempts.append(uri)
        if len(attempts) == 1:  # libvirt is not there yet
            from catur.errors import CaturError

            raise CaturError("cannot connect to libvirt at 'test:///default': not yet")
        return open_connection(uri)

    follower = DepartureFollower("test:///default", lambda vm_id, t: departed.append(vm_id), reconnect_s=0.2, opener=opener,
                                 tick_s=0.05, all_domains=True)
    with keep_default() as conn, follower_running(follower):
        wait_for(lambda: follower.connections == 1 and follower.connection is not None)
        follower.connection.close()  # libvirt goes away under the follower
        wait_for(lambda: follower.connections == 2 and follower.connection is not None)
        dom = conn.defineXML(NEW_VM.format(name="re1", vcpus=1, mem=256))
        dom.undefine()
        wait_for(lambda: departed == [dom.UUIDString()])
    assert len(attempts) == 3


def test_events_command_stops_cleanly_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "catur.cli", "libvirt", "events", "--connect", "test:///default",
         "--target", "127.0.0.1:9", "--host-id", "h1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "following test:///default" in line, line + proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "stopped: 0 departures sent" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("mode", ["auto", "strict", "preferred", "restrictive"])
def test_every_memory_mode_validates_and_defines(mode, capsys, tmp_path):
    """A wide VM whose memory spills, written in each --memory-mode: schema-valid, definable."""
    vm = tmp_path / "vm.xml"
    vm.write_text(NEW_VM.format(name=f"spill-{mode}", vcpus=20, mem=30 * 1024))
    code, out, err = run_cli(capsys, "libvirt", "place", *HOST4, "--domain-xml", str(vm), "--in-process", "--memory-mode", mode)
    assert code == 0, err
    (tmp_path / "out.xml").write_text(out)
    validate(tmp_path / "out.xml")
    back = parse_domain(out)
    assert len(back.cells) == 2 and set(back.memnodes) == {0, 1}
    assert any(len(inst.mem_mib) > 1 for inst in back.recorded), "the case must spill"
    modes = {m for m, _ in back.memnodes.values()}
    assert modes <= {"strict", mode if mode != "auto" else "preferred"}
    conn = open_connection(NODE_URI)
    try:
        dom = define(conn, out)
        assert parse_domain(dom.XMLDesc(0)).memnodes == back.memnodes
    finally:
        conn.close()
