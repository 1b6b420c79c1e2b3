"""Catur: VM NUMA placement with reinforcement learning (learn the norm, shield the tail).

Importing ``catur`` registers the gymnasium environments, so the usual habit works::

    import gymnasium
    import catur  # noqa: F401  (registers the ids)

    env = gymnasium.make("catur/NumaPlacement-v0", workload="default", days="1:3")
    obs, info = env.reset(seed=0)
    mask = env.action_masks()

The entry points are *strings*: registering loads neither the simulator (which loads only when
``make`` builds an env; the core never imports ``catur.sim``) nor, until someone imports it,
gymnasium itself. gymnasium takes about half a second to import, a fifth of the CLI's start-up,
and neither the CLI nor the service needs it; so when it is not loaded yet, a one-shot import
hook registers the ids the moment ``import gymnasium`` finishes. (gymnasium 1.x no longer loads
plugins through package entry points, so registration on import is the way.)
"""

from __future__ import annotations

import sys


def __getattr__(name: str) -> str:
    """``catur.__version__``, looked up on first use: reading the installed metadata scans
    sys.path (a tenth of a second or more), which only ``--version`` and the service need."""
    if name != "__version__":
        raise AttributeError(f"module 'catur' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("catur")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout, not installed
        version = "unknown"
    globals()["__version__"] = version
    return version


# Env id -> the class gymnasium.make builds (see catur/sim/env.py). make() adds the
# ActionMasks wrapper last, which puts action_masks() on the env it returns.
ENV_IDS = {
    "catur/NumaPlacement-v0": "catur.sim.env:NumaPlacementEnv",
    "catur/NumaPlacementNodes-v0": "catur.sim.env:NodeActionEnv",
    "catur/NumaPlacementCandidates-v0": "catur.sim.env:CandidateEnv",
}
ACTION_MASKS_WRAPPER = "catur.sim.env:ActionMasks"


def register_envs() -> None:
    """Register :data:`ENV_IDS` with gymnasium (again is harmless: known ids are skipped)."""
    import gymnasium
    from gymnasium.envs.registration import WrapperSpec

    masks = WrapperSpec("ActionMasks", ACTION_MASKS_WRAPPER, {})
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, additional_wrappers=(masks,))


# The hook below follows importlib's finder/loader protocols (find_spec; create_module and
# exec_module) without subclassing importlib.abc, which would cost an import at start-up.


class _RegisterAfterLoad:
    """gymnasium's own loader, with :func:`register_envs` run once its module has executed."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register_envs()

    def __getattr__(self, name: str):  # resource readers, get_code, is_package, ...
        return getattr(self._loader, name)


class _GymnasiumHook:
    """Finds ``gymnasium`` as usual the first time it is imported, wrapping its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "gymnasium":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot: gymnasium is imported once
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


if "gymnasium" in sys.modules:
    register_envs()
elif not any(isinstance(finder, _GymnasiumHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _GymnasiumHook())
