"""``catur models``: list, show, add, promote and roll back the versions of a model registry.

The commands are thin: every rule (numbering, checks, atomic switch, history) lives in
:mod:`catur.registry`. Each one takes ``--registry DIR``, defaulting to ``$CATUR_REGISTRY``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from catur.cli.options import add_command
from catur.errors import CaturError
from catur.registry import REGISTRY_ENV


EPILOG = """examples:
  catur models init --registry /var/lib/catur/models
  export CATUR_REGISTRY=/var/lib/catur/models        # then --registry can be left out
  catur models add default --note "shipped model" --promote
  catur models add models/mine --note "retrained on week 12" --evaluation eval.json
  catur models list
  catur models show current --json
  catur models promote v0002 --reason "beats every primitive on every cluster"
  catur models promote v0003 --force --reason "loses to greedy on validation; canary only"
  catur models add --rule greedy --promote --reason "no candidate beats greedy"
  catur models rollback --reason "ticket spike after v0002"
  catur models history
  catur models prune --keep 5 --dry-run              # what would go; then without --dry-run
  catur serve --model /var/lib/catur/models          # serves 'current', follows promotions

Layout: versions/vNNNN/ (manifest.json, weights.npz, evaluation.json, version.json), 'current'
(a symbolic link to versions/vNNNN, switched in one atomic rename), history.jsonl (promotions
rollbacks and prunes). A version is checked (checksums, loads as a model) before it becomes current;
a damaged one is refused with the reason and the current one keeps serving.
"""


def _registry(args: argparse.Namespace, *, create: bool = False):
    from catur.registry import Registry, registry_dir

    return Registry(registry_dir(args.registry), create=create)


def _report_cleanup(registry) -> None:
    for name in registry.cleaned:
        print(f"catur: removed {name}, left by an interrupted change to the registry", file=sys.stderr)


def _summary(v, current: str | None) -> dict:
    from catur.registry import headline_metric

    head = headline_metric(v.evaluation)
    return {
        "version": v.version,
        "created_at": v.created_at,
        "current": v.version == current,
        "note": v.note,
        "parent": v.parent,
        "headline": {"metric": head[0], "value": head[1]} if head else None,
        "path": str(v.path),
    }


def cmd_models_init(args: argparse.Namespace) -> int:
    """``catur models init``: create an empty registry (idempotent)."""
    registry = _registry(args, create=True)
    print(f"model registry ready at {registry.root}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """``catur models list``: the registry's versions, current one marked, with their headline
    metric (``--json`` for scripts)."""
    registry = _registry(args)
    current = registry.current()
    rows = [_summary(v, current.version if current else None) for v in registry.versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions yet in {registry.root}; add one with 'catur models add MODEL_DIR'")
        return 0
    print(f"  {'version':<8} {'created (UTC)':<21} {'headline':<34} note")
    for row in rows:
        head = row["headline"]
        head_text = f"{head['metric']} {head['value']:.4%}" if head else "-"
        marker = "*" if row["current"] else " "
        note = row["note"] + (f" (from {row['parent']})" if row["parent"] else "")
        print(f"{marker} {row['version']:<8} {row['created_at']:<21} {head_text:<34} {note}")
    if current is None:
        print("(no version is current yet: 'catur models promote VERSION')")
    return 0


def _resolve(registry, version: str):
    if version == "current":
        current = registry.current()
        if current is None:
            raise CaturError(f"registry {str(registry.root)!r} has no current version yet; promote one with 'catur models promote VERSION'")
        return current
    return registry.get(version)


def _network_shape(path) -> str:
    """``"12 -> 8 -> 1 (113 parameters)"``: the layer widths of an intact model's weights."""
    from catur import mlp

    layers = mlp.load(Path(path) / "weights.npz")
    widths = [layers[0][0].shape[0], *(w.shape[1] for w, _ in layers)]
    kind = "one layer, a weight per feature" if len(layers) == 1 else f"{len(layers) - 1} hidden layer{'s' * (len(layers) > 2)}"
    return f"{' -> '.join(map(str, widths))} ({kind}; {sum(w.size + b.size for w, b in layers)} parameters)"


