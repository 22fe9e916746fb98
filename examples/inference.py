"""Predictions from trained models in your own process, without Ray: ``ModelInference``
answers what the server's ``/v1/predict`` and ``/v1/predict/batch`` answer.

    python examples/inference.py [MODELS_DIR]    # default: outputs/demo/models (bioflux demo)

Without trained models (no MODELS_DIR folder), it uses the built-in Lotka–Volterra policies,
which every models folder serves.
"""

import sys
from pathlib import Path

from bioflux.envs import predator_prey_v0
from bioflux.serve import UnknownModelError
from bioflux.training import ModelInference

models = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo/models")
models.mkdir(parents=True, exist_ok=True)  # an empty folder still serves the built-ins
inference = ModelInference(models)

# Policies are named <algorithm>/<species>[@run]: the newest run's final module by default.
try:
    entry = inference.resolve("ppo/predator")
    algorithm = "ppo"
except UnknownModelError:  # no trained PPO here: the built-in rule
    entry, algorithm = inference.resolve("lotka_volterra/predator"), "lotka_volterra"
print(f"{models}: using {algorithm} ({len(inference.list_models())} policies served)")

# A model plays in the world it was trained in; its metadata records that world.
env_kwargs = entry.metadata.get("env", {})
env = predator_prey_v0.parallel_env(**env_kwargs)
observations, infos = env.reset(seed=0)

# predict: one agent's observation, an (S, S, 4) array (S = 2 * obs_radius + 1).
answer = inference.predict(algorithm, "predator", observations["predator_0"])
print(
    f"predator_0: {answer['action_name']} (confidence {answer['confidence']:.2f}): "
    f"{answer['reasoning']}"
)

# batch_predict: many agents, possibly of different policies, answered in order; agents of
# one policy share one forward pass.
requests = [
    {
        "policy": f"{algorithm}/predator" if agent.startswith("predator") else f"{algorithm}/prey",
        "observation": obs,
    }
    for agent, obs in observations.items()
]
answers = inference.batch_predict(requests)
for agent, a in zip(observations, answers):
    print(f"{agent:>10}: {a['action_name']:<5} p={max(a['probabilities'].values()):.2f}")
env.close()
