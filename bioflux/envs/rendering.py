"""Pictures of a predator–prey world: RGB arrays, ANSI text, a matplotlib window, GIFs and PNG
strips."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


#: Colour (RGB) of the ring that marks a capture in annotated frames.
CAPTURE_COLOUR = (250, 190, 0)


def mark_cells(frame: np.ndarray, cells: np.ndarray, cell_pixels: int) -> np.ndarray:
    """A copy of ``frame`` with a ring (``CAPTURE_COLOUR``) around each ``(row, col)`` cell."""
    out = frame.copy()
    c = cell_pixels
    w = max(1, c // 4)
    for r, col in np.asarray(cells, dtype=int).reshape(-1, 2):
        y0, x0 = max(0, r * c - w), max(0, col * c - w)
        y1, x1 = min(out.shape[0], (r + 1) * c + w), min(out.shape[1], (col + 1) * c + w)
        out[y0:y1, x0 : x0 + w] = CAPTURE_COLOUR
        out[y0:y1, x1 - w : x1] = CAPTURE_COLOUR
        out[y0 : y0 + w, x0:x1] = CAPTURE_COLOUR
        out[y1 - w : y1, x0:x1] = CAPTURE_COLOUR
    return out


def annotate(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frame`` under a white band with ``lines`` of text and a colour legend (predator,
    prey, wall, capture), for GIFs a reader can follow without the docs."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line_h = 14
    legend = [("predator", COLOURS["predator"]), ("prey", COLOURS["prey"]),
              ("wall", COLOURS["wall"]), ("capture", CAPTURE_COLOUR)]  # fmt: skip
    band = line_h * (len(lines) + 1) + 8
    width = max(frame.shape[1], 320)
    img = Image.new("RGB", (width, frame.shape[0] + band), (255, 255, 255))
    img.paste(Image.fromarray(frame), (0, band))
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((4, 4 + i * line_h), text, fill=(20, 20, 20), font=font)
    x, y = 4, 4 + len(lines) * line_h
    for name, colour in legend:
        draw.rectangle((x, y + 2, x + 9, y + 11), fill=colour)
        draw.text((x + 13, y), name, fill=(20, 20, 20), font=font)
        x += 13 + int(draw.textlength(name, font=font)) + 12
    return np.asarray(img)


def render_ansi(world: BatchedWorld, b: int = 0) -> str:
    """The grid as text, one line per row (see ``ANSI_CHARS``)."""
    chars = np.array(
        [ANSI_CHARS["empty"], ANSI_CHARS["wall"], ANSI_CHARS["prey"], ANSI_CHARS["predator"]]
    )
    return "\n".join("".join(row) for row in chars[_cell_kinds(world, b)])


class HumanRenderError(RuntimeError):
    """``render_mode="human"`` cannot show a window here (no display, no GUI toolkit)."""


_HUMAN_HINT = (
    "use render_mode='rgb_array' (frames as arrays) instead, or set MPLBACKEND=Agg to draw "
    "off-screen"
)


def _headless() -> bool:
    """True on Linux/BSD without an X11 or Wayland display."""
    if sys.platform.startswith(("win", "darwin", "cygwin")):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _interactive(backend: str) -> bool:
    try:
        from matplotlib.backends import BackendFilter, backend_registry
    except ImportError:  # matplotlib < 3.9
        from matplotlib import rcsetup

        return backend.lower() in {b.lower() for b in rcsetup.interactive_bk}
    return backend.lower() in backend_registry.list_builtin(BackendFilter.INTERACTIVE)


def check_human_rendering() -> None:
    """Raise ``HumanRenderError`` with a clear message if ``render_mode="human"`` cannot work.

    A backend chosen explicitly (``MPLBACKEND``, ``matplotlib.use``) is trusted: a
    non-interactive one such as ``Agg`` draws off-screen. Left to matplotlib's automatic choice
    on a machine without a display, it would silently fall back to ``Agg``; that is an error.
    """
    try:
        import matplotlib
    except ImportError:
        raise HumanRenderError(
            "render_mode='human' needs matplotlib (pip install matplotlib); " + _HUMAN_HINT
        ) from None
    chosen = matplotlib.rcParams._get_backend_or_none()  # None: matplotlib's automatic choice
    if chosen is None and _headless():
        raise HumanRenderError(
            "render_mode='human' needs a display to open a window, and there is none "
            "($DISPLAY and $WAYLAND_DISPLAY are unset); " + _HUMAN_HINT
        )


class HumanWindow:
    """A matplotlib figure that shows one frame per ``show`` call, without blocking.

    With an interactive backend the window opens on the first frame and is refreshed (the GUI
    event loop runs for ``1 / fps`` s); with a non-interactive backend (``Agg``) the frame is
    drawn to the figure's canvas only.
    """

    def __init__(self, title: str = "predator_prey_v0", fps: int = 10):
        import matplotlib

        self.title = title
        self.fps = fps
        # the backend asked for (None: automatic), before pyplot may resolve it to a fallback
        self._requested = matplotlib.rcParams._get_backend_or_none()
        self._fig: Any = None
        self._image: Any = None

    def show(self, frame: np.ndarray) -> None:
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number):
            self._open(plt, frame)
        else:
            self._image.set_data(frame)
        if _interactive(plt.get_backend()):
            plt.pause(1.0 / self.fps)  # draws and runs the GUI event loop briefly
        else:
            self._fig.canvas.draw()

    def _open(self, plt: Any, frame: np.ndarray) -> None:
        try:
            fig, ax = plt.subplots(num=self.title, clear=True)
        except Exception as err:  # GUI toolkit missing or no display: name it, briefly
            raise HumanRenderError(
                f"render_mode='human' could not open a matplotlib window "
                f"(backend {plt.get_backend()!r}): {err}; " + _HUMAN_HINT
            ) from None
        backend = plt.get_backend()
        if not _interactive(backend) and (self._requested is None or _interactive(self._requested)):
            plt.close(fig)  # matplotlib fell back to a non-interactive backend: no window
            why = (
                "there is no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
                if _headless()
                else "matplotlib found no GUI toolkit (install tkinter or PyQt)"
            )
            raise HumanRenderError(
                f"render_mode='human' needs a window but {why}, so matplotlib fell back to "
                f"{backend!r}; " + _HUMAN_HINT
            )
        ax.set_axis_off()
        self._image = ax.imshow(frame, interpolation="nearest")
        fig.tight_layout(pad=0)
        self._fig = fig
        if _interactive(backend):
            plt.show(block=False)

    def close(self) -> None:
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = self._image = None


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
