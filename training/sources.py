"""Where an after-state scorer learns from: sources, their windows, default splits and recipes.

A **source** is one stream of traffic the scorer trains on and is validated on, with the
part it must never read named too:

* a time-based trace (Huawei-East-1, Azure, a collected directory, a canonical file, ...) is
  split **by days**: ``train`` days, then later ``validate`` days, then the ``test`` days
  that are never read (what ``catur evaluate --days`` should report afterwards);
* a trace without time (the CC0 request sequences: one VM a second, none departing, all of
  it on day 1) cannot be split by days, so it is split **by file**: some sequences train,
  another validates, another is the test;
* a synthetic workload is split by days *and* seed (training and validation draw other
  seeds than the quality grid's test seed 0).

:func:`sources_from_traces` turns what a user gives ``catur train-scorer`` (trace files,
optional windows, a cluster file or a start state) into sources, checking every window
before anything is trained: an empty, overlapping or out-of-range window, a validation
window before the training one, or a trace too short to split is one clear error naming the
value (exit 2). Without windows the split is chronological (:func:`default_split`): most
days train, the next ones validate, the last ones are the test part, named in the log.

A **recipe** is a named list of sources (:data:`RECIPES`): ``public`` is the shipped
default's (Huawei-East-1 days 4-12 / 13-15, Azure 2017 day 1 / 2, two synthetic drift
workloads), ``public-fragmented`` adds the CC0 sequences packed onto the real fragmented
servers of ``PM_res.csv`` (C1 trains, C2 validates, C3 is the test).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from catur.errors import CaturError
from catur.sim.admission import SECONDS_PER_DAY
from catur.sim.workload import Workload


@dataclass(frozen=True)
class Window:
    """One part of a source: a workload (trace path or synthetic scenario name), the days of
    it (``FIRST:LAST``, 1-based inclusive; ``None`` = all of it) and the synthetic seed."""

    workload: str
    days: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        """How logs and validation-set labels name it: ``13:15`` for a window of the source's
        own trace, the file's stem (``VM_data_C2``) for another file, ``all``."""
        return self.days or Path(self.workload).name.split(".")[0] or "all"


@dataclass(frozen=True)
class Source:
    """One workload to learn from: its training and validation windows, and its test part.

    ``Source(name, workload, train_days, val_days)`` is a trace split by days;
    ``val_workload`` validates on another file instead (a trace without time, split by
    file). ``test_days`` / ``test_workload`` only name the part left for testing (logged and
    recorded, never read). ``cluster`` fixes the cluster (a shipped mix or a cluster file)
    instead of drawing one per scenario; ``start_state`` (a ``PM_res.csv``-like file) makes
    the hosts its real fragmented servers, with ``cluster`` giving their capacities if set.
    ``name`` must be one word: validation-set labels start with it.
    """

    name: str
    workload: str
    train_days: str | None
    val_days: str | None
    train_seed: int = 0
    val_seed: int = 0
    val_workload: str | None = None
    test_days: str | None = None
    test_workload: str | None = None
    format: str = "auto"
    start_state: str | None = None
    cluster: str | None = None
    # More training files (sequences without time, split by file): the training draws cycle
    # over ``workload`` and these.
    extra_train: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise CaturError(f"source name must be one word, got {self.name!r}")

    @property
    def train(self) -> tuple[Window, ...]:
        """The training windows (one per training file)."""
        return tuple(Window(w, self.train_days, self.train_seed) for w in (self.workload, *self.extra_train))

    @property
    def validate(self) -> Window:
        return Window(self.val_workload or self.workload, self.val_days, self.val_seed)

    @property
    def test(self) -> str:
        """The test part in words (for the log): never read by training."""
        if self.test_workload:
            return f"{Path(self.test_workload).name}" + (f" days {self.test_days}" if self.test_days else "")
        return f"days {self.test_days}" if self.test_days else "none left"

    def workload_of(self, window: Window, **admission) -> Workload:
        """The :class:`Workload` that admits ``window`` of this source (``admission``:
        cluster, target utilisation, overcommit)."""
        return Workload(window.workload, days=window.days, seed=window.seed, format=self.format,
                        start_state=self.start_state, **admission)


