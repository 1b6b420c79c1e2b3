"""The small things a new user trips on (issue 16, item 10): --version, ``catur policies``, help
texts, ``models add --evaluation`` with catur's own evaluation JSON, and the demo plots."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import catur
from catur.errors import CaturError
from catur.metrics import summarize
from catur.policy_model import default_model_dir, weights_sha256
from catur.registry import check_evaluation_of, headline_metric

CATUR = Path(sys.executable).with_name("catur")
needs_cli = pytest.mark.skipif(not CATUR.exists(), reason=f"no installed catur command at {CATUR}")


def catur_cli(*args, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([str(CATUR), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


# --- version, policies, help ---------------------------------------------------------------------


@needs_cli
def test_version():
    result = catur_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"catur {catur.__version__}"
    assert catur.__version__ not in ("", "unknown")


@needs_cli
def test_policies_lists_greedy_oracle_and_the_model_entries():
    from catur.sim.replay import check_policy_name

    out = catur_cli("policies").stdout
    for heading in ("primitives:", "baselines:", "rules over the four primitives:", "yardstick (evaluation only):",
                    "models (catur evaluate --model/--shield-depth):"):
        assert heading in out
    for name in ("greedy", "resident-greedy", "oracle"):  # each one evaluate --policies accepts
        assert f"  {name} " in out
        check_policy_name(name)
    for name in ("catur", "catur+shield", "greedy+shield"):
        assert f"  {name} " in out


@needs_cli
def test_policies_help_teaches():
    out = catur_cli("policies", "--help").stdout
    assert "greedy" in out and "oracle" in out and "--policies" in out and "examples:" in out


@pytest.mark.slow
@needs_cli
def test_train_seed_and_learning_rate_have_help():
    out = " ".join(catur_cli("train-primitives", "--help").stdout.split())
    assert "--seed SEED seed of everything random" in out
    assert "--learning-rate LR step size of the RL optimiser" in out
    out = " ".join(catur_cli("retrain", "--help").stdout.split())
    assert "--seed SEED seed of the fine-tuning" in out


@needs_cli
def test_evaluate_help_cites_nothing_outside_the_repository():
    out = catur_cli("evaluate", "--help").stdout
    assert "DESIGN.md" not in out
    assert "docs/explanation/numa-and-metrics.md" in " ".join(out.split())
    assert (Path(__file__).resolve().parents[1] / "docs" / "explanation" / "numa-and-metrics.md").is_file()


# --- models add --evaluation ---------------------------------------------------------------------


def catur_evaluation(model: str | None, sha: str | None, avg: float = 0.012) -> dict:
    scenario = {"trace": "x", "model": model}
    if sha is not None:
        scenario["model_sha256"] = sha
    policies = {"xen": {"avg_defect": 0.02}}
    if model:
        policies["catur"] = {"avg_defect": avg}
    return {"scenario": scenario, "policies": policies}


def test_headline_of_catur_evaluate_output_is_the_models_avg_defect():
    assert headline_metric(catur_evaluation("m", "abc", 0.0123)) == ("avg_defect", 0.0123)
    shield_only = {"scenario": {"model": "m"}, "policies": {"xen": {"avg_defect": 0.5}, "catur+shield": {"avg_defect": 0.01}}}
    assert headline_metric(shield_only) == ("catur+shield avg_defect", 0.01)
    assert headline_metric({"scenario": {}, "policies": {"xen": {"avg_defect": 0.5}}}) is None


def test_evaluation_check(tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(default_model_dir(), other)
    with np.load(other / "weights.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["b0"] = arrays["b0"] + 0.01
    np.savez(other / "weights.npz", **arrays)
    mine = weights_sha256("default")
    assert mine == weights_sha256(default_model_dir()) != weights_sha256(other)

    assert check_evaluation_of(catur_evaluation("default", mine), "default", "ev.json") is None
    with pytest.raises(CaturError, match=r"ev.json: evaluates a different model .*use --force"):
        check_evaluation_of(catur_evaluation("default", mine), other, "ev.json")
    with pytest.raises(CaturError, match=r"ev.json: this evaluation ran no model"):
        check_evaluation_of(catur_evaluation(None, None), "default", "ev.json")
    warning = check_evaluation_of(catur_evaluation("default", None), "default", "ev.json")
    assert "cannot check" in warning
    # catur replay measured a service, known by its model version only: kept with a warning.
    replay = {"scenario": {"service": {"target": "localhost:50051", "model_version": "v0002"}}, "policies": {"catur": {}}}
    assert "it measured the service at 'localhost:50051'" in check_evaluation_of(replay, other, "ev.json")
    # JSON of other shapes (a retrain report, hand-written results) is kept as given.
    assert check_evaluation_of({"avg_defect": 0.01}, other, "ev.json") is None


@pytest.mark.slow
@needs_cli
def test_models_add_reads_catur_evaluate_json(tmp_path: Path):
    """End to end: catur evaluate --model --json, then models add shows its headline, and the
    same evaluation is refused for another model unless --force."""
    from catur.traces.synthetic import generate

    generate("default", seed=2).head(400).to_parquet(tmp_path / "small.parquet")
    result = catur_cli("evaluate", "small.parquet", "--model", "default", "--policies", "xen",
                       "--json", "ev.json", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "ev.json").read_text())
    assert evaluation["scenario"]["model_sha256"] == weights_sha256("default")

    assert catur_cli("models", "init", "--registry", "reg", cwd=tmp_path).returncode == 0
    result = catur_cli("models", "add", "default", "--registry", "reg", "--evaluation", "ev.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = json.loads(catur_cli("models", "list", "--registry", "reg", "--json", cwd=tmp_path).stdout)
    assert listing[0]["headline"] == {"metric": "avg_defect", "value": evaluation["policies"]["catur"]["avg_defect"]}

    other = tmp_path / "other"
    shutil.copytree(default_model_dir(), other)
    with np.load(other / "weights.npz") as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(other / "weights.npz", **{k: v * 1.01 for k, v in arrays.items()})
    result = catur_cli("models", "add", "other", "--registry", "reg", "--evaluation", "ev.json", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("catur: error: ev.json: evaluates a different model")
    assert len(json.loads(catur_cli("models", "list", "--registry", "reg", "--json", cwd=tmp_path).stdout)) == 1
    result = catur_cli("models", "add", "other", "--registry", "reg", "--evaluation", "ev.json", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# --- plots -----------------------------------------------------------------------------------------


def fake_evaluation(names: list[str], seed: int = 0):
    from catur.sim.evaluate import Evaluation, PolicyResult

    rng = np.random.default_rng(seed)
    n = 200
    df = pd.DataFrame({"arrival_s": np.sort(rng.uniform(0, 3 * 86400, n))})
    results = {}
    for name in names:
        lifetime, placement = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
        results[name] = PolicyResult(name, summarize(lifetime, placement), np.arange(n), lifetime, placement)
    return Evaluation({"trace": "fake", "anomaly_threshold": 0.40}, results), df


def drawn_figures(monkeypatch, names: list[str], tmp_path: Path) -> dict[str, object]:
    """Run write_plots and keep its figures (file name -> figure) before they are closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from catur.sim.report import write_plots

    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    evaluation, df = fake_evaluation(names)
    paths = write_plots(evaluation, df, 0.0, tmp_path)
    monkeypatch.setattr(plt, "close", real_close)
    for fig in figures:
        real_close(fig)
    return {p.name: fig for p, fig in zip(paths, figures)}


