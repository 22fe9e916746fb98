"""Transfer: start a new run's modules from a trained model (``bioflux train --init-from``).

``training.init_from`` (YAML, ``--set``, or ``--init-from``) names where each species'
module starts: a path for every trained species, or ``{species: path}`` for some of them.
A path is anything ``bioflux evaluate`` accepts: an exported model folder, a run folder or a
checkpoint. The module's weights are copied into the new run's learner before the first
iteration (then to its EnvRunners); the optimizer state and every counter start fresh.

It works whenever the modules can hold the weights, whatever else changed: the world's size,
the agent counts, the episode length, walls, capture rules, ecology, the opponents. It is
refused, in one line naming both sides, when they cannot: another observation window, other
layer sizes, another algorithm's module. A tensor the source does not have (MADDPG exports
only the actors, whose target copies then start from them) stays as the new run built it,
and the lineage says which.

The lineage (``init_from`` in ``summary.json`` and in every export's ``bioflux.json``) records,
per species, the source path, its run and algorithm, and how many tensors were copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioflux.artifacts import find_module_dir, read_metadata
from bioflux.envs.config import SPECIES


def init_from_spec(value: Any, trained: list[str]) -> dict[str, str]:
    """``training.init_from`` as ``{species: path}`` for the trained species (validated)."""
    if value is None:
        return {}
    if isinstance(value, str | Path):
        return {s: str(value) for s in trained}
    if isinstance(value, dict):
        unknown = set(value) - set(SPECIES)
        if unknown:
            raise ValueError(
                f"training.init_from: unknown species {sorted(unknown)}; allowed: {SPECIES}"
            )
        return {s: str(p) for s, p in value.items()}
    raise ValueError(
        f"training.init_from={value!r}: give a path, or {{species: path}} "
        "(e.g. --init-from predator=runs/demo)"
    )


def parse_init_from(items: list[str]) -> Any:
    """``--init-from`` values (``PATH`` or ``species=PATH``, repeatable) → ``init_from``."""
    plain = [i for i in items if "=" not in i or i.split("=", 1)[0] not in SPECIES]
    per_species = dict(i.split("=", 1) for i in items if i not in plain)
    if plain and (per_species or len(plain) > 1):
        raise ValueError(
            "--init-from: give one PATH for every species, or species=PATH for each one"
        )
    return plain[0] if plain else per_species


def initialize_modules(algo: Any, init_from: dict[str, str], algorithm: str) -> dict[str, Any]:
    """Copy each named module's weights into ``algo``'s learner and EnvRunners; returns the
    lineage. Raises a one-line ``ValueError`` when a module cannot hold them."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    learner = algo.learner_group._learner
    if learner is None:
        raise ValueError("--init-from needs the learner in this process (num_learners: 0)")
    lineage: dict[str, Any] = {}
    for species, path in init_from.items():
        folder = find_module_dir(path, species)
        if folder is None:
            raise ValueError(f"--init-from {species}={path}: no {species} module found there")
        meta = read_metadata(folder)
        if meta.get("algorithm") not in (None, algorithm):
            raise ValueError(
                f"--init-from {species}={path}: a {meta['algorithm']} module cannot start this "
                f"{algorithm} run's module"
            )
        source = RLModule.from_checkpoint(str(folder.resolve())).state_dict()
        target = learner.module[species]
        state = target.state_dict()
        copied, fresh = 0, []
        for key, tensor in state.items():
            src = source.get(key)
            if src is None:  # a target network the export left out starts as its online twin
                twins = (
                    key.replace("pi_target.", "pi.", 1),
                    key.replace("_target_", "_", 1),
                    key.replace("target_", "", 1),
                    key.replace("_target", "", 1),
                )
                src = next((source[t] for t in twins if t != key and t in source), None)
            if src is None:
                fresh.append(key)
                continue
            if tuple(src.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"--init-from {species}={path}: its module does not fit this run's: {key} "
                    f"is {tuple(src.shape)} there and {tuple(tensor.shape)} here (another "
                    "observation window or other layer sizes)"
                )
            with torch.no_grad():
                tensor.copy_(src.to(tensor.device, tensor.dtype))
            copied += 1
        if not copied:
            raise ValueError(
                f"--init-from {species}={path}: none of its tensors belong to this run's module"
            )
        lineage[species] = {
            "path": str(path),
            "module": str(folder),
            "run": meta.get("run"),
            "algorithm": meta.get("algorithm", algorithm),
            "tensors_copied": copied,
            "tensors_fresh": fresh,
        }
    if getattr(learner, "_captured_steps", None) is not None:
        learner._captured_steps.clear()  # graphs read parameters by address: capture again
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, policies=list(init_from)
    )
    return lineage
