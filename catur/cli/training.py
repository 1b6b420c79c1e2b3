"""``catur train``: learn a placement policy from a trace (or synthetic workload) window;
``catur retrain``: the scheduled drift-aware retraining job (:mod:`catur.training.retrain`)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

from catur.cli.options import add_cluster_arguments, add_command, config_from_args, config_option, field_default
from catur.errors import CaturError
from catur.registry import REGISTRY_ENV
from catur.training.collapse import GROUP_BY
from catur.training.retrain import IMPROVE_ALGORITHMS, RetrainConfig
from catur.training.train import ALGORITHMS, TEACHERS, TrainConfig

EPILOG = """examples:
  catur train-primitives --synthetic default --out models/mine                 # minutes on 2 cores
  catur train-primitives ../shared/traces/huawei-east-1-lt.csv.gz --train-days 1:12 --eval-days 13:15 \\
      --cpu-overcommit 1.02 --target-utilization 0.95 --timesteps 100000 --out models/huawei
  catur train-primitives trace.parquet --algo dqn --out models/dqn              # the paper's algorithm
  catur train-primitives trace.parquet --teacher oracle --teacher-k 5 --out models/oracle-taught
  catur evaluate trace.parquet --model models/huawei --shield-depth 1
  catur train-primitives trace.parquet --train-days 16:18 --eval-days 16:18 --init-from models/huawei \\
      --warm-start 5000 --timesteps 20000 --out models/huawei-ft   # fine-tune (catur retrain does this)

The output directory holds weights.npz (plain arrays, no pickle) and manifest.json
(algorithm, spaces, windows, topologies, versions, evaluation history, gate statistics).

Never worse than greedy: at the end the chosen model is compared with greedy and the best
primitive on the validation sample, host by host (95% paired bootstrap interval over hosts).
If its average defect is above greedy's, or the interval lies wholly above 0, it *loses*:
nothing is written, the last line says why, and the exit status is 3 (bad input is 2).
--allow-worse writes it anyway (exit 0) and the manifest records that it lost
(evaluation.gate); 'catur models promote' then refuses it unless --force.

