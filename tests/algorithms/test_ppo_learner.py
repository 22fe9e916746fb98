"""PPO's learner set-up: minibatches in agent rows on every EnvRunner path, exactly
``num_epochs`` passes per species' module, bfloat16 learner."""

from collections import Counter

import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from bioflux import config
from bioflux.algorithms.bf16_learner import BF16PPOTorchLearner
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo_learner import PerModuleEpochIterator, PerModuleEpochsPPOTorchLearner


@pytest.mark.parametrize("num_epochs,minibatch_size", [(3, 64), (1, 500), (6, 7)])
def test_every_module_passes_over_its_own_rows_exactly_num_epochs_times(num_epochs, minibatch_size):
    sizes = {"predator": 40, "prey": 160}
    batch = MultiAgentBatch(
        {m: SampleBatch({"row": np.arange(n)}) for m, n in sizes.items()}, env_steps=100
    )
    it = PerModuleEpochIterator(batch, num_epochs=num_epochs, minibatch_size=minibatch_size)
    seen = {m: Counter() for m in sizes}
    minibatches = 0
    for mb in it:
        minibatches += 1
        for m, b in mb.policy_batches.items():
            seen[m].update(b["row"].tolist())
            assert len(b) <= max(minibatch_size, 1) or m == "prey"
        assert len(mb.policy_batches["prey"]) <= minibatch_size
    for m, n in sizes.items():
        assert seen[m] == Counter({row: num_epochs for row in range(n)}), m
    assert minibatches == num_epochs * -(-160 // minibatch_size)


def test_a_real_update_trains_each_module_on_num_epochs_times_its_rows(ray_session, tiny_config):
    tiny_config["training"].update(train_batch_size=400, minibatch_size=64, num_epochs=3)
    cfg = build_config(config.validate(tiny_config))
    assert cfg.learner_class is PerModuleEpochsPPOTorchLearner
    algo = cfg.build_algo()
    learner = algo.learner_group._learner  # the local learner (num_learners=0)
    rows: dict[str, int] = {}
    trained: Counter = Counter()
    make_iterator = learner._create_iterator_if_necessary

    def counting(**kwargs):
        it = make_iterator(**kwargs)
        rows.update({m: len(b) for m, b in it._batch.policy_batches.items()})
        for mb in it:
            trained.update({m: len(b) for m, b in mb.policy_batches.items()})
            yield mb

    learner._create_iterator_if_necessary = counting
    try:
        result = algo.train()
        sampled = result["env_runners"]["num_module_steps_sampled"]
        for species in ("predator", "prey"):
            assert rows[species] >= sampled[species] > 0  # + one bootstrap row per trajectory
            assert trained[species] == 3 * rows[species], species
            assert result["learners"][species]["num_module_steps_trained"] == trained[species]
    finally:
        algo.stop()


def test_multi_agent_runner_keeps_minibatch_in_agent_rows(tiny_config):
    tiny_config["training"].update(train_batch_size=1200, minibatch_size=600)
    tiny_config["resources"]["env_runner"] = "multi_agent"
    cfg = build_config(config.validate(tiny_config))
    assert cfg.count_steps_by == "env_steps"
    assert cfg.train_batch_size_per_learner == 200  # 1200 agent-steps / 6 agents
    assert cfg.minibatch_size == 600  # agent rows, as on the batched path
    cfg.validate()  # RLlib's own check (600 > 200 "env steps") would reject this


def test_minibatch_is_capped_by_the_train_batch(tiny_config):
    tiny_config["training"].update(train_batch_size=300, minibatch_size=5000)
    for runner in ("batched", "multi_agent"):
        tiny_config["resources"]["env_runner"] = runner
        assert build_config(config.validate(tiny_config)).minibatch_size == 300


def test_bfloat16_learner_runs_the_forward_in_bf16_and_keeps_float32_weights(
    ray_session, tiny_config
):
    tiny_config["training"]["learner_precision"] = "bfloat16"
    cfg = build_config(config.validate(tiny_config))
    assert cfg.learner_class is BF16PPOTorchLearner
    algo = cfg.build_algo()
    try:
        module = algo.learner_group._learner.module["predator"]
        before = {k: v.clone() for k, v in module.state_dict().items()}
        dtypes: set[torch.dtype] = set()
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        result = algo.train()
        assert torch.bfloat16 in dtypes  # the encoders (float32: GAE's value pass, heads)
        after = module.state_dict()
        assert all(v.dtype == torch.float32 for v in after.values())
        assert any(not torch.equal(before[k], after[k]) for k in before)
        losses = result["learners"]["predator"]
        assert np.isfinite(losses["policy_loss"]) and np.isfinite(losses["vf_loss"])
    finally:
        algo.stop()


def test_float32_is_the_default(tiny_config):
    cfg = build_config(config.validate(tiny_config))
    assert cfg.learner_class is not BF16PPOTorchLearner


def test_two_cpu_learners_train_with_ddp(ray_session, tiny_config):
    tiny_config["resources"].update(num_learners=2, num_cpus_per_learner=1)
    tiny_config["training"].update(train_batch_size=400, minibatch_size=64, num_epochs=2)
    cfg = build_config(config.validate(tiny_config))
    assert cfg.num_learners == 2
    algo = cfg.build_algo()
    try:
        before = algo.get_module("predator").get_state()
        result = algo.train()
        assert np.isfinite(result["learners"]["predator"]["policy_loss"])
        weights = algo.learner_group.foreach_learner(
            lambda learner: learner.module["prey"].get_state()
        )
        states = [w.get() if hasattr(w, "get") else w for w in weights]
        first = states[0]
        for other in states[1:]:  # DDP keeps the replicas identical
            assert all(np.allclose(first[k], other[k]) for k in first)
        after = algo.get_module("predator").get_state()
        assert any(not np.allclose(before[k], after[k]) for k in before)
    finally:
        algo.stop()


def test_a_gpu_request_without_a_gpu_is_refused_clearly(tiny_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tiny_config["resources"]["num_gpus_per_learner"] = 1
    with pytest.raises(ValueError, match="GPU"):
        build_config(config.validate(tiny_config))
