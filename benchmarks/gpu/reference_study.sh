#!/usr/bin/env bash
# On the GPU device machine: the seed's reference comparison, configs/study_gpu.yaml (100x100,
# 20 predators, 100 prey, 300 steps, 1000 episodes per approach and seed, 3 seeds, cross-play,
# the report), timed, with its report brought back. Two calls in a row (the machine stays warm
# ~30 s between them; benchmarks/gpu/fetch_wheels.sh fetches the wheels here first):
#   call 1: run(carry=[".raypart/ray.part.aa", ".whl"], command="bash benchmarks/gpu/reference_study.sh 1")
#     installs the small wheels, keeps the first half of Ray's wheel, probes the imports the
#     study needs (imports.txt), and checks the torch core and the device rollouts on CUDA
#     (tests.txt: pytest -m gpu, no Ray needed for the core);
#   call 2: run(carry=[".raypart/ray.part.ab"], command="bash benchmarks/gpu/reference_study.sh 2")
#     installs Ray, then study.txt: `bioflux study --config study_gpu` timed (study_wall_s),
#     and copies study.md, study.json and the figures into $OUT/report/.
# Every step gets at most its own timeout and never more than what is left of BUDGET_S
# (default 570 s, under the device tool's 600 s per call), so the call always returns with what
# finished; `bioflux study --resume` in a third call would finish the rest. DRY=1 (here, on a
# CPU, with the project's venv first on PATH and a scratch HOME) runs the same steps on a tiny
# world, every GPU path switched to the CPU.
BUDGET_S=${BUDGET_S:-570}
source "$(dirname "$0")/setup.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true


if [[ $PHASE == 1 ]]; then
  # what the study imports beyond torch and the carried wheels (Tune: pyarrow, pandas; the
  # report: matplotlib, scipy, tqdm); a missing one must travel in .whl
  step 60 imports.txt python3 -c '
import importlib
for m in ["torch", "numpy", "scipy", "pyarrow", "pandas", "matplotlib", "tqdm", "yaml",
          "pydantic", "gymnasium", "pettingzoo"]:
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as err:
        print(m, "MISSING", err)
import torch; print("cuda", torch.cuda.is_available())'
  MARK=gpu; [[ ${DRY:-0} == 1 ]] && MARK="not gpu"
  step 150 tests.txt python3 -m pytest -q -p no:cacheprovider -o addopts="" -m "$MARK" \
    tests/envs/test_torch_core.py
  exit 0
fi

python3 -c "import ray, torch; print('ray', ray.__version__, 'torch', torch.__version__)"
if [[ ${DRY:-0} == 1 ]]; then  # a tiny world, every GPU path on the CPU
  CPU_PPO='["resources.env_device=cpu","resources.num_gpus_per_learner=0","training.learner_cuda_graph=false","training.train_batch_size=2000","training.minibatch_size=500","resources.num_envs_per_env_runner=8"]'
  CPU_DQN='["resources.env_device=cpu","resources.num_env_runners=0","resources.num_envs_per_env_runner=8","resources.num_gpus_per_learner=0","training.train_batch_size=64","training.learning_starts=100"]'
  CPU_MADDPG='["training.env_steps_per_iteration=100","training.updates_per_iteration=2","training.batch_size=64","training.learning_starts=100","resources.num_env_runners=0","resources.num_envs_per_env_runner=4"]'
  SET=(--set env.height=20 --set env.width=20 --set env.n_predators=3 --set env.n_prey=8
       --set env.max_steps=30 --set budget.episodes=20 --set seeds=[0,1]
       --set evaluation.episodes=4 --set evaluation.device=cpu --set resources.gpus_per_trial=0
       --set resources.cpus_per_trial=1 --set resources.max_concurrent=2
       --set "approaches.ppo.set=$CPU_PPO" --set "approaches.epsilon_greedy.set=$CPU_DQN"
       --set "approaches.maddpg.set=$CPU_MADDPG")
else
  SET=()
fi
STUDY='t0=$(date +%s)
  python3 -m bioflux.cli study --config study_gpu --output "$OUT/studies" "$@"
  rc=$?
  echo "study_exit $rc"
  echo "study_wall_s $(( $(date +%s) - t0 ))"'
step 560 study.txt bash -c "$STUDY" study "${SET[@]}"
mkdir -p "$OUT/report"
cp "$OUT"/studies/study_gpu/*.md "$OUT"/studies/study_gpu/*.json "$OUT"/studies/study_gpu/*.png \
  "$OUT/report/" 2>/dev/null
find "$OUT/studies" -name "*.pt" -delete 2>/dev/null  # no weights come back
rm -rf "$OUT"/studies/study_gpu/models "$OUT"/studies/study_gpu/runs
ls -la "$OUT/report"
