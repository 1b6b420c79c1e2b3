"""Strict keys in every file kind a user writes or edits: a typo is an error, never ignored.

The kinds: topology files and cluster files (YAML or TOML), a model's ``manifest.json``, and
the evaluation JSON given to ``catur models add --evaluation`` (tested in test_registry.py).
Each error names the file, the key, where it sits and the closest valid key.
"""

from __future__ import annotations

import json
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catur.configfile import check_keys, closest
from catur.errors import CaturError
from catur.policy_model import MANIFEST_KEYS, PolicyModel, default_model_dir
from catur.policy_model import shipped_model_dir
from catur.sim.cluster import CLUSTER_KEYS, GROUP_KEYS, load_cluster
from catur.topology import NODE_KEYS, TOPOLOGY_KEYS, load_topology_file

CATUR = Path(sys.executable).with_name("catur")

TOPOLOGY_YAML = """\
name: my-host
nodes:
  - {cores: 32, mem_gib: 128, socket: 0}
  - {cores: 32, mem_gib: 128, socket: 1}
distances: [[10, 21], [21, 10]]
"""
TOPOLOGY_TOML = """\
name = "my-host"
distances = [[10, 21], [21, 10]]
[[nodes]]
cores = 32
mem_gib = 128
socket = 0
[[nodes]]
cores = 32
mem_gib = 128
socket = 1
"""
CLUSTER_YAML = """\
name: mine
cpu_overcommit: 1.5
hosts:
  - topology: intel-2s
    count: 3
  - topology: amd-2s-nps2
    count: 2
"""
CLUSTER_TOML = """\
name = "mine"
cpu_overcommit = 1.5
[[hosts]]
topology = "intel-2s"
count = 3
[[hosts]]
topology = "amd-2s-nps2"
count = 2
"""

# (file name, good text, a typo -> the text with it, expected pieces of the message)
TYPOS = [
    ("my-cluster.yaml", CLUSTER_YAML, ("count:", "cnt:"), ["my-cluster.yaml", "'cnt'", "in hosts[0]", "did you mean 'count'"]),
    ("my-cluster.yaml", CLUSTER_YAML, ("cpu_overcommit:", "cpu_overcomit:"), ["'cpu_overcomit'", "did you mean 'cpu_overcommit'"]),
    ("my-cluster.yaml", CLUSTER_YAML, ("topology: amd", "topolgy: amd"), ["'topolgy'", "in hosts[1]", "did you mean 'topology'"]),
    ("my-cluster.toml", CLUSTER_TOML, ("count = 2", "cout = 2"), ["my-cluster.toml", "'cout'", "in hosts[1]", "did you mean 'count'"]),
    ("my-cluster.toml", CLUSTER_TOML, ("name =", "nmae ="), ["'nmae'", "did you mean 'name'"]),
    ("my-host.yaml", TOPOLOGY_YAML, ("distances:", "distance:"), ["my-host.yaml", "'distance'", "did you mean 'distances'"]),
    ("my-host.yaml", TOPOLOGY_YAML, ("{cores: 32, mem_gib: 128, socket: 1}", "{cores: 32, mem_gb: 128, socket: 1}"),
     ["'mem_gb'", "in nodes[1]", "did you mean 'mem_gib'"]),
    ("my-host.toml", TOPOLOGY_TOML, ("socket = 0", "sockets = 0"), ["my-host.toml", "'sockets'", "in nodes[0]", "did you mean 'socket'"]),
]


def _load(path: Path):
    return load_cluster(str(path)) if "cluster" in path.name else load_topology_file(path)


@pytest.mark.parametrize("name,text,typo,pieces", TYPOS, ids=[f"{t[0]}:{t[2][1]}" for t in TYPOS])
def test_a_typo_in_a_config_file_is_an_error_naming_the_key(tmp_path: Path, name, text, typo, pieces):
    path = tmp_path / name
    path.write_text(text)
    _load(path)  # the good file loads
    good, bad = typo
    assert good in text
    path.write_text(text.replace(good, bad, 1))
    with pytest.raises(CaturError) as err:
        _load(path)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, (piece, message)


def test_the_issue_cluster_typo_no_longer_gives_one_host(tmp_path: Path):
    """The issue's case: 'cnt' used to default the count to 1 host and reject most VMs."""
    path = tmp_path / "my-cluster.yaml"
    path.write_text("hosts:\n  - topology: intel-2s\n    cnt: 60\n")
    with pytest.raises(CaturError, match=r"my-cluster.yaml: unknown key 'cnt' in hosts\[0\] \(did you mean 'count'\?\)"):
        load_cluster(str(path))


