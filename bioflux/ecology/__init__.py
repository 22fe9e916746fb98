"""Population ecology: Lotka–Volterra fitting and predator–prey cycle analysis."""

from bioflux.ecology.analysis import (
    CycleStats,
    LVFit,
    PopulationSeries,
    analyze,
    compare_with_reference,
    cycle_statistics,
    fit_lotka_volterra,
    load_lynx_hare,
    plot_analysis,
    power_spectrum,
)

__all__ = [
    "CycleStats",
    "LVFit",
    "PopulationSeries",
    "analyze",
    "compare_with_reference",
    "cycle_statistics",
    "fit_lotka_volterra",
    "load_lynx_hare",
    "plot_analysis",
    "power_spectrum",
]
