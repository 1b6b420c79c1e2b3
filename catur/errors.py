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
