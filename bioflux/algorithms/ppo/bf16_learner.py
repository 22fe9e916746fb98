"""PPO learner whose forward pass runs in bfloat16 (``training.learner_precision: bfloat16``).

The policy and value networks' forward pass runs under ``torch.autocast(bfloat16)``; weights,
Adam state, gradients, the PPO loss and the advantage computation stay float32 (standard
mixed precision, no loss scaling needed: bfloat16 has float32's exponent range). On CPUs with
native bfloat16 matrix units (AVX512-BF16, AMX) the matrix multiplications run ~3× faster;
the network outputs carry ~3 significant digits, so gradients are slightly noisier.
"""

from __future__ import annotations

from typing import Any

import torch
import tree

from bioflux.algorithms.ppo.learner import PerModuleEpochsPPOTorchLearner


def _to_float32(x: Any) -> Any:
    return x.float() if torch.is_tensor(x) and x.dtype == torch.bfloat16 else x


class BF16PPOTorchLearner(PerModuleEpochsPPOTorchLearner):
    """PPO learner (per-module epochs) with the forward pass under bfloat16 autocast."""

    def _uncompiled_update(self, batch: dict, **kwargs):
        # Mirrors TorchLearner._uncompiled_update (BioFlux runs one local learner, so there is
        # no DDP no_sync), with the forward in bfloat16 and the losses on float32 copies.
        self._compute_off_policyness(batch)
        with torch.autocast(self._device.type, dtype=torch.bfloat16):
            fwd_out = self.module.forward_train(batch)
        fwd_out = tree.map_structure(_to_float32, fwd_out)
        loss_per_module = self.compute_losses(fwd_out=fwd_out, batch=batch)
        gradients = self.compute_gradients(loss_per_module)
        self.apply_gradients(self.postprocess_gradients(gradients))
        return fwd_out, loss_per_module, {}
