"""Curricula: train stage after stage in one run folder (``stages:`` in an experiment file).

This module holds the stages' rules (checked when a config is validated), their worlds and the
combined metrics; ``bioflux.training.train`` runs a curriculum (``train_curriculum``).

Each stage is an env override (merged into the experiment's ``env``; stages do not add up) and a
stop criterion (the keys of ``stop``, counted within the stage; the top-level ``stop`` when the
stage gives none)::

    stages:
      - {name: small, env: {height: 24, width: 24}, stop: {iterations: 10}}
      - {name: large, stop: {iterations: 20}}      # the experiment's own env

Run folder ``<output>/<name>/``::

    config.yaml, metrics.jsonl, summary.json, learning_curves.png   the whole curriculum
    stages/<stage name>/     each stage's own run folder (config.yaml with the stage's world,
                             metrics.jsonl, checkpoints/, init_from.json, summary.json)
    stage_models/            each stage's exports (``<algorithm>/<stage name>/{final,best}``)
    checkpoints/final/       a copy of the last stage's final checkpoint, once every stage ended

Stage 1 starts as a plain run would (from ``training.init_from`` when given); each later stage
starts its modules from the previous stage's final checkpoint through ``bioflux.transfer``: the
module weights are carried, the optimizer state and the counters (iterations, env steps,
episodes) start fresh, so each stage's ``stop`` counts its own iterations. The curriculum's
``metrics.jsonl`` puts the stages end to end: every row has ``stage`` (1, 2, ...), ``stage_name``
and ``stage_iteration``, and ``iteration``, ``env_steps``, ``agent_steps``, ``episodes`` and
``time_s`` count from the start of stage 1 (the windowed means restart with each stage: each
world has its own). It is rewritten after every iteration.

``--resume`` continues the stage that was running from its newest checkpoint (a stage killed
before its first checkpoint starts again from the previous stage's weights), then trains the
stages after it; stages already finished are not trained again. The exports
(``<models>/<algorithm>/<name>/{final,best}``) are the last stage's modules; their
``bioflux.json`` has the stage-1 lineage (``init_from``) and the ``curriculum``: each stage's
name, env override, iterations and env steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioflux.artifacts import RunFolder
from bioflux.envs.config import EnvConfig

STAGES_DIR = "stages"
STAGE_MODELS_DIR = "stage_models"
#: the row keys that count from the start of the curriculum, not of the stage
CUMULATIVE_KEYS = ("iteration", "env_steps", "agent_steps", "episodes", "time_s")


def stage_names(exp: Any) -> list[str]:
    return [s.name or f"stage{i}" for i, s in enumerate(exp.stages or [], start=1)]


def stage_env(exp: Any, index: int) -> dict[str, Any]:
    """The env of stage ``index`` (0-based): the experiment's env updated with the stage's."""
    return {**exp.env, **exp.stages[index].env}


def check_stages(exp: Any) -> None:
    """One-line ``ValueError`` for a curriculum that cannot run (read only, before Ray)."""
    from bioflux.algorithms import get_algorithm

    if not exp.stages:
        raise ValueError("stages: give at least one stage, or leave stages out")
    if not get_algorithm(exp.algorithm).trains_through_rllib:
        raise ValueError(f"stages: algorithm {exp.algorithm} trains no RLlib modules to carry")
    names = stage_names(exp)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"stages: stage names must differ; {twice} appear more than once")
    radius = None
    for i, name in enumerate(names, start=1):
        try:
            env = EnvConfig.from_kwargs(stage_env(exp, i - 1))
        except ValueError as err:
            raise ValueError(f"stages: stage {i} ({name}) env: {err}") from None
        if radius is None:
            radius = env.obs_radius
        elif env.obs_radius != radius:
            raise ValueError(
                f"stages: stage {i} ({name}) has obs_radius {env.obs_radius} but stage 1 has "
                f"{radius}: the modules cannot carry their weights to another observation "
                "window; keep obs_radius the same in every stage"
            )


def combine_rows(stage_rows: list[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """The stages' metrics rows end to end (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for number, (rows, name) in enumerate(zip(stage_rows, names), start=1):
        out += shift_rows(out, rows, number, name)
    return out


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint of a curriculum's run folder (its own final copy, else
    the newest one of any stage), or None."""
    run = RunFolder(root)
    if run.latest() is not None:
        return run.latest()
    found = [RunFolder(d).latest() for d in sorted((root / STAGES_DIR).glob("*")) if d.is_dir()]
    found = [c for c in found if c is not None]
    return max(found, key=lambda c: c.stat().st_mtime) if found else None


def shift_rows(
    done: list[dict[str, Any]], rows: list[dict[str, Any]], number: int, name: str
) -> list[dict[str, Any]]:
    """``rows`` of stage ``number`` placed after the combined rows ``done``."""
    offset = {k: (done[-1][k] if done else 0) for k in CUMULATIVE_KEYS}
    out = []
    for row in rows:
        combined = {
            **row,
            **{k: row[k] + offset[k] for k in CUMULATIVE_KEYS if row.get(k) is not None},
        }
        combined["time_s"] = round(combined["time_s"], 3)
        combined.update(stage=number, stage_name=name, stage_iteration=row["iteration"])
        out.append(combined)
    return out
