"""The policy object: a trained model that scores the four primitives, loaded without pickle.

A model directory holds two files:

* ``weights.npz`` — the MLP's layers as plain arrays (``w0, b0, w1, b1, ...``), loaded with
  ``numpy.load(allow_pickle=False)``: no code runs on load, unlike SB3's zip/pickle files;
* ``manifest.json`` — what the model is: format, algorithm, observation version and size, the
  action names, hidden activation, the training window and topologies seen, package
  versions, evaluation metrics, and observation statistics for the uncertainty gate.

:class:`PolicyModel` runs the MLP in numpy for any batch of observations (rows =
hosts), so evaluation can score many hosts' decisions at once and the service needs no torch.
The training code exports SB3 policies into this format and checks that decisions match
(:mod:`catur.training.export`).

A directory may instead hold a *rule version* (:class:`RulePolicy`: only a manifest saying
``kind: rule, policy: greedy``), greedy itself kept in a registry like a model, or an
*after-state scorer* (``kind: afterstate``, :class:`catur.afterstate.AfterStateModel`), which
scores candidate placements instead of the four primitives. :func:`load_policy` loads any
kind; the manifest says which (a manifest without ``kind`` is a primitive-action model, as
every model before the after-state scorer was).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from catur import mlp
from catur.afterstate import AFTERSTATE_KIND, AfterStateModel
from catur.configfile import check_keys, read_json
from catur.errors import CaturError
from catur.gate import UncertaintyGate
from catur.observation import OBS_DIM, OBS_VERSION, CandidateTable
from catur.policies import PRIMITIVES
from catur.scorer import GREEDY, MODEL_POLICY, PRIMITIVE_CANDIDATES, ModelGate

MODEL_FORMAT = "catur-policy/1"
ACTIVATIONS = mlp.ACTIVATIONS
DEFAULT_MODEL = "default"

# Every top-level key a manifest may hold: written by training (format ... versions), the
# retrain job (retrain), the registry (trained_version, version), or by hand
# (fallback_primitive). A misspelt key is refused with the closest one rather than ignored.
MANIFEST_KEYS = (
    "format", "obs_version", "obs_dim", "actions", "activation", "algorithm", "action_space",
    "observation_space", "version", "trained_version", "gate", "fallback_primitive",
    "best_primitive", "training", "evaluation", "export_check", "versions", "retrain",
)


# The models shipped inside the package, by the name that loads them anywhere a model
# directory is accepted: ``default`` (the after-state scorer, catur.afterstate) and
# ``ppo-synthetic`` (the earlier primitive-action PPO model, trained on synthetic data only,
# kept for comparison and for fine-tuning a primitive-action model).
SHIPPED_MODELS = (DEFAULT_MODEL, "ppo-synthetic")


def default_model_dir() -> Path:
    """The shipped default model's directory."""
    return shipped_model_dir(DEFAULT_MODEL)


def shipped_model_dir(name: str) -> Path:
    return Path(str(resources.files("catur") / "models" / name))


def model_path(directory: str | Path) -> Path:
    """Where a model argument points: a shipped model's name (:data:`SHIPPED_MODELS`) or a path."""
    return shipped_model_dir(str(directory)) if str(directory) in SHIPPED_MODELS else Path(directory)


