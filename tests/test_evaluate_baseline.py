"""``catur evaluate --baseline``: every policy against a baseline, host by host."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catur.errors import CaturError
from catur.sim.pipeline import EvaluateOptions, evaluate
from catur.sim.workload import Workload
from catur.verdict import compare, host_sums

WORKLOAD = Workload("adversarial", days="16:16", seed=1, from_scenario=True)


def test_every_policy_is_compared_with_the_baseline_on_the_same_hosts():
    options = EvaluateOptions(jobs=1, baseline="greedy", progress=False)
    evaluation = evaluate(WORKLOAD, ["xen", "core-best-fit"], options)  # greedy added: it is the baseline
    assert set(evaluation.results) == {"xen", "core-best-fit", "greedy"}
    assert set(evaluation.versus) == {"xen", "core-best-fit", "greedy"}
    assert evaluation.versus["greedy"].diff == 0 and not evaluation.versus["greedy"].loses
    streams = evaluation_streams()
    _, vms, xen = host_sums(streams, evaluation.results["xen"].rows, evaluation.results["xen"].lifetime_defect)
    _, _, greedy = host_sums(streams, evaluation.results["greedy"].rows, evaluation.results["greedy"].lifetime_defect)
    assert evaluation.versus["xen"] == compare(vms[vms > 0], xen[vms > 0], greedy[vms > 0], "greedy")
    assert evaluation.versus["xen"].model_defect == pytest.approx(evaluation.results["xen"].summary.avg_defect)
    policies = evaluation.to_json()["policies"]
    assert policies["xen"]["versus_baseline"]["baseline"] == "greedy"
    assert json.loads(json.dumps(evaluation.to_json()))["scenario"]["baseline"] == "greedy"


def evaluation_streams():
    from catur.sim.pipeline import prepare

    return prepare(WORKLOAD).scenario.streams


def test_the_table_shows_the_interval_and_verdict(capsys):
    from catur.cli.main import main

    assert main(["evaluate", "--synthetic", "adversarial", "--seed", "1", "--days", "16:16", "--policies", "xen,core-best-fit",
                 "--baseline", "greedy", "--jobs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "vs greedy [95% CI]" in out and "(baseline)" in out
    row = next(line for line in out.splitlines() if line.startswith("core-best-fit"))
    assert row.split()[-5].endswith("%") and row.split()[-4].startswith("[") and "clearly worse" in row


def test_a_sampled_row_is_compared_on_its_sample_and_bad_baselines_are_named():
    evaluation = evaluate(WORKLOAD, ["greedy"], EvaluateOptions(jobs=1, baseline="greedy", oracle_hosts=2, oracle_k=2, progress=False))
    assert evaluation.versus["oracle"].hosts <= 2
    with pytest.raises(CaturError, match="unknown policy 'gredy'"):
        evaluate(WORKLOAD, ["xen"], EvaluateOptions(jobs=1, baseline="gredy", progress=False))
