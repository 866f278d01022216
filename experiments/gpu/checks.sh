#!/usr/bin/env bash
# GPU checks of the training stack, run on a lent GPU machine (the `device` tool) with $OUT for results:
# every hardware backend on one GPU with the tiny model, then the SFT throughput benchmark on a
# Qwen3-1.7B-shaped model in bf16. Wheels missing there travel in .whl/ (hydra, duckdb, deepspeed, liger).
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/checks.log"
python3 -c "import torch, transformers, lightning, deepspeed, liger_kernel; print('torch', torch.__version__,
'transformers', transformers.__version__, 'lightning', lightning.__version__, 'deepspeed', deepspeed.__version__)" \
  2>&1 | tail -1 | tee -a "$OUT/checks.log"

STEPS=${STEPS:-20}
for hw in gpu ddp fsdp deepspeed_zero3; do
  start=$(date +%s)
  timeout "${HW_TIMEOUT:-150}" python3 train.py data_root="$PWD/data" stage=domain_adaptation progress=false \
    stage.max_steps="$STEPS" stage.val_max_batches=8 stage.checkpoint_every_n_steps=10 \
    hardware="$hw" hardware.devices=1 run_dir="/tmp/hw_$hw" > "/tmp/hw_$hw.log" 2>&1
  rc=$?
  echo "hardware=$hw rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/checks.log"
  cat "/tmp/hw_$hw/stages/1_domain_adaptation/summary.json" >> "$OUT/checks.log" 2>/dev/null \
    || tail -40 "/tmp/hw_$hw.log" >> "$OUT/checks.log"
  echo >> "$OUT/checks.log"
done

timeout "${BENCH_TIMEOUT:-330}" python3 experiments/benchmarks/sft_throughput.py --device cuda --model qwen3_1.7b \
  --max-seq-len 8192 --packed-micro-batch-size 1 --micro-batch-size 4 --gradient-checkpointing --liger \
  --steps "${BENCH_STEPS:-12}" > "$OUT/sft_throughput.json" 2> "$OUT/sft_throughput.err"
echo "sft_throughput rc=$?" | tee -a "$OUT/checks.log"
cat "$OUT/sft_throughput.json"
