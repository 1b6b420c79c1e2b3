"""``catur walk-forward``: folds, their checks, and one tiny run end to end."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from catur.errors import CaturError
from catur.training.sources import parse_window
from catur.training.walk_forward import Fold, folds_of
from _trace_support import _sequence, _trace


def test_one_fold_tests_every_day_after_validation():
    assert folds_of(31, "1:12", "13:15", None, 1, None) == [Fold(1, "1:12", "13:15", "16:31")]


def test_folds_roll_every_window_forward_by_the_step():
    assert folds_of(20, "1:10", "11:12", "13:15", 2, 5) == [
        Fold(1, "1:10", "11:12", "13:15"), Fold(2, "6:15", "16:17", "18:20")]
    assert [f.test for f in folds_of(20, "1:10", "11:12", "13:14", 3, None)] == ["13:14", "15:16", "17:18"]


@given(days=st.integers(6, 120), train=st.integers(1, 30), validate=st.integers(1, 5), folds=st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_folds_never_overlap_and_never_pass_the_end(days, train, validate, folds):
    try:
        result = folds_of(days, f"1:{train}", f"{train + 1}:{train + validate}", None, folds, None)
    except CaturError:
        return
    for f in result:
        (a, b), (c, d), (e, g) = (parse_window(w, "w") for w in (f.train, f.validate, f.test))
        assert a <= b < c <= d < e <= g <= days


@pytest.mark.parametrize("args, message", [
    (("1:12", "10:15", None, 1, None), "must come after --train-days"),
    (("1:12", "13:31", None, 1, None), "leaves no test day"),
    (("1:12", "13:15", "14:20", 1, None), "must come after --validate-days"),
    (("1:12", "13:15", "16:20", 4, 5), "fold 4 would test days 31:35, past the trace's 31 days"),
    (("1:12", "13:15", None, 0, None), "--folds must be >= 1"),
])
def test_bad_folds_are_named(args, message):
    with pytest.raises(CaturError, match=message):
        folds_of(31, *args)


def test_walk_forward_refuses_what_it_cannot_split(tmp_path, capsys):
    from catur.cli.main import main

    a, b = _trace(tmp_path / "a.csv", 8), _trace(tmp_path / "b.csv", 8)
    c1, c2 = _sequence(tmp_path / "c1.csv"), _sequence(tmp_path / "c2.csv")
    for args, message in (
        ([a, b], "one source at a time"),
        ([c1, c2], "no test file"),
        ([c1, c2, str(tmp_path / "c3.csv"), "--folds", "2"], "no such trace"),
        ([a, "--train-days", "1:4"], "give both"),
    ):
        assert main(["walk-forward", *args, "--out", str(tmp_path / "wf")]) == 2, args
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_walk_forward_writes_its_report(tmp_path, capsys):
    from catur.cli.main import main

    a = _trace(tmp_path / "a.csv", 8, vms_per_day=120)
    out = tmp_path / "wf"
    assert main(["walk-forward", a, "--train-days", "1:4", "--validate-days", "5:5", "--test-days", "6:6", "--folds", "2",
                 "--generations", "1", "--pairs", "1", "--hosts-per-replay", "2", "--scenarios-per-source", "1", "--eval-every", "1",
                 "--cluster", "intel-2s", "--jobs", "1", "--allow-worse", "--init-from", "default", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "walk-forward.json").read_text())
    assert [f["fold"]["test"] for f in report["folds"]] == ["6:6", "7:7"]
    for fold in report["folds"]:
        assert len(fold["cells"]) == 2  # the fixed cluster at overcommit 1.0 and 1.02
        for cell in fold["cells"]:
            assert cell["versus_greedy"]["greedy"]["diff"] == 0
            assert cell["best_rule"] in cell["avg_defect"] and "xen" in cell["avg_defect"] and "catur" in cell["avg_defect"]
            assert "start" in cell["avg_defect"]  # the untouched --init-from model, replayed beside its continuation
    summary = report["summary"]
    assert summary["cells"] == 4 and summary["better_than_start"] + summary["worse_than_start"] <= 4
    markdown = (out / "walk-forward.md").read_text()
    assert (out / "walk-forward.png").stat().st_size > 0 and "## Fold 2" in markdown and "scorer vs start" in markdown
    printed = capsys.readouterr().out
    assert "walk-forward a: 2 folds, 4 test cells" in printed and "against its start (default)" in printed


def _cell(scorer: float, start: float | None, greedy: float = 0.02):
    from catur.training.walk_forward import CellResult

    avg = {"catur": scorer, "greedy": greedy, "xen": 0.03, **({"start": start} if start is not None else {})}
    versus = {name: {"diff_ci": [None, None], "baseline_avg_defect": greedy} for name in avg}
    return CellResult("mixed", 1.0, 10, 100, avg, versus, versus, "greedy", 0.0)


def test_the_summary_says_whether_training_beat_its_start():
    """With a start model on every cell: the scorer's mean change against it and the cells it
    made better or worse; without one, no such entry (nothing to compare with)."""
    from catur.training.walk_forward import Fold, FoldResult, markdown, summarize
    from catur.training.sources import Source

    fold = FoldResult(Fold(1, "1:2", "3:3", "4:4"), "m", "", 1.0, [_cell(0.018, 0.016), _cell(0.010, 0.012)])
    s = summarize([fold])
    assert s["mean_vs_start"] == pytest.approx(((0.018 / 0.016 - 1) + (0.010 / 0.012 - 1)) / 2)
    assert (s["better_than_start"], s["worse_than_start"]) == (1, 1)
    assert s["start_vs_greedy"] == pytest.approx(((0.016 / 0.02 - 1) + (0.012 / 0.02 - 1)) / 2)
    text = markdown([fold], Source("t", "t.csv", "1:2", "3:3"))
    assert "| start | scorer vs start |" in text and "+12.50% |" in text and "against the untouched start" in text
    without = summarize([FoldResult(fold.fold, "m", "", 1.0, [_cell(0.018, None)])])
    assert "mean_vs_start" not in without and "scorer vs start" not in markdown([FoldResult(fold.fold, "m", "", 1.0, [_cell(0.018, None)])],
                                                                                Source("t", "t.csv", "1:2", "3:3"))