TensorBoard logs go to --tensorboard DIR (view with: tensorboard --logdir DIR).
"""


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur train`` (alias ``train-scorer``), ``catur train-primitives``,
    ``catur walk-forward`` and ``catur retrain`` on ``sub``."""
    add_scorer_command(sub)
    p = add_command(
        sub, "train-primitives", cmd_train,
        help="train the older primitive-action model (PPO or DQN over the four primitives; loses to greedy)",
        description="Train the older primitive-action model: a policy that picks one of the four primitives per VM "
        "(it loses to greedy; the shipped policy is the after-state scorer, 'catur train'), on one window "
        "of a trace, evaluating it periodically on a later window against every primitive and "
        "greedy, and write a model directory that 'catur evaluate --model' and 'catur serve' load.",
        epilog=EPILOG,
    )
    p.add_argument("trace", nargs="?", help="trace file (any supported format)")
    p.add_argument("--synthetic", metavar="NAME", help="built-in synthetic workload (default: 'default' when no trace)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write (replaced if it exists)")
    option = functools.partial(config_option, p, TrainConfig)
    option("algo", choices=ALGORITHMS, help="MaskablePPO (default) or DQN")
    option("train_days", metavar="FIRST:LAST", help="window episodes come from (default %(default)s)")
    option("eval_days", metavar="FIRST:LAST", help="validation window that picks the checkpoint (default %(default)s); keep the test window apart")
    add_cluster_arguments(p, TrainConfig)
    option("timesteps", type=int, help="environment steps (default %(default)s)")
    option("seed", type=int, help="seed of everything random: the synthetic workload, the network's initial weights, "
           "episode sampling, imitation and the evaluation hosts (default %(default)s); compare runs over several seeds")
    option("n_envs", "--envs", type=int, metavar="N", help="parallel environments (processes; default %(default)s)")
    option("shaping", "--no-shaping", action="store_false", help="train on the raw reward (ablation)")
    option("gamma", type=float, help="discount (default 0.9 PPO, 0.1 DQN)")
    option("learning_rate", type=float, metavar="LR",
           help="step size of the RL optimiser (Adam, PPO and DQN; default %(default)s): larger moves faster but less "
           "stably; the warm-start imitation uses its own 1e-3")
    option("warm_start", type=int, metavar="N", help="imitate the teacher on N observations first (0 = off; default %(default)s)")
    option("teacher", choices=TEACHERS,
           help="whom the warm start imitates: greedy (default) or the k-step oracle, which knows the "
           "host's next K arrivals of the training window (it only teaches; the model never sees the future)")
    option("teacher_k", type=int, metavar="K", help="the oracle teacher's look-ahead in arrivals (default %(default)s)")
    option("eval_every", type=int, metavar="STEPS", help="evaluate and checkpoint every STEPS (default %(default)s)")
    option("eval_hosts", type=int, metavar="N", help="hosts sampled for periodic evaluation (default %(default)s)")
    option("tensorboard", metavar="DIR", help="write TensorBoard logs here")
    option("init_from", metavar="DIR", help="fine-tune: start from this model's weights (its hidden sizes and activation) instead of a fresh network")
    option("allow_worse", action="store_true",
           help="write the model even if it loses to greedy on the validation window (exit 0; its manifest "
           "records that it lost, and 'catur models promote' refuses it without --force)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_walk_forward_command(sub)
    add_retrain_command(sub)


EPILOG_SCORER = """examples (`catur train-scorer` is the same command, its older name):
  catur train my-fleet.parquet --out models/mine                 # your traffic, the default split
  catur train collected/ --train-days 1:20 --validate-days 21:24 --out models/mine
  catur train a.csv.gz b.csv.gz --train-days a.csv.gz=1:12 --validate-days a.csv.gz=13:15 --out m
  catur train VM_data_C1.csv VM_data_C2.csv VM_data_C3.csv --start-state PM_res.csv --out m
      (sequences without time, split by file: C1 trains, C2 validates, C3 is the test)
  catur train my-fleet.parquet --init-from default --out models/mine   # start from the shipped scorer
  catur train --recipe public --traces ../shared/traces --out models/scorer   # the shipped default's recipe
  catur train --out models/scorer-synthetic                      # synthetic drift workloads only
  catur evaluate my-fleet.parquet --days 25:31 --model models/mine --baseline greedy   # then test it

What it reads: anything 'catur evaluate' reads (any trace format, a collected directory, a
partitioned directory, a canonical file), on the cluster --cluster names (a shipped mix or a
cluster file; without it each scenario draws one of --clusters), or on the real fragmented
servers of --start-state. Each trace is a source, split by days into a training window, a
later validation window and the test part that is never read:

  --train-days A:B --validate-days C:D     the same windows for every trace
  --train-days TRACE=A:B ...               windows of one trace (repeat the option)
  (neither)                                 chronological: the last quarter of the days is the
                                            test part, the eighth before it validates, the
                                            rest trains (31 days: 1-20, 21-24, test 25-31)

A trace shorter than 3 days (the CC0 request sequences have no clock at all) is split by
file: of three or more such files the last is the test and the one before it validates; of
two, the second validates; --validate-on FILE and --test-on FILE choose. The log names the
test part of every source: evaluate on it afterwards, never train or select on it.

What it trains: an after-state scorer (catur.afterstate). For each VM it builds the
candidates -- the four primitives, every single node, one node set per socket -- and scores
each by what the host would look like after it (the VM's own defect, the COR rise felt by
the VMs already on those nodes, the overload and imbalance left behind, how full the chosen
nodes are), with one set of weights for all candidates and host sizes.

How: evolution strategies on the exact objective (the replay's average lifetime defect),
starting from resident-greedy (or --init-from), on randomised scenarios of every source:
vCPU overcommit --overcommit (half the draws at its low end), target utilisation
--target-range, clusters --clusters. Selection: only on the validation windows (each on
both clusters at overcommit 1.0 and 1.02, or on the fixed cluster at both), by the mean
ratio to greedy plus how far the worst set is above greedy.

Recipes (--recipe): 'public' is the shipped default's: Huawei-East-1 days 4-12 / 13-15 and
Azure 2017 dev day 1 / 2 when --traces has them, and the synthetic temporal-shift and
adversarial workloads (seeds 1 / 2). 'public-fragmented' adds the CC0 sequences on the real
fragmented servers (numa-topology-c0/: C1 trains, C2 validates, C3 is the test).

Bad windows are refused before any work (exit 2): an empty or overlapping window, one
outside the trace, validation before training, a validation window with VMs on fewer than
2 hosts. Never worse than greedy: the kept weights are compared with greedy on every
validation host (95% paired bootstrap). If they lose, nothing is written, the last line
says by how much, and the exit status is 3 (--allow-worse writes anyway; 'catur models
promote' then refuses it without --force).
"""


def add_scorer_command(sub: argparse._SubParsersAction) -> None:
    """Register ``catur train-scorer`` on ``sub``; its options read their defaults from
    :class:`~catur.training.afterstate.ScorerTrainConfig`."""
    from catur.training.afterstate import ScorerTrainConfig
    from catur.training.sources import RECIPES

    p = add_command(
        sub, "train", cmd_train_scorer, aliases=["train-scorer"],
        help="train the after-state scorer on your traces, by evolution strategies or PPO (--algo es|ppo)",
        description="Train the after-state candidate scorer on the exact objective over randomised "
        "scenarios of your traces (or a named recipe), select it on later validation windows, "
        "and write a model directory that 'catur evaluate --model' and 'catur serve --model' load.",
        epilog=EPILOG_SCORER,
    )
    p.add_argument("traces_given", nargs="*", metavar="TRACE", help="trace files or directories to learn from (any format "
                   "'catur evaluate' reads)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write (replaced if it exists)")
    data = p.add_argument_group("data and windows")
    data.add_argument("--train-days", action="append", metavar="[TRACE=]A:B", help="training days of every trace, or of one "
                      "(repeat); with --validate-days (default: the chronological split above)")
    data.add_argument("--validate-days", action="append", metavar="[TRACE=]C:D", help="validation days, after the training "
                      "days (default: the chronological split)")
    data.add_argument("--validate-on", action="append", metavar="FILE", help="traces without time: the file to validate on")
    data.add_argument("--test-on", action="append", metavar="FILE", help="traces without time: the file(s) kept for the test "
                      "(named in the log and the manifest, never read)")
    data.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    data.add_argument("--start-state", metavar="FILE", help="real fragmented hosts: free CPU and RAM per NUMA node of each server "
                      "(PM_res.csv); its servers are the cluster of every scenario")
    data.add_argument("--cluster", metavar="SPEC", help="a fixed cluster for every scenario: a shipped mix or a YAML/TOML file "
                      "(default: each scenario draws one of --clusters)")
    data.add_argument("--recipe", choices=sorted(RECIPES), help="a named recipe instead of traces (see below); "
                      "--traces DIR alone means --recipe public")
    data.add_argument("--traces", metavar="DIR", help="with --recipe: the folder of the public traces "
                      "(huawei-east-1-lt.csv.gz, azure2017-dev-events.csv.gz, numa-topology-c0/); without it, "
                      "only the recipe's synthetic workloads")
    p.add_argument("--algo", type=_scorer_algorithm, default="es", metavar="{es,ppo}",
                   help="es: evolution strategies on the exact objective (default, the shipped default's trainer); "
                   "ppo: MaskablePPO over the candidates, warm-started at the shipped default (or --init-from)")
    add_scorer_training_options(p)
    add_ppo_scorer_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or log")
    for flag in PRIMITIVE_ONLY:  # before this release `catur train` was the primitive-action trainer
        p.add_argument(flag, nargs="?", action=_MovedToPrimitives, help=argparse.SUPPRESS)


#: Options only the primitive-action trainer has: given to ``catur train``, they say where it went.
PRIMITIVE_ONLY = ("--synthetic", "--eval-days", "--teacher", "--teacher-k", "--warm-start", "--eval-hosts", "--gamma",
                  "--no-shaping", "--tensorboard")


class _MovedToPrimitives(argparse.Action):
    """A primitive-action trainer's option given to ``catur train``: one error that says where it went."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is an option of the primitive-action trainer, which is now "
                     f"'catur train-primitives' ('catur train' trains the after-state scorer)")


def _scorer_algorithm(text: str) -> str:
    if text in SCORER_ALGORITHMS:
        return text
    if text == "dqn":
        raise argparse.ArgumentTypeError("dqn trains the primitive-action model: use 'catur train-primitives --algo dqn'")
    raise argparse.ArgumentTypeError(f"{text!r}: choose es or ppo (the primitive-action trainer is 'catur train-primitives')")


#: Options only ``--algo ppo`` reads: (flag, dest, PPOScorerConfig field); given a value other
#: than their default with ``--algo es``, they are refused rather than silently ignored.
PPO_ONLY = (("--timesteps", "timesteps", "timesteps"), ("--envs", "envs", "envs"), ("--n-steps", "n_steps", "n_steps"),
            ("--shaping-weight", "shaping_weight", "shaping_weight"), ("--checkpoints", "checkpoints", "checkpoints"),
            ("--ppo-learning-rate", "ppo_learning_rate", "learning_rate"), ("--ppo-exclude-start", "keep_start", "keep_start"))

#: What ``train-scorer --algo`` (and ``train --algo``) trains the after-state scorer with.
SCORER_ALGORITHMS = ("es", "ppo")


def add_ppo_scorer_options(p: argparse.ArgumentParser) -> None:
    """The options of ``--algo ppo`` (the scenario, window, seed, jobs and gate options are shared
    with evolution strategies); defaults from :class:`~catur.training.ppo_scorer.PPOScorerConfig`."""
    from catur.training.ppo_scorer import PPOScorerConfig

    g = p.add_argument_group("PPO over the candidates (--algo ppo; see docs/howto/train-on-your-traffic.md)")
    option = functools.partial(config_option, g, PPOScorerConfig)
    option("timesteps", type=int, help="decisions sampled in all (default %(default)s)")
    option("envs", type=int, metavar="N", help="hosts stepped together in one vectorised env batch (default %(default)s)")
    option("n_steps", type=int, metavar="N", help="decisions per host per rollout (default %(default)s)")
    option("shaping_weight", type=float, metavar="W", help="weight of the load-aware term (the chosen candidate's "
           "immediate defect above the best one's) next to the exact objective (default %(default)s)")
    option("checkpoints", type=int, metavar="N", help="validations during training, besides step 0; the best on "
           "validation is kept (default %(default)s)")
    g.add_argument("--ppo-exclude-start", dest="keep_start", action="store_false",
                   help="select among PPO's own checkpoints only, not step 0 (the warm start): to measure what PPO "
                   "learned even when it is worse than its start (default: step 0 competes, so a run that does not "
                   "improve keeps its start)")
    # Its own name: --learning-rate is evolution strategies' step (another scale entirely).
    g.add_argument("--ppo-learning-rate", dest="ppo_learning_rate", type=float, metavar="LR",
                   default=PPOScorerConfig.learning_rate, help="Adam step size of PPO (default %(default)s)")


def add_scorer_training_options(p: argparse.ArgumentParser) -> None:
    """The evolution-strategy options of ``train-scorer`` (shared with ``walk-forward``)."""
    from catur.training.afterstate import ScorerTrainConfig

    option = functools.partial(config_option, p, ScorerTrainConfig)
    option("generations", type=int, help="evolution-strategy generations (default %(default)s)")
    option("pairs", type=int, help="antithetic pairs per generation: 2 x PAIRS replays each (default %(default)s)")
    option("hosts_per_replay", type=int, metavar="N", help="hosts sampled for each generation's replays (default %(default)s)")
    option("scenarios_per_source", type=int, metavar="N", help="random scenario draws per source (default %(default)s)")
    option("noise", type=float, help="perturbation size, in units of each weight's scale (default %(default)s)")
    option("learning_rate", type=float, metavar="LR", help="step size (default %(default)s)")
    option("eval_every", type=int, metavar="G", help="validate every G generations (default %(default)s)")
    option("resident_weight", type=float, metavar="LAMBDA", help="the warm start's resident weight (default %(default)s)")
    option("init_from", metavar="DIR", help="continue from this one-layer scorer's weights ('default' = the shipped one) "
           "instead of the resident-greedy warm start; later weights replace the start only if they are clearly better "
           "than it on some source's validation hosts and clearly worse on none (95%% paired bootstrap)")
    p.add_argument("--keep-any-gain", dest="continuation_needs_clear_gain", action="store_false",
                   help="with --init-from: let later weights replace the start when not clearly worse on any source, "
                   "even if their gain is inside the noise (on Huawei-East-1 such a gain lost 5.9%% to the start on "
                   "the test days)")
    p.add_argument("--train-features", type=_feature_list, default=None, metavar="LIST",
                   help="only these weights move, comma-separated feature names; 'few-nodes' stands for every "
                   "*_on_few_nodes correction, e.g. --init-from default --train-features few-nodes --clusters mixed "
                   "(default: every weight)")
    p.add_argument("--overcommit", type=_float_range, default=ScorerTrainConfig.overcommit, metavar="LOW:HIGH",
                   help="vCPU overcommit drawn per scenario (default 1.0:1.05)")
    p.add_argument("--target-range", dest="target_utilization", type=_float_range, default=ScorerTrainConfig.target_utilization,
                   metavar="LOW:HIGH", help="target utilisation drawn per scenario (default 0.85:0.97)")
    p.add_argument("--clusters", type=lambda v: tuple(c.strip() for c in v.split(",") if c.strip()),
                   default=ScorerTrainConfig.clusters, help="cluster mixes drawn per scenario (default mixed,amd-2s-nps4)")
    option("hidden", type=int, metavar="N", help="a hidden layer of N ReLU units (N >= 3) instead of the one-layer scorer "
           "(default %(default)s: one layer). It can read the context features (host_cpu_load, vm_size), which a one-layer "
           "scorer cannot use, and starts from the one-layer scorer (--init-from, else resident-greedy) so that it decides "
           "as that one does at generation 0: two units carry +w and -w, the other N-2 start with output weight 0. "
           "Costs about N times the parameters, so more generations; try 6-8. With --algo ppo: N ReLU units in the actor "
           "beside its linear part")
    p.add_argument("--features", type=_feature_list, default=None, metavar="LIST",
                   help="with --hidden: the comma-separated features the network reads (default: the --init-from model's, "
                   "else every base feature; the shipped default's 12 include host_cpu_load and vm_size); "
                   "'few-nodes' stands for every *_on_few_nodes feature")
    option("balanced", action="store_true", help="each generation replays one draw of every source and averages the "
           "perturbations' ranks over sources, so no source's gain is bought with another's loss (one draw otherwise)")
    option("seed", type=int, help="seed of the scenario draws, host samples and perturbations (default %(default)s)")
    option("jobs", type=int, help="worker processes (default %(default)s)")
    option("allow_worse", action="store_true", help="write the scorer even if it loses to greedy on validation (exit 0)")


def _feature_list(text: str) -> tuple[str, ...]:
    from catur.afterstate import FEATURES
    from catur.training.afterstate import FEW_NODE_GROUP, expand_feature_names

    names = expand_feature_names([name.strip() for name in text.split(",") if name.strip()])
    unknown = [name for name in names if name not in FEATURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown features {unknown or text!r}; known: {', '.join(FEATURES)}, or {FEW_NODE_GROUP}")
    return names


def _float_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH (two numbers), got {text!r}") from None
    if not low <= high:
        raise argparse.ArgumentTypeError(f"LOW must be <= HIGH, got {text!r}")
    return low, high


def scorer_sources(args: argparse.Namespace, log) -> list:
    """The sources ``catur train-scorer``'s arguments name (traces, windows, or a recipe)."""
    from catur.training.sources import recipe_sources, sources_from_traces

    traces = list(args.traces_given or [])
    windows = any((args.train_days, args.validate_days, args.validate_on, args.test_on, args.start_state, args.cluster))
    if traces and (args.recipe or args.traces):
        raise CaturError("give trace files or --recipe/--traces, not both")
    if not traces and not args.validate_on:
        if windows:
            raise CaturError("--train-days, --validate-days, --validate-on, --test-on, --start-state and --cluster apply to "
                             "trace files: name the traces to learn from")
        sources = recipe_sources(args.recipe or "public", args.traces)
        if args.traces is not None and not any(s.name in ("huawei", "azure", "cc0") for s in sources):
            raise CaturError(f"--traces {args.traces}: holds neither huawei-east-1-lt.csv.gz nor azure2017-dev-events.csv.gz")
        log(f"recipe {args.recipe or 'public'}: " + "; ".join(
            f"{s.name} train {s.train[0].label}, validate {s.validate.label}, test {s.test}" for s in sources))
        return sources
    log("sources (the test parts are never read):")
    return sources_from_traces(traces, train_days=args.train_days, validate_days=args.validate_days,
                               validate_on=args.validate_on, test_on=args.test_on, fmt=args.format,
                               start_state=args.start_state, cluster=args.cluster, log=log)


def cmd_train_scorer(args: argparse.Namespace) -> int:
    """``catur train-scorer``: train an after-state scorer with evolution strategies (or PPO) and
    write it if it does not lose to greedy on validation (exit 3 otherwise)."""
    from catur.training.afterstate import ScorerTrainConfig, train_scorer

    config = config_from_args(ScorerTrainConfig, args)
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.algo == "ppo":
        return _train_ppo_scorer(args, config, log)
    from catur.training.ppo_scorer import PPOScorerConfig

    ppo_only = [flag for flag, dest, name in PPO_ONLY if getattr(args, dest) != field_default(PPOScorerConfig, name)]
    if ppo_only:  # before PPO trained the scorer, --timesteps was the primitive trainer's option
        raise CaturError(f"{', '.join(ppo_only)} appl{'ies' if len(ppo_only) == 1 else 'y'} to --algo ppo; evolution "
                         "strategies (--algo es, the default) take --generations, --pairs and --hosts-per-replay")
    sources = scorer_sources(args, log)
    result = train_scorer(sources, config, args.out, progress=not args.quiet, log=log)  # LosesToGreedy: exit 3
    from catur.verdict import Comparison

    print(f"scorer {result.out}: trained in {result.train_seconds:.0f} s; "
          + ("weights " + ", ".join(f"{k} {v:+.4g}" for k, v in result.weights.items() if v) if result.weights
             else f"a hidden layer of {config.hidden} units ('catur models show {result.out}' lists its layers)"))
    for key in ("greedy", "best_primitive"):
        print(f"validation: {Comparison.from_dict(result.gate['versus'][key]).describe('scorer')}")
    return 0


def _train_ppo_scorer(args: argparse.Namespace, scenarios, log) -> int:
    """``train-scorer --algo ppo``: the same sources, windows and gate, trained by MaskablePPO."""
    from catur.training.ppo_scorer import PPOScorerConfig, train_ppo_scorer
    from catur.verdict import Comparison

    config = PPOScorerConfig(
        # --hidden shapes PPO's actor; the scenario config only draws the windows.
        scenarios=dataclasses.replace(scenarios, hidden=0, features=None), timesteps=args.timesteps, envs=args.envs,
        n_steps=args.n_steps, hidden=args.hidden,
        shaping_weight=args.shaping_weight, checkpoints=args.checkpoints, learning_rate=args.ppo_learning_rate,
        init_from=args.init_from or "default", keep_start=args.keep_start,
    )
    sources = scorer_sources(args, log)
    result = train_ppo_scorer(sources, config, args.out, progress=not args.quiet, log=log)  # LosesToGreedy: exit 3
    print(f"scorer {result.out}: PPO, {result.timesteps:,} decisions in {result.train_seconds:.0f} s; kept step "
          f"{result.best_step:,} (the best on validation)")
    for key in ("greedy", "best_primitive"):
        print(f"validation: {Comparison.from_dict(result.gate['versus'][key]).describe('scorer')}")
    return 0


EPILOG_WALK = """examples:
  catur walk-forward my-fleet.parquet --out wf/                       # default split, one fold
  catur walk-forward huawei-east-1-lt.csv.gz --train-days 1:12 --validate-days 13:15 --out wf/
      (test = every day after validation: 16-31)
  catur walk-forward my-fleet.parquet --train-days 1:14 --validate-days 15:16 --test-days 17:20 \\
      --folds 3 --step 4 --out wf/                                   # 3 folds, 4 days apart
  catur walk-forward VM_data_C1.csv VM_data_C2.csv VM_data_C3.csv --start-state PM_res.csv --out wf/
      (no clock: C1 trains, C2 validates, C3 is the test)

Each fold trains an after-state scorer on its train window (exactly as 'catur train-scorer'),
selects and gates it on its validation window, then replays it with greedy, resident-greedy,
xen and every other rule on its test window, on each scenario it was validated on (both
clusters at overcommit 1.0 and 1.02, or --cluster / --start-state at both). Nothing of the
test window is read before. A scorer that loses to greedy on validation is not kept: the
fold then reports greedy in its place ('fallback'), which is what would serve.

Output in --out: walk-forward.md (a table per fold: the scorer, greedy and xen, the change
against greedy with its 95% paired bootstrap interval over hosts, the best rule of the cell
in hindsight), walk-forward.json (every number), walk-forward.png, fold-N/model/.
"""


def add_walk_forward_command(sub: argparse._SubParsersAction) -> None:
    """Register ``catur walk-forward`` on ``sub``: its windows, and the training options of
    ``train-scorer``."""
    p = add_command(
        sub, "walk-forward", cmd_walk_forward,
        help="train on early days, select on the next, test on the rest, roll forward: the honest test of a model on your traffic",
        description="Walk-forward evaluation of the after-state scorer on one trace: per fold, train on its "
        "train window, select on its validation window, and test against greedy, xen and every rule on "
        "its test window.",
        epilog=EPILOG_WALK,
    )
    p.add_argument("traces_given", nargs="+", metavar="TRACE", help="one trace with time, or the files of a sequence set")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created; fold models go in DIR/fold-N/model)")
    w = p.add_argument_group("windows")
    w.add_argument("--train-days", metavar="A:B", help="the first fold's training days (default: the chronological split "
                   "of 'catur train-scorer')")
    w.add_argument("--validate-days", metavar="C:D", help="the first fold's validation days")
    w.add_argument("--test-days", metavar="E:F", help="the first fold's test days (default: every later day, or with "
                   "--folds an equal share of them)")
    w.add_argument("--folds", type=int, default=1, help="how many folds (default 1)")
    w.add_argument("--step", type=int, metavar="DAYS", help="days each fold moves forward (default: the test window's length)")
    w.add_argument("--validate-on", action="append", metavar="FILE", help="traces without time: the validation file")
    w.add_argument("--test-on", action="append", metavar="FILE", help="traces without time: the test file")
    w.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    w.add_argument("--start-state", metavar="FILE", help="real fragmented hosts (PM_res.csv): the cluster of every scenario")
    w.add_argument("--cluster", metavar="SPEC", help="a fixed cluster for every scenario (default: mixed and amd-2s-nps4)")
    add_scorer_training_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or log")


