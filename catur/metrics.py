"""The paper's placement-quality metrics: COR, RMR, resource defect, anomalies, ticket ratio.

Definitions (DESIGN.md §2, our reconstruction of the paper):

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
from catur.state import Placement


@dataclass(frozen=True)
class MetricsConfig:
    """Parameters of the metrics; the defaults are the paper's."""

    anomaly_threshold: float = 0.40
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
    nodes = placement.cpu_nodes
    node = node_cor(cores[nodes], used_vcpus[nodes] + placement.vcpus)
    return float(placement.vcpus @ node) / float(placement.vcpus.sum())


def defect(alpha, beta, cor, rmr):
    """Resource defect ``alpha·COR + beta·RMR`` (scalars or arrays)."""
    return alpha * cor + beta * rmr


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
    """

    def __init__(self, cores: np.ndarray, start_s: float = 0.0) -> None:
        self.cores = cores
        self.now = float(start_s)
        self.integral = np.zeros(cores.shape[0], dtype=float)
        self.current = np.zeros(cores.shape[0], dtype=float)

    def advance(self, t: float) -> None:
        if t < self.now:
            raise CaturError(f"events out of order: time {t} after {self.now}")
        self.integral += self.current * (t - self.now)
        self.now = float(t)

    def set_usage(self, used_vcpus: np.ndarray) -> None:
        self.current = node_cor(self.cores, used_vcpus)

    def weighted_integral(self, placement: Placement) -> float:
        """``Σ_i vcpus_i · ∫COR(node_i)`` so far (divide by vCPUs and time for the mean)."""
        return float(placement.vcpus @ self.integral[placement.cpu_nodes])


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


def summarize(
    lifetime_defects: np.ndarray,
    placement_defects: np.ndarray,
    config: MetricsConfig = MetricsConfig(),
) -> Summary:
    """Aggregate per-VM defects into the paper's headline figures.

    ``p99_defect`` is the 99th percentile of lifetime-averaged defect; ``anomalies`` counts VMs
    whose defect at placement exceeds ``config.anomaly_threshold``.
    """
    lifetime = np.asarray(lifetime_defects, dtype=float)
    at_placement = np.asarray(placement_defects, dtype=float)
    if lifetime.shape != at_placement.shape:
        raise CaturError("lifetime and placement defects must have one value per VM each")
    if lifetime.size == 0:
        return Summary(0.0, 0.0, 0.0, 0.0, 0, 0)
    return Summary(
        avg_defect=float(lifetime.mean()),
        defect_at_placement=float(at_placement.mean()),
        p99_defect=float(np.percentile(lifetime, 99)),
        ticket_ratio=float(ticket_probability(lifetime, config).mean()),
        anomalies=int((at_placement > config.anomaly_threshold).sum()),
        vms=int(lifetime.size),
    )
