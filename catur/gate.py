"""The uncertainty gate: is this observation like the ones the model was trained on?

Beyond the paper. At training time :func:`fit_gate` records the observations' centroid, a
regularised inverse covariance and a threshold (a high quantile of the training
observations' own distances). At decision time :meth:`UncertaintyGate.distance` is the
Mahalanobis distance of the observation to that centroid — one small matrix-vector product,
microseconds. Above the threshold the request is *out of distribution*: the decision falls
back to the cluster's best primitive instead of trusting the model, and the gate's firing rate
is an early drift signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catur.errors import CaturError

# Ridge added to the covariance: constant features (absent node slots) would otherwise make
# it singular, and tiny variances would make any change there look infinitely far.
RIDGE = 1e-3


@dataclass(frozen=True, eq=False)
class UncertaintyGate:
    """Mahalanobis distance to the training centroid, and the threshold above which it fires."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float

    def distance(self, obs: np.ndarray) -> float:
        return float(self.distances(np.asarray(obs)[None])[0])

    def distances(self, obs: np.ndarray) -> np.ndarray:
        """``float64[B]`` distances of ``B`` observations (rows), one vector-matrix product
        per row, so a row gets the same bits alone or in a batch (see
        :meth:`catur.policy_model.PolicyModel.scores`)."""
        delta = np.asarray(obs, dtype=np.float64) - self.mean
        squared = ((delta[:, None, :] @ self.precision)[:, 0, :] * delta).sum(axis=1)
        return np.sqrt(np.maximum(squared, 0.0))

    def fires(self, obs: np.ndarray) -> tuple[bool, float]:
        d = self.distance(obs)
        return d > self.threshold, d

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "precision": self.precision.tolist(), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "UncertaintyGate":
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            precision = np.asarray(data["precision"], dtype=np.float64)
            threshold = float(data["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CaturError(f"{source}: gate statistics are malformed ({exc})") from exc
        if precision.shape != (mean.shape[0], mean.shape[0]) or not np.isfinite(precision).all():
            raise CaturError(f"{source}: gate precision matrix has shape {precision.shape}, expected square of {mean.shape[0]}")
        return cls(mean, precision, threshold)


def fit_gate(observations: np.ndarray, quantile: float = 0.999) -> UncertaintyGate:
    """Fit the gate to training observations (rows); the threshold is their ``quantile`` distance."""
    x = np.asarray(observations, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise CaturError("fitting the uncertainty gate needs at least two observations")
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) + RIDGE * np.eye(x.shape[1])
    precision = np.linalg.inv(cov)
    gate = UncertaintyGate(mean, precision, 0.0)
    distances = gate.distances(x)
    return UncertaintyGate(mean, precision, float(np.quantile(distances, quantile)))
