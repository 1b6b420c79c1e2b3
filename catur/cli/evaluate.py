"""``catur evaluate`` and ``catur demo``: compare NUMA policies on a replayed trace.

The commands only turn options into a :class:`~catur.sim.workload.Workload`, policies and
:class:`~catur.sim.pipeline.EvaluateOptions`, call :func:`catur.sim.pipeline.evaluate`, and
print its :class:`~catur.sim.evaluate.Evaluation` (:func:`report`). The option groups
(workload, cluster, output) are shared with ``catur replay``; their defaults are the
dataclasses' (:mod:`catur.cli.options`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catur.cli.options import add_cluster_arguments, add_command, config_from_args, config_option
from catur.errors import CaturError
from catur.metrics import MetricsConfig
from catur.sim.pipeline import EvaluateOptions
from catur.sim.workload import Workload

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

Metrics (docs/explanation/numa-and-metrics.md; catur/metrics.py): avg defect = mean over VMs of
alpha*COR + beta*RMR averaged over the VM's lifetime; at placement = the same right after
placing; p99 of the lifetime defect; ticket ratio = mean sigmoid(100 * (defect - 0.10));
anomalies = VMs placed with defect > 0.40.
"""


def add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur evaluate`` and ``catur demo`` on the top-level sub-parsers ``sub``."""
    p = add_command(
        sub, "evaluate", cmd_evaluate,
        help="replay a trace over a cluster and compare NUMA policies",
        description="Replay a VM trace (or a built-in synthetic workload) over a modelled "
        "cluster and compare NUMA placement policies on the paper's metrics.",
        epilog=EPILOG_EVALUATE,
    )
    add_workload_arguments(p)
    add_policy_arguments(p)
    add_engine_arguments(p)
    add_stream_arguments(p)

    p = sub.add_parser(
        "demo",
        help="the main job: compare every policy on the embedded synthetic workload",
        description="Run 'catur evaluate --synthetic default --model default' on one week the "
        "shipped model never saw, with plots and JSON written to ./catur-demo/. Needs no download.",
    )
    p.add_argument("--out", default="catur-demo", help="folder for plots and JSON (default: catur-demo)")
    config_option(p, EvaluateOptions, "jobs", type=int, help="worker processes (default: CPU count)")
    p.set_defaults(func=cmd_demo)


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
    config_option(eng, EvaluateOptions, "engine", choices=("local", "ray"), help="local worker processes (default) or Ray")
    config_option(eng, EvaluateOptions, "ray_address", "--ray-address", "--address", metavar="ADDR",
                  help="Ray cluster to join: HEAD:6379 or auto (default: $RAY_ADDRESS, else a local instance)")


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """The workload and cluster options (shared with ``catur replay``); see :func:`workload_from_args`."""
    src = p.add_argument_group("workload")
    src.add_argument("trace", nargs="?", help="trace file (any supported format, gzip ok)")
    src.add_argument("--synthetic", metavar="NAME", help="use a built-in synthetic workload instead of a file")
    config_option(src, Workload, "format", help="trace format (default: auto-detect)")
    config_option(src, Workload, "skip_bad_rows", action="store_true", help="drop malformed rows (counted) instead of failing (of the trace and of --start-state)")
    config_option(src, Workload, "days", metavar="FIRST:LAST", help="evaluate VMs arriving on these days (1-based, inclusive), e.g. 16:31")
    config_option(src, Workload, "seed", type=int, help="seed for synthetic workloads and the random policy (default %(default)s)")
    cluster = p.add_argument_group("cluster")
    add_cluster_arguments(cluster, Workload)
    config_option(cluster, Workload, "start_state", metavar="FILE",
                  help="start from real fragmented hosts: free CPU and RAM (GiB) per NUMA node of each server, "
                  "header CPU1,RAM1,CPU2,RAM2 (e.g. PM_res.csv); its servers become the cluster")


def workload_from_args(args: argparse.Namespace) -> Workload:
    """The :class:`Workload` that the trace argument or --synthetic and the options name."""
    if args.synthetic and args.trace:
        raise CaturError("give either a trace file or --synthetic NAME, not both")
    if not args.synthetic and not args.trace:
        raise CaturError("no workload: give a trace file or --synthetic NAME (try --synthetic default)")
    return config_from_args(Workload, args, source=args.synthetic or args.trace, from_scenario=bool(args.synthetic))


def add_output_arguments(group) -> None:
    """Threshold, JSON, plots, jobs, quiet (shared with ``catur replay``)."""
    config_option(group, MetricsConfig, "anomaly_threshold", type=float,
                  help="defect at placement above which a VM is an anomaly (default %(default)s)")
    group.add_argument("--json", metavar="OUT", help="write the results as JSON")
    group.add_argument("--plots", metavar="DIR", help="write defect CDF and per-day plots (PNG) here")
    config_option(group, EvaluateOptions, "jobs", type=int, help="worker processes (default: CPU count)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def engine_options(args: argparse.Namespace) -> dict:
    """``engine`` and ``ray_address`` (``$RAY_ADDRESS`` for the ray engine when not given)."""
    import os

    engine, address = getattr(args, "engine", "local"), getattr(args, "ray_address", None)
    if engine == "ray":
        address = address or os.environ.get("RAY_ADDRESS") or None
    checked = EvaluateOptions(engine=engine, ray_address=address)  # --ray-address needs --engine ray
    return {"engine": checked.engine, "ray_address": checked.ray_address}


def options_from_args(args: argparse.Namespace) -> EvaluateOptions:
    """The :class:`EvaluateOptions` of the output, policy and engine options given."""
    return config_from_args(
        EvaluateOptions, args,
        **engine_options(args),
        metrics=config_from_args(MetricsConfig, args),
        progress=not args.quiet,
        log=lambda message: print(message, file=sys.stderr),
    )


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options that choose the policies and the outputs (``--policies``, ``--model``, the
    shield, ``--json``, ``--plots``) to ``p``."""
    pol = p.add_argument_group("policies and output")
    pol.add_argument("--policies", help="comma-separated policy names (default: all primitives and baselines; see 'catur policies')")
    config_option(pol, EvaluateOptions, "oracle_hosts", type=int, metavar="N",
                  help="also run the k-step oracle, and count each policy's correctable anomalies, on N "
                  "randomly sampled hosts (0 = off; the oracle is exhaustive, so keep N small)")
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
    config_option(pol, EvaluateOptions, "oracle_k", type=int, help="oracle look-ahead in arrivals, the VM in hand included (default %(default)s)")
    config_option(pol, EvaluateOptions, "baseline", metavar="POLICY",
                  help="compare every policy with POLICY host by host: the change of average defect relative to it with "
                  "its 95%% paired bootstrap interval over hosts and a verdict, in the table and the JSON "
                  "(versus_baseline); e.g. --baseline greedy (it is evaluated too if --policies leaves it out)")
    add_output_arguments(pol)


