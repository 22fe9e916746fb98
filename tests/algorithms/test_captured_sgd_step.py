"""The captured SGD step (``training.learner_cuda_graph``) trains exactly like the plain learner.

On CPU the captured step's code runs eagerly over its padded static buffers; the ``gpu``-marked
test replays it as a CUDA graph (run on a GPU machine with ``pytest -m gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.loss import explained_variance

STATS = [
    "policy_loss",
    "vf_loss",
    "vf_loss_unclipped",
    "vf_explained_var",
    "entropy",
    "mean_kl_loss",
    "gradients_default_optimizer_global_norm",
]


def _scalar(value) -> float:
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def _learner_and_batch(tiny_config, env_runner: str, kl_coeff: float, gpu: bool):
    tiny_config["resources"]["env_runner"] = env_runner
    tiny_config["training"].update(kl_coeff=kl_coeff, train_batch_size=400)
    if gpu:
        tiny_config["resources"]["num_gpus_per_learner"] = 1
        tiny_config["training"]["learner_cuda_graph"] = True
    cfg = build_config(config.validate(tiny_config))
    cfg.learner_config_dict["cuda_graph"] = True  # on CPU: the same step, run eagerly
    algo = cfg.build_algo()
    learner = algo.learner_group._learner
    captured, make_batch = {}, learner._make_batch_if_necessary

    def capture(**kwargs):
        captured["batch"] = batch = make_batch(**kwargs)
        return batch

    learner._make_batch_if_necessary = capture
    algo.train()  # a real train batch, and Adam state that is not fresh
    learner._make_batch_if_necessary = make_batch
    return algo, learner, captured["batch"]


def _update(learner, batch, *, captured: bool, seed: int, updates: int = 1):
    """Run ``updates`` updates of 2 epochs on ``batch`` from the learner's current state."""
    learner._cuda_graph = captured
    modules = {
        mid: {k: v for k, v in b.items() if torch.is_tensor(v)}
        for mid, b in batch.policy_batches.items()
    }
    rows = {mid: len(b) for mid, b in batch.policy_batches.items()}
    torch.manual_seed(seed)
    for _ in range(updates):
        trained, steps, losses = learner._sgd(
            modules, rows, num_epochs=2, minibatch_size=64, shuffle=True, num_total_minibatches=0
        )
    stats = {
        (mid, k): _scalar(learner.metrics.peek((mid, k), default=np.nan))
        for mid in rows
        for k in STATS
    }
    params = [p.detach().clone() for p in learner._params.values()]
    return params, {m: float(v.detach()) for m, v in losses.items()}, stats, trained, steps


def _compare_with_plain(learner, batch, updates: int = 1, rtol: float = 1e-4, atol: float = 1e-6):
    """Same plan, same start: the captured step's weights, losses and logged statistics equal
    the plain learner's. (Padding changes the GEMM shapes and so the rounding: tolerances.)"""
    params0 = [p.detach().clone() for p in learner._params.values()]
    opt0 = learner._get_optimizer_state()

    def rewind():
        with torch.no_grad():
            for p, p0 in zip(learner._params.values(), params0, strict=True):
                p.copy_(p0)
        learner._set_optimizer_state(opt0)

    # the captured step first: on the H200 a capture that followed eager SGD steps of the same
    # learner failed (see captured_sgd_step); training captures before any eager step
    static = _update(learner, batch, captured=True, seed=3, updates=updates)
    steps = list(learner._captured_steps.values())  # the rewind drops them
    rewind()
    plain = _update(learner, batch, captured=False, seed=3, updates=updates)
    assert static[3] == plain[3] and static[4] == plain[4]  # rows trained, steps
    for a, b in zip(plain[0], static[0], strict=True):
        assert torch.allclose(a, b, rtol=rtol, atol=atol)
    assert any(not torch.equal(a, b) for a, b in zip(params0, static[0], strict=True))
    for mid, loss in plain[1].items():
        assert static[1][mid] == pytest.approx(loss, rel=rtol, abs=atol), mid
    for key, value in plain[2].items():
        assert static[2][key] == pytest.approx(value, rel=rtol, abs=atol, nan_ok=True), key
    return steps


