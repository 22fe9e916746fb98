#!/usr/bin/env bash
# On the GPU device machine: the world on the GPU (torch core), checked and measured.
# Two calls in a row (the machine stays warm ~30 s; see fetch_wheels.sh for the wheels):
#   call 1: run(carry=[".raypart/ray.part.aa", ".whl"], command="bash benchmarks/gpu/gpu_world.sh 1")
#     installs the small wheels, keeps the first half of Ray's wheel, then (no Ray needed)
#     1. tests.txt: pytest -m gpu tests/envs/test_torch_core.py (the CUDA core equals numpy);
#     2. world.json: env step + observe, random actions, default world, over B worlds.
#   call 2: run(carry=[".raypart/ray.part.ab"], command="bash benchmarks/gpu/gpu_world.sh 2")
#     installs Ray, then
#     3. ppo.json: PPO end to end, env_device cuda + CUDA-graph learner (benchmarks/device_ppo.py);
#     4. reference.txt + eval_*.json: configs/ppo_gpu.yaml trained (1000 episodes, timed), then
#        evaluated against random opponents and itself.
# Everything lands in $OUT. Each step gets at most its own timeout and never more than what is
# left of BUDGET_S (default 560 s, under the device tool's 600 s per call), so the call always
# returns with what finished; a step with under 20 s left is skipped. STEPS="world ppo" (output
# names without extension) runs only those steps. DRY=1 (here, on a CPU, with the project's
# venv first on PATH and a scratch HOME holding nothing) runs every step tiny on the CPU.
BUDGET_S=${BUDGET_S:-560}
source "$(dirname "$0")/setup.sh"
[[ $PHASE == 2 ]] && python3 -c "import ray; print('ray', ray.__version__)"
python3 -c "import torch, bioflux; print(torch.__version__, torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [[ ${DRY:-0} == 1 ]]; then
  DEV=cpu GRAPH="" WORLDS=4,8 PPO_WORLDS=4 PPO_BATCH=3000 MBS=1024 SECONDS_=1 PROFILE_B=4
  REF_SET="--set resources.env_device=cpu --set resources.num_gpus_per_learner=0
    --set training.learner_cuda_graph=false --set resources.num_envs_per_env_runner=4
    --set training.train_batch_size=4000 --set stop.episodes=2 --set env.max_steps=20"
else
  DEV=cuda GRAPH=--learner-cuda-graph WORLDS=256,1024,4096,16384,32768 PPO_WORLDS=1024
  PPO_BATCH=1000000 MBS=16384,65536 SECONDS_=4 REF_SET="" PROFILE_B=4096
fi
export REF_SET

STEPS=${STEPS:-tests world world_index_select ppo reference}
if [[ $PHASE == 1 ]]; then
  MARK=gpu; [[ $DEV == cpu ]] && MARK="not gpu"
  step 120 tests.txt python3 -m pytest -q -p no:cacheprovider -o addopts="" -m "$MARK" \
    tests/envs/test_torch_core.py
  step 240 world.json python3 benchmarks/torch_world.py --device $DEV --seconds $SECONDS_ \
    --worlds $WORLDS --profile $PROFILE_B
  step 60 world_index_select.json python3 benchmarks/torch_world.py --device $DEV \
    --seconds $SECONDS_ --worlds $PROFILE_B --window-copy off
else
  cd benchmarks
  step 200 ppo.json python3 device_ppo.py --device $DEV --worlds $PPO_WORLDS \
    --train-batch-size $PPO_BATCH --minibatch-sizes $MBS --hidden 128,128 --iterations 3 $GRAPH
  cd ..
  # the reference experiment, timed, then evaluated (30 episodes per pairing)
  REF='t0=$(date +%s)
    python3 -m bioflux.cli train --config configs/ppo_gpu.yaml --output "$OUT/ref/runs" \
      --models "$OUT/ref/models" $REF_SET || exit 1
    echo "train_wall_s $(( $(date +%s) - t0 ))"
    m="$OUT/ref/models/ppo/ppo_reference_gpu"
    for pair in "$m random" "random $m" "$m $m" "random random"; do
      set -- $pair
      python3 -m bioflux.cli evaluate --predator "$1" --prey "$2" --episodes 30 \
        --config configs/ppo_gpu.yaml --out "$OUT/ref/eval_${1##*/}_vs_${2##*/}" $REF_SET
    done
    echo "total_wall_s $(( $(date +%s) - t0 ))"'
  step 330 reference.txt env OUT="$OUT" bash -c "$REF"
  rm -rf "$OUT"/ref/runs/*/checkpoints "$OUT"/ref/models  # weights do not come back
fi
