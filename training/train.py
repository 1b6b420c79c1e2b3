"""Training a placement policy: PPO (default) or DQN over the four primitives.

:func:`train` runs the whole job a user starts with ``catur train``:

1. builds ``n_envs`` copies of :class:`~catur.sim.env.NumaPlacementEnv` over the *training*
   window (each worker process builds its own), wrapped in load-aware shaping unless
   disabled, rewards normalised by SB3's ``VecNormalize`` (observations are left alone, so
   the exported network needs no normaliser);
2. learns with sb3-contrib's ``MaskablePPO`` or SB3's ``DQN`` (the paper's choice, γ = 0.1);
3. every ``eval_every`` steps exports the policy to Catur's numpy format and replays the
   *evaluation* window on a sample of hosts with the same engine as ``catur evaluate``,
   against every primitive and ``greedy``; the best export so far is kept as a checkpoint;
4. compares the best export with greedy and the best primitive on the validation sample,
   host by host (:mod:`catur.verdict`: a paired bootstrap interval over hosts), and logs it;
   a model that *loses to greedy* (worse on average, or clearly worse) is not written —
   :class:`~catur.errors.LosesToGreedy` says why — unless ``allow_worse``;
5. writes the model directory: the best export, its manifest (algorithm, spaces, window,
   topologies, package versions, evaluation metrics with the comparison in
   ``evaluation.gate``, export check) and the uncertainty gate's statistics, fitted on
   observations from the training window; every periodic export is kept under
   ``checkpoints/step-N`` in the same format.

Time split follows the paper (days 1–15 train, 16–31 test): by default episodes come from days
1–12 and checkpoints are chosen on days 13–15, so the test window (16–31, ``catur evaluate``)
is never seen while training or selecting.

**Fine-tuning** (what ``catur retrain`` does, :mod:`catur.training.retrain`): with
``init_from`` the network starts from an existing model's weights
(:func:`catur.training.export.load_layers`, taking its hidden sizes and activation) instead
of a fresh initialisation; a warm start then imitates greedy *from those weights* on the new
window's observations, and that starting point (after the warm start, if any) is evaluated
as step 0, a candidate checkpoint like every later one. ``hosts`` restricts episodes and the
evaluation sample to some admitted hosts (e.g. the clusters where the model collapsed); the
uncertainty gate is still fitted on every host of the training window, which it will serve.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from catur.errors import CaturError
from catur.gate import fit_gate
from catur.policy_model import MODEL_FORMAT, PolicyModel
from catur.observation import CANDIDATE_FEATURES, OBS_DIM, OBS_VERSION
from catur.policies import PRIMITIVES
from catur.sim.admission import TARGET_UTILIZATION
from catur.verdict import gate_or_refuse, host_sums

ALGORITHMS = ("ppo", "dqn")
TEACHERS = ("greedy", "oracle")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the manifest).

    ``workload`` is a synthetic scenario name or a trace file; ``train_days`` and
    ``eval_days`` are ``FIRST:LAST`` windows (1-based, inclusive) of it.
    """

    algo: str = "ppo"
    workload: str = "default"
    cluster: str = "mixed"
    train_days: str | None = "1:12"
    eval_days: str | None = "13:15"  # validation: picks the checkpoint; test later days apart
    target_utilization: float = TARGET_UTILIZATION
    cpu_overcommit: float | None = None
    timesteps: int = 50_000
    seed: int = 0
    n_envs: int = 2
    shaping: bool = True
    episode_arrivals: int = 256
    gamma: float | None = None  # default: 0.9 for PPO, 0.1 for DQN (the paper's)
    learning_rate: float = 1e-4
    ent_coef: float = 0.0
    net_arch: tuple[int, ...] = (64, 64)
    eval_every: int = 10_000
    eval_hosts: int = 8
    warm_start: int = 20_000  # demonstrations to imitate before RL (0 = none)
    # Whom the warm start imitates: "greedy" (deployable, sees only the VM in hand) or
    # "oracle" (the teacher_k-step oracle: which primitive is best given the host's next
    # teacher_k arrivals; it needs the trace's future, so it only teaches, never acts).
    teacher: str = "greedy"
    teacher_k: int = 5
    tensorboard: str | None = None
    # Fine-tuning: a model directory (catur.policy_model format) whose weights the network starts
    # from instead of a fresh initialisation; its hidden sizes and activation are used.
    init_from: str | None = None
    # Only these admitted host ids give episodes and the periodic evaluation sample (None =
    # all); host ids are stable for a given workload, cluster and sizing (see admission).
    hosts: tuple[int, ...] | None = None
    gate_samples: int = 4_000  # observations the uncertainty gate is fitted on
    # Write the model even when it loses to greedy on the validation sample (catur.verdict's
    # rule); the manifest then says it lost. Off: such a model is not written at all.
    allow_worse: bool = False

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise CaturError(f"unknown algorithm {self.algo!r}; known: {', '.join(ALGORITHMS)}")
        if self.hosts is not None:
            hosts = tuple(self.hosts)
            if not hosts or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 0 for h in hosts):
                raise CaturError(f"train config: hosts must be host ids >= 0 (None = all), got {self.hosts!r}")
            object.__setattr__(self, "hosts", tuple(sorted({int(h) for h in hosts})))
        if self.teacher not in TEACHERS:
            raise CaturError(f"train config: unknown teacher {self.teacher!r}; known: {', '.join(TEACHERS)}")
        if not isinstance(self.teacher_k, int) or self.teacher_k < 1:
            raise CaturError(f"train config: teacher_k must be a whole number >= 1, got {self.teacher_k!r}")
        if not isinstance(self.warm_start, int) or self.warm_start < 0:
            raise CaturError(f"train config: warm_start must be a whole number >= 0, got {self.warm_start!r}")
        for name in ("timesteps", "n_envs", "episode_arrivals", "eval_every", "eval_hosts", "gate_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CaturError(f"train config: {name} must be a whole number >= 1, got {value!r}")
        if self.gamma is not None and not 0.0 <= self.gamma < 1.0:
            raise CaturError(f"train config: gamma must be in [0, 1), got {self.gamma!r}")
        if not self.learning_rate > 0:
            raise CaturError(f"train config: learning_rate must be > 0, got {self.learning_rate!r}")

    @property
    def effective_gamma(self) -> float:
        if self.gamma is not None:
            return self.gamma
        return 0.1 if self.algo == "dqn" else 0.9

    def workload_options(self, days: str | None) -> dict:
        return dict(
            cluster=self.cluster,
            days=days,
            target_utilization=self.target_utilization,
            cpu_overcommit=self.cpu_overcommit,
            seed=self.seed,
        )

    def window(self, days: str | None):
        """The :class:`~catur.sim.workload.Workload` of ``days`` of the configured workload."""
        from catur.sim.workload import Workload

        return Workload(self.workload, **self.workload_options(days))


def make_env(config: TrainConfig, days: str | None, streams=None):
    """One (wrapped) environment over ``days`` of the configured workload."""
    from catur.sim.env import NumaPlacementEnv
    from catur.sim.shaping import LoadAwareShaping

    if streams is None and config.hosts is not None:
        streams = _host_streams(config, days)
    env = NumaPlacementEnv(config.window(days), episode_arrivals=config.episode_arrivals, streams=streams)
    return LoadAwareShaping(env) if config.shaping else env


def _host_streams(config: TrainConfig, days: str | None):
    """The window's host streams, restricted to ``config.hosts`` when set."""
    streams = config.window(days).streams()
    if config.hosts is None:
        return streams
    chosen = [s for s in streams if s.host in set(config.hosts)]
    if not chosen:
        raise CaturError(f"train config: none of hosts {list(config.hosts)} has VMs arriving in days {days}")
    return chosen


@dataclass
class EvalRecord:
    step: int
    avg_defect: float
    anomalies: int
    wall_s: float


@dataclass
class TrainResult:
    model_dir: Path
    history: list[EvalRecord] = field(default_factory=list)
    baselines: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    gate: dict = field(default_factory=dict)  # catur.verdict.gate_record of the written model


def _sample_streams(config: TrainConfig, days: str | None):
    streams = _host_streams(config, days)
    rng = np.random.default_rng(config.seed)
    picked = np.sort(rng.choice(len(streams), size=min(config.eval_hosts, len(streams)), replace=False))
    return streams, [streams[i] for i in picked]


def _export(model, config: TrainConfig, directory: Path, extra: dict) -> PolicyModel:
    from catur.training.export import export_layers

    layers, activation = export_layers(model)
    manifest = {
        "format": MODEL_FORMAT,
        "obs_version": OBS_VERSION,
        "obs_dim": OBS_DIM,
        "actions": list(PRIMITIVES),
        "activation": activation,
        "algorithm": config.algo,
        "action_space": "Discrete(4): primitives",
        "observation_space": f"Box({OBS_DIM},) float32, catur.observation v{OBS_VERSION}",
        **extra,
    }
    exported = PolicyModel(manifest, tuple(layers), directory)
    exported.save(directory)
    return exported


def _package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("catur", "numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def train(config: TrainConfig, out: str | Path, progress: bool = True, log=print) -> TrainResult:
    """Train, evaluate periodically, and write the model directory ``out``; see module doc."""
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
    from tqdm import tqdm

    from catur.decision import DeciderSpec
    from catur.placement import GREEDY
    from catur.sim.evaluate import evaluate_policies

    torch.set_num_threads(1)
    out = Path(out)
    check_output_dir(out)
    started = time.perf_counter()
    train_streams, _ = _sample_streams(config, config.train_days)
    _, eval_sample = _sample_streams(config, config.eval_days)
    log(
        f"training {config.algo} on {config.workload} days {config.train_days or 'all'} "
        f"({len(train_streams)} hosts: {', '.join(sorted({s.topology.name for s in train_streams}))}); "
        f"evaluating on days {config.eval_days or 'all'}, {len(eval_sample)} hosts"
    )
    baselines = evaluate_policies(eval_sample, [*PRIMITIVES, GREEDY], jobs=1, seed=config.seed)
    baseline_defects = {name: r.summary.avg_defect for name, r in baselines.items()}
    # Per-host defect sums: the paired comparison with greedy (catur.verdict) needs them.
    eval_hosts, eval_vms, _ = host_sums(eval_sample, baselines[GREEDY].rows, baselines[GREEDY].lifetime_defect)
    baseline_sums = {name: host_sums(eval_sample, r.rows, r.lifetime_defect)[2] for name, r in baselines.items()}
    best_primitive = min(PRIMITIVES, key=lambda p: baseline_defects[p])
    log(
        "baselines on the evaluation sample: "
        + ", ".join(f"{name} {100 * d:.3f}%" for name, d in sorted(baseline_defects.items(), key=lambda kv: kv[1]))
    )

    start = _start_model(config)
    policy_kwargs = {"net_arch": list(config.net_arch)}
    if start is not None:  # fine-tuning: the network takes the starting model's shape
        from catur.training.export import ACTIVATION_MODULES, architecture_of

        policy_kwargs = {
            "net_arch": list(architecture_of(start.layers)),
            "activation_fn": ACTIVATION_MODULES[start.manifest["activation"]],
        }
    vec_cls = SubprocVecEnv if config.n_envs > 1 else DummyVecEnv
    venv = make_vec_env(
        make_env, n_envs=config.n_envs, seed=config.seed, vec_env_cls=vec_cls,
        env_kwargs={"config": config, "days": config.train_days},
    )
    venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=config.effective_gamma)
    common = dict(
        gamma=config.effective_gamma,
        learning_rate=config.learning_rate,
        seed=config.seed,
        verbose=0,
        tensorboard_log=config.tensorboard,
        device="cpu",
    )
    if config.algo == "ppo":
        model = MaskablePPO(
            "MlpPolicy", venv, n_steps=max(64, 1024 // config.n_envs),
            batch_size=256, n_epochs=5, ent_coef=config.ent_coef, clip_range=0.1,
            policy_kwargs=policy_kwargs, **common,
        )
    else:
        model = DQN(
            "MlpPolicy", venv, buffer_size=50_000, learning_starts=1_000, batch_size=128,
            train_freq=4, target_update_interval=1_000, exploration_fraction=0.3,
            exploration_final_eps=0.02, policy_kwargs=policy_kwargs, **common,
        )
    if start is not None:
        from catur.training.export import load_layers

        load_layers(model, start.layers)
        log(f"starting from {config.init_from} (model {start.version}, hidden {policy_kwargs['net_arch']})")

    work = Path(tempfile.mkdtemp(prefix="catur-train-"))
    history: list[EvalRecord] = []
    best = {"defect": np.inf, "dir": None, "step": 0}

    from catur.training.export import check_agreement

    check_obs = _collect_observations(config, train_streams, None, 500)
    agreement_at: dict[int, dict] = {}
    sums_at: dict[int, np.ndarray] = {}

    def evaluate_now(step: int) -> None:
        candidate = work / f"step-{step}"
        exported = _export(model, config, candidate, {"version": f"step-{step}"})
        # The export must act exactly like the network it came from, checked as it is made.
        agreement_at[step] = check_agreement(model, exported, check_obs)
        spec = DeciderSpec(model=str(candidate), use_gate=False, label="catur")
        result = evaluate_policies(eval_sample, [spec], jobs=1, seed=config.seed)["catur"]
        summary = result.summary
        sums_at[step] = host_sums(eval_sample, result.rows, result.lifetime_defect)[2]
        history.append(EvalRecord(step, summary.avg_defect, summary.anomalies, time.perf_counter() - started))
        if summary.avg_defect < best["defect"]:
            best.update(defect=summary.avg_defect, dir=candidate, step=step)
        log(
            f"step {step:>8}: catur {100 * summary.avg_defect:.3f}% (best primitive {best_primitive} "
            f"{100 * baseline_defects[best_primitive]:.3f}%, greedy {100 * baseline_defects[GREEDY]:.3f}%)"
        )

    class Periodic(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.bar = None
            self.next_eval = config.eval_every

        def _on_training_start(self) -> None:
            self.bar = tqdm(total=config.timesteps, unit="step", desc="training", disable=not progress or None)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            if self.num_timesteps >= self.next_eval:
                self.next_eval += config.eval_every
                evaluate_now(self.num_timesteps)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    try:
        if config.warm_start:
            demos, labels = _demonstrations(config, train_streams, config.warm_start)
            accuracy = _imitate(model, demos, labels, config.seed)
            teacher = "greedy" if config.teacher == "greedy" else f"the {config.teacher_k}-step oracle"
            log(f"warm start: imitated {teacher} on {len(demos)} observations ({100 * accuracy:.1f}% agreement)")
            if config.teacher != "greedy":  # how much the teacher says that greedy would not
                same = np.mean([greedy_action(o) == a for o, a in zip(demos, labels)])
                log(f"warm start: greedy makes the teacher's choice on {100 * same:.1f}% of these observations")
        if config.warm_start or start is not None:  # the starting point is a candidate too
            evaluate_now(0)
        model.learn(total_timesteps=config.timesteps, callback=Periodic(), tb_log_name=config.algo)
        if not history or history[-1].step != model.num_timesteps:
            evaluate_now(model.num_timesteps)
        train_seconds = time.perf_counter() - started
        final = PolicyModel.load(best["dir"])
        verdict = gate_or_refuse(
            eval_hosts, eval_vms, {"catur": sums_at[best["step"]], **baseline_sums}, allowed_worse=config.allow_worse,
            log=log, losing=f"the model loses to greedy on validation days {config.eval_days or 'all'}", out=out,
        )

        # Gate statistics on observations the chosen policy meets in the training window: on
        # every host of it, also when episodes came from some hosts only (fine-tuning on the
        # clusters where a model collapsed), since the model will serve all of them.
        gate_streams = train_streams if config.hosts is None else _host_streams(replace(config, hosts=None), config.train_days)
        observations = _collect_observations(config, gate_streams, final, max(config.gate_samples, 2))
        agreement = agreement_at[best["step"]]
        gate = fit_gate(observations)
        manifest = dict(final.manifest)
        manifest.update(
            version=f"{config.algo}-s{config.seed}-{int(time.time())}",
            gate=gate.to_dict(),
            # No fixed fallback: out-of-distribution requests go to greedy, the best primitive
            # for each request. (A fixed "best primitive of the validation window" was tried:
            # on Azure 2017 it fired often on the test days and did much worse than greedy.)
            best_primitive=best_primitive,
            training={
                **{k: v for k, v in asdict(config).items() if k != "tensorboard"},
                "gamma": config.effective_gamma,
                "net_arch": list(policy_kwargs["net_arch"]),
                "topologies": sorted({s.topology.name for s in train_streams}),
                "best_step": best["step"],
                "train_seconds": round(train_seconds, 1),
            },
            evaluation={
                "days": config.eval_days,
                "hosts": [int(s.host) for s in eval_sample],
                "avg_defect": best["defect"],
                "baselines": baseline_defects,
                "history": [asdict(h) for h in history],
                "gate": verdict,  # vs greedy and the best primitive; catur models promote reads it
            },
            export_check=agreement,
            versions=_package_versions(),
        )
        if out.exists():
            shutil.rmtree(out)
        PolicyModel(manifest, final.layers, out).save(out)
        # Every periodic export stays available (same format) for inspection or rollback.
        shutil.copytree(work, out / "checkpoints")
    finally:
        venv.close()
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out} (best at step {best['step']}: {100 * best['defect']:.3f}% on the evaluation sample)")
    return TrainResult(out, history, baseline_defects, {"avg_defect": best["defect"]}, train_seconds, verdict)


def _start_model(config: TrainConfig) -> PolicyModel | None:
    """The model ``config.init_from`` names, checked against the algorithm (None = scratch).

    A PPO export holds an actor's logits and a DQN export Q-values: loading one into the
    other's network would start from numbers that mean something else, so that is refused.
    """
    if config.init_from is None:
        return None
    start = PolicyModel.load(config.init_from)
    algorithm = start.manifest.get("algorithm")
    if algorithm is not None and algorithm != config.algo:
        raise CaturError(
            f"init_from {str(config.init_from)!r} is a {algorithm} model; fine-tune it with algo={algorithm!r}, "
            f"not {config.algo!r}"
        )
    return start


def check_output_dir(out: Path) -> None:
    """Refuse, before any training, an output path that is not ours to replace.

    An existing directory is replaced only if it is empty or already a model directory (it
    has a manifest.json); anything else — a file, a folder with other things — is an error.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise CaturError(f"--out {str(out)!r} is a file, not a model directory")
    if any(out.iterdir()) and not (out / "manifest.json").exists():
        raise CaturError(
            f"--out {str(out)!r} is a non-empty directory that is not a model directory; "
            f"refusing to replace it"
        )


def _collect_observations(config: TrainConfig, streams, model: PolicyModel | None, count: int) -> np.ndarray:
    """Observations met on the training window by ``model`` acting, or by greedy if ``None``."""
    env = make_env(TrainConfig(**{**asdict(config), "shaping": False}), config.train_days, streams)
    obs, _ = env.reset(seed=config.seed)
    rows = []
    while len(rows) < count:
        rows.append(obs)
        action = greedy_action(obs) if model is None else int(model.choose(obs)[0])
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(rows)


def _regrets(obs: np.ndarray) -> np.ndarray:
    """Each primitive's regret (defect above the best primitive's) as the observation holds it."""
    return obs[OBS_DIM - len(PRIMITIVES) * CANDIDATE_FEATURES :].reshape(len(PRIMITIVES), CANDIDATE_FEATURES)[:, 3]


def greedy_action(obs: np.ndarray) -> int:
    """The primitive with zero regret in an observation (greedy's choice; ties: the first)."""
    return int(np.argmin(_regrets(obs)))


def _demonstrations(config: TrainConfig, streams, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` observations of the training window and the teacher's action for each.

    Greedy labels come from the observation itself (its zero-regret primitive). Oracle labels
    need the future: the teacher acts (the states are the ones the oracle meets), and each
    state is labelled by :meth:`~catur.sim.env.NumaPlacementEnv.lookahead_costs`, the same
    search ``catur evaluate --policies oracle`` runs; the work is split over ``n_envs``
    processes, one seed each, so the result does not depend on scheduling.
    """
    if config.teacher == "greedy":
        observations = _collect_observations(config, streams, None, count)
        return observations, np.array([greedy_action(o) for o in observations])
    shares = [count // config.n_envs + (i < count % config.n_envs) for i in range(config.n_envs)]
    tasks = [(config, streams, share, config.seed + i) for i, share in enumerate(shares) if share]
    if len(tasks) == 1:
        parts = [_oracle_demonstrations(*tasks[0])]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(tasks)) as pool:
            parts = list(pool.map(_oracle_demonstrations, *zip(*tasks)))
    observations, costs = np.concatenate([o for o, _ in parts]), np.concatenate([c for _, c in parts])
    return observations, np.array([oracle_action(o, c) for o, c in zip(observations, costs)])


def _oracle_demonstrations(config: TrainConfig, streams, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One process's share of oracle demonstrations (see :func:`_demonstrations`): the
    observations and, for each, the look-ahead cost of every primitive."""
    env = make_env(replace(config, shaping=False), config.train_days, streams)
    obs, _ = env.reset(seed=seed)
    rows, costs = [], []
    while len(rows) < count:
        rows.append(obs)
        costs.append(env.unwrapped.lookahead_costs(config.teacher_k))
        obs, _, terminated, truncated, _ = env.step(oracle_action(rows[-1], costs[-1]))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(rows), np.array(costs)


def oracle_action(obs: np.ndarray, costs: np.ndarray) -> int:
    """The oracle's choice: least look-ahead cost, ties to the smaller defect of the VM in
    hand (its regret in the observation), then to the primitive listed first."""
    return int(np.lexsort((np.arange(len(costs)), _regrets(obs), costs))[0])


def _imitate(model, observations: np.ndarray, labels: np.ndarray, seed: int, epochs: int = 30) -> float:
    """Behaviour-clone the teacher's ``labels`` into the policy network (cross-entropy on its
    scores); returns the agreement reached on the demonstrations.

    RL then starts from a policy as good as its teacher can be imitated and only has to learn
    what the teacher misses; periodic evaluation keeps the best of both.
    """
    import torch

    from catur.training.export import torch_score_module

    torch.manual_seed(seed)
    x = torch.as_tensor(observations, dtype=torch.float32)
    # One exact choice per state, ties broken as the teacher breaks them. Ties are not
    # equivalent for what comes next: accepting any zero-regret primitive as right was tried
    # with greedy and gave a clearly worse validation defect (0.61% vs 0.33% on the synthetic
    # default).
    y = torch.as_tensor(labels)
    scores_of, parameters = torch_score_module(model)
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(256):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(scores_of(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((scores_of(x).argmax(dim=1) == y).float().mean())


def write_history(result: TrainResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(h) for h in result.history], indent=2))
