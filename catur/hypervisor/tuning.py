"""A Catur placement written into a libvirt domain XML.

:func:`write_placement` takes a domain, the host and Catur's :class:`~catur.state.Placement`
and returns the domain XML with:

* ``<vcpu placement='static' cpuset=...>``: the CPUs of every node the VM's vCPUs go to;
* ``<cputune>``: one ``<vcpupin>`` per vCPU, onto *all* the CPUs of its instance's node
  (Catur chooses nodes, not cores: the host scheduler still balances within the node, and a
  node's vCPU overcommit stays possible);
* ``<numatune>``: ``<memory>`` (and, with guest cells, one ``<memnode>`` per cell) whose
  nodesets follow the memory split;
* guest ``<cpu><numa><cell>`` elements for a VM split into several vNUMA instances (existing
  cells are resized to Catur's near-equal instances, keeping their other attributes);
* in ``<metadata>``, Catur's record of the exact split (``catur:placement``), which
  :func:`catur.hypervisor.domain.domain_usage` reads back.

Everything else in the document is kept as it was (elements, their order, comments, namespace
prefixes); only the layout is ElementTree's: re-indented, attributes in double quotes.

How a memory split is expressed (``memory_mode``; README has the table): an instance whose
memory is all on its CPU node gets ``strict`` on that node, exact. An instance that *spills*
cannot be expressed exactly: neither libvirt nor the kernel's memory policies take MiB per
node. ``auto`` (the default) then writes ``preferred`` on the CPU node (the kernel allocates
there first and falls back to the nearest nodes, Catur's own order, never OOM-killing the VM
for want of room on a node); ``strict`` binds to exactly the nodes of the split (bounded,
but the VM can be OOM-killed when they fill); ``restrictive`` does the same through the
cgroup's ``cpuset.mems`` only (movable later); ``preferred`` always prefers the CPU node.
"""

from __future__ import annotations

import copy
import difflib
import io
import xml.etree.ElementTree as ET

import numpy as np

from catur.errors import CaturError
from catur.hypervisor.capabilities import HostTopology, format_cpuset
from catur.hypervisor.domain import CATUR_NS, DomainSpec
from catur.request import VMRequest
from catur.state import Placement

WRITE_MODES = ("auto", "strict", "preferred", "restrictive")

# libvirt's own element order, so that new elements land where `virsh dumpxml` would put them.
_BEFORE_CPUTUNE = ("vcpu", "vcpus", "iothreads", "iothreadids")
_BEFORE_NUMATUNE = ("cputune", *_BEFORE_CPUTUNE)
_BEFORE_METADATA = ("description", "title", "uuid", "genid", "name")
_BEFORE_CPU = ("features", "os", "sysinfo", "resource", "numatune", "cputune", "vcpu")


def register_namespaces(text: str) -> None:
    """Keep the document's own namespace prefixes (``qemu:``, ``nova:`` ...) when writing it.

    ElementTree would otherwise rename them ``ns0``, ``ns1``; libvirt would still read that,
    but a person diffing the XML should not have to.
    """
    ET.register_namespace("catur", CATUR_NS)
    try:
        for _, (prefix, uri) in ET.iterparse(io.StringIO(text), events=("start-ns",)):
            if prefix:
                try:
                    ET.register_namespace(prefix, uri)
                except ValueError:  # a reserved ns<digits> prefix: ElementTree picks its own
                    pass
    except ET.ParseError:
        pass  # reported by the real parse


def to_text(root: ET.Element) -> str:
    """The document, indented two spaces per level as ``virsh dumpxml`` does."""
    pretty = copy.deepcopy(root)
    ET.indent(pretty, space="  ")
    return ET.tostring(pretty, encoding="unicode") + "\n"


def vm_request(spec: DomainSpec, alpha: float = 1.0, beta: float = 1.0, vnuma: int | None = None) -> VMRequest:
    """The request Catur places for this domain: its vCPUs, memory in MiB (rounded up) and,
    when the domain has guest NUMA cells, one vNUMA instance per cell."""
    if spec.cells:
        if vnuma is not None and vnuma != len(spec.cells):
            raise CaturError(f"domain {spec.name!r} has {len(spec.cells)} guest NUMA cells but --vnuma {vnuma} was given")
        vnuma = len(spec.cells)
    return VMRequest(spec.vcpus, spec.mem_mib, alpha, beta, vnuma)


