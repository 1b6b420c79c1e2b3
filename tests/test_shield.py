"""Speculative shielding, the uncertainty gate and the Decider that combines them with a model.

The shield cases are hand-built on a 2-node host (2 sockets × 4 cores × 4 GiB) small enough
to follow every primitive's placement on paper; the Decider is then checked on
hypothesis-generated hosts, requests and request histories.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.decision import Decider, DeciderSpec
from catur.errors import CaturError
from catur.gate import UncertaintyGate, fit_gate
from catur.policy_model import MODEL_FORMAT, PolicyModel
from catur.observation import OBS_DIM, OBS_VERSION, candidates, encode
from catur.placement import greedy_place, primitive_placements
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.shield import ShieldConfig, TypeStats, shield
from catur.topology import PRESETS, Topology

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 2 nodes on 2 sockets, 4 cores and 4 GiB each.
T2 = Topology("t2", [4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 10]])
TOPOLOGIES = [T2, *PRESETS.values()]
CBF, CMI, MBF, MMI = range(4)
assert PRIMITIVES == ("core-best-fit", "core-most-idle", "mem-best-fit", "mem-most-idle")


def arr(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def stats_of(*requests: VMRequest, window: int = 100) -> TypeStats:
    stats = TypeStats(window)
    for r in requests:
        stats.observe(r)
    return stats


def manifest(**extra) -> dict:
    return {
        "format": MODEL_FORMAT,
        "obs_version": OBS_VERSION,
        "obs_dim": OBS_DIM,
        "actions": list(PRIMITIVES),
        "activation": "tanh",
        **extra,
    }


def preferring(primitive: str, **extra) -> PolicyModel:
    """A linear model that always scores ``primitive`` highest."""
    bias = np.where(np.array(PRIMITIVES) == primitive, 5.0, 0.0).astype(np.float32)
    return PolicyModel(manifest(**extra), ((np.zeros((OBS_DIM, 4), np.float32), bias),))


def same_placement(a, b) -> bool:
    return (
        np.array_equal(a.cpu_nodes, b.cpu_nodes)
        and np.array_equal(a.vcpus, b.vcpus)
        and np.array_equal(a.mem_mib, b.mem_mib)
    )


# --- TypeStats -------------------------------------------------------------------------------


def test_type_stats_popular_by_share():
    """popular() lists the types whose share is >= width, most frequent first, up to limit."""
    a, b, c = VMRequest(2, 1024), VMRequest(4, 4096), VMRequest(1, 512)
    stats = stats_of(a, a, a, a, a, a, b, b, b, c)
    assert stats.popular(0.05, 8) == [a, b, c]
    assert stats.popular(0.2, 8) == [a, b]
    assert stats.popular(0.5, 8) == [a]
    assert stats.popular(0.7, 8) == []
    assert stats.popular(0.05, 2) == [a, b]
    assert TypeStats().popular(0.05, 8) == []


def test_type_stats_window_forgets_old_requests():
    """Only the last `window` requests count."""
    a, b = VMRequest(2, 1024), VMRequest(4, 4096)
    stats = stats_of(a, a, a, b, b, window=3)
    assert stats.popular(0.5, 8) == [b]  # window holds a, b, b
    for _ in range(3):
        stats.observe(b)
    assert stats.popular(0.01, 8) == [b]  # a forgotten entirely


def test_type_stats_key_includes_weights_and_vnuma():
    """Types differing only in alpha, beta or vnuma are counted apart."""
    base = VMRequest(2, 1024)
    variants = [base, VMRequest(2, 1024, alpha=2.0), VMRequest(2, 1024, beta=0.5), VMRequest(2, 1024, vnuma=2)]
    stats = stats_of(*variants)
    assert len(stats.popular(0.25, 8)) == 4
    assert stats.popular(0.3, 8) == []


# --- ShieldConfig ----------------------------------------------------------------------------


def test_shield_config_defaults():
    """Defaults are the paper's: depth 1, width 5%, threshold 0.40; depth 0 disables."""
    config = ShieldConfig()
    assert (config.depth, config.width, config.threshold) == (1, 0.05, 0.40)
    assert config.enabled
    assert not ShieldConfig(depth=0).enabled