def test_a_topology_file_named_by_a_cluster_is_checked_too(tmp_path: Path):
    (tmp_path / "host.yaml").write_text(TOPOLOGY_YAML.replace("socket: 1}", "sokcet: 1}"))
    (tmp_path / "c.yaml").write_text(f"hosts:\n  - topology: {tmp_path / 'host.yaml'}\n    count: 2\n")
    with pytest.raises(CaturError, match="'sokcet' in nodes\\[1\\] \\(did you mean 'socket'"):
        load_cluster(str(tmp_path / "c.yaml"))


def test_a_typo_in_a_model_manifest_is_an_error(tmp_path: Path):
    """manifest.json is edited by hand for fallback_primitive: a misspelling must not be ignored."""
    model = tmp_path / "model"
    shutil.copytree(shipped_model_dir("ppo-synthetic"), model)  # a primitive-action model: it has fallback_primitive
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["fallback_primitve"] = "mem-best-fit"
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CaturError, match="manifest.json: unknown key 'fallback_primitve' \\(did you mean 'fallback_primitive'"):
        PolicyModel.load(model)


def test_the_shipped_models_use_only_known_manifest_keys():
    from catur.afterstate import MANIFEST_KEYS as SCORER_KEYS

    assert set(json.loads((default_model_dir() / "manifest.json").read_text())) <= set(SCORER_KEYS)
    assert set(json.loads((shipped_model_dir("ppo-synthetic") / "manifest.json").read_text())) <= set(MANIFEST_KEYS)


def test_a_key_far_from_every_valid_one_lists_them():
    with pytest.raises(CaturError, match=r"f.yaml: unknown key 'zzz' \(valid keys: count, topology\)"):
        check_keys({"topology": "x", "zzz": 1}, GROUP_KEYS, "f.yaml")


ALL_KEYS = [CLUSTER_KEYS, GROUP_KEYS, TOPOLOGY_KEYS, NODE_KEYS, MANIFEST_KEYS]


@settings(max_examples=300, deadline=None)
@given(
    keys=st.sampled_from(ALL_KEYS),
    data=st.data(),
)
def test_every_single_edit_of_a_valid_key_is_caught_and_named(keys, data):
    """Delete, swap, replace or insert one character of a valid key: unless the result is
    itself valid, the error names it, and it suggests a key whenever difflib finds one."""
    key = data.draw(st.sampled_from(keys))
    i = data.draw(st.integers(0, len(key) - 1))
    c = data.draw(st.sampled_from(string.ascii_lowercase + "_"))
    edit = data.draw(st.sampled_from(["delete", "replace", "insert", "swap"]))
    typo = {
        "delete": key[:i] + key[i + 1:],
        "replace": key[:i] + c + key[i + 1:],
        "insert": key[:i] + c + key[i:],
        "swap": key[:i] + key[i + 1:i + 2] + key[i] + key[i + 2:],
    }[edit]
    mapping = {typo: 1}
    if typo in keys:
        check_keys(mapping, keys, "f.yaml")
        return
    with pytest.raises(CaturError) as err:
        check_keys(mapping, keys, "f.yaml", "hosts[3]")
    message = str(err.value)
    assert message.startswith(f"f.yaml: unknown key {typo!r} in hosts[3] (")
    hint = closest(typo, keys)
    if hint is not None:
        assert message.endswith(f"(did you mean {hint!r}?)")
    else:
        assert "(valid keys: " in message
    if len(key) > 4:  # one edit of a longer key is always close enough for a suggestion
        assert hint is not None


@pytest.mark.skipif(not CATUR.exists(), reason=f"no installed catur command at {CATUR}")
def test_cli_refuses_a_cluster_typo_with_exit_2(tmp_path: Path):
    path = tmp_path / "my-cluster.yaml"
    path.write_text("name: mine\ncpu_overcomit: 1.5\nhosts:\n  - topology: intel-2s\n    count: 2\n")
    result = subprocess.run(
        [str(CATUR), "evaluate", "--synthetic", "default", "--days", "1:1", "--cluster", str(path),
         "--policies", "xen", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"catur: error: {path}: unknown key 'cpu_overcomit' (did you mean 'cpu_overcommit'?)"
    )
