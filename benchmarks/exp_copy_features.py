"""Scorers 8 and 9: hand-set weights on top of the shipped default, selected on validation only.

Every candidate is the default's weights plus one weight on a copy feature
(``copy_cor_after``, ``copy_remote_after``; scorer 8), or the default with the weights you set
with ``--weight`` (e.g. the few-node corrections of scorer 9), or a generation of an ES
continuation run whose manifest history you pass with ``--run``. Each is replayed on the 16 validation sets that
``catur train-scorer`` selects on (never a test window), compared with greedy (mean and worst
ratio, per source) and with the default host by host (the continuation rule: a candidate that
is clearly worse than the default on a source is refused). The selected one is the
best selection score among the rest — the same score ``train-scorer`` selects on.

    .venv/bin/python benchmarks/exp_copy_features.py --traces ../shared/traces \
        [--run /tmp/runs/copy2] [--blend 0.5] [--no-hand] [--json select.json]
    .venv/bin/python benchmarks/exp_copy_features.py --traces ../shared/traces --no-hand \
        --weight rmr_on_few_nodes=-0.5 --weight rmr_on_few_nodes=-0.5,cor_rise_on_few_nodes=0.3
    .venv/bin/python benchmarks/exp_copy_features.py --smoke   # seconds: one generated source, 3 candidates
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

import catur.training.afterstate as ta
from catur.training.sources import Source, public_sources
from catur.afterstate import FEATURES
from catur.policy_model import load_policy

HAND_WEIGHTS = [("copy_cor_after", mu) for mu in (-0.25, -0.5, -0.75, -1.0, -2.0)] + [
    ("copy_remote_after", mu) for mu in (-0.05, -0.2)
]


def run_generations(run: Path) -> dict[str, np.ndarray]:
    """Each checkpoint of a ``train-scorer`` run over all of FEATURES (a run from before a
    feature was added names fewer: the rest are 0)."""
    manifest = json.loads((run / "manifest.json").read_text())
    columns = [FEATURES.index(f) for f in manifest["features"]]
    out = {}
    for entry in manifest["training"]["history"][1:]:
        weights = np.zeros(len(FEATURES))
        weights[columns] = entry["weights"]
        out[f"{run.name} generation {entry['generation']}"] = weights
    return out


def parse_setting(text: str) -> list[tuple[str, float]]:
    """``"a=1,b=-0.5"`` → ``[("a", 1.0), ("b", -0.5)]``, naming a bad feature or value."""
    out = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in FEATURES:
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not FEATURE=VALUE with FEATURE one of {', '.join(FEATURES)}")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} in {text!r} is not a number") from None
    return out


def candidates(runs: list[Path], blends: list[float], no_hand: bool = False,
               settings: list[list[tuple[str, float]]] = ()) -> dict[str, np.ndarray]:
    base = ta.scorer_weights(load_policy("default"), "default")
    out = {"default": base}
    hand = [[(name, mu)] for name, mu in ([] if no_hand else HAND_WEIGHTS)] + list(settings)
    for setting in hand:
        weights = base.copy()
        for name, mu in setting:
            weights[FEATURES.index(name)] = mu
        out[", ".join(f"{name} {mu:g}" for name, mu in setting)] = weights
    for run in runs:
        for name, weights in run_generations(run).items():
            out[name] = weights
            # Part of the way from the default to a checkpoint: a run that gains on some
            # sources and loses on others may keep some of the gain with less of the loss.
            for t in blends:
                out[f"{name}, {t:g} of the way"] = base + t * (weights - base)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="../shared/traces")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="a train-scorer output directory whose generations to add (repeatable)")
    parser.add_argument("--blend", type=float, action="append", default=[],
                        help="also add default + T x (generation - default) for each run generation (repeatable)")
    parser.add_argument("--no-hand", action="store_true", help="leave out the hand-set copy-feature weights")
    parser.add_argument("--weight", type=parse_setting, action="append", default=[], metavar="FEATURE=VALUE[,...]",
                        help="a candidate: the default with these weights set (repeatable; one candidate each)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds to check the script works: one source (a generated trace, validated on "
                        "day 3, mixed cluster) instead of the public ones, and the first hand-set weight of each copy feature; its "
                        "numbers mean nothing")
    args = parser.parse_args()
    sources = public_sources(args.traces)
    if args.smoke:
        import _smoke

        sources = [Source("smoke", _smoke.trace(), "1:2", "3:3")]
        HAND_WEIGHTS[:] = [next(w for w in HAND_WEIGHTS if w[0] == f) for f in dict(HAND_WEIGHTS)]
    config = ta.ScorerTrainConfig(scenarios_per_source=1)
    if args.smoke:  # two validation sets instead of the recipe's four per source
        config = ta.ScorerTrainConfig(scenarios_per_source=1, validation=config.validation[:2])
    _, val = ta.build_scenarios(sources, config, print)
    ta._POOL_SETS[:] = val  # the trainer's fork-inherited sets: workers replay them by index
    labels = [h.label for h in val]
    pool = multiprocessing.get_context("fork").Pool(2)
    greedy = ta._map(pool, [(i, "greedy", None) for i in range(len(val))])
    parts = {}
    for name, weights in candidates(args.run, args.blend, args.no_hand, args.weight).items():
        started = time.time()
        parts[name] = ta._map(pool, [(i, weights, None) for i in range(len(val))])
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    rows = []
    for name, replays in parts.items():
        ratios = np.array([mine[0].sum() / theirs[0].sum() for mine, theirs in zip(replays, greedy)])
        comparisons = ta.source_comparisons(labels, replays, parts["default"])
        rows.append({
            "name": name, "mean": float(ratios.mean()), "worst": float(ratios.max()),
            "score": float(ratios.mean() + max(0.0, ratios.max() - 1)),
            "by_source": ta.source_means(labels, ratios),
            "vs_default": {s: [c.diff, c.diff_low, c.diff_high] for s, c in comparisons.items()},
            "clearly_worse_on": ta.regressed_sources(comparisons),
        })
    print(f"\n| candidate | all {len(val)} sets | worst set | " + " | ".join(rows[0]["by_source"]) + " | clearly worse than the default on |")
    print("|---|---:|---:|" + "---:|" * len(rows[0]["by_source"]) + "---|")
    for r in rows:
        cells = " | ".join(f"{100 * (v - 1):+.2f}%" for v in r["by_source"].values())
        print(f"| {r['name']} | {100 * (r['mean'] - 1):+.2f}% | {100 * (r['worst'] - 1):+.2f}% | {cells} "
              f"| {', '.join(r['clearly_worse_on']) or '—'} |")
    kept = [r for r in rows if not r["clearly_worse_on"]]
    print("\nselected (best selection score among those not clearly worse):", min(kept, key=lambda r: r["score"])["name"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
