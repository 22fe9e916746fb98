"""Curricula: train stage after stage in one run folder (``stages:`` in an experiment file).

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

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bioflux.artifacts import MODULES_SUBDIR, RunFolder, export_root
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


def stage_experiment(exp: Any, index: int, init_from: str | None) -> Any:
    """Stage ``index`` (0-based) as a plain experiment: its world, its stop, its name, and
    ``training.init_from`` = ``init_from`` (stage 1 keeps the experiment's own)."""
    from bioflux import config

    data = exp.to_dict()
    data.pop("stages", None)
    stage = exp.stages[index]
    data["name"] = stage_names(exp)[index]
    data["env"] = stage_env(exp, index)
    data["stop"] = (stage.stop or exp.stop).model_dump(mode="json", exclude_none=True)
    if index > 0:
        data["training"] = {**data["training"], "init_from": init_from}
    return config.validate(data, source=f"stage {index + 1} ({data['name']})")


def combine_rows(stage_rows: list[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """The stages' metrics rows end to end (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for number, (rows, name) in enumerate(zip(stage_rows, names), start=1):
        out += _shifted(out, rows, number, name)
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


def _copy_checkpoint(source: Path, target: Path) -> None:
    from bioflux.artifacts import _fresh_tmp, _swap_in

    tmp = _fresh_tmp(target)
    shutil.copytree(source, tmp)
    _swap_in(tmp, target)


def train_curriculum(
    exp: Any,
    output: str | Path = "runs",
    models: str | Path = "models",
    resume: bool = False,
    address: str | None = None,
    num_env_runners: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the stages of ``exp`` in ``<output>/<name>/``; returns the curriculum's summary."""
    from bioflux import training
    from bioflux.learning_curves import plot_learning_curves
    from bioflux.ray_session import init_ray

    run = RunFolder(Path(output) / exp.name)
    stages_root, stage_models = run.root / STAGES_DIR, run.root / STAGE_MODELS_DIR
    names = stage_names(exp)
    stage_runs = [RunFolder(stages_root / n) for n in names]
    started = latest_checkpoint(run.root) is not None
    if started and not resume:
        raise ValueError(
            f"run folder {run.root} already has checkpoints; pass --resume to continue it or "
            "choose another --output / name"
        )
    if started:
        training.check_resume(run, exp)  # before Ray starts; nothing written yet
    elif resume:
        log(f"nothing to resume in {run.root}: starting a new run")
    if num_env_runners is not None:
        exp.resources.num_env_runners = num_env_runners

    def init_from(index: int) -> str | None:
        # absolute: a resume given the output folder another way still names the same one
        if index == 0:
            return None
        return str((stage_runs[index - 1].checkpoints / "final").resolve())

    stage_exps = [stage_experiment(exp, i, init_from(i)) for i in range(len(names))]
    pending = [
        i
        for i, (r, e) in enumerate(zip(stage_runs, stage_exps))
        if training.finished_summary(r, e, stage_models) is None
    ]
    later = [j for j in range(min(pending, default=len(names)) + 1, len(names))]
    started_later = [names[j] for j in later if stage_runs[j].latest() is not None]
    if started_later:  # its weights would no longer be the ones the later stages started from
        first = pending[0]
        raise ValueError(
            f"cannot resume {run.root}: stage {first + 1} ({names[first]}) would train again "
            f"but {', '.join(started_later)} already started from its weights; raise only the "
            "stop of the last stage that started, or start a new run"
        )
    run.root.mkdir(parents=True, exist_ok=True)  # checked: from here on the folder is ours
    run.config.write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    started_ray = init_ray(address) if pending else False
    summaries: list[dict[str, Any]] = []
    try:
        for i, (name, stage_run, stage_exp) in enumerate(zip(names, stage_runs, stage_exps)):
            done = combine_rows([r.read_metrics() for r in stage_runs[:i]], names[:i])

            def on_row(rows: list[dict[str, Any]], i: int = i, done: list = done) -> None:
                run.write_metrics(done + _shifted(done, rows, i + 1, names[i]))

            prefix = f"stage {i + 1}/{len(names)} {name}: "
            summaries.append(
                training.train(
                    stage_exp,
                    output=stages_root,
                    models=stage_models,
                    resume=stage_run.latest() is not None,
                    address=address,
                    log=lambda line, prefix=prefix: log(prefix + line),
                    on_row=on_row,
                )
            )
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    rows = combine_rows([r.read_metrics() for r in stage_runs], names)
    run.write_metrics(rows)
    last_run, last = stage_runs[-1], summaries[-1]
    _copy_checkpoint(last_run.checkpoints / "final", run.checkpoints / "final")
    lineage = summaries[0].get("init_from")
    if lineage:
        (run.root / training.INIT_FROM_FILE).write_text(json.dumps(lineage, indent=2))
    else:
        (run.root / training.INIT_FROM_FILE).unlink(missing_ok=True)
    curriculum = [
        {
            "stage": number,
            "name": name,
            "env": dict(stage.env),
            "stop": (stage.stop or exp.stop).model_dump(mode="json", exclude_none=True),
            "iterations": s["iterations"],
            "env_steps": s["env_steps"],
            "run_dir": s["run_dir"],
        }
        for number, (name, stage, s) in enumerate(zip(names, exp.stages, summaries), start=1)
    ]
    meta = {
        "algorithm": exp.algorithm,
        "run": exp.name,
        **({"init_from": lineage} if lineage else {}),
        "curriculum": curriculum,
        "env": stage_exps[-1].env_config.to_dict(),
        "observation": "flattened (row, col, channel) window, see predator_prey_v0",
        "iteration": rows[-1]["iteration"] if rows else None,
    }
    species = last["trained_species"]
    exports_at = export_root(models, exp.algorithm, exp.name)
    exports = {
        "final": training._export(
            run.checkpoints / "final", exports_at / "final", {**meta, "kind": "final"}, species
        )
    }
    best = last.get("best") or {}
    if (last_run.checkpoints / "best" / MODULES_SUBDIR).is_dir():
        best_iteration = next(
            (
                r["iteration"]
                for r in rows
                if r["stage"] == len(names) and r["stage_iteration"] == best.get("iteration")
            ),
            None,
        )
        exports["best"] = training._export(
            last_run.checkpoints / "best",
            exports_at / "best",
            {**meta, "kind": "best", "iteration": best_iteration},
            species,
        )
    if rows:
        plot_learning_curves(rows, run.curves, f"{exp.name} ({exp.algorithm}, curriculum)")
    summary = {
        "name": exp.name,
        "algorithm": exp.algorithm,
        "iterations": rows[-1]["iteration"] if rows else 0,
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "time_s": rows[-1]["time_s"] if rows else 0.0,
        "last": rows[-1] if rows else None,
        "best": {**best, "stage": len(names)},
        "run_dir": str(run.root),
        "env_runner_nodes": last.get("env_runner_nodes", []),
        "learner_devices": last.get("learner_devices", []),
        "trained_species": species,
        "init_from": lineage,
        "curriculum": curriculum,
        "checkpoints": {
            "final": str(run.checkpoints / "final"),
            "best": str(last_run.checkpoints / "best"),
        },
        "models": exports,
        "learning_curves": str(run.curves),
        "metrics": str(run.metrics),
    }
    run.write_summary(summary)
    return summary


def _shifted(
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
