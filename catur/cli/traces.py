"""The ``catur traces`` command line: convert public traces, look at them, generate synthetic ones.

Three sub-commands, registered on an existing argparse sub-parser set by
:func:`add_traces_commands` (``catur.cli.main`` calls it, so they appear as ``catur traces ...``):

``traces convert IN OUT``
    Read any supported trace (format detected, or ``--format``) and write the canonical trace
    to ``OUT``: parquet for ``.parquet``, CSV for ``.csv`` / ``.csv.gz``.
``traces stats TRACE``
    Print a trace's summary (VMs, span, flavors, peak concurrency); ``--json`` for machines.
``traces generate --scenario NAME --vms N --out DIR``
    Write a synthetic trace of any size, one cluster at a time (:mod:`catur.traces.scale`).

Each sub-parser sets ``func`` to a handler ``handler(args) -> int`` (the exit code). Bad input
raises :class:`~catur.errors.CaturError`, which the top-level CLI turns into a one-line
message; reports of skipped rows go to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catur.cli.options import add_command
from catur.errors import CaturError
from catur.traces.canonical import write_canonical
from catur.traces.readers import FORMATS, ReadReport, read_trace
from catur.traces.stats import format_stats, trace_stats

_FORMAT_HELP = "\n".join(f"  {name:<14} {f.description}" for name, f in FORMATS.items())

_TRACES_EPILOG = f"""\
formats (--format; default: auto-detected from the file's first bytes and first line):
  auto           detect; gzip is recognised by content, whatever the file is called
{_FORMAT_HELP}

examples:
  catur traces convert huawei-east-1-lt.csv.gz huawei.parquet
  catur traces convert vmtable.csv.gz azure2019.parquet --format azure-v2 --skip-bad-rows
  catur traces stats huawei.parquet
  catur traces stats azure2017-dev-events.csv.gz --json
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", "-f", dest="fmt", default="auto", choices=["auto", *FORMATS], metavar="F",
        help="input format: auto (default) or one of " + ", ".join(FORMATS),
    )
    parser.add_argument(
        "--skip-bad-rows", action="store_true",
        help="drop malformed rows (and the rest of their VM) instead of stopping at the first; "
             "the count and the first reasons are printed to stderr",
    )


def add_traces_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``traces convert``, ``stats`` and ``generate`` on ``subparsers``; returns ``traces``."""
    traces = add_command(
        subparsers, "traces", None,
        help="convert public VM traces to Catur's canonical trace and summarise them",
        description="Convert public VM traces (Huawei-East-1, Azure Public Dataset) to Catur's "
                    "canonical trace, and summarise traces.",
        epilog=_TRACES_EPILOG,
    )
    sub = traces.add_subparsers(dest="traces_command", metavar="{convert,stats,generate}")
    sub.required = True

    convert = add_command(
        sub, "convert", cmd_traces_convert,
        help="read a trace in any supported format and write it as a canonical trace",
        description="Read IN (any supported format, gzipped or not) and write the canonical "
                    "trace (vm_id, arrival_s, departure_s, vcpus, mem_gib, ...) to OUT. "
                    "Errors name the file, line, field and value of the first bad row.",
        epilog=_TRACES_EPILOG,
    )
    convert.add_argument("input", metavar="IN", help="trace file to read")
    convert.add_argument("output", metavar="OUT",
                         help="canonical trace to write: .parquet (recommended), .csv or .csv.gz")
    _add_common(convert)

    stats = add_command(
        sub, "stats", cmd_traces_stats,
        help="print a trace's VM count, span, flavors and peak concurrency",
        description="Summarise TRACE: VM count, time span, vCPU and memory distributions, the "
                    "most common flavors, the share still running at the end, and the peak "
                    "number of live VMs, vCPUs and GiB.",
        epilog=_TRACES_EPILOG,
    )
    stats.add_argument("trace", metavar="TRACE", help="trace file, any supported format")
    _add_common(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_generate_command(sub)
    return traces


_GENERATE_EPILOG = """\
examples:
  catur traces generate --out month.parquet                        # one cluster, ~31,600 VMs
  catur traces generate --scenario default --vms 1000000 --out month-1m/
  catur traces generate --vms 100000000 --out month-100m/ --jobs 2   # ~3,170 clusters, ~1.7 GiB
  catur traces generate --scenario multi-cluster --vms 5000000 --days 14 --seed 7 --out two-weeks/
  catur evaluate month-100m/ --policies xen                         # streamed, bounded memory

