"""Placement state of many hosts, and the placements that change it.

:class:`HostsState` holds the usage of ``H`` hosts that share one :class:`~catur.topology.Topology`
as integer arrays, ``used_vcpus[host, node]`` and ``used_mem_mib[host, node]``, plus
``residents[host, node]``, how many VMs have a vNUMA instance bound to each node: one array
per field, never an object per node, so that array code can work across hosts. The resident
counts matter because the headline metric averages every VM's defect over its life: a VM
placed on a node raises the COR of every VM already there, and the totals alone cannot say how
many VMs that is (:mod:`catur.resident`).

A :class:`Placement` is the answer for one VM: for each vNUMA instance, the node its vCPUs
are bound to and how its memory is spread over all nodes. :func:`apply` adds it to a host and
:func:`release` takes it away again; both are exact (integer arithmetic), so applying and then
releasing gives back the very same state. A :class:`PlacementBatch` is the array form of
many placements (one per host of a batch, or the four primitives' candidates per host), as
the batched replay engine and the batched decision code build them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError
from catur.topology import Topology


@dataclass(frozen=True, eq=False)
class Placement:
    """Where one VM goes.

    Attributes:
        cpu_nodes: ``int64[k]`` the node each vNUMA instance's vCPUs are bound to (distinct).
        vcpus: ``int64[k]`` vCPUs of each instance.
        mem_mib: ``int64[k, N]`` MiB of each instance's memory on each node; row ``i`` sums
            to instance ``i``'s memory.
        policy: Name of the policy that chose it.
    """

    cpu_nodes: np.ndarray
    vcpus: np.ndarray
    mem_mib: np.ndarray
    policy: str = ""

    @property
    def num_instances(self) -> int:
        return int(self.cpu_nodes.shape[0])

    @property
    def total_vcpus(self) -> int:
        return int(self.vcpus.sum())

    @property
    def total_mem_mib(self) -> int:
        return int(self.mem_mib.sum())

    def node_vcpus(self, num_nodes: int) -> np.ndarray:
        """``int64[N]`` vCPUs this VM binds to each node."""
        out = np.zeros(num_nodes, dtype=np.int64)
        out[self.cpu_nodes] = self.vcpus
        return out

    def node_mem_mib(self) -> np.ndarray:
        """``int64[N]`` MiB this VM takes on each node."""
        return self.mem_mib.sum(axis=0)

    def remote_mem_mib(self) -> int:
        """Memory not on its own instance's CPU node."""
        return int(remote_mem_mib(self.cpu_nodes, self.mem_mib))

    def rmr(self) -> float:
        """Remote memory ratio: remote memory / total memory (fixed at placement)."""
        return self.remote_mem_mib() / self.total_mem_mib

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "instances": [
                {
                    "cpu_node": int(c),
                    "vcpus": int(v),
                    "mem_mib": {int(j): int(m) for j, m in enumerate(row) if m},
                }
                for c, v, row in zip(self.cpu_nodes, self.vcpus, self.mem_mib)
            ],
        }


def remote_mem_mib(cpu_nodes: np.ndarray, mem_mib: np.ndarray) -> np.ndarray:
    """MiB not on their own instance's CPU node: ``cpu_nodes[..., k]``, ``mem_mib[..., k, N]``
    → ``int64[...]`` (one VM, or a batch of them with a leading axis)."""
    elsewhere = cpu_nodes[..., None] != np.arange(mem_mib.shape[-1])
    return (mem_mib * elsewhere).sum(axis=(-2, -1))


