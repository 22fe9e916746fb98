"""One rollout step and the episode statistics built on it.

``play_step`` is the one "observe the live agents → split them by species → act → step" loop
body on the batched core: evaluation, simulation, episode recording, the live view and the
tests all call it. ``EpisodeStats`` accumulates each world's returns, captures and first
capture step, and turns a finished world into an ``EpisodeRecord``.

``capture_rate`` is the one definition of the capture rate: prey captured in an episode divided
by every prey that lived in it (alive at the start plus newborns), so it stays within [0, 1]
in ecology mode too. Evaluation, the EnvRunners' training metrics and the RLlib callback use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bioflux.envs.config import SPECIES
from bioflux.envs.core import BatchedWorld, StepResult
from bioflux.policies import Policy, act


def capture_rate(captures: float | np.ndarray, prey_total: int | np.ndarray):
    """Captured prey / prey that lived in the episode (initial plus newborns)."""
    return captures / np.maximum(prey_total, 1)


def play_step(
    world: BatchedWorld,
    policies: Mapping[str, Policy],
    rng: np.random.Generator,
    greedy: bool = False,
    actions: np.ndarray | None = None,
) -> StepResult:
    """Every live agent of every running world acts with its species' policy, then the worlds
    step. ``policies``: species → policy (each sees one batch per step; species are served in
    ``SPECIES`` order, so a seeded ``rng`` replays exactly). ``actions``: an optional reusable
    ``(B, N)`` buffer."""
    if actions is None:
        actions = np.zeros(world.alive.shape, dtype=np.int64)
    b, a = np.nonzero(world.alive & ~world.done[:, None])
    obs = world.observe(b, a)
    is_pred = world.is_predator[a]
    for species in SPECIES:
        m = is_pred if species == "predator" else ~is_pred
        if m.any():
            actions[b[m], a[m]] = act(policies[species], obs[m], rng, greedy)[0]
    return world.step(actions)


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode. ``*_returns``: each agent's summed reward, for every agent of the
    species that lived in the episode (newborns included)."""

    length: int
    captures: int
    prey_total: int
    first_capture_step: int | None
    predator_returns: tuple[float, ...]
    prey_returns: tuple[float, ...]

    def returns(self, species: str) -> np.ndarray:
        return np.asarray(getattr(self, f"{species}_returns"), dtype=float)

    def mean_return(self, species: str) -> float:
        """The mean over the species' agents (0 when it had none)."""
        r = self.returns(species)
        return float(r.mean()) if r.size else 0.0

    def total_return(self, species: str) -> float:
        """The sum over the species' agents (RLlib's per-module episode return)."""
        return float(self.returns(species).sum())

    @property
    def predator_return(self) -> float:
        return self.mean_return("predator")

    @property
    def prey_return(self) -> float:
        return self.mean_return("prey")

    @property
    def capture_rate(self) -> float:
        return float(capture_rate(self.captures, self.prey_total))


class EpisodeStats:
    """Running per-world statistics of a ``BatchedWorld``: ``update`` after every step,
    ``record`` a world when its episode ends, ``reset`` it when it starts again."""

    def __init__(self, world: BatchedWorld):
        self.world = world
        B, N = world.alive.shape
        self.agent_returns = np.zeros((B, N))
        self.captures = np.zeros(B, dtype=np.int64)
        self.first_capture = np.full(B, -1)

    def reset(self, worlds: Sequence[int] | np.ndarray | None = None) -> None:
        w = slice(None) if worlds is None else worlds
        self.agent_returns[w] = 0.0
        self.captures[w] = 0
        self.first_capture[w] = -1

    def update(self, res: StepResult) -> None:
        self.agent_returns += res.rewards
        self.captures += res.captured
        self.first_capture = np.where(
            (self.first_capture < 0) & (res.captured > 0), self.world.t, self.first_capture
        )

    def record(self, w: int) -> EpisodeRecord:
        world = self.world
        used = world.used[w]
        pred_slots = used & world.is_predator
        prey_slots = used & ~world.is_predator
        first = int(self.first_capture[w])
        return EpisodeRecord(
            length=int(world.t[w]),
            captures=int(self.captures[w]),
            prey_total=int(prey_slots.sum()),
            first_capture_step=first if first >= 0 else None,
            predator_returns=tuple(self.agent_returns[w, pred_slots].tolist()),
            prey_returns=tuple(self.agent_returns[w, prey_slots].tolist()),
        )
