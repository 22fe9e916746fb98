"""A study's report: ranking, evaluation tables with honest statistics, plots, JSON.

Every statistic says what it is over:

- **mean**: the mean over training seeds of each seed's mean over evaluation episodes;
- **std across seeds**: the sample std (ddof 1) of those per-seed means — how much the
  approach's result depends on its training seed (n/a with one seed);
- **std across episodes**: the std of the per-episode values, pooled over seeds — how much one
  episode varies;
- **95% CI**: a t-interval over the per-seed means with the episodes' sampling error added,
  ``mean ± t(0.975, n − 1) · √(sd² / n + s_e² / m)`` with ``n`` seeds, ``sd`` the std of the
  per-seed means, ``s_e²`` the mean within-seed episode variance and ``m`` episodes per seed
  (with one seed, e.g. a baseline, which has no training seed: the t-interval over that
  seed's episodes). Every seed plays the same evaluation episodes (one evaluation seed), so
  their sampling error is common to all seeds and does not average out over them: without
  the second term, a player whose policy is the same on every seed (the Lotka–Volterra
  prey keeps its default coefficients) would get a zero-width interval;
- **the verdict's difference**: the leader's mean minus the runner-up's, with the paired
  t-interval over the per-seed differences of episode means (seed ``i`` of each player, which
  played the same evaluation episodes). A lead holds when that interval excludes 0 **and**
  both players have at least ``MIN_SEEDS`` (3) seeds; with fewer seeds the verdict says
  "inconclusive: too few seeds". Players with different numbers of seeds, or of episodes per
  seed, are not paired: ``difference_ci`` refuses them and the verdict says so.

Why t-intervals over per-seed means, not the two-level bootstrap this report used before:
what a study claims is about a new training seed, so the unit of replication is the seed.
Were the per-seed means independent draws, their variance would already hold both levels
(seed-to-seed ``σ_s²`` plus episode noise ``σ_e² / m``) and Student's t over them would be
exact for normal per-seed means at any number of seeds ≥ 2; the shared evaluation episodes
make the episode noise common to the seeds, hence the added ``s_e² / m`` (conservative: at
most a factor √2 wider when the episodes are in fact independent). The bootstrap is not
valid here: with ``n`` seeds it sees at most ``C(2n − 1, n)`` distinct seed draws and its
variance is biased by ``(n − 1) / n``, so with 2–5 seeds its percentile interval is too
narrow (simulated coverage of a nominal 95% interval: 0.66 with 2
seeds at seed sd 0.10, episode sd 0.2). A hierarchical model would also be valid but needs a
prior on ``σ_s`` that 3–5 seeds cannot inform, and a sampler in the report. The t-interval's
coverage is checked by ``tests/study/test_interval_coverage.py`` on simulated studies with
known truth (3 and 5 seeds, seed sd 0.03 and 0.10, episode sd 0.2: ≥ 0.90 required, ~0.95
observed). With 1–2 seeds no interval can say much about seed-to-seed variance (2 seeds: t
with 1 degree of freedom, a factor 12.7 on the standard error), hence ``MIN_SEEDS``.

Species metrics are measured against the ``random`` baseline: predators against random prey,
prey against random predators. "Return" is the mean over the species' agents of each agent's
summed reward in the episode; a predator's success is its capture rate, a prey's its survival
rate (1 − capture rate).

Ensembles (``ensembles:`` in the study file) are players like the approaches: one per training
seed, built from that seed's members, so their statistics are over seeds too; they rank, join
the verdict and the cross-play, and have no training cost of their own.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from bioflux.algorithms import get_algorithm
from bioflux.artifacts import RunFolder, StudyFolder
from bioflux.envs.config import SPECIES
from bioflux.study.config import StudyConfig
from bioflux.study.crossplay import EpisodeArrays, Player
from bioflux.study.intervals import t_interval
from bioflux.study.realism import markdown as realism_markdown
from bioflux.study.transfer import markdown as transfer_markdown
from bioflux.study.transfer import plot_transfer_curves

#: Seeds each player needs before the verdict may call a lead established (module docstring).
MIN_SEEDS = 3
#: The metrics of the evaluation table: label → how to read it off a species' episodes.
METRICS = ("return", "success rate", "episode length")
REFERENCE = "random"


def _values(arrays: EpisodeArrays, species: str, metric: str) -> np.ndarray:
    if metric == "return":
        return getattr(arrays, f"{species}_return")
    if metric == "success rate":
        return arrays.capture_rate if species == "predator" else 1.0 - arrays.capture_rate
    return arrays.length


def seeds_interval(per_seed: list[np.ndarray], level: float = 0.95) -> tuple[float, float]:
    """The t-interval over per-seed means widened by the shared episodes' sampling error
    (module docstring): ``mean ± t(n − 1) · √(sd² / n + s_e² / m)``."""
    means = np.array([np.mean(v) for v in per_seed])
    n = len(means)
    within = float(np.mean([np.var(v, ddof=1) / len(v) for v in per_seed if len(v) > 1] or [0]))
    se = np.sqrt(float(means.var(ddof=1)) / n + within)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return float(means.mean()) - half, float(means.mean()) + half


@dataclass(frozen=True)
class Stat:
    mean: float
    std_seeds: float | None
    std_episodes: float
    ci: tuple[float, float]
    seeds: int
    episodes: int
    per_seed: tuple[np.ndarray, ...] = field(compare=False, repr=False)  # episode values

    @classmethod
    def of(cls, per_seed: list[np.ndarray]) -> Stat:
        """The statistics of one player's metric; ``per_seed``: its episode values per seed."""
        per_seed = [np.asarray(v, dtype=float) for v in per_seed]
        means = np.array([v.mean() for v in per_seed])
        pooled = np.concatenate(per_seed)
        return cls(
            mean=float(means.mean()),
            std_seeds=float(means.std(ddof=1)) if len(means) > 1 else None,
            std_episodes=float(pooled.std()),
            ci=seeds_interval(per_seed) if len(means) > 1 else t_interval(per_seed[0]),
            seeds=len(per_seed),
            episodes=len(pooled),
            per_seed=tuple(per_seed),
        )

    @property
    def episodes_per_seed(self) -> list[int]:
        return [len(v) for v in self.per_seed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std_across_seeds": self.std_seeds,
            "std_across_episodes": self.std_episodes,
            "ci95": list(self.ci),
            "ci_method": "t over per-seed means, plus the shared episodes' error"
            if self.seeds > 1
            else "t over episodes",
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
                stat = Stat.of(per_seed)
                if metric == "success rate":  # a rate: its interval stays within [0, 1]
                    lo, hi = stat.ci
                    stat = dataclasses.replace(stat, ci=(max(0.0, lo), min(1.0, hi)))
                per_metric[metric] = stat
            out[approach][species] = per_metric
    return out


def difference_ci(a: Stat, b: Stat) -> tuple[float, float]:
    """95% paired t-interval of ``a.mean - b.mean``: over the per-seed differences of episode
    means (seed ``i`` of each player played the same evaluation episodes, so their
    difference is free of the episodes' common noise); with one seed each, over the
    per-episode differences. Players with different numbers of seeds, or of episodes in
    some seed, cannot be paired: ``ValueError``."""
    if a.episodes_per_seed != b.episodes_per_seed:
        raise ValueError(
            "a paired difference needs the same seeds and episodes per seed for both players; "
            f"got {a.seeds} seeds x {a.episodes_per_seed} episodes and "
            f"{b.seeds} seeds x {b.episodes_per_seed} episodes"
        )
    if a.seeds == 1:
        return t_interval(a.per_seed[0] - b.per_seed[0])
    return t_interval(np.array([x.mean() - y.mean() for x, y in zip(a.per_seed, b.per_seed)]))


def ranking(stats: dict[str, dict[str, dict[str, Stat]]], species: str) -> list[str]:
    """Approaches by their species' mean return against random opponents, best first."""
    return sorted(stats, key=lambda a: -stats[a][species]["return"].mean)


def verdict(stats: dict[str, dict[str, dict[str, Stat]]], trained: list[str]) -> list[str]:
    """Plain sentences: who wins per species, by how much, with the difference's interval and
    the number of seeds behind it; "inconclusive: too few seeds" below ``MIN_SEEDS``."""
    lines = []
    for species in SPECIES:
        order = [a for a in ranking(stats, species) if a in trained]
        if len(order) < 2:
            continue
        best, second = order[0], order[1]
        a, b = stats[best][species]["return"], stats[second][species]["return"]
        head = (
            f"**{species}** ({_seeds(a, b)}): `{best}` has the highest return against random "
            f"opponents, {a.mean:.3f} (95% CI {a.ci[0]:.3f} to {a.ci[1]:.3f}), ahead of "
            f"`{second}` ({b.mean:.3f}, {b.ci[0]:.3f} to {b.ci[1]:.3f}) by "
            f"{a.mean - b.mean:.3f}"
        )
        try:
            lo, hi = difference_ci(a, b)
        except ValueError:
            lines.append(
                f"{head}; not compared: `{best}` has {a.seeds} seeds x {a.episodes_per_seed} "
                f"episodes and `{second}` {b.seeds} x {b.episodes_per_seed}, and a paired "
                "difference needs equal counts."
            )
            continue
        interval = f"95% CI of the difference, paired t over seeds: {lo:.3f} to {hi:.3f}"
        if min(a.seeds, b.seeds) < MIN_SEEDS:
            ending = (
                f" ({interval}); inconclusive: too few seeds ({min(a.seeds, b.seeds)}; at "
                f"least {MIN_SEEDS} per player are needed to judge a lead)."
            )
        elif lo <= 0 <= hi:
            ending = f" ({interval}); it includes 0, so this lead is not established."
        else:
            ending = f" ({interval}); it excludes 0, so the lead holds at this budget."
        lines.append(head + ending)
    return lines


def _seeds(a: Stat, b: Stat) -> str:
    return f"{a.seeds} seeds" if a.seeds == b.seeds else f"{a.seeds} vs {b.seeds} seeds"


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _failed_md(failed: list[dict[str, Any]]) -> str:
    if not failed:
        return ""
    lines = [
        "",
        "## Failed trials",
        "",
        "These trials failed; every table above leaves them out (their approach has fewer "
        "seeds). `bioflux study --resume` retries exactly these.",
        "",
        "| approach | seed | error | log |",
        "|---|---|---|---|",
    ]
    for f in failed:
        error = f["error"].replace("|", "\\|")
        lines.append(f"| `{f['approach']}` | {f['seed']} | {error} | `{f['log']}` |")
    return "\n".join(lines) + "\n"


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
        "per-seed means (ddof 1); sd episodes = std over all episodes; CI = 95% t-interval "
        "over the per-seed means (one seed: over its episodes). Baselines have no training "
        "seeds; an ensemble's seeds are its members' training seeds.",
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
        if not rows:  # every trial of it failed (listed below)
            continue

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
        "mean over seeds, band: min to max over seeds; dashed: transfer approaches, whose "
        "source's training is not on the axis), `crossplay_capture_rate.png`.",
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
            # a plug-in that trains itself (the coefficient search) reports one row per trial
            search = search or not get_algorithm(t["algorithm"]).trains_through_rllib
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
        transfer = study.is_transfer(approach)
        if transfer:  # dashed, and its source named: its curve does not start from scratch
            src = study.source(approach) or study.approaches[approach].init_from
            what += f", transfer from {src}" if src else ", curriculum: all stages"
        label = f"{approach} ({what}; {len(curves)} seeds)"
        ax.plot(grid, ys.mean(0), color=colour, lw=2, ls="--" if transfer else "-", label=label)
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
    failed: list[dict[str, Any]] | None = None,
    realism: dict[str, Any] | None = None,
    transfer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``study.md``, ``study.json`` and the PNGs; returns the JSON document. ``failed``:
    the trials that failed (``trials.run_trials``), listed with their reasons; ``realism``:
    ``bioflux.study.realism.ecology_realism``'s section (None: left out); ``transfer``:
    ``bioflux.study.transfer.transfer_section``'s (None: the study has no transfer approach)."""
    failed = failed or []
    stats = species_stats(study, everyone, games)
    heat = crossplay_matrix(everyone, games)
    plot_heatmap(heat, folder.heatmap)
    plot_learning_curves(study, trials, folder.curves)
    files = {
        "markdown": str(folder.report_md),
        "learning_curves": str(folder.curves),
        "heatmap": str(folder.heatmap),
    }
    if transfer and transfer.get("pairs"):
        files["transfer_curves"] = str(
            plot_transfer_curves(transfer, folder.curves.with_name("transfer_curves.png"))
        )
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
        "failed_trials": failed,
        "ecology_realism": realism,
        "transfer": transfer,
        "episodes": {f"{p}|{q}": arrays.to_dict() for (p, q), arrays in games.items()},
        "files": files,
    }
    folder.report_json.write_text(json.dumps(doc, indent=2))
    folder.report_md.write_text(
        markdown(study, stats, heat, trials, wall_s)
        + "\n".join(transfer_markdown(transfer) + [""] if transfer else [])
        + "\n".join(realism_markdown(realism))
        + _failed_md(failed)
    )
    return doc
