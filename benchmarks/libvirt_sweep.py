"""The operator's sweep of issue 31: ~100 domain XMLs placed with ``--define``, one after the
other, on each of 3 libvirt hosts (libvirt's test driver, no daemon), checking what an
operator relies on:

* **valid XML**: every written domain passes ``virt-xml-validate`` (domain schema);
* **never beyond free memory or a huge page pool**: after every definition, per host node,
  the memory of the counted domains backed by ordinary memory is at most the node's memory
  minus its huge page pools, and the memory of those backed by ``P`` pages at most the ``P``
  pool;
* **no double booking**: before every placement the host's usage as ``place`` reads it
  equals the usage at the start plus every placement defined so far ("unseen" counts the
  placements decided without some of them), and after the definition the usage has grown by
  exactly that placement.

Each placement goes through ``catur libvirt place --in-process --define --json``'s own code
(:func:`catur.cli.libvirt.place_on`) on one held connection, so the definitions stay. The
same sequence is then run with ``--running-only`` (the old default: defined domains not
counted) as the baseline, in the same run.

Hosts: ``default`` = ``test:///default`` (2 cells: 8 CPUs, 2 and 4 GiB; one running domain);
``4node`` = tests/data/libvirt/node-2s4n.xml (2 sockets x 2 nodes of 16 CPUs, 16 GiB each,
four running pinned domains and a defined one); ``hugepages`` = ``test:///default`` read
through tests/data/libvirt/caps-intel-2s.xml with 1 GiB and 2 MiB pools added (2 cells of 40
CPUs, ~94 GiB of which 24 GiB in 1 GiB pages and 8 GiB in 2 MiB pages per cell).

Two modes per host: ``each`` places every domain on the host as it was at the start (then
undefines it): the breadth of placements, and whether every "does not fit" (exit 3) really
exceeds the free memory of its kind ("wrong 3"); ``sequence`` defines them one after the
other (the double-booking check), and is run again with ``--running-only`` as the baseline.

    .venv/bin/python benchmarks/libvirt_sweep.py [--domains 104] [--seed 0] [--json FILE]
    .venv/bin/python benchmarks/libvirt_sweep.py --smoke    # seconds: 4 domains per host

Needs the libvirt bindings (``catur[libvirt]``), virt-xml-validate and xmllint.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from catur.cli.main import build_parser
from catur.cli.libvirt import place_on
from catur.errors import CaturError, DoesNotFit
from catur.hypervisor.domain import parse_domain
from catur.hypervisor.libvirt_host import open_connection, read_host, read_usage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "libvirt"
GIB_PAGE, MIB2_PAGE = 1 << 20, 2048


def domain_xml(i: int, rng: np.random.Generator) -> str:
    """One domain of the sweep's mix: sizes from 1 vCPU / 256 MiB to 32 vCPUs / 96 GiB, a
    quarter with 2 guest cells, a fifth backed by huge pages, some ballooned down, some with
    DIMMs, some with a guest CPU topology of 2 threads per core."""
    vcpus = int(rng.choice([1, 2, 2, 4, 4, 6, 8, 12, 16, 24, 32]))
    mem = int(rng.choice([256, 512, 1024, 2048, 4096, 8192, 12288, 16384, 32768, 65536, 98304]))
    kind = rng.random()
    backing = current = max_memory = cpu = dimms = ""
    if kind < 0.12:
        mem = max(1024, mem // 1024 * 1024)
        backing = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>"
    elif kind < 0.2:
        backing = "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>"
    elif kind < 0.3:
        current = f"<currentMemory unit='MiB'>{max(128, mem // 2)}</currentMemory>"
    if vcpus >= 2 and vcpus % 2 == 0 and rng.random() < 0.25:
        dimm = 512 if (not backing and mem >= 2048 and rng.random() < 0.3) else 0
        topology = (f"<topology sockets='2' dies='1' cores='{vcpus // 4}' threads='2'/>"
                    if vcpus % 4 == 0 and rng.random() < 0.4 else "")
        half = mem // 2
        cpu = (f"<cpu>{topology}<numa><cell id='0' cpus='0-{vcpus // 2 - 1}' memory='{half - dimm}' unit='MiB'/>"
               f"<cell id='1' cpus='{vcpus // 2}-{vcpus - 1}' memory='{mem - half - dimm}' unit='MiB'/></numa></cpu>")
        if dimm:
            max_memory = f"<maxMemory slots='4' unit='MiB'>{mem * 2}</maxMemory>"
            dimms = "".join(f"<memory model='dimm'><target><size unit='MiB'>{dimm}</size><node>{n}</node></target></memory>"
                            for n in (0, 1))
    return (f"<domain type='test'><name>sweep{i:03d}</name>{max_memory}<memory unit='MiB'>{mem}</memory>{current}"
            f"{backing}<vcpu>{vcpus}</vcpu><os><type>hvm</type></os>{cpu}"
            f"<devices><disk type='file' device='disk'><source file='/guest/sweep{i:03d}.img'/>"
            f"<target dev='vda' bus='virtio'/></disk>{dimms}</devices></domain>")


def hugepage_caps() -> str:
    text = (DATA / "caps-intel-2s.xml").read_text()
    return (text.replace("<pages unit='KiB' size='1048576'>0</pages>", "<pages unit='KiB' size='1048576'>24</pages>")
                .replace("<pages unit='KiB' size='2048'>0</pages>", "<pages unit='KiB' size='2048'>4096</pages>"))


def over_capacity(usage, host, kind) -> set[int]:
    """Nodes where the counted domains backed by ``kind`` (None: ordinary memory, else the
    page size in KiB) hold more than that kind's capacity (node memory minus its pools, or
    the pool)."""
    used = sum((d.node_mem_mib for d in usage.domains if d.hugepage_kib == kind), np.zeros(host.num_nodes, np.int64))
    if kind is None:
        cap = host.topology.node_mem_mib - host.hugepage_mib()
    else:
        cap = np.asarray(host.hugepages.get(kind, (0,) * host.num_nodes), dtype=np.int64) * kind // 1024
    return {int(j) for j in np.flatnonzero(used > cap)}


def run_host(label: str, uri: str, extra: list[str], xmls: list[Path], running_only: bool, outdir: Path,
             each: bool = False) -> dict:
    """Place every domain with --define, in sequence (each sees those before), or ``each``
    on the host as it was at the start (undefined again after its checks)."""
    parser = build_parser()
    conn = open_connection(uri)
    try:
        base = ["libvirt", "place", "--connect", uri, *extra, "--in-process", "--define", "--json"]
        if running_only:
            base.append("--running-only")
        caps = None
        if "--capabilities" in extra:
            caps = Path(extra[extra.index("--capabilities") + 1]).read_text()
        host = read_host(conn, nodes_per_socket=2 if "--nodes-per-socket" in extra else 1, capabilities=caps)
        start = read_usage(conn, host)
        expected_vcpus, expected_mem = start.used_vcpus.copy(), start.used_mem_mib.copy()
        counts = {"placed": 0, "does_not_fit": 0, "refused": 0, "not_seen_before": 0, "not_added_after": 0,
                  "placements_beyond_capacity": 0, "wrongly_refused": 0}
        refusals: dict[str, int] = {}
        written = []
        t0 = time.perf_counter()
        for path in xmls:
            before = read_usage(conn, host)
            seen = read_usage(conn, host, include_defined=not running_only)  # what this place decides on
            if not (np.array_equal(seen.used_vcpus, expected_vcpus) and np.array_equal(seen.used_mem_mib, expected_mem)):
                counts["not_seen_before"] += 1
            args = parser.parse_args([*base, "--domain-xml", str(path)])
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    summary = json.loads(place_on(conn, args))
            except DoesNotFit as exc:
                counts["does_not_fit"] += 1
                # Independently: the domain's memory against its kind's free memory summed over
                # the nodes (Catur spills, so that is the whole condition).
                kind = parse_domain(path.read_text()).hugepage_kib
                mib = exc.summary["mem_mib"]
                used = sum((d.node_mem_mib for d in seen.domains if d.hugepage_kib == kind), np.zeros(host.num_nodes, np.int64))
                cap = (host.topology.node_mem_mib - host.hugepage_mib() if kind is None else
                       np.asarray(host.hugepages.get(kind, (0,) * host.num_nodes), dtype=np.int64) * kind // 1024)
                if mib <= np.maximum(cap - used, 0).sum():
                    counts["wrongly_refused"] += 1
                continue
            except CaturError as exc:
                counts["refused"] += 1
                reason = str(exc).split(": ", 2)[-1][:60]
                refusals[reason] = refusals.get(reason, 0) + 1
                continue
            counts["placed"] += 1
            out = outdir / f"{label}-{'each' if each else 'seq'}-{'running' if running_only else 'all'}-{path.name}"
            out.write_text(summary["xml"])
            written.append(out)
            after = read_usage(conn, host)
            added_vcpus = np.zeros(host.num_nodes, np.int64)
            added_mem = np.zeros(host.num_nodes, np.int64)
            for inst in summary["instances"]:
                added_vcpus[host.node_of_cell(inst["cell"])] += inst["vcpus"]
                for cell, mib in inst["mem_mib"].items():
                    added_mem[host.node_of_cell(int(cell))] += mib
            # The placement as defined: usage grew by exactly it (counted through Catur's record).
            grown_v, grown_m = after.used_vcpus - before.used_vcpus, after.used_mem_mib - before.used_mem_mib
            if not (np.array_equal(grown_v, added_vcpus) and np.array_equal(grown_m, added_mem)):
                counts["not_added_after"] += 1
            expected_vcpus, expected_mem = before.used_vcpus + added_vcpus, before.used_mem_mib + added_mem
            kind = parse_domain(summary["xml"]).hugepage_kib
            if {int(j) for j in np.flatnonzero(added_mem)} & over_capacity(after, host, kind):
                counts["placements_beyond_capacity"] += 1
            if each:  # back to the host as it was
                conn.lookupByName(summary["domain"]).undefine()
                expected_vcpus, expected_mem = before.used_vcpus, before.used_mem_mib
        seconds = time.perf_counter() - t0
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith("sweep"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
    return {"host": label, "mode": "each" if each else "sequence", "running_only": running_only, "domains": len(xmls),
            **counts, "refusals": refusals,
            "written": [str(p) for p in written], "seconds": round(seconds, 2)}


def validate(paths: list[str]) -> tuple[int, list[str]]:
    tool = shutil.which("virt-xml-validate")
    bad = []
    for p in paths:
        proc = subprocess.run([tool, p, "domain"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            bad.append(f"{p}: {(proc.stdout + proc.stderr).strip().splitlines()[-1]}")
    return len(paths) - len(bad), bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=104)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--smoke", action="store_true",
                    help="a run of seconds to check the script works: 4 domains per host, every check still made")
    args = ap.parse_args(argv)
    if args.smoke:
        args.domains = 4
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        raise SystemExit("virt-xml-validate (libvirt-clients) and xmllint (libxml2-utils) are needed")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xmls = []
        for i in range(args.domains):
            path = tmp / f"sweep{i:03d}.xml"
            path.write_text(domain_xml(i, rng))
            xmls.append(path)
        caps = tmp / "caps-hugepages.xml"
        caps.write_text(hugepage_caps())
        hosts = [
            ("default", "test:///default", []),
            ("4node", f"test://{(DATA / 'node-2s4n.xml').resolve()}", ["--nodes-per-socket", "2"]),
            ("hugepages", "test:///default", ["--capabilities", str(caps)]),
        ]
        results = []
        for each, running_only in ((True, False), (False, False), (False, True)):
            for label, uri, extra in hosts:
                results.append(run_host(label, uri, extra, xmls, running_only, tmp, each))
        rows = []
        for r in results:
            valid, bad = validate(r.pop("written"))
            r["valid_xml"], r["invalid_xml"] = valid, bad
            rows.append(r)
    print(f"{'host':<10} {'mode':<9} {'counting':<13} {'domains':>7} {'placed':>6} {'exit 3':>6} {'wrong 3':>7} {'refused':>7} "
          f"{'valid XML':>9} {'beyond cap':>10} {'unseen':>6} {'s':>6}")
    for r in rows:
        print(f"{r['host']:<10} {r['mode']:<9} {'running only' if r['running_only'] else 'defined too':<13} {r['domains']:>7} "
              f"{r['placed']:>6} {r['does_not_fit']:>6} {r['wrongly_refused']:>7} {r['refused']:>7} {r['valid_xml']:>4}/{r['placed']:<4} "
              f"{r['placements_beyond_capacity']:>10} {r['not_seen_before']:>6} {r['seconds']:>6}")
    for r in rows:
        for reason, n in r["refusals"].items():
            print(f"  {r['host']} ({'running only' if r['running_only'] else 'defined too'}): {n} refused: {reason}")
        for b in r["invalid_xml"]:
            print(f"  INVALID {b}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    ours = [r for r in rows if not r["running_only"]]
    ok = all(r["valid_xml"] == r["placed"] and r["placements_beyond_capacity"] == 0 and r["not_seen_before"] == 0
             and r["not_added_after"] == 0 and r["wrongly_refused"] == 0 and not r["invalid_xml"] for r in ours)
    for mode in ("each", "sequence"):
        done = [r for r in ours if r["mode"] == mode]
        print(f"{mode}: {sum(r['domains'] for r in done)} placements asked, {sum(r['placed'] for r in done)} placed and defined, "
              f"{sum(r['does_not_fit'] for r in done)} exit 3")
    print(f"all checks (defined domains counted) {'hold' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
