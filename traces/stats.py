"""Summary statistics of a canonical trace: what a workload looks like before you replay it.

:func:`trace_stats` answers the first questions one asks of a trace: how many VMs over how
long, which flavors (vCPU, memory) dominate, how big VMs get, how many are still running at
the end, and how many VMs (and how many vCPUs and GiB) are live at once at the peak, which is
what sizes the cluster a replay needs. :func:`format_stats` prints it for people; the dict
itself is JSON-ready (plain ints, floats and lists) for machines.

Peak concurrency is computed by a sweep: every arrival is a +1 event and every departure a
-1 event at its time; sorted by time, the running sum is the number of live VMs, and its
maximum is the peak. At equal times departures go first, so a VM leaving at second t frees
its place for one arriving at t (as a scheduler would see it) and back-to-back VMs are not
counted twice. VMs still running (``departure_s`` NaN) simply never leave. The same sweep
weighted by vCPUs or GiB gives the peak demand; each peak is taken on its own, so the three
peaks may fall at different moments.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from catur.traces.events import running_total

_PERCENTILES = (50, 90, 99)
_TOP_FLAVORS = 10


def _peak(
    arrival: np.ndarray, departure: np.ndarray, weight: np.ndarray | None
) -> tuple[float, float]:
    """Max of the live sum and the first time it is reached (NaN departures never leave)."""
    times, live = running_total(arrival, departure, None if weight is None else weight.astype(np.float64))
    at = int(np.argmax(live))
    return float(live[at]), float(times[at])


def _distribution(values: np.ndarray) -> dict[str, float]:
    out = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    for p, v in zip(_PERCENTILES, np.percentile(values, _PERCENTILES)):
        out[f"p{p}"] = float(v)
    return out


def trace_stats(df: pd.DataFrame) -> dict:
    """Statistics of a canonical trace (see module docs); an empty trace gives zero counts.

    Keys: ``vms``, ``start_s``, ``end_s`` (last arrival or departure), ``span_s``,
    ``span_days``, ``still_running`` and ``still_running_share``, ``vcpus`` and ``mem_gib``
    (each ``mean, min, max, p50, p90, p99``), ``top_flavors`` (list of ``{vcpus, mem_gib,
    count, share}``, most common first), ``flavors`` (distinct count), ``peak_live_vms`` and
    ``peak_live_vms_at_s``, ``peak_vcpus``, ``peak_mem_gib``. Only when the trace has the
    column: ``vnuma`` (VMs per explicit vNUMA count), ``placement_groups`` (per strategy:
    ``vms``, ``groups``, ``largest``).
    """
    n = len(df)
    if n == 0:
        return {"vms": 0, "span_s": 0.0, "span_days": 0.0, "still_running": 0,
                "still_running_share": 0.0, "top_flavors": [], "flavors": 0,
                "peak_live_vms": 0, "peak_vcpus": 0, "peak_mem_gib": 0.0}
    arrival = df["arrival_s"].to_numpy(np.float64)
    departure = df["departure_s"].to_numpy(np.float64)
    vcpus = df["vcpus"].to_numpy(np.int64)
    mem = df["mem_gib"].to_numpy(np.float64)
    start = float(arrival.min())
    leaves = ~np.isnan(departure)
    end = float(max(arrival.max(), departure[leaves].max() if leaves.any() else -math.inf))
    running = int((~leaves).sum())

    flavors = (pd.DataFrame({"vcpus": vcpus, "mem_gib": mem})
               .value_counts(sort=False).reset_index(name="count")
               # Ties broken by size, so the list is the same on every run.
               .sort_values(["count", "vcpus", "mem_gib"], ascending=[False, True, True]))
    top = [{"vcpus": int(r.vcpus), "mem_gib": float(r.mem_gib), "count": int(r.count),
            "share": float(r.count) / n}
           for r in flavors.head(_TOP_FLAVORS).itertuples(index=False)]

    peak_vms, peak_at = _peak(arrival, departure, None)
    peak_vcpus, _ = _peak(arrival, departure, vcpus)
    peak_mem, _ = _peak(arrival, departure, mem)
    optional = {}
    if "vnuma" in df.columns:
        counts = pd.to_numeric(df["vnuma"], errors="coerce").fillna(0).astype(np.int64).value_counts().sort_index()
        optional["vnuma"] = {int(k): int(v) for k, v in counts.items() if k > 0}
    if "strategy" in df.columns and "group" in df.columns:
        labelled = df.loc[df["strategy"].notna(), ["strategy", "group"]]
        sizes = labelled.groupby(["strategy", "group"]).size()
        optional["placement_groups"] = {
            str(strategy): {"vms": int(part.sum()), "groups": int(part.size), "largest": int(part.max())}
            for strategy, part in sizes.groupby(level=0)
        }
    return {
        **optional,
        "vms": n,
        "start_s": start,
        "end_s": end,
        "span_s": end - start,
        "span_days": (end - start) / 86400.0,
        "still_running": running,
        "still_running_share": running / n,
        "vcpus": _distribution(vcpus.astype(np.float64)),
        "mem_gib": _distribution(mem),
        "flavors": int(len(flavors)),
        "top_flavors": top,
        "peak_live_vms": int(peak_vms),
        "peak_live_vms_at_s": peak_at,
        "peak_vcpus": int(peak_vcpus),
        "peak_mem_gib": peak_mem,
    }


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def format_stats(stats: dict) -> str:
    """A human-readable, multi-line rendering of :func:`trace_stats`'s result."""
    if stats["vms"] == 0:
        return "empty trace: 0 VMs"
    lines = [
        f"VMs            {stats['vms']:,}",
        f"time span      {stats['span_s']:,.0f} s ({stats['span_days']:.2f} days), "
        f"from {_num(stats['start_s'])} s to {_num(stats['end_s'])} s",
        f"still running  {stats['still_running']:,} ({stats['still_running_share']:.1%}) "
        "at the end",
        f"peak live      {stats['peak_live_vms']:,} VMs "
        f"(first at {_num(stats['peak_live_vms_at_s'])} s), "
        f"{stats['peak_vcpus']:,} vCPUs, {_num(stats['peak_mem_gib'])} GiB",
    ]
    for key, unit in (("vcpus", "vCPUs"), ("mem_gib", "GiB")):
        d = stats[key]
        lines.append(
            f"{unit:<6} per VM  mean {d['mean']:.2f}, p50 {_num(d['p50'])}, p90 {_num(d['p90'])}, "
            f"p99 {_num(d['p99'])}, min {_num(d['min'])}, max {_num(d['max'])}"
        )
    lines.append(f"flavors        {stats['flavors']:,} distinct (vCPUs, GiB); most common:")
    for f in stats["top_flavors"]:
        lines.append(f"  {f['vcpus']:>4} vCPU {_num(f['mem_gib']):>8} GiB  "
                     f"{f['count']:>10,}  {f['share']:6.1%}")
    if stats.get("vnuma"):
        shown = ", ".join(f"{k}: {v:,}" for k, v in stats["vnuma"].items())
        lines.append(f"vNUMA asked     {shown} VMs (by explicit instance count)")
    for strategy, g in stats.get("placement_groups", {}).items():
        lines.append(f"group {strategy:<14} {g['vms']:,} VMs in {g['groups']:,} groups (largest {g['largest']:,})")
    return "\n".join(lines)
