"""``conf/synthesis/``: reasoning synthesis, concepts -> co-occurrence -> thinking graph -> chain -> filter."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig

from ehrr1.config.backend import BackendConfig
from ehrr1.config.checks import checked, known_split, remote_refusal


class WriterKind(str, Enum):
    template = "template"  # verbalise the graph (deterministic, no model)
    llm = "llm"  # a model writes the chain through a generation backend


class ChainPrompt(str, Enum):
    ehrr1 = "ehrr1"  # short: record and question, answer, graph paths, the three sections
    reference = "reference"  # the reference's knowledge-grounded prompt (reasoning_generation_new.py)


class PlainRecords(str, Enum):
    none = "none"  # the reasoning data holds chain records only
    unchained = "unchained"  # + the plain answer of every record without a kept chain (risk tasks included)
    all = "all"  # + the plain answer of every record (as the reference's stage 2 mixes /think and /no_think)


class KeepChains(str, Enum):
    first = "first"  # one training record per sample: its first chain that passes the filter
    all = "all"  # a record per passing chain (same id, ``chain`` numbers them)


@dataclass
class ExtractorConfig:
    name: str = "dictionary"  # dictionary (licence-free) or quickumls (your UMLS installation)
    quickumls_path: str | None = None  # quickumls: the QuickUMLS index built from your UMLS release
    threshold: float = checked(0.9, gt=0, le=1)  # quickumls: minimum similarity
    free_text: bool = True  # quickumls: also the terms of free text (radiology and discharge notes, admission info)


class TopKPer(str, Enum):
    target = "target"  # top_k pairs per target concept over the training split
    sample = "sample"  # the reference's: per target, among each sample's own history concepts


class SupportOn(str, Enum):
    pair = "pair"  # min_support counts the samples holding both concepts
    history = "history"  # the reference's: the samples holding the history concept


@dataclass
class CooccurrenceConfig:
    min_support: int = checked(5, ge=1)  # training samples holding both concepts (support_on=history: the history)
    support_on: SupportOn = SupportOn.history
    min_lift: float = checked(5.0, ge=0)  # keep pairs with lift above this
    top_k: int = checked(20, ge=1)  # pairs kept per target concept
    top_k_per: TopKPer = TopKPer.sample


@dataclass
class GraphConfig:
    relations: list[str] = field(default_factory=lambda: ["cooccurrence", "hierarchy"])  # and/or umls
    umls_mrrel: str | None = None  # umls: path to MRREL.RRF of your UMLS release
    umls_relations: list[str] = field(default_factory=lambda: ["RB", "RN", "RO", "PAR", "CHD"])
    max_hops: int = checked(2, ge=1)  # path length bound of the search from a target to the history
    max_paths: int = checked(3, ge=1)  # paths kept per target concept
    filter_nograph: bool = True  # drop samples whose targets reach no history concept


@dataclass
class WriterConfig:
    kind: WriterKind = WriterKind.template
    model_path: str | None = None  # llm: the writing model (HF dir / hub id / served name); None: model.path
    # llm: a conf/backend/ option (backend@synthesis.writer.backend=openai; a server off this machine needs
    # synthesis.allow_remote)
    backend: BackendConfig = MISSING
    max_tokens: int = checked(1024, ge=1)
    temperature: float = checked(0.5, ge=0)  # the reference's
    top_p: float = checked(0.95, gt=0, le=1)
    batch_size: int = checked(32, ge=1)  # chains per generate call (each batch is saved before the next)
    prompt: ChainPrompt = ChainPrompt.reference
    # llm: chains drawn per sample (seed, seed + 1, ...); the reference asks GPT-4o for 3, keeps the first to pass
    chains_per_sample: int = checked(3, ge=1)
    keep: KeepChains = KeepChains.first


class ChainFilter(str, Enum):
    ehrr1 = "ehrr1"  # sections present and in order, no repeated line, final results recall the answer
    reference = "reference"  # the reference's: >= share of labels after "Final Results", no "ground truth"


@dataclass
class SynthesisConfig:
    """Reasoning synthesis (``synthesize.py pipeline=reasoning``, ``conf/synthesis/``): concepts ->
    co-occurrence (training split) -> thinking graph per sample -> chain (## Extraction / ## Reasoning /
    ## Final Results) -> filter. The defaults are the paper's: support >= 5, lift > 5, top 20 per target
    concept, the reference's chain prompt and filter."""

    dir: str = MISSING
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    cooccurrence: CooccurrenceConfig = field(default_factory=CooccurrenceConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    min_answer_recall: float = checked(0.7, ge=0, le=1)  # decision chains: share of the answer results must name
    chain_filter: ChainFilter = ChainFilter.reference
    decision_only: bool = True  # chains for decision tasks only (the reference); risk records get none
    plain: PlainRecords = PlainRecords.none  # instruction records written beside the chains, answered directly
    allow_remote: bool = False  # the llm writer may send EHR text to a server not on this machine
    released: str | None = None  # released EHR-Ins reasoning items (file / folder) instead of synthesis
    num_workers: int = checked(2, ge=1)  # processes over chunks (extraction; template writing)
    chunk_size: int = checked(2000, ge=1)  # records per chunk: the unit of caching and resume
    seed: int = 0

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = [p for s in node.splits for p in known_split(f"{at}.splits", s)]
        writer = node.writer
        remote = "base_url" in writer.backend  # an OpenAI-compatible server
        if writer.kind == WriterKind.llm.value and remote and not node.allow_remote:
            refusal = remote_refusal(writer.backend.base_url, f"{at}.allow_remote")
            found += [refusal] if refusal else []
        return found
