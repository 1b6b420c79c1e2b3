"""Learning benchmarks: the trained policy against every baseline, and the paper's ablations.

Each experiment trains with ``catur.training.train`` on the early days of a workload and
evaluates on the later days with the same engine as ``catur evaluate`` (every host, every
counted VM). Results print as markdown tables for the results pages (docs/results/).

    .venv/bin/python benchmarks/bench_learning.py main --trace ../shared/traces/huawei-east-1-lt.csv.gz
    .venv/bin/python benchmarks/bench_learning.py ablations --trace ../shared/traces/huawei-east-1-lt.csv.gz
    .venv/bin/python benchmarks/bench_learning.py node-actions
    .venv/bin/python benchmarks/bench_learning.py main --smoke    # seconds: days 1 / 2 / 3 of a generated trace

``main`` — PPO with shaping and greedy warm start; table of every policy on the test window.
``ablations`` — shaping vs none, PPO vs DQN (same steps and warm start).
``node-actions`` — direct node actions vs primitives, trained from scratch (no warm start) on
the synthetic ``adversarial`` workload before the injection (days 1–14) and tested after it
(days 15–31): the drift the paper uses to show node-action policies collapse.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from catur.decision import DeciderSpec
from catur.placement import GREEDY
from catur.policies import BASELINES, PRIMITIVES
from catur.sim.evaluate import evaluate_policies
from catur.training.train import TrainConfig, train

PAPER_BASELINES = ("xen", "nova-pack", "tetris", "e-pvm")


def scenario(args) -> TrainConfig:
    global TEST_DAYS
    TEST_DAYS = args.test_days
    common = dict(train_days=args.train_days, eval_days=args.val_days, timesteps=args.timesteps,
                  eval_every=args.eval_every or max(args.timesteps // 4, 1000), teacher=args.teacher,
                  teacher_k=args.teacher_k, warm_start=args.warm_start, eval_hosts=args.eval_hosts,
                  allow_worse=True)  # a benchmark measures every model, also one that loses to greedy
    if args.smoke:  # one environment in process (no worker to start) and a small gate fit
        common.update(n_envs=1, gate_samples=200)
    if args.trace:
        return TrainConfig(workload=args.trace, cpu_overcommit=1.02, target_utilization=0.95, **common)
    return TrainConfig(workload="default", **common)


TEST_DAYS = "16:31"  # never seen in training or checkpoint selection


def test_streams(config: TrainConfig, days: str | None = None):
    days = days or TEST_DAYS
    return config.window(days).streams()


def run_training(config: TrainConfig, out: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    train(config, out, progress=False, log=lambda msg: print("   ", msg, flush=True))
    return out, time.perf_counter() - started


def table(results: dict, reference: str | None = None) -> str:
    lines = ["| policy | avg defect | at placement | p99 | ticket ratio | anomalies |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in sorted(results.items(), key=lambda kv: kv[1].summary.avg_defect):
        s = r.summary
        lines.append(
            f"| {name} | {100 * s.avg_defect:.3f}% | {100 * s.defect_at_placement:.3f}% | {100 * s.p99_defect:.2f}% "
            f"| {100 * s.ticket_ratio:.3f}% | {s.anomalies} |"
        )
    return "\n".join(lines)


def versus(results: dict, name: str = "catur") -> str:
    mine = results[name].summary.avg_defect
    best_paper = min(PAPER_BASELINES, key=lambda p: results[p].summary.avg_defect)
    best_primitive = min(PRIMITIVES, key=lambda p: results[p].summary.avg_defect)
    rel = lambda other: 100 * (1 - mine / results[other].summary.avg_defect)
    return (
        f"{name}: {100 * mine:.3f}%; vs best of xen/nova-pack/tetris/e-pvm ({best_paper}): {rel(best_paper):+.1f}% lower; "
        f"vs best primitive ({best_primitive}): {rel(best_primitive):+.1f}% lower; vs greedy: {rel(GREEDY):+.1f}% lower"
    )


def cmd_main(args) -> None:
    config = scenario(args)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "catur"
        _, seconds = run_training(config, out)
        streams = test_streams(config)
        results = evaluate_policies(streams, [*PRIMITIVES, GREEDY, *BASELINES, DeciderSpec(str(out), label="catur")])
        print(f"\ntrained in {seconds:.0f} s ({config.timesteps} steps, warm start {config.warm_start} from {config.teacher});"
              f" test window days {TEST_DAYS}, {len(streams)} hosts")
        print(table(results))
        print(versus(results))


def cmd_ablations(args) -> None:
    config = scenario(args)
    variants = {
        "ppo+shaping": config,
        "ppo, no shaping": replace(config, shaping=False),
        "dqn+shaping": replace(config, algo="dqn"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        specs, seconds = [], {}
        for label, variant in variants.items():
            print(f"training {label}", flush=True)
            out, seconds[label] = run_training(variant, Path(tmp) / label.replace(" ", "_").replace(",", "").replace("+", "_"))
            specs.append(DeciderSpec(str(out), use_gate=False, label=label))
        results = evaluate_policies(test_streams(config), [*PRIMITIVES, GREEDY, *PAPER_BASELINES, *specs])
    print(table(results))
    for label in variants:
        print(f"- {versus(results, label)}; trained in {seconds[label]:.0f} s")


def cmd_node_actions(args) -> None:
    """Primitives vs direct node actions under the adversarial drift, both from scratch."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env

    from catur.observation import candidates, encode
    from catur.sim.env import NodeActionEnv, node_first_policy
    from catur.placement import place

    config = TrainConfig(workload="adversarial", train_days="1:12", eval_days="13:14", timesteps=args.timesteps,
                         eval_every=max(args.timesteps // 4, 1000), warm_start=0, shaping=True, allow_worse=True)
    with tempfile.TemporaryDirectory() as tmp:
        out, seconds = run_training(config, Path(tmp) / "primitives")
        started = time.perf_counter()
        venv = make_vec_env(NodeActionEnv, n_envs=1, seed=config.seed,
                            env_kwargs={"workload": "adversarial", "days": "1:14", "episode_arrivals": config.episode_arrivals})
        node_model = MaskablePPO("MlpPolicy", venv, gamma=config.effective_gamma, learning_rate=config.learning_rate,
                                 n_steps=1024, batch_size=256, n_epochs=5, clip_range=0.1, seed=config.seed,
                                 policy_kwargs={"net_arch": list(config.net_arch)}, device="cpu")
        node_model.learn(total_timesteps=config.timesteps)
        node_seconds = time.perf_counter() - started

        def node_decider(topology, used_vcpus, used_mem, request, rng=None):
            obs = encode(topology, used_vcpus, used_mem, request, candidates(topology, used_vcpus, used_mem, request))
            mask = np.zeros(8, dtype=bool)
            mask[: topology.num_nodes] = True
            action, _ = node_model.predict(obs, deterministic=True, action_masks=mask)
            return place(topology, used_vcpus, used_mem, request, node_first_policy(int(action)))

        streams = test_streams(config, "15:31")
        results = evaluate_policies(streams, [*PRIMITIVES, GREEDY, DeciderSpec(str(out), use_gate=False, label="primitives (ppo)")], jobs=2)
        from catur.sim.evaluate import PolicyResult  # noqa: F401  (same structure below)
        from catur.sim.replay import replay_host
        from catur.metrics import summarize

        rows, lifetime, placed = [], [], []
        for stream in streams:
            r = replay_host(stream.topology, stream.trace, node_decider)
            keep = stream.counted
            lifetime.append(r.lifetime_defect[keep]); placed.append(r.placement_defect[keep])
        from catur.sim.evaluate import PolicyResult as PR

        life, at = np.concatenate(lifetime), np.concatenate(placed)
        results["node actions (ppo)"] = PR("node actions (ppo)", summarize(life, at), np.arange(life.size), life, at)
    print(f"trained: primitives {seconds:.0f} s, node actions {node_seconds:.0f} s, {config.timesteps} steps each, from scratch")
    print(table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("main", "ablations", "node-actions"))
    parser.add_argument("--trace", help="trace file (default: the synthetic default workload)")
    parser.add_argument("--timesteps", type=int, default=40_000)
    parser.add_argument("--out", help="keep the trained model(s) here")
    parser.add_argument("--train-days", default="1:12", help="episodes come from these days (default 1:12)")
    parser.add_argument("--val-days", default="13:15", help="checkpoint selection (default 13:15)")
    parser.add_argument("--test-days", default="16:31", help="the reported window (default 16:31)")
    parser.add_argument("--teacher", choices=("greedy", "oracle"), default="greedy", help="whom the warm start imitates")
    parser.add_argument("--teacher-k", type=int, default=5, help="the oracle teacher's look-ahead (default 5)")
    parser.add_argument("--warm-start", type=int, default=20_000, help="demonstrations imitated first (default 20000)")
    parser.add_argument("--eval-hosts", type=int, default=8, help="validation hosts (default 8)")
    parser.add_argument("--eval-every", type=int, help="validation period in steps (default timesteps / 4)")
    parser.add_argument("--smoke", action="store_true",
                        help="main or ablations in seconds, to check the script works: days 1, 2 and 3 of a generated "
                        "trace (or of --trace) as training, validation and test windows, 512 steps after 256 "
                        "demonstrations, 2 validation hosts; its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        if args.experiment == "node-actions":
            parser.error("--smoke covers main and ablations (node-actions trains on the synthetic adversarial workload)")
        import _smoke

        args.trace = args.trace or _smoke.trace()
        args.train_days, args.val_days, args.test_days = "1:1", "2:2", "3:3"
        args.timesteps, args.warm_start, args.eval_hosts, args.eval_every = 512, 256, 2, 256
    {"main": cmd_main, "ablations": cmd_ablations, "node-actions": cmd_node_actions}[args.experiment](args)


if __name__ == "__main__":
    main()