@dataclass(frozen=True, eq=False)
class PlacementBatch:
    """Placements of many VMs with the same instance count ``k``, as arrays.

    The array form of :class:`Placement` with leading axes: ``cpu_nodes[..., k]``,
    ``vcpus[..., k]``, ``mem_mib[..., k, N]``. Usually the leading axis is the host of a
    batch (``[B]``: one VM per host); the four primitives' candidates for ``B`` hosts are a
    ``[B, 4]`` batch. The placement core builds these (:func:`catur.placement.place_batch`)
    and a single :class:`Placement` is one entry (:meth:`placement`), so one placement and a
    batch of them come from the same code.
    """

    cpu_nodes: np.ndarray
    vcpus: np.ndarray
    mem_mib: np.ndarray
    policy: str = ""

    def __len__(self) -> int:
        return int(self.cpu_nodes.shape[0])

    def placement(self, i: int | tuple[int, ...], policy: str | None = None) -> Placement:
        """Entry ``i`` (an index over the leading axes) as a :class:`Placement`."""
        return Placement(
            self.cpu_nodes[i], np.array(self.vcpus[i]), self.mem_mib[i], self.policy if policy is None else policy
        )

    def node_vcpus(self, num_nodes: int) -> np.ndarray:
        """``int64[..., N]`` vCPUs each VM binds to each node."""
        # One-hot over nodes, weighted by each instance's vCPUs (instance nodes are distinct).
        onehot = self.cpu_nodes[..., None] == np.arange(num_nodes)
        return (onehot * self.vcpus[..., None]).sum(axis=-2)

    def node_mem_mib(self) -> np.ndarray:
        """``int64[..., N]`` MiB each VM takes on each node."""
        return self.mem_mib.sum(axis=-2)

    def rmr(self) -> np.ndarray:
        """``float64[...]`` remote memory ratio of each VM (the same division as :meth:`Placement.rmr`)."""
        return remote_mem_mib(self.cpu_nodes, self.mem_mib) / self.mem_mib.sum(axis=(-2, -1))

    def select(self, choice: np.ndarray, policy: str = "") -> "PlacementBatch":
        """From a ``[B, P]`` batch of options, option ``choice[b]`` of each row ``b``: ``[B]``."""
        rows = np.arange(choice.shape[0])
        return PlacementBatch(
            self.cpu_nodes[rows, choice], self.vcpus[rows, choice], self.mem_mib[rows, choice], policy
        )


class HostsState:
    """Usage of ``num_hosts`` hosts of one topology.

    ``used_vcpus`` may exceed a node's cores (vCPU overcommit); ``used_mem_mib`` may exceed a
    node's memory only when a VM could not fit anywhere on its host. Free amounts
    (:meth:`free_cores`, :meth:`free_mem_mib`) are therefore allowed to be negative.
    """

    def __init__(self, topology: Topology, num_hosts: int = 1) -> None:
        if num_hosts < 1:
            raise CaturError(f"num_hosts must be >= 1, got {num_hosts}")
        self.topology = topology
        self.used_vcpus = np.zeros((num_hosts, topology.num_nodes), dtype=np.int64)
        self.used_mem_mib = np.zeros((num_hosts, topology.num_nodes), dtype=np.int64)
        self.residents = np.zeros((num_hosts, topology.num_nodes), dtype=np.int64)

    @classmethod
    def from_usage(cls, topology: Topology, used_vcpus, used_mem_mib, residents=None) -> "HostsState":
        """A state from given usage arrays (``[N]`` for one host or ``[H, N]``), validated.
        ``residents`` (same shape) defaults to zeros: unknown."""
        vcpus = np.atleast_2d(np.asarray(used_vcpus))
        mem = np.atleast_2d(np.asarray(used_mem_mib))
        counts = np.zeros_like(vcpus) if residents is None else np.atleast_2d(np.asarray(residents))
        n = topology.num_nodes
        for label, arr in (("used_vcpus", vcpus), ("used_mem_mib", mem), ("residents", counts)):
            if arr.ndim != 2 or arr.shape[1] != n:
                raise CaturError(
                    f"{label} has shape {np.asarray(arr).shape}; topology {topology.name!r} "
                    f"has {n} nodes"
                )
            if not np.isfinite(arr.astype(float)).all() or (arr < 0).any():
                raise CaturError(f"{label} must be finite and >= 0, got {arr.tolist()}")
            if (arr != np.round(arr)).any():  # would be truncated silently by the int64 copy
                raise CaturError(f"{label} must be whole numbers, got {arr.tolist()}")
        if vcpus.shape != mem.shape or vcpus.shape != counts.shape:
            raise CaturError(f"used_vcpus {vcpus.shape}, used_mem_mib {mem.shape} and residents {counts.shape} differ")
        state = cls(topology, vcpus.shape[0])
        state.used_vcpus[:] = vcpus
        state.used_mem_mib[:] = mem
        state.residents[:] = counts
        return state

    @property
    def num_hosts(self) -> int:
        return int(self.used_vcpus.shape[0])

    def free_cores(self, host: int) -> np.ndarray:
        return self.topology.node_cores - self.used_vcpus[host]

    def free_mem_mib(self, host: int) -> np.ndarray:
        return self.topology.node_mem_mib - self.used_mem_mib[host]

    def copy(self) -> "HostsState":
        twin = HostsState(self.topology, self.num_hosts)
        twin.used_vcpus[:] = self.used_vcpus
        twin.used_mem_mib[:] = self.used_mem_mib
        twin.residents[:] = self.residents
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostsState):
            return NotImplemented
        return (
            self.topology == other.topology
            and np.array_equal(self.used_vcpus, other.used_vcpus)
            and np.array_equal(self.used_mem_mib, other.used_mem_mib)
            and np.array_equal(self.residents, other.residents)
        )


