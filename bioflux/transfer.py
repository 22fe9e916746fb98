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
            "run": meta.get("run") or _run_name(folder),
            "algorithm": meta.get("algorithm", algorithm),
            "tensors_copied": copied,
            "tensors_fresh": fresh,
        }
    if getattr(learner, "_captured_steps", None) is not None:
        learner._captured_steps.clear()  # graphs read parameters by address: capture again
    # timeout_seconds=None: wait for the weights the algorithm sent its remote EnvRunners when
    # it was built. RLlib allows one set_state in flight per EnvRunner and silently drops
    # another one sent while the first is unfinished, so with the default (0) the remote
    # EnvRunners sampled the first iteration with the fresh weights instead of these.
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group,
        policies=list(init_from),
        timeout_seconds=None,
    )
    return lineage


def _run_name(folder: Path) -> str | None:
    """The name of the run folder holding a checkpoint's module folder (its config.yaml's)."""
    import yaml

    from bioflux.artifacts import RunFolder

    for parent in Path(folder).resolve().parents:
        run = RunFolder(parent)
        if run.config.is_file() and run.checkpoints.is_dir():
            try:
                return str(yaml.safe_load(run.config.read_text()).get("name") or parent.name)
            except (OSError, yaml.YAMLError, AttributeError):
                return parent.name
    return None


# ---------------------------------------------------------------------------- lineage, read back
def module_lineage(spec: Any, species: str) -> dict[str, Any] | None:
    """Where a trained module started: ``{"run", "algorithm", "init_from", "curriculum"}``
    (``init_from``: this species' entry of the run's lineage, None when it started from
    scratch; ``curriculum``: the stages it went through, None for a plain run). Read from the
    export's ``bioflux.json``, else from the run folder holding the checkpoint
    (``init_from.json``, ``summary.json``). None for built-ins and paths that hold no module."""
    import json

    from bioflux.artifacts import RunFolder

    if not isinstance(spec, str | Path) or not Path(spec).exists():
        return None
    folder = find_module_dir(spec, species)
    if folder is None:
        return None
    try:
        meta = read_metadata(folder)
    except ValueError:
        meta = {}
    if meta.get("run"):  # an export: its bioflux.json says it all
        return lineage_from_metadata(meta, species)
    for parent in folder.resolve().parents:  # a checkpoint inside a run folder
        run = RunFolder(parent)
        if not (run.config.is_file() and run.checkpoints.is_dir()):
            continue

        def read(path: Path) -> dict[str, Any]:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return {}
            return data if isinstance(data, dict) else {}

        summary = read(run.summary)
        return {
            "run": summary.get("name", parent.name),
            "algorithm": summary.get("algorithm"),
            "init_from": read(parent / "init_from.json").get(species),
            "curriculum": summary.get("curriculum"),
        }
    return None


def lineage_from_metadata(meta: dict[str, Any], species: str) -> dict[str, Any] | None:
    """``module_lineage`` from an export's ``bioflux.json``; None unless it is a trained run's
    (built-ins and ensembles have no lineage)."""
    if not isinstance(meta, dict) or not meta.get("run") or meta.get("ensemble"):
        return None
    init_from = meta.get("init_from")
    curriculum = meta.get("curriculum")
    return {
        "run": meta["run"],
        "algorithm": meta.get("algorithm"),
        "init_from": init_from.get(species) if isinstance(init_from, dict) else None,
        "curriculum": curriculum if isinstance(curriculum, list) else None,
    }


def public_lineage(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A lineage without file paths (what ``GET /v1/models`` shows): the source run, its
    algorithm and tensors copied; each stage's number, name, env override and iterations;
    ``text``: the one-line summary."""
    if lineage is None:
        return None
    source = lineage.get("init_from") if isinstance(lineage.get("init_from"), dict) else None
    stages = [s for s in lineage.get("curriculum") or [] if isinstance(s, dict)]
    return {
        "init_from": None
        if source is None
        else {k: source.get(k) for k in ("run", "algorithm", "tensors_copied")},
        "curriculum": [
            {k: s.get(k) for k in ("stage", "name", "env", "iterations")} for s in stages
        ]
        or None,
        "text": lineage_text(lineage, paths=False),
    }


def lineage_text(lineage: dict[str, Any] | None, paths: bool = True) -> str | None:
    """One line for a module's lineage (``module_lineage``): ``from <path> (run r, ppo, 6
    tensors)`` (``paths`` False: ``from run r (ppo, 6 tensors)``) or ``from scratch``, then
    the curriculum's stages; None when unknown."""
    if lineage is None:
        return None
    source = lineage.get("init_from")
    if isinstance(source, dict):
        run = source.get("run")
        what = ", ".join(
            str(x)
            for x in (
                f"run {run}" if run and paths else None,
                source.get("algorithm"),
                f"{source.get('tensors_copied')} tensors",
            )
            if x
        )
        where = source.get("path") if paths else f"run {run or '?'}"
        text = f"from {where} ({what})"
    else:
        text = "from scratch"
    stages = lineage.get("curriculum")
    if stages:

        def stage(s: dict[str, Any]) -> str:
            env = ", ".join(f"{k}={v}" for k, v in (s.get("env") or {}).items())
            its = s.get("iterations")
            detail = "; ".join(x for x in (env, f"{its} it" if its is not None else "") if x)
            return f"{s.get('name')}" + (f" ({detail})" if detail else "")

        text += f", then a {len(stages)}-stage curriculum: " + " -> ".join(map(stage, stages))
    return text
