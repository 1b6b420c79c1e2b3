"""The retraining job's outcome as Prometheus metrics, so that an alert can fire on it.

A batch job is not scraped: it leaves its metrics where Prometheus can find them after it has
exited. ``catur retrain`` does both usual things (either, or both):

* ``--metrics-textfile PATH`` — a file in node_exporter's textfile collector format, which
  node_exporter (``--collector.textfile.directory``) exposes on its own ``/metrics``. Written
  atomically (a temporary file renamed over it), so a scrape never reads half of it;
* ``--pushgateway URL`` — a push to a Prometheus Pushgateway, job ``catur-retrain``, grouped
  by registry (``prometheus_client.push_to_gateway``: the group is replaced each run).

Only a run that judged the model writes: healthy, improved (a healthy model's candidate promoted),
would-improve (``--dry-run``), promoted, promoted-greedy (greedy served as a
rule version), would-promote (``--dry-run``) or
kept. A run refused by the lock or ended by an error leaves the previous metrics in place, so
``catur_retrain_last_run_timestamp_seconds`` grows old and the staleness alert fires.

=================================================  ======  ==========================================
metric                                             type    meaning
=================================================  ======  ==========================================
``catur_retrain_outcome{status}``                  gauge   1 for this run's status (healthy, improved, would-improve,
                                                           promoted, promoted-greedy, would-promote, kept), 0 else
``catur_retrain_exit_code``                        gauge   ``catur retrain``'s exit status (0 or 3)
``catur_retrain_cluster_collapsed{cluster}``       gauge   1 = the model checked is clearly worse than
                                                           a primitive or greedy on this cluster
``catur_retrain_cluster_gap_ratio{cluster}``       gauge   its average defect relative to the best
                                                           baseline's (primitives, greedy), minus 1
``catur_retrain_improvement_ratio``                gauge   a healthy run's candidate against the current
                                                           model on the held-out days (avg defect ratio
                                                           minus 1; < 0: better); absent when none
``catur_retrain_serving_collapsed_clusters``       gauge   clusters on which the model serving
                                                           *after* the run still loses
``catur_retrain_duration_seconds``                 gauge   the run's wall time
``catur_retrain_last_run_timestamp_seconds``       gauge   when the run finished (Unix time)
=================================================  ======  ==========================================

The alert rules on them are ``CaturRetrainKeptCollapsedModel`` and ``CaturRetrainStale`` in
``deploy/prometheus/rules.yml``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from catur.errors import CaturError

STATUSES = ("healthy", "improved", "would-improve", "promoted", "promoted-greedy", "would-promote", "kept")
JOB = "catur-retrain"


def outcome_registry(outcome, finished_at: float | None = None) -> CollectorRegistry:
    """A fresh registry holding ``outcome``'s metrics (a :class:`~catur.training.retrain.RetrainOutcome`)."""
    if outcome.status not in STATUSES:
        raise CaturError(f"retrain outcome status {outcome.status!r} is not one of {', '.join(STATUSES)}")
    registry = CollectorRegistry()
    status = Gauge("catur_retrain_outcome", "The last retrain run's outcome (1 for its status).", ("status",), registry=registry)
    for name in STATUSES:
        status.labels(name).set(1 if name == outcome.status else 0)
    Gauge("catur_retrain_exit_code", "Exit status of the last retrain run (0 healthy/promoted, 3 kept).", registry=registry).set(
        outcome.exit_code
    )
    collapsed = Gauge(
        "catur_retrain_cluster_collapsed", "1 if the model checked is clearly worse than a primitive or greedy on the cluster.", ("cluster",), registry=registry
    )
    gap = Gauge(
        "catur_retrain_cluster_gap_ratio",
        "Model average defect relative to the best baseline's (primitives, greedy), minus 1 (> 0: losing).", ("cluster",), registry=registry,
    )
    # Every cluster is judged (a small one simply shows no clear difference: not collapsed).
    for cluster, verdict in sorted(outcome.before.clusters.items()):
        collapsed.labels(cluster).set(1 if verdict.failing else 0)
        gap.labels(cluster).set(verdict.gap)
    # After a promotion the new model serves and its verdicts are the ones that count; a
    # kept or would-promote run leaves the checked model serving.
    serving = outcome.after if outcome.status in ("promoted", "promoted-greedy", "improved") and outcome.after else outcome.before
    Gauge(
        "catur_retrain_serving_collapsed_clusters", "Clusters on which the model serving after the run is clearly worse than a primitive or greedy.",
        registry=registry,
    ).set(sum(v.failing for v in serving.clusters.values()))
    versus = (getattr(outcome, "improvement", None) or {}).get("versus_current")  # older outcomes have none
    if versus and versus.get("baseline_avg_defect"):
        Gauge("catur_retrain_improvement_ratio", "A healthy run's candidate vs the current model on held-out days (ratio - 1).",
              registry=registry).set(versus["model_avg_defect"] / versus["baseline_avg_defect"] - 1.0)
    Gauge("catur_retrain_duration_seconds", "Wall time of the last retrain run.", registry=registry).set(outcome.wall_s)
    Gauge("catur_retrain_last_run_timestamp_seconds", "When the last retrain run finished (Unix time).", registry=registry).set(
        time.time() if finished_at is None else finished_at
    )
    return registry


def check_textfile_path(path: str | Path) -> Path:
    """``path`` if node_exporter would read it (``*.prom``) and its directory exists."""
    path = Path(path)
    if path.suffix != ".prom":
        raise CaturError(f"--metrics-textfile {str(path)!r}: node_exporter's textfile collector reads only *.prom files")
    if not path.parent.is_dir():
        raise CaturError(f"--metrics-textfile {str(path)!r}: directory {str(path.parent)!r} does not exist")
    return path


def write_textfile(registry: CollectorRegistry, path: str | Path) -> None:
    """Write ``registry`` for node_exporter's textfile collector, atomically (a temporary file
    renamed over ``path``: a scrape never reads half of it)."""
    path = check_textfile_path(path)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise CaturError(f"--metrics-textfile {str(path)!r}: cannot write: {exc.strerror}") from exc


def push(registry: CollectorRegistry, gateway: str, registry_dir: str | Path, timeout: float = 10.0) -> None:
    """Push ``registry`` to the Pushgateway at ``gateway`` (``http://host:9091``), job
    :data:`JOB`, grouped by the model registry's path (two registries do not overwrite each
    other)."""
    try:
        push_to_gateway(gateway, job=JOB, registry=registry, grouping_key={"registry": str(Path(registry_dir).resolve())}, timeout=timeout)
    except OSError as exc:  # URLError, connection refused, HTTP errors
        raise CaturError(f"--pushgateway {gateway}: push failed: {exc}") from exc
