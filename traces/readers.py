"""Readers that turn public VM trace formats into the canonical trace.

Every reader returns ``(df, report)``: ``df`` is a canonical trace (see
:mod:`catur.traces.canonical`: ``vm_id, arrival_s, departure_s, vcpus, mem_gib``, ...) and
``report`` a :class:`ReadReport` saying how many data rows were read and skipped, and why.
Use :func:`read_trace` unless you need one reader specifically::

    df, report = read_trace("huawei-east-1-lt.csv.gz")          # format detected
    df, report = read_trace("vmtable.csv.gz", fmt="azure-v2")   # format named

Formats (names are the keys of :data:`FORMATS`)
-----------------------------------------------

``huawei-events``
    Huawei-East-1's event log, header ``vmid,cpu,memory,time,type``: one row per event,
    ``type`` 0 = create, 1 = delete; ``cpu`` vCPUs, ``memory`` GiB, ``time`` seconds. A VM with
    no delete row is still running when the trace ends (``departure_s`` NaN). The size on the
    delete row is not used (the create row's is).
``huawei-lt``
    Huawei-East-1 as arrival and lifetime, header ``vmid,cpu,mem,at,lt``: ``departure_s =
    at + lt``, all in seconds; ``mem`` in GiB.
``azure-v1``, ``azure-v2``
    Azure Public Dataset ``vmtable`` (V1 = 2017, V2 = 2019): headerless CSV with 11 columns
    ``vmid, subscriptionid, deploymentid, vmcreated, vmdeleted, maxcpu, avgcpu, p95maxcpu,
    vmcategory, vmcorecount, vmmemory``; timestamps in seconds from the trace start, memory
    in GB (taken as GiB). The string ``vmid`` is enumerated into ``vm_id`` 0, 1, 2, ... in
    file order, and ``subscriptionid`` becomes ``tenant_id``. V2 gives sizes as *buckets*: a
    plain number is the bucket's upper bound ("8" = 5 to 8 cores) and is used as is, which
    never under-sizes a VM; the open top buckets have no bound, so **by assumption** ``">24"``
    vCPUs is read as 30 and ``">64"`` GiB as 70 (:data:`AZURE_OPEN_BUCKETS`). Both readers
    accept both notations, so the two names differ only in the report's label. VMs alive when
    Azure's 30-day window closed carry the closing timestamp as ``vmdeleted``: they look like
    departures at the end. An empty ``vmdeleted`` is read as still running.
``huawei-numa-vms``
    Huawei Cloud's NUMA dataset request sequences (``VM_data_C*.csv``), header
    ``flavor_vcpus,flavor_ram,numa,strategy,group,domain``: GiB; ``numa`` becomes ``vnuma``;
    no timestamps, so VMs arrive in file order one per second and never depart; the labels
    stay as columns ``strategy``, ``group``, ``domain`` (:mod:`catur.traces.huawei_numa`).
    Its companion ``PM_res.csv`` is not a trace but a start state: :func:`read_node_free`.
``canonical``
    The canonical trace itself, as parquet or CSV.
``collected``
    A *directory* written by ``catur serve --collect-dir``: the VMs a running service placed,
    joined with the departures it was told of (:mod:`catur.traces.collected`). Auto-detected:
    a directory is read as this format unless it is ``partitioned``.
``partitioned``
    A *directory* of canonical parquet files with a ``cluster`` column, as written by
    ``catur traces generate --vms N --out DIR`` (:mod:`catur.traces.partitioned`); read
    whole here. ``catur evaluate DIR`` streams it a batch of clusters at a time instead.

Auto-detection (``fmt="auto"``)
-------------------------------

The file's first bytes decide compression (gzip magic ``1f 8b``, whatever the name) and
parquet (magic ``PAR1`` → ``canonical``). For text, the first line decides:

* columns ``vm_id`` and ``arrival_s`` → ``canonical``;
* columns ``vmid, cpu, memory (or mem), time, type`` → ``huawei-events``;
* columns ``vmid, cpu, mem (or memory), at, lt`` → ``huawei-lt``;
* columns ``flavor_vcpus, flavor_ram, numa`` → ``huawei-numa-vms``;
* 11 comma-separated fields (a ``vmid,...`` header line is allowed) → Azure: ``azure-v2`` if
  an open bucket (``>24``) occurs in the size columns of the first 1,000 lines, otherwise
  ``azure-v1`` (only the label differs, see above).

Anything else is refused with the list of known formats; name one with ``fmt=``.

Bad rows
--------

A row with a missing, non-numeric, infinite or out-of-range field (``cpu`` < 1, ``memory``
<= 0, a negative lifetime), a line with too many fields, a duplicate create, a delete of a VM
never created, or a delete before its create raises :class:`~catur.errors.CaturError`
naming the file, the 1-based line (the header is line 1, as in an editor), the VM, the field
and the value::

    trace.csv, line 7 (vm 12): field 'cpu' = 'abc': is not a number (2 more bad rows; ...)

With ``skip_bad_rows=True`` such rows are dropped instead and counted in the report. A VM
with any bad row is dropped *whole* (its create and delete alike), so no VM silently loses
its departure and runs forever. Blank lines are ignored. Checks run vectorized on the whole
table; only the few reported rows are formatted in Python. Quoted fields spanning lines are
not supported (no public format uses them); they would shift the reported line numbers.
"""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from catur.errors import CaturError, unknown_name
from catur.traces import huawei_numa
from catur.traces.canonical import (
    RowChecker,
    check_frame,
    check_numeric,
    check_whole,
    compression_of,
    read_canonical_raw,
    series_at,
    sniff,
    validate,
)

