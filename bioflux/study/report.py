"""A study's report: ranking, evaluation tables with honest statistics, plots, JSON.

Every statistic says what it is over:

- **mean**: the mean over training seeds of each seed's mean over evaluation episodes;
- **std across seeds**: the sample std (ddof 1) of those per-seed means — how much the
  approach's result depends on its training seed (n/a with one seed);
- **std across episodes**: the std of the per-episode values, pooled over seeds — how much one
  episode varies;
- **95% CI**: a two-level bootstrap of the mean (resample seeds with replacement, then
  episodes within each drawn seed; 2000 draws, percentile interval). With few seeds the
  seed level is coarse: 2 seeds give at most 3 distinct seed draws.
- **the verdict's difference**: the leader's mean minus the runner-up's, with the 95%
  percentile interval of the paired bootstrap replicates' differences (both players' replicates
  resample the same seed and episode indices; every pairing plays the same evaluation
  episodes). A lead holds when that interval excludes 0.

Species metrics are measured against the ``random`` baseline: predators against random prey,
prey against random predators. "Return" is the mean over the species' agents of each agent's
summed reward in the episode; a predator's success is its capture rate, a prey's its survival
rate (1 − capture rate).

Ensembles (``ensembles:`` in the study file) are players like the approaches: one per training
seed, built from that seed's members, so their statistics are over seeds too; they rank, join
the verdict and the cross-play, and have no training cost of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.artifacts import RunFolder, StudyFolder
from bioflux.envs.config import SPECIES
from bioflux.evaluation import bootstrap_means, percentile_ci
from bioflux.study.config import StudyConfig
from bioflux.study.crossplay import EpisodeArrays, Player

#: The metrics of the evaluation table: label → how to read it off a species' episodes.
METRICS = ("return", "success rate", "episode length")
REFERENCE = "random"


def _values(arrays: EpisodeArrays, species: str, metric: str) -> np.ndarray:
    if metric == "return":
        return getattr(arrays, f"{species}_return")
    if metric == "success rate":
        return arrays.capture_rate if species == "predator" else 1.0 - arrays.capture_rate
    return arrays.length


@dataclass(frozen=True)
class Stat:
    mean: float
    std_seeds: float | None
    std_episodes: float
    ci: tuple[float, float]
    seeds: int
    episodes: int
    replicates: np.ndarray = field(compare=False, repr=False)  # the bootstrap means behind ci

    @classmethod
    def of(cls, per_seed: list[np.ndarray]) -> Stat:
        means = np.array([v.mean() for v in per_seed])
        pooled = np.concatenate(per_seed)
        replicates = bootstrap_means(per_seed)
        return cls(
            mean=float(means.mean()),
            std_seeds=float(means.std(ddof=1)) if len(means) > 1 else None,
            std_episodes=float(pooled.std()),
            ci=percentile_ci(replicates),
            seeds=len(per_seed),
            episodes=len(pooled),
            replicates=replicates,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std_across_seeds": self.std_seeds,
            "std_across_episodes": self.std_episodes,
            "ci95": list(self.ci),
            "seeds": self.seeds,
            "episodes": self.episodes,
        }


def species_stats(
    study: StudyConfig, everyone: list[Player], games: dict[tuple[str, str], EpisodeArrays]
) -> dict[str, dict[str, dict[str, Stat]]]:
    """approach (and baseline) → species → metric → ``Stat`` against the random opponent."""
    groups: dict[str, list[Player]] = {}
    for p in everyone:
        groups.setdefault(p.approach, []).append(p)
    out: dict[str, dict[str, dict[str, Stat]]] = {}
    for approach, members in groups.items():
        out[approach] = {}
        for species in SPECIES:
            per_metric = {}
            for metric in METRICS:
                per_seed = [
                    _values(
                        games[(p.key, REFERENCE) if species == "predator" else (REFERENCE, p.key)],
                        species,
                        metric,
                    )
                    for p in members
                ]
                per_metric[metric] = Stat.of(per_seed)
            out[approach][species] = per_metric
    return out


def difference_ci(a: Stat, b: Stat) -> tuple[float, float]:
    """95% interval of ``a.mean - b.mean`` from paired bootstrap replicates: both were drawn
    with the same generator seed, so with equal sizes each replicate resamples the same seed
    and episode indices for both players, and every pairing plays the same evaluation
    episodes (episode i starts from the same state)."""
    return percentile_ci(a.replicates - b.replicates)


def ranking(stats: dict[str, dict[str, dict[str, Stat]]], species: str) -> list[str]:
    """Approaches by their species' mean return against random opponents, best first."""
    return sorted(stats, key=lambda a: -stats[a][species]["return"].mean)


