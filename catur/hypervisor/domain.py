"""What a libvirt domain asks for, and where it sits on the host's NUMA nodes.

:func:`parse_domain` reads the parts of a domain XML that NUMA placement cares about into a
:class:`DomainSpec`: vCPUs (``<vcpu>``), memory (``<memory>``), CPU pinning (``<vcpu cpuset>``,
``<cputune><vcpupin>``), memory policy (``<numatune>`` ``<memory>``/``<memnode>``), guest NUMA
cells (``<cpu><numa><cell>``) and the placement Catur recorded in ``<metadata>`` when it wrote
the tuning (:mod:`catur.hypervisor.tuning`).

:func:`domain_usage` then says how many vCPUs and MiB the domain puts on each host node. The
XML does not always pin that down, so the rule is (docs/howto/libvirt.md):

1. **Catur's record.** A domain whose ``<metadata>`` carries the placement Catur wrote, and
   whose tuning still agrees with it (same vCPU nodes, memory only on nodes its ``numatune``
   allows), is counted exactly as recorded: the exact MiB split, which the XML cannot express.
2. **vCPUs.** A vCPU with an allowed CPU set (its ``<vcpupin>``, else ``<vcpu cpuset>``)
   counts on the node holding most of those CPUs (ties: the lower node). An *unpinned* vCPU
   is spread over its home nodes: its guest cell's ``<memnode>`` nodeset, else the
   ``<numatune><memory>`` nodeset, else every node (the scheduler balances it anywhere);
   :func:`host_usage` spreads the unpinned vCPUs of all domains together
   (:func:`spread_floating`), so remainders do not all land on the lowest node.
3. **Memory.** Each guest cell (or the whole domain without cells) has its memory counted on
   its nodeset (``<memnode>``, else ``<memory>``): all on the node for ``preferred`` (and a
   one-node set); evenly for ``interleave``; for ``strict``/``restrictive`` over several
   nodes, in proportion to the cell's vCPUs on those nodes (first touch), evenly if none.
   Without a nodeset, memory follows the cell's vCPUs (the kernel's first-touch default; an
   unpinned vCPU weighs evenly on its home nodes). A guest cell's memory includes the memory
   devices (DIMMs) plugged into it; a domain without guest cells counts its
   ``<currentMemory>`` when that is smaller (:attr:`DomainSpec.held_kib`).

A domain is *pinned* when every vCPU has an allowed CPU set, *unpinned* when none has.
:func:`host_usage` adds the domains up into Catur's ``used_vcpus``/``used_mem_mib`` arrays.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

import numpy as np

from catur.errors import CaturError
from catur.hypervisor.capabilities import HostTopology, _int_attr, fits_whole_mib, parse_cpuset, to_kib
from catur.request import even_splits

# The namespace of the placement record Catur writes into a domain's <metadata>.
CATUR_NS = "https://catur.dev/schemas/libvirt/placement/1"
MEMORY_MODES = ("strict", "preferred", "interleave", "restrictive")
# Domain types whose NUMA tuning (<vcpupin>, <numatune>, guest cells) Catur writes: QEMU/KVM,
# and libvirt's test driver (which accepts the same XML). Others (lxc, xen, bhyve, ...) have
# other tuning rules or none, and are refused rather than tuned wrongly.
DOMAIN_TYPES = ("kvm", "qemu", "test")
# Memory devices that add guest memory beyond <memory>'s initial size, on a guest cell.
MEMORY_DEVICE_MODELS = ("dimm", "nvdimm", "virtio-mem", "virtio-pmem", "sgx-epc")
# The size <hugepages/> without a <page> means: the host's default huge page (x86: 2 MiB).
DEFAULT_HUGEPAGE_KIB = 2048


@dataclass(frozen=True)
class GuestCell:
    """One guest NUMA cell: its id, its vCPUs, its memory in KiB (``<cell memory>``), and the
    memory devices (DIMMs) plugged into it, in KiB."""

    id: int
    vcpus: tuple[int, ...]
    mem_kib: int
    dimm_kib: int = 0

    @property
    def total_kib(self) -> int:
        return self.mem_kib + self.dimm_kib


@dataclass(frozen=True)
class RecordedInstance:
    """One vNUMA instance of a placement Catur recorded: libvirt cell ids, vCPUs and MiB."""

    cpu_cell: int
    vcpus: int
    mem_mib: tuple[tuple[int, int], ...]  # (host cell id, MiB)


@dataclass(frozen=True)
class DomainSpec:
    """The NUMA-relevant content of one domain XML.

    ``vcpupin`` maps a vCPU to its allowed host CPUs; ``memnodes`` a guest cell id to its
    ``(mode, host cell ids)``; ``memory_nodeset`` is ``<numatune><memory nodeset>`` (host cell
    ids) or ``None``. ``recorded`` is Catur's placement record from ``<metadata>``, if any.
    """

    name: str
    uuid: str
    vcpus: int
    mem_kib: int
    vcpu_cpuset: tuple[int, ...] | None = None
    vcpupin: dict[int, tuple[int, ...]] = field(default_factory=dict)
    memory_mode: str | None = None
    memory_nodeset: tuple[int, ...] | None = None
    memnodes: dict[int, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    cells: tuple[GuestCell, ...] = ()
    recorded: tuple[RecordedInstance, ...] = ()
    has_numatune: bool = False
    type: str = "kvm"
    auto_placement: bool = False  # <vcpu placement='auto'> or <numatune><memory placement='auto'>: numad decides
    hugepage_kib: int | None = None  # <memoryBacking><hugepages>: the page size backing the guest
    guest_topology: tuple[int, int] | None = None  # <cpu><topology>: (threads per core, vCPUs per socket)
    current_kib: int | None = None  # <currentMemory>: the balloon's current size, when given

    @property
    def held_kib(self) -> int:
        """The memory the domain holds on the host, as usage counts it: ``<currentMemory>``
        when it is smaller than ``<memory>`` and the guest has no NUMA cells (the balloon gave
        the rest back; growing it again is an operator's act, ``virsh setmem``), else all of
        ``<memory>``. A new domain is always placed at ``<memory>``."""
        if self.current_kib is not None and not self.cells and self.current_kib < self.mem_kib:
            return self.current_kib
        return self.mem_kib

    @property
    def mem_mib(self) -> int:
        """Memory in whole MiB, rounded up."""
        return fits_whole_mib(self.mem_kib)

    @property
    def has_tuning(self) -> bool:
        """Whether the domain already says where it runs (CPU pinning, a memory policy, or
        numad's automatic placement)."""
        return self.vcpu_cpuset is not None or bool(self.vcpupin) or self.has_numatune or self.auto_placement

    def split_cores(self) -> list[tuple[int, int]]:
        """Guest cores (``(first vCPU, cell ids)``...) whose threads lie in different guest
        cells, by the guest ``<topology>`` (vCPUs numbered thread-fastest, as QEMU does).
        A guest scheduler that believes two threads share a core when they are in different
        NUMA cells balances wrongly; ``place`` warns about it."""
        if self.guest_topology is None or not self.cells:
            return []
        threads, _ = self.guest_topology
        out = []
        for first in range(0, self.vcpus, threads):
            cells = {self.cell_of_vcpu(v) for v in range(first, min(first + threads, self.vcpus))}
            if len(cells) > 1:
                out.append((first, len(cells)))
        return out

    def allowed_cpus(self, vcpu: int) -> tuple[int, ...] | None:
        """The host CPUs vCPU ``vcpu`` may run on, or ``None`` when it is unpinned."""
        return self.vcpupin.get(vcpu, self.vcpu_cpuset)

    def cell_of_vcpu(self, vcpu: int) -> int | None:
        for cell in self.cells:
            if vcpu in cell.vcpus:
                return cell.id
        return None


def read_xml(text: str, source: str) -> ET.Element:
    """Parse a domain XML document (comments kept); one clear error if it is not one."""
    try:
        root = ET.fromstring(text, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    except ET.ParseError as exc:
        raise CaturError(f"{source}: not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise CaturError(f"{source}: expected a <domain> document, got <{root.tag}>")
    return root


def parse_domain(root: ET.Element | str, source: str = "domain XML") -> DomainSpec:
    """Read a domain's vCPUs, memory, pinning, memory policy, guest cells and Catur record."""
    if isinstance(root, str):
        root = read_xml(root, source)
    name = (root.findtext("name") or "").strip()
    where = f"{source} (domain {name!r})" if name else source
    vcpu_el = root.find("vcpu")
    vcpu_text = (vcpu_el.text or "").strip() if vcpu_el is not None else ""
    if not vcpu_text.isdigit() or int(vcpu_text) < 1:
        raise CaturError(f"{where}: <vcpu> must be a whole number >= 1, got {vcpu_text or 'nothing'!r}")
    vcpus = int(vcpu_text)
    dtype = root.get("type", "")
    if dtype and dtype not in DOMAIN_TYPES:  # none given: libvirt's own schema check will say so
        raise CaturError(
            f"{where}: domain type {dtype!r} is not supported; Catur writes NUMA tuning for {', '.join(DOMAIN_TYPES)} domains"
        )
    current = vcpu_el.get("current")
    if current is not None and (not current.strip().isdigit() or not 1 <= int(current) <= vcpus):
        raise CaturError(f"{where}: <vcpu current={current!r}> must be a whole number in 1..{vcpus} (the <vcpu> count)")
    memory = root.find("memory")
    if memory is None:
        raise CaturError(f"{where}: no <memory> element")
    mem_kib = to_kib(memory.text, memory.get("unit"), f"{where} <memory>")
    if mem_kib < 1:
        raise CaturError(f"{where}: <memory> must be > 0")
    cpuset = vcpu_el.get("cpuset")
    vcpu_cpuset = tuple(parse_cpuset(cpuset, f"{where} <vcpu cpuset>")) if cpuset else None
    vcpupin = {}
    for pin in root.findall("./cputune/vcpupin"):
        v = _int_attr(pin, "vcpu", f"{where} <vcpupin>")
        if not 0 <= v < vcpus:
            raise CaturError(f"{where}: <vcpupin vcpu='{v}'> but the domain has {vcpus} vCPUs")
        vcpupin[v] = tuple(parse_cpuset(pin.get("cpuset"), f"{where} <vcpupin vcpu='{v}'>"))
    numatune = root.find("numatune")
    auto = vcpu_el.get("placement") == "auto"
    memory_mode = memory_nodeset = None
    memnodes: dict[int, tuple[str, tuple[int, ...]]] = {}
    if numatune is not None:
        top = numatune.find("memory")
        if top is not None:
            memory_mode = _mode(top, where)
            auto = auto or top.get("placement") == "auto"
            if top.get("nodeset"):
                memory_nodeset = tuple(parse_cpuset(top.get("nodeset"), f"{where} <numatune><memory nodeset>"))
        for memnode in numatune.findall("memnode"):
            cell = _int_attr(memnode, "cellid", f"{where} <memnode>")
            memnodes[cell] = (_mode(memnode, where), tuple(parse_cpuset(memnode.get("nodeset"), f"{where} <memnode cellid='{cell}'>")))
    cells = []
    for cell in root.findall("./cpu/numa/cell"):
        cid = _int_attr(cell, "id", f"{where} <cell>", len(cells))
        cell_where = f"{where} guest <cell id='{cid}'>"
        cell_cpus = tuple(parse_cpuset(cell.get("cpus"), cell_where)) if cell.get("cpus") else ()
        if any(v >= vcpus for v in cell_cpus):
            raise CaturError(f"{cell_where}: cpus {cell.get('cpus')!r} name vCPUs beyond the domain's {vcpus}")
        cells.append(GuestCell(cid, cell_cpus, to_kib(cell.get("memory"), cell.get("unit"), cell_where)))
    dimms, loose_dimm_kib = _memory_devices(root, where, {c.id for c in cells})
    if cells and loose_dimm_kib:  # a device naming no (known) guest cell: libvirt puts it on the first
        dimms[cells[0].id] = dimms.get(cells[0].id, 0) + loose_dimm_kib
    cells = [GuestCell(c.id, c.vcpus, c.mem_kib, dimms.get(c.id, 0)) for c in cells]
    if cells:  # libvirt's own rule: with guest cells, the domain's memory is their sum (plus its DIMMs)
        mem_kib = sum(c.total_kib for c in cells)
        if mem_kib < 1:
            raise CaturError(f"{where}: the guest cells have no memory")
    # Without guest cells, <memory> is already the total, DIMMs included (libvirt writes it so).
    return DomainSpec(
        name=name,
        uuid=(root.findtext("uuid") or "").strip(),
        vcpus=vcpus,
        mem_kib=mem_kib,
        vcpu_cpuset=vcpu_cpuset,
        vcpupin=vcpupin,
        memory_mode=memory_mode,
        memory_nodeset=memory_nodeset,
        memnodes=memnodes,
        cells=tuple(cells),
        recorded=_recorded(root, where),
        has_numatune=numatune is not None,
        type=dtype,
        auto_placement=auto,
        hugepage_kib=_hugepage_kib(root, where),
        guest_topology=_guest_topology(root, where),
        current_kib=_current_kib(root, where),
    )


def _current_kib(root: ET.Element, where: str) -> int | None:
    current = root.find("currentMemory")
    return None if current is None else to_kib(current.text, current.get("unit"), f"{where} <currentMemory>")


def _memory_devices(root: ET.Element, where: str, cell_ids: set[int]) -> tuple[dict[int, int], int]:
    """``({guest cell: KiB}, KiB on no known cell)`` of the memory devices (DIMMs etc.):
    memory the guest has beyond ``<memory>``'s initial size (libvirt counts it in the total)."""
    per_cell: dict[int, int] = {}
    loose = 0
    for dev in root.findall("./devices/memory"):
        model = dev.get("model", "")
        if model not in MEMORY_DEVICE_MODELS:
            raise CaturError(f"{where}: <memory model={model!r}> device; known models: {', '.join(MEMORY_DEVICE_MODELS)}")
        size = dev.find("./target/size")
        if size is None:
            raise CaturError(f"{where}: <memory model='{model}'> device has no <target><size>")
        kib = to_kib(size.text, size.get("unit"), f"{where} <memory model='{model}'> <size>")
        node = dev.findtext("./target/node")
        if node is not None and node.strip().isdigit() and int(node) in cell_ids:
            per_cell[int(node)] = per_cell.get(int(node), 0) + kib
        else:
            loose += kib
    return per_cell, loose


def _hugepage_kib(root: ET.Element, where: str) -> int | None:
    """The page size backing the guest (``<memoryBacking><hugepages>``), in KiB, or ``None``.
    Several ``<page>`` sizes (per guest cell) are refused: Catur places one pool per guest."""
    huge = root.find("./memoryBacking/hugepages")
    if huge is None:
        return None
    sizes = {to_kib(p.get("size"), p.get("unit"), f"{where} <hugepages><page size>") for p in huge.findall("page")}
    if len(sizes) > 1:
        raise CaturError(f"{where}: <hugepages> mixes page sizes {sorted(sizes)} KiB; Catur places guests backed by one size")
    return sizes.pop() if sizes else DEFAULT_HUGEPAGE_KIB


def _guest_topology(root: ET.Element, where: str) -> tuple[int, int] | None:
    top = root.find("./cpu/topology")
    if top is None:
        return None
    threads = _int_attr(top, "threads", f"{where} <cpu><topology>", 1)
    cores = _int_attr(top, "cores", f"{where} <cpu><topology>", 1)
    dies = _int_attr(top, "dies", f"{where} <cpu><topology>", 1)
    clusters = _int_attr(top, "clusters", f"{where} <cpu><topology>", 1)
    if min(threads, cores, dies, clusters) < 1:
        raise CaturError(f"{where}: <cpu><topology> values must be >= 1")
    return threads, threads * cores * dies * clusters


def _mode(element: ET.Element, where: str) -> str:
    mode = element.get("mode", "strict")
    if mode not in MEMORY_MODES:
        raise CaturError(f"{where}: <{element.tag} mode={mode!r}>; libvirt knows {', '.join(MEMORY_MODES)}")
    return mode


def _recorded(root: ET.Element, where: str) -> tuple[RecordedInstance, ...]:
    record = root.find(f"./metadata/{{{CATUR_NS}}}placement")
    if record is None:
        return ()
    out = []
    for inst in record.findall(f"{{{CATUR_NS}}}instance"):
        mem = tuple(
            (_int_attr(m, "cell", f"{where} catur record"), _int_attr(m, "mib", f"{where} catur record"))
            for m in inst.findall(f"{{{CATUR_NS}}}memory")
        )
        out.append(RecordedInstance(_int_attr(inst, "cell", f"{where} catur record"), _int_attr(inst, "vcpus", f"{where} catur record"), mem))
    return tuple(out)


# --- where a domain sits -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DomainUsage:
    """One domain's share of each host node: ``node_vcpus[N]``, ``node_mem_mib[N]``.

    ``rule`` says how it was counted: ``"recorded"`` (Catur's metadata), ``"pinned"``,
    ``"partly pinned"`` or ``"unpinned"`` (see the module's rule).
    """

    name: str
    uuid: str
    active: bool
    vcpus: int
    mem_mib: int
    node_vcpus: np.ndarray
    node_mem_mib: np.ndarray
    rule: str
    # Unpinned vCPUs, as ((home nodes), count) groups; node_vcpus counts them near-evenly over
    # their home (lower nodes first). host_usage re-spreads them over all domains together.
    floating: tuple[tuple[tuple[int, ...], int], ...] = ()
    hugepage_kib: int | None = None  # the page size backing it (its memory is in that pool)

    @property
    def pinned(self) -> bool:
        return self.rule in ("recorded", "pinned")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "uuid": self.uuid, "active": self.active, "vcpus": self.vcpus,
            "mem_mib": self.mem_mib, "rule": self.rule,
            "node_vcpus": self.node_vcpus.tolist(), "node_mem_mib": self.node_mem_mib.tolist(),
        }


def share(total: int, weights) -> np.ndarray:
    """``total`` split in proportion to ``weights`` as integers summing to ``total``
    (largest remainders get the leftovers; ties go to the lower index)."""
    w = np.asarray(weights, dtype=float)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    left = int(total - out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:left]] += 1
    return out


def _nodes(host: HostTopology, cell_ids) -> list[int]:
    """Catur nodes of these libvirt cell ids (cells the host lacks are ignored)."""
    nodes = [host.node_of_cell(c) for c in cell_ids or ()]
    return sorted({n for n in nodes if n is not None})


def _home(spec: DomainSpec, host: HostTopology, vcpu: int) -> tuple[int, ...]:
    """Where an unpinned vCPU runs: its cell's ``<memnode>`` nodes, else the ``<numatune>
    <memory>`` nodes, else anywhere (all nodes)."""
    cell = spec.cell_of_vcpu(vcpu)
    nodeset = spec.memnodes[cell][1] if cell in spec.memnodes else spec.memory_nodeset
    return tuple(_nodes(host, nodeset)) or tuple(range(host.num_nodes))


def _rule_usage(spec: DomainSpec, host: HostTopology) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Rules 2 and 3: ``(vcpu_node[V] (-1 = unpinned), node_vcpus[N], node_mem_mib[N],
    {home nodes: unpinned vCPUs})``."""
    n = host.num_nodes
    vcpu_node = np.full(spec.vcpus, -1, dtype=np.int64)
    node_of_set: dict[tuple[int, ...], int] = {}  # vCPUs mostly share a few CPU sets
    for v in range(spec.vcpus):
        allowed = spec.allowed_cpus(v)
        if allowed:
            if allowed not in node_of_set:
                nodes = host.nodes_of_cpus(allowed)
                counts = np.bincount(nodes[nodes >= 0], minlength=n)
                node_of_set[allowed] = int(np.argmax(counts)) if counts.sum() else -1
            vcpu_node[v] = node_of_set[allowed]
    node_vcpus = np.bincount(vcpu_node[vcpu_node >= 0], minlength=n).astype(np.int64)
    # Unpinned vCPUs, grouped by their home nodes, spread near-evenly over them.
    homes: dict[tuple[int, ...], int] = {}
    for v in np.flatnonzero(vcpu_node < 0):
        home = _home(spec, host, int(v))
        homes[home] = homes.get(home, 0) + 1
    for home, count in homes.items():
        node_vcpus[list(home)] += even_splits(np.array([count]), np.array([len(home)]))[0]
    # Memory, per guest cell (or the whole domain as one part).
    node_mem = np.zeros(n, dtype=np.int64)
    total_mib = fits_whole_mib(spec.held_kib)
    parts = [(c.id, c.vcpus, c.total_kib) for c in spec.cells] or [(None, tuple(range(spec.vcpus)), spec.held_kib)]
    # Whole MiB per part from the cumulative KiB, rounded up: sums to the domain's MiB, and
    # gives back exactly the instances' MiB of cells Catur wrote.
    cumulative = np.cumsum([p[2] for p in parts])
    part_mib = np.diff(-(-cumulative // 1024), prepend=0)
    assert part_mib.sum() == total_mib  # parse_domain makes the cells add up to the total
    for (cell, vcpus, _), mib in zip(parts, part_mib):
        mode, nodeset = spec.memnodes.get(cell, (spec.memory_mode, spec.memory_nodeset))
        targets = _nodes(host, nodeset)
        weights = np.zeros(n)
        for v in vcpus:  # where this part's vCPUs run (unpinned ones: evenly over their home)
            if vcpu_node[v] >= 0:
                weights[vcpu_node[v]] += 1
            else:
                home = list(_home(spec, host, v))
                weights[home] += 1.0 / len(home)
        if targets:
            if mode == "preferred" or len(targets) == 1:
                weights = np.zeros(n)
                weights[targets[0]] = 1
            elif mode == "interleave" or weights[targets].sum() == 0:
                weights = np.zeros(n)
                weights[targets] = 1
            else:
                mask = np.zeros(n)
                mask[targets] = 1
                weights = weights * mask
        if weights.sum() == 0:
            weights = np.ones(n)
        node_mem += share(int(mib), weights)
    return vcpu_node, node_vcpus, node_mem, homes


def domain_usage(spec: DomainSpec, host: HostTopology, active: bool = True) -> DomainUsage:
    """How many vCPUs and MiB ``spec`` puts on each node of ``host`` (the module's rule)."""
    vcpu_node, node_vcpus, node_mem, homes = _rule_usage(spec, host)
    pinned = int((vcpu_node >= 0).sum())
    rule = "pinned" if pinned == spec.vcpus else "unpinned" if pinned == 0 else "partly pinned"
    recorded = _from_record(spec, host, node_vcpus, vcpu_node)
    if recorded is not None:
        node_vcpus, node_mem = recorded
        rule = "recorded"
    return DomainUsage(spec.name, spec.uuid, active, spec.vcpus, spec.mem_mib, node_vcpus, node_mem, rule,
                       tuple(homes.items()), spec.hugepage_kib)


def _from_record(spec: DomainSpec, host: HostTopology, rule_vcpus: np.ndarray, vcpu_node: np.ndarray):
    """Catur's recorded split, when the XML's tuning still agrees with it; else ``None``."""
    if not spec.recorded or (vcpu_node < 0).any():
        return None
    n = host.num_nodes
    node_vcpus = np.zeros(n, dtype=np.int64)
    node_mem = np.zeros(n, dtype=np.int64)
    allowed_mem: set[int] = set()
    for cell_nodes in [spec.memory_nodeset, *(ns for _, ns in spec.memnodes.values())]:
        allowed_mem |= set(_nodes(host, cell_nodes))
    for inst in spec.recorded:
        node = host.node_of_cell(inst.cpu_cell)
        if node is None:
            return None
        node_vcpus[node] += inst.vcpus
        for cell, mib in inst.mem_mib:
            m = host.node_of_cell(cell)
            if m is None:
                return None
            node_mem[m] += mib
    modes = {spec.memory_mode, *(mode for mode, _ in spec.memnodes.values())} - {None}
    bounded = modes and modes <= {"strict", "restrictive"}
    if not np.array_equal(node_vcpus, rule_vcpus) or node_mem.sum() != spec.mem_mib:
        return None
    if bounded and not set(np.flatnonzero(node_mem)) <= allowed_mem:
        return None
    return node_vcpus, node_mem


@dataclass(frozen=True, eq=False)
class HostUsage:
    """Per-node totals over a host's domains: what Catur's placement takes as the host state."""

    host: HostTopology
    used_vcpus: np.ndarray
    used_mem_mib: np.ndarray
    vms: np.ndarray  # domains with vCPUs or memory on each node
    domains: tuple[DomainUsage, ...]

    @property
    def unpinned(self) -> list[str]:
        return [d.name for d in self.domains if not d.pinned]

    @property
    def residents(self) -> np.ndarray:
        """Per node, the domains with vCPUs on it: the placement core's resident counts (``vms``
        also counts a domain that only has memory there)."""
        return sum(((d.node_vcpus > 0).astype(np.int64) for d in self.domains), np.zeros(self.host.num_nodes, np.int64))

    def resident_vms(self) -> list[dict]:
        """The domains with vCPUs, as the service contract's ``usage.resident_vms`` entries
        (vCPUs and MiB per node; no ``age_s``: a domain's XML does not say when it started)."""
        return [{"vcpus": d.node_vcpus, "mem_mib": d.node_mem_mib} for d in self.domains if d.node_vcpus.any()]

    def to_dict(self) -> dict:
        return {
            "nodes": [
                {
                    "node": i, "libvirt_cell": self.host.cell_ids[i],
                    "cores": int(self.host.topology.node_cores[i]), "mem_mib": int(self.host.topology.node_mem_mib[i]),
                    "used_vcpus": int(self.used_vcpus[i]), "used_mem_mib": int(self.used_mem_mib[i]), "vms": int(self.vms[i]),
                }
                for i in range(self.host.num_nodes)
            ],
            "domains": [d.to_dict() for d in self.domains],
            "unpinned": self.unpinned,
        }


def spread_floating(host: HostTopology, domains: list[DomainUsage]) -> list[DomainUsage]:
    """The domains with their unpinned vCPUs spread over the whole host, not domain by domain.

    One domain's unpinned vCPUs are split near-evenly over their home nodes, the remainder
    on the lower nodes; summed over many small domains that would put every remainder on
    node 0 (six 1-vCPU domains: node 0 +6). Here each unpinned vCPU, domain after domain,
    goes to the home node with the fewest unpinned vCPUs counted so far (ties: the lower
    node), so the host's total is near-even over the nodes the scheduler may use, and each
    domain still lists the nodes its own vCPUs were counted on."""
    load = np.zeros(host.num_nodes, dtype=np.int64)
    out = []
    for d in domains:
        if not d.floating:
            out.append(d)
            continue
        node_vcpus = d.node_vcpus.copy()
        for home, count in d.floating:
            home = list(home)
            node_vcpus[home] -= even_splits(np.array([count]), np.array([len(home)]))[0]
            for _ in range(count):
                j = home[int(np.argmin(load[home]))]
                load[j] += 1
                node_vcpus[j] += 1
        out.append(replace(d, node_vcpus=node_vcpus))
    return out


def host_usage(host: HostTopology, domains: list[DomainUsage]) -> HostUsage:
    """Add domains' usage up per node (unpinned vCPUs spread over the host:
    :func:`spread_floating`)."""
    domains = spread_floating(host, domains)
    n = host.num_nodes
    vcpus = np.zeros(n, dtype=np.int64)
    mem = np.zeros(n, dtype=np.int64)
    vms = np.zeros(n, dtype=np.int64)
    for d in domains:
        vcpus += d.node_vcpus
        mem += d.node_mem_mib
        vms += (d.node_vcpus > 0) | (d.node_mem_mib > 0)
    return HostUsage(host, vcpus, mem, vms, tuple(domains))
