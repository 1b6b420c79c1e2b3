"""Golden tests: tiny hand-made hosts and traces whose placements and metrics are worked out by hand.

Every pinned value below was computed by hand from the rules in the docstrings of
:mod:`catur.policies`, :mod:`catur.placement` and :mod:`catur.metrics`; the comments next to
each value show the arithmetic, so a reader can check it without running anything.

Two small custom hosts keep the arithmetic easy:

* ``T2``: 2 nodes x 4 cores x 4096 MiB, one node per socket, distance 21.
* ``T4``: 4 nodes x 4 cores x 4096 MiB, sockets ``[0, 0, 1, 1]``, distance 12 within a socket
  and 21 across.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from catur.metrics import cor_after, defect_at_placement
from catur.placement import place
from catur.policies import POLICIES, PRIMITIVES
from catur.request import VMRequest, split_request
from catur.sim.replay import HostTrace, replay_host
from catur.topology import Topology, get_preset

NAN = float("nan")
DETERMINISTIC = [name for name in POLICIES if name != "random"]


def t2() -> Topology:
    return Topology("t2", [4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 10]])


def t4() -> Topology:
    return Topology(
        "t4",
        [4, 4, 4, 4],
        [4096] * 4,
        [0, 0, 1, 1],
        [[10, 12, 21, 21], [12, 10, 21, 21], [21, 21, 10, 12], [21, 21, 12, 10]],
    )


def instances(placement) -> list[tuple[int, int, dict[int, int]]]:
    """A placement as ``[(cpu node, vcpus, {node: MiB}), ...]``, one tuple per vNUMA instance."""
    return [(i["cpu_node"], i["vcpus"], i["mem_mib"]) for i in placement.to_dict()["instances"]]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- one-instance VM on a 4-node host: every policy ----------------------------------------------
#
# State (T4):   node        0     1     2     3
#               used vCPUs  1     0     0     2     -> free cores  3  4  4  2
#               used MiB  2048  4096  3072  2048    -> free MiB 2048  0 1024 2048
# Request: 2 vCPUs, 1024 MiB (per node: 2/4 = 0.5 of the cores, 1024/4096 = 0.25 of the memory).
# Every node can take the vCPUs; nodes 0, 2, 3 can take the memory; nodes 0, 2, 3 fit both.

USED_V = np.array([1, 0, 0, 2])
USED_M = np.array([2048, 4096, 3072, 2048])
REQ = VMRequest(2, 1024)

ONE_INSTANCE = {
    # free cores - 2 = [1, 2, 2, 0]: fewest left is node 3; it has 2048 MiB free, memory local.
    "core-best-fit": [(3, 2, {3: 1024})],
    # most free cores: nodes 1 and 2 tie at 4 -> lowest index, node 1. Node 1 has no free memory:
    # the 1024 MiB go to the nearest node, node 0 (distance 12, 2048 free) -> RMR 1.
    "core-most-idle": [(1, 2, {0: 1024})],
    # memory fits on 0, 2, 3 with 1024, 0, 1024 MiB left -> node 2.
    "mem-best-fit": [(2, 2, {2: 1024})],
    # most free memory: nodes 0 and 3 tie at 2048 -> lowest index, node 0.
    "mem-most-idle": [(0, 2, {0: 1024})],
    # xen: nodes that hold the memory (0, 2, 3), fewest scheduled vCPUs (1, 0, 2) -> node 2.
    "xen": [(2, 2, {2: 1024})],
    # nova-pack among 0, 2, 3: most used CPU first, 1/4, 0/4, 2/4 -> node 3.
    "nova-pack": [(3, 2, {3: 1024})],
    # nova-spread: least used CPU first -> node 2.
    "nova-spread": [(2, 2, {2: 1024})],
    # e-pvm, base b = 2 * 4 = 8, cost = (8^cpu' - 8^cpu) + (8^mem' - 8^mem):
    #   node 0: cpu .25 -> .75: 4.7568 - 1.6818 = 3.0750; mem .50 -> .75: 4.7568 - 2.8284 = 1.9284
    #           total 5.0034
    #   node 2: cpu 0 -> .5: 2.8284 - 1 = 1.8284; mem .75 -> 1: 8 - 4.7568 = 3.2432; total 5.0716
    #   node 3: cpu .5 -> 1: 8 - 2.8284 = 5.1716; mem .5 -> .75: 1.9284; total 7.1000
    # -> node 0.
    "e-pvm": [(0, 2, {0: 1024})],
    # tetris: alignment = 0.5 * free_cores/4 + 0.25 * free_mem/4096:
    #   node 0: .5 * .75 + .25 * .5  = .5
    #   node 2: .5 * 1   + .25 * .25 = .5625   <- best
    #   node 3: .5 * .5  + .25 * .5  = .375
    "tetris": [(2, 2, {2: 1024})],
}


@pytest.mark.parametrize("policy", DETERMINISTIC)
def test_one_instance_vm_on_four_nodes(policy):
    """Each deterministic policy picks the hand-computed node on a partly used 4-node host."""
    placement = place(t4(), USED_V, USED_M, REQ, policy)
    assert instances(placement) == ONE_INSTANCE[policy]
    assert placement.policy == policy


def test_one_instance_metrics_on_four_nodes():
    """COR and RMR of the hand-computed placements: all fit the cores; only core-most-idle is remote."""
    topo = t4()
    for policy in DETERMINISTIC:
        p = place(topo, USED_V, USED_M, REQ, policy)
        # every chosen node ends at <= 4 vCPUs on 4 cores -> COR 0
        assert cor_after(topo.node_cores, USED_V, p) == 0.0
        # core-most-idle's 1024 MiB all sit on node 0 while its vCPUs are on node 1 -> RMR 1
        assert p.rmr() == (1.0 if policy == "core-most-idle" else 0.0)


def test_random_picks_a_feasible_node():
    """`random` only picks nodes that fit both resources (0, 2, 3 here) and is fixed by its seed."""
    topo = t4()
    chosen = set()
    for seed in range(40):
        p1 = place(topo, USED_V, USED_M, REQ, "random", np.random.default_rng(seed))
        p2 = place(topo, USED_V, USED_M, REQ, "random", np.random.default_rng(seed))
        assert instances(p1) == instances(p2)
        node = int(p1.cpu_nodes[0])
        chosen.add(node)
        assert instances(p1) == [(node, 2, {node: 1024})]  # fits, so memory is local
    # node 1 has no free memory; over 40 seeds every one of the three feasible nodes shows up
    assert chosen == {0, 2, 3}


# --- one-instance VM on the intel-2s preset ---------------------------------------------------------
#
# intel-2s: 2 nodes x 40 cores x 90 GiB (92160 MiB), distance 21.
# used vCPUs [30, 10] -> free cores [10, 30]; used MiB [20480, 81920] -> free [71680, 10240].
# Request 8 vCPUs, 16 GiB = 16384 MiB. Only node 0 has the memory; both have the cores.

INTEL_USED_V = np.array([30, 10])
INTEL_USED_M = np.array([20480, 81920])
INTEL_REQ = VMRequest(8, 16384)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_intel_2s_every_policy(policy):
    """On intel-2s only core-most-idle takes node 1 (most free cores) and spills 6 GiB to node 0."""
    topo = get_preset("intel-2s")
    p = place(topo, INTEL_USED_V, INTEL_USED_M, INTEL_REQ, policy, np.random.default_rng(7))
    if policy == "core-most-idle":
        # node 1: 10240 MiB local, the missing 16384 - 10240 = 6144 MiB from node 0
        assert instances(p) == [(1, 8, {0: 6144, 1: 10240})]
        assert p.rmr() == pytest.approx(6144 / 16384)  # 0.375
    else:
        # core-best-fit: cores left 2 vs 22 -> node 0; the memory policies and all the
        # "fits both" baselines (random included) have node 0 as their only feasible node.
        assert instances(p) == [(0, 8, {0: 16384})]
        assert p.rmr() == 0.0


# --- no node fits: least-overloaded fallback, vCPU overcommit, memory spill ------------------------
#
# State (T4):   node        0     1     2     3
#               used vCPUs  4     5     6     3
#               used MiB  3072  4096  2048  3584   -> free MiB 1024 0 2048 512
# Request: 2 vCPUs, 3072 MiB. No node has 2 free cores, no node has 3072 MiB free.
# Overload after adding the request, (used + need - capacity) / capacity:
#   cores:  (4+2-4)/4 = .50   (5+2-4)/4 = .75   (6+2-4)/4 = 1.00   (3+2-4)/4 = .25
#   memory: (3072+3072-4096)/4096 = .50   (4096+3072-4096)/4096 = .75
#           (2048+3072-4096)/4096 = .25   (3584+3072-4096)/4096 = .625
#   both (max): .50  .75  1.00  .625

FULL_USED_V = np.array([4, 5, 6, 3])
FULL_USED_M = np.array([3072, 4096, 2048, 3584])
FULL_REQ = VMRequest(2, 3072)

# Core rankings -> node 3 (.25). Memory: 512 local; missing 2560; nearest is node 2 (distance
# 12, 2048 free) -> 2048; missing 512; nodes 0 and 1 are both at 21, node 0 has more free
# (1024 vs 0) -> 512. RMR = 2560/3072. COR: node 3 holds 3 + 2 = 5 on 4 cores -> .25.
CORE_FALLBACK = ([(3, 2, {0: 512, 2: 2048, 3: 512})], 0.25, 2560 / 3072)
# Memory rankings (and xen, which ranks on memory) -> node 2 (.25). Memory: 2048 local; missing
# 1024; nearest node 3 (12) has 512 -> 512; then node 0 (21, 1024 free) -> 512. RMR = 1024/3072.
# COR: node 2 holds 6 + 2 = 8 on 4 cores -> (8-4)/4 = 1.0.
MEM_FALLBACK = ([(2, 2, {0: 512, 2: 2048, 3: 512})], 1.0, 1024 / 3072)
# "Fits both" baselines -> node 0 (max overload .50). Memory: 1024 local; missing 2048; node 1
# (12) has none; nodes 2 and 3 at 21, node 2 has most free (2048) -> 2048. RMR = 2048/3072.
# COR: 4 + 2 = 6 on 4 cores -> .5.
BOTH_FALLBACK = ([(0, 2, {0: 1024, 2: 2048})], 0.5, 2048 / 3072)

FALLBACK = {
    "core-best-fit": CORE_FALLBACK,
    "core-most-idle": CORE_FALLBACK,
    "mem-best-fit": MEM_FALLBACK,
    "mem-most-idle": MEM_FALLBACK,
    "xen": MEM_FALLBACK,
    "nova-pack": BOTH_FALLBACK,
    "nova-spread": BOTH_FALLBACK,
    "e-pvm": BOTH_FALLBACK,
    "tetris": BOTH_FALLBACK,
    "random": BOTH_FALLBACK,  # nothing feasible: the overload order decides, not the dice
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_no_node_fits_takes_least_overloaded(policy):
    """With no feasible node, each policy takes its least-overloaded node; vCPUs overcommit, memory spills."""
    topo = t4()
    p = place(topo, FULL_USED_V, FULL_USED_M, FULL_REQ, policy, np.random.default_rng(3))
    expected, cor, rmr = FALLBACK[policy]
    assert instances(p) == expected
    assert cor_after(topo.node_cores, FULL_USED_V, p) == pytest.approx(cor)
    assert p.rmr() == pytest.approx(rmr)
    assert defect_at_placement(topo.node_cores, FULL_USED_V, p, 1.0, 1.0) == pytest.approx(cor + rmr)


def test_overload_ties_follow_the_policy_key():
    """Equal overload: core-best-fit and core-most-idle then split by their own keys."""
    # cores [4, 8]; used vCPUs [4, 10]; need 2. Overload: (4+2-4)/4 = .5 and (10+2-8)/8 = .5.
    # core-best-fit key free - need: 0-2 = -2 vs -2-2 = -4 -> node 1 (lower).
    # core-most-idle key -free:       0     vs  2          -> node 0 (more free cores, 0 > -2).
    topo = Topology("hetero", [4, 8], [4096, 8192], [0, 1], [[10, 21], [21, 10]])
    used_v, used_m, req = np.array([4, 10]), np.array([0, 0]), VMRequest(2, 1024)
    assert instances(place(topo, used_v, used_m, req, "core-best-fit")) == [(1, 2, {1: 1024})]
    assert instances(place(topo, used_v, used_m, req, "core-most-idle")) == [(0, 2, {0: 1024})]


def test_cor_is_clipped_at_one():
    """A node pushed far past its cores has COR 1, not more."""
    # T2, used vCPUs [7, 8]; 4 more vCPUs; core overload (7+4-4)/4 = 1.75 < (8+4-4)/4 = 2 -> node 0.
    # COR = clip((11 - 4)/4, 0, 1) = clip(1.75) = 1.
    topo = t2()
    used_v = np.array([7, 8])
    p = place(topo, used_v, np.zeros(2, int), VMRequest(4, 1024), "core-best-fit")
    assert instances(p) == [(0, 4, {0: 1024})]
    assert cor_after(topo.node_cores, used_v, p) == 1.0


def test_spill_ties_go_to_most_free_memory():
    """Spilled memory goes to the nearest node; among equally near ones, the one with most free memory."""
    # T4, free MiB [0, 0, 1024, 3072]; 1 vCPU, 2048 MiB with core-most-idle -> node 0 (all cores
    # free, lowest index). Local: 0. Node 1 (distance 12): 0. Nodes 2 and 3 are both at 21:
    # node 3 has most free (3072) and takes all 2048 (the index order would have given node 2).
    topo = t4()
    used_m = np.array([4096, 4096, 3072, 1024])
    p = place(topo, np.zeros(4, int), used_m, VMRequest(1, 2048), "core-most-idle")
    assert instances(p) == [(0, 1, {3: 2048})]
    assert p.rmr() == 1.0


def test_spill_prefers_nearer_over_freer():
    """A nearer node is drained before a farther one, even if the farther one has more free memory."""
    # T4, free MiB [0, 1024, 4096, 4096]; 1 vCPU, 2048 MiB, core-most-idle -> node 0.
    # Node 1 (12) gives its 1024, then nodes 2 and 3 (21) tie on free memory -> node 2, 1024.
    topo = t4()
    used_m = np.array([4096, 3072, 0, 0])
    p = place(topo, np.zeros(4, int), used_m, VMRequest(1, 2048), "core-most-idle")
    assert instances(p) == [(0, 1, {1: 1024, 2: 1024})]


def test_memory_overcommits_own_node_when_host_is_full():
    """Memory that fits nowhere lands on the VM's own node (counted local)."""
    # T2, free MiB [0, 512]; 1 vCPU, 2048 MiB, core-best-fit: cores left 3 and 3 -> node 0.
    # Local 0, node 1 gives 512, the missing 1536 overcommit node 0. RMR = 512/2048 = .25.
    topo = t2()
    p = place(topo, np.zeros(2, int), np.array([4096, 3584]), VMRequest(1, 2048), "core-best-fit")
    assert instances(p) == [(0, 1, {0: 1536, 1: 512})]
    assert p.rmr() == 0.25


