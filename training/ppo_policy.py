"""The PPO actor-critic over after-state candidates, and its export to the numpy scorer format.

See :mod:`catur.training.ppo_scorer` for how it is trained. The actor applies one network to
every candidate slot (:class:`CandidateNetworks`), so its logits are permutation equivariant
and the same weights serve 2-, 4- and 8-node hosts; :func:`export_actor` turns it into an
:class:`~catur.afterstate.AfterStateModel` that decides exactly as the actor's argmax does.
"""

from __future__ import annotations

import numpy as np
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn

from catur.afterstate import FEATURES, AfterStateModel, afterstate_manifest
from catur.sim.env import CANDIDATE_SLOTS


# --- the policy -----------------------------------------------------------------------------------


class CandidateNetworks(nn.Module):
    """The actor (one score per candidate slot, shared weights) and the value head (pooled
    candidates): SB3's ``mlp_extractor`` slot, see the module doc."""

    def __init__(self, features: int, hidden: int, value_hidden: int, temperature: float = 1.0,
                 input_scale: list[float] | None = None) -> None:
        super().__init__()
        self.features, self.hidden = features, hidden
        # Fixed, not trained: the logits are temperature · scores (the exported scorer is the
        # scores; an argmax ignores the factor), and the linear part reads x · input_scale, so
        # one optimiser step moves every weight's effect on the scores by a comparable amount.
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        scale = torch.ones(features) if input_scale is None else torch.tensor(input_scale, dtype=torch.float32)
        self.register_buffer("input_scale", scale)
        self.latent_dim_pi = CANDIDATE_SLOTS  # the logits themselves (action_net is the identity)
        self.latent_dim_vf = value_hidden
        self.linear = nn.Linear(features, 1)
        self.branch = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else None
        self.value = nn.Sequential(nn.Linear(2 * features, value_hidden), nn.Tanh(), nn.Linear(value_hidden, value_hidden), nn.Tanh())

    def slots(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], CANDIDATE_SLOTS, self.features)

    def scores(self, candidates: torch.Tensor) -> torch.Tensor:
        """``[..., F]`` candidate features → ``[...]`` scores: the same network for every candidate."""
        out = self.linear(candidates * self.input_scale)[..., 0]
        if self.branch is not None:
            out = out + self.branch(candidates)[..., 0]
        return out

    def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * self.scores(self.slots(x))

    def forward_critic(self, x: torch.Tensor) -> torch.Tensor:
        c = self.slots(x)
        valid = (c != 0).any(dim=-1, keepdim=True)  # a valid candidate's row is never all zero
        count = valid.sum(dim=1).clamp(min=1)
        mean = (c * valid).sum(dim=1) / count
        top = torch.where(valid, c, torch.full_like(c, -torch.inf)).amax(dim=1)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        pooled = torch.cat([mean, top], dim=-1)
        return self.value(torch.sign(pooled) * torch.log1p(pooled.abs()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(x), self.forward_critic(x)


class CandidateScorerPolicy(MaskableActorCriticPolicy):
    """MaskablePPO's policy whose logits are the shared-weight actor's candidate scores
    (:class:`CandidateNetworks`; ``action_net`` is the identity). ``actor_init``: the linear
    part's start weights over :data:`FEATURES` (the warm start); the hidden branch's output
    layer starts at zero. ``temperature`` and ``input_scale``: :class:`CandidateNetworks`."""

    def __init__(self, *args, hidden: int = 0, value_hidden: int = 64, actor_init: list[float] | None = None,
                 temperature: float = 1.0, input_scale: list[float] | None = None, **kwargs):
        self.hidden, self.value_hidden, self.actor_init = hidden, value_hidden, actor_init
        self.temperature, self.input_scale = temperature, input_scale
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = CandidateNetworks(len(FEATURES), self.hidden, self.value_hidden, self.temperature, self.input_scale)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        actor = self.mlp_extractor
        with torch.no_grad():
            if self.actor_init is not None:
                start = torch.tensor(self.actor_init, dtype=torch.float32) / actor.input_scale
                actor.linear.weight.copy_(start[None, :])
            actor.linear.bias.zero_()
            if actor.branch is not None:
                actor.branch[-1].weight.zero_()
                actor.branch[-1].bias.zero_()
        # The optimizer again: it held action_net's parameters, which are gone.
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden, "value_hidden": self.value_hidden,
                "actor_init": self.actor_init, "temperature": self.temperature, "input_scale": self.input_scale}


# --- export ---------------------------------------------------------------------------------------


def actor_layers(networks: CandidateNetworks) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], str]:
    """The actor as :class:`~catur.afterstate.AfterStateModel` layers and their activation:
    one layer for a linear actor; with a hidden branch, a ReLU layer that carries the linear
    part as two extra units (``relu(s) − relu(−s) = s``, module doc)."""
    a = (networks.linear.weight.detach()[0] * networks.input_scale).numpy().astype(np.float32)  # [F]
    c = networks.linear.bias.detach().numpy().astype(np.float32)  # [1]
    if networks.branch is None:
        return ((a[:, None].copy(), c.copy()),), "tanh"
    w1 = networks.branch[0].weight.detach().numpy().astype(np.float32).T  # [F, H]
    b1 = networks.branch[0].bias.detach().numpy().astype(np.float32)
    w2 = networks.branch[2].weight.detach().numpy().astype(np.float32).T  # [H, 1]
    b2 = networks.branch[2].bias.detach().numpy().astype(np.float32)
    first = (np.concatenate([w1, a[:, None], -a[:, None]], axis=1), np.concatenate([b1, c, -c]))
    second = (np.concatenate([w2, [[1.0]], [[-1.0]]]).astype(np.float32), b2.copy())
    return (first, second), "relu"


