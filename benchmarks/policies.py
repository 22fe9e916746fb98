"""Compare the four approaches on the demo world: the evaluation table as JSON and Markdown.

Run: ``python benchmarks/policies.py [--ppo models/ppo/ppo_demo] [--out DIR]``.

Trains (or reuses, with ``--ppo``/``--eg``/``--lv``) PPO, epsilon-greedy (DQN) and a fitted
Lotka–Volterra predator on ``configs/demo.yaml``'s world, then evaluates every predator policy
against random and PPO prey, and every prey policy against random and PPO predators, with
``bioflux.evaluation`` on the same seeds. Prints one JSON object (plus the Markdown tables).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bioflux import config, evaluation, training

#: The evaluation metrics each row of the table reports.
REPORTED = (
    "return_mean",
    "return_std_episodes",
    "return_std_agents",
    "capture_rate",
    "success_rate",
)


def trained(name: str, given: str | None, out: Path, overrides: list[str]) -> str:
    if given:
        return given
    exp = config.load(name, overrides)
    summary = training.train(
        exp, output=out / "runs", models=out / "models", log=lambda line: print(line, flush=True)
    )
    return summary["models"]["final"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo")
    parser.add_argument("--eg")
    parser.add_argument("--lv")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bioflux-policies-"))
    env = config.load("demo").env_config
    models = {
        "ppo": trained("demo", args.ppo, out, []),
        "epsilon_greedy": trained("epsilon_greedy", args.eg, out, []),
        "lotka_volterra_fitted": trained("lotka_volterra", args.lv, out, []),
        "lotka_volterra_default": "lotka_volterra",
        "random": "random",
    }
    rows = []
    for opponent in ("random", "ppo"):
        for name, model in models.items():
            r = evaluation.evaluate(model, models[opponent], env, args.episodes, seed=7)
            rows.append(
                {
                    "predator": name,
                    "prey": opponent,
                    **{k: r["metrics"]["predator"][k] for k in REPORTED},
                }
            )
            r = evaluation.evaluate(models[opponent], model, env, args.episodes, seed=7)
            rows.append(
                {
                    "predator": opponent,
                    "prey": name,
                    **{k: r["metrics"]["prey"][k] for k in REPORTED},
                }
            )
    lines = [
        "| predator | prey | return per agent of the tested side: mean ± std over episodes "
        "(std over agents) | capture rate | success rate |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['predator']} | {r['prey']} | {r['return_mean']:.3f} ± "
            f"{r['return_std_episodes']:.3f} ({r['return_std_agents']:.3f}) "
            f"| {r['capture_rate']:.3f} | {r['success_rate']:.3f} |"
        )
    (out / "policies.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(
        json.dumps(
            {
                "models": models,
                "episodes": args.episodes,
                "rows": rows,
                "markdown": str(out / "policies.md"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
