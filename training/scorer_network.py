"""The parameters evolution strategies move: a one-layer scorer's weights, or a hidden-layer network's.

:mod:`catur.training.afterstate` trains an after-state scorer by evolution strategies, which
move one flat vector of numbers. An :class:`Architecture` says what that vector is:

* ``hidden = 0`` (:data:`LINEAR`, the shipped default's kind): one weight per feature of
  :data:`~catur.afterstate.FEATURES`, no bias; the vector *is* the first layer's column.
  Nothing here changes that path: its models, draws and numbers are what they were.
* ``hidden = H`` (``H >= 3``): one ReLU hidden layer of ``H`` units over the chosen
  ``features`` and one linear output. The vector is ``w0 [F, H]`` (row-major), ``b0 [H]``,
  ``w1 [H]`` and ``b1 [1]``, in that order. Unlike a linear scorer, a hidden unit can read the
  *context* features (``host_cpu_load``, ``vm_size``: the same for every candidate of a
  decision), which a linear scorer cannot use at all: they shift every candidate's score
  equally. In a hidden unit they move where its ReLU bends, so a unit can weigh, say,
  overload only on a loaded host or for a large VM.

**The warm start is the one-layer scorer it continues, exactly in its decisions**
(:func:`hidden_start`). With ReLU a linear score is ``z = w·x = relu(w·x) − relu(−w·x)``: the
first two hidden units carry ``+w`` and ``−w`` with output weights ``+1`` and ``−1``, the
other ``H − 2`` units get small random input weights and output weights **0**. Generation 0
then scores every candidate ``z``: ``relu(z) − relu(−z)`` is exact in floating point (one
term is 0), and the idle units add exact zeros. The one difference is rounding: the hidden
layer computes ``w·x`` as column 0 of an ``[F, H]`` product, which BLAS sums in another
order than the one-layer model's ``[F, 1]`` product, so a score can differ in its last float32
bit. Decisions then differ only between candidates whose scores are within one rounding of
each other; ``tests/test_hidden_scorer.py`` checks that generation 0 decides as its start on
generated candidate sets, and the trainer replays both on every validation host and logs
whether they agree.

**How far each parameter moves** (:func:`network_scales`): perturbations are ``noise ·
scale`` per parameter, with the scales in *units of the defect's spread within a candidate
set* (how far apart a decision's candidates are in the feature that fixes the scores'
scale), as the linear trainer's are:

* an input weight of feature ``f``: the linear scale (the defect's spread within a set over
  ``f``'s), so one unit of any input weight moves a unit's input as much as one unit of
  the ``defect`` weight; for a context feature, which does not vary within a set, the
  defect's spread over ``f``'s spread across all candidates (how much it moves a unit's
  input from one decision to the next);
* a hidden bias: the defect's spread (one step moves a unit's bend by a fraction of a
  typical difference between candidates);
* the output weight of an idle unit: 1, the size of the carrier units' ±1;
* fixed (scale 0): the carriers' output weights ±1, which fix the scores' scale (an argmax
  does not change when every score is scaled, so one scale is free, as the ``defect``
  weight at −1 is in a linear scorer), the output bias (it moves every score alike), and
  input weights of features that never vary in the sampled candidate sets (drawn from the
  training windows' one-instance VMs, as for the one-layer scales: so ``spans_nodes``, 0
  for every one-instance VM, is not moved).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.afterstate import BASE_FEATURES, FEATURES, AfterStateModel, afterstate_manifest
from catur.errors import CaturError
from catur.observation import CandidateTable

#: The hidden layer's activation: ReLU makes the warm start exact (``z = relu(z) − relu(−z)``).
HIDDEN_ACTIVATION = "relu"
#: The two hidden units that carry the start (``+w``, ``−w``) and fix the scale.
CARRIERS = 2


@dataclass(frozen=True)
class Architecture:
    """What the flat parameter vector of evolution strategies is (see the module doc)."""

    features: tuple[str, ...] = FEATURES
    hidden: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown or not self.features or len(set(self.features)) != len(self.features):
            raise CaturError(f"scorer features {list(self.features)}: unknown or repeated {unknown}; known: {', '.join(FEATURES)}")
        if self.hidden < 0:
            raise CaturError(f"hidden units must be >= 0 (0: a one-layer scorer), got {self.hidden}")
        if self.hidden and self.hidden <= CARRIERS:
            raise CaturError(f"a hidden layer needs at least {CARRIERS + 1} units ({CARRIERS} carry the start), got {self.hidden}")
        if self.hidden and "defect" not in self.features:
            raise CaturError("a hidden-layer scorer reads the defect feature (its carriers start from a scorer that weighs it)")
        if self.hidden == 0 and self.features != FEATURES:
            raise CaturError("a one-layer scorer's training reads every feature (choose features for a hidden layer only)")

    @property
    def size(self) -> int:
        """How many numbers the flat vector holds."""
        f, h = len(self.features), self.hidden
        return f if h == 0 else f * h + h + h + 1

    def layers(self, params: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The model's ``(w, b)`` layers (float32) of a flat vector."""
        params = np.asarray(params)
        if params.shape != (self.size,):
            raise CaturError(f"expected {self.size} parameters for {self.describe()}, got {params.shape}")
        f, h = len(self.features), self.hidden
        if h == 0:
            return ((params.astype(np.float32)[:, None], np.zeros(1, np.float32)),)
        w0, b0, w1, b1 = np.split(params.astype(np.float32), np.cumsum([f * h, h, h]))
        return ((w0.reshape(f, h), b0), (w1[:, None], b1))

    def model(self, params: np.ndarray, **manifest) -> AfterStateModel:
        """The :class:`~catur.afterstate.AfterStateModel` of a flat vector."""
        if self.hidden == 0:
            return AfterStateModel(afterstate_manifest(**manifest), self.layers(params))
        return AfterStateModel(afterstate_manifest(HIDDEN_ACTIVATION, **{"features": list(self.features), **manifest}),
                               self.layers(params))

    def describe(self) -> str:
        if self.hidden == 0:
            return f"a one-layer scorer over {len(self.features)} features"
        return f"a hidden layer of {self.hidden} {HIDDEN_ACTIVATION} units over {len(self.features)} features"

    def record(self) -> dict:
        """The architecture as the manifest records it (``training.architecture``)."""
        return {"hidden": self.hidden, "features": list(self.features),
                "activation": HIDDEN_ACTIVATION if self.hidden else "none (one layer)",
                "parameters": self.size}


