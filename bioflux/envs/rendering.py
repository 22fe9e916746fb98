"""Pictures of a predator–prey world: RGB arrays, ANSI text, GIFs and PNG strips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bioflux.envs.core import BatchedWorld

#: Colours (RGB) of the rendered picture.
COLOURS = {
    "empty": (245, 245, 240),
    "wall": (70, 70, 70),
    "prey": (40, 160, 60),
    "predator": (210, 40, 40),
}
#: Characters of the ANSI picture (a predator hides a prey on the same cell).
ANSI_CHARS = {"empty": ".", "wall": "#", "prey": "o", "predator": "X"}


def _cell_kinds(world: BatchedWorld, b: int) -> np.ndarray:
    """(H, W) int: 0 empty, 1 wall, 2 prey, 3 predator (highest wins)."""
    kinds = world.walls[b].astype(np.int8)
    idx = np.flatnonzero(world.alive[b])
    pred = idx[world.is_predator[idx]]
    prey = idx[~world.is_predator[idx]]
    kinds[world.pos[b, prey, 0], world.pos[b, prey, 1]] = 2
    kinds[world.pos[b, pred, 0], world.pos[b, pred, 1]] = 3
    return kinds


def render_rgb(world: BatchedWorld, b: int = 0, cell_pixels: int = 4) -> np.ndarray:
    """The grid as an ``(H * cell_pixels, W * cell_pixels, 3)`` uint8 image."""
    palette = np.array(
        [COLOURS["empty"], COLOURS["wall"], COLOURS["prey"], COLOURS["predator"]], dtype=np.uint8
    )
    img = palette[_cell_kinds(world, b)]
    return np.repeat(np.repeat(img, cell_pixels, axis=0), cell_pixels, axis=1)


def render_ansi(world: BatchedWorld, b: int = 0) -> str:
    """The grid as text, one line per row (see ``ANSI_CHARS``)."""
    chars = np.array(
        [ANSI_CHARS["empty"], ANSI_CHARS["wall"], ANSI_CHARS["prey"], ANSI_CHARS["predator"]]
    )
    return "\n".join("".join(row) for row in chars[_cell_kinds(world, b)])


def save_frames(
    frames: Sequence[np.ndarray], path: str | Path, fps: int = 10, strip_frames: int = 6
) -> Path:
    """Write frames as an animated GIF (``.gif``) or a PNG strip of evenly spaced frames."""
    from PIL import Image

    if not frames:
        raise ValueError("frames is empty; allowed: at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=max(1, 1000 // fps), loop=0
        )
    elif path.suffix.lower() == ".png":
        picks = np.linspace(0, len(frames) - 1, min(strip_frames, len(frames))).astype(int)
        gap = np.full((frames[0].shape[0], 4, 3), 255, dtype=np.uint8)
        parts = []
        for i in picks:
            parts += [frames[i], gap]
        Image.fromarray(np.concatenate(parts[:-1], axis=1)).save(path)
    else:
        raise ValueError(f"path suffix {path.suffix!r} is not supported; allowed: .gif, .png")
    return path