# --- VMs with several vNUMA instances ----------------------------------------------------------------


def test_split_into_two_instances():
    """A VM larger than any node is split into the fewest near-equal instances that fit a node."""
    # T4 nodes have 4 cores: 6 vCPUs do not fit one; two shares of 3 vCPUs / 1024 MiB do.
    v, m = split_request(t4(), VMRequest(6, 2048))
    assert v.tolist() == [3, 3] and m.tolist() == [1024, 1024]
    # 7 vCPUs, 3001 MiB -> near-equal shares [4, 3] vCPUs, [1501, 1500] MiB; larger share first.
    v, m = split_request(t4(), VMRequest(7, 3001))
    assert v.tolist() == [4, 3] and m.tolist() == [1501, 1500]
    # 2 vCPUs but 6000 MiB: memory alone forces two instances of 3000 MiB.
    v, m = split_request(t4(), VMRequest(2, 6000))
    assert v.tolist() == [1, 1] and m.tolist() == [3000, 3000]
    # amd-2s-nps2: 32 cores, 72 GiB per node; 48 vCPUs / 64 GiB -> 2 x (24 vCPUs, 32 GiB).
    v, m = split_request(get_preset("amd-2s-nps2"), VMRequest(48, 65536))
    assert v.tolist() == [24, 24] and m.tolist() == [32768, 32768]


