"""Helpers of the deployment tests: read deploy/ the way each runtime would, and check the
``catur`` command lines found there with the real CLI parser.

Each reader turns one kind of file into what its runtime would run: the Kubernetes manifests
(argv from ``command``/``args``, the image's ENTRYPOINT, ``$(VAR)`` expanded from the
container's env and ConfigMaps), compose (``${VAR:-default}`` interpolated, ``entrypoint`` +
``command``), systemd units (``Environment=``, ``${VAR}`` as one word, ``$VAR`` split), the
Dockerfile (instructions per stage) and ``.dockerignore`` (the build context). A command that
names a script in ``deploy/bin`` is run, with the runtime's environment and a fake ``catur``
first on PATH that records its argv, so the command lines the scripts build are checked too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from catur.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = DEPLOY / "bin"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus"
SCRIPTS = {p.name for p in BIN.iterdir()}


# --- the real CLI parser, and what the scripts make of it ------------------------------------------


def check_cli(argv: list[str], where: str) -> None:
    """Parse ``catur ARGV`` with the real parser; fail naming ``where`` if it is refused."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    if argv and argv[0] not in commands and not argv[0].startswith("-"):
        pytest.skip(f"{where}: 'catur {argv[0]}' is not a command of this build")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `catur {shlex.join(argv)}` is refused by the CLI (exit {exc.code}): {err.getvalue().strip()}")


def write_fake_catur(d: Path) -> Path:
    """Write into ``d`` a ``catur`` that appends its argv (JSON) to $FAKE_CATUR_LOG, makes the
    report directory a retrain would (``reports/retrain-<UTC time>-<pid>``), and exits with
    $FAKE_CATUR_RC (``models show``: $FAKE_SHOW_RC)."""
    (d / "catur").write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "args = sys.argv[1:]\n"
        "with open(os.environ['FAKE_CATUR_LOG'], 'a') as f:\n"
        "    f.write(json.dumps(args) + '\\n')\n"
        "if args[:1] == ['retrain'] and 'CATUR_REGISTRY' in os.environ:\n"
        "    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())\n"
        "    os.makedirs(os.path.join(os.environ['CATUR_REGISTRY'], 'reports', f'retrain-{stamp}-{os.getpid()}'))\n"
        "if args[:2] == ['models', 'show']:\n"
        "    sys.exit(int(os.environ.get('FAKE_SHOW_RC', '0')))\n"
        "sys.exit(int(os.environ.get('FAKE_CATUR_RC', '0')))\n"
    )
    (d / "catur").chmod(0o755)
    return d


def run_script(name: str, env: dict, fake_bin: Path, tmp_path: Path, **extra) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run deploy/bin/NAME with ``env`` and the fake catur first on PATH; return what it called."""
    log = tmp_path / f"calls-{time.monotonic_ns()}.jsonl"
    full = {"PATH": f"{fake_bin}:{BIN}:/usr/bin:/bin", "FAKE_CATUR_LOG": str(log), **env, **extra}
    proc = subprocess.run([str(BIN / name)], env=full, capture_output=True, text=True, timeout=30)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def catur_calls(command: list[str], env: dict, where: str, fake_bin: Path, tmp_path: Path) -> list[list[str]]:
    """The ``catur`` argv lists that running ``command`` would make: itself if it is catur,
    else what the deploy/bin script it names calls (the script is run with the fake)."""
    program = Path(command[0]).name
    if program == "catur":
        return [command[1:]]
    assert program in SCRIPTS, f"{where}: runs {command[0]!r}, neither catur nor a script in deploy/bin"
    proc, calls = run_script(program, env, fake_bin, tmp_path)
    assert proc.returncode == 0, f"{where}: {program} failed with the deployment's settings: {proc.stderr}"
    assert calls, f"{where}: {program} called no catur command"
    return calls


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` (or ``--name=VALUE``) in ``argv``, the last one winning."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def the_call(calls: list[list[str]], command: str) -> list[str]:
    found = [c for c in calls if c[:1] == [command]]
    assert len(found) == 1, f"expected one 'catur {command}' among {calls}"
    return found[0]


def real_env(**env) -> dict:
    return {"PATH": f"{Path(sys.executable).parent}:{BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}


# --- Kubernetes ------------------------------------------------------------------------------------

API_VERSIONS = {
    "ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1",
    "Deployment": "apps/v1", "CronJob": "batch/v1", "PodDisruptionBudget": "policy/v1",
}


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_k8s() -> dict[tuple[str, str], dict]:
    """The manifests kustomization.yaml lists, by (kind, name), checked for the basics."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "kustomization.yaml must list every manifest (and only those)"
    objects = {}
    for name in listed:
        for doc in load_all(K8S / name):
            kind, meta = doc.get("kind"), doc.get("metadata") or {}
            assert kind in API_VERSIONS, f"{name}: unexpected kind {kind!r}"
            assert doc.get("apiVersion") == API_VERSIONS[kind], f"{name}: {kind} needs apiVersion {API_VERSIONS[kind]}"
            assert meta.get("name"), f"{name}: a {kind} without metadata.name"
            assert "namespace" not in meta, f"{name}: {kind} {meta['name']} sets a namespace; the manifests are namespace-agnostic"
            assert (kind, meta["name"]) not in objects, f"{name}: {kind} {meta['name']} defined twice"
            objects[(kind, meta["name"])] = doc
    return objects


