"""A Nova scheduler weigher that asks Catur how well a VM fits each candidate host.

Nova's scheduler filters hosts (``NUMATopologyFilter`` checks that the instance's NUMA cells
fit a host at all), then *weighs* the survivors and picks the heaviest. This weigher adds
Catur's view: for every candidate it sends the host's NUMA cells and their usage (from the
``HostState`` Nova already has) and the flavor to the Catur service as one ``PlaceBatch`` of
``fit_only`` requests (questions: the service records nothing), and weighs each host by

* ``1 - defect`` when the VM fits the host's free memory (defect = alpha*COR + beta*RMR of
  the placement Catur would choose there: lower is better, so the host where the VM would
  suffer least weighs most);
* ``-1`` when it does not fit (below every host where it fits);
* ``0`` when the host reports no NUMA topology or the service cannot be reached (the
  weigher never fails a scheduling request; it logs and stays neutral).

Nova normalizes each weigher's weights over the candidates and multiplies them by
``weight_multiplier`` (``CATUR_WEIGHT_MULTIPLIER``, default 1.0).

Enable it in ``nova.conf`` (the package must be importable by nova-scheduler)::

    [filter_scheduler]
    weight_classes = nova.scheduler.weights.all_weighers,catur_nova_weigher.CaturNUMAWeigher

and point it at the service with ``CATUR_TARGET`` (default ``127.0.0.1:50051``) and
``CATUR_TIMEOUT`` (seconds, default 2) in nova-scheduler's environment.

What it reads (Nova's objects, by attribute, so it runs against any release that has them):

* ``host_state.numa_topology.cells[i]``: ``cpuset`` (shared CPUs), ``pcpuset`` (dedicated),
  ``memory`` and ``memory_usage`` (MiB), ``cpu_usage``, ``pinned_cpus``, ``mempages``
  (``size_kb``, ``total``, ``used``, ``reserved``), ``socket`` (absent on old releases: all
  cells are then taken as one socket);
* ``spec_obj.flavor``: ``vcpus``, ``memory_mb``, ``extra_specs`` (``hw:numa_nodes``,
  ``hw:cpu_policy``, ``hw:mem_page_size``).

With ``hw:cpu_policy=dedicated`` a cell's capacity is its ``pcpuset`` and its use its
``pinned_cpus``; otherwise (``shared``, the default) its ``cpuset`` and ``cpu_usage`` — the
shared set is where unpinned instance vCPUs float. With a huge page size
(``hw:mem_page_size`` = a size, or ``large``: the largest pool with free pages) each cell's
free memory is its free pages of that size (``free_mem_mib``); ``small``/``any`` or none:
ordinary memory.

**What it cannot do.** A weigher only ranks hosts. Which host *cell* each guest cell lands on
is chosen again on the compute node, in ``nova/compute/claims.py`` through
``hardware.numa_fit_instance_to_host``, which knows nothing of Catur; ``NUMATopologyFilter``
works on a copy of the request, so nothing a scheduler plugin sets survives. Making Nova use
Catur's cell choice needs a compute-side patch: in the claim, ask Catur (as this weigher does)
and fit the instance's cells in the order of Catur's answer before falling back to Nova's own
search. Catur's memory spill (one guest cell's memory over several host cells) has no
equivalent in Nova, which requires each guest cell to fit one host cell.
"""

from __future__ import annotations

import logging
import os

from nova.scheduler import weights  # provided by nova-scheduler (a stand-in in Catur's tests)

LOG = logging.getLogger(__name__)

NOT_FIT = -1.0
NEUTRAL = 0.0


def _spec(extra_specs, key: str, default=None):
    return (extra_specs or {}).get(key, default)


def page_size_kib(value, cells) -> int | None:
    """The huge page size ``hw:mem_page_size`` asks for, in KiB (``None``: ordinary memory).

    ``small``/``any``/unset: ordinary memory; ``large``: the largest size above 4 KiB with
    free pages on some cell; a number (KiB) or a number with a unit (``2MB``, ``1GB``)."""
    if value in (None, "", "small", "any"):
        return None
    if value == "large":
        sizes = sorted({p.size_kb for c in cells for p in getattr(c, "mempages", None) or ()
                        if p.size_kb > 4 and p.total - p.used - getattr(p, "reserved", 0) > 0})
        return sizes[-1] if sizes else None
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    for suffix, factor in (("K", 1), ("M", 1024), ("G", 1024 * 1024)):
        if text.endswith(suffix):
            return int(text[:-1]) * factor
    return int(text)


