"""PPO's learner: per-species epochs, and an SGD loop that keeps the accelerator busy.

**Honest epochs.** RLlib's ``MiniBatchCyclicIterator`` takes ``minibatch_size`` rows from
*every* module in each minibatch and goes on until *every* module has finished
``num_epochs``. Predators have far fewer rows than prey, so they were trained for ~4× the
epochs asked for, a number that even depended on how well the prey survived. Here:

- each epoch shuffles every module's rows and cuts them into the same number ``K`` of nearly
  equal minibatches, ``K = ceil(rows of the largest module / minibatch_size)``;
- so every module sees each of its rows exactly ``num_epochs`` times, in ``num_epochs × K``
  SGD steps, and each minibatch holds rows of every module in proportion to its rows (the
  largest module's share is at most ``minibatch_size``).

**No host synchronisation per SGD step.** RLlib's per-minibatch loop costs ~20 ms per step on
a GPU whatever the network size: it slices ``SampleBatch`` objects, checks every gradient
with ``torch.isfinite(grad).all()`` in Python (one device→host sync per parameter, twice),
and logs every loss term as a window-1 metric (one ``.item()`` sync each). This learner's
``update`` instead moves the batch to the device once, shuffles and slices it there with
``torch.randperm``, replaces non-finite gradients with ``torch.nan_to_num`` (what RLlib does
after its check; the identity on finite gradients) and logs loss terms only for the last
minibatch of the update — the only one RLlib reports anyway (``window=1``). Step counts are
logged once per update with the same keys and totals.

**CUDA graphs** (``training.learner_cuda_graph``, a GPU learner): each SGD step — forward, loss,
backward, clip, Adam — is captured once and replayed (``captured_sgd_step``), so a step costs
one launch instead of several hundred.

The same learner serves every EnvRunner path (``batched``, ``columnar``, ``multi_agent``), so
all paths do the same SGD work for the same config.

**What is equivalent to RLlib 2.60's PPO.** Per SGD step, yes: on the same minibatch the loss,
its gradients and the logged statistics equal ``PPOTorchLearner.compute_loss_for_module``'s,
on every branch (ratios clipped on both sides, the value-loss clamp, the KL term), with and
without a loss mask, and through the captured step (``tests/algorithms/test_loss_power.py``).
The epoch schedule differs on purpose (above: every module makes exactly ``num_epochs``
passes). Minibatch parts never hold masked rows only (``minibatch_plan``). With several
learners (DDP) every learner runs the same number of steps, in whole epochs. On the columnar
path advantages are standardised over real rows only (``columnar_ppo``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core import ALL_MODULES
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.policy.sample_batch import MultiAgentBatch
from ray.rllib.utils.metrics import (
    DIFF_NUM_GRAD_UPDATES_VS_SAMPLER_POLICY,
    MODULE_TRAIN_BATCH_SIZE_MEAN,
    NUM_ENV_STEPS_TRAINED,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.torch_utils import clip_gradients

from bioflux.algorithms.ppo.captured_sgd_step import (
    CapturedSGDStep,
    HeldMetrics,
    dropped,
)
from bioflux.algorithms.ppo.loss import ppo_loss


def minibatch_plan(
    rows: dict[str, int],
    *,
    num_epochs: int,
    minibatch_size: int,
    shuffle: bool = True,
    num_total_minibatches: int = 0,
    device: torch.device | str | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """The row indices of every SGD minibatch of one update, per module.

    Each epoch shuffles every module's rows (``torch.randperm`` on ``device``) and cuts them
    into the same number ``K = ceil(rows of the largest module / minibatch_size)`` of nearly
    equal parts, so every module covers each of its rows exactly ``num_epochs`` times in
    ``num_epochs × K`` minibatches. With several learners (DDP), ``num_total_minibatches``
    is shared by every learner so they stay in lock-step: every epoch is then cut into
    ``K = ceil(num_total_minibatches / num_epochs)`` parts, and every learner runs the same
    ``num_epochs × K`` steps (rounded *up* to whole epochs, so no epoch is cut short: RLlib's
    count is floored and need not be a multiple of ``num_epochs``). Every minibatch holds rows
    of every module (DDP needs each module in every step): a module with fewer rows than parts
    repeats its rows, the one case where it does more than ``num_epochs`` passes.

    ``masks`` (a module's ``LOSS_MASK``, where it has one): its real rows and its masked rows
    are shuffled and cut into the ``K`` parts separately, so every part holds real rows. A part
    of masked rows only would have a 0/0 loss, whose zeroed gradients Adam's momentum would
    still turn into a step. (A module with no real row at all keeps the plain plan.)
    """
    if num_total_minibatches:
        k = max(1, math.ceil(num_total_minibatches / num_epochs))
    else:
        k = max(1, math.ceil(max(rows.values(), default=0) / minibatch_size))
    total = num_epochs * k
    groups = {mid: _row_groups(n, k, (masks or {}).get(mid), device) for mid, n in rows.items()}
    step = 0
    while step < total:
        orders = {
            mid: [
                (index[torch.randperm(len(index), device=device)] if shuffle else index, parts)
                for index, parts in module_groups
            ]
            for mid, module_groups in groups.items()
        }
        for i in range(min(k, total - step)):
            yield {
                mid: torch.cat([order[parts[i]] for order, parts in module_orders])
                for mid, module_orders in orders.items()
            }
            step += 1


def _row_groups(
    n: int, k: int, mask: torch.Tensor | None, device: torch.device | str | None
) -> list[tuple[torch.Tensor, list[slice]]]:
    """A module's rows to shuffle and cut separately, each with its ``k`` parts: all rows, or
    (with a mask that has real rows) the real rows, then the masked rows (parts may be empty)."""
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.bool)
        real = torch.nonzero(mask).flatten()  # one host sync per module and update
        if len(real):
            padding = torch.nonzero(~mask).flatten()
            return [
                (real, _epoch_parts(len(real), k)),
                (padding, _epoch_parts(len(padding), k, may_be_empty=True)),
            ]
    return [(torch.arange(n, device=device), _epoch_parts(n, k))]


def _epoch_parts(n: int, k: int, may_be_empty: bool = False) -> list[slice]:
    """Cut ``n`` (shuffled) rows into ``k`` nearly equal slices; fewer rows than ``k``: repeat
    (or, ``may_be_empty``, leave some slices empty)."""
    if n >= k or may_be_empty:
        edges = np.linspace(0, n, k + 1).round().astype(int)
        return [slice(int(edges[i]), int(edges[i + 1])) for i in range(k)]
    return [slice(i % n, i % n + 1) for i in range(k)]


NUM_SGD_STEPS_CUDA_GRAPH = "num_sgd_steps_cuda_graph"  # metric: steps replayed as a graph
MAX_CAPTURED_GRAPHS = 4  # graphs kept per learner (one per buffer shape / lr / coefficient)


class PerModuleEpochsPPOTorchLearner(PPOTorchLearner):
    """``PPOTorchLearner`` with per-module epochs and a sync-free SGD loop (module docstring)."""

    def build(self) -> None:
        self._cuda_graph = bool(self.config.learner_config_dict.get("cuda_graph", False))
        self._captured_steps: dict[tuple, CapturedSGDStep] = {}
        super().build()
        if self._cuda_graph and (
            self.config.num_learners > 1
            or self._torch_compile_forward_train
            or self.config.torch_skip_nan_gradients
            or self._lr_scheduler_classes is not None
            or self._grad_scalers is not None
        ):
            raise ValueError(
                "learner_cuda_graph: one learner, no torch.compile, no lr schedule, no "
                "torch_skip_nan_gradients and no grad scalers (the step must be capturable)"
            )
        # ``torch_compile_learner`` (forward_train): RLlib 2.60 tests the MultiRLModule instead
        # of each sub-module for being a TorchRLModule, so it compiles none; compile them here.
        if self._torch_compile_forward_train and not isinstance(self._module, TorchRLModule):
            for module in self._module._rl_modules.values():
                if isinstance(module, TorchRLModule):
                    module.compile(self._torch_compile_cfg)

    # A captured graph reads the optimizer state and parameters by address: whatever may
    # replace them drops the graphs (they are captured again on the next update).
    def set_state(self, state: Any) -> None:
        super().set_state(state)
        self._captured_steps.clear()

    def _set_optimizer_state(self, state: Any) -> None:
        super()._set_optimizer_state(state)
        self._captured_steps.clear()

    def add_module(self, *args: Any, **kwargs: Any) -> Any:
        self._captured_steps.clear()
        return super().add_module(*args, **kwargs)

    def remove_module(self, *args: Any, **kwargs: Any) -> Any:
        self._captured_steps.clear()
        return super().remove_module(*args, **kwargs)

    def update(
        self,
        batch: MultiAgentBatch | None = None,
        batches: Any = None,
        batch_refs: Any = None,
        episodes: Any = None,
        episodes_refs: Any = None,
        data_iterators: Any = None,
        training_data: TrainingData | None = None,
        *,
        timesteps: dict[str, Any] | None = None,
        num_total_minibatches: int = 0,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle_batch_per_epoch: bool = False,
        _no_metrics_reduce: bool = False,
        **kwargs: Any,
    ):
        if training_data is None:
            training_data = TrainingData(
                batch=batch,
                batches=batches,
                batch_refs=batch_refs,
                episodes=episodes,
                episodes_refs=episodes_refs,
                data_iterators=data_iterators,
            )
        if training_data.data_iterators or not minibatch_size:  # RLlib's own loop
            return super().update(
                training_data=training_data,
                timesteps=timesteps,
                num_total_minibatches=num_total_minibatches,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                _no_metrics_reduce=_no_metrics_reduce,
                **kwargs,
            )
        self._check_is_built()
        timesteps = timesteps or {}
        self.before_gradient_based_update(timesteps=timesteps)
        training_data.validate()
        training_data.solve_refs()
        self._weights_seq_no += 1
        if self.config.num_learners > 1 and not num_total_minibatches:
            # DDP without a shared count (RLlib's floored count is 0 for a batch smaller than
            # one minibatch per learner): one part per epoch, the same on every learner
            num_total_minibatches = num_epochs
        full = self._make_batch_if_necessary(training_data=training_data)  # on the device
        modules = {
            mid: {k: v for k, v in b.items() if _is_tensor_tree(v)}
            for mid, b in full.policy_batches.items()
            if len(b) and self.should_module_be_updated(mid, full)
        }
        unknown = set(modules) - set(self.module.keys())
        if unknown:
            raise ValueError(f"Batch contains ModuleIDs {unknown} that are not in this Learner!")
        if modules:
            rows = {mid: len(full.policy_batches[mid]) for mid in modules}
            trained, steps, loss_per_module = self._sgd(
                modules,
                rows,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle=shuffle_batch_per_epoch and num_epochs > 1,
                num_total_minibatches=num_total_minibatches,
            )
            self._log_trained(trained, steps, env_steps=full.env_steps())
            for mid, loss in loss_per_module.items():
                self.metrics.log_value(key=(mid, self.TOTAL_LOSS_KEY), value=loss, window=1)
        self.after_gradient_based_update(timesteps=timesteps)
        if not _no_metrics_reduce:
            return self.metrics.reduce()

    def _sgd(
        self,
        modules: dict[str, dict[str, Any]],
        rows: dict[str, int],
        *,
        num_epochs: int,
        minibatch_size: int,
        shuffle: bool,
        num_total_minibatches: int,
    ) -> tuple[dict[str, int], int, dict[str, Any]]:
        """The SGD steps of one update; returns rows trained per module, steps, last losses."""
        plan = list(
            minibatch_plan(
                rows,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle=shuffle,
                num_total_minibatches=num_total_minibatches,
                device=self._device,
                masks={
                    mid: cols[Columns.LOSS_MASK]
                    for mid, cols in modules.items()
                    if Columns.LOSS_MASK in cols
                },
            )
        )
        trained = dict.fromkeys(modules, 0)
        for indices in plan:
            for mid, index in indices.items():
                trained[mid] += len(index)
        if self._static_minibatches:
            return trained, len(plan), self._static_sgd(modules, plan, minibatch_size)
        metrics, quiet = self.metrics, HeldMetrics(self.metrics, record=False)
        loss_per_module: dict[str, Any] = {}
        for step, indices in enumerate(plan, start=1):
            minibatch = {mid: _take(columns, indices[mid]) for mid, columns in modules.items()}
            self.metrics = metrics if step == len(plan) else quiet
            try:
                _, loss_per_module, _ = self._update(minibatch)
            finally:
                self.metrics = metrics
        return trained, len(plan), loss_per_module

    @property
    def _static_minibatches(self) -> bool:
        """Minibatches go through fixed-size buffers: for a CUDA graph, or a compiled forward
        (one shape, so one compilation, instead of one per minibatch size)."""
        return self._cuda_graph or self._torch_compile_forward_train

    def _static_sgd(
        self,
        modules: dict[str, dict[str, Any]],
        plan: list[dict[str, torch.Tensor]],
        minibatch_size: int,
    ) -> dict[str, Any]:
        """The SGD steps of one update through a ``CapturedSGDStep`` (replayed as a CUDA graph
        with ``learner_cuda_graph`` on a GPU, else eager); returns the last step's losses."""
        capacity = max([minibatch_size, *(len(ix) for step in plan for ix in step.values())])
        step = self._captured_step_for(modules, capacity)
        metrics, quiet = self.metrics, HeldMetrics(self.metrics, record=False)
        for i, indices in enumerate(plan, start=1):
            step.load(modules, indices)
            step.step(metrics if i == len(plan) else quiet)
        if step.captured:
            step.log_last(metrics)
        elif step.capture_error:
            self._cuda_graph = False  # warned once; later updates take the plain loop
        self.metrics.log_value(
            (ALL_MODULES, NUM_SGD_STEPS_CUDA_GRAPH),
            len(plan) if step.captured else 0,
            reduce="sum",
        )
        self._log_off_policyness(step.buffers)
        return {mid: loss.detach().clone() for mid, loss in step.losses.items()}

    def _captured_step_for(
        self, modules: dict[str, dict[str, Any]], capacity: int
    ) -> CapturedSGDStep:
        """The captured step for these columns and capacity at the current learning rates and
        coefficient tensors (a graph bakes in floats and reads tensors by address)."""
        coefficients = [  # per-module dicts filled on first access (the first loss)
            c
            for mid in sorted(modules)
            for c in (
                self.entropy_coeff_schedulers_per_module[mid].get_current_value(),
                self.curr_kl_coeffs_per_module[mid],
            )
        ]
        key = (
            CapturedSGDStep.signature(modules, capacity),
            tuple(g["lr"] for opt in self._optimizer_parameters for g in opt.param_groups),
            tuple(c.data_ptr() if torch.is_tensor(c) else c for c in coefficients),
        )
        step = self._captured_steps.pop(key, None)
        if step is None:
            step = CapturedSGDStep(
                modules,
                capacity=capacity,
                run_step=self._static_sgd_step,
                learner_state=self._sgd_state,
                capture=self._cuda_graph and self._device.type == "cuda",
            )
            while len(self._captured_steps) >= MAX_CAPTURED_GRAPHS:
                self._captured_steps.pop(next(iter(self._captured_steps)))
        self._captured_steps[key] = step  # most recently used last
        return step

    def _static_sgd_step(self, batch: dict[str, Any], metrics: Any) -> dict[str, torch.Tensor]:
        """One SGD step (the body of RLlib's ``_uncompiled_update``, without its per-step
        off-policyness metric, whose boolean indexing syncs), logging into ``metrics``."""
        real, self.metrics = self.metrics, metrics
        try:
            fwd_out = self.module.forward_train(batch)
            losses = self.compute_losses(fwd_out=fwd_out, batch=batch)
            self.apply_gradients(self.postprocess_gradients(self.compute_gradients(losses)))
            return losses
        finally:
            self.metrics = real

    def _sgd_state(self) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        """The tensors one SGD step changes: the parameters, and each one's optimizer state."""
        params, states = [], []
        for opt in self._optimizer_parameters:
            for group in opt.param_groups:
                for p in group["params"]:
                    params.append(p)
                    states.append(opt.state[p])  # created empty here, filled by Adam in place
        return params, states

    def _log_off_policyness(self, batch: dict[str, Any]) -> None:
        """RLlib's per-minibatch off-policyness metric, for the last minibatch, sync-free."""
        for mid, b in batch.items():
            if WEIGHTS_SEQ_NO in b:
                lag = (self._weights_seq_no - b[WEIGHTS_SEQ_NO]).float()
                mask = b[Columns.LOSS_MASK]
                value = torch.sum(torch.where(mask, lag, 0.0)) / torch.sum(mask)
                self.metrics.log_value(
                    (mid, DIFF_NUM_GRAD_UPDATES_VS_SAMPLER_POLICY), value, window=1
                )

    def _log_trained(self, trained: dict[str, int], steps: int, env_steps: int) -> None:
        """The step counters RLlib logs per minibatch, logged once with the same totals."""
        log = self.metrics.log_value
        for mid, n in trained.items():
            log((mid, WEIGHTS_SEQ_NO), self._weights_seq_no, window=1)
            log((mid, MODULE_TRAIN_BATCH_SIZE_MEAN), n / max(1, steps), reduce="mean")
            log((mid, NUM_MODULE_STEPS_TRAINED), n, reduce="sum")
            log(
                (mid, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                n,
                reduce="lifetime_sum",
                with_throughput=True,
            )
        total = sum(trained.values())
        log((ALL_MODULES, NUM_MODULE_STEPS_TRAINED), total, reduce="sum", with_throughput=True)
        log(
            (ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
            total,
            reduce="lifetime_sum",
            with_throughput=True,
        )
        log((ALL_MODULES, NUM_ENV_STEPS_TRAINED), env_steps * steps, reduce="sum")
        log(
            (ALL_MODULES, NUM_ENV_STEPS_TRAINED_LIFETIME),
            env_steps * steps,
            reduce="lifetime_sum",
            with_throughput=True,
        )

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        """The PPO loss (``loss.ppo_loss``); its statistics are logged only when the metrics
        keep them (not during the SGD steps whose values RLlib would overwrite)."""
        total, stats = ppo_loss(
            self.module[module_id].unwrapped(),
            config,
            batch,
            fwd_out,
            entropy_coeff=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            kl_coeff=self.curr_kl_coeffs_per_module[module_id] if config.use_kl_loss else None,
            with_stats=not dropped(self.metrics),
        )
        if stats is not None:
            self.metrics.log_dict(stats, key=module_id, window=1)
        return total

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        # RLlib's default optimizer (Adam, the lr handled by its scheduler), with its
        # multi-tensor implementation: one fused kernel on CUDA, foreach loops on CPU.
        # On CUDA also ``capturable``, so a step can be captured in a CUDA graph (fused Adam
        # keeps its step counters on the device either way: no cost when nothing is captured).
        params = self.get_parameters(self._module[module_id])
        fused = self._device.type == "cuda"
        optimizer = torch.optim.Adam(
            params, fused=fused, foreach=None if fused else True, capturable=fused
        )
        self.register_optimizer(
            module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr
        )

    @staticmethod
    def _get_clip_function():
        return clip_gradients_foreach

    def apply_gradients(self, gradients_dict: dict) -> None:
        # RLlib checks each gradient with torch.isfinite(grad).all() in Python (a device→host
        # sync per parameter) and then applies torch.nan_to_num to the non-finite ones;
        # nan_to_num on every gradient gives the same result without the syncs.
        if (
            self.config.torch_skip_nan_gradients
            or self._lr_scheduler_classes is not None
            or self._grad_scalers is not None
        ):
            return super().apply_gradients(gradients_dict)
        for pid, grad in gradients_dict.items():
            if grad is not None:
                self._params[pid].grad = torch.nan_to_num(grad)
        for module_id, optimizer_names in self._module_optimizers.items():
            for name in optimizer_names:
                self.get_optimizer(module_id, name).step()


def clip_gradients_foreach(
    gradients_dict: dict, *, grad_clip: float | None = None, grad_clip_by: str = "value"
):
    """RLlib's ``clip_gradients`` with its global-norm mode in multi-tensor kernels.

    Same arithmetic as ``ray.rllib.utils.torch_utils.clip_gradients`` (per-tensor norms with
    non-finite values mapped to ±1e9, their norm, coefficient ``clip / max(norm + 1e-6, clip)``
    clamped to 1), in a handful of kernels instead of three per parameter.
    """
    if grad_clip is None or grad_clip_by != "global_norm":
        return clip_gradients(gradients_dict, grad_clip=grad_clip, grad_clip_by=grad_clip_by)
    grads = [g.detach() for g in gradients_dict.values() if g is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack(torch._foreach_norm(grads, 2.0)).nan_to_num(neginf=-10e8, posinf=10e8)
    total = torch.linalg.vector_norm(norms, 2.0).nan_to_num(neginf=-10e8, posinf=10e8)
    coeff = torch.clamp(grad_clip / torch.clamp(total + 1e-6, min=grad_clip), max=1.0)
    torch._foreach_mul_(grads, coeff)
    return total


def _take(columns: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
    """The rows ``index`` of a module's columns."""
    return tree.map_structure(lambda t: t[index], columns)


def _is_tensor_tree(value: Any) -> bool:
    return all(torch.is_tensor(x) for x in tree.flatten(value))
