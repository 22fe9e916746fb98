"""Training: build the algorithm from a validated experiment, run it, checkpoint, resume, export.

``train(exp)`` runs ``exp`` to its stop criteria in the run folder ``<output>/<name>/`` and
exports the final and best modules of the species it trained (not fixed modules such as
``training.fixed_modules``' Lotka–Volterra ones) to ``<models>/<algorithm>/<name>/{final,best}/``
(the layout of both lives in ``bioflux.artifacts``).

``resume=True`` restores the newest complete checkpoint and continues the iteration count
(metrics rows after that checkpoint are dropped and recomputed), up to the stop criteria of
``exp``: a finished run continues when they were raised. The resumed config must equal the run's
``config.yaml`` except for ``RESUMABLE_SECTIONS``; otherwise nothing is touched and a
``ValueError`` names the differing keys. The run folder changes only once the config has been
checked and the checkpoint restored. Each metrics row has the keys ``ITERATION_KEYS``;
``summary.json`` also records ``env_runner_nodes`` (the Ray node ID of each remote EnvRunner)
and ``learner_devices`` (where each learner trains, ``cpu`` or ``cuda:N``; also logged when
training starts).

An experiment with ``stages:`` (a curriculum) trains stage after stage in one run folder, each
stage from the previous stage's weights (``train_curriculum``; the layout, metrics and resume
rules are in ``bioflux.curriculum``).

``ModelInference`` (``bioflux.serve.inference``) can be imported from here too; it is loaded on
first use, so importing this module does not import Ray Serve.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bioflux.artifacts import RunFolder, export_modules, export_root, save_checkpoint
from bioflux.config import ConfigError, Experiment
from bioflux.envs.config import SPECIES
from bioflux.learning_curves import plot_learning_curves
from bioflux.ray_session import init_ray

#: Config sections that ``--resume`` may change, because they do not change what is learned:
#: the stop criteria (raise them to continue a finished run), where it runs (e.g. more
#: EnvRunners on a cluster), checkpointing and evaluation settings.
RESUMABLE_SECTIONS = ("stop", "resources", "checkpoint", "evaluation")
#: a run's lineage: where its modules started (``bioflux.transfer``), written once at its start
INIT_FROM_FILE = "init_from.json"

#: Keys of each metrics.jsonl row. ``predator_return``, ``prey_return``, ``capture_rate``,
#: ``first_capture_step`` and ``episode_length`` are windowed means over the last
#: ``SMOOTHING_EPISODES`` finished episodes (at iteration granularity), so they have a value
#: in every iteration once any episode has ended; the ``*_iter`` keys hold the episodes that
#: ended in this iteration (None when none did). The per-step rates come from every sampled
#: step (batched EnvRunners), so they exist from the first iteration at any scale.
ITERATION_KEYS = (
    "iteration",
    "env_steps",
    "agent_steps",
    "episodes",
    "episodes_iter",
    "time_s",
    "iteration_time_s",
    "predator_return",
    "prey_return",
    "capture_rate",
    "first_capture_step",
    "episode_length",
    "predator_return_iter",
    "prey_return_iter",
    "capture_rate_iter",
    "first_capture_step_iter",
    "episode_length_iter",
    "predator_reward_per_step",
    "prey_reward_per_step",
    "captures_per_1k_agent_steps",
    "env_steps_per_s",
    "agent_steps_per_s",
)
#: Episodes the windowed metrics average over (RLlib's ``metrics_num_episodes_for_smoothing``).
SMOOTHING_EPISODES = 100
_WINDOWED = (
    "predator_return",
    "prey_return",
    "capture_rate",
    "first_capture_step",
    "episode_length",
)


def _num(x: Any) -> float | None:
    """NaN or missing (no episode ended this iteration) → None."""
    return None if x is None or math.isnan(float(x)) else float(x)


def windowed(rows: list[dict[str, Any]], key: str, episodes: int = SMOOTHING_EPISODES):
    """Episode-weighted mean of ``<key>_iter`` over the latest rows that together hold at least
    ``episodes`` finished episodes (all rows when fewer); None before any episode ended."""
    total = weight = 0.0
    for row in reversed(rows):
        n, value = row.get("episodes_iter") or 0, row.get(f"{key}_iter")
        if n and value is not None:
            total += n * value
            weight += n
            if weight >= episodes:
                break
    return total / weight if weight else None


def iteration_row(
    result: dict[str, Any], previous_rows: list[dict[str, Any]], iteration_time: float
) -> dict[str, Any]:
    """Flatten RLlib's result dict into one metrics row (see ``ITERATION_KEYS``)."""
    previous = previous_rows[-1] if previous_rows else None
    er = result.get("env_runners", {})
    returns = er.get("module_episode_returns_mean", {}) or {}
    env_steps = int(
        result.get("num_env_steps_sampled_lifetime", 0)
        or er.get("num_env_steps_sampled_lifetime", 0)
    )
    agent_steps = er.get("num_agent_steps_sampled_lifetime", {}) or {}
    agent_steps = (
        int(sum(agent_steps.values())) if isinstance(agent_steps, dict) else int(agent_steps)
    )
    prev_env = previous["env_steps"] if previous else 0
    prev_agent = previous["agent_steps"] if previous else 0
    prev_time = previous["time_s"] if previous else 0.0
    episodes = int(er.get("num_episodes_lifetime", 0))
    sampled = er.get("num_agent_steps_sampled", {}) or {}
    step_rewards = er.get("step_rewards", {}) or {}

    def per_step(species: str) -> float | None:
        n = sampled.get(species) if isinstance(sampled, dict) else None
        r = step_rewards.get(species)
        return None if not n or r is None else round(float(r) / float(n), 6)

    new_agent_steps = agent_steps - prev_agent
    captures = er.get("captures_sampled")
    row = {
        "iteration": int(result["training_iteration"]),
        "env_steps": env_steps,
        "agent_steps": agent_steps,
        "episodes": episodes,
        "episodes_iter": episodes - (previous["episodes"] if previous else 0),
        "time_s": round(prev_time + iteration_time, 3),
        "iteration_time_s": round(iteration_time, 3),
        "predator_return_iter": _num(returns.get("predator")),
        "prey_return_iter": _num(returns.get("prey")),
        "capture_rate_iter": _num(er.get("capture_rate")),
        "first_capture_step_iter": _num(er.get("first_capture_step")),
        "episode_length_iter": _num(er.get("episode_len_mean")),
        "predator_reward_per_step": per_step("predator"),
        "prey_reward_per_step": per_step("prey"),
        "captures_per_1k_agent_steps": (
            None
            if captures is None or new_agent_steps <= 0
            else round(1000.0 * float(captures) / new_agent_steps, 4)
        ),
        "env_steps_per_s": round((env_steps - prev_env) / iteration_time, 1),
        "agent_steps_per_s": round(new_agent_steps / iteration_time, 1),
    }
    history = [*previous_rows, row]
    for key in _WINDOWED:
        row[key] = windowed(history, key)
    return {key: row[key] for key in ITERATION_KEYS}


