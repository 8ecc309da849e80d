#!/usr/bin/env bash
# The GPU suite, in one go, on a machine with an NVIDIA GPU, CuPy, mpi4py, pytest and an
# MPI library (the PyPI mpich wheel is enough):
#
#   bash tests/gpu/run_on_gpu.sh            (PYTHON=/path/to/python to choose one)
#
# It checks, on the GPU (tests/gpu/test_gpu.py), every run against the one-process run
# (float64 --check unless said): the MLP with 1f1b + Adam, zb-h1, interleaved, zbv and
# --recompute; the GPT (embedding, attention, LayerNorm, cross-entropy); pp=2 x dp=2;
# float32 within its tolerance; GPipe's back-to-back staged receives under load; a
# checkpoint resumed; every host-device copy of every step on 4 ranks counted against the
# list in docs/gpus.md; and, where the MPI library is CUDA-aware, staged against CUDA-aware.
# Then it prints CPU and GPU step times side by side for the main job and a wide MLP.
# MPIPIPE_REQUIRE_GPU=1 makes a skip a failure; any failure makes the exit status 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPIPIPE_REQUIRE_GPU=1
export PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
"$PYTHON" -c "import cupy, mpi4py, pytest; assert cupy.cuda.runtime.getDeviceCount() > 0" \
    || { echo "run_on_gpu.sh needs a GPU, CuPy, mpi4py and pytest" >&2; exit 2; }

start=$(date +%s)
aware=$("$PYTHON" -c "
from mpi4py import MPI
from mpipipe.comm.transport import query_mpi_library
print('yes' if query_mpi_library()[0] else 'no')")
markers=()
[ "$aware" = yes ] || markers=(-m "not cuda_aware")
echo "== GPU tests (CUDA-aware MPI: $aware)"
timeout -k 10 900 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${markers[@]}" tests/gpu \
    | tee /tmp/mpipipe-gpu-tests.log
if grep -q " skipped" /tmp/mpipipe-gpu-tests.log; then
    echo "run_on_gpu.sh: a GPU test was skipped" >&2
    exit 1
fi

echo "== step times, CPU against GPU (median ms over the steps after the first)"
read -ra MPIEXEC <<< "$("$PYTHON" -m mpipipe.comm.launcher)"
step_ms() {     # ranks, then train options: prints the median step time in ms
    local ranks=$1; shift
    timeout -k 10 600 "${MPIEXEC[@]}" -n "$ranks" "$PYTHON" -m mpipipe train --quiet --json "$@" \
        | tail -n 1 | "$PYTHON" -c "import json, sys; print(f\"{json.load(sys.stdin)['step_time_s'] * 1e3:.1f}\")"
}
main=(--model gpt --steps 40)
wide=(--data teacher --input-dim 2048 --output-dim 2048 --hidden 2048 --layers 8
      --global-batch 512 --microbatches 8 --steps 10 --dtype float32)
printf "%-44s %10s %10s\n" "job" "CPU ms" "GPU ms"
printf "%-44s %10s %10s\n" "main job: GPT, 4 ranks, 1f1b, m=8" \
    "$(step_ms 4 "${main[@]}" --device cpu)" "$(step_ms 4 "${main[@]}" --device gpu)"
printf "%-44s %10s %10s\n" "wide MLP: 8 x 2048, 2 ranks, 1f1b, m=8" \
    "$(step_ms 2 "${wide[@]}" --device cpu)" "$(step_ms 2 "${wide[@]}" --device gpu)"
echo "== run_on_gpu.sh passed in $(( $(date +%s) - start )) s"
