"""A small Python client of the placement service.

::

    from catur.service.client import PlacementClient
    from catur.request import VMRequest
    from catur.topology import get_preset

    with PlacementClient("127.0.0.1:50051", timeout=1.0) as client:
        decision = client.place(get_preset("amd-2s-nps2"), [10, 0, 4, 0], [20480, 0, 8192, 0],
                                VMRequest(vcpus=8, mem_mib=16384), host_id="host-17")
        decision.placement.cpu_nodes, decision.placement.mem_mib, decision.primitive

:meth:`PlacementClient.place` returns a :class:`~catur.service.convert.RemoteDecision`: the
same fields as an in-process :class:`~catur.decision.Decision` (its ``placement`` is a
:class:`~catur.state.Placement`), plus the echoed ``request_id``. Errors arrive as
:class:`grpc.RpcError` (``.code()`` INVALID_ARGUMENT with a message naming the field, ...).

:meth:`PlacementClient.decider` gives a replay decider, so
:func:`catur.sim.replay.replay_host` can drive a host's trace through a running service the
way a hypervisor would, keeping the host state on the client side.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from catur.errors import CaturError

from catur.request import VMRequest
from catur.state import Placement
from catur.topology import Topology
from catur.v1 import placement_pb2 as pb
from catur.v1 import placement_pb2_grpc as pb_grpc

from catur.service.convert import RemoteDecision, decision_from_proto, depart_request, place_request, topology_to_proto

DEFAULT_TIMEOUT_S = 5.0

#: Retries of the shipped service config: UNAVAILABLE only (a replica stopping, or not
#: reachable), never the codes a retry cannot fix, and no hedging (one attempt at a time). A
#: placement is safe to retry: UNAVAILABLE answers come before any work.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(round_robin: bool = False, service: str = "catur.v1.Placement") -> str:
    """The gRPC service config clients of the placement service should use (JSON text, for
    the channel option ``grpc.service_config``): :data:`RETRY_POLICY` on every method of
    ``service``, and with ``round_robin`` a call-by-call spread over every address the target
    resolves to (``ipv4:10.0.0.1:50051,10.0.0.2:50051``, or a DNS name with several records),
    so a replica that stops is skipped and its calls retried on the other; with round_robin the
    channel also watches each replica's health, and stops sending to one that drains."""
    config: dict = {"methodConfig": [{"name": [{"service": service}], "retryPolicy": RETRY_POLICY}]}
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        # Client-side health checking (a health Watch per replica): a replica that reports
        # NOT_SERVING (a stop's drain) gets no new calls, so by the time its port closes no
        # call is on its way to it.
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


def channel_target(target: str | list[str] | tuple[str, ...]) -> tuple[str, bool]:
    """A channel target for one ``HOST:PORT`` or several (joined as an ``ipv4:`` / ``ipv6:``
    list), and whether it names several addresses (then round_robin is worth it)."""
    if isinstance(target, str):
        return target, False
    if not target:
        raise CaturError("give at least one HOST:PORT target")
    if len(target) == 1:
        return target[0], False
    scheme = "ipv6" if any(t.startswith("[") for t in target) else "ipv4"
    return f"{scheme}:{','.join(target)}", True


