"""Student's t-interval for a mean: the interval every per-seed statistic of a study uses
(``bioflux.study.report`` explains why the seed is the unit)."""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student's t-interval for the mean of ``values`` (``n − 1`` degrees of freedom); one
    value or no spread: the point itself."""
    values = np.asarray(values, dtype=float)
    mean, n = float(values.mean()), len(values)
    if n < 2:
        return mean, mean
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * float(values.std(ddof=1))
    half /= np.sqrt(n)
    return mean - half, mean + half
