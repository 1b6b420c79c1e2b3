"""Pure conversions between the ``catur.v1`` messages and Catur's own types, with validation.

Server side, :func:`parse_place_request` turns a :class:`~catur.v1.placement_pb2.PlaceRequest`
into a :class:`ParsedRequest` (a :class:`~catur.topology.Topology`, two ``int64[N]`` usage
arrays and a :class:`~catur.request.VMRequest`) or raises :class:`InvalidRequest`, whose
message names the offending field by its path in the message (``usage.used_vcpus[2]``,
``topology.explicit.nodes[0].cores``, ``vm.alpha``). :func:`decision_to_proto` builds the
answer. Client side, :func:`place_request` and :func:`decision_from_proto` do the reverse.

What is refused, and why (the limits are module constants, reported by ``GetServerInfo``):

* missing ``topology``, ``usage`` or ``vm``; an unknown preset name;
* an explicit topology with no nodes or more than :data:`MAX_NODES`; node cores outside
  ``1..MAX_NODE_CORES``, memory outside ``1..MAX_NODE_MEM_MIB`` MiB, a negative socket; a
  distance list that is not ``N*N`` long, not 10 on the diagonal, not ``11..255`` off it, or
  not symmetric (the :class:`~catur.topology.Topology` rules, plus the SLIT byte range);
* usage lists whose length is not the node count; negative usage; usage above
  :data:`SANITY_FACTOR` (10) times a node's capacity. A node may legitimately be overcommitted
  (vCPUs always, memory when a VM fit nowhere), but ten times its capacity is a caller bug —
  usage in the wrong unit (KiB for MiB), or stale state — and placing against it would only
  hide that bug behind a plausible-looking answer;
* a VM with vCPUs or memory < 1 or above :data:`SANITY_FACTOR` times the host's total;
  ``alpha``/``beta`` not finite or outside ``0..MAX_WEIGHT``; ``vnuma`` outside
  ``1..min(nodes, vcpus)``;
* ``usage.free_mem_mib`` (optional) that is not one value per node, or negative;
* ``request_id``/``host_id``/``vm_id``/``cluster``/``topology.explicit.name`` longer than :data:`MAX_ID_CHARS`
  characters; a ``time_s`` that is not finite;
* a ``DepartRequest`` (:func:`parse_depart_request`) without ``vm_id``, with ids too long or a
  ``time_s`` that is not finite.

Integers travel as ``int64``, so a negative size reaches the server and gets a message naming
it, instead of wrapping around in an unsigned field.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from catur.decision import Decision
from catur.errors import CaturError
from catur.fit import FitVerdict, fit_placement, free_memory
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.state import Placement
from catur.topology import LOCAL_DISTANCE, PRESETS, Topology, default_distances
from catur.v1 import placement_pb2 as pb

MAX_NODES = 64
MAX_NODE_CORES = 4096
MAX_NODE_MEM_MIB = 1 << 30  # 1 PiB per NUMA node
MAX_DISTANCE = 255  # SLIT entries are bytes
SANITY_FACTOR = 10
MAX_WEIGHT = 1000.0
MAX_ID_CHARS = 256
EXPLICIT_CACHE_SIZE = 256


class InvalidRequest(CaturError):
    """A request the service refuses; the message names the field. Maps to INVALID_ARGUMENT."""


@dataclass(frozen=True, eq=False)
class ParsedRequest:
    """A validated :class:`PlaceRequest` in Catur's own types."""

    topology: Topology
    used_vcpus: np.ndarray
    used_mem_mib: np.ndarray
    request: VMRequest
    request_id: str
    host_id: str
    vm_id: str = ""
    cluster: str = ""
    time_s: float | None = None  # None: the request carried no time
    residents: np.ndarray | None = None  # per-node resident VM counts; None: not sent
    residents_from_list: bool = False  # the counts were derived from usage.resident_vms
    free_mem_mib: np.ndarray | None = None  # per-node free memory the host reported; None: not sent
    fit_only: bool = False  # answer the fit, record nothing

    def fit(self, placement: Placement) -> FitVerdict:
        """The placement's :class:`~catur.fit.FitVerdict` against this request's free memory."""
        free = free_memory(self.topology.node_mem_mib, self.used_mem_mib, self.free_mem_mib)
        return fit_placement(placement.node_mem_mib(), free)