def test_never_more_instances_than_vcpus():
    """A 2-vCPU VM too big in memory for 2 nodes still gets 2 instances (one vCPU each), memory spills."""
    # T4: 2 vCPUs, 12000 MiB. Two shares of 6000 MiB fit no 4096-MiB node, but a third instance
    # would have no vCPU, so k = min(nodes, vcpus) = 2 and each 6000-MiB share spills.
    topo = t4()
    v, m = split_request(topo, VMRequest(2, 12000))
    assert v.tolist() == [1, 1] and m.tolist() == [6000, 6000]
    # core-best-fit on the empty host: every node feasible, leftover 3 everywhere -> order 0,1,2,3;
    # socket 0 holds the two best -> nodes [0, 1]. Local: 4096 each; the missing 1904 of
    # instance 0 (on node 0) come from the nearest node with memory: node 1 is full (12), so
    # nodes 2, 3 (21) tie at 4096 -> node 2. Instance 1 (node 1): same distances -> node 3 now
    # has most free (4096 vs 2192) -> node 3.
    p = place(topo, np.zeros(4, int), np.zeros(4, int), VMRequest(2, 12000), "core-best-fit")
    assert instances(p) == [(0, 1, {0: 4096, 2: 1904}), (1, 1, {1: 4096, 3: 1904})]
    assert p.rmr() == pytest.approx(3808 / 12000)


