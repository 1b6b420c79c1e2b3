"""The model registry: numbered model versions in a directory, one of them *current*.

A registry is a plain directory that the trainer writes and the service reads::

    <root>/
      versions/
        v0001/  manifest.json  weights.npz  evaluation.json  version.json
        v0002/  ...
      current -> versions/v0002          (a relative symbolic link)
      history.jsonl                      (one line per promotion / rollback)
      .lock                              (flock'ed by every change)
      .tmp-*/                            (a copy being added; never visible as a version)

Each version directory is a model in the :mod:`catur.policy_model` format (``manifest.json`` +
``weights.npz``) plus ``evaluation.json`` (the results given when it was added) and
``version.json`` (when, from where, its parent, a free-text note and the SHA-256 of every
file). The manifest's ``version`` is rewritten to the registry version (``v0003``), so what the
service reports as its model version is the name ``catur models list`` shows; the version the
trainer gave is kept as ``trained_version``. Version directories are never changed by the
registry, and removed only by an explicit :meth:`Registry.prune`; their files are made read-only.

**Atomicity.** What a reader can observe is always complete:

* ``add`` copies into ``<root>/.tmp-<...>``, writes and ``fsync``\\ s every file, loads the
  copy back (:meth:`catur.policy_model.PolicyModel.load`) and checks its checksums, and only then
  ``rename``\\ s the directory into ``versions/``. A process killed before the rename leaves
  a ``.tmp-*`` directory that :meth:`Registry.versions` never lists and the next change removes.
* ``promote`` / ``rollback`` create a new symbolic link ``current.tmp-<pid>`` and
  ``os.replace`` it onto ``current``: ``rename(2)`` swaps the link in one step, so a reader
  following ``current`` (the service's :func:`catur.service.serving.resolve_model_dir`) gets the
  old version or the new one, never neither. Killed before the replace, ``current`` is
  untouched and the stray link is removed by the next change.
* Every change holds an exclusive ``fcntl.flock`` on ``<root>/.lock`` (released by the kernel
  if the process dies), so concurrent ``catur models`` / ``catur retrain`` runs serialise.
  Readers take no lock: they need none.
* A version is re-verified (checksums + load) before it becomes current, so a version whose
  files rotted after it was added is refused with the reason, and the current one stays.

**The greedy gate and rule versions.** :meth:`Registry.promote` refuses (with
:class:`~catur.errors.LosesToGreedy`, exit status 3 in the CLI) a version whose recorded
evaluation loses to greedy by :mod:`catur.verdict`'s rule, unless ``force``; the history line
of a forced promotion says so. :meth:`Registry.add_rule` adds a *rule version*: greedy itself,
served as a version (only a ``manifest.json`` with ``kind: rule``; see :mod:`catur.policy_model`),
for when no trained candidate beats it.

**Pruning.** Every retraining adds a version, so a registry grows without bound unless
old versions go. :meth:`Registry.prune` removes every version except the current one, the
newest ``keep``, and the ``keep`` versions that rollbacks would return to next (see History);
rolling back further than that names the removed version and changes nothing. Each is first renamed to a
``.tmp-*`` directory (readers stop seeing it at once, in one ``rename(2)``), then deleted; a
process killed in between leaves a ``.tmp-*`` that the next change removes. The removed names
are recorded in the history (action ``prune``), so a number is never given out twice.

**History.** ``history.jsonl`` is an append-only log of ``{time, action, version, previous,
reason}``. The sequence of promotions and rollbacks is a stack: ``promote`` pushes, ``rollback``
pops back to the version that was current before (so repeated rollbacks walk further back,
and a rollback right after a promote undoes it). If ``current`` was switched without a history
line — a process killed between the switch and the append, or a hand-made ``ln -sfn`` — the
next change appends a ``recover`` line first, so the history always ends at what is current.

Tests can make a change pause at its critical point (see :data:`PAUSE_ENV`) to kill it there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from catur.configfile import read_json
from catur.errors import CaturError, LosesToGreedy
from catur.verdict import Comparison, recorded_comparison
from catur.policy_model import (
    RulePolicy, file_sha256, model_path, is_rule, load_policy, rule_manifest, weights_sha256,
)

log = logging.getLogger("catur.registry")

VERSIONS = "versions"
CURRENT = "current"  # the pointer to the current version; read by read_pointer() only
HISTORY = "history.jsonl"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
PRUNE = "prune"  # the history action of Registry.prune
MODEL_FILES = ("manifest.json", "weights.npz")
RULE_FILES = ("manifest.json",)  # a rule version (greedy served as a version) has no weights
RULE_KIND = "rule"
EVALUATION = "evaluation.json"
METADATA = "version.json"
VERSION_RE = re.compile(r"^v(\d{4,})$")

#: Test hook. ``CATUR_REGISTRY_TEST_PAUSE="add:30"`` makes :meth:`Registry.add` print
#: ``catur-registry: paused at add`` to stderr and sleep 30 s after the copy is complete and
#: synced but before it is renamed into ``versions/``; ``"promote:30"`` pauses promote/rollback
#: after the ``current.tmp-*`` link exists but before it replaces ``current``; ``"prune:30"``
#: pauses prune after the versions are hidden and the history written, before deleting. A test kills the
#: process during the pause. Unset (always, outside tests) it costs one ``os.environ`` lookup.
PAUSE_ENV = "CATUR_REGISTRY_TEST_PAUSE"
#: The environment variable naming the registry when a command is given no ``--registry``.
REGISTRY_ENV = "CATUR_REGISTRY"


def read_pointer(root: str | Path) -> str | None:
    """Where the registry's ``current`` pointer points, relative to ``root``; ``None`` when
    there is no pointer (no promotion yet).

    The one rule every reader follows (the registry itself and the serving model's watch):
    a symbolic link gives its target; a plain file, the text form some file systems need,
    gives its stripped content; a directory named ``current`` is taken as it is. Anything
    else, or an empty file, is an error naming the pointer.
    """
    pointer = Path(root) / CURRENT
    try:
        return os.readlink(pointer)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise CaturError(f"cannot read registry pointer {pointer}: {exc.strerror}") from exc
    if pointer.is_dir():
        return CURRENT
    if not pointer.is_file():
        raise CaturError(f"registry pointer {pointer} is neither a symbolic link nor a file")
    try:
        target = pointer.read_text().strip()
    except OSError as exc:
        raise CaturError(f"cannot read registry pointer {pointer}: {exc.strerror}") from exc
    if not target:
        raise CaturError(f"registry pointer {pointer} is empty")
    return target


def registry_dir(given: str | None) -> str:
    """The registry directory a command uses: ``given`` (``--registry``), else ``$CATUR_REGISTRY``."""
    root = given or os.environ.get(REGISTRY_ENV)
    if not root:
        raise CaturError(f"no model registry given: pass --registry DIR or set {REGISTRY_ENV}")
    return root


def _pause(stage: str) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    name, _, seconds = spec.partition(":")
    if name == stage:
        print(f"catur-registry: paused at {stage}", file=sys.stderr, flush=True)
        time.sleep(float(seconds or 60))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


_sha256 = file_sha256


def _fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable (a crash after this keeps it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())




def normalise_version(version: str) -> str:
    """``"3"``, ``"v3"`` and ``"v0003"`` all name ``v0003``; anything else is returned as is."""
    match = re.fullmatch(r"v?(\d+)", str(version).strip())
    return f"v{int(match.group(1)):04d}" if match else str(version)


# The names a model's results carry in ``catur evaluate`` output (catur.decision.DeciderSpec).
MODEL_POLICY_NAMES = ("catur", "catur+shield")


def check_evaluation_of(evaluation: dict, model_dir: str | Path, source: str) -> str | None:
    """Refuse an evaluation that is not of the model in ``model_dir``; the reason as a
    :class:`CaturError` naming ``source`` (the JSON file), or a warning string when it cannot
    tell, or None when it matches.

    Only ``catur evaluate --json`` output (``scenario`` + ``policies``) is checked: its
    ``scenario.model_sha256`` is the evaluated model's :func:`~catur.policy_model.weights_sha256`.
    Other JSON (a retrain report, hand-written results) is kept as given.
    """
    scenario = evaluation.get("scenario")
    if not isinstance(scenario, dict) or not isinstance(evaluation.get("policies"), dict):
        return None
    service = scenario.get("service")
    if isinstance(service, dict):  # catur replay: the service's model, known only by its version
        return (
            f"{source}: cannot check that it evaluated {model_dir}: it measured the service at "
            f"{service.get('target')!r} (model version {service.get('model_version')!r})"
        )
    if not scenario.get("model"):
        raise CaturError(
            f"{source}: this evaluation ran no model (catur evaluate without --model), so it says "
            f"nothing about {model_dir}; use --force to keep it anyway"
        )
    evaluated = scenario.get("model_sha256")
    if not evaluated:
        return (
            f"{source}: cannot check that it evaluated {model_dir} (it names model "
            f"{scenario['model']!r} but carries no model_sha256; rerun catur evaluate to record it)"
        )
    actual = weights_sha256(model_dir)
    if evaluated != actual:
        raise CaturError(
            f"{source}: evaluates a different model ({scenario['model']!r}, weights sha256 "
            f"{str(evaluated)[:12]}), not {model_dir} (weights sha256 {actual[:12]}); use --force to keep it anyway"
        )
    return None


def headline_metric(evaluation: dict | None) -> tuple[str, float] | None:
    """The one number ``catur models list`` shows for an evaluation, if it has one.

    In order: an explicit ``{"headline": {"metric": NAME, "value": X}}``; a top-level
    ``avg_defect``; the model's ``avg_defect`` in ``catur evaluate --json`` output
    (``{"scenario": ..., "policies": {"catur": {...}}}``; ``catur+shield`` when only that ran);
    else the worst (largest) ``avg_defect`` over ``{"clusters": {NAME: {...}}}``.
    """
    if not isinstance(evaluation, dict):
        return None
    head = evaluation.get("headline")
    if isinstance(head, dict) and isinstance(head.get("value"), (int, float)):
        return str(head.get("metric", "headline")), float(head["value"])
    if isinstance(evaluation.get("avg_defect"), (int, float)):
        return "avg_defect", float(evaluation["avg_defect"])
    policies = evaluation.get("policies")
    if isinstance(policies, dict):
        for name in MODEL_POLICY_NAMES:
            entry = policies.get(name)
            if isinstance(entry, dict) and isinstance(entry.get("avg_defect"), (int, float)):
                return ("avg_defect" if name == "catur" else f"{name} avg_defect"), float(entry["avg_defect"])
    clusters = evaluation.get("clusters")
    if isinstance(clusters, dict):
        values = [c["avg_defect"] for c in clusters.values() if isinstance(c, dict) and isinstance(c.get("avg_defect"), (int, float))]
        if values:
            return "worst-cluster avg_defect", float(max(values))
    return None


@dataclass(frozen=True)
class ModelVersion:
    """One complete, immutable model version in a registry."""

    version: str  # "v0001", "v0002", ... increasing, never reused
    path: Path  # <root>/versions/<version>: manifest.json + weights.npz (the catur.policy_model format)
    created_at: str  # ISO-8601 UTC
    note: str  # free text given at add()
    evaluation: dict | None  # the JSON given at add(), from <path>/evaluation.json
    parent: str | None  # the version it was fine-tuned from, if any

    @property
    def manifest(self) -> dict:
        """The model's manifest (read from disk on each access; it never changes)."""
        return read_json(self.path / "manifest.json")

    @property
    def metadata(self) -> dict:
        """``version.json``: the fields above plus the source directory and file checksums."""
        return read_json(self.path / METADATA)


class Registry:
    """A model registry directory: add versions, promote one to current, roll back.

    Args:
        root: The registry directory.
        create: Create it (and ``versions/``) when missing; otherwise a missing directory or
            one that is not a registry raises :class:`CaturError`.
        lock_timeout_s: How long a change waits for another process's change to finish.

    Reads (:meth:`versions`, :meth:`get`, :meth:`current`, :meth:`history`) take no lock and
    are safe while another process changes the registry. Changes (:meth:`add`,
    :meth:`promote`, :meth:`rollback`) are atomic; see the module docstring.
    :attr:`cleaned` lists the leftovers of interrupted changes that the last change removed.
    """

    def __init__(self, root: str | Path, *, create: bool = False, lock_timeout_s: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = float(lock_timeout_s)
        self.cleaned: list[str] = []
        if (self.root / VERSIONS).is_dir():
            return
        if self.root.exists() and not self.root.is_dir():
            raise CaturError(f"model registry {str(self.root)!r} is a file, not a directory")
        if (self.root / "manifest.json").exists():
            raise CaturError(
                f"{str(self.root)!r} is a model directory, not a model registry; "
                f"add it to one with 'catur models add {self.root} --registry DIR'"
            )
        if not create:
            what = "does not exist" if not self.root.exists() else "is not a model registry (it has no versions/ folder)"
            raise CaturError(f"model registry {str(self.root)!r} {what}; create one with 'catur models init --registry {self.root}'")
        try:
            (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CaturError(f"cannot create model registry {str(self.root)!r}: {exc.strerror}") from exc
        _fsync_dir(self.root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # --- reading -------------------------------------------------------------------------------

    def _load(self, name: str) -> ModelVersion:
        path = self.root / VERSIONS / name
        meta = read_json(path / METADATA)
        if not isinstance(meta, dict) or meta.get("version") != name:
            raise CaturError(f"{path / METADATA}: does not describe version {name}")
        evaluation = read_json(path / EVALUATION) if (path / EVALUATION).exists() else None
        return ModelVersion(
            version=name,
            path=path,
            created_at=str(meta.get("created_at", "")),
            note=str(meta.get("note", "")),
            evaluation=evaluation,
            parent=meta.get("parent"),
        )

    def _names(self) -> list[str]:
        """Every ``vNNNN`` entry in ``versions/``, in version order."""
        try:
            names = [p.name for p in (self.root / VERSIONS).iterdir() if VERSION_RE.match(p.name)]
        except FileNotFoundError:
            raise CaturError(f"model registry {str(self.root)!r} has lost its versions/ folder") from None
        return sorted(names, key=lambda n: int(n[1:]))

    def versions(self) -> list[ModelVersion]:
        """The complete versions, oldest first. A version whose metadata cannot be read is
        left out (with a warning in the log); :meth:`get` on it says why."""
        found = []
        for name in self._names():
            try:
                found.append(self._load(name))
            except CaturError as exc:
                log.warning("skipping model version %s: %s", name, exc)
        return found

    def get(self, version: str) -> ModelVersion:
        """The version named ``version`` (``v0003``, ``v3`` or ``3``)."""
        name = normalise_version(version)
        if VERSION_RE.match(name) and (self.root / VERSIONS / name).is_dir():
            return self._load(name)
        known = [v.version for v in self.versions()]
        listing = f"known: {', '.join(known)}" if known else "the registry has no versions yet"
        raise CaturError(f"unknown model version {version!r} in registry {str(self.root)!r}; {listing}")

    def _current_name(self) -> str | None:
        """The version ``current`` points to, or None when there is none yet."""
        target = read_pointer(self.root)
        if target is None:
            return None
        # Managing versions needs more than serving does: the pointer must name one of them.
        name = Path(target).name
        if not VERSION_RE.match(name) or Path(target).parent.name != VERSIONS:
            raise CaturError(f"registry pointer {self.root / CURRENT} names {target!r}, which is not one of {self.root / VERSIONS}/vNNNN")
        return name

    def current(self) -> ModelVersion | None:
        """The current version, or None before the first promotion."""
        name = self._current_name()
        if name is None:
            return None
        if not (self.root / VERSIONS / name).is_dir():
            raise CaturError(f"registry pointer {self.root / CURRENT} names {name}, which does not exist")
        return self._load(name)

    def history(self) -> list[dict]:
        """Promotions, rollbacks and recoveries, oldest first:
        ``{time, action, version, previous, reason}``."""
        path = self.root / HISTORY
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        entries = []
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):  # a torn last line (no newline yet): never completed
                    log.warning("%s: ignoring an incomplete last line", path)
                    continue
                raise CaturError(f"{path}, line {number}: not valid JSON ({exc})") from exc
            if not isinstance(entry, dict) or "action" not in entry:
                raise CaturError(f"{path}, line {number}: not a history entry")
            entries.append(entry)
        return entries

    def stack(self) -> list[str]:
        """The versions that were current, oldest first, as promotions push and rollbacks pop;
        the last one is current. ``rollback`` returns to the one before it."""
        stack: list[str] = []
        for entry in self.history():
            version = entry.get("version")
            if entry["action"] == PRUNE:  # removes versions, never changes what is current
                continue
            if entry["action"] == "rollback":
                if stack:
                    stack.pop()
                if version and (not stack or stack[-1] != version):
                    stack.append(version)  # a hand-edited history: trust what it says is current
            elif version is None:  # recovered to "no current"
                stack.clear()
            else:
                stack.append(version)
        return stack

    def verify(self, version: str | ModelVersion) -> ModelVersion:
        """Check that a version's files are intact (checksums) and load as a model.

        Raises :class:`CaturError` naming the damaged file and what is wrong with it.
        """
        v = version if isinstance(version, ModelVersion) else self.get(version)
        files = v.metadata.get("files")
        needed = RULE_FILES if v.metadata.get("kind") == RULE_KIND else MODEL_FILES
        if not isinstance(files, dict) or not all(name in files for name in needed):
            raise CaturError(f"{v.path / METADATA}: has no checksums for {', '.join(needed)}")
        for name, expected in files.items():
            path = v.path / name
            try:
                actual = _sha256(path)
            except OSError as exc:
                raise CaturError(f"{path}: {exc.strerror}") from exc
            if actual != expected:
                raise CaturError(
                    f"{path}: the file changed after it was added (sha256 {actual[:12]}..., recorded {expected[:12]}...)"
                )
        load_policy(v.path)
        return v

    def gate(self, version: str | ModelVersion) -> Comparison | None:
        """The version's recorded comparison with greedy (:func:`catur.verdict.recorded_comparison`),
        or ``None`` when nothing is recorded. A rule version serving greedy is greedy: ``None``."""
        v = version if isinstance(version, ModelVersion) else self.get(version)
        manifest = v.manifest
        if is_rule(manifest):
            return None
        return recorded_comparison(manifest, v.evaluation)

    # --- changing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        """Hold the registry's exclusive lock; clean up and reconcile before the change."""
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CaturError(
                            f"model registry {str(self.root)!r} is being changed by another process "
                            f"(lock {self.root / LOCK} held for over {self.lock_timeout_s:g} s)"
                        ) from None
                    time.sleep(0.05)
            self._clean()
            self._reconcile()
            yield
        finally:
            os.close(fd)  # releases the flock

    def _clean(self) -> None:
        """Remove what interrupted changes left behind. Only called under the lock, when no
        other change can be in progress, so everything matched here is stale."""
        self.cleaned = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(TMP_PREFIX) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name.startswith(CURRENT + ".tmp-") and (path.is_symlink() or path.is_file()):
                path.unlink()
            else:
                continue
            self.cleaned.append(path.name)
            log.warning("removed %s, left by an interrupted change to the registry", path)

    def _reconcile(self) -> None:
        """Make the history end at what is current (see "History" in the module docstring)."""
        actual = self._current_name()
        stack = self.stack()
        recorded = stack[-1] if stack else None
        if actual != recorded:
            self._append("recover", actual, recorded, "current was switched without a history entry (an interrupted promotion or a change by hand)")

    def _append(self, action: str, version: str | None, previous: str | None, reason: str, **extra) -> None:
        entry = {"time": _now(), "action": action, "version": version, "previous": previous, "reason": reason, **extra}
        path = self.root / HISTORY
        with open(path, "a+b") as f:
            f.seek(0)
            data = f.read()
            if data and not data.endswith(b"\n"):  # a torn line from a crash: it never happened
                f.truncate(data.rfind(b"\n") + 1)
            f.write((json.dumps(entry) + "\n").encode())  # O_APPEND: goes at the (new) end
            f.flush()
            os.fsync(f.fileno())

    def _switch(self, name: str) -> None:
        """Point ``current`` at ``versions/<name>`` in one ``rename(2)``."""
        tmp = self.root / f"{CURRENT}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"{VERSIONS}/{name}", tmp)
        _pause("promote")
        try:
            os.replace(tmp, self.root / CURRENT)
        except OSError as exc:
            tmp.unlink()
            raise CaturError(f"cannot replace {self.root / CURRENT}: {exc.strerror}") from exc
        _fsync_dir(self.root)

    def _next_name(self) -> str:
        """One past the highest number ever used: in versions/, or named in the history."""
        used = [int(n[1:]) for n in self._names()]
        for entry in self.history():
            pruned = entry.get("pruned") if isinstance(entry.get("pruned"), list) else []
            for name in [entry.get("version"), entry.get("previous"), *pruned]:
                match = VERSION_RE.match(str(name or ""))
                if match:
                    used.append(int(match.group(1)))
        return f"v{max(used, default=0) + 1:04d}"

    def add(
        self,
        model_dir: str | Path,
        *,
        evaluation: dict | None = None,
        note: str = "",
        parent: str | None = None,
    ) -> ModelVersion:
        """Copy a model directory in as the next version. Does not promote it.

        The model must load (:func:`catur.policy_model.load_policy`: a trained model or a rule version);
        ``evaluation`` must be a JSON object;
        ``parent`` must be a version of this registry. ``model_dir`` may be ``"default"``, the
        model shipped with Catur.
        """
        source = model_path(model_dir)
        try:
            model = load_policy(source)
        except CaturError as exc:
            raise CaturError(f"refusing to add {source}: {exc}") from exc
        return self._add(model, source, evaluation=evaluation, note=note, parent=parent)

    def add_rule(self, policy: str = "greedy", *, evaluation: dict | None = None, note: str = "", parent: str | None = None) -> ModelVersion:
        """Add a *rule version*: ``policy`` (greedy) served as a version, for when no trained
        candidate beats it (see :mod:`catur.policy_model`). Does not promote it."""
        return self._add(RulePolicy(rule_manifest(policy)), None, evaluation=evaluation, note=note, parent=parent)

    def _add(self, model, source: Path | None, *, evaluation: dict | None, note: str, parent: str | None) -> ModelVersion:
        rule = is_rule(model.manifest)  # a rule version's directory holds no weights file
        if evaluation is not None:
            if not isinstance(evaluation, dict):
                raise CaturError(f"evaluation must be a JSON object, got {type(evaluation).__name__}")
            try:
                evaluation_bytes = json.dumps(evaluation, indent=2, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise CaturError(f"evaluation is not JSON-serialisable: {exc}") from exc
        if parent is not None:
            parent = self.get(parent).version
        with self._locked():
            name = self._next_name()
            tmp = self.root / f"{TMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(3)}"
            tmp.mkdir()
            try:
                manifest = dict(model.manifest)
                manifest["trained_version"] = manifest.get("trained_version") or model.version
                manifest["version"] = name  # what the service reports as its model version
                _write_synced(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
                if not rule:
                    _write_synced(tmp / "weights.npz", (source / "weights.npz").read_bytes())
                if evaluation is not None:
                    _write_synced(tmp / EVALUATION, evaluation_bytes)
                files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
                meta = {
                    "version": name,
                    "created_at": _now(),
                    "note": note,
                    "parent": parent,
                    "source": str(source.resolve()) if source is not None else f"rule: {model.policy}",
                    "trained_version": manifest["trained_version"],
                    "files": files,
                }
                if rule:
                    meta["kind"] = RULE_KIND
                _write_synced(tmp / METADATA, json.dumps(meta, indent=2).encode())
                for p in tmp.iterdir():
                    p.chmod(0o444)  # versions are immutable: guard against accidental edits
                _fsync_dir(tmp)
                load_policy(tmp)  # the copy itself must load, not just the source
                _pause("add")
                os.rename(tmp, self.root / VERSIONS / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(self.root / VERSIONS)
            log.info("added %s from %s", name, source or f"rule {model.policy}")
            return self._load(name)

    def promote(self, version: str, *, reason: str = "", force: bool = False) -> ModelVersion:
        """Make ``version`` current, after checking its files and its recorded evaluation.

        A version whose recorded comparison with greedy loses (:mod:`catur.verdict`: worse on
        average, or clearly worse) is refused with :class:`~catur.errors.LosesToGreedy`
        unless ``force``; a forced promotion says so in the history. A version with no
        recorded comparison is promoted (there is nothing to judge it by). Promoting the
        current version changes nothing (no history line)."""
        with self._locked():
            v = self.get(version)
            try:
                self.verify(v)
            except CaturError as exc:
                raise CaturError(f"refusing to promote {v.version}: {exc}") from exc
            comparison = self.gate(v)
            loses = comparison is not None and comparison.loses
            if loses and not force:
                raise LosesToGreedy(
                    f"refusing to promote {v.version}: its recorded evaluation loses to greedy "
                    f"({comparison.describe(v.version)}); promote a rule version instead "
                    f"('catur models add --rule greedy --promote') or pass --force"
                )
            previous = self._current_name()
            if previous == v.version:
                return v
            self._switch(v.version)
            extra = {"forced": True, "versus_greedy": comparison.to_dict()} if loses else {}
            self._append("promote", v.version, previous, reason, **extra)
            log.info("promoted %s (was %s)", v.version, previous)
            return v

    def rollback(self, *, reason: str = "") -> ModelVersion:
        """Make the version that was current before the current one current again."""
        with self._locked():
            stack = self.stack()
            if len(stack) < 2:
                raise CaturError(
                    f"nothing to roll back to in registry {str(self.root)!r}: "
                    + ("no version was ever promoted" if not stack else f"{stack[-1]} is the first version promoted")
                )
            target, previous = stack[-2], stack[-1]
            try:
                v = self.verify(target)
            except CaturError as exc:
                raise CaturError(
                    f"cannot roll back to {target}: {exc}; {previous} stays current "
                    "(promote another version explicitly)"
                ) from exc
            self._switch(v.version)
            self._append("rollback", v.version, previous, reason)
            log.info("rolled back to %s (was %s)", v.version, previous)
            return v

    def prunable(self, keep: int) -> list[str]:
        """The versions :meth:`prune` would remove: all but the current one, the newest
        ``keep``, and the ``keep`` that rollbacks would return to next."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise CaturError(f"keep must be a whole number >= 0, got {keep!r}")
        names = self._names()
        kept = set(self.stack()[-(keep + 1) :]) | set(names[len(names) - keep :] if keep else [])
        current = self._current_name()
        if current:
            kept.add(current)
        return [name for name in names if name not in kept]

    def prune(self, keep: int, *, reason: str = "") -> list[str]:
        """Remove the versions :meth:`prunable` names (see "Pruning" in the module docstring);
        returns their names. Removing nothing writes no history line."""
        with self._locked():
            doomed = self.prunable(keep)
            if not doomed:
                return []
            hidden: dict[str, Path] = {}
            try:
                for name in doomed:
                    path = self.root / f"{TMP_PREFIX}{PRUNE}-{name}-{os.getpid()}-{secrets.token_hex(3)}"
                    os.rename(self.root / VERSIONS / name, path)
                    hidden[name] = path
            except OSError as exc:
                raise CaturError(f"cannot remove {name} from {self.root / VERSIONS}: {exc.strerror}") from exc
            finally:
                # What went out of versions/ is gone for readers: record it even when a later
                # rename failed, so its number is never given out again.
                if hidden:
                    _fsync_dir(self.root / VERSIONS)
                    self._append(PRUNE, None, None, reason, pruned=list(hidden), keep=keep)
            _pause(PRUNE)
            for path in hidden.values():
                shutil.rmtree(path)
            log.info("pruned %s", ", ".join(doomed))
            return doomed
