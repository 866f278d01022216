#!/usr/bin/env bash
# GPU checks of the training and generation stack, one device call (the `device` tool; results under $OUT),
# sized to finish in about 8 minutes on one H100 / H200. Every step has its own timeout and writes its JSON;
# $OUT/figures.json gathers them at the end, and $OUT/checks.log says what ran.
#  1. versions: GPU, torch, transformers, lightning, vllm, flash-attn, liger, deepspeed, trl
#  2. RUNS: train.py with each hardware option on one GPU (the tiny model, STEPS steps; losses in the summaries)
#  3. BENCH: the SFT throughput benchmark, padded SDPA vs packed with FLEX (FlexAttention's document BlockMask),
#     MFU with the formula's inputs; PROFILE: the same settings for PROFILE_STEPS steps under the profiler
#  4. GRPO_BENCH: one GRPO step, ours vs TRL's GRPOTrainer, rollout vs update seconds
#  5. GEN_BENCH: evaluate's hf vs vllm backends on the same prompts (greedy, equal outputs, prefix order)
# Needs the embedded data (data/ from `python synthesize.py`, carried). Wheels the machine lacks travel in .whl/
# (git-ignored): hydra-core, omegaconf, antlr4-python3-runtime, duckdb, liger-kernel, hjson, pydantic
# (+ pydantic-core, annotated-types, typing-inspection), trl, datasets for cp312 manylinux
# (`pip download --only-binary=:all: --python-version 3.12 ...`) and deepspeed built here with
# `DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed`. Any step can be left out by setting its
# variable empty (e.g. RUNS= BENCH= ...). DEVICE=cpu runs the same plumbing on a CPU (a smoke test).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DEVICE=${DEVICE:-cuda}
MODEL_DIR=${MODEL_DIR:-data/models/tiny/synthetic_n2000_seed0/model_seed0}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"; } \
  | tee "$OUT/checks.log"
python3 - > "$OUT/versions.json" <<'EOF'
import importlib, json
found = {}
for name in ("torch", "transformers", "lightning", "vllm", "flash_attn", "liger_kernel", "deepspeed", "trl"):
    try:
        found[name] = getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as e:  # not installed, or broken on this machine: say which
        found[name] = f"absent ({type(e).__name__})"
import torch
found["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps(found))
EOF
tee -a "$OUT/checks.log" < "$OUT/versions.json"

RUNS=${RUNS-gpu ddp fsdp deepspeed_zero3}
for run in $RUNS; do
  hw=${run%%,*}
  extra=$([ "$run" = "$hw" ] || echo "${run#*,}" | tr ',' ' ')
  name=$(echo "$run" | tr ',=.' '___')
  stage=stage=domain_adaptation
  case "$extra" in *stage=*) stage="" ;; esac
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${HW_TIMEOUT:-60}" python3 train.py data_root="$PWD/data" $stage progress=false evaluate.enabled=false \
    stage.max_steps="${STEPS:-20}" stage.val_max_batches=8 stage.checkpoint_every_n_steps=10 \
    hardware="$hw" hardware.devices=1 run_dir="/tmp/$name" $extra > "/tmp/$name.log" 2>&1
  echo "run $run rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/checks.log"
  cp /tmp/"$name"/stages/1_*/summary.json "$OUT/run_$name.json" 2>/dev/null \
    || grep -v "^\s*$" "/tmp/$name.log" | tail -30 >> "$OUT/checks.log"
done

# step <name> <timeout> <script> <args...>: one benchmark, its JSON in $OUT/<name>.json
step() {
  local name=$1 limit=$2 script=$3
  shift 3
  local start
  start=$(date +%s)
  timeout "$limit" python3 "$script" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/checks.log"
}
SHAPE=${SHAPE:-qwen3_1.7b}
FLEX=${FLEX-flex_attention}
BENCH=${BENCH---device $DEVICE --model $SHAPE --max-seq-len 8192 --packed-micro-batch-size 1 --micro-batch-size 4 \
--gradient-checkpointing --liger --steps 10 --skip-hf}
if [ -n "$BENCH" ]; then
  # shellcheck disable=SC2086
  step sft_padded_sdpa "${BENCH_TIMEOUT:-150}" experiments/benchmarks/sft_throughput.py $BENCH --only ours_padded
  if [ -n "$FLEX" ]; then
    # shellcheck disable=SC2086
    step sft_packed_flex "${BENCH_TIMEOUT:-150}" experiments/benchmarks/sft_throughput.py $BENCH --attn "$FLEX" \
      --only ours_packed
  fi
  if [ -n "${PROFILE-1}" ]; then
    # shellcheck disable=SC2086
    step sft_profile "${BENCH_TIMEOUT:-150}" experiments/benchmarks/sft_throughput.py $BENCH --steps "${PROFILE_STEPS:-4}" \
      --profile --only ours_padded
  fi
fi
GRPO_BENCH=${GRPO_BENCH---device $DEVICE --shape $SHAPE --gradient-checkpointing --steps 4 --group-size 8 --prompts-per-step 2 --max-completion 64}
# shellcheck disable=SC2086
[ -z "$GRPO_BENCH" ] || step grpo_step "${GRPO_TIMEOUT:-120}" experiments/benchmarks/grpo_step.py $GRPO_BENCH
GEN_BENCH=${GEN_BENCH---model $MODEL_DIR --limit 4 --max-tokens 64}
# shellcheck disable=SC2086
[ -z "$GEN_BENCH" ] || step generation_backends "${GEN_TIMEOUT:-120}" experiments/benchmarks/generation_backends.py $GEN_BENCH

python3 - "$OUT" > "$OUT/figures.json" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
figures = {}
for f in sorted(out.glob("*.json")):
    if f.name == "figures.json":
        continue
    lines = f.read_text().strip().splitlines()
    try:
        figures[f.stem] = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures[f.stem] = {"unreadable": lines[-1][:200]}
print(json.dumps(figures))
EOF
echo "figures: $OUT/figures.json" | tee -a "$OUT/checks.log"
