"""Shared fixtures: one real Ray session for the tests that need it, tiny experiment configs."""

from __future__ import annotations

import copy
import tempfile

import pytest

#: A training config small enough for a test: seconds per iteration, sampling in the driver.
TINY = {
    "name": "tiny",
    "algorithm": "ppo",
    "seed": 0,
    "env": {
        "height": 10,
        "width": 10,
        "n_predators": 2,
        "n_prey": 4,
        "max_steps": 20,
        "obs_radius": 2,
        "wall_density": 0.0,
    },
    "training": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1, "hidden": [32]},
    "resources": {"num_env_runners": 0, "num_envs_per_env_runner": 2},
    "stop": {"iterations": 2},
    "checkpoint": {"frequency": 1, "keep": 2},
    "evaluation": {"episodes": 8, "seed": 5},
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, shut down at the end."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="bioflux-ray-"),
    )
    yield ray
    ray.shutdown()
