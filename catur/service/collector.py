"""Trace collection: the placement service records the workload it sees, without slowing it.

Catur learns from traces, and the best trace of a cluster's workload is the one its own
placement service answers. With ``catur serve --collect-dir DIR`` the service records every
VM it placed (``Place``, ``PlaceBatch``) and every departure notice (``Depart``) into rotated
parquet files in ``DIR``; :func:`catur.traces.collected.read_collected` (or ``catur evaluate
DIR``) reads them back as a canonical trace to evaluate and retrain on. The file format is
defined in :mod:`catur.traces.collected`.

How it stays out of the placement path
--------------------------------------

A placement thread does one thing: build a small tuple and put it on a bounded queue (about
2 µs). It never waits: when the queue is full — the disk is slow, or the writer is stuck —
the record is **dropped and counted** (``catur_collector_rows_dropped_total{reason=
"queue_full"}``). A missing trace row is a small loss; a placement that waits on a disk is an
outage. (The queue is a lock-free :class:`queue.SimpleQueue` whose size is checked before each
put, so under concurrency it may exceed ``queue_size`` by at most the number of RPC threads.)

One background thread owns the files. It takes rows off the queue, batches them into pyarrow
row groups (at most :attr:`CollectorConfig.row_group_rows` rows are held in memory) and
streams them into ``catur-trace-<start time>-p<pid>-<seq>.parquet.tmp``. A file is finished —
closed, ``fsync``-ed, renamed without ``.tmp``, the directory ``fsync``-ed — when it holds
``rotate_rows`` rows, when its first row is ``rotate_seconds`` old, when it reaches a quarter of
the byte budget, or at shutdown. Readers only ever see finished files, and a crash loses at
most the file being written (at most ``rotate_seconds`` of records). A collector starting on the
directory deletes such crash leftovers once no live writer can own them (untouched for twice
``rotate_seconds`` plus a minute), and logs each.

The budget: newest data wins
----------------------------

After each finished file, if the collector files in the directory (``catur-trace-*.parquet``;
nothing else there is touched) exceed ``max_bytes``, the **oldest** are deleted until they fit
(``catur_collector_files_deleted_total``). We keep the newest data because it describes the
workload the next model will face: retraining cares about the recent drift, and a full disk
that silently stopped recording last week's workload would be the worse failure. A file is at
most a quarter of the budget, so the budget always holds several files; the file just
finished is never deleted, so the directory can exceed the budget only when a single row group
alone is larger than the remaining space (a budget of a few kilobytes).

Failures
--------

A write error (disk full, permission denied, the directory removed) is logged (once per
streak of errors), counted (``catur_collector_write_errors_total``), and the rows of the
file being written are counted as dropped (``reason="write_error"``); the next rows start a new
file (the directory is re-created if it was removed). Nothing is raised into a placement.
Records offered after :meth:`TraceCollector.close` are dropped as ``reason="stopped"``.

Metrics (registered in the service's registry, see :mod:`catur.service.telemetry`):

===============================================  =======  =========================================
name                                             type     meaning
===============================================  =======  =========================================
``catur_collector_rows_written_total``           counter  rows in finished files, by ``event``
``catur_collector_rows_dropped_total``           counter  rows lost, by ``reason``: queue_full,
                                                          write_error, stopped
``catur_collector_files_rotated_total``          counter  files finished, by ``trigger``: rows,
                                                          seconds, bytes, stop
``catur_collector_files_deleted_total``          counter  oldest files deleted for the budget
``catur_collector_write_errors_total``           counter  failed writes (each loses one file)
``catur_collector_bytes``                        gauge    bytes of collector files on disk
``catur_collector_queue_rows``                   gauge    rows waiting for the writer
===============================================  =======  =========================================
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter, Gauge

from catur.errors import CaturError
from catur.traces.collected import (
    ARRIVAL,
    SCHEMA,
    TMP_SUFFIX,
    collected_file_name,
    collected_files,
    departure_row,
    is_collected_file,
    rows_to_table,
)

log = logging.getLogger("catur.service.collector")

DROP_REASONS = ("queue_full", "write_error", "stopped")
ROTATE_TRIGGERS = ("rows", "seconds", "bytes", "stop")
_NAP_S = 0.05  # the writer drains the queue at least this often (see TraceCollector._step)


@dataclass(frozen=True)
class CollectorConfig:
    """Where and how much to collect.

    Args:
        directory: Where the files go (created if missing).
        rotate_rows: Finish a file after this many rows (arrivals and departures).
        rotate_seconds: Finish a file once its first row is this old (bounds what a crash
            loses, and how stale the newest readable data is).
        max_bytes: Budget for the collector files in ``directory``; past it the oldest are
            deleted. A file is finished at a quarter of it.
        queue_size: Rows waiting for the writer; beyond, new rows are dropped (counted).
        row_group_rows: Rows per parquet row group: what the writer holds in memory.
    """

    directory: Path
    rotate_rows: int = 100_000
    rotate_seconds: float = 600.0
    max_bytes: int = 1 << 30
    queue_size: int = 65_536
    row_group_rows: int = 8192

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))
        for name, low in (("rotate_rows", 1), ("max_bytes", 1024), ("queue_size", 1), ("row_group_rows", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise CaturError(f"collector {name} must be a whole number >= {low}, got {value!r}")
        seconds = self.rotate_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise CaturError(f"collector rotate_seconds must be a finite number > 0, got {seconds!r}")

    @property
    def max_file_bytes(self) -> int:
        """A file is finished once it reaches this size (a quarter of the budget)."""
        return max(1, self.max_bytes // 4)


class CollectorMetrics:
    """The collector's Prometheus metrics, in ``registry`` (see the module table)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.rows_written = Counter("catur_collector_rows_written", "Trace rows in finished collector files, by event.", ("event",), registry=r)
        self.rows_dropped = Counter("catur_collector_rows_dropped", "Trace rows lost, by reason (queue_full, write_error, stopped).", ("reason",), registry=r)
        self.files_rotated = Counter("catur_collector_files_rotated", "Collector files finished, by what triggered it.", ("trigger",), registry=r)
        self.files_deleted = Counter("catur_collector_files_deleted", "Oldest collector files deleted to keep within the byte budget.", registry=r)
        self.write_errors = Counter("catur_collector_write_errors", "Collector writes that failed (disk full, permissions, ...).", registry=r)
        self.bytes = Gauge("catur_collector_bytes", "Bytes of collector files on disk (finished files and the one being written).", registry=r)
        self.queue_rows = Gauge("catur_collector_queue_rows", "Trace rows waiting for the collector's writer.", registry=r)
        for event in (ARRIVAL, "departure"):
            self.rows_written.labels(event)
        for reason in DROP_REASONS:
            self.rows_dropped.labels(reason)
        for trigger in ROTATE_TRIGGERS:
            self.files_rotated.labels(trigger)
        # Children looked up once: the placement path only increments.
        self.dropped_queue_full = self.rows_dropped.labels("queue_full")
        self.dropped_stopped = self.rows_dropped.labels("stopped")


