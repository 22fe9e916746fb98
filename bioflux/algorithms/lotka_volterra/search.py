"""The Lotka–Volterra coefficient search: the policy's coefficients chosen with Ray Tune.

(Not to be confused with ``bioflux.ecology``'s fit of the Lotka–Volterra ODE to population
series: this searches the coefficients of a *policy*, by the returns its agents earn.)

Run: ``bioflux train --config configs/lotka_volterra.yaml``. Each trial draws one
coefficient set (log-uniform within ``training.bounds``), plays ``training.episodes`` episodes
of the fitted species against ``training.opponent`` and reports the species' mean return; the
best set is exported like any trained model, to ``<models>/lotka_volterra/<run>/{final,best}/``
(the fitted species with its coefficients, the other species with the defaults).

One iteration is one trial: ``stop.iterations`` (or ``env_steps``/``episodes``/``time_s``)
caps the search below ``training.num_samples``. Trials play on ``training.selection_seed``,
never on ``evaluation.seed``, so the winner is not scored on the episodes that picked it.
Expected on ``configs/lotka_volterra.yaml`` (2 cores, ~1 min): a fitted predator that captures
more random prey than the default coefficients.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bioflux.artifacts import EXPORT_KINDS, RunFolder, export_rl_modules, export_root
from bioflux.envs.config import SPECIES, EnvConfig, other_species
from bioflux.evaluation import run_episodes, summarize
from bioflux.learning_curves import plot_learning_curves
from bioflux.policies import BUILTINS, ModulePolicy, load_policy
from bioflux.policy_modules.lotka_volterra import DEFAULTS, make_module
from bioflux.ray_session import init_ray

#: The Tune experiment's folder under ``<run>/tune/`` (its name from before the search was
#: called a search: runs written then still resume).
TUNE_NAME = "lv_fit"


class Params(BaseModel):
    """Coefficient search (the ``training`` section of a ``lotka_volterra`` experiment)."""

    model_config = ConfigDict(extra="forbid")

    fit_species: str = Field(
        "predator", pattern="^(predator|prey)$", description="whose coefficients are fitted"
    )
    opponent: str = Field("random", description="the other species' policy: built-in or path")
    num_samples: int = Field(24, ge=1, description="Ray Tune trials (coefficient sets), at most")
    episodes: int = Field(40, ge=1, description="episodes played per trial")
    max_concurrent: int = Field(2, ge=1, description="trials running at once (search: tune)")
    search: Literal["tune", "serial"] = Field(
        "tune",
        description="tune: trials are Ray Tune trials (parallel, resumable); serial: one after "
        "another in this process, without Ray (for a study, whose trial this search already is)",
    )
    selection_seed: int = Field(
        1_000_003,
        ge=0,
        description="seed of the trials' episodes (must differ from evaluation.seed)",
    )
    bounds: dict[str, tuple[float, float]] = Field(
        {
            "alpha": (0.05, 5.0),
            "beta": (0.05, 5.0),
            "gamma": (0.01, 3.0),
            "delta": (0.05, 5.0),
            "temperature": (0.05, 2.0),
        },
        description="log-uniform search range per coefficient",
    )


def play_trial(setup: dict[str, Any], coefficients: dict[str, float]) -> dict[str, float]:
    """Score one coefficient set: the fitted species' return, capture and success rates."""
    species = setup["species"]
    other = other_species(species)
    policies = {
        species: ModulePolicy(make_module(species, **coefficients), name="lotka_volterra"),
        other: load_policy(setup["opponent"], other),
    }
    records = run_episodes(
        policies["predator"],
        policies["prey"],
        EnvConfig(**setup["env"]),
        setup["episodes"],
        seed=setup["seed"],
    )
    m = summarize(records)[species]
    return {
        "return": m["return_mean"],
        "capture_rate": m["capture_rate"],
        "success_rate": m["success_rate"],
    }


def _tune_trial(config: dict[str, Any]) -> None:
    """One Tune trial: ``play_trial`` on the sampled coefficients."""
    from ray import tune

    setup = config.pop("_setup")
    tune.report(play_trial(setup, config))


