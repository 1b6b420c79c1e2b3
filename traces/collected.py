"""Collected traces: what a running placement service recorded, read back as a canonical trace.

``catur serve --collect-dir DIR`` (:mod:`catur.service.collector`) writes one row per VM it
placed and one per departure notice it received into rotated parquet files in ``DIR``. This
module owns that file format — the writer imports it from here, so the two cannot drift — and
:func:`read_collected` joins the rows back into the canonical trace
(:mod:`catur.traces.canonical`) that evaluation and training read::

    df = read_collected("/var/lib/catur/trace")              # a canonical DataFrame
    df, report = read_collected_trace("/var/lib/catur/trace")  # ... and what was joined, what not
    df, report = read_trace("/var/lib/catur/trace")          # the same, format detected

The files
---------

``catur-trace-<UTC start, YYYYmmddTHHMMSS.ffffffZ>-p<pid>-<seq>.parquet``: the name sorts by
the time the file was started, so the oldest files come first in a listing (the collector
deletes from that end when the directory exceeds its budget). A file being written is named
``...parquet.tmp`` until it is complete and renamed; readers ignore it. Every file carries
the key ``catur.collected`` = :data:`FORMAT_VERSION` in its parquet metadata and these columns
(:data:`SCHEMA`), one row per event:

=============  =======  ======================================================================
column         type     meaning
=============  =======  ======================================================================
event          string   ``"arrival"`` (a VM was placed) or ``"departure"`` (a Depart notice)
time_s         float64  when the event happened: the request's ``time_s`` if it carried one,
                        else the server's clock (seconds since the Unix epoch)
server_s       float64  the server's clock when the request arrived (Unix seconds)
host_id        string   the hypervisor's host id (as sent; may be empty)
vm_id          string   the hypervisor's VM id (as sent; empty = the VM cannot be joined)
cluster        string   arrivals: the cluster the host belongs to (may be empty)
vcpus          int64    arrivals: vCPUs
mem_mib        int64    arrivals: memory, MiB
vnuma          int64    arrivals: vNUMA instances asked for; null = not asked
instances      int64    arrivals: vNUMA instances Catur placed
alpha, beta    float64  arrivals: sensitivity weights, when the request carried them
policy         string   arrivals: who scored the primitives (``catur``, ``greedy``, ...)
primitive      string   arrivals: the primitive that placed the VM
model_version  string   arrivals: the serving model's version (empty = no model)
=============  =======  ======================================================================

Joining
-------

A VM is its ``vm_id``: the arrival gives its size and arrival time, the departure with the
same ``vm_id`` its departure time; a VM with no departure is still running (``departure_s``
NaN). What cannot be joined is never fatal — a live service produces such rows legitimately —
but each case is counted in the :class:`CollectedReport` and its first occurrences named by
file and row:

* a **repeated arrival** (a ``vm_id`` already placed: a retried Place) is ignored, the first
  kept;
* a **departure of an unknown VM** (its arrival was dropped, deleted for the budget, or
  recorded before collection started) is ignored;
* a **repeated departure** keeps the earliest; a **departure before its arrival** (clocks of
  two time bases mixed) is ignored, so that VM stays running;
* an arrival without a ``vm_id`` is a VM of its own that never departs.

A file that is not a readable collector file raises :class:`~catur.errors.CaturError` naming
it, as does a row with an impossible value (vCPUs < 1, a non-finite time); with
``skip_bad_rows`` they are skipped and counted instead. A file that disappears while being
read (the collector deleted it for the budget) is skipped and reported.

The canonical result keeps the hypervisor's ids in ``source_host`` and ``source_vm_id``
(strings), **not** in ``host_id``: a collected trace is replayed on a *modelled* cluster, where
Catur's own admission assigns hosts. ``vm_id`` is the hypervisor's id when every VM id is a
plain integer (``"17"``), else the VMs are numbered 0, 1, 2, ... in arrival order. ``cluster``
is kept when any arrival named one (so admission and evaluation run per cluster); ``alpha``,
``beta`` and ``vnuma`` columns appear when any arrival carried them. The deciding ``policy``,
``primitive``, ``model_version`` and the placed ``instances`` ride along as extra columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catur.errors import CaturError
from catur.traces.canonical import REASONS_KEPT, ReadReport, RowChecker, validate

FORMAT_VERSION = "1"
METADATA_KEY = b"catur.collected"
FILE_PREFIX = "catur-trace-"
FILE_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
_FILE_NAME = re.compile(r"^catur-trace-\d{8}T\d{6}\.\d{6}Z-p\d+-\d+\.parquet$")

ARRIVAL = "arrival"
DEPARTURE = "departure"

SCHEMA = pa.schema(
    [
        ("event", pa.string()),
        ("time_s", pa.float64()),
        ("server_s", pa.float64()),
        ("host_id", pa.string()),
        ("vm_id", pa.string()),
        ("cluster", pa.string()),
        ("vcpus", pa.int64()),
        ("mem_mib", pa.int64()),
        ("vnuma", pa.int64()),
        ("instances", pa.int64()),
        ("alpha", pa.float64()),
        ("beta", pa.float64()),
        ("policy", pa.string()),
        ("primitive", pa.string()),
        ("model_version", pa.string()),
    ],
    metadata={METADATA_KEY: FORMAT_VERSION.encode()},
)
COLUMNS = tuple(SCHEMA.names)
_INT64_MAX = (1 << 63) - 1
_PLAIN_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


# --------------------------------------------------------------------------------------------
# Writing side: rows and file names (used by catur.service.collector)
# --------------------------------------------------------------------------------------------


def departure_row(time_s: float, server_s: float, host_id: str, vm_id: str) -> tuple:
    """One departure row, in :data:`COLUMNS` order."""
    return (DEPARTURE, time_s, server_s, host_id, vm_id, None, None, None, None, None, None, None, None, None, None)


def rows_to_table(rows: list[tuple]) -> pa.Table:
    """Rows in :data:`COLUMNS` order as a table of :data:`SCHEMA` (with its metadata)."""
    columns = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def collected_file_name(start_unix_s: float, pid: int, seq: int) -> str:
    """The name of a collector file started at ``start_unix_s``: sorts by start time."""
    stamp = datetime.fromtimestamp(start_unix_s, tz=timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{FILE_PREFIX}{stamp}-p{pid}-{seq:06d}{FILE_SUFFIX}"


def is_collected_file(name: str) -> bool:
    """A complete collector file's name (a ``.tmp`` file being written is not one)."""
    return bool(_FILE_NAME.match(name))