@pytest.mark.parametrize("env_runner,kl_coeff", [("batched", 0.0), ("columnar", 0.3)])
def test_the_static_step_trains_like_the_plain_learner(
    ray_session, tiny_config, env_runner, kl_coeff
):
    algo, learner, batch = _learner_and_batch(tiny_config, env_runner, kl_coeff, gpu=False)
    try:
        rows = {mid: len(b) for mid, b in batch.policy_batches.items()}
        parts = -(-max(rows.values()) // 64)  # minibatches per epoch
        assert parts > 1 and min(rows.values()) // parts < 64  # padding is exercised
        if env_runner == "batched":
            assert "loss_mask" in batch.policy_batches["prey"]  # so is the episodes' mask
        step = _compare_with_plain(learner, batch)[-1]  # the most recently used
        # nothing kept holds an autograd graph (it would carry the parameters' AccumulateGrad
        # nodes, and their stream, into a later capture)
        assert step.losses and all(loss.grad_fn is None for loss in step.losses.values())
        algo.train()
        before = dict(learner._captured_steps)
        result = algo.train()  # a whole iteration reuses its step object (a graph on a GPU)
        assert np.isfinite(result["learners"]["prey"]["policy_loss"])
        assert learner._captured_steps == before
        learner.set_state(learner.get_state())  # a restore replaces what a graph reads
        assert learner._captured_steps == {}
    finally:
        algo.stop()


def test_explained_variance_equals_rllibs_and_ignores_padding():
    from ray.rllib.utils.torch_utils import explained_variance as rllib_ev

    gen = torch.Generator().manual_seed(0)
    y, pred = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    assert torch.allclose(explained_variance(y, pred), rllib_ev(y, pred))
    assert torch.allclose(explained_variance(y, torch.zeros(())), rllib_ev(y, torch.zeros(())))
    padded_y, padded_pred = torch.cat([y, y[:1].expand(14)]), torch.cat([pred, pred[:1].expand(14)])
    valid = torch.arange(64) < 50
    assert torch.allclose(explained_variance(padded_y, padded_pred, valid), rllib_ev(y, pred))


def test_the_sync_free_kl_equals_torchs_with_impossible_actions():
    from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical

    from bioflux.algorithms.ppo.loss import kl_divergence

    gen = torch.Generator().manual_seed(0)
    prev_logits, curr_logits = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    prev_logits[0, 1] = -float("inf")  # an action the old policy never takes: contributes 0
    curr_logits[1, 2] = -float("inf")  # one the new policy never takes: KL is infinite
    prev = TorchCategorical.from_logits(prev_logits)
    curr = TorchCategorical.from_logits(curr_logits)
    ours, theirs = kl_divergence(prev, curr), prev.kl(curr)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)) and torch.isinf(ours[1])
    finite = torch.isfinite(theirs)
    assert torch.allclose(ours[finite], theirs[finite])


def test_a_cuda_graph_learner_needs_one_gpu_learner(tiny_config):
    tiny_config["training"]["learner_cuda_graph"] = True
    with pytest.raises(ValueError, match="learner_cuda_graph"):
        build_config(config.validate(tiny_config))


@pytest.mark.gpu
@pytest.mark.parametrize("env_runner,kl_coeff", [("batched", 0.0), ("columnar", 0.3)])
def test_the_cuda_graph_trains_like_the_plain_learner(
    ray_session, tiny_config, env_runner, kl_coeff
):
    algo, learner, batch = _learner_and_batch(tiny_config, env_runner, kl_coeff, gpu=True)
    try:
        assert learner._device.type == "cuda"
        # a full training iteration through the graph (captured in the first iteration)
        result = algo.train()
        for species in ("predator", "prey"):
            assert np.isfinite(result["learners"][species]["policy_loss"])
        assert result["learners"]["__all_modules__"]["num_sgd_steps_cuda_graph"] > 0
        steps = _compare_with_plain(learner, batch, updates=2, rtol=1e-3, atol=1e-5)
        for step in steps:  # the training iterations' graph and the comparison's
            assert step.capture_error is None, step.capture_error
            assert step.captured
    finally:
        algo.stop()


