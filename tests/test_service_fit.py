"""The service's fit check (issue 31): ``PlaceResponse.fit``, ``NodeUsage.free_mem_mib`` and
``PlaceRequest.fit_only`` (a question that records nothing), over a real gRPC server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from catur.request import VMRequest
from catur.service.client import PlacementClient
from catur.service.collector import CollectorConfig
from catur.service.server import Service, create_server
from catur.shield import ShieldConfig
from catur.topology import Topology

HOST = Topology("two", [8, 8], [2048, 4096], [0, 1], [[10, 21], [21, 10]])


@pytest.fixture()
def service(tmp_path):
    svc = Service(model=None, shield=ShieldConfig(depth=2), collect=CollectorConfig(tmp_path / "trace"))
    server, port = create_server("127.0.0.1:0", svc, max_workers=2)
    with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
        yield svc, client
    svc.shutdown(server, grace=0.5)


def test_every_answer_carries_the_fit(service):
    _, client = service
    ok = client.place(HOST, [0, 0], [1024, 0], VMRequest(2, 3000))
    assert ok.fit.fits and ok.fit.free.tolist() == [1024, 4096] and ok.fit.short == ""
    big = client.place(HOST, [0, 0], [1024, 0], VMRequest(2, 32 * 1024))
    assert big.placement.total_mem_mib == 32 * 1024, "the contract still answers with a placement"
    assert not big.fit.fits and big.fit.short == "memory: needs 32768 MiB, only 5120 MiB free (node 0: 1024, node 1: 4096)"
    capped = client.place(HOST, [0, 0], [1024, 0], VMRequest(2, 3000), free_mem_mib=[1024, 1000])
    assert not capped.fit.fits and capped.fit.free.tolist() == [1024, 1000], "the host's report caps the free memory"
    assert capped.to_dict()["fit"]["fits"] is False


def test_fit_only_records_nothing(tmp_path):
    """A fit_only question is decided like a placement but is not an arrival: the collected
    trace holds only the real placement, and the host's recent-request window only its type."""
    from catur.traces.collected import read_collected

    svc = Service(model=None, shield=ShieldConfig(depth=2), collect=CollectorConfig(tmp_path / "trace"))
    server, port = create_server("127.0.0.1:0", svc, max_workers=2)
    try:
        with PlacementClient(f"127.0.0.1:{port}", timeout=5) as client:
            answer = client.place(HOST, [0, 0], [0, 0], VMRequest(2, 1024), host_id="h", vm_id="q1", fit_only=True)
            assert answer.fit.fits and answer.placement.total_vcpus == 2
            client.place(HOST, [0, 0], [0, 0], VMRequest(4, 512), host_id="h", vm_id="p1")
        _, stats = svc.servicer.windows.get(("h", 2))
        assert [r.vcpus for r in stats.popular(0.0, 10)] == [4], "only the placement entered the window"
    finally:
        svc.shutdown(server, grace=0.5)
    trace = read_collected(tmp_path / "trace")
    assert trace["source_vm_id"].tolist() == ["p1"], "the fit_only question is not an arrival"


def test_bad_free_memory_is_named(service):
    _, client = service
    with pytest.raises(grpc.RpcError) as err:
        client.place(HOST, [0, 0], [0, 0], VMRequest(2, 1024), free_mem_mib=[5])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "usage.free_mem_mib has 1 values; the topology has 2 nodes" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.place(HOST, [0, 0], [0, 0], VMRequest(2, 1024), free_mem_mib=[5, -1])
    assert "usage.free_mem_mib[1] must be >= 0, got -1" in err.value.details()
    np.testing.assert_equal(client.place(HOST, [0, 0], [0, 0], VMRequest(1, 1)).fit.needed, 1)
