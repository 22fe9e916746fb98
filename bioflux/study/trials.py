"""A study's training: every (approach, seed) is one Ray Tune trial.

``run_trials`` hands Ray Tune a grid of the unfinished trials, each reserving
``resources.cpus_per_trial`` CPUs, so the same call spreads over a cluster under
``ray job submit`` (the study folder must then be on storage every node can write). A trial
(``run_trial``) trains its experiment with ``bioflux.training.train`` inside the trial's
process and records its summary in ``trials/<approach>_s<seed>.json``; ``resume`` skips the
trials that have one, and a trial that was killed mid-run resumes from its newest checkpoint.

A trial that fails (an error, out of memory, a killed worker) stays local: it is reported
with the last line of its error and the study goes on with the others (``run_trials``
returns the failures beside the results); ``--resume`` retries exactly the failed ones.

Transfer approaches (``init_from`` naming another approach) train in waves
(``StudyConfig.waves``): one Tune run per wave, so every source trial has finished before a
trial that starts from it; each dependent trial starts from its source's same-seed final
export, read from the source's trial record (``trials/<source>_s<seed>.json``, also after a
``--resume``). A dependent whose source trial failed is not run, and is reported as failed.
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
    start = source_model(study, folder, label, seed)
    exp = study.experiment(label, seed, start)
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
        "init_from": exp.training.get("init_from"),
        "metrics": str(RunFolder(folder.runs / exp.name).metrics),
    }
    folder.write_trial_result(label, seed, result)
    tune.report({"env_steps": result["env_steps"] or 0, "wall_s": result["wall_s"]})


def source_model(study: StudyConfig, folder: StudyFolder, label: str, seed: int) -> str | None:
    """The final export of the same-seed trial of the approach ``label`` starts from (None:
    it starts from no approach); ``ValueError`` when that trial has not finished."""
    source = study.source(label)
    if source is None:
        return None
    done = folder.finished(source, seed)
    if done is None:
        raise ValueError(
            f"{label} seed {seed} starts from {source} seed {seed}, whose trial did not finish"
        )
    return str(done["model"])


def trial_resources(study: StudyConfig):
    """One bundle for the trial (its learner, with ``gpus_per_trial`` of a GPU, and without
    EnvRunners its sampling) plus one per EnvRunner; the EnvRunners a trial starts are placed
    in its bundles."""
    from ray import tune

    r = study.resources
    trial = {"CPU": r.cpus_per_trial, **({"GPU": r.gpus_per_trial} if r.gpus_per_trial else {})}
    return tune.PlacementGroupFactory([trial] + [{"CPU": 1.0}] * r.env_runners_per_trial)


def check_trial_fits(study: StudyConfig) -> None:
    """Refuse, in one line, a trial that no node of the running Ray cluster could hold: Tune
    (and a plan trial's EnvRunners) would otherwise wait for the CPUs forever."""
    import ray

    r = study.resources
    need = r.cpus_per_trial + r.env_runners_per_trial
    have = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
    if need > have:
        raise ValueError(
            f"resources: one trial needs {need:g} CPUs (cpus_per_trial {r.cpus_per_trial:g} + "
            f"env_runners_per_trial {r.env_runners_per_trial}) and the largest node has "
            f"{have:g}; lower them, e.g. --set resources.env_runners_per_trial=0"
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


def failure_reason(error: BaseException | str) -> str:
    """One line that says why a trial failed: the last non-empty line of its error (Tune
    wraps the trial's traceback; its last line names the exception and message)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _run_wave(
    study: StudyConfig,
    folder: StudyFolder,
    runnable: list[tuple[str, int]],
    progress: Any,
    wave: int,
) -> dict[tuple[str, int], Any]:
    """One Tune run of the trials ``runnable``; returns the errors of those that failed."""
    from ray import tune

    space = {
        "trial": tune.grid_search([{"approach": a, "seed": s} for a, s in runnable]),
        "study": study.model_dump(mode="json"),
        "root": str(Path(folder.root).resolve()),
    }
    tuner = tune.Tuner(
        tune.with_resources(run_trial, trial_resources(study)),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=study.resources.max_concurrent),
        run_config=tune.RunConfig(
            name=f"trials_{time.strftime('%Y%m%d_%H%M%S')}_w{wave}",
            storage_path=str(folder.tune.resolve()),
            verbose=0,
            callbacks=[progress],
        ),
    )
    grid = tuner.fit()
    return {
        (r.config["trial"]["approach"], r.config["trial"]["seed"]): r.error
        for r in grid
        if r.error is not None
    }


def run_trials(
    study: StudyConfig,
    folder: StudyFolder,
    resume: bool = False,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every unfinished (approach, seed) as a Ray Tune trial; returns the summaries of
    the finished trials (earlier or now) in ``study.trials()`` order, and the failed ones
    (``approach``, ``seed``, ``error``: one line, ``log``: the trial's log file). Approaches
    run in ``study.waves()`` order (module docstring)."""
    trials = study.trials()
    pending = [(label, seed) for label, seed in trials if folder.finished(label, seed) is None]
    if len(pending) < len(trials):
        log(f"skipping {len(trials) - len(pending)} finished trial(s)")
    errors: dict[tuple[str, int], Any] = {}
    if pending:
        started = init_ray(address, log_to_driver=False)  # trials log to logs/ instead
        import ray

        try:
            check_trial_fits(study)
            progress = _progress(len(trials), len(trials) - len(pending), log)
            for k, wave in enumerate(study.waves()):
                runnable = []
                for label, seed in pending:
                    if label not in wave:
                        continue
                    source = study.source(label)
                    if source is not None and folder.finished(source, seed) is None:
                        errors[(label, seed)] = (
                            f"not run: its source trial ({source} seed {seed}) did not finish"
                        )
                    else:
                        runnable.append((label, seed))
                if runnable:
                    errors.update(_run_wave(study, folder, runnable, progress, k))
        finally:
            if started:
                ray.shutdown()
    results, failures = [], []
    for label, seed in trials:
        done = folder.finished(label, seed)
        if done is not None:
            results.append(done)
            continue
        reason = failure_reason(errors.get((label, seed), "no result was recorded"))
        failures.append(
            {
                "approach": label,
                "seed": seed,
                "error": reason,
                "log": str(folder.trial_log(label, seed)),
            }
        )
        log(f"trial {label} seed {seed} FAILED: {reason}")
    return results, failures
