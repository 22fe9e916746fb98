"""The study report's Transfer section: transfer approaches against their from-scratch ones.

A transfer approach starts from trained modules (``init_from``: another approach of the
study, whose same-seed model it starts from, or a model path) or trains a curriculum
(``stages:`` in its config, ending in the study's world). Each is compared with its
from-scratch counterpart (``compare_to``, or the approach with the same config) on its
learning curve in the **target world**, the study's world:

- **x: target agent-steps**: the agent-steps the trial trained in the study's world, from 0.
  The source's training is not on this axis: an ``init_from`` source's steps are its own
  trial's, and a curriculum's earlier stages are left out (its curve is the last stage's
  rows, their agent-steps counted from the end of the stage before);
- **y: the smoothed capture rate during training** (``capture_rate`` of ``metrics.jsonl``,
  the learning-curve plot's);
- **agent-steps to threshold**: per seed, the target agent-steps of the first iteration whose
  capture rate is at least the threshold (``transfer.threshold``; default 1.5 x the
  random-vs-random capture rate of the study's cross-play); a seed whose curve never reaches
  it is *censored*: it is counted as "not reached", never averaged, and the mean and 95%
  t-interval are over the seeds that reached it (their number is always shown);
- **mean capture rate (normalised area under the curve)**: per seed, the area under the
  curve divided by the target agent-steps: each iteration's value covers the agent-steps
  since the previous valued iteration (the first covers those from 0), so this is the
  agent-step-weighted mean of the curve over the run; mean and 95% t-interval over seeds,
  and the paired difference transfer minus scratch (t over the seeds both trained);
- **source cost**: per seed, the agent-steps and seconds spent before the target world: the
  source trials' (the whole ``init_from`` chain, each trial's agent-steps and wall time) plus
  a curriculum's earlier stages (their agent-steps and training time); mean over seeds. A
  model-path source was trained outside the study: its cost is not known here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bioflux.artifacts import RunFolder
from bioflux.study.config import StudyConfig
from bioflux.study.intervals import t_interval

#: The metrics row key of the curve (the learning-curve plot's).
METRIC = "capture_rate"
#: The default threshold: this many times the random-vs-random capture rate.
RANDOM_FACTOR = 1.5


def target_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The rows of the target world (a curriculum's last stage; else all) and what came
    before them: ``{"agent_steps", "time_s"}`` at the end of the stage before (0 without)."""
    last = max((r.get("stage") or 1 for r in rows), default=1)
    before = [r for r in rows if (r.get("stage") or 1) < last]
    target = [r for r in rows if (r.get("stage") or 1) == last]
    prior = {
        "agent_steps": float(before[-1]["agent_steps"]) if before else 0.0,
        "time_s": float(before[-1]["time_s"]) if before else 0.0,
    }
    return target, prior


def target_curve(rows: list[dict[str, Any]], metric: str = METRIC) -> np.ndarray:
    """``(n, 2)``: target agent-steps (from 0) and the metric, for the rows that have it."""
    target, prior = target_rows(rows)
    pts = [
        (float(r["agent_steps"]) - prior["agent_steps"], float(r[metric]))
        for r in target
        if r.get(metric) is not None
    ]
    return np.array(pts, dtype=float).reshape(-1, 2)


def steps_to_threshold(curve: np.ndarray, threshold: float) -> float | None:
    """The x of the first point whose value is at least ``threshold``; None: never."""
    hit = np.nonzero(curve[:, 1] >= threshold)[0]
    return float(curve[hit[0], 0]) if len(hit) else None


def mean_over_run(curve: np.ndarray) -> float | None:
    """Area under the step curve (each value covers the x since the previous point, the first
    from 0) over the last x: the x-weighted mean of the values. None: no points."""
    if len(curve) == 0 or curve[-1, 0] <= 0:
        return None
    widths = np.diff(np.concatenate([[0.0], curve[:, 0]]))
    return float(np.sum(widths * curve[:, 1]) / curve[-1, 0])


