"""The ``catur traces`` command line: convert public traces and look at them.

Two sub-commands, registered on an existing argparse sub-parser set by
:func:`add_traces_commands` (``catur/cli.py`` calls it, so they appear as ``catur traces ...``):

``traces convert IN OUT``
    Read any supported trace (format detected, or ``--format``) and write the canonical trace
    to ``OUT``: parquet for ``.parquet``, CSV for ``.csv`` / ``.csv.gz``.
``traces stats TRACE``
    Print a trace's summary (VMs, span, flavors, peak concurrency); ``--json`` for machines.

Each sub-parser sets ``func`` to a handler ``handler(args) -> int`` (the exit code). Bad input
raises :class:`~catur.errors.CaturError`, which the top-level CLI turns into a one-line
message; reports of skipped rows go to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    """Register ``traces convert`` and ``traces stats`` on ``subparsers``; returns ``traces``."""
    traces = subparsers.add_parser(
        "traces",
        help="convert public VM traces to Catur's canonical trace and summarise them",
        description="Convert public VM traces (Huawei-East-1, Azure Public Dataset) to Catur's "
                    "canonical trace, and summarise traces.",
        epilog=_TRACES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = traces.add_subparsers(dest="traces_command", metavar="{convert,stats}")
    sub.required = True

    convert = sub.add_parser(
        "convert",
        help="read a trace in any supported format and write it as a canonical trace",
        description="Read IN (any supported format, gzipped or not) and write the canonical "
                    "trace (vm_id, arrival_s, departure_s, vcpus, mem_gib, ...) to OUT. "
                    "Errors name the file, line, field and value of the first bad row.",
        epilog=_TRACES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("input", metavar="IN", help="trace file to read")
    convert.add_argument("output", metavar="OUT",
                         help="canonical trace to write: .parquet (recommended), .csv or .csv.gz")
    _add_common(convert)
    convert.set_defaults(func=_convert)

    stats = sub.add_parser(
        "stats",
        help="print a trace's VM count, span, flavors and peak concurrency",
        description="Summarise TRACE: VM count, time span, vCPU and memory distributions, the "
                    "most common flavors, the share still running at the end, and the peak "
                    "number of live VMs, vCPUs and GiB.",
        epilog=_TRACES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stats.add_argument("trace", metavar="TRACE", help="trace file, any supported format")
    _add_common(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=_stats)
    return traces


def _print_report(report: ReadReport) -> None:
    if report.rows_skipped:
        print(f"skipped {report.rows_skipped:,} bad rows of {report.rows_read:,}; first:",
              file=sys.stderr)
        for reason in report.reasons:
            print(f"  {reason}", file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.exists() and source.resolve() == target.resolve():
        raise CaturError(f"refusing to overwrite the input {source} with the converted trace")
    df, report = read_trace(source, args.fmt, skip_bad_rows=args.skip_bad_rows)
    write_canonical(df, target)
    _print_report(report)
    print(f"wrote {len(df):,} VMs to {target} (read {report.rows_read:,} rows as "
          f"{report.format}, skipped {report.rows_skipped:,})")
    return 0


def _stats(args: argparse.Namespace) -> int:
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
