"""Regenerate the Python stubs of the gRPC contract from ``proto/catur/v1/placement.proto``.

The stubs (``catur/v1/placement_pb2.py``, ``.pyi`` and ``placement_pb2_grpc.py``) are checked
in, so installing Catur needs no protobuf compiler. After editing the ``.proto``, run::

    python -m catur.service.protogen            # rewrite catur/v1/*_pb2*.py(i) in place
    python -m catur.service.protogen --out DIR  # write them under DIR/catur/v1/ instead
    python -m catur.service.protogen --check    # exit 1 if the checked-in stubs are stale

It runs ``grpc_tools.protoc`` (the ``dev`` extra: ``pip install -e ".[dev]"``) with
``-I proto --python_out --pyi_out --grpc_python_out``. The proto's path under ``proto/``
(``catur/v1/placement.proto``) makes the generated imports ``from catur.v1 import ...``,
so the stubs live in the ``catur.v1`` package, mirroring the proto package ``catur.v1``.

Generated code refuses to import with an older ``protobuf``/``grpcio`` runtime than the one
that generated it: after regenerating with a newer ``grpcio-tools``, raise the floors in
``pyproject.toml`` to the versions stamped in the files (:func:`stamped_versions`).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILES = ("catur/v1/placement.proto",)
STUB_DIR = REPO_ROOT / "catur" / "v1"
GENERATED = ("placement_pb2.py", "placement_pb2.pyi", "placement_pb2_grpc.py")

# Lines that only record which compiler version generated the file.
_STAMPS = (
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"^_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:    .*\n)*?\)$", re.M),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M),
)


def generate(out_dir: str | Path) -> list[Path]:
    """Run protoc on the contract; the stubs land in ``out_dir/catur/v1/``. Returns their paths."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("grpcio-tools is not installed: pip install -e '.[dev]'") from exc
    import importlib.resources

    if not (PROTO_ROOT / PROTO_FILES[0]).is_file():
        raise SystemExit(f"{PROTO_ROOT / PROTO_FILES[0]} not found: regenerate from a source checkout of Catur")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_ROOT / name) for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    return [out / "catur" / "v1" / name for name in GENERATED]


def stamped_versions(text: str) -> dict[str, str]:
    """The compiler versions a generated file records (protobuf gencode, grpc)."""
    found = {}
    match = re.search(r"^# Protobuf Python Version: (\S+)", text, re.M)
    if match:
        found["protobuf"] = match.group(1)
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", text, re.M)
    if match:
        found["grpcio"] = match.group(1)
    return found


def without_stamps(text: str) -> str:
    """``text`` with the compiler-version lines blanked, for comparisons across versions."""
    for pattern in _STAMPS:
        text = pattern.sub("<version stamp>", text)
    return text


def stale_files(stub_dir: str | Path = STUB_DIR) -> list[str]:
    """Names of checked-in stubs that differ from freshly generated ones (exact comparison)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp)
        return [
            path.name
            for path in fresh
            if not (Path(stub_dir) / path.name).is_file()
            or (Path(stub_dir) / path.name).read_text() != path.read_text()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m catur.service.protogen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", metavar="DIR", help="write the stubs under DIR/catur/v1/ instead of in place")
    parser.add_argument("--check", action="store_true", help="only check that the checked-in stubs are current")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m catur.service.protogen", file=sys.stderr)
            return 1
        print("stubs are current")
        return 0
    target = Path(args.out) if args.out else REPO_ROOT
    for path in generate(target):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
