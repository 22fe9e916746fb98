"""Predator–prey environments: the batched core and its PettingZoo view."""

from bioflux.envs import predator_prey_v0
from bioflux.envs.config import ACTION_NAMES, N_ACTIONS, SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld, StepResult

__all__ = [
    "ACTION_NAMES",
    "N_ACTIONS",
    "SPECIES",
    "BatchedWorld",
    "EnvConfig",
    "StepResult",
    "predator_prey_v0",
]
