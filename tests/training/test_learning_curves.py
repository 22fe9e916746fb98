"""Learning-curve plot: raw per-iteration values plus a rolling mean that skips gaps."""

import numpy as np
from PIL import Image

from bioflux.artifacts import plot_learning_curves, rolling_mean


def test_rolling_mean_is_trailing_and_skips_missing_values():
    out = rolling_mean([1.0, None, 3.0, 5.0, float("nan"), None, None], window=2)
    assert np.allclose(out[:5], [1.0, 1.0, 3.0, 4.0, 5.0])
    assert np.isnan(out[6])  # a window with no value stays missing


def test_plot_writes_a_png_for_a_long_run_with_gaps(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {
            "env_steps": 200 * (i + 1),
            "predator_return": None if i % 7 == 0 else float(rng.normal()),
            "prey_return": float(rng.normal()),
            "capture_rate": None if i % 7 == 0 else float(rng.random()),
        }
        for i in range(120)
    ]
    path = plot_learning_curves(rows, tmp_path / "curves.png", "test")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 500
