"""`bioflux study`: a tiny study end to end on real Ray Tune, resume, statistics, config rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bioflux.config import ConfigError
from bioflux.evaluation import bootstrap_ci
from bioflux.study import load_study, run_study
from bioflux.study.realism import ecology_realism
from bioflux.study.realism import markdown as realism_markdown
from bioflux.study.report import Stat, difference_ci, verdict
from tests.conftest import TINY

TINY_STUDY = {
    "name": "tiny_study",
    "env": TINY["env"],
    "budget": {"iterations": 1},
    "seeds": [0, 1],
    "approaches": {
        "ppo": {
            "config": "demo",
            "set": [
                "training.train_batch_size=200",
                "training.minibatch_size=100",
                "training.num_epochs=1",
                "training.hidden=[16]",
            ],
        },
        "lotka_volterra": {"config": "lotka_volterra", "set": ["training.episodes=2"]},
    },
    "baselines": ["random"],
    # ensembles train nothing: each seed's is built at evaluation from that seed's members
    "ensembles": {
        "ppo_lv": {"members": ["ppo", "lotka_volterra"], "combine": "vote"},
        "ppo_twice": {"members": ["ppo", "ppo"], "weights": [1, 3]},  # plays exactly as ppo
    },
    "evaluation": {"episodes": 6, "seed": 4242},
    # the calibrated lynx–hare world, small and short (the default is 100x100, 1200 steps)
    "ecology_realism": {"size": 40, "steps": 400, "burn_in": 50},
}
PLAYERS = ["ppo", "lotka_volterra", "ppo_lv", "ppo_twice", "random"]


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny_study.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = root / "tiny_study.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    lines: list[str] = []
    doc = run_study(load_study(path), output=root / "out", progress=False, log=lines.append)
    return root, path, doc, lines


def test_a_tiny_study_runs_end_to_end(finished):
    root, _, doc, lines = finished
    folder = root / "out" / "tiny_study"
    assert len(doc["trials"]) == 4
    assert any("4/4 trials done" in line for line in lines)  # one progress view
    for name in ("study.md", "study.json", "learning_curves.png", "crossplay_capture_rate.png"):
        assert (folder / name).stat().st_size > 500, name
    # cross-play: ((2 approaches + 2 ensembles) x 2 seeds + random) squared pairings
    assert len(doc["episodes"]) == 81
    assert doc["crossplay"]["approaches"] == PLAYERS


def test_the_report_carries_every_approach_species_and_statistic(finished):
    _, _, doc, _ = finished
    md = (finished[0] / "out" / "tiny_study" / "study.md").read_text()
    for approach in PLAYERS:
        for species in ("predator", "prey"):
            for metric in ("return", "success rate", "episode length"):
                stat = doc["evaluation"][approach][species][metric]
                assert set(stat) >= {"mean", "std_across_seeds", "std_across_episodes", "ci95"}
                assert stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1]
            assert f"| `{approach}` | {species} |" in md
    assert doc["evaluation"]["ppo"]["predator"]["return"]["seeds"] == 2
    assert doc["evaluation"]["random"]["prey"]["return"]["std_across_seeds"] is None
    assert "sd seeds" in md and "95% CI" in md and "## Verdict" in md
    assert set(doc["ranking"]["predator"]) == set(PLAYERS)


def test_resume_skips_finished_trials(finished):
    root, path, _, _ = finished
    folder = root / "out" / "tiny_study"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()}
    tune_runs = set((folder / "tune").iterdir())
    lines: list[str] = []
    run_study(load_study(path), output=root / "out", resume=True, progress=False, log=lines.append)
    assert "skipping 4 finished trial(s)" in lines
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()} == before
    assert set((folder / "tune").iterdir()) == tune_runs  # Tune was not run again
    with pytest.raises(ValueError, match="--resume"):
        run_study(load_study(path), output=root / "out", progress=False)


def test_the_report_gives_each_players_cycles_in_the_calibrated_world_beside_the_data(finished):
    root, _, doc, lines = finished
    section = doc["ecology_realism"]
    assert section["env"]["height"] == 40 and section["env"]["obs_radius"] == 2  # the study's
    assert section["env"]["ecology"] and section["steps"] == 400
    assert section["data"]["lag_fraction"] == pytest.approx(0.146, abs=0.001)
    # one player per approach (its first seed's policies), ensemble and baseline
    assert list(section["players"]) == ["ppo", "lotka_volterra", "ppo_lv", "ppo_twice", "random"]
    assert section["players"]["ppo"]["player"] == "ppo/s0"
    for row in section["players"].values():
        assert "error" not in row, row
        assert len(row["per_seed"]) == 1
        seed = row["per_seed"][0]
        lag = seed.get("lag_fraction")
        assert seed["extinct"] or lag is None or -0.5 <= lag <= 0.5
    assert any("ecology realism: 5 players" in line for line in lines)
    md = (root / "out" / "tiny_study" / "study.md").read_text()
    assert "## Ecological realism (the calibrated lynx–hare world)" in md
    assert "| **lynx–hare data** | 0.146 |" in md
    assert "| `lotka_volterra/s0` |" in md and "| `random` |" in md


def test_the_lotka_volterra_baseline_plays_with_the_calibrated_worlds_coefficients():
    from bioflux.study.crossplay import Player
    from bioflux.study.realism import _policy

    coefficients = {"predator": {"temperature": 0.7}, "prey": {"beta": 1.3}}
    baseline = Player("lotka_volterra", None, "lotka_volterra")
    for species, (name, value) in (("predator", ("temperature", 0.7)), ("prey", ("beta", 1.3))):
        assert _policy(baseline, species, coefficients).module.coefficients[name] == value
    assert _policy(baseline, "prey", {}).module.coefficients["beta"] == 2.0  # the default
    assert not hasattr(_policy(Player("random", None, "random"), "prey", coefficients), "module")


def test_ecological_realism_can_be_turned_off(study_file):
    study = load_study(study_file, ["ecology_realism.enabled=false"])
    assert ecology_realism(study, []) is None
    assert realism_markdown(None) == []
    with pytest.raises(ConfigError, match="burn_in"):
        load_study(study_file, ["ecology_realism.burn_in=390"])


def test_stat_definitions_on_a_hand_built_case():
    seeds = [np.array([1.0, 3.0]), np.array([5.0, 7.0, 9.0])]
    s = Stat.of(seeds)
    assert s.mean == pytest.approx((2.0 + 7.0) / 2)  # mean of per-seed means
    assert s.std_seeds == pytest.approx(np.std([2.0, 7.0], ddof=1))
    assert s.std_episodes == pytest.approx(np.std([1, 3, 5, 7, 9]))
    lo, hi = bootstrap_ci(seeds)
    assert 1.0 <= lo < s.mean < hi <= 9.0
    # t(0.975, 1 df) over the seed means, with the shared episodes' error added
    within = np.mean([np.var([1.0, 3.0], ddof=1) / 2, np.var([5.0, 7.0, 9.0], ddof=1) / 3])
    half = 12.706 * np.sqrt(np.var([2.0, 7.0], ddof=1) / 2 + within)
    assert s.ci == pytest.approx((s.mean - half, s.mean + half), rel=1e-4)
    # a policy that is the same on every seed: the episodes' error, not a zero-width interval
    same_policy = Stat.of([np.array([0.0, 1.0, 0.0, 1.0])] * 3)
    assert same_policy.std_seeds == 0 and same_policy.ci[1] - same_policy.ci[0] > 0.5
    same = [np.full(10, 0.5), np.full(10, 0.5)]
    assert bootstrap_ci(same) == pytest.approx((0.5, 0.5))


def test_the_verdict_judges_a_lead_by_the_paired_difference():
    """Seeds are paired: a player that does exactly 0.1 better on every episode leads by
    exactly 0.1, although its interval overlaps the other's; a lead inside the noise is not
    established. (3 seeds: with fewer the verdict is "inconclusive: too few seeds".)"""
    rng = np.random.default_rng(0)
    base = [rng.normal(0, 1, 100) for _ in range(3)]
    shifted = Stat.of([x + 0.1 for x in base])
    plain = Stat.of(base)
    assert shifted.ci[0] < plain.ci[1]  # the intervals overlap ...
    assert difference_ci(shifted, plain) == pytest.approx((0.1, 0.1))  # ... the lead is exact
    noise = Stat.of([rng.normal(0, 1, 100) for _ in range(3)])
    lo, hi = difference_ci(plain, noise)
    assert lo < 0 < hi

    def stats(*players: tuple[str, Stat]) -> dict:
        return {name: {sp: {"return": st} for sp in ("predator", "prey")} for name, st in players}

    holds = verdict(stats(("up", shifted), ("base", plain)), ["up", "base"])
    assert all("`up` has the highest" in line and "the lead holds" in line for line in holds)
    assert all("(3 seeds)" in line for line in holds)
    unsettled = verdict(stats(("a", plain), ("b", noise)), ["a", "b"])
    assert all("not established" in line for line in unsettled)


def test_the_evaluation_seed_may_not_pick_models(study_file):
    with pytest.raises(ConfigError, match="evaluation.seed"):
        load_study(study_file, ["evaluation.seed=1"])  # 1 is a training seed
    with pytest.raises(ConfigError, match="evaluation.seed"):
        load_study(
            study_file,
            ["evaluation.seed=77", "approaches.lotka_volterra.set=[training.selection_seed=77]"],
        )


def test_a_curriculum_that_does_not_end_in_the_studys_world_is_refused_in_one_line(
    study_file, tmp_path
):
    from tests.conftest import TINY

    curriculum = tmp_path / "curriculum.yaml"
    curriculum.write_text(yaml.safe_dump({**TINY, "stages": [{"env": {"height": 12}}]}))
    with pytest.raises(ConfigError, match=r"last stage \(stage1\) changes \['height'\]") as err:
        load_study(study_file, [f"approaches.ppo.config={curriculum}"])
    assert "\n" not in str(err.value)


def test_the_budget_is_one_shared_quantity(study_file):
    with pytest.raises(ConfigError, match="exactly one"):
        load_study(study_file, ["budget.env_steps=1000"])
    study = load_study(study_file, ["budget.iterations=null", "budget.env_steps=1000"])
    assert {study.experiment(a, s).stop.env_steps for a, s in study.trials()} == {1000}


def test_study_json_is_plain_json(finished):
    root = finished[0]
    doc = json.loads((root / "out" / "tiny_study" / "study.json").read_text())
    assert doc["study"]["name"] == "tiny_study"


def test_ensembles_are_per_seed_players_in_evaluation_and_crossplay(finished):
    root, _, doc, _ = finished
    md = (root / "out" / "tiny_study" / "study.md").read_text()
    heat = doc["crossplay"]
    for name in ("ppo_lv", "ppo_twice"):
        for species in ("predator", "prey"):
            for metric in ("return", "success rate", "episode length"):
                stat = doc["evaluation"][name][species][metric]
                assert np.isfinite([stat["mean"], stat["std_across_episodes"], *stat["ci95"]]).all()
                assert stat["seeds"] == 2 and np.isfinite(stat["std_across_seeds"])
        i = heat["approaches"].index(name)
        assert np.isfinite(heat["capture_rate"][i]).all()  # its row (as predator)
        assert np.isfinite([row[i] for row in heat["capture_rate"]]).all()  # its column
        for seed in (0, 1):  # one player per training seed, against every player
            assert f"{name}/s{seed}|random" in doc["episodes"]
            assert f"random|{name}/s{seed}" in doc["episodes"]
            assert f"{name}/s{seed}|{name}/s{1 - seed}" in doc["episodes"]
    assert "- `ppo_lv`: weighted vote of `ppo` (weight 1), `lotka_volterra` (weight 1)" in md
    assert "`ppo_twice`: weighted probability average of `ppo` (weight 1), `ppo` (weight 3)" in md
    assert not any(t["approach"] in ("ppo_lv", "ppo_twice") for t in doc["trials"])


def test_an_ensemble_is_built_from_its_seeds_exports(finished):
    from bioflux.ensembles import EnsemblePolicy
    from bioflux.study.crossplay import load_player, players

    _, path, doc, _ = finished
    study = load_study(path)
    models = {(t["approach"], t["seed"]): t["model"] for t in doc["trials"]}
    by_key = {p.key: p for p in players(study, models)}
    assert list(by_key) == [
        *(f"{a}/s{s}" for a in PLAYERS[:4] for s in (0, 1)),
        "random",
    ]
    twice = by_key["ppo_twice/s1"]
    assert [m.source for m in twice.members] == [models[("ppo", 1)]] * 2
    policy = load_player(twice, "predator")
    assert isinstance(policy, EnsemblePolicy) and policy.combine == "average"
    assert policy.weights.tolist() == [0.25, 0.75]
    vote = load_player(by_key["ppo_lv/s0"], "prey")
    assert vote.combine == "vote" and vote.deterministic
    assert vote.member_names == ["ppo/s0/prey", "lotka_volterra/s0/prey"]


def test_an_ensemble_of_copies_of_one_policy_plays_exactly_like_it(finished):
    """ppo_twice averages ppo with itself (weights 1 and 3): same probabilities, same sampled
    actions on the shared evaluation seed, so every episode of every pairing is the same."""
    _, _, doc, _ = finished
    episodes = doc["episodes"]
    others = [k.split("|")[1] for k in episodes if k.startswith("random|")]
    others = [k for k in others if not k.startswith("ppo_twice")]
    for seed in (0, 1):
        me, twin = f"ppo/s{seed}", f"ppo_twice/s{seed}"
        for other in others:
            assert episodes[f"{twin}|{other}"] == episodes[f"{me}|{other}"], other
            assert episodes[f"{other}|{twin}"] == episodes[f"{other}|{me}"], other
        assert episodes[f"{twin}|{twin}"] == episodes[f"{me}|{me}"]
    assert doc["evaluation"]["ppo_twice"] == doc["evaluation"]["ppo"]
    # and the comparison tells policies apart: the other players do not play like ppo
    for other in ("lotka_volterra/s0", "ppo_lv/s0"):
        assert episodes[f"{other}|random"] != episodes["ppo/s0|random"], other


def test_members_with_different_windows_are_refused(finished, tmp_path):
    import shutil

    from bioflux.study.crossplay import Player, load_player

    _, _, doc, _ = finished
    model = next(t["model"] for t in doc["trials"] if t["approach"] == "ppo" and t["seed"] == 0)
    other = tmp_path / "other"
    shutil.copytree(model, other)  # the same module, recorded as trained on a 7x7 window
    meta_path = other / "predator" / "bioflux.json"
    meta = json.loads(meta_path.read_text())
    meta["env"]["obs_radius"] = 3
    meta_path.write_text(json.dumps(meta))
    members = (Player("ppo", 0, model), Player("other", 0, str(other)))
    bad = Player("mix", 0, "ensemble", members, (1.0, 1.0), "average")
    with pytest.raises(ConfigError, match=r"study ensemble 'mix/s0' \(predator\).*windows differ"):
        load_player(bad, "predator")
    load_player(bad, "prey")  # the prey modules still agree


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ensembles.mix={members: [ppo, maddpg]}", r"member\(s\) \['maddpg'\] are not approaches"),
        ("ensembles.mix={members: [ppo, mix]}", r"member\(s\) \['mix'\] are not approaches"),
        ("ensembles.ppo={members: [ppo, random]}", "'ppo': the name is taken by an approach"),
        ("ensembles.random={members: [ppo, random]}", "the name is taken by a baseline"),
        ("ensembles.mix={members: [ppo]}", "ensembles.mix.members: List should have at least 2"),
        ("ensembles.mix={members: [ppo, random], weights: [1]}", "2 members but 1 weights"),
        ("ensembles.mix={members: [ppo, random], weights: [1, 0]}", "finite and > 0"),
        ("ensembles.mix={members: [ppo, random], combine: median}", "combine='median'"),
        ("ensembles.mix={members: [ppo, random], mode: vote}", "ensembles.mix.mode: unknown key"),
    ],
)
def test_ensemble_config_rules(study_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_study(study_file, [override])


def test_an_ensemble_of_baselines_is_one_player_and_builtin_names_are_refused(tmp_path):
    from bioflux.study.crossplay import players

    data = {k: v for k, v in TINY_STUDY.items() if k != "ensembles"}
    data["approaches"] = {"ppo": TINY_STUDY["approaches"]["ppo"]}
    data["baselines"] = ["random", "lotka_volterra"]
    data["ensembles"] = {"rules": {"members": ["lotka_volterra", "random"], "combine": "vote"}}
    path = tmp_path / "baselines.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    study = load_study(path)
    keys = [p.key for p in players(study, {("ppo", 0): "a", ("ppo", 1): "b"})]
    assert keys == ["ppo/s0", "ppo/s1", "rules", "random", "lotka_volterra"]  # no seeds
    data["baselines"] = ["random"]
    data["ensembles"] = {"lotka_volterra": {"members": ["ppo", "random"]}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="'lotka_volterra': the name is taken by a built-in"):
        load_study(path)


def test_resume_may_change_ensembles_without_training(finished):
    """Ensembles train nothing, so a resumed study may drop, add or change them: the finished
    trials are kept and the evaluation and report are redone. (Runs last: it rewrites the
    study folder's report.)"""
    root, path, _, _ = finished
    folder = root / "out" / "tiny_study"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()}
    lines: list[str] = []
    study = load_study(path, ["ensembles={}"])
    doc = run_study(study, output=root / "out", resume=True, progress=False, log=lines.append)
    assert "skipping 4 finished trial(s)" in lines
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()} == before
    assert doc["crossplay"]["approaches"] == ["ppo", "lotka_volterra", "random"]
    with pytest.raises(ValueError, match="only 'ensembles' may change"):
        run_study(load_study(path, ["evaluation.episodes=3"]), output=root / "out", resume=True)