AZURE_COLUMNS = (
    "vmid", "subscriptionid", "deploymentid", "vmcreated", "vmdeleted",
    "maxcpu", "avgcpu", "p95maxcpu", "vmcategory", "vmcorecount", "vmmemory",
)
# The assumption for Azure V2's unbounded top buckets: a little above the bound, so such VMs
# stay the biggest in the trace without inventing a huge size. Change here, not in the code.
AZURE_OPEN_BUCKETS: dict[str, dict[str, float]] = {
    "vmcorecount": {">24": 30},
    "vmmemory": {">64": 70},
}
_SKIP_HINT = "pass skip_bad_rows=True (CLI: --skip-bad-rows) to drop bad rows"
_REASONS_KEPT = 5


@dataclass
class ReadReport:
    """What a reader did: rows read and skipped, with the first few reasons.

    ``rows_read`` counts data lines (blank lines and the header excluded); ``rows_skipped``
    those dropped as bad, including good rows of a VM dropped for another bad row.
    """

    source: str
    format: str
    rows_read: int
    rows_skipped: int
    vms: int
    reasons: list[str] = field(default_factory=list)


# What every reader returns: the canonical trace and the report.
Read = tuple[pd.DataFrame, ReadReport]


@dataclass(frozen=True)
class TraceFormat:
    """A named format: its reader and a one-line description (shown by ``--help``)."""

    name: str
    description: str
    read: Callable[[Path, bool], Read]


# --------------------------------------------------------------------------------------------
# Reading text tables with line numbers
# --------------------------------------------------------------------------------------------


@dataclass
class _Table:
    df: pd.DataFrame
    lines: np.ndarray  # file line (1-based, header = 1) of each row of df
    structural: list[tuple[int, str]]  # lines the tokenizer refused: (line, why)

    @property
    def rows_read(self) -> int:
        return len(self.df) + len(self.structural)


_SKIPPING = re.compile(r"Skipping line (\d+): (.*)")


def _open_text(path: Path):
    # errors="replace": a stray byte becomes a bad value that is reported, not a crash.
    if sniff(path) == "gzip":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return path.open("r", encoding="utf-8-sig", errors="replace", newline="")


