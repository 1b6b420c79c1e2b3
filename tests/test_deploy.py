"""The deployment files in ``deploy/``, checked against the code they deploy.

Deployment files rot quietly: a flag renamed in the CLI, a probe on the wrong port, an alert
on a metric that no longer exists. So every ``catur`` command line that a deployment runs —
written out in YAML, in a systemd unit, in the Dockerfile, or built by one of the scripts in
``deploy/bin`` (run with a fake ``catur`` that records its arguments) — is parsed by the real
parser (:func:`catur.cli.build_parser`); see ``_deploy_support.py``. On top of that:

* Kubernetes: structure (apiVersion, kind, name, no namespace), images, non-root security
  contexts, volumes and claims that exist, gRPC probes on the port the Service exposes, a
  valid cron schedule with ``concurrencyPolicy: Forbid``; ``kubectl kustomize`` when present;
* compose: services, volumes, bind mounts, health check; ``docker compose config`` when present;
* Prometheus: ``promtool check config``/``check rules``/``test rules`` when installed, and
  every metric (and label value) an alert names is one the service really exports;
* systemd: ``systemd-analyze verify`` and ``security`` when present (binaries pointed at
  fakes in a temporary copy), hardening settings;
* Dockerfile: pinned base images, torch from the CPU index before the project, a non-root
  user; the build context that ``.dockerignore`` leaves builds a wheel holding the whole
  package and the shipped model; ``hadolint`` when present;
* the loop is closed: in each deployment the service serves the registry the job retrains
  into and collects where the job reads, on the same volumes.

The scripts themselves, and ``catur health``, are run for real in ``test_deploy_scripts.py``.
Tools that are absent are skipped with the reason; nothing here needs the network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from _deploy_support import (
    DEPLOY, K8S, PROMETHEUS, REPO, SCRIPTS, SERVICES, SYSTEMD, build_context, catur_calls,
    check_cli, compose_command, dockerfile_instructions, exported_metrics, k8s_command, k8s_env, load_all,
    load_compose, load_k8s, option, pod_specs, promql_problems, read_unit, retrain_metrics, the_call, unit_command, unit_env, valid_cron,
    write_fake_catur,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    return write_fake_catur(tmp_path_factory.mktemp("fakebin"))


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    return load_k8s()


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


# --- every YAML file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    assert load_all(path), f"{path} holds no document"


# --- Kubernetes --------------------------------------------------------------------------------------


def test_pods_are_non_root_with_images_resources_and_existing_volumes(k8s):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    tags = {entry["name"]: entry.get("newTag") for entry in kustomization.get("images", [])}
    for where, template in pod_specs(k8s).items():
        spec = template["spec"]
        sec = spec.get("securityContext", {})
        assert sec.get("runAsNonRoot") is True and sec.get("runAsUser", 0) != 0, f"{where}: must run as a non-root user"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in k8s, f"{where}: volume {volume['name']} claims {claim!r}, which is not defined"
        for c in spec.get("initContainers", []) + spec["containers"]:
            who = f"{where} container {c['name']}"
            image = c.get("image", "")
            tag = image.rpartition(":")[2] if ":" in image else tags.get(image)  # kustomize's images: sets it
            assert tag and tag != "latest", f"{who}: image {image!r} needs a version tag (here or in kustomization images:)"
            assert c.get("resources", {}).get("requests"), f"{who}: needs resource requests"
            csec = c.get("securityContext", {})
            assert csec.get("allowPrivilegeEscalation") is False and csec.get("capabilities", {}).get("drop") == ["ALL"], who
            assert csec.get("readOnlyRootFilesystem") is True, f"{who}: the root filesystem should be read-only"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{who}: mounts volume {mount['name']!r}, which the pod does not define"
            for source in c.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in k8s, f"{who}: unknown ConfigMap"


def test_k8s_command_lines_are_accepted_by_the_cli(k8s, fake_bin, tmp_path):
    seen = set()
    for where, template in pod_specs(k8s).items():
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            env = k8s_env(k8s, c)
            for argv in catur_calls(k8s_command(c, env), env, f"{where}/{c['name']}", fake_bin, tmp_path):
                check_cli(argv, f"{where}/{c['name']}")
                seen.add(argv[0])
    assert {"serve", "models", "retrain"} <= seen


def test_probes_use_the_grpc_port_the_service_exposes(k8s):
    deployment = k8s[("Deployment", "catur")]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = k8s_env(k8s, container)
    argv = k8s_command(container, env)[1:]
    assert int(option(argv, "--listen").rpartition(":")[2]) == ports["grpc"]
    assert int(option(argv, "--metrics-port")) == ports["metrics"]
    assert option(argv, "--metrics-host") == "0.0.0.0", "the metrics port must be reachable from outside the pod"
    for probe in ("readinessProbe", "livenessProbe"):
        port = container[probe]["grpc"]["port"]
        assert ports.get(port, port) == ports["grpc"], f"{probe} must probe the gRPC port"
    annotations = template["metadata"].get("annotations", {})
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    service = k8s[("Service", "catur")]
    labels = template["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service must select the Deployment's pods"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    exposed = {p["name"]: p for p in service["spec"]["ports"]}
    target = exposed["grpc"]["targetPort"]
    assert ports.get(target, target) == ports["grpc"]
    assert ports.get(exposed["metrics"]["targetPort"], exposed["metrics"]["targetPort"]) == ports["metrics"]
    # the drain and the grace must fit in the termination grace period
    assert float(option(argv, "--drain-seconds")) + float(option(argv, "--grace")) < template["spec"]["terminationGracePeriodSeconds"]


def test_two_replicas_survive_a_node_drain_and_spread_over_nodes(k8s):
    """A PodDisruptionBudget that selects the service's pods and lets a drain proceed one at a
    time; a preferred (never blocking) anti-affinity on the node name over the same pods."""
    deployment = k8s[("Deployment", "catur")]
    replicas = deployment["spec"]["replicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = [doc for (kind, _), doc in k8s.items() if kind == "PodDisruptionBudget"]
    spec = pdb["spec"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), "the PDB must select the Deployment's pods"
    assert "maxUnavailable" in spec or 1 <= spec["minAvailable"] < replicas, "minAvailable >= replicas would block every drain"
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
    other_pdbs = [doc for doc in k8s.values() if doc.get("kind") == "PodDisruptionBudget" and doc is not pdb]
    assert not other_pdbs
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti, "required would block the rolling update's surge pod"
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_every_stop_fits_its_runtime_grace(compose):
    """compose's stop_grace_period and systemd's TimeoutStopSec exceed --drain-seconds + --grace."""
    service = compose["services"]["catur"]
    argv = compose_command(service)
    period = service["stop_grace_period"]
    assert float(period.rstrip("s")) > float(option(argv, "--drain-seconds")) + float(option(argv, "--grace"))
    unit = read_unit(SYSTEMD / "catur-serve.service")
    argv = unit_command(unit["Service"]["ExecStart"][-1], unit_env(unit))
    assert float(unit["Service"]["TimeoutStopSec"][-1]) > float(option(argv, "--drain-seconds")) + float(option(argv, "--grace"))


@pytest.mark.parametrize("expr,ok", [
    ("17 3 * * *", True), ("*/15 0-6,22-23 * * mon-fri", True), ("@daily", True), ("0 0 1 jan,jul *", True),
    ("60 3 * * *", False), ("0 24 * * *", False), ("0 0 0 * *", False), ("*/0 * * * *", False),
    ("0 3 * *", False), ("5-1 * * * *", False), ("0 3 * * funday", False),
])
def test_the_cron_checker_rejects_what_it_should(expr, ok):
    assert valid_cron(expr) is ok


def test_the_retraining_cronjob(k8s):
    ((_, name), cron), = [(key, doc) for key, doc in k8s.items() if key[0] == "CronJob"]
    spec = cron["spec"]
    assert valid_cron(spec["schedule"]), f"CronJob {name}: invalid schedule {spec['schedule']!r}"
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and {2, 3, 75} == set(rule["onExitCodes"]["values"])
    containers = {c["name"] for c in job["template"]["spec"]["containers"]}
    assert rule["onExitCodes"]["containerName"] in containers


def test_kubectl_kustomize_renders_the_manifests(k8s):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered} == set(k8s)
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "catur"
    images = re.findall(r"^\s*image: (\S+)$", proc.stdout, re.M)
    assert images and all(re.fullmatch(r"\S+:[\w.-]+", i) and not i.endswith(":latest") for i in images), images


# --- compose -----------------------------------------------------------------------------------------


def test_compose_services_volumes_and_mounts(compose):
    services = compose["services"]
    assert {"catur", "retrain", "prometheus"} <= set(services)
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), f"compose {name}: pin the image tag"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), f"compose {name}: no Dockerfile"
        for dep in service.get("depends_on") or []:
            assert dep in services, f"compose {name}: depends on unknown service {dep!r}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"compose {name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"compose {name}: volume {source!r} is not declared"
    for name in ("catur", "retrain"):
        assert services[name].get("read_only") is True and "ALL" in services[name].get("cap_drop", []), name


def test_compose_command_lines_are_accepted_by_the_cli(compose, fake_bin, tmp_path):
    seen = set()
    for name, service in compose["services"].items():
        if name == "prometheus":
            continue
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        command = compose_command(service)
        if Path(command[0]).name == "catur-retrain-loop":
            command = ["catur-retrain-job"]  # the loop's body (its schedule is tested below)
        for argv in catur_calls(command, env, f"compose {name}", fake_bin, tmp_path):
            check_cli(argv, f"compose {name}")
            seen.add(argv[0])
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert test[0] == "CMD" and Path(test[1]).name == "catur", f"compose {name}: health check runs {test}"
            check_cli(test[2:], f"compose {name} healthcheck")
            assert test[2] == "health"
    assert {"serve", "models", "retrain"} <= seen


def test_compose_wiring_of_ports_and_prometheus(compose):
    services = compose["services"]
    argv = compose_command(services["catur"])[1:]
    grpc_port = option(argv, "--listen").rpartition(":")[2]
    assert any(str(p).endswith(f":{grpc_port}") for p in services["catur"]["ports"])
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "catur"]
    targets = job["static_configs"][0]["targets"]
    assert targets == [f"catur:{option(argv, '--metrics-port')}"], "Prometheus must scrape the service's metrics port"
    assert option(argv, "--metrics-host") == "0.0.0.0"
    mounted = {m.split(":")[1] for m in services["prometheus"]["volumes"] if m.startswith(".")}
    assert "/etc/prometheus/" + config["rule_files"][0] in mounted, "the rules file must be mounted where the config names it"


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed")
    proc = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- systemd -----------------------------------------------------------------------------------------


def test_systemd_command_lines_are_accepted_by_the_cli(fake_bin, tmp_path):
    seen = set()
    for path in SERVICES:
        unit = read_unit(path)
        env = unit_env(unit)
        for key in ("ExecStartPre", "ExecStart"):
            for line in unit["Service"].get(key, []):
                for argv in catur_calls(unit_command(line, env), env, f"{path.name} {key}", fake_bin, tmp_path):
                    check_cli(argv, f"{path.name} {key}")
                    seen.add(argv[0])
    assert {"serve", "models", "retrain", "libvirt"} <= seen


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_systemd_units_are_hardened(path):
    s = read_unit(path)["Service"]
    assert s["User"] == ["catur"] and s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""], "no capabilities"
    writable = {p.lstrip("-") for value in s.get("ReadWritePaths", []) for p in value.split()}
    states = {f"/var/lib/{d}" for value in s.get("StateDirectory", []) for d in value.split()}
    assert writable <= states, "every writable path is a state directory systemd creates for the user"
    if path.name != "catur-libvirt-events.service":  # the follower writes nothing at all
        assert writable, "the service and the job write only their state directories"
    if path.name == "catur-retrain.service":
        assert "75" in s["SuccessExitStatus"][0].split(), "a run that finds the lock held did nothing wrong"
        assert s["Type"] == ["oneshot"]


@pytest.fixture(scope="module")
def units_with_fake_binaries(tmp_path_factory) -> Path:
    """The units and timer copied with /opt/catur/bin/* pointed at executables that exist."""
    d = tmp_path_factory.mktemp("units")
    fakes = d / "bin"
    fakes.mkdir()
    for name in ["catur", *SCRIPTS]:
        (fakes / name).write_text("#!/bin/sh\nexit 0\n")
        (fakes / name).chmod(0o755)
    for path in list(SYSTEMD.glob("*.service")) + list(SYSTEMD.glob("*.timer")):
        (d / path.name).write_text(path.read_text().replace("/opt/catur/bin/", f"{fakes}/"))
    return d


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_systemd_analyze_verify(units_with_fake_binaries):
    tool = systemd_analyze()
    names = sorted(p.name for p in units_with_fake_binaries.glob("catur-*"))
    proc = subprocess.run([tool, "verify", *names], cwd=units_with_fake_binaries, capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings: any output is a finding.
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stdout + proc.stderr
    timer = read_unit(SYSTEMD / "catur-retrain.timer")["Timer"]
    for spec in timer["OnCalendar"]:
        assert subprocess.run([tool, "calendar", spec], capture_output=True, timeout=30).returncode == 0, spec
    assert timer["Unit"] == ["catur-retrain.service"] and (SYSTEMD / "catur-retrain.service").exists()


@pytest.mark.parametrize("unit", ["catur-serve.service", "catur-retrain.service", "catur-libvirt-events.service"])
def test_systemd_exposure_stays_low(units_with_fake_binaries, unit):
    """`systemd-analyze security` rates the sandbox 0 (locked down) to 10; keep it at most 2."""
    tool = systemd_analyze()
    proc = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", "--no-pager", f"./{unit}"],
                          cwd=units_with_fake_binaries, capture_output=True, text=True, timeout=60)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    assert proc.returncode == 0, proc.stdout[-600:] + proc.stderr


# --- Prometheus --------------------------------------------------------------------------------------


def promtool() -> str:
    tool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not tool:
        pytest.skip("promtool is not installed (the Debian package 'prometheus')")
    return tool


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"], ["test", "rules", "rules_test.yml"]], ids=" ".join)
def test_promtool(args):
    proc = subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_name_only_metrics_and_labels_the_service_exports():
    """... or that ``catur retrain`` writes (its outcome metrics)."""
    import grpc

    from catur.service.servicer import SERVICE_NAME
    from catur.v1 import placement_pb2

    names, samples = exported_metrics()
    retrain_names, retrain_samples = retrain_metrics()
    names, samples = names | retrain_names, samples + retrain_samples
    methods = {m.name for m in placement_pb2.DESCRIPTOR.services_by_name[SERVICE_NAME.rpartition(".")[2]].methods}
    known_values = {"grpc_service": {SERVICE_NAME}, "grpc_method": methods, "grpc_code": {c.name for c in grpc.StatusCode}}
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = set()
    for expr in exprs:
        metrics, problems = promql_problems(expr, names, samples, known_values)
        used |= metrics
        assert not problems, f"rules.yml: {problems}"
    assert any(m.startswith("catur_collector_") for m in used) and "catur_model_reload_failures_total" in used
    assert {"catur_retrain_outcome", "catur_retrain_last_run_timestamp_seconds"} <= used


# --- Grafana ------------------------------------------------------------------------------------------

GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def live_metrics():
    """The series names a live service (trace collection on, one placement answered) serves on
    its real /metrics endpoint, plus those ``catur retrain`` writes; and the samples."""
    import tempfile
    import urllib.request

    from prometheus_client import start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    from _service_support import valid_request
    from catur.service.client import PlacementClient
    from catur.service.collector import CollectorConfig
    from catur.service.server import Service, create_server

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(model=None, collect=CollectorConfig(Path(tmp) / "c"))
        server, port = create_server("127.0.0.1:0", service)
        httpd, _ = start_http_server(0, addr="127.0.0.1", registry=service.metrics.registry)
        try:
            with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
                client.stub.Place(valid_request(), timeout=5)
            text = urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_port}/metrics", timeout=5).read().decode()
        finally:
            httpd.shutdown()
            service.shutdown(server, grace=0.5)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""], "summary": ["_count", "_sum", ""]}
    names, samples = set(), []
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        samples += family.samples
    retrain_names, retrain_samples = retrain_metrics()
    return names | retrain_names, samples + retrain_samples


def dashboard_problems(dashboard: dict, names: set[str], samples: list) -> list[str]:
    """Everything wrong with a dashboard: panels that query metrics nobody exports (or label
    values they never take), that bypass the data source variable, overlap or overflow the
    24-column grid, or share an id."""
    import grpc

    known_values = {"grpc_code": {c.name for c in grpc.StatusCode}}
    problems, ids, cells = [], set(), set()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    if variables.get("datasource", {}).get("query") != "prometheus":
        problems.append("no Prometheus data source variable")
    for var in variables.values():
        if var["type"] == "query":
            problems += [f"variable {var['name']}: {p}" for p in promql_problems(var["definition"], names, samples, known_values)[1]]
    for panel in dashboard["panels"]:
        where = f"panel {panel.get('title')!r}"
        if panel["id"] in ids:
            problems.append(f"{where}: id {panel['id']} used twice")
        ids.add(panel["id"])
        g = panel["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"{where}: outside the 24-column grid")
        for cell in {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}:
            if cell in cells:
                problems.append(f"{where}: overlaps another panel at {cell}")
                break
            cells.add(cell)
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: not on the ${{datasource}} variable")
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
        for target in panel.get("targets", []):
            used, found = promql_problems(target["expr"], names, samples, known_values)
            if not used:
                problems.append(f"{where}: query names no Catur metric: {target['expr']}")
            problems += [f"{where}: {p}" for p in found]
    return problems


def test_the_grafana_dashboard_queries_only_metrics_the_service_exports(live_metrics):
    names, samples = live_metrics
    dashboard = json.loads((GRAFANA / "catur-service.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert dashboard_problems(dashboard, names, samples) == []
    queried = {m for p in dashboard["panels"] for t in p.get("targets", []) for m, _ in re.findall(r"\b((?:catur|grpc_server)_\w+)(\{)?", t["expr"])}
    # the dashboard covers what matters: refusals and latency from arrival, decisions, the
    # model, collection, the retrain outcome
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "catur_rpcs_in_flight", "catur_malformed_requests_total",
            "catur_decisions_total", "catur_model_info", "catur_collector_rows_dropped_total", "catur_retrain_outcome"} <= queried


def test_the_dashboard_check_fails_on_a_metric_that_does_not_exist(live_metrics):
    names, samples = live_metrics
    dashboard = json.loads((GRAFANA / "catur-service.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["type"] != "row")
    panel["targets"][0]["expr"] = 'rate(catur_decisions_totl{instance=~"$instance"}[5m])'  # a typo
    dashboard["panels"][-1]["targets"][0]["expr"] = 'sum(rate(catur_batch_items_total{outcome="lost"}[5m]))'  # no such value
    problems = dashboard_problems(dashboard, names, samples)
    assert any("catur_decisions_totl is not exported" in p for p in problems)
    assert any("'lost' is not one of" in p for p in problems)


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's PromQL (Grafana's variables filled in) as a recording rule, which
    ``promtool check rules`` parses."""
    tool = promtool()
    dashboard = json.loads((GRAFANA / "catur-service.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs = [e.replace("$__rate_interval", "5m").replace("$instance", ".*") for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    proc = subprocess.run([tool, "check", "rules", str(tmp_path / "queries.yml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Dockerfile and build context ---------------------------------------------------------------------


def test_dockerfile_pins_bases_installs_cpu_torch_first_and_runs_as_non_root():
    stages = dockerfile_instructions()
    args = dict(re.findall(r"(\w+)=(\S+)", stages[0].get("ARG", "")))
    names = set()
    for stage in stages[1:]:
        base, _, alias = stage["FROM"].partition(" AS ")
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        if base not in names:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", base) and not base.endswith(":latest"), f"base image {base!r} is not pinned"
        names.add(alias.strip())
    build, final = stages[1]["RUN"], stages[-1]
    torch_pin = re.search(r"torch==([\w.+]+)", (REPO / "run").read_text()).group(1)
    torch = re.search(r"pip install \"?torch==([\w.+]+)\"? --index-url https://download\.pytorch\.org/whl/cpu", build)
    assert torch and torch.group(1) == torch_pin, "torch must come from the CPU index, pinned as ./run pins it"
    assert build.index("torch==") < build.index("pip install ."), "torch must be installed before the project"
    user = final["USER"].split(":")[0]
    assert user not in ("0", "root") and user, "the image must run as a non-root user"
    check_cli(json.loads(final["CMD"]), "Dockerfile CMD")
    health = final["HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[0] == "catur" and command[1] == "health"
    check_cli(command[1:], "Dockerfile HEALTHCHECK")


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_local():
    context = build_context()
    for stage in dockerfile_instructions():
        for line in stage.get("COPY", "").strip().splitlines():
            if "--from=" in line:
                continue  # from another stage, not from the context
            words = [w for w in line.split() if not w.startswith("--")]
            for source in words[:-1]:
                source = source.rstrip("/")
                assert any(f == source or f.startswith(source + "/") for f in context), f"COPY {source}: excluded or missing"
    assert not any(f.startswith(("tests/", ".hypothesis/", "catur.egg-info/")) or "__pycache__" in f for f in context)


@pytest.mark.slow
def test_the_build_context_builds_a_wheel_with_the_whole_package(tmp_path):
    """What `pip install .` in the image installs: every sub-package, the stubs, the shipped
    model and the `catur` command (a wheel built from the context .dockerignore leaves)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed")
    if int(setuptools.__version__.split(".")[0]) < 70:
        pytest.skip(f"setuptools {setuptools.__version__} needs the 'wheel' package to build wheels")
    src = tmp_path / "src"
    for f in build_context():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("catur-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ["catur/models/default/manifest.json", "catur/models/default/weights.npz", "catur/v1/placement_pb2.py",
                     "catur/sim/__init__.py", "catur/traces/collected.py", "catur/training/retrain.py", "catur/service/server.py"]:
        assert required in names, f"the image would miss {required}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "catur = catur.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_hadolint_accepts_the_dockerfile():
    tool = shutil.which("hadolint")
    if not tool:
        pytest.skip("hadolint is not installed")
    proc = subprocess.run([tool, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the loop is closed in every deployment --------------------------------------------------------


def loop_of(serve: list[str], retrain: list[str]) -> tuple[str, str, str, str]:
    return option(serve, "--model"), option(retrain, "--registry"), option(serve, "--collect-dir"), option(retrain, "--trace")


def test_each_deployment_serves_what_it_retrains_and_retrains_on_what_it_collects(k8s, compose, fake_bin, tmp_path):
    """serve --model == retrain --registry, serve --collect-dir == retrain --trace, on the same
    volumes: otherwise promotions never reach the service, or retraining never sees traffic."""
    def calls(command, env, where):
        return catur_calls(command, env, where, fake_bin, tmp_path)

    # Kubernetes
    deploy = k8s[("Deployment", "catur")]["spec"]["template"]["spec"]
    cron = k8s[("CronJob", "catur-retrain")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (serve_c,), (job_c,) = deploy["containers"], cron["containers"]
    serve = the_call(calls(k8s_command(serve_c, k8s_env(k8s, serve_c)), {}, "k8s serve"), "serve")
    retrain = the_call(calls(k8s_command(job_c, k8s_env(k8s, job_c)), k8s_env(k8s, job_c), "k8s job"), "retrain")
    model, registry, collect, trace = loop_of(serve, retrain)
    assert model == registry and collect == trace, (model, registry, collect, trace)

    def claim(spec, container, path):
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        return volume["persistentVolumeClaim"]["claimName"], mount.get("readOnly", False)

    assert claim(deploy, serve_c, model) == ("catur-registry", True)
    assert claim(cron, job_c, registry) == ("catur-registry", False)
    assert claim(deploy, serve_c, collect) == ("catur-traces", False)
    assert claim(cron, job_c, trace) == ("catur-traces", True)

    # compose
    services = compose["services"]
    serve = the_call(calls(compose_command(services["catur"]), {}, "compose catur"), "serve")
    env = {k: str(v) for k, v in services["retrain"]["environment"].items()}
    retrain = the_call(calls(["catur-retrain-job"], env, "compose retrain"), "retrain")
    model, registry, collect, trace = loop_of(serve, retrain)
    assert model == registry and collect == trace

    def volume(service, path):
        (mount,) = [m for m in services[service]["volumes"] if m.split(":")[1] == path]
        return mount.split(":")[0]

    assert volume("catur", model) == volume("retrain", registry) == volume("bootstrap", services["bootstrap"]["environment"]["CATUR_REGISTRY"])
    assert volume("catur", collect) == volume("retrain", trace)

    # systemd
    units = {p.name: read_unit(p) for p in SERVICES}
    s_unit, r_unit = units["catur-serve.service"], units["catur-retrain.service"]
    serve = unit_command(s_unit["Service"]["ExecStart"][0], unit_env(s_unit))[1:]
    r_env = unit_env(r_unit)
    retrain = the_call(calls(unit_command(r_unit["Service"]["ExecStart"][0], r_env), r_env, "systemd retrain"), "retrain")
    model, registry, collect, trace = loop_of(serve, retrain)
    assert model == registry == unit_env(s_unit)["CATUR_REGISTRY"] and collect == trace
