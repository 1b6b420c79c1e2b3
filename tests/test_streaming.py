"""Traces at scale: exact mergeable summaries, lock-step admission, partitioned traces, streaming.

What must hold, and how it is checked:

* the summary folded batch by batch (:mod:`catur.exact`, :class:`catur.metrics.SummaryAccumulator`) is *identical* to
  :func:`catur.metrics.summarize` of all values, and its sum and percentile are those of
  ``math.fsum`` and ``numpy.percentile`` (hypothesis, many generated arrays and splits);
* lock-step first fit over many clusters (:func:`catur.sim.admission.first_fit`) takes the
  same host for every VM as a plain per-event first-fit loop (the rule written out below);
* a large synthetic trace is the same rows whatever the file size or worker count, and each
  cluster is the same whatever comes after it;
* a partitioned trace evaluated in batches of clusters gives the same numbers as the same
  trace read whole and evaluated at once (every policy kind, incl. the shipped model with a
  depth-1 shield); memory is bounded *structurally*: no batch holds more than the batch size
  (or one cluster), and the accumulators keep at most ~3% of the values;
* bad files give errors naming the file, the row and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catur.exact import ExactSum, TopValues, percentile_from_top, top_needed
from catur.metrics import SummaryAccumulator
from catur.cli import main
from catur.decision import DeciderSpec
from catur.errors import CaturError
from catur.metrics import MetricsConfig, summarize
from catur.shield import ShieldConfig
from catur.sim.admission import first_fit, prepare_scenario
from catur.sim.cluster import ClusterSpec, load_cluster
from catur.sim.evaluate import Evaluation, evaluate_policies
from catur.sim.streaming import StreamConfig, evaluate_streamed
from catur.topology import PRESETS
from catur.traces.events import event_order
from catur.traces.partitioned import MANIFEST, PartitionedTrace, PartitionedWriter, is_partitioned
from catur.traces.readers import read_trace
from catur.traces.scale import cluster_label, generate_cluster, generate_clusters, write_synthetic
from catur.traces.synthetic import SCENARIOS

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAN = float("nan")

# A cluster of a few hundred VMs over 4 days: small enough to replay many of them in seconds.
TINY = replace(SCENARIOS["default"], name="tiny", days=4.0, arrivals_per_hour=6.0, peak_concurrency=120, warmup_days=3.0)
TINY_MULTI = replace(SCENARIOS["multi-cluster"], name="tiny-multi", days=4.0, arrivals_per_hour=9.0,
                     peak_concurrency=150, warmup_days=3.0)


# --- exact, mergeable summaries -----------------------------------------------------------------

finite = st.one_of(  # any magnitude a sum of 60 values cannot overflow, subnormals included
    st.floats(min_value=-1e300, max_value=1e300), st.floats(min_value=-1e-300, max_value=1e-300)
)
defects = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)


@settings(max_examples=300, **SETTINGS)
@given(st.lists(finite, max_size=60), st.lists(st.integers(0, 60), max_size=4))
def test_exact_sum_is_fsum_in_any_batching(values, cuts):
    """ExactSum over any split of the values equals math.fsum of them all (cancellation,
    subnormals and huge magnitudes included), and merging partial sums changes nothing."""
    x = np.array(values, dtype=float)
    parts = np.split(x, sorted(c for c in cuts if c <= x.size))
    whole, merged = ExactSum(), ExactSum()
    whole.add(x)
    for part in parts:
        piece = ExactSum()
        piece.add(part)
        merged.merge(piece)
    assert whole.value() == merged.value() == math.fsum(values)
    assert whole.count == merged.count == x.size


def test_exact_sum_refuses_nan():
    with pytest.raises(CaturError, match="finite"):
        ExactSum().add(np.array([1.0, NAN]))


@settings(max_examples=400, **SETTINGS)
@given(st.lists(st.one_of(defects, st.just(0.0), st.just(0.4)), min_size=1, max_size=400),
       st.sampled_from([99.0, 50.0, 90.0, 99.9]))
def test_percentile_from_top_is_numpy_percentile(values, q):
    """From only the top values and the count, the percentile is numpy's, bit for bit."""
    x = np.array(values)
    need = top_needed(x.size, q)
    top = np.sort(x)[x.size - need :]
    np.random.default_rng(0).shuffle(top)  # any order
    assert percentile_from_top(top, x.size, q) == np.percentile(x, q)