@dataclass(frozen=True, eq=False)
class PolicyModel:
    """A feed-forward policy: ``scores(obs) -> float[B, 4]``, one column per primitive.

    Higher is better: logits for PPO, Q-values for DQN. :meth:`choose` takes the argmax.

    As a :class:`catur.scorer.Scorer` it is the special case whose candidates are the four
    primitives and whose input is the host's observation (:mod:`catur.observation`), with
    the uncertainty gate its manifest carries.
    """

    manifest: dict
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    path: Path | None = None

    # The scorer protocol (catur.scorer.Scorer).
    candidates: ClassVar[str] = PRIMITIVE_CANDIDATES
    features: ClassVar[tuple[str, ...]] = ()
    policy: ClassVar[str] = MODEL_POLICY
    uses_residents: ClassVar[bool] = False
    residents_required: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_manifest(self.manifest, str(self.path or "model"))
        source = str(Path(self.path) / "weights.npz") if self.path else "model"
        mlp.check_layers(self.layers, OBS_DIM, len(PRIMITIVES), source)

    @functools.cached_property
    def gate(self) -> ModelGate | None:
        """The manifest's uncertainty gate and fallback primitive, or ``None`` without one."""
        if not self.manifest.get("gate"):
            return None
        return ModelGate(UncertaintyGate.from_dict(self.manifest["gate"], str(self.path)), self.manifest.get("fallback_primitive"))

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        """``float64[B, 4]``: the scores of the table's observation (the scorer protocol)."""
        return np.asarray(self.scores(table.observation()), dtype=float)

    @property
    def version(self) -> str:
        """The manifest's version, else a short hash of the weights."""
        if self.manifest.get("version"):
            return str(self.manifest["version"])
        return mlp.digest(self.layers)

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """``float[B, 4]`` scores for ``float[B, OBS_DIM]`` observations (or one ``[OBS_DIM]``)."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != OBS_DIM:
            raise CaturError(f"observation has {x.shape[1]} values, the model expects {OBS_DIM}")
        x = mlp.forward(self.layers, x, self.manifest["activation"])
        return x[0] if single else x

    def choose(self, obs: np.ndarray) -> np.ndarray:
        """Index of the best primitive per row (ties: the first)."""
        return np.argmax(np.atleast_2d(self.scores(obs)), axis=1)

    def save(self, directory: str | Path) -> Path:
        """Write ``weights.npz`` and ``manifest.json`` into ``directory``."""
        return mlp.save(directory, self.layers, self.manifest)

    @classmethod
    def load(cls, directory: str | Path) -> "PolicyModel":
        """Load a model directory (``"default"`` = the shipped model); errors name the file."""
        directory = model_path(directory)
        manifest_path, weights_path = directory / "manifest.json", directory / "weights.npz"
        manifest = read_manifest(directory)
        if is_rule(manifest):
            raise CaturError(f"{manifest_path}: a rule version ({manifest.get('policy')}), not a trained model; load it with catur.policy_model.load_policy")
        if is_afterstate(manifest):
            raise CaturError(f"{manifest_path}: an after-state scorer, not a primitive-action model; load it with catur.policy_model.load_policy")
        check_manifest(manifest, str(manifest_path))
        layers = mlp.load(weights_path)
        return cls(manifest, layers, directory)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(directory: str | Path) -> str:
    """The identity of a model: the SHA-256 of its ``weights.npz`` (``"default"`` = the shipped
    model). It survives ``catur models add`` (which copies the file byte for byte and rewrites
    only the manifest), so an evaluation can say which model it measured."""
    directory = model_path(directory)
    try:
        return file_sha256(directory / "weights.npz")
    except OSError as exc:
        raise CaturError(f"cannot read {directory / 'weights.npz'}: {exc.strerror}") from exc


def read_manifest(directory: Path) -> object:
    """The parsed ``manifest.json`` of a model directory; errors name the file."""
    if not Path(directory).is_dir():
        raise CaturError(f"model directory {str(directory)!r} does not exist")
    return read_json(Path(directory) / "manifest.json")


# --- rule versions ------------------------------------------------------------------------------
#
# When no trained candidate beats greedy, the best thing to serve is greedy itself. A *rule
# version* lets a registry hold that choice as a version like any other (numbered, promoted,
# rolled back, in the history): a directory with only a manifest.json that says
# ``{"kind": "rule", "policy": "greedy"}``. Whatever loads a version (the service, evaluation,
# the registry's checks) calls :func:`load_policy`, which gives a :class:`RulePolicy` for it,
# and a :class:`~catur.decision.Decider` built on a RulePolicy decides as that rule.

RULE_FORMAT = "catur-rule/1"
RULE_KIND = "rule"
RULE_POLICIES = ("greedy",)


def is_rule(manifest: object) -> bool:
    return isinstance(manifest, dict) and manifest.get("kind") == RULE_KIND


def rule_manifest(policy: str, **extra) -> dict:
    """The manifest of a rule version serving ``policy``."""
    if policy not in RULE_POLICIES:
        raise CaturError(f"unknown rule {policy!r}; a rule version can serve: {', '.join(RULE_POLICIES)}")
    return {"format": RULE_FORMAT, "kind": RULE_KIND, "policy": policy, "version": f"rule-{policy}", **extra}


@dataclass(frozen=True, eq=False)
class RulePolicy:
    """A version that serves a fixed rule (``policy``, e.g. greedy) instead of a network."""

    manifest: dict
    path: Path | None = None

    # The scorer protocol (catur.scorer.Scorer): greedy's, under the version's name.
    candidates: ClassVar[str] = PRIMITIVE_CANDIDATES
    features: ClassVar[tuple[str, ...]] = ()
    uses_residents: ClassVar[bool] = False
    residents_required: ClassVar[bool] = False
    gate: ClassVar[None] = None

    def __post_init__(self) -> None:
        source = str(Path(self.path) / "manifest.json") if self.path else "rule manifest"
        if self.manifest.get("format") != RULE_FORMAT:
            raise CaturError(f"{source}: rule version has format={self.manifest.get('format')!r}, expected {RULE_FORMAT!r}")
        if self.manifest.get("policy") not in RULE_POLICIES:
            raise CaturError(
                f"{source}: unknown rule policy {self.manifest.get('policy')!r}; known: {', '.join(RULE_POLICIES)}"
            )

    @property
    def policy(self) -> str:
        return str(self.manifest["policy"])

    @property
    def version(self) -> str:
        return str(self.manifest.get("version") or f"rule-{self.policy}")

    def score(self, table: CandidateTable, rows: np.ndarray | None = None) -> np.ndarray:
        return GREEDY.score(table, rows)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
        return directory


def is_afterstate(manifest: object) -> bool:
    return isinstance(manifest, dict) and manifest.get("kind") == AFTERSTATE_KIND


def model_kind(manifest: object) -> str:
    """What a manifest describes: ``"rule"``, ``"afterstate"`` or ``"primitive"`` (no ``kind``)."""
    if is_rule(manifest):
        return RULE_KIND
    return AFTERSTATE_KIND if is_afterstate(manifest) else "primitive"


def load_policy(directory: str | Path) -> "PolicyModel | RulePolicy | AfterStateModel":
    """Load what a model directory or registry version holds: a primitive-action model, an
    after-state scorer or a rule (the manifest's ``kind`` says which)."""
    path = model_path(directory)
    manifest = read_manifest(path)
    if is_rule(manifest):
        return RulePolicy(manifest, path)
    if is_afterstate(manifest):
        return AfterStateModel.load(path, manifest)
    return PolicyModel.load(path)


def check_manifest(manifest: object, source: str) -> None:
    """Refuse a manifest this version of Catur cannot use, naming the mismatch."""
    if not isinstance(manifest, dict):
        raise CaturError(f"{source}: the manifest must be a JSON object")
    check_keys(manifest, MANIFEST_KEYS, source)
    expected = {
        "format": MODEL_FORMAT,
        "obs_version": OBS_VERSION,
        "obs_dim": OBS_DIM,
        "actions": list(PRIMITIVES),
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise CaturError(
                f"{source}: model has {key}={manifest.get(key)!r} but this Catur expects {value!r} "
                f"(retrain or export the model with this version)"
            )
    if manifest.get("activation") not in ACTIVATIONS:
        raise CaturError(
            f"{source}: unknown activation {manifest.get('activation')!r}; known: {', '.join(ACTIVATIONS)}"
        )
    fallback = manifest.get("fallback_primitive")
    if fallback is not None and fallback not in PRIMITIVES:
        raise CaturError(f"{source}: fallback_primitive {fallback!r} is not a primitive; known: {', '.join(PRIMITIVES)}")