def cmd_walk_forward(args: argparse.Namespace) -> int:
    """``catur walk-forward``: plan the folds, train, validate and test each, print the summary."""
    from catur.training.afterstate import ScorerTrainConfig
    from catur.training.walk_forward import plan, summarize, walk_forward

    config = config_from_args(ScorerTrainConfig, args)  # a fold that loses falls back to greedy (unless --allow-worse)
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    source, folds = plan(args.traces_given, train_days=args.train_days, validate_days=args.validate_days, test_days=args.test_days,
                         folds=args.folds, step=args.step, fmt=args.format, start_state=args.start_state, cluster=args.cluster,
                         validate_on=args.validate_on, test_on=args.test_on, log=log)
    results = walk_forward(source, folds, config, args.out, jobs=config.jobs, progress=not args.quiet, log=log)
    s = summarize(results)
    print(f"walk-forward {source.name}: {len(folds)} fold{'s' * (len(folds) != 1)}, {s['cells']} test cells; the trained scorer "
          f"{100 * s['mean_vs_greedy']:+.2f}% vs greedy on average ({s['clearly_better_than_greedy']} cells clearly better, "
          f"{s['clearly_worse_than_greedy']} clearly worse), {100 * s['mean_vs_xen']:+.2f}% vs xen (worse on "
          f"{s['worse_than_xen']}), {100 * s['mean_vs_best_rule']:+.2f}% vs the best rule in hindsight")
    if s["folds_on_greedy_fallback"]:
        print(f"{s['folds_on_greedy_fallback']} fold(s) kept greedy: training lost to it on validation")
    if "mean_vs_start" in s:
        print(f"against its start ({config.init_from}): {100 * s['mean_vs_start']:+.2f}% on average, better on "
              f"{s['better_than_start']} cells, worse on {s['worse_than_start']}")
    print(f"report: {Path(args.out) / 'walk-forward.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``catur train``: train a primitive-action model with PPO or DQN and write it if it does not
    lose to greedy on validation (exit 3 otherwise)."""
    from catur.training.train import train

    if args.trace and args.synthetic:
        raise CaturError("give either a trace file or --synthetic NAME, not both")
    config = config_from_args(TrainConfig, args, workload=args.trace or args.synthetic or "default")
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    result = train(config, args.out, progress=not args.quiet, log=log)  # raises LosesToGreedy (exit 3)
    print(
        f"model {result.model_dir}: {100 * result.final['avg_defect']:.3f}% average defect on the "
        f"evaluation sample; best primitive {min(v for k, v in result.baselines.items() if k != 'greedy') * 100:.3f}%, "
        f"greedy {100 * result.baselines['greedy']:.3f}%; trained in {result.train_seconds:.0f} s"
    )
    from catur.verdict import Comparison

    for key in ("greedy", "best_primitive"):
        print(f"validation: {Comparison.from_dict(result.gate['versus'][key]).describe('model')}")
    if result.gate["loses_to_greedy"]:
        print(f"catur: warning: the model loses to greedy on validation; written because of --allow-worse "
              f"(its manifest says so; 'catur models promote' refuses it without --force)", file=sys.stderr)
    return 0


EPILOG_RETRAIN = """examples:
  catur retrain --registry models/registry --trace collected/            # the last 3 days
  catur retrain --registry models/registry --trace trace.parquet --days 16:18 \\
      --budget-minutes 30 --max-iterations 3 --timesteps 20000
  catur retrain --registry models/registry --trace trace.parquet --max-iterations 0   # check only
  catur retrain --registry models/registry --trace trace.parquet --dry-run --report out/

What it does: replays the recent window (--days) with the registry's current model, every
primitive and greedy, per cluster (the trace's 'cluster' column, else per host topology). If
a primitive or greedy is *clearly* better than the model on some cluster (95% paired
bootstrap interval over that cluster's hosts wholly above 0), or greedy is clearly better on
the whole window, the model has collapsed: it fine-tunes the model on the worst clusters
(greedy imitation from the current weights, then PPO/DQN; an after-state scorer by
--generations of evolution strategies from its weights), validates on all clusters and
repeats within --budget-minutes / --max-iterations. Only a candidate clearly worse than no
primitive and not greedy on any cluster, and not worse than greedy on the whole window (the
rule 'catur train' and 'catur models promote' apply), is added to the registry and promoted;
a running 'catur serve --model REGISTRY' switches to it by itself. Small clusters need no
special care: a few hosts give a wide interval, and only clear differences count. When no
candidate passes but greedy does, greedy itself is added as a rule version and promoted
(--no-fallback-greedy keeps the current model instead). It also reports the drift of the
request mix (PSI and KS of vCPUs, memory and lifetimes against a reference window) and the
uncertainty-gate rate, as early warnings. Report: report.json, report.md and plots in
--report DIR (default REGISTRY/reports/retrain-<time>-<pid>).

Improving a healthy model: when nothing collapsed and the current version is an after-state
scorer (or a rule), the job also trains a candidate from its weights on the days before the
recent window's last --holdout-days (--improve-train-days of training, then one selection
day), and promotes it (status 'improved') only if it is clearly better than the current
model on those held-out days (95% paired bootstrap over hosts) and passes the same gate as
above (no clear loss to a primitive or greedy on any cluster, not worse than greedy on the
whole window). --no-improve skips this. A model that merely ties greedy is thus improved on
the traffic it serves, not left alone until it collapses.

exit codes (for the scheduler):
  0   healthy (no collapse; possibly improved), or a new model was promoted: a fine-tuned
      one, or greedy as a rule version (with --dry-run: would be)
  3   collapse, and nothing passed the gate in the budget (or --max-iterations 0, or
      --no-fallback-greedy): the current model is kept; the report says why
  75  another retrain holds the lock REGISTRY/.retrain.lock (EX_TEMPFAIL): run later
  2   bad input (the message names it)
  1   unexpected error
"""


def add_retrain_command(sub: argparse._SubParsersAction) -> None:
    """Register ``catur retrain`` on ``sub``."""
    p = add_command(
        sub, "retrain", cmd_retrain,
        help="the scheduled job: detect a collapse on recent traffic, fine-tune, promote",
        description="Drift-aware continuous training: check the registry's current model against "
        "every primitive and greedy on each cluster of a recent trace window; after a collapse (a "
        "statistically clear loss), fine-tune, validate on all clusters and promote only a model "
        "that loses clearly nowhere and is not worse than greedy on the whole window.",
        epilog=EPILOG_RETRAIN,
    )
    option = functools.partial(config_option, p, RetrainConfig)
    p.add_argument("--registry", metavar="DIR", help=f"model registry (catur models init; default ${REGISTRY_ENV})")
    option("trace", required=True, metavar="PATH", help="recent traffic: a trace file or a collected directory")
    option("format", help="trace format (default: auto-detect)")
    option("days", metavar="FIRST:LAST", help="the recent window (default: the trace's last 3 days)")
    option("reference_days", metavar="FIRST:LAST",
           help="drift reference (default: the model's training window if it was trained on this trace, else every day before --days)")
    option("group_by", choices=GROUP_BY,
           help="what a 'cluster' is: the trace's cluster column, the host topology, or everything (default auto: cluster column if any, else topology)")
    add_cluster_arguments(p, RetrainConfig)
    option("budget_minutes", type=float, help="stop fine-tuning when another iteration would pass this (default %(default)s)")
    option("max_iterations", type=int, help="fine-tune/validate rounds at most (default %(default)s; 0 = check only)")
    option("timesteps", type=int, help="RL steps per iteration (default %(default)s)")
    option("warm_start", type=int, metavar="N", help="greedy observations imitated per iteration, from the current weights (default %(default)s; 0 = RL only)")
    option("generations", type=int, metavar="G", help="when the current version is an after-state scorer (the shipped default): "
           "evolution-strategy generations per iteration, from its weights, instead of RL steps (default %(default)s)")
    option("eval_hosts", type=int, metavar="N", help="hosts in the fine-tune's checkpoint evaluation (default %(default)s)")
    option("worst", type=int, metavar="N", help="fine-tune on the N worst losing clusters only (default: all that lose)")
    option("gate_samples", type=int, metavar="N", help="observations per window for the gate rate (default %(default)s; 0 = skip); a candidate's gate is fitted on twice as many (at least 500)")
    option("envs", type=int, help="training environments (processes; default %(default)s)")
    option("jobs", type=int, help="replay worker processes (default: all CPUs)")
    option("seed", type=int, help="seed of the fine-tuning (iteration i uses seed + i) and of the replays (default %(default)s)")
    option("report", metavar="DIR", help="write report.json, report.md and plots here")
    option("dry_run", action="store_true", help="do everything but add or promote a model")
    imp = p.add_argument_group("improving a healthy model (see above)")
    config_option(imp, RetrainConfig, "improve", "--no-improve", action="store_false",
                  help="on a healthy run, do not train a candidate (check and repair only)")
    config_option(imp, RetrainConfig, "holdout_days", type=int, metavar="N",
                  help="the last N days of the recent window judge the candidate; never trained or selected on (default %(default)s)")
    config_option(imp, RetrainConfig, "improve_train_days", type=int, metavar="N",
                  help="days the candidate trains on, before its selection day (default %(default)s)")
    config_option(imp, RetrainConfig, "improve_algo", "--algo", choices=IMPROVE_ALGORITHMS,
                  help="how the candidate is trained: es (evolution strategies, default) or ppo (MaskablePPO over the "
                  "candidates); either starts from the current scorer, or from the shipped default when a rule serves")
    config_option(imp, RetrainConfig, "improve_generations", type=int, metavar="G",
                  help="--algo es: evolution-strategy generations of the candidate, from the current scorer's weights (default %(default)s)")
    config_option(imp, RetrainConfig, "improve_timesteps", type=int, metavar="N",
                  help="--algo ppo: decisions PPO samples for the candidate (default %(default)s)")
    option("fallback_greedy", "--no-fallback-greedy", action="store_false",
           help="after a collapse no candidate fixed, keep the current model (exit 3) instead of promoting "
           "greedy itself as a rule version")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("outcome metrics (for alerts; see docs/howto/retraining.md)")
    g.add_argument("--metrics-textfile", metavar="PATH.prom",
                   help="write the outcome (catur_retrain_* metrics) to this file for node_exporter's textfile collector, atomically")
    g.add_argument("--pushgateway", metavar="URL", help="push the outcome to this Prometheus Pushgateway (job catur-retrain, grouped by registry)")


def cmd_retrain(args: argparse.Namespace) -> int:
    """``catur retrain``: the scheduled, drift-aware retraining job; returns its documented exit
    code (0, 3, 75, 2)."""
    from catur.registry import registry_dir
    from catur.training.retrain import EXIT_LOCKED, LockHeld, run_retrain

    if args.metrics_textfile:  # checked now, not after an hour of fine-tuning
        from catur.training.retrain_metrics import check_textfile_path

        check_textfile_path(args.metrics_textfile)
    config = config_from_args(RetrainConfig, args, registry=registry_dir(args.registry))
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(f"retrain: {msg}", file=sys.stderr, flush=True))
    try:
        outcome = run_retrain(config, log=log, progress=not args.quiet)
    except LockHeld as exc:
        print(f"catur: retrain: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    print(f"{outcome.status}: {outcome.reason}")
    print(f"report: {outcome.report_dir}")
    if args.metrics_textfile or args.pushgateway:
        from catur.training.retrain_metrics import outcome_registry, push, write_textfile

        metrics = outcome_registry(outcome)
        try:  # the run itself is done: a metrics failure is reported, the exit status kept
            if args.metrics_textfile:
                write_textfile(metrics, args.metrics_textfile)
            if args.pushgateway:
                push(metrics, args.pushgateway, config.registry)
        except CaturError as exc:
            print(f"catur: warning: {exc}", file=sys.stderr)
    return outcome.exit_code
