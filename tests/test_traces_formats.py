"""Trace readers, the canonical trace, trace statistics and the ``traces`` commands.

Each public format is read from a small file written here (plain and gzipped); malformed rows
must produce errors that name the file, line and field; ``skip_bad_rows`` must count what it
drops. The real public traces in ``../shared/traces`` are read when that folder exists.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catur.errors import CaturError
from catur.traces.canonical import read_canonical, validate, write_canonical
from catur.cli.traces import add_traces_commands
from catur.traces.readers import FORMATS, detect_format, read_trace
from catur.traces.stats import format_stats, trace_stats

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"

EVENTS = """\
vmid,cpu,memory,time,type
0,2,4,0.0,0
1,1,1.75,10.0,0
0,2,4,100.0,1
2,8,14,20.0,0
2,8,14,20.0,1
"""

LT = """\
vmid,cpu,mem,at,lt
0,4,16,0.0,194.0
1,4,16,2.0,498.0
2,1,1,55.0,0
"""

AZURE_V1 = """\
vmA,sub1,dep1,0,3600,10.5,5.1,8.2,Interactive,1,1.75
vmB,007,dep1,300,900,10,5,8,Delay-insensitive,2,3.5
vmC,sub2,dep2,600,,1,1,1,Unknown,8,56
"""

AZURE_V2 = """\
vmA,sub1,dep1,0,3600,10.5,5.1,8.2,Interactive,2,4
vmB,sub1,dep1,300,900,10,5,8,Unknown,>24,>64
vmC,sub2,dep2,600,2591700,1,1,1,Delay-insensitive,8,32
"""


def write(tmp_path: Path, name: str, text: str, gz: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rows(df: pd.DataFrame, *cols: str) -> list[tuple]:
    return [tuple(r) for r in df[list(cols)].itertuples(index=False)]


# --------------------------------------------------------------------------------------------
# Each format, plain and gzipped
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_huawei_events(tmp_path, gz):
    path = write(tmp_path, "ev.csv.gz" if gz else "ev.csv", EVENTS, gz)
    df, report = read_trace(path)
    assert report.format == "huawei-events"
    assert (report.rows_read, report.rows_skipped, report.vms) == (5, 0, 3)
    assert list(df.columns) == ["vm_id", "arrival_s", "departure_s", "vcpus", "mem_gib"]
    assert df.dtypes.astype(str).tolist() == ["int64", "float64", "float64", "int64", "float64"]
    got = rows(df, "vm_id", "arrival_s", "vcpus", "mem_gib")
    assert got == [(0, 0.0, 2, 4.0), (1, 10.0, 1, 1.75), (2, 20.0, 8, 14.0)]
    dep = df["departure_s"].tolist()
    assert dep[0] == 100.0 and math.isnan(dep[1]) and dep[2] == 20.0  # vm 1 never deleted


def test_gzip_is_sniffed_not_named(tmp_path):
    # Gzipped content without .gz, and plain content with .gz: the bytes decide.
    disguised = write(tmp_path, "events.csv", EVENTS, gz=True)
    misnamed = write(tmp_path, "events.csv.gz", EVENTS, gz=False)
    for path in (disguised, misnamed):
        df, _ = read_trace(path, fmt="huawei-events")
        assert len(df) == 3


@pytest.mark.parametrize("gz", [False, True])
def test_huawei_lt(tmp_path, gz):
    path = write(tmp_path, "lt.csv", LT, gz)
    df, report = read_trace(path)
    assert report.format == "huawei-lt"
    assert rows(df, "vm_id", "arrival_s", "departure_s", "vcpus", "mem_gib") == [
        (0, 0.0, 194.0, 4, 16.0), (1, 2.0, 500.0, 4, 16.0), (2, 55.0, 55.0, 1, 1.0)]


def test_huawei_headerless_with_explicit_format(tmp_path):
    path = write(tmp_path, "lt.csv", LT.split("\n", 1)[1])
    df, _ = read_trace(path, fmt="huawei-lt")
    assert len(df) == 3 and df["departure_s"].iloc[0] == 194.0


@pytest.mark.parametrize("gz", [False, True])
def test_azure_v1(tmp_path, gz):
    path = write(tmp_path, "vmtable.csv", AZURE_V1, gz)
    df, report = read_trace(path)
    assert report.format == "azure-v1"
    assert rows(df, "vm_id", "arrival_s", "vcpus", "mem_gib") == [
        (0, 0.0, 1, 1.75), (1, 300.0, 2, 3.5), (2, 600.0, 8, 56.0)]
    assert math.isnan(df["departure_s"].iloc[2])  # empty vmdeleted = still running
    assert df["tenant_id"].tolist() == ["sub1", "007", "sub2"]  # "007" kept as a string
    assert str(df["tenant_id"].dtype) == "string"


@pytest.mark.parametrize("gz", [False, True])
def test_azure_v2_buckets(tmp_path, gz):
    path = write(tmp_path, "vmtable.csv", AZURE_V2, gz)
    df, report = read_trace(path)
    assert report.format == "azure-v2"
    assert rows(df, "vcpus", "mem_gib") == [(2, 4.0), (30, 70.0), (8, 32.0)]
    assert df["departure_s"].tolist() == [3600.0, 900.0, 2591700.0]


def test_azure_header_line_is_allowed(tmp_path):
    header = ("vmid,subscriptionid,deploymentid,vmcreated,vmdeleted,maxcpu,avgcpu,p95maxcpu,"
              "vmcategory,vmcorecountbucket,vmmemorybucket\n")
    path = write(tmp_path, "vmtable.csv", header + AZURE_V2)
    df, _ = read_trace(path, fmt="azure-v2")
    assert len(df) == 3
    bad = write(tmp_path, "bad.csv", header + AZURE_V2.replace(",300,", ",x,"))
    with pytest.raises(CaturError, match=r"line 3 \(vm vmB\): field 'vmcreated' = 'x'"):
        read_trace(bad, fmt="azure-v2")


def test_unknown_open_bucket(tmp_path):
    path = write(tmp_path, "vmtable.csv", AZURE_V2.replace(">64", ">512"))
    with pytest.raises(CaturError, match=r"line 2 .*'vmmemory' = '>512': is an open bucket"):
        read_trace(path)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_canonical_round_trip(tmp_path, suffix):
    df = pd.DataFrame({
        "vm_id": [5, 3, 4], "arrival_s": [10.0, 0.0, 10.0], "departure_s": [None, 7.5, 11.0],
        "vcpus": [2, 1, 64], "mem_gib": [4.0, 0.75, 256.0], "tenant_id": ["007", None, "b"],
        "alpha": [0.5, None, 2.0], "vnuma": [0, 2, 0], "cluster": ["c1", "c1", "c2"],
    })
    path = tmp_path / f"trace{suffix}"
    written = write_canonical(df, path)
    assert written["vm_id"].tolist() == [3, 4, 5]  # sorted by arrival, then vm_id
    back = read_canonical(path)
    pd.testing.assert_frame_equal(back, written)
    assert back["alpha"].tolist() == [1.0, 2.0, 0.5]  # missing weight = default 1.0
    assert back["tenant_id"].tolist()[1:] == ["b", "007"] and pd.isna(back["tenant_id"][0])
    again, report = read_trace(path)
    assert report.format == "canonical"
    pd.testing.assert_frame_equal(again, written)
    if suffix != ".parquet":  # gzip output is byte-identical run to run (mtime pinned)
        first = path.read_bytes()
        write_canonical(df, path)
        assert path.read_bytes() == first


def test_write_canonical_rejects_unknown_suffix(tmp_path):
    df = pd.DataFrame({"vm_id": [1], "arrival_s": [0.0], "departure_s": [1.0],
                       "vcpus": [1], "mem_gib": [1.0]})
    with pytest.raises(CaturError, match=r"\.parquet, \.csv or \.csv\.gz"):
        write_canonical(df, tmp_path / "trace.json")


def test_validate_names_row_field_and_value():
    df = pd.DataFrame({"vm_id": [1, 2, 3], "arrival_s": [0.0, 5.0, 1.0],
                       "departure_s": [1.0, 4.0, None], "vcpus": [1, 1, 1], "mem_gib": [1.0] * 3})
    with pytest.raises(CaturError, match=r"^t, row 2 \(vm 2\): field 'departure_s' = 4: is before"):
        validate(df, "t")
    with pytest.raises(CaturError, match=r"missing required column\(s\) mem_gib"):
        validate(df.drop(columns="mem_gib"), "t")
    dup = df.assign(vm_id=[1, 2, 1], departure_s=[1.0, 6.0, None])
    with pytest.raises(CaturError, match=r"row 3 \(vm 1\): field 'vm_id' = 1: is not unique"):
        validate(dup, "t")
    with pytest.raises(CaturError, match=r"row 1 \(vm 1\): field 'vcpus' = 0: must be >= 1"):
        validate(df.assign(vcpus=[0, 1, 1], departure_s=[1.0, 6.0, None]), "t")
    big = df.assign(vm_id=[2**62 + 1, 2**62 + 2, 2**62 + 3], departure_s=[1.0, 6.0, None])
    assert validate(big, "t")["vm_id"].tolist() == [2**62 + 1, 2**62 + 3, 2**62 + 2]


# --------------------------------------------------------------------------------------------
# Malformed rows
# --------------------------------------------------------------------------------------------

BAD_EVENTS = """\
vmid,cpu,memory,time,type
0,2,4,0,0
1,abc,4,1,0
2,2,4,2,0,9