def host_request(host_state, spec_obj, host_id: str = ""):
    """The ``fit_only`` :class:`~catur.v1.placement_pb2.PlaceRequest` for this host and
    flavor, or ``None`` when the host reports no NUMA topology."""
    from catur.request import VMRequest
    from catur.service.convert import place_request
    from catur.topology import Topology, default_distances

    numa = getattr(host_state, "numa_topology", None)
    cells = list(getattr(numa, "cells", None) or ())
    if not cells:
        return None
    flavor = spec_obj.flavor
    extra = getattr(flavor, "extra_specs", None) or {}
    dedicated = _spec(extra, "hw:cpu_policy", "shared") == "dedicated"
    cores, used_vcpus, mem, used_mem, sockets = [], [], [], [], []
    for cell in cells:
        if dedicated:
            cores.append(len(cell.pcpuset))
            used_vcpus.append(len(getattr(cell, "pinned_cpus", ()) or ()))
        else:
            cores.append(len(cell.cpuset))
            used_vcpus.append(int(cell.cpu_usage))
        mem.append(int(cell.memory))
        used_mem.append(min(int(cell.memory_usage), 10 * int(cell.memory)))
        sockets.append(getattr(cell, "socket", None))
    # A cell with no CPUs of this policy cannot take a guest cell: one CPU, ten times overloaded
    # (the most the service accepts), so Catur places nothing there unless it must.
    used_vcpus = [u if c else 10 for u, c in zip(used_vcpus, cores)]
    cores = [c or 1 for c in cores]
    socket = [0 if s is None else int(s) for s in sockets]
    topology = Topology(f"nova:{host_id}", cores, mem, socket, default_distances(socket))
    free = None
    size = page_size_kib(_spec(extra, "hw:mem_page_size"), cells)
    if size is not None:
        free = []
        for cell in cells:
            pages = [p for p in getattr(cell, "mempages", None) or () if p.size_kb == size]
            free.append(sum((p.total - p.used - getattr(p, "reserved", 0)) * p.size_kb // 1024 for p in pages))
    vnuma = _spec(extra, "hw:numa_nodes")
    request = VMRequest(int(flavor.vcpus), int(flavor.memory_mb), vnuma=int(vnuma) if vnuma else None)
    return place_request(topology, used_vcpus, used_mem, request, host_id=host_id, free_mem_mib=free, fit_only=True)


def weight_of(answer) -> float:
    """A host's weight from the service's answer (see the module docstring)."""
    if answer is None or not hasattr(answer, "fit"):
        return NEUTRAL
    if answer.fit is not None and not answer.fit.fits:
        return NOT_FIT
    return 1.0 - float(answer.defect)


class CaturNUMAWeigher(weights.BaseHostWeigher):
    """Weigh hosts by how well Catur would place the VM on their NUMA cells (see the module)."""

    minval = NOT_FIT
    maxval = 1.0

    def __init__(self, client=None) -> None:
        self._client = client

    def client(self):
        if self._client is None:
            from catur.service.client import PlacementClient

            self._client = PlacementClient(os.environ.get("CATUR_TARGET", "127.0.0.1:50051"),
                                           timeout=float(os.environ.get("CATUR_TIMEOUT", "2")))
        return self._client

    def weight_multiplier(self, host_state=None) -> float:
        return float(os.environ.get("CATUR_WEIGHT_MULTIPLIER", "1.0"))

    def weigh_objects(self, weighed_obj_list, weight_properties):
        """One ``PlaceBatch`` for all candidates (Nova calls this once per request)."""
        hosts = [w.obj for w in weighed_obj_list]
        requests = [host_request(h, weight_properties, getattr(h, "host", "") or "") for h in hosts]
        asked = [r for r in requests if r is not None]
        answers = iter(())
        if asked:
            try:
                answers = iter(self.client().place_batch(asked))
            except Exception as exc:  # never fail scheduling over a weigher
                LOG.warning("Catur service unreachable, weighing neutrally: %s", exc)
                return [NEUTRAL] * len(hosts)
        out = []
        for request in requests:
            if request is None:
                out.append(NEUTRAL)
                continue
            answer = next(answers)
            if not hasattr(answer, "placement"):  # an ItemError: this host's data was refused
                LOG.warning("Catur refused host %s: %s", request.host_id, getattr(answer, "message", answer))
                out.append(NEUTRAL)
            else:
                out.append(weight_of(answer))
        return out

    def _weigh_object(self, host_state, weight_properties):
        return self.weigh_objects([type("W", (), {"obj": host_state})()], weight_properties)[0]