def test_top_needed_never_shrinks():
    """Keeping the top count of an upper bound on n is always enough (the streaming argument)."""
    counts = [top_needed(n) for n in range(1, 20_000)]
    assert all(b >= a for a, b in zip(counts, counts[1:]))
    assert top_needed(100_000_000) == 1_000_001


@settings(max_examples=150, **SETTINGS)
@given(st.lists(st.tuples(defects, defects), min_size=1, max_size=300), st.lists(st.integers(0, 300), max_size=5),
       st.integers(0, 50))
def test_summary_accumulator_equals_summarize(pairs, cuts, slack):
    """Batches folded in any split and order, with any capacity >= n, give summarize()'s Summary."""
    life = np.array([p[0] for p in pairs])
    placed = np.array([p[1] for p in pairs])
    config = MetricsConfig(anomaly_threshold=0.3)
    acc = SummaryAccumulator(config, capacity=life.size + slack)
    bounds = [0, *sorted(c for c in cuts if c <= life.size), life.size]
    for a, b in reversed(list(zip(bounds, bounds[1:]))):  # reversed: order must not matter
        acc.add(life[a:b], placed[a:b])
    assert acc.result() == summarize(life, placed, config)


def test_summary_accumulator_capacity_is_enforced():
    acc = SummaryAccumulator(capacity=3)
    acc.add(np.zeros(3), np.zeros(3))
    with pytest.raises(CaturError, match="capacity"):
        acc.add(np.zeros(1), np.zeros(1))


def test_top_values_memory_stays_bounded():
    """However many values pass through, at most 3k are held (here k = 1% of 200,000)."""
    top = TopValues(2_000)
    rng = np.random.default_rng(1)
    most = 0
    for _ in range(100):
        top.add(rng.random(2_000))
        most = max(most, top.held)
    assert most <= 3 * 2_000
    assert np.array_equal(np.sort(top.values()), np.sort(top.values()))


# --- lock-step first fit ----------------------------------------------------------------------


def plain_first_fit(arrival, departure, vcpus, mem_mib, spec: ClusterSpec) -> np.ndarray:
    """The admission rule written out one event at a time (the pre-lock-step implementation)."""
    cores, mem = spec.host_capacity()
    free_v = np.floor(cores * spec.cpu_overcommit).astype(np.int64)
    free_m = mem.copy()
    host_of = np.full(arrival.size, -1)
    vms, arriving = event_order(arrival, departure)
    for vm, arrives in zip(vms.tolist(), arriving.tolist()):
        if arrives:
            fits = np.flatnonzero((free_v >= vcpus[vm]) & (free_m >= mem_mib[vm]))
            if fits.size:
                host_of[vm] = fits[0]
                free_v[fits[0]] -= vcpus[vm]
                free_m[fits[0]] -= mem_mib[vm]
        elif host_of[vm] >= 0:
            free_v[host_of[vm]] += vcpus[vm]
            free_m[host_of[vm]] += mem_mib[vm]
    return host_of


SPECS = [
    ClusterSpec("intel", ((PRESETS["intel-2s"], 2),), 1.0),
    ClusterSpec("mixed", ((PRESETS["intel-2s"], 1), (PRESETS["amd-2s-nps2"], 2)), 1.5),
    ClusterSpec("nps4", ((PRESETS["amd-2s-nps4"], 3),), 1.25),
    ClusterSpec("one", ((PRESETS["amd-2s-nps2"], 1),), 1.0),
]