def pod_specs(k8s) -> dict[str, dict]:
    specs = {}
    for (kind, name), doc in k8s.items():
        if kind == "Deployment":
            specs[f"Deployment/{name}"] = doc["spec"]["template"]
        elif kind == "CronJob":
            specs[f"CronJob/{name}"] = doc["spec"]["jobTemplate"]["spec"]["template"]
    return specs


def k8s_env(k8s, container: dict) -> dict[str, str]:
    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(k8s[("ConfigMap", name)]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def image_entrypoint() -> list[str]:
    return json.loads(dockerfile_instructions()[-1]["ENTRYPOINT"])


def k8s_command(container: dict, env: dict) -> list[str]:
    """The container's argv: ``command`` (else the image's ENTRYPOINT) + ``args``, with
    Kubernetes' $(VAR) references expanded."""
    argv = list(container.get("command") or image_entrypoint()) + [str(a) for a in container.get("args", [])]
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]


CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
CRON_NAMES = [{}, {}, {}, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
              {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}]
CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def valid_cron(expr: str) -> bool:
    """Standard 5-field cron (what Kubernetes CronJobs accept): lists, ranges, steps, names."""
    if expr.strip() in CRON_MACROS:
        return True
    fields = expr.split()
    if len(fields) != 5:
        return False

    def value(text: str, i: int) -> int | None:
        text = text.lower()
        if text in CRON_NAMES[i]:
            return CRON_NAMES[i][text]
        return int(text) if text.isdigit() else None

    for i, field in enumerate(fields):
        low, high = CRON_FIELDS[i]
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                return False
            if base == "*":
                continue
            first, _, last = base.partition("-")
            a, b = value(first, i), value(last, i) if last else value(first, i)
            if a is None or b is None or not low <= a <= b <= high:
                return False
    return True


# --- compose ---------------------------------------------------------------------------------------


def interpolate(value: str, env: dict | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}, from ``env`` (default: unset)."""
    env = env or {}

    def sub(m):
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", sub, value)


def load_compose() -> dict:
    """compose.yaml with its ${VAR:-default} settings at their defaults."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return json.loads(interpolate(json.dumps(doc)))


def compose_command(service: dict) -> list[str]:
    entrypoint = service.get("entrypoint") or image_entrypoint()
    return [str(a) for a in list(entrypoint) + list(service.get("command") or [])]


# --- systemd ---------------------------------------------------------------------------------------

SERVICES = sorted(SYSTEMD.glob("*.service"))


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {key} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_env(unit: dict) -> dict[str, str]:
    env = {}
    for value in unit["Service"].get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env


