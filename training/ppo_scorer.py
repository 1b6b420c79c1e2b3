"""PPO trains the after-state scorer: MaskablePPO over the candidates, the actor *is* the scorer.

The shipped default (:mod:`catur.afterstate`) scores every candidate placement of a VM with
one shared-weight network and takes the best. Evolution strategies
(:mod:`catur.training.afterstate`) train it on the replay's exact objective. This module
trains the same kind of model with sb3-contrib's ``MaskablePPO``:

**Environment**: :class:`catur.sim.candidate_vec_env.CandidateVecEnv`, many hosts of the
training windows stepped in one numpy batch (one SB3 ``VecEnv``, not one env per host); each
step is one arriving VM per host, the action one of its candidates (invalid ones masked), the
reward the exact lifetime objective plus load-aware shaping over the candidates (see that
module for the reward and why).

**Policy** (:class:`CandidateScorerPolicy`): the observation is 12 candidate slots × the
after-state features. The actor applies one network to every slot, ``score(x) = a·x + c +
MLP(x)`` (``MLP``: one ReLU hidden layer of ``hidden`` units, none by default), and these
scores are the logits over the slots; MaskablePPO masks the invalid ones. The same weights
serve every slot and every host size, so permuting the candidate slots permutes the logits,
and a 2-, 4- or 8-node host's candidates go through the same network. The value head reads the
candidates pooled: the mean and the max of each feature over the valid slots (signed-log
compressed), through a small tanh MLP.

**Warm start**: the actor's linear part starts at the shipped default's weights (or
``init_from``'s, any one-layer after-state scorer); the hidden branch's output layer starts at
zero. The logits are a fixed temperature times the scores, chosen so that on sampled candidate
sets the default's best candidates hold ``start_probability`` (0.9) of the policy's
probability on average. So the policy *is* the default at step 0 (its argmax decides exactly
as the default does: an argmax does not change when all scores are scaled) and PPO only has
to improve on it. A fresh network would start far below greedy; behaviour cloning would start
near the default, not at it. The linear part reads each feature times evolution strategies'
per-feature scale (:func:`~catur.training.afterstate.feature_scales`), so one Adam step moves
every weight's effect on the ranking by a comparable amount; both factors are constants,
folded into the exported weights.

**Selection and gate, as evolution strategies do** (:mod:`catur.training.afterstate`):
``checkpoints`` times during training (and at step 0), the actor is exported and replayed on
every validation set (Huawei days 13–15 etc., both clusters at overcommit 1.0 and 1.02); the
checkpoint with the lowest selection score (:func:`~catur.training.afterstate.selection_score`)
is kept and must not lose to greedy on the validation hosts (:func:`catur.verdict.gate_or_refuse`).
Test windows are never read. Step 0 is a candidate too, so a run that does not improve on its
start keeps its start (the log and the manifest say which step was kept); ``keep_start=False``
(``--ppo-exclude-start``) selects among PPO's own checkpoints only, to measure what PPO learned.
Measured against evolution strategies in docs/results/decision-slot.md ("PPO over the
candidates"): on Huawei-East-1's test days PPO did not beat the ES-trained default.

**Export**: the actor becomes an :class:`~catur.afterstate.AfterStateModel` (``weights.npz``
+ ``manifest.json``, loaded by ``catur evaluate --model`` and ``catur serve``). A linear actor
is one layer. With a hidden branch, the linear part rides through the ReLU layer as two extra
units, ``relu(s) − relu(−s) = s``: layers ``[F, H+2]`` and ``[H+2, 1]``, the same function.
Two checks are recorded in the manifest's ``export_check``: the numpy model against its own
torch network (:func:`~catur.training.afterstate.export_check`, as evolution strategies
record), and against the trained PPO actor itself (``policy_agreement``): on candidate sets
drawn from the training windows both must choose the same candidate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from catur.afterstate import AfterStateModel, afterstate_manifest
from catur.errors import CaturError
from catur.placement import GREEDY
from catur.policies import PRIMITIVES
from catur.training import afterstate as es
from catur.training.afterstate import (
    Hosts, ScorerTrainConfig, build_scenarios, export_check, feature_scales, random_candidate_sets, scorer_weights, selection_score,
    source_means,
)
from catur.training.sources import Source
from catur.verdict import gate_or_refuse


@dataclass(frozen=True)
class PPOScorerConfig:
    """How PPO trains the after-state scorer (module doc). ``scenarios`` draws the training
    and validation windows exactly as evolution strategies do (its seed, jobs and allow_worse
    apply here too)."""

    scenarios: ScorerTrainConfig = ScorerTrainConfig()
    timesteps: int = 200_000
    envs: int = 64  # hosts stepped together in one VecEnv batch
    n_steps: int = 128  # steps per host per rollout: a rollout is envs · n_steps decisions
    batch_size: int = 1024
    n_epochs: int = 4
    learning_rate: float = 1e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    hidden: int = 0  # ReLU units of the actor's hidden branch (0: a linear actor)
    value_hidden: int = 64
    reward_scale: float = 10.0
    shaping_weight: float = 0.25
    episode_arrivals: int | None = None
    checkpoints: int = 4  # validations during training, besides step 0
    init_from: str = "default"  # the one-layer scorer the actor starts at
    # Step 0 (the warm start itself) competes in the selection. False selects among PPO's own
    # checkpoints only: to measure what PPO learned, even when it is worse than its start.
    keep_start: bool = True
    start_probability: float = 0.9

    def __post_init__(self) -> None:
        if self.timesteps < 0 or self.envs < 1 or self.n_steps < 2 or self.batch_size < 2 or self.n_epochs < 1:
            raise CaturError(f"timesteps >= 0, envs >= 1, n_steps >= 2, batch_size >= 2 and n_epochs >= 1 are required, got "
                             f"{self.timesteps}, {self.envs}, {self.n_steps}, {self.batch_size}, {self.n_epochs}")
        if self.hidden < 0 or self.checkpoints < 0 or self.value_hidden < 1:
            raise CaturError(f"hidden and checkpoints must be >= 0 and value_hidden >= 1, got {self.hidden}, "
                             f"{self.checkpoints}, {self.value_hidden}")
        if not 0 < self.start_probability < 1:
            raise CaturError(f"start_probability must be in (0, 1), got {self.start_probability}")
        if not self.reward_scale > 0 or not self.shaping_weight >= 0:
            raise CaturError(f"reward scale must be > 0 and shaping weight >= 0, got {self.reward_scale} and {self.shaping_weight}")


# --- training -------------------------------------------------------------------------------------


@dataclass
class PPOScorerResult:
    out: Path
    validation: dict
    history: list[dict] = field(default_factory=list)
    gate: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    timesteps: int = 0
    best_step: int = 0


def _validate(pool, model, offset: int, sets: int, baseline: list) -> tuple[float, np.ndarray, list]:
    """Replay ``model`` on every validation set (the pool's sets from ``offset``): ``(selection
    score, ratios to greedy, per-set parts)``."""
    parts = es._map(pool, [(offset + i, model, None) for i in range(sets)])
    ratios = np.array([p[0].sum() / g[0].sum() for p, g in zip(parts, baseline)])
    return selection_score(ratios), ratios, parts


def train_ppo_scorer(
    sources: list[Source], config: PPOScorerConfig, out: str | Path, *, progress: bool = True, log: Callable[[str], None] = print,
) -> PPOScorerResult:
    """Train with MaskablePPO, select on validation, gate against greedy, write ``out``."""
    import multiprocessing

    if not sources:
        raise CaturError("no training source")
    out = Path(out)
    started = time.perf_counter()
    scen = config.scenarios
    log(f"building scenarios for {', '.join(s.name for s in sources)}")
    train, val = build_scenarios(sources, scen, log)
    # Validation replays go through evolution strategies' worker pool (forked before torch
    # does any work; the workers only replay).
    es._POOL_SETS = train + val
    pool = multiprocessing.get_context("fork").Pool(scen.jobs) if scen.jobs > 1 else None
    try:
        return _train(sources, config, out, train, val, pool, started, log)
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _train(sources, config: PPOScorerConfig, out: Path, train: list[Hosts], val: list[Hosts], pool, started: float,
           log) -> PPOScorerResult:
    """:func:`train_ppo_scorer` once the scenarios and the replay pool are there."""
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback

    from catur.policy_model import load_policy
    from catur.sim.candidate_vec_env import CandidateVecEnv, RewardConfig
    from catur.training.ppo_policy import CandidateNetworks, CandidateScorerPolicy, export_actor, policy_agreement, start_temperature

    scen = config.scenarios
    torch.manual_seed(scen.seed)
    torch.set_num_threads(1)  # a tiny network: threads cost more than they give on a shared box
    streams = [s for hosts in train for s in hosts.streams]
    start = load_policy(config.init_from)
    weights = scorer_weights(start, f"--init-from {config.init_from}")  # over FEATURES, defect weight -1
    start_model = AfterStateModel(afterstate_manifest(), ((weights.astype(np.float32)[:, None], np.zeros(1, np.float32)),))
    rng = np.random.default_rng(scen.seed + 1)
    sampled = random_candidate_sets(train, rng)
    # Evolution strategies' per-feature step scales (a feature constant within candidate sets
    # gets 1: its weight cannot change a decision of the linear part).
    scales = feature_scales(train, np.random.default_rng(scen.seed + 1))
    scales = np.where(scales > 0, scales, 1.0)
    temperature = start_temperature(start_model, sampled, config.start_probability)
    log(f"warm start: {config.init_from} x {temperature:.4g} (its best candidates hold {100 * config.start_probability:.0f}% "
        f"of the policy on {sum(len(t.valid) for t in sampled)} sampled candidate sets)")
    env = CandidateVecEnv(streams, config.envs, RewardConfig(config.reward_scale, config.shaping_weight),
                          config.episode_arrivals, seed=scen.seed)
    ppo = MaskablePPO(
        CandidateScorerPolicy, env, learning_rate=config.learning_rate, n_steps=config.n_steps, batch_size=config.batch_size,
        n_epochs=config.n_epochs, gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
        ent_coef=config.ent_coef, vf_coef=config.vf_coef, seed=scen.seed, device="cpu", verbose=0,
        policy_kwargs={"hidden": config.hidden, "value_hidden": config.value_hidden, "actor_init": weights.tolist(),
                       "temperature": temperature, "input_scale": scales.tolist()},
    )
    networks: CandidateNetworks = ppo.policy.mlp_extractor

    log(f"baselines on {len(val)} validation sets")
    baseline_names = [GREEDY, *PRIMITIVES]
    offset = len(train)
    baseline = {name: es._map(pool, [(offset + i, name, None) for i in range(len(val))]) for name in baseline_names}
    history: list[dict] = []
    best: dict = {}

    def checkpoint(step: int) -> None:
        model = export_actor(networks)
        score, ratios, parts = _validate(pool, model, offset, len(val), baseline[GREEDY])
        history.append({"timesteps": step, "val_ratio_to_greedy": float(ratios.mean()), "val_worst_ratio": float(ratios.max()),
                        "selection_score": score, "val_ratio_by_source": source_means([h.label for h in val], ratios),
                        "seconds": round(time.perf_counter() - started, 1)})
        log(f"step {step}: {100 * (ratios.mean() - 1):+.2f}% vs greedy on validation on average, worst set "
            f"{100 * (ratios.max() - 1):+.2f}%")
        if (step > 0 or config.keep_start or not config.timesteps) and (not best or score < best["score"]):
            best.update(score=score, parts=parts, layers=model.layers, activation=model.manifest["activation"], step=step)

    every = max(config.timesteps // max(config.checkpoints, 1), 1) if config.checkpoints else None

    class Checkpoints(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = every

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if self.next is not None and self.num_timesteps >= self.next and self.num_timesteps < config.timesteps:
                checkpoint(self.num_timesteps)
                self.next += every

    checkpoint(0)
    rollout = config.envs * config.n_steps
    if config.timesteps:
        ppo.learn(total_timesteps=config.timesteps, callback=Checkpoints(), progress_bar=False)
        steps = int(ppo.num_timesteps)
        if steps > 0 and (not history or history[-1]["timesteps"] != steps):
            checkpoint(steps)
    else:
        steps = 0
    train_seconds = time.perf_counter() - started
    log(f"trained {steps} decisions ({steps // rollout} rollouts of {config.envs} hosts x {config.n_steps}) in "
        f"{train_seconds:.0f} s; kept step {best['step']}")

    parts = best["parts"]
    vms = np.concatenate([p[1] for p in parts])
    sums = {"catur": np.concatenate([p[0] for p in parts])}
    for name in baseline_names:
        sums[name] = np.concatenate([p[0] for p in baseline[name]])
    verdict = gate_or_refuse(list(range(len(vms))), vms, sums, allowed_worse=scen.allow_worse, log=log,
                             losing="the PPO scorer loses to greedy on the validation windows", out=out)
    per_set = {
        h.label: {"catur": float(p[0].sum() / p[1].sum()), **{n: float(baseline[n][i][0].sum() / p[1].sum()) for n in baseline_names}}
        for i, (h, p) in enumerate(zip(val, parts))
    }
    kept = AfterStateModel(afterstate_manifest(activation=best["activation"]), best["layers"])
    current = export_actor(networks)
    check = export_check(kept, train, np.random.default_rng(scen.seed + 2))
    tables = random_candidate_sets(train, np.random.default_rng(scen.seed + 3))
    check["policy_agreement"] = policy_agreement(networks, current, tables)  # the trained actor vs its export
    check["policy_samples"] = int(sum(len(t.valid) for t in tables))
    model = AfterStateModel(afterstate_manifest(
        activation=best["activation"],
        version=f"afterstate-ppo-s{scen.seed}-{int(time.time())}",
        training={
            "algorithm": "ppo", **{k: v for k, v in asdict(config).items() if k != "scenarios"},
            "scenarios": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(scen).items()},
            "sources": [asdict(s) for s in sources], "train_sets": [h.label for h in train],
            "warm_start_temperature": temperature, "timesteps_done": steps, "best_step": best["step"],
            "train_seconds": round(train_seconds, 1), "history": history,
        },
        evaluation={"windows": [h.label for h in val], "selection_score": best["score"],
                    "val_ratio_to_greedy": next(h["val_ratio_to_greedy"] for h in history if h["timesteps"] == best["step"]),
                    "per_set": per_set, "gate": verdict},
        export_check=check,
    ), best["layers"])
    model.save(out)
    log(f"wrote {out} (step {best['step']} of {steps}, selection score {best['score']:.4f}, {train_seconds:.0f} s)")
    return PPOScorerResult(out, per_set, history, verdict, train_seconds, steps, best["step"])


__all__ = ["PPOScorerConfig", "PPOScorerResult", "train_ppo_scorer"]
