"""The gymnasium environment: one episode is one host's VM arrivals, one step one placement.

Both ids are registered by ``import catur`` (see ``catur/__init__.py``), so
``gymnasium.make("catur/NumaPlacement-v0", workload="default")`` works without importing this
module first; ``make`` wraps the env in :class:`ActionMasks` so ``action_masks()`` is reachable.

``catur/NumaPlacement-v0`` (:class:`NumaPlacementEnv`)
    Action ``Discrete(4)``: which primitive places the arriving VM (Catur's robust action
    space, in :data:`~catur.policies.PRIMITIVES` order). Every action is always valid, so
    :meth:`action_masks` is all True.

``catur/NumaPlacementNodes-v0`` (:class:`NodeActionEnv`)
    Action ``Discrete(8)``: the NUMA node for the VM's (first) vCPU instance, the
    SchedRL/VMAgent style kept for the ablation that shows why primitives prevent collapse.
    :meth:`action_masks` allows the host's real nodes. An invalid action (a padded node slot,
    which gymnasium's and SB3's checkers send since they ignore masks) is treated as the
    node ``core-most-idle`` would pick, deterministically, and flagged in ``info``.

``catur/NumaPlacementCandidates-v0`` (:class:`CandidateEnv`)
    The after-state scorer's view (:mod:`catur.afterstate`): action ``Discrete(4 + 8)``, one
    of the request's candidates (the primitives, then every single node or a node set per
    socket); the observation is each candidate's after-state features, slot by slot
    (``(4 + 8) × F`` values, padded slots zero). :meth:`action_masks` allows the valid
    candidates; an invalid action (checkers ignore masks) takes the first primitive's
    placement and is flagged in ``info``.

How an episode runs. The constructor loads a workload (a synthetic scenario name, a trace
file, or a canonical DataFrame), admits it onto a cluster and cuts per-host event streams for
a day window, exactly as ``catur evaluate`` does. :meth:`reset` picks a host and a start
arrival with ``self.np_random``, replays the host's earlier events with a warm-up policy
(``xen``) so the episode starts on a realistically loaded host, and returns the observation
of the first arriving VM (:mod:`catur.observation`). Each :meth:`step` places that VM, then
replays departures up to the next arrival. The episode ends when the host's stream ends
(``terminated``) or after ``episode_arrivals`` steps (``truncated``).

Reward (docs/howto/train-primitive-model.md): right after the placement, the sum over the host's live VMs of
``clip(1 − (alpha·COR + beta·RMR), −1, 1)``, so a choice that overloads a node is paid for
by every VM on it. :meth:`counterfactual_rewards` gives the reward each primitive would get
from the current state (used by :class:`catur.sim.shaping.LoadAwareShaping`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from catur.afterstate import FEATURES, afterstate_candidates
from catur.errors import CaturError
from catur.metrics import ANOMALY_THRESHOLD, cor_after, node_cor
from catur.observation import (
    MAX_NODES,
    OBS_DIM,
    RESIDENT_DIM,
    Candidate,
    CandidateTable,
    candidates,
    encode,
    resident_features,
)
from catur.placement import place
from catur.policies import PRIMITIVES, NodeContext, Policy, Ranking, get_policy
from catur.request import RequestBatch, VMRequest
from catur.sim.admission import HostStream
from catur.sim.batch_policy import BatchPolicy
from catur.sim.workload import Workload
from catur.state import HostsState, Placement, apply, release

OBS_LOW, OBS_HIGH = -1.0, 8.0  # every feature is clipped into this box
_ONE_HOST = np.zeros(1, dtype=np.int64)  # the row of the env's one host in a batch


class NumaPlacementEnv(gym.Env):
    """Place each arriving VM on one host with one of the four primitives (see module doc).

    Args:
        workload: A :class:`Workload`, or its ``source`` (scenario name / path / DataFrame).
        episode_arrivals: Steps before truncation.
        streams: Pre-built host streams (skips loading; shared by vector envs in one process).
        resident_features: Append the per-node resident counts and each primitive's
            resident penalty (:func:`catur.observation.resident_features`) to the
            observation, which then has ``OBS_DIM + RESIDENT_DIM`` values. Off by default, so
            models trained on the plain layout keep it.
    """

    metadata = {"render_modes": []}
    warmup_policy = "xen"

    def __init__(
        self,
        workload: Workload | object = "default",
        episode_arrivals: int = 512,
        streams: list[HostStream] | None = None,
        resident_features: bool = False,
        **workload_options,
    ) -> None:
        super().__init__()
        if not isinstance(workload, Workload):
            workload = Workload(workload, **workload_options)
        if episode_arrivals < 1:
            raise CaturError(f"episode_arrivals must be >= 1, got {episode_arrivals}")
        self.workload = workload
        self.episode_arrivals = episode_arrivals
        self.streams = streams if streams is not None else workload.streams()
        self.topologies = sorted({s.topology.name for s in self.streams})
        self.resident_features = bool(resident_features)
        self.obs_dim = OBS_DIM + (RESIDENT_DIM if self.resident_features else 0)
        self.observation_space = gym.spaces.Box(OBS_LOW, OBS_HIGH, shape=(self.obs_dim,), dtype=np.float32)
        self.action_space = self._make_action_space()
        self._warmup = get_policy(self.warmup_policy)  # checked now; decides through BatchPolicy
        self._stream: HostStream | None = None

    def _make_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(len(PRIMITIVES))

    # --- episode bookkeeping ---------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        index = options.get("host_index")
        if index is None:
            index = int(self.np_random.integers(len(self.streams)))
        stream = self.streams[index]
        self._stream = stream
        topology = stream.topology
        trace = stream.trace
        n = trace.num_vms
        self._events = trace.events()
        self._state = HostsState(topology, 1)  # the host's usage, kept by catur.state's functions
        self._warmup_decide = BatchPolicy(topology, self._warmup, 1)  # the replay engines' adapter
        self._placements: list[Placement | None] = [None] * n
        self._live = np.zeros(n, dtype=bool)
        self._share = np.zeros((n, topology.num_nodes))  # each VM's vCPU share per node
        self._rmr = np.zeros(n)
        # Start at a random counted arrival (or the one asked for), warmed up by xen.
        arrival_positions = [i for i, (_, kind, vm) in enumerate(self._events) if kind == 1 and stream.counted[vm]]
        start = options.get("start_arrival")
        if start is None:
            start = int(self.np_random.integers(len(arrival_positions)))
        start = min(int(start), len(arrival_positions) - 1)
        self._pos = 0
        self._replay_until(arrival_positions[start], warmup=True)
        self._steps = 0
        return self._observe(), {"host": stream.host, "topology": topology.name}

    @property
    def _used_vcpus(self) -> np.ndarray:
        return self._state.used_vcpus[0]

    @property
    def _used_mem(self) -> np.ndarray:
        return self._state.used_mem_mib[0]

    def _apply(self, vm: int, placement: Placement) -> None:
        apply(self._state, 0, placement)
        self._placements[vm] = placement
        self._live[vm] = True
        self._share[vm] = 0.0
        self._share[vm, placement.cpu_nodes] = placement.vcpus / placement.total_vcpus
        self._rmr[vm] = placement.rmr()

    def _release(self, vm: int) -> None:
        release(self._state, 0, self._placements[vm])
        self._live[vm] = False

    def _replay_until(self, stop: int, warmup: bool) -> None:
        """Process events from the cursor up to (not including) position ``stop``."""
        trace, topology = self._stream.trace, self._stream.topology
        while self._pos < stop:
            _, kind, vm = self._events[self._pos]
            if kind == 1 and warmup:
                request = RequestBatch.of(topology, trace.request(vm))
                decision = self._warmup_decide(self._state.used_vcpus, self._state.used_mem_mib, request, _ONE_HOST)
                self._apply(vm, decision.placement(0))
            elif kind == 0 and self._placements[vm] is not None:
                self._release(vm)
            self._pos += 1

    def _next_arrival(self) -> int | None:
        for i in range(self._pos, len(self._events)):
            if self._events[i][1] == 1:
                return i
        return None

    def _observe(self) -> np.ndarray:
        _, _, vm = self._events[self._pos]
        self._request: VMRequest = self._stream.trace.request(vm)
        self._cands: list[Candidate] = candidates(
            self._stream.topology, self._used_vcpus, self._used_mem, self._request
        )
        obs = encode(self._stream.topology, self._used_vcpus, self._used_mem, self._request, self._cands)
        if self.resident_features:
            table = CandidateTable.from_candidates(self._cands)
            extra = resident_features(self._stream.topology, self._used_vcpus[None], self._state.residents, table)[0]
            obs = np.concatenate([obs, extra])
        return np.clip(obs, OBS_LOW, OBS_HIGH)

    # --- rewards ---------------------------------------------------------------------------------

    def _score(self, used_vcpus: np.ndarray, extra: Candidate | None = None) -> float:
        """Σ over live VMs (plus ``extra``, the VM being placed) of clip(1 − defect, −1, 1)."""
        trace = self._stream.trace
        cor = node_cor(self._stream.topology.node_cores, used_vcpus)
        live = self._live
        defects = trace.alpha[live] * (self._share[live] @ cor) + trace.beta[live] * self._rmr[live]
        total = float(np.clip(1.0 - defects, -1.0, 1.0).sum())
        if extra is not None:
            vm = self._events[self._pos][2]
            share = np.zeros_like(cor)
            share[extra.placement.cpu_nodes] = extra.placement.vcpus / extra.placement.total_vcpus
            d = trace.alpha[vm] * float(share @ cor) + trace.beta[vm] * extra.rmr
            total += float(np.clip(1.0 - d, -1.0, 1.0))
        return total

    def counterfactual_rewards(self) -> np.ndarray:
        """``float[4]``: the reward each primitive would earn for the VM now arriving."""
        if self._stream is None:
            raise CaturError("call reset() before counterfactual_rewards()")
        out = np.empty(len(self._cands))
        for i, cand in enumerate(self._cands):
            used = self._used_vcpus.copy()
            used[cand.placement.cpu_nodes] += cand.placement.vcpus
            out[i] = self._score(used, cand)
        return out

    def lookahead_costs(self, k: int) -> np.ndarray:
        """``float[4]``: per primitive, the k-step oracle's least total defect at placement of
        this host's next ``k`` arrivals (this one included) when this VM goes where that
        primitive puts it (:func:`catur.sim.oracle.lookahead_costs`). It reads the future of
        the trace, so it teaches (the oracle warm start), it never acts."""
        from catur.sim.oracle import Lookahead, lookahead_costs, lookahead_events

        if self._stream is None:
            raise CaturError("call reset() before lookahead_costs()")
        if k < 1:
            raise CaturError(f"look-ahead k must be >= 1, got {k}")
        events = lookahead_events(self._events, self._pos, k)
        trace = self._stream.trace
        requests = {vm: trace.request(vm) for arriving, vm in events if arriving}
        placed = {vm: self._placements[vm] for arriving, vm in events if not arriving and self._live[vm]}
        look = Lookahead(events, requests, placed)
        return lookahead_costs(self._stream.topology, self._used_vcpus, self._used_mem, look)

    def action_masks(self) -> np.ndarray:
        """All four primitives are always allowed (sb3-contrib's MaskablePPO reads this)."""
        return np.ones(len(PRIMITIVES), dtype=bool)

    # --- stepping --------------------------------------------------------------------------------

    def _candidate_for(self, action) -> tuple[Candidate, dict]:
        return self._cands[int(action)], {}

    def step(self, action):
        """Place the current VM with ``action`` and replay the host up to the next arrival.

        Returns gymnasium's ``(observation, reward, terminated, truncated, info)``; ``info``
        holds the placement's ``defect``, ``cor``, ``rmr``, the ``primitive`` used and whether
        it was an ``anomaly``.
        """
        if self._stream is None:
            raise CaturError("call reset() before step()")
        cand, info = self._candidate_for(action)
        vm = self._events[self._pos][2]
        self._apply(vm, cand.placement)
        reward = self._score(self._used_vcpus)
        info.update(
            defect=cand.defect,
            cor=cand.cor,
            rmr=cand.rmr,
            primitive=cand.placement.policy,
            anomaly=cand.defect > ANOMALY_THRESHOLD,
        )
        self._pos += 1
        self._steps += 1
        following = self._next_arrival()
        terminated = following is None
        if terminated:
            self._replay_until(len(self._events), warmup=False)
            obs = np.zeros(self.obs_dim, dtype=np.float32)
        else:
            self._replay_until(following, warmup=False)
            obs = self._observe()
        truncated = not terminated and self._steps >= self.episode_arrivals
        return obs, reward, terminated, truncated, info


class NodeActionEnv(NumaPlacementEnv):
    """The direct node-action variant (ablation): the action is the node itself."""

    def _make_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(MAX_NODES)

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(MAX_NODES, dtype=bool)
        mask[: self._stream.topology.num_nodes if self._stream else MAX_NODES] = True
        return mask

    def _candidate_for(self, action) -> tuple[Candidate, dict]:
        topology = self._stream.topology
        node = int(action)
        invalid = not 0 <= node < topology.num_nodes
        if invalid:  # a padded slot: take core-most-idle's node instead
            node = int(self._cands[PRIMITIVES.index("core-most-idle")].placement.cpu_nodes[0])
        policy = node_first_policy(node)
        placement = place(topology, self._used_vcpus, self._used_mem, self._request, policy)
        cor = cor_after(topology.node_cores, self._used_vcpus, placement)
        rmr = placement.rmr()
        d = self._request.alpha * cor + self._request.beta * rmr
        return Candidate(placement, cor, rmr, d), {"invalid_action": invalid}


CANDIDATE_SLOTS = len(PRIMITIVES) + MAX_NODES


class CandidateEnv(NumaPlacementEnv):
    """The after-state candidate variant: the action is one of the request's candidates, the
    observation their after-state features (:mod:`catur.afterstate`, resident counts included)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.obs_dim = CANDIDATE_SLOTS * len(FEATURES)
        self.observation_space = gym.spaces.Box(OBS_LOW, OBS_HIGH, shape=(self.obs_dim,), dtype=np.float32)

    def _make_action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(CANDIDATE_SLOTS)

    def _observe(self) -> np.ndarray:
        super()._observe()  # the request and the primitives' candidates (for the reward helpers)
        topology, state = self._stream.topology, self._state
        batch = RequestBatch.of(topology, self._request)
        self._wide = afterstate_candidates(
            topology, state.used_vcpus, state.used_mem_mib, state.residents.astype(float), batch.vcpus, batch.alpha,
            batch.beta, batch.inst_vcpus, batch.inst_mem,
        )
        obs = np.zeros((CANDIDATE_SLOTS, len(FEATURES)), dtype=np.float32)
        count = self._wide.valid.shape[1]
        obs[:count] = np.where(self._wide.valid[0, :, None], self._wide.features[0], 0.0)
        return np.clip(obs.ravel(), OBS_LOW, OBS_HIGH)

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(CANDIDATE_SLOTS, dtype=bool)
        if self._stream is None:
            mask[: len(PRIMITIVES)] = True
        else:
            mask[: self._wide.valid.shape[1]] = self._wide.valid[0]
        return mask

    def _candidate_for(self, action) -> tuple[Candidate, dict]:
        index = int(action)
        invalid = not self.action_masks()[index] if 0 <= index < CANDIDATE_SLOTS else True
        if invalid:
            index = 0
        wide = self._wide
        placement = wide.placements.placement((0, index), policy=wide.names[index])
        cand = Candidate(placement, float(wide.cor[0, index]), float(wide.rmr[0, index]), float(wide.defect[0, index]))
        return cand, {"invalid_action": invalid}


def node_first_policy(node: int) -> Policy:
    """A ranking that puts ``node`` first, then the rest by most free cores (for node actions)."""

    def rank(ctx: NodeContext) -> Ranking:
        free_cores = ctx.cores - ctx.used_vcpus
        first = np.arange(ctx.cores.shape[0]) != node
        return Ranking(np.ones_like(first), (first.astype(np.int64), -free_cores), np.zeros(first.shape[0]))

    return Policy(f"node-{node}", "action", rank, f"node {node} first")


class ActionMasks(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Puts ``action_masks()`` on the outermost env that ``gymnasium.make`` returns.

    gymnasium 1.x wrappers no longer forward attributes, so without this ``gym.make(id)
    .action_masks()`` fails behind the env checker and order-enforcing wrappers. The ids are
    registered (in ``catur/__init__.py``) with this wrapper as their last one. Under wrappers
    of your own, use ``env.get_wrapper_attr("action_masks")()`` or sb3-contrib's
    ``get_action_masks(env)``, which reach it anywhere in the stack.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def action_masks(self) -> np.ndarray:
        return self.env.get_wrapper_attr("action_masks")()
