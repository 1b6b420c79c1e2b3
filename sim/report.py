"""Presenting an evaluation: the comparison table and the plots.

The table lists policies best first by average resource defect, with defects and ratios in
percent (the JSON keeps fractions). Plots are PNG files written with matplotlib's
non-interactive backend, so they work on servers without a display.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from catur.sim.evaluate import Evaluation

# A fixed colour per policy name, so a policy looks the same in every plot of every run (a
# colour given by position would change whenever the set of policies does). Related
# policies share a hue: a light shade is the shielded or variant form. Other names (none
# today) get a colour from a hash of the name, stable too.
POLICY_COLORS = {
    "catur": "#1f77b4", "catur+shield": "#aec7e8",
    "greedy": "#ff7f0e", "greedy+shield": "#ffbb78",
    "oracle": "#000000", "oracle-arrivals-only": "#7b4173",
    "resident-greedy": "#e6550d",
    "core-best-fit": "#2ca02c", "core-most-idle": "#98df8a",
    "mem-best-fit": "#bcbd22", "mem-most-idle": "#17becf",
    "xen": "#d62728", "nova-pack": "#9467bd", "nova-spread": "#c5b0d5",
    "e-pvm": "#8c564b", "tetris": "#e377c2", "random": "#7f7f7f",
}
_OTHER_COLORS = ("#ff9896", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def policy_style(name: str) -> tuple[str, str]:
    """``(colour, line style)`` of a policy in the plots: fixed by name; the oracle dashed."""
    color = POLICY_COLORS.get(name) or _OTHER_COLORS[zlib.crc32(name.encode()) % len(_OTHER_COLORS)]
    return color, "--" if name.startswith("oracle") else "-"


def format_table(evaluation: Evaluation) -> str:
    """A fixed-width table, best average defect first; percentages with 3 decimals."""
    rows = sorted(evaluation.results.values(), key=lambda r: (r.summary.avg_defect, r.name))
    has_correctable = any("correctable_anomalies" in r.extra for r in rows)
    header = f"{'policy':<15}{'avg defect':>12}{'at placement':>14}{'p99 defect':>12}{'ticket ratio':>14}{'anomalies':>11}"
    has_clean = any("placed_clean" in r.extra for r in rows)
    if has_correctable:
        header += f"{'correctable':>13}"
    if has_clean:
        header += f"{'clean':>8}"
    header += f"{'VMs':>10}"
    baseline = evaluation.scenario.get("baseline") if evaluation.versus else None
    if baseline:
        header += f"  {'vs ' + baseline + ' [95% CI]':<28}{'verdict':<14}"
    lines = [header, "-" * len(header)]
    if baseline:
        lines.insert(0, f"vs {baseline} = change of avg defect relative to {baseline}, with the 95% paired bootstrap interval "
                        "over hosts; verdict: clearly better/worse when the interval excludes 0")
    if has_clean:
        lines.insert(0, "clean = VMs placed with no vCPU overcommit on their nodes and no remote memory")
    if has_correctable:
        lines.insert(0, "correctable = anomalies the k-step oracle would have avoided / anomalies, on the oracle's sampled hosts")
    for r in rows:
        s = r.summary
        line = (
            f"{r.name:<15}{100 * s.avg_defect:>11.3f}%{100 * s.defect_at_placement:>13.3f}%"
            f"{100 * s.p99_defect:>11.2f}%{100 * s.ticket_ratio:>13.3f}%{s.anomalies:>11}"
        )
        if has_correctable:
            value = r.extra.get("correctable_anomalies")
            sampled = r.extra.get("oracle_sample_anomalies")
            cell = "-" if value is None else f"{value}/{sampled}"
            line += f"{cell:>13}"
        if has_clean:
            line += f"{r.extra.get('placed_clean', '-'):>8}"
        line += f"{s.vms:>10}"
        if baseline:
            line += "  " + versus_cell(evaluation.versus.get(r.name), r.name == baseline)
        lines.append(line)
    return "\n".join(lines)


def versus_cell(comparison, is_baseline: bool) -> str:
    """``-4.21% [-6.02, -2.33]  clearly better``: one policy against the baseline, relative."""
    if is_baseline:
        return f"{'(baseline)':<28}{'':<14}"
    if comparison is None or comparison.baseline_defect <= 0:
        return f"{'-':<28}{'':<14}"
    base = comparison.baseline_defect
    interval = "no interval" if not np.isfinite(comparison.diff_low) else \
        f"[{100 * comparison.diff_low / base:+.2f}, {100 * comparison.diff_high / base:+.2f}]"
    verdict = "clearly better" if comparison.clearly_better else "clearly worse" if comparison.clearly_worse else "within noise"
    text = f"{100 * comparison.diff / base:+.2f}% {interval}"
    if comparison.hosts and comparison.hosts < 3:
        verdict = f"{verdict} ({comparison.hosts} host{'s' * (comparison.hosts != 1)})"
    return f"{text:<28}{verdict:<14}"


def start_state_lines(scenario: dict) -> list[str]:
    """The header lines of a replay from a start state and of a labelled trace: hosts, their
    capacity and initial usage; rejections by reason and affinity members placed apart."""
    lines = []
    start = scenario.get("start_state")
    if start:
        models = "; ".join(
            f"{m['hosts']}× {name}: node cores {m['node_cores']}, GiB {m['node_mem_gib']}"
            for name, m in start["host_models"].items()
        )
        lines.append(
            f"start state {start['source']}: {start['hosts']} hosts ({start['capacity']} capacity: {models}); "
            f"{100 * start['used_vcpus_fraction']:.1f}% of vCPUs and {100 * start['used_mem_fraction']:.1f}% "
            f"of memory already used"
        )
    groups = scenario.get("placement_groups")
    if groups:
        reasons = ", ".join(f"{k} {v}" for k, v in groups["rejected_by_reason"].items())
        lines.append(
            f"placement groups: rejected by reason: {reasons}; affinity members placed apart from "
            f"their group: {groups['affinity_split_vms']} (in {groups['affinity_split_groups']} groups)"
        )
    return lines


def write_plots(evaluation: Evaluation, df: pd.DataFrame, origin_s: float, out_dir: str | Path) -> list[Path]:
    """Write ``defect_cdf.png``, ``daily_defect.png`` and ``daily_anomalies.png``; return paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(evaluation.results.values(), key=lambda r: r.summary.avg_defect)
    title = evaluation.scenario.get("trace", "")
    threshold = float(evaluation.scenario.get("anomaly_threshold", 0.40))
    color = {r.name: policy_style(r.name)[0] for r in order}
    style = {r.name: policy_style(r.name)[1] for r in order}
    paths = []

    fig, ax = plt.subplots(figsize=(10, 5))
    largest = 100 * threshold
    for r in order:
        values = np.sort(r.lifetime_defect)
        if values.size == 0:
            continue
        cdf = np.arange(1, values.size + 1) / values.size
        largest = max(largest, 100 * float(values[-1]))
        ax.plot(100 * values, cdf, label=r.name, linewidth=1.4, color=color[r.name], linestyle=style[r.name])
    # Anomalies are judged on the defect at placement, not on the lifetime average plotted
    # here; the line shows where the threshold lies on this scale.
    ax.axvline(100 * threshold, color="#555555", linestyle=":", linewidth=1.2,
               label=f"anomaly threshold ({100 * threshold:g}%, at placement)")
    # Most VMs have a defect of exactly 0 and the rest spread over three decades: linear up to
    # 0.1%, logarithmic above. A defect is never negative, so the axis starts at 0 (symlog's
    # own limits would give a third of the width to a negative range).
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(0.0, largest * 1.1)
    ax.set_xlabel("lifetime-averaged resource defect per VM (%; linear below 0.1, logarithmic above)")
    ax.set_ylabel("fraction of VMs with at most this defect")
    ax.set_ylim(0.0, 1.001)
    ax.set_title(f"Defect CDF — {title}")
    ax.grid(alpha=0.3)
    # Outside the axes: with a dozen policies, any corner inside hides some curve's tail.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    paths.append(out / "defect_cdf.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    daily = evaluation.per_day(df, origin_s)
    for column, label, heading, name in (
        ("avg_defect", "average resource defect (%)", "Average resource defect per day", "daily_defect.png"),
        ("anomalies", f"performance anomalies (defect at placement > {100 * threshold:g}%)",
         f"Performance anomalies per day (defect at placement > {100 * threshold:g}%)", "daily_anomalies.png"),
    ):
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in order:
            part = daily[daily.policy == r.name]
            scale = 100 if column == "avg_defect" else 1
            ax.plot(part["day"], scale * part[column], marker="o", markersize=3, label=r.name,
                    color=color[r.name], linestyle=style[r.name])
        ax.set_xlabel("day of trace (by VM arrival)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{heading} — {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(out / name)
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
