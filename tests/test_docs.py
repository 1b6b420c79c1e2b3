"""The documentation cannot drift from the code: generated pages are fresh, every command and
RPC is in the reference, every internal link resolves, every example parses or runs.

The site itself is built by ``./run docs`` (Sphinx with warnings as errors, in ``.ci/run``);
these tests are the fast part of the same guarantees, with no Sphinx and no network.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import gen_reference  # noqa: E402  (docs/gen_reference.py, not a package)

sys.path.remove(str(DOCS))

# Pages another branch owns and creates; README and the site may name them before they land.
# Remove an entry once its page is merged.
PENDING_PAGES: set[str] = set()


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """``text`` with fenced blocks and inline code blanked (links there are examples, not links)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor MyST (and GitHub) give a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


# --- generated reference pages -------------------------------------------------------------------


def test_generated_reference_pages_are_fresh(capsys):
    """docs/reference/{cli,grpc-api,metrics,python-api}.md equal what the code generates now."""
    assert gen_reference.main(["--check"]) == 0, capsys.readouterr().err


def test_every_catur_subcommand_is_in_the_cli_reference():
    from catur.cli.main import build_parser

    text = (DOCS / "reference" / "cli.md").read_text()
    paths = [path for path, _ in gen_reference.walk(build_parser())]
    assert {p[0] for p in paths} >= {"evaluate", "serve", "train", "train-primitives", "retrain", "models", "libvirt"}
    missing = [" ".join(p) for p in paths if f"`catur {' '.join(p)}`" not in text]
    assert not missing, f"commands missing from docs/reference/cli.md: {missing}"


def test_every_rpc_and_field_of_the_proto_is_in_the_grpc_reference():
    """Checked against the compiled descriptor, not the generator's own parse of the file."""
    from catur.v1 import placement_pb2

    text = (DOCS / "reference" / "grpc-api.md").read_text()
    service = placement_pb2.DESCRIPTOR.services_by_name["Placement"]
    assert [m.name for m in service.methods] == ["Place", "PlaceBatch", "GetServerInfo", "Depart"]
    for method in service.methods:
        assert f"| `{method.name}` | [`{method.input_type.name}`]" in text, method.name
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", text, flags=re.S | re.M))
    for message in placement_pb2.DESCRIPTOR.message_types_by_name.values():
        assert message.name in sections, f"message {message.name} missing from the gRPC reference"
        for f in message.fields:
            assert f"| `{f.name}` |" in sections[message.name], f"{message.name}.{f.name} missing"


UNITS = re.compile(r"\((count|MiB|seconds|fraction|unitless|0-based|SLIT)|gRPC status code|Unix epoch|N\*N values")
LIMITS = re.compile(r">=|<=|\d\.\.\d|\.\.\d|at most|finite|0-based|\d+ to ")
REQUESTS = {"Node", "ExplicitTopology", "NodeUsage", "ResidentVM", "VM", "PlaceRequest", "PlaceBatchRequest", "DepartRequest"}


def test_every_numeric_field_states_its_unit_and_every_request_number_its_limits():
    _, items = gen_reference.parse_proto(gen_reference.PROTO.read_text())
    for message in (i for i in items if i.kind == "message"):
        for f in gen_reference.fields_of(message):
            if f.detail["type"] in ("int32", "int64", "double", "float"):
                assert UNITS.search(f.comment), f"{message.name}.{f.name}: no unit in {f.comment!r}"
                if message.name in REQUESTS:
                    assert LIMITS.search(f.comment), f"{message.name}.{f.name}: no limit in {f.comment!r}"


def test_the_generator_refuses_an_undocumented_field(tmp_path, monkeypatch):
    proto = tmp_path / "x.proto"
    proto.write_text('syntax = "proto3";\npackage x;\n// A.\nmessage A {\n  int64 documented_not = 1;\n}\n')
    monkeypatch.setattr(gen_reference, "PROTO", proto)
    with pytest.raises(ValueError, match="no comment above A.documented_not"):
        gen_reference.grpc_page()


def test_every_module_is_in_the_python_api_reference():
    text = (DOCS / "reference" / "python-api.md").read_text()
    modules = gen_reference.modules()
    assert {"catur.placement", "catur.sim.pipeline", "catur.traces.readers", "catur.training.retrain"} <= set(modules)
    assert not [m for m in modules if f".. automodule:: {m}\n" not in text]


# --- links and pages -----------------------------------------------------------------------------


def test_internal_links_resolve():
    """Every relative link of README, BENCHMARKS and the site names a file that exists, and every
    #anchor a heading of its page (what Sphinx's -W build also enforces, here without Sphinx)."""
    bad = []
    for page in pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto: (not checked: no network)
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            name = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
            if not resolved.exists():
                if name not in PENDING_PAGES:
                    bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert not bad, "\n".join(bad)


def test_every_site_page_has_one_title():
    for page in DOCS.rglob("*.md"):
        titles = re.findall(r"^# ", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), flags=re.M)
        assert len(titles) == 1, f"{page.relative_to(ROOT)}: {len(titles)} top-level headings"


def test_readme_stays_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    text = "\n".join(lines)
    for use in ("## Evaluate your trace", "## Train on your traffic", "## Serve it", "## Retrain", "## Hook a libvirt host"):
        assert use in text


def test_source_cites_only_files_that_exist():
    """Docstrings and comments may cite docs pages and repository files, never a missing one."""
    bad = []
    for folder in ("catur", "sim", "traces", "training", "benchmarks", "tests", "deploy"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".yml", ".yaml", ".json", ".service", ".md") or not path.is_file():
                continue
            if "node_modules" in path.parts:  # npm's packages (benchmarks/grpc-js-load, not committed)
                continue
            text = path.read_text(errors="replace")
            if any("DESIGN.md" in line and "not in" not in line for line in text.splitlines()) and path.name != "test_docs.py":
                bad.append(f"{path.relative_to(ROOT)}: cites DESIGN.md, which is not in the repository")
            for cited in set(re.findall(r"\bdocs/[\w/.-]+\.md", text)):
                if not (ROOT / cited).exists() and cited not in PENDING_PAGES:
                    bad.append(f"{path.relative_to(ROOT)}: cites {cited}, which does not exist")
    assert not bad, "\n".join(bad)


# --- examples ------------------------------------------------------------------------------------


def fenced(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def test_config_file_examples_parse():
    from catur.sim.cluster import cluster_from_dict
    from catur.topology import topology_from_dict

    blocks = [yaml.safe_load(b) for b in fenced(DOCS / "reference" / "config-files.md", "yaml")]
    assert len(blocks) == 2
    topology = topology_from_dict(blocks[0], source="my-host.yaml")
    assert topology.num_nodes == 2
    cluster = cluster_from_dict(blocks[1], source="my-cluster.yaml")
    assert [count for _, count in cluster.groups] == [60, 30]


def test_package_docstrings_say_what_each_package_is():
    for name in ("catur", "catur.sim", "catur.traces", "catur.training", "catur.service", "catur.cli", "catur.hypervisor"):
        doc = importlib.import_module(name).__doc__ or ""
        assert len(doc.split()) >= 20, f"{name} has no package docstring worth the name"


def test_public_cli_functions_are_documented():
    missing = []
    for path in sorted((ROOT / "catur" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{path.name}: {node.name}")
    assert not missing, "public functions of catur/cli without a docstring:\n" + "\n".join(missing)
