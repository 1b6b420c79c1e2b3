"""Catur: VM NUMA placement with reinforcement learning (learn the norm, shield the tail).

Importing ``catur`` registers the gymnasium environments, so the usual habit works::

    import gymnasium
    import catur  # noqa: F401  (registers the ids)

    env = gymnasium.make("catur/NumaPlacement-v0", workload="default", days="1:3")
    obs, info = env.reset(seed=0)
    mask = env.action_masks()

The entry points are *strings*: registering imports gymnasium but not the simulator, which
loads only when ``make`` builds an env (the core never imports ``catur.sim``). gymnasium 1.x
no longer loads plugins through package entry points, so registration on import is the way.
"""

from __future__ import annotations

from importlib import metadata

import gymnasium
from gymnasium.envs.registration import WrapperSpec

try:
    __version__ = metadata.version("catur")  # `catur --version`, the service's reported version
except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout, not installed
    __version__ = "unknown"

# Env id -> the class gymnasium.make builds (see catur/sim/env.py).
ENV_IDS = {
    "catur/NumaPlacement-v0": "catur.sim.env:NumaPlacementEnv",
    "catur/NumaPlacementNodes-v0": "catur.sim.env:NodeActionEnv",
}
# The last wrapper make() adds: it puts action_masks() on the env make() returns.
_ACTION_MASKS = WrapperSpec("ActionMasks", "catur.sim.env:ActionMasks", {})

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gymnasium.registry:  # importlib.reload(catur) must not warn
        gymnasium.register(id=_env_id, entry_point=_entry_point, additional_wrappers=(_ACTION_MASKS,))
