"""``synthesize.py pipeline=reasoning``: instruction records -> concepts -> co-occurrence -> graphs -> chains.

Work is cut into chunks of ``chunk_size`` records per split, the unit of caching and resume:
``_work/concepts/<split>-<k>.parquet`` (extraction, in ``num_workers`` processes), ``_work/hierarchy.parquet``
and ``_work/cooccurrence.parquet`` (training split only), then ``_work/chains/<split>-<k>.jsonl``, appended a
batch at a time and closed by a ``.done`` marker, so a killed run (LLM writing included) resumes where it
stopped without duplicates. Finally ``<synthesis.dir>/<split>.jsonl`` (the reasoning SFT data) and
``stats.json`` / ``stats.md`` (graph coverage and filter counts per task) are written atomically.
Changing any setting or the instruction data starts the work over.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from ehrr1.config import KeepChains, PlainRecords, SynthesisConfig, TopKPer, WriterKind, settings_of
from ehrr1.errors import ConfigError, UserError
from ehrr1.reasoning.concepts import build_extractor
from ehrr1.reasoning.graph import (
    Dictionaries,
    Edge,
    RelationGraph,
    cooccurrence_graphs,
    hierarchy_edges,
    hierarchy_graph,
    sample_cooccurrence,
    sample_graph,
    umls_graph,
)
from ehrr1.reasoning.statistics import cooccurrence
from ehrr1.reasoning.writers import ChainRequest, LLMWriter, TemplateWriter, chain_record, check_chain
from ehrr1.resumable import Ledger, WorkDir, read_appended_jsonl
from ehrr1.tasks.records import InstructionRecord, user_text
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.utils import atomic_output, atomic_write_json, atomic_write_text, digest, file_fingerprint, locked, run_jobs

log = logging.getLogger(__name__)

CONCEPT_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("sample", "task", "split", "role", "concept", "label", "section")]
)


def chunk_plan(path: Path, chunk_size: int) -> list[tuple[int, int]]:
    """(byte offset, line count) of each chunk of a JSONL file."""
    plan, offset, start, count = [], 0, 0, 0
    with path.open("rb") as lines:
        for line in lines:
            if count == chunk_size:
                plan.append((start, count))
                start, count = offset, 0
            offset += len(line)
            count += 1
    if count:
        plan.append((start, count))
    return plan


def read_chunk(path: str | Path, offset: int, count: int) -> list[InstructionRecord]:
    with open(path, "rb") as lines:
        lines.seek(offset)
        return [json.loads(lines.readline()) for _ in range(count)]


def extract_chunk(
    path: str, offset: int, count: int, split: str, out: str, extractor_settings: dict, extra_tasks: dict
) -> None:
    """Concept mentions of one chunk's records (history from the EHR, targets from the answer) to Parquet."""
    extractor = build_extractor(OmegaConf.create(extractor_settings))
    registry = TaskRegistry(extra_tasks)
    rows: dict[str, list[str]] = {name: [] for name in CONCEPT_SCHEMA.names}
    for record in read_chunk(path, offset, count):
        task = registry[record["task"]]
        mentions = [("history", m) for m in extractor.history(user_text(record))]
        mentions += [("target", m) for m in extractor.targets(task, record["target"])]
        for role, m in mentions:
            for name, value in zip(
                CONCEPT_SCHEMA.names, (record["id"], task.name, split, role, m.concept, m.label, m.section), strict=True
            ):
                rows[name].append(value)
    with atomic_output(out) as tmp:
        pq.write_table(pa.table(rows, schema=CONCEPT_SCHEMA), tmp)


def relation_graphs(work: Path, settings: SynthesisConfig) -> tuple[dict[str, RelationGraph], RelationGraph]:
    """Per-task co-occurrence graphs and the graph shared by all tasks (hierarchy, UMLS)."""
    relations = set(settings.graph.relations)
    per_task = cooccurrence_graphs(pq.read_table(work / "cooccurrence.parquet").to_pylist())
    shared = RelationGraph()
    if "cooccurrence" not in relations:
        per_task = {}
    if "hierarchy" in relations:
        shared = shared.merged(hierarchy_graph_from(work / "hierarchy.parquet"))
    if "umls" in relations:
        if not settings.graph.umls_mrrel:
            raise ConfigError(
                "synthesis.graph.relations has umls: set synthesis.graph.umls_mrrel=<UMLS>/META/MRREL.RRF"
            )
        files = sorted(str(p) for p in (work / "concepts").glob("*.parquet"))
        concepts = pq.read_table(files, columns=["concept"]).column(0).unique().to_pylist()
        shared = shared.merged(umls_graph(settings.graph.umls_mrrel, concepts, list(settings.graph.umls_relations)))
    return per_task, shared


