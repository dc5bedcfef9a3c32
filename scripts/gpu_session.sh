#!/usr/bin/env bash
# One device call: GPU benchmark of the transformer vs diffusers, then kontext-tiny training
# (two learning rates side by side; the GPU is mostly idle for a model this small).
# Usage on the device machine:  bash scripts/gpu_session.sh   (results under $OUT)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash .devpack/bootstrap.sh >/dev/null && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"

train() {  # name lr batch
  timeout 420 python3 -m kontext_core.tiny.train --out "/tmp/$1" --device cuda --lr "$2" --batch "$3" \
    --ae-steps 100000 --ae-max-minutes "${AE_MIN:-1.0}" --steps 1000000 --max-minutes "${TF_MIN:-3.4}" \
    --workers ${WORKERS:-6} --reuse ${REUSE:-1} --eval-every 0 --eval-n 48 --checkpoint-every 2000 > "/tmp/$1.log" 2>&1
  echo "[$1 exit $?]" >> "/tmp/$1.log"
}

timeout 150 python3 benchmarks/bench_gpu.py --size 1024 --reps 5 --out "$OUT/bench_gpu.json" 2>&1 | tail -12 | tee "$OUT/bench_gpu.txt"

train tinyA 5e-4 128 &
train tinyB 1e-3 256 &
wait
for v in tinyA tinyB; do
  tr '\r' '\n' < "/tmp/$v.log" | grep -vE "it/s\]|step/s|scene/s|s/step\]|s/it\]" > "$OUT/$v.log"
  tail -8 "$OUT/$v.log"
  [ -f "/tmp/$v/transformer.safetensors" ] && tar -C /tmp -cf "$OUT/$v.tar" --exclude train_state.pt "$v"
done
ls -la "$OUT"
