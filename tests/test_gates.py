"""Never worse than greedy: the verdict (:mod:`catur.verdict`), ``catur train-primitives``'s refusal,
``catur models promote``'s refusal, and greedy served as a registry *rule version*.

The retraining job's use of the same verdict (clusters judged on clear differences, greedy in
the collapse test and the promotion gate, the fallback to greedy) is tested in
``test_retrain.py`` and ``test_continuous_e2e.py``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _service_support import make_model, random_trace
from catur.cli import main
from catur.decision import Decider, DeciderSpec
from catur.errors import EXIT_LOSES_TO_GREEDY, CaturError, LosesToGreedy
from catur.policy_model import PolicyModel, RulePolicy, default_model_dir, load_policy
from catur.registry import Registry
from catur.request import VMRequest
from catur.service.client import PlacementClient
from catur.service.server import Service, create_server
from catur.shield import ShieldConfig
from catur.topology import PRESETS
from catur.verdict import RULE, Comparison, compare, gate_record, host_sums, recorded_comparison

CATUR = Path(sys.executable).with_name("catur")


# --- the comparison and the rule ----------------------------------------------------------------


def test_compare_by_hand():
    vms = np.array([10, 10, 10, 10, 10, 10])
    greedy = np.array([0.1, 0.2, 0.1, 0.3, 0.2, 0.1]) * vms
    same = compare(vms, greedy, greedy)
    assert same.diff == 0 and same.outcome == "tie" and not same.loses and not same.clearly_worse
    worse = compare(vms, greedy + 0.01 * vms, greedy)  # 1 point worse on every host
    assert worse.diff == pytest.approx(0.01) and worse.clearly_worse and worse.loses
    assert worse.diff_low == pytest.approx(0.01) and worse.describe().endswith("clearly worse")
    noisy = compare(vms, greedy + np.array([0.05, -0.04, 0.05, -0.04, 0.05, -0.04]) * vms, greedy)
    assert noisy.diff > 0 and not noisy.clearly_worse and noisy.loses  # worse on average: loses all the same
    assert noisy.outcome == "worse on average (within the noise)"
    better = compare(vms, greedy - 0.01 * vms, greedy)
    assert better.clearly_better and not better.loses
    one = compare([50], [40.0], [1.0])  # one host: no interval, never clear, but the average still decides
    assert math.isinf(one.diff_low) and not one.clearly_worse and one.loses and "no interval" in one.describe()
    empty_hosts = compare([0, 10, 10], [5.0, 1.0, 2.0], [0.0, 1.0, 2.0])  # hosts without VMs are left out
    assert empty_hosts.hosts == 2 and empty_hosts.diff == 0
    with pytest.raises(ValueError):
        compare([0], [0.0], [0.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_comparison_invariants(hosts):
    """The interval holds the difference, the rule is exactly "worse on average or clearly
    worse", swapping the two sides mirrors everything, and the record round-trips."""
    vms = np.array([h[0] for h in hosts])
    if vms.sum() == 0:
        return
    model, base = vms * np.array([h[1] for h in hosts]), vms * np.array([h[2] for h in hosts])
    c = compare(vms, model, base)
    assert c.diff_low - 1e-12 <= c.diff <= c.diff_high + 1e-12
    assert c.loses == (c.diff > 0 or c.diff_low > 0)
    assert not (c.clearly_worse and c.clearly_better)
    mirror = compare(vms, base, model)
    assert mirror.diff == pytest.approx(-c.diff, abs=1e-12)
    if math.isfinite(c.diff_low):
        assert mirror.diff_low == pytest.approx(-c.diff_high, abs=1e-12) and mirror.diff_high == pytest.approx(-c.diff_low, abs=1e-12)
    assert mirror.clearly_worse == c.clearly_better
    again = Comparison.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c and again.loses == c.loses
    assert compare(vms, model, base) == c  # a fixed seed: the same numbers, the same interval


def test_host_sums_match_a_loop():
    rng = np.random.default_rng(3)
    streams = []
    order = rng.permutation(60)
    for host, chunk in enumerate(np.array_split(order, 4)):
        streams.append(SimpleNamespace(host=10 + host, rows=chunk, counted=rng.random(len(chunk)) < 0.8))
    rows = np.sort(np.concatenate([s.rows[s.counted] for s in streams]))
    defects = rng.random(len(rows))
    hosts, vms, sums = host_sums(streams, rows, defects)
    assert hosts == [10, 11, 12, 13]
    for i, s in enumerate(streams):
        mine = np.isin(rows, s.rows[s.counted])
        assert vms[i] == mine.sum() and sums[i] == pytest.approx(defects[mine].sum())


def losing_record(**changes) -> dict:
    """A gate record in which the model is clearly worse than greedy on 6 hosts."""
    vms = np.full(6, 20)
    greedy = np.array([0.01, 0.02, 0.01, 0.015, 0.02, 0.01]) * vms
    sums = {"catur": greedy + 0.005 * vms, "greedy": greedy, "core-best-fit": greedy * 3}
    return gate_record(list(range(6)), vms, sums, "catur", **changes)


