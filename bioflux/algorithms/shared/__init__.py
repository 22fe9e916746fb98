"""What several algorithms sample and replay with: ``batched_env_runner`` (the batched numpy
core as an RLlib EnvRunner, which PPO's columnar runner, epsilon-greedy's transition runner and
MADDPG's joint-transition runner build on), ``ring_replay`` (flat per-species replay) and
``callbacks`` (the episode metrics every RLlib plug-in logs)."""
