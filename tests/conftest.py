"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from _service_support import make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (paths)."""
    certs = make_certificates(tmp_path_factory.mktemp("tls"))
    if certs is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    return certs
