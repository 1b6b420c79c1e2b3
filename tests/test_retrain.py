"""``catur retrain``: fine-tuning from a model, the collapse verdict, the lock, exit codes, the report,
and a job killed in the middle of writing a new version.

The end-to-end run against a live service is in ``test_continuous_e2e.py``. Here the current
model is mostly a hand-made *collapsed* model (it always picks core-best-fit,
:func:`_retrain_support.collapsed_model`), which loses to mem-most-idle on both clusters of
the drifted window by a wide margin, so every outcome below is decided by construction, not
by how a tiny training run happens to go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _retrain_support import RECENT_DAYS, collapsed_model, drift_trace, registry_with
from catur.cli import main
from catur.errors import CaturError
from catur.policy_model import PolicyModel
from catur.policies import PRIMITIVES
from catur.registry import PAUSE_ENV, Registry
from catur.training.collapse import GroupResult, badness, healthy, judge, overall, passes, worst_groups
from catur.training.retrain import EXIT_BAD_INPUT, EXIT_COLLAPSED, EXIT_LOCKED, EXIT_OK, LOCK_NAME, LockHeld, RetrainConfig, retrain_lock
from catur.training.train import TrainConfig, _start_model, make_env, train

CATUR = Path(sys.executable).with_name("catur")
# One fine-tuning round kept small: one PPO rollout and a greedy warm start just long enough
# (3,000 observations: about 97% agreement from the collapsed model) to beat every primitive.
TINY = ["--timesteps", "64", "--warm-start", "3000", "--eval-hosts", "2", "--gate-samples", "200", "--jobs", "1", "--quiet"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    return drift_trace(tmp_path_factory.mktemp("trace") / "drift.parquet")


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory) -> Path:
    return collapsed_model(tmp_path_factory.mktemp("model") / "always-cbf")


@pytest.fixture
def registry(tmp_path, collapsed) -> Registry:
    return registry_with(tmp_path / "registry", collapsed)


def run_cli(*args) -> int:
    return main([str(a) for a in args])


# --- fine-tuning: load_layers is the inverse of export_layers ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_export_round_trip(algo, trace):
    """export(load_into(export(m))) is the same arrays and the same decisions as export(m)."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import DQN

    from catur.policy_model import MODEL_FORMAT
    from catur.observation import OBS_DIM, OBS_VERSION
    from catur.training.export import check_agreement, export_layers, load_layers

    env = make_env(TrainConfig(workload=str(trace), n_envs=1), RECENT_DAYS)
    cls = MaskablePPO if algo == "ppo" else DQN
    source, target = (cls("MlpPolicy", env, seed=seed, device="cpu", policy_kwargs={"net_arch": [32, 16]}) for seed in (1, 2))
    layers, activation = export_layers(source)
    load_layers(target, layers)
    again, activation_again = export_layers(target)
    assert activation_again == activation
    for (w1, b1), (w2, b2) in zip(layers, again, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    manifest = {"format": MODEL_FORMAT, "obs_version": OBS_VERSION, "obs_dim": OBS_DIM, "actions": list(PRIMITIVES), "activation": activation}
    exported = PolicyModel(manifest, tuple(layers))
    observations = np.stack([env.reset(seed=i)[0] for i in range(40)] + [env.observation_space.sample() for _ in range(460)])
    assert check_agreement(target, exported, observations)["identical_decisions"] == 500
    if algo == "dqn":  # the target network starts equal to the online one
        q = [m.weight for m in target.policy.q_net.q_net.modules() if hasattr(m, "weight")]
        t = [m.weight for m in target.policy.q_net_target.q_net.modules() if hasattr(m, "weight")]
        assert all(bool((a == b).all()) for a, b in zip(q, t))
    wrong = cls("MlpPolicy", env, seed=3, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    with pytest.raises(CaturError, match="layer 0 of the model to start from has shape"):
        load_layers(wrong, layers)


def test_train_config_hosts_and_init_from(collapsed):
    assert TrainConfig(hosts=[5, 1, 5]).hosts == (1, 5)
    for bad in ((), (-1,), (1.5,), (True,)):
        with pytest.raises(CaturError, match="hosts must be host ids"):
            TrainConfig(hosts=bad)
    with pytest.raises(CaturError, match="is a ppo model; fine-tune it with algo='ppo'"):
        _start_model(TrainConfig(algo="dqn", init_from=str(collapsed)))
    with pytest.raises(CaturError, match="does not exist"):
        _start_model(TrainConfig(init_from="/nonexistent/model"))


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_weights_on_the_given_hosts(tmp_path, trace, collapsed):
    """With init_from and no warm start, step 0 *is* the starting model: its evaluation equals
    core-best-fit's (the model always picks it), and only the chosen hosts are used."""
    hosts = (0, 1, 2)
    config = TrainConfig(
        workload=str(trace), train_days=RECENT_DAYS, eval_days=RECENT_DAYS, timesteps=64, eval_every=64,
        eval_hosts=2, n_envs=1, warm_start=0, init_from=str(collapsed), hosts=hosts, gate_samples=200, allow_worse=True,
    )
    result = train(config, tmp_path / "out", progress=False, log=lambda m: None)
    assert result.history[0].step == 0
    assert result.history[0].avg_defect == pytest.approx(result.baselines["core-best-fit"], abs=1e-12)
    manifest = PolicyModel.load(tmp_path / "out").manifest
    assert set(manifest["evaluation"]["hosts"]) <= set(hosts)
    assert manifest["training"]["init_from"] == str(collapsed) and manifest["training"]["net_arch"] == [32]
    assert manifest["training"]["hosts"] == list(hosts)


# --- the verdict: pure functions ----------------------------------------------------------------


def group(per_host: list[float], vms: list[int] | None = None) -> GroupResult:
    """A policy's result on one group: ``per_host`` average defects on hosts of ``vms`` VMs."""
    vms = np.array(vms or [20] * len(per_host))
    sums = np.array(per_host) * vms
    avg = float(sums.sum() / vms.sum())
    return GroupResult(avg, avg, avg, avg, 0, int(vms.sum()), hosts=list(range(len(vms))), host_vms=vms, host_sums=sums)


def table(model: dict[str, list[float]], baselines: dict[str, dict[str, list[float]]], vms: dict[str, list[int]] | None = None):
    """``model[group]`` per-host defects; ``baselines[group][policy]`` per-host defects (policies
    not given: far worse, 0.5 on every host)."""
    vms = vms or {}
    names = [*PRIMITIVES, "greedy"]
    out = {n: {} for n in names}
    for g, per_host in model.items():
        for n in names:
            out[n][g] = group(baselines.get(g, {}).get(n, [0.5] * len(per_host)), vms.get(g))
    return {g: group(v, vms.get(g)) for g, v in model.items()}, out


def test_judge_by_hand():
    """Only clear differences count: a consistent loss over hosts collapses a cluster, the same
    averages with noise across hosts do not, and a single host never does."""
    hosts8 = [0.01, 0.012, 0.011, 0.013, 0.009, 0.01, 0.012, 0.011]
    model, baselines = table(
        {
            "clear": [h + 0.01 for h in hosts8],  # greedy below it on every host
            "noisy": [0.0, 0.05, 0.0, 0.05, 0.0, 0.05, 0.0, 0.05],  # greedy higher on average, but the model wins half the hosts
            "one-host": [0.9],  # huge loss, one host: no interval, never clear
            "better": hosts8,
        },
        {
            "clear": {"greedy": hosts8, "core-best-fit": [h + 0.001 for h in hosts8]},
            "noisy": {"greedy": [0.04, 0.0, 0.04, 0.0, 0.04, 0.0, 0.04, 0.0]},
            "one-host": {"greedy": [0.01]},
            "better": {"greedy": [h + 0.01 for h in hosts8]},
        },
    )
    verdicts = judge(model, baselines)
    assert verdicts["clear"].failing and set(verdicts["clear"].clear_losses) == {"greedy", "core-best-fit"}
    assert verdicts["clear"].best_baseline == "greedy" and verdicts["clear"].best_primitive == "core-best-fit"
    assert not verdicts["noisy"].failing and verdicts["noisy"].versus["greedy"].diff > 0  # worse on average, not clearly
    assert not verdicts["one-host"].failing and verdicts["one-host"].versus["greedy"].hosts == 1
    assert not verdicts["better"].failing and verdicts["better"].versus["greedy"].clearly_better
    assert worst_groups(verdicts) == ["clear"]
    whole = overall(model, baselines)
    assert whole.baseline == "greedy" and whole.hosts == 25
    assert not healthy(verdicts, whole) and not passes(verdicts, whole)
    assert badness(verdicts, whole)[0] == 1
    fixed = {g: v for g, v in verdicts.items() if g != "clear"}
    fixed_model = {g: r for g, r in model.items() if g != "clear"}
    fixed_base = {n: {g: r for g, r in by.items() if g != "clear"} for n, by in baselines.items()}
    whole = overall(fixed_model, fixed_base)
    # No cluster clearly loses; on the whole window the model's average is what decides promotion.
    assert healthy(fixed, whole) and passes(fixed, whole) == (not whole.loses)


def test_the_whole_window_counts_greedy():
    """No cluster loses clearly, but greedy is better on average over the whole window: the
    model is healthy (no clear loss: no retraining on noise) and still fails the promotion
    gate (a candidate worse than greedy on average is never promoted)."""
    model, baselines = table({"a": [0.02, 0.0], "b": [0.02, 0.0]}, {"a": {"greedy": [0.0, 0.019]}, "b": {"greedy": [0.0, 0.019]}})
    verdicts, whole = judge(model, baselines), overall(model, baselines)
    assert not any(v.failing for v in verdicts.values()) and whole.diff > 0 and not whole.clearly_worse
    assert healthy(verdicts, whole) and not passes(verdicts, whole)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(
    st.sampled_from("abcdef"),
    st.tuples(st.lists(st.floats(0, 1), min_size=1, max_size=6), st.floats(-0.2, 0.2), st.floats(-0.2, 0.2)),
    min_size=1,
))
def test_promotion_rule_invariants(groups):
    """Whatever the numbers: a failing cluster is exactly one with a clear loss to some rule;
    passing implies healthy; the worst groups are the failing ones, largest gap first; a model
    that *is* greedy (same per-host defects) never loses to it."""
    model = {g: [min(1.0, max(0.0, h + v[1])) for h in v[0]] for g, v in groups.items()}
    base = {g: {"greedy": v[0], "mem-most-idle": [min(1.0, max(0.0, h + v[2])) for h in v[0]]} for g, v in groups.items()}
    model, baselines = table(model, base)
    verdicts, whole = judge(model, baselines), overall(model, baselines)
    for v in verdicts.values():
        assert v.failing == any(c.diff_low > 0 for c in v.versus.values())
        assert v.versus["greedy"].diff_low - 1e-12 <= v.versus["greedy"].diff <= v.versus["greedy"].diff_high + 1e-12
    if passes(verdicts, whole):
        assert healthy(verdicts, whole)
    assert set(worst_groups(verdicts)) == {g for g, v in verdicts.items() if v.failing}
    gaps = [verdicts[g].gap for g in worst_groups(verdicts)]
    assert gaps == sorted(gaps, reverse=True)
    itself = {g: baselines["greedy"][g] for g in groups}
    assert not overall(itself, baselines).loses and not any(v.failing and "greedy" in v.clear_losses for v in judge(itself, baselines).values())


# --- the lock ------------------------------------------------------------------------------------


def test_lock_is_exclusive_and_names_its_file(tmp_path):
    with retrain_lock(tmp_path) as path:
        assert path == tmp_path / LOCK_NAME
        with pytest.raises(LockHeld, match=f"holds the lock {path}.*pid {os.getpid()}"):
            with retrain_lock(tmp_path):
                pass
    with retrain_lock(tmp_path):  # released at the end of the block
        pass


def test_a_killed_holder_releases_the_lock(registry, trace):
    """While another process holds the lock, catur retrain exits 75 naming the lock file; once
    that process is killed (SIGKILL: no clean-up runs), the kernel has dropped its flock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom catur.training.retrain import retrain_lock\n"
         "with retrain_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(registry.root)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = subprocess.run([CATUR, "retrain", "--registry", registry.root, "--trace", trace, "--quiet"],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == EXIT_LOCKED
        assert f"holds the lock {registry.root / LOCK_NAME}" in busy.stderr and f"pid {holder.pid}" in busy.stderr
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with retrain_lock(registry.root):
        pass


# --- exit codes and the report ------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(tmp_path, registry, trace, capsys):
    from catur.traces.canonical import write_canonical
    from catur.traces.readers import read_trace

    empty = Registry(tmp_path / "empty", create=True)
    one_cluster = tmp_path / "one-cluster.parquet"
    write_canonical(read_trace(trace)[0].drop(columns="cluster"), one_cluster)
    cases = [
        (["--registry", tmp_path / "missing", "--trace", trace], "does not exist"),
        (["--registry", empty.root, "--trace", trace], "has no current model"),
        (["--registry", registry.root, "--trace", tmp_path / "nope.parquet"], "nope.parquet"),
        (["--registry", registry.root, "--trace", trace, "--days", "9:3"], "--days '9:3'"),
        (["--registry", registry.root, "--trace", trace, "--days", "40:41"], "the trace ends on day"),
        (["--registry", registry.root, "--trace", trace, "--timesteps", "0"], "--timesteps must be a whole number >= 1, got 0"),
        (["--registry", registry.root, "--trace", one_cluster, "--group-by", "cluster"], "the trace has no 'cluster' column"),
        (["--registry", registry.root, "--trace", trace, "--format", "canonical", "--cluster", "nosuch"], "nosuch"),
        (["--registry", registry.root, "--trace", trace, "--format", "azure-v9"], "azure-v9"),
    ]
    for args, message in cases:
        assert run_cli("retrain", *args, "--quiet") == EXIT_BAD_INPUT, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("catur: error: ") and message in err and "\n" not in err, err
    assert [v.version for v in registry.versions()] == ["v0001"]


@pytest.mark.slow
def test_check_only_reports_the_collapse_and_exits_3(tmp_path, registry, trace, capsys):
    report = tmp_path / "report"
    code = run_cli("retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS,
                   "--max-iterations", "0", "--report", report, "--jobs", "1", "--gate-samples", "200", "--quiet")
    assert code == EXIT_COLLAPSED
    assert capsys.readouterr().out.startswith("kept: collapse on ")
    data = json.loads((report / "report.json").read_text())
    assert data["status"] == "kept" and data["exit_code"] == EXIT_COLLAPSED and "--max-iterations 0" in data["reason"]
    assert data["current_before"] == data["current_after"] == "v0001" and data["promoted"] is None
    assert set(data["before"]) == {"general", "compute"}
    for cluster in data["before"].values():  # always core-best-fit: exactly its numbers, beaten by another
        assert cluster["avg_defect"] == cluster["primitives"]["core-best-fit"]
        assert not cluster["beats_every_primitive"] and cluster["best_primitive"] != "core-best-fit"
        # Greedy counts in the collapse test: it is clearly better on every cluster.
        assert "greedy" in cluster["clear_losses"] and cluster["versus"]["greedy"]["diff_ci"][0] > 0
        assert "core-best-fit" not in cluster["clear_losses"]  # an exact tie with itself is no loss
    assert data["versus_greedy"]["before"]["loses"] and data["versus_greedy"]["after"] == data["versus_greedy"]["before"]
    drift = data["drift"]
    assert drift["reference_days"] == "1:3" and drift["reference_is"] == "every day before the recent window"
    assert drift["features"]["mem_gib"]["level"] == "significant"  # the injection is 16 GiB per vCPU
    text = (report / "report.md").read_text()
    assert "clearly worse than" in text and "## Drift of the request mix" in text and "## Against greedy" in text
    assert (report / "defect_by_cluster.png").stat().st_size > 0 and (report / "drift.png").stat().st_size > 0
    assert [v.version for v in registry.versions()] == ["v0001"] and registry.current().version == "v0001"


@pytest.mark.slow
def test_dry_run_fine_tunes_but_changes_nothing(tmp_path, registry, trace, capsys):
    code = run_cli("retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS,
                   "--dry-run", "--max-iterations", "1", *TINY)
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("would-promote: ") and "--dry-run" in out
    report = Path(out.split("report: ")[1].strip())
    assert report.parent == registry.root / "reports"
    data = json.loads((report / "report.json").read_text())
    # One fine-tuning round ran; whichever passed (the candidate, or greedy as a fallback)
    # passes the gate: no clear loss on any cluster.
    assert len(data["iterations"]) == 1
    assert not any(c["failing"] for c in data["after"].values()) and not data["versus_greedy"]["after"]["loses"]
    if not data["iterations"][0]["passes"]:  # the tiny fine-tune lost to greedy: greedy is the fallback
        assert "would serve greedy as a rule version" in data["reason"]
        assert data["versus_greedy"]["after"]["outcome"] == "tie"  # greedy against itself


@pytest.mark.slow
def test_a_rule_version_is_judged_as_greedy(tmp_path, trace, capsys):
    """With greedy itself current (a rule version), the job replays it as greedy: on the
    drifted window no primitive is clearly better on any cluster, so it is healthy."""
    registry = Registry(tmp_path / "registry", create=True)
    registry.promote(registry.add_rule("greedy").version)
    code = run_cli("retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS,
                   "--max-iterations", "0", "--jobs", "1", "--gate-samples", "200", "--quiet", "--report", tmp_path / "r")
    assert code == EXIT_OK and capsys.readouterr().out.startswith("healthy: v0001 is not clearly worse")
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["versus_greedy"]["before"]["outcome"] == "tie"
    assert all(c["avg_defect"] == c["greedy"] for c in data["before"].values())
    assert [v.version for v in registry.versions()] == ["v0001"] and registry.current().version == "v0001"


@pytest.mark.slow
def test_a_job_killed_while_writing_leaves_current_intact(tmp_path, registry, trace):
    """Kill -9 the job while the registry is writing the new version (the registry's test pause
    holds it after the copy, before the rename): current is untouched, the half-written copy
    is never listed, and the lock is free for the next run."""
    env = {**os.environ, PAUSE_ENV: "add:120"}
    job = subprocess.Popen([CATUR, "retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS,
                            "--max-iterations", "1", *TINY], stderr=subprocess.PIPE, text=True, env=env)
    paused = threading.Event()

    def watch() -> None:
        for line in job.stderr:
            if "paused at add" in line:
                paused.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert paused.wait(timeout=400), "the job never reached the registry's add"
        assert any(p.name.startswith(".tmp-") for p in registry.root.iterdir())  # mid-write
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
    assert registry.current().version == "v0001"
    assert [v.version for v in registry.versions()] == ["v0001"]
    PolicyModel.load(registry.root / "current")  # what a service follows still loads
    with retrain_lock(registry.root):
        pass
    # The next change cleans the leftover copy up.
    registry.promote("v0001")
    assert not any(p.name.startswith(".tmp-") for p in registry.root.iterdir())


# --- the outcome as metrics (textfile, Pushgateway) -------------------------------------------------


def _verdict(group: str, model: float, best: float, hosts: int = 4):
    """A cluster whose hosts (25 VMs each) all show the same defects: any difference is
    clear when there are two hosts or more, none with one (no interval)."""
    from catur.training.collapse import GroupVerdict
    from catur.verdict import compare

    primitives = {p: best + 0.01 * i for i, p in enumerate(PRIMITIVES)}
    vms = np.full(hosts, 25)
    versus = {p: compare(vms, vms * model, vms * d, p) for p, d in primitives.items()}
    return GroupVerdict(group, int(vms.sum()), model, 0, primitives, None, versus)


def _samples(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


@pytest.mark.parametrize("status, code", [("promoted", EXIT_OK), ("kept", EXIT_COLLAPSED), ("healthy", EXIT_OK)])
def test_outcome_metrics_by_hand(status, code):
    """Collapse per cluster is the checked model's; after a promotion, the serving count is
    the new model's verdicts; a cluster without a clear difference is not collapsed."""
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from catur.training.retrain_metrics import STATUSES, outcome_registry

    before = {"a": _verdict("a", 0.05, 0.03), "b": _verdict("b", 0.01, 0.02), "tiny": _verdict("tiny", 0.9, 0.1, hosts=1)}
    after = {"a": _verdict("a", 0.02, 0.03), "b": _verdict("b", 0.01, 0.02), "tiny": _verdict("tiny", 0.9, 0.1, hosts=1)}
    outcome = SimpleNamespace(
        status=status, exit_code=code, before=SimpleNamespace(clusters=before),
        after=SimpleNamespace(clusters=after) if status == "promoted" else None, wall_s=12.5,
    )
    got = _samples(generate_latest(outcome_registry(outcome, finished_at=1.7e9)).decode())
    for name in STATUSES:
        assert got[("catur_retrain_outcome", (("status", name),))] == (name == status)
    assert got[("catur_retrain_exit_code", ())] == code
    assert got[("catur_retrain_cluster_collapsed", (("cluster", "a"),))] == 1
    assert got[("catur_retrain_cluster_collapsed", (("cluster", "b"),))] == 0
    # One host: no interval, so no clear difference, so not collapsed however bad it looks.
    assert got[("catur_retrain_cluster_collapsed", (("cluster", "tiny"),))] == 0
    assert got[("catur_retrain_cluster_gap_ratio", (("cluster", "a"),))] == pytest.approx(0.05 / 0.03 - 1)
    assert got[("catur_retrain_serving_collapsed_clusters", ())] == (0 if status == "promoted" else 1)
    assert got[("catur_retrain_last_run_timestamp_seconds", ())] == 1.7e9
    assert got[("catur_retrain_duration_seconds", ())] == 12.5


@pytest.mark.slow
def test_a_retrain_run_writes_its_outcome_to_a_textfile_and_a_pushgateway(tmp_path, registry, trace, capsys):
    """The check-only run of the collapsed model (kept, exit 3): the textfile is what
    node_exporter would read, and the Pushgateway gets the same metrics under job
    catur-retrain, grouped by registry. A bad textfile path is refused before the run; an
    unreachable gateway is a clear error (which the command prints as a warning, keeping the
    run's exit status)."""
    import http.server
    import urllib.parse

    received = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    textfile = tmp_path / "catur_retrain.prom"
    common = ["retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS, "--max-iterations", "0",
              "--jobs", "1", "--gate-samples", "0", "--quiet"]
    try:
        code = run_cli(*common, "--metrics-textfile", textfile, "--pushgateway", f"http://127.0.0.1:{httpd.server_port}")
    finally:
        httpd.shutdown()
    assert code == EXIT_COLLAPSED
    got = _samples(textfile.read_text())
    assert got[("catur_retrain_outcome", (("status", "kept"),))] == 1
    assert got[("catur_retrain_outcome", (("status", "promoted"),))] == 0
    assert got[("catur_retrain_exit_code", ())] == EXIT_COLLAPSED
    assert {k[1][0][1] for k, v in got.items() if k[0] == "catur_retrain_cluster_collapsed" and v == 1} == {"general", "compute"}
    assert got[("catur_retrain_serving_collapsed_clusters", ())] == 2
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no leftover
    [(path, body)] = received
    assert path.startswith("/metrics/job/catur-retrain/registry")
    assert urllib.parse.unquote(path).endswith(str(Path(registry.root).resolve())) or "@base64" in path
    assert _samples(body) == got | {k: v for k, v in _samples(body).items() if k[0] == "catur_retrain_last_run_timestamp_seconds"}
    capsys.readouterr()
    assert run_cli(*common, "--metrics-textfile", tmp_path / "metrics.txt") == EXIT_BAD_INPUT
    assert "reads only *.prom files" in capsys.readouterr().err
    assert run_cli(*common, "--metrics-textfile", tmp_path / "nodir" / "x.prom") == EXIT_BAD_INPUT
    from catur.training.retrain_metrics import outcome_registry, push

    with pytest.raises(CaturError, match="--pushgateway http://127.0.0.1:9: push failed"):  # (a second run would be slow)
        push(outcome_registry(type("O", (), dict(status="kept", exit_code=3, before=type("J", (), dict(clusters={}))(), after=None, wall_s=1.0))()), "http://127.0.0.1:9", registry.root)


# --- a scorer is fine-tuned as a scorer -------------------------------------------------------------


@pytest.mark.slow
def test_a_scorer_is_fine_tuned_by_evolution_strategies_from_its_own_weights(tmp_path, trace, capsys):
    """With an after-state scorer current (the shipped default's kind), a collapse is answered
    with evolution strategies from the scorer's own weights on the losing clusters' hosts: the
    candidate is a scorer again, records its parent and window, decides as its torch network
    does, and retrain judges it like any candidate."""
    from catur.afterstate import FEATURES, AfterStateModel
    from catur.policy_model import load_policy
    from catur.training.collapse import load_window
    from catur.training.retrain import RetrainConfig, fine_tune

    # A scorer that seeks imbalanced nodes: clearly worse than greedy on the drifted window.
    start = AfterStateModel.linear({"defect": -0.05, "imbalance_after": 1.0}, version="imbalanced").save(tmp_path / "start")
    config = RetrainConfig(registry=str(tmp_path / "unused"), trace=str(trace), days=RECENT_DAYS, generations=1, jobs=1)
    window = load_window(config, tmp_path, log=lambda m: None)
    groups = window.groups[:1]
    logged: list[str] = []
    out = fine_tune(start, window, groups, config, 1, tmp_path / "tuned", logged.append, progress=False)
    tuned = load_policy(out)
    assert isinstance(tuned, AfterStateModel) and len(tuned.layers) == 1
    manifest = tuned.manifest
    assert manifest["retrain"]["fine_tuned_on"] == groups and manifest["retrain"]["parent"] == str(start)
    assert manifest["retrain"]["hosts"] == sorted(set(window.hosts_of(groups)))
    assert manifest["training"]["fine_tuned_from"] == "imbalanced" and len(manifest["training"]["history"]) == 1
    assert manifest["export_check"]["agreement"] == 1.0
    assert any("1 generation of evolution strategies" in line for line in logged)
    weights = dict(zip(FEATURES, tuned.layers[0][0][:, 0].tolist()))
    assert weights["defect"] == -1.0  # the scale is kept: the start's weights divided by 0.05
    assert weights["imbalance_after"] != pytest.approx(20.0)  # and the weights moved from there

    # The whole job: the scorer collapses, one iteration fine-tunes it, and the outcome is decided
    # by retrain's gate as for any model (a passing candidate, or greedy as the fallback).
    registry = registry_with(tmp_path / "registry", start)
    code = run_cli("retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS, "--dry-run",
                   "--max-iterations", "1", "--generations", "1", "--jobs", "1", "--gate-samples", "0", "--quiet",
                   "--report", tmp_path / "report")
    assert code == EXIT_OK and capsys.readouterr().out.startswith("would-promote: ")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(data["iterations"]) == 1 and data["iterations"][0]["fine_tuned_from"] == "v0001"
    assert any(c["failing"] for c in data["before"].values()) or data["versus_greedy"]["before"]["loses"]


# --- improving a healthy model ---------------------------------------------------------------------


def test_retrain_refuses_an_unknown_improvement_algorithm():
    with pytest.raises(CaturError, match="--algo must be one of es, ppo, got 'a2c'"):
        RetrainConfig(trace="t.csv", registry="r", improve_algo="a2c")
    with pytest.raises(CaturError, match="--improve-timesteps must be a whole number >= 1, got 0"):
        RetrainConfig(trace="t.csv", registry="r", improve_timesteps=0)


def test_improvement_windows_end_at_the_recent_windows_last_day():
    from catur.training.retrain_improve import improvement_windows

    assert improvement_windows("4:6", 1, 3) == ("2:4", "5:5", "6:6")
    assert improvement_windows("10:16", 2, 5) == ("9:13", "14:14", "15:16")
    assert improvement_windows("1:3", 1, 9) == ("1:1", "2:2", "3:3")
    with pytest.raises(CaturError, match="improving needs a training day"):
        improvement_windows("1:2", 1, 3)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["es", "ppo"])