def test_gate_record_is_read_back_with_the_same_rule():
    record = losing_record()
    assert record["loses_to_greedy"] and record["rule"] == RULE and not record["allowed_worse"]
    assert record["versus"]["best_primitive"]["baseline"] == "core-best-fit"
    assert losing_record(allowed_worse=True)["allowed_worse"]
    from_manifest = recorded_comparison({"evaluation": {"gate": record}})
    assert from_manifest.loses and from_manifest.to_dict() == record["versus"]["greedy"]
    # The registry's evaluation.json comes first; without per-host data the recorded numbers are used.
    winning = dict(record, per_host=None, versus={"greedy": dict(record["versus"]["greedy"], model_avg_defect=0.0, diff=-0.01, diff_ci=[-0.02, -0.001])})
    assert not recorded_comparison({"evaluation": {"gate": record}}, {"gate": winning}).loses
    # Older manifests: the two averages only.
    old = recorded_comparison({"evaluation": {"avg_defect": 0.02, "baselines": {"greedy": 0.01}, "hosts": [1, 2]}})
    assert old.loses and old.vms == 0 and "recorded averages only" in old.describe()
    assert recorded_comparison({"evaluation": {"avg_defect": 0.02}}) is None and recorded_comparison({}) is None


def test_the_shipped_model_still_loads_and_passes_its_recorded_gate():
    manifest = PolicyModel.load("ppo-synthetic").manifest
    comparison = recorded_comparison(manifest)
    assert comparison is not None and not comparison.loses  # 0.327% against greedy's 0.482% (days 13-15)