Each cluster is one trace of the scenario (catur.traces.synthetic; 'default' = a month of
~31,600 Huawei-East-1-like VMs peaking at 2,000 live VMs, ~56 hosts once admitted), drawn
from its own seed (the --seed and the cluster's index), so cluster N is the same whatever
--vms, --rows-per-file or --jobs. Clusters are added until the trace holds at least --vms
VMs (the last one whole), with vm_id numbered on and a 'cluster' column (c000000, c000001,
...). A directory OUT gets parquet files of whole clusters, one row group per cluster, and
a manifest (_catur_trace.json) marked complete at the end; only a few clusters are in
memory at a time, whatever --vms. A file OUT (.parquet, .csv, .csv.gz) gets the trace in
one piece (up to 5,000,000 VMs). Disk: about 18 bytes per VM (zstd parquet).
"""


def add_generate_command(sub: argparse._SubParsersAction) -> None:
    """Register ``traces generate`` (synthetic traces of any size, :mod:`catur.traces.scale`)."""
    from catur.traces.synthetic import SCENARIOS

    gen = add_command(
        sub, "generate", cmd_traces_generate,
        help="write a synthetic trace of any size (e.g. a month of 100M VMs) in bounded memory",
        description="Generate a synthetic canonical trace of --vms VMs as independent clusters of a "
                    "built-in scenario, written one cluster at a time.",
        epilog=_GENERATE_EPILOG,
    )
    gen.add_argument("--scenario", default="default", choices=list(SCENARIOS), metavar="NAME",
                     help="scenario of every cluster: " + ", ".join(SCENARIOS) + " (default: default)")
    gen.add_argument("--vms", type=int, default=1, metavar="N",
                     help="generate clusters until the trace holds at least N VMs (default: one cluster)")
    gen.add_argument("--out", required=True, metavar="OUT",
                     help="a new directory (partitioned parquet), or a .parquet/.csv/.csv.gz file")
    gen.add_argument("--seed", type=int, default=0, help="seed of the whole trace (default 0)")
    gen.add_argument("--days", type=float, metavar="D",
                     help="window length in days (default: the scenario's, 31)")
    gen.add_argument("--rows-per-file", type=int, default=2_000_000, metavar="N",
                     help="start a new parquet file after N rows (whole clusters; default 2000000)")
    gen.add_argument("--jobs", type=int, default=1,
                     help="worker processes generating clusters (default 1; the writer is one more)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")


_SINGLE_FILE_MAX_VMS = 5_000_000


def cmd_traces_generate(args: argparse.Namespace) -> int:
    """``catur traces generate``: write a synthetic trace, one file or a partitioned directory of
    whole clusters."""
    import pandas as pd
    from tqdm import tqdm

    from catur.traces.scale import generate_clusters, write_synthetic

    out = Path(args.out)
    name = out.name.lower()
    with tqdm(total=args.vms, unit="VM", desc="generating", disable=args.quiet or None,
              file=sys.stderr) as bar:
        if name.endswith((".parquet", ".csv", ".csv.gz")):
            if args.vms > _SINGLE_FILE_MAX_VMS:
                raise CaturError(f"--vms {args.vms:,} is too many for one file (at most "
                                 f"{_SINGLE_FILE_MAX_VMS:,}); give a directory as --out")
            frames = []
            for df in generate_clusters(args.scenario, args.vms, seed=args.seed, days=args.days, jobs=args.jobs):
                frames.append(df)
                bar.update(len(df))
            df = write_canonical(pd.concat(frames, ignore_index=True), out)
            rows, clusters, where = len(df), int(df["cluster"].nunique()), str(out)
        else:
            manifest = write_synthetic(args.scenario, args.vms, out, seed=args.seed, days=args.days,
                                       rows_per_file=args.rows_per_file, jobs=args.jobs, progress=bar.update)
            rows, clusters = manifest["rows"], manifest["clusters"]
            where = f"{out}/ ({len(manifest['files'])} files)"
    print(f"wrote {rows:,} VMs in {clusters:,} clusters to {where}")
    return 0


def _print_report(report: ReadReport) -> None:
    if report.rows_skipped:
        print(f"skipped {report.rows_skipped:,} bad rows of {report.rows_read:,}; first:",
              file=sys.stderr)
        for reason in report.reasons:
            print(f"  {reason}", file=sys.stderr)


def cmd_traces_convert(args: argparse.Namespace) -> int:
    """``catur traces convert``: read any supported format and write Catur's canonical trace
    (parquet or CSV)."""
    source, target = Path(args.input), Path(args.output)
    if target.exists() and source.resolve() == target.resolve():
        raise CaturError(f"refusing to overwrite the input {source} with the converted trace")
    df, report = read_trace(source, args.fmt, skip_bad_rows=args.skip_bad_rows)
    write_canonical(df, target)
    _print_report(report)
    print(f"wrote {len(df):,} VMs to {target} (read {report.rows_read:,} rows as "
          f"{report.format}, skipped {report.rows_skipped:,})")
    return 0


def cmd_traces_stats(args: argparse.Namespace) -> int:
    """``catur traces stats``: what a trace holds (VMs, days, sizes, peak load) and what its reader
    skipped."""
    df, report = read_trace(args.trace, args.fmt, skip_bad_rows=args.skip_bad_rows)
    _print_report(report)
    stats = trace_stats(df)
    if args.json:
        print(json.dumps({"source": report.source, "format": report.format,
                          "rows_read": report.rows_read, "rows_skipped": report.rows_skipped,
                          **stats}, indent=2))
    else:
        print(f"{report.source} ({report.format})")
        print(format_stats(stats))
    return 0
