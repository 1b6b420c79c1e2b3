"""Reading the small YAML/TOML files users write (topologies, clusters)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from catur.errors import CaturError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


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