def collected_files(directory: str | Path) -> list[Path]:
    """The complete collector files in ``directory``, oldest first (by name)."""
    directory = Path(directory)
    try:
        names = [entry.name for entry in directory.iterdir() if entry.is_file() and is_collected_file(entry.name)]
    except FileNotFoundError:
        raise CaturError(f"collected trace directory not found: {directory}") from None
    except NotADirectoryError:
        raise CaturError(f"{directory} is not a directory of collected trace files") from None
    except OSError as exc:
        raise CaturError(f"cannot list {directory}: {exc.strerror}") from exc
    return [directory / name for name in sorted(names)]


# --------------------------------------------------------------------------------------------
# Reading side
# --------------------------------------------------------------------------------------------


@dataclass
class CollectedReport(ReadReport):
    """A :class:`~catur.traces.canonical.ReadReport` with what joining did.

    ``rows_read`` counts rows of all files; ``rows_skipped`` every row not used, for any of
    the reasons below (and bad rows, with ``skip_bad_rows``); ``reasons`` names the first few
    by file and row.
    """

    files: int = 0
    files_skipped: int = 0
    arrivals: int = 0
    departures: int = 0
    running: int = 0
    duplicate_arrivals: int = 0
    duplicate_departures: int = 0
    unknown_departures: int = 0
    early_departures: int = 0


def _read_file(path: Path, report: CollectedReport, skip_bad_rows: bool) -> pd.DataFrame | None:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        # The collector deletes the oldest files for its budget while we read: not an error.
        report.files_skipped += 1
        report.reasons.append(f"{path}: deleted while reading (the collector's budget?); skipped")
        return None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        message = f"{path}: cannot read as a collected trace file: {exc}"
        if not skip_bad_rows:
            raise CaturError(message + " (pass skip_bad_rows=True to skip it)") from exc
        report.files_skipped += 1
        report.reasons.append(message + "; skipped")
        return None
    metadata = table.schema.metadata or {}
    missing = [c for c in COLUMNS if c not in table.column_names]
    if metadata.get(METADATA_KEY) != FORMAT_VERSION.encode() or missing:
        what = f"missing column(s) {', '.join(missing)}" if missing else (
            f"its metadata {METADATA_KEY.decode()!r} is {metadata.get(METADATA_KEY)!r}, expected {FORMAT_VERSION!r}"
        )
        message = f"{path}: not a catur collected trace file (format {FORMAT_VERSION}): {what}"
        if not skip_bad_rows:
            raise CaturError(message)
        report.files_skipped += 1
        report.reasons.append(message + "; skipped")
        return None
    df = table.select(list(COLUMNS)).to_pandas()
    df["src_file"] = str(path)
    df["src_row"] = np.arange(1, len(df) + 1)
    return df


