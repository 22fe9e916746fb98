"""Serving trained policies: the model registry, local ``ModelInference`` and the Serve app.

Names are imported on first use, so ``bioflux.serve.settings`` (read by the CLI) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelInference": "bioflux.serve.inference",
    "ModelLoadError": "bioflux.serve.inference",
    "ObservationError": "bioflux.serve.inference",
    "UnknownModelError": "bioflux.serve.registry",
    "ModelRegistry": "bioflux.serve.registry",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bioflux.serve' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
