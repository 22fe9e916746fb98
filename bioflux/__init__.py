"""BioFlux: multi-agent reinforcement learning for predator–prey ecosystems, on Ray."""

__version__ = "0.1.0"
