"""Serving trained policies: the model registry, local ``ModelInference`` and the Serve app."""

from bioflux.serve.inference import (
    ModelInference,
    ModelLoadError,
    ObservationError,
    UnknownModelError,
)
from bioflux.serve.registry import ModelRegistry

__all__ = [
    "ModelInference",
    "ModelLoadError",
    "ModelRegistry",
    "ObservationError",
    "UnknownModelError",
]
