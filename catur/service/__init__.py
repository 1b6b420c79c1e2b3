"""The gRPC placement service (``catur.v1.Placement``): server, client, conversions, metrics.

* :mod:`catur.service.convert` — proto ↔ Catur types, validation that names the bad field;
* :mod:`catur.service.servicer` — the thin servicer (deadlines, errors, per-host windows);
* :mod:`catur.service.serving` — the serving policy, hot reload, the registry watch;
* :mod:`catur.service.telemetry` — Prometheus metrics;
* :mod:`catur.service.admission` — load shedding: the adaptive concurrency limit from the
  measured capacity, and the deadline-aware line of calls waiting for a worker;
* :mod:`catur.service.interceptor` — every call's admission (concurrency limit, deadlines,
  refusal while stopping), malformed bodies (INVALID_ARGUMENT), one message per unary call,
  status codes as the client sees them and time from arrival;
* :mod:`catur.service.server` — :func:`~catur.service.server.create_server`, health (with
  ``List``), reflection, TLS, the three-phase graceful stop and the signal pipe;
* :mod:`catur.service.client` — :class:`~catur.service.client.PlacementClient` and the
  service config clients should use (retries of UNAVAILABLE, round_robin over replicas);
* :mod:`catur.service.collector` — optional trace collection: answered placements and
  departure notices written to rotated parquet files, never blocking a placement;
* :mod:`catur.service.protogen` — regenerating the checked-in stubs in :mod:`catur.v1`.

Replaying a trace through a running service is a client of the simulator, so it lives next
to it (:mod:`catur.sim.remote_replay`); the commands are in :mod:`catur.cli.service`. The
service imports the core and the registry, never the simulator or training.

The contract is ``proto/catur/v1/placement.proto``. Nothing here decides anything: decisions
are :class:`catur.decision.Decider`'s, the same code offline replay runs.
"""

#: Where ``catur serve`` listens and the client commands connect unless told otherwise.
DEFAULT_LISTEN = "127.0.0.1:50051"