def unit_command(line: str, env: dict) -> list[str]:
    """An Exec line as argv: prefixes dropped, ${VAR} one word, $VAR split on spaces."""
    words = []
    for word in shlex.split(line.lstrip("-@:+!")):
        if re.fullmatch(r"\$\w+", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


# --- Prometheus, Dockerfile, build context ---------------------------------------------------------


def exported_metrics() -> tuple[set[str], list]:
    """The series names the service (with collection on) exports, and the samples that exist
    before any request (label sets created up front, e.g. every drop reason)."""
    from catur.service.collector import CollectorMetrics
    from catur.service.telemetry import ServiceMetrics

    metrics = ServiceMetrics()
    CollectorMetrics(metrics.registry)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""], "summary": ["_count", "_sum", ""]}
    names, samples = set(), []
    for family in metrics.registry.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        samples += family.samples
    return names, samples


METRIC_IN_EXPR = re.compile(r"\b((?:catur|grpc_server)_\w+)(?:\{([^}]*)\})?")


def promql_problems(expr: str, names: set[str], samples: list, known_values: dict[str, set[str]]) -> tuple[set[str], list[str]]:
    """The Catur metrics a PromQL expression names, and what is wrong with them: a metric not in
    ``names``, a label matcher on a label the metric does not have or on a value it never takes
    (``known_values`` for labels whose values are known in advance, else the values seen in
    ``samples``; ``$variables`` of a dashboard are not checked)."""
    used, problems = set(), []
    for metric, matchers in METRIC_IN_EXPR.findall(expr):
        used.add(metric)
        if metric not in names:
            problems.append(f"{metric} is not exported")
            continue
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers or ""):
            if "$" in value:
                continue
            allowed = known_values.get(label) or {s.labels[label] for s in samples if s.name == metric and label in s.labels}
            if not allowed:
                problems.append(f"{metric} has no label {label!r}")
            for v in value.split("|") if "~" in op else [value]:
                if allowed and v not in allowed:
                    problems.append(f"{metric}{{{label}{op}\"{value}\"}}: {v!r} is not one of {sorted(allowed)}")
    return used, problems


def retrain_metrics() -> tuple[set[str], list]:
    """The series names and samples ``catur retrain --metrics-textfile/--pushgateway`` writes
    (:mod:`catur.training.retrain_metrics`), from a kept outcome with one collapsed cluster."""
    from types import SimpleNamespace

    import numpy as np

    from catur.training.collapse import GroupVerdict
    from catur.training.retrain_metrics import outcome_registry
    from catur.verdict import compare

    vms = np.full(4, 25)
    versus = {"core-best-fit": compare(vms, vms * 0.05, vms * 0.03, "core-best-fit")}
    verdict = GroupVerdict("general", 100, 0.05, 0, {"core-best-fit": 0.03}, None, versus)
    outcome = SimpleNamespace(status="kept", exit_code=3, before=SimpleNamespace(clusters={"general": verdict}), after=None, wall_s=1.0)
    registry = outcome_registry(outcome)
    names, samples = set(), []
    for family in registry.collect():
        names.add(family.name)
        samples += family.samples
    return names, samples


def dockerfile_instructions() -> list[dict[str, str]]:
    """Per stage, {INSTRUCTION: the text of its last occurrence}; RUN lines are joined in order."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append({})
        if instruction in ("RUN", "COPY"):
            stages[-1][instruction] = stages[-1].get(instruction, "") + "\n" + rest
        else:
            stages[-1][instruction] = rest.strip()
    return stages


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's ``patterns`` exclude ``path`` (relative, '/'-separated). Like
    Docker: a pattern also excludes everything below what it matches; the last match wins."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {pattern}
        if pattern.startswith("**/"):
            candidates.add(pattern[3:])
        hit = any(fnmatch("/".join(parts[i:j]), p) for p in candidates for i in range(0, len(parts) if p != pattern else 1) for j in range(i + 1, len(parts) + 1))
        if hit:
            excluded = not negate
    return excluded


def build_context() -> list[str]:
    """The files `docker build .` sends (directories that are excluded are not entered;
    .dockerignore has no `!` exceptions that would reach into them)."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    files = []
    for root, dirs, names in os.walk(REPO):
        rel = os.path.relpath(root, REPO)
        path = (lambda name: name) if rel == "." else (lambda name: f"{rel}/{name}")
        dirs[:] = [d for d in dirs if not dockerignored(path(d), patterns)]
        files += [path(n) for n in names if not dockerignored(path(n), patterns)]
    return files
