"""End to end on real Ray: train a tiny PPO run, checkpoint, export, restore, evaluate."""

import json

import numpy as np
import pytest

from bioflux import config, evaluation, training
from bioflux.artifacts import MODULES_SUBDIR
from bioflux.policies import load_policy


@pytest.fixture(scope="module")
def trained_run(ray_session, tmp_path_factory):
    import copy

    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("train")
    exp = config.validate(copy.deepcopy(TINY))
    lines = []
    summary = training.train(exp, output=root / "runs", models=root / "models", log=lines.append)
    return root, exp, summary, lines


def test_run_folder_outputs(trained_run):
    root, exp, summary, lines = trained_run
    run = root / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["agent_steps"] >= 2 * 200 and rows[1]["env_steps"] > rows[0]["env_steps"]
    assert all(r["predator_return"] is not None and r["agent_steps_per_s"] > 0 for r in rows)
    assert all(0.0 <= r["capture_rate"] <= 1.0 for r in rows)
    assert lines[0] == "learners: 1 on cpu"  # where training runs, said before it starts
    assert len(lines) == 3 and lines[1].startswith("iter 1/2 | env steps")
    assert summary["learner_devices"] == ["cpu"]
    assert (run / "learning_curves.png").stat().st_size > 1000
    assert json.loads((run / "summary.json").read_text())["iterations"] == 2
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "final" in ckpts and "best" in ckpts and "iter_000002" in ckpts
    assert not any(name.endswith(".tmp") for name in ckpts)
    for kind in ("final", "best"):
        for species in ("predator", "prey"):
            meta = json.loads(
                (root / "models" / "ppo" / "tiny" / kind / species / "bioflux.json").read_text()
            )
            assert meta["algorithm"] == "ppo" and meta["species"] == species


def test_exported_module_acts_like_the_checkpoint(trained_run):
    root, exp, _, _ = trained_run
    exported = load_policy(root / "models" / "ppo" / "tiny", "predator")
    from_ckpt = load_policy(root / "runs" / "tiny" / "checkpoints" / "final", "predator")
    obs = np.random.default_rng(0).random((16, 5, 5, 4)).astype(np.float32)
    p1, p2 = exported.probabilities(obs), from_ckpt.probabilities(obs)
    assert p1.shape == (16, 5) and np.allclose(p1.sum(1), 1.0)
    assert np.allclose(p1, p2)


def test_restored_algorithm_has_the_same_weights(trained_run):
    from ray.rllib.algorithms.algorithm import Algorithm

    from bioflux.envs.rllib_env import register

    root, exp, _, _ = trained_run
    register()
    ckpt = root / "runs" / "tiny" / "checkpoints" / "final"
    algo = Algorithm.from_checkpoint(str(ckpt))
    try:
        assert algo.iteration == 2
        module = algo.get_module("prey")
        policy = load_policy(ckpt, "prey")
        obs = np.random.default_rng(1).random((8, 5, 5, 4)).astype(np.float32)
        import torch
        from ray.rllib.core.columns import Columns

        with torch.no_grad():
            logits = module.forward_inference({Columns.OBS: torch.from_numpy(obs.reshape(8, -1))})
        probs = torch.softmax(logits[Columns.ACTION_DIST_INPUTS], -1).numpy()
        assert np.allclose(probs, policy.probabilities(obs), atol=1e-6)
    finally:
        algo.stop()


def test_evaluate_trained_against_random(trained_run):
    root, exp, _, _ = trained_run
    model = root / "models" / "ppo" / "tiny"
    a = evaluation.evaluate(model, "random", exp.env_config, episodes=8, seed=2)
    b = evaluation.evaluate(model, "random", exp.env_config, episodes=8, seed=2)
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["predator"]["episodes"] == 8


def test_a_second_run_into_the_same_folder_needs_resume(trained_run):
    root, exp, _, _ = trained_run
    with pytest.raises(ValueError, match="--resume"):
        training.train(exp, output=root / "runs", models=root / "models")


def test_corrupt_checkpoint_is_a_clear_error(trained_run, tmp_path):
    import shutil

    root, _, _, _ = trained_run
    bad = tmp_path / "bad"
    shutil.copytree(root / "runs" / "tiny" / "checkpoints" / "final" / MODULES_SUBDIR / "prey", bad)
    (bad / "module_state.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot load a policy module"):
        load_policy(bad, "prey")
