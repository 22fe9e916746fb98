#!/usr/bin/env bash
# On the GPU device machine (see fetch_wheels.sh for the two calls): install Ray beside the
# machine's own PyTorch, then check and measure the CUDA-graph learner (#16's GPU target).
#   1. pytest -m gpu: the CUDA graph trains like the plain learner (params, losses, metrics),
#      and MADDPG and columnar epsilon-greedy train on a GPU learner;
#   2. benchmarks/train_throughput.py, 12 EnvRunners x 4 worlds, 144k agent-steps/iteration,
#      minibatch 4096, 5 epochs, GPU learner: columnar_ahead and columnar, with the graph and
#      then without it (the baseline on the same machine);
#   3. benchmarks/learner_step.py: the learner alone on one 144k batch, ms per SGD step, eager
#      against the graph, minibatch 4096 and 16384;
#   4. benchmarks/maddpg_update.py: MADDPG's learner alone on the GPU (ms per gradient step).
# Everything lands in $OUT (tests.txt, graph.json, eager.json, learner_step.json,
# maddpg_update.json), most important first. Each step gets at most its own timeout and never
# more than what is left of BUDGET_S (default 570 s, under the device tool's 600 s per call),
# so the call always returns with what finished; a step with under 20 s left is skipped.
# STEPS="tests graph" (names of the output files) runs only those steps.
set -uo pipefail
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-570} ))
R="$HOME"/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
SITE="$HOME"/site
if [[ ! -d "$SITE/ray" ]]; then
  cat "$HOME"/ray.part.aa .raypart/ray.part.ab > "$R" || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl "$R" || exit 1
fi
export PYTHONPATH="$SITE":$PWD PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c "import ray, torch, bioflux; print(ray.__version__, torch.__version__, torch.cuda.get_device_name(0))"

# step MAX_S OUTFILE COMMAND...: run COMMAND with stdout (and stderr's tail) into $OUT/OUTFILE,
# if OUTFILE's name (without extension) is in STEPS (default: every step)
STEPS=${STEPS:-tests graph eager learner_step maddpg_update}
step() {
  local max=$1 out=$2; shift 2
  [[ " $STEPS " == *" ${out%%.*} "* ]] || return 0
  local left=$(( DEADLINE - $(date +%s) ))
  if (( left < 20 )); then echo "skipped $out: ${left}s left" | tee "$OUT/$out"; return; fi
  echo "== $out (at most $(( left < max ? left : max ))s)"
  timeout $(( left < max ? left : max )) "$@" > "$OUT/$out" 2> "$OUT/$out.stderr"
  echo "exit $?"; cat "$OUT/$out"; tail -n 5 "$OUT/$out.stderr"
}
step 150 tests.txt python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
  tests/algorithms/test_captured_sgd_step.py tests/algorithms/test_maddpg.py \
  tests/algorithms/test_columnar_dqn.py
B=(python3 benchmarks/train_throughput.py --num-gpus-per-learner 1 --num-env-runners 12
   --num-envs 4 --train-batch-size 144000 --minibatch-size 4096 --iterations 4)
step 200 graph.json "${B[@]}" --paths columnar_ahead,columnar --learner-cuda-graph
step 120 eager.json "${B[@]}" --paths columnar_ahead
step 100 learner_step.json python3 benchmarks/learner_step.py --num-gpus-per-learner 1 \
  --train-batch-size 144000 --minibatch-sizes 4096,16384
step 90 maddpg_update.json python3 benchmarks/maddpg_update.py --num-gpus-per-learner 1