def test_two_instances_prefer_one_socket():
    """A 2-instance VM takes both nodes of one socket when that socket can hold it."""
    # T4 with used vCPUs [0, 1, 0, 4]; 6 vCPUs -> 2 x 3 vCPUs. core-most-idle: feasible (free >= 3)
    # are 0 (4), 1 (3), 2 (4); order by most free: 0, 2, 1, then 3. The two best anywhere would be
    # 0 and 2 (two sockets); socket 0 has 0 and 1 both feasible (positions 0 + 2), socket 1's
    # node 3 is not feasible -> nodes 0 and 1.
    topo = t4()
    used_v = np.array([0, 1, 0, 4])
    p = place(topo, used_v, np.zeros(4, int), VMRequest(6, 2048), "core-most-idle")
    assert instances(p) == [(0, 3, {0: 1024}), (1, 3, {1: 1024})]
    # core-best-fit on the same state: left after 3 vCPUs = [1, 0, 1, -3] -> order 1, 0, 2, 3;
    # socket 0 (positions 1 + 0) wins; the better-ranked node 1 gets the first instance.
    p = place(topo, used_v, np.zeros(4, int), VMRequest(6, 2048), "core-best-fit")
    assert instances(p) == [(1, 3, {1: 1024}), (0, 3, {0: 1024})]


