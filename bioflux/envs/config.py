"""Typed, validated arguments of the predator–prey world (one source of truth for env kwargs)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, fields
from typing import Any

#: Species names, in the order their agents appear in ``possible_agents``.
SPECIES: tuple[str, str] = ("predator", "prey")
#: Action names, index = action value of the ``Discrete(5)`` action space.
ACTION_NAMES: tuple[str, ...] = ("stay", "up", "down", "left", "right")
#: Size of the ``Discrete`` action space (every species).
N_ACTIONS: int = len(ACTION_NAMES)


def other_species(species: str) -> str:
    """The species that ``species`` plays against."""
    if species not in SPECIES:
        raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
    return SPECIES[1 - SPECIES.index(species)]


@dataclass(frozen=True)
class EnvConfig:
    """Every argument of ``predator_prey_v0`` with its default (the reference experiment).

    Grid and population
        height, width: grid size in cells (default 100×100).
        n_predators, n_prey: agents alive at reset (20, 100).
        max_predators, max_prey: size of the ``possible_agents`` pool per species. ``None`` means
            equal to the initial count, or 4× it in ecology mode (room for births).
        wall_density: fraction of cells that are walls (0 allowed).
        max_steps: episode length limit; reaching it truncates every live agent.
        obs_radius: radius of the egocentric observation window (5 → 11×11).
    Capture
        capture_radius: Chebyshev distance at which a predator threatens a prey.
        capture_predators: predators needed within ``capture_radius`` to capture (≥2 = cooperative).
    Rewards (every term named; per agent, per step)
        reward_capture: shared equally among the predators that made a capture.
        reward_predator_step: added to every live predator each step (a time cost, ≤ 0).
        reward_caught: received by a prey on the step it is captured.
        reward_prey_alive: received by every prey that is alive at the end of a step.
        reward_starved: received by a predator on the step it starves (ecology mode).
    Ecology mode (``ecology=True``)
        energy_init: predator energy at reset and birth budget unit.
        energy_decay: energy lost by every predator each step; at ≤ 0 it dies (terminated).
        energy_gain: energy gained per capture (shared like the reward).
        reproduce_energy: a predator with at least this energy gives birth; it keeps half its
            energy and the newborn gets the other half.
        prey_birth_prob: per-step probability that a live prey gives birth (the prey's
            intrinsic growth rate).
        prey_capacity: carrying capacity ``K`` of live prey per world: a prey gives birth with
            probability ``prey_birth_prob * max(0, 1 - n_prey / K)`` (logistic growth).
            ``None``: no self-limitation (the pool size is then the only cap).
        predator_crowding: live predators per world at which a predator's energy loss per step
            doubles: each predator loses ``energy_decay * (1 + n_predators / predator_crowding)``
            (competition for territory, which limits the predators' own density). ``None``: a
            constant ``energy_decay``.
        birth_radius: newborns appear on a random cell within this Chebyshev distance of the
            parent (1: one of the 8 neighbours). ``None``: anywhere on the grid (global natal
            dispersal, which keeps the populations well mixed). A wall or off-grid cell keeps the
            newborn on its parent's cell.
        recycle_slots: a newborn may take the slot of a dead agent, so ``max_predators`` and
            ``max_prey`` cap the *live* populations instead of everyone ever alive. Only the
            batched core and ``bioflux simulate`` accept it: a PettingZoo agent cannot come back
            to life, so the PettingZoo and RLlib envs reject it.
    """

    height: int = 100
    width: int = 100
    n_predators: int = 20
    n_prey: int = 100
    max_predators: int | None = None
    max_prey: int | None = None
    wall_density: float = 0.02
    max_steps: int = 300
    obs_radius: int = 5
    capture_radius: int = 1
    capture_predators: int = 1
    reward_capture: float = 1.0
    reward_predator_step: float = -0.01
    reward_caught: float = -1.0
    reward_prey_alive: float = 0.01
    reward_starved: float = -1.0
    ecology: bool = False
    energy_init: float = 20.0
    energy_decay: float = 1.0
    energy_gain: float = 10.0
    reproduce_energy: float = 40.0
    prey_birth_prob: float = 0.02
    prey_capacity: int | None = None
    predator_crowding: float | None = None
    birth_radius: int | None = 1
    recycle_slots: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, f.type)
        pool_scale = 4 if self.ecology else 1
        if self.max_predators is None:
            object.__setattr__(self, "max_predators", pool_scale * self.n_predators)
        if self.max_prey is None:
            object.__setattr__(self, "max_prey", pool_scale * self.n_prey)
        self._check_ranges()

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> EnvConfig:
        """Build from keyword arguments, naming any unknown key in a ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown predator_prey_v0 argument(s) {unknown}; allowed: {sorted(known)}"
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require_agent_identity(self, user: str) -> EnvConfig:
        """Raise unless every agent keeps its own slot for life (``recycle_slots`` off), as
        PettingZoo agents and RLlib episodes need; returns ``self``."""
        if self.recycle_slots:
            raise ValueError(
                f"recycle_slots=True cannot be used by {user}: a PettingZoo agent cannot come "
                "back to life; it is only for simulations (bioflux simulate). Set "
                "recycle_slots: false (and size max_predators/max_prey for every birth)"
            )
        return self

    @property
    def n_agents_max(self) -> int:
        return self.max_predators + self.max_prey

    @property
    def obs_size(self) -> int:
        return 2 * self.obs_radius + 1

    def _check_ranges(self) -> None:
        cells = self.height * self.width
        _require(self.height >= 1, "height", self.height, ">= 1")
        _require(self.width >= 1, "width", self.width, ">= 1")
        _require(self.n_predators >= 0, "n_predators", self.n_predators, ">= 0")
        _require(self.n_prey >= 0, "n_prey", self.n_prey, ">= 0")
        _require(
            self.max_predators >= self.n_predators,
            "max_predators",
            self.max_predators,
            f">= n_predators ({self.n_predators})",
        )
        _require(
            self.max_prey >= self.n_prey, "max_prey", self.max_prey, f">= n_prey ({self.n_prey})"
        )
        _require(0.0 <= self.wall_density < 1.0, "wall_density", self.wall_density, "[0, 1)")
        free = cells - int(round(self.wall_density * cells))
        _require(
            self.n_predators + self.n_prey <= free,
            "n_predators + n_prey",
            self.n_predators + self.n_prey,
            f"<= free cells ({free} of {cells})",
        )
        _require(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        _require(self.obs_radius >= 0, "obs_radius", self.obs_radius, ">= 0")
        _require(self.capture_radius >= 0, "capture_radius", self.capture_radius, ">= 0")
        _require(self.capture_predators >= 1, "capture_predators", self.capture_predators, ">= 1")
        _require(self.energy_init > 0, "energy_init", self.energy_init, "> 0")
        _require(self.energy_decay >= 0, "energy_decay", self.energy_decay, ">= 0")
        _require(self.energy_gain >= 0, "energy_gain", self.energy_gain, ">= 0")
        _require(self.reproduce_energy > 0, "reproduce_energy", self.reproduce_energy, "> 0")
        _require(
            0.0 <= self.prey_birth_prob <= 1.0, "prey_birth_prob", self.prey_birth_prob, "[0, 1]"
        )
        if self.prey_capacity is not None:
            _require(self.prey_capacity >= 1, "prey_capacity", self.prey_capacity, ">= 1 or null")
        if self.predator_crowding is not None:
            _require(
                self.predator_crowding > 0,
                "predator_crowding",
                self.predator_crowding,
                "> 0 or null",
            )
        if self.birth_radius is not None:
            _require(self.birth_radius >= 0, "birth_radius", self.birth_radius, ">= 0 or null")


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _check_type(name: str, value: Any, annotation: str) -> None:
    if value is None and "None" in annotation:
        return
    if annotation.startswith("bool"):
        ok = isinstance(value, bool)
    elif annotation.startswith("int"):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:  # float: ints are fine
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{name}={value!r} has the wrong type; expected {annotation}")
