"""The paper's placement-quality metrics: COR, RMR, resource defect, anomalies, ticket ratio.

Definitions (docs/explanation/numa-and-metrics.md; our reconstruction of the paper):

* **COR** (core overloading ratio) of a node: ``clip((vCPUs bound − cores) / cores, 0, 1)``.
  A VM's COR is the vCPU-weighted mean of its instances' nodes' COR. It changes over the
  VM's life as neighbours arrive and leave.
* **RMR** (remote memory ratio) of a VM: remote memory / total memory, fixed at placement.
* **Resource defect**: ``alpha · COR + beta · RMR``.
* **Average resource defect** (the headline): the mean over VMs of each VM's defect averaged
  over its lifetime (:class:`CorClock` integrates COR between events, so neighbours arriving
  later count; VMs running at the trace's end are integrated to the end).
* **Defect at placement**: the defect right after the VM is placed (its own vCPUs included).
* **Performance anomaly**: defect at placement above ``anomaly_threshold`` (0.40).
* **Ticket ratio**: mean over VMs of ``sigmoid(c1 · (lifetime defect − c2))``, c1 = 100,
  c2 = 0.10: the chance a VM with that defect makes its owner file a ticket.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from catur.errors import CaturError
from catur.exact import ExactSum, TopValues, percentile_from_top, top_needed
from catur.state import Placement, PlacementBatch


#: A VM placed with a defect above this is a performance anomaly (the paper's 0.40); the shield
#: rejects placements above it and the service counts predicted anomalies against it.
ANOMALY_THRESHOLD = 0.40


@dataclass(frozen=True)
class MetricsConfig:
    """Parameters of the metrics; the defaults are the paper's."""

    anomaly_threshold: float = ANOMALY_THRESHOLD
    ticket_c1: float = 100.0
    ticket_c2: float = 0.10

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CaturError(f"metrics config: {name} must be a finite number, got {value!r}")
        if self.ticket_c1 <= 0:
            raise CaturError(f"metrics config: ticket_c1 must be > 0, got {self.ticket_c1}")


def node_cor(cores: np.ndarray, used_vcpus: np.ndarray) -> np.ndarray:
    """COR of every node; ``used_vcpus`` may be ``[N]`` or ``[H, N]``."""
    # np.minimum/np.maximum, not np.clip: same result, a fraction of the call overhead on the
    # 2-8 element arrays of the decision hot path.
    return np.minimum(np.maximum((used_vcpus - cores) / cores, 0.0), 1.0)


def vm_cor(placement: Placement, cor_of_node: np.ndarray) -> float:
    """A VM's COR: vCPU-weighted mean of its instances' node COR."""
    weights = placement.vcpus
    return float(weights @ cor_of_node[placement.cpu_nodes]) / float(weights.sum())


def cor_after(cores: np.ndarray, used_vcpus: np.ndarray, placement: Placement) -> float:
    """The VM's COR right after ``placement`` is added to a host with ``used_vcpus``."""
    return float(cor_after_batch(cores, used_vcpus, placement.cpu_nodes, placement.vcpus))


def cor_after_batch(
    cores: np.ndarray, used_vcpus: np.ndarray, cpu_nodes: np.ndarray, vcpus: np.ndarray
) -> np.ndarray:
    """:func:`cor_after` for VMs on ``B`` hosts: ``used_vcpus[B, N]``, the placements'
    ``cpu_nodes[B, ..., k]`` and ``vcpus[B, ..., k]`` (several options per host allowed) →
    ``float64[B, ...]``; or one VM on one host (``[N]``, ``[k]``)."""
    if used_vcpus.ndim == 1:
        used = used_vcpus[cpu_nodes]
    else:
        used = used_vcpus[np.arange(used_vcpus.shape[0]).reshape((-1,) + (1,) * (cpu_nodes.ndim - 1)), cpu_nodes]
    node = node_cor(cores[cpu_nodes], used + vcpus)
    return instance_sum(vcpus * node) / vcpus.sum(axis=-1)


