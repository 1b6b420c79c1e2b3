"""Placement policies as node rankings: the four primitives and the hypervisor baselines.

Every policy answers one question: *for a vNUMA instance of this size, on this host, which
nodes are best, in order?* It does so with a **ranking** — which nodes are feasible, a sort
key (lower is better), and an overload score used when nothing is feasible. The placement core
(:mod:`catur.placement`) turns a ranking into a full placement the same way for every policy:
pick the best-ranked set of distinct nodes (preferring one socket), then lay memory out local
first. So a policy here is a few lines of array code and nothing else.

**When nothing fits.** Each policy states what "feasible" means for it (enough free cores,
enough free memory, or both). When no node is feasible, the policy takes the
*least-overloaded* node: the one whose usage of the policy's resource(s), after adding the
instance, is the smallest fraction over capacity (``(used + need - capacity) / capacity``;
for two resources the larger of the two). Ties then follow the policy's own key, then the
lowest node index. The VM is always placed: vCPUs overcommit, memory spills (see
:mod:`catur.placement`).

The four **primitives** rank by one resource each; they are Catur's action space:

================  ==========================================  ==================
name              feasible when                               best node
================  ==========================================  ==================
core-best-fit     free cores >= instance vCPUs                fewest cores left
core-most-idle    free cores >= instance vCPUs                most free cores
mem-best-fit      free memory >= instance memory              least memory left
mem-most-idle     free memory >= instance memory              most free memory
================  ==========================================  ==================

The **baselines** model what hypervisors and classic schedulers do:

* ``xen`` — libxl's NUMA placement: nodes that hold the memory, fewest vCPUs already
  scheduled, ties to more free memory.
* ``nova-pack`` / ``nova-spread`` — OpenStack Nova's host-cell strategies among nodes that fit
  both resources: most used first (CPU, then memory) / least used first.
* ``e-pvm`` — least marginal exponential cost ``Σ_r b^(u_r') − b^(u_r)`` over CPU and memory
  utilisations ``u`` before and after, with base ``b`` = 2 × node count.
* ``tetris`` — best alignment (dot product) of the normalised request with the node's
  normalised free CPU and memory, among nodes that fit both.
* ``random`` — a uniformly random node among those that fit both.

Ties always end at the lowest node index, so every policy but ``random`` is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from catur.errors import unknown_name


class NodeContext(NamedTuple):
    """What a ranking sees: one host's nodes and the instance to place. All arrays ``[N]``.

    For a batch of ``B`` hosts of one topology (:func:`catur.placement.place_batch`), the
    usage arrays are ``[B, N]`` and the needs ``[B, 1]``; capacities stay ``[N]``. Rankings
    are elementwise array code, so the same function ranks one host or thousands at once.
    """

    cores: np.ndarray  # capacity, cores
    mem_mib: np.ndarray  # capacity, MiB
    used_vcpus: np.ndarray
    used_mem_mib: np.ndarray
    need_vcpus: int
    need_mem_mib: int
    rng: np.random.Generator | None


class Ranking(NamedTuple):
    """A policy's verdict on each node: feasibility, sort keys (primary first), overload."""

    feasible: np.ndarray  # bool[N]
    keys: tuple[np.ndarray, ...]  # lower is better; compared in order
    overload: np.ndarray  # float[N], used when no node is feasible


@dataclass(frozen=True)
class Policy:
    """A named placement policy: ``rank`` maps a :class:`NodeContext` to a :class:`Ranking`."""

    name: str
    kind: str  # "primitive" or "baseline"
    rank: Callable[[NodeContext], Ranking]
    summary: str
    needs_rng: bool = False


# --- shared pieces ---------------------------------------------------------------------------


