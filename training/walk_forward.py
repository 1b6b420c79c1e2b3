"""Walk-forward evaluation: train on early days, select on the next, test on the rest, roll on.

The only honest answer to "will a model trained on my traffic beat my rules on the days that
follow?" is to do exactly that, with nothing of the test days used to choose anything. A
*fold* is three consecutive windows of one trace:

* **train**: :func:`catur.training.afterstate.train_scorer` learns a scorer on it;
* **validate**: the same call selects the generation and gates it against greedy (a scorer
  that loses to greedy on validation is not written, and then *greedy* is what would serve:
  the fold reports greedy in the scorer's place, marked ``fallback``);
* **test**: the scorer, greedy, ``resident-greedy``, xen and every other rule are replayed on
  it, on each scenario the scorer was validated on (both clusters at overcommit 1.0 and
  1.02, or the source's fixed cluster or start state), earlier days replayed first as
  warm-up. Each is compared with greedy and with xen host by host (the paired bootstrap of
  :mod:`catur.verdict`), and with the *best rule* of that cell in hindsight (a stricter
  yardstick than any rule chosen beforehand). A run that continues from a model
  (``init_from``) also replays that **start** untouched, so the report says whether
  training on this traffic helped at all: on the public traces it often did not (the
  selection on validation days carried a gain that the test days did not keep).

``folds > 1`` rolls all three windows forward by ``step`` days and repeats (each fold trains
afresh, from the warm start or ``init_from``). Traces without time (the CC0 sequences) have
one fold: train, validation and test are different files.

The report (:func:`write_report`): ``walk-forward.json`` (every number), ``walk-forward.md``
(one table per fold, the summary) and ``walk-forward.png`` (the scorer against greedy per
cell, with its interval), plus each fold's model under ``fold-N/model``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from catur.decision import DeciderSpec
from catur.errors import CaturError, LosesToGreedy
from catur.placement import GREEDY
from catur.policies import BASELINES, PRIMITIVES
from catur.resident import RESIDENT_GREEDY
from catur.sim.evaluate import versus_baseline
from catur.sim.pipeline import EvaluateOptions, prepare, replay
from catur.training.afterstate import ScorerTrainConfig, train_scorer
from catur.training.sources import Source, parse_window, read_window_trace, trace_days, unique_validation

MODEL = "catur"
XEN = "xen"
START = "start"  # the init_from model, untouched by training
#: Every rule replayed on the test windows (the best of them per cell is the hindsight yardstick).
RULES = (*PRIMITIVES, GREEDY, RESIDENT_GREEDY, *[b for b in BASELINES if b != "random"])


@dataclass(frozen=True)
class Fold:
    """One fold's windows (``FIRST:LAST`` days, or ``None`` for a file split)."""

    number: int
    train: str | None
    validate: str | None
    test: str | None


