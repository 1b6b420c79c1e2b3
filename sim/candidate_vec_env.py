"""Many hosts' candidate decisions as one SB3 ``VecEnv``: the samples PPO over candidates needs.

:class:`CandidateVecEnv` is the vectorised form of ``catur/NumaPlacementCandidates-v0``
(:class:`catur.sim.env.CandidateEnv`): ``num_envs`` slots, each replaying one admitted host's
event stream, all stepped together. Per step every slot has one arriving VM; the agent picks
one of its after-state candidates (:func:`catur.afterstate.afterstate_candidates`, the
columns the shipped scorer chooses among), the env applies the chosen placement and replays
that host's departures up to its next arrival. Slots of one topology share one
:class:`~catur.state.HostsState` and one candidate table per step (one per vNUMA instance
count), so a step is a few array calls over all hosts, not one Python env per host.

**Observation** ``float32[12 · F]``: slot ``c`` holds candidate ``c``'s :data:`FEATURES`
(padded and invalid slots zero), as :class:`~catur.sim.env.CandidateEnv` lays it out but
**unclipped**: the actor reads exactly what the served numpy scorer reads, so its decisions
export without change. :meth:`action_masks` is ``bool[num_envs, 12]``. A valid candidate's
row is never all zero (its ``vm_size`` is positive), which is how a policy can tell valid
slots from padding without the mask.

**Episodes** replay a host's stream from its start (its start state, warm-up VMs from before
the window decided like every other, as ``catur evaluate`` replays them), to its end
(``terminated``), or for ``episode_arrivals`` decisions (``truncated``). A finished slot
resets at once onto a stream of its topology drawn at random; SB3's ``terminal_observation``
is in its info.

**Reward: the exact objective, plus load-aware shaping over the candidates.** The headline
metric is the mean over counted VMs (those arriving inside the window) of each VM's lifetime
defect ``alpha·(COR averaged over its life) + beta·RMR``. It decomposes exactly over the
intervals between a host's events: node COR is constant between events, so a live counted
VM ``v`` accrues ``alpha_v · Σ_nodes share_v[n] · COR[n] · dt / lifetime_v`` over an interval
of length ``dt`` (``share_v``: its vCPUs per node over its vCPUs), and ``beta_v · RMR_v`` once
at its placement (a VM that leaves the instant it arrives accrues ``alpha_v · COR`` at
placement, as :func:`catur.metrics.lifetime_mean_cor` defines it). Per host this is one
matrix ``W[n] = Σ_live alpha_v · share_v[n] / lifetime_v``: an interval costs ``dt · W · COR``.
The **objective cost** of a step is what the host accrues from its decision up to its next
decision (up to the window's end after the last one); summed over a whole episode it is the
host's sum of counted lifetime defects, the numerator of the metric (``tests/test_ppo_scorer.py``
checks this against the replay engine on generated hosts). The simulator knows lifetimes; the
policy never sees them.

That cost is dominated by the host's load: every live VM pays it whatever the agent did, so
it says little about *this* choice. The paper's load-aware shaping (:mod:`catur.sim.shaping`,
over the four primitives: a tie is worth 0, the best action keeps its reward, the others get
minus the best) removes the load level and keeps *which choice was right here*. Over
candidates, with a continuous cost, its analogue is the **regret at placement**: the chosen
candidate's immediate defect minus the best valid candidate's (0 on a tie or when the best
was chosen, negative otherwise). The reward is

    reward = −scale · (objective cost + shaping_weight · regret at placement)

(:class:`RewardConfig`: ``scale`` 10, so a step's reward is in tenths of a defect point
and returns stay within the value head's easy range; ``shaping_weight`` 0.25). With weight 0 the return is exactly minus the objective; the shaping term costs a
little exactness for a signal the agent can attribute, and is small enough that the agent can
still accept an immediate regret for a later gain, which is the point of learning beyond
greedy. ``info["objective_cost"]`` and ``info["regret"]`` hold the two parts of every step.

Host streams come from admitted windows exactly as ``catur evaluate`` and the scorer trainer
build them (:class:`catur.training.afterstate.Hosts`, :class:`catur.sim.admission.HostStream`):
this module only keeps the books of a replay, like :mod:`catur.sim.batched`, and calls the same
candidate, metric and state functions as the replay engines and the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from catur.afterstate import FEATURES, afterstate_candidates
from catur.errors import CaturError
from catur.metrics import node_cor
from catur.request import split_requests
from catur.sim.batched import _topology_key
from catur.sim.env import CANDIDATE_SLOTS
from catur.state import HostsState, PlacementBatch, add_usage, remove_usage
from catur.traces.events import event_order


@dataclass(frozen=True)
class RewardConfig:
    """The reward of :class:`CandidateVecEnv` (module doc): ``−scale · (objective cost +
    shaping_weight · regret at placement)``."""

    scale: float = 10.0
    shaping_weight: float = 0.25

    def __post_init__(self) -> None:
        if not self.scale > 0 or not self.shaping_weight >= 0:
            raise CaturError(f"reward scale must be > 0 and shaping weight >= 0, got {self.scale} and {self.shaping_weight}")


class _Stream:
    """One host stream, prepared once: its events in time order and per-VM arrays."""

    def __init__(self, stream) -> None:
        trace, topology = stream.trace, stream.topology
        self.topology, self.trace = topology, trace
        vm, arriving = event_order(trace.arrival_s, trace.departure_s)
        self.ev_vm, self.ev_arrival = vm, arriving
        self.ev_time = np.where(arriving, trace.arrival_s[vm], trace.departure_s[vm])
        self.n_events = int(vm.shape[0])
        self.k, self.inst_vcpus, self.inst_mem = split_requests(topology, trace.vcpus, trace.mem_mib, trace.vnuma)
        events_end = float(self.ev_time.max()) if self.n_events else 0.0
        self.end_s = max(float(trace.end_s), events_end)
        leaves = np.where(np.isnan(trace.departure_s), self.end_s, trace.departure_s)
        self.lifetime = leaves - trace.arrival_s
        counted = np.asarray(stream.counted, dtype=bool)
        self.counted = counted
        # The per-node weight a live VM adds to W (module doc): alpha·share/lifetime, counted
        # VMs that live a while only.
        lives = counted & (self.lifetime > 0)
        self.alpha_rate = np.where(lives, trace.alpha / np.where(self.lifetime > 0, self.lifetime, 1.0), 0.0)
        self.instant = counted & (self.lifetime <= 0)
        self.start = trace.start_state(topology)
        self.start_s = float(trace.arrival_s.min()) if trace.num_vms else 0.0


class _Group:
    """The slots that replay hosts of one topology, with their shared state."""

    def __init__(self, topology, streams: list[_Stream], slots: np.ndarray) -> None:
        self.topology, self.streams, self.slots = topology, streams, slots
        s, n = len(slots), topology.num_nodes
        self.cores = topology.node_cores.astype(float)
        self.state = HostsState(topology, s)
        self.weight = np.zeros((s, n))  # W per slot
        self.now = np.zeros(s)
        self.pos = np.zeros(s, dtype=np.int64)
        self.decisions = np.zeros(s, dtype=np.int64)
        self.stream: list[_Stream] = [streams[0]] * s
        self.vm_node_vcpus: list[np.ndarray] = [np.zeros((0, n), np.int64)] * s
        self.vm_node_mem: list[np.ndarray] = [np.zeros((0, n), np.int64)] * s
        self.tables: list[tuple[np.ndarray, Any]] = []  # (rows, table) of the pending arrivals


class CandidateVecEnv(VecEnv):
    """``num_envs`` host slots stepped in one numpy batch (see the module doc).

    Args:
        streams: Admitted host streams (:class:`~catur.sim.admission.HostStream`: topology,
            trace, counted), e.g. every training draw's hosts; those with no arrival are skipped.
        num_envs: Slots. They are shared among the topologies in proportion to their streams
            (one each at least while there are enough), and a slot resets onto its own
            topology's streams.
        reward: :class:`RewardConfig`.
        episode_arrivals: Decisions before an episode is truncated (``None``: a whole stream).
        seed: Seed of the stream draws.
    """

    def __init__(self, streams: Sequence, num_envs: int = 64, reward: RewardConfig = RewardConfig(),
                 episode_arrivals: int | None = None, seed: int = 0) -> None:
        if num_envs < 1:
            raise CaturError(f"num_envs must be >= 1, got {num_envs}")
        if episode_arrivals is not None and episode_arrivals < 1:
            raise CaturError(f"episode_arrivals must be >= 1 or None, got {episode_arrivals}")
        prepared = [_Stream(s) for s in streams if s.trace.num_vms]
        if not prepared:
            raise CaturError("CandidateVecEnv needs host streams with arrivals, got none")
        self.reward, self.episode_arrivals = reward, episode_arrivals
        self._rng = np.random.default_rng(seed)
        by_topology: dict[tuple, list[_Stream]] = {}
        for s in prepared:
            by_topology.setdefault(_topology_key(s.topology), []).append(s)
        pools = sorted(by_topology.values(), key=len, reverse=True)
        counts = _shares([len(p) for p in pools], num_envs)
        self.groups: list[_Group] = []
        first = 0
        for pool, count in zip(pools, counts):
            if count:
                self.groups.append(_Group(pool[0].topology, pool, np.arange(first, first + count)))
                first += count
        width = len(FEATURES)
        observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(CANDIDATE_SLOTS * width,), dtype=np.float32)
        self.render_mode = None
        super().__init__(num_envs, observation_space, gym.spaces.Discrete(CANDIDATE_SLOTS))
        self._obs = np.zeros((num_envs, CANDIDATE_SLOTS, width), dtype=np.float32)
        self._masks = np.zeros((num_envs, CANDIDATE_SLOTS), dtype=bool)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(num_envs)
        self._started = False

    # --- the VecEnv contract -----------------------------------------------------------------

    def reset(self) -> np.ndarray:
        for group in self.groups:
            for j in range(len(group.slots)):
                self._start(group, j)
            self._observe(group)
        self._returns[:] = 0.0
        self._started = True
        return self._obs.reshape(self.num_envs, -1).copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)

    def step_wait(self):
        if not self._started or self._actions is None:
            raise CaturError("call reset() and step_async() before step_wait()")
        cost = np.zeros(self.num_envs)
        regret = np.zeros(self.num_envs)
        invalid = np.zeros(self.num_envs, dtype=bool)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for group in self.groups:
            self._place(group, self._actions[group.slots], cost, regret, invalid)
            ended = self._advance(group, np.arange(len(group.slots)), cost)
            terminated[group.slots[ended]] = True
            if self.episode_arrivals is not None:
                truncated[group.slots] = (group.decisions >= self.episode_arrivals) & ~terminated[group.slots]
            # A stream that ended has no arriving VM to observe: it restarts first (its
            # terminal observation is zeros); a truncated one is observed, then restarts.
            rewards_so_far = -self.reward.scale * (cost + self.reward.shaping_weight * regret)
            for j in ended:
                self._finish(group, int(j), infos, rewards_so_far, np.zeros(self._obs.shape[1:], np.float32), False)
            self._observe(group)
            cut = np.flatnonzero(truncated[group.slots])
            for j in cut:
                self._finish(group, int(j), infos, rewards_so_far, self._obs[group.slots[j]].copy(), True)
            if cut.size:
                self._observe(group)
        rewards = -self.reward.scale * (cost + self.reward.shaping_weight * regret)
        self._returns += rewards
        for i, info in enumerate(infos):
            info.update(objective_cost=float(cost[i]), regret=float(regret[i]), invalid_action=bool(invalid[i]))
        dones = terminated | truncated
        self._actions = None
        return self._obs.reshape(self.num_envs, -1).copy(), rewards.astype(np.float32), dones, infos

    def _finish(self, group: _Group, j: int, infos: list[dict], rewards: np.ndarray, last: np.ndarray, cut: bool) -> None:
        """Close slot ``j``'s episode (SB3's terminal observation and episode record) and restart it."""
        i = int(group.slots[j])
        infos[i]["terminal_observation"] = last.ravel()
        infos[i]["TimeLimit.truncated"] = cut
        infos[i]["episode"] = {"r": float(self._returns[i] + rewards[i]), "l": int(group.decisions[j])}
        self._returns[i] = -rewards[i]  # cancels this step's reward, added to every slot below
        self._start(group, j)

    def action_masks(self) -> np.ndarray:
        """``bool[num_envs, 12]``: the valid candidates of each slot's arriving VM."""
        return self._masks.copy()

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        chosen = self._indices(indices)
        if method_name == "action_masks":  # sb3-contrib stacks one mask per env
            return list(self.action_masks()[chosen])
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(chosen)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    # --- the replay books ------------------------------------------------------------------------

    def _start(self, group: _Group, j: int) -> None:
        """Slot ``j`` of ``group`` starts a stream of its topology drawn at random."""
        stream = group.streams[int(self._rng.integers(len(group.streams)))]
        group.stream[j] = stream
        group.state.used_vcpus[j] = stream.start.used_vcpus[0]
        group.state.used_mem_mib[j] = stream.start.used_mem_mib[0]
        group.state.residents[j] = stream.start.residents[0]
        group.weight[j] = 0.0
        group.now[j] = stream.start_s
        group.pos[j] = 0
        group.decisions[j] = 0
        n = group.topology.num_nodes
        group.vm_node_vcpus[j] = np.zeros((stream.trace.num_vms, n), np.int64)
        group.vm_node_mem[j] = np.zeros((stream.trace.num_vms, n), np.int64)
        # A stream's first event is an arrival (a VM leaves after it arrives): nothing to replay.

    def _pending(self, group: _Group, rows: np.ndarray) -> list[int]:
        return [int(group.stream[j].ev_vm[group.pos[j]]) for j in rows]

    def _observe(self, group: _Group) -> None:
        """Every slot's candidate table for its arriving VM, one table per instance count."""
        rows = np.arange(len(group.slots))
        vms = self._pending(group, rows)
        sizes = np.array([group.stream[j].k[v] for j, v in zip(rows, vms)])
        group.tables = []
        state = group.state
        for size in np.unique(sizes):
            part = rows[sizes == size]
            streams = [group.stream[j] for j in part]
            vm = [vms[j] for j in part]
            trace_of = [s.trace for s in streams]
            vcpus = np.array([t.vcpus[v] for t, v in zip(trace_of, vm)])
            alpha = np.array([t.alpha[v] for t, v in zip(trace_of, vm)])
            beta = np.array([t.beta[v] for t, v in zip(trace_of, vm)])
            inst_vcpus = np.stack([s.inst_vcpus[v, :size] for s, v in zip(streams, vm)])
            inst_mem = np.stack([s.inst_mem[v, :size] for s, v in zip(streams, vm)])
            table = afterstate_candidates(group.topology, state.used_vcpus[part], state.used_mem_mib[part],
                                          state.residents[part].astype(float), vcpus, alpha, beta, inst_vcpus, inst_mem)
            group.tables.append((part, table))
            slots = group.slots[part]
            c = table.valid.shape[1]
            self._obs[slots] = 0.0
            self._obs[slots, :c] = np.where(table.valid[..., None], table.features, 0.0)
            self._masks[slots] = False
            self._masks[slots, :c] = table.valid

    def _place(self, group: _Group, actions: np.ndarray, cost: np.ndarray, regret: np.ndarray, invalid: np.ndarray) -> None:
        """Apply each slot's chosen candidate; its placement costs go into ``cost``/``regret``."""
        n = group.topology.num_nodes
        for part, table in group.tables:
            c = table.valid.shape[1]
            chosen = actions[part]
            bad = (chosen < 0) | (chosen >= c)
            bad[~bad] = ~table.valid[np.flatnonzero(~bad), chosen[~bad]]
            chosen = np.where(bad, 0, chosen)  # an invalid action (checkers ignore masks): the first primitive
            invalid[group.slots[part]] = bad
            b = np.arange(len(part))
            placements = PlacementBatch(table.placements.cpu_nodes[b, chosen], table.placements.vcpus[b, chosen],
                                        table.placements.mem_mib[b, chosen])
            node_vcpus, node_mem = placements.node_vcpus(n), placements.node_mem_mib()
            add_usage(group.state, part, node_vcpus, node_mem)
            best = np.min(np.where(table.valid, table.defect, np.inf), axis=1)
            regret[group.slots[part]] = np.maximum(table.defect[b, chosen] - best, 0.0)
            for i, j in enumerate(part):
                stream, vm = group.stream[j], int(group.stream[j].ev_vm[group.pos[j]])
                group.vm_node_vcpus[j][vm], group.vm_node_mem[j][vm] = node_vcpus[i], node_mem[i]
                if stream.counted[vm]:
                    trace = stream.trace
                    placed = trace.beta[vm] * table.rmr[i, chosen[i]]
                    if stream.instant[vm]:
                        placed += trace.alpha[vm] * table.cor[i, chosen[i]]
                    cost[group.slots[j]] += placed
                    group.weight[j] += stream.alpha_rate[vm] * node_vcpus[i] / trace.vcpus[vm]
                group.pos[j] += 1
                group.decisions[j] += 1

    def _advance(self, group: _Group, rows: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Replay departures of ``rows`` up to each one's next arrival, accruing the objective
        cost of every interval; returns the local rows whose stream ended (integrated to its end)."""
        finished = []
        while rows.size:
            ended = np.array([group.pos[j] >= group.stream[j].n_events for j in rows], dtype=bool)
            t = np.array([group.stream[j].end_s if e else group.stream[j].ev_time[group.pos[j]] for j, e in zip(rows, ended)])
            cor = node_cor(group.cores, group.state.used_vcpus[rows])
            cost[group.slots[rows]] += np.maximum(t - group.now[rows], 0.0) * np.einsum("hn,hn->h", group.weight[rows], cor)
            group.now[rows] = np.maximum(t, group.now[rows])
            finished.extend(rows[ended].tolist())
            rows = rows[~ended]
            leaving = np.array([not group.stream[j].ev_arrival[group.pos[j]] for j in rows], dtype=bool)
            gone = rows[leaving]
            if gone.size:
                vms = self._pending(group, gone)
                node_vcpus = np.stack([group.vm_node_vcpus[j][v] for j, v in zip(gone, vms)])
                node_mem = np.stack([group.vm_node_mem[j][v] for j, v in zip(gone, vms)])
                remove_usage(group.state, gone, node_vcpus, node_mem)
                for i, (j, v) in enumerate(zip(gone, vms)):
                    stream = group.stream[j]
                    if stream.alpha_rate[v]:
                        group.weight[j] -= stream.alpha_rate[v] * node_vcpus[i] / stream.trace.vcpus[v]
                    group.pos[j] += 1
            rows = gone
        return np.array(sorted(finished), dtype=np.int64)


def _shares(sizes: list[int], total: int) -> list[int]:
    """``total`` slots shared in proportion to ``sizes`` (largest remainders), one each at least
    while there are as many slots as sizes."""
    sizes_arr = np.asarray(sizes, dtype=float)
    floor = min(1, total // len(sizes))
    counts = np.full(len(sizes), floor)
    rest = total - counts.sum()
    exact = sizes_arr / sizes_arr.sum() * rest
    counts += np.floor(exact).astype(int)
    left = total - counts.sum()
    counts[np.argsort(-(exact - np.floor(exact)), kind="stable")[:left]] += 1
    return counts.tolist()


__all__ = ["CandidateVecEnv", "RewardConfig"]