def instance_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last axis (a VM's instances), strictly left to right.

    A fixed order, unlike ``@`` (BLAS may fuse multiply-adds) or ``sum`` (pairwise from 8
    terms on): one VM and a batch of VMs, padded with zero terms or not, get the very same
    bits, which lets the batched replay engine match the reference loop exactly.
    """
    total = values[..., 0]
    for i in range(1, values.shape[-1]):
        total = total + values[..., i]
    return total


def defect(alpha, beta, cor, rmr):
    """Resource defect ``alpha·COR + beta·RMR`` (scalars or arrays)."""
    return alpha * cor + beta * rmr


def placement_costs(
    cores: np.ndarray, used_vcpus: np.ndarray, batch: PlacementBatch, alpha, beta
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(COR, RMR, defect)`` at placement of each VM of ``batch`` (``float64[B]`` each), on
    hosts with ``used_vcpus[B, N]`` before it is applied; ``alpha``/``beta`` per VM."""
    cor = cor_after_batch(cores, used_vcpus, batch.cpu_nodes, batch.vcpus)
    rmr = batch.rmr()
    return cor, rmr, defect(alpha, beta, cor, rmr)


def defect_at_placement(
    cores: np.ndarray, used_vcpus: np.ndarray, placement: Placement, alpha: float, beta: float
) -> float:
    """The placed VM's defect, before its placement is applied to ``used_vcpus``."""
    return defect(alpha, beta, cor_after(cores, used_vcpus, placement), placement.rmr())


def ticket_probability(defects: np.ndarray, config: MetricsConfig = MetricsConfig()) -> np.ndarray:
    """``sigmoid(c1 · (defect − c2))`` per VM, computed without overflow."""
    x = config.ticket_c1 * (np.asarray(defects, dtype=float) - config.ticket_c2)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class CorClock:
    """Integrates every node's COR over time on one host, for lifetime-averaged defects.

    Node COR is piecewise constant between events. The clock keeps, per node, the running
    integral ``∫ COR dt``; a VM remembers the weighted integral when it arrives, and its
    lifetime mean COR is the growth of that integral divided by its lifetime.

    Use: :meth:`advance` to the event time, change the host's usage, then :meth:`set_usage`.

    **Many hosts.** Given an array of ``H`` start times, the clock keeps ``H`` hosts at once
    (``now[H]``, ``integral[H, N]``), each on its own time line, for the batched replay
    engine. :meth:`advance`, :meth:`set_usage` and :meth:`weighted_integrals` then take
    ``hosts`` (a slice or an index array) and per-host values, and do for each host exactly
    the arithmetic of the one-host clock, so both give the same bits.
    """

    def __init__(self, cores: np.ndarray, start_s: float | np.ndarray = 0.0) -> None:
        self.cores = cores
        if np.ndim(start_s) == 0:
            self.now = float(start_s)
            shape: tuple[int, ...] = (cores.shape[0],)
        else:
            self.now = np.array(start_s, dtype=float)
            shape = (self.now.shape[0], cores.shape[0])
        self.integral = np.zeros(shape, dtype=float)
        self.current = np.zeros(shape, dtype=float)

    def advance(self, t: float | np.ndarray, hosts: slice | np.ndarray | None = None) -> None:
        if hosts is None:  # one host
            if t < self.now:
                raise CaturError(f"events out of order: time {t} after {self.now}")
            self.integral += self.current * (t - self.now)
            self.now = float(t)
            return
        now = self.now[hosts]
        late = t < now
        if late.any():
            i = int(np.argmax(late))
            raise CaturError(f"events out of order: time {t[i]} after {now[i]} (host {i} of the batch)")
        self.integral[hosts] += self.current[hosts] * (t - now)[:, None]
        self.now[hosts] = t

    def set_usage(self, used_vcpus: np.ndarray, hosts: slice | np.ndarray | None = None) -> None:
        if hosts is None:
            self.current = node_cor(self.cores, used_vcpus)
        else:
            self.current[hosts] = node_cor(self.cores, used_vcpus)

    def weighted_integral(self, placement: Placement) -> float:
        """``Σ_i vcpus_i · ∫COR(node_i)`` so far (divide by vCPUs and time for the mean)."""
        return float(instance_sum(placement.vcpus * self.integral[placement.cpu_nodes]))

    def weighted_integrals(self, hosts: np.ndarray, cpu_nodes: np.ndarray, vcpus: np.ndarray) -> np.ndarray:
        """:meth:`weighted_integral` of one VM on each of ``hosts`` (``cpu_nodes``/``vcpus``
        ``[h, k]``; zero-vCPU padding instances add exactly nothing)."""
        return instance_sum(vcpus * self.integral[hosts[:, None], cpu_nodes])


def lifetime_mean_cor(grown, total_vcpus, lifetime, cor_at_placement):
    """A VM's COR averaged over its life: the growth of its weighted COR integral, per vCPU,
    per second (scalars or arrays). A VM that leaves the instant it arrives keeps its COR at
    placement."""
    # Divide only where the VM lived; elsewhere the output keeps the COR at placement.
    return np.divide(grown / total_vcpus, lifetime, out=np.array(cor_at_placement, dtype=float), where=lifetime > 0)


@dataclass(frozen=True)
class Summary:
    """Aggregate metrics of one policy over a set of VMs (fractions, not percent)."""

    avg_defect: float
    defect_at_placement: float
    p99_defect: float
    ticket_ratio: float
    anomalies: int
    vms: int

    def to_dict(self) -> dict:
        return asdict(self)


class SummaryAccumulator:
    """Folds batches of per-VM defects into one :class:`~catur.metrics.Summary`, exactly.

    Args:
        config: The metrics parameters (anomaly threshold, ticket sigmoid).
        capacity: An upper bound on the number of VMs that will be added; it fixes how many
            top values are kept for the p99 (about 1% of ``capacity``). Adding more raises.

    ``add(lifetime, placement)`` in any number of batches, in any order, then ``result()``:
    the same :class:`Summary` as :func:`catur.metrics.summarize` of all values at once.
    """

    def __init__(self, config: MetricsConfig = MetricsConfig(), capacity: int = 0) -> None:
        if capacity < 0:
            raise CaturError(f"summary: capacity must be >= 0, got {capacity}")
        self.config = config
        self.capacity = int(capacity)
        self.lifetime = ExactSum()
        self.placement = ExactSum()
        self.ticket = ExactSum()
        self.anomalies = 0
        self.top = TopValues(top_needed(self.capacity))

    @property
    def vms(self) -> int:
        return self.lifetime.count

    def add(self, lifetime_defects: np.ndarray, placement_defects: np.ndarray) -> "SummaryAccumulator":
        lifetime = np.asarray(lifetime_defects, dtype=float)
        at_placement = np.asarray(placement_defects, dtype=float)
        if lifetime.shape != at_placement.shape:
            raise CaturError("lifetime and placement defects must have one value per VM each")
        if self.vms + lifetime.size > self.capacity:
            raise CaturError(
                f"summary: {self.vms + lifetime.size} VMs added but capacity is {self.capacity}"
            )
        self.lifetime.add(lifetime)
        self.placement.add(at_placement)
        self.ticket.add(ticket_probability(lifetime, self.config))
        self.anomalies += int((at_placement > self.config.anomaly_threshold).sum())
        self.top.add(lifetime)
        return self

    def result(self) -> Summary:
        n = self.vms
        if n == 0:
            return Summary(0.0, 0.0, 0.0, 0.0, 0, 0)
        return Summary(
            avg_defect=self.lifetime.value() / n,
            defect_at_placement=self.placement.value() / n,
            p99_defect=percentile_from_top(self.top.values(), n, 99.0),
            ticket_ratio=self.ticket.value() / n,
            anomalies=self.anomalies,
            vms=n,
        )


def summarize(
    lifetime_defects: np.ndarray,
    placement_defects: np.ndarray,
    config: MetricsConfig = MetricsConfig(),
) -> Summary:
    """Aggregate per-VM defects into the paper's headline figures.

    ``p99_defect`` is the 99th percentile of lifetime-averaged defect; ``anomalies`` counts VMs
    whose defect at placement exceeds ``config.anomaly_threshold``. Means are exactly rounded
    sums divided by the count, and the p99 is numpy's linear percentile, both computed by
    :class:`SummaryAccumulator` — the one-batch case of the streamed evaluation's summary,
    so both paths give identical numbers.
    """
    lifetime = np.asarray(lifetime_defects, dtype=float)
    return SummaryAccumulator(config, capacity=lifetime.size).add(lifetime, placement_defects).result()
