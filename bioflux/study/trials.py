"""A study's training: every (approach, seed) is one Ray Tune trial.

``run_trials`` hands Ray Tune a grid of the unfinished trials, each reserving
``resources.cpus_per_trial`` CPUs, so the same call spreads over a cluster under
``ray job submit`` (the study folder must then be on storage every node can write). A trial
(``run_trial``) trains its experiment with ``bioflux.training.train`` inside the trial's
process and records its summary in ``trials/<approach>_s<seed>.json``; ``resume`` skips the
trials that have one, and a trial that was killed mid-run resumes from its newest checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioflux.artifacts import RunFolder, StudyFolder
from bioflux.ray_session import init_ray
from bioflux.study.config import StudyConfig


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: train one (approach, seed) and record its summary."""
    from ray import tune

    from bioflux.training import train

    study = StudyConfig(**config["study"])
    folder = StudyFolder(config["root"])
    label, seed = config["trial"]["approach"], config["trial"]["seed"]
    exp = study.experiment(label, seed)
    log_path = folder.trial_log(label, seed)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log_path.open("a") as log_file:

        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        summary = train(exp, output=folder.runs, models=folder.models, resume=True, log=log)
    rows = RunFolder(folder.runs / exp.name).read_metrics()
    result = {
        "approach": label,
        "seed": seed,
        "algorithm": exp.algorithm,
        "name": exp.name,
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_time_s": summary.get("time_s"),
        "iterations": summary.get("iterations"),
        "env_steps": summary.get("env_steps"),
        "agent_steps": (rows[-1].get("agent_steps") if rows else None),
        "model": summary["models"]["final"],
        "metrics": str(RunFolder(folder.runs / exp.name).metrics),
    }
    folder.write_trial_result(label, seed, result)
    tune.report({"env_steps": result["env_steps"] or 0, "wall_s": result["wall_s"]})


def trial_resources(study: StudyConfig):
    """One bundle for the trial (its learner and, without EnvRunners, its sampling) plus one
    per EnvRunner; the EnvRunners a trial starts are placed in its bundles."""
    from ray import tune

    r = study.resources
    return tune.PlacementGroupFactory(
        [{"CPU": r.cpus_per_trial}] + [{"CPU": 1.0}] * r.env_runners_per_trial
    )


def _progress(total: int, done_before: int, log: Callable[[str], None]):
    """One line per trial event: done/running counts and the study's elapsed time."""
    from ray import tune

    class StudyProgress(tune.Callback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.done, self.running, self.failed = done_before, 0, 0

        def _line(self, trial: Any, event: str) -> None:
            t = trial.config["trial"]
            log(
                f"[{time.perf_counter() - self.t0:6.0f} s] {self.done}/{total} trials done, "
                f"{self.running} running, {self.failed} failed | "
                f"{t['approach']} seed {t['seed']} {event}"
            )

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any):
            self.running += 1
            self._line(trial, "started")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            self.running -= 1
            self.done += 1
            wall = (trial.last_result or {}).get("wall_s")
            self._line(trial, f"finished in {wall} s" if wall is not None else "finished")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            self.running -= 1
            self.failed += 1
            self._line(trial, "FAILED (see its log in logs/)")

    return StudyProgress()


def run_trials(
    study: StudyConfig,
    folder: StudyFolder,
    resume: bool = False,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every unfinished (approach, seed) as a Ray Tune trial; returns every trial's
    summary (finished earlier or now), in ``study.trials()`` order."""
    from ray import tune

    trials = study.trials()
    pending = [(label, seed) for label, seed in trials if folder.finished(label, seed) is None]
    if len(pending) < len(trials):
        log(f"skipping {len(trials) - len(pending)} finished trial(s)")
    if pending:
        started = init_ray(address, log_to_driver=False)  # trials log to logs/ instead
        import ray

        try:
            space = {
                "trial": tune.grid_search([{"approach": a, "seed": s} for a, s in pending]),
                "study": study.model_dump(mode="json"),
                "root": str(Path(folder.root).resolve()),
            }
            tuner = tune.Tuner(
                tune.with_resources(run_trial, trial_resources(study)),
                param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=study.resources.max_concurrent),
                run_config=tune.RunConfig(
                    name=f"trials_{time.strftime('%Y%m%d_%H%M%S')}",
                    storage_path=str(folder.tune.resolve()),
                    verbose=0,
                    callbacks=[_progress(len(trials), len(trials) - len(pending), log)],
                ),
            )
            grid = tuner.fit()
        finally:
            if started:
                ray.shutdown()
        failed = [r for r in grid if r.error is not None]
        if failed:
            names = [
                f"{r.config['trial']['approach']} seed {r.config['trial']['seed']}" for r in failed
            ]
            raise RuntimeError(
                f"{len(failed)} trial(s) failed: {', '.join(names)}; see {folder.logs} and "
                f"{folder.tune}; `--resume` retries them and skips the finished ones"
            )
    return [folder.finished(label, seed) for label, seed in trials]  # type: ignore[misc]
