"""Bad command-line input ends with one ``bioflux: error: ...`` line and exit status 2, and
``--help`` documents every option with its default. Each case runs the CLI as a subprocess and
stops before any training, simulation or analysis starts."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources

import pytest

LYNX_HARE = str(resources.files("bioflux.data").joinpath("hudson_bay_lynx_hare.csv"))


def bioflux(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "bioflux", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_error_line(out: subprocess.CompletedProcess, *names: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, out.stderr
    line = errors[0]
    assert line.startswith("bioflux: error: "), line
    for name in names:
        assert name in line, (name, line)
    return line


@pytest.mark.parametrize("episodes", ["0", "-5"])
def test_evaluate_rejects_episodes_below_one(episodes, tmp_path):
    out = bioflux(
        "evaluate", "--predator", "random", "--prey", "random", "--episodes", episodes,
        "--out", str(tmp_path / "ev"),
    )  # fmt: skip
    assert_one_error_line(out, f"--episodes {episodes}", ">= 1")
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("option", ["--steps", "--seeds"])
def test_simulate_rejects_steps_or_seeds_below_one(option, tmp_path):
    out = bioflux("simulate", option, "0", "--out", str(tmp_path / "sim"))
    assert_one_error_line(out, f"{option} 0", ">= 1")
    assert not (tmp_path / "sim").exists()


def test_train_rejects_negative_env_runners():
    out = bioflux("train", "--config", "demo", "--num-env-runners", "-1")
    assert_one_error_line(out, "--num-env-runners -1", ">= 0")


def test_analyze_checks_the_reference_before_any_work(tmp_path):
    out = bioflux(
        "ecology", "analyze", LYNX_HARE, "--reference", "nope", "--out", str(tmp_path / "an")
    )
    assert_one_error_line(out, "--reference nope", "lynx_hare", "CSV")
    assert not (tmp_path / "an").exists()  # nothing analysed or written


@pytest.mark.parametrize(
    "env, args, source",
    [
        ({"RAY_ADDRESS": "127.0.0.1:1"}, [], "$RAY_ADDRESS"),
        ({}, ["--address", "127.0.0.1:1"], "--address"),
    ],
)
def test_train_unreachable_ray_address_fails_fast(env, args, source, tmp_path):
    out = bioflux(
        "train", "--config", "demo", "--set", "stop.iterations=1",
        "--output", str(tmp_path / "runs"), "--models", str(tmp_path / "models"), *args,
        env=env, timeout=60,
    )  # fmt: skip
    assert_one_error_line(out, "127.0.0.1:1", source, "Ray")
    assert not (tmp_path / "runs").exists()


def _flat(text: str) -> str:
    return " ".join(text.split())  # argparse wraps help lines


def test_top_level_help():
    out = bioflux("--help")
    assert out.returncode == 0, out.stderr
    text = _flat(out.stdout)
    assert "``" not in text and "predator and prey" in text
    for command in ("train", "evaluate", "demo", "serve", "render", "simulate", "ecology"):
        assert command in text


@pytest.mark.parametrize(
    "command, expected",
    [
        (
            ["train"],
            ["(default: runs)", "(default: models)", "resources.num_env_runners", "$RAY_ADDRESS"],
        ),
        (
            ["evaluate"],
            [
                "evaluation.episodes",
                "evaluation.seed",
                "(default: outputs/evaluation)",
                "(default: the env a trained --predator/--prey model was trained in",
                "other sections of demo; with built-in policies only: demo)",
                "--set env.n_prey=50",
                "random, lotka_volterra",
            ],
        ),
        (["demo"], ["(default: outputs/demo)", "--set stop.iterations=5"]),
        (
            ["serve"],
            ["(default: models)", "(default: 8000)", "(default: 127.0.0.1)", "(default: 1)"],
        ),
        (
            ["render"],
            [
                "(default: random)",
                "(default: outputs/episode.gif)",
                "(default: 0)",
                "(default: the env a trained --predator/--prey model was trained in",
                "--set env.n_prey=50",
                "random, lotka_volterra",
            ],
        ),
        (
            ["simulate"],
            [
                "(default: lotka_volterra)",
                "env.max_steps",
                "(default: outputs/simulate)",
                "in ecology mode, with the other sections of ecology",
                "--set env.n_prey=50",
                "random, lotka_volterra",
            ],
        ),
        (["ecology"], ["analyze"]),
        (["ecology", "analyze"], ["lynx_hare", "next to the series"]),
    ],
)
def test_command_help_shows_defaults(command, expected):
    out = bioflux(*command, "--help")
    assert out.returncode == 0, out.stderr
    text = _flat(out.stdout)
    assert "training.lr" not in text or command == ["train"]
    for snippet in expected:
        assert snippet in text, (snippet, text)


def test_builtin_policy_names_in_help_match_the_library():
    from bioflux.cli import BUILTIN_POLICIES
    from bioflux.policies import BUILTINS

    assert sorted(BUILTIN_POLICIES) == sorted(BUILTINS)


def test_every_option_has_help():
    import argparse

    from bioflux.cli import build_parser

    def parsers(p: argparse.ArgumentParser):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [
        (p.prog, a.dest)
        for p in parsers(build_parser())
        for a in p._actions
        if not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert missing == []


@pytest.mark.parametrize("initialized", [False, True])
def test_ray_connection_error_becomes_one_line_only_before_ray_is_up(initialized, monkeypatch):
    import types

    from bioflux import cli

    fake_ray = types.SimpleNamespace(is_initialized=lambda: initialized)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    err = cli._ray_connection_error(ConnectionError("Could not find any running Ray\nmore"), None)
    if initialized:
        assert err is None  # a failure during the run keeps its traceback
    else:
        assert str(err) == (
            "cannot connect to the Ray cluster at auto ($RAY_ADDRESS): "
            "Could not find any running Ray"
        )


# ---------------------------------------------------------------------------- resume (#17)
def folder_hashes(root) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def _fake_run(tmp_path, tiny: dict):
    """A run folder as training leaves it (config.yaml, metrics, a checkpoint folder), without
    training: a refused resume stops before Ray starts or the checkpoint is read."""
    import json

    import yaml

    from bioflux import config

    run = tmp_path / "runs" / tiny["name"]
    (run / "checkpoints" / "iter_000002").mkdir(parents=True)
    (run / "checkpoints" / "iter_000002" / "algorithm_state.pkl").write_bytes(b"state")
    (run / "config.yaml").write_text(yaml.safe_dump(config.validate(tiny).to_dict()))
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 2}) + "\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny))
    return run, cfg


@pytest.mark.parametrize(
    "override, key",
    [("training.lr=1e-3", "training.lr"), ("env.n_prey=5", "env.n_prey")],
)
def test_resume_with_another_config_exits_2_and_leaves_the_run_untouched(
    override, key, tmp_path, tiny_config
):
    run, cfg = _fake_run(tmp_path, tiny_config)
    before = folder_hashes(tmp_path)
    out = bioflux(
        "train", "--config", str(cfg), "--output", str(tmp_path / "runs"),
        "--models", str(tmp_path / "models"), "--resume", "--set", override,
        "--set", "stop.iterations=3",
    )  # fmt: skip
    line = assert_one_error_line(out, "cannot resume", key, "config.yaml")
    assert "stop" not in line.split("differs")[1].split("(")[0]  # stop may change
    assert folder_hashes(tmp_path) == before
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------------------- model worlds (#17)
def _fake_model(folder, obs_radius: int, species=("predator", "prey")):
    """An export's folders with a bioflux.json recording the env (no loadable weights: these
    cases fail before any module is loaded)."""
    import json

    for s in species:
        d = folder / "final" / s
        d.mkdir(parents=True)
        (d / "module_state.pkl").write_bytes(b"")
        (d / "class_and_ctor_args.pkl").write_bytes(b"")
        env = {"height": 12, "width": 12, "n_predators": 2, "n_prey": 4, "obs_radius": obs_radius}
        (d / "bioflux.json").write_text(json.dumps({"env": env, "species": s}))
    return str(folder)


@pytest.mark.parametrize("command", ["evaluate", "render", "simulate"])
def test_models_trained_on_different_windows_exit_2_naming_both(command, tmp_path):
    pred = _fake_model(tmp_path / "a", obs_radius=5)
    prey = _fake_model(tmp_path / "b", obs_radius=2)
    out = bioflux(
        command, "--predator", pred, "--prey", prey, "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert_one_error_line(
        out, pred, prey, "11x11 window (obs_radius 5)", "5x5 window (obs_radius 2)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, world",
    [
        (["--config", "demo"], "9x9 (obs_radius 4, from --config demo)"),
        (["--set", "env.obs_radius=3"], "7x7 (obs_radius 3, from --set env.obs_radius=3)"),
    ],
)
def test_a_world_that_does_not_fit_the_model_exits_2(args, world, tmp_path):
    model = _fake_model(tmp_path / "m", obs_radius=5)
    out = bioflux(
        "evaluate", "--predator", model, "--prey", "random", "--out", str(tmp_path / "ev"), *args
    )
    assert_one_error_line(out, model, "trained with an 11x11 window (obs_radius 5)", world)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("command", ["view", "serve"])
def test_a_busy_port_fails_with_one_line_before_claiming_to_serve(
    command, tmp_path, capsys, monkeypatch
):
    import socket

    from bioflux.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # serve: a local Ray, the port on this host

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main([command, "--models", str(tmp_path), "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""  # no "live view ... on http://..." / "serving ..." line
    assert err.strip().splitlines() == [
        f"bioflux: error: cannot listen on 127.0.0.1:{port}: Address already in use; another "
        "program uses the port: choose another with --port"
    ]


def test_a_run_still_training_suggests_its_best_checkpoint(tmp_path):
    from bioflux.artifacts import MODULES_SUBDIR

    run = tmp_path / "runs" / "ppo_demo"
    for checkpoint in ("best", "iter_000010"):  # no checkpoints/final yet
        module = run / "checkpoints" / checkpoint / MODULES_SUBDIR / "predator"
        module.mkdir(parents=True)
        (module / "module_state.pkl").write_bytes(b"")
        (module / "class_and_ctor_args.pkl").write_bytes(b"")
    out = bioflux("evaluate", "--predator", str(run), "--prey", "random", "--episodes", "1")
    line = assert_one_error_line(out, f"no predator module found under {run}")
    assert line.endswith(
        f"the run has no final checkpoint yet: try {run / 'checkpoints' / 'best'} "
        "(the best checkpoint so far)"
    ), line


def test_a_served_name_without_models_suggests_models(tmp_path):
    out = bioflux("evaluate", "--predator", "mix", "--prey", "random", "--episodes", "1")
    assert_one_error_line(
        out, "'mix' is neither a built-in", "give the models folder with --models"
    )