def _free(ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
    return ctx.cores - ctx.used_vcpus, ctx.mem_mib - ctx.used_mem_mib


def _core_overload(ctx: NodeContext) -> np.ndarray:
    return (ctx.used_vcpus + ctx.need_vcpus - ctx.cores) / ctx.cores


def _mem_overload(ctx: NodeContext) -> np.ndarray:
    return (ctx.used_mem_mib + ctx.need_mem_mib - ctx.mem_mib) / ctx.mem_mib


def _both_overload(ctx: NodeContext) -> np.ndarray:
    return np.maximum(_core_overload(ctx), _mem_overload(ctx))


def _fits_both(ctx: NodeContext) -> np.ndarray:
    free_cores, free_mem = _free(ctx)
    return (free_cores >= ctx.need_vcpus) & (free_mem >= ctx.need_mem_mib)


# --- the four primitives -----------------------------------------------------------------------


def core_best_fit(ctx: NodeContext) -> Ranking:
    free_cores, _ = _free(ctx)
    return Ranking(free_cores >= ctx.need_vcpus, (free_cores - ctx.need_vcpus,), _core_overload(ctx))


def core_most_idle(ctx: NodeContext) -> Ranking:
    free_cores, _ = _free(ctx)
    return Ranking(free_cores >= ctx.need_vcpus, (-free_cores,), _core_overload(ctx))


def mem_best_fit(ctx: NodeContext) -> Ranking:
    _, free_mem = _free(ctx)
    return Ranking(free_mem >= ctx.need_mem_mib, (free_mem - ctx.need_mem_mib,), _mem_overload(ctx))


def mem_most_idle(ctx: NodeContext) -> Ranking:
    _, free_mem = _free(ctx)
    return Ranking(free_mem >= ctx.need_mem_mib, (-free_mem,), _mem_overload(ctx))


# --- hypervisor and scheduler baselines ----------------------------------------------------------


def xen(ctx: NodeContext) -> Ranking:
    _, free_mem = _free(ctx)
    return Ranking(free_mem >= ctx.need_mem_mib, (ctx.used_vcpus, -free_mem), _mem_overload(ctx))


def nova_pack(ctx: NodeContext) -> Ranking:
    keys = (-ctx.used_vcpus / ctx.cores, -ctx.used_mem_mib / ctx.mem_mib)
    return Ranking(_fits_both(ctx), keys, _both_overload(ctx))


def nova_spread(ctx: NodeContext) -> Ranking:
    keys = (ctx.used_vcpus / ctx.cores, ctx.used_mem_mib / ctx.mem_mib)
    return Ranking(_fits_both(ctx), keys, _both_overload(ctx))


def e_pvm(ctx: NodeContext) -> Ranking:
    base = 2.0 * ctx.cores.shape[0]
    cpu_before = ctx.used_vcpus / ctx.cores
    mem_before = ctx.used_mem_mib / ctx.mem_mib
    cpu_after = cpu_before + ctx.need_vcpus / ctx.cores
    mem_after = mem_before + ctx.need_mem_mib / ctx.mem_mib
    # Requests far beyond a node's size overflow to inf; that only orders hopeless nodes,
    # which the overload score ranks anyway.
    with np.errstate(over="ignore", invalid="ignore"):
        cost = (base**cpu_after - base**cpu_before) + (base**mem_after - base**mem_before)
    return Ranking(_fits_both(ctx), (cost,), _both_overload(ctx))


def tetris(ctx: NodeContext) -> Ranking:
    free_cores, free_mem = _free(ctx)
    alignment = (ctx.need_vcpus / ctx.cores) * (free_cores / ctx.cores) + (
        ctx.need_mem_mib / ctx.mem_mib
    ) * (free_mem / ctx.mem_mib)
    return Ranking(_fits_both(ctx), (-alignment,), _both_overload(ctx))


def random_fit(ctx: NodeContext) -> Ranking:
    rng = ctx.rng if ctx.rng is not None else np.random.default_rng()
    return Ranking(_fits_both(ctx), (rng.permutation(ctx.cores.shape[0]),), _both_overload(ctx))


PRIMITIVES: tuple[str, ...] = ("core-best-fit", "core-most-idle", "mem-best-fit", "mem-most-idle")
BASELINES: tuple[str, ...] = ("xen", "nova-pack", "nova-spread", "e-pvm", "tetris", "random")

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("core-best-fit", "primitive", core_best_fit, "fits the cores, fewest cores left"),
        Policy("core-most-idle", "primitive", core_most_idle, "most free cores"),
        Policy("mem-best-fit", "primitive", mem_best_fit, "fits the memory, least memory left"),
        Policy("mem-most-idle", "primitive", mem_most_idle, "most free memory"),
        Policy("xen", "baseline", xen, "holds the memory, fewest scheduled vCPUs (libxl)"),
        Policy("nova-pack", "baseline", nova_pack, "fits both, most used first (Nova pack)"),
        Policy("nova-spread", "baseline", nova_spread, "fits both, least used first (Nova spread)"),
        Policy("e-pvm", "baseline", e_pvm, "least marginal exponential cost (E-PVM)"),
        Policy("tetris", "baseline", tetris, "best request/free alignment (Tetris)"),
        Policy("random", "baseline", random_fit, "random node that fits both", needs_rng=True),
    )
}


def get_policy(name: str) -> Policy:
    """The policy called ``name``; a :class:`~catur.errors.CaturError` listing them otherwise."""
    try:
        return POLICIES[name]
    except KeyError:
        raise unknown_name("policy", name, list(POLICIES)) from None


def node_order(ranking: Ranking) -> np.ndarray:
    """Nodes best first: feasible ones by key; then the rest by overload, then key.

    When no node is feasible this is simply "least overloaded first". With ``[B, N]``
    rankings (a batch of hosts) the answer is ``[B, N]``, each row ordered on its own.
    """
    feasible = ranking.feasible
    shape = feasible.shape  # [N], or [B, N] for a batch of hosts: each row sorted alone
    # np.lexsort sorts by its *last* key first, so list keys from least to most significant.
    # It is a stable sort: nodes equal on every key stay in index order (the final tie-break).
    keys = [*reversed(ranking.keys), ranking.overload * ~feasible, ~feasible]
    return np.lexsort([k if k.shape == shape else np.broadcast_to(k, shape) for k in keys], axis=-1)
