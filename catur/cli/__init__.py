"""The ``catur`` command line: one package, one module per command group.

The CLI is the only layer that sees everything (core, simulator, traces, training, service); it
parses arguments, calls one library entry point per command, and prints. See
:mod:`catur.cli.main` for the sub-commands.
"""

from catur.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
