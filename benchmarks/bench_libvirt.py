"""What the libvirt host agent costs, against what libvirt and the decision cost in the same run.

Two measurements on libvirt's test driver (no daemon), each a ratio against a baseline timed in
the same run, interleaved round by round (baseline, ours, baseline, ours, ...) so that a busy
machine slows both alike:

1. **usage** — ``read_usage`` on a host of ``N`` running domains (a test-driver node file written
   to a temporary directory: 4 nodes, domains pinned to one node, wide 2-cell ones with
   memnodes, unpinned ones), against the bare libvirt calls it cannot avoid
   (``listAllDomains`` + ``XMLDesc`` per domain). The ratio is the whole read over libvirt's
   part: what parsing the XML and applying the counting rule add.
2. **place, in process** — one new domain: parse its XML, decide (greedy, depth-1 shield),
   write the tuning and serialise it, against the decision alone (``Decider.decide`` on the
   same usage). The ratio is the whole ``place`` over the decision.

    .venv/bin/python benchmarks/bench_libvirt.py [--domains 50,400] [--rounds 7] [--places 300]
    .venv/bin/python benchmarks/bench_libvirt.py --smoke   # a second: 8 domains, 1 round, 10 places
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from catur.decision import DeciderSpec
from catur.hypervisor.domain import parse_domain, read_xml
from catur.hypervisor.libvirt_host import libvirt_module, open_connection, read_host, read_usage
from catur.hypervisor.tuning import to_text, vm_request, write_placement
from catur.shield import ShieldConfig

HEAD = """<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
  <cpu><mhz>2400</mhz><model>x86_64</model><active>256</active><nodes>4</nodes><sockets>1</sockets><cores>32</cores><threads>2</threads></cpu>
  <memory>1073741824</memory>
