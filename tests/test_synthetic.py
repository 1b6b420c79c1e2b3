"""The built-in synthetic workloads: schema, seeding, calibration, drift knobs, validation.

The calibration tests generate at Huawei-East-1's own rate with no lifetime stretching, so the
statistics can be compared with what the real trace measured (the embedded ``HUAWEI_STATS``).
When ``../shared/traces`` exists, the embedded tables are also re-measured from the real file.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catur.errors import CaturError
from catur.traces.canonical import validate
from catur.traces.synthetic import (
    AZURE_STATS,
    HUAWEI_FLAVORS,
    HUAWEI_HOURLY,
    HUAWEI_LIFETIMES,
    HUAWEI_STATS,
    SCENARIOS,
    Adversarial,
    BatchModel,
    Cluster,
    Flavor,
    LifetimeTable,
    SyntheticConfig,
    TemporalShift,
    generate,
    live_vms,
    peak_concurrency,
)

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
DAY = 86400.0
COLUMNS = {
    "vm_id": "int64",
    "arrival_s": "float64",
    "departure_s": "float64",
    "vcpus": "int64",
    "mem_gib": "float64",
}

# Huawei-East-1 at its own rate and lifetimes: what the calibration is checked against.
HUAWEI_RATE = SyntheticConfig(name="huawei-rate", arrivals_per_hour=HUAWEI_STATS["arrivals_per_hour"])


@pytest.fixture(scope="module")
def scenario_traces() -> dict[str, pd.DataFrame]:
    return {name: generate(name) for name in SCENARIOS}


@pytest.fixture(scope="module")
def huawei_rate() -> pd.DataFrame:
    return generate(HUAWEI_RATE, seed=7)


def mem_per_vcpu(df: pd.DataFrame) -> float:
    return float(df["mem_gib"].sum() / df["vcpus"].sum())


# --------------------------------------------------------------------------------------------
# Schema and seeding
# --------------------------------------------------------------------------------------------


def test_scenarios_registry():
    assert {"default", "azure-like", "temporal-shift", "multi-cluster", "adversarial"} <= set(SCENARIOS)
    assert all(isinstance(c, SyntheticConfig) for c in SCENARIOS.values())


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_schema(scenario_traces, name):
    df = scenario_traces[name]
    config = SCENARIOS[name]
    expected = dict(COLUMNS, **({"cluster": "string"} if config.clusters else {}))
    assert {c: str(t) for c, t in df.dtypes.items()} == expected
    assert 20_000 <= len(df) <= 40_000  # sized for a fast demo replay
    assert (df["vm_id"].to_numpy() == np.arange(len(df))).all()
    arrival, departure = df["arrival_s"].to_numpy(), df["departure_s"].to_numpy()
    assert (np.diff(arrival) >= 0).all()
    assert arrival.min() >= 0 and arrival.max() < config.window_s
    done = ~np.isnan(departure)
    assert (departure[done] > arrival[done]).all() and (departure[done] < config.window_s).all()
    assert 0 < (~done).mean() < 0.2  # some VMs still run when the window closes
    assert (df["vcpus"] >= 1).all() and (df["mem_gib"] > 0).all()
    assert df.attrs["source"] == f"synthetic:{name}" and df.attrs["window_s"] == config.window_s
    # The canonical gate accepts it unchanged.
    pd.testing.assert_frame_equal(validate(df, name).reset_index(drop=True), df)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_peak_concurrency_target(scenario_traces, name):
    df = scenario_traces[name]
    target = SCENARIOS[name].peak_concurrency
    # Adversarial injection happens after the target is met, so it may move the peak a little.
    tolerance = 0.05 if SCENARIOS[name].adversarial else 0.011
    assert abs(peak_concurrency(df) - target) <= tolerance * target
    assert 1500 <= peak_concurrency(df) <= 2500


def test_same_seed_same_trace_and_different_seed_different():
    a = generate("multi-cluster", seed=3)
    pd.testing.assert_frame_equal(a, generate("multi-cluster", seed=3))
    pd.testing.assert_frame_equal(a, generate(replace(SCENARIOS["multi-cluster"], seed=3)))
    b = generate("multi-cluster", seed=4)
    assert len(a) != len(b) or not np.array_equal(a["arrival_s"], b["arrival_s"])


def test_warmup_keeps_running_vms_at_time_zero(scenario_traces):
    df = scenario_traces["default"]
    at_zero = df["arrival_s"] == 0
    assert 300 < at_zero.sum() < 2500  # the cluster is already busy when the window opens
    cold = generate(replace(SCENARIOS["default"], warmup_days=0.0))
    assert (cold["arrival_s"] == 0).sum() < 50


def test_live_vms_counts_departures_before_arrivals_at_equal_times():
    trace = pd.DataFrame(
        {"arrival_s": [0.0, 5.0, 5.0, 7.0], "departure_s": [5.0, 9.0, np.nan, 8.0]}
    )
    times, live = live_vms(trace["arrival_s"].to_numpy(), trace["departure_s"].to_numpy())
    assert times.tolist() == [0.0, 5.0, 5.0, 5.0, 7.0, 8.0, 9.0]
    assert live.tolist() == [1, 0, 1, 2, 3, 2, 1]  # vm 0 leaves at 5 before vms 1, 2 arrive
    assert peak_concurrency(trace) == 3
    assert peak_concurrency(trace.iloc[:0]) == 0


# --------------------------------------------------------------------------------------------
# Calibration against Huawei-East-1 and Azure 2017
# --------------------------------------------------------------------------------------------


def test_flavor_mix_matches_huawei(huawei_rate):
    df = huawei_rate
    assert abs(len(df) / (31 * 24) - HUAWEI_STATS["arrivals_per_hour"]) < 0.1 * HUAWEI_STATS["arrivals_per_hour"]
    assert abs((df["vcpus"] == 1).mean() - HUAWEI_STATS["share_1_vcpu"]) < 0.02
    assert abs((df["mem_gib"] > 10).mean() - HUAWEI_STATS["share_mem_over_10_gib"]) < 0.01
    shares = df.groupby(["vcpus", "mem_gib"]).size() / len(df)
    total = sum(f.share for f in HUAWEI_FLAVORS)
    for f in HUAWEI_FLAVORS[:6]:
        assert abs(shares.get((f.vcpus, f.mem_gib), 0.0) - f.share / total) < 0.02, f


def test_lifetimes_match_huawei():
    # The interpolated tables themselves reproduce the measured mean (log-linear segments).
    shares = np.array([f.share for f in HUAWEI_FLAVORS])
    classes = HUAWEI_LIFETIMES.classify(np.array([f.vcpus for f in HUAWEI_FLAVORS]))
    table_mean = float((shares * HUAWEI_LIFETIMES.mean_s()[classes]).sum() / shares.sum())
    assert abs(table_mean / HUAWEI_STATS["mean_lifetime_s"] - 1) < 0.05
    # Sampled lifetimes: a long window, so VMs of the first 30 days have all departed.
    df = generate(replace(HUAWEI_RATE, days=150.0, arrivals_per_hour=40.0), seed=1)
    first = df[df["arrival_s"] < 30 * DAY]
    life = first["departure_s"] - first["arrival_s"]
    assert life.notna().all()
    assert abs(life.mean() / HUAWEI_STATS["mean_lifetime_s"] - 1) < 0.15
    assert 0.5 < life.median() / HUAWEI_STATS["median_lifetime_s"] < 1.5


def test_batches_and_concurrency_match_huawei(huawei_rate):
    df = huawei_rate
    key = df[["arrival_s", "vcpus", "mem_gib"]].to_numpy()
    same_as_previous = (np.diff(key, axis=0) == 0).all(axis=1).mean()
    assert abs(same_as_previous - HUAWEI_STATS["share_in_batches"]) < 0.08
    # Mean live VMs over the last 20 days (Little's law: rate x mean lifetime ~ 750).
    times, live = live_vms(df["arrival_s"].to_numpy(), df["departure_s"].to_numpy())
    later = times >= 11 * DAY
    dt = np.diff(np.append(times[later], 31 * DAY))
    mean_live = float((live[later] * dt).sum() / dt.sum())
    assert 450 < mean_live < 1100
    assert 800 < peak_concurrency(df) <= HUAWEI_STATS["peak_concurrency"]


def test_day_night_cycle(huawei_rate):
    hour = (huawei_rate["arrival_s"] // 3600 % 24).astype(int)
    per_hour = np.bincount(hour, minlength=24) / 31
    night, day = per_hour[16:24].mean(), per_hour[0:10].mean()
    assert night < 0.7 * day  # the trace: 0.58 / 1.43 of the mean hour
    profile = np.asarray(HUAWEI_HOURLY)
    assert np.corrcoef(per_hour, profile)[0, 1] > 0.8


def test_azure_like_mix(scenario_traces):
    df = scenario_traces["azure-like"]
    assert abs((df["vcpus"] == 1).mean() - AZURE_STATS["share_1_vcpu"]) < 0.03
    assert set(df["mem_gib"].unique()) <= {0.75, 1.75, 3.5, 7.0, 14.0, 56.0, 28.0}
    assert df["vcpus"].max() <= 8


@pytest.mark.real_traces
def test_embedded_tables_match_the_real_huawei_trace():
    path = SHARED_TRACES / "huawei-east-1-lt.csv.gz"
    if not path.exists():
        pytest.skip(f"real trace {path} not available")
    h = pd.read_csv(path)
    shares = h.groupby(["cpu", "mem"]).size() / len(h)
    for f in HUAWEI_FLAVORS:
        assert abs(shares[(f.vcpus, int(f.mem_gib))] - f.share) < 1e-4, f
    assert abs((h["cpu"] == 1).mean() - HUAWEI_STATS["share_1_vcpu"]) < 1e-3
    assert abs(h["lt"].mean() - HUAWEI_STATS["mean_lifetime_s"]) < 1
    hourly = np.bincount((h["at"] // 3600 % 24).astype(int), minlength=24)
    assert np.allclose(hourly / hourly.mean(), HUAWEI_HOURLY, atol=1e-3)
    ones = h.loc[h["cpu"] == 1, "lt"]
    assert np.allclose(np.quantile(ones, HUAWEI_LIFETIMES.levels), HUAWEI_LIFETIMES.quantiles_s[0], atol=1)


# --------------------------------------------------------------------------------------------
# Drift knobs
# --------------------------------------------------------------------------------------------


def test_temporal_shift(scenario_traces):
    df = scenario_traces["temporal-shift"]
    at = SCENARIOS["temporal-shift"].temporal_shift.at_day * DAY
    early = df[(df["arrival_s"] > 0) & (df["arrival_s"] < at)]
    late = df[df["arrival_s"] >= at]
    assert mem_per_vcpu(early) > 1.2 * mem_per_vcpu(late)  # memory-heavy first half
    days_early, days_late = at / DAY, SCENARIOS["temporal-shift"].days - at / DAY
    assert len(late) / days_late > 1.2 * len(early) / days_early  # more arrivals later
    times, live = live_vms(df["arrival_s"].to_numpy(), df["departure_s"].to_numpy())
    assert live[times >= at + 3 * DAY].mean() > 1.3 * live[(times > DAY) & (times < at)].mean()
    # The default trace has no such step.
    base = scenario_traces["default"]
    b_early, b_late = base[(base["arrival_s"] > 0) & (base["arrival_s"] < at)], base[base["arrival_s"] >= at]
    assert abs(mem_per_vcpu(b_early) / mem_per_vcpu(b_late) - 1) < 0.1


def test_adversarial_injection_only_after_its_day(scenario_traces):
    df, base = scenario_traces["adversarial"], scenario_traces["default"]
    adv = SCENARIOS["adversarial"].adversarial
    start = adv.from_day * DAY
    ratio = df["mem_gib"] / df["vcpus"]
    odd = (ratio >= 8) | (ratio <= 0.5)  # the calibrated mixes have 0.75-4 GiB per vCPU
    assert not odd[df["arrival_s"] < start].any()
    after = df["arrival_s"] >= start
    assert abs(odd[after].mean() - adv.fraction) < 0.03
    # Same seed: the base trace with some flavors swapped, nothing else moved.
    assert np.array_equal(df["arrival_s"], base["arrival_s"])
    before = ~after.to_numpy()
    pd.testing.assert_frame_equal(df[before], base[before])
    changed = (df["vcpus"] != base["vcpus"]) | (df["mem_gib"] != base["mem_gib"])
    assert (changed <= odd).all()


def test_multi_cluster_mixes_differ(scenario_traces):
    df = scenario_traces["multi-cluster"]
    clusters = SCENARIOS["multi-cluster"].clusters
    shares = df["cluster"].value_counts(normalize=True)
    assert set(shares.index) == {c.name for c in clusters}
    total = sum(c.share for c in clusters)
    for c in clusters:
        assert abs(shares[c.name] - c.share / total) < 0.05, c.name
    ratio = {name: mem_per_vcpu(group) for name, group in df.groupby("cluster")}
    assert ratio["memory-optimized"] > 1.3 * ratio["general"] > 1.3 * ratio["compute-optimized"]
    one_vcpu = df.groupby("cluster")["vcpus"].apply(lambda v: (v == 1).mean())
    assert one_vcpu.max() - one_vcpu.min() > 0.1


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: SyntheticConfig(days=0), "days"),
        (lambda: SyntheticConfig(days=float("nan")), "days"),
        (lambda: SyntheticConfig(arrivals_per_hour=-1), "arrivals_per_hour"),
        (lambda: SyntheticConfig(arrivals_per_hour=1e9), "arrivals_per_hour"),
        (lambda: SyntheticConfig(seed=-1), "seed"),
        (lambda: SyntheticConfig(seed=1.5), "seed"),
        (lambda: SyntheticConfig(peak_concurrency=0), "peak_concurrency"),
        (lambda: SyntheticConfig(peak_concurrency=100, lifetime_scale=2.0), "lifetime_scale"),
        (lambda: SyntheticConfig(lifetime_scale=0), "lifetime_scale"),
        (lambda: SyntheticConfig(warmup_days=-1), "warmup_days"),
        (lambda: SyntheticConfig(hourly_profile=(1.0,) * 23), "hourly_profile"),
        (lambda: SyntheticConfig(hourly_corr=1.0), "hourly_corr"),
        (lambda: SyntheticConfig(daily_sigma=-0.1), "daily_sigma"),
        (lambda: SyntheticConfig(flavors=()), "flavors"),
        (lambda: SyntheticConfig(flavors=((0, 2.0, 1.0),)), "flavors"),
        (lambda: SyntheticConfig(flavors=((1, -2.0, 1.0),)), "flavors"),
        (lambda: SyntheticConfig(lifetimes="long"), "lifetimes"),
        (lambda: SyntheticConfig(days=10, adversarial=Adversarial(from_day=12)), "adversarial.from_day"),
        (lambda: SyntheticConfig(days=10, temporal_shift=TemporalShift(at_day=10)), "temporal_shift.at_day"),
        (lambda: SyntheticConfig(clusters=(Cluster("a"), Cluster("a"))), "clusters"),
        (lambda: TemporalShift(late_arrival_factor=0), "late_arrival_factor"),
        (lambda: Adversarial(fraction=1.5), "fraction"),
        (lambda: Cluster("a", share=0), "share"),
        (lambda: Cluster(""), "name"),
        (lambda: LifetimeTable((1,), (0.0, 1.0), ((1, 2), (5, 3))), "quantiles_s"),
        (lambda: LifetimeTable((1,), (0.0, 0.5), ((1, 2), (3, 4))), "levels"),
        (lambda: BatchModel((1,), (0.5, 1.2), (2, 2), (1.0,)), "p_single"),
    ],
)
def test_bad_config_names_the_field(make, field):
    with pytest.raises(CaturError, match=rf"\b{field.replace('.', '[.]')}\b"):
        make()


def test_plain_rows_are_accepted_and_unknown_scenarios_rejected():
    config = SyntheticConfig(flavors=[(1, 2, 3), [2, 4.0, 1]], days=2, arrivals_per_hour=30)
    assert config.flavors == (Flavor(1, 2.0, 3.0), Flavor(2, 4.0, 1.0))
    df = generate(config)
    assert set(zip(df["vcpus"], df["mem_gib"])) <= {(1, 2.0), (2, 4.0)}
    with pytest.raises(CaturError, match="unknown synthetic scenario 'nope'.*default"):
        generate("nope")
    with pytest.raises(CaturError, match="seed"):
        generate("default", seed=-3)


def test_a_million_vms_generate_in_seconds():
    config = replace(SCENARIOS["default"], arrivals_per_hour=1e6 / (31 * 24), peak_concurrency=None, warmup_days=0.0)
    start = time.perf_counter()
    df = generate(config)
    elapsed = time.perf_counter() - start
    assert 900_000 < len(df) < 1_100_000
    assert elapsed < 10.0  # ~0.3 s on a laptop-class core; generous for slow CI