@pytest.mark.parametrize(
    "field,value",
    [
        ("depth", -1),
        ("depth", 1.5),
        ("depth", True),
        ("depth", "2"),
        ("width", 0.0),
        ("width", 1.5),
        ("width", -0.1),
        ("width", "0.05"),
        ("threshold", -0.1),
        ("threshold", float("nan")),
        ("threshold", float("inf")),
        ("window", 0),
        ("window", 2.5),
        ("max_types", 0),
    ],
)
def test_shield_config_rejects_bad_values(field, value):
    """A bad shield parameter raises CaturError naming the field and the value."""
    with pytest.raises(CaturError, match=field) as caught:
        ShieldConfig(**{field: value})
    assert repr(value) in str(caught.value)


# --- the shield on hand-built states ----------------------------------------------------------


def test_rejects_high_defect_and_picks_best_scored_allowed():
    """Primitives with defect > threshold are rejected; the best-scored allowed one wins.

    Node 0: 3 of 4 cores used; node 1: 3.5 of 4 GiB used. A 2-vCPU, 1-GiB VM: the core
    primitives take node 1 (half its memory remote: defect 0.5), the memory primitives node 0
    (COR (3 + 2 − 4) / 4 = 0.25).
    """
    used_vcpus, used_mem, request = arr(3, 0), arr(0, 3584), VMRequest(2, 1024)
    cands = candidates(T2, used_vcpus, used_mem, request)
    assert [c.defect for c in cands] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    verdict = shield(T2, used_vcpus, used_mem, cands, np.array([3.0, 2.0, 1.0, 0.0]), ShieldConfig(), None)
    assert verdict.choice == MBF
    assert verdict.allowed == (False, False, True, True)
    assert verdict.intervened and verdict.fallback == ""
    assert "0.500" in verdict.reason and "0.4" in verdict.reason
    verdict = shield(T2, used_vcpus, used_mem, cands, np.array([0.0, 0.0, 0.0, 5.0]), ShieldConfig(), None)
    assert (verdict.choice, verdict.intervened, verdict.reason) == (MMI, False, "")
    # A looser threshold allows everything: the policy's choice stands.
    verdict = shield(T2, used_vcpus, used_mem, cands, np.array([3.0, 2.0, 1.0, 0.0]), ShieldConfig(threshold=0.6), None)
    assert (verdict.choice, verdict.allowed, verdict.intervened) == (CBF, (True,) * 4, False)


def test_nothing_allowed_falls_back_unshielded():
    """When no primitive keeps the defect under the threshold, the policy's choice is kept."""
    used_vcpus, used_mem, request = arr(4, 4), arr(0, 0), VMRequest(4, 1024)  # both nodes full
    cands = candidates(T2, used_vcpus, used_mem, request)
    assert min(c.defect for c in cands) > 0.4
    for depth in (1, 2, 3):
        verdict = shield(
            T2, used_vcpus, used_mem, cands, np.array([0.0, 0.0, 1.0, 0.0]), ShieldConfig(depth=depth),
            stats_of(VMRequest(1, 512)),
        )
        assert verdict.choice == MBF
        assert verdict.fallback == "unshielded"
        assert verdict.allowed == (False,) * 4
        assert not verdict.intervened


# Node 0 empty; node 1 half used (2 vCPUs, 2 GiB). A 2-vCPU, 2-GiB VM: the best-fit primitives
# fill node 1, the most-idle ones take node 0 and leave both nodes half full. Both are fine now
# (defect 0), but then a popular full-node VM (4 vCPUs, 4 GiB) fits only after best-fit.
HALF = (arr(0, 2), arr(0, 2048), VMRequest(2, 2048))
FULL_NODE_VM = VMRequest(4, 4096)