def folds_of(days: int, train: str, validate: str, test: str | None, folds: int, step: int | None) -> list[Fold]:
    """The first fold's windows rolled forward ``folds - 1`` times by ``step`` days (default:
    the test window's length). The test window defaults to every day after validation; with
    several folds every test window has the first one's length. A fold past the trace's end
    is an error naming it."""
    if folds < 1:
        raise CaturError(f"--folds must be >= 1, got {folds}")
    a, b = parse_window(train, "--train-days")
    c, d = parse_window(validate, "--validate-days")
    if not (b < c):
        raise CaturError(f"--validate-days {validate} must come after --train-days {train}")
    if test is None:
        if d >= days:
            raise CaturError(f"--validate-days {validate} leaves no test day: the trace has {days} days")
        e, f = d + 1, days if folds == 1 else d + max(1, (days - d) // folds)
    else:
        e, f = parse_window(test, "--test-days")
        if e <= d:
            raise CaturError(f"--test-days {test} must come after --validate-days {validate}")
    step = f - e + 1 if step is None else step
    if step < 1:
        raise CaturError(f"--step must be >= 1 day, got {step}")
    out = []
    for i in range(folds):
        s = i * step
        if f + s > days:
            raise CaturError(f"fold {i + 1} would test days {e + s}:{f + s}, past the trace's {days} days: "
                             f"use fewer --folds or a smaller --step")
        out.append(Fold(i + 1, f"{a + s}:{b + s}", f"{c + s}:{d + s}", f"{e + s}:{f + s}"))
    return out


@dataclass
class CellResult:
    """One test scenario of one fold: every policy's average defect and the comparisons."""

    cluster: str | None
    overcommit: float
    hosts: int
    vms: int
    avg_defect: dict[str, float]
    versus_greedy: dict[str, dict]
    versus_xen: dict[str, dict]
    best_rule: str
    seconds: float

    def ratio(self, name: str, to: str) -> float:
        return self.avg_defect[name] / self.avg_defect[to] - 1.0 if self.avg_defect[to] > 0 else 0.0


@dataclass
class FoldResult:
    fold: Fold
    model: str | None  # the written model directory, None when training lost to greedy
    fallback: str  # "" or why greedy serves in the scorer's place
    train_seconds: float
    cells: list[CellResult] = field(default_factory=list)


def test_cells(source: Source, window_days: str | None, test_workload: str | None, model: str | None,
               config: ScorerTrainConfig, jobs: int, progress: bool, log: Callable[[str], None]) -> list[CellResult]:
    """Replay the rules, the scorer (``model``; greedy when ``None``) and, with
    ``config.init_from``, the start it was trained from, on the test window of every
    validation scenario of ``source``."""
    cells = []
    workload_path = test_workload or source.workload
    scorer = DeciderSpec(model=model, label=MODEL) if model else None
    start = [DeciderSpec(model=config.init_from, label=START)] if config.init_from else []
    for cluster, overcommit in unique_validation(config.validation, source):
        started = time.perf_counter()
        workload = replace(source.workload_of(source.validate, cluster=cluster, target_utilization=config.validation_target,
                                                  cpu_overcommit=overcommit),
                           source=workload_path, days=window_days)
        options = EvaluateOptions(jobs=jobs, progress=progress)
        prepared = prepare(workload, options)
        streams = [s for s in prepared.scenario.streams if s.counted.any()]
        if len(streams) < 2:
            raise CaturError(f"the test window {window_days or workload_path} has VMs on {len(streams)} host(s) of cluster "
                             f"{cluster or 'start-state'}: too small to test on")
        results, _ = replay(streams, [*RULES, *([scorer] if scorer else []), *start], options, desc=f"test {cluster or 'start-state'} "
                            f"oc {overcommit}", leave=False)
        if scorer is None:  # training lost to greedy: greedy is what would serve
            results[MODEL] = results[GREEDY]
        avg = {name: float(r.summary.avg_defect) for name, r in results.items()}
        rules = [r for r in RULES if r != RESIDENT_GREEDY]
        cell = CellResult(
            cluster, overcommit, len(streams), int(results[GREEDY].summary.vms), avg,
            {k: v.to_dict() for k, v in versus_baseline(results, streams, GREEDY).items()},
            {k: v.to_dict() for k, v in versus_baseline(results, streams, XEN).items()},
            min(rules, key=lambda r: avg[r]), time.perf_counter() - started,
        )
        cells.append(cell)
        log(f"    test {cluster or 'start-state'} oc {overcommit}: scorer {100 * avg[MODEL]:.3f}%, greedy {100 * avg[GREEDY]:.3f}% "
            f"({100 * cell.ratio(MODEL, GREEDY):+.2f}%), xen {100 * avg[XEN]:.3f}%, best rule {cell.best_rule} "
            f"{100 * avg[cell.best_rule]:.3f}%{f', start {100 * avg[START]:.3f}%' if start else ''} ({cell.seconds:.0f} s)")
    return cells


def walk_forward(
    source: Source, folds: list[Fold], config: ScorerTrainConfig, out: str | Path, *, jobs: int = 2, progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[FoldResult]:
    """Train, validate and test every fold of ``source`` (see the module doc); write the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for fold in folds:
        started = time.perf_counter()
        fold_source = replace(source, train_days=fold.train, val_days=fold.validate, test_days=fold.test)
        log(f"fold {fold.number}: train {fold.train or source.train[0].label}, validate "
            f"{fold.validate or source.validate.label}, test {fold.test or source.test}")
        model_dir = out / f"fold-{fold.number}" / "model"
        fallback = ""
        try:
            train_scorer([fold_source], config, model_dir, progress=progress, log=lambda m: log(f"  {m}"))
        except LosesToGreedy as exc:
            fallback = f"training lost to greedy on validation, so greedy serves: {exc}"
            log(f"  {fallback}")
        train_seconds = time.perf_counter() - started
        result = FoldResult(fold, None if fallback else str(model_dir), fallback, train_seconds)
        result.cells = test_cells(fold_source, fold.test, source.test_workload if fold.test is None else None,
                                  result.model, config, jobs, progress, log)
        results.append(result)
        write_report(results, source, config, out)
    return results


# --- the report -------------------------------------------------------------------------------------


def summarize(results: list[FoldResult]) -> dict:
    """Over every cell of every fold: the scorer's mean change against greedy, xen and the
    best rule, and how many cells it is clearly worse than greedy or worse than xen."""
    cells = [c for r in results for c in r.cells]
    if not cells:
        return {}
    return {
        "cells": len(cells),
        "mean_vs_greedy": float(np.mean([c.ratio(MODEL, GREEDY) for c in cells])),
        "mean_vs_xen": float(np.mean([c.ratio(MODEL, XEN) for c in cells])),
        "mean_vs_best_rule": float(np.mean([c.ratio(MODEL, c.best_rule) for c in cells])),
        "clearly_worse_than_greedy": sum(c.versus_greedy[MODEL]["diff_ci"][0] is not None and c.versus_greedy[MODEL]["diff_ci"][0] > 0
                                         for c in cells),
        "clearly_better_than_greedy": sum(c.versus_greedy[MODEL]["diff_ci"][1] is not None and c.versus_greedy[MODEL]["diff_ci"][1] < 0
                                          for c in cells),
        "worse_than_xen": sum(c.avg_defect[MODEL] > c.avg_defect[XEN] for c in cells),
        "folds_on_greedy_fallback": sum(bool(r.fallback) for r in results),
        **_versus_start(cells),
    }


def _versus_start(cells: list[CellResult]) -> dict:
    """With a start model: the scorer's mean change against it, and on how many cells
    training made it better or worse (on average, the start as the baseline)."""
    if not all(START in c.avg_defect for c in cells):
        return {}
    return {"mean_vs_start": float(np.mean([c.ratio(MODEL, START) for c in cells])),
            "better_than_start": sum(c.avg_defect[MODEL] < c.avg_defect[START] for c in cells),
            "worse_than_start": sum(c.avg_defect[MODEL] > c.avg_defect[START] for c in cells),
            "start_vs_greedy": float(np.mean([c.ratio(START, GREEDY) for c in cells]))}


def _interval(versus: dict) -> str:
    low, high = versus["diff_ci"]
    base = versus["baseline_avg_defect"]
    if low is None or base <= 0:
        return "no interval"
    return f"[{100 * low / base:+.1f}, {100 * high / base:+.1f}]"


def markdown(results: list[FoldResult], source: Source) -> str:
    lines = [f"# Walk-forward: {source.name}", "",
             "Per fold: trained on its train window, selected on its validation window, tested on its test window "
             "(never read before). Change = average defect relative to the named policy; intervals are 95% paired "
             "bootstrap intervals over hosts.", ""]
    for r in results:
        f = r.fold
        lines += [f"## Fold {f.number}: train {f.train or source.train[0].label}, validate {f.validate or source.validate.label}, "
                  f"test {f.test or source.test}", ""]
        if r.fallback:
            lines += [f"*{r.fallback}* — the scorer rows are greedy's.", ""]
        has_start = all(START in c.avg_defect for c in r.cells)
        lines += ["| cluster | overcommit | hosts | scorer | greedy | scorer vs greedy [95% CI] | xen | scorer vs xen | best rule |"
                  + (" start | scorer vs start |" if has_start else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if has_start else "")]
        for c in r.cells:
            a = c.avg_defect
            lines.append(f"| {c.cluster or 'start state'} | {c.overcommit} | {c.hosts} | {100 * a[MODEL]:.3f}% | {100 * a[GREEDY]:.3f}% | "
                         f"{100 * c.ratio(MODEL, GREEDY):+.2f}% {_interval(c.versus_greedy[MODEL])} | {100 * a[XEN]:.3f}% | "
                         f"{100 * c.ratio(MODEL, XEN):+.2f}% | {c.best_rule} {100 * a[c.best_rule]:.3f}% |"
                         + (f" {100 * a[START]:.3f}% | {100 * c.ratio(MODEL, START):+.2f}% |" if has_start else ""))
        lines += ["", f"Training and validation: {r.train_seconds:.0f} s.", ""]
    s = summarize(results)
    if s:
        lines += ["## Summary", "",
                  f"- cells: {s['cells']}; scorer vs greedy on average {100 * s['mean_vs_greedy']:+.2f}%, vs xen "
                  f"{100 * s['mean_vs_xen']:+.2f}%, vs the best rule in hindsight {100 * s['mean_vs_best_rule']:+.2f}%",
                  f"- clearly better than greedy on {s['clearly_better_than_greedy']} cells, clearly worse on "
                  f"{s['clearly_worse_than_greedy']}; worse than xen on {s['worse_than_xen']}",
                  f"- folds where training lost to greedy (greedy serves): {s['folds_on_greedy_fallback']}"]
        if "mean_vs_start" in s:
            lines.append(f"- against the untouched start (`--init-from`): {100 * s['mean_vs_start']:+.2f}% on average, better on "
                         f"{s['better_than_start']} cells, worse on {s['worse_than_start']} (the start itself: "
                         f"{100 * s['start_vs_greedy']:+.2f}% vs greedy)")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[FoldResult], path: Path) -> Path:
    """The scorer against greedy per cell, with the 95% interval, one colour per fold; xen and
    the start model (with ``init_from``) as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(r.fold.number, c) for r in results for c in r.cells]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cells) + 2), 3.6))
    for i, (fold, c) in enumerate(cells):
        v = c.versus_greedy[MODEL]
        base = v["baseline_avg_defect"] or 1.0
        point = 100 * c.ratio(MODEL, GREEDY)
        low, high = v["diff_ci"]
        err = None if low is None else [[point - 100 * low / base], [100 * high / base - point]]
        ax.errorbar([i], [point], yerr=err, fmt="o", color=f"C{fold - 1}", capsize=4, label=f"fold {fold}")
        ax.plot([i], [100 * c.ratio(XEN, GREEDY)], "x", color="#d62728", label="xen")
        if START in c.avg_defect:
            ax.plot([i], [100 * c.ratio(START, GREEDY)], "s", color="#7f7f7f", fillstyle="none", label="start (--init-from)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.axhline(0, color="#ff7f0e", lw=1)
    ax.set_xticks(range(len(cells)), [f"{c.cluster or 'start state'}\noc {c.overcommit}" for _, c in cells], fontsize=8)
    ax.set_ylabel("avg defect vs greedy (%)")
    ax.set_title("Walk-forward test windows against greedy (0):\nthe trained scorer (o, 95% CI), xen (x), the start (□)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: list[FoldResult], source: Source, config: ScorerTrainConfig, out: Path) -> list[Path]:
    data = {
        "source": asdict(source),
        "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "folds": [{"fold": asdict(r.fold), "model": r.model, "fallback": r.fallback, "train_seconds": round(r.train_seconds, 1),
                   "cells": [asdict(c) for c in r.cells]} for r in results],
        "summary": summarize(results),
    }
    paths = [out / "walk-forward.json", out / "walk-forward.md"]
    paths[0].write_text(json.dumps(data, indent=2))
    paths[1].write_text(markdown(results, source))
    if any(r.cells for r in results):
        paths.append(plot(results, out / "walk-forward.png"))
    return paths