def _check_rows(df: pd.DataFrame, path: str, report: CollectedReport, skip_bad_rows: bool) -> pd.DataFrame:
    """Flag impossible values of one file's rows (vectorized); raise or drop them."""
    checker = RowChecker(path, df["src_row"].to_numpy(), df["vm_id"].to_numpy(dtype=object), unit="row")
    event = df["event"].to_numpy(dtype=object)
    arrival = event == ARRIVAL
    checker.flag(~arrival & (event != DEPARTURE), "event", event, f"must be {ARRIVAL!r} or {DEPARTURE!r}")
    time = df["time_s"].to_numpy(dtype=float, na_value=np.nan)
    checker.flag(~np.isfinite(time), "time_s", time, "must be a finite number of seconds")
    vm_id = df["vm_id"]
    checker.flag(~arrival & (vm_id.isna() | (vm_id == "")).to_numpy(dtype=bool), "vm_id", vm_id.to_numpy(dtype=object),
                 "is empty: a departure must name its VM")
    for name, low in (("vcpus", 1), ("mem_mib", 1)):
        values = df[name].to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            checker.flag(arrival & ~(values >= low), name, values, f"must be >= {low} on an arrival")
    for name in ("alpha", "beta"):
        values = df[name].to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            checker.flag(arrival & (~np.isnan(values) & ~(np.isfinite(values) & (values >= 0))), name, values,
                         "must be finite and >= 0")
    if not skip_bad_rows:
        checker.raise_first("pass skip_bad_rows=True (CLI: --skip-bad-rows) to drop bad rows")
    if checker.count:
        report.rows_skipped += checker.count
        report.reasons.extend(checker.reasons(REASONS_KEPT))
        df = df.loc[~checker.bad]
    return df


def _where(row) -> str:
    return f"{row.src_file}, row {row.src_row} (vm {row.vm_id!r})"


def _note(report: CollectedReport, rows: pd.DataFrame, text) -> None:
    """Count ``rows`` as skipped and name the first few in the report."""
    report.rows_skipped += len(rows)
    for row in rows.head(REASONS_KEPT).itertuples(index=False):
        report.reasons.append(f"{_where(row)}: {text(row) if callable(text) else text}")


def _vm_numbers(source_ids: pd.Series) -> np.ndarray:
    """The hypervisor's ids when all are plain int64 numbers, else 0, 1, 2, ... in order."""
    ids = source_ids.to_numpy(dtype=object)
    if len(ids) and all(isinstance(v, str) and _PLAIN_INT.match(v) and abs(int(v)) <= _INT64_MAX for v in ids):
        return np.array([int(v) for v in ids], dtype=np.int64)
    return np.arange(len(ids), dtype=np.int64)


