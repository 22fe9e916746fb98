"""Evaluation: any predator policy against any prey policy, many episodes in parallel.

Episodes run on the batched core (``BatchedWorld``): up to ``num_worlds`` episodes step
together and each species' policy sees one batch of observations per step. Results are
deterministic for a given ``seed``.

Metrics (per species, over episodes; "return" is the mean over the species' agents of each
agent's summed reward):

- ``return_mean``: the mean over episodes of the species' mean per-agent return;
  ``return_std_episodes``: the std across episodes of that per-episode mean;
  ``return_std_agents``: the std over every (episode, agent) return, the spread between agents;
- ``capture_rate``: ``bioflux.rollout.capture_rate``, the fraction of the prey that lived in the
  episode (alive at the start plus newborns) that were captured;
- ``success_rate``: predators — the capture rate; prey — the survival rate, the fraction of
  prey that were never captured;
- ``return_ci95``, ``success_rate_ci95``: 95% bootstrap intervals of those two means over the
  episodes (``bootstrap_ci`` with one seed: episodes resampled with replacement, 2000 draws,
  percentile interval). They say how far another set of episodes could move the mean; they
  do not cover training seeds (``bioflux study`` does);
- ``episode_length_mean``: steps per episode;
- ``first_capture_step_mean``: step of the first capture, over episodes that had one
  (``first_capture_fraction`` says how many had one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.policies import Policy
from bioflux.rollout import EpisodeRecord, EpisodeStats, play_step

BOOTSTRAP_DRAWS = 2000


def bootstrap_means(
    per_seed: list[np.ndarray], draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> np.ndarray:
    """``draws`` bootstrap replicates of the mean over seeds of per-seed episode means,
    resampling seeds and then episodes within each seed (with one seed: episodes only). The
    same ``seed`` and sizes draw the same indices, so two players' replicates are paired."""
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    stats = np.empty(draws)
    for d in range(draws):
        picked = rng.integers(0, k, size=k)
        stats[d] = np.mean(
            [
                per_seed[i][rng.integers(0, len(per_seed[i]), len(per_seed[i]))].mean()
                for i in picked
            ]
        )
    return stats


