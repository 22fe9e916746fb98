"""The plug-in contract: which sampler a ``resources.env_runner`` value names, per algorithm,
and the hyper-parameters each plug-in hands RLlib's ``.training(...)``."""

from __future__ import annotations

import copy

import pytest

from bioflux import config
from bioflux.algorithms import get_algorithm
from tests.conftest import TINY


def _exp(algorithm: str, env_runner: str, training: dict | None = None):
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"], cfg["training"] = algorithm, training or {}
    cfg["resources"]["env_runner"] = env_runner
    return config.validate(cfg)


def _sampler(algo_config) -> tuple[str, str | None]:
    runner = algo_config.env_runner_cls
    return type(algo_config).__name__, runner.__name__ if runner else None


def test_epsilon_greedy_reads_columnar_as_its_old_name_for_transitions():
    eg = get_algorithm("epsilon_greedy")
    transitions = eg.build_config(_exp("epsilon_greedy", "transitions"))
    assert _sampler(transitions) == ("ColumnarDQNConfig", "TransitionEnvRunner")
    assert _sampler(eg.build_config(_exp("epsilon_greedy", "columnar"))) == _sampler(transitions)
    assert _sampler(eg.build_config(_exp("epsilon_greedy", "multi_agent"))) == ("DQNConfig", None)
    with pytest.raises(ValueError, match="resources.env_runner"):
        eg.build_config(_exp("epsilon_greedy", "batched"))


def test_ppo_samplers_and_what_it_refuses():
    ppo = get_algorithm("ppo")
    assert _sampler(ppo.build_config(_exp("ppo", "batched"))) == (
        "AgentRowMinibatchPPOConfig",
        "BatchedCoreEnvRunner",
    )
    assert _sampler(ppo.build_config(_exp("ppo", "columnar"))) == (
        "ColumnarPPOConfig",
        "ColumnarEnvRunner",
    )
    assert _sampler(ppo.build_config(_exp("ppo", "multi_agent"))) == (
        "AgentRowMinibatchPPOConfig",
        None,
    )
    with pytest.raises(ValueError, match="resources.env_runner"):
        ppo.build_config(_exp("ppo", "transitions"))  # epsilon-greedy's sampler


def test_maddpg_samples_joint_transitions_from_the_batched_core_only():
    maddpg = get_algorithm("maddpg")
    assert _sampler(maddpg.build_config(_exp("maddpg", "batched"))) == (
        "MADDPGConfig",
        "JointTransitionEnvRunner",
    )
    for other in ("columnar", "transitions", "multi_agent"):
        with pytest.raises(ValueError, match="resources.env_runner"):
            maddpg.build_config(_exp("maddpg", other))


def test_the_hyper_parameters_reach_rllib():
    ppo = get_algorithm("ppo").build_config(
        _exp("ppo", "batched", {"gae_lambda": 0.9, "kl_coeff": 0.1, "grad_clip": None})
    )
    assert (ppo.lambda_, ppo.kl_coeff, ppo.use_kl_loss, ppo.grad_clip) == (0.9, 0.1, True, None)
    assert (ppo.lr, ppo.num_epochs, ppo.minibatch_size) == (3e-4, 5, 512)
    eg = get_algorithm("epsilon_greedy").build_config(
        _exp("epsilon_greedy", "transitions", {"tau": 0.5, "n_step": 3, "dueling": True})
    )
    assert (eg.tau, eg.n_step, eg.dueling, eg.double_q) == (0.5, 3, True, True)
    assert eg.num_steps_sampled_before_learning_starts == 2000
    maddpg = get_algorithm("maddpg").build_config(
        _exp("maddpg", "batched", {"tau": 0.2, "batch_size": 7, "critic_hidden": [8]})
    )
    assert (maddpg.tau, maddpg.batch_size, maddpg.gamma, maddpg.grad_clip) == (0.2, 7, 0.95, 10.0)
    assert not hasattr(maddpg, "critic_hidden")
