"""The batched replay engine gives exactly what the reference loop gives, host by host.

Exactness is bit for bit, not a tolerance: the engine runs the same array code as the
reference loop (the core functions take a leading host axis and the one-host path is their
batch of one), with every float sum in a fixed order (:func:`catur.metrics.instance_sum`,
row-wise model and gate products), so placements and every per-VM defect must be *equal*.
A difference of one ulp would be a bug, so the tests use ``np.array_equal``.

Generated cases: several hosts per batch (so lock-step with hosts of different lengths is
exercised), random topologies (1-8 nodes, random sockets and distances) and the presets,
VMs from tiny to larger than the whole host (vNUMA splits, vCPU overcommit, memory spill),
explicit vNUMA counts, alpha/beta weights, departures at the very instant of an arrival (their
own or another VM's), VMs still running at the end, and windows that end after the last event.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _service_support import make_model, small_streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.afterstate import AfterStateModel
from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError
from catur.gate import UncertaintyGate
from catur.policy_model import PolicyModel
from catur.observation import OBS_DIM, candidates
from catur.placement import GREEDY
from catur.resident import RESIDENT_GREEDY
from catur.policies import POLICIES, PRIMITIVES
from catur.request import VMRequest
from catur.shield import ShieldConfig, shield, shield_depth1
from catur.sim import batched as batched_module
from catur.sim.batched import ENGINE_ENV, batchable, engine_name, replay_batched
from catur.sim.evaluate import evaluate_policies
from catur.sim.replay import HostTrace, replay_host
from catur.topology import PRESETS, Topology

from _strategies import topologies as topologies_strategy

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RANKING = [name for name, p in POLICIES.items() if not p.needs_rng]


# --- strategies -----------------------------------------------------------------------------------


# Smaller hosts than the property tests: more contention, so more spill and overcommit.
topologies = topologies_strategy(max_socket=2, max_cores=32, max_mem_mib=32768, max_distance=32)


@st.composite
def host_traces(draw, topo: Topology) -> HostTrace:
    """1-16 VMs on a small time grid (so instants collide), some running to the end; mostly
    small VMs (as in real traces), some of a node's size or more (vNUMA splits, overload)."""
    m = draw(st.integers(1, 16))
    cores, mem = int(topo.node_cores.max()), int(topo.node_mem_mib.max())
    vcpus, mems, alpha, beta, vnuma = [], [], [], [], []
    for _ in range(m):
        scale = draw(st.sampled_from(["small", "small", "small", "small", "node", "host"]))
        top_v = {"small": max(1, cores // 4), "node": 2 * cores, "host": 2 * topo.total_cores}[scale]
        top_m = {"small": max(1, mem // 4), "node": 2 * mem, "host": 2 * topo.total_mem_mib}[scale]
        v = draw(st.integers(1, top_v))
        vcpus.append(v)
        mems.append(draw(st.integers(1, top_m)))
        vnuma.append(draw(st.one_of(st.just(0), st.integers(1, min(topo.num_nodes, v)))))
        alpha.append(draw(st.sampled_from([1.0, 0.5, 2.0, 0.0, 3.7])))
        beta.append(draw(st.sampled_from([1.0, 0.25, 0.0, 1.9])))
    arrival = [draw(st.integers(0, 12)) for _ in range(m)]
    life = [draw(st.one_of(st.none(), st.integers(0, 15))) for _ in range(m)]
    departure = [a + d if d is not None else math.nan for a, d in zip(arrival, life)]
    last = max([*arrival, *(d for d in departure if not math.isnan(d))])
    end_s = draw(st.one_of(st.none(), st.integers(last, last + 9)))
    return HostTrace(arrival, departure, vcpus, mems, alpha, beta, vnuma, end_s=end_s)


@st.composite
def host_sets(draw) -> list[tuple[Topology, HostTrace]]:
    """2-6 hosts; usually sharing one or two topologies (one batch each), sometimes all mixed."""
    shared = [draw(topologies) for _ in range(draw(st.integers(1, 2)))]
    hosts = []
    for _ in range(draw(st.integers(2, 6))):
        topo = draw(st.one_of(st.sampled_from(shared), topologies))
        hosts.append((topo, draw(host_traces(topo))))
    return hosts


FLAVORS = [(1, 1024), (1, 2048), (2, 4096), (4, 8192), (8, 16384), (16, 32768), (2, 16384), (32, 65536)]


@st.composite
def preset_sets(draw) -> list[tuple[Topology, HostTrace]]:
    """2-5 preset hosts with cloud-like flavors and loads, where the shipped model's gate
    mostly lets the model decide and the shield has choices to make."""
    hosts = []
    for _ in range(draw(st.integers(2, 5))):
        topo = draw(st.sampled_from(list(PRESETS.values())))
        m = draw(st.integers(1, 24))
        picks = [draw(st.sampled_from(FLAVORS)) for _ in range(m)]
        arrival = sorted(draw(st.integers(0, 30)) for _ in range(m))
        departure = [a + draw(st.integers(0, 40)) if draw(st.booleans()) else math.nan for a in arrival]
        hosts.append((topo, HostTrace(arrival, departure, [v for v, _ in picks], [g for _, g in picks])))
    return hosts


# --- helpers --------------------------------------------------------------------------------------


def assert_identical(hosts, policy) -> None:
    """The batched engine's per-host results equal the reference loop's, bit for bit."""
    batched = replay_batched(hosts, policy, keep_placements=True, min_batch_hosts=1)
    assert len(batched) == len(hosts)
    for (topo, trace), got in zip(hosts, batched):
        want = replay_host(topo, trace, policy)
        assert len(got.placements) == len(want.placements) == trace.num_vms
        for field in ("cor_at_placement", "rmr", "placement_defect", "lifetime_defect"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), field
        for p, q in zip(got.placements, want.placements):
            assert np.array_equal(p.cpu_nodes, q.cpu_nodes)
            assert np.array_equal(p.vcpus, q.vcpus)
            assert np.array_equal(p.mem_mib, q.mem_mib)
        assert dict(got.counters) == dict(want.counters)
        assert not got.correctable.any()


@pytest.fixture(scope="module")
def deciders(tmp_path_factory) -> dict[str, Decider]:
    """The shipped model with and without its gate and shields, greedy with a shield, and a
    small model whose gate fires often and falls back to a fixed primitive."""
    shipped = PolicyModel.load("ppo-synthetic")
    small = PolicyModel.load(make_model(tmp_path_factory.mktemp("m") / "model", seed=3, fallback="mem-most-idle"))
    return {
        "catur+shield": Decider(shipped, ShieldConfig(depth=1)),
        "catur": Decider(shipped),
        "catur-nogate+shield": Decider(shipped, ShieldConfig(depth=1), use_gate=False),
        "catur+shield(d2)": Decider(shipped, ShieldConfig(depth=2, width=0.2)),
        "greedy+shield": Decider(None, ShieldConfig(depth=1, threshold=0.2)),
        # An after-state scorer: its wider candidate set, batched exactly as alone.
        "scorer+shield": Decider(
            AfterStateModel.linear({"defect": -1.0, "resident_rise": -0.05, "chosen_mem_after": 0.3}), ShieldConfig(depth=1)
        ),
        "small+fallback+shield": Decider(small, ShieldConfig(depth=1)),
        "small+greedy-gate": Decider(PolicyModel.load(make_model(tmp_path_factory.mktemp("g") / "m", seed=4)), None),
    }


# --- the engine against the reference loop ----------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=250, **SETTINGS)
@given(host_sets(), st.sampled_from([*RANKING, GREEDY, RESIDENT_GREEDY]))
def test_heuristics_identical_to_reference(hosts, name):
    """Every deterministic ranking policy and greedy: same placements, same defects, bit for bit."""
    assert_identical(hosts, name)


@settings(max_examples=150, **SETTINGS)
@given(st.one_of(host_sets(), preset_sets()), st.sampled_from(
    ["catur+shield", "catur", "catur-nogate+shield", "catur+shield(d2)", "greedy+shield", "small+fallback+shield",
     "small+greedy-gate"]
))
@pytest.mark.slow
def test_deciders_identical_to_reference(deciders, hosts, label):
    """The model (gated or not, shielded at depth 1 or 2, a fixed fallback primitive) decides in
    the batch exactly as one host at a time, interventions counted alike."""
    assert_identical(hosts, deciders[label])


def test_batches_of_any_size_agree():
    """Splitting the hosts into batches (to bound memory), or leaving small groups to the
    reference loop, changes nothing."""
    streams = small_streams()
    hosts = [(s.topology, s.trace) for s in streams]
    whole = replay_batched(hosts, "xen", min_batch_hosts=1)
    for size, fewest in ((1, 1), (40, 1), (10**9, 1), (10**9, 10**9)):
        for a, b in zip(whole, replay_batched(hosts, "xen", max_batch_vms=size, min_batch_hosts=fewest)):
            assert np.array_equal(a.lifetime_defect, b.lifetime_defect)
            assert np.array_equal(a.placement_defect, b.placement_defect)


def test_a_host_without_vms_among_others():
    """A host with no VMs gets empty results and no counters, as in the reference loop."""
    empty = HostTrace([], [], [], [])
    busy = HostTrace([0.0, 1.0, 1.0], [4.0, math.nan, 1.0], [2, 30, 4], [1024, 2048, 4096])
    topo = PRESETS["intel-2s"]
    for policy in ("xen", DeciderSpec("default", ShieldConfig(depth=1))):
        assert_identical([(topo, empty), (topo, busy), (topo, empty)], policy)


def test_evaluate_gives_the_same_report_with_either_engine(monkeypatch):
    """`evaluate_policies` over a crowded mixed cluster, warm-up rows included, with the batched
    engine and with CATUR_ENGINE=reference: the very same per-VM arrays, summaries and counters."""
    streams = small_streams()
    assert any((~s.counted).any() for s in streams), "the window should start on warmed-up hosts"
    policies = ["xen", GREEDY, "core-best-fit", "random", DeciderSpec("default", ShieldConfig(depth=1))]
    monkeypatch.setenv(ENGINE_ENV, "reference")
    reference = evaluate_policies(streams, policies, jobs=1)
    monkeypatch.setenv(ENGINE_ENV, "batched")
    monkeypatch.setattr(batched_module, "MIN_BATCH_HOSTS", 1)  # batch even these few hosts
    batched = evaluate_policies(streams, policies, jobs=1)
    assert list(batched) == list(reference)
    for name, want in reference.items():
        got = batched[name]
        assert np.array_equal(got.rows, want.rows)
        assert np.array_equal(got.lifetime_defect, want.lifetime_defect)
        assert np.array_equal(got.placement_defect, want.placement_defect)
        assert got.summary == want.summary
        assert got.extra == want.extra
    assert batched["catur+shield"].extra.keys() >= {"shield_interventions", "gated"}


# --- pieces the engine relies on ----------------------------------------------------------------------


def test_what_goes_through_the_batch():
    """Deterministic policies, greedy and deciders are batched; random, the oracle, callables
    and correctable-anomaly counting take the reference loop."""
    assert all(batchable(name) for name in [*RANKING, GREEDY, RESIDENT_GREEDY])
    assert batchable(DeciderSpec("default", ShieldConfig(depth=2)))
    assert not batchable("random") and not batchable("oracle") and not batchable(lambda *a, **k: None)
    assert not batchable("xen", correctable_above=0.4)
    with pytest.raises(CaturError, match="random"):
        replay_batched([(PRESETS["intel-2s"], HostTrace([0.0], [1.0], [2], [1024]))], "random")


def test_engine_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert engine_name() == "batched"
    monkeypatch.setenv(ENGINE_ENV, "reference")
    assert engine_name() == "reference"
    monkeypatch.setenv(ENGINE_ENV, "numba")
    with pytest.raises(CaturError, match="CATUR_ENGINE='numba'"):
        engine_name()


def test_bad_vnuma_is_refused_like_the_reference():
    """A VM asking for more vNUMA instances than the host has nodes: the same error either way."""
    trace = HostTrace([0.0, 1.0], [5.0, math.nan], [8, 2], [1024, 1024], vnuma=[4, 0])
    with pytest.raises(CaturError, match="vnuma=4 exceeds the 2 NUMA nodes"):
        replay_host(PRESETS["intel-2s"], trace, "xen")
    with pytest.raises(CaturError, match="vnuma=4 exceeds the 2 NUMA nodes"):
        replay_batched([(PRESETS["intel-2s"], trace)], "xen", min_batch_hosts=1)


@settings(max_examples=60, **SETTINGS)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300))
def test_model_and_gate_give_a_row_the_same_bits_alone_or_in_a_batch(seed, rows):
    """A batch's row-wise products: scores and gate distances do not depend on the batch size."""
    rng = np.random.default_rng(seed)
    model = PolicyModel.load("ppo-synthetic")
    obs = rng.normal(0, 1, (rows, OBS_DIM)).astype(np.float32)
    scores = model.scores(obs)
    gate = UncertaintyGate.from_dict(model.manifest["gate"])
    distances = gate.distances(obs)
    for i in rng.choice(rows, size=min(rows, 5), replace=False):
        assert np.array_equal(scores[i], model.scores(obs[i]))
        assert distances[i] == gate.distance(obs[i])


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(topologies, st.data())
def test_depth1_shield_batch_matches_the_general_shield(topo, data):
    """shield_depth1 (array form) picks what the general shield picks at depth 1, row by row."""
    used_v = np.array([data.draw(st.integers(0, 2 * int(c))) for c in topo.node_cores])
    used_m = np.array([data.draw(st.integers(0, int(m))) for m in topo.node_mem_mib])
    request = VMRequest(data.draw(st.integers(1, 2 * int(topo.node_cores.max()))), data.draw(st.integers(1, 40000)))
    cands = candidates(topo, used_v, used_m, request)
    scores = np.array([data.draw(st.sampled_from([0.0, 1.0, -2.5, 3.0])) for _ in PRIMITIVES])
    config = ShieldConfig(depth=1, threshold=data.draw(st.sampled_from([0.0, 0.1, 0.4, 1.0])))
    verdict = shield(topo, used_v, used_m, cands, scores, config, None)
    choice, intervened, unshielded = shield_depth1(np.array([[c.defect for c in cands]]), scores[None], config)
    assert int(choice[0]) == verdict.choice
    assert bool(intervened[0]) == verdict.intervened
    assert bool(unshielded[0]) == (verdict.fallback == "unshielded")