def check_untuned(spec: DomainSpec, source: str = "domain XML") -> None:
    """Refuse a domain that already says where it runs: one line naming what it has."""
    if spec.has_tuning:
        what = [w for w, present in (("<vcpu cpuset>", spec.vcpu_cpuset is not None), ("<vcpupin>", bool(spec.vcpupin)),
                                     ("<numatune>", spec.has_numatune),
                                     ("placement='auto' (numad chooses its nodes)", spec.auto_placement)) if present]
        raise CaturError(f"{source}: domain {spec.name!r} already has NUMA tuning ({', '.join(what)}); pass --replace to overwrite it")


def _insert_after(root: ET.Element, element: ET.Element, after: tuple[str, ...]) -> None:
    children = list(root)
    positions = [i for i, child in enumerate(children) if child.tag in after]
    root.insert(positions[-1] + 1 if positions else len(children), element)


def _child(root: ET.Element, tag: str, after: tuple[str, ...]) -> ET.Element:
    element = root.find(tag)
    if element is None:
        element = ET.Element(tag)
        _insert_after(root, element, after)
    return element


def _instance_policy(placement: Placement, i: int, host: HostTopology, memory_mode: str) -> tuple[str, list[int]]:
    """``(mode, host cell ids)`` for instance ``i``'s memory (see the module docstring)."""
    home = int(placement.cpu_nodes[i])
    nodes = [int(j) for j in np.flatnonzero(placement.mem_mib[i])]
    spilled = nodes != [home]
    if memory_mode == "auto":
        mode, chosen = ("preferred" if spilled else "strict"), [home]
    elif memory_mode == "preferred":
        mode, chosen = "preferred", [home]
    else:  # strict or restrictive: exactly the nodes of the split
        mode, chosen = memory_mode, sorted(set(nodes) | {home})
    return mode, [host.cell_ids[j] for j in chosen]


def write_placement(
    root: ET.Element,
    spec: DomainSpec,
    host: HostTopology,
    placement: Placement,
    *,
    memory_mode: str = "auto",
    replace: bool = False,
    record: dict | None = None,
    source: str = "domain XML",
) -> ET.Element:
    """A copy of ``root`` with ``placement`` written in (see the module docstring).

    Refuses (:class:`CaturError`) a domain that already has NUMA tuning unless ``replace``,
    and a placement that does not match the domain's vCPUs, memory or guest cells.
    ``record`` adds attributes (policy, primitive, ...) to the metadata record.
    """
    if memory_mode not in WRITE_MODES:
        raise CaturError(f"memory mode {memory_mode!r}; choose one of {', '.join(WRITE_MODES)}")
    if not replace:
        check_untuned(spec, source)
    k = placement.num_instances
    if placement.total_vcpus != spec.vcpus or placement.total_mem_mib != spec.mem_mib:
        raise CaturError(
            f"placement of {placement.total_vcpus} vCPUs / {placement.total_mem_mib} MiB does not match domain "
            f"{spec.name!r} ({spec.vcpus} vCPUs / {spec.mem_mib} MiB)"
        )
    if spec.cells and len(spec.cells) != k:
        raise CaturError(f"placement has {k} instances but domain {spec.name!r} has {len(spec.cells)} guest cells")
    out = copy.deepcopy(root)

    # Clear the old tuning (only reached with --replace when there was any).
    vcpu = out.find("vcpu")
    vcpu.attrib.pop("cpuset", None)
    cputune = out.find("cputune")
    if cputune is not None:
        for pin in cputune.findall("vcpupin"):
            cputune.remove(pin)
    old_numatune = out.find("numatune")
    if old_numatune is not None:
        out.remove(old_numatune)

    # vCPUs: instance i takes the next placement.vcpus[i] vCPU ids.
    bounds = np.concatenate([[0], np.cumsum(placement.vcpus)])
    vcpu.set("placement", "static")
    vcpu.set("cpuset", format_cpuset(c for node in placement.cpu_nodes for c in host.cpus[int(node)]))
    cputune = _child(out, "cputune", _BEFORE_CPUTUNE)
    pins = [
        ET.Element("vcpupin", {"vcpu": str(v), "cpuset": host.node_cpuset(int(placement.cpu_nodes[i]))})
        for i in range(k) for v in range(bounds[i], bounds[i + 1])
    ]
    cputune[0:0] = pins

    # Guest cells: one per instance when the VM is split (or already had cells).
    policies = [_instance_policy(placement, i, host, memory_mode) for i in range(k)]
    numatune = ET.Element("numatune")
    cell_ids: list[int] = []
    if k > 1 or spec.cells:
        cell_ids = _write_cells(out, spec, placement, bounds)
        modes = {mode for mode, _ in policies}
        if modes in ({"strict"}, {"restrictive"}):
            union = sorted({c for _, cells in policies for c in cells})
            ET.SubElement(numatune, "memory", {"mode": modes.pop(), "nodeset": format_cpuset(union)})
        # A whole-domain strict <memory> would also bind the cells' memory (libvirt applies it
        # as the cgroup's cpuset.mems); with a preferred cell there is no top-level binding.
        for cid, (mode, cells) in zip(cell_ids, policies):
            ET.SubElement(numatune, "memnode", {"cellid": str(cid), "mode": mode, "nodeset": format_cpuset(cells)})
    else:
        mode, cells = policies[0]
        ET.SubElement(numatune, "memory", {"mode": mode, "nodeset": format_cpuset(cells)})
    _insert_after(out, numatune, _BEFORE_NUMATUNE)
    _write_record(out, host, placement, record or {})
    return out


