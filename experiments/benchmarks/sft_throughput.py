"""Benchmark: SFT training throughput, our Lightning loop (packed and padded) vs the Hugging Face Trainer.

Prints one JSON line. The same randomly initialised model, the same exported chat data (assistant-only
labels), the same micro-batch size, optimiser and schedule; each variant runs in a fresh process for
``--steps`` optimiser steps. Throughput counts real (non-padding) tokens from the end of the first step to
the end of the last. Ratios: ours (padded) / HF Trainer (padded) is the loop's overhead at equal batches;
ours packed / ours padded is what packing buys. Padded micro-batches group examples of similar length
(ours: sorted within windows of 64 micro-batches; the HF Trainer: its ``group_by_length`` sampler). With
``--device cuda`` the model can be Qwen3-1.7B-shaped (``--model qwen3_1.7b``), trained in bf16 mixed
precision, and MFU (``ehrr1.training.flops``, its inputs in ``flops``) is reported against ``--peak-tflops``.
``--attn flex_attention`` packs with a document BlockMask instead of SDPA's dense mask. ``--profile`` runs our
variants' steps after the first under the PyTorch profiler and adds their top kernels (or CPU operators),
host syncs and, on CUDA, the device's busy share.

    python experiments/benchmarks/sft_throughput.py [--steps 20] [--micro-batch-size 4] [--max-seq-len 2560]
    python experiments/benchmarks/sft_throughput.py --device cuda --model qwen3_1.7b --max-seq-len 8192 \\
        --packed-micro-batch-size 1 --micro-batch-size 4 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import architecture, measure, profile_summary  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "instructions" / "synthetic_n2000_seed0" / "main" / "tiny"
TOKENIZER = REPO / "data" / "models" / "tiny" / "synthetic_n2000_seed0" / "tokenizer"
LR = 1e-3


def profiled_activities(args: argparse.Namespace) -> list:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    return activities + ([torch.profiler.ProfilerActivity.CUDA] if args.device == "cuda" else [])


def rate(times: list[float], tokens: list[int]) -> float:
    return sum(tokens[1:]) / (times[-1] - times[0])


def run_ours(args: argparse.Namespace, packed: bool) -> dict:
    import lightning.pytorch as pl
    import torch

    from ehrr1.config import OptimConfig, ScheduleConfig, Toggle
    from ehrr1.models.factory import init_random_model
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.training.data import ChatDataModule
    from ehrr1.training.sft import SFTModule

    tokenizer = load_tokenizer(args.tokenizer)
    arch = architecture(args.model)
    mbs = args.packed_micro_batch_size if packed else args.micro_batch_size
    data = ChatDataModule(args.data_dir, tokenizer, args.max_seq_len, mbs, packing=packed, seed=0)

    def build():
        model = init_random_model(arch, tokenizer, seed=0)
        model.config._attn_implementation = args.attn
        return model

    module = SFTModule(
        build,
        OptimConfig(lr=LR),
        ScheduleConfig(),
        args.gradient_checkpointing,
        Toggle.on if args.liger else Toggle.off,
    )
    marks: dict[str, list] = {"t": [], "n": []}
    profiler = torch.profiler.profile(activities=profiled_activities(args)) if args.profile else None

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if args.device == "cuda":
                torch.cuda.synchronize()
            marks["t"].append(time.perf_counter())
            marks["n"].append(int(batch["n_tokens"]))
            if profiler is not None and len(marks["t"]) == 1:  # every step after the first (warm-up)
                profiler.start()

        def on_train_end(self, trainer, pl_module):
            if profiler is not None:
                profiler.stop()

    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[Clock()],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=data)
    result = {
        **(
            {"profile": profile_summary(profiler, marks["t"][-1] - marks["t"][0], args.device == "cuda")}
            if profiler
            else {}
        ),
        "tokens_per_s": round(rate(marks["t"], marks["n"]), 1),
        "steps": len(marks["t"]),
        "micro_batch_size": mbs,
        "final_loss": round(module.last_train_loss, 4),
    }
    return result | device_figures(args, module.model, data.splits["train"].examples)


def device_figures(args: argparse.Namespace, model, examples) -> dict:
    """The MFU formula's inputs (ehrr1.training.flops) and, on a GPU, peak memory."""
    import torch

    from ehrr1.training.flops import attended_span, flops_inputs

    span = attended_span([len(e.input_ids) for e in examples])
    out = {"flops": flops_inputs(model.config, span).as_dict()}
    if args.device == "cuda":
        out["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return out


def run_hf_trainer(args: argparse.Namespace) -> dict:
    import random

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from ehrr1.models.factory import init_random_model
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.training.data import IGNORE, encode_chats, read_chat_jsonl

    tokenizer = load_tokenizer(args.tokenizer)
    examples = [
        e
        for e in encode_chats(tokenizer, read_chat_jsonl(Path(args.data_dir) / "train.jsonl"))
        if len(e.input_ids) <= args.max_seq_len
    ]
    random.Random(0).shuffle(examples)
    with torch.device(args.device):
        model = init_random_model(architecture(args.model), tokenizer, seed=0)
    model.config._attn_implementation = args.attn
    counted: list[int] = []

    def collate(batch):  # right padding, attention mask, prompt and padding ignored
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), IGNORE)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, e in enumerate(batch):
            ids[r, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
            labels[r, : len(e["labels"])] = torch.tensor(e["labels"])
            mask[r, : len(e["input_ids"])] = 1
        counted.append(int(mask.sum()))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    training = TrainingArguments(
        output_dir="/tmp/ehrr1_hf_trainer_bench",
        per_device_train_batch_size=args.micro_batch_size,
        max_steps=args.steps,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float below 1 is a ratio of the steps
        max_grad_norm=1.0,
        weight_decay=0.0,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        dataloader_num_workers=0,
        use_cpu=args.device != "cuda",
        bf16=args.precision.startswith("bf16"),
        seed=0,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        disable_tqdm=True,
        use_liger_kernel=args.liger,
        train_sampling_strategy="group_by_length",  # as our padded batches: similar lengths together
    )
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    trainer = Trainer(model=model, args=training, train_dataset=dataset, data_collator=collate, callbacks=[Clock()])
    out = trainer.train()
    return {
        **device_figures(args, model, examples),
        "tokens_per_s": round(rate(times, counted[: len(times)]), 1),
        "steps": len(times),
        "micro_batch_size": args.micro_batch_size,
        "final_loss": round(out.training_loss, 4),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    parser.add_argument("--model", default="tiny", help="a conf/model/<name>.yaml with an architecture")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch-size", type=int, default=4, help="examples per padded micro-batch")
    parser.add_argument("--packed-micro-batch-size", type=int, default=2, help="packed sequences per micro-batch")
    parser.add_argument("--max-seq-len", type=int, default=2560)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default=None, help="default: 32-true on CPU, bf16-mixed on CUDA")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--liger", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="our variants' steps after the first under the PyTorch profiler: top kernels, host syncs, device "
        "busy share (tokens/s then include the profiler's overhead)",
    )
    parser.add_argument("--only", choices=["ours_packed", "ours_padded", "hf_trainer_padded"], default=None)
    parser.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args._measure:
        variant = {
            "ours_packed": lambda: run_ours(args, True),
            "ours_padded": lambda: run_ours(args, False),
            "hf_trainer_padded": lambda: run_hf_trainer(args),
        }[args._measure]
        print(json.dumps(variant()))
        return
    if not (Path(args.data_dir) / "train.jsonl").exists():
        sys.exit(f"no data at {args.data_dir}: run `python synthesize.py` first (or pass --data-dir/--tokenizer)")
    passthrough = [a for a in argv if a != "--skip-hf"]
    if "--only" in passthrough:
        del passthrough[passthrough.index("--only") : passthrough.index("--only") + 2]
    variants = ["ours_packed", "ours_padded"] + ([] if args.skip_hf else ["hf_trainer_padded"])
    variants = [args.only] if args.only else variants
    results = {v: measure(__file__, v, *passthrough) for v in variants}
    report = {
        "benchmark": "sft_throughput",
        "device": args.device,
        "model": args.model,
        "precision": args.precision,
        "attn": args.attn,
        "steps": args.steps,
        "max_seq_len": args.max_seq_len,
        "profiled": args.profile,
        **results,
    }
    if {"ours_packed", "ours_padded"} <= set(results):
        report["packed_vs_padded"] = round(
            results["ours_packed"]["tokens_per_s"] / results["ours_padded"]["tokens_per_s"], 2
        )
    if args.device == "cuda":
        from ehrr1.training.flops import mfu

        report["peak_tflops"] = args.peak_tflops
        for r in results.values():
            r["mfu"] = round(mfu(r["tokens_per_s"], r["flops"]["flops_per_token"], args.peak_tflops), 4)
    if {"hf_trainer_padded", "ours_padded", "ours_packed"} <= set(results):
        hf = results["hf_trainer_padded"]["tokens_per_s"]
        report["ours_padded_vs_hf_trainer"] = round(results["ours_padded"]["tokens_per_s"] / hf, 2)
        report["ours_packed_vs_hf_trainer"] = round(results["ours_packed"]["tokens_per_s"] / hf, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
