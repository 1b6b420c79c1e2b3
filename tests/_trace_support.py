"""Tiny traces for the scorer-training tests: days of VMs, or a sequence without time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86400.0


def _trace(path: Path, days: int, vms_per_day: int = 40, *, departures: bool = True) -> str:
    """A canonical trace with VMs arriving on each of ``days`` days (departing hours later)."""
    rng = np.random.default_rng(days)
    arrival = np.sort(rng.uniform(0, days * DAY - 1, size=days * vms_per_day))
    df = pd.DataFrame({
        "vm_id": np.arange(len(arrival)), "arrival_s": arrival,
        "departure_s": arrival + rng.uniform(600, 20_000, size=len(arrival)) if departures else np.nan,
        "vcpus": rng.choice([1, 2, 4, 8], size=len(arrival)), "mem_gib": rng.choice([2.0, 4.0, 8.0, 16.0], size=len(arrival)),
    })
    df.to_csv(path, index=False)
    return str(path)


def _sequence(path: Path, vms: int = 60) -> str:
    """A trace without time: one VM a second, none departing (like the CC0 sequences)."""
    df = pd.DataFrame({"vm_id": np.arange(vms), "arrival_s": np.arange(vms, dtype=float), "departure_s": np.nan,
                       "vcpus": np.full(vms, 2), "mem_gib": np.full(vms, 4.0)})
    df.to_csv(path, index=False)
    return str(path)
