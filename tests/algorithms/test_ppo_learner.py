"""PPO's learner set-up: minibatches in agent rows on every EnvRunner path, exactly
``num_epochs`` passes per species' module, bfloat16 learner."""

from collections import Counter

import numpy as np
import pytest
import torch

from bioflux import config, training
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.bf16_learner import BF16PPOTorchLearner
from bioflux.algorithms.ppo.learner import PerModuleEpochsPPOTorchLearner, minibatch_plan


@pytest.mark.parametrize("num_epochs,minibatch_size", [(3, 64), (1, 500), (6, 7)])
def test_every_module_passes_over_its_own_rows_exactly_num_epochs_times(num_epochs, minibatch_size):
    sizes = {"predator": 40, "prey": 160}
    plan = list(minibatch_plan(sizes, num_epochs=num_epochs, minibatch_size=minibatch_size))
    seen = {m: Counter() for m in sizes}
    for indices in plan:
        for m, rows in indices.items():
            seen[m].update(rows.tolist())
        assert len(indices["prey"]) <= minibatch_size
        assert len(indices["predator"]) >= 1  # every module in every step (DDP)
    for m, n in sizes.items():
        assert seen[m] == Counter({row: num_epochs for row in range(n)}), m
    assert len(plan) == num_epochs * -(-160 // minibatch_size)


def test_ddp_lock_step_fixes_the_number_of_minibatches():
    # RLlib's shared count (7) is floored and not a multiple of num_epochs: rounded up to
    # whole epochs (2 × 4), so no epoch is cut short
    plan = list(
        minibatch_plan(
            {"predator": 3, "prey": 50}, num_epochs=2, minibatch_size=10, num_total_minibatches=7
        )
    )
    assert len(plan) == 8
    assert all(len(ix["predator"]) >= 1 and len(ix["prey"]) >= 1 for ix in plan)
    seen = Counter(r for ix in plan for r in ix["prey"].tolist())
    assert seen == Counter({r: 2 for r in range(50)})


@pytest.mark.parametrize("env_runner", ["batched", "columnar"])
def test_a_real_update_passes_each_module_over_each_own_row_num_epochs_times(
    ray_session, tiny_config, env_runner
):
    tiny_config["training"].update(train_batch_size=400, minibatch_size=64, num_epochs=3)
    tiny_config["resources"]["env_runner"] = env_runner
    cfg = build_config(config.validate(tiny_config))
    assert issubclass(cfg.learner_class, PerModuleEpochsPPOTorchLearner)
    algo = cfg.build_algo()
    learner = algo.learner_group._learner  # the local learner (num_learners=0)
    rows: dict[str, int] = {}
    seen = {m: Counter() for m in ("predator", "prey")}
    make_batch, sgd_step = learner._make_batch_if_necessary, learner._update

    def with_row_ids(**kwargs):  # tag every row of the train batch with its index
        batch = make_batch(**kwargs)
        for m, b in batch.policy_batches.items():
            rows[m] = len(b)
            b["row"] = torch.arange(len(b))
        return batch

    def counting(minibatch):
        for m, b in minibatch.items():
            seen[m].update(b["row"].tolist())
        return sgd_step(minibatch)

    learner._make_batch_if_necessary, learner._update = with_row_ids, counting
    try:
        result = algo.train()
        sampled = result["env_runners"]["num_module_steps_sampled"]
        for species in ("predator", "prey"):
            assert rows[species] >= sampled[species] > 0  # + bootstrap rows on episode paths
            assert seen[species] == Counter({r: 3 for r in range(rows[species])}), species
            assert result["learners"][species]["num_module_steps_trained"] == 3 * rows[species]
            assert np.isfinite(result["learners"][species]["policy_loss"])
    finally:
        algo.stop()


def test_nan_to_num_gradients_match_rllibs_checked_path(ray_session, tiny_config):
    cfg = build_config(config.validate(tiny_config))
    algo = cfg.build_algo()
    learner = algo.learner_group._learner
    try:
        params = dict(learner._params)
        grads = {pid: torch.randn_like(p) for pid, p in params.items()}
        first = next(iter(grads))
        grads[first].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        before = {pid: p.detach().clone() for pid, p in params.items()}
        opt_state = learner._get_optimizer_state()
        learner.apply_gradients({k: v.clone() for k, v in grads.items()})
        fast = {pid: p.detach().clone() for pid, p in params.items()}
        for pid, p in params.items():  # rewind, then take RLlib's own path
            p.data.copy_(before[pid])
        learner._set_optimizer_state(opt_state)
        super(PerModuleEpochsPPOTorchLearner, learner).apply_gradients(
            {k: v.clone() for k, v in grads.items()}
        )
        for pid, p in params.items():
            assert torch.equal(fast[pid], p.detach()), pid
            assert torch.isfinite(p).all()
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
        assert training.learner_devices(algo) == ["cpu", "cpu"]
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


@pytest.mark.parametrize("env_runner,kl_coeff", [("batched", 0.0), ("columnar", 0.3)])
def test_the_sync_free_ppo_loss_equals_rllibs(ray_session, tiny_config, env_runner, kl_coeff):
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    tiny_config["resources"]["env_runner"] = env_runner
    tiny_config["training"]["kl_coeff"] = kl_coeff
    algo = build_config(config.validate(tiny_config)).build_algo()
    learner = algo.learner_group._learner
    minibatches, sgd_step = [], learner._update
    learner._update = lambda mb: (minibatches.append(mb), sgd_step(mb))[1]
    keys = [
        "policy_loss",
        "vf_loss",
        "vf_loss_unclipped",
        "vf_explained_var",
        "entropy",
        "mean_kl_loss",
    ]
    try:
        algo.train()  # a real train batch (with LOSS_MASK on the episode path)
        minibatch = minibatches[0]
        fwd_out = learner.module.forward_train(minibatch)
        for mid in minibatch:
            kwargs = dict(
                module_id=mid,
                config=learner.config.get_config_for_module(mid),
                batch=minibatch[mid],
                fwd_out=fwd_out[mid],
            )
            ours = learner.compute_loss_for_module(**kwargs)
            ours_logged = [float(learner.metrics.peek((mid, k))) for k in keys]
            theirs = PPOTorchLearner.compute_loss_for_module(learner, **kwargs)
            theirs_logged = [float(learner.metrics.peek((mid, k))) for k in keys]
            assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), mid
            np.testing.assert_allclose(ours_logged, theirs_logged, rtol=1e-5, atol=1e-6)
        if env_runner == "batched":
            assert "loss_mask" in minibatch["prey"]
        assert kl_coeff == 0 or learner.metrics.peek(("prey", "mean_kl_loss")) != 0
    finally:
        algo.stop()


def test_foreach_clip_equals_rllibs_global_norm_clip():
    from ray.rllib.utils.torch_utils import clip_gradients

    from bioflux.algorithms.ppo.learner import clip_gradients_foreach

    gen = torch.Generator().manual_seed(0)
    for scale, poison in [(0.01, None), (10.0, None), (10.0, float("inf")), (1.0, float("nan"))]:
        grads = {i: torch.randn(7, 5, generator=gen) * scale for i in range(4)}
        if poison is not None:
            grads[1][0, 0] = poison
        ours = {k: v.clone() for k, v in grads.items()}
        theirs = {k: v.clone() for k, v in grads.items()}
        n1 = clip_gradients_foreach(ours, grad_clip=0.5, grad_clip_by="global_norm")
        n2 = clip_gradients(theirs, grad_clip=0.5, grad_clip_by="global_norm")
        assert torch.allclose(n1, n2, rtol=1e-6)
        for k in grads:
            assert torch.allclose(ours[k], theirs[k], rtol=1e-6, equal_nan=True), (scale, k)