def test_a_healthy_rule_gets_a_candidate_judged_on_held_out_days(tmp_path, trace, algo):
    """Greedy (a rule version) is healthy on the drifted window; the job trains a candidate on
    days 2-4 (by evolution strategies or PPO), selects on day 5 and judges it on day 6, and
    promotes it only when it is clearly better there (and passes the gate); either way the
    report and the registry agree."""
    registry = Registry(tmp_path / "registry", create=True)
    registry.promote(registry.add_rule("greedy").version)
    budget = ["--improve-generations", "1"] if algo == "es" else ["--algo", "ppo", "--improve-timesteps", "256"]
    code = run_cli("retrain", "--registry", registry.root, "--trace", trace, "--days", RECENT_DAYS, *budget,
                   "--jobs", "1", "--gate-samples", "0", "--quiet", "--report", tmp_path / "r")
    assert code == EXIT_OK
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    improvement = data["improvement"]
    assert improvement["algo"] == algo
    assert improvement["attempted"] and (improvement["train_days"], improvement["select_days"], improvement["holdout_days"]) == (
        "2:4", "5:5", "6:6")
    versus = improvement["versus_current"]
    if versus is None:  # training lost to greedy on the selection day: no candidate
        assert improvement["reason"].startswith("no candidate") and data["status"] == "healthy"
    else:
        clearly_better = versus["diff_ci"][1] is not None and versus["diff_ci"][1] < 0
        assert improvement["promote"] == (clearly_better and improvement["gate_passes"])
        assert data["status"] == ("improved" if improvement["promote"] else "healthy")
    assert (registry.current().version == "v0002") == (data["status"] == "improved")
    assert "## Improving the healthy model" in (tmp_path / "r" / "report.md").read_text()


