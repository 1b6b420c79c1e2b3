"""Replaying a trace through a running placement service, as a fleet of hypervisors would.

Host admission (:func:`catur.sim.admission.admit`) assigns VMs to hosts exactly as offline
evaluation does; then each host's event stream is replayed by
:func:`catur.sim.replay.replay_host` — host state kept here, on the client side — with a
decider that asks the service (``host_id = prefix + host number``, so the service keeps that
host's recent-request window for its shield). The per-VM defects are summarised by the same
:func:`catur.metrics.summarize` as offline evaluation, so for the same decider (same model,
shield and gate) the numbers are identical: the service runs the very same
:class:`~catur.decision.Decider` on the very same state.

Hosts are independent, so ``concurrency`` threads replay different hosts at once; each host's
requests stay strictly sequential, and results are merged in host order, so the numbers do not
depend on ``concurrency``.

Each Place carries the VM's trace id (``vm_id``), its host's ``cluster`` and its trace arrival
time (``time_s``), and each departure in the window is sent as a ``Depart`` notice with its
trace time, in the order :meth:`~catur.sim.replay.HostTrace.events` gives (the order
``replay_host`` walks). A replay through a service that collects traces therefore leaves
behind a collected trace equal to the replayed one: same VMs, sizes and times (departures
past the window's end are not sent, as the replay cuts them). Departures are sent only when
the service reports that it collects (``ServerInfo.collecting``), unless told otherwise.

A service keeps its host windows across replays: replaying the same trace twice against one
running service (with the shield at depth >= 2) starts the second run with the first run's
windows. Use a different ``host_prefix`` per run (``catur replay --host-prefix``) for
independent runs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from catur.errors import CaturError
from catur.metrics import MetricsConfig
from catur.sim.admission import HostStream
from catur.sim.evaluate import HostResult, PolicyResult, merge_host_results
from catur.sim.batch_policy import count_interventions, intervention_counters
from catur.sim.replay import replay_host

from catur.service.client import PlacementClient


def replay_remote(
    streams: list[HostStream],
    client: PlacementClient,
    name: str,
    *,
    seed: int = 0,
    config: MetricsConfig = MetricsConfig(),
    concurrency: int = 1,
    host_prefix: str = "",
    progress: Callable[[int], None] | None = None,
    vm_ids: np.ndarray | Sequence | None = None,
    clusters: Sequence[str] | None = None,
    departures: bool | None = None,
) -> PolicyResult:
    """Replay every host stream through the service; the counted VMs' result, named ``name``.

    ``vm_ids`` gives the trace's ``vm_id`` per trace row (``stream.rows`` index it; default:
    the row number) and ``clusters`` the cluster label per host number (default none): both
    are sent for trace collection. ``departures``: send ``Depart`` notices (None = only when
    the service collects traces).

    ``seed`` is offset by the host number per host, as in :func:`catur.sim.evaluate.evaluate_policies`.
    Like offline evaluation of a :class:`~catur.decision.DeciderSpec`, the result's ``extra``
    counts how often the shield and the gate stepped in (``shield_interventions``,
    ``shield_depth1``, ``unshielded``, ``gated``; warm-up VMs included), read from the answers.
    """
    if concurrency < 1:
        raise CaturError(f"concurrency must be >= 1, got {concurrency}")
    if not any(stream.counted.any() for stream in streams):
        raise CaturError("nothing to replay: no admitted VM arrives in the window")
    if departures is None:
        departures = client.server_info().collecting

    def one(stream: HostStream):
        host_id = f"{host_prefix}{stream.host}"
        cluster = clusters[stream.host] if clusters is not None else ""
        counters = intervention_counters()
        arrival: list = [0.0, -1]  # the time and VM of the arrival being decided

        def vm_id(vm: int) -> str:
            row = int(stream.rows[vm])
            return str(vm_ids[row]) if vm_ids is not None else str(row)

        def on_event(t: float, arriving: bool, vm: int) -> None:
            if arriving:
                arrival[:] = [t, vm]
            elif departures:
                client.depart(vm_id(vm), host_id, t)

        def decide(topology, used_vcpus, used_mem_mib, request, rng=None, residents=None):
            t, vm = arrival
            decision = client.place(
                topology, used_vcpus, used_mem_mib, request, host_id=host_id, vm_id=vm_id(vm), cluster=cluster, time_s=t,
                residents=residents,
            )
            count_interventions(counters, decision)
            return decision.placement

        decide.uses_residents = True  # like a hypervisor, send how many VMs each node holds
        replay = replay_host(stream.topology, stream.trace, decide, seed=seed + stream.host, on_event=on_event)
        replay.counters = counters
        if progress:
            progress(stream.trace.num_vms)
        return HostResult.of(stream, replay)

    if concurrency == 1:
        parts = [one(stream) for stream in streams]
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="catur-replay") as pool:
            parts = list(pool.map(one, streams))
    return merge_host_results(name, parts, config)