def test_two_instances_cross_sockets_when_no_socket_fits():
    """With no socket able to hold both instances, the two best-ranked nodes anywhere are used."""
    # used vCPUs [0, 4, 0, 4]: only nodes 0 and 2 have 3 free cores; each socket has one full
    # node -> no socket qualifies -> the best two overall, 0 and 2 (tie on free cores, by index).
    topo = t4()
    p = place(topo, np.array([0, 4, 0, 4]), np.zeros(4, int), VMRequest(6, 2048), "core-most-idle")
    assert instances(p) == [(0, 3, {0: 1024}), (2, 3, {2: 1024})]


def test_larger_instance_goes_to_better_node_on_preset():
    """On amd-2s-nps2 a 48-vCPU VM goes to socket 1 when socket 0 cannot hold both halves."""
    # 32 cores per node; used vCPUs [16, 0, 0, 0]; instances 24 + 24 vCPUs, 32 GiB each.
    # core-most-idle: node 0 has 16 free < 24, infeasible; order 1, 2, 3 (32 free each), then 0.
    # Socket 0 = {0, 1} has an infeasible node; socket 1 = {2, 3} -> nodes 2, 3
    # (the two best anywhere would be 1 and 2, across sockets).
    topo = get_preset("amd-2s-nps2")
    used_v = np.array([16, 0, 0, 0])
    p = place(topo, used_v, np.zeros(4, int), VMRequest(48, 65536), "core-most-idle")
    assert instances(p) == [(2, 24, {2: 32768}), (3, 24, {3: 32768})]
    # 49 vCPUs split 25 + 24: the 25-vCPU instance sits on the better-ranked node (2).
    p = place(topo, used_v, np.zeros(4, int), VMRequest(49, 65536), "core-most-idle")
    assert instances(p) == [(2, 25, {2: 32768}), (3, 24, {3: 32768})]


def test_explicit_vnuma():
    """An explicit vnuma count splits even a VM that would fit one node."""
    topo = t4()
    # 5 vCPUs, 3000 MiB, vnuma=2 -> [3, 2] vCPUs, [1500, 1500] MiB.
    v, m = split_request(topo, VMRequest(5, 3000, vnuma=2))
    assert v.tolist() == [3, 2] and m.tolist() == [1500, 1500]
    # mem-most-idle with free MiB [3072, 4096, 2048, 1024]: order 1, 0, 2, 3; both feasible
    # (>= 1500) in socket 0 (positions 1 + 0) -> nodes [1, 0]; the larger instance on node 1.
    used_m = np.array([1024, 0, 2048, 3072])
    p = place(topo, np.zeros(4, int), used_m, VMRequest(5, 3000, vnuma=2), "mem-most-idle")
    assert instances(p) == [(1, 3, {1: 1500}), (0, 2, {0: 1500})]
    # vnuma=1 keeps a VM whole even when it is bigger than a node: 6 vCPUs on 4 cores.
    p = place(topo, np.zeros(4, int), np.zeros(4, int), VMRequest(6, 1024, vnuma=1), "core-best-fit")
    # nothing has 6 free cores: overload (0+6-4)/4 = .5 everywhere -> key tie -> node 0.
    assert instances(p) == [(0, 6, {0: 1024})]
    assert cor_after(topo.node_cores, np.zeros(4, int), p) == 0.5


# --- hand-made traces ----------------------------------------------------------------------------
#
# Trace A on T2 (2 nodes x 4 cores x 4096 MiB), no alpha/beta given (1 and 1):
#   VM  arrives  departs  vCPUs  MiB
#   0      0       100      4    2048
#   1     10        60      2    1024
#   2     20      (runs)    3    3072
#   3     50        80      2    2048
#   end_s = 100 (the last event); VM 2 is integrated up to it.


def trace_a() -> HostTrace:
    return HostTrace(
        arrival_s=[0, 10, 20, 50],
        departure_s=[100, 60, NAN, 80],
        vcpus=[4, 2, 3, 2],
        mem_mib=[2048, 1024, 3072, 2048],
    )


