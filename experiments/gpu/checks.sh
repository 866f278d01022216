#!/usr/bin/env bash
# GPU checks of the training stack, run on a lent GPU machine (the `device` tool, results under $OUT):
# train.py with each hardware backend on one GPU (tiny model), then the SFT throughput benchmark on a
# Qwen3-1.7B-shaped model in bf16. Wheels missing there travel in .whl/ (git-ignored): hydra-core, omegaconf,
# antlr4-python3-runtime, duckdb, liger-kernel, hjson, pydantic (+ pydantic-core, annotated-types,
# typing-inspection) for cp312 manylinux (`pip download --only-binary=:all: --python-version 3.12 ...`), and
# deepspeed built here with `DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed`.
#   RUNS: space-separated hardware runs, each `<hardware>[,<override>...]` (stage=domain_adaptation unless
#         an override names the stage)
#   BENCH: arguments of experiments/benchmarks/sft_throughput.py (empty: no benchmark)
#   GRPO_BENCH: arguments of experiments/benchmarks/grpo_step.py (empty: none; trl + datasets wheels in .whl/)
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/checks.log"
python3 -c "import torch, transformers, lightning, deepspeed; print('torch', torch.__version__,
'transformers', transformers.__version__, 'lightning', lightning.__version__, 'deepspeed', deepspeed.__version__)" \
  2>&1 | tail -1 | tee -a "$OUT/checks.log"

RUNS=${RUNS-gpu ddp fsdp deepspeed_zero3}  # set but empty: no training runs
BENCH=${BENCH---device cuda --model qwen3_1.7b --max-seq-len 8192 --packed-micro-batch-size 1 --micro-batch-size 4 \
--gradient-checkpointing --liger --steps 10}
for run in $RUNS; do
  hw=${run%%,*}
  extra=$([ "$run" = "$hw" ] || echo "${run#*,}" | tr ',' ' ')
  name=$(echo "$run" | tr ',=.' '___')
  stage=stage=domain_adaptation
  case "$extra" in *stage=*) stage="" ;; esac
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${HW_TIMEOUT:-90}" python3 train.py data_root="$PWD/data" $stage progress=false evaluate.enabled=false \
    stage.max_steps="${STEPS:-20}" stage.val_max_batches=8 stage.checkpoint_every_n_steps=10 \
    hardware="$hw" hardware.devices=1 run_dir="/tmp/$name" $extra > "/tmp/$name.log" 2>&1
  echo "run $run rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/checks.log"
  cat /tmp/"$name"/stages/1_*/summary.json >> "$OUT/checks.log" 2>/dev/null \
    || grep -v "^\s*$" "/tmp/$name.log" | tail -30 >> "$OUT/checks.log"
  echo >> "$OUT/checks.log"
done

if [ -n "$BENCH" ]; then
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-240}" python3 experiments/benchmarks/sft_throughput.py $BENCH \
    > "$OUT/sft_throughput.json" 2> "$OUT/sft_throughput.err"
  echo "sft_throughput rc=$?" | tee -a "$OUT/checks.log"
  cat "$OUT/sft_throughput.json"
fi

if [ -n "${GRPO_BENCH:-}" ]; then
  # shellcheck disable=SC2086
  timeout "${GRPO_TIMEOUT:-240}" python3 experiments/benchmarks/grpo_step.py $GRPO_BENCH \
    > "$OUT/grpo_step.json" 2> "$OUT/grpo_step.err"
  echo "grpo_step rc=$?" | tee -a "$OUT/checks.log"
  cat "$OUT/grpo_step.json"
fi
