"""Reading the small files users write (topologies, clusters) and checking their keys.

Three helpers, used by every reader of a user-written file:

* :func:`read_config_file` parses YAML or TOML and names the file in any error;
* :func:`read_json` parses JSON (manifests, registry records, evaluations) the same way;
* :func:`check_keys` refuses a key the reader does not know, naming the file, where the key
  sits and the closest valid key, e.g.
  ``my-cluster.yaml: unknown key 'cnt' in hosts[0] (did you mean 'count'?)``.

Strict keys matter because a typo is otherwise silent: a cluster file with ``cnt:`` instead of
``count:`` used to give one host per group and reject almost every VM, with exit status 0.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from catur.errors import CaturError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


def read_json(path: str | Path) -> object:
    """Parse the JSON file ``path``; an unreadable or invalid file is a :class:`CaturError`
    naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CaturError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CaturError(f"{path}: not valid JSON ({exc})") from exc


def read_config_file(path: str | Path, what: str) -> object:
    """Parse ``path`` as TOML (``.toml``) or YAML (anything else); errors name the file.

    ``what`` says what the file should hold ("topology", "cluster") for the error message.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CaturError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # the parse errors of either format
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise CaturError(f"{path}: not a valid {kind} {what} file: {exc}") from exc


def closest(name: object, valid: Iterable[str]) -> str | None:
    """The valid name most like ``name`` (difflib's ratio >= 0.6), or None."""
    matches = difflib.get_close_matches(str(name), sorted(valid), n=1)
    return matches[0] if matches else None


def check_keys(mapping: Mapping, allowed: Iterable[str], source: str, where: str = "") -> None:
    """Refuse the first key of ``mapping`` (in file order) that is not in ``allowed``.

    ``source`` names the file, ``where`` the place in it (``"hosts[0]"``; empty for the top
    level). The message suggests the closest allowed key when one is near enough.
    """
    allowed = set(allowed)
    for key in mapping:
        if key in allowed:
            continue
        place = f" in {where}" if where else ""
        hint = closest(key, allowed)
        suggestion = f" (did you mean {hint!r}?)" if hint else f" (valid keys: {', '.join(sorted(allowed))})"
        raise CaturError(f"{source}: unknown key {key!r}{place}{suggestion}")
