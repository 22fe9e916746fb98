"""Registry names: built-ins are never shadowed by trained runs; errors list names once."""

from __future__ import annotations

import pytest

from bioflux.algorithms.lotka_volterra import make_module
from bioflux.artifacts import export_rl_modules, export_root
from bioflux.serve.registry import ModelRegistry, UnknownModelError


@pytest.fixture
def models(tmp_path):
    modules = {s: make_module(s, delta=3.0) for s in ("predator", "prey")}
    meta = {s: {"algorithm": "lotka_volterra", "run": "fit", "env": {}} for s in modules}
    export_rl_modules(export_root(tmp_path, "lotka_volterra", "fit") / "final", modules, meta)
    return tmp_path


def test_a_fitted_run_does_not_shadow_the_builtin(models):
    registry = ModelRegistry(models)
    assert registry.resolve("lotka_volterra/predator").builtin
    trained = registry.resolve("lotka_volterra/predator@fit")
    assert not trained.builtin and trained.run == "fit"
    assert "lotka_volterra/predator" not in registry.aliases


def test_unknown_names_list_each_available_name_once(models):
    with pytest.raises(UnknownModelError) as err:
        ModelRegistry(models).resolve("nope/predator")
    message = str(err.value)
    assert message.count("'lotka_volterra/predator'") == 1


def test_serve_config_is_valid_for_serve_and_autoscales_the_policy_server():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from bioflux.serve import settings
    from bioflux.serve.app import PolicyServer

    path = Path(__file__).resolve().parents[2] / "serve_config.yaml"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app,) = schema.applications
    (deployment,) = app.deployments
    assert deployment.name == PolicyServer.name
    scaling = deployment.autoscaling_config
    assert scaling["min_replicas"] >= 1 and scaling["max_replicas"] > scaling["min_replicas"]
    assert scaling["target_ongoing_requests"] == settings.MAX_BATCH_SIZE
    assert "num_replicas" not in app.args  # it would override the autoscaling