def read_collected_trace(path: str | Path, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, CollectedReport]:
    """Read a collector directory into a canonical trace and a :class:`CollectedReport`.

    See the module docs for how arrivals and departures are joined and what is reported.
    """
    directory = Path(path)
    files = collected_files(directory)
    report = CollectedReport(str(directory), "collected", 0, 0, 0, files=len(files))
    if not files:
        raise CaturError(
            f"{directory}: no collected trace files ({FILE_PREFIX}*{FILE_SUFFIX}); is trace collection on "
            f"(catur serve --collect-dir)? Files still being written end in {TMP_SUFFIX} and are not read"
        )
    parts = []
    for file in files:
        df = _read_file(file, report, skip_bad_rows)
        if df is None:
            continue
        report.rows_read += len(df)
        parts.append(_check_rows(df, str(file), report, skip_bad_rows))
    if not parts:
        raise CaturError(f"{directory}: none of its {len(files)} collected trace files could be read")
    rows = pd.concat(parts, ignore_index=True)
    # Time order; equal times keep file and row order (the order the service recorded them).
    rows = rows.sort_values("time_s", kind="stable", ignore_index=True)
    is_arrival = (rows["event"] == ARRIVAL).to_numpy()
    arrivals, departures = rows.loc[is_arrival], rows.loc[~is_arrival]
    report.arrivals, report.departures = len(arrivals), len(departures)

    named = (arrivals["vm_id"].fillna("") != "").to_numpy()
    repeated = named & arrivals["vm_id"].duplicated(keep="first").to_numpy()
    first_seen = arrivals.loc[named].drop_duplicates("vm_id").set_index("vm_id")
    _note(report, arrivals.loc[repeated], lambda r: (
        f"repeated arrival of a VM first placed at {first_seen.at[r.vm_id, 'time_s']:.6f} s "
        f"({first_seen.at[r.vm_id, 'src_file']}, row {first_seen.at[r.vm_id, 'src_row']}); ignored"))
    report.duplicate_arrivals = int(repeated.sum())
    arrivals = arrivals.loc[~repeated]

    arrival_time = first_seen["time_s"]
    known = departures["vm_id"].isin(arrival_time.index).to_numpy()
    _note(report, departures.loc[~known], "departure of a VM never placed (or whose arrival was not collected); ignored")
    report.unknown_departures = int((~known).sum())
    departures = departures.loc[known]
    placed_at = arrival_time.reindex(departures["vm_id"]).to_numpy()
    early = departures["time_s"].to_numpy() < placed_at
    _note(report, departures.loc[early], lambda r: (
        f"departure at {r.time_s:.6f} s is before the VM's arrival at {arrival_time[r.vm_id]:.6f} s "
        f"(different time bases?); ignored, the VM stays running"))
    report.early_departures = int(early.sum())
    departures = departures.loc[~early]
    again = departures["vm_id"].duplicated(keep="first").to_numpy()
    _note(report, departures.loc[again], "repeated departure; the earliest is kept")
    report.duplicate_departures = int(again.sum())
    departure_time = departures.loc[~again].set_index("vm_id")["time_s"]

    source_vm = arrivals["vm_id"].fillna("").astype(str)
    out = {
        "vm_id": _vm_numbers(source_vm),
        "arrival_s": arrivals["time_s"].to_numpy(dtype=float),
        "departure_s": np.where(named[~repeated], departure_time.reindex(source_vm).to_numpy(dtype=float), np.nan),
        "vcpus": arrivals["vcpus"].to_numpy(dtype=np.int64),
        "mem_gib": arrivals["mem_mib"].to_numpy(dtype=np.int64) / 1024.0,
    }
    for name in ("alpha", "beta", "vnuma"):
        if arrivals[name].notna().any():
            out[name] = arrivals[name].to_numpy(dtype=float, na_value=np.nan)
    cluster = arrivals["cluster"].fillna("").astype(str)
    if (cluster != "").any():
        out["cluster"] = cluster.to_numpy(dtype=object)
    out["source_host"] = arrivals["host_id"].fillna("").astype(str).to_numpy(dtype=object)
    out["source_vm_id"] = source_vm.to_numpy(dtype=object)
    for name in ("policy", "primitive", "model_version"):
        out[name] = arrivals[name].fillna("").astype(str).to_numpy(dtype=object)
    out["instances"] = arrivals["instances"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(out)
    for name in ("source_host", "source_vm_id", "policy", "primitive", "model_version"):
        frame[name] = frame[name].astype("string")
    if len(frame) and len(np.unique(frame["vm_id"].to_numpy())) != len(frame):
        # Unreachable for plain ids (repeats were dropped above): "-0" is not a plain id.
        raise CaturError(f"{directory}: VM ids collide after conversion to numbers")  # pragma: no cover
    canonical = validate(frame, str(directory))
    report.vms = len(canonical)
    report.running = int(canonical["departure_s"].isna().sum())
    report.reasons = report.reasons[:REASONS_KEPT]
    return canonical, report


def read_collected(directory: str | Path) -> pd.DataFrame:
    """A collector directory as a canonical trace (see the module docs).

    Repeated and unjoinable rows are skipped silently here; use :func:`read_collected_trace`
    to see how many and which.
    """
    return read_collected_trace(directory)[0]