"""
DEVICES = """<devices>
      <disk type='file' device='disk'><source file='/guest/{name}.img'/><target dev='vda' bus='virtio'/></disk>
      <interface type='network'><mac address='52:54:00:00:{a:02x}:{b:02x}'/><source network='default'/><model type='virtio'/></interface>
      <memballoon model='virtio'/>
    </devices>"""


def domain_xml(i: int) -> str:
    name = f"vm{i}"
    devices = DEVICES.format(name=name, a=i // 256, b=i % 256)
    kind = i % 4
    if kind == 3:  # unpinned
        return f"<domain type='test'><name>{name}</name><memory unit='MiB'>2048</memory><vcpu>2</vcpu><os><type>hvm</type></os>{devices}</domain>"
    if kind == 2:  # wide: two guest cells on nodes 1 and 3
        pins = "".join(f"<vcpupin vcpu='{v}' cpuset='{'64-127' if v < 4 else '192-255'}'/>" for v in range(8))
        return (f"<domain type='test'><name>{name}</name><memory unit='GiB'>16</memory><vcpu placement='static'>8</vcpu>"
                f"<cputune>{pins}</cputune><numatune><memory mode='strict' nodeset='1,3'/><memnode cellid='0' mode='strict' nodeset='1'/>"
                f"<memnode cellid='1' mode='strict' nodeset='3'/></numatune><os><type>hvm</type></os>"
                f"<cpu><numa><cell id='0' cpus='0-3' memory='8' unit='GiB'/><cell id='1' cpus='4-7' memory='8' unit='GiB'/></numa></cpu>{devices}</domain>")
    node = i % 4
    cpus = f"{node * 64}-{node * 64 + 63}"
    pins = "".join(f"<vcpupin vcpu='{v}' cpuset='{cpus}'/>" for v in range(4))
    return (f"<domain type='test'><name>{name}</name><memory unit='GiB'>8</memory><vcpu placement='static' cpuset='{cpus}'>4</vcpu>"
            f"<cputune>{pins}</cputune><numatune><memory mode='strict' nodeset='{node}'/></numatune><os><type>hvm</type></os>{devices}</domain>")


def host_file(directory: Path, n: int) -> str:
    path = directory / f"host-{n}.xml"
    path.write_text(HEAD + "\n".join(domain_xml(i) for i in range(n)) + "\n</node>\n")
    return f"test://{path}"


def bare_libvirt(conn) -> int:
    libvirt = libvirt_module()
    return sum(len(d.XMLDesc(0)) for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))


def measure_usage(uri: str, rounds: int) -> dict:
    conn = open_connection(uri)
    host = read_host(conn, nodes_per_socket=2)
    times = {"libvirt": [], "read_usage": []}
    for _ in range(rounds):
        t = time.perf_counter()
        bare_libvirt(conn)
        times["libvirt"].append(time.perf_counter() - t)
        t = time.perf_counter()
        usage = read_usage(conn, host)
        times["read_usage"].append(time.perf_counter() - t)
    conn.close()
    return {k: float(np.median(v)) for k, v in times.items()} | {"domains": len(usage.domains)}


NEW = "<domain type='kvm'><name>new</name><memory unit='GiB'>{gib}</memory><vcpu>{vcpus}</vcpu><os><type arch='x86_64'>hvm</type></os>" + DEVICES.format(name="new", a=255, b=255) + "</domain>"


def measure_place(uri: str, places: int, rounds: int) -> dict:
    conn = open_connection(uri)
    host = read_host(conn, nodes_per_socket=2)
    usage = read_usage(conn, host)
    conn.close()
    decider = DeciderSpec(shield=ShieldConfig(depth=1)).build()
    rng = np.random.default_rng(0)
    texts = [NEW.format(gib=int(rng.choice([2, 8, 32, 96])), vcpus=int(rng.choice([2, 4, 16, 48]))) for _ in range(places)]
    specs = [parse_domain(read_xml(t, "new")) for t in texts]
    times = {"decide": [], "place": []}
    for _ in range(rounds):
        t = time.perf_counter()
        for spec in specs:
            decider.decide(host.topology, usage.used_vcpus, usage.used_mem_mib, vm_request(spec))
        times["decide"].append((time.perf_counter() - t) / places)
        t = time.perf_counter()
        for text in texts:
            root = read_xml(text, "new")
            spec = parse_domain(root)
            d = decider.decide(host.topology, usage.used_vcpus, usage.used_mem_mib, vm_request(spec))
            to_text(write_placement(root, spec, host, d.placement, record={"policy": d.policy, "primitive": d.primitive}))
        times["place"].append((time.perf_counter() - t) / places)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default="50,400", help="host sizes, comma-separated (default 50,400)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; medians reported (default 7)")
    parser.add_argument("--places", type=int, default=300, help="new domains placed per round (default 300)")
    parser.add_argument("--smoke", action="store_true",
                        help="a run of a second to check the script works: --domains 8 --rounds 1 --places 10 "
                        "(its ratios mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.domains, args.rounds, args.places = "8", 1, 10
    print(f"# bench_libvirt: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"libvirt {libvirt_module().getVersion() // 1000000}.{libvirt_module().getVersion() // 1000 % 1000}")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| running domains | libvirt list + XMLDesc | read_usage | ratio | per domain (ours) |\n|---|---|---|---|---|")
        uris = {}
        for n in (int(x) for x in args.domains.split(",")):
            uris[n] = host_file(Path(tmp), n)
            r = measure_usage(uris[n], args.rounds)
            assert r["domains"] == n
            print(f"| {n} | {r['libvirt'] * 1e3:.2f} ms | {r['read_usage'] * 1e3:.2f} ms | "
                  f"{r['read_usage'] / r['libvirt']:.2f}x | {r['read_usage'] / n * 1e6:.0f} µs |")
        n = min(uris)
        r = measure_place(uris[n], args.places, args.rounds)
        print(f"\n| place in process ({n} domains on the host) | Decider.decide alone | parse + decide + write + serialise | ratio |\n|---|---|---|---|")
        print(f"| per new domain | {r['decide'] * 1e6:.0f} µs | {r['place'] * 1e6:.0f} µs | {r['place'] / r['decide']:.2f}x |")


if __name__ == "__main__":
    main()