def cmd_models_show(args: argparse.Namespace) -> int:
    """``catur models show``: one version's metadata, manifest summary, evaluation, comparison with
    greedy and file integrity; exit 1 if its files are damaged."""
    registry = _registry(args)
    v = _resolve(registry, args.version)
    current = registry.current()
    try:
        registry.verify(v)
        problem = None
    except CaturError as exc:
        problem = str(exc)
    info = _summary(v, current.version if current else None)
    info["intact"] = problem is None
    info["problem"] = problem
    if problem is None:
        comparison = registry.gate(v)
        info["versus_greedy"] = comparison.to_dict() if comparison is not None else None
    if args.json:
        info["metadata"] = v.metadata
        info["evaluation"] = v.evaluation
        info["manifest"] = v.manifest
        print(json.dumps(info, indent=2))
        return 0
    manifest = v.manifest
    comparison = registry.gate(v) if problem is None else None
    print(f"{v.version}{'  (current)' if info['current'] else ''}")
    print(f"  path:            {v.path}")
    print(f"  created:         {v.created_at}")
    print(f"  note:            {v.note or '-'}")
    print(f"  parent:          {v.parent or '-'}")
    print(f"  source:          {v.metadata.get('source', '-')}")
    print(f"  trained version: {manifest.get('trained_version', '-')}")
    if manifest.get("kind") == "rule":
        print(f"  kind:            rule: serves {manifest.get('policy')} itself (no trained network)")
    elif manifest.get("kind") == "afterstate":
        print(f"  kind:            after-state scorer: scores every candidate placement from {len(manifest.get('features', []))} "
              f"after-state features, activation {manifest.get('activation')}")
        if problem is None:
            print(f"  network:         {_network_shape(v.path)}")
        print(f"  vs greedy:       {comparison.describe('model') + (' -> LOSES' if comparison.loses else '') if comparison else 'not recorded'}")
    else:
        print(f"  algorithm:       {manifest.get('algorithm', '-')}, activation {manifest.get('activation')}, "
              f"observation v{manifest.get('obs_version')} ({manifest.get('obs_dim')} values)")
        print(f"  gate:            {'yes' if manifest.get('gate') else 'no'}")
        print(f"  vs greedy:       {comparison.describe('model') + (' -> LOSES' if comparison.loses else '') if comparison else 'not recorded'}")
    print(f"  files:           {'intact' if problem is None else 'DAMAGED: ' + problem}")
    if v.evaluation is None:
        print("  evaluation:      -")
    else:
        print("  evaluation:")
        for line in json.dumps(v.evaluation, indent=2).splitlines():
            print(f"    {line}")
    return 0 if problem is None else 1


def cmd_models_add(args: argparse.Namespace) -> int:
    """``catur models add``: copy a model directory (or a rule, ``--rule greedy``) into the registry
    as a new version, with its evaluation; optionally promote it."""
    from catur.registry import check_evaluation_of, read_json

    registry = _registry(args)
    evaluation = None
    if args.evaluation:
        evaluation = read_json(Path(args.evaluation))
        if not isinstance(evaluation, dict):
            raise CaturError(f"{args.evaluation}: the evaluation must be a JSON object")
        if args.model_dir is not None and not args.force:
            warning = check_evaluation_of(evaluation, args.model_dir, args.evaluation)
            if warning:
                print(f"catur: warning: {warning}", file=sys.stderr)
    if (args.model_dir is None) == (args.rule is None):
        raise CaturError("give either a MODEL_DIR or --rule greedy, not both" if args.rule else "give a MODEL_DIR to add (or --rule greedy)")
    if args.rule:
        v = registry.add_rule(args.rule, evaluation=evaluation, note=args.note, parent=args.parent)
        print(f"added {v.version}: the {args.rule} rule, served as a version, at {v.path}")
    else:
        v = registry.add(args.model_dir, evaluation=evaluation, note=args.note, parent=args.parent)
        print(f"added {v.version} from {args.model_dir} at {v.path}")
    _report_cleanup(registry)
    if args.promote:
        _promote(registry, v.version, args)
    return 0


