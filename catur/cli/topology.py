"""``catur topology list|show|detect`` and ``catur policies``: host NUMA models and the policies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from catur.cli.options import add_command

EPILOG_TOPOLOGY = """examples:
  catur topology list
  catur topology show amd-2s-nps2
  catur topology show my-host.yaml --json
  catur topology detect --save this-host.yaml
"""


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


# --- topology ------------------------------------------------------------------------------------


def cmd_topology_list(args: argparse.Namespace) -> int:
    """``catur topology list``: the shipped presets."""
    from catur.topology import PRESETS

    for name, topology in PRESETS.items():
        print(
            f"{name:<14} {topology.num_nodes} nodes, {topology.num_sockets} sockets, "
            f"{int(topology.node_cores[0])} cores and "
            f"{topology.node_mem_mib[0] / 1024:g} GiB per node"
        )
    return 0


def cmd_topology_show(args: argparse.Namespace) -> int:
    """``catur topology show``: a preset's or a file's nodes, sockets and distances (``--json`` for
    the file format)."""
    from catur.topology import resolve_topology

    topology = resolve_topology(args.name)
    if args.json:
        _print_json(topology.to_dict())
    else:
        print(topology.describe())
    return 0


def cmd_topology_detect(args: argparse.Namespace) -> int:
    """``catur topology detect``: this machine's topology from ``/sys/devices/system/node``
    (``--save`` writes it as a topology file)."""
    import yaml

    from catur.topology import detect_topology

    topology = detect_topology(args.sysfs, name=args.name)
    if args.save:
        Path(args.save).write_text(yaml.safe_dump(topology.to_dict(), sort_keys=False))
        print(f"wrote {args.save}", file=sys.stderr)
    if args.json:
        _print_json(topology.to_dict())
    else:
        print(topology.describe())
    return 0


# The entries a model adds to a comparison (evaluate's options, not --policies names).
MODEL_POLICIES = (
    ("catur", "a trained model: catur evaluate --model DIR ('default' = the shipped after-state scorer, "
              "'ppo-synthetic' = the earlier primitive-action model)"),
    ("catur+shield", "the model behind speculative shielding: --model DIR --shield-depth D"),
    ("greedy+shield", "greedy behind the shield: --shield-depth D without --model"),
)

EPILOG_POLICIES = """Every name under primitives, baselines, rules and yardstick can be given to
'catur evaluate --policies' (oracle is slow; '--oracle-hosts N' runs it on a sample of hosts). The model entries are added by evaluate's --model and
--shield-depth options, not by name. The service decides with 'catur' when it has a model,
else with 'greedy'.

examples:
  catur policies
  catur evaluate --synthetic default --policies xen,greedy,oracle --days 1:2
"""


def cmd_policies(args: argparse.Namespace) -> int:
    """``catur policies``: every policy name with its kind and what it chooses."""
    from catur.placement import GREEDY
    from catur.policies import POLICIES
    from catur.resident import DEFAULT_WEIGHT, RESIDENT_GREEDY

    for kind in ("primitive", "baseline"):
        print(f"{kind}s:")
        for policy in POLICIES.values():
            if policy.kind == kind:
                print(f"  {policy.name:<15} {policy.summary}")
    print("rules over the four primitives:")
    print(f"  {GREEDY:<15} the primitive with the lowest defect for the VM in hand")
    print(
        f"  {RESIDENT_GREEDY:<15} greedy + {DEFAULT_WEIGHT:g} x sum over nodes of resident VMs x COR rise "
        "(needs per-node resident counts; greedy without them)"
    )
    print("yardstick (evaluation only):")
    print(f"  {'oracle':<15} k-step look-ahead over the host's next known events (not deployable)")
    print("models (catur evaluate --model/--shield-depth):")
    for name, summary in MODEL_POLICIES:
        print(f"  {name:<15} {summary}")
    return 0


def add_topology_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``catur topology`` (list, show, detect) and ``catur policies`` on ``sub``."""
    topo = add_command(
        sub, "topology", None,
        help="host NUMA topologies: list presets, show one, detect this machine's",
        description="Host NUMA topologies: nodes with cores and memory, sockets, distances.",
        epilog=EPILOG_TOPOLOGY,
    )
    topo_sub = topo.add_subparsers(dest="topology_command", metavar="ACTION", required=True)
    p = topo_sub.add_parser("list", help="list the shipped presets")
    p.set_defaults(func=cmd_topology_list)
    p = topo_sub.add_parser(
        "show",
        help="show a preset or a topology file",
        description="Show a topology: a preset name (see 'catur topology list') or a "
        "YAML/TOML file with 'nodes' (cores, mem_gib, socket) and optional 'distances'.",
    )
    p.add_argument("name", metavar="PRESET|FILE")
    p.add_argument("--json", action="store_true", help="print as JSON (the file format)")
    p.set_defaults(func=cmd_topology_show)
    p = topo_sub.add_parser(
        "detect",
        help="read this machine's topology from /sys/devices/system/node",
        description="Read the NUMA topology of the machine this runs on from Linux sysfs: "
        "CPUs per node, MemTotal per node, the SLIT distance matrix and sockets.",
    )
    p.add_argument("--sysfs", default="/sys", help="sysfs root to read (default: /sys)")
    p.add_argument("--name", default="detected", help="name to give the topology")
    p.add_argument("--save", metavar="FILE", help="also write it as a YAML topology file")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_topology_detect)

    p = sub.add_parser(
        "policies",
        help="list the placement policies",
        description="List the NUMA placement policies Catur can replay and compare, with what "
        "each one does: the four primitives (a learned policy's actions), the hypervisor "
        "baselines, the search policies greedy and oracle, and the model-based entries.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_POLICIES,
    )
    p.set_defaults(func=cmd_policies)
