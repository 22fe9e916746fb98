"""Live sessions (``bioflux.serve.live``) without a browser: frames, controls, limits, inspect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioflux.envs.config import ACTION_NAMES
from bioflux.serve import settings
from bioflux.serve.inference import ModelInference
from bioflux.serve.live import LiveError, LiveSessions


@pytest.fixture
def live(tmp_path):
    return LiveSessions(ModelInference(tmp_path), max_sessions=2, idle_timeout_s=60)


def test_a_session_streams_compact_frames(live):
    s = live.create({"world": "demo", "predator": "random/predator", "seed": "3", "speed": "20"})
    reset = s.reset_frame()
    assert (reset["height"], reset["width"], reset["world"]) == (24, 24, "demo")
    assert reset["policies"] == {"predator": "random/predator", "prey": "random/prey"}
    assert all(0 <= i < 24 * 24 for i in reset["walls"])
    first = reset["frame"]
    assert first["step"] == 0 and first["populations"] == {"predator": 2, "prey": 10}
    assert len(first["predators"]) == 2 * 2 and len(first["prey"]) == 2 * 10
    frames = [s.step() for _ in range(5)]
    assert [f["step"] for f in frames] == [1, 2, 3, 4, 5]
    for f in frames:
        assert len(f["prey"]) == 2 * f["populations"]["prey"] == 2 * len(f["prey_slots"])
        assert all(isinstance(v, int) for v in f["predators"] + f["prey"])
        json.dumps(f)  # plain JSON
    # the same seed replays the same episode
    again = s.reset(seed=3)
    assert again["frame"] == first
    assert [s.step() for _ in range(5)] == frames


def test_ecology_world_reports_births(live):
    s = live.create({"world": "ecology", "seed": 1})
    f = s.step()
    assert s.reset_frame()["ecology"] is True
    assert f["births"] > 0  # 4500 prey at a 3% birth rate


def test_inspect_matches_predict(live):
    s = live.create({"world": "demo", "predator": "lotka_volterra/predator", "seed": 2})
    s.step()
    slot = s.step()["predator_slots"][0]
    got = live.inspect(s.id, slot)
    assert got["species"] == "predator" and got["slot"] == slot
    assert set(got["probabilities"]) == set(ACTION_NAMES)
    assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert got["confidence"] == pytest.approx(max(got["probabilities"].values()))
    assert got["reasoning"].startswith("chose ")
    obs = s.world.observe(np.array([0]), np.array([slot]))[0]
    same = s.inference.predict_many([("lotka_volterra/predator", obs)])[0]
    assert {k: got[k] for k in same} == same
    with pytest.raises(LiveError, match="not alive|out of range"):
        live.inspect(s.id, s.world.n_agents + 5)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"world": "mars"}, "world 'mars' is unknown"),
        ({"predator": "random/prey"}, "is a prey policy"),
        ({"prey": "nope/prey"}, "unknown policy"),
        ({"prey": "../../etc"}, "invalid policy name"),
        ({"seed": "-1"}, r"seed=-1 is out of range"),
        ({"seed": "1.5"}, "seed must be an integer"),
        ({"speed": "0"}, "speed='0' is out of range"),
        ({"speed": "nan"}, "out of range"),
        ({"height": "1000", "width": "1000"}, "LIVE_MAX_CELLS"),
        ({"n_prey": "many"}, "n_prey must be an integer"),
        ({"world": "demo", "n_prey": "600"}, "free cells"),
        ({"colour": "red"}, "unknown parameter"),
    ],
)
def test_bad_parameters_get_a_clear_error(live, params, message):
    with pytest.raises(LiveError, match=message):
        live.create(params)
    assert not live.sessions


def test_sessions_are_capped_and_close_when_idle(live):
    a = live.create({"world": "demo"})
    live.create({"world": "demo"})
    with pytest.raises(LiveError, match="LIVE_MAX_SESSIONS"):
        live.create({"world": "demo"})
    assert live.sweep(now=a.touched + 61) != []
    assert not live.sessions and a.closed
    with pytest.raises(LiveError, match="unknown or was closed"):
        live.inspect(a.id, 0)
    live.create({"world": "demo"})  # room again


def test_a_trained_policy_with_another_window_is_refused(models_dir):
    live = LiveSessions(ModelInference(models_dir))
    with pytest.raises(LiveError, match=r"5x5 window but this world gives 9x9"):
        live.create({"world": "demo", "predator": "ppo/predator"})
    options = live.options()
    assert "ppo/predator" in options["policies"]["predator"]
    assert "random/prey" in options["policies"]["prey"]
    assert options["worlds"] == list(settings.LIVE_WORLDS)
    assert options["windows"]["ppo/predator"] == 5 and options["windows"]["random/prey"] is None
    assert options["world_windows"] == {"demo": 9, "ppo": 11, "ecology": 5}
    # ... so the page moves to the ecology world (5x5), where the model plays
    s = live.create({"world": "ecology", "predator": "ppo/predator", "prey": "random/prey"})
    assert s.policy_names["predator"] == "ppo/predator@tiny:final"
    assert s.step()["step"] == 1


def test_the_serve_app_and_the_cli_carry_the_live_view():
    from bioflux.cli import build_parser
    from bioflux.serve.app import api

    paths = {getattr(r, "path", None) for r in api.routes}
    assert {"/", "/v1/live/options", "/v1/live/ws"} <= paths
    args = build_parser().parse_args(["view", "--models", "m"])
    assert (args.host, args.port) == (settings.HOST, settings.VIEW_PORT)


def test_the_page_opens_on_random_policies_without_trained_models(live):
    opts = live.options()
    assert opts["default_world"] == settings.LIVE_DEFAULT_WORLD
    assert opts["default_policies"] == {"predator": "random/predator", "prey": "random/prey"}


def test_the_page_opens_on_a_served_trained_model_in_a_world_it_fits(models_dir):
    sessions = LiveSessions(ModelInference(models_dir), max_sessions=2, idle_timeout_s=60)
    opts = sessions.options()
    assert opts["default_policies"] == {"predator": "ppo/predator", "prey": "ppo/prey"}
    assert opts["lineage"]["ppo/predator"].startswith("from run source (ppo, 10 tensors), then")
    assert opts["lineage"]["ppo/prey@tiny:best"].startswith("from scratch, then a 2-stage")
    assert "random/predator" not in opts["lineage"]
    window = opts["windows"]["ppo/predator"]
    assert opts["world_windows"][opts["default_world"]] == window
    session = sessions.create(  # what the page asks for on load
        {"world": opts["default_world"], **opts["default_policies"], "seed": "0"}
    )
    played = session.reset_frame()["policies"]  # the full names the aliases resolve to
    assert played["predator"].startswith("ppo/predator@") and played["prey"].startswith("ppo/prey@")
