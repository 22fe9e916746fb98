"""Multi-learner (DDP) PPO: every learner runs the same SGD steps, every module does exactly
``num_epochs`` full passes, and the replicas stay identical.

With DDP every SGD step ends in an all-reduce of the gradients, so learners that run
different numbers of steps wait for each other forever: the 2-learner test carries a timeout
(``method="thread"``: the driver then waits inside ``ray.get``, where no signal handler runs,
so the timeout ends the whole pytest process).
"""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from bioflux import config
from bioflux.algorithms.ppo import algorithm as columnar_ppo
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.learner import minibatch_plan
from tests.conftest import TINY


@pytest.mark.parametrize("rows", [{"predator": 13, "prey": 65}, {"predator": 12, "prey": 64}])
@pytest.mark.parametrize("num_epochs,shared", [(2, 7), (3, 3), (3, 10), (1, 1)])
def test_every_learner_runs_the_shared_count_rounded_to_whole_epochs(rows, num_epochs, shared):
    plan = list(
        minibatch_plan(rows, num_epochs=num_epochs, minibatch_size=64, num_total_minibatches=shared)
    )
    k = -(-shared // num_epochs)
    assert len(plan) == num_epochs * k  # independent of this learner's rows
    for mid, n in rows.items():
        seen = Counter(r for ix in plan for r in ix[mid].tolist())
        assert seen == Counter({r: num_epochs for r in range(n)}), mid  # whole epochs


def test_the_shared_count_is_the_plan_of_the_largest_shard():
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    batch = MultiAgentBatch(
        {
            "predator": SampleBatch({"x": np.zeros(37)}),
            "prey": SampleBatch({"x": np.zeros(129)}),
        },
        env_steps=129,
    )
    # shards of 65 and 64 prey rows: 2 and 1 minibatches of 64 each on their own
    assert columnar_ppo.shared_minibatch_count(batch, 2, 3, 64) == 3 * 2
    assert columnar_ppo.shared_minibatch_count(batch, 1, 3, 64) == 3 * 3


@pytest.mark.timeout(180, method="thread")  # a hang blocks in ray.get: no signal gets in
def test_two_cpu_learners_on_the_columnar_path_with_odd_rows(ray_session, monkeypatch):
    cfg = copy.deepcopy(TINY)
    cfg["resources"].update(env_runner="columnar", num_learners=2, num_cpus_per_learner=1)
    cfg["training"].update(train_batch_size=300, minibatch_size=64, num_epochs=3)
    sizes = {"predator": 37, "prey": 129}  # shards: 19/18 and 65/64 rows
    make_batch = columnar_ppo.train_batch

    def odd_rows(parts):
        batch = make_batch(parts)
        for mid, n in sizes.items():
            assert len(batch.policy_batches[mid]) >= n
            batch.policy_batches[mid] = batch.policy_batches[mid][:n]
        return batch

    monkeypatch.setattr(columnar_ppo, "train_batch", odd_rows)
    algo = build_config(config.validate(cfg)).build_algo()
    try:
        assert algo.config.num_learners == 2
        result = algo.train()
        learners = result["learners"]
        for mid, n in sizes.items():  # every row of every shard exactly num_epochs times
            assert learners[mid]["num_module_steps_trained"] == 3 * n, mid
            assert np.isfinite(learners[mid]["policy_loss"])
        # in minibatches of at most minibatch_size rows: 2 parts of ≤ 33 prey rows per epoch
        assert learners["prey"]["module_train_batch_size_mean"] <= 33
        states = [
            r.get() if hasattr(r, "get") else r
            for r in algo.learner_group.foreach_learner(
                lambda learner: {m: learner.module[m].get_state() for m in ("predator", "prey")}
            )
        ]
        assert len(states) == 2
        for mid in ("predator", "prey"):  # DDP keeps the replicas identical
            first, other = states[0][mid], states[1][mid]
            assert all(np.array_equal(first[k], other[k]) for k in first), mid
    finally:
        algo.stop()


def test_ddp_learners_without_a_shared_count_take_one_part_per_epoch(ray_session):
    """RLlib's count for episodes is floored, and 0 for a batch smaller than one minibatch per
    learner: then no learner may derive its own count from its shard (they differ); each
    takes one part per epoch. (A local learner posing as one of two DDP learners.)"""
    cfg = copy.deepcopy(TINY)
    cfg["training"].update(train_batch_size=200, minibatch_size=64, num_epochs=3)
    algo = build_config(config.validate(cfg)).build_algo()
    learner = algo.learner_group._learner
    calls, sgd = [], learner._sgd

    def spy(modules, rows, **kwargs):  # the SGD itself runs as the local learner it is
        calls.append((rows, kwargs["num_total_minibatches"]))
        learner.config = real_config
        return sgd(modules, rows, **kwargs)

    posing = copy.copy(learner.config)
    object.__setattr__(posing, "num_learners", 2)
    real_config, learner.config, learner._sgd = learner.config, posing, spy
    try:
        result = algo.train()
    finally:
        learner.config = real_config
        del learner._sgd
        algo.stop()
    ((rows, shared),) = calls
    assert max(rows.values()) > 64 and shared == 3  # one part per epoch, on every learner
    for mid, n in rows.items():
        assert result["learners"][mid]["num_module_steps_trained"] == 3 * n
