"""Algorithm plug-ins: one package per algorithm, found by name here.

Each package (``ppo``, ``epsilon_greedy``, ``maddpg``, ``lotka_volterra``) hands out one
``PLUGIN`` (the contract: ``common``): its ``Params`` and either ``build_config`` (it trains
through RLlib) or ``train`` (it trains itself). ``shared`` holds what several algorithms sample
and replay with (the batched-core EnvRunner, the ring replay, the episode-metrics callback).

Training, evaluation and serving look algorithms up here and never branch on their names, and
nothing outside this package reaches past a package's ``__init__`` (``tests/test_structure.py``).

``MOVED`` keeps the flat module paths of before the one-package-per-algorithm layout
importable: RLlib checkpoints pickle class paths (RLModule, Learner, config, EnvRunner and
callback classes), and users import them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: algorithm name → package implementing it.
ALGORITHMS: dict[str, str] = {
    "ppo": "bioflux.algorithms.ppo",
    "epsilon_greedy": "bioflux.algorithms.epsilon_greedy",
    "lotka_volterra": "bioflux.algorithms.lotka_volterra",
    "maddpg": "bioflux.algorithms.maddpg",
}


def get_algorithm(name: str):
    """The algorithm's ``PLUGIN``: a ``common.RLlibPlugin`` or ``common.SelfTrainingPlugin``."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm={name!r} is unknown; allowed: {sorted(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name]).PLUGIN


#: Old module path → the modules that now hold its names (``bioflux.algorithms.ppo``,
#: ``epsilon_greedy`` and ``lotka_volterra`` are packages now; their ``__init__`` still exports
#: what the old module did).
MOVED: dict[str, tuple[str, ...]] = {
    "bioflux.algorithms.agent_row_ppo_config": ("bioflux.algorithms.ppo.algorithm",),
    "bioflux.algorithms.batched_env_runner": ("bioflux.algorithms.shared.batched_env_runner",),
    "bioflux.algorithms.bf16_learner": ("bioflux.algorithms.ppo.bf16_learner",),
    "bioflux.algorithms.callbacks": ("bioflux.algorithms.shared.callbacks",),
    "bioflux.algorithms.captured_sgd_step": ("bioflux.algorithms.ppo.captured_sgd_step",),
    "bioflux.algorithms.columnar_dqn": ("bioflux.algorithms.epsilon_greedy.algorithm",),
    "bioflux.algorithms.columnar_env_runner": ("bioflux.algorithms.ppo.env_runner",),
    "bioflux.algorithms.columnar_ppo": ("bioflux.algorithms.ppo.algorithm",),
    "bioflux.algorithms.gae": ("bioflux.algorithms.ppo.gae",),
    "bioflux.algorithms.lotka_volterra_fit": ("bioflux.algorithms.lotka_volterra.search",),
    "bioflux.algorithms.ppo_learner": (
        "bioflux.algorithms.ppo.learner",
        "bioflux.algorithms.ppo.loss",
    ),
    "bioflux.algorithms.ring_replay": ("bioflux.algorithms.shared.ring_replay",),
    "bioflux.algorithms.transition_env_runner": ("bioflux.algorithms.epsilon_greedy.env_runner",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path of ``MOVED`` as a module holding the names of its new modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # a plain module, filled by exec_module

    def exec_module(self, module: ModuleType) -> None:
        targets = MOVED[module.__name__]
        module.__doc__ = f"Moved: {module.__name__} now lives in {', '.join(targets)}."
        for target in targets:
            new = importlib.import_module(target)
            module.__dict__.update(
                (k, v)
                for k, v in vars(new).items()
                if not (k.startswith("__") and k.endswith("__"))
            )


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