@dataclass(frozen=True)
class ParsedDepart:
    """A validated :class:`DepartRequest`."""

    host_id: str
    vm_id: str
    time_s: float | None = None  # None: the notice carried no time


# --- proto -> Catur (server side) ----------------------------------------------------------------


class TopologyCache:
    """Explicit topologies by their serialized bytes, so a host sending the same nodes on every
    request is validated once (least recently used are dropped past ``size``)."""

    def __init__(self, size: int = EXPLICIT_CACHE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, Topology] = OrderedDict()

    def get(self, msg: pb.ExplicitTopology) -> Topology:
        key = msg.SerializeToString(deterministic=True)
        with self._lock:
            topology = self._items.get(key)
            if topology is not None:
                self._items.move_to_end(key)
                return topology
        topology = explicit_topology(msg)
        with self._lock:
            self._items[key] = topology
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return topology


def _check_int(value: int, field: str, low: int, high: int, what: str = "") -> int:
    if not low <= value <= high:
        raise InvalidRequest(f"{field} must be in {low}..{high}{what}, got {value}")
    return int(value)


def explicit_topology(msg: pb.ExplicitTopology) -> Topology:
    """Validate an explicit topology (errors name ``topology.explicit.*``)."""
    where = "topology.explicit"
    n = len(msg.nodes)
    if n == 0:
        raise InvalidRequest(f"{where}.nodes is empty; give at least one NUMA node")
    if n > MAX_NODES:
        raise InvalidRequest(f"{where}.nodes has {n} entries; at most {MAX_NODES} NUMA nodes are supported")
    cores = np.empty(n, dtype=np.int64)
    mem = np.empty(n, dtype=np.int64)
    socket = np.empty(n, dtype=np.int64)
    for i, node in enumerate(msg.nodes):
        cores[i] = _check_int(node.cores, f"{where}.nodes[{i}].cores", 1, MAX_NODE_CORES, " (logical CPUs)")
        mem[i] = _check_int(node.mem_mib, f"{where}.nodes[{i}].mem_mib", 1, MAX_NODE_MEM_MIB, " MiB")
        socket[i] = _check_int(node.socket, f"{where}.nodes[{i}].socket", 0, MAX_NODES - 1)
    if len(msg.distances) == 0:
        dist = default_distances(socket)
    else:
        if len(msg.distances) != n * n:
            raise InvalidRequest(
                f"{where}.distances has {len(msg.distances)} values; {n} nodes need {n}x{n} = {n * n} (row-major)"
            )
        dist = np.array(msg.distances, dtype=np.int64).reshape(n, n)
        for i in range(n):
            for j in range(n):
                d = int(dist[i, j])
                if i == j and d != LOCAL_DISTANCE:
                    raise InvalidRequest(f"{where}.distances[{i * n + j}] (node {i} to itself) must be {LOCAL_DISTANCE}, got {d}")
                if i != j and not LOCAL_DISTANCE < d <= MAX_DISTANCE:
                    raise InvalidRequest(
                        f"{where}.distances[{i * n + j}] (node {i} to {j}) must be in "
                        f"{LOCAL_DISTANCE + 1}..{MAX_DISTANCE}, got {d}"
                    )
                if d != int(dist[j, i]):
                    raise InvalidRequest(
                        f"{where}.distances is not symmetric: node {i} to {j} is {d}, {j} to {i} is {int(dist[j, i])}"
                    )
    name = _check_id(msg.name, f"{where}.name") or "explicit"
    try:
        return Topology(name, cores, mem, socket, dist)
    except CaturError as exc:  # pragma: no cover - the checks above are stricter
        raise InvalidRequest(f"{where}: {exc}") from exc


def parse_topology(msg: pb.PlaceRequest, cache: TopologyCache | None = None) -> Topology:
    if not msg.HasField("topology"):
        raise InvalidRequest("topology is required (a preset name or explicit nodes)")
    kind = msg.topology.WhichOneof("kind")
    if kind == "preset":
        topology = PRESETS.get(msg.topology.preset)
        if topology is None:
            raise InvalidRequest(
                f"topology.preset {msg.topology.preset[:MAX_ID_CHARS]!r} is not a preset; known: {', '.join(sorted(PRESETS))}"
            )
        return topology
    if kind == "explicit":
        return cache.get(msg.topology.explicit) if cache is not None else explicit_topology(msg.topology.explicit)
    raise InvalidRequest("topology is empty: set topology.preset or topology.explicit")


