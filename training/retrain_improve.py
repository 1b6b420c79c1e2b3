"""``catur retrain`` improves a healthy model, not only repairs a collapsed one.

A model that merely ties greedy on a cluster's traffic is *healthy* (it loses clearly to no
rule) and the collapse path never touches it. The paper's promise, and the design card's,
is more: keep learning from production traffic. So on a healthy run the job also trains a
**candidate** on the cluster's recent days and promotes it only when it is **clearly better
than the current model on held-out days** that played no part in training or selecting it:

::

    ... | train (improve_train_days) | select (1 day) | held out (holdout_days) |
                                                      ^ the end of the recent window

* **train + select**: :func:`catur.training.afterstate.train_scorer` from the current
  scorer's weights, on the operator's own cluster, overcommit and utilisation, at the
  fine-tuning step sizes (:data:`IMPROVE_NOISE`, :data:`IMPROVE_LEARNING_RATE`: the start
  already serves, and the recipe's larger steps walked away from it within a few
  generations on one cluster). When the current version is a *rule* (greedy, say), the
  start is the shipped default scorer: the best learned start there is, and the selection
  day and held-out days still decide whether it, or a generation after it, is better than
  the rule on *this* traffic. It selects on the select day and refuses weights that lose to
  greedy there (then there is no candidate);
* **judge** on the held-out days, host by host (:mod:`catur.verdict`): the candidate must be
  *clearly better than the current model* (the 95% paired interval wholly below 0) **and**
  pass the promotion gate of the collapse path (no clear loss to any primitive or greedy on
  any cluster, not worse than greedy on the whole window). Otherwise the current model stays
  and the report says by how much the candidate did or did not differ.

Only after-state scorers (and rule versions) are improved this way; a primitive-action
model is left to the collapse path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from catur.afterstate import AfterStateModel
from catur.decision import DeciderSpec
from catur.errors import CaturError, LosesToGreedy
from catur.placement import GREEDY
from catur.policies import PRIMITIVES
from catur.policy_model import DEFAULT_MODEL, RulePolicy
from catur.sim.cluster import load_cluster
from catur.training.afterstate import ScorerTrainConfig, train_scorer
from catur.training.ppo_scorer import PPOScorerConfig, train_ppo_scorer
from catur.training.collapse import evaluate_by_group, judge, load_window, overall, passes, pooled
from catur.training.sources import Source, parse_window
from catur.verdict import compare

CURRENT, CANDIDATE = "current", "candidate"
#: ES step sizes of the improvement step: those of fine-tuning, smaller than the recipe's
#: (noise 0.3, learning rate 0.5), because the start is a trained model.
IMPROVE_NOISE, IMPROVE_LEARNING_RATE = 0.2, 0.3


@dataclass
class Improvement:
    """What the improvement step did (the report's ``improvement`` entry)."""

    attempted: bool
    reason: str
    train_days: str | None = None
    select_days: str | None = None
    holdout_days: str | None = None
    candidate_dir: str | None = None
    versus_current: dict | None = None
    versus_greedy: dict | None = None
    gate_passes: bool = False
    promote: bool = False
    wall_s: float = 0.0
    clusters: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict, repr=False)  # {policy: {group: GroupResult}} on the held-out days
    algo: str = "es"  # how the candidate was trained (RetrainConfig.improve_algo)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "results"}


def improvement_windows(recent_days: str, holdout: int, train: int) -> tuple[str, str, str]:
    """``(train, select, held out)`` ending at the recent window's last day (module doc)."""
    _, last = parse_window(recent_days, "--days")
    select = last - holdout
    if select < 2:
        raise CaturError(f"the trace ends on day {last}: improving needs a training day, a selection day and "
                         f"{holdout} held-out day{'s' * (holdout != 1)} (use --no-improve, or more days of traffic)")
    first = max(1, select - train)
    return f"{first}:{select - 1}", f"{select}:{select}", f"{select + 1}:{last}"


def improvable(model: object) -> bool:
    """Whether the current version can be improved here: a one-layer scorer or a rule."""
    return isinstance(model, RulePolicy) or (isinstance(model, AfterStateModel) and len(model.layers) == 1)


