"""A study's evaluation: every predator policy against every prey policy, on common seeds.

The players are each (approach, training seed)'s final exported policy plus the baselines
(built-ins such as ``random``). Every pairing plays ``evaluation.episodes`` episodes with the
same episode seed (``evaluation.seed``, which no training or selection used), so pairings differ
only by the policies. Playing against ``random`` is the row/column of the baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bioflux.envs.config import SPECIES
from bioflux.evaluation import run_episodes
from bioflux.policies import Policy, load_policy
from bioflux.rollout import EpisodeRecord
from bioflux.study.config import StudyConfig


@dataclass(frozen=True)
class Player:
    """One policy of one species: an approach's (seed's) model, or a baseline."""

    approach: str  # approach label, or the baseline's name
    seed: int | None  # training seed; None for a baseline
    source: str  # a built-in name or an exported model folder

    @property
    def key(self) -> str:
        return self.approach if self.seed is None else f"{self.approach}/s{self.seed}"


def players(study: StudyConfig, models: dict[tuple[str, int], str]) -> list[Player]:
    """Trained players in ``study.trials()`` order, then the baselines."""
    trained = [Player(a, s, models[(a, s)]) for a, s in study.trials()]
    return trained + [Player(b, None, b) for b in study.baselines]


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
) -> dict[tuple[str, str], EpisodeArrays]:
    """Play every predator player against every prey player; ``(predator key, prey key)`` →
    per-episode arrays."""
    env = study.experiment(*study.trials()[0]).env_config
    loaded: dict[tuple[str, str], Policy] = {
        (p.key, species): load_policy(p.source, species) for p in everyone for species in SPECIES
    }
    pairs = [(pred, prey) for pred in everyone for prey in everyone]
    log(
        f"cross-play: {len(everyone)} predators x {len(everyone)} prey, "
        f"{study.evaluation.episodes} episodes each, seed {study.evaluation.seed}"
    )
    out: dict[tuple[str, str], EpisodeArrays] = {}
    for pred, prey in tqdm(pairs, desc="cross-play", disable=not progress):
        records = run_episodes(
            loaded[(pred.key, "predator")],
            loaded[(prey.key, "prey")],
            env,
            study.evaluation.episodes,
            seed=study.evaluation.seed,
        )
        out[(pred.key, prey.key)] = EpisodeArrays.of(records)
    return out
