"""Rendering to RGB arrays, ANSI text, GIFs and PNG strips."""

import numpy as np
from PIL import Image

from bioflux.envs import predator_prey_v0
from bioflux.envs.rendering import COLOURS, save_frames


def test_rgb_array_shape_and_colours():
    env = predator_prey_v0.parallel_env(
        render_mode="rgb_array", height=12, width=20, wall_density=0.0, n_predators=1, n_prey=1
    )
    env.reset(options={"layout": {"predators": [(1, 2)], "prey": [(3, 4)]}})
    img = env.render()
    assert img.shape == (48, 80, 3) and img.dtype == np.uint8
    assert tuple(img[1 * 4, 2 * 4]) == COLOURS["predator"]
    assert tuple(img[3 * 4 + 3, 4 * 4 + 3]) == COLOURS["prey"]
    assert tuple(img[0, 0]) == COLOURS["empty"]


def test_ansi():
    env = predator_prey_v0.parallel_env(
        render_mode="ansi", height=3, width=4, wall_density=0.0, n_predators=1, n_prey=1
    )
    env.reset(options={"layout": {"walls": [(2, 3)], "predators": [(0, 0)], "prey": [(1, 1)]}})
    assert env.render() == "X...\n.o..\n...#"


def test_gif_and_png_strip(tmp_path):
    env = predator_prey_v0.parallel_env(
        render_mode="rgb_array", height=16, width=16, n_predators=2, n_prey=5
    )
    env.reset(seed=0)
    frames = [env.render()]
    for _ in range(5):
        env.step({a: 1 for a in env.agents})
        frames.append(env.render())
    gif = save_frames(frames, tmp_path / "ep.gif")
    assert Image.open(gif).n_frames == len(frames)
    png = Image.open(save_frames(frames, tmp_path / "ep.png", strip_frames=3))
    assert png.size == (3 * 64 + 2 * 4, 64)
