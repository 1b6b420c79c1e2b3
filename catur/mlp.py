"""The feed-forward networks of Catur's models, in numpy: layers, activations, files.

Both model kinds (:class:`catur.policy_model.PolicyModel`, which scores the four primitives
from one observation, and :class:`catur.afterstate.AfterStateModel`, which scores each
candidate placement from its after-state features) are plain MLPs: ``layers[i] = (w[in,
out], b[out])`` in float32, a hidden activation between layers, none after the last. This
module is the one implementation of running, naming, saving and loading them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from catur.errors import CaturError

Layers = tuple[tuple[np.ndarray, np.ndarray], ...]

ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}


def forward(layers: Layers, x: np.ndarray, activation: str) -> np.ndarray:
    """``float32[B, out]`` for ``float32[B, in]`` rows."""
    act = ACTIVATIONS[activation]
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        # Row by row ([B, 1, in] @ [in, out]: one vector-matrix product per row), not one
        # [B, in] @ [in, out] product: BLAS picks its kernel (and its rounding) by the batch
        # size, so a row's scores would depend on how many rows come with it. This way a row
        # gets the same bits alone or among thousands — the batched replay engine scores all
        # hosts at once and still decides exactly as the service does for one request — and
        # it is no slower at these sizes.
        x = (x[:, None, :] @ w)[:, 0, :] + b
        if i < last:
            x = act(x)
    return x


def digest(layers: Layers) -> str:
    """A short hash of the weights: a model's version when its manifest names none."""
    h = hashlib.sha256()
    for w, b in layers:
        h.update(w.tobytes())
        h.update(b.tobytes())
    return h.hexdigest()[:12]


def save(directory: str | Path, layers: Layers, manifest: dict) -> Path:
    """Write ``weights.npz`` (``w0, b0, w1, ...``) and ``manifest.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    np.savez(directory / "weights.npz", **arrays)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


def load(weights_path: str | Path) -> Layers:
    """The layers of a ``weights.npz``, loaded without pickle; errors name the file."""
    try:
        with np.load(weights_path, allow_pickle=False) as data:
            layers = tuple(
                (data[f"w{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32)) for i in range(len(data.files) // 2)
            )
    except Exception as exc:  # truncated zip, not an npz, missing arrays, ...: all one answer
        raise CaturError(f"{weights_path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if not layers:
        raise CaturError(f"{weights_path}: has no layers")
    return layers


def check_layers(layers: Layers, inputs: int, outputs: int, source: str) -> None:
    """Refuse non-finite weights and shapes that do not chain from ``inputs`` to ``outputs``."""
    width = inputs
    for i, (w, b) in enumerate(layers):
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise CaturError(f"{source}: layer {i} has NaN or infinite weights")
        if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
            raise CaturError(f"{source}: layer {i} has shape {w.shape}/{b.shape}, expected ({width}, n)/(n,)")
        width = w.shape[1]
    if not layers or width != outputs:
        raise CaturError(f"{source}: last layer has {width if layers else 0} outputs, expected {outputs}")
