"""Talking to libvirt: open a connection, read the host and its domains, define, follow events.

This is the one module that imports the ``libvirt`` bindings (``pip install 'catur[libvirt]'``;
they build against libvirt's C library, Debian ``libvirt-dev`` + ``pkg-config``). It imports
them when first needed, so the rest of Catur works without them, and turns every libvirt
failure a user can cause (an unreachable URI, a refused definition) into one
:class:`~catur.errors.CaturError` line.

:class:`DepartureFollower` follows domain lifecycle events and reports each domain that stops
or is undefined through a callback (the CLI's sends the service a ``Depart``). It reconnects
when libvirt goes away and stops when :meth:`DepartureFollower.request_stop` is called, which
only sets a flag and so is safe from a signal handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from catur.errors import CaturError
from catur.hypervisor.capacity import ReportedFree
from catur.hypervisor.capabilities import HostTopology, NoNumaCells, parse_capabilities, topology_from_nodeinfo
from catur.hypervisor.domain import HostUsage, domain_usage, host_usage, parse_domain, read_xml

log = logging.getLogger("catur.libvirt")

INSTALL_HINT = (
    "the libvirt Python bindings are not installed: pip install 'catur[libvirt]' "
    "(they build against libvirt: apt-get install libvirt-dev pkg-config)"
)

_event_loop_lock = threading.Lock()
_event_loop_registered = False


def libvirt_module():
    """The ``libvirt`` module, with its default error printer silenced (errors are raised)."""
    try:
        import libvirt
    except ImportError:
        raise CaturError(INSTALL_HINT) from None
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    return libvirt


def _message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_connection(uri: str, readonly: bool = False):
    """A libvirt connection to ``uri``; a one-line :class:`CaturError` when it cannot be opened."""
    libvirt = libvirt_module()
    try:
        return libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise CaturError(f"cannot connect to libvirt at {uri!r}: {_message(exc)}") from None


def read_host(
    conn, name: str = "libvirt", nodes_per_socket: int = 1, capabilities: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> HostTopology:
    """The host's topology from its capabilities XML (``capabilities`` overrides what the
    connection reports); from ``virNodeGetInfo`` when the capabilities list no NUMA cells."""
    libvirt = libvirt_module()
    source = "capabilities"
    try:
        text = capabilities if capabilities is not None else conn.getCapabilities()
        return parse_capabilities(text, name=name, source=source, warn=warn)
    except NoNumaCells:
        info = conn.getInfo()
        if warn is not None:
            warn(
                f"libvirt reports no NUMA cells; using its node info ({info[4]} nodes, "
                f"{nodes_per_socket} per socket, CPUs numbered node by node)"
            )
        return topology_from_nodeinfo(info, name=name, nodes_per_socket=nodes_per_socket)
    except libvirt.libvirtError as exc:
        raise CaturError(f"cannot read the host's capabilities: {_message(exc)}") from None


def domain_xmls(conn, include_defined: bool = True) -> list[tuple[str, bool]]:
    """``(XML, active)`` of the running domains and, unless ``include_defined`` is false, the
    defined ones that are not running (a defined domain claims its share when it starts)."""
    libvirt = libvirt_module()
    flags = 0 if include_defined else libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    out = []
    for dom in conn.listAllDomains(flags):
        try:
            out.append((dom.XMLDesc(0), bool(dom.isActive())))
        except libvirt.libvirtError as exc:  # it went away between the listing and now
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise CaturError(f"cannot read domain {dom.name()!r}: {_message(exc)}") from None
    return out


def read_usage(conn, host: HostTopology, include_defined: bool = True, exclude_uuid: str | None = None) -> HostUsage:
    """Per-node usage of the host's domains (see :mod:`catur.hypervisor.domain` for the rule);
    defined, stopped domains count too unless ``include_defined`` is false. ``exclude_uuid``
    leaves one domain out (the one being re-placed)."""
    usages = []
    for text, active in domain_xmls(conn, include_defined):
        spec = parse_domain(read_xml(text, "libvirt domain"), "libvirt domain")
        if exclude_uuid and spec.uuid == exclude_uuid:
            continue
        usages.append(domain_usage(spec, host, active))
    usages.sort(key=lambda d: (not d.active, d.name))
    return host_usage(host, usages)


def read_free(conn, host: HostTopology) -> ReportedFree:
    """What libvirt reports free on each node now: ordinary memory (``virNodeGetCellsFreeMemory``)
    and free huge pages of the host's pool sizes (``virNodeGetFreePages``). A driver that
    cannot say (libvirt's test driver on a file, some remote drivers) leaves it out; the fit
    check then works from capacity and the counted domains alone."""
    libvirt = libvirt_module()
    mem = None
    try:
        # libvirt's test driver answers in KiB where the real drivers answer in bytes (its
        # cells' "free" is just their size), so its report is not used.
        if conn.getType().upper() != "TEST":
            mem = tuple(int(conn.getCellsFreeMemory(cell, 1)[0]) // (1 << 20) for cell in host.cell_ids)
    except (libvirt.libvirtError, IndexError, TypeError):
        pass
    pages = []
    if host.hugepages:
        try:
            sizes = sorted(host.hugepages)
            per_cell = [conn.getFreePages(sizes, cell, 1) or {} for cell in host.cell_ids]
            for size in sizes:
                counts = [next(iter(c.values()), {}).get(size) for c in per_cell]
                if all(v is not None for v in counts):
                    pages.append((size, tuple(int(v) for v in counts)))
        except (libvirt.libvirtError, AttributeError, TypeError):
            pass
    return ReportedFree(mem, tuple(pages))


def define(conn, xml: str):
    """Define (persist, not start) a domain from ``xml``; one-line error if libvirt refuses."""
    libvirt = libvirt_module()
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise CaturError(f"libvirt refused to define the domain: {_message(exc)}") from None


def apply_live(dom, host: HostTopology, placement, tuned) -> None:
    """Apply a placement to a running domain, as ``virsh vcpupin --live`` and ``virsh numatune
    --live`` do: each vCPU pinned to its instance's node (``virDomainPinVcpuFlags``), the
    memory nodeset set to the placement's nodes (``virDomainSetNumaParameters``; libvirt
    changes the nodeset of a running domain, not its mode, and not per guest cell: those take
    --config and a restart), and Catur's record set as live metadata, so usage counts it.
    Memory already allocated migrates only as the kernel's cpuset.mems rules allow."""
    import numpy as np
    import xml.etree.ElementTree as ET

    from catur.hypervisor.capabilities import format_cpuset
    from catur.hypervisor.domain import CATUR_NS

    libvirt = libvirt_module()
    if not dom.isActive():
        raise CaturError(f"domain {dom.name()!r} is not running: --live needs a running domain (use --config)")
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    width = max(c for cpus in host.cpus for c in cpus) + 1
    try:
        first = 0
        for i in range(placement.num_instances):
            allowed = set(host.cpus[int(placement.cpu_nodes[i])])
            cpumap = tuple(c in allowed for c in range(width))
            for v in range(first, first + int(placement.vcpus[i])):
                dom.pinVcpuFlags(v, cpumap, live)
            first += int(placement.vcpus[i])
        nodes = sorted({int(n) for n in placement.cpu_nodes} | {int(j) for j in np.flatnonzero(placement.node_mem_mib())})
        dom.setNumaParameters({libvirt.VIR_DOMAIN_NUMA_NODESET: format_cpuset(host.cell_ids[j] for j in nodes)}, live)
        record = tuned.find(f"./metadata/{{{CATUR_NS}}}placement")
        if record is not None:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(record, encoding="unicode"), "catur", CATUR_NS, live)
    except libvirt.libvirtError as exc:
        raise CaturError(f"libvirt refused to tune running domain {dom.name()!r}: {_message(exc)}") from None


