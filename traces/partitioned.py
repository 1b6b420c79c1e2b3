"""Partitioned traces: a canonical trace too big for memory, as a directory of parquet files.

A month of 100M VMs is about 1.8 GB of parquet but 5+ GB as a DataFrame, and evaluating it
needs only one cluster at a time: host admission is per cluster, and hosts never share VMs
across clusters. So a big trace is stored as a directory, and read a batch of clusters at a
time::

    DIR/_catur_trace.json      what was written (rows, clusters, files; for a synthetic trace
                               the scenario, seed and days), marked complete only when the
                               writer closes, so an interrupted write is refused
    DIR/part-000000.parquet    canonical columns + ``cluster``; each file holds whole clusters,
    DIR/part-000001.parquet    one parquet *row group* per cluster (several if it is huge)
    ...

Any directory of canonical parquet files with a ``cluster`` column can be read the same way
(files are found recursively; a Hive-style ``cluster=NAME/`` folder supplies the label when
the files lack the column). :class:`PartitionedTrace` first builds an index from the files'
footers alone -- rows and cluster label of every row group (from the column statistics, or
by reading just that column where a row group holds several clusters) and the trace's first
arrival and last event -- then :meth:`PartitionedTrace.read` loads only the row groups of
the clusters asked for, validated as :func:`catur.traces.canonical.check_frame` validates any
trace, with errors naming the file and the row within it::

    trace = PartitionedTrace("month/")
    for labels in trace.batches(max_vms=2_000_000):   # whole clusters, ~2M rows per batch
        df = trace.read(labels)                        # a canonical DataFrame of those clusters

Memory is bounded by the batch (plus one row group while reading), whatever the trace's
size. Limits of checking in batches: ``vm_id`` uniqueness is checked within each file's
part of a batch, not across the whole trace.

:class:`PartitionedWriter` writes such a directory (the synthetic generator uses it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catur.errors import CaturError
from catur.traces.canonical import REQUIRED_COLUMNS, SKIP_HINT, check_frame, sort_canonical, validate

MANIFEST = "_catur_trace.json"
FORMAT_NAME = "catur-partitioned"
FORMAT_VERSION = 1
_HIVE = re.compile(r"^cluster=(.+)$")

# The on-disk schema the writer uses: the canonical columns and the cluster label.
SCHEMA = pa.schema(
    [
        ("vm_id", pa.int64()),
        ("arrival_s", pa.float64()),
        ("departure_s", pa.float64()),
        ("vcpus", pa.int64()),
        ("mem_gib", pa.float64()),
        ("cluster", pa.string()),
    ]
)


def is_partitioned(path: str | Path) -> bool:
    """True for a directory holding a manifest or parquet files with canonical columns.

    The collector's directories (:mod:`catur.traces.collected`) hold event rows, not
    ``arrival_s``, so the two kinds of directory are told apart by the files' schema.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MANIFEST).is_file():
        return True
    first = next(iter(_parquet_files(path)), None)
    if first is None:
        return False
    try:
        names = set(pq.read_schema(first).names)
    except Exception:  # not parquet after all: not ours to judge here
        return False
    return {"vm_id", "arrival_s"} <= names


def _parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if p.is_file())


@dataclass(frozen=True)
class RowGroup:
    """One parquet row group: where it is and which clusters it holds."""

    file: Path
    index: int  # row group number within the file
    first_row: int  # 1-based row number, within the file, of its first row
    rows: int
    clusters: tuple[str, ...]
    hive_label: str | None  # the label from a cluster=NAME folder, when the file has no column


