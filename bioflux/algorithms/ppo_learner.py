"""PPO's learner: every species' module makes exactly ``num_epochs`` passes over its own rows.

RLlib's ``MiniBatchCyclicIterator`` takes ``minibatch_size`` rows from *every* module in each
minibatch and goes on until *every* module has finished ``num_epochs``. Predators have far
fewer rows than prey, so they were trained for ~4× the epochs asked for, a number that even
depended on how well the prey survived. ``PerModuleEpochIterator`` fixes the semantics:

- each epoch shuffles every module's rows and cuts them into the same number ``K`` of nearly
  equal minibatches, ``K = ceil(rows of the largest module / minibatch_size)``;
- so every module sees each of its rows exactly ``num_epochs`` times, in ``num_epochs × K``
  SGD steps, and each minibatch holds rows of every module in proportion to its rows (the
  largest module's share is at most ``minibatch_size``).

The same learner serves both EnvRunner paths (``batched`` and ``multi_agent``), so both do the
same SGD work for the same config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.policy.sample_batch import MultiAgentBatch
from ray.rllib.utils.minibatch_utils import MiniBatchIteratorBase


class PerModuleEpochIterator(MiniBatchIteratorBase):
    """Minibatches in which every module covers its own rows exactly ``num_epochs`` times.

    With several learners (DDP), ``num_total_minibatches`` fixes how many minibatches every
    learner yields so they stay in lock-step; the epoch is then cut into
    ``num_total_minibatches / num_epochs`` minibatches. Every minibatch holds rows of every
    module (DDP needs each module in every step): a module with fewer rows than minibatches
    per epoch repeats its rows, the one case where it does more than ``num_epochs`` passes.
    """

    def __init__(
        self,
        batch: MultiAgentBatch,
        *,
        num_epochs: int = 1,
        minibatch_size: int,
        shuffle_batch_per_epoch: bool = True,
        num_total_minibatches: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch, num_epochs=num_epochs, minibatch_size=minibatch_size)
        self._batch = batch
        self._num_epochs = num_epochs
        self._minibatch_size = minibatch_size
        self._shuffle = shuffle_batch_per_epoch
        self._total = num_total_minibatches

    def minibatches_per_epoch(self) -> int:
        if self._total:
            return max(1, round(self._total / self._num_epochs))
        largest = max((len(b) for b in self._batch.policy_batches.values()), default=0)
        return max(1, math.ceil(largest / self._minibatch_size))

    def _parts(self, n: int, k: int) -> list[slice]:
        if n >= k:
            edges = np.linspace(0, n, k + 1).round().astype(int)
            return [slice(int(edges[i]), int(edges[i + 1])) for i in range(k)]
        return [slice(i % n, i % n + 1) for i in range(k)]

    def __iter__(self):
        k = self.minibatches_per_epoch()
        modules = {m: b for m, b in self._batch.policy_batches.items() if len(b)}
        yielded = 0
        epochs = self._num_epochs if not self._total else math.ceil(self._total / k)
        for _ in range(epochs):
            if self._shuffle:
                for module_batch in modules.values():
                    module_batch.shuffle()
            parts = {m: self._parts(len(b), k) for m, b in modules.items()}
            for i in range(k):
                if self._total and yielded >= self._total:
                    return
                yield MultiAgentBatch(
                    {m: b[parts[m][i]] for m, b in modules.items()}, len(self._batch)
                )
                yielded += 1


class PerModuleEpochsPPOTorchLearner(PPOTorchLearner):
    """``PPOTorchLearner`` whose minibatches follow ``PerModuleEpochIterator``."""

    def _create_iterator_if_necessary(
        self,
        *,
        training_data: Any,
        num_total_minibatches: int = 0,
        num_epochs: int = 1,
        minibatch_size: int | None = None,
        shuffle_batch_per_epoch: bool = False,
        **kwargs: Any,
    ):
        if training_data.data_iterators or not minibatch_size:
            return super()._create_iterator_if_necessary(
                training_data=training_data,
                num_total_minibatches=num_total_minibatches,
                num_epochs=num_epochs,
                minibatch_size=minibatch_size,
                shuffle_batch_per_epoch=shuffle_batch_per_epoch,
                **kwargs,
            )
        batch = self._make_batch_if_necessary(training_data=training_data)
        for module_id in list(batch.policy_batches):
            if not self.should_module_be_updated(module_id, batch):
                del batch.policy_batches[module_id]
        if not batch.policy_batches:
            return {}
        return PerModuleEpochIterator(
            batch,
            num_epochs=num_epochs,
            minibatch_size=minibatch_size,
            shuffle_batch_per_epoch=shuffle_batch_per_epoch and num_epochs > 1,
            num_total_minibatches=num_total_minibatches,
        )
