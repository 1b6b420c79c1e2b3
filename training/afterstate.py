"""Training the after-state scorer (:mod:`catur.afterstate`) on the exact objective.

What is optimised. The headline metric is the average over VMs of each VM's defect averaged
over its life. Per event it changes by how much the live VMs' lifetime-normalised defects
change, and the sum of those changes over a replay *is* the metric: so the exact objective of
a policy is the replay's average lifetime defect, which the simulator computes knowing every
lifetime (the policy never sees them). The scorer's weights are trained on that number
directly, with **evolution strategies** (antithetic Gaussian perturbations, centred-rank
fitness shaping; Salimans et al., 2017): each generation replays the same randomly drawn
hosts of a randomly drawn scenario under ``2 · pairs`` perturbed weight vectors, and moves the
weights towards the better half. A replay is deterministic, so pairs differ only by their
weights. This needs no differentiable model of the simulator and no reward shaping, and
with few weights it converges in tens of generations.

**Warm start**: ``resident-greedy`` (the ``defect`` weight at −1, ``resident_rise`` at −λ,
every other weight 0). For a one-layer scorer the ``defect`` weight stays at −1 (an argmax
does not change when all scores are scaled, so one weight fixes the scale; the same holds for
``defect_on_few_nodes``); perturbations are scaled per feature by its spread, so each weight
moves scores by comparable amounts.

**A few-node correction** (``train_features=("few-nodes",)``, from ``init_from``): only the
weights of the ``*_on_few_nodes`` copies move, trained on 2- and 4-node hosts only. A linear
scorer has one weight vector for every host, and the 8-node hosts, where the shipped default
gains most, dominate what evolution strategies find; the correction gives the smaller hosts
weights of their own while every decision on an 8-node host stays what it was.

**Balanced generations** (``balanced=True``): each generation replays one draw of every
source and averages the perturbations' ranks over the sources, so a step is one that helps the
sources on average rather than the one source a generation drew. Continuation runs drawing
one scenario per generation kept trading Huawei for the synthetic and Azure windows.

**Randomised scenarios**: every source (Huawei-East-1 days 1–12, Azure 2017 dev day 1, the
synthetic drift workloads at other seeds) is admitted under several draws of vCPU overcommit
(1.0–1.05, half of the draws exactly 1.0), target utilisation (0.85–0.97) and cluster mix
(``mixed``, ``amd-2s-nps4``).

**Selection** uses only validation windows (Huawei days 13–15, Azure day 2, the synthetic
workloads at another seed), each on both clusters at overcommit 1.0 and 1.02: every
``eval_every`` generations the current weights are replayed on every validation set, and the
weights with the lowest *selection score* are kept — the mean ratio to greedy over the sets,
plus how far the worst set is above greedy (so weights that win on average but lose on some
set pay for it; a first run selected on the mean alone, and on two validation scenarios, won
12% on validation and lost on the test cells it had no validation set for, docs/results/history/scorer-attempts.md).
The kept weights must not lose to greedy (:mod:`catur.verdict`, a paired bootstrap over
the validation hosts of all sets together), or nothing is written (``allow_worse`` writes
anyway). Test windows (Huawei 16–31, Azure 3–4, synthetic seed 0) are never read.

**A continuation must not trade one source for another.** With ``init_from`` (more
generations from a model that already serves), later weights replace the starting ones only
if they are not *clearly* worse than the start on any source: per source, its validation hosts
are paired with the starting weights' on the same hosts and pooled over its sets, and a source
is lost when the 95% paired-bootstrap interval of the difference lies wholly above 0 (the test
:mod:`catur.verdict` and ``catur retrain`` use). A continuation run with three more features
won 1.5 points on the validation mean while losing on all four Huawei sets, and on the test
grid it lost to the model it started from (docs/results/history/scorer-attempts.md): a better average over sources is
not a better model for a fleet that looks like one of them. A first version of this rule
refused any source whose mean ratio to greedy was worse at all; on three Huawei validation
days it then refused a 0.1-point change, well inside the noise, in every continuation run.

**...and must be clearly better than its start** (``continuation_needs_clear_gain``, the
default): the 95% interval of the paired difference wholly below 0 on at least one source.
Without it, the Huawei-East-1 walk-forward kept a generation whose gain over the start on
validation days 13–15 was inside the noise (−0.024 points [−0.108, +0.054]), and on test
days 16–31 it was 5.9% worse than the start it replaced (docs/results/learning.md). A change
the validation cannot resolve is not worth the risk of moving a model that serves.

**A hidden layer** (``hidden=N``): the vector ES moves is then a one-hidden-layer ReLU
network's parameters (:mod:`catur.training.scorer_network`: its layout, the per-parameter
scales, and a warm start that decides as the one-layer start does), and a population of
such networks replays in one batch (:class:`~catur.afterstate.NetworkPopulation`).
Everything else — scenarios, selection, the continuation rules (against the one-layer
start's own validation replays), the gate, the export check — is the same.

A torch network with the same layers (:func:`torch_network`) is what a gradient-based
trainer would use; :func:`export_check` replays candidate sets through both and records that
the numpy scorer decides exactly as the torch network does.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from catur.afterstate import (
    FEATURES, FEW_NODE_CORRECTED, FEW_NODE_SUFFIX, AfterStateModel, NetworkPopulation, ScorerPopulation, afterstate_candidates,
    afterstate_manifest,
)
from catur.decision import Decider
from catur.errors import CaturError
from catur.observation import CandidateTable
from catur.placement import GREEDY
from catur.policies import PRIMITIVES
from catur.request import split_requests
from catur.resident import DEFAULT_WEIGHT
from catur.scorer import AFTERSTATE_CANDIDATES
from catur.sim.batched import replay_batched
from catur.training.scorer_network import LINEAR, Architecture, hidden_features, hidden_start, network_scales
from catur.training.sources import Source, Window, drawn_cluster, read_window_trace, unique_validation
from catur.verdict import Comparison, compare, gate_or_refuse


@dataclass(frozen=True)
class ScorerTrainConfig:
    """How the after-state scorer is trained (see the module doc)."""

    generations: int = 40
    pairs: int = 6  # antithetic pairs per generation: 2 · pairs replays
    noise: float = 0.3  # perturbation size, in units of each weight's scale
    learning_rate: float = 0.5
    hosts_per_replay: int = 10
    scenarios_per_source: int = 3
    overcommit: tuple[float, float] = (1.0, 1.05)
    # Share of draws at exactly the range's low end (1.0: no overcommit, the common production
    # setting, where a rule tuned for overloaded nodes does harm); the rest are uniform.
    overcommit_low_share: float = 0.5
    target_utilization: tuple[float, float] = (0.85, 0.97)
    clusters: tuple[str, ...] = ("mixed", "amd-2s-nps4")
    # The validation scenarios of every source: (cluster, overcommit), target 0.95: each
    # cluster of the draws at both ends of a typical overcommit range.
    validation: tuple[tuple[str, float], ...] = (("mixed", 1.0), ("mixed", 1.02), ("amd-2s-nps4", 1.0), ("amd-2s-nps4", 1.02))
    # The validation windows' target utilisation (retrain validates at the operator's own).
    validation_target: float = 0.95
    eval_every: int = 8
    resident_weight: float = DEFAULT_WEIGHT  # the warm start's λ
    # Continue from a one-layer scorer's weights (a model directory or "default") instead of
    # the resident-greedy warm start: more generations, other scenario draws, or new data.
    init_from: str | None = None
    # With init_from: later weights replace the start only when clearly better than it on
    # validation on some source (module doc); False lets any not-clearly-worse gain through.
    continuation_needs_clear_gain: bool = True
    # Only these weights move (default: every weight a one-layer scorer can use). With
    # init_from, ``FEW_NODE_GROUP`` trains a correction for 2- and 4-node hosts and leaves the
    # starting model's decisions on 8-node hosts exactly as they were.
    train_features: tuple[str, ...] | None = None
    # Each generation replays one training draw of *every* source (``hosts_per_replay`` hosts
    # each) and ranks the perturbations per source, so a step is taken only where the sources
    # agree on average, instead of following whichever source a generation happened to draw.
    balanced: bool = False
    # Hidden ReLU units (0: the one-layer scorer, as before). With H >= 3 the scorer is a
    # network with one hidden layer of H units that can use the context features, started
    # from the one-layer scorer (resident-greedy or init_from) so that it decides as that one
    # does at generation 0 (catur.training.scorer_network).
    hidden: int = 0
    # The features a hidden-layer scorer reads (default: the starting model's, else every
    # base feature); a one-layer scorer reads all of FEATURES.
    features: tuple[str, ...] | None = None
    seed: int = 0
    jobs: int = 2
    allow_worse: bool = False

    def __post_init__(self) -> None:
        if self.generations < 0 or self.pairs < 1 or self.hosts_per_replay < 1 or self.scenarios_per_source < 1:
            raise CaturError("generations >= 0, pairs >= 1, hosts per replay >= 1 and scenarios per source >= 1 are required")
        if self.eval_every < 1 or self.jobs < 1:
            raise CaturError(f"eval_every and jobs must be >= 1, got {self.eval_every} and {self.jobs}")
        if not (self.noise > 0 and self.learning_rate > 0):
            raise CaturError(f"noise and learning rate must be > 0, got {self.noise} and {self.learning_rate}")
        if self.train_features is not None:
            unknown = sorted(set(self.train_features) - set(FEATURES))
            if unknown or not self.train_features:
                raise CaturError(f"train_features: unknown features {unknown or '(none given)'}; known: {', '.join(FEATURES)} "
                                 f"(or {FEW_NODE_GROUP!r} for every *{FEW_NODE_SUFFIX} one)")
        if self.hidden and self.train_features is not None:
            raise CaturError("train_features moves some weights of a one-layer scorer; a hidden-layer scorer moves all of them "
                             "(give one or the other)")
        if self.features is not None and not self.hidden:
            raise CaturError("features: choosing the features applies to a hidden-layer scorer (hidden >= 3); "
                             "a one-layer scorer reads every feature")
        if self.hidden:
            Architecture(tuple(self.features or FEATURES), self.hidden)  # refuses a bad size or unknown features


#: The name that stands for every few-node correction feature in ``--train-features``.
FEW_NODE_GROUP = "few-nodes"


def expand_feature_names(names: list[str]) -> tuple[str, ...]:
    """Feature names, with :data:`FEW_NODE_GROUP` replaced by every ``*_on_few_nodes`` feature."""
    out: list[str] = []
    for name in names:
        out.extend([f + FEW_NODE_SUFFIX for f in FEW_NODE_CORRECTED] if name == FEW_NODE_GROUP else [name])
    return tuple(dict.fromkeys(out))


# --- the weights ----------------------------------------------------------------------------------

DEFECT = FEATURES.index("defect")
# The weights that fix the scores' scale, one per host group (an argmax does not change when
# every score is scaled): never trained.
SCALE_WEIGHTS = (DEFECT, FEATURES.index("defect" + FEW_NODE_SUFFIX))


def warm_start(resident_weight: float) -> np.ndarray:
    """``resident-greedy``'s weights over :data:`FEATURES`."""
    w = np.zeros(len(FEATURES))
    w[DEFECT], w[FEATURES.index("resident_rise")] = -1.0, -resident_weight
    return w


