"""Load-aware reward shaping (docs/howto/train-primitive-model.md), as a gymnasium wrapper.

Before each step the wrapper asks the environment what reward each of the four primitives
would earn from the current state (:meth:`NumaPlacementEnv.counterfactual_rewards`, computed
with the placement core — the same code that then places the VM). Then:

* if all four would score the same, the decision did not matter: reward 0;
* the best action keeps its reward;
* any other action gets minus the best reward.

This removes the load level from the signal — a full host pays every action alike — and
leaves only *which primitive was right here*, which keeps the learner from collapsing onto
one primitive when load drifts. The raw reward stays in ``info["raw_reward"]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

# Rewards within this distance count as equal (sums of clipped per-VM scores, ~1e2 in size).
TIE_TOLERANCE = 1e-9


class LoadAwareShaping(gym.Wrapper):
    """Replace the reward with the load-aware shaped reward (see module doc)."""

    def step(self, action):
        options = self.env.unwrapped.counterfactual_rewards()
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = reward
        info["counterfactual_rewards"] = options
        info["shaped_reward"] = shaped = shaped_reward(options, int(action))
        return obs, shaped, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


def shaped_reward(options: np.ndarray, action: int) -> float:
    """The shaped reward of ``action`` given every primitive's counterfactual reward."""
    best = float(np.max(options))
    if float(np.max(options) - np.min(options)) <= TIE_TOLERANCE:
        return 0.0
    if options[action] >= best - TIE_TOLERANCE:
        return best
    return -best
