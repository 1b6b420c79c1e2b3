"""The canonical trace: one table, one row per VM, that every part of Catur reads.

Public VM traces come in many shapes (event logs, arrival/lifetime tables, Azure's vmtable);
:mod:`catur.traces.readers` turns each of them into this one form, so the simulator, the
trainer and the benchmarks only ever deal with a single schema. It is a
:class:`pandas.DataFrame`, stored as parquet (preferred: typed, compact) or CSV:

============  =========  =====================================================================
column        dtype      meaning
============  =========  =====================================================================
vm_id         int64      unique id of the VM within the trace
arrival_s     float64    when the VM is created, in seconds (any origin; finite)
departure_s   float64    when it is deleted, in seconds, ``>= arrival_s``; **NaN = still
                         running when the trace ends** (an empty field in CSV, null in parquet)
vcpus         int64      virtual CPUs, ``>= 1``
mem_gib       float64    memory in GiB, ``> 0`` (fractions are real: Azure sells 0.75 GiB VMs)
------------  ---------  ---------------------------------------------------------------------
host_id       int64      optional: the host the VM ran on (``>= 0``); traces without it get
                         hosts from Catur's NUMA-agnostic admission step
tenant_id     string     optional: owner (e.g. Azure subscription id); may be missing per row
alpha, beta   float64    optional: the VM's sensitivity to CPU overload and to remote memory,
                         ``>= 0``; a missing value means the default 1.0
vnuma         int64      optional: explicit vNUMA instance count, ``>= 0``; 0 (or missing)
                         means "no explicit count, let Catur choose"
cluster       string     optional: which cluster the VM belongs to, for multi-cluster traces
============  =========  =====================================================================

Rows are kept sorted by ``arrival_s`` then ``vm_id`` so a replay can stream them in order and
two writes of the same trace are byte-identical. Other columns are carried along untouched.

:func:`validate` is the gate: it coerces dtypes and checks every rule above, and its errors
(:class:`~catur.errors.CaturError`) name the source, the row, the VM, the field and the bad
value, e.g. ``trace.csv, line 7 (vm 12): field 'vcpus' = 0: must be >= 1``.

>>> df = pd.DataFrame({"vm_id": [2, 1], "arrival_s": [5.0, 0.0], "departure_s": [None, 9.0],
...                    "vcpus": [2, 1], "mem_gib": [4.0, 1.75]})
>>> validate(df, "example")["vm_id"].tolist()  # sorted by arrival
[1, 2]

The row-checking machinery here (:class:`RowChecker`) is shared with the readers: checks are
vectorized boolean masks over the whole table, so a million-row trace is checked in numpy,
and the first bad row is found afterwards instead of by looping in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from catur.errors import CaturError

REQUIRED_COLUMNS: dict[str, str] = {
    "vm_id": "int64",
    "arrival_s": "float64",
    "departure_s": "float64",
    "vcpus": "int64",
    "mem_gib": "float64",
}
OPTIONAL_COLUMNS: dict[str, str] = {
    "host_id": "int64",
    "tenant_id": "string",
    "alpha": "float64",
    "beta": "float64",
    "vnuma": "int64",
    "cluster": "string",
}
# What a missing optional number means. These match the simulator's defaults (sim/replay.py):
# weights 1.0, vnuma 0 = "let Catur choose". host_id has no default: half a host assignment
# is a broken trace, not a convention.
OPTIONAL_DEFAULTS: dict[str, float] = {"alpha": 1.0, "beta": 1.0, "vnuma": 0}

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


# --------------------------------------------------------------------------------------------
# What a reader reports, and row checks shared with the readers
# --------------------------------------------------------------------------------------------

# The hint every reader appends to its first bad-row error when rows are not being skipped.
SKIP_HINT = "pass skip_bad_rows=True (CLI: --skip-bad-rows) to drop bad rows"
# How many skip reasons a report keeps (the rest are only counted).
REASONS_KEPT = 5


@dataclasses.dataclass
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
    reasons: list[str] = dataclasses.field(default_factory=list)



class RowChecker:
    """Collects vectorized row checks and turns the bad rows into errors or skip reasons.

    Each :meth:`flag` call takes a boolean mask over all rows, so checking is numpy-fast; the
    Python work happens only for the handful of rows that end up in a message. ``lines``
    gives each row's position as the user sees it (the 1-based file line, header counted);
    ``unit`` says what that number is ("line" for files, "row" for in-memory frames).

    Issues can also be attached to lines that never became rows (a line with too many fields
    is dropped by the CSV tokenizer): :meth:`flag_line`.
    """

    def __init__(
        self,
        source: str,
        lines: np.ndarray,
        ids: Sequence[object] | np.ndarray | None = None,
        unit: str = "line",
    ) -> None:
        self.source = source
        self.lines = np.asarray(lines, dtype=np.int64)
        self.ids = ids
        self.unit = unit
        self._bad = np.zeros(self.lines.shape[0], dtype=bool)
        # (mask, field, values, reason) for row issues; (line, field, value, reason) for lines.
        self._checks: list[tuple[np.ndarray, str, object, str | Callable[[int], str]]] = []
        self._line_issues: list[tuple[int, str | None, object, str]] = []

    @property
    def bad(self) -> np.ndarray:
        """Boolean mask of rows flagged so far (a copy)."""
        return self._bad.copy()

    def flag(
        self,
        mask: np.ndarray | pd.Series,
        field: str,
        values: object,
        reason: str | Callable[[int], str],
    ) -> None:
        """Flag every row where ``mask`` is true.

        ``values`` is the column the bad value comes from (indexed by row position) or a
        scalar; ``reason`` is a fixed text or a function of the row position, for reasons that
        quote other rows (``"first created on line 3"``).
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self._checks.append((mask, field, values, reason))
            self._bad |= mask

    def flag_line(self, line: int, field: str | None, value: object, reason: str) -> None:
        """Flag a line that has no row (the tokenizer rejected it); ``field`` may be None."""
        self._line_issues.append((int(line), field, value, reason))

    @property
    def count(self) -> int:
        """How many rows and row-less lines are bad."""
        return int(self._bad.sum()) + len(self._line_issues)

    def _describe_row(self, pos: int) -> str:
        for mask, field, values, reason in self._checks:
            if mask[pos]:
                value = values[pos] if _indexable(values) else values
                text = reason(pos) if callable(reason) else reason
                who = ""
                if self.ids is not None:
                    vm = _plain(self.ids[pos])
                    if not _is_missing(vm) and str(vm).strip():
                        who = f" (vm {_show(vm).strip(chr(39))})"
                return (
                    f"{self.source}, {self.unit} {self.lines[pos]}{who}: "
                    f"field {field!r} = {_show(value)}: {text}"
                )
        raise AssertionError("row is not flagged")  # pragma: no cover

    def _describe_line(self, issue: tuple[int, str | None, object, str]) -> str:
        line, field, value, reason = issue
        what = f" field {field!r} = {_show(value)}:" if field else ""
        return f"{self.source}, {self.unit} {line}:{what} {reason}"

    def reasons(self, limit: int = 5) -> list[str]:
        """Messages for the first ``limit`` bad rows or lines, in file order."""
        bad_pos = np.flatnonzero(self._bad)
        order = np.argsort(self.lines[bad_pos], kind="stable")[:limit]
        items = [(int(self.lines[bad_pos[i]]), 0, int(bad_pos[i])) for i in order]
        items += [(issue[0], 1, k) for k, issue in enumerate(self._line_issues)]
        items.sort()
        return [
            self._describe_row(ref) if kind == 0 else self._describe_line(self._line_issues[ref])
            for _, kind, ref in items[:limit]
        ]

    def raise_first(self, hint: str = "") -> None:
        """Raise a :class:`CaturError` for the earliest bad row or line, if there is one.

        The message also counts the other bad rows, so a user knows whether the file has one
        typo or is in the wrong format; ``hint`` is appended (e.g. how to skip bad rows).
        """
        if self.count:
            first = self.reasons(limit=1)[0]
            more = self.count - 1
            extra = [f"{more} more bad {'row' if more == 1 else 'rows'}"] if more else []
            extra += [hint] if hint else []
            raise CaturError(first + (f" ({'; '.join(extra)})" if extra else ""))