def start_weights(config: "ScorerTrainConfig") -> np.ndarray:
    """The first generation's weights: :func:`warm_start`, or ``config.init_from``'s."""
    if config.init_from is None:
        return warm_start(config.resident_weight)
    from catur.policy_model import load_policy

    return scorer_weights(load_policy(config.init_from), f"--init-from {config.init_from}")


def scorer_weights(model: object, named: str) -> np.ndarray:
    """A one-layer scorer's weights over all of :data:`FEATURES` (the ones an older model does
    not read at 0), scaled so the ``defect`` weight is −1, the scale the trainer keeps.
    ``named`` says which model in an error."""
    if getattr(model, "candidates", None) != AFTERSTATE_CANDIDATES or len(getattr(model, "layers", ())) != 1:
        raise CaturError(f"{named}: not a one-layer after-state scorer")
    weights = np.zeros(len(FEATURES))
    weights[[FEATURES.index(f) for f in model.manifest["features"]]] = model.layers[0][0][:, 0]
    if weights[DEFECT] >= 0:
        raise CaturError(f"{named}: its defect weight must be negative, got {weights[DEFECT]}")
    return weights / -weights[DEFECT]


def model_of(weights: np.ndarray, arch: Architecture = LINEAR, **manifest) -> AfterStateModel:
    """The scorer of a flat parameter vector (a one-layer scorer's weights by default)."""
    return arch.model(weights, **manifest)


