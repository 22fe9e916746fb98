"""The README's main job: train the demo config, evaluate it against random opponents, render.

``bioflux demo`` → ``<out>/``: ``runs/ppo_demo/`` (checkpoints, metrics, learning curves),
``models/``, ``evaluation.{json,md,png}`` and ``episode.gif``. Run again, it resumes the run
(``training.train(resume=True)``): nothing to train once finished, unless ``stop`` was raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioflux import config, evaluation, training
from bioflux.policies import load_policy
from bioflux.threads import use_inference_threads


def run_demo(
    out: str | Path = "outputs/demo", overrides: list[str] | None = None, log=print
) -> dict[str, Any]:
    out = Path(out)
    exp = config.load("demo", overrides)
    log(f"training {exp.name} ({exp.algorithm}) — outputs in {out}/")
    summary = training.train(exp, output=out / "runs", models=out / "models", resume=True, log=log)
    trained = summary["models"]["final"]
    # the species that learned (a fixed module, e.g. training.fixed_modules, is not exported)
    learned = summary.get("trained_species", ["predator", "prey"])
    pred = trained if "predator" in learned else "random"
    prey = trained if "prey" in learned else "random"
    env_cfg = exp.env_config
    ev = exp.evaluation
    use_inference_threads()  # training had every core; evaluation is small-MLP inference
    log(f"evaluating {trained} against random opponents ({ev.episodes} episodes each)")
    matchups = list(
        dict.fromkeys([("random", "random"), (pred, "random"), ("random", prey), (pred, prey)])
    )
    results = [evaluation.evaluate(p, q, env_cfg, ev.episodes, seed=ev.seed) for p, q in matchups]
    files = evaluation.write_report(results, out)
    gif = evaluation.record_episode(
        load_policy(pred, "predator"),
        load_policy(prey, "prey"),
        env_cfg,
        out / "episode.gif",
        seed=ev.seed,
    )
    table = "\n".join(evaluation.markdown_table(r) for r in results)
    log(table)
    log(f"learning curves: {summary['learning_curves']}")
    log(f"evaluation: {files['md']} (+ .json, .png)")
    log(f"episode: {gif['path']}")
    return {"training": summary, "evaluation": results, "files": files, "episode": gif}
