"""The scripts in ``deploy/bin`` and ``catur health``, run for real.

* ``catur-bootstrap`` with the real CLI: seeds an empty registry once, leaves an intact one
  alone, refuses a damaged one without papering over it;
* ``catur-retrain-job`` (with a fake ``catur``): exit codes passed through, the command line
  it builds, report pruning (hypothesis: exactly the newest are kept), nothing to do before
  anything is collected;
* ``catur-retrain-loop``: goes on after failed runs, stops on SIGTERM;
* ``catur health`` against a live server, a draining one and no server;
* the loop with the deployed settings: the compose service's ``catur serve`` arguments serve
  a bootstrapped registry and collect; the retrain job, with each deployment's settings,
  judges the model on what was collected (check only).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _deploy_support import (
    BIN, SYSTEMD, check_cli, compose_command, load_compose, load_k8s, read_unit, real_env, run_script, unit_env, write_fake_catur,
)
from _service_support import reap
from catur.cli import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    return write_fake_catur(tmp_path_factory.mktemp("fakebin"))


# --- the scripts, run for real ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(BIN.iterdir()), ids=lambda p: p.name)
def test_scripts_are_executable_posix_shell(path):
    assert os.access(path, os.X_OK), f"{path} must be executable (the image copies it with 0755, bare metal with install -m 0755)"
    assert path.read_text().startswith("#!/bin/sh\n")
    proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_bootstrap_seeds_an_empty_registry_once_and_refuses_a_damaged_one(tmp_path):
    registry = tmp_path / "registry"
    run = lambda: subprocess.run([str(BIN / "catur-bootstrap")], env=real_env(CATUR_REGISTRY=str(registry)), capture_output=True, text=True, timeout=60)  # noqa: E731
    first = run()
    assert first.returncode == 0, first.stderr
    assert "seeding it with 'default'" in first.stdout
    second = run()
    assert second.returncode == 0 and "nothing to do" in second.stdout
    from catur.registry import Registry

    reg = Registry(registry)
    assert [v.version for v in reg.versions()] == ["v0001"] and reg.current().version == "v0001"
    weights = reg.current().path / "weights.npz"
    weights.chmod(0o644)
    with weights.open("ab") as f:
        f.write(b"rot")
    damaged = run()
    assert damaged.returncode == 1 and "damaged" in damaged.stderr and "weights.npz" in damaged.stderr
    assert [v.version for v in Registry(registry).versions()] == ["v0001"], "a damaged registry is never papered over"


@pytest.mark.parametrize("rc", [0, 3, 75, 2, 1])
def test_the_retrain_job_passes_exit_codes_through_and_prunes_reports(rc, fake_bin, tmp_path):
    registry, traces = tmp_path / "registry", tmp_path / "traces"
    traces.mkdir()
    (traces / "catur-trace-20260101T000000.000000Z-p1-0.parquet").write_bytes(b"")
    for i in range(4):  # four old reports; the run adds a fifth; three are kept
        (registry / "reports" / f"retrain-2000010{i}T000000Z-1").mkdir(parents=True)
    env = {"CATUR_REGISTRY": str(registry), "CATUR_TRACE": str(traces), "CATUR_REPORTS_KEEP": "3",
           "CATUR_CLUSTER": "my cluster.yaml", "CATUR_RETRAIN_ARGS": "--budget-minutes 5 --jobs 1"}
    proc, calls = run_script("catur-retrain-job", env, fake_bin, tmp_path, FAKE_CATUR_RC=str(rc))
    assert proc.returncode == rc, proc.stderr
    assert calls == [["retrain", "--registry", str(registry), "--trace", str(traces), "--cluster", "my cluster.yaml", "--budget-minutes", "5", "--jobs", "1"]]
    check_cli(calls[0], "catur-retrain-job")
    assert f"exit {rc}:" in proc.stdout
    kept = sorted(p.name for p in (registry / "reports").iterdir())
    assert kept[:2] == ["retrain-20000102T000000Z-1", "retrain-20000103T000000Z-1"] and len(kept) == 3, kept


@settings(max_examples=25, deadline=None)
@given(keep=st.integers(0, 6), days=st.lists(st.integers(1, 28), unique=True, max_size=8), others=st.integers(0, 2))
def test_report_pruning_keeps_exactly_the_newest(keep, days, others, fake_bin, tmp_path_factory):
    """Whatever was there: after a run, the newest `keep` reports (the run's own included)
    remain, older ones are gone, and nothing that is not a retrain report is touched."""
    tmp_path = tmp_path_factory.mktemp("prune")
    registry, traces = tmp_path / "registry", tmp_path / "traces"
    traces.mkdir()
    (traces / "catur-trace-20260101T000000.000000Z-p1-0.parquet").write_bytes(b"")
    old = [f"retrain-200001{d:02d}T000000Z-{d}" for d in days]
    for name in old + [f"notes-{i}" for i in range(others)]:
        (registry / "reports" / name).mkdir(parents=True)
    env = {"CATUR_REGISTRY": str(registry), "CATUR_TRACE": str(traces), "CATUR_REPORTS_KEEP": str(keep)}
    proc, _ = run_script("catur-retrain-job", env, fake_bin, tmp_path)
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in (registry / "reports").iterdir())
    reports = [n for n in left if n.startswith("retrain-")]
    everything = sorted(old) + [n for n in reports if n not in old]  # the run's own report is the newest
    assert reports == (everything[-keep:] if keep else [])
    assert len([n for n in left if n.startswith("notes-")]) == others


def test_the_retrain_job_passes_the_outcome_metrics_destinations(fake_bin, tmp_path):
    registry, traces = tmp_path / "registry", tmp_path / "traces"
    traces.mkdir()
    (traces / "catur-trace-20260101T000000.000000Z-p1-0.parquet").write_bytes(b"")
    env = {"CATUR_REGISTRY": str(registry), "CATUR_TRACE": str(traces), "CATUR_METRICS_TEXTFILE": "/var/lib/node exporter/catur.prom",
           "CATUR_PUSHGATEWAY": "http://pushgateway:9091", "CATUR_RETRAIN_ARGS": "--jobs 1"}
    proc, calls = run_script("catur-retrain-job", env, fake_bin, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls == [["retrain", "--registry", str(registry), "--trace", str(traces), "--metrics-textfile", "/var/lib/node exporter/catur.prom",
                      "--pushgateway", "http://pushgateway:9091", "--jobs", "1"]]
    check_cli(calls[0], "catur-retrain-job")
    env.update(CATUR_METRICS_TEXTFILE="", CATUR_PUSHGATEWAY="")  # empty (the ConfigMap's default): not passed
    _, calls = run_script("catur-retrain-job", env, fake_bin, tmp_path)
    assert "--pushgateway" not in calls[-1] and "--metrics-textfile" not in calls[-1]


def test_the_retrain_job_does_nothing_before_anything_is_collected(fake_bin, tmp_path):
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "catur-trace-20260101T000000.000000Z-p1-0.parquet.tmp").write_bytes(b"")  # still being written
    proc, calls = run_script("catur-retrain-job", {"CATUR_REGISTRY": str(tmp_path / "r"), "CATUR_TRACE": str(traces)}, fake_bin, tmp_path)
    assert proc.returncode == 0 and calls == [] and "nothing collected" in proc.stdout
    proc, _ = run_script("catur-retrain-job", {"CATUR_REGISTRY": str(tmp_path / "r"), "CATUR_REPORTS_KEEP": "x"}, fake_bin, tmp_path)
    assert proc.returncode == 2 and "CATUR_REPORTS_KEEP" in proc.stderr


def test_the_retrain_loop_keeps_going_after_failures_and_stops_on_sigterm(fake_bin, tmp_path):
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "catur-trace-20260101T000000.000000Z-p1-0.parquet").write_bytes(b"")
    log = tmp_path / "calls.jsonl"
    env = {"PATH": f"{fake_bin}:{BIN}:/usr/bin:/bin", "FAKE_CATUR_LOG": str(log), "FAKE_CATUR_RC": "3",
           "CATUR_REGISTRY": str(tmp_path / "r"), "CATUR_TRACE": str(traces),
           "CATUR_RETRAIN_FIRST_DELAY": "0", "CATUR_RETRAIN_INTERVAL": "0.2"}
    proc = subprocess.Popen([str(BIN / "catur-retrain-loop")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while (not log.exists() or len(log.read_text().splitlines()) < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(log.read_text().splitlines()) >= 3, "the loop must go on after a failed run"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "catur-retrain-loop: stopped" in proc.stdout.read()
    finally:
        reap(proc)


# --- catur health ------------------------------------------------------------------------------------


def test_catur_health_answers_for_a_live_server_and_fails_otherwise(capsys):
    from grpc_health.v1 import health_pb2

    from catur.service.server import Service, create_server
    from catur.service.servicer import SERVICE_NAME

    service = Service(model=None)
    server, port = create_server("127.0.0.1:0", service, max_workers=2)
    target = f"127.0.0.1:{port}"
    try:
        assert main(["health", "--target", target, "--timeout", "10"]) == 0
        assert capsys.readouterr().out.strip() == f"{target}: SERVING"
        assert main(["health", "--target", target, "--timeout", "10", "--service", SERVICE_NAME]) == 0
        assert main(["health", "--target", target, "--timeout", "10", "--service", "no.such.Service"]) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
        service.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert main(["health", "--target", target, "--timeout", "10"]) == 1
        assert "NOT_SERVING" in capsys.readouterr().out
    finally:
        service.shutdown(server, grace=0.5)
    assert main(["health", "--target", target, "--timeout", "1"]) == 1  # nothing listens there now
    assert capsys.readouterr().err.startswith(f"catur health: {target}: ")


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> tuple[Path, Path]:
    """serve -> collect for real with the compose service's own `catur serve` arguments
    (addresses and paths moved into a temporary directory): a bootstrapped registry and the
    traces the service collected while answering placements and departures."""
    from catur.request import VMRequest
    from catur.service.client import PlacementClient
    from catur.topology import PRESETS

    tmp_path = tmp_path_factory.mktemp("loop")
    registry, traces = tmp_path / "registry", tmp_path / "traces"
    boot = subprocess.run([str(BIN / "catur-bootstrap")], env=real_env(CATUR_REGISTRY=str(registry)), capture_output=True, text=True, timeout=60)
    assert boot.returncode == 0, boot.stderr
    argv = compose_command(load_compose()["services"]["catur"])[1:]
    moved = {"--listen": "127.0.0.1:0", "--metrics-host": "127.0.0.1", "--metrics-port": "0", "--model": str(registry), "--collect-dir": str(traces)}
    argv = [moved.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    proc = subprocess.Popen([sys.executable, "-m", "catur.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        assert "v0001" in line, f"the service must serve the registry's current version: {line}"
        target = "127.0.0.1:" + line.split("listening on 127.0.0.1:")[1].split()[0]
        health = subprocess.run([sys.executable, "-m", "catur.cli", "health", "--target", target, "--timeout", "10"], capture_output=True, text=True, timeout=30)
        assert health.returncode == 0 and "SERVING" in health.stdout, health.stderr
        host = PRESETS["intel-2s"]
        with PlacementClient(target, timeout=10) as client:
            for i in range(24):
                used = [(i * 7) % 30, (i * 5) % 30]
                client.place(host, used, [u * 2048 for u in used], VMRequest(2 + i % 4, 4096), host_id=f"h{i % 3}", vm_id=f"vm{i}", cluster="c1")
                if i % 2:
                    client.depart(f"vm{i - 1}", host_id=f"h{(i - 1) % 3}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        reap(proc)
    assert list(traces.glob("catur-trace-*.parquet")), "the service collected nothing"
    return registry, traces


def job_settings(deployment: str) -> dict[str, str]:
    """The environment each deployment gives catur-retrain-job."""
    if deployment == "kubernetes":
        return dict(load_k8s()[("ConfigMap", "catur-config")]["data"])
    if deployment == "compose":
        return {k: str(v) for k, v in load_compose()["services"]["retrain"]["environment"].items()}
    return unit_env(read_unit(SYSTEMD / "catur-retrain.service"))


@pytest.mark.slow
@pytest.mark.parametrize("deployment", ["kubernetes", "compose", "systemd"])
def test_the_retrain_job_judges_what_was_collected_with_each_deployments_settings(deployment, collected, tmp_path):
    """catur-retrain-job with the deployment's settings (paths moved; check only: --max-iterations
    0 --dry-run appended, so the other options are still the deployment's) runs the real
    `catur retrain` on the collected trace and writes its report; nothing is promoted."""
    from catur.registry import Registry

    registry = tmp_path / "registry"
    shutil.copytree(collected[0], registry, symlinks=True)
    env = job_settings(deployment)
    env.update(CATUR_REGISTRY=str(registry), CATUR_TRACE=str(collected[1]))
    env["CATUR_RETRAIN_ARGS"] = env.get("CATUR_RETRAIN_ARGS", "") + " --max-iterations 0 --dry-run --jobs 1 --quiet"
    job = subprocess.run([str(BIN / "catur-retrain-job")], env=real_env(**env), capture_output=True, text=True, timeout=120)
    assert job.returncode in (0, 3), job.stdout + job.stderr  # judged: healthy, or a collapse it was told not to fix
    (report,) = registry.glob("reports/retrain-*/report.json")
    assert report.stat().st_size > 0
    assert Registry(registry).current().version == "v0001", "a dry run promotes nothing"
