"""Huawei-East-1 learning with checkpoint selection on all validation hosts, then the test window.

    .venv/bin/python benchmarks/exp_validate_all_hosts.py EVAL_HOSTS OUT_DIR
    .venv/bin/python benchmarks/exp_validate_all_hosts.py --smoke    # seconds: days 1 / 2 / 3 of a generated trace
"""
import argparse

from catur.training.train import TrainConfig, train
from catur.decision import DeciderSpec
from catur.sim.workload import Workload
from catur.sim.evaluate import evaluate_policies

TRACE = "../shared/traces/huawei-east-1-lt.csv.gz"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_hosts", type=int, nargs="?", help="validation hosts the checkpoint is selected on")
    parser.add_argument("out", nargs="?", help="the model directory to write")
    parser.add_argument("--trace", default=TRACE, help=f"the trace (default {TRACE})")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: days 1, 2 and 3 of a generated trace (unless "
                        "--trace) as training, validation and test windows, 512 steps, 2 validation hosts, the model "
                        "in a scratch folder (unless OUT_DIR); its numbers mean nothing")
    args = parser.parse_args()
    days = dict(train_days="1:12", eval_days="13:15", timesteps=40000, eval_every=10000)
    test_days, small = "16:31", {}
    if args.smoke:
        import _smoke

        args.trace = _smoke.trace() if args.trace == TRACE else args.trace
        args.eval_hosts, args.out = args.eval_hosts or 2, args.out or str(_smoke.scratch() / "model")
        days, test_days = dict(train_days="1:1", eval_days="2:2", timesteps=512, eval_every=256), "3:3"
        small = dict(warm_start=256, n_envs=1, gate_samples=200)
    elif args.eval_hosts is None or args.out is None:
        parser.error("EVAL_HOSTS and OUT_DIR are required (or --smoke)")
    cfg = TrainConfig(workload=args.trace, cpu_overcommit=1.02, target_utilization=0.95,
                      eval_hosts=args.eval_hosts, allow_worse=True, **days, **small)
    train(cfg, args.out, progress=False)
    streams = Workload(cfg.workload, days=test_days, cpu_overcommit=1.02, target_utilization=0.95).streams()
    res = evaluate_policies(streams, [DeciderSpec(args.out, label="catur"), "greedy"])
    for k, v in res.items(): print(k, round(100*v.summary.avg_defect, 3), v.summary.anomalies)