# --- scenarios ------------------------------------------------------------------------------------


@dataclass
class Hosts:
    """One admitted window: its host streams, and which source and draw it is."""

    label: str
    streams: list

    def replay(self, weights: np.ndarray | str | AfterStateModel, picked: np.ndarray | None = None,
               arch: Architecture = LINEAR) -> tuple[np.ndarray, np.ndarray]:
        """Per host (of ``picked``, default all): the sum of counted VMs' lifetime defects and
        their count, under ``weights`` (a flat parameter vector of ``arch``), a policy name or a
        model of any depth."""
        streams = self.streams if picked is None else [self.streams[i] for i in picked]
        if isinstance(weights, AfterStateModel):
            policy = Decider(weights)
        else:
            policy = weights if isinstance(weights, str) else Decider(model_of(weights, arch))
        results = replay_batched([(s.topology, s.trace) for s in streams], policy)
        return _sums(results, streams), _counts(streams)

    def replay_population(self, population: np.ndarray, picked: np.ndarray | None = None,
                          arch: Architecture = LINEAR) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`replay` of every row of ``population`` (``[W, F]`` weight vectors) on the same
        hosts, as **one** lock-step batch of ``W · H`` hosts: ``(sums[W, H], counts[H])``.

        One replay of ``W`` times the hosts pays the batched engine's fixed cost per step once,
        not ``W`` times. Row ``w`` is what :meth:`replay` gives ``population[w]``: each copy of a
        host is scored by its member (:class:`~catur.afterstate.ScorerPopulation`), which
        decides bit for bit as the one-layer model alone, and the engine gives every host the
        same numbers whatever else it replays with. A hidden-layer ``arch`` scores its members
        with :class:`~catur.afterstate.NetworkPopulation`, just as exactly.
        """
        streams = self.streams if picked is None else [self.streams[i] for i in picked]
        w, h = len(population), len(streams)
        members = [model_of(weights, arch) for weights in population]
        scorer = (ScorerPopulation if arch.hidden == 0 else NetworkPopulation).of(members, np.repeat(np.arange(w), h))
        # Every copy through the lock-step engine, however few hosts share a topology: the
        # population scorer reads each host's number, which only the batched engine passes.
        results = replay_batched([(s.topology, s.trace) for _ in range(w) for s in streams], Decider(scorer),
                                 min_batch_hosts=1)
        return _sums(results, streams * w).reshape(w, h), _counts(streams)


def _sums(results: list, streams: list) -> np.ndarray:
    """Per host: the sum of its counted VMs' lifetime defects."""
    return np.array([r.lifetime_defect[s.counted].sum() for r, s in zip(results, streams)])


