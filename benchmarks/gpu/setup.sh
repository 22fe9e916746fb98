# Sourced by the device scripts (gpu_world.sh, reference_study.sh) with their arguments:
# PHASE ($1), the call's DEADLINE (BUDGET_S from now), the install of the carried wheels
# (phase 1: the small wheels and Ray's first half; phase 2: Ray), PYTHONPATH, and `step`.
set -uo pipefail
PHASE=${1:-1}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-560} ))
SITE="$HOME"/site
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH="$SITE":$PWD PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
if [[ ${DRY:-0} == 1 ]]; then
  echo "dry run: nothing installed"
elif [[ $PHASE == 1 ]]; then
  cp .raypart/ray.part.aa "$HOME"/ || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 1
else
  R="$HOME"/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
  if [[ ! -d "$SITE/ray" ]]; then
    cat "$HOME"/ray.part.aa .raypart/ray.part.ab > "$R" || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$R" || exit 1
  fi
fi

step() {  # step MAX_S OUTFILE COMMAND...: at most MAX_S and what is left; only STEPS (if set)
  local max=$1 out=$2; shift 2
  [[ -z "${STEPS:-}" || " $STEPS " == *" ${out%%.*} "* ]] || return 0
  local left=$(( DEADLINE - $(date +%s) ))
  if (( left < 20 )); then echo "skipped $out: ${left}s left" | tee "$OUT/$out"; return; fi
  echo "== $out (at most $(( left < max ? left : max ))s)"
  timeout $(( left < max ? left : max )) "$@" > "$OUT/$out" 2> "$OUT/$out.stderr"
  echo "exit $?"; tail -c 3000 "$OUT/$out"; tail -n 5 "$OUT/$out.stderr"
}