def percentile_ci(replicates: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap replicates."""
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_ci(
    per_seed: list[np.ndarray], draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of ``bootstrap_means``."""
    return percentile_ci(bootstrap_means(per_seed, draws, seed))


def run_episodes(
    predator: Policy,
    prey: Policy,
    env_config: EnvConfig,
    episodes: int,
    seed: int = 0,
    num_worlds: int = 16,
    greedy: bool = False,
    progress: bool = False,
) -> list[EpisodeRecord]:
    """Play ``episodes`` episodes; returns one record per episode, in a seed-determined order."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} is out of range; allowed: >= 1")
    B = min(num_worlds, episodes)
    world = BatchedWorld(env_config.require_agent_identity("evaluation"), num_worlds=B, seed=seed)
    world.reset()
    rng = np.random.default_rng(seed + 1)
    policies = {"predator": predator, "prey": prey}
    stats = EpisodeStats(world)
    started = B
    records: list[EpisodeRecord] = []
    bar = tqdm(total=episodes, desc="episodes", disable=not progress, leave=False)
    actions = np.zeros(world.alive.shape, dtype=np.int64)
    while len(records) < episodes:
        res = play_step(world, policies, rng, greedy, actions)
        stats.update(res)
        for w in np.flatnonzero(res.done):
            records.append(stats.record(w))
            bar.update(1)
            if started < episodes:
                world.reset(worlds=[w])
                started += 1
            stats.reset([w])
    bar.close()
    return records[:episodes]


def summarize(records: list[EpisodeRecord]) -> dict[str, dict[str, Any]]:
    """Per-species metrics (see the module docstring) from episode records."""
    capture_rate = np.array([r.capture_rate for r in records])
    lengths = np.array([r.length for r in records])
    firsts = [r.first_capture_step for r in records if r.first_capture_step is not None]
    shared = {
        "episodes": len(records),
        "capture_rate": float(capture_rate.mean()),
        "episode_length_mean": float(lengths.mean()),
        "episode_length_std": float(lengths.std()),
        "first_capture_step_mean": float(np.mean(firsts)) if firsts else None,
        "first_capture_fraction": len(firsts) / len(records),
    }
    out = {}
    for species in SPECIES:
        per_episode = np.array([r.mean_return(species) for r in records])
        per_agent = np.concatenate([r.returns(species) for r in records])
        success = capture_rate if species == "predator" else 1.0 - capture_rate
        out[species] = {
            "return_mean": float(per_episode.mean()),
            "return_ci95": bootstrap_ci([per_episode]),
            "return_std_episodes": float(per_episode.std()),
            "return_std_agents": float(per_agent.std()) if per_agent.size else 0.0,
            "success_rate": float(success.mean()),
            "success_rate_ci95": bootstrap_ci([success]),
            "success_rate_std_episodes": float(success.std()),
            **shared,
        }
    return out


def evaluate(
    predator: str | Path | Policy,
    prey: str | Path | Policy,
    env_config: EnvConfig,
    episodes: int = 20,
    seed: int = 0,
    greedy: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Load both policies (built-in names or checkpoint paths; ``Policy`` objects are used as
    they are) and return the metrics dict."""
    from bioflux.policies import load_policy

    def policy(spec: str | Path | Policy, species: str) -> Policy:
        return spec if hasattr(spec, "probabilities") else load_policy(spec, species)

    pred_policy, prey_policy = policy(predator, "predator"), policy(prey, "prey")
    records = run_episodes(
        pred_policy, prey_policy, env_config, episodes, seed=seed, greedy=greedy, progress=progress
    )
    from bioflux.transfer import module_lineage

    return {
        "predator_policy": getattr(predator, "name", str(predator)),
        "prey_policy": getattr(prey, "name", str(prey)),
        "episodes": episodes,
        "seed": seed,
        "greedy": greedy,
        "env": env_config.to_dict(),
        # where each trained module started (None for built-ins): bioflux.transfer
        "lineage": {
            "predator": module_lineage(predator, "predator"),
            "prey": module_lineage(prey, "prey"),
        },
        "metrics": summarize(records),
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The evaluation table (one row per species) as Markdown, after a line per trained module
    saying where it started (its lineage)."""
    from bioflux.transfer import lineage_text

    lines = [
        f"Predator: `{result['predator_policy']}` vs prey: `{result['prey_policy']}` "
        f"({result['episodes']} episodes, seed {result['seed']})",
        "",
        *[
            f"- {species} module: {text}  "
            for species, lineage in (result.get("lineage") or {}).items()
            if (text := lineage_text(lineage))
        ],
        *([""] if any((result.get("lineage") or {}).values()) else []),
        "| species | return per agent: mean ± std over episodes (std over agents) [95% CI] "
        "| success rate [95% CI] | capture rate | episode length | first capture (step) |",
        "|---|---|---|---|---|---|",
    ]
    for species, m in result["metrics"].items():
        first = m["first_capture_step_mean"]
        (r_lo, r_hi), (s_lo, s_hi) = m["return_ci95"], m["success_rate_ci95"]
        lines.append(
            f"| {species} | {m['return_mean']:.3f} ± {m['return_std_episodes']:.3f} "
            f"({m['return_std_agents']:.3f}) [{r_lo:.3f}, {r_hi:.3f}] "
            f"| {m['success_rate']:.3f} [{s_lo:.3f}, {s_hi:.3f}] | {m['capture_rate']:.3f} "
            f"| {m['episode_length_mean']:.1f} | {'—' if first is None else f'{first:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Bar chart of the capture rate and both species' returns for one or more evaluations,
    with 95% bootstrap intervals over episodes as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def short(policy: str) -> str:  # "outputs/.../ppo_demo/final" -> "ppo_demo/final"
        path = Path(policy)
        return f"{path.parent.name}/{path.name}" if path.name in ("final", "best") else path.name

    labels = [
        f"predator: {short(r['predator_policy'])}\nprey: {short(r['prey_policy'])}" for r in results
    ]
    x = np.arange(len(results))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))

    def panel(species: str, mean: str, ci: str) -> tuple[list[float], np.ndarray]:
        """Means and their 95% intervals as error-bar extents."""
        values = [r["metrics"][species][mean] for r in results]
        bounds = np.array([r["metrics"][species][ci] for r in results])  # (n, 2)
        return values, np.abs(bounds.T - np.array(values))

    panels = [
        (
            "capture rate (predators' success)",
            *panel("predator", "success_rate", "success_rate_ci95"),
        ),
        ("predator return per agent", *panel("predator", "return_mean", "return_ci95")),
        ("prey return per agent", *panel("prey", "return_mean", "return_ci95")),
    ]
    for ax, (title, values, err) in zip(axes, panels):
        ax.bar(x, values, yerr=err, color=["#d22" if "return" not in title else "#467"] * len(x))
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title)
        if "capture" in title:
            ax.set_ylim(0, 1)  # a rate: 0.02 must look small
    fig.suptitle("error bars: 95% bootstrap interval over episodes", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: Where ``bioflux evaluate`` writes without ``--out``.
DEFAULT_REPORT_DIR = Path("outputs/evaluation")


def report_folder(out: str | Path | None, stem: str = "evaluation") -> tuple[Path, str]:
    """The folder a report goes to, and a line saying so. ``out`` given: that folder (an
    earlier report there is replaced, and the line says it). None: ``DEFAULT_REPORT_DIR``, or
    when it holds a report the first ``<DEFAULT_REPORT_DIR>_<n>`` that does not, so that a
    second evaluation never overwrites the first silently."""
    if out is not None:
        out = Path(out)
        if (out / f"{stem}.json").exists():
            return out, f"writing the report to {out}/ (replacing the report there)"
        return out, f"writing the report to {out}/"
    out, n = DEFAULT_REPORT_DIR, 1
    while (out / f"{stem}.json").exists():
        n += 1
        out = DEFAULT_REPORT_DIR.with_name(f"{DEFAULT_REPORT_DIR.name}_{n}")
    if n == 1:
        return out, f"writing the report to {out}/"
    return out, (
        f"writing the report to {out}/ ({DEFAULT_REPORT_DIR}/ holds an earlier one; --out "
        "chooses the folder)"
    )


def write_report(results: list[dict[str, Any]], out_dir: str | Path, stem: str = "evaluation"):
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text("\n".join(markdown_table(r) for r in results))
    plot(results, out / f"{stem}.png")
    return {k: str(out / f"{stem}.{k}") for k in ("json", "md", "png")}


def record_episode(
    predator: Policy,
    prey: Policy,
    env_config: EnvConfig,
    path: str | Path,
    seed: int = 0,
    greedy: bool = False,
    cell_pixels: int = 8,
) -> dict[str, Any]:
    """Play one episode and write it as a GIF (``.gif``) or PNG strip (``.png``). Each frame
    is captioned with the policies, the step, both populations and the captures so far, above
    a colour legend; a ring marks each prey captured in that step."""
    from bioflux.envs.rendering import annotate, mark_cells, render_rgb, save_frames

    world = BatchedWorld(env_config, num_worlds=1, seed=seed)
    world.reset()
    rng = np.random.default_rng(seed + 1)
    policies = {"predator": predator, "prey": prey}
    cell_pixels = max(cell_pixels, 384 // max(env_config.height, env_config.width))

    def short(policy: Policy) -> str:  # "outputs/.../ppo_demo/final:predator" -> "ppo_demo/final"
        parts = Path(str(getattr(policy, "name", policy)).rsplit(":", 1)[0]).parts
        return "/".join(parts[-2:]) if len(parts) > 1 else str(getattr(policy, "name", policy))

    names = f"predator: {short(predator)}   prey: {short(prey)}"

    def frame(captures: int, caught: np.ndarray | None = None) -> np.ndarray:
        picture = render_rgb(world, 0, cell_pixels)
        if caught is not None and caught.any():
            picture = mark_cells(picture, world.pos[0, caught], cell_pixels)
        alive = world.alive[0]
        counts = (
            f"step {int(world.t[0])}/{env_config.max_steps}   predators "
            f"{int((alive & world.is_predator).sum())}   prey "
            f"{int((alive & ~world.is_predator).sum())}   captures {captures}"
        )
        return annotate(picture, [names, counts])

    frames = [frame(0)]
    actions = np.zeros(world.alive.shape, dtype=np.int64)
    captures = 0
    while not world.done[0]:
        result = play_step(world, policies, rng, greedy, actions)
        captures += int(result.captured[0])
        frames.append(frame(captures, result.caught[0]))
    saved = save_frames(frames, path)
    return {"path": str(saved), "steps": int(world.t[0]), "captures": captures}