# --- catur train-primitives refuses a model that loses to greedy ----------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not CATUR.exists(), reason=f"no installed catur command at {CATUR}")
def test_train_refuses_a_model_worse_than_greedy(tmp_path):
    """100 PPO steps from scratch, no warm start: the network picks nearly at random and loses
    clearly to greedy. Exit 3, one line saying why, and an existing model at --out untouched."""
    out = tmp_path / "model"
    shutil.copytree(default_model_dir(), out)
    before = (out / "manifest.json").read_text()
    result = subprocess.run(
        [CATUR, "train-primitives", "--synthetic", "default", "--timesteps", "100", "--eval-every", "5000", "--eval-hosts", "3",
         "--envs", "1", "--warm-start", "0", "--quiet", "--out", out],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == EXIT_LOSES_TO_GREEDY == 3, result.stderr[-800:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("catur: error: the model loses to greedy on validation days 13:15")
    assert "vs greedy" in lines[0] and "--allow-worse" in lines[0] and "Traceback" not in result.stderr
    assert (out / "manifest.json").read_text() == before and not (out / "checkpoints").exists()


# --- catur models promote refuses it ---------------------------------------------------------------


@pytest.fixture
def registry(tmp_path) -> Registry:
    """v0001: the shipped model (current); v0002: a model whose recorded evaluation loses to greedy."""
    reg = Registry(tmp_path / "reg", create=True)
    reg.promote(reg.add("default", note="shipped").version)
    loser = make_model(tmp_path / "loser", seed=2)
    manifest = json.loads((loser / "manifest.json").read_text())
    manifest["evaluation"] = {"gate": losing_record(allowed_worse=True)}
    (loser / "manifest.json").write_text(json.dumps(manifest))
    reg.add(loser, note="loses to greedy")
    return reg


def test_promote_refuses_a_version_that_loses_to_greedy(registry, capsys):
    root = str(registry.root)
    assert main(["models", "promote", "v0002", "--registry", root]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("catur: error: refusing to promote v0002: its recorded evaluation loses to greedy")
    assert "\n" not in err and "--force" in err and "clearly worse" in err
    assert registry.current().version == "v0001" and len(registry.history()) == 1
    with pytest.raises(LosesToGreedy):
        registry.promote("v0002")
    # add --promote goes through the same gate: the version is added, not made current.
    loser_again = registry.get("v0002").path
    assert main(["models", "add", str(loser_again), "--promote", "--registry", root]) == 3
    assert registry.current().version == "v0001" and [v.version for v in registry.versions()] == ["v0001", "v0002", "v0003"]


def test_promote_force_overrides_and_the_history_says_so(registry, capsys):
    root = str(registry.root)
    assert main(["models", "promote", "v0002", "--force", "--reason", "canary", "--registry", root]) == 0
    captured = capsys.readouterr()
    assert "v0002 is now current" in captured.out and "loses to greedy; promoted because of --force" in captured.err
    last = registry.history()[-1]
    assert last["version"] == "v0002" and last["forced"] is True and last["versus_greedy"]["loses"]
    assert main(["models", "show", "v0002", "--registry", root]) == 0
    assert "-> LOSES" in capsys.readouterr().out
    # Versions without any recorded comparison are promoted as before.
    registry.add(make_model(registry.root.parent / "plain", seed=4))
    assert registry.promote("v0003").version == "v0003"


# --- greedy as a rule version --------------------------------------------------------------------


def test_rule_version_add_show_and_verify(registry, capsys):
    root = str(registry.root)
    assert main(["models", "add", "--rule", "greedy", "--promote", "--reason", "nothing beats greedy", "--registry", root]) == 0
    assert "the greedy rule, served as a version" in capsys.readouterr().out
    v = registry.current()
    assert v.version == "v0003" and v.manifest["kind"] == "rule" and v.manifest["policy"] == "greedy"
    assert sorted(p.name for p in v.path.iterdir()) == ["manifest.json", "version.json"]
    registry.verify(v)
    assert registry.gate(v) is None  # greedy never loses to itself
    assert isinstance(load_policy(v.path), RulePolicy)
    with pytest.raises(CaturError, match="rule version"):
        PolicyModel.load(v.path)
    assert main(["models", "show", "current", "--registry", root]) == 0
    assert "rule: serves greedy itself" in capsys.readouterr().out
    # Rolling back from a rule version works like any other.
    assert registry.rollback().version == "v0001"
    # Bad uses name what is wrong.
    assert main(["models", "add", "--registry", root]) == 2
    assert main(["models", "add", "default", "--rule", "greedy", "--registry", root]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(CaturError, match="unknown rule"):
        registry.add_rule("xen")
    bad = registry.root.parent / "bad-rule"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"format": "catur-rule/1", "kind": "rule", "policy": "xen"}))
    with pytest.raises(CaturError, match="unknown rule policy 'xen'"):
        registry.add(bad)


def test_a_rule_version_decides_as_greedy_everywhere(registry):
    """Decider, offline evaluation and the service's loader all treat a rule version as greedy."""
    v = registry.add_rule("greedy")
    rule = load_policy(v.path)
    greedy, served = Decider(None, ShieldConfig(depth=1)), Decider(rule, ShieldConfig(depth=1))
    assert served.policy_name == "greedy" and served.model_version == v.version and served.scorer is rule and served.gate is None
    rng = np.random.default_rng(0)
    for topology in (PRESETS["intel-2s"], PRESETS["amd-2s-nps4"]):
        for _ in range(50):
            used_v = rng.integers(0, topology.node_cores + 4, topology.num_nodes)
            used_m = rng.integers(0, topology.node_mem_mib, topology.num_nodes)
            request = VMRequest(int(rng.choice([1, 2, 4, 8, 16])), int(rng.choice([1, 4, 16, 64])) * 1024)
            a, b = greedy.decide(topology, used_v, used_m, request), served.decide(topology, used_v, used_m, request)
            assert a.primitive == b.primitive and a.scores == b.scores
            assert np.array_equal(a.placement.cpu_nodes, b.placement.cpu_nodes) and np.array_equal(a.placement.mem_mib, b.placement.mem_mib)
    assert DeciderSpec(model=str(v.path)).build().model_version == v.version


def test_a_rule_version_serves_greedy_over_grpc(registry):
    """`catur serve --model REGISTRY` with a rule version current answers exactly as greedy,
    reporting the version's name; promoting a model afterwards switches it at once."""
    v = registry.add_rule("greedy")
    registry.promote(v.version, reason="serve greedy")
    service = Service(model=str(registry.root), shield=ShieldConfig(depth=1))
    reference = Decider(None, ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", service, max_workers=4)
    try:
        with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            info = client.server_info()
            assert info.model_version == v.version and info.policy == "greedy"
            df = random_trace(seed=1, n=60)
            topology = PRESETS["amd-2s-nps2"]
            rng = np.random.default_rng(1)
            for row in df.itertuples():  # a random host state per request, within capacity
                fill = rng.uniform(0, 0.95)
                used_v = np.floor(fill * rng.uniform(0.5, 1.0, topology.num_nodes) * topology.node_cores).astype(np.int64)
                used_m = np.floor(fill * rng.uniform(0.5, 1.0, topology.num_nodes) * topology.node_mem_mib).astype(np.int64)
                request = VMRequest(int(row.vcpus), int(row.mem_gib * 1024))
                remote = client.place(topology, used_v, used_m, request)
                local = reference.decide(topology, used_v, used_m, request)
                assert remote.policy == "greedy" and remote.model_version == v.version
                assert remote.primitive == local.primitive
                assert np.array_equal(remote.placement.cpu_nodes, local.placement.cpu_nodes)
                assert np.array_equal(remote.placement.mem_mib, local.placement.mem_mib)
            registry.promote("v0001")
            assert service.models.reload("test")
            assert client.server_info().model_version == "v0001" and client.server_info().policy == "catur"
    finally:
        service.shutdown(server, grace=0.5)
