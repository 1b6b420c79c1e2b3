"""The pickle-free policy model: save/load, manifest checks, errors, and the SB3 export.

A model is ``weights.npz`` + ``manifest.json``; it must round-trip exactly, refuse a model
made for another observation layout, name the bad file on any load error, and make exactly
the decisions of the torch network it was exported from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.errors import CaturError
from catur.decision import Decider
from catur.policy_model import MODEL_FORMAT, PolicyModel
from catur.observation import OBS_DIM, OBS_VERSION, candidates, encode
from catur.placement import greedy_place, primitive_placements
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.sim.env import NumaPlacementEnv
from catur.sim.workload import Workload
from catur.topology import PRESETS, Topology
from catur.training.export import check_agreement, export_layers, torch_scores
from catur.training.train import greedy_action

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
T2 = Topology("t2", [4, 4], [4096, 4096], [0, 1], [[10, 21], [21, 10]])
TOPOLOGIES = [T2, *PRESETS.values()]


def manifest(**changes) -> dict:
    base = {
        "format": MODEL_FORMAT,
        "obs_version": OBS_VERSION,
        "obs_dim": OBS_DIM,
        "actions": list(PRIMITIVES),
        "activation": "tanh",
    }
    base.update(changes)
    return base


def random_layers(seed: int = 0, hidden=(16, 8)) -> tuple:
    rng = np.random.default_rng(seed)
    sizes = [OBS_DIM, *hidden, len(PRIMITIVES)]
    return tuple(
        (
            rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
            rng.normal(0, 0.1, b).astype(np.float32),
        )
        for a, b in zip(sizes[:-1], sizes[1:])
    )


def random_observations(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 2, (n, OBS_DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def small_streams():
    return Workload("default", days="1:3").streams()


@pytest.fixture(scope="module")
def env_observations(small_streams) -> np.ndarray:
    """500 observations met on the env with random actions."""
    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=50)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    while len(rows) < 500:
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(rows)


@pytest.fixture()
def saved(tmp_path):
    """A valid model saved into a directory."""
    model = PolicyModel(manifest(version="v-test"), random_layers())
    return model, model.save(tmp_path / "model")


@st.composite
def host_states(draw):
    """A topology, arbitrary (possibly overcommitted) usage and a valid request."""
    topology = draw(st.sampled_from(TOPOLOGIES))
    n = topology.num_nodes
    used_vcpus = np.array([draw(st.integers(0, 2 * int(c))) for c in topology.node_cores], dtype=np.int64)
    used_mem = np.array([draw(st.integers(0, int(m))) for m in topology.node_mem_mib], dtype=np.int64)
    vcpus = draw(st.integers(1, int(topology.node_cores.sum())))
    mem = draw(st.integers(1, int(topology.node_mem_mib.sum())))
    alpha = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    beta = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    vnuma = draw(st.one_of(st.none(), st.integers(1, min(n, vcpus))))
    return topology, used_vcpus, used_mem, VMRequest(vcpus, mem, alpha, beta, vnuma)


# --- the model object ------------------------------------------------------------------------


def test_scores_shapes_and_choose():
    """scores() maps [B, OBS_DIM] → [B, 4] and [OBS_DIM] → [4]; choose() is the row argmax."""
    model = PolicyModel(manifest(), random_layers())
    obs = random_observations()
    scores = model.scores(obs)
    assert scores.shape == (len(obs), len(PRIMITIVES))
    # One row vs a batch may round differently in BLAS: equal to float32 precision.
    np.testing.assert_allclose(model.scores(obs[3]), scores[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.choose(obs), scores.argmax(axis=1))
    with pytest.raises(CaturError, match=str(OBS_DIM)):
        model.scores(np.zeros(OBS_DIM + 1))


def test_relu_and_tanh_activations():
    """The manifest's activation is applied between layers (not after the last)."""
    layers = random_layers(hidden=(8,))
    x = random_observations(5)
    (w0, b0), (w1, b1) = layers
    relu = PolicyModel(manifest(activation="relu"), layers).scores(x)
    tanh = PolicyModel(manifest(activation="tanh"), layers).scores(x)
    np.testing.assert_allclose(relu, np.maximum(x @ w0 + b0, 0) @ w1 + b1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tanh, np.tanh(x @ w0 + b0) @ w1 + b1, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(saved):
    """save → load gives identical layers, manifest, version and scores."""
    model, directory = saved
    loaded = PolicyModel.load(directory)
    assert loaded.manifest == model.manifest
    assert loaded.version == model.version == "v-test"
    assert loaded.path == directory
    obs = random_observations()
    np.testing.assert_array_equal(loaded.scores(obs), model.scores(obs))
    for (w, b), (w2, b2) in zip(model.layers, loaded.layers):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


def test_version_defaults_to_weight_hash():
    """Without a manifest version, the version is a stable hash of the weights."""
    a = PolicyModel(manifest(), random_layers(0))
    assert a.version == PolicyModel(manifest(), random_layers(0)).version
    assert a.version != PolicyModel(manifest(), random_layers(1)).version
    assert len(a.version) == 12


def test_weights_are_plain_arrays(saved):
    """weights.npz loads with allow_pickle=False and holds w0, b0, w1, b1, ..."""
    _, directory = saved
    with np.load(directory / "weights.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["b0", "b1", "b2", "w0", "w1", "w2"]


# --- manifest checks -------------------------------------------------------------------------


MISMATCHES = [
    ("obs_version", OBS_VERSION + 1),
    ("obs_dim", OBS_DIM + 3),
    ("actions", list(reversed(PRIMITIVES))),
    ("actions", list(PRIMITIVES)[:3]),
    ("format", "catur-policy/999"),
    ("activation", "sigmoid"),
    ("obs_version", None),
]


@pytest.mark.parametrize("key,value", MISMATCHES)
def test_constructor_rejects_mismatched_manifest(key, value):
    """A manifest for another observation layout, action list or activation is refused."""
    with pytest.raises(CaturError, match=key):
        PolicyModel(manifest(**{key: value}), random_layers())


@pytest.mark.parametrize("key,value", MISMATCHES)
def test_load_rejects_mismatched_manifest(saved, key, value):
    """Loading such a manifest fails with CaturError naming the key and the manifest file."""
    _, directory = saved
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(CaturError, match=key) as caught:
        PolicyModel.load(directory)
    assert str(path) in str(caught.value)


def test_load_rejects_missing_key(saved):
    """A manifest without obs_dim is refused, naming obs_dim."""
    _, directory = saved
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    del data["obs_dim"]
    path.write_text(json.dumps(data))
    with pytest.raises(CaturError, match="obs_dim"):
        PolicyModel.load(directory)


def test_non_object_manifest(saved):
    """A manifest that is valid JSON but not an object is refused."""
    _, directory = saved
    (directory / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(CaturError, match="JSON object"):
        PolicyModel.load(directory)


def test_layer_shape_checks():
    """Layers must chain from OBS_DIM inputs to 4 outputs."""
    layers = random_layers()
    with pytest.raises(CaturError, match="layer 0"):
        PolicyModel(manifest(), ((layers[0][0][1:], layers[0][1]), *layers[1:]))
    with pytest.raises(CaturError, match="layer 1"):
        PolicyModel(manifest(), (layers[0], (layers[1][0], layers[1][1][:-1]), layers[2]))
    with pytest.raises(CaturError, match="4"):
        PolicyModel(manifest(), layers[:2])


# --- load errors name the file ----------------------------------------------------------------


def test_missing_directory(tmp_path):
    """A missing model directory is named in the error."""
    missing = tmp_path / "nope"
    with pytest.raises(CaturError, match="does not exist") as caught:
        PolicyModel.load(missing)
    assert str(missing) in str(caught.value)


def test_missing_manifest(saved):
    """A missing manifest.json is named in the error."""
    _, directory = saved
    (directory / "manifest.json").unlink()
    with pytest.raises(CaturError, match="manifest.json"):
        PolicyModel.load(directory)


def test_invalid_json(saved):
    """A manifest.json that is not JSON is named in the error."""
    _, directory = saved
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(CaturError, match="manifest.json.*not valid JSON"):
        PolicyModel.load(directory)


def test_missing_weights(saved):
    """A missing weights.npz is named in the error."""
    _, directory = saved
    (directory / "weights.npz").unlink()
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def test_corrupt_weights(saved):
    """A weights.npz that is not an npz at all is named in the error."""
    _, directory = saved
    (directory / "weights.npz").write_bytes(b"garbage, not an npz")
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def _write_single_npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _write_zip_with_raw_members(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w0.npy", b"xx")
        z.writestr("b0.npy", b"yy")


def _load_bug(error: type[BaseException], what: str):
    """Once a bug: PolicyModel.load let {what} escape as {error}; now a CaturError (no marks)."""
    return ()


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="empty", marks=_load_bug(EOFError, "an empty file")),
        pytest.param(
            lambda p: p.write_bytes(b"PK\x03\x04truncated zip"),
            id="truncated-zip",
            marks=_load_bug(__import__("zipfile").BadZipFile, "a truncated zip"),
        ),
        pytest.param(
            _write_single_npy, id="single-npy", marks=_load_bug(TypeError, "a plain .npy (np.load returns an ndarray)")
        ),
        pytest.param(
            _write_zip_with_raw_members,
            id="zip-raw-members",
            marks=_load_bug(AttributeError, "a zip whose members are not .npy (NpzFile returns bytes)"),
        ),
    ],
)
def test_other_corrupt_weights(saved, write):
    """Other corrupt weights.npz files must also give a CaturError naming the file."""
    _, directory = saved
    write(directory / "weights.npz")
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def test_non_finite_weights_are_refused(saved):
    """A weights.npz holding NaN is corrupt and should be refused, naming the file."""
    _, directory = saved
    layers = random_layers()
    arrays = {f"w{i}": w for i, (w, _) in enumerate(layers)} | {f"b{i}": b for i, (_, b) in enumerate(layers)}
    arrays["w0"] = arrays["w0"] * np.nan
    np.savez(directory / "weights.npz", **arrays)
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def test_pickled_weights_are_refused(saved):
    """An npz holding a pickled object array is refused (nothing is unpickled)."""
    _, directory = saved
    layers = random_layers()
    arrays = {f"w{i}": w for i, (w, _) in enumerate(layers)} | {f"b{i}": b for i, (_, b) in enumerate(layers)}
    arrays["b0"] = np.array([object()], dtype=object)
    np.savez(directory / "weights.npz", **arrays)
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def test_weights_with_missing_or_misshaped_layers(saved):
    """An npz with a missing bias or wrong shapes is refused, naming the model directory."""
    _, directory = saved
    layers = random_layers()
    np.savez(directory / "weights.npz", w0=layers[0][0], w1=layers[1][0], b1=layers[1][1], w2=layers[2][0])
    with pytest.raises(CaturError, match=str(directory)):
        PolicyModel.load(directory)
    np.savez(directory / "weights.npz", w0=layers[1][0], b0=layers[1][1])
    with pytest.raises(CaturError, match=str(directory)):
        PolicyModel.load(directory)
    np.savez(directory / "weights.npz")
    with pytest.raises(CaturError, match="weights.npz"):
        PolicyModel.load(directory)


def test_shipped_primitive_model():
    """The shipped primitive-action model (the default before the after-state scorer) still
    loads, has a full manifest and decides."""
    from catur.decision import DeciderSpec

    model = PolicyModel.load("ppo-synthetic")
    assert model.manifest["obs_dim"] == OBS_DIM
    documented = {
        "format", "obs_version", "obs_dim", "actions", "activation", "algorithm", "gate",
        "best_primitive", "training", "evaluation", "export_check", "versions",
    }
    assert documented <= set(model.manifest)
    assert model.scores(random_observations(3)).shape == (3, len(PRIMITIVES))
    decider = DeciderSpec(model="ppo-synthetic").build()
    assert decider.gate is not None
    decision = decider.decide(PRESETS["intel-2s"], np.array([10, 30]), np.array([20_000, 60_000]), VMRequest(4, 8192))
    assert decision.primitive in PRIMITIVES and decision.model_version == model.version


# --- a model deciding (through the Decider, with no shield and no gate) and greedy_action ----------------------------------------------------------


@given(state=host_states(), seed=st.integers(0, 3))
@settings(max_examples=60, **SETTINGS)
def test_model_decision_picks_argmax(state, seed):
    """A Decider with a model places with the primitive the model scores highest."""
    topology, used_vcpus, used_mem, request = state
    model = PolicyModel(manifest(), random_layers(seed))
    placement = Decider(model).decide(topology, used_vcpus, used_mem, request).placement
    cands = candidates(topology, used_vcpus, used_mem, request)
    best = int(np.argmax(model.scores(encode(topology, used_vcpus, used_mem, request, cands))))
    expected = cands[best].placement
    assert placement.policy == "catur"
    np.testing.assert_array_equal(placement.cpu_nodes, expected.cpu_nodes)
    np.testing.assert_array_equal(placement.vcpus, expected.vcpus)
    np.testing.assert_array_equal(placement.mem_mib, expected.mem_mib)


@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_model_decision_follows_a_constant_preference(primitive):
    """A model whose bias favours one primitive always places like that primitive."""
    bias = np.where(np.array(PRIMITIVES) == primitive, 5.0, 0.0).astype(np.float32)
    model = PolicyModel(manifest(), ((np.zeros((OBS_DIM, 4), np.float32), bias),))
    topology = PRESETS["amd-2s-nps2"]
    used_vcpus = np.array([30, 4, 16, 0])
    used_mem = np.array([60_000, 1_000, 20_000, 70_000])
    request = VMRequest(8, 16_384)
    placement = Decider(model).decide(topology, used_vcpus, used_mem, request).placement
    expected = primitive_placements(topology, used_vcpus, used_mem, request)[primitive]
    np.testing.assert_array_equal(placement.cpu_nodes, expected.cpu_nodes)
    np.testing.assert_array_equal(placement.mem_mib, expected.mem_mib)


@given(state=host_states())
@settings(max_examples=200, **SETTINGS)
def test_greedy_action_agrees_with_greedy_place(state):
    """The zero-regret primitive of an observation is the one greedy_place chooses."""
    topology, used_vcpus, used_mem, request = state
    obs = encode(topology, used_vcpus, used_mem, request)
    action = greedy_action(np.clip(obs, -1.0, 8.0))
    chosen = primitive_placements(topology, used_vcpus, used_mem, request)[PRIMITIVES[action]]
    greedy = greedy_place(topology, used_vcpus, used_mem, request)
    np.testing.assert_array_equal(chosen.cpu_nodes, greedy.cpu_nodes)
    np.testing.assert_array_equal(chosen.vcpus, greedy.vcpus)
    np.testing.assert_array_equal(chosen.mem_mib, greedy.mem_mib)


# --- export from stable-baselines3 ------------------------------------------------------------


def _ppo(small_streams, activation=None):
    from sb3_contrib import MaskablePPO

    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=64)
    kwargs = {"net_arch": [16, 16]}
    if activation is not None:
        kwargs["activation_fn"] = activation
    model = MaskablePPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu", policy_kwargs=kwargs)
    model.learn(256)
    return model


