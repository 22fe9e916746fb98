"""Versioned entry point, PettingZoo style: ``predator_prey_v0.parallel_env(**kwargs)``."""

from bioflux.envs.predator_prey import PredatorPreyEnv, env, parallel_env, raw_env

__all__ = ["PredatorPreyEnv", "env", "parallel_env", "raw_env"]
