"""Hypothesis strategies shared by the property tests and the engine-equality tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from catur.topology import PRESETS, Topology


@st.composite
def random_topologies(
    draw, max_socket: int = 3, max_cores: int = 64, max_mem_mib: int = 65536, max_distance: int = 40
) -> Topology:
    """1-8 nodes with random cores, memory, sockets and a random symmetric SLIT matrix."""
    n = draw(st.integers(1, 8))
    sockets = draw(st.lists(st.integers(0, max_socket), min_size=n, max_size=n))
    cores = draw(st.lists(st.integers(1, max_cores), min_size=n, max_size=n))
    mem = draw(st.lists(st.integers(256, max_mem_mib), min_size=n, max_size=n))
    dist = np.full((n, n), 10)
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = draw(st.integers(11, max_distance))
    return Topology("gen", cores, mem, sockets, dist)


def topologies(**limits) -> st.SearchStrategy[Topology]:
    """A random topology (see :func:`random_topologies`) or one of the presets."""
    return st.one_of(random_topologies(**limits), st.sampled_from(list(PRESETS.values())))
