"""Ray as the evaluation engine: the same numbers as the local engine, and clean failures.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; ``evaluate_policies``
and the CLI find it connected and reuse it, exactly as they would reuse a notebook's
``ray.init``. Tests that must see Ray *not* connected (a bad address, Ray missing) do not
start it: they probe the address or hide the module.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from _service_support import random_trace

from catur.cli import main
from catur.decision import DeciderSpec
from catur.errors import CaturError
from catur.cli.evaluate import engine_options
from catur.placement import GREEDY
from catur.shield import ShieldConfig
from catur.sim.admission import admit, host_streams, parse_days
from catur.sim.cluster import load_cluster
from catur.sim.distributed import RayEngine, check_reachable, check_workers, split_address
from catur.sim.evaluate import evaluate_policies


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def streams():
    """Days 2-4 of a 500-VM trace on an auto-sized mixed cluster (several hosts)."""
    df = random_trace(11, 500, 4.0, mean_life_days=0.5)
    streams = host_streams(df, admit(df, load_cluster("mixed"), 0.95), *parse_days("2:4", df))
    assert len(streams) >= 3
    return streams


def assert_same(one: dict, two: dict) -> None:
    """Same policies, and VM by VM the same defects, summaries and extra counters."""
    assert list(one) == list(two)
    for name in one:
        a, b = one[name], two[name]
        assert a.summary == b.summary, name
        assert np.array_equal(a.rows, b.rows), name
        assert np.array_equal(a.lifetime_defect, b.lifetime_defect), name
        assert np.array_equal(a.placement_defect, b.placement_defect), name
        assert a.extra == b.extra, name


# --- failures that need no Ray instance ----------------------------------------------------------


def test_ray_missing_names_the_extra(streams, monkeypatch):
    """Without Ray installed, engine='ray' fails with the install command, before any work."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(CaturError, match=r'pip install "catur\[ray\]"'):
        evaluate_policies(streams, ["xen"], engine="ray")


