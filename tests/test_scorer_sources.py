"""Where a scorer learns from (catur.training.sources): windows, default splits, split by file,
recipes, and the bad input ``catur train-scorer`` refuses before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from catur.errors import CaturError
from catur.training.sources import (
    MIN_DAYS, Source, check_windows, default_split, parse_window, public_sources, recipe_sources, sources_from_traces,
    trace_days,
)

from _trace_support import DAY, _sequence, _trace


@given(st.integers(MIN_DAYS, 400))
@settings(max_examples=200, deadline=None)
def test_the_default_split_covers_every_day_once_in_order(days):
    train, validate, test = (parse_window(w, "w") for w in default_split(days))
    assert train[0] == 1 and train[1] + 1 == validate[0] and validate[1] + 1 == test[0] and test[1] == days
    assert test[1] - test[0] + 1 == max(1, days // 4)
    assert train[1] >= 1 and validate[1] >= validate[0]


def test_the_default_split_of_the_public_files_shapes():
    assert default_split(31) == ("1:20", "21:24", "25:31")
    assert default_split(4) == ("1:2", "3:3", "4:4")
    with pytest.raises(CaturError, match="a trace of 2 days cannot be split by days"):
        default_split(2)


@pytest.mark.parametrize("train, validate, message", [
    ("5:3", "6:7", "--train-days '5:3': empty window"),
    ("0:3", "6:7", "--train-days '0:3': empty window"),
    ("1:x", "6:7", "--train-days '1:x': expected FIRST:LAST"),
    ("1:10", "8:12", "--train-days 1:10 and --validate-days 8:12 overlap"),
    ("10:12", "1:3", "--validate-days 1:3 comes before --train-days 10:12"),
    ("1:10", "11:40", "--validate-days 11:40 lies outside the trace, which has 31 days"),
    ("1:35", "36:37", "--train-days 1:35 lies outside the trace"),
])
def test_bad_windows_are_named(train, validate, message):
    with pytest.raises(CaturError, match=message.replace("(", r"\(")):
        check_windows("t.csv", 31, train, validate)


def test_windows_leave_the_rest_as_the_test_part():
    assert check_windows("t.csv", 31, "1:12", "13:15") == "16:31"
    assert check_windows("t.csv", 15, "1:12", "13:15") is None


def test_trace_days_counts_from_the_first_arrivals_day():
    df = pd.DataFrame({"arrival_s": [DAY + 5, 3.5 * DAY], "departure_s": [np.nan, np.nan]})
    assert trace_days(df) == 3  # day 1 starts at DAY (rounded down); the last arrival is on day 3
    assert trace_days(df.iloc[:0]) == 0


def test_time_based_traces_split_by_days_per_trace(tmp_path):
    a, b = _trace(tmp_path / "a.csv", 8), _trace(tmp_path / "b.csv", 12)
    logged: list[str] = []
    sources = sources_from_traces([a, b], train_days=["1:4", "b.csv=1:8"], validate_days=["5:6", "b.csv=9:10"], log=logged.append)
    assert [(s.name, s.train_days, s.val_days, s.test_days) for s in sources] == [("a", "1:4", "5:6", "7:8"), ("b", "1:8", "9:10", "11:12")]
    assert any("test 7:8 (never read)" in line for line in logged)
    default = sources_from_traces([a], log=lambda _: None)[0]
    assert (default.train_days, default.val_days, default.test_days) == default_split(8)


def test_traces_without_time_split_by_file(tmp_path):
    c1, c2, c3 = (_sequence(tmp_path / f"VM_data_C{i}.csv") for i in (1, 2, 3))
    (source,) = sources_from_traces([c1, c2, c3], log=lambda _: None)
    assert (source.workload, source.validate.workload, source.test_workload) == (c1, c2, c3)
    assert [w.workload for w in source.train] == [c1]
    (chosen,) = sources_from_traces([c2, c3], validate_on=[c1], log=lambda _: None)
    assert [w.workload for w in chosen.train] == [c2, c3] and chosen.validate.workload == c1 and chosen.test_workload is None
    with pytest.raises(CaturError, match="split by file, and no other file is given to validate on"):
        sources_from_traces([c1], log=lambda _: None)
    with pytest.raises(CaturError, match="need a trace with time"):
        sources_from_traces([c1, c2], train_days=["1:1"], validate_days=["2:2"], log=lambda _: None)


def test_missing_traces_and_names(tmp_path):
    with pytest.raises(CaturError, match="no such trace: .*nope.csv"):
        sources_from_traces([str(tmp_path / "nope.csv")], log=lambda _: None)
    a = _trace(tmp_path / "a.csv", 8)
    with pytest.raises(CaturError, match="'zz.csv' is none of the traces given"):
        sources_from_traces([a], train_days=["zz.csv=1:4"], validate_days=["5:6"], log=lambda _: None)
    with pytest.raises(CaturError, match="one word"):
        Source("two words", a, "1:2", "3:3")


def test_the_public_recipe_is_the_shipped_defaults(tmp_path):
    synthetic_only = public_sources(None)
    assert [(s.name, s.train_days, s.val_days, s.train_seed, s.val_seed) for s in synthetic_only] == [
        ("temporal-shift", "10:25", "13:22", 1, 2), ("adversarial", "10:25", "13:22", 1, 2)]
    with pytest.raises(CaturError, match="unknown recipe 'pubic'"):
        recipe_sources("pubic", None)
    shared = Path(__file__).resolve().parents[2] / "shared" / "traces"
    if shared.is_dir():
        names = [s.name for s in recipe_sources("public-fragmented", shared)]
        assert names == ["huawei", "azure", "temporal-shift", "adversarial", "cc0"]


def test_train_scorer_refuses_bad_windows_before_any_work(tmp_path, capsys):
    from catur.cli.main import main

    a = _trace(tmp_path / "a.csv", 8)
    out = tmp_path / "model"
    for args, message in (
        (["--train-days", "1:5", "--validate-days", "4:6"], "overlap"),
        (["--train-days", "1:5", "--validate-days", "6:9"], "lies outside the trace, which has 8 days"),
        (["--train-days", "1:5"], "given without --validate-days"),
    ):
        assert main(["train-scorer", a, *args, "--out", str(out), "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    assert main(["train-scorer", a, "--recipe", "public", "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_validation_window_on_one_host_is_too_small(tmp_path):
    from catur.training.afterstate import ScorerTrainConfig, build_scenarios

    a = _trace(tmp_path / "a.csv", 8, vms_per_day=3)
    (source,) = sources_from_traces([a], train_days=["1:6"], validate_days=["7:7"], log=lambda _: None)
    config = ScorerTrainConfig(scenarios_per_source=1, validation=(("amd-2s-nps4", 1.0),))
    with pytest.raises(CaturError, match="too small to validate on"):
        build_scenarios([source], config, lambda _: None)


@pytest.mark.parametrize("args, message", [
    (["--algo", "dqn"], "dqn trains the primitive-action model: use 'catur train-primitives --algo dqn'"),
    (["--algo", "a2c"], "'a2c': choose es or ppo"),
    (["--synthetic", "default"], "--synthetic is an option of the primitive-action trainer, which is now 'catur train-primitives'"),
    (["--teacher", "oracle"], "--teacher is an option of the primitive-action trainer"),
    (["--no-shaping"], "--no-shaping is an option of the primitive-action trainer"),
])
def test_train_is_the_scorer_trainer_and_points_old_usage_to_train_primitives(tmp_path, capsys, args, message):
    """`catur train` trains the after-state scorer (`train-scorer` is its alias); an option of the
    older primitive-action trainer gets one error naming where it went, exit 2, nothing written."""
    from catur.cli.main import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", *args, "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "m").exists()
    assert build_parser().parse_args(["train-scorer", "--algo", "ppo", "--out", "m"]).func is \
        build_parser().parse_args(["train", "--algo", "ppo", "--out", "m"]).func


@pytest.mark.parametrize("args", [["--timesteps", "1000"], ["--envs", "8"], ["--ppo-exclude-start"]])
def test_ppo_options_with_evolution_strategies_are_refused_not_ignored(tmp_path, capsys, args):
    """`catur train --timesteps N` (the primitive trainer's habit) with the default --algo es would
    silently train by ES for its own budget: it is refused, exit 2, naming the option, nothing written."""
    from catur.cli.main import main

    assert main(["train", *args, "--out", str(tmp_path / "m")]) == 2
    assert f"{args[0]} applies to --algo ppo" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
