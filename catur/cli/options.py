"""Option groups shared by the commands, with defaults read from the config dataclasses.

A command's options map onto a frozen config dataclass (:class:`~catur.sim.workload.Workload`,
:class:`~catur.sim.pipeline.EvaluateOptions`, :class:`~catur.training.train.TrainConfig`,
:class:`~catur.training.retrain.RetrainConfig`). The default of each option is read from the
dataclass field it fills (:func:`config_option`), and the config is built from the parsed
arguments by field name (:func:`config_from_args`), so a default is typed once, in the
dataclass, and no command copies arguments field by field. Help texts show defaults with
argparse's ``%(default)s``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from catur.errors import CaturError


def add_command(sub: argparse._SubParsersAction, name: str, func, help: str, description: str,
                epilog: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A sub-command whose description and examples keep their line breaks; ``func`` runs it
    (``None`` for a group whose actions are sub-commands of their own)."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    if func is not None:
        p.set_defaults(func=func)
    return p


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (its factory's value, if it has one;
    ``None`` for a field without a default, which the command then requires)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None
    raise CaturError(f"{cls.__name__} has no field {name!r}")  # a programming error, caught by any --help


def config_option(group, cls: type, name: str, *flags: str, **kwargs) -> None:
    """``--flag`` for field ``name`` of ``cls``: its value lands in ``args.<name>`` and its
    default is the field's (``--name-with-dashes`` unless ``flags`` are given)."""
    flags = flags or (f"--{name.replace('_', '-')}",)
    group.add_argument(*flags, dest=name, default=field_default(cls, name), **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, **given: Any):
    """``cls(**...)`` from the parsed arguments named like its fields, plus ``given``."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **given})


def add_cluster_arguments(group, cls: type) -> None:
    """--cluster, --cpu-overcommit, --target-utilization: where a trace is admitted (any config
    with those three fields: a workload, a training or a retraining run)."""
    inferred = "; with --start-state: capacities inferred" if field_default(cls, "cluster") is None else ""
    config_option(group, cls, "cluster", metavar="SPEC",
                  help=f"shipped mix (mixed, intel-2s, amd-2s-nps2, amd-2s-nps4) or a YAML/TOML file (default: mixed{inferred})")
    config_option(group, cls, "cpu_overcommit", type=float,
                  help="vCPUs admitted per host core (default: the cluster file's, else 1.0); the benchmark scenario uses 1.02")
    config_option(group, cls, "target_utilization", type=float,
                  help="size the cluster so peak demand is this fraction of capacity (default %(default)s); 0 keeps the file's host counts")
