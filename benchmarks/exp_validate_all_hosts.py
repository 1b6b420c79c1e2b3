"""Huawei-East-1 learning with checkpoint selection on all validation hosts, then the test window.

    .venv/bin/python benchmarks/exp_validate_all_hosts.py EVAL_HOSTS OUT_DIR
"""
import sys, json
from catur.training.train import TrainConfig, train
from catur.decision import DeciderSpec
from catur.sim.env import Workload
from catur.sim.evaluate import evaluate_policies
if __name__ == "__main__":
    cfg = TrainConfig(workload="../shared/traces/huawei-east-1-lt.csv.gz", cpu_overcommit=1.02, target_utilization=0.95,
                      train_days="1:12", eval_days="13:15", timesteps=40000, eval_every=10000, eval_hosts=int(sys.argv[1]), allow_worse=True)
    train(cfg, sys.argv[2], progress=False)
    streams = Workload(cfg.workload, days="16:31", cpu_overcommit=1.02, target_utilization=0.95).streams()
    res = evaluate_policies(streams, [DeciderSpec(sys.argv[2], label="catur"), "greedy"])
    for k, v in res.items(): print(k, round(100*v.summary.avg_defect, 3), v.summary.anomalies)
