#!/usr/bin/env bash
# Here (the machine with internet to PyPI): the wheels the GPU device machine lacks.
#
# The device has Python 3.12 + PyTorch (CUDA) but no Ray and no internet, and one call carries
# at most 64 MiB, so the ~79 MB Ray wheel travels split in two (../shared/notes/device-recipe.md).
# Writes .raypart/ray.part.aa, .raypart/ray.part.ab and .whl/ (both ignored by git through
# .git/info/exclude). Then, on the device (two calls in a row; it stays warm ~30 s):
#   1. run(carry=[".raypart/ray.part.aa"], command="cp .raypart/ray.part.aa $HOME/")
#   2. run(carry=[".raypart/ray.part.ab", ".whl"], command="bash benchmarks/gpu/learner_cuda_graph.sh")
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude || printf '/.whl/\n/.raypart/\n' >> .git/info/exclude
rm -rf .whl .raypart && mkdir -p .whl .raypart
P="--only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64"
W=$(mktemp -d)
# shellcheck disable=SC2086
python3 -m pip download -q $P -d "$W" ray==2.60.0
split -b 38m "$W"/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl .raypart/ray.part.
rm -rf "$W"
# pydantic-core must be the version pydantic pins: download them together. pytest 9 imports
# pygments. Ray's own dependencies (msgpack, click, pandas, pyarrow, scipy, tqdm, ...) were on
# the device in the measured recipe; a dry run in a venv holding only torch + numpy + these
# wheels + those dependencies ran every step of learner_cuda_graph.sh on the CPU.
# shellcheck disable=SC2086
python3 -m pip download -q $P -d .whl \
  jsonschema referencing rpds-py jsonschema-specifications tensorboardX \
  "pydantic==$(python3 -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic-core==$(python3 -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated-types typing-inspection typing-extensions packaging dm-tree gymnasium==1.2.2 \
  farama-notifications lz4 ormsgpack pettingzoo==1.27.0 pyyaml \
  pytest pluggy iniconfig pygments pytest-timeout
du -sh .raypart/* .whl