def apply(state: HostsState, host: int, placement: Placement) -> None:
    """Add a placed VM to ``host`` (in place): its vCPUs, its memory, and one resident on
    each node an instance of it is bound to."""
    state.used_vcpus[host, placement.cpu_nodes] += placement.vcpus
    state.used_mem_mib[host] += placement.node_mem_mib()
    state.residents[host, placement.cpu_nodes] += 1


def add_usage(state: HostsState, hosts: np.ndarray, node_vcpus: np.ndarray, node_mem_mib: np.ndarray) -> None:
    """:func:`apply` for one VM on each of several distinct ``hosts`` at once, given as the
    per-node usage it adds (``[len(hosts), N]``; :meth:`PlacementBatch.node_vcpus` and
    :meth:`~PlacementBatch.node_mem_mib`): the batched replay engine's bookkeeping. A node
    that gets vCPUs gets a resident (a VM's instances sit on distinct nodes)."""
    state.used_vcpus[hosts] += node_vcpus
    state.used_mem_mib[hosts] += node_mem_mib
    state.residents[hosts] += node_vcpus > 0


def remove_usage(state: HostsState, hosts: np.ndarray, node_vcpus: np.ndarray, node_mem_mib: np.ndarray) -> None:
    """:func:`release` for one VM on each of several distinct ``hosts`` at once (the usage
    :func:`add_usage` added for them; not re-checked, as the engine only removes what it added)."""
    state.used_vcpus[hosts] -= node_vcpus
    state.used_mem_mib[hosts] -= node_mem_mib
    state.residents[hosts] -= node_vcpus > 0


def release(state: HostsState, host: int, placement: Placement) -> None:
    """Remove a VM placed earlier from ``host`` (in place).

    Raises :class:`CaturError` if the host does not hold that much, which means the VM was
    never applied there or was released twice; the state is left untouched in that case.
    """
    vcpus = state.used_vcpus[host].copy()
    vcpus[placement.cpu_nodes] -= placement.vcpus
    mem = state.used_mem_mib[host] - placement.node_mem_mib()
    residents = state.residents[host].copy()
    residents[placement.cpu_nodes] -= 1
    if (vcpus < 0).any() or (mem < 0).any() or (residents < 0).any():
        raise CaturError(
            f"release on host {host} would make usage negative: the VM was not placed there "
            f"or was already released"
        )
    state.used_vcpus[host] = vcpus
    state.used_mem_mib[host] = mem
    state.residents[host] = residents