def _promote(registry, version: str, args: argparse.Namespace):
    """Promote with the greedy gate (refused unless --force), printing what it did."""
    previous = registry.current()
    v = registry.promote(version, reason=args.reason, force=args.force)
    comparison = registry.gate(v)
    if comparison is not None:
        print(f"recorded evaluation: {comparison.describe(v.version)}")
        if comparison.loses:
            print(f"catur: warning: {v.version} loses to greedy; promoted because of --force", file=sys.stderr)
    if previous is not None and previous.version == v.version:
        print(f"{v.version} is already current; nothing changed")
    else:
        print(f"{v.version} is now current (was {previous.version if previous else 'none'})")
    return v


def cmd_models_promote(args: argparse.Namespace) -> int:
    """``catur models promote``: make a version current, refusing one whose recorded evaluation
    loses to greedy unless ``--force``."""
    registry = _registry(args)
    _promote(registry, args.version, args)
    _report_cleanup(registry)
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    """``catur models rollback``: make current the version that was current before the current one."""
    registry = _registry(args)
    previous = registry.current()
    v = registry.rollback(reason=args.reason)
    _report_cleanup(registry)
    print(f"rolled back: {v.version} is now current (was {previous.version if previous else 'none'})")
    return 0


def cmd_models_history(args: argparse.Namespace) -> int:
    """``catur models history``: every promotion, rollback and prune, with its reason."""
    from catur.registry import PRUNE

    registry = _registry(args)
    entries = registry.history()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no promotions yet")
    for e in entries:
        reason = f"  {e['reason']}" if e.get("reason") else ""
        if e["action"] == PRUNE:
            print(f"{e.get('time', '?'):<21} {e['action']:<9} removed {', '.join(e.get('pruned') or [])}{reason}")
            continue
        print(f"{e.get('time', '?'):<21} {e['action']:<9} {e.get('previous') or '-':>6} -> {e.get('version') or '-':<6}{reason}")
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    """``catur models prune``: remove old versions, never the current one nor those rollbacks would
    return to next."""
    registry = _registry(args)
    if args.dry_run:
        doomed = registry.prunable(args.keep)
        print(f"would remove {', '.join(doomed)}" if doomed else "nothing to remove")
        return 0
    removed = registry.prune(args.keep, reason=args.reason)
    _report_cleanup(registry)
    left = [v.version for v in registry.versions()]
    print(f"removed {', '.join(removed)}; kept {', '.join(left) or 'none'}" if removed else "nothing to remove")
    return 0


