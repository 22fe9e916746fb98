"""One experiment end to end on the Python API: load and override a config, train it, continue
it with a raised stop, and evaluate the exported models against random opponents.

    python examples/full_training.py                 # the demo config: ~2 min on 2 cores
    BIOFLUX_EXAMPLE_BUDGET=tiny python examples/full_training.py   # seconds (tests)

The CLI equivalent is ``bioflux train --config demo`` then ``bioflux evaluate``.
"""

import os

from bioflux import config, evaluation, training

TINY = os.environ.get("BIOFLUX_EXAMPLE_BUDGET") == "tiny"
OUT = "outputs/examples/full_training"

# A packaged config by name (or a YAML path), with overrides as `--set` would give them.
# Everything is validated here, before Ray starts: a typo in a key is an error naming it.
overrides = ["name=full_training", "resources.num_env_runners=0"]
if TINY:
    overrides += ["training.train_batch_size=400", "training.minibatch_size=200"]
exp = config.load("demo", [*overrides, "stop.iterations=1" if TINY else "stop.iterations=30"])
print(f"{exp.name}: {exp.algorithm} on a {exp.env_config.height}x{exp.env_config.width} world")

# Train to the stop criteria. Each iteration logs one line; checkpoints go to
# <output>/<name>/checkpoints, the final and best modules to <models>/<algorithm>/<name>/.
summary = training.train(exp, output=f"{OUT}/runs", models=f"{OUT}/models", resume=True)

# Continue the same run with a raised stop: only stop, resources, checkpoint and evaluation
# may change on a resume; it restores the newest checkpoint and goes on from there.
more = config.load("demo", [*overrides, f"stop.iterations={summary['iterations'] + 1}"])
summary = training.train(more, output=f"{OUT}/runs", models=f"{OUT}/models", resume=True)
print(f"trained {summary['iterations']} iterations, {summary['env_steps']} env steps")

# Evaluate the final modules against random opponents, each side in turn.
trained = summary["models"]["final"]
episodes = 8 if TINY else 100
results = [
    evaluation.evaluate(trained, "random", exp.env_config, episodes, seed=exp.evaluation.seed),
    evaluation.evaluate("random", trained, exp.env_config, episodes, seed=exp.evaluation.seed),
]
for result in results:
    print(evaluation.markdown_table(result))
files = evaluation.write_report(results, OUT)
print(f"learning curves: {summary['learning_curves']}\nreport: {files['md']}")