def arrival_row(msg, parsed, decision, now: float) -> tuple:
    """The trace row of one answered PlaceRequest (in :data:`catur.traces.collected.COLUMNS`
    order): ``msg`` the request, ``parsed`` its :class:`~catur.service.convert.ParsedRequest`,
    ``decision`` the answer, ``now`` the server's clock."""
    vm, request = msg.vm, parsed.request
    return (
        ARRIVAL,
        parsed.time_s if parsed.time_s is not None else now,
        now,
        parsed.host_id,
        parsed.vm_id,
        parsed.cluster,
        request.vcpus,
        request.mem_mib,
        request.vnuma,
        len(decision.placement.cpu_nodes),
        request.alpha if vm.HasField("alpha") else None,
        request.beta if vm.HasField("beta") else None,
        decision.policy,
        decision.primitive,
        decision.model_version,
    )


class TraceCollector:
    """Records arrivals and departures to rotated parquet files, never blocking the caller.

    Args:
        config: Directory, rotation and budget.
        registry: The Prometheus registry to count in (the service's).
        before_write: Test hook, called by the writer thread before each row group is written
            (a hook that blocks simulates a stuck disk).
        clock: Wall clock for record times (seconds since the Unix epoch).

    :meth:`record_arrival` and :meth:`record_departure` are safe from any thread; they return
    whether the row was queued. :meth:`close` flushes what is queued and finishes the file.
    """

    def __init__(
        self,
        config: CollectorConfig,
        registry: CollectorRegistry | None = None,
        *,
        before_write: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = CollectorMetrics(registry if registry is not None else CollectorRegistry())
        self.clock = clock
        self._before_write = before_write
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._limit = config.queue_size
        self.metrics.queue_rows.set_function(self._queue.qsize)
        self._closed = False
        self._stop = threading.Event()
        # Writer-thread state (touched by the writer thread only).
        self._buffer: list[tuple] = []
        self._buffer_since: float | None = None  # monotonic time of the oldest unfinished row
        self._writer: pq.ParquetWriter | None = None
        self._sink = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._file_rows = {ARRIVAL: 0, "departure": 0}
        self._seq = 0
        self._failing = False
        try:
            config.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CaturError(f"cannot create the trace collection directory {str(config.directory)!r}: {exc.strerror}") from exc
        self._remove_abandoned()
        self._committed_bytes = self._scan_bytes()
        self.metrics.bytes.set(self._committed_bytes)
        self._thread = threading.Thread(target=self._run, name="catur-collector", daemon=True)
        self._thread.start()

    # --- the placement side: never blocks ----------------------------------------------------------

    def _offer(self, row: tuple) -> bool:
        if self._closed:
            self.metrics.dropped_stopped.inc()
            return False
        if self._queue.qsize() >= self._limit:
            self.metrics.dropped_queue_full.inc()
            return False
        self._queue.put(row)
        return True

    def record_arrival(self, msg, parsed, decision) -> bool:
        """Queue the row of an answered PlaceRequest (see :func:`arrival_row`)."""
        return self._offer(arrival_row(msg, parsed, decision, self.clock()))

    def record_departure(self, host_id: str, vm_id: str, time_s: float | None = None) -> bool:
        """Queue a departure notice (``time_s`` None = now)."""
        now = self.clock()
        return self._offer(departure_row(now if time_s is None else time_s, now, host_id, vm_id))

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking rows, write what is queued, finish the file. Idempotent."""
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - a disk stuck for `timeout` seconds
            log.error("trace collector: the writer did not finish within %.0f s; its rows may be lost", timeout)
            return
        # A row offered while the writer was taking its last look: count it, do not lose it silently.
        late = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            late += 1
        if late:
            self.metrics.dropped_stopped.inc(late)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # --- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # pragma: no cover - the writer must outlive any surprise
                log.exception("trace collector: unexpected error; dropping the current file")
                self._fail()

    def _step(self) -> bool:
        """Take what is queued, write full row groups, rotate when due; False when stopped.

        The writer naps between drains instead of waiting on the queue: a blocking ``get``
        would wake this thread for every row, and each wake-up takes the GIL from a
        placement. Napping, it wakes at most ``1 / _NAP_S`` times a second and takes rows in
        batches; rows wait a little longer, which costs nothing.
        """
        stopping = self._stop.is_set()
        room = self._room() - len(self._buffer)
        took = 0
        while took < room:
            try:
                self._buffer.append(self._queue.get_nowait())
            except queue.Empty:
                break
            took += 1
        if took and self._buffer_since is None:
            self._buffer_since = time.monotonic()
        if len(self._buffer) >= self._room():
            self._write_group()
            if self._rows_in_file() >= self.config.rotate_rows:
                self._finish("rows")
            elif self._writer is not None and self._sink_bytes() >= self.config.max_file_bytes:
                self._finish("bytes")
        if self._buffer_since is not None and time.monotonic() - self._buffer_since >= self.config.rotate_seconds:
            self._write_group()
            self._finish("seconds")
        if stopping and took < room:  # stopping, and the queue is empty
            self._write_group()
            self._finish("stop")
            return False
        if took < room:  # the queue is empty: nap (a stop ends the nap at once)
            self._stop.wait(self._nap_s())
        return True

    def _nap_s(self) -> float:
        if self._buffer_since is None:
            return _NAP_S
        due = self._buffer_since + self.config.rotate_seconds - time.monotonic()
        return min(_NAP_S, max(0.0, due))

    def _rows_in_file(self) -> int:
        return sum(self._file_rows.values())

    def _room(self) -> int:
        """Rows the next row group may hold: a group, or what is left of ``rotate_rows``."""
        return max(1, min(self.config.row_group_rows, self.config.rotate_rows - self._rows_in_file()))

    def _write_group(self) -> None:
        """Write the buffered rows as one row group of the open file (opening one if needed)."""
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            if self._before_write is not None:
                self._before_write()
            if self._writer is None:
                self._open()
            self._writer.write_table(rows_to_table(rows))
        except Exception as exc:
            self._fail(exc, len(rows))
            return
        for row in rows:
            self._file_rows[row[0]] += 1
        self.metrics.bytes.set(self._committed_bytes + self._sink_bytes())

    def _open(self) -> None:
        directory = self.config.directory
        directory.mkdir(parents=True, exist_ok=True)  # again: it may have been removed
        self._seq += 1
        name = collected_file_name(self.clock(), os.getpid(), self._seq)
        self._final = directory / name
        self._tmp = directory / (name + TMP_SUFFIX)
        self._sink = open(self._tmp, "wb")
        self._writer = pq.ParquetWriter(self._sink, SCHEMA, compression="zstd")

    def _sink_bytes(self) -> int:
        try:
            return self._sink.tell() if self._sink is not None else 0
        except (OSError, ValueError):  # pragma: no cover
            return 0

    def _finish(self, trigger: str) -> None:
        """Close, fsync and rename the open file, then keep the directory within budget."""
        self._buffer_since = None
        if self._writer is None:
            return
        final, rows = self._final, dict(self._file_rows)
        try:
            self._writer.close()
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._sink.close()
            os.replace(self._tmp, final)
            _fsync_dir(final.parent)
        except Exception as exc:
            self._fail(exc)
            return
        self._reset()
        if self._failing:
            log.info("trace collector: writing again after errors")
            self._failing = False
        for event, count in rows.items():
            self.metrics.rows_written.labels(event).inc(count)
        self.metrics.files_rotated.labels(trigger).inc()
        self._enforce_budget(keep=final)

    def _reset(self) -> None:
        self._writer = self._sink = self._tmp = self._final = None
        self._file_rows = {ARRIVAL: 0, "departure": 0}

    def _fail(self, exc: BaseException | None = None, extra_rows: int = 0) -> None:
        """Drop the file being written (its rows and ``extra_rows`` counted as lost)."""
        lost = self._rows_in_file() + extra_rows
        self.metrics.write_errors.inc()
        self.metrics.rows_dropped.labels("write_error").inc(lost)
        if not self._failing:
            log.warning("trace collector: cannot write to %s (%s); %d rows lost, will retry with the next rows",
                        self.config.directory, exc if exc is not None else "unexpected error", lost)
            self._failing = True
        for close in (getattr(self._writer, "close", None), getattr(self._sink, "close", None)):
            try:
                if close is not None:
                    close()
            except Exception:
                pass
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except OSError:
                pass
        self._reset()
        self._buffer_since = time.monotonic() if self._buffer else None

    def _remove_abandoned(self) -> None:
        """Delete unfinished files a crashed collector left behind (``*.parquet.tmp``).

        A parquet file without its footer cannot be read, so nothing is lost. A live
        collector finishes its file within ``rotate_seconds`` of the first row, so a ``.tmp``
        untouched for twice that (plus a minute) belongs to no one; a younger one may be
        another process's file in progress and is left alone."""
        # Compared with file mtimes, so wall time, not the injectable row clock.
        cutoff = time.time() - (2 * self.config.rotate_seconds + 60.0)
        try:
            entries = list(self.config.directory.iterdir())
        except OSError:
            return
        for path in entries:
            if not (path.name.endswith(TMP_SUFFIX) and is_collected_file(path.name[: -len(TMP_SUFFIX)])):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    log.warning("trace collector: removed %s, an unfinished file left by a crash", path.name)
            except OSError as exc:
                log.warning("trace collector: cannot remove abandoned %s: %s", path.name, exc.strerror)

    def _scan_bytes(self) -> int:
        total = 0
        try:
            for path in collected_files(self.config.directory):
                try:
                    total += path.stat().st_size
                except OSError:
                    pass
        except CaturError:
            pass
        return total

    def _enforce_budget(self, keep: Path) -> None:
        """Delete the oldest collector files until they fit ``max_bytes`` (never ``keep``)."""
        try:
            files = collected_files(self.config.directory)
        except CaturError as exc:
            log.warning("trace collector: %s", exc)
            return
        sizes = {}
        for path in files:
            try:
                sizes[path] = path.stat().st_size
            except OSError:
                pass
        total = sum(sizes.values())
        for path, size in sizes.items():  # oldest first
            if total <= self.config.max_bytes:
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("trace collector: cannot delete %s for the budget: %s", path, exc.strerror)
                continue
            else:
                self.metrics.files_deleted.inc()
            total -= size
        self._committed_bytes = total
        self.metrics.bytes.set(total)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
