"""Benchmark: evaluation harness wall time vs calling the backend's generate directly on the same prompts.

Prints one JSON line. The same model, prompts, batches (the harness's prompt order) and sampling; the
harness adds request building, resume bookkeeping, scoring, fsynced JSONL writes and the report. Both run
in this process after one warm-up batch; goal: overhead below 5 %.

    python experiments/benchmarks/eval_overhead.py --model <HF dir> [--limit 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "instructions" / "synthetic_n2000_seed0" / "main" / "tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model directory (e.g. a stage's hf/)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--limit", type=int, default=4, help="samples per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from ehrr1.backends import SamplingParams, backend_config, build_backend
    from ehrr1.evaluation.harness import batches, build_requests, read_bench, run
    from ehrr1.evaluation.report import aggregate
    from ehrr1.inference import model_settings
    from ehrr1.tasks.prompt import ThinkingSwitch

    backend = build_backend(backend_config("hf", device="cpu"), args.model, model_settings(args.model)[0])
    sampling = SamplingParams(max_tokens=args.max_tokens)
    records = read_bench(Path(args.data_dir) / "test.jsonl", limit=args.limit)
    requests = build_requests(
        records, backend.tokenizer, args.model, sampling, False, ThinkingSwitch.enable_thinking, False
    )
    ordered = sorted(requests, key=lambda q: q.prompt)
    backend.generate([q.prompt for q in ordered[: args.batch_size]], sampling)  # warm-up

    started = time.perf_counter()
    for batch in batches(ordered, args.batch_size):
        backend.generate([q.prompt for q in batch], sampling, [q.kind == "risk" for q in batch])
    direct = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        requests = build_requests(
            records, backend.tokenizer, args.model, sampling, False, ThinkingSwitch.enable_thinking, False
        )
        rows = run(requests, backend, sampling, Path(tmp) / "results.jsonl", args.batch_size, progress=False)
        aggregate(rows, n_boot=1000)
        harness = time.perf_counter() - started

    print(
        json.dumps(
            {
                "benchmark": "eval_overhead",
                "samples": len(requests),
                "batch_size": args.batch_size,
                "max_tokens": args.max_tokens,
                "direct_generate_s": round(direct, 2),
                "harness_s": round(harness, 2),
                "overhead_pct": round(100 * (harness - direct) / direct, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