def hierarchy_graph_from(path: Path) -> RelationGraph:
    return hierarchy_graph(Edge(r["source"], r["target"], r["relation"]) for r in pq.read_table(path).to_pylist())


def chain_requests(
    records: list[InstructionRecord],
    mentions: list[dict[str, Any]],
    graphs,
    shared,
    settings: SynthesisConfig,
    registry: TaskRegistry,
) -> list[tuple[InstructionRecord, ChainRequest]]:
    """Each record with its thinking graph, ready for a writer."""
    by_sample: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for m in mentions:
        by_sample[m["sample"]][m["role"]].append(m)
    merged: dict[str, RelationGraph] = {}
    out = []
    for record in records:
        found = by_sample[record["id"]]
        task = record["task"]
        history = {m["concept"] for m in found["history"]}
        targets = [m["concept"] for m in found["target"]]
        task_graph = graphs.get(task, RelationGraph())
        if settings.cooccurrence.top_k_per is TopKPer.sample:  # the sample's own top_k per target
            graph = sample_cooccurrence(task_graph, targets, history, settings.cooccurrence.top_k).over(shared)
        else:
            if task not in merged:
                merged[task] = task_graph.merged(shared)
            graph = merged[task]
        paths = sample_graph(graph, targets, history, settings.graph.max_hops, settings.graph.max_paths)
        labels = {m["concept"]: m["label"] for m in found["history"] + found["target"]}
        instruction = registry[task].prompt_instruction
        request = ChainRequest(
            record["id"], task, record["kind"], user_text(record), instruction, list(record["target"]), paths, labels
        )
        out.append((record, request))
    return out


def write_chunk(
    path: str,
    offset: int,
    count: int,
    split: str,
    work: str,
    key: str,
    settings: SynthesisConfig,
    extra_tasks: dict,
    writer=None,
) -> None:
    """Graphs and chains of one chunk, appended per batch to its part file; a .done marker closes it.
    A sample's row holds the records of its chains that pass the filter (``writer.keep``: the first or all)."""
    work_dir = Path(work)
    chains_of = Ledger(work_dir / "chains" / f"{key}.jsonl", key="id")
    done = chains_of.rows()
    records = [r for r in read_chunk(path, offset, count) if r["id"] not in done]
    ids = [r["id"] for r in records]
    mentions = pq.read_table(
        work_dir / "concepts" / f"{key}.parquet", filters=[("sample", "in", ids)] if ids else None
    ).to_pylist()
    graphs, shared = relation_graphs(work_dir, settings)
    writer = writer or TemplateWriter()
    pending = chain_requests(records, mentions, graphs, shared, settings, TaskRegistry(extra_tasks))
    batch_size = settings.writer.batch_size if settings.writer.kind is WriterKind.llm else len(pending) or 1
    with chains_of.appending() as append:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            lines = []
            skipped = {q.id for _, q in batch if settings.decision_only and q.kind == "risk"}
            to_write = [
                (r, q) for r, q in batch if (q.paths or not settings.graph.filter_nograph) and q.id not in skipped
            ]
            chains = dict(zip((q.id for _, q in to_write), writer.write([q for _, q in to_write]), strict=True))
            for record, request in batch:
                row = {"id": request.id, "task": request.task, "graph": bool(request.paths)}
                if request.id in skipped:
                    row["status"] = "risk task (decision_only)"
                elif request.id not in chains:
                    row["status"] = "no graph"
                else:
                    row.update(chain_rows(record, request, chains[request.id], settings))
                if settings.plain is PlainRecords.all or (
                    settings.plain is PlainRecords.unchained and row["status"] != "kept"
                ):
                    row["plain"] = record
                lines.append(row)
            append(lines)
    (work_dir / "chains" / f"{key}.done").touch()


