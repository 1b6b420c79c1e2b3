"""The one-host path of the after-state candidates: the same table, bit for bit, as the array path.

A service request is a batch of one host. For a one-instance VM there,
:func:`catur.afterstate.afterstate_candidates` costs and featurises the single-node candidates
with Python numbers (``_NodeRow``) instead of numpy calls on ``[1, N, N]`` arrays. What must
hold, and how it is checked:

* every array of the table (placements, COR, RMR, defect, validity, every feature of
  :data:`~catur.afterstate.FEATURES`, any subset in any order) is exactly what the array
  path gives the same host inside a batch of several hosts, over generated hosts of 1 to 16
  nodes from empty to far overloaded, with memory that spills and resident counts given as
  whole numbers, as floats or not at all (hypothesis);
* the sums over nodes follow numpy's own reduction order (left to right below 8 terms, eight
  running sums from 8 on), checked against ``np.add.reduce`` for every length the path takes;
* so the shipped default decides one request alone exactly as in a batch.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.afterstate import _REDUCTION_BLOCK, FEATURES, _reduction_sum, afterstate_candidates
from catur.decision import Decider
from catur.policy_model import load_policy
from catur.request import RequestBatch, VMRequest
from catur.shield import ShieldConfig
from catur.topology import PRESETS, Topology

from test_properties import requests, usages

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def wide_topologies(draw) -> Topology:
    """1-16 nodes (past 8, numpy sums a row with eight running sums), random sizes and distances."""
    n = draw(st.integers(1, 16))
    cores = draw(st.lists(st.integers(1, 64), min_size=n, max_size=n))
    mem = draw(st.lists(st.integers(256, 65536), min_size=n, max_size=n))
    sockets = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    dist = np.full((n, n), 10)
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = draw(st.integers(11, 40))
    return Topology("wide", cores, mem, sockets, dist)


@st.composite
def one_host_cases(draw):
    topo = draw(st.one_of(wide_topologies(), st.sampled_from(list(PRESETS.values()))))
    used_v, used_m = draw(usages(topo))
    request = draw(requests(topo))
    counts = draw(st.sampled_from(["int", "float", "none"]))
    residents = {
        "int": np.array(draw(st.lists(st.integers(0, 60), min_size=topo.num_nodes, max_size=topo.num_nodes))),
        "float": np.array(draw(st.lists(st.integers(0, 60), min_size=topo.num_nodes, max_size=topo.num_nodes)), dtype=float),
        "none": np.zeros(topo.num_nodes),  # what the decider passes when a request carries no counts
    }[counts]
    return topo, used_v, used_m, request, residents


def _table(topo, used_v, used_m, residents, batch, names=FEATURES):
    return afterstate_candidates(topo, used_v, used_m, residents, batch.vcpus, batch.alpha, batch.beta, batch.inst_vcpus,
                                 batch.inst_mem, names)


def _row(table, i: int) -> dict[str, np.ndarray]:
    p = table.placements
    return {"cpu_nodes": p.cpu_nodes[i], "vcpus": p.vcpus[i], "mem_mib": p.mem_mib[i], "cor": table.cor[i],
            "rmr": table.rmr[i], "defect": table.defect[i], "valid": table.valid[i], "features": table.features[i]}


@settings(max_examples=400, **SETTINGS)
@given(one_host_cases(), st.randoms(use_true_random=False))
def test_one_host_tables_are_the_array_paths_bit_for_bit(case, rnd):
    topo, used_v, used_m, request, residents = case
    one = RequestBatch.of(topo, request)
    names = tuple(rnd.sample(FEATURES, rnd.randint(1, len(FEATURES)))) if rnd.random() < 0.5 else FEATURES
    alone = _table(topo, used_v[None], used_m[None], residents[None], one, names)
    # The same host as the middle row of three (the array path), between an empty host and
    # a full one.
    full_v, full_m = topo.node_cores * 2, topo.node_mem_mib
    stack = lambda a, b, c: np.stack([a, b, c])  # noqa: E731
    three = RequestBatch(*(np.repeat(a, 3, axis=0) for a in one[:6]))
    batch = _table(topo, stack(0 * used_v, used_v, full_v), stack(0 * used_m, used_m, full_m),
                   stack(0 * residents, residents, residents + 1), three, names)
    assert alone.names == batch.names and alone.feature_names == batch.feature_names == names
    for key, mine in _row(alone, 0).items():
        theirs = _row(batch, 1)[key]
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, key
        # Bit for bit: the same float64 bits, not merely close.
        np.testing.assert_array_equal(mine.view(np.uint8), np.ascontiguousarray(theirs).view(np.uint8), err_msg=key)


def test_the_row_sum_is_numpys_reduction_order():
    rng = np.random.default_rng(7)
    for n in range(1, _REDUCTION_BLOCK + 1):
        for scale in (1.0, 1e-3, 1e6):
            rows = rng.random((5, n, n)) * scale  # contiguous rows, as the array path reduces them
            sums = np.add.reduce(rows, -1)
            for i, j in ((0, 0), (2, n - 1), (4, n // 2)):
                assert _reduction_sum(rows[i, j].tolist()) == sums[i, j], (n, scale)


def test_the_default_decides_one_request_alone_as_in_a_batch():
    """The shipped default with its shield: each request decided alone (the one-host path)
    makes the decision the batch of all of them (the array path) makes for its row."""
    decider = Decider(load_policy("default"), ShieldConfig(depth=1))
    rng = np.random.default_rng(3)
    for topo in PRESETS.values():
        hosts = 64
        fill = rng.uniform(0.0, 1.15, (hosts, 1))
        used_v = np.floor(fill * rng.uniform(0.6, 1.0, (hosts, topo.num_nodes)) * topo.node_cores).astype(np.int64)
        used_m = np.floor(fill * rng.uniform(0.6, 1.0, (hosts, topo.num_nodes)) * topo.node_mem_mib).astype(np.int64)
        residents = used_v // 2
        sizes = rng.choice([1, 2, 4, 8, 16], hosts)
        reqs = [VMRequest(int(v), int(v) * int(rng.choice([1024, 2048, 4096]))) for v in sizes]
        for k in sorted({RequestBatch.of(topo, r).inst_vcpus.shape[1] for r in reqs}):
            rows = [i for i, r in enumerate(reqs) if RequestBatch.of(topo, r).inst_vcpus.shape[1] == k]
            parts = [RequestBatch.of(topo, reqs[i]) for i in rows]
            batch = RequestBatch(*(np.concatenate([p[f] for p in parts]) for f in range(6)))
            together = decider.decide_batch(topo, used_v[rows], used_m[rows], batch, None, residents[rows])
            for b, i in enumerate(rows):
                alone, row = decider.decide(topo, used_v[i], used_m[i], reqs[i], None, residents[i]), together.decision(b)
                for chosen in (alone, row):  # the placement compared by its arrays, the rest as fields
                    object.__setattr__(chosen, "placement", placement_dict(chosen.placement))
                assert alone == row, (topo.name, i)


def placement_dict(placement) -> tuple:
    return placement.cpu_nodes.tolist(), placement.vcpus.tolist(), placement.mem_mib.tolist(), placement.policy