# Every deterministic policy except mem-best-fit places trace A identically:
#   t=0  VM0 (4, 2048): empty host, all keys tie -> node 0.        vCPUs [4, 0]  MiB [2048, 0]
#   t=10 VM1 (2, 1024): node 0 has no free core; node 1 fits both, has the most free memory,
#        the fewest scheduled vCPUs (xen) -> node 1.                vCPUs [4, 2]  MiB [2048, 1024]
#   t=20 VM2 (3, 3072): free cores [0, 2], free MiB [2048, 3072]. Core rankings: none fits,
#        overload (4+3-4)/4 = .75 vs (2+3-4)/4 = .25 -> node 1. Memory rankings and xen: only
#        node 1 holds 3072. Fits-both: none; max overload .75 vs max(.25, 0) = .25 -> node 1.
#        Node 1 now holds 5 vCPUs on 4 cores: COR .25 for VM1 and VM2.  vCPUs [4, 5]
#   t=50 VM3 (2, 2048): free cores [0, -1], free MiB [2048, 0]. Core: overload .5 vs .75 ->
#        node 0. Memory/xen: only node 0 holds 2048. Fits-both: .5 vs max(.75, .5) -> node 0.
#        Node 0 holds 6 vCPUs: COR .5 for VM0 and VM3.              vCPUs [6, 5]
#   t=60 VM1 leaves: node 1 back to 3 vCPUs, COR 0.
#   t=80 VM3 leaves: node 0 back to 4 vCPUs, COR 0.    t=100 VM0 leaves; VM2 closed at 100.
# Node COR over time: node 0 = .5 on [50, 80), else 0; node 1 = .25 on [20, 60), else 0.
# Every VM's memory is local: RMR 0, so defect = COR.
#   VM0 (node 0, 0..100):  .5 * 30 / 100          = .15     at placement 0
#   VM1 (node 1, 10..60):  .25 * 40 / 50          = .20     at placement 0
#   VM2 (node 1, 20..100): .25 * 40 / 80          = .125    at placement .25
#   VM3 (node 0, 50..80):  .5 * 30 / 30           = .50     at placement .50
TRACE_A = {
    "cpu_nodes": [0, 1, 1, 0],
    "cor_at_placement": [0.0, 0.0, 0.25, 0.5],
    "rmr": [0.0, 0.0, 0.0, 0.0],
    "placement_defect": [0.0, 0.0, 0.25, 0.5],
    "lifetime_defect": [0.15, 0.20, 0.125, 0.5],
    # mean of .15 .2 .125 .5 = .975 / 4
    "avg_defect": 0.24375,
    # mean of 0 0 .25 .5 = .75 / 4
    "defect_at_placement": 0.1875,
    # numpy's linear percentile: sorted [.125, .15, .2, .5], position .99 * 3 = 2.97
    # -> .2 + .97 * (.5 - .2) = .491
    "p99_defect": 0.491,
    # mean of sigmoid(100 * (d - .1)) = sigmoid(5), sigmoid(10), sigmoid(2.5), sigmoid(40)
    "ticket_ratio": (sigmoid(5) + sigmoid(10) + sigmoid(2.5) + sigmoid(40)) / 4,  # ~ .97935
    "anomalies": 1,  # only VM3's .5 exceeds .40
}

# mem-best-fit differs from t=10 on:
#   t=10 VM1 (2, 1024): free MiB [2048, 4096] -> least left is node 0 (1024 vs 3072).
#        Node 0 holds 6 vCPUs: COR .5 at placement.             vCPUs [6, 0]  MiB [3072, 0]
#   t=20 VM2 (3, 3072): free MiB [1024, 4096]: only node 1 fits -> node 1, COR 0. vCPUs [6, 3]
#   t=50 VM3 (2, 2048): free MiB [1024, 1024]: none fits; overload (3072+2048-4096)/4096 = .25
#        on both; key (free - need) ties at -1024 -> node 0. 1024 MiB local, 1024 spill to
#        node 1: RMR .5. Node 0 holds 8 vCPUs: COR (8-4)/4 = 1.  vCPUs [8, 3]
#   t=60 VM1 leaves: node 0 at 6 (COR .5).  t=80 VM3 leaves: node 0 at 4 (COR 0).
# Node 0 COR: [10, 50) .5, [50, 60) 1, [60, 80) .5, else 0. Node 1: 0 throughout.
#   VM0 (0..100):  (.5*40 + 1*10 + .5*20) / 100 = 40/100 = .4        at placement 0
#   VM1 (10..60):  (.5*40 + 1*10) / 50          = 30/50  = .6        at placement .5
#   VM2 (node 1):  0                                                  at placement 0
#   VM3 (50..80):  (1*10 + .5*20) / 30 = 2/3; + RMR .5 = 7/6         at placement 1 + .5 = 1.5
TRACE_A_MEM_BEST_FIT = {
    "cpu_nodes": [0, 0, 1, 0],
    "cor_at_placement": [0.0, 0.5, 0.0, 1.0],
    "rmr": [0.0, 0.0, 0.0, 0.5],
    "placement_defect": [0.0, 0.5, 0.0, 1.5],
    "lifetime_defect": [0.4, 0.6, 0.0, 7 / 6],
    "avg_defect": (0.4 + 0.6 + 0.0 + 7 / 6) / 4,  # 2.1667 / 4 = .54167
    "defect_at_placement": 0.5,  # (0 + .5 + 0 + 1.5) / 4
    # sorted [0, .4, .6, 7/6] -> .6 + .97 * (7/6 - .6) = 1.14967
    "p99_defect": 0.6 + 0.97 * (7 / 6 - 0.6),
    # sigmoid(30), sigmoid(50), sigmoid(-10), sigmoid(106.7): ~ (3 + 4.54e-5) / 4
    "ticket_ratio": (sigmoid(30) + sigmoid(50) + sigmoid(-10) + sigmoid(100 * (7 / 6 - 0.1))) / 4,
    "anomalies": 2,  # .5 and 1.5 exceed .40
}


