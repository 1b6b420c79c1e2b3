"""The ``catur`` command line.

Sub-commands (``catur COMMAND --help`` explains each one with examples):

* ``catur demo`` — the main job on the embedded synthetic workload: compare every policy.
* ``catur evaluate`` — replay a trace over a modelled cluster and compare NUMA policies.
* ``catur traces convert|stats|generate`` — read public trace formats into Catur's canonical
  trace; generate synthetic traces up to 100M VMs as partitioned parquet.
* ``catur serve|place|depart|replay|health`` — the gRPC placement service and its clients.
* ``catur models list|show|add|promote|rollback|history`` — the model registry.
* ``catur train`` / ``catur retrain`` — train a policy; the scheduled drift-aware retraining job.
* ``catur topology list|show|detect`` — host NUMA models: presets, files, this machine.
* ``catur policies`` — the placement policies and what each one does.
* ``catur libvirt topology|usage|place|events`` — the libvirt host agent: read the host and its
  domains, write a placement as NUMA tuning, report departures.

Bad input ends with a one-line ``catur: error: ...`` naming the bad value and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys

import catur
from catur.cli.evaluate import add_evaluate_commands
from catur.cli.libvirt import add_libvirt_commands
from catur.cli.models import add_models_commands
from catur.cli.service import add_service_commands
from catur.cli.topology import add_topology_commands
from catur.cli.traces import add_traces_commands
from catur.cli.training import add_train_commands
from catur.errors import CaturError

# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``catur`` argument parser with every command group registered (what ``catur --help``
    prints, and what the CLI reference page is generated from)."""
    parser = argparse.ArgumentParser(
        prog="catur",
        description="NUMA placement of virtual machines: replay traces, compare policies, "
        "train and serve placement models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'catur COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"catur {catur.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for add_commands in (
        add_evaluate_commands,
        add_traces_commands,
        add_service_commands,
        add_models_commands,
        add_train_commands,
        add_topology_commands,
        add_libvirt_commands,
    ):
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``catur`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status: 0 success,
    2 bad input (one ``catur: error:`` line), 3 a model that loses to greedy or a kept collapse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a command that starts copies of itself passes on
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CaturError as exc:
        print(f"catur: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 2 = bad input; 3 = a model that loses to greedy
    except FileNotFoundError as exc:
        print(f"catur: error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("catur: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `catur ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