def chain_rows(
    record: InstructionRecord, request: ChainRequest, chains: list[str], settings: SynthesisConfig
) -> dict[str, Any]:
    """The status of one sample's chains (kept, or why its first chain was dropped) and the records kept."""
    reasons = [check_chain(c, request, settings.min_answer_recall, settings.chain_filter) for c in chains]
    passed = [k for k, reason in enumerate(reasons) if reason is None]
    if not passed:
        return {"status": reasons[0], "chains": len(chains)}
    if settings.writer.keep is KeepChains.first:
        passed = passed[:1]
    records = [chain_record(record, chains[k], request, len(request.paths)) for k in passed]
    if len(chains) > 1:
        records = [{**r, "chain": k} for r, k in zip(records, passed, strict=True)]
    return {"status": "kept", "chains": len(chains), "records": records}


def synthesize_chains(cfg: DictConfig, inputs: dict[str, Path]) -> dict[str, Any]:
    """Chains for the instruction records of ``inputs`` (split -> file), resumable under ``synthesis.dir``."""
    settings: SynthesisConfig = settings_of(SynthesisConfig, cfg.synthesis)
    with locked(settings.dir):
        return _synthesize_chains(cfg, settings, inputs)


def _synthesize_chains(cfg: DictConfig, settings: SynthesisConfig, inputs: dict[str, Path]) -> dict[str, Any]:
    from ehrr1.data.reader import MimicReader

    out = Path(settings.dir)
    work = out / "_work"
    settings_dict = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(settings), enum_to_str=True))
    writer_model = writer_model_path(cfg, settings)
    key = digest({"settings": settings_dict, "inputs": file_fingerprint(inputs.values()), "writer": writer_model})
    claimed = WorkDir(work, key, "reasoning synthesis work")
    claimed.claim()
    for sub in ("concepts", "chains"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    extra = cast(dict[str, Any], OmegaConf.to_container(cfg.tasks.extra))

    plans = {split: chunk_plan(path, settings.chunk_size) for split, path in inputs.items()}
    chunks = [(split, k, off, n) for split, plan in plans.items() for k, (off, n) in enumerate(plan)]
    concept_file = {(s, k): work / "concepts" / f"{s}-{k:05d}.parquet" for s, k, _, _ in chunks}
    todo = [
        (str(inputs[s]), off, n, s, str(concept_file[s, k]), asdict(settings.extractor), extra)
        for s, k, off, n in claimed.pending(chunks, lambda c: f"concepts/{c[0]}-{c[1]:05d}.parquet")
    ]
    run_jobs(extract_chunk, todo, settings.num_workers, "concepts", cfg.progress)

    if not (work / "hierarchy.parquet").exists():
        concepts = pq.read_table(list(concept_file.values()), columns=["concept"]).column(0).unique().to_pylist()
        modules = {name: path for name, path in cfg.data.modules.items() if path is not None}
        dictionaries = Dictionaries(MimicReader(modules)) if "hierarchy" in settings.graph.relations else None
        edges = hierarchy_edges(sorted(concepts), dictionaries)
        table = pa.table(
            {
                "source": [e.source for e in edges] or pa.array([], pa.string()),
                "target": [e.target for e in edges] or pa.array([], pa.string()),
                "relation": [e.relation for e in edges] or pa.array([], pa.string()),
            }
        )
        with claimed.commit("hierarchy.parquet") as tmp:
            pq.write_table(table, tmp)
    if not (work / "cooccurrence.parquet").exists():
        train = [str(concept_file[s, k]) for s, k, _, _ in chunks if s == "train"]
        if not train:
            raise ConfigError("synthesis.splits must include train: co-occurrence is counted on the training split")
        c = settings.cooccurrence
        top_k = None if c.top_k_per is TopKPer.sample else c.top_k  # per sample: cut when the graphs are made
        kept = cooccurrence(
            train, work / "cooccurrence.parquet", c.min_support, c.min_lift, top_k, support_on=c.support_on.value
        )
        log.info("co-occurrence: %d (target, history) pairs kept", kept)

    args = [
        (str(inputs[s]), off, n, s, str(work), f"{s}-{k:05d}", settings, extra)
        for s, k, off, n in claimed.pending(chunks, lambda c: f"chains/{c[0]}-{c[1]:05d}.done")
    ]
    if writer_model is not None and args:  # an LLM writer
        writer = build_llm_writer(cfg, settings, writer_model)
        for job in args:
            write_chunk(*job, writer=writer)
    else:
        run_jobs(write_chunk, args, settings.num_workers, "chains", cfg.progress)
    return join_outputs(out, work, plans)


def writer_model_path(cfg: DictConfig, settings: SynthesisConfig) -> str | None:
    if settings.writer.kind is not WriterKind.llm:
        return None
    path = settings.writer.model_path or cfg.model.path
    if not path:
        raise ConfigError("synthesis.writer.kind=llm: set synthesis.writer.model_path (or model.path)")
    return str(path)


def build_llm_writer(cfg: DictConfig, settings: SynthesisConfig, model_path: str) -> LLMWriter:
    from ehrr1.backends import SamplingParams, build_backend
    from ehrr1.backends.openai import refuse_remote
    from ehrr1.config import ModelConfig, OpenAIBackendConfig

    backend = settings.writer.backend
    if isinstance(backend, OpenAIBackendConfig):  # the server receives EHR text: synthesis.allow_remote decides
        if not settings.allow_remote:
            refuse_remote(backend.base_url, "synthesis.allow_remote")
        backend = replace(backend, allow_remote=settings.allow_remote)
    if settings.writer.chains_per_sample < 1:
        raise UserError(f"synthesis.writer.chains_per_sample={settings.writer.chains_per_sample}: must be >= 1")

    sampling = SamplingParams(
        temperature=settings.writer.temperature,
        top_p=settings.writer.top_p,
        max_tokens=settings.writer.max_tokens,
        seed=settings.seed,
    )
    return LLMWriter(
        build_backend(backend, model_path, settings_of(ModelConfig, cfg.model), settings.seed),
        sampling,
        settings.writer.prompt,
        settings.writer.chains_per_sample,
    )


def join_outputs(out: Path, work: Path, plans: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    """``<split>.jsonl`` from the chunks' kept chains, in input order, and the statistics."""
    stats: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for split, plan in plans.items():
        with atomic_output(out / f"{split}.jsonl") as tmp, tmp.open("w", encoding="utf-8") as joined:
            for k in range(len(plan)):
                for row in read_appended_jsonl(work / "chains" / f"{split}-{k:05d}.jsonl"):
                    counts = stats[split][row["task"]]
                    counts["samples"] += 1
                    counts["with_graph"] += row["graph"]
                    counts[row["status"]] += 1
                    counts["records"] += len(row.get("records", []))
                    counts["plain"] += "plain" in row
                    for record in [*row.get("records", []), *([row["plain"]] if "plain" in row else [])]:
                        joined.write(json.dumps(record, ensure_ascii=False) + "\n")
    report = {
        "dir": str(out.resolve()),
        "splits": {s: {t: dict(c) for t, c in sorted(tasks.items())} for s, tasks in stats.items()},
        "coverage": {
            s: {t: round(c["with_graph"] / c["samples"], 3) for t, c in sorted(tasks.items())}
            for s, tasks in stats.items()
        },
        "totals": {s: sum(c["kept"] for c in tasks.values()) for s, tasks in stats.items()},
        "records": {s: sum(c["records"] for c in tasks.values()) for s, tasks in stats.items()},
    }
    atomic_write_json(out / "stats.json", report)
    atomic_write_text(out / "stats.md", stats_markdown(report))
    return report


def stats_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| split | task | samples | with graph | coverage | kept | no graph | format | repeated | misses answer |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, tasks in report["splits"].items():
        for task, c in tasks.items():
            cells = [c.get(k, 0) for k in ("samples", "with_graph")]
            cells += [f"{report['coverage'][split][task]:.2f}"]
            cells += [c.get(k, 0) for k in ("kept", "no graph", "format", "repeated lines", "misses the answer")]
            lines.append(f"| {split} | {task} | " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def print_reasoning(report: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.get("released"):
        totals = ", ".join(f"{s}: {n}" for s, n in report["totals"].items())
        console.print(f"reasoning data from the released EHR-Ins ({totals}): {report['dir']}")
        return
    table = Table(title="Reasoning chains (" + ", ".join(f"{s}: {n}" for s, n in report["totals"].items()) + ")")
    for column in ("split", "task", "samples", "graph coverage", "kept", "dropped"):
        table.add_column(column, justify="left" if column in ("split", "task") else "right")
    for split, tasks in report["splits"].items():
        for task, c in tasks.items():
            dropped = c["samples"] - c.get("kept", 0)
            coverage = f"{report['coverage'][split][task]:.2f}"
            table.add_row(split, task, str(c["samples"]), coverage, str(c.get("kept", 0)), str(dropped))
    console.print(table)
    console.print(f"reasoning data: {report['dir']}")