def plan(traces: list[str], *, train_days: str | None, validate_days: str | None, test_days: str | None, folds: int,
         step: int | None, fmt: str, start_state: str | None, cluster: str | None, validate_on: list[str] | None,
         test_on: list[str] | None, log: Callable[[str], None]) -> tuple[Source, list[Fold]]:
    """The source and folds of ``catur walk-forward``'s arguments: one time-based trace (split
    by days, rolled by ``folds``/``step``), or several sequences without time (one fold, split
    by file, as ``catur train-scorer`` splits them)."""
    from catur.training.sources import MIN_DAYS, default_split, sources_from_traces

    if not traces:
        raise CaturError("no trace given: walk-forward needs the trace to train, validate and test on")
    sources = sources_from_traces(traces, validate_on=validate_on, test_on=test_on, fmt=fmt, start_state=start_state,
                                  cluster=cluster, log=lambda _: None,
                                  **({"train_days": [train_days], "validate_days": [validate_days]} if train_days and validate_days else {}))
    if len(sources) != 1:
        raise CaturError(f"walk-forward evaluates one source at a time, got {len(sources)} ({', '.join(s.name for s in sources)}): "
                         "give one trace with time, or the files of one sequence set")
    source = sources[0]
    if source.train_days is None:  # split by file
        if folds != 1 or step is not None or test_days is not None:
            raise CaturError("traces without time have one fold (train, validation and test files): --folds, --step and "
                             "--test-days apply to traces with time")
        if source.test_workload is None:
            raise CaturError("no test file: give three sequences (the last is the test) or --test-on FILE")
        log(f"{source.name}: train {', '.join(w.workload for w in source.train)}; validate {source.validate.workload}; "
            f"test {source.test_workload}")
        return source, [Fold(1, None, None, None)]
    if (train_days is None) != (validate_days is None):
        raise CaturError("give both --train-days and --validate-days, or neither for the default split")
    days = trace_days(read_window_trace(source.workload, 0, fmt))
    if days < MIN_DAYS:
        raise CaturError(f"{source.workload}: {days} days cannot be split by days")
    train, validate = (train_days, validate_days) if train_days else default_split(days)[:2]
    result = folds_of(days, train, validate, test_days, folds, step)
    log(f"{source.name}: {days} days; {len(result)} fold{'s' * (len(result) != 1)}: "
        + "; ".join(f"test {f.test}" for f in result))
    return source, result


__all__ = ["CellResult", "Fold", "FoldResult", "RULES", "START", "folds_of", "markdown", "plan", "summarize", "test_cells", "walk_forward",
           "write_report"]
