#!/usr/bin/env bash
# The standing accelerator check (docs/benchmarks.md, "GPU check"), one
# script so that a lent GPU's minutes go to measuring:
#   1. ResNet-50, 224 px, bf16: train images/s and MFU (benchmarks/model_speed.py)
#   2. ViT-S/16, 224 px, bf16: the same
#   3. the class anchor margin loss against softmax cross-entropy, forward +
#      backward at B=4096, C=10,000, D=128 (benchmarks/loss_speed.py)
#   4. exact and two-stage search over 1,000,000 x 128 (benchmarks/search_speed.py)
# Results go to $OUT (JSON per part, the card's name, the whole log); record
# them with the card's name in docs/benchmarks.md.
#
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#   SMOKE=1 bash benchmarks/gpu_check.sh    # tiny sizes: checks the script on CPU
#
# Needs jax, flax, optax, etils and numpy (the library layer's imports);
# nothing is downloaded. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [[ -n "${SMOKE:-}" ]]; then
  resnet=(--model resnet18_cifar --width 4 --image_size 16 --batch 8)
  vit=(--model vit_ti4 --image_size 16 --batch 8)
  speed=(--steps 2 --repeats 2 --num_classes 10)
  loss=(--batch 64 --classes 100 --dim 16 --rounds 2 --min_seconds 0.01)
  search=(--sizes 20000 --queries 100 --repeats 2)
else
  resnet=(--model resnet50 --image_size 224 --batch 256)
  vit=(--model vit_s16 --image_size 224 --batch 256)
  speed=(--steps 20 --repeats 5 --num_classes 1000)
  loss=(--batch 4096 --classes 10000 --dim 128 --rounds 7)
  search=(--sizes 1000000 --queries 10000 --repeats 5)
fi

{
  date -u +"%F %T UTC"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  fi
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
} | tee "$OUT/device.txt"

run() {  # run NAME ARGS...: one part; a failed part does not stop the others
  local name=$1; shift
  echo "+ $name: $*"
  if ! "$PYTHON" "$@"; then
    echo "gpu_check: $name failed" >&2
    failed+=("$name")
  fi
}
failed=()
{
  run resnet50 -m benchmarks.model_speed "${resnet[@]}" "${speed[@]}" \
    --dtype bfloat16 --json "$OUT/resnet50.json"
  run vit_s16 -m benchmarks.model_speed "${vit[@]}" "${speed[@]}" \
    --dtype bfloat16 --json "$OUT/vit_s16.json"
  run loss -m benchmarks.loss_speed "${loss[@]}" \
    --losses cam ce --json "$OUT/loss.json"
  run search benchmarks/search_speed.py "${search[@]}" --skip_faiss \
    --num_lists 1 2 --json "$OUT/search.json"
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "gpu_check: failed parts: ${failed[*]}" >&2
    exit 1
  fi
} 2>&1 | tee "$OUT/log.txt"
