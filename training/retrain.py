"""``catur retrain``: the scheduled, drift-aware retraining job (docs/explanation/drift-and-retraining.md).

The paper keeps its model healthy with a performance check, not a statistical test. A job
that a scheduler (cron, a Kubernetes CronJob, a systemd timer) runs every day or so:

1. **Replay** the *recent window* of a trace (e.g. the last three days of collected traffic)
   with the registry's current model, every primitive and ``greedy``, the same way ``catur
   evaluate`` does, and split the results **per cluster** (the trace's ``cluster`` column;
   without one, per host topology; see :mod:`catur.training.collapse`).
2. **Collapse check.** The model has *collapsed* on a cluster when a primitive or greedy is
   *clearly* better there: the 95% paired bootstrap interval over the cluster's hosts of
   (model - that rule) lies wholly above 0 (:mod:`catur.verdict`), or when greedy is clearly
   better on the whole window. Differences within the noise, as on a cluster of a few hosts,
   never count, and no minimum VM count is needed. Otherwise the model is *healthy*.
3. **Fine-tune** (only after a collapse): start from the current weights
   (:attr:`TrainConfig.init_from <catur.training.train.TrainConfig>`), imitate greedy on the
   recent window's observations, then continue with RL, using episodes from the hosts of the
   *worst* clusters only (those where the model loses, by how much it loses). A one-layer
   after-state scorer (the shipped default) is fine-tuned the way it was trained instead:
   ``generations`` of evolution strategies from its own weights on those hosts
   (:func:`catur.training.afterstate.fine_tune_scorer`).
4. **Validate on all** clusters of the recent window; repeat from the best candidate so far
   until one passes, ``max_iterations`` are done or the time budget would be exceeded.
5. **Promote** only a candidate that passes the gate: clearly worse than no primitive and
   not greedy on any cluster, and not losing to greedy on the whole window by the rule that
   ``catur train`` and ``catur models promote`` apply (worse on average, or clearly worse).
   It is added to the registry with its per-cluster evaluation, the whole-window comparison
   with greedy (``gate``) and its parent, then made current atomically; otherwise the current
   model is kept and the job says why (and, if greedy is what beats it, how to serve greedy
   as a rule version). A running ``catur serve --model REGISTRY`` picks the promoted model
   up by itself. A rule version as current model is judged as greedy, and fine-tuning it
   means training a fresh network (warm-started by imitating greedy).

Alongside, as early warnings, it measures the **drift** of the request mix (PSI and KS of VM
sizes and lifetimes, :mod:`catur.training.drift`) between a reference window — the model's
training window when it was trained on this trace, else every day before the recent window
— and the recent window, and the **uncertainty-gate rate** of the current model on both.
:mod:`catur.training.retrain_report` writes it all as JSON, Markdown and plots.

The model is judged on its own (no gate, no shield), as in training's periodic evaluation:
the question is whether the *learned policy* still beats the fixed rules.

**Falling back to greedy.** When no fine-tuned candidate passes but greedy itself does (it is
clearly worse than no primitive on any cluster), the job adds greedy to the registry as a
*rule version* (:mod:`catur.policy_model`: a manifest ``kind: rule, policy: greedy``) and promotes
it (status ``promoted-greedy``): a collapsed model never keeps serving when the best
deployable rule is known to do better. ``fallback_greedy=False`` (``--no-fallback-greedy``)
keeps the current model instead; ``--max-iterations 0`` (check only) never changes anything.

**Exit codes** (what a scheduler acts on): 0 = healthy, or a new model was promoted, a
fine-tuned one or greedy as a rule version (or, with ``dry_run``, would have been); 3 =
collapse and nothing passed within the budget (current kept; the report says why); 75 (``EX_TEMPFAIL``) = another retrain holds the lock; 2 = bad
input; 1 = unexpected error.

**Safe to run twice.** The job holds an exclusive ``fcntl.flock`` on
``<registry>/.retrain.lock`` from start to end; a second run exits 75 at once, naming the lock
file. The kernel drops an flock when its process dies, so a killed job never leaves a stale
lock; and the registry's own atomic add/promote mean a job killed at any point leaves
``current`` as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from catur.errors import CaturError
from catur.policy_model import PolicyModel, RulePolicy, load_policy
from catur.policies import PRIMITIVES
from catur.scorer import AFTERSTATE_CANDIDATES, PRIMITIVE_CANDIDATES
from catur.sim.admission import TARGET_UTILIZATION
from catur.training.collapse import (
    GROUP_BY,
    GroupVerdict,
    Window,
    badness,
    describe_failures,
    evaluate_by_group,
    healthy,
    judge,
    load_window,
    overall,
    passes,
    pooled,
    worst_groups,
)
from catur.verdict import Comparison, gate_record

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_COLLAPSED = 3
EXIT_LOCKED = 75  # sysexits.h EX_TEMPFAIL: try again later

LOCK_NAME = ".retrain.lock"
REPORTS_DIR = "reports"
MODEL = "catur"  # the report name of the model being judged


class LockHeld(Exception):
    """Another retrain holds the lock (exit 75). Not a :class:`CaturError`: nothing is wrong
    with the input, the job should simply run later."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        super().__init__(f"another catur retrain holds the lock {path}{f' ({holder})' if holder else ''}; try again later")


