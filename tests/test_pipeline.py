"""The evaluation entry point (:mod:`catur.sim.pipeline`), the workload spec
(:mod:`catur.sim.workload`) and the CLI option groups whose defaults come from the config
dataclasses (:mod:`catur.cli.options`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _service_support import random_trace

from catur.cli import build_parser
from catur.cli.options import config_from_args, field_default
from catur.errors import CaturError
from catur.sim.admission import parse_days
from catur.sim.evaluate import evaluate_policies
from catur.sim.pipeline import EvaluateOptions, ExternalPolicy, evaluate, prepare
from catur.sim.workload import Workload
from catur.training.retrain import RetrainConfig
from catur.training.train import TrainConfig


@pytest.fixture(scope="module")
def workload():
    return Workload(random_trace(5, n=400, days=3.0), cluster="mixed", days="2:3", target_utilization=0.95, seed=3)


def test_workload_reads_names_and_checks(tmp_path):
    assert Workload("default").is_synthetic and Workload("default").label == "synthetic:default"
    assert not Workload("default", from_scenario=False).is_synthetic  # a file called 'default'
    assert Workload(str(tmp_path / "t.csv")).label == "t.csv"
    with pytest.raises(CaturError, match=r"target utilization must be in \[0, 1\], got 1.5"):
        Workload("default", target_utilization=1.5)
    with pytest.raises(CaturError, match="neither a trace file nor a synthetic scenario"):
        Workload(str(tmp_path / "missing.csv")).read()
    assert not Workload(str(tmp_path)).streamed  # an empty directory is not a partitioned trace


def test_evaluate_equals_the_engine_on_the_prepared_scenario(workload):
    """The entry point adds no number of its own: the engine's results on the same admitted
    hosts, and facts that say what was replayed."""
    evaluation = evaluate(workload, ["xen", "greedy", "xen"], EvaluateOptions(jobs=1, progress=False))
    prepared = prepare(workload)
    direct = evaluate_policies(prepared.scenario.streams, ["xen", "greedy"], jobs=1, seed=workload.seed)
    assert list(evaluation.results) == ["xen", "greedy"]
    for name in direct:
        assert evaluation.results[name].summary == direct[name].summary
        np.testing.assert_array_equal(evaluation.results[name].rows, direct[name].rows)
    facts = evaluation.scenario
    assert facts["days"] == "2:3" and facts["seed"] == 3 and facts["target_utilization"] == 0.95
    assert facts["window_s"] == list(parse_days("2:3", workload.source))
    assert facts["vms_in_trace"] == 400 and facts["oracle_sample"] is None and facts["wall_s"] >= 0
    assert evaluation.origin_s == parse_days(None, workload.source)[0] and evaluation.trace is workload.source


def test_external_rows_come_first_on_the_same_hosts(workload):
    seen = []

    def elsewhere(prepared, progress):
        seen.append(len(prepared.scenario.streams))
        result = evaluate_policies(prepared.scenario.streams, ["xen"], jobs=1, seed=prepared.workload.seed)["xen"]
        progress(1)
        return dataclasses.replace(result, name="remote")

    evaluation = evaluate(workload, ["xen"], EvaluateOptions(jobs=1, progress=False),
                          external=[ExternalPolicy("remote", elsewhere)], facts={"service": {"policy": "xen"}})
    assert list(evaluation.results) == ["remote", "xen"] and seen and seen[0] >= 1
    assert evaluation.results["remote"].summary == evaluation.results["xen"].summary
    assert evaluation.scenario["service"] == {"policy": "xen"}


def test_options_are_checked():
    with pytest.raises(CaturError, match="--jobs must be >= 1, got 0"):
        EvaluateOptions(jobs=0)
    with pytest.raises(CaturError, match="--ray-address auto needs --engine ray"):
        EvaluateOptions(ray_address="auto")
    with pytest.raises(CaturError, match="--oracle-hosts must be >= 0"):
        EvaluateOptions(oracle_hosts=-1)


def test_unknown_policy_fails_before_any_work(workload):
    with pytest.raises(CaturError, match="unknown policy 'nope'"):
        evaluate(workload, ["xen", "nope"], EvaluateOptions(jobs=1, progress=False))


# --- option defaults come from the dataclasses, once ------------------------------------------


def test_train_defaults_are_train_configs():
    args = build_parser().parse_args(["train-primitives", "--out", "m"])
    assert config_from_args(TrainConfig, args, workload="default") == TrainConfig()
    args = build_parser().parse_args(["train-primitives", "--out", "m", "--envs", "3", "--no-shaping", "--algo", "dqn"])
    config = config_from_args(TrainConfig, args, workload="default")
    assert (config.n_envs, config.shaping, config.algo) == (3, False, "dqn")


def test_retrain_and_evaluate_defaults_are_their_configs():
    args = build_parser().parse_args(["retrain", "--trace", "t.csv"])
    assert config_from_args(RetrainConfig, args, registry="r") == RetrainConfig(registry="r", trace="t.csv")
    args = build_parser().parse_args(["evaluate", "--synthetic", "default"])
    assert config_from_args(Workload, args, source="default") == Workload("default")
    assert config_from_args(EvaluateOptions, args) == EvaluateOptions()
    for name in ("target_utilization", "cpu_overcommit"):  # one declaration, three configs
        assert field_default(TrainConfig, name) == field_default(RetrainConfig, name) == field_default(Workload, name)
    # A workload's cluster left out is the default mix (or, with a start state, inferred).
    assert field_default(TrainConfig, "cluster") == field_default(RetrainConfig, "cluster") == "mixed"
    assert field_default(Workload, "cluster") is None
