"""Population series: prey and predator counts over time, read from CSV (our ``simulate``
output, or any file with recognisable columns) or the packaged Hudson's Bay lynx–hare records
(:mod:`bioflux.data`)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from importlib.resources import files
from typing import IO, Any

import numpy as np

LYNX_HARE_FILE = "hudson_bay_lynx_hare.csv"
REFERENCE_ALIASES = ("lynx_hare", "lynx-hare", "hudson_bay")

_TIME_COLUMNS = ("step", "time", "t", "year", "tick", "generation")
_PREY_COLUMNS = ("prey", "n_prey", "prey_count", "num_prey", "hare")
_PREDATOR_COLUMNS = (
    "predator",
    "predators",
    "n_predator",
    "n_predators",
    "predator_count",
    "num_predators",
    "lynx",
)
_TIME_UNITS = {"year": "year", "step": "step", "tick": "step"}


@dataclass
class PopulationSeries:
    """Prey and predator counts sampled at increasing times."""

    time: np.ndarray
    prey: np.ndarray
    predator: np.ndarray
    time_unit: str = "step"

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=float).ravel()
        self.prey = np.asarray(self.prey, dtype=float).ravel()
        self.predator = np.asarray(self.predator, dtype=float).ravel()
        n = self.time.size
        if self.prey.size != n or self.predator.size != n:
            raise ValueError(
                f"time, prey and predator must have equal lengths, got "
                f"{n}, {self.prey.size}, {self.predator.size}"
            )
        if n < 2:
            raise ValueError(f"a population series needs at least 2 samples, got {n}")
        if not np.all(np.isfinite(self.time)) or np.any(np.diff(self.time) <= 0):
            raise ValueError("time must be finite and strictly increasing")
        if not (np.all(np.isfinite(self.prey)) and np.all(np.isfinite(self.predator))):
            raise ValueError("prey and predator counts must be finite")

    def __len__(self) -> int:
        return int(self.time.size)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str] | IO[str],
        time_col: str | None = None,
        prey_col: str | None = None,
        predator_col: str | None = None,
    ) -> PopulationSeries:
        """Read a CSV with a time, a prey and a predator column.

        Columns are matched case-insensitively; by default ``step``/``time``/``year``,
        ``prey``/``hare`` and ``predator``/``lynx`` are recognised. Extra columns are ignored.

        Raises
        ------
        ValueError
            If a column is missing (the message names it and lists the header).
        """
        if isinstance(path, (str, os.PathLike)):
            with open(path, newline="", encoding="utf-8") as fh:
                return cls._from_reader(fh, time_col, prey_col, predator_col, str(path))
        return cls._from_reader(path, time_col, prey_col, predator_col, "<stream>")

    @classmethod
    def _from_reader(
        cls,
        fh: IO[str],
        time_col: str | None,
        prey_col: str | None,
        predator_col: str | None,
        source: str,
    ) -> PopulationSeries:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{source}: empty CSV, expected a header row")
        header = [h.strip() for h in header]
        lower = {h.lower(): i for i, h in enumerate(header)}

        def pick(role: str, given: str | None, candidates: tuple[str, ...]) -> int | str:
            names = (given,) if given is not None else candidates
            for name in names:
                if name.lower() in lower:
                    return lower[name.lower()]
            return f"{role} (looked for {', '.join(repr(n) for n in names)})"

        found = {
            "time": pick("time", time_col, _TIME_COLUMNS),
            "prey": pick("prey", prey_col, _PREY_COLUMNS),
            "predator": pick("predator", predator_col, _PREDATOR_COLUMNS),
        }
        missing = [v for v in found.values() if isinstance(v, str)]
        if missing:
            raise ValueError(
                f"{source}: missing column(s): {'; '.join(missing)}; "
                f"available columns: {', '.join(header)}"
            )
        idx = {k: int(v) for k, v in found.items()}
        cols: dict[str, list[float]] = {k: [] for k in idx}
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                for k, i in idx.items():
                    cols[k].append(float(row[i]))
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{source}: line {lineno}: cannot parse {row!r}") from exc
        time_name = header[idx["time"]].lower()
        return cls(
            time=np.array(cols["time"]),
            prey=np.array(cols["prey"]),
            predator=np.array(cols["predator"]),
            time_unit=_TIME_UNITS.get(time_name, time_name),
        )

    def summary(self) -> dict[str, Any]:
        """Length, time span and basic population statistics, JSON-ready."""
        return {
            "n_samples": len(self),
            "time_unit": self.time_unit,
            "t_start": float(self.time[0]),
            "t_end": float(self.time[-1]),
            "prey_mean": float(self.prey.mean()),
            "predator_mean": float(self.predator.mean()),
            "prey_max": float(self.prey.max()),
            "predator_max": float(self.predator.max()),
        }


def load_lynx_hare() -> PopulationSeries:
    """Hudson's Bay hare (prey) and lynx (predator) pelts, thousands, 1845–1935."""
    resource = files("bioflux.data").joinpath(LYNX_HARE_FILE)
    with resource.open("r", encoding="utf-8", newline="") as fh:
        return PopulationSeries._from_reader(fh, "Year", "Hare", "Lynx", LYNX_HARE_FILE)


def as_series(obj: PopulationSeries | str | os.PathLike[str]) -> PopulationSeries:
    if isinstance(obj, PopulationSeries):
        return obj
    if isinstance(obj, str) and obj.lower() in REFERENCE_ALIASES:
        return load_lynx_hare()
    return PopulationSeries.from_csv(obj)


def uniform_grid(series: PopulationSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Series on a uniform time grid (linear interpolation if the sampling is irregular)."""
    t = series.time
    steps = np.diff(t)
    dt = float(np.median(steps))
    if np.allclose(steps, dt, rtol=1e-6, atol=0.0):
        return t, series.prey, series.predator, dt
    grid = np.arange(t[0], t[-1] + 0.5 * dt, dt)
    return grid, np.interp(grid, t, series.prey), np.interp(grid, t, series.predator), dt


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value