3,1,0,3,0
0,2,4,10,1
4,1,1,5,0
4,1,1,1,1
5,1,1,6,1
6,1,1,7,0
6,1,1,8,0
7,1,1,9,0
7,1,1,10,1
8,1,,11,0
9,1,1,nan,0
"""


@pytest.mark.parametrize(
    "line, pattern",
    [
        (3, r"line 3 \(vm 1\): field 'cpu' = 'abc': is not a number"),
        (4, r"line 4: expected 5 fields, saw 6"),
        (6, r"line 6 \(vm 3\): field 'memory' = 0: must be > 0"),
        (9, r"line 9 \(vm 4\): field 'time' = 1: delete before create \(created at 5 on line 8\)"),
        (10, r"line 10 \(vm 5\): field 'vmid' = 5: delete of a VM that is never created"),
        (12, r"line 12 \(vm 6\): field 'vmid' = 6: duplicate create: .* already on line 11"),
        (15, r"line 15 \(vm 8\): field 'memory' = <missing>: is missing"),
        (16, r"line 16 \(vm 9\): field 'time' = <missing>: is missing"),
    ],
)
def test_malformed_event_rows_name_file_line_field(tmp_path, line, pattern):
    # Keep the header, the good rows and exactly one bad line, so each error is the first.
    lines = BAD_EVENTS.splitlines()
    needed = {3: [], 4: [], 6: [], 9: [8], 10: [], 12: [11], 15: [], 16: []}[line]
    bad = {3, 4, 6, 8, 9, 10, 11, 12, 15, 16}
    keep = [i for i in range(1, len(lines) + 1) if i not in bad or i == line or i in needed]
    # Pad with blank lines (ignored) so the bad line keeps its original line number.
    text = "\n".join(lines[i - 1] if i in keep else "" for i in range(1, len(lines) + 1)) + "\n"
    path = write(tmp_path, "bad events.csv", text)
    with pytest.raises(CaturError) as info:
        read_trace(path, fmt="huawei-events")
    message = str(info.value)
    assert message.startswith(str(path) + ", ")
    assert re.search(pattern, message), message


def test_first_bad_row_is_reported_and_others_counted(tmp_path):
    path = write(tmp_path, "ev.csv.gz", BAD_EVENTS, gz=True)
    with pytest.raises(CaturError, match=r"ev\.csv\.gz, line 3 \(vm 1\): field 'cpu'.*"
                                         r"\(7 more bad rows; pass skip_bad_rows=True"):
        read_trace(path)


def test_skip_bad_rows_counts_and_drops_whole_vms(tmp_path):
    path = write(tmp_path, "ev.csv", BAD_EVENTS)
    df, report = read_trace(path, skip_bad_rows=True)
    # Good VMs: 0 (created line 2, deleted line 7) and 7. VM 4's create (line 8) is dropped
    # with its bad delete, and VM 6's first create with its duplicate.
    assert df["vm_id"].tolist() == [0, 7]
    assert df["departure_s"].tolist() == [10.0, 10.0]
    assert report.rows_read == 14  # 16 lines - header - one blank line
    assert report.rows_skipped == 10
    assert report.vms == 2
    assert len(report.reasons) == 5 and "line 3" in report.reasons[0]
    assert "line 8 (vm 4)" in report.reasons[3] and "bad row on line 9" in report.reasons[3]


def test_skip_bad_rows_lt_and_azure(tmp_path):
    lt = write(tmp_path, "lt.csv", LT + "3,1,1,10,-5\n4,0,1,1,1\n0,1,1,1,1\n")
    df, report = read_trace(lt, skip_bad_rows=True)
    assert df["vm_id"].tolist() == [1, 2]  # 0 is duplicated: both rows go
    assert (report.rows_read, report.rows_skipped) == (6, 4)
    with pytest.raises(CaturError, match=r"line 5 \(vm 3\): field 'lt' = -5: must be >= 0"):
        read_trace(lt)
    az = write(tmp_path, "vmtable.csv", AZURE_V1 + "vmD,sub,dep,600,300,1,1,1,U,1,1\n"
                                                     "vmE,sub,dep,600,700,1,1,1,U,0,1\n")
    df, report = read_trace(az, skip_bad_rows=True)
    assert (len(df), report.rows_skipped) == (3, 2)
    with pytest.raises(CaturError, match=r"line 4 \(vm vmD\): field 'vmdeleted' = 300: is before"):
        read_trace(az)


def test_unknown_and_undetectable_formats(tmp_path):
    path = write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(CaturError, match=r"unknown trace format 'nope'; known: .*huawei-lt"):
        read_trace(path, fmt="nope")
    with pytest.raises(CaturError, match=r"cannot detect the trace format.*huawei-events"):
        read_trace(path)
    with pytest.raises(CaturError, match=r"not a huawei-lt file: no column at"):
        read_trace(write(tmp_path, "ev.csv", EVENTS), fmt="huawei-lt")
    with pytest.raises(CaturError, match="not found"):
        read_trace(tmp_path / "missing.csv")
    with pytest.raises(CaturError, match="empty"):
        read_trace(write(tmp_path, "empty.csv", ""))
    assert set(FORMATS) == {"huawei-events", "huawei-lt", "huawei-numa-vms", "azure-v1", "azure-v2", "canonical", "collected", "partitioned"}
    # Detection reads only the head: a CSV whose first line says huawei-lt is huawei-lt.
    assert detect_format(write(tmp_path, "lt.txt", LT, gz=True)) == "huawei-lt"


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_stats_peak_concurrency_with_ties():
    # Live sets: [0,10) A; [5,10) B; at 10 A and B leave before C and D arrive; E never leaves.
    df = pd.DataFrame({
        "vm_id": [1, 2, 3, 4, 5], "arrival_s": [0.0, 5.0, 10.0, 10.0, 12.0],
        "departure_s": [10.0, 10.0, 20.0, 15.0, None], "vcpus": [1, 2, 4, 1, 1],
        "mem_gib": [1.0, 2.0, 8.0, 1.0, 1.0],
    })
    s = trace_stats(validate(df, "tiny"))
    assert s["vms"] == 5 and s["span_s"] == 20.0
    assert s["peak_live_vms"] == 3 and s["peak_live_vms_at_s"] == 12.0  # C, D, E
    assert s["peak_vcpus"] == 6 and s["peak_mem_gib"] == 10.0  # not 8 / 12: A, B left first
    assert s["still_running"] == 1 and s["still_running_share"] == 0.2
    assert s["top_flavors"][0] == {"vcpus": 1, "mem_gib": 1.0, "count": 3, "share": 0.6}
    assert s["vcpus"]["max"] == 4.0 and s["mem_gib"]["p50"] == 1.0
    text = format_stats(s)
    assert "peak live      3 VMs" in text and "still running  1 (20.0%)" in text
    json.dumps(s)  # JSON-ready
    assert trace_stats(df.iloc[:0])["vms"] == 0


def test_stats_zero_lifetime_vm_is_never_live():
    df = pd.DataFrame({"vm_id": [1], "arrival_s": [3.0], "departure_s": [3.0],
                       "vcpus": [1], "mem_gib": [1.0]})
    assert trace_stats(df)["peak_live_vms"] == 0


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="catur")
    add_traces_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_convert_and_stats(tmp_path, capsys):
    source = write(tmp_path, "ev.csv", BAD_EVENTS)
    out = tmp_path / "out.parquet"
    with pytest.raises(CaturError, match="line 3"):
        run_cli("traces", "convert", str(source), str(out))
    assert run_cli("traces", "convert", str(source), str(out), "--skip-bad-rows") == 0
    captured = capsys.readouterr()
    assert "wrote 2 VMs" in captured.out and "skipped 10" in captured.out
    assert "line 3 (vm 1)" in captured.err
    assert read_canonical(out)["vm_id"].tolist() == [0, 7]

    csv_out = tmp_path / "out.csv.gz"
    assert run_cli("traces", "convert", str(out), str(csv_out), "--format", "canonical") == 0
    capsys.readouterr()
    assert run_cli("traces", "stats", str(csv_out), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["vms"] == 2 and stats["format"] == "canonical"
    assert run_cli("traces", "stats", str(source), "-f", "huawei-events", "--skip-bad-rows") == 0
    assert "peak live" in capsys.readouterr().out


def test_cli_help_lists_formats_and_examples(capsys):
    with pytest.raises(SystemExit):
        run_cli("traces", "stats", "--help")
    text = capsys.readouterr().out
    assert "azure-v2" in text and "examples:" in text and "--json" in text


# --------------------------------------------------------------------------------------------
# Real public traces (../shared/traces beside the repository)
# --------------------------------------------------------------------------------------------


def shared_trace(name: str) -> Path:
    path = SHARED_TRACES / name
    if not path.exists():
        pytest.skip(f"real trace {path} not available")
    return path


@pytest.mark.real_traces
@pytest.mark.parametrize(
    "name, fmt, vms, rows_read",
    [
        ("huawei-east-1-lt.csv.gz", "huawei-lt", 116_313, 116_313),
        ("azure2017-dev-events.csv.gz", "huawei-events", 259_159, 504_001),
    ],
)
def test_real_traces(name, fmt, vms, rows_read):
    path = shared_trace(name)
    start = time.perf_counter()
    df, report = read_trace(path)
    elapsed = time.perf_counter() - start
    assert report.format == fmt
    assert (report.vms, report.rows_read, report.rows_skipped) == (vms, rows_read, 0)
    assert df["vm_id"].is_unique and len(df) == vms
    assert elapsed < 10, f"reading {name} took {elapsed:.1f} s"
    s = trace_stats(df)
    if fmt == "huawei-lt":
        assert s["still_running"] == 0 and round(s["span_days"]) == 31
        assert 2_300 <= s["peak_live_vms"] <= 2_500  # "about 2,400" per the traces README
        assert 0.70 <= float((df["vcpus"] == 1).mean()) <= 0.72  # "71% have 1 vCPU"
    else:
        assert 0.05 <= s["still_running_share"] <= 0.06
        assert s["flavors"] == 16 and s["mem_gib"]["min"] == 0.75 and s["mem_gib"]["max"] == 112
    assert np.all(np.diff(df["arrival_s"].to_numpy()) >= 0)