def verdict(stats: dict[str, dict[str, dict[str, Stat]]], trained: list[str]) -> list[str]:
    """Plain sentences: who wins per species, by how much, with the difference's interval."""
    lines = []
    for species in SPECIES:
        order = [a for a in ranking(stats, species) if a in trained]
        if len(order) < 2:
            continue
        best, second = order[0], order[1]
        a, b = stats[best][species]["return"], stats[second][species]["return"]
        lo, hi = difference_ci(a, b)
        lines.append(
            f"**{species}**: `{best}` has the highest return against random opponents, "
            f"{a.mean:.3f} (95% CI {a.ci[0]:.3f} to {a.ci[1]:.3f}), ahead of `{second}` "
            f"({b.mean:.3f}, {b.ci[0]:.3f} to {b.ci[1]:.3f}) by {a.mean - b.mean:.3f} "
            f"(95% CI of the difference, paired bootstrap: {lo:.3f} to {hi:.3f}); "
            + (
                "it includes 0, so this lead is not established at this budget."
                if lo <= 0
                else "it excludes 0, so the lead holds at this budget."
            )
        )
    return lines


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(
    study: StudyConfig,
    stats: dict[str, dict[str, dict[str, Stat]]],
    heat: dict[str, Any],
    trials: list[dict[str, Any]],
    wall_s: float,
) -> str:
    trained = list(study.approaches)
    lines = [
        f"# Study `{study.name}`",
        "",
        f"{len(trained)} approaches x {len(study.seeds)} training seeds ({study.seeds}), "
        f"budget {_budget(study)} each, on one world ({_world(study)}). Evaluation: "
        f"{study.evaluation.episodes} episodes per pairing on seed {study.evaluation.seed} "
        f"(never a training or selection seed). Wall time of the whole study: {wall_s:.0f} s.",
        *_ensembles_md(study),
        "",
        "## Verdict",
        "",
        *verdict(stats, trained + list(study.ensembles)),
        "",
        "## Ranking (return per agent against random opponents)",
        "",
        "| rank | predators | return [95% CI] | prey | return [95% CI] |",
        "|---|---|---|---|---|",
    ]
    pred_rank, prey_rank = ranking(stats, "predator"), ranking(stats, "prey")
    for i, (pa, qa) in enumerate(zip(pred_rank, prey_rank), start=1):
        ps, qs = stats[pa]["predator"]["return"], stats[qa]["prey"]["return"]
        lines.append(
            f"| {i} | `{pa}` | {ps.mean:.3f} [{ps.ci[0]:.3f}, {ps.ci[1]:.3f}] "
            f"| `{qa}` | {qs.mean:.3f} [{qs.ci[0]:.3f}, {qs.ci[1]:.3f}] |"
        )
    lines += [
        "",
        "## Evaluation per approach and species (against random opponents)",
        "",
        "mean = mean over training seeds of per-seed episode means; sd seeds = std of those "
        "per-seed means (ddof 1); sd episodes = std over all episodes; CI = 95% two-level "
        "bootstrap (seeds, then episodes). Baselines have no training seeds; an ensemble's "
        "seeds are its members' training seeds.",
    ]
    for metric in METRICS:
        lines += [
            "",
            f"### {metric}",
            "",
            "| approach | species | mean | sd seeds | sd episodes | 95% CI | seeds x episodes |",
            "|---|---|---|---|---|---|---|",
        ]
        for approach in stats:
            for species in SPECIES:
                s = stats[approach][species][metric]
                spec = ".1f" if metric == "episode length" else ".3f"
                lines.append(
                    f"| `{approach}` | {species} | {s.mean:{spec}} | {_fmt(s.std_seeds, spec)} "
                    f"| {s.std_episodes:{spec}} | [{s.ci[0]:{spec}}, {s.ci[1]:{spec}}] "
                    f"| {s.seeds} x {s.episodes // s.seeds} |"
                )
    lines += [
        "",
        "## Cross-play: capture rate (rows: predators, columns: prey; mean over seed pairs)",
        "",
        "| predator \\ prey | " + " | ".join(f"`{c}`" for c in heat["approaches"]) + " |",
        "|---|" + "---|" * len(heat["approaches"]),
    ]
    for r, row in zip(heat["approaches"], heat["capture_rate"]):
        lines.append(f"| `{r}` | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines += [
        "",
        "## Cost per approach (mean over seeds)",
        "",
        "| approach | algorithm | trial wall time (s) | training time (s) | env steps "
        "| agent steps | env steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for approach in trained:
        rows = [t for t in trials if t["approach"] == approach]

        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            return _mean([t.get(key) for t in rows])

        sps = _mean([t["env_steps"] / t["train_time_s"] for t in rows if t.get("train_time_s")])
        lines.append(
            f"| `{approach}` | {rows[0]['algorithm']} | {_fmt(mean('wall_s'), '.0f')} "
            f"| {_fmt(mean('train_time_s'), '.0f')} | {_fmt(mean('env_steps'), ',.0f')} "
            f"| {_fmt(mean('agent_steps'), ',.0f')} | {_fmt(sps, ',.0f')} |"
        )
    lines += [
        "",
        "Plots: `learning_curves.png` (capture rate during training against env steps; line: "
        "mean over seeds, band: min to max over seeds), `crossplay_capture_rate.png`.",
        "",
    ]
    return "\n".join(lines)


def _ensembles_md(study: StudyConfig) -> list[str]:
    """One line per ensemble: its combination and weighted members (none: no lines)."""
    if not study.ensembles:
        return []
    lines = [
        "",
        "Ensembles (no training: for each training seed, built from that seed's exported "
        "members; baseline members are the built-ins):",
        "",
    ]
    for name, ens in study.ensembles.items():
        members = ", ".join(
            f"`{m}` (weight {w:g})" for m, w in zip(ens.members, ens.member_weights())
        )
        how = "weighted probability average" if ens.combine == "average" else "weighted vote"
        lines.append(f"- `{name}`: {how} of {members}")
    return lines


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _budget(study: StudyConfig) -> str:
    return ", ".join(
        f"{v:,} {k.replace('_', ' ')}" for k, v in study.budget.model_dump().items() if v
    )


def _world(study: StudyConfig) -> str:
    env = study.experiment(*study.trials()[0]).env_config
    return (
        f"{env.height}x{env.width}, {env.n_predators} predators, {env.n_prey} prey, "
        f"{env.max_steps} steps"
    )


def crossplay_matrix(
    everyone: list[Player], games: dict[tuple[str, str], EpisodeArrays]
) -> dict[str, Any]:
    """Capture rate per (predator approach, prey approach), averaged over their seed pairs."""
    approaches = list(dict.fromkeys(p.approach for p in everyone))
    by = {a: [p.key for p in everyone if p.approach == a] for a in approaches}
    matrix = [
        [
            float(np.mean([games[(pk, qk)].capture_rate.mean() for pk in by[r] for qk in by[c]]))
            for c in approaches
        ]
        for r in approaches
    ]
    return {"approaches": approaches, "capture_rate": matrix}


def plot_heatmap(heat: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array(heat["capture_rate"])
    names = heat["approaches"]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 1.8))
    im = ax.imshow(m, cmap="magma", vmin=0, vmax=max(1e-9, float(m.max())))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prey policy")
    ax.set_ylabel("predator policy")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{m[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if m[i, j] < 0.6 * m.max() else "black",
                fontsize=9,
            )
    fig.colorbar(im, ax=ax, label="capture rate")
    ax.set_title("cross-play capture rate (mean over seed pairs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curves(study: StudyConfig, trials: list[dict[str, Any]], path: Path) -> Path:
    """Capture rate during training against env steps: per approach, the mean over seeds
    (line) and the min-max band, interpolated onto a common grid of env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for approach, colour in zip(
        study.approaches, plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ):
        curves = []
        search = False  # a coefficient search: one row per trial, not a learning curve
        for t in trials:
            if t["approach"] != approach:
                continue
            run = RunFolder(Path(t["metrics"]).parent)
            if run.config.is_file():
                saved = yaml.safe_load(run.config.read_text()) or {}
                search = search or saved.get("algorithm") == "lotka_volterra"
            rows = run.read_metrics()
            pts = [
                (r["env_steps"], r["capture_rate"])
                for r in rows
                if r.get("capture_rate") is not None
            ]
            if pts:
                curve = np.array(pts, dtype=float)
                if search:  # the best trial so far: what the search has found by then
                    curve[:, 1] = np.maximum.accumulate(curve[:, 1])
                curves.append(curve)
        if not curves:
            continue
        end = min(c[-1, 0] for c in curves)
        start = max(c[0, 0] for c in curves)
        grid = np.linspace(start, end, 100) if end > start else np.array([end])
        ys = np.array([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
        what = "search: best trial so far" if search else "self-play"
        label = f"{approach} ({what}; {len(curves)} seeds)"
        ax.plot(grid, ys.mean(0), color=colour, lw=2, label=label)
        ax.fill_between(grid, ys.min(0), ys.max(0), color=colour, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("capture rate during training")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{study.name}: capture rate during training, mean over seeds (band: min to max)\n"
        "self-play: both species learn at once, so a flat line can hide learning; what each "
        "learned is\nin the evaluation against random opponents (study.md)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    study: StudyConfig,
    folder: StudyFolder,
    everyone: list[Player],
    games: dict[tuple[str, str], EpisodeArrays],
    trials: list[dict[str, Any]],
    wall_s: float,
) -> dict[str, Any]:
    """Write ``study.md``, ``study.json`` and the PNGs; returns the JSON document."""
    stats = species_stats(study, everyone, games)
    heat = crossplay_matrix(everyone, games)
    plot_heatmap(heat, folder.heatmap)
    plot_learning_curves(study, trials, folder.curves)
    doc = {
        "study": study.model_dump(mode="json"),
        "wall_s": round(wall_s, 1),
        "ranking": {s: ranking(stats, s) for s in SPECIES},
        "verdict": verdict(stats, list(study.approaches) + list(study.ensembles)),
        "evaluation": {
            a: {s: {m: st.to_dict() for m, st in per.items()} for s, per in by.items()}
            for a, by in stats.items()
        },
        "crossplay": heat,
        "trials": trials,
        "episodes": {f"{p}|{q}": arrays.to_dict() for (p, q), arrays in games.items()},
        "files": {
            "markdown": str(folder.report_md),
            "learning_curves": str(folder.curves),
            "heatmap": str(folder.heatmap),
        },
    }
    folder.report_json.write_text(json.dumps(doc, indent=2))
    folder.report_md.write_text(markdown(study, stats, heat, trials, wall_s))
    return doc