def _indexable(values: object) -> bool:
    return isinstance(values, (np.ndarray, pd.Series, pd.api.extensions.ExtensionArray, list))


def _plain(value: object) -> object:
    if isinstance(value, pd.Series):  # pragma: no cover - defensive
        value = value.iloc[0]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # pragma: no cover - array-like values
        return False


def _show(value: object) -> str:
    value = _plain(value)
    if _is_missing(value):
        return "<missing>"
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return repr(int(value)) if abs(value) < 2**53 else repr(value)
    return repr(value)


def series_at(values: pd.Series | np.ndarray) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """The positional array behind a column, so a checker can index it by row position."""
    if isinstance(values, pd.Series):
        return values.array
    return values


def check_numeric(
    checker: RowChecker, column: pd.Series, field: str, *, allow_missing: bool = False
) -> np.ndarray:
    """Parse a column as float64, flagging missing, non-numeric and infinite values.

    Returns the parsed values with NaN where the value is bad (or legitimately missing when
    ``allow_missing``). Numeric columns (the fast, common case) skip string parsing entirely.
    """
    raw = series_at(column)
    if pd.api.types.is_bool_dtype(column.dtype):
        checker.flag(np.ones(len(column), bool), field, raw, "is a boolean, not a number")
        return np.full(len(column), np.nan)
    if pd.api.types.is_numeric_dtype(column.dtype):
        parsed = column.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        missing = np.isnan(parsed)
    else:
        # Strings: blank means missing; anything else that does not parse is reported as such.
        text = column.astype("string").str.strip()
        blank = (text == "").fillna(True).to_numpy(dtype=bool)
        missing = text.isna().to_numpy(dtype=bool) | blank
        parsed = pd.to_numeric(text.mask(blank), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan, copy=True
        )
        checker.flag(np.isnan(parsed) & ~missing, field, raw, "is not a number")
    if not allow_missing:
        checker.flag(missing, field, raw, "is missing")
    checker.flag(np.isinf(parsed), field, raw, "is not finite")
    parsed[np.isinf(parsed)] = np.nan
    return parsed


