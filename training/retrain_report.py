"""The report of a ``catur retrain`` run: JSON for machines, Markdown and plots for people.

:func:`write_report` writes into one directory:

* ``report.json`` — the run exactly as :meth:`catur.training.retrain.RetrainOutcome.to_json`
  gives it: status, exit code and reason; the registry's current version before and after;
  the recent window; per cluster, the model's average defect against every primitive and
  greedy *before* (the current model) and *after* (the best candidate, when there was a
  fine-tune); every iteration; the drift signals;
* ``report.md`` — the same as tables, with the verdict first;
* ``defect_by_cluster.png`` — per cluster, bars of the average defect of the model before
  and after and of each primitive and greedy: a collapse is a "model" bar above a primitive's;
* ``drift.png`` — reference against recent histograms of vCPUs, memory and (capped)
  lifetimes, each titled with its PSI and KS.

Only the JSON is needed by a scheduler; the rest reads the JSON (and the raw drift samples,
which are not stored) and can be regenerated from it, except the histograms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from catur.policies import PRIMITIVES

FEATURE_LABELS = {"vcpus": "vCPUs", "mem_gib": "memory (GiB)", "lifetime_s": "lifetime (s, capped)"}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.3f}%"


def _cluster_name(group: str) -> str:
    return group or "(all)"


def markdown(data: dict) -> str:
    """The Markdown report for a ``report.json`` dict."""
    lines = [f"# catur retrain: {data['status']}", ""]
    head = f"**Exit code {data['exit_code']}**"
    if data.get("promoted"):
        head += f" — promoted **{data['promoted']}**"
    lines += [f"{head}. {data['reason']}", ""]
    window = data["window"]
    lines += [
        f"- registry: `{data['registry']}`; current before: `{data['current_before']}`, after: `{data['current_after']}`"
        + (" (dry run)" if data.get("dry_run") else ""),
        f"- recent window: days {window['recent_days']} of `{window['trace']}`: {window['vms']:,} VMs on "
        f"{window['hosts']} hosts, grouped by {window['group_by']}",
        f"- wall time: {data['wall_s']:.0f} s, {len(data['iterations'])} fine-tuning iteration(s)",
        "",
        "## Per cluster: the model against every primitive and greedy (average defect on the recent window)",
        "",
        "A verdict counts only a clear difference: the 95% paired bootstrap interval over the "
        "cluster's hosts of (model - rule) wholly above 0.",
        "",
    ]
    after = data.get("after") or {}
    columns = ["cluster", "VMs", "model before"] + (["model after"] if after else []) + list(PRIMITIVES) + ["greedy", "verdict"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for group, before in data["before"].items():
        row = [_cluster_name(group), f"{before['vms']:,}", _pct(before["avg_defect"])]
        verdict = _verdict(before)
        if after:
            later = after.get(group)  # an improved model is judged on the held-out days: a group may be absent
            row.append(_pct(later["avg_defect"]) if later else "—")
            verdict += " → " + (_verdict(later) if later else "not in the held-out days")
        row += [_pct(before["primitives"][p]) for p in PRIMITIVES] + [_pct(before["greedy"]), verdict]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "![defect by cluster](defect_by_cluster.png)", ""]
    if data["iterations"]:
        lines += [
            "## Fine-tuning iterations",
            "",
            "| # | from | on clusters | hosts | wall s | passes | worst gap to the best rule (primitives, greedy) |",
            "|---|---|---|---:|---:|---|---:|",
        ]
        for it in data["iterations"]:
            gaps = [c["gap_to_best_baseline"] for c in it["clusters"].values()]
            lines.append(
                f"| {it['iteration']} | {it['fine_tuned_from']} | {', '.join(map(_cluster_name, it['fine_tuned_on']))} | "
                f"{it['hosts']} | {it['wall_s']:.0f} | {'yes' if it['passes'] else 'no'} | {100 * max(gaps, default=0):+.1f}% |"
            )
        lines.append("")
    versus = data.get("versus_greedy") or {}
    if versus.get("before"):
        lines += ["## Against greedy on the whole window", "", f"Rule: a model {versus.get('rule', '')}.", ""]
        for when in ("before", "after"):
            c = versus.get(when)
            if c:
                ci = c["diff_ci"]
                interval = f"{100 * ci[0]:+.3f} to {100 * ci[1]:+.3f} points" if ci[0] is not None else "no interval"
                lines.append(
                    f"- model {when}: {_pct(c['model_avg_defect'])} vs greedy {_pct(c['baseline_avg_defect'])} "
                    f"(95% CI of the difference {interval}; {c['hosts']} hosts): {c['outcome']}"
                    + (" — **loses**" if c["loses"] else "")
                )
        lines.append("")
    lines += _improvement_markdown(data.get("improvement"))
    lines += _drift_markdown(data.get("drift") or {})
    return "\n".join(lines) + "\n"


def _improvement_markdown(improvement: dict | None) -> list[str]:
    """The improvement step of a healthy run: windows, the candidate against the current model."""
    if not improvement:
        return []
    lines = ["## Improving the healthy model", ""]
    if not improvement.get("attempted"):
        return lines + [f"Not attempted: {improvement.get('reason', '')}", ""]
    lines.append(f"Trained on days {improvement['train_days']}, selected on days {improvement['select_days']}, judged on held-out "
                 f"days {improvement['holdout_days']} ({improvement.get('wall_s', 0):.0f} s).")
    lines.append("")
    for key, name in (("versus_current", "current model"), ("versus_greedy", "greedy")):
        c = improvement.get(key)
        if c:
            ci = c["diff_ci"]
            interval = f"{100 * ci[0]:+.3f} to {100 * ci[1]:+.3f} points" if ci[0] is not None else "no interval"
            lines.append(f"- candidate {_pct(c['model_avg_defect'])} vs {name} {_pct(c['baseline_avg_defect'])} (95% CI of the "
                         f"difference {interval}; {c['hosts']} hosts): {c['outcome']}")
    lines += ["", f"**{'Promoted' if improvement.get('promote') else 'Not promoted'}**: {improvement['reason']}", ""]
    return lines


def _verdict(entry: dict) -> str:
    if entry["clear_losses"]:
        return "clearly worse than " + ", ".join(entry["clear_losses"])
    return "beats all primitives" if entry["beats_every_primitive"] else "no clear loss"


def _drift_markdown(drift: dict) -> list[str]:
    lines = ["## Drift of the request mix (early warnings)", ""]
    if drift.get("reference_days") is None:
        lines += [f"Not measured: {drift.get('reference_is', 'no reference window')}.", ""]
    else:
        lines += [
            f"Reference: days {drift['reference_days']} ({drift['reference_is']}); recent: days {drift['recent_days']}. "
            "PSI < 0.1 stable, 0.1–0.25 moderate, > 0.25 significant.",
            "",
            "| feature | PSI | level | KS | p-value | reference mean | recent mean | VMs (reference / recent) |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for name, f in (drift.get("features") or {}).items():
            lines.append(
                f"| {FEATURE_LABELS.get(name, name)} | {f['psi']:.3f} | {f['level']} | {f['ks']:.3f} | {f['p_value']:.2g} | "
                f"{f['reference_mean']:.4g} | {f['recent_mean']:.4g} | {f['n_reference']:,} / {f['n_recent']:,} |"
            )
        lines += ["", "![drift](drift.png)", ""]
    if "gate_rate_recent" in drift:
        text = f"Uncertainty-gate rate of the current model: {100 * drift['gate_rate_recent']:.2f}% of observations in the recent window"
        if "gate_rate_reference" in drift:
            text += f", {100 * drift['gate_rate_reference']:.2f}% in the reference window"
        lines += [text + " (its threshold is the training data's 99.9th percentile: about 0.1% on data like it).", ""]
    return lines


def plot_defects(data: dict, path: Path) -> None:
    """Grouped bars per cluster: model before / after, each primitive, greedy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(data["before"])
    after = data.get("after") or {}
    series = [("model before", [data["before"][g]["avg_defect"] for g in groups])]
    if after:
        series.append(("model after", [after[g]["avg_defect"] for g in groups]))
    for p in PRIMITIVES:
        series.append((p, [data["before"][g]["primitives"][p] for g in groups]))
    series.append(("greedy", [data["before"][g]["greedy"] or 0.0 for g in groups]))
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(groups) + 3), 4.0))
    for i, (label, values) in enumerate(series):
        hatch = "//" if label.startswith("model") else None
        ax.bar(x + (i - (len(series) - 1) / 2) * width, 100 * np.asarray(values), width, label=label, hatch=hatch)
    ax.set_xticks(x, [_cluster_name(g) for g in groups])
    ax.set_ylabel("average defect (%)")
    ax.set_title(f"days {data['window']['recent_days']}: the model against every primitive ({data['status']})")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drift(samples: dict, drift: dict, path: Path) -> None:
    """Reference vs recent histograms of each drift feature (shares of VMs, shared bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in FEATURE_LABELS if len(samples.get("reference", {}).get(n, ())) and len(samples.get("recent", {}).get(n, ()))]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4))
    for ax, name in zip(np.atleast_1d(axes), names):
        ref, rec = np.asarray(samples["reference"][name], float), np.asarray(samples["recent"][name], float)
        both = np.concatenate([ref, rec])
        low, high = max(both.min(), 1e-3), max(both.max(), 1e-3 * 1.01)
        bins = np.geomspace(low, high * 1.0001, 30) if high / low > 50 else np.linspace(both.min(), both.max() + 1e-9, 30)
        # Shares of VMs, not densities: on log-spaced bins a density would shrink the wide bins.
        ax.hist(ref, bins=bins, weights=np.full(ref.size, 1 / ref.size), alpha=0.55, label="reference")
        ax.hist(rec, bins=bins, weights=np.full(rec.size, 1 / rec.size), alpha=0.55, label="recent")
        ax.set_ylabel("share of VMs")
        if high / low > 50:
            ax.set_xscale("log")
        f = (drift.get("features") or {}).get(name)
        ax.set_title(f"{FEATURE_LABELS[name]}" + (f"\nPSI {f['psi']:.3f} ({f['level']}), KS {f['ks']:.3f}" if f else ""), fontsize="medium")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(data: dict, directory: str | Path, drift_samples: dict | None = None) -> Path:
    """Write ``report.json``, ``report.md`` and the plots into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    (directory / "report.md").write_text(markdown(data))
    plot_defects(data, directory / "defect_by_cluster.png")
    if drift_samples:
        plot_drift(drift_samples, data.get("drift") or {}, directory / "drift.png")
    return directory
