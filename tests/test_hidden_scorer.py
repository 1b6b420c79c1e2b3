"""A hidden-layer after-state scorer trained by evolution strategies (issue 29, part 3).

What must hold, and how it is checked:

* a :class:`~catur.afterstate.NetworkPopulation` scores every row bit for bit as its member's
  own :class:`~catur.afterstate.AfterStateModel` does alone (generated networks, feature
  subsets and candidate tables), so a population replay is each member's own replay;
* the warm start (:func:`~catur.training.scorer_network.hidden_start`: carriers ±w, idle units
  with output weight 0) decides exactly as the one-layer scorer it starts from — the shipped
  default — on generated candidate sets, and its scores equal the default's up to float32
  rounding (not bit for bit: see the module doc of :mod:`catur.training.scorer_network`);
* a one-layer :class:`~catur.training.scorer_network.Architecture` is the trainer's vector as
  it always was (the linear path's own tests: ``test_scorer.py``, ``test_afterstate.py``);
* ``catur train-scorer --hidden`` refuses bad sizes and combinations before any work, and a
  tiny run writes a model that loads, decides, is served and is filed in a registry.
"""

from __future__ import annotations

import numpy as np
import pytest

from catur.afterstate import FEATURES, AfterStateModel, NetworkPopulation, afterstate_candidates
from catur.errors import CaturError
from catur.policy_model import load_policy
from catur.request import RequestBatch, VMRequest
from catur.topology import get_preset
from catur.training.scorer_network import LINEAR, Architecture, hidden_features, hidden_start, network_scales

PRESETS = ("intel-2s", "amd-2s-nps2", "amd-2s-nps4")


def _tables(rng: np.random.Generator, count: int, hosts: int = 6) -> list:
    """Candidate tables (all FEATURES) of random requests on random hosts of every preset:
    one-instance VMs and spread ones, from empty hosts to overloaded ones."""
    out = []
    for i in range(count):
        topo = get_preset(PRESETS[i % len(PRESETS)])
        n = topo.num_nodes
        vcpus = int(rng.choice([1, 2, 4, 8, 16, 24]))
        vnuma = int(rng.choice([1, 1, 1, 2])) if vcpus >= 8 else 1
        batch = RequestBatch.of(topo, VMRequest(vcpus, int(rng.integers(1, 64)) * 1024, vnuma=vnuma))
        used = (rng.uniform(0, 1.2, size=(hosts, n)) * topo.node_cores).astype(np.int64)
        mem = (rng.uniform(0, 0.9, size=(hosts, n)) * topo.node_mem_mib).astype(np.int64)
        residents = rng.integers(0, 20, size=(hosts, n)).astype(float)
        out.append(afterstate_candidates(topo, used, mem, residents, *(np.repeat(a, hosts, 0) for a in (
            batch.vcpus, batch.alpha, batch.beta, batch.inst_vcpus, batch.inst_mem))))
    return out


def _random_network(rng: np.random.Generator, features: tuple[str, ...], widths: list[int], activation: str) -> AfterStateModel:
    sizes = [len(features), *widths, 1]
    layers = tuple((rng.normal(size=(a, b)).astype(np.float32), rng.normal(size=b).astype(np.float32))
                   for a, b in zip(sizes, sizes[1:]))
    return AfterStateModel({"format": "catur-afterstate/1", "kind": "afterstate", "features": list(features),
                            "activation": activation}, layers)


def test_a_network_population_scores_each_row_bit_for_bit_as_its_member_alone():
    rng = np.random.default_rng(0)
    for trial, table in enumerate(_tables(rng, 24)):
        features = tuple(rng.choice(FEATURES, size=int(rng.integers(2, len(FEATURES))), replace=False))
        widths = [int(w) for w in rng.integers(3, 10, size=1 + trial % 2)]  # one or two hidden layers
        activation = ("relu", "tanh")[trial % 2]
        models = [_random_network(rng, features, widths, activation) for _ in range(4)]
        member_of = np.array([2, 0, 3, 1, 2, 0, 1, 3])  # hosts 0..7
        population = NetworkPopulation.of(models, member_of)
        rows = rng.permutation(8)[:len(table.valid)]  # the table's rows are these hosts
        scores = population.score(table, rows)
        for i, host in enumerate(rows):
            np.testing.assert_array_equal(scores[i], models[member_of[host]].score(table)[i])