def _write_cells(out: ET.Element, spec: DomainSpec, placement: Placement, bounds: np.ndarray) -> list[int]:
    """Write (or resize) the guest cells; their ids in instance order."""
    total_kib = spec.mem_kib
    kib = [int(m) * 1024 for m in placement.mem_mib.sum(axis=1)]
    kib[-1] -= sum(kib) - total_kib  # Catur rounds memory up to whole MiB; the cells keep the exact total
    cpu = _child(out, "cpu", _BEFORE_CPU)
    numa = cpu.find("numa")
    if numa is None:
        numa = ET.SubElement(cpu, "numa")
    existing = sorted(numa.findall("cell"), key=lambda c: int(c.get("id", "0")))
    dimms = {c.id: c.dimm_kib for c in spec.cells}
    ids = []
    for i in range(placement.num_instances):
        cell = existing[i] if i < len(existing) else ET.SubElement(numa, "cell", {"id": str(i)})
        cell.set("cpus", format_cpuset(range(bounds[i], bounds[i + 1])))
        dimm = dimms.get(int(cell.get("id")), 0)
        if dimm and kib[i] - dimm < 1024:  # the DIMMs plugged into this cell stay; its own memory shrinks
            raise CaturError(f"domain {spec.name!r}: guest cell {cell.get('id')} would get {kib[i]} KiB, less than its "
                             f"{dimm} KiB of memory devices; place it with fewer vNUMA instances")
        cell.set("memory", str(kib[i] - dimm))
        cell.set("unit", "KiB")
        ids.append(int(cell.get("id")))
    return ids


def _write_record(out: ET.Element, host: HostTopology, placement: Placement, attrs: dict) -> None:
    metadata = _child(out, "metadata", _BEFORE_METADATA)
    for old in metadata.findall(f"{{{CATUR_NS}}}placement"):
        metadata.remove(old)
    record = ET.SubElement(metadata, f"{{{CATUR_NS}}}placement", {k: str(v) for k, v in attrs.items() if v not in (None, "")})
    for i in range(placement.num_instances):
        inst = ET.SubElement(record, f"{{{CATUR_NS}}}instance", {
            "cell": str(host.cell_ids[int(placement.cpu_nodes[i])]), "vcpus": str(int(placement.vcpus[i])),
        })
        for j in np.flatnonzero(placement.mem_mib[i]):
            ET.SubElement(inst, f"{{{CATUR_NS}}}memory", {"cell": str(host.cell_ids[int(j)]), "mib": str(int(placement.mem_mib[i, j]))})


def unified_diff(before: ET.Element, after: ET.Element, name: str) -> str:
    """A unified diff of the two documents, both written by ElementTree so that only real
    changes show (not quote style or attribute spacing)."""
    lines = difflib.unified_diff(
        to_text(before).splitlines(keepends=True), to_text(after).splitlines(keepends=True),
        fromfile=f"{name} (before)", tofile=f"{name} (with Catur's placement)",
    )
    return "".join(lines)