def try_improvement(config, window, current, current_model, work: Path, log: Callable[[str], None], progress: bool) -> Improvement:
    """Train a candidate on the recent days and judge it on held-out ones (module doc);
    ``config`` is the :class:`~catur.training.retrain.RetrainConfig`, ``window`` the recent
    window, ``current`` the registry's current version."""
    started = time.perf_counter()
    if not improvable(current_model):
        return Improvement(False, f"{current.version} is not an after-state scorer or a rule: improving is for scorers "
                                  "(the collapse path fine-tunes the others)")
    try:
        train_days, select_days, holdout_days = improvement_windows(window.days, config.holdout_days, config.improve_train_days)
    except CaturError as exc:
        return Improvement(False, str(exc))
    overcommit = config.cpu_overcommit if config.cpu_overcommit is not None else load_cluster(config.cluster).cpu_overcommit
    scorer = isinstance(current_model, AfterStateModel)
    train_config = ScorerTrainConfig(
        generations=config.improve_generations, eval_every=max(1, config.improve_generations // 4), scenarios_per_source=2,
        overcommit=(overcommit, overcommit), target_utilization=(config.target_utilization,) * 2, clusters=(config.cluster,),
        validation=((config.cluster, overcommit),), validation_target=config.target_utilization,
        init_from=str(current.path) if scorer else DEFAULT_MODEL, noise=IMPROVE_NOISE, learning_rate=IMPROVE_LEARNING_RATE,
        seed=config.seed, jobs=config.jobs or 1,
    )
    source = Source("recent", str(window.trace_path), train_days, select_days, test_days=holdout_days, cluster=config.cluster)
    log(f"improving: train a candidate on days {train_days} (from {current.version if scorer else 'the shipped default scorer'}), "
        f"select on days {select_days}, judge on held-out days {holdout_days}")
    record = Improvement(True, "", train_days, select_days, holdout_days, algo=config.improve_algo)
    out = work / "improvement-candidate"
    try:
        if config.improve_algo == "ppo":
            # A rollout is envs x n_steps decisions: fewer hosts per batch when the budget is small.
            envs = max(1, min(PPOScorerConfig.envs, config.improve_timesteps // PPOScorerConfig.n_steps))
            ppo = PPOScorerConfig(scenarios=train_config, timesteps=config.improve_timesteps, envs=envs,
                                  init_from=train_config.init_from)
            log(f"  trained by PPO over the candidates: {ppo.timesteps:,} decisions")
            train_ppo_scorer([source], ppo, out, progress=progress, log=lambda m: log(f"  {m}"))
        else:
            train_scorer([source], train_config, out, progress=progress, log=lambda m: log(f"  {m}"))
    except LosesToGreedy as exc:
        record.reason = f"no candidate: {exc}"
        record.wall_s = time.perf_counter() - started
        return record
    record.candidate_dir = str(out)
    holdout = load_window(replace(config, days=holdout_days), _fresh(work / "holdout"), log)
    policies = [DeciderSpec(model=str(current.path), use_gate=False, label=CURRENT),
                DeciderSpec(model=str(out), use_gate=False, label=CANDIDATE), *PRIMITIVES, GREEDY]
    results = evaluate_by_group(holdout, policies, jobs=config.jobs, seed=config.seed, progress=progress, desc="held-out days")
    baselines = {name: results[name] for name in [*PRIMITIVES, GREEDY]}
    record.results = results
    _, vms, candidate_sums = pooled(results[CANDIDATE])
    versus_current = compare(vms, candidate_sums, pooled(results[CURRENT])[2], CURRENT)
    verdicts = judge(results[CANDIDATE], baselines)
    whole = overall(results[CANDIDATE], baselines)
    record.versus_current, record.versus_greedy = versus_current.to_dict(), whole.to_dict()
    record.clusters = {g: v.to_dict() for g, v in verdicts.items()}
    record.gate_passes = passes(verdicts, whole)
    record.promote = versus_current.clearly_better and record.gate_passes
    if record.promote:
        record.reason = f"clearly better than {current.version} on held-out days {holdout_days}: {versus_current.describe('candidate')}"
    elif not versus_current.clearly_better:
        record.reason = f"not clearly better than {current.version} on held-out days {holdout_days}: {versus_current.describe('candidate')}"
    else:
        record.reason = (f"clearly better than {current.version} but fails the promotion gate on held-out days {holdout_days}: "
                         f"{whole.describe('candidate')}")
    log(f"improvement: {'promote' if record.promote else 'keep the current model'}: {record.reason}")
    record.wall_s = time.perf_counter() - started
    return record


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["CANDIDATE", "CURRENT", "IMPROVE_LEARNING_RATE", "IMPROVE_NOISE", "Improvement", "improvable", "improvement_windows", "try_improvement"]
