"""Errors that Catur raises on bad input.

Every error a user can cause (a bad trace row, an unknown preset, a negative size) is a
:class:`CaturError`. It subclasses :class:`ValueError`, so callers that already catch
``ValueError`` keep working, and the CLI turns it into a one-line message and a non-zero exit
instead of a traceback. The message always names the offending value.
"""

from __future__ import annotations


class CaturError(ValueError):
    """Bad input: the message names the value, field, file or row that is wrong."""


def unknown_name(kind: str, name: object, known: list[str] | tuple[str, ...]) -> CaturError:
    """The error for a name that is not one of ``known`` (a preset, a policy, a format)."""
    return CaturError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")


class LosesToGreedy(CaturError):
    """A model whose evaluation loses to ``greedy`` (:mod:`catur.verdict`) was about to be
    written or promoted. The CLI exits with :data:`EXIT_LOSES_TO_GREEDY`, not bad input's 2:
    nothing was malformed, the model is just not good enough to ship."""

    exit_code = 3


EXIT_LOSES_TO_GREEDY = LosesToGreedy.exit_code


class DoesNotFit(CaturError):
    """A VM that does not fit the host's free memory (or huge page pool) was about to be
    placed (:mod:`catur.fit`). The CLI exits with :data:`EXIT_DOES_NOT_FIT` and the message
    says what is short and where; nothing was written or defined."""

    exit_code = 3


EXIT_DOES_NOT_FIT = DoesNotFit.exit_code
