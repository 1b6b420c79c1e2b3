"""The CC0 Huawei Cloud NUMA dataset: a static request sequence, and real fragmented hosts.

Huawei Cloud's *Dataset for topology-aware VM placement* (CC0 1.0) is the only public data
recorded at the NUMA level. It comes as two kinds of CSV file, both read here column by
column (:mod:`catur.traces.readers` opens the files, keeps line numbers and dispatches here):

``VM_data_C*.csv`` — a request sequence, header ``flavor_vcpus,flavor_ram,numa,strategy,group,domain``
    One row per VM. ``flavor_vcpus`` vCPUs; ``flavor_ram`` memory in **GiB**; ``numa`` the
    number of NUMA nodes the flavor needs, which becomes the request's explicit vNUMA count
    (``numa = 2``: two instances on two distinct nodes); ``strategy`` one of ``affinity``,
    ``anti-affinity``, ``fault_domain`` or empty; ``group`` the placement group's number
    (required with a strategy; group numbers are per strategy, so ``anti-affinity`` group 0
    and ``affinity`` group 0 are different groups); ``domain`` the fault domain of a
    ``fault_domain`` member (required there). There are **no timestamps**: VMs arrive in
    file order, one per second (the first at 0 s), and never depart; ``vm_id`` is the row
    number (0-based). The labels are kept as the columns ``strategy``, ``group`` and
    ``domain`` of the canonical trace, for admission (:mod:`catur.sim.groups`).

``PM_res.csv`` — a start state, header ``CPU1,RAM1,CPU2,RAM2`` (more nodes: ``CPU3,RAM3``, ...)
    One row per server: the free vCPUs and free RAM (GiB) of each NUMA node, a snapshot of
    real fragmentation. What the servers' capacities are is not in the file; the simulator
    infers or is told them (:mod:`catur.sim.start_state`).

Bad rows get the readers' errors, naming file, line, field and value::

    VM_data_C1.csv, line 9 (vm 7): field 'numa' = 0: must be >= 1 (...)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.traces.canonical import RowChecker, check_numeric, check_whole, series_at

FORMAT_VMS = "huawei-numa-vms"
VM_COLUMNS = ("flavor_vcpus", "flavor_ram", "numa", "strategy", "group", "domain")
STRATEGIES = ("affinity", "anti-affinity", "fault_domain")
# One second between arrivals: the sequence has an order but no clock.
ARRIVAL_STEP_S = 1.0


def is_vm_data_header(names: set[str]) -> bool:
    """Whether a header's column names are a ``VM_data`` file's (auto-detection)."""
    return {"flavor_vcpus", "flavor_ram", "numa"} <= names


def is_node_free_header(tokens: list[str]) -> bool:
    """Whether a header is a ``PM_res`` file's: ``CPU1,RAM1,...`` pairs and nothing else."""
    return bool(tokens) and len(tokens) % 2 == 0 and tokens == node_columns(len(tokens) // 2)


def node_columns(nodes: int) -> list[str]:
    """``cpu1, ram1, cpu2, ram2, ...`` (headers are compared lower-cased)."""
    return [f"{kind}{k}" for k in range(1, nodes + 1) for kind in ("cpu", "ram")]


def check_vm_data(checker: RowChecker, cols: dict[str, pd.Series]) -> Callable[[np.ndarray], pd.DataFrame]:
    """Check a ``VM_data`` table's columns (flagging bad rows on ``checker``) and return the
    function that builds the canonical trace from the good rows' mask.

    ``cols`` holds the six columns of :data:`VM_COLUMNS` (``strategy``, ``group`` and
    ``domain`` may be absent: a file with no labels at all is a plain sequence).
    """
    n = len(cols["flavor_vcpus"])
    vcpus = check_numeric(checker, cols["flavor_vcpus"], "flavor_vcpus")
    check_whole(checker, vcpus, "flavor_vcpus", series_at(cols["flavor_vcpus"]))
    ram = check_numeric(checker, cols["flavor_ram"], "flavor_ram")
    numa = check_numeric(checker, cols["numa"], "numa")
    check_whole(checker, numa, "numa", series_at(cols["numa"]))
    with np.errstate(invalid="ignore"):
        checker.flag(vcpus < 1, "flavor_vcpus", series_at(cols["flavor_vcpus"]), "must be >= 1")
        checker.flag(ram <= 0, "flavor_ram", series_at(cols["flavor_ram"]), "must be > 0")
        checker.flag(numa < 1, "numa", series_at(cols["numa"]), "must be >= 1")
        checker.flag(numa > vcpus, "numa", series_at(cols["numa"]),
                     lambda i: f"exceeds flavor_vcpus {vcpus[i]:g}: every NUMA instance needs a vCPU")

    strategy = _strategy(checker, cols.get("strategy"), n)
    labelled = strategy.notna().to_numpy(dtype=bool)
    group = _label_number(checker, cols.get("group"), "group", n)
    domain = _label_number(checker, cols.get("domain"), "domain", n)
    if "group" in cols:
        checker.flag(labelled & np.isnan(group), "group", series_at(cols["group"]),
                     lambda i: f"is missing: strategy {strategy.iloc[i]!r} needs a group")
    elif labelled.any():
        checker.flag(labelled, "strategy", series_at(cols["strategy"]), "needs a 'group' column")
    fault = (strategy == "fault_domain").fillna(False).to_numpy(dtype=bool)
    if "domain" in cols:
        checker.flag(fault & np.isnan(domain), "domain", series_at(cols["domain"]),
                     "is missing: strategy 'fault_domain' needs a domain")
    elif fault.any():
        checker.flag(fault, "strategy", series_at(cols["strategy"]), "'fault_domain' needs a 'domain' column")

    def build(good: np.ndarray) -> pd.DataFrame:
        rows = np.flatnonzero(good)
        # Labels only where a strategy uses them: a stray group number on an unlabelled row
        # (or a domain on an affinity row) means nothing and must not join VMs into a group.
        keep_group = labelled[rows]
        keep_domain = fault[rows]
        return pd.DataFrame({
            "vm_id": rows.astype(np.int64),
            "arrival_s": rows * ARRIVAL_STEP_S,
            "departure_s": np.full(rows.size, np.nan),
            "vcpus": vcpus[rows].astype(np.int64),
            "mem_gib": ram[rows],
            "vnuma": numa[rows].astype(np.int64),
            "strategy": strategy.iloc[rows].reset_index(drop=True),
            "group": pd.array(np.where(keep_group, group[rows], np.nan), dtype="Float64").astype("Int64"),
            "domain": pd.array(np.where(keep_domain, domain[rows], np.nan), dtype="Float64").astype("Int64"),
        })

    return build


def _strategy(checker: RowChecker, column: pd.Series | None, n: int) -> pd.Series:
    """The ``strategy`` column as lower-case strings, NA where empty; unknown names flagged."""
    if column is None:
        return pd.Series(pd.NA, index=range(n), dtype="string")
    text = column.astype("string").str.strip().str.lower()
    text = text.mask(text == "")
    unknown = text.notna().to_numpy(dtype=bool) & ~text.isin(STRATEGIES).fillna(False).to_numpy(dtype=bool)
    checker.flag(unknown, "strategy", series_at(column),
                 f"is not a placement strategy; known: {', '.join(STRATEGIES)} (or empty)")
    return text.where(~unknown).reset_index(drop=True)


def _label_number(checker: RowChecker, column: pd.Series | None, name: str, n: int) -> np.ndarray:
    """A group or domain number: whole, >= 0, or missing (NaN)."""
    if column is None:
        return np.full(n, np.nan)
    values = check_numeric(checker, column, name, allow_missing=True)
    check_whole(checker, values, name, series_at(column))
    with np.errstate(invalid="ignore"):
        checker.flag(values < 0, name, series_at(column), "must be >= 0")
    return values


def check_node_free(checker: RowChecker, df: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a ``PM_res`` table: ``(free_cores int64[H, N], free_mem_gib float64[H, N])``.

    Every ``CPUk``/``RAMk`` value must be a number >= 0, and CPUs whole; bad rows are
    flagged on ``checker`` (their values come back as NaN / 0). The header must be exactly
    ``CPU1,RAM1,...,CPUn,RAMn``.
    """
    names = [str(c) for c in df.columns]
    if not is_node_free_header(names):
        raise CaturError(
            f"{source}: not a free-per-node file: the header must be CPU1,RAM1,CPU2,RAM2,... "
            f"(one CPU and RAM pair per NUMA node), got {','.join(names)}"
        )
    nodes = len(names) // 2
    cores = np.zeros((len(df), nodes), dtype=np.int64)
    mem = np.zeros((len(df), nodes))
    for k in range(nodes):
        cpu_name, ram_name = f"cpu{k + 1}", f"ram{k + 1}"
        label_cpu, label_ram = cpu_name.upper(), ram_name.upper()
        cpu = check_numeric(checker, df[cpu_name], label_cpu)
        check_whole(checker, cpu, label_cpu, series_at(df[cpu_name]))
        ram = check_numeric(checker, df[ram_name], label_ram)
        with np.errstate(invalid="ignore"):
            checker.flag(cpu < 0, label_cpu, series_at(df[cpu_name]), "must be >= 0")
            checker.flag(ram < 0, label_ram, series_at(df[ram_name]), "must be >= 0")
        cores[:, k] = np.where(np.isfinite(cpu) & (cpu >= 0), cpu, 0).astype(np.int64)
        mem[:, k] = np.where(np.isfinite(ram) & (ram >= 0), ram, 0.0)
    return cores, mem