def parse_usage(msg: pb.PlaceRequest, topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    if not msg.HasField("usage"):
        raise InvalidRequest(
            f"usage is required: used_vcpus and used_mem_mib, one value per node ({topology.num_nodes} nodes; zeros for an empty host)"
        )
    n = topology.num_nodes
    out = []
    # Node lists are short (<= MAX_NODES): plain Python checks beat numpy's per-call overhead.
    for label, values, capacity, unit in (
        ("used_vcpus", msg.usage.used_vcpus, topology.node_cores, "vCPUs"),
        ("used_mem_mib", msg.usage.used_mem_mib, topology.node_mem_mib, "MiB"),
    ):
        if len(values) != n:
            raise InvalidRequest(f"usage.{label} has {len(values)} values; the topology has {n} nodes")
        values = list(values)
        for i, (used, cap) in enumerate(zip(values, capacity.tolist())):
            if used < 0:
                raise InvalidRequest(f"usage.{label}[{i}] must be >= 0, got {used}")
            if used > SANITY_FACTOR * cap:
                raise InvalidRequest(
                    f"usage.{label}[{i}] is {used} {unit}, more than {SANITY_FACTOR}x node {i}'s "
                    f"capacity of {cap} (wrong unit, or stale host state?)"
                )
        out.append(np.array(values, dtype=np.int64))
    return out[0], out[1]


def parse_free_mem(msg: pb.PlaceRequest, topology: Topology) -> np.ndarray | None:
    """``usage.free_mem_mib`` checked (``None``: not sent)."""
    values = list(msg.usage.free_mem_mib)
    if not values:
        return None
    n = topology.num_nodes
    if len(values) != n:
        raise InvalidRequest(f"usage.free_mem_mib has {len(values)} values; the topology has {n} nodes (or send none)")
    for i, value in enumerate(values):
        if value < 0:
            raise InvalidRequest(f"usage.free_mem_mib[{i}] must be >= 0, got {value}")
    return np.array(values, dtype=np.int64)


def parse_residents(msg: pb.PlaceRequest, topology: Topology) -> tuple[np.ndarray | None, bool]:
    """``(counts int64[N] or None, derived from the list)``: the per-node resident counts of
    ``usage.residents`` or, when the request lists ``usage.resident_vms``, derived from that
    list (a VM counts on every node its vCPUs are bound to). ``None`` when the request has
    neither (an older client): then the decision is made from the totals alone."""
    values = list(msg.usage.residents)
    listed = parse_resident_vms(msg, topology)
    if not values and listed is None:
        return None, False
    n = topology.num_nodes
    if values and len(values) != n:
        raise InvalidRequest(f"usage.residents has {len(values)} values; the topology has {n} nodes (or send none)")
    for i, (count, vcpus) in enumerate(zip(values, msg.usage.used_vcpus)):
        if count < 0:
            raise InvalidRequest(f"usage.residents[{i}] must be >= 0, got {count}")
        if count > vcpus:
            raise InvalidRequest(
                f"usage.residents[{i}] is {count} VMs but usage.used_vcpus[{i}] is {vcpus}: every resident binds >= 1 vCPU"
            )
    if listed is None:
        return np.array(values, dtype=np.int64), False
    derived = (listed > 0).sum(axis=0).astype(np.int64)
    if values and values != derived.tolist():
        raise InvalidRequest(
            f"usage.residents {values} disagree with the {len(listed)} usage.resident_vms, which put {derived.tolist()} "
            "VMs on the nodes (send one of the two, or both consistent)"
        )
    return derived, True


def parse_resident_vms(msg: pb.PlaceRequest, topology: Topology) -> np.ndarray | None:
    """``usage.resident_vms`` checked, as their vCPUs per node ``int64[R, N]`` (``None``: no
    list). Each entry names its index; the list's vCPUs and memory per node must fit within
    the usage totals."""
    vms = msg.usage.resident_vms
    if not vms:
        return None
    n = topology.num_nodes
    vcpus = np.zeros((len(vms), n), dtype=np.int64)
    mem = np.zeros((len(vms), n), dtype=np.int64)
    for r, vm in enumerate(vms):
        field = f"usage.resident_vms[{r}]"
        if len(vm.vcpus) != n:
            raise InvalidRequest(f"{field}.vcpus has {len(vm.vcpus)} values; the topology has {n} nodes")
        if vm.mem_mib and len(vm.mem_mib) != n:
            raise InvalidRequest(f"{field}.mem_mib has {len(vm.mem_mib)} values; the topology has {n} nodes (or send none)")
        for label, values in (("vcpus", vm.vcpus), ("mem_mib", vm.mem_mib)):
            for i, value in enumerate(values):
                if value < 0:
                    raise InvalidRequest(f"{field}.{label}[{i}] must be >= 0, got {value}")
        if not any(vm.vcpus):
            raise InvalidRequest(f"{field}.vcpus are all 0: a VM on the host binds at least one vCPU")
        if vm.HasField("age_s") and not (math.isfinite(vm.age_s) and vm.age_s >= 0):
            raise InvalidRequest(f"{field}.age_s must be a finite number of seconds >= 0, got {vm.age_s!r}")
        vcpus[r] = list(vm.vcpus)
        if vm.mem_mib:
            mem[r] = list(vm.mem_mib)
    for label, listed, totals in (("vcpus", vcpus, msg.usage.used_vcpus), ("mem_mib", mem, msg.usage.used_mem_mib)):
        over = np.flatnonzero(listed.sum(axis=0) > np.asarray(totals, dtype=np.int64))
        if over.size:
            i = int(over[0])
            raise InvalidRequest(
                f"usage.resident_vms put {int(listed[:, i].sum())} {label} on node {i}, more than "
                f"usage.used_{label}[{i}] = {totals[i]} (the totals include every listed VM)"
            )
    return vcpus


def parse_vm(msg: pb.PlaceRequest, topology: Topology) -> VMRequest:
    if not msg.HasField("vm"):
        raise InvalidRequest("vm is required (vcpus, mem_mib)")
    vm = msg.vm
    total_cores, total_mem = sum(topology.node_cores.tolist()), sum(topology.node_mem_mib.tolist())
    vcpus = _check_int(vm.vcpus, "vm.vcpus", 1, SANITY_FACTOR * total_cores, f" ({SANITY_FACTOR}x the host's cores)")
    mem = _check_int(vm.mem_mib, "vm.mem_mib", 1, SANITY_FACTOR * total_mem, f" MiB ({SANITY_FACTOR}x the host's memory)")
    weights = []
    for label in ("alpha", "beta"):
        value = getattr(vm, label) if vm.HasField(label) else 1.0
        if not math.isfinite(value) or not 0.0 <= value <= MAX_WEIGHT:
            raise InvalidRequest(f"vm.{label} must be finite and in 0..{MAX_WEIGHT:g}, got {value!r}")
        weights.append(float(value))
    vnuma = None
    if vm.HasField("vnuma"):
        most = min(topology.num_nodes, vcpus)
        vnuma = _check_int(vm.vnuma, "vm.vnuma", 1, most, f" (at most the {topology.num_nodes} nodes and the VM's vCPUs)")
    return VMRequest(vcpus, mem, weights[0], weights[1], vnuma)


def _check_id(value: str, field: str) -> str:
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(f"{field} has {len(value)} characters; at most {MAX_ID_CHARS}")
    return value


def _check_time(msg, field: str = "time_s") -> float | None:
    if not msg.HasField(field):
        return None
    value = getattr(msg, field)
    if not math.isfinite(value):
        raise InvalidRequest(f"{field} must be a finite number of seconds, got {value!r}")
    return float(value)


def parse_place_request(msg: pb.PlaceRequest, cache: TopologyCache | None = None) -> ParsedRequest:
    """Validate a :class:`PlaceRequest`; raise :class:`InvalidRequest` naming the bad field."""
    request_id = _check_id(msg.request_id, "request_id")
    host_id = _check_id(msg.host_id, "host_id")
    vm_id = _check_id(msg.vm_id, "vm_id")
    cluster = _check_id(msg.cluster, "cluster")
    time_s = _check_time(msg)
    topology = parse_topology(msg, cache)
    used_vcpus, used_mem = parse_usage(msg, topology)
    residents, from_list = parse_residents(msg, topology)
    request = parse_vm(msg, topology)
    return ParsedRequest(topology, used_vcpus, used_mem, request, request_id, host_id, vm_id, cluster, time_s, residents, from_list,
                         parse_free_mem(msg, topology), msg.fit_only)


def parse_depart_request(msg: pb.DepartRequest) -> ParsedDepart:
    """Validate a :class:`DepartRequest`; raise :class:`InvalidRequest` naming the bad field."""
    host_id = _check_id(msg.host_id, "host_id")
    vm_id = _check_id(msg.vm_id, "vm_id")
    if not vm_id:
        raise InvalidRequest("vm_id is required: the id the VM was placed under (PlaceRequest.vm_id)")
    return ParsedDepart(host_id, vm_id, _check_time(msg))


# --- Catur -> proto (server side) ----------------------------------------------------------------


def inputs_used(residents_used: bool, from_list: bool = False) -> list[str]:
    """What a decision was made from (``PlaceResponse.inputs_used``)."""
    if not residents_used:
        return ["usage"]
    return ["usage", "residents", "resident_vms"] if from_list else ["usage", "residents"]


def decision_to_proto(decision: Decision, request_id: str = "", residents_from_list: bool = False,
                      fit: FitVerdict | None = None) -> pb.PlaceResponse:
    p = decision.placement
    resp = pb.PlaceResponse(
        primitive=decision.primitive,
        policy=decision.policy,
        model_version=decision.model_version,
        request_id=request_id,
        scores=list(decision.scores),
        inputs_used=inputs_used(decision.residents_used, residents_from_list),
    )
    for node, vcpus, row in zip(p.cpu_nodes.tolist(), p.vcpus.tolist(), p.mem_mib.tolist()):
        resp.instances.add(cpu_node=node, vcpus=vcpus, mem_mib=row)
    resp.shield.intervened = decision.shield_intervened
    resp.shield.fallback = decision.shield_fallback
    resp.shield.reason = decision.shield_reason
    resp.gate.fired = decision.gated
    resp.gate.distance = decision.gate_distance
    resp.predicted.cor = decision.cor
    resp.predicted.rmr = decision.rmr
    resp.predicted.defect = decision.defect
    if fit is not None:
        resp.fit.fits = fit.fits
        resp.fit.needed_mem_mib = fit.needed
        resp.fit.free_mem_mib.extend(fit.free.tolist())
        resp.fit.short = fit.short
    return resp


def explicit_to_proto(topology: Topology) -> pb.ExplicitTopology:
    msg = pb.ExplicitTopology(name=topology.name, distances=topology.distance.ravel().tolist())
    for cores, mem, socket in zip(topology.node_cores.tolist(), topology.node_mem_mib.tolist(), topology.node_socket.tolist()):
        msg.nodes.add(cores=cores, mem_mib=mem, socket=socket)
    return msg


# --- Catur -> proto -> Catur (client side) -------------------------------------------------------


def topology_to_proto(topology: Topology) -> pb.HostTopology:
    """A preset by name when ``topology`` is exactly that preset, else the explicit nodes."""
    preset = PRESETS.get(topology.name)
    if preset is not None and preset == topology:
        return pb.HostTopology(preset=topology.name)
    return pb.HostTopology(explicit=explicit_to_proto(topology))


def place_request(
    topology: Topology | pb.HostTopology,
    used_vcpus,
    used_mem_mib,
    request: VMRequest,
    host_id: str | None = None,
    request_id: str | None = None,
    *,
    vm_id: str | None = None,
    cluster: str | None = None,
    time_s: float | None = None,
    residents=None,
    resident_vms=None,
    free_mem_mib=None,
    fit_only: bool = False,
) -> pb.PlaceRequest:
    """The :class:`PlaceRequest` for placing ``request`` on a host with this usage.

    ``free_mem_mib`` (optional): memory free per node as the host reports it (the fit check
    caps each node's free memory by it); ``fit_only``: ask whether and how well it fits,
    recording nothing.

    ``residents`` (per-node resident VM counts) and ``resident_vms`` (the VMs on the host,
    each a mapping with ``vcpus`` per node and optionally ``mem_mib`` per node and ``age_s``)
    are optional; ``vm_id``, ``cluster`` and ``time_s`` matter only to a service that
    collects traces."""
    host = topology if isinstance(topology, pb.HostTopology) else topology_to_proto(topology)
    vm = pb.VM(vcpus=int(request.vcpus), mem_mib=int(request.mem_mib))
    if request.alpha != 1.0:
        vm.alpha = request.alpha
    if request.beta != 1.0:
        vm.beta = request.beta
    if request.vnuma is not None:
        vm.vnuma = int(request.vnuma)
    msg = pb.PlaceRequest(
        topology=host,
        usage=pb.NodeUsage(
            used_vcpus=np.asarray(used_vcpus, dtype=np.int64).tolist(),
            used_mem_mib=np.asarray(used_mem_mib, dtype=np.int64).tolist(),
            residents=[] if residents is None else np.asarray(residents, dtype=np.int64).tolist(),
            resident_vms=[resident_vm(vm) for vm in resident_vms or ()],
            free_mem_mib=[] if free_mem_mib is None else np.asarray(free_mem_mib, dtype=np.int64).tolist(),
        ),
        vm=vm,
        request_id=request_id or "",
        host_id=host_id or "",
        vm_id=vm_id or "",
        cluster=cluster or "",
        fit_only=bool(fit_only),
    )
    if time_s is not None:
        msg.time_s = float(time_s)
    return msg


def resident_vm(vm) -> pb.ResidentVM:
    """A :class:`ResidentVM` from a mapping (``vcpus`` per node; ``mem_mib`` per node and
    ``age_s``, optional), or the message itself."""
    if isinstance(vm, pb.ResidentVM):
        return vm
    msg = pb.ResidentVM(
        vcpus=np.asarray(vm["vcpus"], dtype=np.int64).tolist(),
        mem_mib=np.asarray(vm.get("mem_mib", ()), dtype=np.int64).tolist(),
    )
    if vm.get("age_s") is not None:
        msg.age_s = float(vm["age_s"])
    return msg


def depart_request(vm_id: str, host_id: str | None = None, time_s: float | None = None) -> pb.DepartRequest:
    """The :class:`DepartRequest` telling the service that ``vm_id`` left ``host_id``."""
    msg = pb.DepartRequest(vm_id=vm_id, host_id=host_id or "")
    if time_s is not None:
        msg.time_s = float(time_s)
    return msg


@dataclass(frozen=True)
class RemoteDecision(Decision):
    """A :class:`~catur.decision.Decision` as the service answered it, plus the echoed id."""

    request_id: str = ""
    inputs_used: tuple[str, ...] = ("usage",)  # the response's inputs_used
    fit: FitVerdict | None = None  # the response's fit (None: a service older than 0.4)

    def to_dict(self) -> dict:
        """The answer as plain JSON-able data (what ``catur place`` prints)."""
        return {
            "request_id": self.request_id,
            "primitive": self.primitive,
            "policy": self.policy,
            "model_version": self.model_version,
            "instances": [
                {"cpu_node": int(c), "vcpus": int(v), "mem_mib": [int(m) for m in row]}
                for c, v, row in zip(self.placement.cpu_nodes, self.placement.vcpus, self.placement.mem_mib)
            ],
            "shield": {"intervened": self.shield_intervened, "fallback": self.shield_fallback, "reason": self.shield_reason},
            "gate": {"fired": self.gated, "distance": self.gate_distance},
            "predicted": {"cor": self.cor, "rmr": self.rmr, "defect": self.defect},
            "scores": dict(zip(PRIMITIVES, self.scores)),
            "inputs_used": list(self.inputs_used),
            "fit": None if self.fit is None else self.fit.to_dict(),
        }


def decision_from_proto(resp: pb.PlaceResponse) -> RemoteDecision:
    """Rebuild a decision (with its :class:`~catur.state.Placement`) from a :class:`PlaceResponse`."""
    if not resp.instances:
        raise CaturError("the service answered with no vNUMA instance")
    placement = Placement(
        np.array([i.cpu_node for i in resp.instances], dtype=np.int64),
        np.array([i.vcpus for i in resp.instances], dtype=np.int64),
        np.array([list(i.mem_mib) for i in resp.instances], dtype=np.int64),
        resp.policy,
    )
    return RemoteDecision(
        placement=placement,
        primitive=resp.primitive,
        scores=tuple(resp.scores),
        policy=resp.policy,
        shield_intervened=resp.shield.intervened,
        shield_fallback=resp.shield.fallback,
        shield_reason=resp.shield.reason,
        gated=resp.gate.fired,
        gate_distance=resp.gate.distance,
        cor=resp.predicted.cor,
        rmr=resp.predicted.rmr,
        defect=resp.predicted.defect,
        model_version=resp.model_version,
        residents_used="residents" in resp.inputs_used,
        request_id=resp.request_id,
        inputs_used=tuple(resp.inputs_used),
        fit=FitVerdict(resp.fit.fits, resp.fit.needed_mem_mib, np.array(resp.fit.free_mem_mib, dtype=np.int64), resp.fit.short)
        if resp.HasField("fit") else None,
    )
