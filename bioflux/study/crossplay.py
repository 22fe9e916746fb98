"""A study's evaluation: every predator policy against every prey policy, on common seeds.

The players are each (approach, training seed)'s final exported policy, each (ensemble,
training seed) — ``bioflux.ensembles.EnsemblePolicy`` over that seed's member players — and the
baselines (built-ins such as ``random``). Every pairing plays ``evaluation.episodes`` episodes
with the same episode seed (``evaluation.seed``, which no training or selection used), so
pairings differ only by the policies. Playing against ``random`` is the row/column of the baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from bioflux.config import ConfigError, trained_env
from bioflux.device_rollout import evaluation_device, run_episodes_on_device
from bioflux.ensembles import EnsembleError, EnsembleSpec, build_ensemble
from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.evaluation import run_episodes
from bioflux.policies import Policy, load_policy
from bioflux.rollout import EpisodeRecord
from bioflux.study.config import StudyConfig


@dataclass(frozen=True)
class Player:
    """One policy of one species: an approach's (seed's) model, an ensemble (of one seed's
    members), or a baseline."""

    approach: str  # approach label, ensemble name, or the baseline's name
    seed: int | None  # training seed; None for a baseline (and an ensemble of baselines)
    source: str  # a built-in name, an exported model folder, or "ensemble"
    members: tuple[Player, ...] = ()  # an ensemble's members, in the study's order
    weights: tuple[float, ...] = ()
    combine: str = ""

    @property
    def key(self) -> str:
        return self.approach if self.seed is None else f"{self.approach}/s{self.seed}"


def players(study: StudyConfig, models: dict[tuple[str, int], str]) -> list[Player]:
    """Trained players in ``study.trials()`` order, then the ensembles (one per training seed,
    each built from that seed's members), then the baselines. Trials missing from ``models``
    (failed) are left out, with the ensembles they belong to."""
    trained = [Player(a, s, models[(a, s)]) for a, s in study.trials() if (a, s) in models]
    baselines = [Player(b, None, b) for b in study.baselines]
    ensembles = []
    for name, ens in study.ensembles.items():
        per_seed = any(m in study.approaches for m in ens.members)
        for seed in study.seeds if per_seed else [None]:
            if any(m in study.approaches and (m, seed) not in models for m in ens.members):
                continue  # a member's trial failed: no ensemble for this seed
            members = tuple(
                Player(m, seed, models[(m, seed)]) if m in study.approaches else Player(m, None, m)
                for m in ens.members
            )
            ensembles.append(
                Player(name, seed, "ensemble", members, tuple(ens.member_weights()), ens.combine)
            )
    return trained + ensembles + baselines


def _window(player: Player, species: str) -> int | None:
    """The observation window side a player's exported model was trained with (None: a
    built-in, which takes any window)."""
    env = trained_env(player.source, species) if player.seed is not None else None
    if env is None:
        return None
    return 2 * int(env.get("obs_radius", EnvConfig.obs_radius)) + 1


def load_player(
    player: Player, species: str, loaded: dict[tuple[str, str], Policy] | None = None
) -> Policy:
    """``player``'s policy for ``species`` (cached in ``loaded`` by player key). An ensemble is
    ``bioflux.ensembles.build_ensemble`` over its members' policies, refused with
    ``ConfigError`` when their observation windows differ."""
    loaded = {} if loaded is None else loaded
    key = (player.key, species)
    if key not in loaded:
        if not player.members:
            loaded[key] = load_policy(player.source, species)
        else:
            policies = [load_player(m, species, loaded) for m in player.members]
            spec = EnsembleSpec(
                player.approach,
                player.combine,
                tuple((m.key, w) for m, w in zip(player.members, player.weights)),
            )
            windows = [_window(m, species) for m in player.members]
            try:
                loaded[key] = build_ensemble(spec, species, policies, windows)
            except EnsembleError as err:
                raise ConfigError(f"study ensemble {player.key!r} ({species}): {err}") from None
    return loaded[key]


@dataclass(frozen=True)
class EpisodeArrays:
    """Per-episode values of one pairing (what the report's statistics resample)."""

    capture_rate: np.ndarray
    predator_return: np.ndarray  # mean over the episode's predators
    prey_return: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, records: list[EpisodeRecord]) -> EpisodeArrays:
        return cls(
            np.array([r.capture_rate for r in records]),
            np.array([r.mean_return("predator") for r in records]),
            np.array([r.mean_return("prey") for r in records]),
            np.array([r.length for r in records], dtype=float),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).round(6).tolist() for k in self.__dataclass_fields__}


