"""The gRPC contract: stubs current with the .proto, units documented, conversions exact,
validation naming the bad field (pure functions, no server)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _service_support import bad_requests, explicit_request, valid_request
from catur.decision import Decider
from catur.request import VMRequest
from catur.service import convert, protogen
from catur.service.convert import InvalidRequest, parse_place_request
from catur.shield import ShieldConfig
from catur.topology import PRESETS, Topology
from catur.v1 import placement_pb2 as pb

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROTO = Path(__file__).resolve().parents[1] / "proto" / "catur" / "v1" / "placement.proto"


def test_checked_in_stubs_match_the_proto(tmp_path):
    """Regenerating catur/v1 from the .proto into a temp dir gives the checked-in files."""
    pytest.importorskip("grpc_tools")
    fresh = protogen.generate(tmp_path)
    for path in fresh:
        checked_in = protogen.STUB_DIR / path.name
        assert checked_in.is_file(), f"{checked_in} is missing: run python -m catur.service.protogen"
        new, old = path.read_text(), checked_in.read_text()
        if new == old:
            continue
        # Another grpcio-tools than the one that made the stubs may only differ in its stamps;
        # a changed contract always fails.
        assert protogen.without_stamps(new) == protogen.without_stamps(old), (
            f"{checked_in.name} is stale: run python -m catur.service.protogen"
        )


def test_every_field_states_its_unit_or_meaning():
    """Every field of the .proto has a comment directly above it."""
    lines = PROTO.read_text().splitlines()
    field = re.compile(r"^\s+(optional |repeated )?[\w.]+ \w+ = \d+;")
    missing = [
        line.strip()
        for i, line in enumerate(lines)
        if field.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert not missing, f"fields without a comment: {missing}"
    assert "package catur.v1;" in PROTO.read_text()


def test_stamped_versions_are_within_the_pinned_floors():
    """The runtime floors in pyproject.toml are at least the versions stamped in the stubs."""
    stamps = {}
    for name in protogen.GENERATED:
        stamps.update(protogen.stamped_versions((protogen.STUB_DIR / name).read_text()))
    pyproject = (PROTO.parents[3] / "pyproject.toml").read_text()

    def floor(package: str) -> tuple[int, ...]:
        match = re.search(rf'"{package}>=([\d.]+)', pyproject)
        assert match, f"no floor for {package} in pyproject.toml"
        return tuple(int(x) for x in match.group(1).split("."))

    for package, version in stamps.items():
        assert floor(package) >= tuple(int(x) for x in version.split(".")), (package, version)


# --- conversions ------------------------------------------------------------------------------


def test_preset_topologies_travel_by_name_and_others_by_nodes():
    assert convert.topology_to_proto(PRESETS["intel-2s"]).WhichOneof("kind") == "preset"
    odd = Topology("intel-2s", [40, 20], [92160, 92160], [0, 1], [[10, 21], [21, 10]])  # name of a preset, other nodes
    msg = convert.topology_to_proto(odd)
    assert msg.WhichOneof("kind") == "explicit"
    assert convert.explicit_topology(msg.explicit) == odd


@st.composite
def valid_cases(draw):
    n = draw(st.integers(1, 8))
    cores = draw(st.lists(st.integers(1, 128), min_size=n, max_size=n))
    mem = draw(st.lists(st.integers(1, 1 << 20), min_size=n, max_size=n))
    socket = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    topology = Topology("t", cores, mem, socket, convert.default_distances(socket))
    used_vcpus = [draw(st.integers(0, 10 * c)) for c in cores]
    used_mem = [draw(st.integers(0, 10 * m)) for m in mem]
    vcpus = draw(st.integers(1, 10 * sum(cores)))
    vnuma = draw(st.none() | st.integers(1, min(n, vcpus)))
    request = VMRequest(
        vcpus,
        draw(st.integers(1, 10 * sum(mem))),
        draw(st.floats(0, 1000)),
        draw(st.floats(0, 1000)),
        vnuma,
    )
    return topology, np.array(used_vcpus), np.array(used_mem), request


@given(valid_cases(), st.text(max_size=20), st.text(max_size=20))
@settings(max_examples=150, **SETTINGS)
def test_valid_requests_round_trip_exactly(case, host_id, request_id):
    """Client encoding then server parsing gives back the same topology, usage and VM."""
    topology, used_vcpus, used_mem, request = case
    msg = convert.place_request(topology, used_vcpus, used_mem, request, host_id, request_id)
    parsed = parse_place_request(pb.PlaceRequest.FromString(msg.SerializeToString()))
    assert parsed.topology == Topology("t", topology.node_cores, topology.node_mem_mib, topology.node_socket, topology.distance)
    assert np.array_equal(parsed.used_vcpus, used_vcpus) and np.array_equal(parsed.used_mem_mib, used_mem)
    assert parsed.request == request
    assert (parsed.host_id, parsed.request_id) == (host_id, request_id)


@given(valid_cases())
@settings(max_examples=60, **SETTINGS)
def test_decisions_round_trip_exactly(case):
    topology, used_vcpus, used_mem, request = case
    decision = Decider(None, ShieldConfig(depth=1)).decide(topology, used_vcpus, used_mem, request)
    back = convert.decision_from_proto(pb.PlaceResponse.FromString(convert.decision_to_proto(decision, "id").SerializeToString()))
    for name in ("primitive", "scores", "policy", "shield_intervened", "shield_fallback", "shield_reason", "gated", "cor", "rmr", "defect"):
        assert getattr(back, name) == getattr(decision, name), name
    for name in ("cpu_nodes", "vcpus", "mem_mib"):
        assert np.array_equal(getattr(back.placement, name), getattr(decision.placement, name))
    assert back.request_id == "id"
    assert back.to_dict()["instances"][0]["cpu_node"] == int(decision.placement.cpu_nodes[0])


# --- validation --------------------------------------------------------------------------------


def test_valid_examples_parse():
    assert parse_place_request(valid_request()).topology is PRESETS["amd-2s-nps2"]
    parsed = parse_place_request(explicit_request())
    assert parsed.topology.num_nodes == 3 and parsed.topology.name == "odd-host"


@given(bad_requests())
@settings(max_examples=400, **SETTINGS)
def test_bad_requests_are_refused_naming_the_field(case):
    msg, field = case
    with pytest.raises(InvalidRequest) as info:
        parse_place_request(msg)
    assert field in str(info.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.usage.used_vcpus.__setitem__(0, 400), "usage.used_vcpus[0] is 400 vCPUs, more than 10x node 0's capacity of 32"),
        (lambda m: m.vm.__setattr__("alpha", float("nan")), "vm.alpha must be finite and in 0..1000, got nan"),
        (lambda m: m.topology.__setattr__("preset", "amd"), "topology.preset 'amd' is not a preset; known: amd-2s-nps2, amd-2s-nps4, intel-2s"),
        (lambda m: m.usage.used_mem_mib.append(0), "usage.used_mem_mib has 5 values; the topology has 4 nodes"),
        (lambda m: m.ClearField("vm"), "vm is required"),
    ],
)
def test_messages_are_readable(mutate, message):
    msg = valid_request()
    mutate(msg)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_place_request(msg)


def test_explicit_topologies_are_cached_by_content():
    cache = convert.TopologyCache(size=2)
    a = cache.get(explicit_request().topology.explicit)
    assert cache.get(explicit_request().topology.explicit) is a
    other = explicit_request()
    other.topology.explicit.nodes[0].cores = 9
    b = cache.get(other.topology.explicit)
    assert b is not a and int(b.node_cores[0]) == 9


# --- resident counts (optional, added in 0.2) ------------------------------------------------------


def _servicer(model: str):
    from catur.service.serving import ModelHolder
    from catur.service.servicer import PlacementServicer

    return PlacementServicer(ModelHolder(model, ShieldConfig(depth=1)))


def test_an_old_style_request_is_still_answered_and_says_what_it_used():
    """A request without usage.residents gets an answer from the totals; one with them says it used them."""
    servicer = _servicer("resident-greedy")
    old = servicer.place_one(valid_request())
    assert list(old.inputs_used) == ["usage"] and old.policy == "greedy" and old.instances
    msg = valid_request()
    msg.usage.residents.extend([min(v, 3) for v in msg.usage.used_vcpus])
    new = servicer.place_one(msg)
    assert list(new.inputs_used) == ["usage", "residents"] and new.policy == "resident-greedy"
    assert convert.decision_from_proto(new).residents_used
    # A model-less greedy server reads the counts but does not use them.
    assert list(_servicer("none").place_one(msg).inputs_used) == ["usage"]


@given(valid_cases(), st.data())
@settings(max_examples=60, **SETTINGS)
def test_resident_counts_round_trip(case, data):
    topology, used_vcpus, used_mem, request = case
    counts = np.array([data.draw(st.integers(0, int(v))) for v in used_vcpus], dtype=np.int64)
    msg = convert.place_request(topology, used_vcpus, used_mem, request, residents=counts)
    parsed = parse_place_request(pb.PlaceRequest.FromString(msg.SerializeToString()))
    assert np.array_equal(parsed.residents, counts)
    assert parse_place_request(convert.place_request(topology, used_vcpus, used_mem, request)).residents is None


@pytest.mark.parametrize(
    "counts, message",
    [
        ([1, 0], "usage.residents has 2 values; the topology has 4 nodes"),
        ([-1, 0, 0, 0], "usage.residents[0] must be >= 0, got -1"),
        ([0, 0, 0, 10**6], "usage.residents[3] is 1000000 VMs but usage.used_vcpus[3] is"),
    ],
)
def test_bad_resident_counts_are_refused_naming_the_field(counts, message):
    msg = valid_request()
    msg.usage.residents.extend(counts)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_place_request(msg)


# --- the resident list (optional, added in 0.3) ----------------------------------------------------


@given(valid_cases(), st.data())
@settings(max_examples=60, **SETTINGS)
def test_resident_counts_are_derived_from_the_resident_list(case, data):
    """Any list of VMs that fits within the usage totals parses; each node's count is the
    number of listed VMs with vCPUs on it, the same as sending those counts directly."""
    topology, used_vcpus, used_mem, request = case
    n = topology.num_nodes
    free_v, free_m = np.array(used_vcpus, dtype=np.int64), np.array(used_mem, dtype=np.int64)
    vms = []
    for _ in range(data.draw(st.integers(0, 6))):
        if free_v.sum() == 0:
            break
        node = data.draw(st.sampled_from([i for i in range(n) if free_v[i] > 0]))
        vcpus = np.zeros(n, dtype=np.int64)
        mem = np.zeros(n, dtype=np.int64)
        for i in range(n):
            vcpus[i] = data.draw(st.integers(1 if i == node else 0, int(free_v[i]))) if free_v[i] else 0
            mem[i] = data.draw(st.integers(0, int(free_m[i])))
        free_v, free_m = free_v - vcpus, free_m - mem
        age = data.draw(st.none() | st.floats(0, 1e8))
        vms.append({"vcpus": vcpus, "mem_mib": mem, "age_s": age})
    msg = convert.place_request(topology, used_vcpus, used_mem, request, resident_vms=vms)
    parsed = parse_place_request(pb.PlaceRequest.FromString(msg.SerializeToString()))
    if not vms:
        assert parsed.residents is None and not parsed.residents_from_list
        return
    expected = sum((vm["vcpus"] > 0).astype(np.int64) for vm in vms)
    assert parsed.residents_from_list and np.array_equal(parsed.residents, expected)
    # Both at once, consistent: accepted, the same counts.
    both = convert.place_request(topology, used_vcpus, used_mem, request, residents=expected, resident_vms=vms)
    assert np.array_equal(parse_place_request(both).residents, expected)


def test_a_resident_list_is_answered_as_its_counts_and_says_so():
    servicer = _servicer("default")
    msg = valid_request()  # amd-2s-nps2: 4 nodes, 3 vCPUs used on each
    listed = valid_request()
    for vcpus in ([2, 0, 0, 0], [1, 0, 1, 0], [0, 0, 2, 3]):
        listed.usage.resident_vms.add(vcpus=vcpus, mem_mib=[1024 * bool(v) for v in vcpus], age_s=3600.0)
    msg.usage.residents.extend([2, 0, 2, 1])
    by_counts, by_list = servicer.place_one(msg), servicer.place_one(listed)
    assert list(by_counts.inputs_used) == ["usage", "residents"]
    assert list(by_list.inputs_used) == ["usage", "residents", "resident_vms"]
    assert by_list.instances == by_counts.instances and by_list.primitive == by_counts.primitive
    assert convert.decision_from_proto(by_list).to_dict()["inputs_used"] == ["usage", "residents", "resident_vms"]


@pytest.mark.parametrize(
    "vms, counts, message",
    [
        ([{"vcpus": [1, 0]}], None, "usage.resident_vms[0].vcpus has 2 values; the topology has 4 nodes"),
        ([{"vcpus": [1, 0, 0, 0]}, {"vcpus": [1, 0, 0, 0], "mem_mib": [1]}], None,
         "usage.resident_vms[1].mem_mib has 1 values; the topology has 4 nodes (or send none)"),
        ([{"vcpus": [1, -1, 0, 0]}], None, "usage.resident_vms[0].vcpus[1] must be >= 0, got -1"),
        ([{"vcpus": [1, 0, 0, 0], "mem_mib": [0, 0, -5, 0]}], None, "usage.resident_vms[0].mem_mib[2] must be >= 0, got -5"),
        ([{"vcpus": [0, 0, 0, 0]}], None, "usage.resident_vms[0].vcpus are all 0"),
        ([{"vcpus": [1, 0, 0, 0], "age_s": -1.0}], None, "usage.resident_vms[0].age_s must be a finite number of seconds >= 0"),
        ([{"vcpus": [1, 0, 0, 0], "age_s": float("nan")}], None, "usage.resident_vms[0].age_s must be a finite"),
        ([{"vcpus": [2, 0, 0, 0]}, {"vcpus": [2, 0, 0, 0]}], None,
         "usage.resident_vms put 4 vcpus on node 0, more than usage.used_vcpus[0] = 3"),
        ([{"vcpus": [1, 0, 0, 0], "mem_mib": [5000, 0, 0, 0]}], None,
         "usage.resident_vms put 5000 mem_mib on node 0, more than usage.used_mem_mib[0] = 4096"),
        ([{"vcpus": [1, 1, 0, 0]}], [1, 0, 0, 0],
         "usage.residents [1, 0, 0, 0] disagree with the 1 usage.resident_vms, which put [1, 1, 0, 0] VMs on the nodes"),
    ],
)
def test_bad_resident_lists_are_refused_naming_the_entry(vms, counts, message):
    msg = valid_request()
    for vm in vms:
        msg.usage.resident_vms.append(convert.resident_vm(vm))
    if counts:
        msg.usage.residents.extend(counts)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_place_request(msg)