def _summary(
    values: list[float], lower: float | None = None, upper: float | None = None
) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds (no interval with one seed), the interval kept
    within ``[lower, upper]`` (a rate's within [0, 1], agent-steps' above 0)."""
    if not values:
        return {"mean": None, "ci95": None, "seeds": 0}
    lo, hi = t_interval(np.array(values))
    lo = lo if lower is None else max(lower, lo)
    hi = hi if upper is None else min(upper, hi)
    return {
        "mean": float(np.mean(values)),
        "ci95": [lo, hi] if len(values) > 1 else None,
        "seeds": len(values),
    }


def _rows(trial: dict[str, Any]) -> list[dict[str, Any]]:
    return RunFolder(Path(trial["metrics"]).parent).read_metrics()


def approach_curves(
    trials: dict[tuple[str, int], dict[str, Any]], label: str, seeds: list[int], threshold: float
) -> dict[str, Any]:
    """Per seed and over seeds: target agent-steps, steps to threshold, mean over the run."""
    per_seed = []
    for seed in seeds:
        trial = trials.get((label, seed))
        if trial is None:
            continue
        curve = target_curve(_rows(trial))
        per_seed.append(
            {
                "seed": seed,
                "target_agent_steps": float(curve[-1, 0]) if len(curve) else None,
                "steps_to_threshold": steps_to_threshold(curve, threshold),
                "mean_capture_rate": mean_over_run(curve),
                "curve": curve.tolist(),
            }
        )
    reached = [s["steps_to_threshold"] for s in per_seed if s["steps_to_threshold"] is not None]
    means = [s["mean_capture_rate"] for s in per_seed if s["mean_capture_rate"] is not None]
    return {
        "per_seed": per_seed,
        "steps_to_threshold": {
            **_summary(reached, lower=0.0),
            "reached": len(reached),
            "of": len(per_seed),
        },
        "mean_capture_rate": _summary(means, lower=0.0, upper=1.0),
    }


def source_cost(
    study: StudyConfig, trials: dict[tuple[str, int], dict[str, Any]], label: str, seed: int
) -> dict[str, Any]:
    """What was trained before ``label``'s target world, for ``seed`` (module docstring)."""
    trial = trials.get((label, seed))
    agent_steps = wall_s = 0.0
    parts: list[str] = []
    if trial is not None:
        _, prior = target_rows(_rows(trial))
        if prior["agent_steps"]:
            agent_steps += prior["agent_steps"]
            wall_s += prior["time_s"]
            parts.append(f"{label}'s earlier curriculum stages")
    known = True
    src = study.source(label)
    at = label
    while src is not None:
        done = trials.get((src, seed))
        if done is None:
            known = False
            break
        agent_steps += float(done.get("agent_steps") or 0)
        wall_s += float(done.get("wall_s") or 0)
        parts.append(f"{src} seed {seed}")
        at, src = src, study.source(src)
    path = study.approaches[at].init_from
    if path is not None and study.source(at) is None:
        known = False  # trained outside the study
        parts.append(f"model {path} (not trained in this study)")
    return {
        "seed": seed,
        "agent_steps": agent_steps if known else None,
        "wall_s": round(wall_s, 1) if known else None,
        "parts": parts,
    }


def kind(study: StudyConfig, label: str) -> str:
    """How ``label`` transfers, in words."""
    src = study.source(label)
    how = []
    if src is not None:
        how.append(f"starts from `{src}` (same seed)")
    elif study.approaches[label].init_from is not None:
        how.append(f"starts from `{study.approaches[label].init_from}`")
    exp = study.experiment(label, study.seeds[0])
    if exp.stages:
        how.append(f"curriculum of {len(exp.stages)} stages, the last the study's world")
    if not how:
        how.append("starts from training.init_from")
    return "; ".join(how)


def transfer_section(
    study: StudyConfig, trials: list[dict[str, Any]], random_capture_rate: float | None
) -> dict[str, Any] | None:
    """The Transfer section of ``study.json`` (None: the study has no transfer approach).
    ``random_capture_rate``: the random-vs-random capture rate of the cross-play (the default
    threshold's base; None when the random baseline did not play)."""
    pairs = study.transfer_pairs()
    if not pairs:
        return None
    if study.transfer.threshold is not None:
        threshold, how = study.transfer.threshold, "transfer.threshold"
    elif random_capture_rate is not None:
        threshold = RANDOM_FACTOR * random_capture_rate
        how = (
            f"{RANDOM_FACTOR:g} x the random-vs-random capture rate of the cross-play "
            f"({random_capture_rate:.3f})"
        )
        if threshold > 1:
            how += "; above 1, so no run reaches it: set transfer.threshold"
    else:
        return {"error": "no threshold: set transfer.threshold or keep the random baseline"}
    by = {(t["approach"], t["seed"]): t for t in trials}
    out = []
    for label, scratch in pairs:
        curves = {a: approach_curves(by, a, study.seeds, threshold) for a in (label, scratch)}
        mine = {s["seed"]: s["mean_capture_rate"] for s in curves[label]["per_seed"]}
        theirs = {s["seed"]: s["mean_capture_rate"] for s in curves[scratch]["per_seed"]}
        paired = [
            mine[s] - theirs[s]
            for s in study.seeds
            if mine.get(s) is not None and theirs.get(s) is not None
        ]
        costs = [source_cost(study, by, label, s) for s in study.seeds if (label, s) in by]
        known = [c for c in costs if c["agent_steps"] is not None]
        out.append(
            {
                "approach": label,
                "compare_to": scratch,
                "kind": kind(study, label),
                "curves": curves,
                "mean_capture_rate_difference": _summary(paired),
                "source_cost": {
                    "agent_steps": _mean([c["agent_steps"] for c in known]),
                    "wall_s": _mean([c["wall_s"] for c in known]),
                    "known_for_seeds": len(known),
                    "per_seed": costs,
                },
            }
        )
    return {
        "metric": METRIC,
        "threshold": threshold,
        "threshold_from": how,
        "x": "target agent-steps: trained in the study's world by the trial itself; the "
        "source's training (init_from, a curriculum's earlier stages) is not counted",
        "pairs": out,
    }


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _ci(s: dict[str, Any], spec: str) -> str:
    if s["mean"] is None:
        return "n/a"
    ci = s["ci95"]
    return f"{s['mean']:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else f"{s['mean']:{spec}}"