def _counts(streams: list) -> np.ndarray:
    return np.array([s.counted.sum() for s in streams], dtype=float)


def _streams(source: Source, window: Window, **admission) -> list:
    """The host streams of ``window`` of ``source`` with VMs arriving in it."""
    df = read_window_trace(window.workload, window.seed, source.format)
    scenario = source.workload_of(window, **admission).scenario(df)
    return [s for s in scenario.streams if s.counted.any()]


def build_scenarios(sources: list[Source], config: ScorerTrainConfig, log: Callable[[str], None]) -> tuple[list[Hosts], list[Hosts]]:
    """The randomised training windows and the fixed validation windows of every source.

    A source with a fixed cluster or a start state (:mod:`catur.training.sources`) keeps it
    in every draw and validates on it at each of the recipe's overcommits; a validation set
    must have VMs on two hosts at least, or the paired comparison has nothing to resample."""
    rng = np.random.default_rng(config.seed)
    train, val = [], []
    for source in sources:
        started = time.perf_counter()
        windows = source.train
        for draw in range(config.scenarios_per_source):
            window = windows[draw % len(windows)]
            low = rng.random() < config.overcommit_low_share
            overcommit = float(config.overcommit[0] if low else rng.uniform(*config.overcommit))
            target = float(rng.uniform(*config.target_utilization))
            cluster = drawn_cluster(source, config.clusters, rng)
            streams = _streams(source, window, cluster=cluster, target_utilization=target, cpu_overcommit=overcommit)
            if not streams:
                raise CaturError(f"{source.name}: no VM arrives in the training window {window.label} of {window.workload}")
            fixed = source.start_state is not None
            train.append(Hosts(f"{source.name} {window.label} {cluster or 'start-state'} oc {overcommit:.3f}"
                               + ("" if fixed else f" target {target:.2f}"), streams))
        window, sets = source.validate, unique_validation(config.validation, source)
        for cluster, overcommit in sets:
            streams = _streams(source, window, cluster=cluster, target_utilization=config.validation_target, cpu_overcommit=overcommit)
            if len(streams) < 2:
                raise CaturError(
                    f"{source.name}: the validation window {window.label} of {window.workload} has VMs on "
                    f"{len(streams)} host{'s' * (len(streams) != 1)} of cluster {cluster or 'start-state'} at overcommit "
                    f"{overcommit}; too small to validate on (2 hosts at least): give a longer validation window")
            val.append(Hosts(f"{source.name} {window.label} {cluster or 'start-state'} oc {overcommit}", streams))
        log(f"  {source.name}: {config.scenarios_per_source} training draws, {len(sets)} validation sets on {window.label}; "
            f"test part {source.test}, never read ({time.perf_counter() - started:.0f} s)")
    return train, val


# Worker processes inherit the scenarios by fork (no pickling of host streams per task).
_POOL_SETS: list[Hosts] = []