def format_row(row: dict[str, Any], stop_iterations: int | None) -> str:
    def f(x: Any, spec: str = ".2f") -> str:
        return "—" if x is None else format(x, spec)

    total = f"/{stop_iterations}" if stop_iterations else ""
    return (
        f"iter {row['iteration']}{total} | env steps {row['env_steps']:,} | return "
        f"predator {f(row['predator_return'])} prey {f(row['prey_return'])} | capture rate "
        f"{f(row['capture_rate'])} | {row['env_steps_per_s']:,.0f} env-steps/s "
        f"({row['agent_steps_per_s']:,.0f} agent-steps/s)"
    )


def should_stop(exp: Experiment, row: dict[str, Any]) -> bool:
    s = exp.stop
    return any(
        [
            s.iterations is not None and row["iteration"] >= s.iterations,
            s.env_steps is not None and row["env_steps"] >= s.env_steps,
            s.episodes is not None and row["episodes"] >= s.episodes,
            s.time_s is not None and row["time_s"] >= s.time_s,
        ]
    )


def _node_id(_env_runner: Any) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def env_runner_nodes(algo: Any) -> list[str]:
    """Ray node IDs of the algorithm's remote EnvRunners, in runner order (empty with none).

    Node IDs, not IPs: several nodes on one machine share an IP.
    """
    group = getattr(algo, "env_runner_group", None)
    if group is None or group.num_remote_env_runners() == 0:
        return []
    return list(group.foreach_env_runner(_node_id, local_env_runner=False))