def check_whole(checker: RowChecker, parsed: np.ndarray, field: str, raw: object) -> None:
    """Flag values that are numbers but not whole numbers (2.5 vCPUs)."""
    with np.errstate(invalid="ignore"):
        checker.flag(~np.isnan(parsed) & (parsed != np.floor(parsed)), field, raw,
                     "is not a whole number")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a trace and return it in canonical form (coerced dtypes, sorted, fresh index).

    Raises :class:`CaturError` for a missing required column, or for the first bad row
    (``"<source>, row 3 (vm 17): field 'vcpus' = 0: must be >= 1"``; rows count from 1 in the
    order given). ``df`` itself is not modified.
    """
    checked, checker = check_frame(df, source)
    checker.raise_first()
    return checked


def check_frame(
    df: pd.DataFrame,
    source: str,
    *,
    lines: np.ndarray | None = None,
    unit: str = "row",
    skip_bad_rows: bool = False,
) -> tuple[pd.DataFrame, RowChecker]:
    """:func:`validate`'s engine: check every row, then drop bad rows or leave them flagged.

    ``lines`` names each row for messages (file lines for a CSV); default: 1, 2, 3, ...
    With ``skip_bad_rows`` the returned frame holds only good rows; otherwise it is returned
    as soon as a row is bad, unconverted, and the caller raises via ``checker.raise_first()``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CaturError(
            f"{source}: missing required column(s) {', '.join(missing)}; the canonical trace "
            f"needs {', '.join(REQUIRED_COLUMNS)} (has: {', '.join(map(str, df.columns))})"
        )
    n = len(df)
    if lines is None:
        lines = np.arange(1, n + 1)
    ids = series_at(df["vm_id"])
    checker = RowChecker(source, lines, ids, unit=unit)
    out: dict[str, object] = {}

    vm_id = check_numeric(checker, df["vm_id"], "vm_id")
    check_whole(checker, vm_id, "vm_id", ids)
    arrival = check_numeric(checker, df["arrival_s"], "arrival_s")
    departure = check_numeric(checker, df["departure_s"], "departure_s", allow_missing=True)
    vcpus = check_numeric(checker, df["vcpus"], "vcpus")
    check_whole(checker, vcpus, "vcpus", series_at(df["vcpus"]))
    mem = check_numeric(checker, df["mem_gib"], "mem_gib")
    with np.errstate(invalid="ignore"):
        checker.flag(vcpus < 1, "vcpus", series_at(df["vcpus"]), "must be >= 1")
        checker.flag(mem <= 0, "mem_gib", series_at(df["mem_gib"]), "must be > 0")
        checker.flag(
            departure < arrival, "departure_s", series_at(df["departure_s"]),
            lambda i: f"is before arrival_s {_show(arrival[i])}",
        )
    # Duplicates are judged among rows whose id parsed; the later row is the bad one.
    # Ids above 2**53 do not survive float64, so an integer column is used as is. Rows already
    # bad take no part, so when skipping, a bad row does not get a good twin dropped with it.
    vm_exact = _exact_ints(df["vm_id"], vm_id)
    dup = np.zeros(n, dtype=bool)
    ok_id = ~checker.bad
    dup[ok_id] = pd.Series(vm_exact[ok_id]).duplicated().to_numpy()
    checker.flag(dup, "vm_id", ids, "is not unique (it appears on an earlier row)")
    out.update(vm_id=vm_exact, arrival_s=arrival, departure_s=departure, vcpus=vcpus, mem_gib=mem)

    for name, dtype in OPTIONAL_COLUMNS.items():
        if name not in df.columns:
            continue
        raw = series_at(df[name])
        if dtype == "string":
            # Kept as pandas' string array: no Python object per row (a 100M-VM trace is
            # read in batches of millions of rows).
            out[name] = df[name].astype("string").array
            continue
        default = OPTIONAL_DEFAULTS.get(name)
        values = check_numeric(checker, df[name], name, allow_missing=default is not None)
        if default is not None:
            values = np.where(np.isnan(values) & ~checker.bad, default, values)
        if dtype == "int64":
            check_whole(checker, values, name, raw)
            values = _exact_ints(df[name], values)
        with np.errstate(invalid="ignore"):
            checker.flag(values < 0, name, raw, "must be >= 0")
        out[name] = values

    if checker.count and not skip_bad_rows:
        return df, checker
    keep = ~checker.bad
    columns: dict[str, object] = {}
    for name in df.columns:
        if name in out:
            dtype = REQUIRED_COLUMNS.get(name) or OPTIONAL_COLUMNS[name]
            if dtype == "string":
                columns[name] = out[name][keep]
            else:
                columns[name] = np.asarray(out[name])[keep].astype(dtype)
        else:
            columns[name] = df[name].to_numpy()[keep]
    ordered = [c for c in REQUIRED_COLUMNS] + [c for c in OPTIONAL_COLUMNS if c in df.columns]
    ordered += [c for c in df.columns if c not in ordered]
    result = pd.DataFrame({c: columns[c] for c in ordered})
    return sort_canonical(result), checker