def _replay_task(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(index into the sets, weights or a policy name, picked hosts or None[, architecture])``
    → per-host sums (``[W, P]`` weights, a population: ``[W, H]`` sums,
    :meth:`Hosts.replay_population`); without an architecture the weights are a one-layer scorer's."""
    index, weights, picked, *rest = task
    arch = rest[0] if rest else LINEAR
    if isinstance(weights, np.ndarray) and weights.ndim == 2:
        return _POOL_SETS[index].replay_population(weights, picked, arch)
    return _POOL_SETS[index].replay(weights, picked, arch)


def _map(pool, tasks: list[tuple]) -> list:
    return pool.map(_replay_task, tasks) if pool is not None else [_replay_task(t) for t in tasks]


def _workers(pool) -> int:
    """How many processes ``pool`` runs (1 without a pool)."""
    return 1 if pool is None else int(pool._processes)


# --- the scales -----------------------------------------------------------------------------------


def random_candidate_sets(sets: list[Hosts], rng: np.random.Generator, samples: int = 2000) -> list[CandidateTable]:
    """Candidate sets of one-instance VMs drawn from the windows' traces, each on a host of
    random usage (0–110% of each node's cores, 0–95% of its memory, 0–29 residents): the
    states a host passes through, without replaying anything."""
    out = []
    per_set = max(samples // max(len(sets), 1), 1)
    for hosts in sets:
        stream = hosts.streams[0]
        trace, topology = stream.trace, stream.topology
        pick = rng.choice(trace.num_vms, size=min(per_set, trace.num_vms), replace=False)
        k, inst_vcpus, inst_mem = split_requests(topology, trace.vcpus[pick], trace.mem_mib[pick], trace.vnuma[pick])
        one = pick[k == 1]
        b, n = len(one), topology.num_nodes
        if b == 0:
            continue
        used = (rng.uniform(0, 1.1, size=(b, n)) * topology.node_cores).astype(np.int64)
        mem = (rng.uniform(0, 0.95, size=(b, n)) * topology.node_mem_mib).astype(np.int64)
        residents = rng.integers(0, 30, size=(b, n)).astype(float)
        out.append(afterstate_candidates(
            topology, used, mem, residents, trace.vcpus[one], trace.alpha[one], trace.beta[one],
            inst_vcpus[k == 1, :1], inst_mem[k == 1, :1],
        ))
    return out


def feature_scales(sets: list[Hosts], rng: np.random.Generator) -> np.ndarray:
    """How far to perturb each weight: the ``defect`` feature's spread within a candidate set
    divided by this feature's (spreads averaged over sampled candidate sets), so one unit of
    any weight moves the ranking about as much as one unit of the ``defect`` weight. Features
    that never differ between candidates (the context) get 0: a one-layer scorer cannot use them."""
    spreads = [c.features.std(axis=1).mean(axis=0) for c in random_candidate_sets(sets, rng)]
    scale = np.mean(spreads, axis=0) if spreads else np.ones(len(FEATURES))
    return np.where(scale > 1e-9, scale[DEFECT] / np.maximum(scale, 1e-9), 0.0)


# --- selection ------------------------------------------------------------------------------------


def source_of(label: str) -> str:
    """The source of a validation set's label (``"huawei 13:15 mixed oc 1.0"`` → ``"huawei"``)."""
    return label.split(" ", 1)[0]


def source_means(labels: list[str], ratios: np.ndarray) -> dict[str, float]:
    """Mean ratio to greedy over each source's validation sets."""
    by_source: dict[str, list[float]] = {}
    for label, ratio in zip(labels, ratios.tolist()):
        by_source.setdefault(source_of(label), []).append(ratio)
    return {source: float(np.mean(values)) for source, values in by_source.items()}


def source_comparisons(labels: list[str], parts: list, start_parts: list) -> dict[str, Comparison]:
    """Per source: the weights' validation hosts against the starting weights' on the same
    hosts (``parts``: per set, per-host defect sums and VM counts, as :meth:`Hosts.replay`
    returns), pooled over the source's sets, by the paired bootstrap of :mod:`catur.verdict`."""
    pooled: dict[str, list] = {}
    for label, part, start in zip(labels, parts, start_parts):
        pooled.setdefault(source_of(label), []).append((part[0], start[0], part[1]))
    return {
        source: compare(np.concatenate([r[2] for r in rows]), np.concatenate([r[0] for r in rows]),
                        np.concatenate([r[1] for r in rows]), "start")
        for source, rows in pooled.items()
    }


def regressed_sources(comparisons: dict[str, Comparison]) -> list[str]:
    """The sources on which the weights are *clearly* worse than the starting weights (the
    95% interval of the paired difference wholly above 0; :func:`source_comparisons`)."""
    return sorted(source for source, c in comparisons.items() if c.clearly_worse)


def why_not_kept(comparisons: dict[str, Comparison], needs_clear_gain: bool) -> str:
    """Why a continuation's weights may not replace its start ("" when they may): clearly
    worse than the start on some source, or (``needs_clear_gain``) clearly better on none."""
    worse_on = regressed_sources(comparisons)
    if worse_on:
        return f"clearly worse than the starting model on {', '.join(worse_on)}"
    if needs_clear_gain and not any(c.clearly_better for c in comparisons.values()):
        return "not clearly better than the starting model on any source"
    return ""


# --- training -------------------------------------------------------------------------------------


@dataclass
class ScorerResult:
    out: Path
    weights: dict[str, float]
    validation: dict
    history: list[dict] = field(default_factory=list)
    gate: dict = field(default_factory=dict)
    train_seconds: float = 0.0


def selection_score(ratios: np.ndarray) -> float:
    """The selection score of validation ratios to greedy (one per set; lower is better): the
    mean ratio plus how far the worst set is above greedy (module doc)."""
    return float(ratios.mean() + max(0.0, ratios.max() - 1.0))


def centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5] (lowest value: -0.5): fitness shaping that ignores scale."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks / max(len(values) - 1, 1) - 0.5


@dataclass(frozen=True)
class EvolutionStep:
    """One generation of evolution strategies over the scorer's weights (see the module doc):
    ``pairs`` antithetic perturbations of size ``noise · scales`` on the weights marked
    ``free``, each replayed on ``hosts_per_replay`` sampled hosts of every drawn set.

    ``batched`` (the default) replays all ``2 · pairs`` perturbations of a draw as one
    lock-step batch of hosts × perturbations (:meth:`Hosts.replay_population`); ``False``
    replays them one after another, as the trainer did before: the same fitness bit for bit
    (``tests/test_scorer.py``), kept as the yardstick ``benchmarks/bench_es_generation.py``
    measures the batch against."""

    pairs: int
    hosts_per_replay: int
    noise: float
    learning_rate: float
    scales: np.ndarray
    free: np.ndarray
    batched: bool = True
    arch: Architecture = LINEAR  # what the weights are: a one-layer scorer's, or a hidden-layer network's

    @property
    def arch_task(self) -> tuple:
        """What a replay task adds to say what the weights are: nothing for a one-layer scorer
        (its tasks are what they always were), the architecture otherwise."""
        return (self.arch,) if self.arch.hidden else ()

    def take(self, pool, weights: np.ndarray, draws: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(new weights, fitness[len(draws), 2 · pairs])``: replays the perturbed weights on
        sampled hosts of each set in ``draws`` (indices into the pool's sets) and steps towards
        the better half, by centred ranks within each draw (different hosts have incomparable
        defect levels), averaged over the draws."""
        picks = [np.sort(rng.choice(len(_POOL_SETS[i].streams), size=min(self.hosts_per_replay, len(_POOL_SETS[i].streams)),
                                    replace=False)) for i in draws]
        eps = rng.standard_normal((self.pairs, len(self.scales))) * self.free
        steps = eps * self.noise * self.scales
        # The whole population (pair i: +step, -step) replays as one lock-step batch per draw
        # (split over the pool's processes, when there is a pool), not one replay per
        # perturbation: the engine's fixed cost per step is paid once per batch.
        population = np.array([weights + sign * s for s in steps for sign in (1.0, -1.0)])
        if self.batched:
            parts = np.array_split(np.arange(len(population)), min(_workers(pool), len(population)))
            tasks = [(index, population[part], picked, *self.arch_task) for index, picked in zip(draws, picks) for part in parts]
        else:
            tasks = [(index, member, picked, *self.arch_task) for index, picked in zip(draws, picks) for member in population]
        results = _map(pool, tasks)
        # Per member, the sum over its hosts of one row: the same sum, in the same order, as
        # one member's own replay gives.
        fitness = np.array([row.sum() / counts.sum() for sums, counts in results for row in np.atleast_2d(sums)])
        fitness = fitness.reshape(len(draws), 2 * self.pairs)
        shaped = np.mean([centred_ranks(f) for f in fitness], axis=0).reshape(self.pairs, 2)
        gradient = ((shaped[:, 0] - shaped[:, 1])[:, None] * eps).mean(axis=0)
        return weights - self.learning_rate * gradient * self.noise * self.scales, fitness


def trainable(scales: np.ndarray, train_features: tuple[str, ...] | None = None) -> np.ndarray:
    """Which weights evolution strategies move: not the scale-fixing ones, not those whose
    feature never differs between candidates, and only ``train_features`` when given."""
    return np.array([
        i not in SCALE_WEIGHTS and scales[i] > 0 and (train_features is None or name in train_features)
        for i, name in enumerate(FEATURES)
    ])


def hidden_network(config: ScorerTrainConfig, linear_start: np.ndarray, train: list[Hosts], rng: np.random.Generator,
                   log: Callable[[str], None]) -> tuple[Architecture, np.ndarray, np.ndarray]:
    """``(architecture, starting vector, scales)`` of a hidden-layer scorer that starts where the
    one-layer ``linear_start`` is (:mod:`catur.training.scorer_network`)."""
    start_features = None
    if config.init_from is not None:
        from catur.policy_model import load_policy

        start_features = load_policy(config.init_from).features
    arch = Architecture(hidden_features(linear_start, config.features, start_features), config.hidden)
    scales, input_scales = network_scales(random_candidate_sets(train, rng), arch)
    log(f"{arch.describe()} ({arch.size} parameters, {int((scales > 0).sum())} trained), starting where the "
        f"one-layer {'--init-from ' + config.init_from if config.init_from else 'resident-greedy'} scorer is")
    return arch, hidden_start(linear_start, arch, input_scales, rng), scales


def train_scorer(
    sources: list[Source], config: ScorerTrainConfig, out: str | Path, *, progress: bool = True, log: Callable[[str], None] = print
) -> ScorerResult:
    """Train, select on validation, gate against greedy and write the model directory ``out``."""
    from tqdm import tqdm

    global _POOL_SETS
    if not sources:
        raise CaturError("no training source")
    out = Path(out)
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    log(f"building scenarios for {', '.join(s.name for s in sources)}")
    train, val = build_scenarios(sources, config, log)
    _POOL_SETS = train + val
    val_offset = len(train)
    linear_start = start_weights(config)
    if config.hidden:
        arch, weights, scales = hidden_network(config, linear_start, train, rng, log)
        free = scales > 0
    else:
        arch = LINEAR
        scales = feature_scales(train, rng)
        free = trainable(scales, config.train_features)
        weights = linear_start
    if not free.any():
        raise CaturError(f"no trainable weight: the features {list(config.train_features or ())} do not vary between "
                         "candidates on the training hosts (a few-node correction needs --clusters with 2- or 4-node hosts)")
    context = multiprocessing.get_context("fork")
    pool = context.Pool(config.jobs) if config.jobs > 1 else None
    try:
        # Greedy and the primitives on every validation set, once: the yardsticks.
        log(f"baselines on {len(val)} validation sets")
        baseline_names = [GREEDY, *PRIMITIVES]
        baseline = {
            name: _map(pool, [(val_offset + i, name, None) for i in range(len(val))]) for name in baseline_names
        }

        step = EvolutionStep(config.pairs, config.hosts_per_replay, config.noise, config.learning_rate, scales, free, arch=arch)

        def validate(generation: int, w: np.ndarray) -> tuple[float, list]:
            """Replay every validation set; log and record the mean and worst ratio to greedy.
            The selection score is the mean ratio plus how far the worst set is above greedy:
            weights that win on average but lose somewhere pay for it."""
            parts = _map(pool, [(val_offset + i, w, None, *step.arch_task) for i in range(len(val))])
            ratios = np.array([p[0].sum() / g[0].sum() for p, g in zip(parts, baseline[GREEDY])])
            score = selection_score(ratios)
            per_source = source_means([h.label for h in val], ratios)
            history.append({"generation": generation, "val_ratio_to_greedy": float(ratios.mean()),
                            "val_worst_ratio": float(ratios.max()), "selection_score": score,
                            "val_ratio_by_source": per_source, "weights": w.tolist()})
            log(f"generation {generation}: {100 * (ratios.mean() - 1):+.2f}% vs greedy on validation on average, "
                f"worst set {100 * (ratios.max() - 1):+.2f}%")
            return score, parts

        history: list[dict] = []
        best_score, best_parts = validate(0, weights)
        best_weights, best_generation = weights.copy(), 0
        start_parts = best_parts
        if arch.hidden:
            # The continuation rules compare with the one-layer start itself: replay it too, and
            # say whether generation 0 decided as it did on every validation host.
            start_parts = _map(pool, [(val_offset + i, linear_start, None) for i in range(len(val))])
            same = all(np.array_equal(a[0], b[0]) for a, b in zip(best_parts, start_parts))
            history[0]["same_as_start"] = same
            log(f"generation 0 ({arch.describe()}) gives the one-layer start's defect on every validation host" if same
                else f"generation 0 ({arch.describe()}) differs from its one-layer start on some validation host (scores a "
                "rounding apart); later generations are compared with the one-layer start's own replays")
        bar = tqdm(range(1, config.generations + 1), desc="generations", disable=not progress or None, leave=False)
        by_source: dict[str, list[int]] = {}
        for i, hosts in enumerate(train):
            by_source.setdefault(source_of(hosts.label), []).append(i)
        for generation in bar:
            draws = ([int(rng.choice(indices)) for indices in by_source.values()] if config.balanced
                     else [int(rng.integers(len(train)))])
            weights, fitness = step.take(pool, weights, draws, rng)
            bar.set_postfix_str(f"{train[draws[0]].label[:30]}{' +' if len(draws) > 1 else ''} {100 * fitness.mean():.3f}%")
            if generation % config.eval_every == 0 or generation == config.generations:
                score, parts = validate(generation, weights)
                worse_on: list[str] = []
                refused = ""
                if config.init_from:
                    comparisons = source_comparisons([h.label for h in val], parts, start_parts)
                    worse_on = regressed_sources(comparisons)
                    refused = why_not_kept(comparisons, config.continuation_needs_clear_gain)
                    history[-1]["vs_start_by_source"] = {
                        s: {"diff": c.diff, "diff_low": c.diff_low, "diff_high": c.diff_high} for s, c in comparisons.items()}
                history[-1]["regressed_sources"] = worse_on
                if refused and score < best_score:
                    log(f"  not kept: {refused}")
                if score < best_score and not refused:
                    best_score, best_parts, best_weights, best_generation = score, parts, weights.copy(), generation
        bar.close()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    train_seconds = time.perf_counter() - started

    # The gate: every validation host of every set, paired with greedy (and the best primitive).
    vms = np.concatenate([p[1] for p in best_parts])
    sums = {"catur": np.concatenate([p[0] for p in best_parts])}
    for name in baseline_names:
        sums[name] = np.concatenate([p[0] for p in baseline[name]])
    hosts = list(range(len(vms)))
    verdict = gate_or_refuse(hosts, vms, sums, allowed_worse=config.allow_worse, log=log,
                             losing="the scorer loses to greedy on the validation windows", out=out)
    per_set = {
        h.label: {"catur": float(p[0].sum() / p[1].sum()), **{n: float(baseline[n][i][0].sum() / p[1].sum()) for n in baseline_names}}
        for i, (h, p) in enumerate(zip(val, best_parts))
    }
    model = model_of(
        best_weights,
        arch,
        version=f"afterstate-s{config.seed}-{int(time.time())}",
        training={
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            **({"architecture": arch.record()} if arch.hidden else {}),
            "sources": [asdict(s) for s in sources],
            "train_sets": [h.label for h in train],
            "best_generation": best_generation,
            "feature_scales": scales.tolist(),
            "train_seconds": round(train_seconds, 1),
            "history": history,
        },
        evaluation={
            "windows": [h.label for h in val],
            "val_ratio_to_greedy": next(h["val_ratio_to_greedy"] for h in history if h["generation"] == best_generation),
            "selection_score": best_score,
            "per_set": per_set,
            "gate": verdict,
        },
        export_check=export_check(best_weights, train, np.random.default_rng(config.seed + 1), arch=arch),
    )
    model.save(out)
    named = {f: float(w) for f, w in zip(FEATURES, best_weights)} if not arch.hidden else {}
    log(f"wrote {out} (generation {best_generation}, selection score {best_score:.4f}, {train_seconds:.0f} s)")
    return ScorerResult(out, named, per_set, history, verdict, train_seconds)


# --- fine-tuning a served scorer (catur retrain) ---------------------------------------------------


def fine_tune_scorer(
    start: AfterStateModel, streams: list, out: str | Path, *, generations: int, pairs: int = 6, hosts_per_replay: int = 10,
    noise: float = 0.2, learning_rate: float = 0.3, seed: int = 0, jobs: int = 1, manifest: dict | None = None,
    progress: bool = True, log: Callable[[str], None] = print,
) -> AfterStateModel:
    """Continue a one-layer scorer's training on given host streams (``catur retrain``'s recent
    window) for ``generations`` and write the last weights to ``out``.

    Nothing is selected here: the caller judges the result on every cluster of its window
    (retrain's gate) and keeps the best of its iterations. Smaller steps than a fresh run
    (``noise`` 0.2, ``learning_rate`` 0.3), since the start already serves. ``manifest``
    entries are added to the written model's manifest.
    """
    from tqdm import tqdm

    global _POOL_SETS
    if generations < 1 or not streams:
        raise CaturError(f"fine-tuning a scorer needs generations >= 1 and hosts, got {generations} and {len(streams)}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    weights = scorer_weights(start, f"model {start.path or start.manifest.get('version', '')}")
    _POOL_SETS = [Hosts("recent window", streams)]
    scales = feature_scales(_POOL_SETS, rng)
    step = EvolutionStep(pairs, hosts_per_replay, noise, learning_rate, scales, trainable(scales))
    pool = multiprocessing.get_context("fork").Pool(jobs) if jobs > 1 else None
    history = []
    try:
        for generation in tqdm(range(1, generations + 1), desc="generations", disable=not progress or None, leave=False):
            weights, fitness = step.take(pool, weights, [0], rng)
            history.append({"generation": generation, "mean_fitness": float(fitness.mean())})
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - started
    log(f"fine-tuned the scorer for {generations} generations on {len(streams)} hosts ({seconds:.0f} s)")
    model = model_of(
        weights,
        version=f"afterstate-fine-tuned-s{seed}-{int(time.time())}",
        training={"fine_tuned_from": start.manifest.get("version"), "generations": generations, "pairs": pairs,
                  "hosts_per_replay": hosts_per_replay, "noise": noise, "learning_rate": learning_rate, "seed": seed,
                  "feature_scales": scales.tolist(), "train_seconds": round(seconds, 1), "history": history},
        export_check=export_check(weights, _POOL_SETS, np.random.default_rng(seed + 1)),
        **(manifest or {}),
    )
    model.save(out)
    return model


# --- torch ----------------------------------------------------------------------------------------


def torch_network(model: AfterStateModel):
    """The scorer as a ``torch.nn.Sequential`` with the same weights (float32)."""
    import torch

    modules = []
    last = len(model.layers) - 1
    for i, (w, b) in enumerate(model.layers):
        linear = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if i < last:
            modules.append(torch.nn.Tanh() if model.manifest["activation"] == "tanh" else torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def decisions_agree(model: AfterStateModel, features: np.ndarray, valid: np.ndarray) -> float:
    """Share of candidate sets (``features[B, C, F]``) where the numpy scorer and its torch
    network choose the same column (or two columns with identical features)."""
    import torch

    net = torch_network(model)
    with torch.no_grad():
        torch_scores = net(torch.from_numpy(model.inputs(features))).numpy()[..., 0]
    ours = np.argmax(np.where(valid, model.scores(features), -np.inf), axis=1)
    theirs = np.argmax(np.where(valid, torch_scores, -np.inf), axis=1)
    # Two candidates with the very same features have the same score by definition; torch's
    # blocked matmul may still round them one ulp apart, and then picks the other twin. That
    # is the same decision of the network, so it counts as agreement.
    rows = np.arange(len(ours))
    twins = (model.inputs(features[rows, ours]) == model.inputs(features[rows, theirs])).all(axis=-1)
    return float(np.mean((ours == theirs) | twins))


def export_check(weights: np.ndarray | AfterStateModel, sets: list[Hosts], rng: np.random.Generator, samples: int = 2000,
                 arch: Architecture = LINEAR) -> dict:
    """Candidate sets from the training windows at random usage, decided by numpy and torch
    (``weights`` of ``arch``, or a model of any depth)."""
    model = weights if isinstance(weights, AfterStateModel) else model_of(weights, arch)
    drawn = random_candidate_sets(sets, rng, samples)
    if not drawn:
        return {"samples": 0, "agreement": None}
    sizes = [len(c.valid) for c in drawn]
    agreement = [decisions_agree(model, c.features, c.valid) for c in drawn]
    return {"samples": int(sum(sizes)), "agreement": float(np.average(agreement, weights=sizes))}


__all__ = [
    "FEW_NODE_GROUP", "ScorerResult", "ScorerTrainConfig", "decisions_agree", "expand_feature_names",
    "export_check", "fine_tune_scorer",
    "regressed_sources", "selection_score", "source_comparisons", "why_not_kept", "source_means", "torch_network", "train_scorer", "warm_start",
]
