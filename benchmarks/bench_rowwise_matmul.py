"""Why the batched engine multiplies row by row: batch-size-dependent rounding of a plain GEMM.

    .venv/bin/python benchmarks/bench_rowwise_matmul.py

A batch of 1,000 observations (68 features) through a 68×64 layer, as the shipped model's
first layer: (1) how many rows of ``X @ W`` differ in any bit from the same row multiplied
alone (``x @ W``) — the batched engine must give each host exactly the decision the
one-host path gives; (2) the time of the row-by-row product ``X[:, None, :] @ W`` that the
engine uses, against the plain GEMM.
"""

from __future__ import annotations

import time

import numpy as np


def best_ms(fn, repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 68))
    w = rng.normal(size=(68, 64))
    alone = np.stack([row @ w for row in x])
    gemm = x @ w
    rowwise = (x[:, None, :] @ w)[:, 0, :]
    print(f"rows of X @ W differing from the row alone: {int((gemm != alone).any(axis=1).sum())} of {len(x)}")
    print(f"rows of the row-by-row product differing:   {int((rowwise != alone).any(axis=1).sum())} of {len(x)}")
    print(f"X @ W: {best_ms(lambda: x @ w):.3f} ms; row by row: {best_ms(lambda: x[:, None, :] @ w):.3f} ms (best of 200)")


if __name__ == "__main__":
    main()