def line_colors(fig) -> dict[str, str]:
    from matplotlib.colors import to_hex

    return {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}


def test_plots_have_distinct_titles_and_show_the_threshold(monkeypatch, tmp_path: Path):
    figs = drawn_figures(monkeypatch, ["xen", "greedy", "catur"], tmp_path)
    titles = [fig.axes[0].get_title() for fig in figs.values()]
    assert len(set(titles)) == 3, titles
    assert figs["daily_defect.png"].axes[0].get_title().startswith("Average resource defect per day")
    assert "> 40%" in figs["daily_anomalies.png"].axes[0].get_title()
    cdf = figs["defect_cdf.png"].axes[0]
    threshold = [line for line in cdf.get_lines() if line.get_label().startswith("anomaly threshold (40%")]
    assert len(threshold) == 1 and list(threshold[0].get_xdata()) == [40.0, 40.0]


def test_the_defect_cdf_spends_no_width_on_negative_defects(monkeypatch, tmp_path: Path):
    """A defect is never negative: the CDF's axis starts at 0 and reaches past the largest defect
    and the threshold (symlog's own limits used to start at -10^0, a third of the width)."""
    cdf = drawn_figures(monkeypatch, ["xen", "greedy"], tmp_path)["defect_cdf.png"].axes[0]
    left, right = cdf.get_xlim()
    assert left == 0.0
    largest = max(max(line.get_xdata()) for line in cdf.get_lines())
    assert right >= largest >= 40.0


def test_a_policy_keeps_its_colour_across_runs(monkeypatch, tmp_path: Path):
    from catur.sim.report import POLICY_COLORS, policy_style

    first = drawn_figures(monkeypatch, ["xen", "greedy", "catur", "tetris"], tmp_path / "a")
    second = drawn_figures(monkeypatch, ["catur", "random", "xen"], tmp_path / "b")
    for figs in (first, second):
        for name, fig in figs.items():
            for label, color in line_colors(fig).items():
                if not label.startswith("anomaly threshold"):
                    assert color == policy_style(label)[0], (name, label)
    assert line_colors(first["defect_cdf.png"])["xen"] == line_colors(second["defect_cdf.png"])["xen"]
    # Every policy catur evaluate can report has its own colour.
    from catur.policies import POLICIES

    names = [*POLICIES, "greedy", "resident-greedy", "oracle", "oracle-arrivals-only", "catur", "catur+shield", "greedy+shield"]
    assert set(names) == set(POLICY_COLORS)
    assert len({POLICY_COLORS[n] for n in names}) == len(names)
    assert policy_style("something-new") == policy_style("something-new")
