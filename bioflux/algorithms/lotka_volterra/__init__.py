"""The Lotka–Volterra coefficient search (a plug-in that trains itself: ``search.train``).

Run: ``bioflux train --config configs/lotka_volterra.yaml``. The policy it tunes is the
hand-written ``bioflux.policy_modules.lotka_volterra.LotkaVolterraModule``; see ``search``.

This package also answers to that module's old path, ``bioflux.algorithms.lotka_volterra``
(its names below): RLlib checkpoints written before the move pickle the module class by it.
"""

from __future__ import annotations

from bioflux.algorithms.common import SelfTrainingPlugin
from bioflux.algorithms.lotka_volterra.search import Params, train
from bioflux.policy_modules.lotka_volterra import (
    COEFFICIENTS,
    DEFAULTS,
    LotkaVolterraModule,
    direction_weights,
    make_module,
)

PLUGIN = SelfTrainingPlugin(Params=Params, train=train)

__all__ = [
    "COEFFICIENTS",
    "DEFAULTS",
    "PLUGIN",
    "LotkaVolterraModule",
    "Params",
    "direction_weights",
    "make_module",
    "train",
]