def test_an_improved_candidate_is_added_and_promoted_with_its_evidence(tmp_path, trace, monkeypatch):
    """The promotion plumbing of a healthy run's improvement: a candidate judged clearly better
    on the held-out days is added with its evaluation (and its comparison with the model it
    replaces), promoted with status 'improved', and counted in the outcome metrics."""
    from prometheus_client import generate_latest

    from catur.afterstate import AfterStateModel
    from catur.training import retrain_improve
    from catur.training.collapse import evaluate_by_group
    from catur.training.retrain import RetrainConfig, run_retrain
    from catur.training.retrain_metrics import outcome_registry
    from catur.verdict import compare

    registry = Registry(tmp_path / "registry", create=True)
    registry.promote(registry.add_rule("greedy").version)

    def judged_better(config, window, current, current_model, work, log, progress):
        candidate = AfterStateModel.linear({"defect": -1.0, "resident_rise": -0.05}).save(work / "candidate")
        results = evaluate_by_group(window, [*PRIMITIVES, "greedy"], jobs=1, seed=0, progress=False)
        results[retrain_improve.CANDIDATE] = results["greedy"]
        versus = compare(np.array([50.0, 50.0, 50.0]), np.array([0.5, 0.6, 0.5]), np.array([1.0, 1.2, 1.0]), "current").to_dict()
        return retrain_improve.Improvement(True, "clearly better (test)", "2:4", "5:5", "6:6", str(candidate), versus, None,
                                           True, True, 1.0, {}, results)

    monkeypatch.setattr(retrain_improve, "try_improvement", judged_better)
    config = RetrainConfig(registry=str(registry.root), trace=str(trace), days=RECENT_DAYS, jobs=1, gate_samples=0,
                           report=str(tmp_path / "r"))
    outcome = run_retrain(config, log=lambda m: None, progress=False)
    assert (outcome.status, outcome.exit_code, outcome.promoted) == ("improved", EXIT_OK, "v0002")
    current = Registry(registry.root).current()
    assert current.version == "v0002" and current.parent == "v0001"
    assert current.evaluation["versus_current"]["outcome"] == "clearly better"
    text = generate_latest(outcome_registry(outcome)).decode()
    assert 'catur_retrain_outcome{status="improved"} 1.0' in text and "catur_retrain_improvement_ratio -0.5" in text
