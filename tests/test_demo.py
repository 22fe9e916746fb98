"""The README's main job, on a tiny budget: train, evaluate against random, render a GIF."""

from PIL import Image

from bioflux.demo import run_demo


def test_demo_writes_curves_table_and_gif(ray_session, tmp_path):
    lines = []
    out = run_demo(
        tmp_path,
        [
            "stop.iterations=2",
            "training.train_batch_size=600",
            "training.minibatch_size=300",
            "evaluation.episodes=4",
            "resources.num_env_runners=0",
        ],
        log=lines.append,
    )
    table = (tmp_path / "evaluation.md").read_text()
    assert table.count("| predator |") == 4 and table.count("| prey |") == 4
    assert [r["predator_policy"] for r in out["evaluation"]][0] == "random"
    assert (tmp_path / "evaluation.png").stat().st_size > 1000
    assert (tmp_path / "runs" / "ppo_demo" / "learning_curves.png").exists()
    gif = Image.open(tmp_path / "episode.gif")
    assert gif.n_frames == out["episode"]["steps"] + 1 > 1
    assert any(str(tmp_path / "episode.gif") in line for line in lines)