def _learner_device(learner: Any) -> str:
    return str(learner._device)


def learner_devices(algo: Any) -> list[str]:
    """Where each of the algorithm's learners trains (``cpu``, ``cuda:0``, ...), in learner
    order; empty for an algorithm without learners (the Lotka–Volterra coefficient search)."""
    group = getattr(algo, "learner_group", None)
    if group is None:
        return []
    return [result.get() for result in group.foreach_learner(_learner_device)]


def _normalized(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict with the env and the algorithm's hyper-parameters spelled out in full
    (defaults included), so that leaving a default out and writing it compare equal."""
    from bioflux import config

    out = dict(data)
    try:
        exp = config.validate(dict(data))
    except ConfigError:  # e.g. written by an older BioFlux: compare as written
        return out
    out["env"] = exp.env_config.to_dict()
    out["training"] = exp.params.model_dump(mode="json")
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if prefix == "stages" and isinstance(data, list):  # a curriculum: stages.N.key
        data = {str(i): stage for i, stage in enumerate(data, start=1)}
    if not isinstance(data, Mapping):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _resumable(key: str) -> bool:
    parts = key.split(".")
    # a curriculum stage's stop (stages.N.stop...) may change like the top-level stop
    return parts[0] in RESUMABLE_SECTIONS or (parts[0] == "stages" and parts[2:3] == ["stop"])


def config_differences(saved: Mapping[str, Any], exp: Experiment) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs between a run's saved config and ``exp`` (``RESUMABLE_
    SECTIONS`` and curriculum stages' ``stop`` left out) → (saved value, new value); a missing
    key reads as ``None``."""
    old, new = _flatten(_normalized(saved)), _flatten(_normalized(exp.to_dict()))
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if not _resumable(key) and old.get(key) != new.get(key)
    }


def check_resume(run: RunFolder, exp: Experiment) -> None:
    """``ValueError`` unless ``exp`` may resume ``run``: same config as its ``config.yaml``
    except for ``RESUMABLE_SECTIONS``. Reads only."""
    if not run.config.is_file():  # a run folder from before config.yaml: nothing to compare
        return
    try:
        saved = yaml.safe_load(run.config.read_text())
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"cannot resume {run.root}: {run.config} is not valid YAML: {first}"
        ) from None
    if not isinstance(saved, Mapping):
        raise ValueError(f"cannot resume {run.root}: {run.config} does not hold a config mapping")
    diff = config_differences(saved, exp)
    if diff:

        def shown(v: Any) -> str:
            text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
            text = text.removesuffix("...").strip()
            return text if len(text) <= 40 else text[:37] + "..."

        changes = "; ".join(f"{k}: {shown(a)} -> {shown(b)}" for k, (a, b) in diff.items())
        raise ValueError(
            f"cannot resume {run.root}: the config differs from the run's config.yaml in "
            f"{', '.join(diff)} ({changes}); only {', '.join(RESUMABLE_SECTIONS)} (and a "
            "stage's stop) may change on --resume: resume with the run's config, or start a new "
            "run under another name or output folder"
        )


def finished_summary(run: RunFolder, exp: Experiment, models: str | Path) -> dict[str, Any] | None:
    """The saved summary of a run that finished and already meets ``exp``'s stop criteria, with
    its exports where ``models`` says, or None. Reads only, so ``--resume`` of a finished run
    answers before Ray starts (building the algorithm only to learn that takes minutes)."""
    import json

    try:
        summary = json.loads(run.summary.read_text())
        rows = run.read_metrics()
    except (OSError, ValueError):
        return None
    if (
        not rows
        or not isinstance(summary, dict)
        or summary.get("iterations") != rows[-1].get("iteration")
    ):
        return None  # stopped before its summary (killed, Ctrl-C): resume it
    if not should_stop(exp, rows[-1]) or not (run.checkpoints / "final").is_dir():
        return None
    exports = summary.get("models") or {}
    expected = export_root(models, exp.algorithm, exp.name) / "final"
    if not exports.get("final") or Path(exports["final"]).resolve() != expected.resolve():
        return None  # exported elsewhere before: the slow path exports here
    if not expected.is_dir():
        return None
    return summary