# --- days -------------------------------------------------------------------------------------------

#: A trace needs this many days to be split by days (train, validate, test: one each at least).
MIN_DAYS = 3


def trace_days(df: pd.DataFrame) -> int:
    """How many days the trace's arrivals span (day 1 starts at the first arrival, rounded
    down to a whole day, as in ``--days``)."""
    if not len(df):
        return 0
    arrivals = df["arrival_s"].to_numpy(float)
    origin = math.floor(float(arrivals.min()) / SECONDS_PER_DAY) * SECONDS_PER_DAY
    return int((float(arrivals.max()) - origin) // SECONDS_PER_DAY) + 1


def default_split(days: int) -> tuple[str, str, str]:
    """``(train, validate, test)`` windows of a ``days``-long trace, in order: the last
    quarter (at least one day) is the test part, the eighth before it (at least one day)
    validates, the rest trains. 31 days: train 1-20, validate 21-24, test 25-31; 4 days:
    1-2, 3, 4."""
    if days < MIN_DAYS:
        raise CaturError(f"a trace of {days} day{'s' * (days != 1)} cannot be split by days (train, validate, test need "
                         f"{MIN_DAYS} at least)")
    test = max(1, days // 4)
    validate = max(1, round(days / 8))
    train_last = days - test - validate
    return f"1:{train_last}", f"{train_last + 1}:{train_last + validate}", f"{train_last + validate + 1}:{days}"


def parse_window(text: str, what: str) -> tuple[int, int]:
    """``"4:12"`` (or ``"4"``) → ``(4, 12)``; an empty or malformed window names ``what``."""
    first, sep, last = text.strip().partition(":")
    try:
        a, b = int(first), int(last) if sep else int(first)
    except ValueError:
        raise CaturError(f"{what} {text!r}: expected FIRST:LAST, two whole days (1-based), e.g. 1:12") from None
    if a < 1 or b < a:
        raise CaturError(f"{what} {text!r}: empty window (days are 1-based and FIRST <= LAST)")
    return a, b


def check_windows(trace: str, days: int, train: str, validate: str) -> str | None:
    """Check a trace's train and validate windows against each other and the trace's
    ``days``; return its test part (the days after validation, ``None`` if none are left)."""
    a, b = parse_window(train, f"{trace}: --train-days")
    c, d = parse_window(validate, f"{trace}: --validate-days")
    for name, text, last in (("--train-days", train, b), ("--validate-days", validate, d)):
        if last > days:
            raise CaturError(f"{trace}: {name} {text} lies outside the trace, which has {days} day{'s' * (days != 1)}")
    if c <= b and a <= d:
        raise CaturError(f"{trace}: --train-days {train} and --validate-days {validate} overlap; validation must be days "
                         "the scorer never trained on")
    if d < a:
        raise CaturError(f"{trace}: --validate-days {validate} comes before --train-days {train}; validate on later days "
                         "(walk forward), as the test will be")
    return f"{d + 1}:{days}" if d < days else None


# --- from a user's traces -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def read_window_trace(workload: str, seed: int = 0, fmt: str = "auto") -> pd.DataFrame:
    """A source's trace, read once per process (sources and scenarios read the same files)."""
    return Workload(workload, seed=seed, format=fmt).read()[0]


def source_name(path: str, taken: set[str]) -> str:
    """A one-word name for a trace file: its name without extensions, made unique."""
    base = "".join(c if not c.isspace() else "_" for c in Path(path.rstrip("/")).name.split(".")[0]) or "trace"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _windows_by_trace(values: list[str] | None, traces: list[str], what: str) -> dict[str, str]:
    """``--train-days`` entries, ``A:B`` (every trace) or ``TRACE=A:B`` (that one), per trace."""
    out: dict[str, str] = {}
    every: str | None = None
    for value in values or []:
        target, sep, days = value.rpartition("=")
        if not sep:
            every = value
            continue
        matches = [t for t in traces if t == target or Path(t).name == target]
        if not matches:
            raise CaturError(f"{what} {value!r}: {target!r} is none of the traces given ({', '.join(traces)})")
        out.update({t: days for t in matches})
    return {t: out.get(t, every) for t in traces if out.get(t, every) is not None}


def sources_from_traces(
    traces: list[str],
    *,
    train_days: list[str] | None = None,
    validate_days: list[str] | None = None,
    validate_on: list[str] | None = None,
    test_on: list[str] | None = None,
    fmt: str = "auto",
    start_state: str | None = None,
    cluster: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Source]:
    """The sources of a user's traces (see the module doc), windows checked, splits logged.

    Time-based traces (``MIN_DAYS`` days or more) become one source each, split by days:
    ``train_days`` / ``validate_days`` (``A:B`` for all, ``TRACE=A:B`` for one), else
    :func:`default_split`. Shorter traces (sequences without time) are split by file into
    one source: ``validate_on`` / ``test_on`` name the validation and test files (traces
    given there need not be repeated); without them, of three or more such traces the last
    is the test and the one before it validates; of two, the second validates.
    """
    if not traces and not validate_on:
        raise CaturError("no trace given: name the trace files to learn from (or --recipe public)")
    missing = [t for t in [*traces, *(validate_on or []), *(test_on or [])] if not Path(t).exists()]
    if missing:
        raise CaturError(f"no such trace: {', '.join(missing)}")
    sources: list[Source] = []
    taken: set[str] = set()
    timed: list[tuple[str, int]] = []
    sequences: list[str] = []
    for trace in dict.fromkeys(traces):
        df = read_window_trace(trace, 0, fmt)
        days = trace_days(df)
        (timed.append((trace, days)) if days >= MIN_DAYS and trace not in (validate_on or []) + (test_on or [])
         else sequences.append(trace))
    train_by = _windows_by_trace(train_days, [t for t, _ in timed], "--train-days")
    validate_by = _windows_by_trace(validate_days, [t for t, _ in timed], "--validate-days")
    for trace, days in timed:
        if (trace in train_by) != (trace in validate_by):
            given = "--train-days" if trace in train_by else "--validate-days"
            raise CaturError(f"{trace}: {given} given without {'--validate-days' if given == '--train-days' else '--train-days'}; "
                             "give both, or neither for the default split")
        if trace in train_by:
            train, validate = train_by[trace], validate_by[trace]
            test = check_windows(trace, days, train, validate)
        else:
            train, validate, test = default_split(days)
        name = source_name(trace, taken)
        taken.add(name)
        sources.append(Source(name, trace, train, validate, test_days=test, format=fmt, start_state=start_state, cluster=cluster))
        log(f"  {name}: {days} days; train {train}, validate {validate}, test "
            f"{test + ' (never read)' if test else 'none left: every day is used'}")
    if (train_days or validate_days) and not timed:
        raise CaturError("--train-days/--validate-days need a trace with time (3 days or more); traces without time are "
                         "split by file (--validate-on, --test-on)")
    validation_files, test_files = list(validate_on or []), list(test_on or [])
    train_files = [t for t in sequences if t not in validation_files + test_files]
    if sequences or validation_files:
        if not validation_files:
            if len(train_files) >= 3 and not test_files:
                *train_files, validation, test = train_files
                validation_files, test_files = [validation], [test]
            elif len(train_files) >= 2:
                *train_files, validation = train_files
                validation_files = [validation]
            else:
                short = train_files[0] if train_files else "(none)"
                raise CaturError(f"{short}: a trace without time (or under {MIN_DAYS} days) is split by file, and no other "
                                 "file is given to validate on: give two or more such traces (or --validate-on FILE)")
        if not train_files:
            raise CaturError(f"no trace left to train on: {', '.join(validation_files + test_files)} validate or test")
        if len(validation_files) > 1:
            raise CaturError(f"--validate-on: one validation file per run, got {len(validation_files)}")
        name = source_name(train_files[0], taken)
        taken.add(name)
        sources.append(Source(name, train_files[0], None, None, val_workload=validation_files[0],
                              test_workload=test_files[0] if test_files else None, format=fmt, start_state=start_state,
                              cluster=cluster, extra_train=tuple(train_files[1:])))
        log(f"  by file: train {', '.join(Path(t).name for t in train_files)}; validate {Path(validation_files[0]).name}; "
            f"test {', '.join(Path(t).name for t in test_files) + ' (never read)' if test_files else 'none named'}")
    return sources


# --- recipes --------------------------------------------------------------------------------------

HUAWEI, AZURE = "huawei-east-1-lt.csv.gz", "azure2017-dev-events.csv.gz"
CC0_DIR, CC0_START = "numa-topology-c0", "PM_res.csv"


def public_sources(traces: str | Path | None) -> list[Source]:
    """The ``public`` recipe (the shipped default's): the real traces under ``traces`` that
    exist, and the synthetic drift workloads (at seeds 1 and 2; the quality grid tests seed 0)."""
    sources = []
    if traces is not None:
        huawei, azure = Path(traces) / HUAWEI, Path(traces) / AZURE
        if huawei.exists():
            sources.append(Source("huawei", str(huawei), "4:12", "13:15", test_days="16:31"))
        if azure.exists():
            sources.append(Source("azure", str(azure), "1:1", "2:2", test_days="3:4"))
    for name in ("temporal-shift", "adversarial"):
        sources.append(Source(name, name, "10:25", "13:22", train_seed=1, val_seed=2, test_days="16:31 at seed 0"))
    return sources


def fragmented_sources(traces: str | Path | None) -> list[Source]:
    """The CC0 sequences on the real fragmented servers: C1 trains, C2 validates, C3 is the
    test (static packing: every VM stays; the hosts start as ``PM_res.csv`` says)."""
    if traces is None:
        return []
    folder = Path(traces) / CC0_DIR
    files = [folder / f"VM_data_C{i}.csv" for i in (1, 2, 3)]
    if not all(f.exists() for f in [*files, folder / CC0_START]):
        return []
    return [Source("cc0", str(files[0]), None, None, val_workload=str(files[1]), test_workload=str(files[2]),
                   start_state=str(folder / CC0_START))]


#: Named recipes: ``name -> sources(traces folder)``.
RECIPES: dict[str, Callable[[str | Path | None], list[Source]]] = {
    "public": public_sources,
    "public-fragmented": lambda traces: public_sources(traces) + fragmented_sources(traces),
}


def recipe_sources(name: str, traces: str | Path | None) -> list[Source]:
    """The sources of recipe ``name`` over the public traces folder ``traces``."""
    if name not in RECIPES:
        from catur.errors import unknown_name

        raise unknown_name("recipe", name, list(RECIPES))
    if traces is not None and not Path(traces).is_dir():
        raise CaturError(f"--traces {traces}: not a directory")
    return RECIPES[name](traces)


def unique_validation(pairs: tuple[tuple[str, float], ...], source: Source) -> list[tuple[str | None, float]]:
    """The validation scenarios ``(cluster, overcommit)`` of ``source``: the recipe's, or with
    a fixed cluster or start state, that cluster at each of the recipe's overcommits."""
    if source.cluster is None and source.start_state is None:
        return list(pairs)
    return [(source.cluster, oc) for oc in dict.fromkeys(oc for _, oc in pairs)]


def drawn_cluster(source: Source, clusters: tuple[str, ...], rng: np.random.Generator) -> str | None:
    """The cluster of one training draw: the source's own when fixed, else one of ``clusters``.
    (Drawn either way, so the random stream, and so a recipe's numbers, do not depend on it.)"""
    drawn = str(rng.choice(clusters))
    return source.cluster if (source.cluster is not None or source.start_state is not None) else drawn


__all__ = ["MIN_DAYS", "RECIPES", "Source", "Window", "check_windows", "default_split", "drawn_cluster", "fragmented_sources",
           "parse_window", "public_sources", "read_window_trace", "recipe_sources", "source_name", "sources_from_traces",
           "trace_days", "unique_validation"]