#: The one-layer scorer over every feature: the trainer's vector as it always was.
LINEAR = Architecture()


def hidden_features(start_weights: np.ndarray, chosen: tuple[str, ...] | None, start_features: tuple[str, ...] | None) -> tuple[str, ...]:
    """The features a hidden-layer scorer reads: ``chosen`` when given, else the starting
    model's (``start_features``; the shipped default reads 12, the context ones among them),
    else every base feature. Refuses a choice that drops a feature the start weighs."""
    features = tuple(chosen or start_features or BASE_FEATURES)
    dropped = [f for f, w in zip(FEATURES, start_weights) if w != 0 and f not in features]
    if dropped:
        raise CaturError(f"the features {list(features)} leave out {dropped}, which the starting scorer weighs: "
                         "add them, or the start cannot be carried over exactly")
    return features


def hidden_start(start_weights: np.ndarray, arch: Architecture, input_scales: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The flat vector of a hidden-layer network that decides as the one-layer scorer
    ``start_weights`` (over :data:`FEATURES`) does: carriers ``±w``, the other units random
    input weights (``N(0, 1) · input_scales / sqrt(F)``: each such unit's input moves about as
    much as the defect does between candidates) and output weight 0."""
    f, h = len(arch.features), arch.hidden
    w = np.array([start_weights[FEATURES.index(name)] for name in arch.features])
    w0 = rng.standard_normal((f, h)) * input_scales[:, None] / np.sqrt(f)
    w0[:, 0], w0[:, 1] = w, -w
    w1 = np.zeros(h)
    w1[0], w1[1] = 1.0, -1.0
    return np.concatenate([w0.ravel(), np.zeros(h), w1, np.zeros(1)])


def network_scales(tables: list[CandidateTable], arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
    """``(scales of the flat vector, input scales [F])`` of a hidden-layer network from sampled
    candidate sets (tables of all :data:`FEATURES`; see the module doc). 0 = never moved."""
    columns = [FEATURES.index(name) for name in arch.features]
    within = np.mean([t.features.std(axis=1).mean(axis=0) for t in tables], axis=0)[columns]
    across = np.concatenate([t.features.reshape(-1, len(FEATURES)) for t in tables]).std(axis=0)[columns]
    defect = within[arch.features.index("defect")]
    spread = np.where(within > 1e-9, within, across)
    inputs = np.where(spread > 1e-9, defect / np.maximum(spread, 1e-9), 0.0)
    h = arch.hidden
    out = np.ones(h)
    out[:CARRIERS] = 0.0
    return np.concatenate([np.repeat(inputs, h), np.full(h, defect), out, np.zeros(1)]), inputs


__all__ = ["Architecture", "CARRIERS", "HIDDEN_ACTIVATION", "LINEAR", "hidden_features", "hidden_start", "network_scales"]
