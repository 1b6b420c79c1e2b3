"""integrations/nova-weigher against a stand-in of Nova's weigher interface (Nova is not
installed) and a real Catur service.

The stand-in has what Nova's ``nova.weights.BaseWeigher`` gives a weigher: ``minval`` and
``maxval``, ``weight_multiplier(host_state)``, ``weigh_objects(weighed_obj_list,
weight_properties)`` over objects with ``.obj`` (the HostState), and a handler that
normalizes each weigher's weights to 0..1 over the candidates (using minval/maxval when set)
and adds multiplier * weight. Host states and request specs carry the attributes the weigher
reads from Nova's objects (NUMACell, NUMAPagesTopology, Flavor).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from catur.service.server import Service, create_server
from catur.shield import ShieldConfig

ROOT = Path(__file__).resolve().parents[1]


class StandInBaseHostWeigher:
    minval = None
    maxval = None

    def weight_multiplier(self, host_state):
        return 1.0

    def _weigh_object(self, obj, weight_properties):
        raise NotImplementedError

    def weigh_objects(self, weighed_obj_list, weight_properties):
        return [self._weigh_object(w.obj, weight_properties) for w in weighed_obj_list]


def weigh(weigher, hosts, spec):
    """What Nova's weight handler does with one weigher: normalize, multiply, sort."""
    objs = [NS(obj=h, weight=0.0) for h in hosts]
    raw = weigher.weigh_objects(objs, spec)
    lo = weigher.minval if weigher.minval is not None else min(raw)
    hi = weigher.maxval if weigher.maxval is not None else max(raw)
    for o, w in zip(objs, raw):
        o.weight += weigher.weight_multiplier(o.obj) * (0.0 if hi == lo else (w - lo) / (hi - lo))
    return raw, [o.obj.host for o in sorted(objs, key=lambda o: o.weight, reverse=True)]


@pytest.fixture(scope="module")
def weigher_module():
    nova = types.ModuleType("nova")
    scheduler = types.ModuleType("nova.scheduler")
    weights = types.ModuleType("nova.scheduler.weights")
    weights.BaseHostWeigher = StandInBaseHostWeigher
    nova.scheduler, scheduler.weights = scheduler, weights
    saved = {k: sys.modules.get(k) for k in ("nova", "nova.scheduler", "nova.scheduler.weights")}
    sys.modules.update({"nova": nova, "nova.scheduler": scheduler, "nova.scheduler.weights": weights})
    sys.path.insert(0, str(ROOT / "integrations" / "nova-weigher"))
    try:
        import catur_nova_weigher

        yield catur_nova_weigher
    finally:
        sys.path.remove(str(ROOT / "integrations" / "nova-weigher"))
        sys.modules.pop("catur_nova_weigher", None)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture(scope="module")
def client():
    from catur.service.client import PlacementClient

    svc = Service(model=None, shield=ShieldConfig(depth=1))
    server, port = create_server("127.0.0.1:0", svc, max_workers=2)
    with PlacementClient(f"127.0.0.1:{port}", timeout=5) as c:
        yield c
    svc.shutdown(server, grace=0.5)


def cell(i, cpus, mem, mem_used=0, cpu_used=0, pcpus=(), pinned=(), pages=(), socket=None):
    return NS(id=i, cpuset=set(cpus), pcpuset=set(pcpus), memory=mem, memory_usage=mem_used, cpu_usage=cpu_used,
              pinned_cpus=set(pinned), mempages=[NS(size_kb=s, total=t, used=u, reserved=0) for s, t, u in pages], socket=socket)


def host(name, *cells):
    return NS(host=name, nodename=name, numa_topology=NS(cells=list(cells)) if cells else None)


def flavor(vcpus, mem, **extra):
    return NS(flavor=NS(vcpus=vcpus, memory_mb=mem, extra_specs={k.replace("_", ":", 1): v for k, v in extra.items()}))


class Counting:
    def __init__(self, client):
        self.client, self.batches = client, 0

    def place_batch(self, items):
        self.batches += 1
        return self.client.place_batch(items)


def test_hosts_are_ranked_by_fit_and_defect(weigher_module, client):
    counting = Counting(client)
    w = weigher_module.CaturNUMAWeigher(client=counting)
    idle = host("idle", cell(0, range(8), 8192, socket=0), cell(1, range(8, 16), 8192, socket=1))
    busy = host("busy", cell(0, range(8), 8192, 8000, 8, socket=0), cell(1, range(8, 16), 8192, 8000, 8, socket=1))
    small = host("small", cell(0, range(8), 2048, socket=0))
    bare = host("bare")  # no NUMA topology reported
    raw, order = weigh(w, [busy, small, bare, idle], flavor(4, 4096))
    assert counting.batches == 1, "one PlaceBatch for all candidates"
    assert raw[1] == weigher_module.NOT_FIT and raw[2] == weigher_module.NEUTRAL
    assert raw[3] == 1.0 and raw[0] < raw[3], "on the idle host the VM has no defect; on the busy one it overloads or spills"
    assert order[0] == "idle" and order[-1] == "small"


def test_dedicated_cpus_and_huge_pages(weigher_module, client):
    w = weigher_module.CaturNUMAWeigher(client=client)
    # Dedicated: only the pcpuset counts (the shared cpuset is where unpinned guests float).
    pinned_full = host("pinned-full", cell(0, range(4), 8192, pcpus=range(4, 8), pinned=range(4, 8)))
    pinned_free = host("pinned-free", cell(0, range(4), 8192, pcpus=range(4, 8)))
    raw, order = weigh(w, [pinned_full, pinned_free], flavor(4, 1024, hw_cpu_policy="dedicated"))
    assert order[0] == "pinned-free" and raw[1] == 1.0 and raw[0] < 1.0
    # hw:mem_page_size=1GB: a host with plenty of ordinary memory but no free 1 GiB pages does not fit.
    no_pages = host("no-pages", cell(0, range(8), 65536, pages=[(4, 16 << 18, 0), (1 << 20, 8, 8)]))
    pages = host("pages", cell(0, range(8), 65536, pages=[(4, 16 << 18, 0), (1 << 20, 8, 0)]))
    raw, order = weigh(w, [no_pages, pages], flavor(2, 4096, hw_mem_page_size="1GB"))
    assert raw == [weigher_module.NOT_FIT, 1.0] and order == ["pages", "no-pages"]
    assert weigher_module.page_size_kib("large", pages.numa_topology.cells) == 1 << 20
    assert weigher_module.page_size_kib("2MB", []) == 2048 and weigher_module.page_size_kib("small", []) is None


def test_an_unreachable_service_weighs_neutrally(weigher_module):
    from catur.service.client import PlacementClient

    with PlacementClient("127.0.0.1:9", timeout=0.5) as dead:
        w = weigher_module.CaturNUMAWeigher(client=dead)
        raw, _ = weigh(w, [host("a", cell(0, range(8), 8192)), host("b", cell(0, range(8), 8192))], flavor(2, 1024))
    assert raw == [0.0, 0.0]
    assert w._weigh_object(host("c"), flavor(2, 1024)) == 0.0