def check_replay(result, expected) -> None:
    assert [int(p.cpu_nodes[0]) for p in result.placements] == expected["cpu_nodes"]
    for key in ("cor_at_placement", "rmr", "placement_defect", "lifetime_defect"):
        assert getattr(result, key).tolist() == pytest.approx(expected[key], abs=1e-12), key
    summary = result.summary()
    assert summary.vms == len(expected["cpu_nodes"])
    assert summary.anomalies == expected["anomalies"]
    for key in ("avg_defect", "defect_at_placement", "p99_defect", "ticket_ratio"):
        assert getattr(summary, key) == pytest.approx(expected[key], abs=1e-12), key


@pytest.mark.parametrize("policy", [p for p in DETERMINISTIC if p != "mem-best-fit"])
def test_trace_a_most_policies(policy):
    """Trace A: a neighbour arriving mid-life overloads a VM's node for part of its life."""
    check_replay(replay_host(t2(), trace_a(), policy), TRACE_A)


def test_trace_a_mem_best_fit():
    """Trace A under mem-best-fit: packing memory overloads node 0 and spills VM3's memory."""
    check_replay(replay_host(t2(), trace_a(), "mem-best-fit"), TRACE_A_MEM_BEST_FIT)


# Trace B on T2 with xen: alpha/beta weights, a memory spill, and a 2-instance VM.
#   VM  arrives  departs  vCPUs  MiB   alpha  beta
#   0      0      (runs)    2    3072    1     1
#   1      0        30      2    3072    1     1
#   2     10        40      2    2048    2    .5
#   3     30      (runs)    6    2048    1     1
#   end_s = 60
#
#   t=0  VM0: everything ties -> node 0.                          vCPUs [2, 0]  MiB [3072, 0]
#   t=0  VM1: only node 1 has 3072 free -> node 1.                vCPUs [2, 2]  MiB [3072, 3072]
#   t=10 VM2 (2, 2048): free MiB [1024, 1024], none holds it; memory overload
#        (3072+2048-4096)/4096 = .25 on both; xen's keys, scheduled vCPUs (2, 2) and free memory,
#        tie too -> node 0. 1024 MiB local, 1024 spill to node 1: RMR .5. Node 0 at 4 vCPUs:
#        COR 0. Defect at placement 2*0 + .5*.5 = .25.             vCPUs [4, 2]  MiB [4096, 4096]
#   t=30 VM1 leaves first (departures before arrivals).           vCPUs [4, 0]  MiB [4096, 1024]
#   t=30 VM3 (6, 2048): 6 vCPUs > 4 cores -> 2 instances of 3 vCPUs / 1024 MiB. Only node 1
#        holds 1024 (3072 free) -> order [1, 0]; no socket has 2 nodes -> nodes [1, 0].
#        Instance 0 on node 1: 1024 local. Instance 1 on node 0: node 0 is full, so its 1024
#        come from node 1. RMR 1024/2048 = .5. Node 1: 3 vCPUs (COR 0); node 0: 4 + 3 = 7
#        (COR .75). VM COR = (3*0 + 3*.75)/6 = .375. Defect at placement .375 + .5 = .875.
#                                                                  vCPUs [7, 3]
#   t=40 VM2 leaves: node 0 at 5 vCPUs, COR .25.                  vCPUs [5, 3]
# Node 0 COR: [30, 40) .75, [40, 60] .25, else 0. Node 1: 0 throughout.
#   VM0 (node 0, 0..60):  (.75*10 + .25*20) / 60 = 12.5/60 = .208333; RMR 0
#   VM1 (node 1, 0..30):  0
#   VM2 (node 0, 10..40): .75*10 / 30 = .25 -> defect 2*.25 + .5*.5 = .75
#   VM3 (30..60): (3 * 0 + 3 * (.75*10 + .25*20)) / 6 vCPUs / 30 s = 37.5/180 = .208333
#        -> defect .208333 + .5 = .708333
TRACE_B = {
    "cpu_nodes": [0, 1, 0, 1],  # first instance's node; VM3's instances are [1, 0]
    "cor_at_placement": [0.0, 0.0, 0.0, 0.375],
    "rmr": [0.0, 0.0, 0.5, 0.5],
    "placement_defect": [0.0, 0.0, 0.25, 0.875],
    "lifetime_defect": [12.5 / 60, 0.0, 0.75, 12.5 / 60 + 0.5],
    "avg_defect": (12.5 / 60 + 0.0 + 0.75 + 12.5 / 60 + 0.5) / 4,  # 1.6667/4 = .416667
    "defect_at_placement": (0.25 + 0.875) / 4,  # .28125
    # sorted [0, .208333, .708333, .75] -> .708333 + .97 * (.75 - .708333) = .74875
    "p99_defect": 0.74875,
    # sigmoid(10.833), sigmoid(-10), sigmoid(65), sigmoid(60.83) ~ (.99998 + .0000454 + 1 + 1)/4
    "ticket_ratio": (sigmoid(100 * (12.5 / 60 - 0.1)) + sigmoid(-10) + sigmoid(65)
                     + sigmoid(100 * (12.5 / 60 + 0.4))) / 4,
    "anomalies": 1,  # only VM3's .875
}


