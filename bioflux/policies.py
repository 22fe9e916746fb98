"""Policies that act on batches of egocentric observations, whatever produced them.

A policy maps observations ``(M, S, S, 4)`` to action probabilities ``(M, 5)``; ``act`` samples
from them (or takes the argmax when ``greedy``). Built-ins are addressed by name (``random``);
trained policies by a path to a run folder, an RLlib checkpoint, an exported model folder
(``models/<algorithm>/<run>[/final|/best]``) or one module's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from bioflux.envs.config import ACTION_NAMES, SPECIES

N_ACTIONS = len(ACTION_NAMES)
#: RLlib checkpoint sub-folder that holds one folder per module.
MODULES_SUBDIR = Path("learner_group", "learner", "rl_module")


class Policy(Protocol):
    name: str

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """``(M, S, S, 4)`` observations → ``(M, 5)`` action probabilities."""
        ...


def act(policy: Policy, obs: np.ndarray, rng: np.random.Generator, greedy: bool = False):
    """Sample (or argmax) one action per row; returns ``(actions, probabilities)``.

    Policies that declare ``deterministic = True`` (e.g. epsilon-greedy Q-networks, greedy at
    evaluation) always take the argmax.
    """
    probs = policy.probabilities(obs)
    if greedy or getattr(policy, "deterministic", False):
        return probs.argmax(axis=1), probs
    u = rng.random((len(probs), 1))
    actions = (probs.cumsum(axis=1) < u).sum(axis=1)
    return np.minimum(actions, N_ACTIONS - 1), probs


class RandomPolicy:
    """Uniform over the five actions."""

    name = "random"

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), N_ACTIONS), 1.0 / N_ACTIONS)


class ModulePolicy:
    """An RLlib ``RLModule`` (inference only) whose action distribution is a categorical."""

    def __init__(self, module, name: str):
        self.module = module
        self.name = name
        self.deterministic = bool(getattr(module, "deterministic", False))

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None) -> ModulePolicy:
        from ray.rllib.core.rl_module.rl_module import RLModule

        path = Path(path)
        try:
            module = RLModule.from_checkpoint(path.resolve())
        except Exception as err:  # corrupt or foreign checkpoint
            raise ValueError(f"cannot load a policy module from {path}: {err}") from err
        return cls(module, name or str(path))

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        import torch
        from ray.rllib.core.columns import Columns

        from bioflux.envs.rllib_env import flatten_observation

        flat = torch.from_numpy(flatten_observation(obs))
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: flat})[Columns.ACTION_DIST_INPUTS]
            return torch.softmax(logits, dim=-1).numpy().astype(np.float64)

    def drives(self, obs: np.ndarray) -> dict[str, np.ndarray] | None:
        """Per-action drive values for interpretable modules (Lotka–Volterra), else None."""
        if not hasattr(self.module, "drives"):
            return None
        return {k: v.numpy() for k, v in self.module.drives(obs).items()}


def _lotka_volterra(species: str) -> ModulePolicy:
    from bioflux.algorithms.lotka_volterra import make_module

    return ModulePolicy(make_module(species), name="lotka_volterra")


#: Built-in policies by name: a factory taking the species.
BUILTINS = {"random": lambda species: RandomPolicy(), "lotka_volterra": _lotka_volterra}


def module_dir(spec: str | Path, species: str) -> Path:
    """Find ``species``' module folder inside any of the accepted checkpoint layouts."""
    if species not in SPECIES:
        raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
    path = Path(spec)
    if not path.exists():
        raise ValueError(
            f"policy {str(spec)!r} is neither a built-in ({sorted(BUILTINS)}) nor an existing path"
        )
    candidates = [
        path / species,  # exported model folder
        path / "final" / species,  # models/<algorithm>/<run>
        path / MODULES_SUBDIR / species,  # RLlib checkpoint
        path / "checkpoints" / "final" / MODULES_SUBDIR / species,  # run folder
        path,  # the module folder itself
    ]
    for c in candidates:
        if (c / "module_state.pkl").exists() and (c / "class_and_ctor_args.pkl").is_file():
            return c
    raise ValueError(f"no {species} module found under {path} (looked in {candidates[:-1]})")


def load_policy(spec: str | Path, species: str) -> Policy:
    """A built-in by name or a trained module by path (see the module docstring)."""
    if isinstance(spec, str) and spec in BUILTINS:
        if species not in SPECIES:
            raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
        return BUILTINS[spec](species)
    folder = module_dir(spec, species)
    return ModulePolicy.from_checkpoint(folder, name=f"{spec}:{species}")


def read_metadata(folder: str | Path) -> dict:
    meta = Path(folder) / "bioflux.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}