@contextlib.contextmanager
def retrain_lock(registry_root: str | Path):
    """Hold ``<registry>/.retrain.lock`` exclusively for the ``with`` block, or raise
    :class:`LockHeld` at once. The file keeps the holder's pid and start time, for the message."""
    path = Path(registry_root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise LockHeld(path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_now()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


#: How ``catur retrain --algo`` trains an improvement candidate.
IMPROVE_ALGORITHMS = ("es", "ppo")


@dataclass(frozen=True)
class RetrainConfig:
    """Everything one ``catur retrain`` run depends on (recorded in its report).

    ``days`` is the recent window (``FIRST:LAST``, 1-based inclusive, as in ``catur
    evaluate``; ``None`` = the trace's last three days); ``reference_days`` the drift reference
    (``None``: see the module doc). ``timesteps`` and ``warm_start`` are per fine-tuning
    iteration; ``worst`` limits how many losing clusters one iteration trains on (``None`` =
    all of them). Every cluster is judged: how sure a verdict is comes from the paired
    bootstrap over its hosts (:mod:`catur.verdict`), not from a minimum VM count.
    """

    registry: str
    trace: str
    format: str = "auto"
    cluster: str = "mixed"
    days: str | None = None
    reference_days: str | None = None
    group_by: str = "auto"
    target_utilization: float = TARGET_UTILIZATION
    cpu_overcommit: float | None = None
    budget_minutes: float = 30.0
    max_iterations: int = 3
    timesteps: int = 20_000
    warm_start: int = 5_000
    # When the current version is a one-layer after-state scorer: evolution-strategy
    # generations per fine-tuning iteration (instead of RL steps).
    generations: int = 8
    eval_hosts: int = 8
    worst: int | None = None
    envs: int = 1
    jobs: int | None = None
    seed: int = 0
    gate_samples: int = 2_000
    dry_run: bool = False
    report: str | None = None
    # After a collapse that fine-tuning could not fix, promote greedy itself (a rule version)
    # when greedy passes the gate and the current version is not already that rule.
    fallback_greedy: bool = True
    # A healthy scorer is improved too (:mod:`catur.training.retrain_improve`): a candidate
    # trained on the ``improve_train_days`` before a selection day, promoted only when clearly
    # better than the current model on the last ``holdout_days`` of the recent window.
    improve: bool = True
    holdout_days: int = 1
    improve_train_days: int = 3
    improve_generations: int = 12
    # How the candidate is trained: "es" (evolution strategies, improve_generations) or "ppo"
    # (MaskablePPO over the candidates, improve_timesteps decisions, catur.training.ppo_scorer);
    # either starts from the current scorer (or the shipped default, for a rule version).
    improve_algo: str = "es"
    improve_timesteps: int = 100_000

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise CaturError(f"--group-by must be one of {', '.join(GROUP_BY)}, got {self.group_by!r}")
        if not (isinstance(self.budget_minutes, (int, float)) and self.budget_minutes > 0):
            raise CaturError(f"--budget-minutes must be > 0, got {self.budget_minutes!r}")
        for name, low in (("max_iterations", 0), ("timesteps", 1), ("warm_start", 0), ("generations", 1), ("eval_hosts", 1),
                          ("envs", 1), ("gate_samples", 0), ("holdout_days", 1), ("improve_train_days", 1),
                          ("improve_generations", 1), ("improve_timesteps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise CaturError(f"--{name.replace('_', '-')} must be a whole number >= {low}, got {value!r}")
        if self.improve_algo not in IMPROVE_ALGORITHMS:
            raise CaturError(f"--algo must be one of {', '.join(IMPROVE_ALGORITHMS)}, got {self.improve_algo!r}")
        if self.worst is not None and (not isinstance(self.worst, int) or self.worst < 1):
            raise CaturError(f"--worst must be a whole number >= 1, got {self.worst!r}")
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise CaturError(f"--jobs must be a whole number >= 1, got {self.jobs!r}")
        if not 0 <= self.target_utilization <= 1:
            raise CaturError(f"--target-utilization must be in [0, 1], got {self.target_utilization!r}")


# --- fine-tuning -------------------------------------------------------------------------------


def _window_train_config(window: Window, config: RetrainConfig, **changes):
    from catur.training.train import TrainConfig

    base = dict(
        workload=str(window.trace_path),
        cluster=config.cluster,
        train_days=window.days,
        eval_days=window.days,
        target_utilization=config.target_utilization,
        cpu_overcommit=config.cpu_overcommit,
        seed=config.seed,
    )
    return TrainConfig(**{**base, **changes})


def fine_tune(
    parent: Path, window: Window, groups: list[str], config: RetrainConfig, iteration: int, out: Path,
    log: Callable[[str], None], progress: bool = True,
) -> Path:
    """Fine-tune ``parent`` on the recent window's hosts of ``groups``; write the model to ``out``.

    Episodes come from those hosts only; the uncertainty gate is fitted on every host of the
    window (see :func:`catur.training.train.train`), since the candidate is validated, and may
    serve, on all of them.
    """
    from catur.training.train import ALGORITHMS, train

    start = load_policy(parent)
    record = {
        "parent": str(parent),
        "iteration": iteration,
        "fine_tuned_on": list(groups),
        "hosts": sorted(set(window.hosts_of(groups))),
        "trace": str(config.trace),
        "recent_days": window.days,
    }
    if start.candidates == AFTERSTATE_CANDIDATES and len(getattr(start, "layers", ())) == 1:
        # A scorer is fine-tuned as it was trained: evolution strategies on the exact
        # objective, from its own weights, on the losing clusters' hosts.
        from catur.training.afterstate import fine_tune_scorer

        log(f"  an after-state scorer: {config.generations} generation{'s' * (config.generations != 1)} of evolution strategies "
            "from its weights")
        fine_tune_scorer(start, [s for s, g in zip(window.streams, window.labels) if g in groups], out,
                         generations=config.generations, seed=config.seed + iteration, jobs=config.jobs or 1,
                         manifest={"retrain": record}, progress=progress, log=log)
        return out
    algo = start.manifest.get("algorithm") if start.manifest.get("algorithm") in ALGORITHMS else "ppo"
    gamma = start.manifest.get("training", {}).get("gamma")
    # A rule version has no weights, and a scorer with hidden layers no primitive-action weights
    # to fine-tune: for either, train a fresh primitive-action network (retrain's gate judges it).
    rule = not (start.candidates == PRIMITIVE_CANDIDATES and getattr(start, "layers", None))
    log(f"  {'a fresh' if rule else 'from its weights, a'} {algo} network: {config.timesteps} RL steps"
        f"{f' after imitating greedy on {config.warm_start} observations' if config.warm_start else ''}")
    tc = _window_train_config(
        window, config,
        algo=algo,
        gamma=gamma if isinstance(gamma, (int, float)) and 0 <= gamma < 1 else None,
        timesteps=config.timesteps,
        seed=config.seed + iteration,
        n_envs=config.envs,
        warm_start=config.warm_start,
        eval_every=max(1_000, config.timesteps // 2),  # PPO's first rollout is 1,024 steps anyway
        eval_hosts=config.eval_hosts,
        init_from=None if rule else str(parent),
        hosts=window.hosts_of(groups),
        gate_samples=max(500, 2 * config.gate_samples),
        allow_worse=True,  # the candidate is judged by retrain's own gate, on every cluster
    )
    train(tc, out, progress=progress, log=log)
    model = PolicyModel.load(out)
    manifest = dict(model.manifest)
    manifest["retrain"] = record
    PolicyModel(manifest, model.layers, out).save(out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the registry keeps what matters
    return out


# --- drift ------------------------------------------------------------------------------------


def reference_days_for(config: RetrainConfig, window: Window, manifest: dict) -> tuple[str | None, str]:
    """``(days, why)``: the drift reference window (see the module doc)."""
    from catur.sim.admission import SECONDS_PER_DAY, parse_days

    if config.reference_days:
        return config.reference_days, "given with --reference-days"
    training = manifest.get("training") or {}
    workload, train_days = training.get("workload"), training.get("train_days")
    retrained = manifest.get("retrain") or {}
    if retrained.get("trace") and retrained.get("recent_days"):
        workload, train_days = retrained["trace"], retrained["recent_days"]
    if workload and train_days and _same_file(workload, config.trace):
        return train_days, "the model's training window"
    origin, _ = parse_days(None, window.df)
    first = int(round((window.start_s - origin) / SECONDS_PER_DAY)) + 1
    if first <= 1:
        return None, "the recent window starts on day 1: nothing before it to compare with"
    return f"1:{first - 1}", "every day before the recent window"


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def measure_drift(config: RetrainConfig, window: Window, model: PolicyModel | RulePolicy, log: Callable[[str], None]) -> tuple[dict, dict]:
    """``(report, samples)``: PSI/KS per feature and the gate rates; the samples feed the plots."""
    from catur.sim.admission import parse_days
    from catur.sim.workload import Workload
    from catur.training import drift
    from catur.training.train import _collect_observations

    days, why = reference_days_for(config, window, model.manifest)
    report: dict = {"reference_days": days, "reference_is": why, "recent_days": window.days}
    recent = drift.window_features(window.df, window.start_s, window.end_s, window.trace_end_s)
    samples = {"recent": recent}
    gate = None
    if model.manifest.get("gate"):
        from catur.gate import UncertaintyGate

        gate = UncertaintyGate.from_dict(model.manifest["gate"], str(model.path))
    if gate is not None and config.gate_samples:
        obs = _collect_observations(_window_train_config(window, config), window.streams, model, config.gate_samples)
        report["gate_rate_recent"] = drift.gate_rate(gate, obs)
    if days is None:
        log(f"drift: not measured ({why})")
        return report, samples
    start, end = parse_days(days, window.df)
    reference = drift.window_features(window.df, start, end, window.trace_end_s)
    samples["reference"] = reference
    features = drift.compare_windows(reference, recent)
    report["features"] = {name: f.to_dict() for name, f in features.items()}
    if gate is not None and config.gate_samples:
        scenario = Workload(window.df, config.cluster, days, config.target_utilization, config.cpu_overcommit).scenario(window.df)
        streams = [s for s in scenario.streams if s.counted.any()]
        if streams:
            cfg = replace(_window_train_config(window, config), train_days=days)
            report["gate_rate_reference"] = drift.gate_rate(gate, _collect_observations(cfg, streams, model, config.gate_samples))
    shown = ", ".join(f"{n} PSI {f.psi:.3f} ({f.level}), KS {f.ks:.3f}" for n, f in features.items())
    rates = ""
    if "gate_rate_recent" in report:
        rates = f"; gate rate {100 * report['gate_rate_recent']:.2f}% recent"
        if "gate_rate_reference" in report:
            rates += f" vs {100 * report['gate_rate_reference']:.2f}% reference"
    log(f"drift against days {days} ({why}): {shown}{rates}")
    return report, samples


# --- the job ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One model judged on the recent window: per cluster against every primitive and greedy,
    and against greedy on the whole window (``whole``; ``record`` is that comparison as
    :func:`catur.verdict.gate_record` writes it, kept with a promoted version)."""

    clusters: dict[str, GroupVerdict]
    whole: Comparison
    record: dict

    @property
    def healthy(self) -> bool:
        return healthy(self.clusters, self.whole)

    @property
    def passes(self) -> bool:
        return passes(self.clusters, self.whole)

    @property
    def badness(self) -> tuple:
        return badness(self.clusters, self.whole)

    def failures(self) -> str:
        return describe_failures(self.clusters, self.whole) or "no clear loss"

    def to_dict(self) -> dict:
        return {g: v.to_dict() for g, v in self.clusters.items()}


def judge_window(model: dict, baselines: dict) -> Judgement:
    """:class:`Judgement` of one model's replay (``{group: GroupResult}``) against the baselines'."""
    hosts, vms, sums = pooled(model)
    record = gate_record(hosts, vms, {MODEL: sums, **{name: pooled(b)[2] for name, b in baselines.items()}}, MODEL)
    return Judgement(judge(model, baselines), overall(model, baselines), record)


@dataclass
class Iteration:
    number: int
    parent: str
    groups: list[str]
    hosts: int
    wall_s: float
    judgement: Judgement
    model_dir: Path

    @property
    def passes(self) -> bool:
        return self.judgement.passes

    def to_dict(self) -> dict:
        return {
            "iteration": self.number,
            "fine_tuned_from": self.parent,
            "fine_tuned_on": self.groups,
            "hosts": self.hosts,
            "wall_s": round(self.wall_s, 1),
            "passes": self.passes,
            "clusters": self.judgement.to_dict(),
            "versus_greedy": self.judgement.whole.to_dict(),
        }


@dataclass
class RetrainOutcome:
    """What the job did and why; :meth:`to_json` is the report's JSON."""

    status: str  # healthy | promoted | promoted-greedy | would-promote | kept
    exit_code: int
    reason: str
    config: RetrainConfig
    current_before: str
    current_after: str
    promoted: str | None
    window: dict
    before: Judgement
    after: Judgement | None
    iterations: list[Iteration] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    wall_s: float = 0.0
    candidate_dir: str | None = None
    report_dir: str | None = None
    drift_samples: dict = field(default_factory=dict)
    improvement: dict | None = None  # what the improvement step of a healthy run did

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "time": _now(),
            "registry": str(Path(self.config.registry).resolve()),
            "current_before": self.current_before,
            "current_after": self.current_after,
            "promoted": self.promoted,
            "dry_run": self.config.dry_run,
            "window": self.window,
            "before": self.before.to_dict(),
            "after": self.after.to_dict() if self.after else None,
            "versus_greedy": {
                "before": self.before.whole.to_dict(),
                "after": self.after.whole.to_dict() if self.after else None,
                "rule": self.before.record["rule"],
            },
            "iterations": [it.to_dict() for it in self.iterations],
            "drift": self.drift,
            "wall_s": round(self.wall_s, 1),
            "candidate_dir": self.candidate_dir,
            "improvement": self.improvement,
            "config": asdict(self.config),
        }


def _evaluation_for_registry(judgement: Judgement, window: Window, config: RetrainConfig) -> dict:
    """The results stored with a promoted version (``catur models list`` reads
    ``clusters.*.avg_defect``; ``catur models promote`` reads ``gate``)."""
    return {
        "clusters": judgement.to_dict(),
        "gate": judgement.record,
        "group_by": window.group_by,
        "trace": str(config.trace),
        "recent_days": window.days,
        "judged_without": "gate and shield (the learned policy alone)",
    }


def run_retrain(config: RetrainConfig, log: Callable[[str], None] = print, progress: bool = True) -> RetrainOutcome:
    """Run the whole job under the lock (see the module doc); write the report; return the outcome.

    Raises :class:`LockHeld` when another run holds the lock, :class:`CaturError` on bad input.
    """
    from catur.decision import DeciderSpec
    from catur.placement import GREEDY
    from catur.registry import Registry

    started = time.perf_counter()
    registry = Registry(config.registry)
    with retrain_lock(registry.root):
        current = registry.current()
        if current is None:
            raise CaturError(
                f"model registry {config.registry!r} has no current model; promote one first "
                f"('catur models promote VERSION --registry {config.registry}')"
            )
        current_model = load_policy(current.path)  # a trained model, or a rule version (greedy)
        work = Path(tempfile.mkdtemp(prefix="catur-retrain-"))
        report_dir = _report_dir(config, registry.root)
        try:
            log(f"current model: {current.version} ({current.path})")
            window = load_window(config, work, log)
            drift_report, drift_samples = measure_drift(config, window, current_model, log)

            def judged(model_dir: Path, desc: str) -> Judgement:
                spec = DeciderSpec(model=str(model_dir), use_gate=False, label=MODEL)
                result = evaluate_by_group(window, [spec], jobs=config.jobs, seed=config.seed, progress=progress, desc=desc)
                return judge_window(result[MODEL], baselines)

            baselines = evaluate_by_group(
                window, [*PRIMITIVES, GREEDY], jobs=config.jobs, seed=config.seed, progress=progress, desc="primitives"
            )
            before = judged(current.path, f"model {current.version}")
            for v in before.clusters.values():
                log(
                    f"  {v.group or '(all)'}: model {100 * v.model:.3f}%, best primitive {v.best_primitive} "
                    f"{100 * v.best_primitive_defect:.3f}%, greedy {100 * (v.greedy or 0):.3f}% "
                    f"({v.vms:,} VMs on {v.versus[GREEDY].hosts} hosts)"
                    + (f" — clearly worse than {', '.join(v.clear_losses)}" if v.failing else "")
                )
            log(f"  whole window: {before.whole.describe('model')}")
            window_info = {
                "trace": str(config.trace),
                "recent_days": window.days,
                "group_by": window.group_by,
                "groups": window.groups,
                "hosts": len(window.streams),
                "vms": int(sum(v.vms for v in before.clusters.values())),
            }
            outcome = RetrainOutcome(
                status="healthy", exit_code=EXIT_OK, reason="", config=config,
                current_before=current.version, current_after=current.version, promoted=None,
                window=window_info, before=before, after=None, drift=drift_report, drift_samples=drift_samples,
            )
            if before.healthy:
                outcome.reason = (
                    f"{current.version} is not clearly worse than any primitive or greedy on any cluster of days "
                    f"{window.days} (95% paired bootstrap over hosts)"
                )
                log(f"healthy: {outcome.reason}")
                if config.improve and config.max_iterations > 0:
                    _improve_healthy(config, window, current, current_model, outcome, registry, work, started, log, progress)
            else:
                log(f"collapse: {current.version} is clearly worse on {before.failures()}")
                _improve(config, window, current, before, outcome, judged, registry, work, report_dir, started, log, progress)
                if outcome.status == "kept" and config.fallback_greedy and config.max_iterations > 0:
                    _fall_back_to_greedy(config, window, current, before, outcome, judge_window(baselines[GREEDY], baselines), registry, log)
            outcome.wall_s = time.perf_counter() - started
            outcome.report_dir = str(_write_report(report_dir, outcome))
            log(f"report: {outcome.report_dir}")
            return outcome
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _improve(config, window, current, before, outcome: RetrainOutcome, judged, registry, work, report_dir, started, log, progress) -> None:
    """The fine-tune / validate loop after a collapse, ending in promotion or a kept model."""
    budget_s = 60.0 * config.budget_minutes
    best_dir, best = Path(current.path), before
    outcome.exit_code, outcome.status = EXIT_COLLAPSED, "kept"
    last_s = 0.0
    stop = "no fine-tuning asked for (--max-iterations 0)"
    for number in range(1, config.max_iterations + 1):
        elapsed = time.perf_counter() - started
        if elapsed + last_s > budget_s:
            stop = f"the time budget ({config.budget_minutes:g} min) would be exceeded by another iteration"
            break
        # The clusters it clearly loses on; when it loses only on the whole window, all of them.
        groups = worst_groups(best.clusters, config.worst) or list(window.groups)
        log(f"iteration {number}: fine-tuning {best_dir.name} on {', '.join(groups)}")
        t0 = time.perf_counter()
        model_dir = fine_tune(best_dir, window, groups, config, number, work / f"iteration-{number}", log, progress)
        verdicts = judged(model_dir, f"candidate {number}")
        it = Iteration(number, best_dir.name, groups, len(window.hosts_of(groups)), time.perf_counter() - t0, verdicts, model_dir)
        last_s = it.wall_s
        outcome.iterations.append(it)
        log(
            f"iteration {number}: {'passes' if it.passes else 'fails'} — "
            + ", ".join(f"{g or '(all)'} {100 * v.model:.3f}% vs {v.best_baseline} {100 * v.best_baseline_defect:.3f}%" for g, v in verdicts.clusters.items())
            + f"; whole window {verdicts.whole.describe('model')} ({it.wall_s:.0f} s)"
        )
        if verdicts.badness < best.badness:
            best_dir, best = model_dir, verdicts
        if it.passes:
            break
        stop = f"{number} iteration{'s' if number > 1 else ''} done (--max-iterations {config.max_iterations})"
    outcome.after = best
    if not best.passes:
        outcome.reason = (
            f"collapse on {before.failures()}; no candidate passed the gate (no clear loss to a primitive or greedy on "
            f"any cluster, not worse than greedy on the whole window) ({stop}); still losing: {best.failures()}; "
            f"{current.version} stays current (if greedy is what beats it: 'catur models add --rule greedy --promote')"
        )
        if best_dir != Path(current.path):  # kept for inspection: the best that was found
            kept = report_dir / "candidate"
            shutil.copytree(best_dir, kept, dirs_exist_ok=True)
            outcome.candidate_dir = str(kept)
        log(f"kept {current.version}: {outcome.reason}")
        return
    if config.dry_run:
        outcome.exit_code, outcome.status = EXIT_OK, "would-promote"
        outcome.reason = f"collapse on {before.failures()}; a candidate passes the gate on every cluster; not promoted (--dry-run)"
        log(outcome.reason)
        return
    if _current_moved(registry, current, outcome, log):
        return
    added = registry.add(
        best_dir, evaluation=_evaluation_for_registry(best, window, config), parent=current.version,
        note=f"catur retrain: fine-tuned from {current.version} on days {window.days} of {config.trace}",
    )
    where = ", ".join(worst_groups(before.clusters)) or "the whole window"
    reason = (
        f"retrain: {current.version} collapsed on {where}; {added.version} is not clearly worse than any primitive or "
        f"greedy on any cluster of days {window.days}, nor worse than greedy on the whole window"
    )
    _promote(registry, added.version, reason, "promoted", outcome, log)


def _improve_healthy(config, window, current, current_model, outcome: RetrainOutcome, registry, work, started, log, progress) -> None:
    """A healthy run's improvement step (:mod:`catur.training.retrain_improve`): promote a
    candidate clearly better than the current model on held-out days (status ``improved``)."""
    from catur.training.retrain_improve import CANDIDATE, try_improvement

    if time.perf_counter() - started > 60.0 * config.budget_minutes:
        outcome.improvement = {"attempted": False, "reason": f"the time budget ({config.budget_minutes:g} min) is spent"}
        return
    improvement = try_improvement(config, window, current, current_model, work, log, progress)
    outcome.improvement = improvement.to_dict()
    if not improvement.promote:
        outcome.reason += f"; improvement: {improvement.reason}"
        return
    baselines = {name: improvement.results[name] for name in [*PRIMITIVES, "greedy"]}
    judgement = judge_window(improvement.results[CANDIDATE], baselines)
    if config.dry_run:
        outcome.status, outcome.reason = "would-improve", f"{improvement.reason}; not promoted (--dry-run)"
        log(outcome.reason)
        return
    if _current_moved(registry, current, outcome, log):
        return
    evaluation = {"clusters": judgement.to_dict(), "gate": judgement.record, "group_by": window.group_by, "trace": str(config.trace),
                  "recent_days": improvement.holdout_days, "judged_without": "gate and shield (the learned policy alone)",
                  "versus_current": improvement.versus_current}
    added = registry.add(Path(improvement.candidate_dir), evaluation=evaluation, parent=current.version,
                         note=f"catur retrain: improved on days {improvement.train_days} of {config.trace}, judged on held-out days "
                              f"{improvement.holdout_days}")
    outcome.after = judgement
    _promote(registry, added.version, f"retrain: {added.version} {improvement.reason}", "improved", outcome, log)


def _fall_back_to_greedy(config, window, current, before: Judgement, outcome: RetrainOutcome, greedy: Judgement, registry, log) -> None:
    """No candidate passed: serve greedy itself, as a rule version, if greedy passes the gate
    (clearly worse than no primitive on any cluster) and is not what is current already."""
    from catur.policy_model import is_rule

    if is_rule(current.manifest):
        log(f"no fallback: {current.version} already serves a rule ({current.manifest.get('policy')})")
        return
    if not greedy.passes:
        log(f"no fallback to greedy: greedy itself is clearly worse on {greedy.failures()}")
        return
    outcome.after = greedy
    if config.dry_run:
        outcome.exit_code, outcome.status = EXIT_OK, "would-promote"
        outcome.reason = (
            f"collapse on {before.failures()}; no fine-tuned candidate passed the gate; greedy passes it: "
            f"would serve greedy as a rule version; not promoted (--dry-run)"
        )
        log(outcome.reason)
        return
    if _current_moved(registry, current, outcome, log):
        return
    added = registry.add_rule(
        "greedy", evaluation=_evaluation_for_registry(greedy, window, config), parent=current.version,
        note=f"catur retrain: no fine-tuned candidate of {current.version} passed on days {window.days}; serving greedy",
    )
    where = ", ".join(worst_groups(before.clusters)) or "the whole window"
    reason = (
        f"retrain: {current.version} collapsed on {where} and no fine-tuned candidate passed the gate; "
        f"{added.version} serves greedy (a rule version), clearly worse than no primitive on any cluster of days {window.days}"
    )
    _promote(registry, added.version, reason, "promoted-greedy", outcome, log)


def _current_moved(registry, current, outcome: RetrainOutcome, log) -> bool:
    """Whether another writer changed the registry's current model during the run (then this
    run does not promote over it, and says so)."""
    now = registry.current()
    if now is None or now.version != current.version:
        outcome.reason = f"the registry's current model changed during the run ({current.version} -> {now.version if now else 'none'}); not promoting over it"
        log(outcome.reason)
        return True
    return False


def _promote(registry, version: str, reason: str, status: str, outcome: RetrainOutcome, log) -> None:
    """Make ``version`` current and record it in the outcome (exit 0, ``status``)."""
    registry.promote(version, reason=reason)
    outcome.exit_code, outcome.status = EXIT_OK, status
    outcome.promoted = outcome.current_after = version
    outcome.reason = reason
    log(f"promoted {version}: {reason}")


def _report_dir(config: RetrainConfig, root: Path) -> Path:
    """``--report DIR``, else ``<registry>/reports/retrain-<UTC time>-<pid>``."""
    if config.report:
        directory = Path(config.report)
        if directory.exists() and not directory.is_dir():
            raise CaturError(f"--report {config.report!r} is a file, not a directory")
        return directory
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return root / REPORTS_DIR / f"retrain-{stamp}-{os.getpid()}"


def _write_report(directory: Path, outcome: RetrainOutcome) -> Path:
    from catur.training.retrain_report import write_report

    write_report(outcome.to_json(), directory, outcome.drift_samples)
    return directory

