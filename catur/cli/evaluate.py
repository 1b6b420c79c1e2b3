"""``catur evaluate`` and ``catur demo``: compare NUMA policies on a replayed trace."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from catur.errors import CaturError

DEFAULT_TARGET_UTILIZATION = 0.9

EPILOG_EVALUATE = """examples:
  catur evaluate --synthetic default
  catur evaluate ../shared/traces/huawei-east-1-lt.csv.gz --days 16:31 --json out.json --plots plots/
  catur evaluate trace.parquet --cluster my-cluster.yaml --policies xen,core-best-fit,mem-most-idle
  catur evaluate trace.csv.gz --target-utilization 0.8 --jobs 2
  catur evaluate month/ --policies xen --model default --shield-depth 1 --batch-vms 1000000
      (month/ from 'catur traces generate --vms 100000000 --out month/': streamed by clusters)
  catur evaluate trace.parquet --engine ray --ray-address 10.0.0.1:6379
  catur evaluate VM_data_C1.csv --start-state PM_res.csv --model default --shield-depth 1
      (Huawei Cloud's NUMA dataset: a static sequence packed onto 1,710 fragmented servers)
  catur evaluate huawei-east-1-lt.csv.gz --start-state PM_res.csv --days 1:3
      (a time-based trace warm-started on real fragmentation)

The trace is a public format (detected from its header, or --format) or Catur's canonical
trace. Public traces have no hosts: VMs are first admitted onto a cluster (--cluster, a
shipped mix or a YAML/TOML file) sized so the trace's peak demand reaches
--target-utilization of the binding resource. The same admission serves every policy.

--start-state FILE (free CPU and RAM per NUMA node of each server, like PM_res.csv) replaces
that cluster: its servers are the hosts, each starting as used as the file says (capacity
inferred as the largest free amount per node over all servers, or given by --cluster, one
host per row). The used part is resident load: it counts in COR but in no metric. Traces
with placement-group labels (VM_data: anti-affinity, affinity, fault_domain) are admitted
honouring them; the table then adds 'clean' (VMs placed with no overcommit and no remote
memory) and the header counts the VMs no host could take, by reason.

Metrics (README, "Concepts in one page"; catur/metrics.py): avg defect = mean over VMs of
alpha*COR + beta*RMR averaged over the VM's lifetime; at placement = the same right after
placing; p99 of the lifetime defect; ticket ratio = mean sigmoid(100 * (defect - 0.10));
anomalies = VMs placed with defect > 0.40.
"""


def add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="replay a trace over a cluster and compare NUMA policies",
        description="Replay a VM trace (or a built-in synthetic workload) over a modelled "
        "cluster and compare NUMA placement policies on the paper's metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_EVALUATE,
    )
    add_scenario_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "demo",
        help="the main job: compare every policy on the embedded synthetic workload",
        description="Run 'catur evaluate --synthetic default --model default' on one week the "
        "shipped model never saw, with plots and JSON written to ./catur-demo/. Needs no download.",
    )
    p.add_argument("--out", default="catur-demo", help="folder for plots and JSON (default: catur-demo)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    p.set_defaults(func=cmd_demo)


def add_scenario_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_arguments(p)
    add_policy_arguments(p)
    add_engine_arguments(p)
    add_stream_arguments(p)


ENGINE_HELP = """Where the replay runs. 'local' (default): --jobs worker processes on this machine.
'ray': Ray tasks (pip install "catur[ray]"); the same tasks and the same merge, so the
numbers are identical to 'local'. Without --ray-address a private Ray instance with --jobs
CPUs is started here and stopped afterwards. To use a cluster of machines:

  ray start --head --port 6379              # on the head node
  ray start --address HEAD:6379             # on every other node
  catur evaluate TRACE --engine ray --ray-address HEAD:6379   # anywhere in the cluster
                                            # (or 'auto' on a cluster node, or RAY_ADDRESS)

Every node needs Ray and the same catur version installed (checked on connecting). The
trace is read here and shipped to the workers, so only this machine needs the file; a
--model directory (other than 'default') must be readable at the same path on every node.
With Ray's token authentication on, this machine needs the cluster's token (RAY_AUTH_TOKEN,
or the file ~/.ray/auth_token; 'ray get-auth-token' on the head prints it)."""


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """--engine and --ray-address (see :data:`ENGINE_HELP`)."""
    eng = p.add_argument_group("engine", ENGINE_HELP)
    eng.add_argument("--engine", choices=("local", "ray"), default="local", help="local worker processes (default) or Ray")
    eng.add_argument(
        "--ray-address",
        "--address",
        dest="ray_address",
        metavar="ADDR",
        help="Ray cluster to join: HEAD:6379 or auto (default: $RAY_ADDRESS, else a local instance)",
    )


def engine_options(args: argparse.Namespace) -> dict:
    """``engine`` and ``ray_address`` for :func:`~catur.sim.evaluate.evaluate_policies`."""
    import os

    engine = getattr(args, "engine", "local")
    address = getattr(args, "ray_address", None)
    if engine != "ray":
        if address:
            raise CaturError(f"--ray-address {address} needs --engine ray")
        return {"engine": engine, "ray_address": None}
    return {"engine": engine, "ray_address": address or os.environ.get("RAY_ADDRESS") or None}


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload and cluster options (shared with ``catur replay``)."""
    src = p.add_argument_group("workload")
    src.add_argument("trace", nargs="?", help="trace file (any supported format, gzip ok)")
    src.add_argument("--synthetic", metavar="NAME", help="use a built-in synthetic workload instead of a file")
    src.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    src.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (counted) instead of failing (of the trace and of --start-state)")
    src.add_argument("--days", metavar="FIRST:LAST", help="evaluate VMs arriving on these days (1-based, inclusive), e.g. 16:31")
    src.add_argument("--seed", type=int, default=0, help="seed for synthetic workloads and the random policy (default 0)")
    cl = p.add_argument_group("cluster")
    cl.add_argument("--cluster", default=None, help="shipped mix (mixed, intel-2s, amd-2s-nps2, amd-2s-nps4) or a YAML/TOML file (default: mixed; with --start-state: capacities inferred)")
    cl.add_argument(
        "--start-state",
        metavar="FILE",
        help="start from real fragmented hosts: free CPU and RAM (GiB) per NUMA node of each server, "
        "header CPU1,RAM1,CPU2,RAM2 (e.g. PM_res.csv); its servers become the cluster",
    )
    cl.add_argument(
        "--cpu-overcommit",
        type=float,
        help="vCPUs admitted per host core (default: the cluster file's, else 1.0); the benchmark scenario uses 1.02",
    )
    cl.add_argument(
        "--target-utilization",
        type=float,
        default=DEFAULT_TARGET_UTILIZATION,
        help=f"size the cluster so peak demand is this fraction of capacity (default {DEFAULT_TARGET_UTILIZATION}); 0 keeps the file's host counts",
    )


def add_output_arguments(group) -> None:
    """Threshold, JSON, plots, jobs, quiet (shared with ``catur replay``)."""
    group.add_argument("--anomaly-threshold", type=float, default=0.40, help="defect at placement above which a VM is an anomaly (default 0.40)")
    group.add_argument("--json", metavar="OUT", help="write the results as JSON")
    group.add_argument("--plots", metavar="DIR", help="write defect CDF and per-day plots (PNG) here")
    group.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    pol = p.add_argument_group("policies and output")
    pol.add_argument("--policies", help="comma-separated policy names (default: all primitives and baselines; see 'catur policies')")
    pol.add_argument(
        "--oracle-hosts",
        type=int,
        default=0,
        metavar="N",
        help="also run the k-step oracle, and count each policy's correctable anomalies, on N "
        "randomly sampled hosts (0 = off; the oracle is exhaustive, so keep N small)",
    )
    pol.add_argument(
        "--model",
        metavar="DIR",
        help="add a trained policy (a model directory, or 'default' for the shipped model), named 'catur'",
    )
    pol.add_argument(
        "--shield-depth",
        type=int,
        default=0,
        metavar="D",
        help="add the shielded policy ('catur+shield', or 'greedy+shield' without --model) with look-ahead depth D (0 = off)",
    )
    pol.add_argument(
        "--shield-width",
        type=float,
        default=5.0,
        metavar="N",
        help="shield: a VM type is popular when at least N%% of recent requests have it (default 5)",
    )
    pol.add_argument("--no-gate", action="store_true", help="do not use the model's uncertainty gate")
    pol.add_argument("--oracle-k", type=int, default=5, help="oracle look-ahead in arrivals, the VM in hand included (default 5)")
    add_output_arguments(pol)


def decider_specs(args: argparse.Namespace) -> list:
    """The model and shield entries that --model / --shield-depth add to the comparison."""
    from catur.decision import DeciderSpec
    from catur.model import PolicyModel
    from catur.shield import ShieldConfig

    specs = []
    if args.model:
        PolicyModel.load(args.model)  # fail now, with the reason, not in a worker
        specs.append(DeciderSpec(model=args.model, use_gate=not args.no_gate, label="catur"))
    if args.shield_depth:
        shield = ShieldConfig(depth=args.shield_depth, width=args.shield_width / 100.0)
        specs.append(DeciderSpec(model=args.model, shield=shield, use_gate=not args.no_gate))
    elif args.shield_depth < 0:
        raise CaturError(f"--shield-depth must be >= 0, got {args.shield_depth}")
    return specs


def load_workload(args: argparse.Namespace):
    """The canonical trace DataFrame and a label for it, from a file or --synthetic."""
    if args.synthetic and args.trace:
        raise CaturError("give either a trace file or --synthetic NAME, not both")
    if args.synthetic:
        from catur.traces.synthetic import generate

        return generate(args.synthetic, seed=args.seed), f"synthetic:{args.synthetic}"
    if not args.trace:
        raise CaturError("no workload: give a trace file or --synthetic NAME (try --synthetic default)")
    from catur.traces.readers import read_trace

    df, report = read_trace(args.trace, fmt=args.format, skip_bad_rows=args.skip_bad_rows)
    if report.rows_skipped:
        print(f"skipped {report.rows_skipped} malformed rows of {args.trace}", file=sys.stderr)
    return df, Path(args.trace).name


def scenario_from_args(args: argparse.Namespace, df):
    """The admitted trace window the scenario options describe (shared with ``catur replay``)."""
    from catur.sim.admission import prepare_scenario

    start = None
    if getattr(args, "start_state", None):
        from catur.sim.start_state import load_start_state

        start = load_start_state(args.start_state, args.cluster, cpu_overcommit=args.cpu_overcommit, skip_bad_rows=args.skip_bad_rows)
        if start.rows_skipped:
            print(f"skipped {start.rows_skipped} malformed rows of {args.start_state}", file=sys.stderr)
    return prepare_scenario(df, args.cluster, args.days, args.target_utilization, args.cpu_overcommit, start)


def scenario_facts(args: argparse.Namespace, df, label: str, scenario, config, **extra) -> dict:
    """The ``scenario`` object of the JSON output: what was replayed, on what, how."""
    from catur.model import weights_sha256
    from catur.sim.evaluate import admission_summary

    if extra.get("model"):  # which model was measured: checked by catur models add --evaluation
        extra["model_sha256"] = weights_sha256(extra["model"])
    # A streamed evaluation's admission is a tally of its batches: no start state, no groups.
    start = getattr(scenario.admission, "start", None)
    groups = getattr(scenario.admission, "groups", None)
    if start is not None:
        extra = {"start_state": start.to_dict(), **extra}
    if groups is not None:
        extra = {"placement_groups": groups.to_dict(), **extra}
    return {
        "trace": label,
        "vms_in_trace": int(len(df)) if df is not None else None,  # streamed: given in extra
        "days": args.days or "all",
        "window_s": [scenario.start_s, scenario.end_s],
        "cluster": scenario.spec.name,
        "cpu_overcommit": scenario.spec.cpu_overcommit,
        "target_utilization": (args.target_utilization or None) if start is None else None,
        **admission_summary(scenario.admission),
        "anomaly_threshold": config.anomaly_threshold,
        "ticket_c1": config.ticket_c1,
        "ticket_c2": config.ticket_c2,
        "seed": args.seed,
        **extra,
        "wall_s": None,
    }


def run_evaluation(args: argparse.Namespace, policies: list[str] | None = None):
    from catur.metrics import MetricsConfig
    from catur.placement import GREEDY
    from catur.policies import BASELINES, PRIMITIVES
    from catur.sim.admission import parse_days
    from catur.sim.evaluate import Evaluation, check_policy_name

    started = time.perf_counter()
    if policies is None:
        policies = [p.strip() for p in args.policies.split(",")] if args.policies else [*PRIMITIVES, GREEDY, *BASELINES]
    policies = list(dict.fromkeys(policies))
    policies += decider_specs(args)
    for name in policies:
        if isinstance(name, str):
            check_policy_name(name)
    if args.oracle_hosts < 0 or args.oracle_k < 1:
        raise CaturError(f"--oracle-hosts must be >= 0 and --oracle-k >= 1, got {args.oracle_hosts} and {args.oracle_k}")
    if args.jobs is not None and args.jobs < 1:
        raise CaturError(f"--jobs must be >= 1, got {args.jobs}")
    config = MetricsConfig(anomaly_threshold=args.anomaly_threshold)
    engine = engine_options(args)
    with contextlib.ExitStack() as held:
        if engine["engine"] == "ray":
            # Connect first, so a bad address fails before a big trace is read; one connection
            # serves both evaluations below.
            from catur.sim.distributed import RayEngine

            held.enter_context(RayEngine(engine["ray_address"], num_cpus=args.jobs))
        if streamed_trace(args):  # a partitioned directory: batches of clusters, bounded memory
            return _run_streamed(args, policies, config, engine, started)
        df, label = load_workload(args)
        scenario_ = scenario_from_args(args, df)
        results, oracle_sample = _evaluate_scenario(args, scenario_.streams, policies, config, engine)
    if scenario_.admission.start is not None:
        from catur.sim.start_state import clean_placements

        clean_placements(results)
    origin_s, _ = parse_days(None, df)
    scenario = scenario_facts(
        args, df, label, scenario_, config,
        model=args.model,
        shield={"depth": args.shield_depth, "width": args.shield_width / 100.0} if args.shield_depth else None,
        oracle_sample=oracle_sample,
        engine=engine["engine"],
    )
    evaluation = Evaluation(scenario, results)
    scenario["wall_s"] = round(time.perf_counter() - started, 3)
    return evaluation, df, origin_s


def _evaluate_scenario(args: argparse.Namespace, streams, policies: list, config, engine: dict):
    """Every policy on every host, then (with --oracle-hosts) the oracle sample."""
    from tqdm import tqdm

    import numpy as np

    from catur.sim.evaluate import evaluate_policies
    from catur.sim.replay import ORACLE

    total = sum(s.trace.num_vms for s in streams) * len(policies)
    with tqdm(total=total, unit="VM", desc="replaying", disable=args.quiet or None, file=sys.stderr) as bar:
        results = evaluate_policies(
            streams, policies, jobs=args.jobs, seed=args.seed, config=config, progress=bar.update, **engine
        )
    oracle_sample = None
    if args.oracle_hosts:
        rng = np.random.default_rng(args.seed)
        picked = np.sort(rng.choice(len(streams), size=min(args.oracle_hosts, len(streams)), replace=False))
        sample = [streams[i] for i in picked]
        # The sampled run adds the oracle's own row unless it already ran on every host.
        names = [p for p in policies if p != ORACLE] + ([] if ORACLE in results else [ORACLE])
        total = sum(s.trace.num_vms for s in sample) * len(names)
        with tqdm(total=total, unit="VM", desc="oracle sample", disable=args.quiet or None, file=sys.stderr) as bar:
            sampled = evaluate_policies(
                sample, names, jobs=args.jobs, seed=args.seed, config=config, progress=bar.update,
                count_correctable=True, oracle_k=args.oracle_k, **engine,
            )
        for name, result in sampled.items():
            if name == ORACLE:
                results[ORACLE] = result
                result.extra["oracle_sample_anomalies"] = result.summary.anomalies
            else:
                results[name].extra["correctable_anomalies"] = result.extra["correctable_anomalies"]
                results[name].extra["oracle_sample_anomalies"] = result.summary.anomalies
        oracle_sample = {"hosts": [int(s.host) for s in sample], "k": args.oracle_k, "vms": int(next(iter(sampled.values())).summary.vms)}
    return results, oracle_sample


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """--batch-vms: the memory knob of a streamed (partitioned-directory) evaluation."""
    st = p.add_argument_group(
        "streaming",
        "A trace given as a directory of canonical parquet files with a 'cluster' column (as "
        "written by 'catur traces generate --vms N --out DIR') is evaluated a batch of whole "
        "clusters at a time, so memory depends on the batch, not on the trace; the numbers "
        "are the same as for the trace read whole.",
    )
    st.add_argument(
        "--batch-vms", type=int, default=1_000_000, metavar="N",
        help="VMs read and replayed at once from a partitioned trace (whole clusters; default "
        "1000000). With --jobs 2, about 1.7 GB in all at 1M, 2.6 GB at 2M; --jobs workers each "
        "replay one batch while the next is read",
    )


def streamed_trace(args: argparse.Namespace) -> bool:
    """Whether ``catur evaluate`` streams: the trace is a partitioned directory."""
    from catur.traces.partitioned import is_partitioned

    return bool(args.trace) and not args.synthetic and args.format in ("auto", "partitioned") and is_partitioned(args.trace)


def _run_streamed(args: argparse.Namespace, policies: list, config, engine: dict, started: float):
    """:func:`run_evaluation` for a partitioned trace (:mod:`catur.sim.streaming`)."""
    from dataclasses import replace

    from tqdm import tqdm

    from catur.sim.cluster import load_cluster
    from catur.sim.streaming import StreamConfig, evaluate_streamed
    from catur.traces.partitioned import PartitionedTrace

    if getattr(args, "start_state", None):
        raise CaturError("--start-state is not available for a partitioned trace: its clusters are sized from the trace, a start state fixes the hosts")
    if args.oracle_hosts:
        raise CaturError("--oracle-hosts is not available for a partitioned trace: evaluate a few of its clusters as a file for the oracle sample")
    if args.target_utilization is not None and not 0 <= args.target_utilization <= 1:
        raise CaturError(f"target utilization must be in [0, 1], got {args.target_utilization}")
    stream = StreamConfig(batch_vms=getattr(args, "batch_vms", StreamConfig.batch_vms))
    trace = PartitionedTrace.open(args.trace)
    spec = load_cluster(args.cluster)
    if args.cpu_overcommit is not None:
        spec = replace(spec, cpu_overcommit=args.cpu_overcommit)
    total = trace.num_rows * len({getattr(p, "name", p) for p in policies})
    with tqdm(total=total, unit="VM", desc="streaming", disable=args.quiet or None, file=sys.stderr) as bar:
        evaluation, scenario_, run = evaluate_streamed(
            trace, spec, policies, days=args.days, target_utilization=args.target_utilization,
            stream=stream, jobs=args.jobs, seed=args.seed, config=config, skip_bad_rows=args.skip_bad_rows,
            progress=bar.update, evaluate_options=engine,
        )
    if run.rows_skipped:
        print(f"skipped {run.rows_skipped} malformed rows of {args.trace}", file=sys.stderr)
    evaluation.scenario.update(scenario_facts(
        args, None, Path(args.trace).name, scenario_, config,
        vms_in_trace=trace.num_rows,
        model=args.model,
        shield={"depth": args.shield_depth, "width": args.shield_width / 100.0} if args.shield_depth else None,
        oracle_sample=None,
        engine=engine["engine"],
        streaming={"batches": run.batches, "clusters": run.clusters, "batch_vms": stream.batch_vms,
                   "largest_batch_vms": run.largest_batch_vms, "peak_rss_mib": run.peak_rss_mib},
    ))
    evaluation.scenario["wall_s"] = round(time.perf_counter() - started, 3)
    return evaluation, None, scenario_.origin_s


def report(evaluation, df, origin_s, args: argparse.Namespace) -> None:
    from catur.sim.report import format_table, start_state_lines, write_plots

    s = evaluation.scenario
    print(
        f"{s['trace']}: {s['vms_in_trace']} VMs, days {s['days']}, cluster {s['cluster']} "
        f"({s['hosts']} hosts: {', '.join(f'{v}× {k}' for k, v in s['hosts_by_topology'].items())}), "
        f"{s['rejected_vms']} VMs rejected by admission"
    )
    for line in start_state_lines(s):
        print(line)
    print(format_table(evaluation))
    print(f"({s['wall_s']:.1f} s; defects and ratios in percent, lower is better)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(evaluation.to_json(), indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        for path in write_plots(evaluation, df, origin_s, args.plots):
            print(f"wrote {path}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    evaluation, df, origin_s = run_evaluation(args)
    report(evaluation, df, origin_s, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser()
    add_scenario_arguments(parser)
    out = Path(args.out)
    # Days 16-22: a week the shipped model never saw (it trained on days 1-12, validated on 13-15).
    argv = ["--synthetic", "default", "--days", "16:22", "--model", "default",
            "--json", str(out / "results.json"), "--plots", str(out)]
    if args.jobs:
        argv += ["--jobs", str(args.jobs)]
    eval_args = parser.parse_args(argv)
    print("Catur demo: the shipped model ('catur') and every NUMA policy on one unseen week of the\n"
          "built-in synthetic workload\n")
    return cmd_evaluate(eval_args)