def register_event_loop() -> None:
    """libvirt's default event loop, registered once per process (before connections that
    deliver events are opened)."""
    global _event_loop_registered
    with _event_loop_lock:
        if not _event_loop_registered:
            libvirt_module().virEventRegisterDefaultImpl()
            _event_loop_registered = True


class DepartureFollower:
    """Report every domain Catur placed (or was told about) when it leaves the host, once.

    Args:
        uri: libvirt URI to follow.
        depart: Called as ``depart(vm_id, time_s)`` for each departure; ``vm_id`` is the
            domain's UUID (what ``catur libvirt place`` sends as the VM's id). An exception
            is logged and the departure dropped.
        reconnect_s: Seconds between attempts to reach libvirt when it is gone.
        opener: Opens a connection (default: :func:`open_connection`, read-only, which libvirt's
            read-only socket allows without the libvirt group; tests pass their own).
        vm_ids: UUIDs to report although their XML carries no Catur record (domains placed
            through the service by other tools).
        all_domains: Report every domain (the service then gets Departs for VMs it never
            placed, which its trace records as unmatched departures).

    **Which domains.** Those whose XML carries Catur's placement record (written by
    ``catur libvirt place``), read when the follower connects and on every define or start
    event, plus ``vm_ids``. A Depart for a VM the service never placed would only add noise.
    Events arrive late, though: a domain defined and removed in quick succession may be gone
    before its define event is handled, so its record can no longer be read. Such a domain
    is reported when it leaves, as though placed: a lost Depart would leave a placed VM
    resident in the trace for ever, while a stray one is only an unmatched departure.

    **What is a departure.** A domain leaves the host when it is undefined while not running
    (``UNDEFINED``; a rename is not one), when a transient domain stops (it no longer exists),
    or when it is migrated away (``STOPPED`` / ``MIGRATED``). A persistent domain that shuts
    down, crashes or is saved is still defined, still counted by ``place`` (which counts
    defined domains), and will usually start again: a restart is not a departure. Each
    domain is reported once per lifetime; defining it anew (``DEFINED`` / ``ADDED``) starts
    a new one. :meth:`run` blocks; :meth:`request_stop` (a flag, signal-safe) ends it within
    about ``tick_s``.
    """

    def __init__(self, uri: str, depart: Callable[[str, float], None], reconnect_s: float = 5.0,
                 opener: Callable[[str], object] | None = None, tick_s: float = 0.25,
                 vm_ids=(), all_domains: bool = False) -> None:
        self.uri = uri
        self.depart = depart
        self.reconnect_s = reconnect_s
        self.tick_s = tick_s
        self._open = opener or (lambda u: open_connection(u, readonly=True))  # events need no write access
        self._stop = False
        self._closed = False
        self.connection = None
        self.connections = 0  # how many times a connection was opened (reconnects = this - 1)
        self.departed = 0
        self.failures = 0
        self.all_domains = all_domains
        self._known: set[str] = set(vm_ids)
        self._unread: set[str] = set()  # gone before their XML could be read: may be Catur's
        self.read: set[str] = set()  # domains whose XML was read (Catur's or not)
        self._recent: OrderedDict[str, None] = OrderedDict()  # departed in their current lifetime

    def request_stop(self) -> None:
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def _learn(self, dom) -> None:
        """Remember ``dom`` if its XML carries Catur's record, or if it is gone unread."""
        from catur.hypervisor.domain import CATUR_NS

        libvirt = libvirt_module()
        uuid = dom.UUIDString()
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:  # removed before this event was handled
                self._unread.add(uuid)
            return
        self.read.add(uuid)
        if CATUR_NS in xml:
            self._known.add(uuid)
        else:
            self._unread.discard(uuid)

    def _learn_all(self, conn) -> None:
        try:
            for dom in conn.listAllDomains(0):
                self._learn(dom)
        except Exception as exc:
            log.warning("cannot list the domains at %s: %s", self.uri, exc)

    def _leaves(self, libvirt, dom, event: int, detail: int) -> bool:
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            if detail == getattr(libvirt, "VIR_DOMAIN_EVENT_UNDEFINED_RENAMED", 1):
                return False
            try:
                return not dom.isActive()  # undefined while running: it leaves when it stops
            except libvirt.libvirtError:
                return True
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
                return True
            try:
                return not dom.isPersistent()
            except libvirt.libvirtError:  # a transient domain is gone once stopped
                return True
        return False

    def _on_lifecycle(self, conn, dom, event: int, detail: int, opaque) -> None:
        libvirt = libvirt_module()
        uuid = dom.UUIDString()
        if event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
            if detail == libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED:
                self._recent.pop(uuid, None)  # defined anew: a new lifetime
            self._learn(dom)
            return
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self._learn(dom)
            return
        if not self._leaves(libvirt, dom, event, detail) or uuid in self._recent:
            return
        if not (self.all_domains or uuid in self._known or uuid in self._unread):
            log.debug("domain %s (%s) left; not placed by Catur, no Depart", dom.name(), uuid)
            return
        self._unread.discard(uuid)
        self._recent[uuid] = None
        while len(self._recent) > 65536:
            self._recent.popitem(last=False)
        try:
            self.depart(uuid, time.time())
            self.departed += 1
            log.info("domain %s (%s) left: Depart sent", dom.name(), uuid)
        except Exception as exc:  # the service is down or refused: keep following
            self.failures += 1
            log.warning("domain %s (%s) left, but Depart failed: %s", dom.name(), uuid, exc)

    def _on_close(self, conn, reason, opaque) -> None:
        self._closed = True

    def _alive(self, conn) -> bool:
        if self._closed:
            return False
        try:
            return conn.isAlive() == 1
        except Exception:  # a closed or broken connection
            return False

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(min(self.tick_s, max(0.0, end - time.monotonic())))

    def run(self) -> None:
        """Follow events until :meth:`request_stop`; reconnect whenever libvirt goes away."""
        libvirt = libvirt_module()
        register_event_loop()
        # A timer wakes the loop every tick, so a stop request is seen without any event.
        timer = libvirt.virEventAddTimeout(int(self.tick_s * 1000), lambda timer, opaque: None, None)
        down = False
        try:
            while not self._stop:
                try:
                    conn = self._open(self.uri)
                except CaturError as exc:
                    # The first failure of an outage is a warning; the retries are not news.
                    log.log(logging.DEBUG if down else logging.WARNING, "%s; retrying every %.0f s", exc, self.reconnect_s)
                    down = True
                    self._sleep(self.reconnect_s)
                    continue
                down = False
                self._follow(libvirt, conn)
        finally:
            libvirt.virEventRemoveTimeout(timer)

    def _follow(self, libvirt, conn) -> None:
        self.connection, self._closed = conn, False
        self.connections += 1
        try:
            callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        except libvirt.libvirtError as exc:
            log.warning("cannot follow events at %s: %s; retrying in %.0f s", self.uri, _message(exc), self.reconnect_s)
            self._sleep(self.reconnect_s)
            return
        try:
            conn.registerCloseCallback(self._on_close, None)
            conn.setKeepAlive(5, 3)  # a daemon that hangs or vanishes is noticed within ~20 s
        except libvirt.libvirtError:
            pass  # local drivers (test://) have neither; isAlive() still tells
        self._learn_all(conn)
        log.info("following domain lifecycle events at %s", self.uri)
        while not self._stop and self._alive(conn):
            libvirt.virEventRunDefaultImpl()
        if not self._stop:
            log.warning("lost the connection to %s; reconnecting", self.uri)
        for undo in (lambda: conn.domainEventDeregisterAny(callback), conn.unregisterCloseCallback, conn.close):
            try:
                undo()
            except Exception:  # already gone
                pass
        self.connection = None