@pytest.mark.gpu
def test_a_failed_capture_on_the_gpu_trains_eagerly_and_leaves_random_ops_usable():
    from bioflux.algorithms.ppo.captured_sgd_step import CapturedSGDStep

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1).cuda()
    opt = torch.optim.Adam(net.parameters(), fused=True, capturable=True)
    columns = {"m": {"obs": torch.randn(10, 4, device="cuda")}}

    def run_step(buffers, metrics):
        loss = net(buffers["m"]["obs"]).square().mean()
        if loss.item() > -1:  # a host sync: cannot be captured
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"m": loss}

    def state():
        params = list(net.parameters())
        return params, [opt.state[p] for p in params]

    step = CapturedSGDStep(
        columns, capacity=16, run_step=run_step, learner_state=state, capture=True
    )
    step.load(columns, {"m": torch.arange(10, device="cuda")})
    before = [p.detach().clone() for p in net.parameters()]
    step.step(metrics=None)  # the capture fails, then this step runs eagerly
    assert not step.captured and step.capture_error
    after_one = [p.detach().clone() for p in net.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after_one, strict=True))
    # the eager step started from the weights the failed warm-up and capture had restored
    net2 = torch.nn.Linear(4, 1).cuda()
    with torch.no_grad():
        for p2, p0 in zip(net2.parameters(), before, strict=True):
            p2.copy_(p0)
    opt2 = torch.optim.Adam(net2.parameters(), fused=True, capturable=True)
    net2(step.buffers["m"]["obs"]).square().mean().backward()
    opt2.step()
    for a, b in zip(net2.parameters(), after_one, strict=True):
        assert torch.allclose(a, b)
    # random ops on the device still work (the generator is not left "capturing")
    assert torch.randperm(10, device="cuda").sort().values.tolist() == list(range(10))
    assert torch.randn(3, device="cuda").isfinite().all()


# Ops that make the host wait for the device (or copy a host value to it): none may run inside
# a captured step, or the capture fails on the GPU. Adam's CPU step (step counts on the host) is
# left out: on the GPU the learner's Adam is fused and capturable.
_HOST_SYNC_OPS = ("_local_scalar_dense", "nonzero", "index_put", "masked_select", "lift_fresh")


@pytest.mark.parametrize("env_runner,kl_coeff", [("batched", 0.3), ("columnar", 0.3)])
def test_the_step_to_capture_never_waits_for_the_device(
    ray_session, tiny_config, env_runner, kl_coeff
):
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

    class HostSyncs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            bool_index = func is torch.ops.aten.index.Tensor and any(
                torch.is_tensor(i) and i.dtype == torch.bool for i in (args[1] or [])
            )
            if bool_index or any(op in name for op in _HOST_SYNC_OPS):
                self.seen.append(name)
            return func(*args, **(kwargs or {}))

    algo, learner, batch = _learner_and_batch(tiny_config, env_runner, kl_coeff, gpu=False)
    try:
        for opt in learner._optimizer_parameters:
            step = opt.step

            def unwatched(*a, _step=step, **kw):
                with _disable_current_modes():
                    return _step(*a, **kw)

            opt.step = unwatched
        modules = {
            mid: {k: v for k, v in b.items() if torch.is_tensor(v)}
            for mid, b in batch.policy_batches.items()
        }
        indices = {mid: torch.arange(min(40, len(b))) for mid, b in modules.items()}
        step = learner._captured_step_for(modules, 64)
        step.load(modules, indices)
        watch = HostSyncs()
        with watch:
            step.step(learner.metrics)  # the real metrics: the statistics are computed too
        assert watch.seen == []
        assert np.isfinite(_scalar(learner.metrics.peek(("prey", "mean_kl_loss"))))
        # the watcher does see RLlib's own (syncing) loss
        from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

        fwd_out = learner.module.forward_train(step.buffers)
        with watch:
            PPOTorchLearner.compute_loss_for_module(
                learner,
                module_id="prey",
                config=learner.config.get_config_for_module("prey"),
                batch=step.buffers["prey"],
                fwd_out=fwd_out["prey"],
            )
        assert watch.seen
    finally:
        algo.stop()


def test_a_failed_capture_restores_the_weights_and_trains_without_the_graph(
    ray_session, tiny_config, monkeypatch, caplog
):
    """Forced on CPU: the warm-up steps run (and change the weights), then the capture fails;
    the update must still equal the plain learner's, and later updates take the plain loop."""
    import contextlib

    algo, learner, batch = _learner_and_batch(tiny_config, "columnar", 0.0, gpu=False)

    class Stream:
        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def failing_capture(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", failing_capture)
    real_step_for = learner._captured_step_for

    def capturing_step_for(*args, **kwargs):  # a step that tries to capture, as on a GPU
        step = real_step_for(*args, **kwargs)
        step.captured = step._graph is None and step.capture_error is None
        return step

    learner._captured_step_for = capturing_step_for
    try:
        with caplog.at_level("WARNING"):
            _compare_with_plain(learner, batch)
        assert "could not be captured" in caplog.text
        assert learner._cuda_graph is False  # the next updates take the plain loop
        result = algo.train()
        assert result["learners"]["__all_modules__"]["num_sgd_steps_cuda_graph"] == 0
    finally:
        algo.stop()
