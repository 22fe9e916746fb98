"""Ensembles (``bioflux.ensembles``): averaging, voting, windows; served from ensembles.yaml."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from bioflux.ensembles import EnsembleError, EnsemblePolicy, parse_ensemble, read_ensembles
from bioflux.envs.config import ACTION_NAMES
from bioflux.policies import choose_actions
from bioflux.serve.inference import ModelInference, ModelLoadError
from tests.serve.conftest import export, tiny_ppo_modules


class Fixed:
    """The same probabilities for every observation."""

    def __init__(self, probs, name="fixed"):
        self.p = np.asarray(probs, dtype=np.float64)
        self.name = name

    def probabilities(self, obs):
        return np.tile(self.p, (len(obs), 1))


OBS = np.zeros((3, 5, 5, 4), dtype=np.float32)
STAY = [1.0, 0, 0, 0, 0]
UP_OR_DOWN = [0, 0.5, 0.5, 0, 0]
UP = [0.1, 0.6, 0.1, 0.1, 0.1]
LEFT = [0.1, 0.1, 0.1, 0.6, 0.1]


def test_weighted_averaging_of_two_known_policies():
    ens = EnsemblePolicy("e", [("a", Fixed(STAY), 3.0), ("b", Fixed(UP_OR_DOWN), 1.0)])
    probs = ens.probabilities(OBS)
    np.testing.assert_allclose(probs, np.tile([0.75, 0.125, 0.125, 0, 0], (3, 1)))
    agreement, notes = ens.details(OBS, np.zeros(3, dtype=int))
    np.testing.assert_allclose(agreement, 0.75)  # only 'a' (weight 3 of 4) prefers stay
    assert notes[0].startswith("average of 2 members, agreement 0.75; votes: a stay (p=1.00")


@pytest.mark.parametrize("order", [1, -1])
def test_vote_ties_go_to_the_first_action_whatever_the_member_order(order):
    members = [("u", Fixed(UP), 1.0), ("l", Fixed(LEFT), 1.0)][::order]
    ens = EnsemblePolicy("e", members, combine="vote")
    probs = ens.probabilities(OBS)
    np.testing.assert_allclose(probs[0], [0, 0.5, 0, 0.5, 0])
    actions = choose_actions(ens, probs, np.random.default_rng(0))  # vote: deterministic
    assert (actions == ACTION_NAMES.index("up")).all()
    # a heavier member wins the vote
    heavy = EnsemblePolicy("e", [("u", Fixed(UP), 1.0), ("l", Fixed(LEFT), 2.0)], "vote")
    assert (choose_actions(heavy, heavy.probabilities(OBS), None) == 3).all()


def test_members_with_different_windows_are_refused():
    with pytest.raises(EnsembleError, match=r"windows differ \(a 11x11, b 5x5\)"):
        EnsemblePolicy("e", [("a", Fixed(STAY), 1), ("b", Fixed(UP), 1)], windows=[11, 5])
    EnsemblePolicy("e", [("a", Fixed(STAY), 1), ("b", Fixed(UP), 1)], windows=[5, None])


@pytest.mark.parametrize(
    "value, message",
    [
        ({"members": ["ppo"]}, "at least 2"),
        ({"members": {"ppo": 1, "random": 0}}, "weight 0 must be > 0"),
        ({"members": {"ppo/prey": 1, "random": 1}}, "without the species"),
        ({"combine": "median", "members": ["ppo", "random"]}, "allowed: \\['average', 'vote'\\]"),
        ({"members": ["e", "random"]}, "its own member"),
        ({"members": ["ppo", "random"], "colour": 1}, "unknown key"),
    ],
)
def test_bad_definitions_name_the_problem(value, message):
    with pytest.raises(EnsembleError, match=message):
        parse_ensemble("e", value)


@pytest.fixture(scope="module")
def ensemble_models(tmp_path_factory):
    """The tiny PPO modules (a 5x5 window) as run 'tiny', the same modules whose metadata says
    an 11x11 window as run 'wide', and an ensembles.yaml."""
    models = tmp_path_factory.mktemp("ensembles") / "models"
    modules, meta = tiny_ppo_modules()
    export(models, "ppo", "tiny", "final", modules, meta)
    wide = copy.deepcopy(meta)
    wide["env"]["obs_radius"] = 5
    export(models, "lv", "wide", "final", modules, wide)
    (models / "ensembles.yaml").write_text(
        "ensembles:\n"
        "  mix: {combine: average, members: {ppo@tiny: 3, random: 1}}\n"
        "  crowd: {combine: vote, members: [ppo@tiny, random, lotka_volterra]}\n"
        "  clash: {members: [ppo@tiny, lv@wide]}\n"
        "  typo: {members: [ppo@tiny]}\n"
    )
    return models


def test_ensembles_yaml_is_served(ensemble_models):
    inf = ModelInference(ensemble_models)
    specs, problem = read_ensembles(ensemble_models)
    assert problem is None and set(specs) == {"mix", "crowd", "clash", "typo"}
    listed = {m["name"]: m for m in inf.list_models()}
    assert listed["mix/predator"]["observation_window"] == 5
    assert listed["mix/prey"]["error"] is None and not listed["mix/prey"]["builtin"]
    obs = np.zeros((5, 5, 4), dtype=np.float32)
    obs[2, 2, 1] = obs[2, 2, 3] = 1  # the predator itself
    got = inf.predict("mix", "predator", obs)
    ppo = inf.predict("ppo", "predator", obs)
    expected = {a: 0.75 * p + 0.25 * 0.2 for a, p in ppo["probabilities"].items()}
    assert got["probabilities"] == pytest.approx(expected)
    assert "votes: ppo/predator@tiny:final" in got["reasoning"]
    assert 0 < got["confidence"] <= 1
    vote = inf.predict("crowd", "prey", obs)
    assert sum(vote["probabilities"].values()) == pytest.approx(1)
    assert vote["confidence"] == pytest.approx(vote["probabilities"][vote["action_name"]])


def test_an_ensemble_with_mismatched_windows_is_refused_alone(ensemble_models):
    inf = ModelInference(ensemble_models)
    listed = {m["name"]: m for m in inf.list_models()}
    assert "windows differ" in listed["clash/predator"]["error"]
    assert "5x5" in listed["clash/predator"]["error"]
    assert "11x11" in listed["clash/predator"]["error"]
    assert "at least 2" in listed["typo/prey"]["error"]
    with pytest.raises(ModelLoadError, match="windows differ"):
        inf.get("clash/predator")
    assert listed["mix/predator"]["error"] is None  # the others still serve


def test_an_ensemble_evaluates_through_bioflux_evaluate(tmp_path):
    import json

    from bioflux import cli

    (tmp_path / "ensembles.yaml").write_text(
        "ensembles:\n  mix:\n    combine: average\n    members: {random: 1, lotka_volterra: 3}\n"
    )
    out = tmp_path / "eval"

    def evaluate(predator: str) -> int:
        args = ["evaluate", "--predator", predator, "--prey", "random", "--models", str(tmp_path)]
        return cli.main([*args, "--episodes", "4", "--out", str(out)])

    assert evaluate("mix") == 0
    result = json.loads((out / "evaluation.json").read_text())[0]
    assert result["predator_policy"] == "mix/predator" and result["episodes"] == 4
    assert 0.0 <= result["metrics"]["predator"]["capture_rate"] <= 1.0
    assert evaluate("nope") == 2


def test_an_ensemble_simulates_through_bioflux_simulate(tmp_path):
    import json

    from bioflux import cli

    (tmp_path / "ensembles.yaml").write_text(
        "ensembles:\n  mix:\n    combine: vote\n    members: [random, lotka_volterra]\n"
    )
    out = tmp_path / "sim"
    args = ["simulate", "--predator", "mix", "--prey", "mix", "--models", str(tmp_path)]
    assert cli.main([*args, "--steps", "20", "--seeds", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "mix/predator" in json.dumps(summary)
