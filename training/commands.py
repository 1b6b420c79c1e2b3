"""``catur train``: learn a placement policy from a trace (or synthetic workload) window."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  catur train --synthetic default --out models/mine                 # minutes on 2 cores
  catur train ../shared/traces/huawei-east-1-lt.csv.gz --train-days 1:12 --eval-days 13:15 \\
      --cpu-overcommit 1.02 --target-utilization 0.95 --timesteps 100000 --out models/huawei
  catur train trace.parquet --algo dqn --out models/dqn              # the paper's algorithm
  catur evaluate trace.parquet --model models/huawei --shield-depth 1

The output directory holds weights.npz (plain arrays, no pickle) and manifest.json
(algorithm, spaces, windows, topologies, versions, evaluation history, gate statistics).
TensorBoard logs go to --tensorboard DIR (view with: tensorboard --logdir DIR).
"""


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a placement policy (PPO or DQN over the four primitives)",
        description="Train a policy that picks one of the four primitives per VM, on one window "
        "of a trace, evaluating it periodically on a later window against every primitive and "
        "greedy, and write a model directory that 'catur evaluate --model' and 'catur serve' load.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("trace", nargs="?", help="trace file (any supported format)")
    p.add_argument("--synthetic", metavar="NAME", help="built-in synthetic workload (default: 'default' when no trace)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write (replaced if it exists)")
    p.add_argument("--algo", choices=("ppo", "dqn"), default="ppo", help="MaskablePPO (default) or DQN")
    p.add_argument("--train-days", default="1:12", metavar="FIRST:LAST", help="window episodes come from (default 1:12)")
    p.add_argument("--eval-days", default="13:15", metavar="FIRST:LAST", help="validation window that picks the checkpoint (default 13:15); keep the test window apart")
    p.add_argument("--cluster", default="mixed", help="cluster mix or file (as in catur evaluate)")
    p.add_argument("--cpu-overcommit", type=float, help="vCPUs admitted per host core")
    p.add_argument("--target-utilization", type=float, default=0.9, help="cluster sizing target (default 0.9)")
    p.add_argument("--timesteps", type=int, default=50_000, help="environment steps (default 50000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--envs", type=int, default=2, help="parallel environments (processes; default 2)")
    p.add_argument("--no-shaping", action="store_true", help="train on the raw reward (ablation)")
    p.add_argument("--gamma", type=float, help="discount (default 0.9 PPO, 0.1 DQN)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--warm-start", type=int, default=20_000, metavar="N", help="imitate greedy on N observations first (0 = off; default 20000)")
    p.add_argument("--eval-every", type=int, default=10_000, metavar="STEPS", help="evaluate and checkpoint every STEPS (default 10000)")
    p.add_argument("--eval-hosts", type=int, default=8, metavar="N", help="hosts sampled for periodic evaluation (default 8)")
    p.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard logs here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from catur.errors import CaturError
    from catur.training.train import TrainConfig, train

    if args.trace and args.synthetic:
        raise CaturError("give either a trace file or --synthetic NAME, not both")
    config = TrainConfig(
        algo=args.algo,
        workload=args.trace or args.synthetic or "default",
        cluster=args.cluster,
        train_days=args.train_days,
        eval_days=args.eval_days,
        target_utilization=args.target_utilization,
        cpu_overcommit=args.cpu_overcommit,
        timesteps=args.timesteps,
        seed=args.seed,
        n_envs=args.envs,
        shaping=not args.no_shaping,
        gamma=args.gamma,
        learning_rate=args.learning_rate,
        warm_start=args.warm_start,
        eval_every=args.eval_every,
        eval_hosts=args.eval_hosts,
        tensorboard=args.tensorboard,
    )
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    result = train(config, args.out, progress=not args.quiet, log=log)
    print(
        f"model {result.model_dir}: {100 * result.final['avg_defect']:.3f}% average defect on the "
        f"evaluation sample; best primitive {min(v for k, v in result.baselines.items() if k != 'greedy') * 100:.3f}%, "
        f"greedy {100 * result.baselines['greedy']:.3f}%; trained in {result.train_seconds:.0f} s"
    )
    return 0