def test_unknown_engine_and_bad_addresses(streams):
    """An unknown engine name and malformed addresses are named in the error."""
    with pytest.raises(CaturError, match="unknown engine 'spark'"):
        evaluate_policies(streams, ["xen"], engine="spark")
    for bad in ("foo", "host:", ":6379", "host:99999", "ray://host"):
        with pytest.raises(CaturError, match="bad Ray address"):
            split_address(bad)
    assert split_address("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert split_address("[::1]:6379") == ("::1", 6379)
    assert split_address("ray://head:10001") == ("head", 10001)
    assert split_address("auto") is None


def test_unreachable_address_fails_fast():
    """Nothing listening at the address: a one-line error naming it, within the probe timeout
    (ray.init alone would retry for minutes)."""
    with pytest.raises(CaturError, match=r"cannot reach a Ray cluster at '127\.0\.0\.1:1'"):
        check_reachable("127.0.0.1:1", timeout_s=2.0)


def test_cli_bad_address_is_one_line(capsys):
    """`catur evaluate --engine ray --ray-address BAD` exits 2 with one line, before reading the trace."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - it would be reused, and the address ignored
        pytest.skip("a Ray connection is already open in this process")
    code = main(["evaluate", "no-such-trace.csv", "--engine", "ray", "--ray-address", "127.0.0.1:1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("catur: error: cannot reach a Ray cluster at '127.0.0.1:1'")


def test_engine_options(monkeypatch):
    """--ray-address needs --engine ray; RAY_ADDRESS is read only for the ray engine."""
    from argparse import Namespace

    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert engine_options(Namespace(engine="local", ray_address=None)) == {"engine": "local", "ray_address": None}
    assert engine_options(Namespace(engine="ray", ray_address=None)) == {"engine": "ray", "ray_address": "head:6379"}
    assert engine_options(Namespace(engine="ray", ray_address="auto"))["ray_address"] == "auto"
    monkeypatch.delenv("RAY_ADDRESS")
    assert engine_options(Namespace(engine="ray", ray_address=None))["ray_address"] is None
    with pytest.raises(CaturError, match="--ray-address auto needs --engine ray"):
        engine_options(Namespace(engine="local", ray_address="auto"))
    # The spelling, --address, is the same option.
    from catur.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--synthetic", "default", "--engine", "ray", "--address", "head:6379"])
    assert engine_options(args) == {"engine": "ray", "ray_address": "head:6379"}


# --- on a local Ray instance -----------------------------------------------------------------------


@pytest.mark.slow
def test_local_and_ray_engines_give_identical_metrics(ray_instance, streams, monkeypatch):
    """The headline claim: same trace, same policies (greedy, random, a baseline, the shipped
    model, the model with the shield), same per-VM defects, summaries and counters
    (correctable anomalies, shield and gate interventions), whatever the engine."""
    policies = [
        "xen",
        GREEDY,
        "random",
        DeciderSpec(model="default", label="catur"),
        DeciderSpec(model="default", shield=ShieldConfig(depth=2, width=0.05)),
    ]
    kwargs = dict(seed=3, count_correctable=True, oracle_k=2)
    local = evaluate_policies(streams, policies, jobs=1, **kwargs)

    puts = []
    real_put = ray_instance.put
    monkeypatch.setattr(ray_instance, "put", lambda value, **kw: puts.append(value) or real_put(value, **kw))
    done: list[int] = []
    remote = evaluate_policies(streams, policies, engine="ray", progress=done.append, **kwargs)

    assert_same(local, remote)
    assert local["catur+shield"].extra.get("shield_interventions", 0) + local["catur+shield"].extra.get("gated", 0) > 0
    # Each host chunk went to the object store once, shared by all five policies' tasks.
    assert sorted(s.host for chunk in puts for s in chunk) == sorted(s.host for s in streams)
    assert sum(done) == len(policies) * sum(s.trace.num_vms for s in streams)
    assert ray_instance.is_initialized()  # a connection it did not open is left open


def test_task_errors_surface_as_themselves(ray_instance, streams, tmp_path):
    """A CaturError raised inside a Ray task reaches the caller as that CaturError."""
    missing = tmp_path / "no-model"
    with pytest.raises(CaturError, match="no-model"):
        evaluate_policies(streams, [DeciderSpec(model=str(missing), label="catur")], engine="ray")


def test_worker_version_check(ray_instance):
    """Every node reports its Catur version; a node with another version is named."""
    from importlib.metadata import version

    found = check_workers(ray_instance)
    assert found and set(found.values()) == {version("catur")}
    with pytest.raises(CaturError, match=r"needs catur 0\.0\.0-other installed.*: " + version("catur").replace(".", r"\.")):
        check_workers(ray_instance, expected="0.0.0-other")


def test_engine_reuses_an_open_connection(ray_instance):
    """RayEngine inside a connected process uses it and leaves it open on close."""
    with RayEngine("127.0.0.1:1") as engine:  # the address is not even probed
        assert engine.cpus == 2
    assert ray_instance.is_initialized()


def test_cli_ray_engine_matches_local(ray_instance, tmp_path, capsys):
    """`catur evaluate --engine ray` writes the same policy metrics as `--engine local`,
    the oracle sample (a second evaluation on the same connection) included."""
    trace = tmp_path / "trace.parquet"
    random_trace(5, 300, 3.0).to_parquet(trace)
    common = ["evaluate", str(trace), "--policies", "xen,greedy,core-best-fit", "--model", "default",
              "--oracle-hosts", "1", "--oracle-k", "2", "--quiet"]
    assert main([*common, "--jobs", "1", "--json", str(tmp_path / "local.json")]) == 0
    assert main([*common, "--engine", "ray", "--json", str(tmp_path / "ray.json")]) == 0
    capsys.readouterr()
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert remote["policies"] == local["policies"]
    assert (local["scenario"]["engine"], remote["scenario"]["engine"]) == ("local", "ray")
    assert remote["scenario"]["oracle_sample"] == local["scenario"]["oracle_sample"]