def _pem(value: str | Path | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class PlacementClient:
    """A channel to a placement service, plaintext or TLS, that retries UNAVAILABLE.

    The channel carries :func:`service_config`: calls answered UNAVAILABLE (a replica that is
    stopping, or a connection that could not be made) are retried with backoff, up to
    ``RETRY_POLICY["maxAttempts"]`` attempts in all; given several addresses the calls are
    spread round-robin over them and a stopping replica's calls go to the others.

    Args:
        target: ``HOST:PORT`` of the service, or a list of them (replicas; IP addresses).
        timeout: Deadline of each call in seconds (``None`` = none).
        tls: Use TLS. Implied by any of the next three arguments.
        root_certificates: PEM (bytes or a file path) of the CA that signed the server's
            certificate; ``None`` with ``tls`` = the system's roots.
        client_cert, client_key: PEM of this client's certificate and key, for mutual TLS.
        server_name: Override the name checked against the server's certificate.
        channel: Use this channel instead of opening one (the other options are ignored).
        retries: Use the shipped service config (default); False = none (one attempt each).
    """

    def __init__(
        self,
        target: str | list[str] | tuple[str, ...],
        timeout: float | None = DEFAULT_TIMEOUT_S,
        *,
        tls: bool = False,
        root_certificates: str | Path | bytes | None = None,
        client_cert: str | Path | bytes | None = None,
        client_key: str | Path | bytes | None = None,
        server_name: str | None = None,
        channel: grpc.Channel | None = None,
        retries: bool = True,
    ) -> None:
        target, several = channel_target(target)
        self.target = target
        self.timeout = timeout
        if channel is None:
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            if retries:
                options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config(round_robin=several))]
            if tls or root_certificates is not None or client_cert is not None or client_key is not None:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=_pem(root_certificates),
                    private_key=_pem(client_key),
                    certificate_chain=_pem(client_cert),
                )
                channel = grpc.secure_channel(target, creds, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
        self.channel = channel
        self.stub = pb_grpc.PlacementStub(channel)
        self._topologies: dict[Topology, pb.HostTopology] = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "PlacementClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _host_topology(self, topology: Topology) -> pb.HostTopology:
        msg = self._topologies.get(topology)
        if msg is None:
            msg = self._topologies[topology] = topology_to_proto(topology)
        return msg

    def request(
        self, topology, used_vcpus, used_mem_mib, request: VMRequest, host_id=None, request_id=None, **collect
    ) -> pb.PlaceRequest:
        """The :class:`PlaceRequest` message :meth:`place` would send (``collect``: ``vm_id``,
        ``cluster``, ``time_s``, ``residents``, ``resident_vms``)."""
        host = topology if isinstance(topology, pb.HostTopology) else self._host_topology(topology)
        return place_request(host, used_vcpus, used_mem_mib, request, host_id, request_id, **collect)

    def place(
        self,
        topology: Topology | pb.HostTopology,
        used_vcpus,
        used_mem_mib,
        request: VMRequest,
        host_id: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        *,
        vm_id: str | None = None,
        cluster: str | None = None,
        time_s: float | None = None,
        residents=None,
        resident_vms=None,
        free_mem_mib=None,
        fit_only: bool = False,
    ) -> RemoteDecision:
        """Place ``request`` on a host of ``topology`` with this per-node usage (vCPUs, MiB).

        ``residents`` (optional): how many VMs are bound to each node; a policy that weighs
        them (``resident-greedy``, the shipped scorer) uses them, and the answer's
        ``residents_used`` says so. ``resident_vms`` (optional, instead or as well): the VMs
        on the host, each ``{"vcpus": [per node], "mem_mib": [per node], "age_s": s}``; the
        counts are then derived from it (``inputs_used`` lists ``resident_vms``).
        ``vm_id`` (joins this arrival with its :meth:`depart`), ``cluster`` and ``time_s``
        (default: the server's clock) are recorded by a service that collects traces.
        ``free_mem_mib`` (optional): what the host reports free per node, for the answer's
        ``fit``; ``fit_only``: ask whether (and how well) it fits, recording nothing."""
        msg = self.request(
            topology, used_vcpus, used_mem_mib, request, host_id, request_id, vm_id=vm_id, cluster=cluster, time_s=time_s,
            residents=residents, resident_vms=resident_vms, free_mem_mib=free_mem_mib, fit_only=fit_only,
        )
        return decision_from_proto(self.stub.Place(msg, timeout=timeout or self.timeout))

    def depart(self, vm_id: str, host_id: str | None = None, time_s: float | None = None, timeout: float | None = None) -> bool:
        """Tell the service that VM ``vm_id`` left ``host_id`` (at ``time_s``; default: the
        server's clock). True when a collecting service queued the record; False when the
        service does not collect (or dropped it, its queue full)."""
        msg = depart_request(vm_id, host_id, time_s)
        return self.stub.Depart(msg, timeout=timeout or self.timeout).recorded

    def place_batch(self, items: list[pb.PlaceRequest], timeout: float | None = None) -> list[RemoteDecision | pb.ItemError]:
        """Send many :meth:`request` messages in one call; a decision or an error per item."""
        resp = self.stub.PlaceBatch(pb.PlaceBatchRequest(items=items), timeout=timeout or self.timeout)
        return [
            decision_from_proto(r.placement) if r.WhichOneof("outcome") == "placement" else r.error for r in resp.results
        ]

    def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=timeout or self.timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The health service's status name for ``service`` (``""`` = the whole server)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        resp = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout or self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def decider(self, host_id: str | None = None):
        """A replay decider ``(topology, used_vcpus, used_mem_mib, request, rng=None) -> Placement``
        that asks the service, under ``host_id``, sending the host's resident counts too."""

        def decide(topology, used_vcpus, used_mem_mib, request, rng=None, residents=None) -> Placement:
            return self.place(topology, used_vcpus, used_mem_mib, request, host_id=host_id, residents=residents).placement

        decide.uses_residents = True  # type: ignore[attr-defined]
        return decide