def _dqn(small_streams):
    from stable_baselines3 import DQN

    env = NumaPlacementEnv(streams=small_streams, episode_arrivals=64)
    model = DQN(
        "MlpPolicy", env, learning_starts=100, buffer_size=1000, batch_size=32, train_freq=4,
        seed=0, device="cpu", policy_kwargs={"net_arch": [16, 16]},
    )
    model.learn(300)
    return model


@pytest.mark.parametrize(
    "kind,expected_activation",
    [("ppo", "tanh"), ("ppo-relu", "relu"), ("dqn", "relu")],
)
@pytest.mark.slow
def test_export_matches_torch_policy(kind, expected_activation, small_streams, env_observations):
    """The exported numpy policy scores and decides exactly like the SB3 torch policy."""
    torch.set_num_threads(1)
    if kind == "dqn":
        model = _dqn(small_streams)
    else:
        model = _ppo(small_streams, torch.nn.ReLU if kind == "ppo-relu" else None)
    layers, activation = export_layers(model)
    assert activation == expected_activation
    assert [w.shape for w, _ in layers] == [(OBS_DIM, 16), (16, 16), (16, len(PRIMITIVES))]
    exported = PolicyModel(manifest(activation=activation), tuple(layers))
    expected = torch_scores(model, env_observations)
    np.testing.assert_allclose(exported.scores(env_observations), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(exported.choose(env_observations), expected.argmax(axis=1))
    # ... and like SB3's own deterministic predict().
    if kind == "dqn":
        predicted, _ = model.predict(env_observations, deterministic=True)
    else:
        masks = np.ones((len(env_observations), len(PRIMITIVES)), dtype=bool)
        predicted, _ = model.predict(env_observations, deterministic=True, action_masks=masks)
    np.testing.assert_array_equal(exported.choose(env_observations), predicted)
    assert check_agreement(model, exported, env_observations) == {
        "observations": len(env_observations),
        "identical_decisions": len(env_observations),
    }


def test_check_agreement_catches_a_bad_export(small_streams, env_observations):
    """check_agreement raises when the numpy export decides differently from the network."""
    model = _ppo(small_streams)
    layers, activation = export_layers(model)
    w, b = layers[-1]
    flipped = (*layers[:-1], (-w, -b))
    with pytest.raises(CaturError, match="disagrees"):
        check_agreement(model, PolicyModel(manifest(activation=activation), flipped), env_observations)


def test_export_refuses_unsupported_activation(small_streams):
    """A policy with an activation the numpy model lacks is refused by name."""
    from sb3_contrib import MaskablePPO

    env = NumaPlacementEnv(streams=small_streams)
    model = MaskablePPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [8], "activation_fn": torch.nn.ELU})
    with pytest.raises(CaturError, match="ELU"):
        export_layers(model)