def add_models_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur models`` and its actions on ``sub``."""
    p = add_command(
        sub, "models", None,
        help="the model registry: list, show, add, promote, roll back model versions",
        description="Manage a model registry: numbered model versions with their evaluation "
        "results, one of them 'current' (what 'catur serve --model DIR' serves). Changes are "
        "atomic: a process killed at any moment never leaves a half-written model current.",
        epilog=EPILOG,
    )
    models_sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", metavar="DIR", help=f"the registry directory (default: ${REGISTRY_ENV})")

    def action(name: str, func, help: str, description: str) -> argparse.ArgumentParser:
        examples = "\n".join(line for line in EPILOG.splitlines() if line.startswith(f"  catur models {name}"))
        return add_command(
            models_sub, name, func,
            parents=[common],
            help=help,
            description=textwrap.fill(description, 88),
            epilog=f"examples:\n{examples}" if examples else None,
        )

    action("init", cmd_models_init, "create an empty registry", "Create a registry directory (versions/ inside); harmless if it exists.")
    q = action("list", cmd_models_list, "list the versions (* = current)",
               "List the versions, oldest first: version, creation time, headline metric of its "
               "evaluation (avg_defect, or the worst cluster's), note. '*' marks the current one.")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q = action("show", cmd_models_show, "show one version: metadata, manifest summary, evaluation, integrity",
               "Show a version (or 'current'): metadata, a summary of its manifest, its evaluation, "
               "and whether its files are intact (checksums, loads as a model). Exit 1 when damaged.")
    q.add_argument("version", metavar="VERSION|current", help="e.g. v0003, v3, 3 or current")
    q.add_argument("--json", action="store_true", help="print as JSON, with the full manifest")
    q = action("add", cmd_models_add, "add a model directory as the next version (not current unless --promote)",
               "Copy a model directory (manifest.json + weights.npz, e.g. from 'catur train --out') in "
               "as the next version. The model must load; the copy is synced and renamed into place "
               "whole. 'default' adds the model shipped with Catur. '--rule greedy' adds greedy itself as a "
               "version instead (a manifest with kind: rule, no weights): what to serve when no trained "
               "candidate beats greedy. With --promote, the greedy gate of 'promote' applies.")
    q.add_argument("model_dir", metavar="MODEL_DIR", nargs="?", help="model directory, or 'default'")
    q.add_argument("--rule", choices=("greedy",), help="add a rule version instead of a model: serve greedy itself "
                   "(for when no trained candidate beats it); its manifest says kind: rule, policy: greedy")
    q.add_argument("--note", default="", help="free text kept with the version")
    q.add_argument("--evaluation", metavar="JSON",
                   help="a JSON file of evaluation results to keep with it, e.g. what 'catur evaluate --model MODEL_DIR "
                   "--json FILE' wrote (its 'catur' avg_defect becomes the headline; an evaluation of another model "
                   "or of no model is refused)")
    q.add_argument("--parent", metavar="VERSION", help="the version it was fine-tuned from")
    q.add_argument("--promote", action="store_true", help="also make it current")
    q.add_argument("--reason", default="", help="reason recorded in the history with --promote")
    q.add_argument("--force", action="store_true", help="keep an --evaluation that is not of this model, and with --promote "
                   "promote even if its recorded evaluation loses to greedy")
    q = action("promote", cmd_models_promote, "make a version current",
               "Check a version's files and make it current in one atomic rename of the 'current' "
               "link. A running 'catur serve --model DIR' picks it up at its next watch poll. A version "
               "whose recorded evaluation loses to greedy (worse average defect, or a 95% paired bootstrap "
               "interval over hosts wholly above greedy's) is refused with exit status 3 unless --force; "
               "a version with no recorded comparison is promoted.")
    q.add_argument("version", metavar="VERSION")
    q.add_argument("--reason", default="", help="recorded in the history")
    q.add_argument("--force", action="store_true", help="promote even if its recorded evaluation loses to greedy (the history says so)")
    q = action("rollback", cmd_models_rollback, "make the previously current version current again",
               "Return to the version that was current before the current one (repeat to go "
               "further back). It is checked first, as for promote.")
    q.add_argument("--reason", default="", help="recorded in the history")
    q = action("history", cmd_models_history, "list promotions, rollbacks and prunes",
               "The history of what was current: promotions, rollbacks and recoveries (a switch "
               "found without a history line, e.g. after a killed promotion), and the versions "
               "each prune removed, oldest first.")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q = action("prune", cmd_models_prune, "remove old versions (never the current one)",
               "Remove every version except the current one, the newest --keep, and the --keep "
               "versions that rollbacks would return to next. Each goes in one atomic rename out "
               "of versions/, then is deleted; the history records what went, so numbers are "
               "never reused.")
    q.add_argument("--keep", type=int, required=True, metavar="N", help="keep the N newest versions and N rollback targets besides the current one (0 = only the current one)")
    q.add_argument("--dry-run", action="store_true", help="list what would be removed; change nothing")
    q.add_argument("--reason", default="", help="recorded in the history")
