"""The model registry (:mod:`catur.registry`) and ``catur models``.

Round trips of add/promote/rollback/list/show through the API and the CLI; clear refusals
(unknown version, not a registry, a corrupt model at add, a version damaged after it was
added); fault tests that SIGKILL a subprocess at the critical point of ``add`` and of
``promote`` (via the documented ``CATUR_REGISTRY_TEST_PAUSE`` hook) and check that ``current``
is intact and the leftovers are invisible, then cleaned; readers that never see a broken model
while another thread promotes back and forth; hypothesis over random sequences of changes; and
the service's :class:`~catur.service.serving.ModelHolder` following a promotion.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _service_support import corrupt_model, make_model
from catur.cli import main
from catur.errors import CaturError
from catur.policy_model import PolicyModel
from catur.policy_model import shipped_model_dir
from catur.registry import PAUSE_ENV, Registry, headline_metric, normalise_version
from catur.service.serving import ModelHolder, resolve_model_dir
from catur.shield import ShieldConfig

EVALUATION = {"clusters": {"east": {"avg_defect": 0.012}, "west": {"avg_defect": 0.02}}, "days": "16:31"}


@pytest.fixture
def shipped(tmp_path) -> Path:
    """A copy of the shipped primitive-action model (the registry must never need the package's
    own files; the corruption cases edit its primitive-model manifest fields)."""
    return Path(shutil.copytree(shipped_model_dir("ppo-synthetic"), tmp_path / "shipped"))


@pytest.fixture
def registry(tmp_path, shipped) -> Registry:
    """A registry with v0001 (shipped, current) and v0002 (a different model, not current)."""
    reg = Registry(tmp_path / "reg", create=True)
    reg.add(shipped, note="shipped")
    reg.promote("v0001", reason="first")
    reg.add(make_model(tmp_path / "other", seed=3), evaluation=EVALUATION, note="other", parent="v0001")
    return reg


def make_writable(directory: Path) -> None:
    for p in directory.iterdir():
        p.chmod(0o644)


# --- round trips ----------------------------------------------------------------------------------


def test_add_promote_rollback_round_trip(registry, tmp_path):
    root = registry.root
    assert [v.version for v in registry.versions()] == ["v0001", "v0002"]
    v1, v2 = registry.get("v0001"), registry.get("2")
    assert (v1.note, v1.parent, v1.evaluation) == ("shipped", None, None)
    assert (v2.note, v2.parent, v2.evaluation) == ("other", "v0001", EVALUATION)
    assert v2.created_at.endswith("Z") and v2.path == root / "versions" / "v0002"
    # the served version is the registry's name; the trainer's is kept
    assert v2.manifest["version"] == "v0002" and v2.manifest["trained_version"] == "test-3"
    assert PolicyModel.load(v2.path).version == "v0002"
    assert registry.current().version == "v0001"
    assert os.readlink(root / "current") == "versions/v0001"  # relative: the registry can move
    assert registry.promote("v0002", reason="better").version == "v0002"
    assert resolve_model_dir(str(root)) == (root / "versions" / "v0002").resolve()
    assert registry.rollback(reason="oops").version == "v0001"
    assert registry.current().version == "v0001"
    assert [(e["action"], e["version"], e["previous"], e["reason"]) for e in registry.history()] == [
        ("promote", "v0001", None, "first"),
        ("promote", "v0002", "v0001", "better"),
        ("rollback", "v0001", "v0002", "oops"),
    ]
    # promoting what is current changes nothing; a registry reopened sees the same
    assert registry.promote("v0001").version == "v0001" and len(registry.history()) == 3
    again = Registry(root)
    assert again.current().version == "v0001" and again.stack() == ["v0001"]
    with pytest.raises(CaturError, match="nothing to roll back to.*v0001 is the first"):
        again.rollback()


def test_repeated_rollbacks_walk_back_through_promotions(registry, tmp_path):
    registry.add(make_model(tmp_path / "third", seed=4))
    for version in ("v0002", "v0003", "v0001"):
        registry.promote(version)
    assert registry.stack() == ["v0001", "v0002", "v0003", "v0001"]
    assert [registry.rollback().version for _ in range(3)] == ["v0003", "v0002", "v0001"]
    with pytest.raises(CaturError, match="nothing to roll back to"):
        registry.rollback()


def test_prune_keeps_current_newest_and_rollback_targets(registry, tmp_path, capsys):
    """prune(keep) removes all but the current version, the newest ``keep`` and the ``keep``
    rollback targets; it is recorded, numbers are not reused, and rollback still works."""
    root = registry.root
    registry.add(make_model(tmp_path / "third", seed=4))
    registry.add(make_model(tmp_path / "fourth", seed=5))
    registry.promote("v0003")  # stack: v0001, v0003
    with pytest.raises(CaturError, match="keep must be a whole number >= 0, got -1"):
        registry.prunable(-1)
    assert registry.prunable(0) == ["v0001", "v0002", "v0004"]
    code, out, _ = run_cli(capsys, "models", "prune", "--keep", "1", "--dry-run", "--registry", str(root))
    assert code == 0 and out.strip() == "would remove v0002"
    assert [v.version for v in registry.versions()] == ["v0001", "v0002", "v0003", "v0004"]
    code, out, _ = run_cli(capsys, "models", "prune", "--keep", "1", "--reason", "disk", "--registry", str(root))
    assert code == 0 and out.strip() == "removed v0002; kept v0001, v0003, v0004"
    assert not (root / "versions" / "v0002").exists() and not list(root.glob(".tmp-*"))
    last = registry.history()[-1]
    assert (last["action"], last["pruned"], last["keep"], last["reason"]) == ("prune", ["v0002"], 1, "disk")
    assert registry.stack() == ["v0001", "v0003"] and registry.current().version == "v0003"
    with pytest.raises(CaturError, match="unknown model version 'v0002'"):
        registry.get("v0002")
    assert registry.prune(1) == []  # nothing left to remove: no history line
    assert registry.history()[-1] == last
    code, out, _ = run_cli(capsys, "models", "history", "--registry", str(root))
    assert "prune     removed v0002  disk" in out
    assert registry.add(tmp_path / "third").version == "v0005"  # v0002's number is never reused
    assert registry.rollback().version == "v0001"
    # Pruned down to the current version only, a rollback names the removed target.
    registry.promote("v0004")
    assert registry.prune(0) == ["v0001", "v0003", "v0005"]
    with pytest.raises(CaturError, match="cannot roll back to v0001: unknown model version.*v0004 stays current"):
        registry.rollback()
    assert registry.current().version == "v0004"


def test_a_failed_rename_during_prune_records_what_went(registry, tmp_path, monkeypatch):
    """If moving a version out fails halfway, the error names it, the versions already moved
    are recorded as pruned (their numbers stay used) and the rest stay listed."""
    registry.add(make_model(tmp_path / "third", seed=4))
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name == "v0003":
            raise PermissionError(13, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(CaturError, match=r"cannot remove v0003 from .*versions: Permission denied"):
        registry.prune(0)
    monkeypatch.undo()
    assert [v.version for v in registry.versions()] == ["v0001", "v0003"]
    assert registry.history()[-1]["pruned"] == ["v0002"]
    assert registry.add(tmp_path / "third").version == "v0004"
    assert registry.cleaned and not list(registry.root.glob(".tmp-*"))


def test_killed_in_the_middle_of_prune(registry):
    """Killed after hiding the versions and writing the history: readers never see them
    again, and the next change deletes what was left."""
    root = registry.root
    kill_when_paused(root, "prune", "r.prune(0)")
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-prune-v0002-")
    assert [v.version for v in Registry(root).versions()] == ["v0001"]
    assert registry.history()[-1]["pruned"] == ["v0002"]
    again = Registry(root, lock_timeout_s=5)
    assert again.add(make_model(root.parent / "again", seed=6)).version == "v0003"
    assert again.cleaned == leftovers and not list(root.glob(".tmp-*"))


def test_reading_errors_name_the_bad_value(registry, tmp_path, shipped):
    with pytest.raises(CaturError, match=r"unknown model version 'v0009'.*known: v0001, v0002"):
        registry.get("v0009")
    with pytest.raises(CaturError, match="does not exist; create one with 'catur models init"):
        Registry(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaturError, match="is not a model registry"):
        Registry(tmp_path / "empty")
    with pytest.raises(CaturError, match="is a model directory, not a model registry"):
        Registry(shipped, create=True)
    with pytest.raises(CaturError, match="unknown model version 'v0007'"):
        registry.add(shipped, parent="v0007")
    with pytest.raises(CaturError, match="evaluation is not JSON-serialisable"):
        registry.add(shipped, evaluation={"x": float("nan")})
    fresh = Registry(tmp_path / "fresh", create=True)
    assert fresh.current() is None and fresh.versions() == [] and fresh.history() == []
    with pytest.raises(CaturError, match="no versions yet"):
        fresh.get("v0001")
    assert normalise_version("12") == "v0012" and normalise_version("current") == "current"


@pytest.mark.parametrize("how", ["json", "obs", "weights", "shape", "nan"])
def test_a_corrupt_model_is_refused_at_add(registry, tmp_path, shipped, how):
    bad = Path(shutil.copytree(shipped, tmp_path / f"bad-{how}"))
    corrupt_model(bad, how)
    with pytest.raises(CaturError, match=f"refusing to add {bad}"):
        registry.add(bad)
    assert [v.version for v in registry.versions()] == ["v0001", "v0002"]
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "corrupt-json"])
def test_a_version_damaged_after_add_is_refused_at_promote_and_rollback(registry, damage):
    v2 = registry.get("v0002")
    make_writable(v2.path)
    weights = v2.path / "weights.npz"
    if damage == "flip":  # bit rot: still a valid npz of the right shape? only the checksum knows
        data = bytearray(weights.read_bytes())
        data[-40] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "delete":
        weights.unlink()
    else:
        corrupt_model(v2.path, "json")
    expected = "manifest.json" if damage == "corrupt-json" else "weights.npz"
    with pytest.raises(CaturError, match=rf"refusing to promote v0002: .*{expected}"):
        registry.promote("v0002")
    assert registry.current().version == "v0001"
    PolicyModel.load(resolve_model_dir(str(registry.root)))  # what is served still loads

    # the same check guards a rollback target
    registry.add(make_model(registry.root.parent / "third", seed=5))
    registry.promote("v0003")
    make_writable(registry.get("v0001").path)
    corrupt_model(registry.get("v0001").path, "weights")
    with pytest.raises(CaturError, match="cannot roll back to v0001: .*v0003 stays current"):
        registry.rollback()
    assert registry.current().version == "v0003"


def test_a_hand_made_switch_is_recorded_before_the_next_change(registry):
    tmp = registry.root / "current.handmade"
    os.symlink("versions/v0002", tmp)
    os.replace(tmp, registry.root / "current")  # an operator's ln -sfn + mv
    assert registry.current().version == "v0002"
    registry.rollback()  # reconciles first, so this undoes the hand-made switch
    actions = [(e["action"], e["version"], e["previous"]) for e in registry.history()]
    assert actions[-2:] == [("recover", "v0002", "v0001"), ("rollback", "v0001", "v0002")]
    assert registry.current().version == "v0001"


def test_a_torn_last_history_line_is_ignored_then_dropped(registry):
    with open(registry.root / "history.jsonl", "a") as f:
        f.write('{"time": "2026-01-01T00:00:00Z", "act')  # a crash in the middle of a write
    assert len(registry.history()) == 1
    registry.promote("v0002")
    assert [e["version"] for e in registry.history()] == ["v0001", "v0002"]
    assert (registry.root / "history.jsonl").read_text().count("\n") == 2  # the torn bytes are gone
    (registry.root / "history.jsonl").write_text('{"action": "promote", "version": "v0001"}\nnot json\n{}\n')
    with pytest.raises(CaturError, match=r"history.jsonl, line 2: not valid JSON"):
        registry.history()


def test_a_change_waits_for_the_lock_and_says_so(registry):
    slow = Registry(registry.root, lock_timeout_s=0.2)
    with open(registry.root / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CaturError, match=r"being changed by another process \(lock .*\.lock held"):
            slow.promote("v0002")
    assert slow.promote("v0002").version == "v0002"  # the lock is free again


def test_headline_metric():
    assert headline_metric(None) is None and headline_metric({"x": 1}) is None
    assert headline_metric({"avg_defect": 0.01}) == ("avg_defect", 0.01)
    assert headline_metric(EVALUATION) == ("worst-cluster avg_defect", 0.02)
    assert headline_metric({"headline": {"metric": "ticket_ratio", "value": 0.5}, "avg_defect": 1}) == ("ticket_ratio", 0.5)


# --- the CLI --------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_commands(tmp_path, shipped, capsys, monkeypatch):
    root = str(tmp_path / "reg")
    monkeypatch.delenv("CATUR_REGISTRY", raising=False)
    code, _, err = run_cli(capsys, "models", "list")
    assert code == 2 and err.strip() == "catur: error: no model registry given: pass --registry DIR or set CATUR_REGISTRY"
    code, _, err = run_cli(capsys, "models", "list", "--registry", root)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    assert run_cli(capsys, "models", "init", "--registry", root)[0] == 0
    monkeypatch.setenv("CATUR_REGISTRY", root)
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and "no versions yet" in out
    code, out, _ = run_cli(capsys, "models", "add", str(shipped), "--note", "shipped", "--promote", "--reason", "go")
    assert code == 0 and "added v0001" in out and "v0001 is now current (was none)" in out
    (tmp_path / "eval.json").write_text(json.dumps(EVALUATION))
    other = make_model(tmp_path / "other", seed=3)
    code, out, _ = run_cli(capsys, "models", "add", str(other), "--note", "retrained", "--evaluation", str(tmp_path / "eval.json"), "--parent", "1")
    assert code == 0 and "added v0002" in out
    code, out, _ = run_cli(capsys, "models", "list")
    lines = out.splitlines()
    assert lines[1].startswith("* v0001") and lines[2].startswith("  v0002")
    assert "worst-cluster avg_defect 2.0000%" in lines[2] and "retrained (from v0001)" in lines[2]
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert [(r["version"], r["current"]) for r in rows] == [("v0001", True), ("v0002", False)]
    assert rows[1]["headline"] == {"metric": "worst-cluster avg_defect", "value": 0.02}
    code, out, _ = run_cli(capsys, "models", "promote", "v2", "--reason", "beats all")
    assert code == 0 and out.strip() == "v0002 is now current (was v0001)"
    code, out, _ = run_cli(capsys, "models", "show", "current", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == "v0002" and shown["intact"] and shown["evaluation"] == EVALUATION
    assert shown["manifest"]["version"] == "v0002" and shown["metadata"]["parent"] == "v0001"
    code, out, _ = run_cli(capsys, "models", "show", "v0001")
    assert code == 0 and "files:           intact" in out and "trained version: ppo-" in out
    code, out, _ = run_cli(capsys, "models", "rollback", "--reason", "tickets")
    assert code == 0 and out.strip() == "rolled back: v0001 is now current (was v0002)"
    code, out, _ = run_cli(capsys, "models", "history")
    assert code == 0 and len(out.splitlines()) == 3 and "tickets" in out
    code, _, err = run_cli(capsys, "models", "rollback")
    assert code == 2 and "nothing to roll back to" in err
    code, _, err = run_cli(capsys, "models", "show", "v0042")
    assert code == 2 and "unknown model version 'v0042'" in err and "known: v0001, v0002" in err
    code, _, err = run_cli(capsys, "models", "promote", "latest")
    assert code == 2 and "unknown model version 'latest'" in err
    code, _, err = run_cli(capsys, "models", "list", "--registry", str(shipped))
    assert code == 2 and "is a model directory, not a model registry" in err
    corrupt_model(Path(shutil.copytree(shipped, tmp_path / "bad")), "nan")
    code, _, err = run_cli(capsys, "models", "add", str(tmp_path / "bad"))
    assert code == 2 and "refusing to add" in err and "NaN" in err
    v2 = Path(root) / "versions" / "v0002"
    make_writable(v2)
    (v2 / "weights.npz").write_bytes(b"rotten")
    code, out, _ = run_cli(capsys, "models", "show", "v0002")
    assert code == 1 and "DAMAGED: " in out and "weights.npz" in out
    code, _, err = run_cli(capsys, "models", "promote", "v0002")
    assert code == 2 and err.startswith("catur: error: refusing to promote v0002: ") and "weights.npz" in err
    code, out, _ = run_cli(capsys, "models", "show", "current", "--json")
    assert json.loads(out)["version"] == "v0001"


# --- faults: a process killed at the critical moment ---------------------------------------------

CHILD = "import sys; from catur.registry import Registry; r = Registry(sys.argv[1]); {call}"


def kill_when_paused(root: Path, stage: str, call: str, *args: str) -> int:
    """Run ``call`` in a subprocess that pauses at ``stage``; SIGKILL it there. Returns its pid."""
    env = dict(os.environ, **{PAUSE_ENV: f"{stage}:60"})
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(call=call), str(root), *args],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        assert line.strip() == f"catur-registry: paused at {stage}", line + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the assertion above failed
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.pid


def test_killed_in_the_middle_of_add(registry, shipped):
    root = registry.root
    before = resolve_model_dir(str(root))
    kill_when_paused(root, "add", "r.add(sys.argv[2], note='killed')", str(shipped))
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-v0003-")
    assert (root / leftovers[0] / "weights.npz").exists()  # the copy was complete, not renamed
    # nothing a reader sees changed: the partial copy is invisible, current serves as before
    assert [v.version for v in Registry(root).versions()] == ["v0001", "v0002"]
    assert resolve_model_dir(str(root)) == before and PolicyModel.load(before).version == "v0001"
    # the lock died with the process; the next change cleans up, reports it, and reuses the number
    again = Registry(root, lock_timeout_s=5)
    assert again.add(shipped, note="after").version == "v0003"
    assert again.cleaned == leftovers and not list(root.glob(".tmp-*"))


def test_killed_between_the_new_link_and_the_switch(registry, capsys):
    root = registry.root
    pid = kill_when_paused(root, "promote", "r.promote('v0002')")
    stray = root / f"current.tmp-{pid}"
    assert os.readlink(stray) == "versions/v0002"  # the new link existed ...
    assert registry.current().version == "v0001"  # ... but current was never touched
    assert PolicyModel.load(resolve_model_dir(str(root))).version == "v0001"
    assert [e["version"] for e in registry.history()] == ["v0001"]
    code, out, err = run_cli(capsys, "models", "promote", "v0002", "--registry", str(root))
    assert code == 0 and f"removed current.tmp-{pid}, left by an interrupted change" in err
    assert not stray.exists() and registry.current().version == "v0002"
    assert [(e["action"], e["version"]) for e in registry.history()] == [("promote", "v0001"), ("promote", "v0002")]


# --- concurrent readers ---------------------------------------------------------------------------


@pytest.mark.slow
def test_readers_never_see_a_broken_model_while_promotions_flip(registry):
    root = str(registry.root)
    expected = {"v0001", "v0002"}
    seen: set[str] = set()
    errors: list[BaseException] = []
    loads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal loads
        while not stop.is_set():
            try:
                version = PolicyModel.load(resolve_model_dir(root)).version
                assert version in expected, version
                seen.add(version)
                loads += 1
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            registry.promote("v0002" if i % 2 == 0 else "v0001")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert loads > 0 and seen <= expected
    assert len(registry.history()) == 201 and registry.current().version == "v0001"


# --- invariants over random sequences ------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path]:
    """One registry with three versions (v0001 current), built once and copied per example,
    and a model directory to add."""
    base = tmp_path_factory.mktemp("template")
    reg = Registry(base / "reg", create=True)
    for seed in range(3):
        reg.add(make_model(base / f"m{seed}", seed=seed, gate=False))
    reg.promote("v0001")
    return reg.root, base / "m0"


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("promote"), st.integers(1, 5)),
        st.tuples(st.just("rollback"), st.just(0)),
        st.tuples(st.just("add"), st.just(0)),
        st.tuples(st.just("prune"), st.integers(0, 2)),
    ),
    max_size=12,
)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_changes_keep_the_invariants(template, ops):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(template[0], Path(tmp) / "reg", symlinks=True))
        reg = Registry(root)
        stack = ["v0001"]  # the reference model of what is current and what rollback returns to
        highest = 3  # the highest version number ever given out
        for op, arg in ops:
            names = [v.version for v in reg.versions()]
            if op == "add":
                v = reg.add(template[1])
                highest += 1
                assert v.version == f"v{highest:04d}"  # numbers increase, none reused, pruned or not
            elif op == "prune":
                kept = {stack[-1], *stack[-(arg + 1):], *(names[-arg:] if arg else [])}
                assert reg.prune(arg) == [n for n in names if n not in kept]
                assert [v.version for v in reg.versions()] == [n for n in names if n in kept]
                assert reg.prunable(arg) == []
            elif op == "rollback" and len(stack) >= 2 and stack[-2] not in names:  # a pruned rollback target
                with pytest.raises(CaturError, match=f"cannot roll back to {stack[-2]}.*{stack[-1]} stays current"):
                    reg.rollback()
            elif op == "promote":
                target = f"v{arg:04d}"
                if target not in names:
                    with pytest.raises(CaturError, match="unknown model version"):
                        reg.promote(target)
                    continue
                reg.promote(target)
                if stack[-1] != target:
                    before = stack[-1]
                    stack.append(target)
                    if arg % 2:  # rollback right after a promote undoes it
                        assert reg.rollback().version == before
                        stack.pop()
            else:
                if len(stack) < 2:
                    with pytest.raises(CaturError, match="nothing to roll back to"):
                        reg.rollback()
                    continue
                stack.pop()
                assert reg.rollback().version == stack[-1]
            current = reg.current()
            assert current is not None and current.version == stack[-1]
            assert current.version in [v.version for v in reg.versions()]  # always a complete version
            assert resolve_model_dir(str(root)) == current.path.resolve()
            history = [e for e in reg.history() if e["action"] != "prune"]
            assert reg.stack() == stack
            assert history[-1]["version"] == current.version
            for earlier, later in zip(history, history[1:]):
                assert later["previous"] == earlier["version"]  # the log is one unbroken chain
        assert not list(root.glob(".tmp-*")) and not list(root.glob("current.tmp-*"))


# --- the service follows current ------------------------------------------------------------------


def test_the_service_model_holder_follows_a_promotion(registry):
    holder = ModelHolder(str(registry.root), ShieldConfig(depth=1))
    first = holder.current
    assert first.version == "v0001" and first.source == str(registry.get("v0001").path.resolve())
    assert not holder.changed()
    registry.promote("v0002")
    assert holder.changed() and holder.reload("test")
    assert holder.current.version == "v0002"
    assert holder.current.source == str(registry.get("v0002").path.resolve()) != first.source
    registry.rollback()
    stop = threading.Event()
    thread = holder.watch(0.01, stop)  # the path 'catur serve --watch-interval' takes
    try:
        for _ in range(500):
            if holder.current.version == "v0001":
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert holder.current.source == first.source
