"""PPO loss equivalence with power: inputs that reach every branch of the loss.

A real first update barely moves the policy (ratios within 0.97–1.03, value errors below the
default ``vf_clip_param``, KL ~1e-4), so comparing on one would not notice a missing ratio
clip, value clamp or a reversed KL. These batches are built by hand around the learner's own
current outputs instead:

- log-probability shifts of ±0.05, ±0.5 and ±1 put ratios well outside ``1 ± clip_param`` on
  both sides, with advantages of both signs (so both the clipped and unclipped branches of
  ``min`` are taken);
- value targets several units from the predictions, above the small ``vf_clip_param`` for most
  rows and below it for some;
- previous logits far from the current ones, so ``KL(prev‖curr)`` and ``KL(curr‖prev)`` differ;
- advantages with mean ≈ 1.5 and sd ≈ 3 (not standardised), and on the episode path a
  ``LOSS_MASK`` whose masked rows carry extreme values.

Each case compares the sync-free loss with RLlib's ``PPOTorchLearner.compute_loss_for_module``
(loss, gradients, logged statistics), on the plain path and through the captured step's code
(eager on CPU, over padded static buffers), and checks that the columnar batch standardises
advantages like RLlib's GAE connector.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.algorithm import train_batch
from tests.conftest import TINY

CLIP, VF_CLIP, KL_COEFF = 0.2, 0.5, 0.5
STATS = ["policy_loss", "vf_loss", "vf_loss_unclipped", "vf_explained_var", "entropy"]
STATS_KL = [*STATS, "mean_kl_loss"]


@pytest.fixture(scope="module")
def learner(ray_session):
    cfg = copy.deepcopy(TINY)
    cfg["resources"]["env_runner"] = "columnar"
    cfg["training"].update(
        clip_param=CLIP, vf_clip_param=VF_CLIP, kl_coeff=KL_COEFF, entropy_coeff=0.05, lr=1e-2
    )
    algo = build_config(config.validate(cfg)).build_algo()
    yield algo.learner_group._learner
    algo.stop()


def _hand_built(learner, mid: str, n: int, masked: bool, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    module = learner.module[mid]
    obs = torch.randn(n, module.observation_space.shape[0], generator=g)
    with torch.no_grad():
        logits = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        values = module.compute_values({Columns.OBS: obs})
    actions = torch.randint(0, logits.shape[-1], (n,), generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None])[:, 0]
    shift = torch.tensor([-1.0, -0.5, -0.05, 0.05, 0.5, 1.0])[torch.randperm(n, generator=g) % 6]
    batch = {
        Columns.OBS: obs,
        Columns.ACTIONS: actions,
        Columns.ACTION_LOGP: logp - shift,  # ratio = exp(shift) at the current weights
        Columns.ACTION_DIST_INPUTS: logits + 2.0 * torch.randn(logits.shape, generator=g),
        Postprocessing.ADVANTAGES: 1.5 + 3.0 * torch.randn(n, generator=g),
        Postprocessing.VALUE_TARGETS: values + 2.0 * torch.randn(n, generator=g),
    }
    if masked:
        mask = torch.rand(n, generator=g) > 0.3
        mask[:2] = True
        batch[Columns.LOSS_MASK] = mask
        batch[Postprocessing.ADVANTAGES][~mask] = 50.0  # would dominate the loss if counted
        batch[Postprocessing.VALUE_TARGETS][~mask] = -40.0
    return batch


def _assert_every_branch_is_reached(learner, mid: str, batch: dict[str, torch.Tensor]) -> None:
    module = learner.module[mid]
    real = batch.get(Columns.LOSS_MASK, torch.ones(len(batch[Columns.OBS]), dtype=torch.bool))
    with torch.no_grad():
        logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        values = module.compute_values(batch)
    logp = torch.log_softmax(logits, -1).gather(-1, batch[Columns.ACTIONS][:, None])[:, 0]
    ratio = torch.exp(logp - batch[Columns.ACTION_LOGP])[real]
    adv = batch[Postprocessing.ADVANTAGES][real]
    assert ((ratio > 1 + CLIP) & (adv > 0)).float().mean() > 0.1  # the upper clip binds
    assert ((ratio < 1 - CLIP) & (adv < 0)).float().mean() > 0.05  # the lower clip binds
    assert ((ratio > 1 + 2 * CLIP) & (adv > 0)).any()  # far outside, not just past the edge
    assert ((ratio > 1 + CLIP) & (adv < 0)).any() and ((ratio < 1 - CLIP) & (adv > 0)).any()
    err = (values - batch[Postprocessing.VALUE_TARGETS])[real] ** 2
    assert 0.3 < (err > VF_CLIP).float().mean() < 0.95  # the value clamp binds, not everywhere
    p = torch.log_softmax(batch[Columns.ACTION_DIST_INPUTS], -1)[real]
    q = torch.log_softmax(logits, -1)[real]
    kl_pq = (p.exp() * (p - q)).sum(-1).mean()
    kl_qp = (q.exp() * (q - p)).sum(-1).mean()
    assert kl_pq > 0.3 and abs(kl_pq - kl_qp) > 0.05  # the KL's direction matters
    assert abs(adv.mean()) > 0.5 and abs(adv.std() - 1) > 0.5  # not standardised


@pytest.mark.parametrize("masked", [False, True], ids=["columnar", "episodes_with_loss_mask"])
@pytest.mark.parametrize("use_kl", [True, False], ids=["kl", "no_kl"])
def test_the_loss_equals_rllibs_on_every_branch(learner, masked, use_kl):
    for seed, mid in enumerate(("predator", "prey")):
        batch = _hand_built(learner, mid, 240, masked, seed)
        _assert_every_branch_is_reached(learner, mid, batch)
        module_config = copy.copy(learner.config.get_config_for_module(mid))
        object.__setattr__(module_config, "use_kl_loss", use_kl)
        assert module_config.vf_clip_param == VF_CLIP and module_config.clip_param == CLIP
        params = [p for p in learner.module[mid].parameters() if p.requires_grad]
        results = []
        for loss_fn in (
            learner.compute_loss_for_module,
            functools.partial(PPOTorchLearner.compute_loss_for_module, learner),
        ):
            fwd_out = learner.module[mid].forward_train(batch)
            loss = loss_fn(module_id=mid, config=module_config, batch=batch, fwd_out=fwd_out)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            keys = STATS_KL if use_kl else STATS
            logged = [float(torch.as_tensor(learner.metrics.peek((mid, k)))) for k in keys]
            results.append((loss.detach(), grads, logged))
        (ours, ours_grads, ours_logged), (theirs, theirs_grads, theirs_logged) = results
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (mid, ours, theirs)
        for a, b in zip(ours_grads, theirs_grads, strict=True):
            if a is None or b is None:
                assert a is None and b is None
                continue
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), mid
        np.testing.assert_allclose(ours_logged, theirs_logged, rtol=1e-5, atol=1e-6)
        assert any(g is not None and g.abs().sum() > 0 for g in ours_grads)


@pytest.mark.parametrize("masked", [False, True], ids=["columnar", "episodes_with_loss_mask"])
def test_the_captured_step_on_cpu_trains_like_rllibs_loss(learner, masked):
    """The static (CUDA-graph) step's code, eager on CPU over padded buffers, against the plain
    SGD loop with RLlib's own loss: same plan, same start, several Adam steps."""
    batch = {
        mid: _hand_built(learner, mid, n, masked, 10 + i)
        for i, (mid, n) in enumerate((("predator", 70), ("prey", 150)))
    }
    rows = {mid: len(b[Columns.OBS]) for mid, b in batch.items()}
    params0 = [p.detach().clone() for p in learner._params.values()]
    opt0 = copy.deepcopy(learner._get_optimizer_state())

    def run(static: bool):
        with torch.no_grad():
            for p, p0 in zip(learner._params.values(), params0, strict=True):
                p.copy_(p0)
        # a copy each time: the loaded state shares memory with it, and Adam updates in place
        learner._set_optimizer_state(copy.deepcopy(opt0))
        learner._cuda_graph = static
        if not static:  # RLlib's loss in the plain loop
            learner.compute_loss_for_module = functools.partial(
                PPOTorchLearner.compute_loss_for_module, learner
            )
        try:
            torch.manual_seed(7)
            trained, steps, losses = learner._sgd(
                batch, rows, num_epochs=2, minibatch_size=64, shuffle=True, num_total_minibatches=0
            )
        finally:
            learner._cuda_graph = False
            learner.__dict__.pop("compute_loss_for_module", None)
            learner._captured_steps.clear()
        stats = [float(learner.metrics.peek((mid, k))) for mid in rows for k in STATS_KL]
        params = [p.detach().clone() for p in learner._params.values()]
        return params, {m: float(v) for m, v in losses.items()}, stats, steps

    static, plain = run(True), run(False)
    assert static[3] == plain[3] == 2 * 3  # 150 prey rows / 64: 3 parts per epoch, padded
    for a, b in zip(plain[0], static[0], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(params0, static[0], strict=True))
    assert static[1] == pytest.approx(plain[1], rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(static[2], plain[2], rtol=1e-4, atol=1e-5)


def test_the_columnar_batch_standardises_advantages_per_module_like_rllib():
    rng = np.random.default_rng(0)
    parts = [
        {
            mid: {
                Postprocessing.ADVANTAGES: (3.0 + 5.0 * rng.standard_normal(n)).astype(np.float32),
                Postprocessing.VALUE_TARGETS: rng.standard_normal(n).astype(np.float32),
            }
            for mid, n in (("predator", 30 + 7 * i), ("prey", 90 + 11 * i))
        }
        for i in range(2)
    ]
    batch = train_batch(parts)
    for mid, b in batch.policy_batches.items():
        raw = np.concatenate([p[mid][Postprocessing.ADVANTAGES] for p in parts])
        expected = (raw - raw.mean()) / max(1e-4, raw.std())  # RLlib's GeneralAdvantageEstimation
        np.testing.assert_allclose(b[Postprocessing.ADVANTAGES], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            b[Postprocessing.VALUE_TARGETS],
            np.concatenate([p[mid][Postprocessing.VALUE_TARGETS] for p in parts]),
        )