def _steps_cell(s: dict[str, Any]) -> str:
    st = s["steps_to_threshold"]
    if not st["reached"]:
        return f"not reached in {st['of']}/{st['of']} seeds"
    cell = _ci(st, ",.0f")
    if st["reached"] < st["of"]:
        missed, n = st["of"] - st["reached"], st["of"]
        over = "the seed" if st["reached"] == 1 else f"the {st['reached']} seeds"
        cell += f" (over {over} that reached it; not reached in {missed}/{n})"
    else:
        cell += f" ({st['reached']}/{st['of']} seeds)"
    return cell


def markdown(section: dict[str, Any] | None) -> list[str]:
    """The Transfer section of ``study.md`` (no lines when there is none)."""
    if section is None:
        return []
    lines = ["", "## Transfer", ""]
    if "error" in section:
        return [*lines, section["error"]]
    lines += [
        "Each transfer approach against its from-scratch counterpart, on the learning curve in "
        "the study's world. x: target agent-steps, the agent-steps the trial trained in the "
        "study's world (a source's training and a curriculum's earlier stages are not "
        "counted; their cost is the last column). y: the smoothed capture rate during training "
        f"(`{section['metric']}`). Threshold: {section['threshold']:.3f} "
        f"({section['threshold_from']}); agent-steps to it: the first iteration at or above "
        "it, mean [95% t-interval] over the seeds that reached it (seeds that never did are "
        "counted, not averaged). Mean capture rate: the area under the curve over the target "
        "agent-steps, mean [95% t-interval] over seeds. Source cost: mean over seeds of the "
        "agent-steps and seconds trained before the target world. The curve is self-play: "
        "a transfer approach's prey start trained too, so read it with the evaluation against "
        "random opponents above, which compares the two at equal target agent-steps. Plot: "
        "`transfer_curves.png`.",
        "",
        "| approach | how | agent-steps to threshold | mean capture rate "
        "| vs scratch (paired) | source cost: agent-steps | source cost: s |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in section["pairs"]:
        label, scratch = pair["approach"], pair["compare_to"]
        cost = pair["source_cost"]
        for name, how in ((label, pair["kind"]), (scratch, "from scratch")):
            c = pair["curves"][name]
            diff = _ci(pair["mean_capture_rate_difference"], "+.3f") if name == label else ""
            src = (
                (_num(cost["agent_steps"], ",.0f"), _num(cost["wall_s"], ".0f"))
                if name == label
                else ("0", "0")
            )
            lines.append(
                f"| `{name}` | {how} | {_steps_cell(c)} "
                f"| {_ci(c['mean_capture_rate'], '.3f')} | {diff} | {src[0]} | {src[1]} |"
            )
    return lines


def plot_transfer_curves(section: dict[str, Any], path: Path) -> Path:
    """``transfer_curves.png``: per pair, the capture rate during training against the target
    agent-steps, each seed thin and the mean over seeds (on the union of the seeds' x) thick;
    the transfer approach dashed; the threshold dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = section.get("pairs") or []
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(7 * max(1, len(pairs)), 4.2))
    axes = np.atleast_1d(axes)
    for ax, pair in zip(axes, pairs):
        for i, name in enumerate((pair["compare_to"], pair["approach"])):
            colour, style = f"C{i}", "--" if name == pair["approach"] else "-"
            curves = [np.array(s["curve"]) for s in pair["curves"][name]["per_seed"]]
            curves = [c for c in curves if len(c)]
            for c in curves:
                ax.plot(c[:, 0] / 1e6, c[:, 1], color=colour, ls=style, lw=0.7, alpha=0.5)
            if curves:
                grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
                grid = grid[grid <= min(c[-1, 0] for c in curves)]
                mean = np.mean([np.interp(grid, c[:, 0], c[:, 1]) for c in curves], axis=0)
                what = "from scratch" if name == pair["compare_to"] else pair["kind"]
                ax.plot(
                    grid / 1e6,
                    mean,
                    color=colour,
                    ls=style,
                    lw=2,
                    label=f"{name} ({what}; mean of {len(curves)} seeds)",
                )
        ax.axhline(section["threshold"], color="grey", ls=":", lw=1, label="threshold")
        ax.set_xlabel("target agent-steps trained in the study's world (millions)")
        ax.set_ylabel("capture rate during training (self-play)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{pair['approach']} vs {pair['compare_to']}: thin lines are seeds")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def random_capture_rate(games: dict[tuple[str, str], Any]) -> float | None:
    """The random-vs-random capture rate of the cross-play (None: random did not play)."""
    arrays = games.get(("random", "random"))
    return None if arrays is None else float(np.mean(arrays.capture_rate))
