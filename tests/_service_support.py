"""Shared helpers of the service tests: a tiny model, a small trace, self-signed certificates."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from catur.gate import fit_gate
from catur.policy_model import ACTIVATIONS, MODEL_FORMAT, PolicyModel
from catur.observation import OBS_DIM, OBS_VERSION, encode
from catur.policies import PRIMITIVES
from catur.request import VMRequest
from catur.sim.admission import SECONDS_PER_DAY, admit, host_streams, parse_days
from catur.sim.cluster import load_cluster
from catur.service.loadgen import start_serve, valid_request  # noqa: F401  (shared with the benchmarks)
from catur.topology import PRESETS
from catur.traces.synthetic import random_trace  # noqa: F401  (shared with the benchmarks)

NAN = float("nan")


def make_model(directory: Path, seed: int = 0, *, version: str | None = None, gate: bool = True, fallback: str | None = None) -> Path:
    """A small random-weight policy (OBS_DIM -> 16 -> 4, tanh), with an uncertainty gate fitted
    on random observations (its threshold at their 80% quantile, so it fires now and then)."""
    rng = np.random.default_rng(seed)
    layers = (
        (rng.normal(0, 0.5, (OBS_DIM, 16)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32)),
        (rng.normal(0, 0.5, (16, len(PRIMITIVES))).astype(np.float32), rng.normal(0, 0.1, len(PRIMITIVES)).astype(np.float32)),
    )
    manifest = {
        "format": MODEL_FORMAT,
        "obs_version": OBS_VERSION,
        "obs_dim": OBS_DIM,
        "actions": list(PRIMITIVES),
        "activation": "tanh",
        "version": version or f"test-{seed}",
    }
    assert "tanh" in ACTIVATIONS
    if gate:
        observations = []
        for topology in (PRESETS["intel-2s"], PRESETS["amd-2s-nps2"]):
            for _ in range(100):
                fill = rng.uniform(0, 1.0)
                used_v = np.floor(fill * rng.uniform(0.5, 1.0, topology.num_nodes) * topology.node_cores).astype(np.int64)
                used_m = np.floor(fill * rng.uniform(0.5, 1.0, topology.num_nodes) * topology.node_mem_mib).astype(np.int64)
                vcpus = int(rng.choice([1, 2, 4, 8]))
                observations.append(encode(topology, used_v, used_m, VMRequest(vcpus, vcpus * 2048)))
        manifest["gate"] = fit_gate(np.array(observations), quantile=0.8).to_dict()
    if fallback:
        manifest["fallback_primitive"] = fallback
    return PolicyModel(manifest, layers).save(directory)


def small_streams(seed: int = 5):
    """Host streams of days 2-3 of a 300-VM trace on a crowded mixed cluster (8 hosts)."""
    df = random_trace(seed)
    spec = dataclasses.replace(load_cluster("mixed"), cpu_overcommit=1.3)
    admission = admit(df, spec, 0.95)
    return host_streams(df, admission, *parse_days("2:3", df))


def corrupt_model(directory: Path, how: str) -> None:
    """Damage a model directory in place: 'json' (unreadable manifest), 'obs' (another layout),
    'weights' (garbage weights file), 'shape' (a layer of the wrong size), 'nan' (NaN weights)."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    if how == "json":
        (directory / "manifest.json").write_text('{"format": "catur-policy/1", ')
    elif how == "obs":
        manifest["obs_version"] = manifest["obs_version"] + 1
        (directory / "manifest.json").write_text(json.dumps(manifest))
    elif how == "weights":
        (directory / "weights.npz").write_bytes(b"not a zip file")
    elif how == "shape":
        np.savez(directory / "weights.npz", w0=np.zeros((3, 4), np.float32), b0=np.zeros(4, np.float32))
    elif how == "nan":
        with np.load(directory / "weights.npz") as data:
            arrays = {k: data[k] for k in data.files}
        arrays["w0"] = np.full_like(arrays["w0"], np.nan)
        np.savez(directory / "weights.npz", **arrays)
    else:  # pragma: no cover
        raise ValueError(how)