def export_actor(networks: CandidateNetworks, **manifest) -> AfterStateModel:
    """The actor as a numpy after-state model reading every :data:`FEATURES` column."""
    layers, activation = actor_layers(networks)
    return AfterStateModel(afterstate_manifest(activation=activation, **manifest), layers)


def policy_agreement(networks: CandidateNetworks, model: AfterStateModel, tables: list) -> float:
    """Share of candidate sets (tables) on which the trained torch actor and the exported numpy
    model choose the same candidate (or candidates with identical features)."""
    agree, total = 0, 0
    for table in tables:
        x = np.asarray(table.features, dtype=np.float32)
        with torch.no_grad():
            theirs = networks.scores(torch.from_numpy(x)).numpy()
        theirs = np.argmax(np.where(table.valid, theirs, -np.inf), axis=1)
        ours = np.argmax(model.score(table), axis=1)
        rows = np.arange(len(ours))
        twins = (x[rows, ours] == x[rows, theirs]).all(axis=-1)
        agree += int(((ours == theirs) | twins).sum())
        total += len(ours)
    return agree / max(total, 1)


# --- the warm start -------------------------------------------------------------------------------


def best_mass(scores: np.ndarray, valid: np.ndarray, temperature: float) -> float:
    """Mean softmax probability (logits ``temperature · scores``, invalid masked) of the
    candidates that share the best score: the chance that sampling picks the argmax's decision."""
    logits = np.where(valid, temperature * scores, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    p = np.exp(logits - top)
    p /= p.sum(axis=1, keepdims=True)
    best = np.where(valid, scores, -np.inf) >= np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    return float((p * best).sum(axis=1).mean())


def start_temperature(model: AfterStateModel, tables: list, probability: float) -> float:
    """The factor on the start model's scores at which its best candidates hold ``probability``
    of the policy on ``tables`` on average (bisection on a log scale)."""
    scores = [(t.valid, np.where(t.valid, model.score(t), 0.0)) for t in tables]
    if not scores:
        return 100.0

    def mass(temperature: float) -> float:
        return float(np.mean([best_mass(s, v, temperature) for v, s in scores]))

    low, high = 1e-2, 1e7
    for _ in range(60):
        mid = float(np.sqrt(low * high))
        low, high = (mid, high) if mass(mid) < probability else (low, mid)
    return high


__all__ = [
    "CandidateNetworks", "CandidateScorerPolicy", "actor_layers", "best_mass", "export_actor", "policy_agreement",
    "start_temperature",
]