def test_a_network_population_refuses_mixed_members():
    rng = np.random.default_rng(1)
    a = _random_network(rng, ("defect", "rmr"), [4], "relu")
    with pytest.raises(CaturError, match="same features, activation and layer shapes"):
        NetworkPopulation.of([a, _random_network(rng, ("defect", "rmr"), [5], "relu")], np.zeros(2))
    with pytest.raises(CaturError, match="same features, activation and layer shapes"):
        NetworkPopulation.of([a, _random_network(rng, ("defect", "rmr"), [4], "tanh")], np.zeros(2))


def _default_weights() -> np.ndarray:
    from catur.training.afterstate import scorer_weights

    return scorer_weights(load_policy("default"), "default")


def test_the_warm_start_decides_exactly_as_the_shipped_default():
    """Generation 0 of ``--init-from default --hidden 8``: the same choice as the default on
    every generated candidate set; scores equal up to float32 rounding (the hidden layer's
    ``[F, 8]`` product sums in another order than the default's ``[F, 1]`` one)."""
    default = load_policy("default")
    weights = _default_weights()
    rng = np.random.default_rng(2)
    tables = _tables(rng, 90, hosts=40)  # 3,600 candidate sets
    arch = Architecture(hidden_features(weights, None, default.features), 8)
    _, input_scales = network_scales(tables, arch)
    start = arch.model(hidden_start(weights, arch, input_scales, rng))
    assert [w.shape for w, _ in start.layers] == [(12, 8), (8, 1)] and start.manifest["activation"] == "relu"
    assert start.features == default.features  # the context features host_cpu_load and vm_size among them
    assert np.abs(start.layers[0][0][:, 2:]).sum() > 0  # the idle units read the features...
    assert not start.layers[1][0][2:].any()  # ...and do not count yet
    for table in tables:
        ours, theirs = start.score(table), default.score(table)
        np.testing.assert_allclose(ours[table.valid], theirs[table.valid], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.argmax(ours, axis=1), np.argmax(theirs, axis=1))


@pytest.mark.slow
def test_the_warm_start_replays_as_its_start():
    """A replay of real host streams (adversarial day 16, 3 hosts): generation 0 gives the
    one-layer start's per-host defect sums exactly, alone and as a population member."""
    from catur.sim.admission import prepare_scenario
    from catur.sim.workload import Workload
    from catur.training.afterstate import Hosts

    df = Workload("adversarial", seed=1).read()[0]
    scenario = prepare_scenario(df, "mixed", "16:16", 0.9, 1.02)
    hosts = Hosts("adversarial 16:16 mixed", [s for s in scenario.streams if s.counted.any()][:3])
    weights = _default_weights()
    rng = np.random.default_rng(3)
    arch = Architecture(load_policy("default").features, 5)
    start = hidden_start(weights, arch, np.ones(len(arch.features)), rng)
    linear, _ = hosts.replay(weights)
    alone, _ = hosts.replay(start, arch=arch)
    np.testing.assert_array_equal(alone, linear)
    # A population of the start and one perturbation: row 0 is the start's own replay.
    other = start + rng.normal(scale=0.3, size=arch.size) * (np.arange(arch.size) % 4 == 0)
    sums, _ = hosts.replay_population(np.stack([start, other]), arch=arch)
    np.testing.assert_array_equal(sums[0], linear)
    np.testing.assert_array_equal(sums[1], hosts.replay(other, arch=arch)[0])


def test_architectures_map_a_vector_to_layers_and_back():
    rng = np.random.default_rng(4)
    weights = rng.normal(size=len(FEATURES))
    (w, b), = LINEAR.layers(weights)
    np.testing.assert_array_equal(w, weights.astype(np.float32)[:, None])
    assert not b.any() and LINEAR.size == len(FEATURES)
    arch = Architecture(("defect", "rmr", "host_cpu_load"), 4)
    assert arch.size == 3 * 4 + 4 + 4 + 1
    params = rng.normal(size=arch.size)
    (w0, b0), (w1, b1) = arch.layers(params)
    np.testing.assert_array_equal(w0.ravel(), params[:12].astype(np.float32))
    np.testing.assert_array_equal(b0, params[12:16].astype(np.float32))
    np.testing.assert_array_equal(w1[:, 0], params[16:20].astype(np.float32))
    assert arch.record() == {"hidden": 4, "features": ["defect", "rmr", "host_cpu_load"], "activation": "relu", "parameters": 21}
    with pytest.raises(CaturError, match="expected 21 parameters"):
        arch.layers(params[:-1])


