#!/usr/bin/env bash
# One device call (issue 8): the three parts of benchmarks/bench_gpu.py, each in its own process
# with its own time limit, so a part that fails or overruns still leaves the others' results.
#   1. transformer: ours vs diffusers, exact-path (fused RoPE, compile) and fast-path (fp8, one
#      step-cache step) variants at 1024² with per-step relative error   (limit 240 s)
#   2. edit: a whole 1024² edit, 28 steps, full-size random modules         (limit 170 s)
#   3. pipeline: 16 rows, one Ray actor on the GPU, GPU-busy fraction      (limit 150 s)
#   4. memory plans (issues 18/19): benchmarks/bench_memory.py writes a random checkpoint of the
#      published shapes to disk (+ Q8_0/Q4_K GGUF copies), loads it per plan without text
#      encoders and measures peak GiB and s/image, targets pass/fail       (limit 240 s)
#      To fit the session: 6 plans (MEMORY_PLANS; one per target at least), 8 timed steps (MEMORY_STEPS; the JSON's
#      s_per_step scales to 28; peaks do not depend on steps); MEMORY=0 skips it.
# Parts 1 and 2 share the on-disk compile cache, so part 2's compile time shows a warm cache.
# Expected total ≈ 9-11 minutes of device time; every part writes JSON and a log under $OUT.
# Usage on the device machine:  bash scripts/gpu_session.sh   (results under $OUT)
# TRAIN=1 also runs the earlier kontext-tiny GPU training pair afterwards (not part of issue 8).
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash .devpack/bootstrap.sh >/dev/null && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'capability', torch.cuda.get_device_capability())" | tee -a "$OUT/gpu.txt"
CACHE=/tmp/kontext-compile-cache

part() {  # name limit_s extra-args...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" python3 benchmarks/bench_gpu.py --part "$name" --compile-cache "$CACHE" \
    --out "$OUT/bench_$name.json" "$@" > "$OUT/bench_$name.log" 2>&1
  local rc=$?
  echo "[part $name: exit $rc after $((SECONDS - t0)) s]" >> "$OUT/bench_$name.log"
  grep -vE "Warning|warn\(" "$OUT/bench_$name.log" | tail -14
}

part transformer 240 --reps 3 --warmup 1
part edit 170
part pipeline 150 --rows 16 --batch-size 4 --pipeline-steps 8
# PIPELINE_COMPILE=1: part 3 again with --compile (the actor compiles batch-4 shapes on its first batch)
if [ "${PIPELINE_COMPILE:-0}" = 1 ]; then
  KONTEXT_COMPILE_CACHE=$CACHE timeout 200 python3 benchmarks/bench_gpu.py --part pipeline --rows 24 --batch-size 4 \
    --pipeline-steps 8 --pipeline-compile --out "$OUT/bench_pipeline_compile.json" > "$OUT/bench_pipeline_compile.log" 2>&1
  tail -6 "$OUT/bench_pipeline_compile.log"
fi
du -sh "$CACHE" 2>/dev/null | tee -a "$OUT/gpu.txt"

if [ "${MEMORY:-1}" = 1 ]; then  # part 4; its random checkpoints (≈ 34 GiB at most in the temp dir) are removed after
  t0=$SECONDS
  timeout 240 python3 benchmarks/bench_memory.py --json "$OUT/bench_memory.json" --size 1024 \
    --steps "${MEMORY_STEPS:-8}" --plans "${MEMORY_PLANS:-resident,partial-offload,fp8,fp8-partial-offload,Q8_0:resident,Q4_K:model-offload}" \
    > "$OUT/bench_memory.log" 2>&1
  rc=$?
  echo "[bench_memory: exit $rc after $((SECONDS - t0)) s]" >> "$OUT/bench_memory.log"
  grep -vE "Warning|warn\(" "$OUT/bench_memory.log" | tail -14
fi

if [ "${TRAIN:-0}" = 1 ]; then
  train() {  # name lr batch
    timeout 420 python3 -m kontext_core.tiny.train --out "/tmp/$1" --device cuda --lr "$2" --batch "$3" \
      --ae-steps 100000 --ae-max-minutes "${AE_MIN:-1.0}" --steps 1000000 --max-minutes "${TF_MIN:-3.4}" \
      --workers ${WORKERS:-6} --reuse ${REUSE:-1} --eval-every 0 --eval-n 48 --checkpoint-every 2000 > "/tmp/$1.log" 2>&1
    echo "[$1 exit $?]" >> "/tmp/$1.log"
  }
  train tinyA 5e-4 128 &
  train tinyB 1e-3 256 &
  wait
  for v in tinyA tinyB; do
    tr '\r' '\n' < "/tmp/$v.log" | grep -vE "it/s\]|step/s|scene/s|s/step\]|s/it\]" > "$OUT/$v.log"
    tail -8 "$OUT/$v.log"
    [ -f "/tmp/$v/transformer.safetensors" ] && tar -C /tmp -cf "$OUT/$v.tar" --exclude train_state.pt "$v"
  done
fi
ls -la "$OUT"
