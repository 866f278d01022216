"""The three entry points' schemas (``synthesize.py``, ``train.py``, ``evaluate.py``), composed from the groups'
nodes, and their registration in Hydra's config store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.config.backend import BACKEND_SCHEMAS, BackendConfig, SamplingParams
from ehrr1.config.bench import Baseline, BenchConfig, TabularSettings
from ehrr1.config.checks import checked, did_you_mean, given_settings, known_split, node_problems
from ehrr1.config.data import DataConfig, MarkdownConfig, TimelinesConfig
from ehrr1.config.hardware import STRATEGY_SCHEMAS, HardwareConfig
from ehrr1.config.logger import LOGGER_SCHEMAS, LoggerConfig
from ehrr1.config.model import ModelConfig
from ehrr1.config.stage import EveryStageConfig, StageConfig
from ehrr1.config.synthesis import SynthesisConfig
from ehrr1.config.task_mix import ExportConfig, IndexConfig, SelectionSettings, TaskMixConfig, TasksConfig


class Pipeline(str, Enum):
    """What ``synthesize.py`` produces."""

    timelines = "timelines"  # (synthetic cohort if configured) -> per-patient timelines
    index = "index"  # type: ignore[assignment]  # timelines -> the sample index of the task mix's tasks (shadows str.index)
    instructions = "instructions"  # timelines -> sample index -> selection -> EHR-Ins / EHR-Bench JSONL
    reasoning = "reasoning"  # instructions -> concepts -> co-occurrence -> thinking graphs -> chains


@dataclass
class DataPipelineConfig:
    """What ``synthesize.py`` and ``train.py`` share: the data, the model's prompts and the task mix."""

    data_root: str = "./data"  # every derived artefact lives under here
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    task_mix: TaskMixConfig = MISSING
    tasks: TasksConfig = field(default_factory=TasksConfig)
    timelines: TimelinesConfig = field(default_factory=TimelinesConfig)
    markdown: MarkdownConfig = field(default_factory=MarkdownConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    export: ExportConfig = field(default_factory=ExportConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    progress: bool = True
    debug: bool = False  # user errors show their traceback too (as HYDRA_FULL_ERROR=1 does)
    # files and folders the run writes (patient text among them) are its user's alone (umask 077); false: the
    # process's umask decides (a group-shared data folder)
    private_files: bool = True


@dataclass
class SynthesizeConfig(DataPipelineConfig):
    pipeline: Pipeline = Pipeline.instructions  # timelines / index: stop after them; reasoning: stage 2's chains
    # [first, stop): this job indexes / exports only these timeline shards (one job of an array, e.g. on
    # SLURM) and leaves the join to a run without it; None: all shards, then the join
    shards: list[int] | None = None


@dataclass
class AfterTrainingConfig:
    """The evaluation ``train.py`` runs on the curriculum's last trained stage (``evaluate.py`` settings)."""

    enabled: bool = True
    split: str = "test"
    limit: int | None = checked(None, ge=1)  # samples per task
    batch_size: int = checked(8, ge=1)
    max_tokens: int = checked(64, ge=1)
    thinking: bool = False

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        return known_split(f"{at}.split", node.split)


@dataclass
class TrainConfig(DataPipelineConfig):
    # conf/stage/: one stage (a StageConfig), or a curriculum (an EveryStageConfig: the settings given for
    # every stage, ??? where each stage keeps its own); each option's YAML names its schema
    stage: Any = MISSING
    # a curriculum's stages in the order they run, each from the previous one's weights (those without data
    # are skipped), as their conf/stage/<name>.yaml make them: composed by the curriculum's defaults list
    curriculum: dict[str, StageConfig] = field(default_factory=dict)
    # one stage's own settings, over those for every stage: +stages.<name>.<key>=...
    stages: dict[str, Any] = field(default_factory=dict)
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    resume: str | None = None  # an earlier run directory (outputs/train/<time>): continue it where it stopped
    run_dir: str | None = None  # where the run's stages go; None: Hydra's output directory
    evaluate: AfterTrainingConfig = field(default_factory=AfterTrainingConfig)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if not node.curriculum and OmegaConf.is_missing(node.stage, "data"):
            return [f"stage={node.stage.name} has no stages left to run: choose another stage or keep one of them"]
        recipes = stage_recipes(node)
        found = []
        for name, own in node.stages.items():
            if name not in recipes:
                found.append(f"stages.{name}: no stage '{name}' runs; {did_you_mean(str(name), list(recipes))}")
                continue
            try:
                OmegaConf.merge(OmegaConf.structured(StageConfig), own)
            except OmegaConfBaseException as exc:
                found.append(f"stages.{name}.{exc.full_key}: {str(exc).splitlines()[0]}")  # type: ignore[attr-defined]
                continue
            # the stage's own settings are checked as they merge over the rest (the walk sees those already)
            below = as_stage(recipes[name], node.stage if node.curriculum else None)
            seen = set(node_problems(typed_stage(below)))
            found += [f"stages.{name}.{p}" for p in node_problems(typed_stage(below, own)) if p not in seen]
        return found


def stage_recipes(cfg: DictConfig) -> dict[str, DictConfig]:
    """Each stage a run trains, in order, with its recipe: ``stage`` alone, or a curriculum's
    ``curriculum.<name>`` (the stage's YAML, as the experiment chose it)."""
    return dict(cfg.curriculum.items()) if cfg.curriculum else {cfg.stage.name: cfg.stage}


def as_stage(recipe: DictConfig, every: DictConfig | None, own: Any = None) -> DictConfig:
    """A stage's settings: ``recipe``, then the settings ``every`` stage is given (a curriculum's ``stage``:
    ``???`` where none is), then its ``own``; interpolations point where the recipe's do."""
    given = {k: v for k, v in given_settings(every).items() if k != "name"} if every is not None else {}
    return cast(DictConfig, OmegaConf.merge(recipe, given, own or {}))


def typed_stage(*nodes: Any) -> DictConfig:
    """``nodes`` merged over the StageConfig schema (a stored config's are plain), so its checks apply."""
    return cast(DictConfig, OmegaConf.merge(OmegaConf.structured(StageConfig), *nodes))


def curriculum_stages(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The stages a run trains, in order, each with its settings, lowest first: its recipe (its YAML, chosen by
    the experiment), the settings given for every stage (``stage.<key>=...``), its own
    (``+stages.<name>.<key>=...``). The command line's settings win over every recipe."""
    every = cfg.stage if cfg.curriculum else None
    return [(str(name), as_stage(recipe, every, cfg.stages.get(name))) for name, recipe in stage_recipes(cfg).items()]


@dataclass
class EvaluateConfig(DataPipelineConfig):
    bench: BenchConfig = MISSING
    backend: BackendConfig = MISSING
    sampling: SamplingParams = field(default_factory=SamplingParams)
    thinking: bool = False  # reasoning on (the model thinks first) or off (a closed think block)
    risk_one_token: bool = True  # risk tasks: thinking off, one token among yes / no, P(yes) for AUROC (the reference)
    candidates_prompt: bool = False  # baseline models: the reference's candidate list and answer rules
    # longer prompts keep their last tokens, as the reference cuts (it used min(model limit, 16000) - max new tokens)
    max_prompt_tokens: int | None = checked(None, ge=1)
    # prompts per generate call; None: the backend's (hf 8, openai 64, vllm 1024)
    batch_size: int | None = checked(None, ge=1)
    limit: int | None = checked(None, ge=1)  # samples per task; None: all
    only_tasks: list[str] | None = None  # e.g. [labevents, Inpatient_Mortality]; None: every task of the split
    split: str = "test"  # EHR-Bench; val for model selection
    train_run: str | None = None  # a train.py run directory: evaluate its last trained stage
    output_dir: str | None = None  # results.jsonl (resumable) and reports; None: outputs/evaluate/<model>/<mix>/<split>
    bootstrap: int = checked(1000, ge=1)  # resamples for the 95 % intervals
    seed: int = 0
    logger: LoggerConfig = MISSING
    log_outputs: bool = False  # per-sample model outputs to W&B: they may quote patient data, so opt in
    # samples whose generation failed (after the backend's retries) are scored 0 and end the run with an error
    # (exit 1; a re-run asks them again); true: the run succeeds with them
    allow_failures: bool = False
    baselines: list[Baseline] = field(default_factory=lambda: [Baseline.most_frequent, Baseline.tabular])
    tabular: TabularSettings = field(default_factory=TabularSettings)  # the tabular baseline's models

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = known_split("split", node.split)
        if node.train_run and node.model.path:
            found.append(
                f"train_run={node.train_run} and model.path={node.model.path} both name the weights to evaluate: "
                "set one of them"
            )
        return found


def _copy_config_store_as_itself() -> None:
    """Make a deep copy of Hydra's ``ConfigStore`` singleton the singleton itself.

    Hydra 1.3 deep-copies its config repository, and with it the store and every schema in it, once per
    config group that ``--help`` lists: about 100 copies, 2 of the 2.7 s ``--help`` took here. Nothing
    writes to those copies (re-initialising a copy swaps its list of sources), and a copied singleton is
    a stale one: Hydra 1.4 reads the live store instead (facebookresearch/hydra#2928), as this does.
    """
    if "__deepcopy__" not in vars(ConfigStore):
        ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]


SCHEMAS = {"synthesize_schema": SynthesizeConfig, "train_schema": TrainConfig, "evaluate_schema": EvaluateConfig}


def register_configs(*names: str) -> None:
    """Store the schemas ``names`` (all when none) in Hydra's config store."""
    _copy_config_store_as_itself()
    cs = ConfigStore.instance()
    for name in names or SCHEMAS:
        cs.store(name=name, node=SCHEMAS[name])
    cs.store(name="stage_schema", node=StageConfig)  # each stage's YAML names it (/stage_schema@_here_)
    cs.store(name="every_stage_schema", node=EveryStageConfig)  # each curriculum's YAML names it
    for name, schema in {**STRATEGY_SCHEMAS, **LOGGER_SCHEMAS, **BACKEND_SCHEMAS}.items():  # an option names one
        cs.store(name=name, node=schema)
