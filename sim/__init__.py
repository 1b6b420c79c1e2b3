"""Replay and evaluation (``catur.sim``): traces replayed through placement policies, host by host.

Everything that turns a trace into the numbers of ``catur evaluate`` lives here, and it all
goes through one entry point, :func:`catur.sim.pipeline.evaluate`: a
:class:`~catur.sim.workload.Workload` (a trace or a synthetic workload, a window of days, a
cluster) and some policies in, an :class:`~catur.sim.evaluate.Evaluation` out. On the way:

* **admission** (:mod:`~catur.sim.admission`, :mod:`~catur.sim.cluster`,
  :mod:`~catur.sim.groups`, :mod:`~catur.sim.start_state`): which host each VM runs on, chosen
  NUMA-agnostically and the same for every policy, so the comparison is fair;
* **replay** (:mod:`~catur.sim.batched`, the batched engine; :mod:`~catur.sim.replay`, the
  reference loop; :mod:`~catur.sim.batch_policy`, any policy as one batched call): each host's
  arrivals and departures through a policy, with the paper's metrics integrated over each
  VM's lifetime;
* **scale** (:mod:`~catur.sim.streaming`, :mod:`~catur.sim.distributed`): traces too big for
  memory, and Ray clusters;
* **bounds** (:mod:`~catur.sim.oracle`): the k-step, lifetime and foresight oracles;
* **learning** (:mod:`~catur.sim.env`, :mod:`~catur.sim.shaping`): the gymnasium environments
  (``import catur`` registers their ids) and reward shaping;
* **output** (:mod:`~catur.sim.report`): the table and the plots; and
  :mod:`~catur.sim.remote_replay`, a replay through a running service.

It imports the core, :mod:`catur.traces` and the service's client, never the training code or
the CLI (docs/explanation/architecture.md).
"""
