"""No SGD step on a minibatch part whose rows are all masked (``LOSS_MASK``).

Such a part gives its module a 0/0 loss: ``nan_to_num`` zeroes the gradients, but Adam's
momentum still moves the weights. ``minibatch_plan`` cuts a module's real and masked rows into
the parts separately, so every part holds real rows.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from ray.rllib.core.columns import Columns

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.learner import minibatch_plan
from tests.conftest import TINY


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(
    "rows,real",
    [
        ({"predator": 3, "prey": 100}, {"predator": [0, 1], "prey": list(range(20))}),
        ({"predator": 40, "prey": 100}, {"predator": [39], "prey": list(range(90, 100))}),
    ],
)
def test_every_part_holds_real_rows_and_every_row_is_seen_num_epochs_times(rows, real, shuffle):
    masks = {mid: torch.zeros(n, dtype=torch.bool) for mid, n in rows.items()}
    for mid, r in real.items():
        masks[mid][r] = True
    plan = list(minibatch_plan(rows, num_epochs=3, minibatch_size=20, shuffle=shuffle, masks=masks))
    assert len(plan) == 3 * 5
    for indices in plan:
        for mid, index in indices.items():
            assert masks[mid][index].any(), (mid, index)
    seen = Counter(r for ix in plan for r in ix["prey"].tolist())
    assert seen == Counter({r: 3 for r in range(100)})  # masked rows too, exactly 3 times
    if len(real["predator"]) >= 5:  # fewer real rows than parts repeat (every part has one)
        seen = Counter(r for ix in plan for r in ix["predator"].tolist())
        assert seen == Counter({r: 3 for r in range(rows["predator"])})


@pytest.fixture(scope="module")
def learner(ray_session):
    cfg = copy.deepcopy(TINY)
    algo = build_config(config.validate(cfg)).build_algo()
    yield algo.learner_group._learner
    algo.stop()


@pytest.mark.parametrize("static", [False, True], ids=["plain", "captured_on_cpu"])
def test_the_learner_never_steps_on_an_all_masked_part(learner, static):
    g = torch.Generator().manual_seed(0)
    batch = {}
    for mid, n, n_real in (("predator", 4, 2), ("prey", 120, 30)):
        module = learner.module[mid]
        obs = torch.randn(n, module.observation_space.shape[0], generator=g)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[:n_real] = True  # the real rows first, the masked ones after (as in a batch)
        batch[mid] = {
            Columns.OBS: obs,
            Columns.ACTIONS: torch.randint(0, 5, (n,), generator=g),
            Columns.ACTION_LOGP: -torch.rand(n, generator=g),
            Columns.ACTION_DIST_INPUTS: torch.randn(n, 5, generator=g),
            "advantages": torch.randn(n, generator=g),
            "value_targets": torch.randn(n, generator=g),
            Columns.LOSS_MASK: mask,
        }
    rows = {mid: len(b[Columns.OBS]) for mid, b in batch.items()}
    real_rows: list[dict[str, int]] = []
    loss_fn = learner.compute_loss_for_module

    def counting(*, module_id, config, batch, fwd_out):
        real_rows.append({module_id: int(batch[Columns.LOSS_MASK].sum())})
        return loss_fn(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)

    learner.compute_loss_for_module = counting
    learner._cuda_graph = static
    try:
        _, steps, losses = learner._sgd(
            batch, rows, num_epochs=2, minibatch_size=24, shuffle=False, num_total_minibatches=0
        )
    finally:
        del learner.compute_loss_for_module
        learner._cuda_graph = False
        learner._captured_steps.clear()
    assert steps == 2 * 5
    assert len(real_rows) == 2 * steps  # two modules per step
    assert all(n > 0 for r in real_rows for n in r.values()), real_rows
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert all(torch.isfinite(p).all() for p in learner._params.values())