@st.composite
def cluster_traces(draw):
    """Up to 30 VMs on a coarse clock (ties, instant departures, VMs running to the end)."""
    n = draw(st.integers(0, 30))
    arrival = np.array(draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)), dtype=float)
    life = draw(st.lists(st.one_of(st.none(), st.integers(0, 15)), min_size=n, max_size=n))
    departure = np.array([NAN if l is None else a + l for a, l in zip(arrival, life)], dtype=float)
    vcpus = np.array(draw(st.lists(st.sampled_from([1, 2, 8, 32, 64, 100, 130]), min_size=n, max_size=n)), dtype=np.int64)
    mem = np.array(draw(st.lists(st.sampled_from([512, 4096, 65536, 150000, 260000]), min_size=n, max_size=n)), dtype=np.int64)
    return arrival, departure, vcpus, mem, draw(st.sampled_from(SPECS))


@pytest.mark.slow
@settings(max_examples=250, **SETTINGS)
@given(st.lists(cluster_traces(), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_lock_step_first_fit_equals_the_plain_loop(clusters, rnd):
    """Many clusters in lock-step (rows interleaved in any order) place every VM where the
    plain loop, run on each cluster alone, places it."""
    sizes = [c[0].size for c in clusters]
    n = sum(sizes)
    rows = list(range(n))
    rnd.shuffle(rows)  # cluster rows scattered over the arrays, as in a real trace
    groups = np.split(np.array(rows, dtype=np.int64), np.cumsum(sizes)[:-1])
    arrival, departure = np.zeros(n), np.zeros(n)
    vcpus, mem = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for (a, d, v, m, _), g in zip(clusters, groups):
        arrival[g], departure[g], vcpus[g], mem[g] = a, d, v, m
    got = first_fit(vcpus, mem, arrival, departure, groups, [c[4] for c in clusters])
    for (a, d, v, m, spec), g in zip(clusters, groups):
        assert got[g].tolist() == plain_first_fit(a, d, v, m, spec).tolist()


def test_admit_many_clusters_equals_each_alone():
    """admit() of a multi-cluster trace gives each cluster the hosts it gets admitted alone."""
    df = pd.concat([generate_cluster(TINY, 5, i) for i in range(4)], ignore_index=True)
    together = prepare_scenario(df, "mixed", None, 0.9).admission
    offset = 0
    for label in sorted(df["cluster"].unique()):
        rows = np.flatnonzero(df["cluster"].to_numpy() == label)
        alone = prepare_scenario(df.iloc[rows].reset_index(drop=True).drop(columns="cluster"), "mixed", None, 0.9).admission
        got = together.host_of_vm[rows]
        assert np.array_equal(np.where(got >= 0, got - offset, -1), alone.host_of_vm)
        assert together.specs[label] == alone.specs[""]
        offset += alone.num_hosts
    assert offset == together.num_hosts


# --- generating large traces --------------------------------------------------------------------


def test_generation_is_independent_of_chunking(tmp_path):
    """Files of different sizes and 1 or 2 worker processes write exactly the same rows; each
    cluster is generate() with its own seed; vm_id runs on; the total just passes --vms."""
    a = write_synthetic(TINY, 2_000, tmp_path / "a", seed=3, rows_per_file=500)
    b = write_synthetic(TINY, 2_000, tmp_path / "b", seed=3, rows_per_file=10**6, jobs=2)
    assert a["rows"] == b["rows"] and a["clusters"] == b["clusters"] and len(a["files"]) > len(b["files"]) == 1
    da, _, _ = PartitionedTrace.open(tmp_path / "a").read_all()
    db, _, _ = PartitionedTrace.open(tmp_path / "b").read_all()
    pd.testing.assert_frame_equal(da, db)
    clusters = [generate_cluster(TINY, 3, i) for i in range(a["clusters"])]
    sizes = [len(c) for c in clusters]
    assert sum(sizes[:-1]) < 2_000 <= sum(sizes) == a["rows"]
    assert sorted(da["vm_id"]) == list(range(a["rows"]))
    first = da[da["cluster"] == cluster_label(0)].sort_values("vm_id")
    assert first["arrival_s"].tolist() == clusters[0]["arrival_s"].tolist()
    # A longer trace starts with the same clusters: cluster i never depends on what follows.
    longer = pd.concat(list(generate_clusters(TINY, 3_000, seed=3)), ignore_index=True)
    assert longer.iloc[: a["rows"]]["vm_id"].tolist() == list(range(a["rows"]))
    pd.testing.assert_frame_equal(
        longer.iloc[: a["rows"]].sort_values(["arrival_s", "vm_id"], ignore_index=True).drop(columns="cluster"),
        da.drop(columns="cluster"), check_dtype=False,
    )


def test_multi_cluster_scenario_keeps_its_clusters(tmp_path):
    manifest = write_synthetic(TINY_MULTI, 1_000, tmp_path / "m", seed=1)
    trace = PartitionedTrace.open(tmp_path / "m")
    assert trace.num_rows == manifest["rows"]
    assert trace.clusters[:3] == ["c000000-compute-optimized", "c000000-general", "c000000-memory-optimized"]
    assert manifest["clusters"] == len(trace.clusters)


def test_generate_command(tmp_path, capsys):
    """`catur traces generate` writes a directory or one file; bad requests are one-line errors."""
    out = tmp_path / "month"
    assert main(["traces", "generate", "--scenario", "default", "--vms", "40000", "--days", "3",
                 "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["rows"] >= 40_000 and manifest["days"] == 3.0
    assert manifest["scenario"] == "default" and manifest["clusters"] >= 2
    assert read_trace(out)[1].format == "partitioned"
    single = tmp_path / "one.parquet"
    assert main(["traces", "generate", "--days", "2", "--out", str(single), "--quiet"]) == 0
    assert pd.read_parquet(single)["cluster"].unique().tolist() == ["c000000"]
    capsys.readouterr()
    assert main(["traces", "generate", "--days", "2", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["traces", "generate", "--vms", "6000000", "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2
    assert "give a directory" in capsys.readouterr().err
    assert main(["traces", "generate", "--vms", "0", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "vms must be" in capsys.readouterr().err


# --- reading partitioned traces -----------------------------------------------------------------


def test_unfinished_or_changed_directories_are_refused(tmp_path):
    with PartitionedWriter(tmp_path / "ok", rows_per_file=10) as writer:
        writer.write_cluster(generate_cluster(TINY, 0, 0))
    assert PartitionedTrace.open(tmp_path / "ok").num_rows > 0
    writer = PartitionedWriter(tmp_path / "cut")
    writer.write_cluster(generate_cluster(TINY, 0, 0))
    writer.abort()  # killed mid-way: no complete manifest
    with pytest.raises(CaturError, match="unfinished"):
        PartitionedTrace.open(tmp_path / "cut")
    extra = tmp_path / "ok" / "stray.parquet"
    generate_cluster(TINY, 0, 1).to_parquet(extra)
    with pytest.raises(CaturError, match="manifest says"):
        PartitionedTrace.open(tmp_path / "ok")


def write_plain(directory: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Parquet files written without our writer: several clusters per row group."""
    directory.mkdir()
    for name, df in frames.items():
        df.to_parquet(directory / name, row_group_size=150)


def test_foreign_directory_with_mixed_row_groups(tmp_path):
    """A directory written by other tools (clusters sharing row groups, a Hive-style folder
    without the column) reads back to the same clusters and rows."""
    df = pd.concat([generate_cluster(TINY, 2, i) for i in range(3)], ignore_index=True)
    df["vm_id"] = np.arange(len(df))
    shuffled = df.sample(frac=1.0, random_state=0)
    write_plain(tmp_path / "d", {"x.parquet": shuffled.iloc[: len(df) // 2], "y.parquet": shuffled.iloc[len(df) // 2 :]})
    hive = tmp_path / "d" / "cluster=zz"
    hive.mkdir()
    generate_cluster(TINY, 9, 0).drop(columns="cluster").assign(vm_id=lambda f: f["vm_id"] + 10**6).to_parquet(hive / "p.parquet")
    assert is_partitioned(tmp_path / "d")
    trace = PartitionedTrace.open(tmp_path / "d")
    assert trace.clusters == sorted(df["cluster"].unique()) + ["zz"]
    part, _, _ = trace.read(["c000001"])
    expected = df[df["cluster"] == "c000001"].sort_values(["arrival_s", "vm_id"], ignore_index=True)
    pd.testing.assert_frame_equal(part, expected, check_dtype=False)
    assert set(trace.read(["zz"])[0]["cluster"]) == {"zz"}


def test_bad_rows_name_the_file_and_row(tmp_path):
    df = generate_cluster(TINY, 0, 0)
    df.loc[41, "vcpus"] = 0
    df.loc[77, "mem_gib"] = -1.0
    write_plain(tmp_path / "d", {"bad.parquet": df})
    trace = PartitionedTrace.open(tmp_path / "d")
    with pytest.raises(CaturError, match=r"bad\.parquet, row 42 \(vm 41\): field 'vcpus' = 0: must be >= 1 \(1 more bad row"):
        trace.read(trace.clusters)
    clean, skipped, reasons = trace.read(trace.clusters, skip_bad_rows=True)
    assert skipped == 2 and len(clean) == len(df) - 2 and "row 78" in reasons[1]
    (tmp_path / "d2").mkdir()
    df.drop(columns="vcpus").to_parquet(tmp_path / "d2" / "f.parquet")
    with pytest.raises(CaturError, match=r"f\.parquet: missing column\(s\) vcpus"):
        PartitionedTrace.open(tmp_path / "d2")
    (tmp_path / "d3").mkdir()
    df.drop(columns="cluster").to_parquet(tmp_path / "d3" / "g.parquet")
    with pytest.raises(CaturError, match=r"g\.parquet: missing column\(s\) cluster"):
        PartitionedTrace.open(tmp_path / "d3")


def test_batches_keep_clusters_whole(tmp_path):
    write_synthetic(TINY, 3_000, tmp_path / "t", seed=4)
    trace = PartitionedTrace.open(tmp_path / "t")
    for size in (1, 700, 1_500, 10**9):
        batches = trace.batches(size)
        assert [c for b in batches for c in b] == trace.clusters
        for batch in batches:
            rows = sum(trace.cluster_rows[c] for c in batch)
            assert rows <= size or len(batch) == 1


# --- streamed evaluation ------------------------------------------------------------------------

POLICIES = ["xen", "random", "greedy", DeciderSpec(model="default", shield=ShieldConfig(depth=1))]


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> Path:
    """Six tiny clusters (~3,700 VMs) over 4 days, in three files."""
    out = tmp_path_factory.mktemp("scale") / "month"
    write_synthetic(TINY, 3_500, out, seed=11, rows_per_file=1_300)
    return out


def in_memory(month: Path, days: str, cpu_overcommit: float | None = None):
    df, _ = read_trace(month)
    scenario = prepare_scenario(df, "mixed", days, 0.9, cpu_overcommit)
    return df, scenario, evaluate_policies(scenario.streams, POLICIES, jobs=1, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("batch_vms, days", [(1, "2:4"), (2_000, "3:"), (10**9, None)])
def test_streamed_evaluation_equals_in_memory(month, batch_vms, days):
    """Batches of 1, ~3 or all clusters give the in-memory summaries exactly, the same per-VM
    defects, the same shield/gate counters, hosts, rejections and window."""
    df, scenario, expected = in_memory(month, days, 1.3)
    trace = PartitionedTrace.open(month)
    seen: list[int] = []
    spec = replace(load_cluster("mixed"), cpu_overcommit=1.3)
    evaluation, streamed, run = evaluate_streamed(
        trace, spec, POLICIES, days=days, target_utilization=0.9, jobs=1, seed=5,
        stream=StreamConfig(batch_vms=batch_vms), on_batch=lambda labels, part: seen.append(len(part)),
    )
    assert (streamed.start_s, streamed.end_s) == (scenario.start_s, scenario.end_s)
    assert streamed.admission.num_hosts == scenario.admission.num_hosts
    assert streamed.admission.rejected == scenario.admission.rejected
    assert [t.name for t in streamed.admission.hosts] == [t.name for t in scenario.admission.hosts]
    assert list(evaluation.results) == list(expected)
    vm_id = df["vm_id"].to_numpy()
    for name, result in expected.items():
        got = evaluation.results[name]
        assert got.summary == result.summary, name
        assert got.extra == result.extra, name
        # Every VM is sampled at this size: the same VMs with the same defects.
        assert np.array_equal(got.rows, np.sort(vm_id[result.rows]))
        order = np.argsort(vm_id[result.rows])
        assert np.array_equal(got.lifetime_defect, result.lifetime_defect[order])
        assert np.array_equal(got.placement_defect, result.placement_defect[order])
    daily = Evaluation({"anomaly_threshold": 0.4}, expected).per_day(df, streamed.origin_s)
    mine = evaluation.per_day()
    pd.testing.assert_frame_equal(mine[["policy", "day", "anomalies", "vms"]], daily[["policy", "day", "anomalies", "vms"]], check_dtype=False)
    assert np.allclose(mine["avg_defect"], daily["avg_defect"], rtol=1e-12)
    # Structural memory bound: a batch is at most batch_vms rows, or one (larger) cluster.
    largest = max(trace.cluster_rows.values())
    assert max(seen) <= max(batch_vms, largest) and run.largest_batch_vms == max(seen)
    assert run.batches == len(trace.batches(batch_vms)) == len(seen)


def test_accumulators_stay_small(month):
    """What the streamed run keeps per policy is ~1% of the values for the p99 (3x at most
    while compacting), a per-day table, and a CDF sample that shrinks as the trace grows."""
    trace = PartitionedTrace.open(month)
    evaluation, _, _ = evaluate_streamed(
        trace, load_cluster("mixed"), ["xen"], target_utilization=0.9, jobs=1,
        stream=StreamConfig(batch_vms=500, cdf_sample=400),
    )
    result = evaluation.results["xen"]
    stride = math.ceil(trace.num_rows / 400)
    assert (result.rows % stride == 0).all() and result.rows.size <= trace.num_rows // stride + 1
    assert result.summary.vms > 5 * result.rows.size  # ~1 in 9 VMs kept here
    assert len(evaluation.per_day()) <= 5


@pytest.mark.slow
def test_evaluate_command_streams_a_directory(month, tmp_path, capsys):
    """`catur evaluate DIR` streams and writes the usual table, JSON and plots; its numbers
    equal `catur evaluate FILE` on the same trace written as one parquet file."""
    df, _ = read_trace(month)
    single = tmp_path / "whole.parquet"
    df.to_parquet(single)
    common = ["--policies", "xen,random", "--days", "2:4", "--jobs", "2", "--quiet"]
    assert main(["evaluate", str(month), *common, "--batch-vms", "1000", "--json", str(tmp_path / "s.json"),
                 "--plots", str(tmp_path / "plots")]) == 0
    assert main(["evaluate", str(single), *common, "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "xen" in out and "random" in out
    streamed = json.loads((tmp_path / "s.json").read_text())
    whole = json.loads((tmp_path / "m.json").read_text())
    assert streamed["policies"] == whole["policies"]
    for key in ("vms_in_trace", "window_s", "hosts", "hosts_by_topology", "rejected_vms"):
        assert streamed["scenario"][key] == whole["scenario"][key], key
    facts = streamed["scenario"]["streaming"]
    assert facts["batches"] >= 3 and facts["largest_batch_vms"] <= 1_000 and facts["peak_rss_mib"]["main"] > 0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"defect_cdf.png", "daily_defect.png", "daily_anomalies.png"}
    assert main(["evaluate", str(month), "--oracle-hosts", "2", "--quiet"]) == 2
    assert "--oracle-hosts" in capsys.readouterr().err