@dataclass
class PartitionedTrace:
    """A partitioned canonical trace: an index of its row groups, and reads by cluster.

    Attributes:
        path: The directory.
        groups: Every row group of every file, in file order.
        cluster_rows: Rows per cluster label, labels sorted as strings (admission's order).
        first_arrival_s, last_event_s: The earliest arrival and the latest arrival or
            departure, for the evaluation window (:func:`catur.sim.admission.window_of`).
        manifest: The writer's manifest, or ``{}`` for a directory written by other means.
    """

    path: Path
    groups: list[RowGroup] = field(default_factory=list)
    cluster_rows: dict[str, int] = field(default_factory=dict)
    first_arrival_s: float = 0.0
    last_event_s: float = 0.0
    manifest: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> "PartitionedTrace":
        """Index a directory from its files' footers (and, for row groups holding several
        clusters, their cluster column). Raises :class:`CaturError` naming the file for a
        missing column, an unreadable file or an unfinished directory."""
        root = Path(path)
        if not root.is_dir():
            raise CaturError(f"partitioned trace: {root} is not a directory")
        files = _parquet_files(root)
        if not files:
            raise CaturError(f"partitioned trace: {root} holds no .parquet files")
        trace = cls(root)
        manifest_path = root / MANIFEST
        if manifest_path.is_file():
            try:
                trace.manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError) as exc:
                raise CaturError(f"{manifest_path}: cannot read the manifest: {exc}") from exc
        first, last = np.inf, -np.inf
        counts: dict[str, int] = {}
        for file in files:
            try:
                meta = pq.ParquetFile(file).metadata
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise CaturError(f"{file}: cannot read parquet: {exc}") from exc
            names = meta.schema.to_arrow_schema().names
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            hive = next((m.group(1) for m in map(_HIVE.match, (p.name for p in file.parents)) if m), None)
            if "cluster" not in names and hive is None:
                missing.append("cluster")
            if missing:
                raise CaturError(
                    f"{file}: missing column(s) {', '.join(missing)}; a partitioned trace needs "
                    f"{', '.join([*REQUIRED_COLUMNS, 'cluster'])} (has: {', '.join(names)})"
                )
            row = 1
            for g in range(meta.num_row_groups):
                rg = meta.row_group(g)
                labels, lo, hi = _row_group_facts(file, g, rg, names, hive)
                trace.groups.append(RowGroup(file, g, row, rg.num_rows, tuple(labels), hive))
                row += rg.num_rows
                first, last = min(first, lo), max(last, hi)
                for label, count in labels.items():
                    counts[label] = counts.get(label, 0) + count
        trace.cluster_rows = dict(sorted(counts.items()))
        expected = trace.manifest.get("rows")
        if manifest_path.is_file() and not trace.manifest.get("complete", False):
            raise CaturError(
                f"{root}: unfinished -- its writer stopped before closing it (the manifest "
                f"{MANIFEST} is not marked complete); generate it again"
            )
        if manifest_path.is_file() and expected != trace.num_rows:
            raise CaturError(
                f"{root}: the manifest says {expected} rows but the files hold {trace.num_rows}; "
                f"the directory is incomplete or was changed after writing"
            )
        trace.first_arrival_s = float(first) if trace.num_rows else 0.0
        trace.last_event_s = float(last) if trace.num_rows else 0.0
        return trace

    @property
    def num_rows(self) -> int:
        return sum(self.cluster_rows.values())

    @property
    def clusters(self) -> list[str]:
        return list(self.cluster_rows)

    def batches(self, max_vms: int) -> list[list[str]]:
        """Cluster labels in sorted order, cut into consecutive batches of at most ``max_vms``
        rows (a cluster larger than that is a batch of its own: clusters are never split)."""
        if max_vms < 1:
            raise CaturError(f"batch size must be >= 1 VM, got {max_vms}")
        out: list[list[str]] = []
        size = 0
        for label, rows in self.cluster_rows.items():
            if out and size + rows <= max_vms:
                out[-1].append(label)
                size += rows
            else:
                out.append([label])
                size = rows
        return out

    def read(self, clusters: Sequence[str], skip_bad_rows: bool = False) -> tuple[pd.DataFrame, int, list[str]]:
        """The canonical trace of these clusters: ``(df, rows skipped, first reasons)``.

        Only row groups holding one of ``clusters`` are read. Each file's part is checked
        with :func:`~catur.traces.canonical.check_frame`; a bad row raises
        :class:`CaturError` naming the file and the row within it (1-based), unless
        ``skip_bad_rows`` drops it. Rows come sorted by arrival then ``vm_id``, as in a
        trace read whole.
        """
        wanted = set(clusters)
        unknown = wanted - set(self.cluster_rows)
        if unknown:
            raise CaturError(f"{self.path}: no cluster(s) {', '.join(sorted(unknown))}")
        pieces: list[pd.DataFrame] = []
        skipped, reasons = 0, []
        by_file: dict[Path, list[RowGroup]] = {}
        for group in self.groups:
            if wanted.intersection(group.clusters):
                by_file.setdefault(group.file, []).append(group)
        for file, groups in by_file.items():
            table = pq.ParquetFile(file).read_row_groups([g.index for g in groups])
            rows = np.concatenate([g.first_row + np.arange(g.rows) for g in groups])
            if "cluster" not in table.column_names:
                table = table.append_column("cluster", pa.array([groups[0].hive_label] * table.num_rows))
            # Compare as plain strings, a missing label as "" (admission's reading of it).
            labels = pc.fill_null(pc.cast(table.column("cluster"), pa.string()), "")
            keep = pc.is_in(labels, value_set=pa.array(sorted(wanted), type=pa.string()))
            if not pc.all(keep).as_py():
                keep_np = keep.to_numpy(zero_copy_only=False)
                table, rows = table.filter(keep), rows[keep_np]
            df = table.to_pandas()
            checked, checker = check_frame(df, str(file), lines=rows, unit="row", skip_bad_rows=skip_bad_rows)
            if not skip_bad_rows:
                checker.raise_first(SKIP_HINT)
            skipped += checker.count
            reasons += checker.reasons(5)
            pieces.append(checked)
        df = pieces[0] if len(pieces) == 1 else sort_canonical(pd.concat(pieces, ignore_index=True))
        return df, skipped, reasons[:5]

    def read_all(self, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, int, list[str]]:
        """The whole trace in memory (for traces that fit: tests, statistics, training)."""
        return self.read(self.clusters, skip_bad_rows)


