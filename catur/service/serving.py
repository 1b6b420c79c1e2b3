"""The serving model: loading, hot reload, and the watch for a newly promoted model.

The service decides with one immutable :class:`~catur.decision.Decider` at a time, held by a
:class:`ModelHolder`. A request reads :attr:`ModelHolder.current` once and uses that object
to the end, so swapping in a new model (one reference assignment, atomic in Python) never
disturbs a request in flight: it finishes with the model it started with.

What ``--model`` may name (:func:`resolve_model_dir`):

* ``none`` (or ``None``): no model, the ``greedy`` policy;
* ``resident-greedy``: no model, the ``resident-greedy`` rule (:mod:`catur.resident`) for
  requests that carry per-node resident counts, ``greedy`` for those that do not;
* ``default``: the model shipped inside the package (``catur/models/default``);
* a **model directory** (``manifest.json`` + ``weights.npz``, see :mod:`catur.policy_model`), or a
  rule version's directory (a manifest saying ``kind: rule, policy: greedy``: served as greedy,
  under that version's name);
* a **registry directory** with a ``current`` entry: either a symbolic link to a model
  directory, or a text file holding a model directory's path (relative to the registry).
  Promoting a model = repointing ``current`` atomically (``ln -sfn`` to a temp name + ``mv``,
  or write-then-rename of the text file).

A reload (``SIGHUP``, or :meth:`ModelHolder.watch` noticing that the resolved directory,
its ``manifest.json``/``weights.npz`` or the ``current`` pointer changed) loads the model
afresh, builds a Decider and tries one decision with it. Any failure — unreadable or corrupt
files, a manifest for another observation layout, non-finite scores — leaves the previous
model serving, is logged with the reason, and counts in ``catur_model_reload_failures_total``.
The watch does not retry a failed fingerprint; it tries again when the files change again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catur.decision import Decider
from catur.errors import CaturError
from catur.policy_model import DEFAULT_MODEL, SHIPPED_MODELS, default_model_dir, load_policy, model_path
from catur.registry import CURRENT as REGISTRY_POINTER, read_pointer
from catur.request import VMRequest
from catur.resident import DEFAULT_WEIGHT, RESIDENT_GREEDY
from catur.shield import ShieldConfig
from catur.topology import PRESETS

log = logging.getLogger("catur.service")

NO_MODEL = ("none", "greedy", "")
AUTO_MODEL = "auto"


def resolve_model_dir(spec: str) -> Path:
    """The model directory that ``spec`` (a shipped model's name, a model dir or a registry dir) names now."""
    if spec in SHIPPED_MODELS:
        return model_path(spec)
    path = Path(spec)
    if (path / "manifest.json").exists():
        return path
    target = read_pointer(path)  # the registry's own rule (catur.registry.read_pointer)
    if target is None:
        return path  # loading it reports what is missing
    return (path / target).resolve()


def _stat(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def fingerprint(spec: str) -> tuple:
    """What the watch compares: the resolved directory and its files' (mtime, size, inode)."""
    try:
        directory = resolve_model_dir(spec)
    except CaturError as exc:
        return ("unresolvable", str(exc))
    pointer = Path(spec) / REGISTRY_POINTER if spec not in SHIPPED_MODELS else None
    return (
        str(directory),
        _stat(directory / "manifest.json"),
        _stat(directory / "weights.npz"),
        _stat(pointer) if pointer is not None else None,
    )


@dataclass(frozen=True, eq=False)
class ServingModel:
    """The decider in service and where it came from. Never mutated: replaced whole."""

    decider: Decider
    source: str  # the resolved model directory, "" for greedy
    loaded_at: float  # Unix time

    @property
    def version(self) -> str:
        return self.decider.model_version

    @property
    def policy(self) -> str:
        return self.decider.policy_name


def build_decider(
    directory: Path | None, shield: ShieldConfig | None, use_gate: bool, resident_weight: float = 0.0
) -> Decider:
    """Load ``directory`` (``None`` = greedy, or resident-greedy with a ``resident_weight``)
    and check that the decider works on a sample."""
    model = load_policy(directory) if directory is not None else None  # a trained model or a rule version
    decider = Decider(model, shield, use_gate, resident_weight)
    probe = PRESETS["intel-2s"]
    zeros = np.zeros(probe.num_nodes, dtype=np.int64)
    decision = decider.decide(probe, zeros, zeros, VMRequest(2, 4096))
    if not np.isfinite(decision.scores).all():
        raise CaturError(f"{directory}: the model gives non-finite scores {decision.scores} (corrupt weights?)")
    return decider


class ModelHolder:
    """Holds the serving :class:`ServingModel`; reloads it without failing requests.

    Args:
        model: ``"none"``/``None`` (greedy), ``"auto"`` (the shipped model when the package
            has one, else greedy), ``"default"``, a model directory or a registry directory.
        shield: The shield configuration (``None`` or depth 0: off); fixed for the process.
        use_gate: Use the model's uncertainty gate when its manifest has one.
        metrics: A :class:`~catur.service.telemetry.ServiceMetrics` to report into, or ``None``.

    The first load raises :class:`CaturError` (a service must not start on a broken model);
    later reloads never raise.
    """

    def __init__(self, model: str | None, shield: ShieldConfig | None = None, use_gate: bool = True, metrics=None) -> None:
        if model == AUTO_MODEL:
            model = DEFAULT_MODEL if (default_model_dir() / "manifest.json").exists() else None
            log.info("--model auto: %s", "the shipped model" if model else "no shipped model, serving greedy")
        self.resident_weight = DEFAULT_WEIGHT if model == RESIDENT_GREEDY else 0.0
        self.spec = None if model is None or model in (*NO_MODEL, RESIDENT_GREEDY) else str(model)
        self.shield = shield if shield is not None and shield.enabled else None
        self.use_gate = use_gate
        self.metrics = metrics
        self._lock = threading.Lock()  # one reload at a time
        self._fingerprint = fingerprint(self.spec) if self.spec else None
        self._current = self._load()
        self.last_error = ""
        self._report()

    @property
    def current(self) -> ServingModel:
        """The serving model; read it once per request."""
        return self._current

    def _load(self) -> ServingModel:
        directory = resolve_model_dir(self.spec) if self.spec else None
        decider = build_decider(directory, self.shield, self.use_gate, self.resident_weight)
        return ServingModel(decider, str(directory) if directory is not None else "", time.time())

    def _report(self) -> None:
        if self.metrics is not None:
            current = self._current
            self.metrics.set_model(current.version, current.policy, current.loaded_at)

    def reload(self, why: str = "request") -> bool:
        """Load the model again from its source; on any failure keep the current one.

        Returns True when a new model is serving. Never raises.
        """
        if self.spec is None:
            log.info("reload (%s): no model configured, greedy keeps serving", why)
            return False
        with self._lock:
            self._fingerprint = fingerprint(self.spec)
            previous = self._current
            try:
                loaded = self._load()
            except Exception as exc:  # a corrupt model must never take the service down
                self.last_error = str(exc)
                log.error("reload (%s) refused, model %s keeps serving: %s", why, previous.version, exc)
                if self.metrics is not None:
                    self.metrics.reload_failures.inc()
                return False
            self._current = loaded
            self.last_error = ""
        log.info("reload (%s): now serving model %s from %s (was %s)", why, loaded.version, loaded.source, previous.version)
        if self.metrics is not None:
            self.metrics.reloads.inc()
        self._report()
        return True

    def changed(self) -> bool:
        """Whether the model's files or registry pointer changed since the last (re)load attempt."""
        return self.spec is not None and fingerprint(self.spec) != self._fingerprint

    def watch(self, interval_s: float, stop: threading.Event) -> threading.Thread | None:
        """Poll every ``interval_s`` seconds and reload on change, until ``stop`` is set."""
        if self.spec is None or interval_s <= 0:
            return None

        def run() -> None:
            while not stop.wait(interval_s):
                try:
                    if self.changed():
                        self.reload("model files changed")
                except Exception:  # pragma: no cover - keep watching whatever happens
                    log.exception("model watch")

        thread = threading.Thread(target=run, name="catur-model-watch", daemon=True)
        thread.start()
        return thread
