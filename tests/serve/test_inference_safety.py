"""Issue #18 without Serve: ``ModelInference`` and the registry under hostile input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioflux.serve.inference import (
    ModelInference,
    ModelLoadError,
    ObservationError,
    PolicyOutputError,
    validate_state,
)
from bioflux.serve.registry import ModelRegistry, escaping_path, valid_name
from tests.serve.conftest import export

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 3] = 1.0
OBS[0, 3, 2] = 1.0
EXTREME = np.full((5, 5, 4), 3e38, dtype=np.float32)
EXTREME[..., 0] = 0.0
EXTREME[..., 3] = 1.0


@pytest.fixture
def lv_models(tmp_path):
    from bioflux.algorithms.lotka_volterra import make_module

    models = tmp_path / "models"
    export(
        models,
        "lv",
        "fit",
        "final",
        {s: make_module(s) for s in ("predator", "prey")},
        {"algorithm": "lv", "env": {"obs_radius": 2}},
    )
    return models


def test_names_match_in_full():
    assert valid_name("random/prey") and valid_name("ppo/prey@run-1.a:best")
    for bad in ("random/prey\n", "random/prey@x\n", "random/prey@x:best\n", "random/prey\x00"):
        assert not valid_name(bad), bad
    assert not valid_name(None) and not valid_name(["random/prey"])


@pytest.mark.parametrize(
    "state, needle",
    [
        ({"height": float("inf"), "width": 5, "predators": [[0, 0]]}, "state.height"),
        ({"height": 1e30, "width": 5, "predators": [[0, 0]]}, "state.height"),
        ({"height": 14000, "width": 14000, "predators": [[0, 0]]}, "grid cells"),
        ({"height": 5, "width": 5, "predators": [[0, 0]], "walls": [[-1, -1]]}, "state.walls"),
        ({"height": 5, "width": 5, "predators": [[5, 0]]}, "state.predators[0][0]"),
        ({"height": 5, "width": 5, "predators": [[0, 0]], "energy": [float("nan")]}, "energy"),
        ({"height": 5, "width": 5, "predators": []}, "state.predators is empty"),
        ({"height": 5, "width": 5, "predators": [[0, 0]], "agent": 1.5}, "state.agent"),
        ({"height": 5, "width": 5, "predators": "0,0"}, "state.predators must be a list"),
        ([1, 2], "state must be an object"),
    ],
)
def test_states_are_checked_before_anything_is_allocated(state, needle):
    with pytest.raises(ObservationError) as err:
        validate_state(state, "predator")
    assert needle in str(err.value)


def test_a_numerical_failure_fails_only_its_own_item():
    inf = ModelInference("/nonexistent")
    items = [
        ("lotka_volterra/predator", OBS),
        ("lotka_volterra/predator", EXTREME),
        ("random/prey", EXTREME),  # the random policy copes; the explanation must too
        ("lotka_volterra/predator", OBS),
    ]
    out = inf.predict_many(items, return_exceptions=True)
    assert isinstance(out[1], PolicyOutputError) and "failed numerically" in str(out[1])
    assert out[0]["action_name"] == "up" and out[3] == out[0]
    assert out[2]["policy"] == "random/prey"
    with pytest.raises(PolicyOutputError):
        inf.predict_many(items)


def test_non_finite_probabilities_fail_only_their_row():
    class HalfBroken:
        name = "half"

        def probabilities(self, obs):
            p = np.full((len(obs), 5), 0.2)
            p[obs[:, 0, 0, 1] > 0] = np.nan
            return p

    inf = ModelInference("/nonexistent")
    inf.get("random/prey").policy = HalfBroken()
    bad = OBS.copy()
    bad[0, 0, 1] = 1.0
    out = inf.predict_many([("random/prey", OBS), ("random/prey", bad)], return_exceptions=True)
    assert out[0]["action"] == 0 and isinstance(out[1], PolicyOutputError)


def test_escaping_files_are_found(tmp_path):
    root = tmp_path / "models"
    folder = root / "a" / "r" / "final" / "prey"
    folder.mkdir(parents=True)
    (folder / "module_state.pkl").write_bytes(b"x")
    assert escaping_path(folder, root) is None
    (tmp_path / "secret.pkl").write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "class_and_ctor_args.pkl").symlink_to(tmp_path / "secret.pkl")
    assert "outside the models directory" in escaping_path(folder, root)
    (folder / "sub" / "class_and_ctor_args.pkl").unlink()
    (folder / "sub" / "loop").symlink_to(folder)  # a loop inside: each folder once
    assert escaping_path(folder, root) is None


def test_bad_metadata_marks_only_its_module(lv_models):
    clone = lv_models / "lv" / "other" / "final"
    for name, content in [
        ("predator", b"\xff\xfe\x00"),
        ("prey", b'"just a string"'),
    ]:
        (clone / name).mkdir(parents=True)
        (clone / name / "bioflux.json").write_bytes(content)
    reg = ModelRegistry(lv_models)
    assert "not readable JSON" in reg.entries["lv/predator@other:final"].error
    assert "JSON object" in reg.entries["lv/prey@other:final"].error
    assert reg.resolve("lv/predator").name == "lv/predator@fit:final"
    inf = ModelInference(lv_models, preload=True)
    listing = {m["name"]: m for m in inf.list_models()}
    assert listing["lv/predator@other:final"]["error"]
    assert listing["lv/predator@fit:final"]["loaded"]
    with pytest.raises(ModelLoadError):
        inf.load("lv/prey@other:final")
    assert inf.predict("lv", "prey", OBS)["policy"] == "lv/prey@fit:final"


def test_a_failed_hot_swap_keeps_the_old_version_and_the_alias(lv_models):
    inf = ModelInference(lv_models, preload=True)
    state = lv_models / "lv" / "fit" / "final" / "prey" / "module_state.pkl"
    good = state.read_bytes()
    before = inf.get("lv/prey").loaded_at
    state.write_bytes(b"\x80corrupt")
    with pytest.raises(ModelLoadError, match="keeps serving"):
        inf.load("lv/prey")
    assert inf.get("lv/prey").loaded_at == before
    assert inf.resolve("lv/prey").name == "lv/prey@fit:final"
    listing = {m["name"]: m for m in inf.list_models()}
    assert (
        listing["lv/prey@fit:final"]["reload_error"] and not listing["lv/prey@fit:final"]["error"]
    )
    state.write_bytes(good)
    assert inf.load("lv/prey").loaded_at > before
    assert not {m["name"]: m for m in inf.list_models()}["lv/prey@fit:final"]["reload_error"]


def test_unload_reports_the_module_an_alias_served(lv_models):
    corrupt = lv_models / "lv" / "new" / "final" / "prey"
    corrupt.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(lv_models / "lv" / "fit" / "final" / "prey", corrupt)
    (corrupt / "module_state.pkl").write_bytes(b"\x80corrupt")
    (corrupt / "bioflux.json").write_text(json.dumps({"env": {"obs_radius": 2}}))  # newest
    inf = ModelInference(lv_models, preload=True)
    assert inf.registry.aliases["lv/prey"] == "lv/prey@new:final"  # the healthy choice...
    assert inf.unload("lv/prey") == ("lv/prey@fit:final", True)  # ...failed: fit served


def test_a_repaired_checkpoint_serves_again_without_a_reload(tmp_path):
    import shutil
    import time

    from bioflux.algorithms.lotka_volterra import make_module
    from bioflux.artifacts import export_rl_modules, export_root
    from bioflux.serve.inference import ModelInference, ModelLoadError

    target = export_root(tmp_path, "lv", "fit") / "final"
    modules = {s: make_module(s) for s in ("predator", "prey")}
    export_rl_modules(target, modules, {s: {"algorithm": "lv", "env": {}} for s in modules})
    good = (target / "predator" / "module_state.pkl").read_bytes()
    (target / "predator" / "module_state.pkl").write_bytes(b"broken")
    inference = ModelInference(tmp_path)
    with pytest.raises(ModelLoadError):
        inference.get("lv/predator@fit:final")
    with pytest.raises(ModelLoadError):  # still failed: nothing changed
        inference.get("lv/predator@fit:final")
    time.sleep(0.01)
    (target / "predator" / "module_state.pkl").write_bytes(good)  # an operator repairs it
    assert inference.get("lv/predator@fit:final").entry.name == "lv/predator@fit:final"
    shutil.rmtree(tmp_path / "lv")