def _row_group_facts(
    file: Path, index: int, rg: pq.RowGroupMetaData, names: list[str], hive: str | None
) -> tuple[dict[str, int], float, float]:
    """(rows per cluster label, min arrival, max arrival or departure) of a row group, from
    its statistics where they are complete (one label: our writer's case), else from its
    columns."""
    stats = {rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)}

    def bounds(name: str) -> tuple[float, float] | None:
        s = stats.get(name)
        if s is None or not s.has_min_max:
            return None
        return float(s.min), float(s.max)

    if "cluster" in names:
        s = stats.get("cluster")
        if s is not None and s.has_min_max and s.min == s.max and s.null_count == 0:
            labels = {str(s.min): rg.num_rows}
        else:  # several clusters share the row group: count them from the column
            values, counts = np.unique(_read_labels(file, index), return_counts=True)
            labels = {str(v): int(c) for v, c in zip(values, counts)}
    else:
        labels = {str(hive): rg.num_rows}
    arrival, departure = bounds("arrival_s"), bounds("departure_s")
    if arrival is None or (departure is None and stats["departure_s"].null_count != rg.num_rows):
        table = pq.ParquetFile(file).read_row_group(index, columns=["arrival_s", "departure_s"])
        a = table.column("arrival_s").to_numpy(zero_copy_only=False).astype(float)
        d = table.column("departure_s").to_numpy(zero_copy_only=False).astype(float)
        lo = float(np.nanmin(a)) if a.size else np.inf
        hi = float(np.nanmax(np.concatenate([a, d]))) if a.size else -np.inf
        return labels, lo, hi
    hi = arrival[1] if departure is None else max(arrival[1], departure[1])
    return labels, arrival[0], hi


def _read_labels(file: Path, index: int) -> np.ndarray:
    """One row group's cluster labels as strings (missing = "", as admission reads them)."""
    table = pq.ParquetFile(file).read_row_group(index, columns=["cluster"])
    column = table.column("cluster").to_pandas()
    return column.astype("string").fillna("").to_numpy(dtype=object)


class PartitionedWriter:
    """Writes a partitioned trace one cluster at a time, in bounded memory.

    Each :meth:`write_cluster` call appends one cluster (a canonical DataFrame whose rows all
    carry one ``cluster`` label) as its own row group to the current file, which is rolled
    over once it holds ``rows_per_file`` rows. Files are written as ``*.parquet.tmp`` and
    renamed when complete; the manifest says ``"complete": false`` until :meth:`close`, so an
    interrupted write leaves a directory that :meth:`PartitionedTrace.open` refuses. Use as a
    context manager.
    """

    def __init__(self, directory: str | Path, rows_per_file: int = 2_000_000, extra: dict | None = None):
        if rows_per_file < 1:
            raise CaturError(f"rows per file must be >= 1, got {rows_per_file}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise CaturError(f"{self.directory} exists and is not a directory")
        if self.directory.is_dir() and any(self.directory.iterdir()):
            raise CaturError(f"{self.directory} is not empty; write a partitioned trace into a new directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = int(rows_per_file)
        self.extra = dict(extra or {})
        self.files: list[dict] = []
        self.rows = 0
        self.clusters = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._write_manifest(complete=False)  # until close(): readers refuse the directory

    def write_cluster(self, df: pd.DataFrame) -> None:
        labels = df["cluster"].unique() if len(df) else []
        if len(labels) != 1:
            raise CaturError(f"write_cluster needs rows of exactly one cluster, got {len(labels)} labels")
        canonical = validate(df, f"cluster {labels[0]!r}")
        table = pa.Table.from_pandas(canonical[SCHEMA.names], schema=SCHEMA, preserve_index=False)
        if self._writer is None:
            name = f"part-{len(self.files):06d}.parquet"
            self._tmp = self.directory / (name + ".tmp")
            self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")
            self.files.append({"name": name, "rows": 0, "clusters": []})
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        entry = self.files[-1]
        entry["rows"] += len(table)
        entry["clusters"].append(str(labels[0]))
        self.rows += len(table)
        self.clusters += 1
        if entry["rows"] >= self.rows_per_file:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._tmp, self.directory / self.files[-1]["name"])
            self._writer = None

    def close(self) -> dict:
        """Finish the last file and write the manifest; returns it."""
        self._finish_file()
        for entry in self.files:  # the clusters of each file as a range, not a long list
            labels = entry.pop("clusters")
            entry["first_cluster"], entry["last_cluster"], entry["num_clusters"] = labels[0], labels[-1], len(labels)
        return self._write_manifest(complete=True)

    def _write_manifest(self, complete: bool) -> dict:
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "complete": complete,
            "rows": self.rows,
            "clusters": self.clusters,
            "files": self.files,
            **self.extra,
        }
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.directory / MANIFEST)  # atomic: a reader sees old or new
        return manifest

    def abort(self) -> None:
        """Stop after a failure: close the open file (left as ``.tmp``), keep the manifest
        marked unfinished."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "PartitionedWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


__all__ = [
    "FORMAT_NAME", "MANIFEST", "PartitionedTrace", "PartitionedWriter", "RowGroup", "SCHEMA",
    "is_partitioned",
]  # fmt: skip
