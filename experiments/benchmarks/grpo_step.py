"""Benchmark: time per GRPO step, our Lightning module vs TRL's GRPOTrainer, in the same run.

Prints one JSON line. Both start from the same model (the embedded tiny model by default), take the same
chat-templated prompts of the main mix's training split (as RL asks them: ``rl_prompt``), sample the same
group size and completion length with HF generate (temperature 0.7, top-p 0.95, top-k 20), use the same
reward function, one policy update per generation batch, loss ``grpo``, beta 0, gradient checkpointing on
both sides or neither (``--gradient-checkpointing``).
The first step (warm-up) is excluded; the median of the remaining steps is reported. Goal: ours / TRL <= 1.0.

    python experiments/benchmarks/grpo_step.py [--steps 8] [--group-size 8] [--prompts-per-step 2]
        [--max-completion 64] [--device cpu|cuda] [--model <HF dir>]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import architecture  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "instructions" / "synthetic_n2000_seed0" / "main" / "tiny"
MODEL = REPO / "data" / "models" / "tiny" / "synthetic_n2000_seed0" / "model_seed0"
TOKENIZER = REPO / "data" / "models" / "tiny" / "synthetic_n2000_seed0" / "tokenizer"


def reward_value(text: str) -> float:
    """A cheap reward with spread across a group (both trainers get the same one)."""
    return float(len(text) % 7) / 6


def records(args: argparse.Namespace) -> list[dict]:
    from ehrr1.evaluation.harness import read_bench

    return read_bench(Path(args.data_dir) / "train.jsonl")[: args.prompts_per_step * (args.steps + 1)]


def run_ours(args: argparse.Namespace) -> dict:
    import lightning.pytorch as pl

    from ehrr1.config import GRPOConfig, OptimConfig, ScheduleConfig
    from ehrr1.models.factory import load_model
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.training.grpo import GRPOModule, PromptDataModule

    tokenizer = load_tokenizer(args.model)
    settings = GRPOConfig(
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, max_completion_tokens=args.max_completion
    )
    module = GRPOModule(
        lambda: load_model(args.model, args.dtype, "sdpa"),
        tokenizer,
        settings,
        OptimConfig(lr=1e-6),
        ScheduleConfig(scheduler="constant", warmup_ratio=0.0),
        micro_batch_size=args.prompts_per_step * args.group_size,
        gradient_checkpointing=args.gradient_checkpointing,
        reward_fn=lambda texts, recs, ids: [{"total": reward_value(t)} for t in texts],
    )
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *a):
            self.started = time.perf_counter()

        def on_train_batch_end(self, *a):
            times.append(time.perf_counter() - self.started)

    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision if args.device == "cuda" else "32-true",
        max_steps=args.steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    trainer.fit(module, datamodule=PromptDataModule(records(args), args.prompts_per_step, 0))
    rollout, update = zip(*module.step_seconds[1:], strict=True)
    return {
        "step_s_median": round(statistics.median(times[1:]), 3),
        "rollout_s_median": round(statistics.median(rollout), 3),
        "update_s_median": round(statistics.median(update), 3),
        "steps": len(times) - 1,
        "precision": args.precision if args.device == "cuda" else "32-true",
    }


def run_trl(args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ehrr1.config import ThinkingSwitch
    from ehrr1.models.factory import load_model
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.training.grpo import rl_prompt

    tokenizer = load_tokenizer(args.model)
    prompts = [rl_prompt(tokenizer, r, ThinkingSwitch.enable_thinking) for r in records(args)]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.prompts_per_step * args.group_size,
            num_generations=args.group_size,
            max_completion_length=args.max_completion,
            temperature=0.7,
            top_p=0.95,
            top_k=20,
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            loss_type="grpo",
            beta=0.0,
            max_steps=args.steps + 1,
            gradient_checkpointing=args.gradient_checkpointing,
            use_cpu=args.device == "cpu",
            bf16=args.device == "cuda",
            save_strategy="no",
            report_to="none",
            logging_steps=1,
            shuffle_dataset=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=load_model(args.model, args.dtype, "sdpa"),
            reward_funcs=lambda completions, **kw: [reward_value(c) for c in completions],
            args=config,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        trainer.train()
    return {"step_s_median": round(statistics.median(times[1:]), 3), "steps": len(times) - 1}


def random_model(shape: str, tokenizer_from: str, out: Path) -> str:
    """A randomly initialised model of ``conf/model/<shape>.yaml``'s architecture with the given tokenizer."""
    from ehrr1.models.factory import init_random_model
    from ehrr1.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_from)
    init_random_model(architecture(shape), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--max-completion", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--precision", default="bf16-mixed", help="ours on cuda: Lightning precision")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on both sides (large models)")
    parser.add_argument("--shape", help="a model config name (e.g. qwen3_1.7b): random weights of its shape instead")
    parser.add_argument("--tokenizer", default=str(TOKENIZER), help="with --shape: the tokenizer it is built for")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as shaped:
        if args.shape:
            args.model = random_model(args.shape, args.tokenizer, Path(shaped))
        ours, trl = run_ours(args), run_trl(args)
    print(
        json.dumps(
            {
                "benchmark": "grpo_step",
                "device": args.device,
                "group_size": args.group_size,
                "prompts_per_step": args.prompts_per_step,
                "max_completion": args.max_completion,
                "model": args.shape or args.model,
                "ours": ours,
                "trl": trl,
                "ours_vs_trl": round(ours["step_s_median"] / trl["step_s_median"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
