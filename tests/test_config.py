"""Experiment configs: every packaged config validates; bad ones fail naming the key."""

import pytest
import yaml

from bioflux import config
from bioflux.config import ConfigError


@pytest.mark.parametrize("name", config.packaged_names())
def test_packaged_configs_validate(name):
    if name.startswith("study"):
        from bioflux.study import load_study

        study = load_study(name)  # builds and validates every (approach, seed) experiment
        assert len(study.trials()) == len(study.approaches) * len(study.seeds)
        with pytest.raises(ConfigError, match="bioflux study"):
            config.load(name)
        return
    exp = config.load(name)
    assert exp.name and exp.env_config.height >= 1


def test_root_configs_folder_holds_the_packaged_files():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    assert sorted(p.stem for p in root.glob("*.yaml")) == config.packaged_names()


def test_overrides_apply_and_are_typed(tiny_config):
    data = config.apply_overrides(
        tiny_config, ["training.lr=1e-3", "env.height=12", "stop.iterations=7"]
    )
    exp = config.validate(data)
    assert exp.params.lr == 1e-3 and exp.env_config.height == 12 and exp.stop.iterations == 7


@pytest.mark.parametrize(
    "override, needle",
    [
        ("training.lrr=0.1", "training.lrr: unknown key"),
        ("training.lr=fast", "training.lr"),
        ("env.hieght=3", "hieght"),
        ("env.n_prey=-1", "n_prey"),
        ("resources.num_env_runners=-2", "resources.num_env_runners"),
        ("checkpoint.every=3", "checkpoint.every: unknown key"),
        ("algorithm=sac", "algorithm='sac' is unknown"),
        ("bogus=1", "bogus: unknown key"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(tiny_config, override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        config.validate(config.apply_overrides(tiny_config, [override]))


def test_stop_needs_a_criterion(tiny_config):
    tiny_config["stop"] = {}
    with pytest.raises(ConfigError, match="stop"):
        config.validate(tiny_config)


def test_load_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_cli_rejects_bad_config_before_ray_starts(tmp_path, tiny_config):
    import subprocess
    import sys

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bioflux",
            "train",
            "--config",
            str(path),
            "--set",
            "training.clip=0.3",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "training.clip: unknown key" in out.stderr
    assert "Started a local Ray instance" not in out.stderr + out.stdout
    assert not (tmp_path / "tiny").exists()