def test_the_scales_move_context_weights_and_keep_the_scale_fixed():
    tables = _tables(np.random.default_rng(5), 12)
    arch = Architecture(("defect", "resident_rise", "host_cpu_load", "vm_size"), 4)
    scales, inputs = network_scales(tables, arch)
    assert inputs[0] == pytest.approx(1.0) and (inputs > 0).all()  # context features get a scale of their own
    w1 = scales[4 * 4 + 4: 4 * 4 + 8]
    assert list(w1[:2]) == [0.0, 0.0] and (w1[2:] == 1.0).all() and scales[-1] == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "2"], "at least 3 units"),
    (["--hidden", "-1"], "hidden units must be >= 0"),
    (["--features", "defect,rmr"], "applies to a hidden-layer scorer"),
    (["--hidden", "4", "--train-features", "few-nodes"], "give one or the other"),
    (["--hidden", "4", "--features", "rmr,vm_size"], "reads the defect feature"),
])
def test_train_scorer_refuses_bad_hidden_options_before_any_work(tmp_path, capsys, argv, message):
    from catur.cli import main

    try:
        code = main(["train-scorer", "--out", str(tmp_path / "s"), *argv])
    except SystemExit as exit_info:  # an argparse error
        code = exit_info.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_start_feature_left_out_is_named():
    with pytest.raises(CaturError, match=r"leave out \['resident_rise'\]"):
        hidden_features(_default_weights(), ("defect", "rmr", "cor_rise", "overload_after", "imbalance_after",
                                             "chosen_cpu_after", "chosen_mem_after", "chosen_residents"), None)


@pytest.mark.slow
def test_a_tiny_hidden_run_writes_a_model_that_loads_serves_and_files(tmp_path):
    """``train_scorer(hidden=4)`` from the shipped default on a tiny synthetic window: generation 0
    replays as the default on every validation host, and the written model loads, decides,
    passes the torch export check, is served and is filed in a registry."""
    from _service_support import valid_request
    from catur.cli import main
    from catur.service.serving import ModelHolder
    from catur.service.servicer import PlacementServicer
    from catur.shield import ShieldConfig
    from catur.training.afterstate import ScorerTrainConfig, Source, train_scorer

    sources = [Source("adversarial", "adversarial", "16:17", "18:19", train_seed=1, val_seed=2)]
    config = ScorerTrainConfig(generations=1, pairs=1, eval_every=1, scenarios_per_source=1, hosts_per_replay=3, jobs=1,
                               init_from="default", hidden=4, validation=(("amd-2s-nps4", 1.02),), allow_worse=True)
    logged: list[str] = []
    train_scorer(sources, config, tmp_path / "s", progress=False, log=logged.append)
    model = load_policy(tmp_path / "s")
    assert [w.shape for w, _ in model.layers] == [(12, 4), (4, 1)] and model.manifest["activation"] == "relu"
    training = model.manifest["training"]
    assert training["architecture"]["hidden"] == 4 and training["hidden"] == 4
    assert training["history"][0]["same_as_start"] is True
    assert any("gives the one-layer start's defect on every validation host" in line for line in logged)
    assert model.manifest["export_check"]["agreement"] == 1.0
    servicer = PlacementServicer(ModelHolder(str(tmp_path / "s"), ShieldConfig(depth=1)))
    assert servicer.place_one(valid_request()).instances
    registry = tmp_path / "reg"
    assert main(["models", "init", "--registry", str(registry)]) == 0
    assert main(["models", "add", str(tmp_path / "s"), "--registry", str(registry), "--note", "hidden"]) == 0
    assert main(["models", "show", "v1", "--registry", str(registry)]) == 0
