"""Benchmark: thinking-graph building (samples/s, peak RSS) and the LLM writer's throughput against a real
local OpenAI-compatible server (``transformers serve`` with a tiny model) at several concurrencies.

Prints one JSON line. The instruction data is a task mix with ``--per-task`` samples of each of the 45
tasks of the default 2,000-patient cohort (built once under ``--root``, not timed). Graph building =
concept extraction, co-occurrence statistics, per-sample graphs and template chains
(``synthesize.py pipeline=reasoning``), in a fresh process. Writer: the same chunk of chains written by the
LLM writer through the server (``--writer-samples`` chains, ``--max-tokens`` each) at each concurrency.

    python experiments/benchmarks/thinking_graph.py [--per-task 500] [--root data/bench_graph]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import measure, peak_rss_mb  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"data_root={args.root}",
        f"timelines.dir={REPO / 'data' / 'timelines' / 'synthetic_n2000_seed0'}",
        f"index.dir={REPO / 'data' / 'index' / 'synthetic_n2000_seed0'}",
        f"model.embedded_dir={REPO / 'data' / 'models' / 'tiny' / 'synthetic_n2000_seed0'}",
        "data.root=" + str(REPO / "data" / "mimic-iv-synthetic" / "n2000_seed0"),
        f"selection.force_number={args.per_task}",
        "task_mix.name=bench",
        f"synthesis.num_workers={args.workers}",
        "synthesis=paper",
        "progress=false",
    ]


def compose(extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ehrr1.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="synthesize", overrides=extra)


def run_graph(args: argparse.Namespace) -> dict:
    from ehrr1.artefacts.reasoning import synthesize_reasoning

    cfg = compose(overrides(args) + [f"synthesis.dir={args.root}/reasoning_run"])
    started = time.perf_counter()
    report = synthesize_reasoning(cfg)
    seconds = time.perf_counter() - started
    samples = sum(c["samples"] for tasks in report["splits"].values() for c in tasks.values())
    with_graph = sum(c["with_graph"] for tasks in report["splits"].values() for c in tasks.values())
    return {
        "samples": samples,
        "seconds": round(seconds, 1),
        "samples_per_s": round(samples / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "graph_coverage": round(with_graph / samples, 3),
        "coverage_per_task": report["coverage"]["train"],
        "kept": report["totals"],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def writer_throughput(args: argparse.Namespace, model: Path) -> dict:
    """Requests/s of the LLM writer through a local server at each concurrency (same requests each time)."""
    import httpx

    from ehrr1.backends import SamplingParams, load_backend
    from ehrr1.reasoning.pipeline import chain_requests, read_chunk, relation_graphs
    from ehrr1.reasoning.writers import LLMWriter

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from transformers.cli.transformers import main; sys.exit(main())",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        cfg = compose(overrides(args))
        work = Path(args.root) / "reasoning_run" / "_work"
        records = read_chunk(Path(cfg.export.dir) / "train.jsonl", 0, args.writer_samples)
        import pyarrow.parquet as pq

        from ehrr1.config import SynthesisConfig, settings_of
        from ehrr1.tasks.registry import TaskRegistry

        settings = settings_of(SynthesisConfig, cfg.synthesis)
        mentions = pq.read_table(work / "concepts" / "train-00000.parquet").to_pylist()
        graphs, shared = relation_graphs(work, settings)
        registry = TaskRegistry(cfg.tasks.extra)
        requests = [q for _, q in chain_requests(records, mentions, graphs, shared, settings, registry)]
        sampling = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens)
        out = {}
        for concurrency in args.concurrency:
            backend = load_backend(
                "openai", model_path=str(model), base_url=f"http://127.0.0.1:{port}/v1", concurrency=concurrency
            )
            writer = LLMWriter(backend, sampling)
            prompts = [writer.prompt(q) for q in requests]
            backend.generate(prompts[:2], sampling)  # the server loads the model on its first request
            started = time.perf_counter()
            generations = backend.generate(prompts, sampling)
            seconds = time.perf_counter() - started
            errors = [g.error for g in generations if g.error]
            out[str(concurrency)] = {
                "requests_per_s": round(len(requests) / seconds, 2),
                "seconds": round(seconds, 1),
                "failed": len(errors),
                "first_error": errors[0][:200] if errors else None,
            }
        return out
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "data" / "bench_graph"))
    parser.add_argument("--per-task", type=int, default=500, help="samples per task (45 tasks, all splits)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--writer-samples", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(run_graph(args)))
        return

    from ehrr1.artefacts.instructions import build_instructions

    cfg = compose(overrides(args))
    if not (Path(cfg.export.dir) / "train.jsonl").exists():
        build_instructions(cfg)
    shutil.rmtree(Path(args.root) / "reasoning_run", ignore_errors=True)  # measured from scratch
    graph = measure(__file__, "--root", args.root, "--per-task", str(args.per_task), "--workers", str(args.workers))
    model = REPO / "data" / "models" / "tiny" / "synthetic_n2000_seed0" / "model_seed0"
    result = {"benchmark": "thinking_graph", "per_task": args.per_task, "graph_building": graph}
    result["llm_writer"] = {
        "server": "transformers serve (tiny model, CPU)",
        "samples": args.writer_samples,
        "max_tokens": args.max_tokens,
        "concurrency": writer_throughput(args, model),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