def test_depth_two_rejects_a_primitive_that_strands_a_popular_type():
    """At depth 2, a primitive that leaves a popular type no safe placement is rejected."""
    used_vcpus, used_mem, request = HALF
    cands = candidates(T2, used_vcpus, used_mem, request)
    assert [int(c.placement.cpu_nodes[0]) for c in cands] == [1, 0, 1, 0]
    assert [c.defect for c in cands] == [0.0] * 4
    scores = np.array([0.0, 1.0, 0.0, 0.0])  # the policy prefers core-most-idle
    popular = stats_of(*[FULL_NODE_VM] * 9, VMRequest(1, 512))
    verdict = shield(T2, used_vcpus, used_mem, cands, scores, ShieldConfig(depth=2), popular)
    assert verdict.allowed == (True, False, True, False)
    assert verdict.choice == CBF
    assert verdict.intervened and verdict.fallback == ""
    assert "popular" in verdict.reason
    # At depth 1 the same state passes untouched.
    verdict = shield(T2, used_vcpus, used_mem, cands, scores, ShieldConfig(depth=1), popular)
    assert (verdict.choice, verdict.intervened, verdict.allowed) == (CMI, False, (True,) * 4)
    # A type below the width does not count.
    rare = stats_of(FULL_NODE_VM, *[VMRequest(1, 512)] * 99)
    verdict = shield(T2, used_vcpus, used_mem, cands, scores, ShieldConfig(depth=2), rare)
    assert (verdict.choice, verdict.intervened) == (CMI, False)
    # And without stats there are no popular types.
    verdict = shield(T2, used_vcpus, used_mem, cands, scores, ShieldConfig(depth=2), None)
    assert (verdict.choice, verdict.intervened) == (CMI, False)


def test_depth_two_with_nothing_allowed_retries_at_depth_one():
    """When every primitive strands a popular type, the shield retries at depth 1."""
    used_vcpus, used_mem, request = HALF
    cands = candidates(T2, used_vcpus, used_mem, request)
    # An 8-vCPU VM needs both nodes: after any choice some node is overloaded.
    verdict = shield(
        T2, used_vcpus, used_mem, cands, np.array([0.0, 1.0, 0.0, 0.0]), ShieldConfig(depth=2),
        stats_of(*[VMRequest(8, 8192)] * 5),
    )
    assert verdict.fallback == "depth-1"
    assert verdict.choice == CMI
    assert verdict.allowed == (True,) * 4
    assert not verdict.intervened


def test_decider_reports_the_shield():
    """Decider with a shield returns the shield's pick and says why it intervened."""
    used_vcpus, used_mem, request = HALF
    decider = Decider(preferring("core-most-idle"), ShieldConfig(depth=2), use_gate=False)
    decision = decider.decide(T2, used_vcpus, used_mem, request, stats_of(*[FULL_NODE_VM] * 5))
    assert decision.primitive == "core-best-fit"
    assert decision.shield_intervened and "popular" in decision.shield_reason
    assert decision.policy == "catur" and decision.placement.policy == "catur"
    np.testing.assert_array_equal(decision.placement.cpu_nodes, [1])
    # Without the popular type, the model's own choice.
    decision = decider.decide(T2, used_vcpus, used_mem, request, TypeStats())
    assert decision.primitive == "core-most-idle" and not decision.shield_intervened


def test_popular_type_from_a_larger_topology_does_not_break_the_shield():
    """A popular type with vnuma=4 (seen on 4-node hosts) must not fail a 2-node decision."""
    stats = stats_of(*[VMRequest(8, 8192, vnuma=4)] * 10)
    decider = Decider(shield_config=ShieldConfig(depth=2))
    decision = decider.decide(PRESETS["intel-2s"], arr(0, 0), arr(0, 0), VMRequest(2, 1024), stats)
    assert decision.primitive in PRIMITIVES


# --- Decider without a model is greedy ----------------------------------------------------------


