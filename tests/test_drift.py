"""Drift signals of ``catur retrain``: PSI, KS, censored lifetimes and the gate rate, on hand-made
samples with values worked out by hand, plus invariants over generated samples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catur.errors import CaturError
from catur.gate import UncertaintyGate
from catur.training.drift import (
    compare_windows,
    capped_lifetimes,
    feature_drift,
    gate_rate,
    kolmogorov_p,
    ks_2samp,
    level,
    psi,
    psi_bins,
    window_features,
)

NAN = float("nan")


def test_psi_of_a_two_flavor_mix_by_hand():
    # Reference 50/50, recent 90/10: (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5).
    reference = [1] * 50 + [2] * 50
    recent = [1] * 90 + [2] * 10
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi(reference, recent) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.8789, abs=1e-4)
    assert level(psi(reference, recent)) == "significant"


def test_psi_counts_a_new_flavor_with_the_empty_bin_floor():
    # A size the reference never had: its reference share is the floor eps = 1e-4.
    reference = [1] * 100
    recent = [1] * 80 + [16] * 20
    expected = (0.8 - 1.0) * math.log(0.8 / 1.0) + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
    assert psi(reference, recent) == pytest.approx(expected, rel=1e-12)


def test_psi_levels():
    assert level(0.0) == "stable" and level(0.0999) == "stable"
    assert level(0.1) == "moderate" and level(0.2499) == "moderate"
    assert level(0.25) == "significant"


def test_psi_uses_reference_deciles_for_continuous_values():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1, 1000)
    ref_bins, rec_bins = psi_bins(reference, rng.uniform(0, 1, 500))
    assert ref_bins.max() == 9 and np.bincount(ref_bins).min() >= 99  # ten equal-share bins
    # The same distribution: small PSI; shifted by half its range: large.
    assert psi(reference, rng.uniform(0, 1, 1000)) < 0.05
    assert psi(reference, rng.uniform(0.5, 1.5, 1000)) > 1.0


def test_ks_by_hand():
    assert ks_2samp([1, 2, 3], [4, 5, 6])[0] == 1.0
    # CDFs of {1,2,3,4} and {3,4,5,6}: the largest gap is at 2 (0.5 vs 0).
    assert ks_2samp([1, 2, 3, 4], [3, 4, 5, 6])[0] == pytest.approx(0.5)
    statistic, p_value = ks_2samp([5.0] * 10, [5.0] * 7)
    assert statistic == 0.0 and p_value == 1.0


def test_kolmogorov_p_matches_the_tabulated_distribution():
    # Q_KS(1.358) = 0.0500 (the 5% critical value); n = m = 200 gives sqrt(nm/(n+m)) = 10, so
    # lambda = (10 + 0.12 + 0.011) * D.
    d = 1.358 / (10 + 0.12 + 0.011)
    assert kolmogorov_p(d, 200, 200) == pytest.approx(0.05, abs=5e-4)
    d = 1.0 / (10 + 0.12 + 0.011)
    assert kolmogorov_p(d, 200, 200) == pytest.approx(0.2700, abs=5e-4)  # Q_KS(1) = 0.27000
    assert kolmogorov_p(0.0, 10, 10) == 1.0
    assert kolmogorov_p(1.0, 1000, 1000) < 1e-100


def test_capped_lifetimes_treat_both_windows_alike():
    day = 86_400.0
    arrival = np.array([0.0, 0.0, 10 * day, 10 * day, 9.0 * day])
    departure = np.array([3600.0, 5 * day, NAN, 10 * day + 60.0, NAN])
    out = capped_lifetimes(arrival, departure, trace_end_s=10.2 * day, cap_s=day)
    # left after 1 h; left after 5 days -> cap; still running, arrived 0.2 days before the end
    # -> unknown; left after 60 s; still running for more than the cap -> cap.
    np.testing.assert_array_equal(out, [3600.0, day, NAN, 60.0, day])
    with pytest.raises(CaturError, match="cap"):
        capped_lifetimes(arrival, departure, 0.0, cap_s=0.0)


def test_window_features_and_compare_windows():
    day = 86_400.0
    df = pd.DataFrame(
        {
            "vm_id": range(6),
            "arrival_s": [0.0, 0.5 * day, 1.0 * day, 2.0 * day, 2.5 * day, 2.9 * day],
            "departure_s": [3600.0, NAN, 1.5 * day, 2.1 * day, NAN, NAN],
            "vcpus": [1, 2, 4, 16, 16, 16],
            "mem_gib": [2.0, 4.0, 8.0, 4.0, 4.0, 4.0],
        }
    )
    reference = window_features(df, 0.0, 2 * day, trace_end_s=3 * day)
    recent = window_features(df, 2 * day, 3 * day, trace_end_s=3 * day)
    np.testing.assert_array_equal(reference["vcpus"], [1, 2, 4])
    np.testing.assert_array_equal(reference["lifetime_s"], [3600.0, day, 0.5 * day])
    np.testing.assert_array_equal(recent["vcpus"], [16, 16, 16])
    np.testing.assert_array_equal(recent["lifetime_s"], [0.1 * day])  # the two still running are too recent
    drift = compare_windows(reference, recent)
    assert set(drift) == {"vcpus", "mem_gib", "lifetime_s"}
    assert drift["vcpus"].ks == 1.0 and drift["vcpus"].level == "significant"
    assert drift["vcpus"].n_reference == 3 and drift["vcpus"].recent_mean == 16.0
    # An empty side leaves the feature out instead of failing.
    assert "lifetime_s" not in compare_windows(reference, {**recent, "lifetime_s": np.array([])})


def test_empty_or_bad_samples_are_refused():
    with pytest.raises(CaturError, match="reference"):
        psi([], [1, 2])
    with pytest.raises(CaturError, match="recent vcpus"):
        feature_drift("vcpus", [1, 2], [])
    with pytest.raises(CaturError, match="NaN"):
        ks_2samp([1.0, NAN], [1.0])


def test_gate_rate_by_hand():
    gate = UncertaintyGate(np.zeros(2), np.eye(2), 1.0)
    observations = np.array([[0.0, 0.0], [2.0, 0.0], [0.5, 0.5], [3.0, 3.0]])  # distances 0, 2, 0.71, 4.24
    assert gate_rate(gate, observations) == 0.5
    with pytest.raises(CaturError, match="observations"):
        gate_rate(gate, np.zeros((0, 2)))


samples = st.lists(st.integers(1, 64), min_size=1, max_size=200).map(np.array) | st.lists(
    st.floats(0.0, 1e6, allow_nan=False, width=32), min_size=1, max_size=200
).map(np.array)


@settings(max_examples=300, deadline=None)
@given(samples, samples)
def test_drift_invariants(a, b):
    value = psi(a, b)
    statistic, p_value = ks_2samp(a, b)
    assert value >= 0.0 and math.isfinite(value)
    assert 0.0 <= statistic <= 1.0 and 0.0 <= p_value <= 1.0
    assert ks_2samp(b, a)[0] == pytest.approx(statistic)  # KS is symmetric
    assert psi(a, a) == 0.0 and ks_2samp(a, a) == (0.0, 1.0)
    # Shuffling a sample changes nothing: both depend on the values only.
    assert psi(a, b[::-1]) == pytest.approx(value) and ks_2samp(a[::-1], b)[0] == pytest.approx(statistic)
