#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md: JAX train steps and forwards against the PyTorch port.
#
#   benchmarks/gpu_compare.sh OUT_FOLDER "CONFIG:JAX_TRAIN_BATCHES:JAX_FORWARD_BATCHES:TORCH_BATCHES" ...
#   e.g. benchmarks/gpu_compare.sh /tmp/gpu "configs/coco_w32.py:64,128:128:32,64,128"
#
# 1. benchmarks/torch_throughput.py (fp32 and amp) times each config's PyTorch port, alone.
# 2. Every JAX (config, dtype, batch) compiles in its own process, all side by side (a GPU
#    compile with autotuning takes minutes), into a persistent compilation cache, and exits.
# 3. One at a time, each JAX program is loaded from that cache and timed alone.
# Logs: OUT_FOLDER/*.log; their RESULT lines hold the figures, the compile_*.log files the
# compile times. Needs one GPU, JAX with CUDA, flax, optax and torch.
set -u
out=$1; shift
mkdir -p "$out"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$(mktemp -d)}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
export PYTHONUNBUFFERED=1
peaks=bf16=989,tf32=495,fp32=67  # H100 SXM dense TFLOP/s
jobs=()
for spec in "$@"; do
  IFS=: read -r config train forward torch_batches <<<"$spec"
  name=$(basename "$config" .py)
  if [ -n "$torch_batches" ]; then
    python3 benchmarks/torch_throughput.py --config="$config" --batch_size="$torch_batches" \
      >"$out/${name}_torch.log" 2>&1
  fi
  for dtype in float32 bfloat16; do
    for b in ${train//,/ }; do
      jobs+=("${name}_train_${dtype}_$b benchmarks/train_throughput.py --config=$config --per_device_batch=$b --dtype=$dtype --peak_tflops=$peaks")
    done
    for b in ${forward//,/ }; do
      jobs+=("${name}_forward_${dtype}_$b benchmarks/model_throughput.py --config=$config --batch_size=$b --dtype=$dtype --notrain")
    done
  done
done
for job in "${jobs[@]}"; do  # no preallocation: the compiles share the GPU's memory
  read -r name command <<<"$job"
  XLA_PYTHON_CLIENT_PREALLOCATE=false python3 $command --compile_only >"$out/compile_$name.log" 2>&1 &
done
wait
for job in "${jobs[@]}"; do
  read -r name command <<<"$job"
  python3 $command >"$out/$name.log" 2>&1
done
grep -h "RESULT\|out of memory" "$out"/*.log
