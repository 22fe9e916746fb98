"""Policies that act on batches of egocentric observations, whatever produced them.

A policy maps observations ``(M, S, S, 4)`` to action probabilities ``(M, N_ACTIONS)``; ``act``
samples from them (or takes the argmax when ``greedy``). Built-ins are addressed by name
(``random``, ``lotka_volterra``); trained policies by a path to a run folder, an RLlib
checkpoint, an exported model folder (``models/<algorithm>/<run>[/final|/best]``) or one
module's folder (the layouts of ``bioflux.artifacts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from bioflux.artifacts import find_module_dir, module_dir_candidates
from bioflux.envs.config import N_ACTIONS, SPECIES
from bioflux.envs.core import flatten_observation


class Policy(Protocol):
    name: str

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """``(M, S, S, 4)`` observations → ``(M, N_ACTIONS)`` action probabilities."""
        ...


def choose_actions(
    policy: Policy, probs: np.ndarray, rng: np.random.Generator, greedy: bool = False
) -> np.ndarray:
    """One action per row of ``probs`` ``(M, N_ACTIONS)``: sampled, or the argmax when
    ``greedy`` or when the policy declares ``deterministic = True`` (e.g. epsilon-greedy
    Q-networks, greedy at evaluation)."""
    if greedy or getattr(policy, "deterministic", False):
        return probs.argmax(axis=1)
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), N_ACTIONS - 1)


def act(policy: Policy, obs: np.ndarray, rng: np.random.Generator, greedy: bool = False):
    """Sample (or argmax, see ``choose_actions``) one action per observation row; returns
    ``(actions, probabilities)``."""
    probs = policy.probabilities(obs)
    return choose_actions(policy, probs, rng, greedy), probs


class RandomPolicy:
    """Uniform over the actions."""

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

        flat = torch.from_numpy(flatten_observation(obs))
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: flat})[Columns.ACTION_DIST_INPUTS]
            return torch.softmax(logits, dim=-1).numpy().astype(np.float64)

    def drives(self, obs: np.ndarray) -> dict[str, np.ndarray] | None:
        """Per-action drive values for interpretable modules (Lotka–Volterra), else None."""
        if not hasattr(self.module, "drives"):
            return None
        return {k: v.numpy() for k, v in self.module.drives(obs).items()}


def lotka_volterra_policy(species: str, **coefficients: float) -> ModulePolicy:
    """The built-in ``lotka_volterra`` policy of ``species``, with ``coefficients`` in place of
    the defaults (an experiment's ``lotka_volterra`` section)."""
    from bioflux.policy_modules.lotka_volterra import make_module

    return ModulePolicy(make_module(species, **coefficients), name="lotka_volterra")


#: Built-in policies by name: a factory taking the species.
BUILTINS = {"random": lambda species: RandomPolicy(), "lotka_volterra": lotka_volterra_policy}


def module_dir(spec: str | Path, species: str) -> Path:
    """Find ``species``' module folder inside any accepted layout (``artifacts``)."""
    if species not in SPECIES:
        raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
    path = Path(spec)
    if not path.exists():
        hint = ""
        if len(path.parts) == 1:  # a bare name: perhaps one that `bioflux serve` would answer
            hint = (
                f"; if {str(spec)!r} is a served name (an algorithm such as ppo, ppo@<run>, or an "
                "ensemble), give the models folder with --models DIR"
            )
        raise ValueError(
            f"policy {str(spec)!r} is neither a built-in ({sorted(BUILTINS)}) nor an existing "
            f"path{hint}"
        )
    found = find_module_dir(path, species)
    if found is None:
        looked = [str(c) for c in module_dir_candidates(path, species)[:-1]]
        hint = _checkpoint_hint(path, species)
        raise ValueError(f"no {species} module found under {path} (looked in {looked}){hint}")
    return found


def _checkpoint_hint(path: Path, species: str) -> str:
    """A run folder without a final checkpoint (a run still training, or stopped early) may
    hold ``checkpoints/best`` or periodic ones: name the one to pass instead."""
    checkpoints = path / "checkpoints"
    candidates = [checkpoints / "best", *sorted(checkpoints.glob("iter_[0-9]*[0-9]"), reverse=True)]
    usable = next((c for c in candidates if find_module_dir(c, species) is not None), None)
    if usable is None:
        return ""
    what = "the best checkpoint so far" if usable.name == "best" else "its newest checkpoint"
    return f"; the run has no final checkpoint yet: try {usable} ({what})"


def load_policy(spec: str | Path, species: str) -> Policy:
    """A built-in by name or a trained module by path (see the module docstring)."""
    if isinstance(spec, str) and spec in BUILTINS:
        if species not in SPECIES:
            raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
        return BUILTINS[spec](species)
    folder = module_dir(spec, species)
    return ModulePolicy.from_checkpoint(folder, name=f"{spec}:{species}")