def num_trials(exp: Any) -> int:
    """``training.num_samples`` capped by the stop criteria (one iteration = one trial)."""
    p: Params = exp.params
    per_trial_steps = p.episodes * exp.env_config.max_steps
    caps = [p.num_samples]
    if exp.stop.iterations is not None:
        caps.append(exp.stop.iterations)
    if exp.stop.env_steps is not None:
        caps.append(exp.stop.env_steps // per_trial_steps)
    if exp.stop.episodes is not None:
        caps.append(exp.stop.episodes // p.episodes)
    return max(1, min(caps))


class _Progress:
    """One line per finished trial (Tune's own tables are switched off)."""

    def __init__(self, total: int, species: str, log: Any):
        self.total, self.species, self.log = total, species, log
        self.done = 0
        self.best = float("-inf")

    def __call__(self, result: dict[str, Any]) -> None:
        self.done += 1
        if "return" not in result:
            return
        self.best = max(self.best, float(result["return"]))
        self.log(
            f"trial {self.done}/{self.total} | {self.species} return {result['return']:.3f} | "
            f"capture rate {result['capture_rate']:.2f} | best {self.best:.3f}"
        )


def _tune_callback(progress: _Progress):
    from ray import tune

    class TrialProgress(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            progress(trial.last_result or {})

    return TrialProgress()


def _search_tune(
    p: Params,
    setup: dict[str, Any],
    trials: int,
    run: RunFolder,
    exp: Any,
    resume: bool,
    address: str | None,
    progress: _Progress,
    log: Any,
) -> list[dict[str, Any]]:
    """Trials as Ray Tune trials; one row per trial (coefficients, result, time), in the order
    they finished."""
    from ray import tune

    space: dict[str, Any] = {k: tune.loguniform(lo, hi) for k, (lo, hi) in p.bounds.items()}
    space["_setup"] = setup
    started = init_ray(address)
    import ray

    try:
        storage = str((run.root / "tune").resolve())
        trainable = tune.with_resources(_tune_trial, {"cpu": 1})
        if resume and tune.Tuner.can_restore(f"{storage}/{TUNE_NAME}"):
            log(f"resuming the coefficient search in {storage}/{TUNE_NAME}")
            tuner = tune.Tuner.restore(
                f"{storage}/{TUNE_NAME}", trainable=trainable, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric="return",
                    mode="max",
                    num_samples=trials,
                    max_concurrent_trials=p.max_concurrent,
                    time_budget_s=exp.stop.time_s,
                ),
                run_config=tune.RunConfig(
                    name=TUNE_NAME,
                    storage_path=storage,
                    verbose=0,
                    callbacks=[_tune_callback(progress)],
                ),
            )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    df = grid.get_dataframe().sort_values("timestamp")
    return [
        {
            **{k: float(r[f"config/{k}"]) for k in p.bounds},
            "return": float(r["return"]),
            "capture_rate": float(r["capture_rate"]),
            "time_s": float(r.get("time_total_s", 0.0)),
        }
        for _, r in df.iterrows()
    ]


def _search_serial(
    p: Params, setup: dict[str, Any], trials: int, seed: int, progress: _Progress
) -> list[dict[str, Any]]:
    """The same log-uniform random search, one trial after another in this process."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(trials):
        coefficients = {
            k: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            for k, (lo, hi) in p.bounds.items()
        }
        t0 = time.perf_counter()
        result = play_trial(setup, coefficients)
        rows.append({**coefficients, **result, "time_s": time.perf_counter() - t0})
        progress(result)
    return rows


def train(
    exp: Any,
    output: Any,
    models: Any,
    resume: bool = False,
    address: str | None = None,
    log: Any = print,
    **_: Any,
) -> dict[str, Any]:
    """Fit the coefficients (Ray Tune, or serially); export the best as a loadable module."""
    p: Params = exp.params
    unknown = set(p.bounds) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"training.bounds: unknown coefficient(s) {sorted(unknown)}")
    if p.selection_seed == exp.evaluation.seed:
        raise ValueError(
            f"training.selection_seed={p.selection_seed} equals evaluation.seed: the search would "
            "pick its winner on the evaluation episodes; choose another seed"
        )
    run = RunFolder(Path(output) / exp.name)
    if run.summary.exists() and not resume:
        raise ValueError(
            f"run folder {run.root} already exists; pass --resume to continue it "
            "or choose another --output / name"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    opponent = p.opponent if p.opponent in BUILTINS else str(Path(p.opponent).resolve())
    trials = num_trials(exp)
    setup = {
        "species": p.fit_species,
        "opponent": opponent,
        "env": exp.env_config.to_dict(),
        "episodes": p.episodes,
        "seed": p.selection_seed,
    }
    progress = _Progress(trials, p.fit_species, log)
    if p.search == "tune":
        results = _search_tune(p, setup, trials, run, exp, resume, address, progress, log)
    else:
        results = _search_serial(p, setup, trials, exp.seed, progress)
    best = max(results, key=lambda r: r["return"])
    coefficients = {k: best[k] for k in p.bounds}
    other_return = f"{other_species(p.fit_species)}_return"
    rows = []
    best_so_far = float("-inf")
    elapsed = 0.0
    for i, r in enumerate(results, start=1):
        best_so_far = max(best_so_far, r["return"])
        elapsed += r["time_s"]
        rows.append(
            {
                "iteration": i,
                "env_steps": i * p.episodes * exp.env_config.max_steps,
                "time_s": round(elapsed, 3),
                "capture_rate": r["capture_rate"],
                f"{p.fit_species}_return": r["return"],
                other_return: None,
                "best_return": best_so_far,
                **{k: r[k] for k in p.bounds},
            }
        )
    run.write_metrics(rows)
    plot_learning_curves(rows, run.curves, f"{exp.name}: Lotka–Volterra coefficient search")

    modules = {s: make_module(s, **(coefficients if s == p.fit_species else {})) for s in SPECIES}
    exports_at = export_root(models, "lotka_volterra", exp.name)
    for kind in EXPORT_KINDS:
        metadata = {
            s: {
                "algorithm": "lotka_volterra",
                "run": exp.name,
                "kind": kind,
                "env": exp.env_config.to_dict(),
                "coefficients": modules[s].coefficients,
                "fitted": s == p.fit_species,
                "opponent": p.opponent,
            }
            for s in SPECIES
        }
        export_rl_modules(exports_at / kind, modules, metadata)
    summary = {
        "name": exp.name,
        "algorithm": "lotka_volterra",
        "iterations": len(rows),
        "fit_species": p.fit_species,
        "opponent": p.opponent,
        "selection_seed": p.selection_seed,
        "best": {"score": "return", "value": best["return"], "coefficients": coefficients},
        "run_dir": str(run.root),
        "models": {kind: str(exports_at / kind) for kind in EXPORT_KINDS},
        "learning_curves": str(run.curves),
        "metrics": str(run.metrics),
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "time_s": rows[-1]["time_s"] if rows else 0.0,
        "last": rows[-1] if rows else None,
    }
    run.write_summary(summary)
    return summary
