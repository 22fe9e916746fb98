"""Algorithm plug-ins. Each module exposes the same small surface:

- ``Params``: a pydantic model of its hyper-parameters (the ``training`` config section), each
  documented once, in its ``Field`` description;
- ``build_config(experiment) -> AlgorithmConfig``: the RLlib config for a validated experiment.

Training, evaluation and serving look algorithms up here and never branch on their names.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: algorithm name → module implementing it.
ALGORITHMS: dict[str, str] = {
    "ppo": "bioflux.algorithms.ppo",
    "epsilon_greedy": "bioflux.algorithms.epsilon_greedy",
    "lotka_volterra": "bioflux.algorithms.lotka_volterra_fit",
    "maddpg": "bioflux.algorithms.maddpg",
}


def get_algorithm(name: str) -> ModuleType:
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm={name!r} is unknown; allowed: {sorted(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name])