def make_certificates(directory: Path) -> dict[str, Path] | None:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed
    by the CA (EC P-256, valid one day). Uses the `cryptography` package, else the `openssl`
    command; ``None`` when neither is available."""
    directory = Path(directory)
    try:
        return _certificates_cryptography(directory)
    except ImportError:
        pass
    if shutil.which("openssl") is None:
        return None
    return _certificates_openssl(directory)


def _certificates_openssl(d: Path) -> dict[str, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=catur test CA")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={'localhost' if name == 'server' else 'catur test client'}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return {k: d / v for k, v in (("ca", "ca.pem"), ("server_cert", "server.pem"), ("server_key", "server.key"),
                                  ("client_cert", "client.pem"), ("client_key", "client.key"))}


def _certificates_cryptography(d: Path) -> dict[str, Path]:  # pragma: no cover - when installed
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("catur test CA")).issuer_name(name("catur test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, cn, usage, san in (
        ("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", "catur test client", ExtendedKeyUsageOID.CLIENT_AUTH, None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        out[f"{role}_cert"] = d / f"{role}.pem"
        out[f"{role}_key"] = d / f"{role}.key"
        out[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{role}_key"].write_bytes(key_pem(key))
    return out


# --- bad requests ----------------------------------------------------------------------------------


def explicit_request():
    """A valid PlaceRequest with an explicit 3-node topology."""
    from catur.v1 import placement_pb2 as pb

    msg = valid_request()
    msg.topology.explicit.name = "odd-host"
    for cores, mem, socket in ((8, 16384, 0), (8, 16384, 0), (16, 32768, 1)):
        msg.topology.explicit.nodes.add(cores=cores, mem_mib=mem, socket=socket)
    msg.topology.explicit.distances.extend([10, 12, 21, 12, 10, 21, 21, 21, 10])
    msg.usage.CopyFrom(pb.NodeUsage(used_vcpus=[1, 2, 3], used_mem_mib=[1024, 0, 2048]))
    return msg


# Each mutation: (name, field named in the error, function(msg, value) -> None, strategy of values).
def _mutations():
    from hypothesis import strategies as st

    huge = st.integers(min_value=1 << 40, max_value=(1 << 63) - 1)
    negative = st.integers(min_value=-(1 << 63), max_value=-1)
    bad_float = st.one_of(
        st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
        st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1000.001, allow_nan=False, allow_infinity=False),
    )

    def clear(field):
        return lambda msg, _: msg.ClearField(field)

    def set_vm(field):
        return lambda msg, v: setattr(msg.vm, field, v)

    def set_usage(field, index):
        def apply(msg, v):
            getattr(msg.usage, field)[index] = v
        return apply

    def resize_usage(field):
        def apply(msg, k):
            values = list(getattr(msg.usage, field))
            del getattr(msg.usage, field)[:]
            getattr(msg.usage, field).extend((values * 20)[:k])
        return apply

    def explicit(apply):
        def go(msg, v):
            msg.CopyFrom(_explicit_base(msg))
            apply(msg, v)
        return go

    def node_field(field):
        return explicit(lambda msg, v: setattr(msg.topology.explicit.nodes[1], field, v))

    def set_distance(index):
        def apply(msg, v):
            msg.topology.explicit.distances[index] = v
        return explicit(apply)

    def resize_distances(msg, k):
        d = list(msg.topology.explicit.distances)
        del msg.topology.explicit.distances[:]
        msg.topology.explicit.distances.extend((d * 10)[:k])

    def too_many_nodes(msg, k):
        for _ in range(k):
            msg.topology.explicit.nodes.add(cores=4, mem_mib=1024, socket=0)
        del msg.topology.explicit.distances[:]

    return [
        ("topology", clear("topology"), st.none()),
        ("usage", clear("usage"), st.none()),
        ("vm", clear("vm"), st.none()),
        ("topology.preset", lambda msg, v: setattr(msg.topology, "preset", v), st.text(max_size=40).filter(lambda s: s not in PRESETS)),
        ("vm.vcpus", set_vm("vcpus"), st.one_of(negative, st.just(0), huge)),
        ("vm.mem_mib", set_vm("mem_mib"), st.one_of(negative, st.just(0), huge)),
        ("vm.alpha", set_vm("alpha"), bad_float),
        ("vm.beta", set_vm("beta"), bad_float),
        ("vm.vnuma", set_vm("vnuma"), st.one_of(negative, st.just(0), st.integers(min_value=5, max_value=1 << 40))),
        ("usage.used_vcpus", resize_usage("used_vcpus"), st.integers(0, 12).filter(lambda k: k != 4)),
        ("usage.used_mem_mib", resize_usage("used_mem_mib"), st.integers(0, 12).filter(lambda k: k != 4)),
        ("usage.used_vcpus[2]", set_usage("used_vcpus", 2), st.one_of(negative, st.integers(min_value=321, max_value=(1 << 63) - 1))),
        ("usage.used_mem_mib[1]", set_usage("used_mem_mib", 1), st.one_of(negative, st.integers(min_value=737_281, max_value=(1 << 63) - 1))),
        ("request_id", lambda msg, v: setattr(msg, "request_id", v), st.text(min_size=257, max_size=400)),
        ("host_id", lambda msg, v: setattr(msg, "host_id", v), st.text(min_size=257, max_size=400)),
        ("topology.explicit.nodes[1].cores", node_field("cores"), st.one_of(negative, st.just(0), st.integers(min_value=4097, max_value=(1 << 63) - 1))),
        ("topology.explicit.nodes[1].mem_mib", node_field("mem_mib"), st.one_of(negative, st.just(0), st.integers(min_value=(1 << 30) + 1, max_value=(1 << 63) - 1))),
        ("topology.explicit.nodes[1].socket", node_field("socket"), st.one_of(negative, st.integers(min_value=64, max_value=(1 << 63) - 1))),
        ("topology.explicit.distances[4]", set_distance(4), st.integers(-(1 << 63), (1 << 63) - 1).filter(lambda v: v != 10)),
        ("topology.explicit.distances[1]", set_distance(1), st.one_of(st.integers(-(1 << 63), 10), st.integers(256, (1 << 63) - 1))),
        ("topology.explicit.distances", set_distance(5), st.integers(11, 255).filter(lambda v: v != 21)),  # asymmetric
        ("topology.explicit.distances", explicit(resize_distances), st.integers(1, 30).filter(lambda k: k != 9)),
        ("topology.explicit.nodes", explicit(too_many_nodes), st.integers(62, 80)),
        ("topology.explicit.nodes", explicit(lambda msg, _: msg.topology.explicit.ClearField("nodes")), st.none()),
    ]


def _explicit_base(msg):
    base = explicit_request()
    base.request_id, base.host_id = msg.request_id, msg.host_id
    return base


def bad_requests():
    """Hypothesis strategy of ``(PlaceRequest, field)``: a valid request with one thing broken,
    and the field the error message must name."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        field, mutate, values = draw(st.sampled_from(_mutations()))
        value = draw(values)
        msg = valid_request()
        mutate(msg, value)
        return msg, field

    return build()


def reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if a failed assertion left it running, and close its pipes (a test's
    ``finally``: the happy path has already stopped it)."""
    if proc.poll() is None:  # pragma: no cover - only when an assertion failed
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


class Blocker:
    """Makes a service's greedy decider sleep ``sleep`` seconds, or (``sleep`` 0) wait on
    :attr:`release`, before deciding: calls stay in flight as long as a test wants.
    :attr:`entered` is released once per call that reached the decider; :attr:`decided`
    counts the decisions made."""

    def __init__(self, service, monkeypatch, sleep: float = 0.0) -> None:
        import threading
        import time

        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.decided = 0
        decider = service.models.current.decider
        real = decider.decide

        def slow(*args, **kwargs):
            self.entered.release()
            if sleep:
                time.sleep(sleep)
            else:
                self.release.wait(10)
            self.decided += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(decider, "decide", slow)