def _head_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` non-blank lines, decompressed."""
    lines: list[str] = []
    try:
        with _open_text(path) as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                    if len(lines) >= count:
                        break
    except (OSError, EOFError) as exc:
        raise CaturError(f"{path}: cannot read: {exc}") from exc
    return lines


def _tokens(line: str) -> list[str]:
    return [t.strip().strip('"').strip().lower() for t in line.split(",")]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_table(path: Path, *, header: bool, names: tuple[str, ...] | None = None,
                dtype: dict[str, object] | None = None) -> _Table:
    """Read a CSV into strings-or-numbers columns, keeping each row's file line number.

    ``header``: the first line is a header (replaced by ``names`` when given).

    Lines with too many fields are not fatal here: pandas reports them as warnings, which we
    collect as "structural" issues with their line numbers, and the line numbers of the rows
    that remain are recovered by leaving those lines out of the count.
    """
    first_line = 2 if header else 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = pd.read_csv(
                path,
                compression=compression_of(path),
                header=0 if header else None,
                names=list(names) if names else None,
                dtype=dtype,
                on_bad_lines="warn",
                skip_blank_lines=False,  # keeps row i on line first_line + i
                encoding_errors="replace",
                low_memory=False,  # one dtype per column, no DtypeWarning
                index_col=False,
            )
        except pd.errors.EmptyDataError:
            raise CaturError(f"{path}: file is empty") from None
        except (pd.errors.ParserError, OSError, EOFError) as exc:
            raise CaturError(f"{path}: cannot parse as CSV: {str(exc).strip()}") from exc
    structural = []
    for warning in caught:
        for match in _SKIPPING.finditer(str(warning.message)):
            structural.append((int(match.group(1)), match.group(2).strip()))
    skipped = np.array(sorted(line for line, _ in structural), dtype=np.int64)
    candidates = np.arange(first_line, first_line + len(df) + len(skipped), dtype=np.int64)
    lines = np.setdiff1d(candidates, skipped, assume_unique=True)
    if header and not names:
        df.columns = [str(c).strip().strip('"').strip().lower() for c in df.columns]
    blank = df.isna().all(axis=1).to_numpy()
    if blank.any():
        df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
    return _Table(df, lines, structural)


def _pick_columns(table: _Table, source: str, fmt: str,
                  wanted: dict[str, tuple[str, ...]]) -> dict[str, pd.Series]:
    """The columns a format needs, by name with aliases; a clear error if one is absent."""
    found: dict[str, pd.Series] = {}
    missing = []
    for name, aliases in wanted.items():
        hit = next((a for a in aliases if a in table.df.columns), None)
        if hit is None:
            missing.append("/".join(aliases))
        else:
            found[name] = table.df[hit]
    if missing:
        raise CaturError(
            f"{source}: not a {fmt} file: no column {', '.join(missing)} in the header "
            f"({', '.join(map(str, table.df.columns))}); expected "
            f"{','.join(a[0] for a in wanted.values())}"
        )
    return found


def _new_checker(table: _Table, source: str, ids: object) -> RowChecker:
    checker = RowChecker(source, table.lines, ids)
    for line, why in table.structural:
        checker.flag_line(line, None, None, why)
    return checker


def _later_duplicates(keys: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows in ``among`` whose key appeared on an earlier ``among`` row, and that row.

    Returns (mask over all rows, position of the first occurrence for each row; -1 if none).
    """
    idx = np.flatnonzero(among)
    sub = pd.Series(keys[idx])
    dup = np.zeros(keys.shape[0], dtype=bool)
    dup[idx] = sub.duplicated(keep="first").to_numpy()
    first = np.full(keys.shape[0], -1, dtype=np.int64)
    first[idx] = pd.Series(idx).groupby(sub.to_numpy()).transform("first").to_numpy()
    return dup, first


def _drop_whole_vms(checker: RowChecker, keys: np.ndarray, key_ok: np.ndarray) -> None:
    """Flag the remaining rows of every VM that has a bad row (skip mode only).

    Otherwise skipping a bad delete would leave its VM running to the end of the trace, and
    skipping a duplicate create would keep an arbitrary one of two conflicting rows.
    """
    bad = checker.bad & key_ok
    if not bad.any():
        return
    first_bad = pd.Series(checker.lines[bad]).groupby(keys[bad]).min()
    collateral = ~checker.bad & key_ok & pd.Series(keys).isin(first_bad.index).to_numpy()
    if collateral.any():
        line_of = first_bad.reindex(keys[collateral]).to_numpy()
        where = np.full(keys.shape[0], -1, dtype=np.int64)
        where[collateral] = line_of
        checker.flag(collateral, "vmid", keys,
                     lambda i: f"dropped with its VM, which has a bad row on line {where[i]}")


def _finish(checker: RowChecker, table: _Table, source: str, fmt: str,
            skip_bad_rows: bool, build: Callable[[np.ndarray], pd.DataFrame]) -> Read:
    """Raise or skip, build the frame from the good rows, validate, and report."""
    if not skip_bad_rows:
        checker.raise_first(_SKIP_HINT)
    df = validate(build(~checker.bad), source)
    report = ReadReport(source, fmt, table.rows_read, checker.count, len(df),
                        checker.reasons(_REASONS_KEPT))
    return df, report


def _whole_number(checker: RowChecker, column: pd.Series, name: str) -> np.ndarray:
    values = check_numeric(checker, column, name)
    check_whole(checker, values, name, series_at(column))
    return values


# --------------------------------------------------------------------------------------------
# Huawei
# --------------------------------------------------------------------------------------------


def _huawei_table(path: Path, fmt: str, names: tuple[str, ...]) -> _Table:
    head = _head_lines(path, 1)
    if not head:
        raise CaturError(f"{path}: file is empty")
    # A headerless file (first line all numbers) gets the format's standard column order.
    header = not all(_is_number(t) for t in _tokens(head[0]))
    return _read_table(path, header=header, names=None if header else names)


def read_huawei_events(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read Huawei-East-1's event log ``vmid,cpu,memory,time,type`` (see module docs)."""
    path, source, fmt = Path(path), str(path), "huawei-events"
    table = _huawei_table(path, fmt, ("vmid", "cpu", "memory", "time", "type"))
    cols = _pick_columns(table, source, fmt, {
        "vmid": ("vmid",), "cpu": ("cpu",), "memory": ("memory", "mem"),
        "time": ("time",), "type": ("type",),
    })
    ids = series_at(cols["vmid"])
    checker = _new_checker(table, source, ids)
    vmid = _whole_number(checker, cols["vmid"], "vmid")
    cpu = _whole_number(checker, cols["cpu"], "cpu")
    mem = check_numeric(checker, cols["memory"], "memory")
    time = check_numeric(checker, cols["time"], "time")
    kind = check_numeric(checker, cols["type"], "type")
    with np.errstate(invalid="ignore"):
        checker.flag(cpu < 1, "cpu", series_at(cols["cpu"]), "must be >= 1")
        checker.flag(mem <= 0, "memory", series_at(cols["memory"]), "must be > 0")
        checker.flag(~np.isnan(kind) & (kind != 0) & (kind != 1), "type",
                     series_at(cols["type"]), "must be 0 (create) or 1 (delete)")
    key_ok = ~np.isnan(vmid) & (vmid == np.floor(vmid))
    vm = np.where(key_ok, vmid, -1).astype(np.int64)

    # Pairing creates with deletes, among rows that are fine on their own.
    ok = ~checker.bad
    create, delete = ok & (kind == 0), ok & (kind == 1)
    lines = checker.lines
    for mask, what in ((create, "create"), (delete, "delete")):
        dup, first = _later_duplicates(vm, mask)
        checker.flag(dup, "vmid", ids, lambda i, what=what, first=first:
                     f"duplicate {what}: this VM's {what} is already on line {lines[first[i]]}")
        mask &= ~dup
    # A delete whose create exists but is bad is not an orphan: it goes with its VM instead.
    any_create = key_ok & (kind == 0)
    orphan = delete & ~np.isin(vm, vm[any_create])
    checker.flag(orphan, "vmid", ids, "delete of a VM that is never created")
    delete &= ~orphan
    create_pos = pd.Series(np.flatnonzero(create), index=vm[create])
    d_pos = np.flatnonzero(delete)
    c_of_d = create_pos.reindex(vm[d_pos]).to_numpy(dtype=np.float64)
    paired = ~np.isnan(c_of_d)
    d_pos, c_of_d = d_pos[paired], c_of_d[paired].astype(np.int64)
    early = np.zeros(len(vm), dtype=bool)
    early[d_pos[time[d_pos] < time[c_of_d]]] = True
    create_of = np.full(len(vm), -1, dtype=np.int64)
    create_of[d_pos] = c_of_d
    checker.flag(early, "time", series_at(cols["time"]), lambda i: (
        f"delete before create (created at {time[create_of[i]]:g} on line "
        f"{lines[create_of[i]]})"))
    if skip_bad_rows:
        _drop_whole_vms(checker, vm, key_ok)

    def build(good: np.ndarray) -> pd.DataFrame:
        c = np.flatnonzero(good & (kind == 0))
        d = np.flatnonzero(good & (kind == 1))
        departure = pd.Series(time[d], index=vm[d]).reindex(vm[c]).to_numpy(dtype=np.float64)
        return pd.DataFrame({"vm_id": vm[c], "arrival_s": time[c], "departure_s": departure,
                             "vcpus": cpu[c].astype(np.int64), "mem_gib": mem[c]})

    return _finish(checker, table, source, fmt, skip_bad_rows, build)


def read_huawei_lt(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read Huawei-East-1 as arrival and lifetime, ``vmid,cpu,mem,at,lt`` (see module docs)."""
    path, source, fmt = Path(path), str(path), "huawei-lt"
    table = _huawei_table(path, fmt, ("vmid", "cpu", "mem", "at", "lt"))
    cols = _pick_columns(table, source, fmt, {
        "vmid": ("vmid",), "cpu": ("cpu",), "mem": ("mem", "memory"), "at": ("at",), "lt": ("lt",),
    })
    ids = series_at(cols["vmid"])
    checker = _new_checker(table, source, ids)
    vmid = _whole_number(checker, cols["vmid"], "vmid")
    cpu = _whole_number(checker, cols["cpu"], "cpu")
    mem = check_numeric(checker, cols["mem"], "mem")
    arrival = check_numeric(checker, cols["at"], "at")
    lifetime = check_numeric(checker, cols["lt"], "lt")
    with np.errstate(invalid="ignore"):
        checker.flag(cpu < 1, "cpu", series_at(cols["cpu"]), "must be >= 1")
        checker.flag(mem <= 0, "mem", series_at(cols["mem"]), "must be > 0")
        checker.flag(lifetime < 0, "lt", series_at(cols["lt"]), "must be >= 0")
    key_ok = ~np.isnan(vmid) & (vmid == np.floor(vmid))
    vm = np.where(key_ok, vmid, -1).astype(np.int64)
    dup, first = _later_duplicates(vm, ~checker.bad)
    lines = checker.lines
    checker.flag(dup, "vmid", ids, lambda i: f"duplicate VM: already on line {lines[first[i]]}")
    if skip_bad_rows:
        _drop_whole_vms(checker, vm, key_ok)

    def build(good: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"vm_id": vm[good], "arrival_s": arrival[good],
                             "departure_s": arrival[good] + lifetime[good],
                             "vcpus": cpu[good].astype(np.int64), "mem_gib": mem[good]})

    return _finish(checker, table, source, fmt, skip_bad_rows, build)


# --------------------------------------------------------------------------------------------
# Azure Public Dataset vmtable
# --------------------------------------------------------------------------------------------


def _bucketed(checker: RowChecker, column: pd.Series, name: str) -> np.ndarray:
    """Sizes written as numbers or as Azure V2 buckets (``"8"``, ``">24"``)."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return check_numeric(checker, column, name)
    text = column.astype("string").str.strip()
    is_open = text.str.startswith(">").fillna(False).to_numpy(dtype=bool)
    known = AZURE_OPEN_BUCKETS.get(name, {})
    mapped = text.map(lambda t: known.get(t, t) if isinstance(t, str) else t)
    unknown = is_open & ~text.isin(list(known)).fillna(False).to_numpy(dtype=bool)
    checker.flag(unknown, name, series_at(column),
                 f"is an open bucket with no assumed size (known: {', '.join(known) or 'none'})")
    # Sizes enter check_numeric as mapped strings, so errors still quote the raw value.
    values = check_numeric(checker, mapped.astype("string").where(~unknown, "0"), name)
    values[unknown] = np.nan
    return values


def _read_azure(path: str | Path, skip_bad_rows: bool, fmt: str) -> Read:
    path, source = Path(path), str(path)
    head = _head_lines(path, 1)
    if not head:
        raise CaturError(f"{path}: file is empty")
    header = _tokens(head[0])[0] == "vmid"
    strings = {"vmid": "string", "subscriptionid": "string", "deploymentid": "string"}
    # The public files have no header; one added by a user is skipped, names stay ours.
    table = _read_table(path, header=header, names=AZURE_COLUMNS, dtype=strings)
    df = table.df
    ids = series_at(df["vmid"])
    checker = _new_checker(table, source, ids)
    vmid = df["vmid"].str.strip()
    key_ok = (vmid.notna() & (vmid != "")).fillna(False).to_numpy(dtype=bool)
    checker.flag(~key_ok, "vmid", ids, "is missing")
    created = check_numeric(checker, df["vmcreated"], "vmcreated")
    deleted = check_numeric(checker, df["vmdeleted"], "vmdeleted", allow_missing=True)
    cores = _bucketed(checker, df["vmcorecount"], "vmcorecount")
    check_whole(checker, cores, "vmcorecount", series_at(df["vmcorecount"]))
    mem = _bucketed(checker, df["vmmemory"], "vmmemory")
    with np.errstate(invalid="ignore"):
        checker.flag(cores < 1, "vmcorecount", series_at(df["vmcorecount"]), "must be >= 1")
        checker.flag(mem <= 0, "vmmemory", series_at(df["vmmemory"]), "must be > 0")
        checker.flag(deleted < created, "vmdeleted", series_at(df["vmdeleted"]),
                     lambda i: f"is before vmcreated {created[i]:g}")
    keys = vmid.fillna("").to_numpy(dtype=object)
    dup, first = _later_duplicates(keys, ~checker.bad & key_ok)
    lines = checker.lines
    checker.flag(dup, "vmid", ids, lambda i: f"duplicate VM: already on line {lines[first[i]]}")
    if skip_bad_rows:
        _drop_whole_vms(checker, keys, key_ok)

    def build(good: np.ndarray) -> pd.DataFrame:
        # Enumerate, not hash: ids are dense, collision-free and reproducible from the file.
        return pd.DataFrame({
            "vm_id": np.arange(int(good.sum()), dtype=np.int64),
            "arrival_s": created[good], "departure_s": deleted[good],
            "vcpus": cores[good].astype(np.int64), "mem_gib": mem[good],
            "tenant_id": df["subscriptionid"].astype("string").str.strip().to_numpy()[good],
        })

    return _finish(checker, table, source, fmt, skip_bad_rows, build)


def read_azure_v1(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read an Azure Public Dataset V1 (2017) ``vmtable`` (see module docs)."""
    return _read_azure(path, skip_bad_rows, "azure-v1")


def read_azure_v2(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read an Azure Public Dataset V2 (2019) ``vmtable`` with size buckets (see module docs)."""
    return _read_azure(path, skip_bad_rows, "azure-v2")


# --------------------------------------------------------------------------------------------
# Huawei Cloud NUMA dataset (column rules in catur.traces.huawei_numa)
# --------------------------------------------------------------------------------------------


def read_huawei_numa_vms(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read a ``VM_data_C*.csv`` request sequence (see :mod:`catur.traces.huawei_numa`)."""
    path, source, fmt = Path(path), str(path), huawei_numa.FORMAT_VMS
    table = _read_table(path, header=True, dtype={"strategy": "string"})
    required = {name: (name,) for name in huawei_numa.VM_COLUMNS[:3]}
    cols = _pick_columns(table, source, fmt, required)
    cols.update({name: table.df[name] for name in huawei_numa.VM_COLUMNS[3:] if name in table.df.columns})
    checker = _new_checker(table, source, np.arange(len(table.df)))  # the vm_id of each row
    build = huawei_numa.check_vm_data(checker, cols)
    return _finish(checker, table, source, fmt, skip_bad_rows, build)


@dataclass(frozen=True)
class NodeFree:
    """Free vCPUs and memory per NUMA node of each server (a ``PM_res.csv``), as read.

    ``free_cores`` is ``int64[H, N]``, ``free_mem_gib`` ``float64[H, N]``; ``lines`` the file
    line of each server's row (for messages that name a row later, e.g. capacity checks).
    """

    source: str
    free_cores: np.ndarray
    free_mem_gib: np.ndarray
    lines: np.ndarray
    rows_skipped: int = 0


def read_node_free(path: str | Path, skip_bad_rows: bool = False) -> NodeFree:
    """Read the free CPU and RAM per node of each server (``CPU1,RAM1,CPU2,RAM2``; GiB)."""
    path, source = Path(path), str(path)
    sniff(path)  # a missing file gets the usual clear error
    table = _read_table(path, header=True)
    checker = _new_checker(table, source, None)
    cores, mem = huawei_numa.check_node_free(checker, table.df, source)
    if not skip_bad_rows:
        checker.raise_first(_SKIP_HINT)
    good = ~checker.bad
    if not good.any():
        raise CaturError(f"{source}: no servers in the file")
    return NodeFree(source, cores[good], mem[good], table.lines[good], checker.count)


# --------------------------------------------------------------------------------------------
# Canonical, registry, detection
# --------------------------------------------------------------------------------------------


def read_canonical_trace(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read a canonical parquet/CSV trace with a report (``read_canonical`` without one)."""
    path, source = Path(path), str(path)
    raw, kind = read_canonical_raw(path)
    lines, unit = (np.arange(2, len(raw) + 2), "line") if kind == "csv" else (None, "row")
    df, checker = check_frame(raw, source, lines=lines, unit=unit, skip_bad_rows=skip_bad_rows)
    if not skip_bad_rows:
        checker.raise_first(_SKIP_HINT)
    report = ReadReport(source, "canonical", len(raw), checker.count, len(df),
                        checker.reasons(_REASONS_KEPT))
    return df, report


def read_partitioned_trace(path: str | Path, skip_bad_rows: bool = False) -> Read:
    """Read a whole partitioned trace directory (:mod:`catur.traces.partitioned`) into memory."""
    from catur.traces.partitioned import PartitionedTrace  # imports this module

    trace = PartitionedTrace.open(path)
    df, skipped, reasons = trace.read_all(skip_bad_rows)
    return df, ReadReport(str(path), "partitioned", trace.num_rows, skipped, len(df), reasons)


FORMATS: dict[str, TraceFormat] = {
    f.name: f
    for f in (
        TraceFormat("huawei-events", "Huawei-East-1 events: vmid,cpu,memory,time,type "
                    "(type 0 create, 1 delete; GiB; seconds)", read_huawei_events),
        TraceFormat("huawei-lt", "Huawei-East-1 arrival+lifetime: vmid,cpu,mem,at,lt "
                    "(GiB; seconds)", read_huawei_lt),
        TraceFormat("azure-v1", "Azure Public Dataset V1 (2017) vmtable, headerless, "
                    "11 columns", read_azure_v1),
        TraceFormat("azure-v2", "Azure Public Dataset V2 (2019) vmtable, headerless, "
                    "size buckets ('>24' = 30 vCPUs, '>64' = 70 GiB assumed)", read_azure_v2),
        TraceFormat(huawei_numa.FORMAT_VMS, "Huawei Cloud NUMA dataset VM_data: flavor_vcpus,"
                    "flavor_ram,numa,strategy,group,domain (GiB; file order, 1 s apart, no "
                    "departures)", read_huawei_numa_vms),
        TraceFormat("canonical", "Catur's canonical trace, parquet or CSV "
                    "(vm_id,arrival_s,departure_s,vcpus,mem_gib,...)", read_canonical_trace),
        TraceFormat("collected", "a directory of 'catur serve --collect-dir' files "
                    "(catur-trace-*.parquet), arrivals joined with departures",
                    lambda path, skip: _collected().read_collected_trace(path, skip)),
        TraceFormat("partitioned", "a directory of canonical parquet files with a 'cluster' "
                    "column ('catur traces generate --out DIR')", read_partitioned_trace),
    )
}


def _collected():
    # Imported late: catur.traces.collected imports this module (ReadReport).
    from catur.traces import collected

    return collected


_SAMPLE_LINES = 1000


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from its first bytes and first line (see module docs)."""
    path = Path(path)
    if path.is_dir():  # the directory formats: canonical files by cluster, or collector files
        from catur.traces.partitioned import is_partitioned

        return "partitioned" if is_partitioned(path) else "collected"
    if sniff(path) == "parquet":
        return "canonical"
    head = _head_lines(path, 1)
    if not head:
        raise CaturError(f"{path}: file is empty")
    tokens = _tokens(head[0])
    names = set(tokens)
    mem = bool(names & {"memory", "mem"})
    if {"vm_id", "arrival_s"} <= names:
        return "canonical"
    if {"vmid", "cpu", "time", "type"} <= names and mem:
        return "huawei-events"
    if {"vmid", "cpu", "at", "lt"} <= names and mem:
        return "huawei-lt"
    if huawei_numa.is_vm_data_header(names):
        return huawei_numa.FORMAT_VMS
    if huawei_numa.is_node_free_header(tokens):
        raise CaturError(
            f"{path}: this is free CPU and RAM per NUMA node (a start state, like PM_res.csv), "
            f"not a VM trace: pass it as --start-state to 'catur evaluate' or 'catur replay'"
        )
    if len(tokens) == len(AZURE_COLUMNS):
        for line in _head_lines(path, _SAMPLE_LINES):
            fields = _tokens(line)
            if len(fields) == len(AZURE_COLUMNS) and (
                    fields[9].startswith(">") or fields[10].startswith(">")):
                return "azure-v2"
        return "azure-v1"
    shown = head[0] if len(head[0]) <= 120 else head[0][:117] + "..."
    raise CaturError(
        f"{path}: cannot detect the trace format from its first line {shown!r}; name it with "
        f"--format, one of: {', '.join(FORMATS)}"
    )


def read_trace(path: str | Path, fmt: str = "auto", skip_bad_rows: bool = False) -> Read:
    """Read any supported trace file into a canonical trace; returns ``(df, report)``.

    ``fmt`` is ``"auto"`` (detect, see module docs) or a key of :data:`FORMATS`. Gzip is
    handled whatever the file is called. Bad rows raise :class:`CaturError` naming file, line
    and field, unless ``skip_bad_rows`` drops them (counted in ``report.rows_skipped``).
    """
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise unknown_name("trace format", fmt, list(FORMATS) + ["auto"])
    elif fmt not in ("collected", "partitioned"):
        sniff(path)  # a missing file gets the same clear error as with auto-detection
    return FORMATS[fmt].read(path, skip_bad_rows)
