"""``bioflux study --plan``: what a study will cost on this machine, before it runs.

For every approach, short trials: ``--plan-iterations`` training iterations, after the
iterations an off-policy approach samples before it learns (``learning_starts``), each in a
Ray task with the trial's own CPU and GPU share. One approach at a time, but as many of its
seeds at once as the study runs trials at once, so each is timed on a machine as busy as the
study's (two 1-CPU trials on 2 cores each ran ~30% slower than one alone). From them:

- **time per trial** = the setup (everything but the iterations) + the warm-up iterations as
  timed + the other iterations the budget needs × the median time of a learning iteration.
  For an ``episodes`` budget, the env steps it needs are the episodes × the mean episode
  length seen (the step limit when no episode ended during the plan; episodes that end
  earlier make that an overestimate);
- **peak memory per trial** = the trial process's peak RSS (its EnvRunners, if any, are
  other processes and are not counted);
- **trials in total**: the trials scheduled greedily, in the study's order, on as many slots
  as run at once: ``max_concurrent``, or as the cluster's CPUs (and GPUs, with
  ``gpus_per_trial``) allow; wave after wave, as the study runs them when approaches start
  from others (``init_from``: ``StudyConfig.waves``). A dependent approach is timed from
  scratch (its source's model does not exist yet; the same modules, so the same time per
  iteration), and a curriculum approach stage by stage, each on its own world (its earlier
  stages' stops at their measured iteration times, the last stage at the study's budget);
- **cross-play**: the mean time of an evaluation episode (each approach's plan model
  against itself) × the episodes every pairing plays, shared by ``evaluation.workers``
  processes (one per CPU by default); on a GPU (``evaluation.device``), the
  time of one pairing's episodes played at once, timed in this process after a warm-up.

Nothing is written to the study folder: ``bioflux study`` then starts as usual.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bioflux.study.config import StudyConfig


def _plan_trial(
    study_json: dict[str, Any], label: str, iterations: int, root: str, seed: int | None = None
):
    """Train ``label`` (with ``seed``, default the study's first) for ``iterations``
    iterations; returns timings, rows and peak RSS."""
    import resource

    from bioflux.artifacts import RunFolder
    from bioflux.evaluation import run_episodes
    from bioflux.policies import load_policy
    from bioflux.training import train

    study = StudyConfig(**study_json)
    exp = study.experiment(label, study.seeds[0] if seed is None else seed)
    earlier_s = 0.0
    if exp.stages:  # the earlier stages timed on their own worlds, then the last as a trial
        earlier_s = _earlier_stages_s(exp, iterations, root)
        exp = exp.model_copy(update={"stages": None})
    warmup = warmup_iterations(exp)
    iterations += warmup
    exp = exp.model_copy(update={"stop": _iterations_only(exp.stop, iterations)})
    t0 = time.perf_counter()
    summary = train(
        exp, output=Path(root) / "runs", models=Path(root) / "models", log=lambda _: None
    )
    wall = time.perf_counter() - t0
    rows = RunFolder(Path(root) / "runs" / exp.name).read_metrics()
    model = summary["models"]["final"]
    # one batch of worlds, as cross-play plays them (``run_episodes``: up to 16 at once)
    episodes = min(16, study.evaluation.episodes)
    t0 = time.perf_counter()
    run_episodes(
        load_policy(model, "predator"),
        load_policy(model, "prey"),
        exp.env_config,
        episodes,
        seed=study.evaluation.seed,
    )
    episode_s = (time.perf_counter() - t0) / episodes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux -> GB
    return {
        "wall_s": wall,
        "earlier_stages_s": earlier_s,
        "rows": rows,
        "warmup": warmup,
        "episode_s": episode_s,
        "peak_rss_gb": peak,
        "model": str(model),
    }


def _iterations_only(stop: Any, iterations: int) -> Any:
    """``stop`` replaced by a stop after ``iterations`` iterations (no other criterion)."""
    return stop.model_copy(
        update={"iterations": iterations, "env_steps": None, "episodes": None, "time_s": None}
    )


def _earlier_stages_s(exp: Any, iterations: int, root: str) -> float:
    """A curriculum's stages before its last: each trained ``iterations`` iterations on its
    own world, then its stop (iterations, env steps, episodes or seconds) at the median
    iteration's time, plus the measured setup."""
    from bioflux.artifacts import RunFolder
    from bioflux.training import stage_experiment, train

    total = 0.0
    for index in range(len(exp.stages) - 1):
        stage = stage_experiment(exp, index, None)
        stop = stage.stop
        timed = stage.model_copy(
            update={
                "name": f"{exp.name}_plan_stage{index + 1}",
                "stop": _iterations_only(stop, iterations),
            }
        )
        t0 = time.perf_counter()
        train(timed, output=Path(root) / "runs", models=Path(root) / "models", log=lambda _: None)
        wall = time.perf_counter() - t0
        rows = RunFolder(Path(root) / "runs" / timed.name).read_metrics()
        times = [r.get("iteration_time_s") or 0.0 for r in rows]
        per_iteration = statistics.median(times[1:] or times)
        setup = max(0.0, wall - sum(times))
        steps_per_iteration = max(1.0, rows[-1]["env_steps"] / len(rows))
        if stop.iterations is not None:
            n = stop.iterations
        elif stop.env_steps is not None:
            n = math.ceil(stop.env_steps / steps_per_iteration)
        elif stop.episodes is not None:
            n = math.ceil(stop.episodes * stage.env_config.max_steps / steps_per_iteration)
        else:
            n = math.ceil((stop.time_s or 0.0) / max(per_iteration, 1e-9))
        total += setup + n * per_iteration
    return total


def warmup_iterations(exp: Any) -> int:
    """Iterations an off-policy approach samples before it learns (``learning_starts`` over
    the env steps an iteration samples): their time is not a learning iteration's."""
    p = exp.params
    starts = getattr(p, "learning_starts", 0) or 0
    per = getattr(p, "env_steps_per_iteration", None) or getattr(p, "steps_per_iteration", None)
    return math.ceil(starts / per) if starts and per else 0


def _trial_estimate(study: StudyConfig, label: str, measured: dict[str, Any]) -> dict[str, Any]:
    rows = measured["rows"]
    # per-iteration wall times (the coefficient search's rows give only the running total)
    total = [r.get("time_s") or 0.0 for r in rows]
    times = [
        r.get("iteration_time_s") or (t - (total[i - 1] if i else 0.0))
        for i, (r, t) in enumerate(zip(rows, total))
    ]
    warm = measured.get("warmup", 0)
    learning = times[max(1, warm) :] or times[-1:]  # after the first and the warm-up ones
    per_iteration = statistics.median(learning)
    setup = max(0.0, measured["wall_s"] - sum(times))
    warm_s = sum(times[:warm])
    steps_per_iteration = rows[-1]["env_steps"] / len(rows)
    budget = study.budget
    if budget.env_steps is not None:
        needed_steps = budget.env_steps
    elif budget.episodes is not None:
        length = (
            rows[-1].get("episode_length")
            or study.experiment(label, study.seeds[0]).env_config.max_steps
        )
        needed_steps = budget.episodes * length
    else:
        needed_steps = None
    if budget.iterations is not None:
        iterations = budget.iterations
    else:
        iterations = math.ceil(needed_steps / max(1.0, steps_per_iteration))
    cap = getattr(study.experiment(label, study.seeds[0]).params, "num_samples", None)
    if cap is not None:  # a coefficient search: at most num_samples trials (iterations)
        iterations = min(iterations, cap)
    return {
        "approach": label,
        "warmup_iterations": warm,
        "setup_s": round(setup, 1),
        "s_per_iteration": round(per_iteration, 3),
        "env_steps_per_iteration": round(steps_per_iteration),
        "iterations": iterations,
        "earlier_stages_s": round(measured.get("earlier_stages_s", 0.0), 1),
        "trial_s": round(
            measured.get("earlier_stages_s", 0.0)
            + setup
            + warm_s
            + max(0, iterations - warm) * per_iteration,
            1,
        ),
        "peak_rss_gb": round(measured["peak_rss_gb"], 2),
        "eval_episode_s": round(measured["episode_s"], 3),
    }


def _device_episode_s(study: StudyConfig, label: str, model: str) -> float:
    """Seconds per episode of one cross-play pairing on the GPU (every episode at once), after
    one warm-up pairing."""
    from bioflux.device_rollout import evaluation_device, run_episodes_on_device
    from bioflux.policies import load_policy

    ev, env = study.evaluation, study.experiment(label, study.seeds[0]).env_config
    policies = load_policy(model, "predator"), load_policy(model, "prey")
    device = evaluation_device(ev.device)
    run_episodes_on_device(*policies, env, ev.episodes, ev.seed, device)
    t0 = time.perf_counter()
    run_episodes_on_device(*policies, env, ev.episodes, ev.seed, device)
    return (time.perf_counter() - t0) / ev.episodes


def _mean_estimate(estimates: list[dict[str, Any]]) -> dict[str, Any]:
    """One approach's estimate from its copies' (seeds timed at once): the mean of the times,
    the largest peak memory."""
    out = dict(estimates[0])
    for key in ("setup_s", "s_per_iteration", "trial_s", "eval_episode_s"):
        out[key] = round(statistics.mean(e[key] for e in estimates), 3)
    out["peak_rss_gb"] = max(e["peak_rss_gb"] for e in estimates)
    out["copies"] = len(estimates)
    return out


def _slots(study: StudyConfig) -> int:
    import ray

    r = study.resources
    cpus = ray.cluster_resources().get("CPU", 1.0)
    slots = max(1, int(cpus // (r.cpus_per_trial + r.env_runners_per_trial)))
    if r.gpus_per_trial:
        slots = min(slots, max(1, int(ray.cluster_resources().get("GPU", 0) // r.gpus_per_trial)))
    return min(slots, r.max_concurrent) if r.max_concurrent else slots


def _makespan(durations: list[float], slots: int) -> float:
    """Greedy list scheduling in the given order: each trial starts on the first free slot."""
    free = [0.0] * slots
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free, default=0.0)


def trials_makespan(study: StudyConfig, trial_s: dict[str, float], slots: int) -> float:
    """The trials' makespan: wave after wave (``StudyConfig.waves``: a source's trials finish
    before its dependents start), each wave's trials greedily on ``slots``."""
    return sum(
        _makespan([trial_s[a] for a in wave for _ in study.seeds], slots) for wave in study.waves()
    )


def plan_study(
    study: StudyConfig,
    iterations: int = 3,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time a short trial of every approach; estimate the study (module docstring)."""
    import ray

    from bioflux.artifacts import init_ray
    from bioflux.device_rollout import evaluation_device
    from bioflux.study.crossplay import players
    from bioflux.study.trials import check_trial_fits

    if iterations < 2:
        raise ValueError(f"--plan-iterations={iterations} is out of range; allowed: >= 2")
    started = init_ray(address, log_to_driver=False)
    try:
        check_trial_fits(study)
        r = study.resources
        task = ray.remote(max_calls=1)(_plan_trial).options(
            num_cpus=r.cpus_per_trial,
            num_gpus=r.gpus_per_trial or 0,
            max_retries=0,  # max_calls=1 above: a fresh process per approach (its peak RSS)
        )
        per_approach = {}
        device = evaluation_device(study.evaluation.device)
        slots = _slots(study)
        copies = min(slots, len(study.seeds))
        workers = study.evaluation.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with tempfile.TemporaryDirectory(prefix="bioflux-plan-") as root:
            for label in study.approaches:
                at_once = f" ({copies} seeds at once, as the study runs)" if copies > 1 else ""
                log(f"plan: timing {iterations} iterations of {label}{at_once} ...")
                study_json = study.model_dump(mode="json")
                measured = ray.get(
                    [
                        task.remote(study_json, label, iterations, root, seed)
                        for seed in study.seeds[:copies]
                    ]
                )
                if device is not None:  # cross-play runs in this process, on its GPU
                    for m in measured:
                        m["episode_s"] = _device_episode_s(study, label, m["model"])
                per_approach[label] = _mean_estimate(
                    [_trial_estimate(study, label, m) for m in measured]
                )
    finally:
        if started:
            ray.shutdown()
    durations = [per_approach[label]["trial_s"] for label, _ in study.trials()]
    trials_s = trials_makespan(study, {a: p["trial_s"] for a, p in per_approach.items()}, slots)
    for label in study.approaches:
        if study.experiment(label, study.seeds[0]).stages:
            per_approach[label]["note"] = "curriculum: every stage timed on its own world"
    fake_models = {(a, s): "plan" for a, s in study.trials()}
    n_players = len(players(study, fake_models))
    episode_s = statistics.mean(p["eval_episode_s"] for p in per_approach.values())
    crossplay_s = n_players**2 * study.evaluation.episodes * episode_s
    if device is None:  # the predators' rows shared by the workers (crossplay.cross_play)
        crossplay_s /= min(workers, n_players)
    plan = {
        "study": study.name,
        "approaches": per_approach,
        "trials": len(durations),
        "trials_at_once": slots,
        "waves": len(study.waves()),
        "trials_s": round(trials_s, 0),
        "crossplay_pairings": n_players**2,
        "crossplay_workers": 1 if device is not None else min(workers, n_players),
        "crossplay_s": round(crossplay_s, 0),
        "total_s": round(trials_s + crossplay_s, 0),
        "peak_rss_gb_per_trial": max(p["peak_rss_gb"] for p in per_approach.values()),
    }
    return plan


def plan_table(plan: dict[str, Any]) -> str:
    """The plan as a short text table."""
    lines = [
        f"plan for study {plan['study']!r} on this machine:",
        f"{'approach':<18} {'s/iter':>8} {'iters':>7} {'trial':>9} {'peak RSS':>9}",
    ]
    for label, p in plan["approaches"].items():
        note = f"  ({p['note']})" if p.get("note") else ""
        lines.append(
            f"{label:<18} {p['s_per_iteration']:>8.2f} {p['iterations']:>7d} "
            f"{_hms(p['trial_s']):>9} {p['peak_rss_gb']:>7.2f}GB{note}"
        )
    waves = plan.get("waves", 1)
    in_waves = f", in {waves} waves: sources first" if waves > 1 else ""
    lines += [
        f"trials: {plan['trials']} ({plan['trials_at_once']} at once{in_waves}) "
        f"~{_hms(plan['trials_s'])}",
        f"cross-play: {plan['crossplay_pairings']} pairings in {plan['crossplay_workers']} "
        f"process(es) ~{_hms(plan['crossplay_s'])}",
        f"total: ~{_hms(plan['total_s'])}",
    ]
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