def test_trace_b_xen_weights_spill_and_vnuma():
    """Trace B: alpha/beta weights, a memory spill and a 2-instance VM, with COR integrated over time."""
    trace = HostTrace(
        arrival_s=[0, 0, 10, 30],
        departure_s=[NAN, 30, 40, NAN],
        vcpus=[2, 2, 2, 6],
        mem_mib=[3072, 3072, 2048, 2048],
        alpha=[1, 1, 2, 1],
        beta=[1, 1, 0.5, 1],
        end_s=60,
    )
    result = replay_host(t2(), trace, "xen")
    check_replay(result, TRACE_B)
    assert instances(result.placements[2]) == [(0, 2, {0: 1024, 1: 1024})]
    assert instances(result.placements[3]) == [(1, 3, {1: 1024}), (0, 3, {1: 1024})]


# Trace C on T2 with core-best-fit: same-instant events.
#   VM  arrives  departs  vCPUs  MiB
#   0      0        10      4    1024
#   1     10      (runs)    4    1024
#   2      5         5      6    1024     (leaves the instant it arrives)
#   3      5      (runs)    4    1024
#   end_s = 20
#
#   t=0  VM0: cores left 0 on both -> node 0.                      vCPUs [4, 0]
#   t=5  VM2 (6 vCPUs > 4 cores): 2 instances of 3 vCPUs / 512 MiB. Only node 1 has 3 free
#        cores -> nodes [1, 0]. Node 1: 3 (COR 0); node 0: 4 + 3 = 7 (COR .75).
#        VM COR = (0 + 3*.75)/6 = .375, RMR 0. It leaves at once: it lived 0 s, so its
#        lifetime defect is its defect at placement, .375, and it is gone before VM3 arrives.
#   t=5  VM3 (4): vCPUs back to [4, 0] -> only node 1 fits -> node 1, COR 0 (had VM2 stayed,
#        nothing would fit and node 1 would be at 7 vCPUs: COR .75).
#   t=10 VM0 leaves *before* VM1 arrives -> VM1 (4) finds node 0 empty: node 0, COR 0
#        (had the arrival come first, both nodes would be full: COR 1).
# No node is ever overloaded for a positive time: lifetime COR 0 except VM2.
TRACE_C = {
    "cpu_nodes": [0, 0, 1, 1],
    "cor_at_placement": [0.0, 0.0, 0.375, 0.0],
    "rmr": [0.0, 0.0, 0.0, 0.0],
    "placement_defect": [0.0, 0.0, 0.375, 0.0],
    "lifetime_defect": [0.0, 0.0, 0.375, 0.0],
    "avg_defect": 0.375 / 4,  # .09375
    "defect_at_placement": 0.375 / 4,
    "p99_defect": 0.97 * 0.375,  # sorted [0, 0, 0, .375], position 2.97 -> .36375
    "ticket_ratio": (3 * sigmoid(-10) + sigmoid(27.5)) / 4,  # ~ .250034
    "anomalies": 0,  # .375 is not above .40
}


def test_trace_c_same_instant_events():
    """Trace C: departures free room before same-instant arrivals; a zero-lifetime VM keeps its placement defect."""
    trace = HostTrace(
        arrival_s=[0, 10, 5, 5],
        departure_s=[10, NAN, 5, NAN],
        vcpus=[4, 4, 6, 4],
        mem_mib=[1024, 1024, 1024, 1024],
        end_s=20,
    )
    result = replay_host(t2(), trace, "core-best-fit")
    check_replay(result, TRACE_C)
    assert instances(result.placements[2]) == [(1, 3, {1: 512}), (0, 3, {0: 512})]