def cross_play(
    study: StudyConfig,
    everyone: list[Player],
    progress: bool = True,
    log: Callable[[str], None] = print,
    address: str | None = None,
) -> dict[tuple[str, str], EpisodeArrays]:
    """Play every predator player against every prey player; ``(predator key, prey key)`` →
    per-episode arrays. On the CPU path the predators' rows are shared by
    ``evaluation.workers`` Ray tasks (every pairing's episodes depend only on the two
    policies and the evaluation seed, so where a row runs does not change it)."""
    checked: dict[tuple[str, str], Policy] = {}
    for p in everyone:  # a bad ensemble fails here, before any episode
        for species in SPECIES:
            load_player(p, species, checked)
    ev = study.evaluation
    log(
        f"cross-play: {len(everyone)} predators x {len(everyone)} prey, "
        f"{ev.episodes} episodes each, seed {ev.seed}"
    )
    device = evaluation_device(ev.device)
    if device is not None:
        log(f"cross-play on {device}: each pairing's episodes at once (bioflux.device_rollout)")
        return _play_rows(study.model_dump(mode="json"), everyone, everyone, device, progress)
    if ev.workers == 1:
        return _play_rows(study.model_dump(mode="json"), everyone, everyone, None, progress)
    from bioflux.ray_session import init_ray

    started = init_ray(address, log_to_driver=False)
    import ray

    try:
        workers = ev.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers == 1:
            return _play_rows(study.model_dump(mode="json"), everyone, everyone, None, progress)
        log(f"cross-play: {workers} processes, one predator row each at a time")
        task = ray.remote(num_cpus=1, max_retries=0)(_play_rows)
        study_json = ray.put(study.model_dump(mode="json"))
        pending, out = [], {}
        bar = tqdm(total=len(everyone) ** 2, desc="cross-play", disable=not progress)
        for pred in everyone:
            if len(pending) >= workers:
                done, pending = ray.wait(pending, num_returns=1)
                for row in ray.get(done):
                    out.update(row)
                    bar.update(len(row))
            pending.append(task.remote(study_json, [pred], everyone, None, False))
        for row in ray.get(pending):
            out.update(row)
            bar.update(len(row))
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return {(pred.key, prey.key): out[pred.key, prey.key] for pred in everyone for prey in everyone}


def _play_rows(
    study_json: dict[str, Any],
    predators: list[Player],
    prey_players: list[Player],
    device: Any,
    progress: bool,
) -> dict[tuple[str, str], EpisodeArrays]:
    """Every pairing of ``predators`` × ``prey_players``, in this process."""
    from bioflux.threads import use_inference_threads

    use_inference_threads()
    study = StudyConfig(**study_json)
    env = study.experiment(*study.trials()[0]).env_config
    ev = study.evaluation
    loaded: dict[tuple[str, str], Policy] = {}
    pairs = [(pred, prey) for pred in predators for prey in prey_players]
    out: dict[tuple[str, str], EpisodeArrays] = {}
    for pred, prey in tqdm(pairs, desc="cross-play", disable=not progress):
        policies = load_player(pred, "predator", loaded), load_player(prey, "prey", loaded)
        if device is None:
            records = run_episodes(*policies, env, ev.episodes, seed=ev.seed)
        else:
            records = run_episodes_on_device(*policies, env, ev.episodes, ev.seed, device)
        out[(pred.key, prey.key)] = EpisodeArrays.of(records)
    return out
