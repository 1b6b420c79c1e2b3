"""Shared helpers of the retraining tests: a small drifting two-cluster trace, a collapsed model,
a registry with one current version.

The trace (:func:`drift_trace`) is six days of a purpose-made synthetic workload, about 1,400
VMs on two clusters: ``general`` (Huawei-East-1's flavor mix) and ``compute`` (1 GiB per vCPU,
larger VMs). From day 4 on, half of the VMs get off-ratio flavors (16 GiB per vCPU, or 0.25):
the adversarial injection. On the drifted window (days 4–6) the core-* primitives fall apart
(11–45% average defect) while mem-most-idle stays near 4% and greedy under 2.5%, so a model
that learned the first days' mix can lose to a primitive, and a fine-tuned one can clearly
beat them all. It replays in well under a second.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from catur.policy_model import MODEL_FORMAT, PolicyModel
from catur.observation import OBS_DIM, OBS_VERSION
from catur.policies import PRIMITIVES
from catur.traces.canonical import write_canonical
from catur.traces.synthetic import COMPUTE_FLAVORS, SCENARIOS, Adversarial, Cluster, generate

RECENT_DAYS = "4:6"  # after the injection
PHASE_ONE = dict(train_days="1:2", eval_days="3:3")  # before it


def drift_trace(path: Path, seed: int = 0) -> Path:
    """Write the drifting two-cluster trace (module doc) as canonical parquet at ``path``."""
    config = replace(
        SCENARIOS["multi-cluster"],
        name="retrain-e2e",
        days=6.0,
        arrivals_per_hour=10.0,
        peak_concurrency=300,
        warmup_days=10.0,
        clusters=(Cluster("general", share=0.5), Cluster("compute", share=0.5, flavors=COMPUTE_FLAVORS, size_tilt=0.5)),
        adversarial=Adversarial(from_day=3.0, fraction=0.5),
    )
    write_canonical(generate(config, seed=seed), path)
    return path


def collapsed_model(directory: Path, primitive: str = "core-best-fit", seed: int = 0) -> Path:
    """A PPO-shaped model (OBS_DIM -> 32 -> 4, tanh) that always picks ``primitive``: a hidden
    layer of ordinary scale (so fine-tuning has features and gradients to work with) and a
    near-zero output layer under a bias that dominates it. This is the paper's collapse, made
    by hand: the policy has become one fixed primitive."""
    rng = np.random.default_rng(seed)
    bias = np.zeros(len(PRIMITIVES), np.float32)
    bias[PRIMITIVES.index(primitive)] = 1.0
    layers = (
        (rng.normal(0, 1 / np.sqrt(OBS_DIM), (OBS_DIM, 32)).astype(np.float32), np.zeros(32, np.float32)),
        (rng.normal(0, 0.01, (32, len(PRIMITIVES))).astype(np.float32), bias),
    )
    manifest = {
        "format": MODEL_FORMAT, "obs_version": OBS_VERSION, "obs_dim": OBS_DIM, "actions": list(PRIMITIVES),
        "activation": "tanh", "algorithm": "ppo", "version": f"always-{primitive}",
    }
    return PolicyModel(manifest, layers).save(directory)


def registry_with(root: Path, model_dir: Path):
    """A new registry at ``root`` whose current version (v0001) is ``model_dir``."""
    from catur.registry import Registry

    registry = Registry(root, create=True)
    version = registry.add(model_dir, note="test start")
    registry.promote(version.version, reason="test start", force=True)  # weak on purpose
    return registry
