#!/usr/bin/env bash
# Every GPU check of the project in one run: the GPU tests, then the benchmarks README quotes.
#
#   bash scripts/gpu_check.sh [OUTDIR] [STEP...]  # logs and JSON figures land in OUTDIR (default gpu-check/)
#                                                 # STEPs: run only these (default: all, in the order below)
#
# Steps (each under its own time limit, so one that hangs does not take the rest):
#   tests       tests/test_gpu.py (GPU fp32/fp16 against the CPU, batched encodes, the gpu preset
#               end to end) and tests/test_device.py
#   model_fp32  scripts/benchmark_model.py on CUDA in fp32: encoder, decoder, batched encodes
#   model_fp16  the same in fp16 (what --config gpu runs)
#   e2e         scripts/benchmark.py as --config gpu runs: 1280x720, 5 objects, every frame encoded, no flow,
#               fp16, without CUDA graphs; e2e_graphs: the same with them (the gpu preset's setting)
#   streams     scripts/benchmark_streams.py with the gpu preset: K = 1 and 4 live streams, one process
#               against K processes; streams_nocap: K = 4 with the frame budget's cap off
#   graphs      scripts/benchmark_cuda_graphs.py: CUDA graphs against eager for the encoder and decoder
#               on bare captures (model.cuda_graphs' figures); compile: the same with torch.compile
# Weights: the golden checkpoint where ../shared/golden has it, else a random one (speed does not depend on them).
set -u
out=${1:-gpu-check}
shift $(( $# > 0 ? 1 : 0 ))
only=" $* "
steps="tests model_fp32 model_fp16 e2e e2e_graphs streams streams_nocap graphs compile"
for name in "$@"; do
    [[ " $steps " == *" $name "* ]] || { echo "gpu_check.sh: unknown step '$name'; the steps: $steps" >&2; exit 2; }
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$out/gpu.txt"
status=0
step() {
    local name=$1 limit=$2
    shift 2
    if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then return; fi
    echo "=== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 60 "$out/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}
# One process (-p no:xdist, addopts without -n): the GPU tests time and print from this one.
step tests 240 python3 -m pytest -q -s -p no:cacheprovider -p no:xdist -o addopts=-ra tests/test_gpu.py tests/test_device.py
step model_fp32 120 python3 scripts/benchmark_model.py --device cuda --precision fp32 --repeats 10 --json "$out/model_fp32.json"
step model_fp16 120 python3 scripts/benchmark_model.py --device cuda --precision fp16 --repeats 10 --json "$out/model_fp16.json"
step e2e 180 python3 scripts/benchmark.py --device cuda --propagation none --reencode 1 --background '' \
    --size 1280x720 --objects 5 --frames 120 --repeats 3 --json "$out/e2e.json"
step e2e_graphs 180 python3 scripts/benchmark.py --device cuda --propagation none --reencode 1 --background '' \
    --size 1280x720 --objects 5 --frames 120 --repeats 3 --cuda-graphs --json "$out/e2e_graphs.json"
step streams 150 python3 scripts/benchmark_streams.py --device cuda --config gpu --streams 1 4 --seconds 8
# The same without the frame budget's cap: whether the cap or the one interpreter limits four streams.
step streams_nocap 150 python3 scripts/benchmark_streams.py --device cuda --config gpu --streams 4 --seconds 8 \
    --set streams.frame_budget=0
step graphs 240 python3 scripts/benchmark_cuda_graphs.py --precision fp16 --json "$out/graphs.json"
step compile 240 python3 scripts/benchmark_cuda_graphs.py --precision fp16 --compile --json "$out/compile.json"
exit $status