@st.composite
def host_states(draw, max_types: int = 3):
    """A topology, arbitrary (possibly overcommitted) usage, a valid request and request history."""
    topology = draw(st.sampled_from(TOPOLOGIES))
    n = topology.num_nodes

    def request():
        vcpus = draw(st.integers(1, int(topology.node_cores.sum())))
        mem = draw(st.integers(1, int(topology.node_mem_mib.sum())))
        alpha = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        beta = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        vnuma = draw(st.one_of(st.none(), st.integers(1, min(n, vcpus))))
        return VMRequest(vcpus, mem, alpha, beta, vnuma)

    used_vcpus = np.array([draw(st.integers(0, 2 * int(c))) for c in topology.node_cores], dtype=np.int64)
    used_mem = np.array([draw(st.integers(0, int(1.2 * m))) for m in topology.node_mem_mib], dtype=np.int64)
    history = [request() for _ in range(draw(st.integers(0, max_types)))]
    counts = [draw(st.integers(1, 5)) for _ in history]
    stats = stats_of(*[r for r, k in zip(history, counts) for _ in range(k)])
    return topology, used_vcpus, used_mem, request(), stats


@given(state=host_states(), depth=st.sampled_from([0, 1]))
@settings(max_examples=150, **SETTINGS)
def test_decider_without_model_is_greedy(state, depth):
    """Decider() (no model, no shield) places exactly like greedy_place."""
    topology, used_vcpus, used_mem, request, stats = state
    decider = Decider(None, ShieldConfig(depth=depth) if depth else None)
    decision = decider.decide(topology, used_vcpus, used_mem, request, stats)
    greedy = greedy_place(topology, used_vcpus, used_mem, request)
    assert same_placement(decision.placement, greedy)
    assert decision.policy == decision.placement.policy == "greedy"
    assert decision.scores == tuple(-c.defect for c in candidates(topology, used_vcpus, used_mem, request))
    assert decision.defect == min(c.defect for c in candidates(topology, used_vcpus, used_mem, request))
    assert not decision.gated and decision.model_version == ""


# --- the uncertainty gate ---------------------------------------------------------------------


def training_states(count: int = 300, seed: int = 0):
    """Moderately loaded intel-2s hosts receiving small VMs with default weights."""
    rng = np.random.default_rng(seed)
    topology = PRESETS["intel-2s"]
    states = []
    for _ in range(count):
        used_vcpus = rng.integers(0, 36, 2)
        used_mem = rng.integers(0, 80_000, 2)
        request = VMRequest(int(rng.choice([1, 2, 4, 8])), int(rng.choice([1024, 2048, 4096, 8192])))
        states.append((topology, used_vcpus, used_mem, request))
    return states


@pytest.fixture(scope="module")
def gate_setup():
    states = training_states()
    observations = np.array([encode(*s) for s in states])
    return states, observations, fit_gate(observations)


def test_fit_gate_threshold_and_round_trip(gate_setup):
    """The threshold is a high quantile of training distances; to_dict/from_dict round-trips."""
    _, observations, gate = gate_setup
    distances = np.array([gate.distance(o) for o in observations])
    assert (distances <= gate.threshold).mean() >= 0.99
    assert gate.distance(gate.mean) == pytest.approx(0.0, abs=1e-9)
    again = UncertaintyGate.from_dict(gate.to_dict())
    assert again.threshold == gate.threshold
    assert again.distance(observations[0]) == pytest.approx(gate.distance(observations[0]))


def test_fit_gate_and_from_dict_errors(gate_setup):
    """Too few observations or malformed statistics raise CaturError."""
    _, observations, gate = gate_setup
    with pytest.raises(CaturError, match="two observations"):
        fit_gate(observations[:1])
    with pytest.raises(CaturError, match="malformed"):
        UncertaintyGate.from_dict({"mean": [0.0]})
    bad = gate.to_dict() | {"precision": [[1.0, 0.0]]}
    with pytest.raises(CaturError, match="precision"):
        UncertaintyGate.from_dict(bad)


