"""``catur libvirt topology|usage|place|events``: Catur on a libvirt (KVM/QEMU) host.

The XML work is in :mod:`catur.hypervisor` (no libvirt needed); libvirt itself is reached
through :mod:`catur.hypervisor.libvirt_host`, which needs the ``catur[libvirt]`` extra. The
service client is imported only here, when a command asks a running ``catur serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid as uuidlib
from pathlib import Path

from catur.cli.service import _rpc_error, add_client_arguments, add_client_tls_arguments
from catur.errors import CaturError
from catur.service import DEFAULT_LISTEN

DEFAULT_URI = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")

EPILOG = """examples:
  catur libvirt topology --connect qemu:///system            # this host, as 'catur topology show' prints it
  catur libvirt topology --connect test:///default --json
  catur libvirt usage --connect qemu:///system                 # running and defined domains
  catur libvirt place --domain-xml vm.xml --in-process --dry-run   # see what would change
  catur libvirt place --domain-xml vm.xml --target 127.0.0.1:50051 --define
  catur libvirt place --domain web1 --in-process --config --live   # tune an existing domain
  catur libvirt events --connect qemu:///system --target 127.0.0.1:50051   # Depart for each VM that leaves

The URI defaults to $LIBVIRT_DEFAULT_URI, else qemu:///system. Drivers that report no NUMA
cells in their capabilities (libvirt's test driver opened on a file) are read from their node
info instead; --nodes-per-socket says how those nodes group into sockets.
docs/howto/libvirt.md (Hook a libvirt host) explains how usage is counted, how a placement is
written, huge pages, departures and what Nova needs.
"""

EPILOG_PLACE = """examples:
  catur libvirt place --domain-xml vm.xml --in-process                 # print the tuned XML
  catur libvirt place --domain-xml vm.xml --in-process --dry-run       # a unified diff instead
  catur libvirt place --domain-xml vm.xml --in-process --json          # the decision as JSON
  catur libvirt place --domain-xml vm.xml --target 127.0.0.1:50051 --define --host-id $(hostname)
  virsh dumpxml web1 | catur libvirt place --domain-xml - --in-process --replace
  catur libvirt place --domain web1 --in-process --dry-run             # an existing domain: the diff
  catur libvirt place --domain web1 --in-process --config              # rewrite its persistent XML
  catur libvirt place --domain web1 --in-process --live                # pin the running domain now

Fit: a domain whose memory does not fit the host's free memory (memory minus huge page
pools, minus the domains counted: running and defined ones unless --running-only, capped by
what libvirt reports free) or, backed by huge pages, its page pool, exits 3 with one line
naming what is short and where; nothing is written, defined or applied.
Writes <vcpu placement='static' cpuset>, one <vcpupin> per vCPU onto its node's CPUs,
<numatune> following the memory split, guest <cpu><numa><cell>s for a VM split into several
vNUMA instances (whole pages for a page-backed guest), and Catur's exact split in <metadata>
(read back by 'usage'). The rest of the XML is kept. Refused (exit 2): domain types other
than kvm, qemu, test; <vcpu current> above the vCPU count; a domain that already has NUMA
tuning or numad's placement='auto', unless --replace.
--memory-mode says how a split that spills over several nodes is written: auto (default:
strict when the memory fits the vCPUs' node, else preferred on it), strict, preferred or
restrictive.
--live applies vCPU pinning (virDomainPinVcpuFlags) and the memory nodeset
(virDomainSetNumaParameters) to the running domain, as 'virsh vcpupin --live' and
'virsh numatune --live' do; guest cells and memory modes need --config and a restart.
With --target, the VM's id sent to the service is the domain's <uuid> (one is added when the
XML has none), so 'catur libvirt events' can report its departure under the same id. A
service that collects traces records every request; with --dry-run the VM is reported
departed at once (use --in-process for a dry run that leaves no record).
docs/howto/libvirt.md is the operator's runbook.
"""

EPILOG_EVENTS = """examples:
  catur libvirt events --connect qemu:///system --target 127.0.0.1:50051
  catur libvirt events --host-id $(hostname) --reconnect-seconds 10 --log-level DEBUG

Sends Depart(vm_id = domain UUID, host_id) to the service when a domain Catur placed (its
XML carries Catur's record; or named by --vm-id; or any, with --all-domains) leaves the host:
undefined while not running, a transient domain stopped, or migrated away. Once per lifetime:
a persistent domain that shuts down and starts again has not left (it is still defined, and
'place' still counts it). Reconnects every --reconnect-seconds while libvirt is unreachable.
SIGTERM/SIGINT stop it cleanly.
deploy/systemd/catur-libvirt-events.service runs it as a service.
"""


def add_libvirt_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur libvirt`` and its actions (topology, usage, place, events) on ``sub``."""
    top = sub.add_parser(
        "libvirt",
        help="libvirt host agent: read the host and its domains, place and tune a domain, report departures",
        description="Hook Catur into a libvirt host: the host's NUMA topology, its domains' usage per "
        "node, a new domain's placement written as libvirt NUMA tuning, and departures.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    actions = top.add_subparsers(dest="libvirt_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--connect", "-c", default=DEFAULT_URI, metavar="URI", help=f"libvirt URI (default {DEFAULT_URI})")
        p.add_argument("--name", default="libvirt", help="name to give the host topology (default 'libvirt')")
        p.add_argument("--capabilities", metavar="FILE", help="read the host from this capabilities XML instead of asking libvirt")
        p.add_argument("--nodes-per-socket", type=int, default=1, metavar="K",
                       help="only when libvirt reports no NUMA cells: nodes per socket (default 1)")

    p = actions.add_parser("topology", help="the host's NUMA topology, as 'catur topology show' prints it",
                           description="Read the host's NUMA cells, CPUs, sockets, memory and distances from "
                           "libvirt's capabilities and print them as a Catur topology.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common(p)
    p.add_argument("--json", action="store_true", help="print as JSON: the topology file format, plus a 'libvirt' section with each node's cell id and CPUs")
    p.add_argument("--save", metavar="FILE", help="also write it as a YAML topology file (for 'catur place --topology')")
    p.set_defaults(func=cmd_topology)

    p = actions.add_parser("usage", help="vCPUs, MiB and VMs per node, from the domains' XML",
                           description="Per-node used vCPUs, MiB and resident VMs, computed from the domains' "
                           "pinning, numatune and guest NUMA cells (docs/howto/libvirt.md: the counting rule). Defined, stopped "
                           "domains count too (they claim their share when they start) unless --running-only.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common(p)
    p.add_argument("--running-only", action="store_true", help="count only running domains (default: defined ones too)")
    p.add_argument("--include-defined", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_usage)

    p = actions.add_parser("place", help="place a domain (new, or an existing one with --domain) and write its NUMA tuning",
                           description="Ask Catur where a domain goes on this host and write the matching vCPU "
                           "pinning, numatune and guest NUMA cells: into a new domain's XML (--domain-xml), or "
                           "into an existing domain (--domain NAME: --config, --live). A domain that does not fit "
                           "the host's free memory or huge page pool exits 3 and nothing is written.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_PLACE)
    common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--domain-xml", metavar="FILE", help="a new domain's XML ('-' = standard input)")
    which.add_argument("--domain", metavar="NAME|UUID", help="an existing domain of the host (virt-install, virt-manager, Nova ...)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--target", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"placement service to ask (default {DEFAULT_LISTEN})")
    who.add_argument("--in-process", action="store_true", help="decide here, without a service")
    p.add_argument("--define", action="store_true", help="with --domain-xml: define the tuned domain through libvirt")
    p.add_argument("--config", action="store_true", help="with --domain: rewrite its persistent XML (takes effect at its next start)")
    p.add_argument("--live", action="store_true",
                   help="with --domain: apply to the running domain now (virDomainPinVcpuFlags and "
                   "virDomainSetNumaParameters, as 'virsh vcpupin --live' and 'virsh numatune --live')")
    p.add_argument("--dry-run", action="store_true", help="print a unified diff of the change; write, define and apply nothing")
    p.add_argument("--json", action="store_true",
                   help="print the decision as JSON (cells, vCPU and memory split, defect, fit verdict, policy) instead of the XML")
    p.add_argument("--replace", action="store_true", help="overwrite NUMA tuning the domain already has (or numad's placement='auto')")
    p.add_argument("--memory-mode", choices=("auto", "strict", "preferred", "restrictive"), default="auto",
                   help="how memory that spills over several nodes is written (default auto)")
    p.add_argument("--running-only", action="store_true",
                   help="count only running domains as using the host (default: defined ones too, which claim "
                   "their share when they start)")
    p.add_argument("--include-defined", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--alpha", type=float, default=1.0, help="weight of CPU overload in the defect (default 1)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of remote memory in the defect (default 1)")
    p.add_argument("--vnuma", type=int, help="vNUMA instances (default: the guest cells' count, else the fewest that fit)")
    p.add_argument("--host-id", help="host id sent to the service (default: libvirt's host name)")
    p.add_argument("--timeout", type=float, default=5.0, help="service deadline in seconds (default 5)")
    p.add_argument("--model", metavar="DIR|default", help="with --in-process: a trained model (default: greedy)")
    p.add_argument("--shield-depth", type=int, default=1, help="with --in-process: shield depth, 0 = off (default 1)")
    add_client_tls_arguments(p)
    p.set_defaults(func=cmd_place)

    p = actions.add_parser("events", help="send Depart to the service for every domain that stops or is undefined",
                           description="Follow libvirt's domain lifecycle events and tell the placement service "
                           "when a domain leaves, so the traces it collects see VM lifetimes.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_EVENTS)
    p.add_argument("--connect", "-c", default=DEFAULT_URI, metavar="URI", help=f"libvirt URI (default {DEFAULT_URI})")
    add_client_arguments(p, timeout=5.0, timeout_help="deadline of each Depart in seconds")
    p.add_argument("--host-id", help="host id sent with each Depart (default: libvirt's host name)")
    p.add_argument("--vm-id", action="append", default=[], metavar="UUID",
                   help="also report this domain (placed through the service by another tool); repeatable")
    p.add_argument("--all-domains", action="store_true",
                   help="report every domain that leaves, not only those Catur placed (the service records "
                   "Departs of VMs it never placed as unmatched)")
    p.add_argument("--reconnect-seconds", type=float, default=5.0, metavar="S", help="wait between reconnection attempts (default 5)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (default INFO)")
    add_client_tls_arguments(p)
    p.set_defaults(func=cmd_events)


def _warn(message: str) -> None:
    print(f"catur libvirt: warning: {message}", file=sys.stderr)


def _host(args: argparse.Namespace, conn):
    from catur.hypervisor.libvirt_host import read_host

    capabilities = Path(args.capabilities).read_text() if args.capabilities else None
    return read_host(conn, args.name, args.nodes_per_socket, capabilities, warn=_warn)


def _connect(args: argparse.Namespace, readonly: bool = True):
    from catur.hypervisor.libvirt_host import open_connection

    return open_connection(args.connect, readonly=readonly)


def cmd_topology(args: argparse.Namespace) -> int:
    """``catur libvirt topology``: the host's NUMA topology read from libvirt, printed, as JSON, or
    saved as a topology file."""
    conn = _connect(args)
    try:
        host = _host(args, conn)
    finally:
        conn.close()
    if args.save:
        import yaml

        Path(args.save).write_text(yaml.safe_dump(host.topology.to_dict(), sort_keys=False))
        print(f"wrote {args.save}", file=sys.stderr)
    if args.json:
        print(json.dumps(host.to_dict(), indent=2))
    else:
        print(host.topology.describe())
        for i in range(host.num_nodes):
            print(f"node {i}: libvirt cell {host.cell_ids[i]}, CPUs {host.node_cpuset(i)}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """``catur libvirt usage``: vCPUs, MiB and resident VMs per NUMA node, counted from the domains'
    XML."""
    from catur.hypervisor.libvirt_host import read_usage

    conn = _connect(args)
    try:
        usage = read_usage(conn, _host(args, conn), not args.running_only)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(usage.to_dict(), indent=2))
        return 0
    topo = usage.host.topology
    print(f"{'node':>4} {'cell':>4} {'vCPUs':>11} {'MiB':>17} {'VMs':>4}")
    for i in range(usage.host.num_nodes):
        print(f"{i:>4} {usage.host.cell_ids[i]:>4} {int(usage.used_vcpus[i]):>5}/{int(topo.node_cores[i]):<5} "
              f"{int(usage.used_mem_mib[i]):>8}/{int(topo.node_mem_mib[i]):<8} {int(usage.vms[i]):>4}")
    for d in usage.domains:
        state = "running" if d.active else "defined"
        print(f"  {d.name} ({state}, {d.rule}): vCPUs {d.node_vcpus.tolist()}, MiB {d.node_mem_mib.tolist()}")
    if usage.unpinned:
        print(f"unpinned (counted by the rule, not by pinning): {', '.join(usage.unpinned)}")
    return 0


def _read_domain_text(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    return Path(path).read_text(), path


def _check_place_actions(args: argparse.Namespace) -> None:
    """Which actions go with which domain, before anything is read or asked."""
    if args.model and not args.in_process:
        raise CaturError("--model applies to --in-process only (the service at --target serves its own model)")
    if args.domain_xml is not None and (args.config or args.live):
        raise CaturError("--config and --live tune an existing domain: use them with --domain NAME (a new domain takes --define)")
    if args.domain is not None and args.define:
        raise CaturError("--define is for a new domain (--domain-xml); for an existing one use --config (persistent) or --live")
    if args.dry_run and (args.define or args.config or args.live):
        raise CaturError("--dry-run changes nothing: leave out --define, --config and --live")


def _lookup(conn, name: str):
    from catur.hypervisor.libvirt_host import libvirt_module

    libvirt = libvirt_module()
    for lookup in (conn.lookupByName, conn.lookupByUUIDString):
        try:
            return lookup(name)
        except libvirt.libvirtError:
            continue
    raise CaturError(f"no domain {name!r} at {conn.getURI()} (by name or UUID); 'virsh list --all' lists them")


def placement_summary(spec, host, view, decision, placement, verdict, source: str) -> dict:
    """What ``place --json`` prints: the domain, the chosen cells, the vCPU and memory split
    (libvirt cell ids, MiB), the defect, the fit verdict and who decided."""
    instances = [
        {"cell": host.cell_ids[int(placement.cpu_nodes[i])], "vcpus": int(placement.vcpus[i]),
         "mem_mib": {str(host.cell_ids[j]): int(m) for j, m in enumerate(placement.mem_mib[i]) if m}}
        for i in range(placement.num_instances)
    ]
    return {
        "domain": spec.name, "uuid": spec.uuid, "source": source,
        "vcpus": spec.vcpus, "mem_mib": spec.mem_mib, "backing": view.unit if view.mib_per_unit > 1 else "memory",
        "cells": sorted({i["cell"] for i in instances}), "instances": instances,
        "defect": decision.defect, "cor": decision.cor, "rmr": decision.rmr,
        "policy": decision.policy, "primitive": decision.primitive, "model_version": decision.model_version,
        "fit": verdict.to_dict(),
    }


def cmd_place(args: argparse.Namespace) -> int:
    """``catur libvirt place``: place a domain (a new one from its XML, or an existing one by
    name) through the service or in process, check that it fits, and print, define or apply
    its NUMA tuning (exit 3 when it does not fit)."""
    _check_place_actions(args)
    conn = _connect(args, readonly=not (args.define or args.config or args.live))
    try:
        out = place_on(conn, args)
    finally:
        conn.close()
    sys.stdout.write(out)
    return 0


def place_on(conn, args: argparse.Namespace) -> str:
    """``catur libvirt place`` on an open connection: decide, check the fit, write (define,
    apply) and return what the command prints on standard output. Raises
    :class:`~catur.errors.DoesNotFit` (exit 3) when the domain does not fit; the JSON verdict
    is then in the exception's ``summary``. (benchmarks/libvirt_sweep.py runs a sequence of
    placements through here on one connection.)"""
    import xml.etree.ElementTree as ET

    from catur.errors import DoesNotFit
    from catur.hypervisor.capacity import placement_view
    from catur.hypervisor.domain import parse_domain, read_xml
    from catur.hypervisor.libvirt_host import apply_live, define, libvirt_module, read_free, read_usage
    from catur.hypervisor.tuning import check_untuned, register_namespaces, to_text, unified_diff, vm_request, write_placement

    dom = None
    if args.domain_xml is not None:
        text, source = _read_domain_text(args.domain_xml)
    else:
        libvirt = libvirt_module()
        dom = _lookup(conn, args.domain)
        # The persistent definition is what --config rewrites (and what a diff shows); a
        # transient domain, or --live alone, works on the live XML.
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() and not (args.live and not args.config) else 0
        text, source = dom.XMLDesc(flags), f"domain {dom.name()}"
    register_namespaces(text)
    root = read_xml(text, source)
    spec = parse_domain(root, source)
    request = vm_request(spec, args.alpha, args.beta, args.vnuma)
    if not args.replace:  # refuse before asking anybody anything
        check_untuned(spec, source)
    host = _host(args, conn)
    usage = read_usage(conn, host, not args.running_only, exclude_uuid=spec.uuid or None)
    view = placement_view(host, usage, spec, request, read_free(conn, host))
    if args.in_process:
        decision = _decide_here(args, view, usage)
    else:
        if not spec.uuid:  # the VM's id for the service, and later for its Depart
            new_uuid = ET.Element("uuid")
            new_uuid.text = str(uuidlib.uuid4())
            name = root.find("name")
            root.insert(list(root).index(name) + 1 if name is not None else 0, new_uuid)
            spec = parse_domain(root, source)
        decision = _ask_service(args, conn, view, usage, spec.uuid, dry_run=args.dry_run)
    verdict = view.fit(decision.placement)
    placed = view.to_mib(decision.placement)
    summary = placement_summary(spec, host, view, decision, placed, verdict, source)
    if not verdict.fits:
        error = DoesNotFit(f"{source}: domain {spec.name!r} does not fit: {verdict.short}; nothing written")
        error.summary = summary
        if args.json:
            print(json.dumps(summary, indent=2))
        raise error
    record = {"policy": decision.policy, "primitive": decision.primitive, "model_version": decision.model_version,
              "defect": f"{decision.defect:.6g}"}
    tuned = write_placement(root, spec, host, placed, memory_mode=args.memory_mode,
                            replace=args.replace, record=record, source=source)
    where = "; ".join(f"{i['vcpus']} vCPUs on cell {i['cell']}, MiB by cell {i['mem_mib']}" for i in summary["instances"])
    residents = f", weighing the VMs already on its nodes ({len(usage.resident_vms())})" if decision.residents_used else ""
    print(f"catur libvirt: {spec.name}: {where} ({decision.policy}, {decision.primitive}, "
          f"defect {decision.defect:.3f}{residents})", file=sys.stderr)
    split = parse_domain(tuned, source).split_cores()
    if split:
        _warn(f"{spec.name}: the guest <topology> puts the threads of {len(split)} core(s) (first at vCPU {split[0][0]}) "
              "in different guest NUMA cells; make each cell's vCPU count a multiple of the threads per core")
    if args.dry_run:
        return json.dumps(summary, indent=2) + "\n" if args.json else unified_diff(root, tuned, source)
    xml = to_text(tuned)
    if args.define or args.config:
        defined = define(conn, xml)
        print(f"defined domain {defined.name()} ({defined.UUIDString()}) at {args.connect}", file=sys.stderr)
    if args.live:
        apply_live(dom, host, placed, tuned)
        print(f"applied to running domain {dom.name()}: vCPU pinning and memory nodeset (live)", file=sys.stderr)
    if args.json:
        summary["written"] = {"defined": bool(args.define or args.config), "live": bool(args.live)}
        summary["xml"] = xml
        return json.dumps(summary, indent=2) + "\n"
    return "" if (args.config or args.live) else xml


def _decide_here(args, view, usage):
    from catur.decision import DeciderSpec
    from catur.shield import ShieldConfig

    spec = DeciderSpec(model=args.model, shield=ShieldConfig(depth=args.shield_depth))
    return spec.build().decide(view.topology, view.used_vcpus, view.used_mem, view.request, residents=usage.residents)


def _ask_service(args, conn, view, usage, vm_id: str, dry_run: bool = False):
    """The service's decision. A service that collects traces records every Place as an
    arrival; for a dry run the VM is reported departed at once, so the trace does not keep a
    VM that never ran (it still shows a zero-length one: --in-process leaves no record)."""
    import grpc
    import numpy as np

    from catur.cli.service import _client

    host_id = args.host_id or conn.getHostname()
    with _client(args) as client:
        try:
            residents = usage.resident_vms()
            listed = sum((vm["mem_mib"] for vm in residents), np.zeros(len(view.used_mem), np.int64))
            # Counted in pages, the residents' MiB are in another unit; on an overcommitted node
            # they may exceed the "used" the fit view sends (capacity minus free, never more than
            # the node): then their memory is left out (the contract allows vCPUs alone).
            if view.mib_per_unit > 1 or (listed > view.used_mem).any():
                residents = [{"vcpus": vm["vcpus"]} for vm in residents]
            decision = client.place(view.topology, view.used_vcpus, view.used_mem, view.request, host_id=host_id, vm_id=vm_id,
                                    resident_vms=residents, free_mem_mib=view.free)
            if dry_run and client.depart(vm_id, host_id):
                _warn(f"the service at {args.target} collects traces: this dry run is recorded as a VM that left at once "
                      "(use --in-process for a dry run that leaves no record)")
            return decision
        except grpc.RpcError as exc:
            raise _rpc_error(exc, args.target) from None


def cmd_events(args: argparse.Namespace) -> int:
    """``catur libvirt events``: follow libvirt's lifecycle events and send the service a ``Depart``
    for every domain that leaves, until SIGTERM."""
    import logging
    import signal

    import grpc

    from catur.cli.service import _client
    from catur.hypervisor.libvirt_host import DepartureFollower, libvirt_module, open_connection

    logging.basicConfig(level=args.log_level, format="%(asctime)s catur-libvirt-events %(levelname)s %(message)s", stream=sys.stderr)
    if args.reconnect_seconds <= 0:
        raise CaturError(f"--reconnect-seconds must be > 0, got {args.reconnect_seconds}")
    libvirt_module()  # a clear error now if the bindings are missing
    host_id = args.host_id
    if host_id is None:  # libvirt's name for the host, as 'place' sends it; libvirt may be down yet
        try:
            conn = open_connection(args.connect, readonly=True)
            host_id = conn.getHostname()
            conn.close()
        except CaturError:
            import socket

            host_id = socket.gethostname()
    with _client(args) as client:
        def depart(vm_id: str, time_s: float) -> None:
            try:
                client.depart(vm_id, host_id, time_s)
            except grpc.RpcError as exc:
                raise _rpc_error(exc, args.target) from None

        follower = DepartureFollower(args.connect, depart, reconnect_s=args.reconnect_seconds,
                                     vm_ids=args.vm_id, all_domains=args.all_domains)

        def on_signal(signum, frame):  # only a flag: the event loop sees it within a tick
            follower.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"catur libvirt events: following {args.connect}, Depart to {args.target} as host {host_id!r}", flush=True)
        follower.run()
    logging.getLogger("catur.libvirt").info("stopped: %d departures sent, %d failed, %d connection(s)",
                                            follower.departed, follower.failures, follower.connections)
    return 0