def policies_from_args(args: argparse.Namespace) -> list:
    """The policies --policies names (default: all primitives, greedy and the baselines), then
    the model and shield entries that --model / --shield-depth add."""
    from catur.decision import DeciderSpec
    from catur.placement import GREEDY
    from catur.policies import BASELINES, PRIMITIVES
    from catur.shield import ShieldConfig

    policies = [p.strip() for p in args.policies.split(",")] if args.policies else [*PRIMITIVES, GREEDY, *BASELINES]
    if args.model:
        policies.append(DeciderSpec(model=args.model, use_gate=not args.no_gate, label="catur"))
    if args.shield_depth:
        shield = ShieldConfig(depth=args.shield_depth, width=args.shield_width / 100.0)
        policies.append(DeciderSpec(model=args.model, shield=shield, use_gate=not args.no_gate))
    elif args.shield_depth < 0:
        raise CaturError(f"--shield-depth must be >= 0, got {args.shield_depth}")
    return policies


def add_stream_arguments(p: argparse.ArgumentParser) -> None:
    """--batch-vms: the memory knob of a streamed (partitioned-directory) evaluation."""
    st = p.add_argument_group(
        "streaming",
        "A trace given as a directory of canonical parquet files with a 'cluster' column (as "
        "written by 'catur traces generate --vms N --out DIR') is evaluated a batch of whole "
        "clusters at a time, so memory depends on the batch, not on the trace; the numbers "
        "are the same as for the trace read whole.",
    )
    config_option(
        st, EvaluateOptions, "batch_vms", type=int, metavar="N",
        help="VMs read and replayed at once from a partitioned trace (whole clusters; default "
        "%(default)s). With --jobs 2, about 1.7 GB in all at 1M, 2.6 GB at 2M; --jobs workers each "
        "replay one batch while the next is read",
    )


def report(evaluation, json_path: str | None = None, plots_dir: str | None = None) -> None:
    """Print the table; write the JSON and the plots when asked."""
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
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(evaluation.to_json(), indent=2))
        print(f"wrote {json_path}", file=sys.stderr)
    if plots_dir:
        for path in write_plots(evaluation, evaluation.trace, evaluation.origin_s, plots_dir):
            print(f"wrote {path}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``catur evaluate``: turn the options into a :class:`~catur.sim.workload.Workload` and
    policies, run :func:`catur.sim.pipeline.evaluate`, print the table and write the JSON and plots
    asked for. Returns the exit status."""
    from catur.sim.pipeline import evaluate

    policies = policies_from_args(args)
    evaluation = evaluate(workload_from_args(args), policies, options_from_args(args))
    report(evaluation, args.json, args.plots)
    return 0


# Days 16-22: a week the shipped model never saw (it trained on days 1-12, validated on 13-15).
DEMO_WORKLOAD = Workload("default", days="16:22", from_scenario=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """``catur demo``: the shipped model and every policy on a week of the built-in workload the
    model never saw; writes ``results.json`` and the plots under ``--out``. Returns the exit status."""
    from catur.decision import DeciderSpec
    from catur.placement import GREEDY
    from catur.policies import BASELINES, PRIMITIVES
    from catur.sim.pipeline import evaluate

    out = Path(args.out)
    print("Catur demo: the shipped model ('catur') and every NUMA policy on one unseen week of the\n"
          "built-in synthetic workload\n")
    policies = [*PRIMITIVES, GREEDY, *BASELINES, DeciderSpec(model="default", label="catur")]
    options = EvaluateOptions(jobs=args.jobs, log=lambda message: print(message, file=sys.stderr))
    report(evaluate(DEMO_WORKLOAD, policies, options), str(out / "results.json"), str(out))
    return 0