def trained_modules(algo: Any) -> list[str]:
    """The species whose module the algorithm trains (``policies_to_train``): fixed modules
    (``training.fixed_modules``) and species left out of ``train_species`` are not."""
    to_train = getattr(algo.config, "policies_to_train", None)
    if to_train is None:
        return list(SPECIES)
    if callable(to_train):
        return [s for s in SPECIES if to_train(s, None)]
    return [s for s in SPECIES if s in set(to_train)]


def _export(checkpoint: Path, target: Path, metadata: dict[str, Any], species: list[str]) -> str:
    """Export the modules of the trained ``species`` (fixed modules are not the run's)."""
    return str(export_modules(checkpoint, target, metadata, species=species))


def train(
    exp: Experiment,
    output: str | Path = "runs",
    models: str | Path = "models",
    resume: bool = False,
    address: str | None = None,
    num_env_runners: int | None = None,
    log: Callable[[str], None] = print,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Train ``exp`` to its stop criteria; returns the summary (also written to summary.json).

    An experiment with ``stages`` trains its curriculum (``bioflux.curriculum``). ``on_row``
    is called with the run's metrics rows after each iteration (and once after a resume).
    ``on_start`` (a plain RLlib run only) is called once with the built algorithm when its
    modules hold the run's starting weights (fresh, ``init_from`` or restored), before the
    first iteration: e.g. to evaluate the weights a run starts from."""
    from bioflux.algorithms import get_algorithm

    if exp.stages:
        return train_curriculum(
            exp,
            output=output,
            models=models,
            resume=resume,
            address=address,
            num_env_runners=num_env_runners,
            log=log,
        )
    exp.env_config.require_agent_identity("training")  # before Ray starts
    plugin = get_algorithm(exp.algorithm)
    if not plugin.trains_through_rllib:  # a SelfTrainingPlugin (the coefficient search)
        return plugin.train(
            exp, output=output, models=models, resume=resume, address=address, log=log
        )
    if num_env_runners is not None:
        exp.resources.num_env_runners = num_env_runners
    run = RunFolder(Path(output) / exp.name)
    latest = run.latest()
    if latest is not None and not resume:
        raise ValueError(
            f"run folder {run.root} already has checkpoints; pass --resume to continue it or "
            f"choose another --output / name"
        )
    if latest is not None:
        check_resume(run, exp)  # before Ray starts; nothing written yet
        finished = finished_summary(run, exp, models)
        if finished is not None:
            log(
                f"{run.root} already meets its stop criteria at iteration "
                f"{finished['iterations']}: nothing to train (raise stop, e.g. "
                "--set stop.iterations=N, to continue)"
            )
            return finished

    started_ray = init_ray(address)
    import ray

    algo = None
    try:
        algo = plugin.build_config(exp).build_algo()
        rows: list[dict[str, Any]] = []
        if latest is not None:
            try:
                algo.restore_from_path(str(latest.resolve()))
            except Exception as err:  # corrupt, or from another algorithm or module layout
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(
                    f"cannot resume {run.root} from {latest}: {type(err).__name__}: {first}"
                ) from err
            rows = [r for r in run.read_metrics() if r["iteration"] <= algo.iteration]
            log(f"resumed {run.root} from {latest.name} at iteration {algo.iteration}")
        elif exp.init_from:  # a new run that starts from trained modules (bioflux.transfer)
            from bioflux.transfer import initialize_modules

            lineage = initialize_modules(algo, exp.init_from, exp.algorithm)
            run.root.mkdir(parents=True, exist_ok=True)
            (run.root / INIT_FROM_FILE).write_text(json.dumps(lineage, indent=2))
            for s, line in lineage.items():
                log(f"{s} starts from {line['module']} ({line['tensors_copied']} tensors)")
        elif resume:
            log(f"nothing to resume in {run.root}: starting a new run")
        # validated (and restored): from here on the run folder is ours to change
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        run.config.write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
        run.write_metrics(rows)
        if on_start is not None:
            on_start(algo)
        if on_row is not None:
            on_row(rows)
        runner_nodes = env_runner_nodes(algo)
        devices = learner_devices(algo)
        if devices:
            log(f"learners: {len(devices)} on {', '.join(sorted(set(devices)))}")
        species = trained_modules(algo)
        writer = _tensorboard(run.tensorboard)
        score_key = exp.checkpoint.score
        best = max(
            (r[score_key] for r in rows if r.get(score_key) is not None), default=float("-inf")
        )
        best_iteration = next((r["iteration"] for r in rows if r.get(score_key) == best), None)
        if rows and should_stop(exp, rows[-1]):
            log(
                f"{run.root} already meets its stop criteria at iteration {rows[-1]['iteration']}"
                ": nothing to train (raise stop, e.g. --set stop.iterations=N, to continue)"
            )
        trained = False
        while not rows or not should_stop(exp, rows[-1]):
            t0 = time.perf_counter()
            result = algo.train()
            trained = True
            row = iteration_row(result, rows, time.perf_counter() - t0)
            rows.append(row)
            run.append_metrics(row)
            if on_row is not None:
                on_row(rows)
            log(format_row(row, exp.stop.iterations))
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "iteration":
                        writer.add_scalar(k, v, row["env_steps"])
            if row.get(score_key) is not None and row[score_key] > best:
                best, best_iteration = row[score_key], row["iteration"]
                save_checkpoint(algo, run.checkpoints / "best")
            if row["iteration"] % exp.checkpoint.frequency == 0:
                save_checkpoint(algo, run.checkpoints / f"iter_{row['iteration']:06d}")
                for old in run.periodic()[: -exp.checkpoint.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        if trained or not (run.checkpoints / "final").is_dir():
            save_checkpoint(algo, run.checkpoints / "final")
        if writer is not None:
            writer.close()
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()

    lineage_file = run.root / INIT_FROM_FILE
    lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else None
    meta = {
        "algorithm": exp.algorithm,
        "run": exp.name,
        **({"init_from": lineage} if lineage else {}),
        "env": exp.env_config.to_dict(),
        "observation": "flattened (row, col, channel) window, see predator_prey_v0",
        "iteration": rows[-1]["iteration"] if rows else None,
    }
    exports_at = export_root(models, exp.algorithm, exp.name)
    exports = {
        "final": _export(
            run.checkpoints / "final", exports_at / "final", {**meta, "kind": "final"}, species
        )
    }
    if (run.checkpoints / "best").is_dir():
        exports["best"] = _export(
            run.checkpoints / "best",
            exports_at / "best",
            {**meta, "kind": "best", "iteration": best_iteration},
            species,
        )
    if rows:
        title = f"{exp.name} ({exp.algorithm})"
        if set(species) == set(
            SPECIES
        ):  # both learn: the capture rate measures one against the other
            title += " — self-play: both species learn at once; evaluate against a fixed opponent"
        plot_learning_curves(rows, run.curves, title)
    best_at = {"score": score_key, "value": best if rows else None, "iteration": best_iteration}
    return _write_summary(
        exp,
        run,
        rows,
        best=best_at,
        env_runner_nodes=runner_nodes,
        learner_devices=devices,
        trained_species=species,
        init_from=lineage,
        best_checkpoint=run.checkpoints / "best",
        models=exports,
    )


def _write_summary(
    exp: Experiment, run: RunFolder, rows: list[dict[str, Any]], best_checkpoint: Path, **fields
) -> dict[str, Any]:
    """The run's ``summary.json`` (a plain run's and a curriculum's): the totals of its last
    metrics row, its folders and ``fields``; returns it."""
    last = rows[-1] if rows else None
    summary = {
        "name": exp.name,
        "algorithm": exp.algorithm,
        "iterations": last["iteration"] if last else 0,
        "env_steps": last["env_steps"] if last else 0,
        "time_s": last["time_s"] if last else 0.0,
        "last": last,
        "best": fields.pop("best"),
        "run_dir": str(run.root),
        "env_runner_nodes": fields.pop("env_runner_nodes"),
        "learner_devices": fields.pop("learner_devices"),
        "trained_species": fields.pop("trained_species"),
        "init_from": fields.pop("init_from"),
        **({"curriculum": fields.pop("curriculum")} if "curriculum" in fields else {}),
        "checkpoints": {"final": str(run.checkpoints / "final"), "best": str(best_checkpoint)},
        "models": fields.pop("models"),
        "learning_curves": str(run.curves),
        "metrics": str(run.metrics),
    }
    run.write_summary(summary)
    return summary


# ---------------------------------------------------------------------------- curricula
def stage_experiment(exp: Any, index: int, init_from: str | None) -> Any:
    """Stage ``index`` (0-based) as a plain experiment: its world, its stop, its name, and
    ``training.init_from`` = ``init_from`` (stage 1 keeps the experiment's own)."""
    from bioflux import config
    from bioflux.curriculum import stage_env, stage_names

    data = exp.to_dict()
    data.pop("stages", None)
    stage = exp.stages[index]
    data["name"] = stage_names(exp)[index]
    data["env"] = stage_env(exp, index)
    data["stop"] = (stage.stop or exp.stop).model_dump(mode="json", exclude_none=True)
    if index > 0:
        data["training"] = {**data["training"], "init_from": init_from}
    return config.validate(data, source=f"stage {index + 1} ({data['name']})")


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
    """Train the stages of ``exp`` (``stages:``) in ``<output>/<name>/``, each from the previous
    stage's weights; returns the curriculum's summary (see ``bioflux.curriculum``)."""
    from bioflux.artifacts import MODULES_SUBDIR
    from bioflux.curriculum import (
        STAGE_MODELS_DIR,
        STAGES_DIR,
        combine_rows,
        latest_checkpoint,
        shift_rows,
        stage_names,
    )

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
        check_resume(run, exp)  # before Ray starts; nothing written yet
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
        if finished_summary(r, e, stage_models) is None
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
                run.write_metrics(done + shift_rows(done, rows, i + 1, names[i]))

            prefix = f"stage {i + 1}/{len(names)} {name}: "
            summaries.append(
                train(
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
        (run.root / INIT_FROM_FILE).write_text(json.dumps(lineage, indent=2))
    else:
        (run.root / INIT_FROM_FILE).unlink(missing_ok=True)
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
        "final": _export(
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
        exports["best"] = _export(
            last_run.checkpoints / "best",
            exports_at / "best",
            {**meta, "kind": "best", "iteration": best_iteration},
            species,
        )
    if rows:
        plot_learning_curves(rows, run.curves, f"{exp.name} ({exp.algorithm}, curriculum)")
    return _write_summary(
        exp,
        run,
        rows,
        best={**best, "stage": len(names)},
        env_runner_nodes=last.get("env_runner_nodes", []),
        learner_devices=last.get("learner_devices", []),
        trained_species=species,
        init_from=lineage,
        curriculum=curriculum,
        best_checkpoint=last_run.checkpoints / "best",
        models=exports,
    )


def interrupted(args: Any, name: str) -> str:
    """The one line ``bioflux train`` prints on Ctrl-C: the newest complete checkpoint of the
    run and the command that continues it (``args``: the train command's parsed options)."""
    import shlex

    from bioflux.curriculum import latest_checkpoint

    run = RunFolder(Path(args.output) / name)
    latest = latest_checkpoint(run.root)  # a curriculum's: the newest of any stage
    command = ["bioflux", "train", "--config", str(args.config)]
    for item in args.set or []:
        command += ["--set", item]
    if Path(args.output) != Path("runs"):
        command += ["--output", str(args.output)]
    if Path(args.models) != Path("models"):
        command += ["--models", str(args.models)]
    if args.address:
        command += ["--address", str(args.address)]
    if args.num_env_runners is not None:
        command += ["--num-env-runners", str(args.num_env_runners)]
    command.append("--resume")
    if latest is None:
        return f"interrupted before the first checkpoint of {run.root}; start again with: " + (
            shlex.join(command)
        )
    return f"interrupted; last checkpoint {latest}; continue with: {shlex.join(command)}"


def _tensorboard(path: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # optional: metrics.jsonl has the same numbers
        return None
    return SummaryWriter(str(path))


def __getattr__(name: str) -> Any:
    """``from bioflux.training import ModelInference`` (its historical home): imported on first
    use, so that ``import bioflux.training`` does not import Ray Serve."""
    if name == "ModelInference":
        return importlib.import_module("bioflux.serve.inference").ModelInference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