def test_gate_fires_far_from_training_data_and_uses_fallback(gate_setup, tmp_path):
    """An observation far from the training data fires the gate; the fallback primitive places."""
    states, _, gate = gate_setup
    model = preferring("core-most-idle", gate=gate.to_dict(), fallback_primitive="mem-best-fit")
    directory = model.save(tmp_path / "gated")
    decider = DeciderSpec(model=str(directory)).build()
    assert decider.gate is not None and decider.gate.fallback == "mem-best-fit"

    # In distribution: a training state well inside the threshold → the model's choice.
    inside = next(s for s in states if gate.distance(encode(*s)) < 0.5 * gate.threshold)
    decision = decider.decide(*inside)
    assert not decision.gated and decision.gate_distance < gate.threshold
    assert (decision.policy, decision.primitive) == ("catur", "core-most-idle")

    # Far away: an 8-node host, a huge VM with unusual weights → the fallback primitive.
    topology = PRESETS["amd-2s-nps4"]
    far = (topology, np.full(8, 20), np.full(8, 30_000), VMRequest(48, 200_000, alpha=3.0, beta=0.0))
    decision = decider.decide(*far)
    assert decision.gated and decision.gate_distance > gate.threshold
    assert decision.policy == decision.placement.policy == "mem-best-fit"
    assert decision.primitive == "mem-best-fit"
    expected = primitive_placements(topology, far[1], far[2], far[3])["mem-best-fit"]
    assert same_placement(decision.placement, expected)

    # Gate off: the model decides even there.
    decision = DeciderSpec(model=str(directory), use_gate=False).build().decide(*far)
    assert not decision.gated and decision.primitive == "core-most-idle"

    # No fallback primitive in the manifest: gated requests go to greedy.
    decision = Decider(preferring("core-most-idle", gate=gate.to_dict())).decide(*far)
    assert decision.gated and decision.policy == "greedy"
    assert same_placement(decision.placement, greedy_place(*far))


def test_bad_fallback_primitive_is_refused():
    """A manifest naming an unknown fallback primitive is refused."""
    with pytest.raises(CaturError, match="fallback_primitive"):
        Decider(preferring("core-most-idle", fallback_primitive="xen"))


def test_decider_spec_names():
    """DeciderSpec names entries catur / greedy, +shield, -nogate."""
    assert DeciderSpec().name == "greedy"
    assert DeciderSpec(shield=ShieldConfig(depth=1)).name == "greedy+shield"
    assert DeciderSpec(shield=ShieldConfig(depth=0)).name == "greedy"
    assert DeciderSpec(model="m", shield=ShieldConfig(depth=2), use_gate=False).name == "catur+shield-nogate"
    assert DeciderSpec(model="m", label="mine").name == "mine"


# --- property: the Decider with a shield never fails and places like a primitive -------------


@given(
    state=host_states(),
    depth=st.integers(1, 3),
    width=st.sampled_from([0.05, 0.2, 0.5]),
    threshold=st.sampled_from([0.0, 0.1, 0.4, 1.0]),
    with_model=st.booleans(),
)
@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
def test_shielded_decider_always_places_like_a_primitive(state, depth, width, threshold, with_model):
    """With any shield, the Decider never raises and returns one of the four primitives' placements."""
    topology, used_vcpus, used_mem, request, stats = state
    weights = np.random.default_rng(depth).normal(0, 0.3, (OBS_DIM, 4)).astype(np.float32)
    model = PolicyModel(manifest(), ((weights, np.zeros(4, np.float32)),)) if with_model else None
    config = ShieldConfig(depth=depth, width=width, threshold=threshold)
    decision = Decider(model, config).decide(topology, used_vcpus, used_mem, request, stats)
    options = primitive_placements(topology, used_vcpus, used_mem, request)
    assert decision.primitive in PRIMITIVES
    assert same_placement(decision.placement, options[decision.primitive])
    assert decision.shield_fallback in ("", "depth-1", "unshielded")
    if decision.shield_fallback == "unshielded":
        assert all(c.defect > threshold for c in candidates(topology, used_vcpus, used_mem, request))
    else:
        assert decision.defect <= threshold
    assert int(decision.placement.vcpus.sum()) == request.vcpus
    assert int(decision.placement.mem_mib.sum()) == request.mem_mib
