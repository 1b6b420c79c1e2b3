"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

# `./run test` runs one pytest-xdist worker per core. A worker whose torch or BLAS also used
# every core would oversubscribe them, so each worker (and what it starts) computes on one
# thread. This runs before any test module imports numpy or torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

import pytest  # noqa: E402

from _service_support import make_certificates  # noqa: E402


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (paths)."""
    certs = make_certificates(tmp_path_factory.mktemp("tls"))
    if certs is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    return certs