def test_a_failed_trial_stays_local_and_resume_retries_only_it(ray_session, tmp_path):
    """One approach's trials fail inside Tune (an env_device the learner is not on): the
    study still finishes, the report lists them with their reason, and ``--resume`` retries
    only them."""
    study = dict(TINY_STUDY, ensembles={}, name="partial")
    study["approaches"] = {
        "ppo": TINY_STUDY["approaches"]["ppo"],
        "broken": {
            "config": "demo",
            "set": [
                *TINY_STUDY["approaches"]["ppo"]["set"],
                "resources.env_runner=columnar",
                "resources.env_device=cpu",
                "resources.num_gpus_per_learner=1",  # refused inside the trial
            ],
        },
    }
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    lines: list[str] = []
    doc = run_study(load_study(path), output=tmp_path / "out", progress=False, log=lines.append)
    assert [(f["approach"], f["seed"]) for f in doc["failed_trials"]] == [
        ("broken", 0),
        ("broken", 1),
    ]
    assert all("must be where the learner is" in f["error"] for f in doc["failed_trials"])
    assert "broken" not in doc["ranking"]["predator"] and "ppo" in doc["ranking"]["predator"]
    md = (tmp_path / "out" / "partial" / "study.md").read_text()
    assert "## Failed trials" in md and "| `broken` | 0 |" in md
    assert any("FAILED" in line for line in lines)
    folder = tmp_path / "out" / "partial" / "trials"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    lines.clear()
    doc = run_study(
        load_study(path), output=tmp_path / "out", resume=True, progress=False, log=lines.append
    )
    assert "skipping 2 finished trial(s)" in lines  # ppo's; broken's two run again
    assert len(doc["failed_trials"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_gpus_per_trial_reserves_a_gpu_share_and_puts_each_learner_on_it(tmp_path):
    from bioflux.study.trials import trial_resources

    study = dict(TINY_STUDY, resources={"gpus_per_trial": 0.25, "env_runners_per_trial": 1})
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    loaded = load_study(path)
    assert loaded.experiment("ppo", 0).resources.num_gpus_per_learner == 0.25
    assert loaded.experiment("lotka_volterra", 0).resources.num_gpus_per_learner == 0
    bundles = trial_resources(loaded).bundles
    assert bundles == [{"CPU": 1.0, "GPU": 0.25}, {"CPU": 1.0}]


def test_plan_times_every_approach_and_writes_nothing(ray_session, study_file, tmp_path):
    from bioflux.study.plan import plan_study, plan_table

    study = load_study(study_file)
    lines: list[str] = []
    plan = plan_study(study, iterations=2, log=lines.append)
    assert set(plan["approaches"]) == {"ppo", "lotka_volterra"}
    for label, p in plan["approaches"].items():
        assert p["s_per_iteration"] > 0 and p["trial_s"] > 0 and p["peak_rss_gb"] > 0.05, label
    assert plan["approaches"]["ppo"]["iterations"] == 1  # the study's budget: 1 iteration
    assert plan["trials"] == 4 and plan["trials_at_once"] >= 1
    # (2 approaches + 2 ensembles) x 2 seeds + random, squared
    assert plan["crossplay_pairings"] == 81 and plan["crossplay_s"] > 0
    assert plan["total_s"] >= plan["trials_s"]
    assert "total: ~" in plan_table(plan)
    assert not (tmp_path / "out").exists() and not (study_file.parent / "tiny_study").exists()


def test_crossplay_on_the_torch_core_plays_every_player(finished, monkeypatch):
    """evaluation.device's path (``bioflux.device_rollout``; here on the CPU, which ``auto``
    never picks): every pairing, ensembles included (their probabilities cross to the host),
    plays its episodes; an ensemble of copies of ppo still plays exactly as ppo."""
    import torch

    from bioflux.study import crossplay

    _, path, doc, _ = finished
    study = load_study(path)
    models = {(t["approach"], t["seed"]): t["model"] for t in doc["trials"]}
    everyone = crossplay.players(study, models)
    monkeypatch.setattr(crossplay, "evaluation_device", lambda choice: torch.device("cpu"))
    lines: list[str] = []
    out = crossplay.cross_play(study, everyone, progress=False, log=lines.append)
    assert any("cross-play on cpu" in line for line in lines)
    assert len(out) == len(everyone) ** 2
    episodes = study.evaluation.episodes
    assert all(len(arrays.capture_rate) == episodes for arrays in out.values())
    for other in ("random", "lotka_volterra/s0"):
        assert out["ppo_twice/s0", other].to_dict() == out["ppo/s0", other].to_dict(), other
    assert out["lotka_volterra/s0", "random"].to_dict() != out["ppo/s0", "random"].to_dict()


def test_crossplay_rows_shared_by_processes_equal_one_process(finished):
    """evaluation.workers: the predators' rows played by 2 Ray tasks give every pairing's
    episodes exactly as one process does."""
    from bioflux.study import crossplay

    _, path, doc, _ = finished
    models = {(t["approach"], t["seed"]): t["model"] for t in doc["trials"]}
    out = {}
    for workers in (1, 2):
        study = load_study(path, [f"evaluation.workers={workers}"])
        everyone = crossplay.players(study, models)[::3]  # a few players keep it short
        lines: list[str] = []
        out[workers] = crossplay.cross_play(study, everyone, progress=False, log=lines.append)
        assert any("2 processes" in line for line in lines) == (workers == 2)
    assert list(out[1]) == list(out[2]) and len(out[1]) == len(everyone) ** 2
    for key, arrays in out[1].items():
        assert arrays.to_dict() == out[2][key].to_dict(), key