def _exact_ints(column: pd.Series, parsed: np.ndarray) -> np.ndarray:
    """Whole-number values as int64 (0 where bad), exact for integer columns of any size."""
    if pd.api.types.is_integer_dtype(column.dtype) and not column.isna().any():
        return column.to_numpy(dtype=np.int64)
    return np.where(np.isnan(parsed), 0, parsed).astype(np.int64)


def sort_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by arrival then vm_id (stable, so equal keys keep their order), fresh index."""
    return df.sort_values(["arrival_s", "vm_id"], kind="stable", ignore_index=True)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def sniff(path: str | Path) -> str:
    """What the file's first bytes say it is: ``"gzip"``, ``"parquet"`` or ``"text"``.

    The bytes, not the name, decide: a gzipped file without ``.gz`` is still read, and a
    ``.gz`` name on a plain file does not make it fail.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise CaturError(f"trace file not found: {path}") from None
    except IsADirectoryError:
        raise CaturError(f"trace path is a directory, not a file: {path}") from None
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if head == _PARQUET_MAGIC:
        return "parquet"
    return "text"


def compression_of(path: str | Path) -> str | None:
    """The ``compression=`` argument pandas needs for ``path`` (decided by sniffing)."""
    return "gzip" if sniff(path) == "gzip" else None


# String columns are read as strings even when every value looks like a number, so tenant "007"
# stays "007".
_CSV_DTYPES = {name: "string" for name, dtype in OPTIONAL_COLUMNS.items() if dtype == "string"}


def read_canonical_raw(path: str | Path) -> tuple[pd.DataFrame, str]:
    """Read a canonical parquet or CSV file without checking it; also says which it was."""
    path = Path(path)
    kind = sniff(path)
    if kind == "parquet":
        try:
            return pd.read_parquet(path, engine="pyarrow"), "parquet"
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise CaturError(f"{path}: cannot read parquet: {exc}") from exc
    try:
        df = pd.read_csv(path, compression=compression_of(path), dtype=_CSV_DTYPES)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise CaturError(f"{path}: cannot read CSV: {exc}".strip()) from exc
    except pd.errors.EmptyDataError:
        raise CaturError(f"{path}: file is empty") from None
    return df, "csv"


def read_canonical(path: str | Path) -> pd.DataFrame:
    """Read and validate a canonical trace (``.parquet``, ``.csv`` or gzipped CSV).

    Errors in a CSV name the file line (header = line 1); in parquet, the row (first = 1).
    """
    df, kind = read_canonical_raw(path)
    lines, unit = (np.arange(2, len(df) + 2), "line") if kind == "csv" else (None, "row")
    checked, checker = check_frame(df, str(path), lines=lines, unit=unit)
    checker.raise_first()
    return checked


def write_canonical(df: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Validate ``df`` and write it to ``path``: ``.parquet``, ``.csv`` or ``.csv.gz``.

    Returns the canonical frame that was written. Missing departures are written as an
    empty CSV field or a parquet null.
    """
    path = Path(path)
    name = path.name.lower()
    canonical = validate(df, "trace to write")
    if name.endswith(".parquet"):
        canonical.to_parquet(path, engine="pyarrow", index=False)
    elif name.endswith(".csv") or name.endswith(".csv.gz"):
        # mtime=0 keeps gzip output byte-identical across runs.
        compression = {"method": "gzip", "mtime": 0} if name.endswith(".gz") else None
        canonical.to_csv(path, index=False, compression=compression)
    else:
        raise CaturError(
            f"cannot write trace to {path}: unknown suffix; use .parquet, .csv or .csv.gz"
        )
    return canonical
