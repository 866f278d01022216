"""Training: config groups and their errors, loss masking, packing isolation, data order, the Lightning SFT
stage end to end (reproducible, resumable after kill -9), the curriculum, W&B offline, sweeps."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ehrr1.config import DDPConfig, DeepSpeedConfig, HardwareConfig, LossOn, LossPer, settings_of, validate
from ehrr1.errors import ConfigError
from ehrr1.models.factory import init_random_model
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.training.curriculum import as_one_stage, curriculum_stages, train
from ehrr1.training.data import (
    IGNORE,
    Encoded,
    EpochOrder,
    MicroBatches,
    collate,
    encode_chats,
    group_by_length,
    pack,
)
from ehrr1.training.hardware import build_strategy
from tests.support import (
    REPO,
    SMALL_DATA,
    compose_config,
    kill_after_first_checkpoint,
    offline_wandb_run,
    run_entry_point,
    tiny_architecture,
)

TINY = tiny_architecture()
QUICK = (
    "stage.max_steps=4",
    "stage.grad_accum=1",  # a step per micro-batch (the base recipes accumulate 16)
    "stage.val_max_batches=2",
    "stage.micro_batch_size=2",
    "model.context_length=512",
    "stage.checkpoint_every_n_steps=2",
    "stage.log_every_n_steps=1",
    "progress=false",
    "evaluate.enabled=false",  # the curriculum test turns it on
)


def train_config(data_root: Path, run_dir: Path, *overrides: str):
    return compose_config("train", f"data_root={data_root}", f"run_dir={run_dir}", *SMALL_DATA, *QUICK, *overrides)


def losses(stage_dir: Path) -> list[tuple[str, str, str]]:
    """(step, train loss, val loss) rows of every attempt of a stage, in order."""
    rows = []
    for path in sorted((stage_dir / "csv").glob("version_*/metrics.csv")):
        with path.open() as f:
            rows += [(r["step"], r.get("train/loss", ""), r.get("val/loss", "")) for r in csv.DictReader(f)]
    return rows


def weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(hf_dir / "model.safetensors")


# --- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("experiment", "model", "hardware", "curriculum", "lr"),
    [
        ("main", "tiny", "cpu", "main", 3e-3),
        ("ehr_r1_1.7b", "qwen3_1.7b", "deepspeed_zero3", "ehr_r1", 2e-5),
        pytest.param("ehr_r1_8b", "qwen3_8b", "deepspeed_zero3", "ehr_r1", 2e-5, marks=pytest.mark.slow),
        pytest.param("ehr_r1_72b", "qwen2.5_72b", "deepspeed_zero3", "ehr_r1", 2e-5, marks=pytest.mark.slow),
    ],
)
def test_every_experiment_composes_with_every_stage(experiment, model, hardware, curriculum, lr):
    for stage in ("curriculum", "domain_adaptation", "reasoning", "rl", curriculum, f"{curriculum}_rl"):
        cfg = compose_config("train", f"experiment={experiment}", f"stage={stage}")
        assert (cfg.model.name, cfg.hardware.name) == (model, hardware)
        for _, each in curriculum_stages(cfg):
            OmegaConf.to_container(as_one_stage(cfg, each), throw_on_missing=True)
    cfg = compose_config("train", f"experiment={experiment}")
    assert cfg.stage.name == curriculum and list(cfg.curriculum) == ["domain_adaptation", "reasoning", "rl"]
    first = compose_config("train", f"experiment={experiment}", f"stage={curriculum}_domain_adaptation").stage
    assert first.optim.lr == lr and first.schedule.scheduler.value == "cosine"
    if experiment != "main":
        assert first.schedule.warmup_ratio == 0.03 and first.epochs == 1 and cfg.hardware.devices == 8
        assert first.gradient_checkpointing and first.liger.value == "on" and cfg.model.context_length == 8192


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stage=domain_adaption", r"(?s)stage/domain_adaption.*curriculum.*domain_adaptation.*reasoning.*rl"),
        ("hardware=tpu", r"(?s)hardware/tpu.*cpu.*ddp.*deepspeed_zero3.*fsdp.*gpu.*slurm"),
        ("logger=tensorboard", r"(?s)logger/tensorboard.*csv.*none.*wandb"),
        ("stage.optim.learning_rate=1e-5", "learning_rate"),
        ("hardware=fsdp hardware.strategy.sharding_strategy=FULL", r"(?s)FULL.*FULL_SHARD.*SHARD_GRAD_OP"),
        ("stage.epochs=two", "epochs"),
    ],
)
def test_typos_fail_before_any_work_naming_the_choices(override, expected):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("train", *override.split())
    assert re.search(expected, f"{info.value} {info.value.__cause__}")


def test_each_hardware_option_builds_its_lightning_strategy():
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    def hardware(name: str) -> HardwareConfig:
        return settings_of(HardwareConfig, compose_config("train", f"hardware={name}").hardware)

    assert build_strategy(hardware("cpu")) == "auto" and hardware("gpu").precision == "bf16-mixed"
    ddp = build_strategy(hardware("ddp"))
    assert isinstance(ddp, DDPStrategy)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ddp, logger=False, enable_progress_bar=False)
    assert trainer.world_size == 2
    fsdp = build_strategy(hardware("fsdp"))
    assert isinstance(fsdp, FSDPStrategy) and Qwen3DecoderLayer in fsdp.kwargs["auto_wrap_policy"]._module_classes
    zero3 = hardware("deepspeed_zero3")
    assert isinstance(zero3.strategy, DeepSpeedConfig) and zero3.strategy.offload_optimizer is False
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        from ehrr1.errors import ConfigError

        with pytest.raises(ConfigError, match=r"\.\[gpu\]"):
            build_strategy(zero3)
    else:
        built = build_strategy(zero3, micro_batch_size=2)
        assert built.config["zero_optimization"]["stage"] == 3 and built.config["train_micro_batch_size_per_gpu"] == 2
    slurm = settings_of(HardwareConfig, compose_config("train", "hardware=slurm").hardware)
    assert isinstance(slurm.strategy, DDPConfig) and slurm.num_nodes == 2


def test_a_stored_config_gives_its_settings_back_with_the_schemas_of_what_they_build(tmp_path):
    from ehrr1.config import OpenAIBackendConfig, SynthesisConfig

    composed = compose_config("train", "hardware=ddp", "backend@synthesis.writer.backend=openai")
    OmegaConf.save(composed, tmp_path / "stored.yaml", resolve=True)
    stored = OmegaConf.load(tmp_path / "stored.yaml")  # plain: no schema, as a run's resolved_config.yaml
    hardware = settings_of(HardwareConfig, stored.hardware)
    assert isinstance(hardware.strategy, DDPConfig) and hardware.strategy.find_unused_parameters is False
    writer = settings_of(SynthesisConfig, stored.synthesis).writer.backend
    assert isinstance(writer, OpenAIBackendConfig) and writer.base_url == "http://localhost:8000/v1"


def test_resuming_a_run_stored_by_an_earlier_layout_is_one_message(tmp_path):
    old = OmegaConf.to_container(compose_config("train"))
    old.update(curriculum=["domain_adaptation"], logger={"kind": "csv"})  # how such runs stored them
    OmegaConf.save(OmegaConf.create(old), tmp_path / "resolved_config.yaml")
    with pytest.raises(ConfigError, match="stored by an earlier ehrr1"):
        train(compose_config("train", f"resume={tmp_path}"))
    old = OmegaConf.to_container(compose_config("train"))
    old["curriculum"]["rl"]["grpo"]["lr"] = 1e-4  # GRPO's own step, before the RL recipe set optim.lr
    OmegaConf.save(OmegaConf.create(old), tmp_path / "resolved_config.yaml")
    with pytest.raises(ConfigError, match="stored by an earlier ehrr1"):
        train(compose_config("train", f"resume={tmp_path}"))


def test_slurm_selects_the_submitit_launcher():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        from hydra import compose

        cfg = compose("train", overrides=["hardware=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.nodes == 2


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_entry_point("train.py", *args, cwd=cwd)


def test_cli_help_and_cfg_job(tmp_path):
    help_text = run_cli("--help", cwd=tmp_path)
    assert help_text.returncode == 0
    stages = (
        "curriculum, domain_adaptation, ehr_r1, ehr_r1_domain_adaptation, ehr_r1_reasoning, ehr_r1_rl, main, "
        "main_domain_adaptation, main_reasoning, main_rl, reasoning, rl"
    )
    assert f"stage: {stages}" in help_text.stdout
    assert "hardware: cpu, ddp, deepspeed_zero3, fsdp, gpu, slurm" in help_text.stdout
    job = run_cli("--cfg", "job", "stage=reasoning", "stage.optim.lr=0.5", cwd=tmp_path)
    assert job.returncode == 0 and "name: reasoning" in job.stdout and "lr: 0.5" in job.stdout
    job = run_cli("--cfg", "job", "+stages.rl.optim.lr=0.25", "~curriculum.reasoning", cwd=tmp_path)
    shown = OmegaConf.create(job.stdout)  # the curriculum's stages, composed before anything runs
    assert list(shown.curriculum) == ["domain_adaptation", "rl"] and shown.curriculum.rl.optim.lr == 1e-4
    assert shown.stages.rl.optim.lr == 0.25 and OmegaConf.is_missing(shown.stage.optim, "lr")  # none for every stage


def test_the_embedded_tokenizer_and_model_are_rebuilt_when_what_decides_them_changes(tmp_path):
    """Another vocabulary, other texts or another shape: the embedded tokenizer and model at the same place are
    built anew (never reused silently); the same settings reuse them."""
    from dataclasses import replace

    from ehrr1.models.factory import build_embedded_model
    from ehrr1.models.tokenizer import build_embedded_tokenizer, load_tokenizer

    texts = ["## Labotary Test Events\n| Sodium | 131 | mmol/L |", "## Admissions\n- EW EMER."] * 20
    where = tmp_path / "tokenizer"
    build_embedded_tokenizer(iter(texts), where, 300, {"patients": 2})
    small = (where / "tokenizer.json").read_bytes()
    build_embedded_tokenizer(iter(texts), where, 300, {"patients": 2})
    assert (where / "tokenizer.json").read_bytes() == small  # reused
    build_embedded_tokenizer(iter(texts), where, 320, {"patients": 2})
    vocabulary = lambda raw: len(json.loads(raw)["model"]["vocab"])  # noqa: E731
    assert vocabulary((where / "tokenizer.json").read_bytes()) > vocabulary(small)  # retrained
    model_dir = tmp_path / "model_seed0"
    build_embedded_model(TINY, load_tokenizer(where), model_dir, seed=0)
    assert OmegaConf.load(model_dir / "config.json").num_hidden_layers == 2
    build_embedded_model(replace(TINY, num_hidden_layers=3), load_tokenizer(where), model_dir, seed=0)
    assert OmegaConf.load(model_dir / "config.json").num_hidden_layers == 3


# --- data: masking, packing, order ----------------------------------------------------------------------------


def chat(user: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def test_only_assistant_tokens_are_labelled(tokenizer):
    plain, reasoning = encode_chats(
        tokenizer,
        [
            chat("## Labotary Test Events\nCreatinine 2.4\nWhich labs next?", "Creatinine\nPotassium"),
            chat("## Admissions\nEW EMER.\nWill the patient die?", "<think>\nlactate is high\n</think>\n\nYes"),
        ],
    )
    for encoded, answer, thinking in (
        (plain, "Creatinine\nPotassium", False),
        (reasoning, "<think>\nlactate is high\n</think>\n\nYes", True),
    ):
        labelled = [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE]
        assert tokenizer.decode(labelled) == answer + "<|im_end|>"
        n_prompt = encoded.labels.index(next(label for label in encoded.labels if label != IGNORE))
        assert all(label == IGNORE for label in encoded.labels[:n_prompt])
        prompt = generation_prompt(tokenizer, chat("x", "y")[:2], thinking)
        assert prompt.endswith("</think>\n\n") is (not thinking)
        assert tokenizer.decode(encoded.input_ids[:n_prompt]).endswith(
            "<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n")
        )
    closed = encode_chats(tokenizer, [chat("u", "Yes")], ThinkingSwitch.closed_think)[0]
    assert tokenizer.decode(closed.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\nYes<|im_end|>")


def test_loss_on_all_labels_every_token_and_the_suffix_switch_tags_the_user_turn(tokenizer):
    chats = [chat("## Labotary Test Events\nCreatinine 2.4\nWhich labs next?", "Creatinine")]
    every = encode_chats(tokenizer, chats, loss_on=LossOn.all)[0]
    assert every.labels == every.input_ids
    answer_only = encode_chats(tokenizer, chats)[0]
    assert answer_only.input_ids == every.input_ids and answer_only.n_labels < every.n_labels
    for thinking, tag in ((True, "/think"), (False, "/no_think")):
        prompt = generation_prompt(tokenizer, chats[0][:2], thinking, ThinkingSwitch.suffix)
        assert prompt.endswith(f"Which labs next?\n{tag}<|im_end|>\n<|im_start|>assistant\n")


def test_answer_weight_scales_the_assistant_tokens_in_the_loss(tokenizer):
    from ehrr1.config import OptimConfig, ScheduleConfig
    from ehrr1.training.sft import SFTModule

    chats = [chat("## Labotary Test Events\nCreatinine 2.4\nWill the patient die?", "yes"), chat("Sodium " * 9, "no")]
    plain = encode_chats(tokenizer, chats, loss_on=LossOn.all)
    heavy = encode_chats(tokenizer, chats, loss_on=LossOn.all, answer_weight=5.0)
    answer = len(plain[0].input_ids) - heavy[0].answer_start  # "yes" and the end of turn
    assert heavy[0].n_labels == plain[0].n_labels + 4 * answer
    assert "label_weights" not in collate([[e] for e in plain], tokenizer.pad_token_id, packed=False)
    model = init_random_model(TINY, tokenizer, seed=0).eval()
    module = SFTModule(lambda: model, OptimConfig(), ScheduleConfig())
    module.model = model

    def loss(examples) -> torch.Tensor:
        batch = collate([[e] for e in examples], tokenizer.pad_token_id, packed=False)
        batch["step_label_tokens"] = torch.tensor(sum(e.n_labels for e in examples))
        with torch.no_grad():
            return module.forward_loss(batch)

    per_token = []  # the cross-entropy of every labelled position, by hand
    for e in plain:
        with torch.no_grad():
            logits = model(torch.tensor([e.input_ids])).logits[0, :-1]
        per_token.append(torch.nn.functional.cross_entropy(logits, torch.tensor(e.labels[1:]), reduction="none"))
    weights = [torch.tensor([5.0 if i + 1 >= e.answer_start else 1.0 for i in range(len(e.labels) - 1)]) for e in heavy]
    expected = sum((c * w).sum() for c, w in zip(per_token, weights, strict=True)) / sum(e.n_labels for e in heavy)
    torch.testing.assert_close(loss(heavy), expected, rtol=1e-5, atol=1e-5)
    unweighted = sum(c.sum() for c in per_token) / sum(e.n_labels for e in plain)
    torch.testing.assert_close(loss(plain), unweighted, rtol=1e-5, atol=1e-5)  # HF's own loss, the same sum
    each = encode_chats(tokenizer, chats, loss_per=LossPer.example)  # answers only, each weighing 1
    assert [e.n_labels for e in each] == pytest.approx([1.0, 1.0])
    means = [c[e.answer_start - 1 :].mean() for c, e in zip(per_token, each, strict=True)]
    torch.testing.assert_close(loss(each), sum(means) / 2, rtol=1e-5, atol=1e-5)  # the mean of the examples'


def test_a_curriculum_gives_each_stage_its_recipe_then_every_stages_settings_then_its_own():
    """The layers, lowest first: the stage's recipe (the experiment's choice), the settings given for every stage,
    the stage's own; every merged stage is checked like any setting."""
    main = dict(curriculum_stages(compose_config("train")))
    assert list(main) == ["domain_adaptation", "reasoning", "rl"]  # in the curriculum's order
    assert [s.optim.lr for s in main.values()] == [3e-3, 3e-3, 1e-4]  # each recipe's own (conf/stage/main_*.yaml)
    assert main["rl"].grpo.micro_batch_size == 2 and main["rl"].schedule.scheduler.value == "constant"
    assert main["reasoning"].data == compose_config("train").synthesis.dir and main["rl"].name == "rl"
    cfg = compose_config("train", "stage.optim.lr=1e-3", "stage.gradient_clip=null", "+stages.rl.grpo.group_size=3")
    stages = dict(curriculum_stages(cfg))
    assert {s.optim.lr for s in stages.values()} == {1e-3} and {s.gradient_clip for s in stages.values()} == {None}
    assert cfg.curriculum.rl.optim.lr == 1e-4  # the recipe keeps its own; the setting for every stage wins
    assert stages["rl"].grpo.group_size == 3 and stages["reasoning"].grpo.group_size == 8  # one stage's own
    mixed = dict(curriculum_stages(compose_config("train", "stage.optim.lr=1e-3", "+stages.rl.optim.lr=2e-5")))
    assert [s.optim.lr for s in mixed.values()] == [1e-3, 1e-3, 2e-5]  # a stage's own wins over every stage's
    assert cfg.stage.name == "main"
    with pytest.raises(ConfigError, match="stage=curriculum has no stages left to run"):
        validate(
            compose_config(
                "train", "stage=curriculum", "~curriculum.domain_adaptation", "~curriculum.reasoning", "~curriculum.rl"
            )
        )
    with pytest.raises(ConfigError, match=r"stages.rll: no stage 'rll' runs; did you mean 'rl'\?"):
        validate(compose_config("train", "+stages.rll.epochs=2"))
    with pytest.raises(ConfigError, match=r"stages.rl.optim.lrr: Key 'lrr' not in 'OptimConfig'"):
        validate(compose_config("train", "+stages.rl.optim.lrr=2"))
    with pytest.raises(ConfigError, match=r"^invalid setting: stages.rl.grpo.group_size must be >= 2, got 1$"):
        validate(compose_config("train", "+stages.rl.grpo.group_size=1"))  # one completion: no group to compare
    with pytest.raises(ConfigError, match=r"^invalid setting: stage.grpo.group_size must be >= 2, got 1$"):
        validate(compose_config("train", "stage.grpo.group_size=1"))  # said once, where it was set
    one = dict(curriculum_stages(compose_config("train", "stage=rl", "+stages.rl.epochs=2")))
    assert list(one) == ["rl"] and one["rl"].epochs == 2


def test_experiments_choose_recipes_and_leave_the_settings_for_every_stage_to_the_user():
    import yaml

    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        preset = yaml.safe_load(path.read_text())
        assert not {"stage", "stages"} & set(preset), f"{path.name} sets stage: a recipe's settings go in its YAML"


def test_the_paper_presets_compose_the_references_recipe():
    cfg = compose_config("train", "experiment=ehr_r1_1.7b")
    assert cfg.stage.name == "ehr_r1" and list(cfg.curriculum) == ["domain_adaptation", "reasoning", "rl"]
    assert [s.max_seq_len for s in cfg.curriculum.values()] == [8192, 12288, None]  # conf/stage/ehr_r1_*
    assert cfg.model.thinking_switch == ThinkingSwitch.suffix
    first = compose_config("train", "experiment=ehr_r1_1.7b", "stage=ehr_r1_domain_adaptation").stage
    assert (first.name, first.loss_on, first.max_seq_len, first.epochs) == ("domain_adaptation", "all", 8192, 1)
    second = compose_config("train", "experiment=ehr_r1_8b", "stage=ehr_r1_reasoning").stage
    assert (second.name, second.loss_on, second.max_seq_len, second.epochs) == ("reasoning", "all", 12288, 5)
    third = compose_config("train", "experiment=ehr_r1_72b", "stage=ehr_r1_rl").stage
    assert (third.name, third.optim.lr, third.grpo.group_size, third.grpo.max_completion_tokens) == (
        "rl",
        2.0e-6,
        16,
        2048,
    )
    assert (third.grpo.rewards.format, third.grpo.rewards.answer_metric) == (0.0, "set_f1")
    from ehrr1.config import StageConfig

    assert StageConfig().loss_on == "completion"  # ours stays the schema's default
    main_job = compose_config("train").curriculum.domain_adaptation  # a random model: the EHR too, answers weighted
    assert (main_job.loss_on, main_job.answer_weight) == ("all", 50)


def test_pack_keeps_every_example_once_within_the_budget():
    lengths = [5, 9, 3, 7, 2, 8, 1, 6, 4, 10] * 5
    bins = pack(lengths, 12, list(range(len(lengths))))
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 12 for b in bins)
    assert len(bins) <= sum(lengths) // 12 + 6  # nearly full bins


def test_padded_rows_group_similar_lengths_within_windows():
    lengths = [(i * 37) % 101 for i in range(300)]
    order = list(range(300))
    rows = group_by_length(lengths, order, micro_batch_size=2, window=10)
    assert sorted(r[0] for r in rows) == order and all(len(r) == 1 for r in rows)
    for start in range(0, 300, 20):  # each window of 10 micro-batches is sorted, and holds its own examples
        window = [lengths[r[0]] for r in rows[start : start + 20]]
        assert window == sorted(window) and {r[0] for r in rows[start : start + 20]} == set(order[start : start + 20])


@pytest.mark.parametrize("attention", ["sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.slow)])
def test_packed_loss_equals_unpacked_loss(tokenizer, attention):
    model = init_random_model(TINY, tokenizer, seed=0).eval()
    model.config._attn_implementation = attention
    examples = encode_chats(
        tokenizer, [chat("first patient " * 6, "Yes"), chat("second " * 11, "Creatinine\nSodium"), chat("third", "No")]
    )

    def summed_loss(batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = model(
                **{k: batch[k] for k in ("input_ids", "labels", "position_ids", "attention_mask") if k in batch},
                num_items_in_batch=torch.tensor(1),
                use_cache=False,
            )
        return out.loss, out.logits

    alone = [summed_loss(collate([[e]], tokenizer.pad_token_id, packed=True)) for e in examples]
    packed_loss, packed_logits = summed_loss(collate([examples], tokenizer.pad_token_id, packed=True))
    padded_loss, _ = summed_loss(collate([[e] for e in examples], tokenizer.pad_token_id, packed=False))
    expected = sum(loss for loss, _ in alone)
    torch.testing.assert_close(packed_loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_loss, expected, rtol=1e-5, atol=1e-5)
    start = len(examples[0].input_ids)  # the second example sees only itself
    torch.testing.assert_close(
        packed_logits[0, start : start + len(examples[1].input_ids)], alone[1][1][0], rtol=1e-4, atol=1e-4
    )


def test_a_batchs_bookkeeping_stays_on_the_host_so_reading_it_never_waits_for_the_gpu():
    examples = [Encoded([1] * (i + 2), [IGNORE] + [1] * (i + 1)) for i in range(4)]
    data = MicroBatches(examples, [[i] for i in range(4)], micro_batch_size=2, pad_id=0, packed=False)
    batch = DataLoader(data, batch_size=None, sampler=[(1, 3, 7, 9)]).__iter__().__next__()
    moved = apply_to_collection(batch, torch.Tensor, lambda t: t.to("meta"))  # as Lightning moves it to a device
    assert (moved["epoch"], moved["position"], moved["n_tokens"]) == (3, 7, 4 + 5)  # ints: no .item() on a GPU
    assert moved["input_ids"].device.type == "meta" and moved["step_label_tokens"].device.type == "meta"


def test_epoch_order_is_seeded_sharded_and_resumable():
    examples = [Encoded([1] * (i + 2), [IGNORE] + [1] * (i + 1)) for i in range(20)]
    data = MicroBatches(examples, [[i] for i in range(20)], micro_batch_size=2, pad_id=0, packed=True)
    order = EpochOrder(data, seed=3, grad_accum=2)
    first = list(order)
    assert first == list(EpochOrder(data, seed=3, grad_accum=2)) and len(first) == 10
    order.set_epoch(1)
    assert [i for i, *_ in order] != [i for i, *_ in first]
    group = [i for i, _, position, _ in first if position in (2, 3)]
    assert first[2][3] == first[3][3] == sum(data.label_tokens[i] for i in group)
    ranks = [list(EpochOrder(data, seed=3, grad_accum=2, rank=r, world_size=2)) for r in (0, 1)]
    assert not {i for i, *_ in ranks[0]} & {i for i, *_ in ranks[1]} and len(ranks[0]) == len(ranks[1]) == 5
    resumed = EpochOrder(data, seed=3, grad_accum=2)
    resumed.resume(0, 6)
    assert list(resumed) == first[6:]
    assert list(resumed) == first  # the resume position applies once


# --- training end to end ---------------------------------------------------------------------------------------


def test_stage_trains_reproducibly_and_saves_checkpoints(small_data_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = train_config(small_data_root, tmp_path / name, "stage=domain_adaptation")
        runs.append(train(cfg)[0])
    a, b = runs
    assert a.status == "trained" and a.steps == 4
    curve = losses(Path(a.directory))
    assert curve == losses(Path(b.directory)) and len([r for r in curve if r[1]]) == 4  # same config, same curve
    assert a.val_loss_after < a.val_loss_before
    for k, tensor in weights(Path(a.hf_dir)).items():
        assert torch.equal(tensor, weights(Path(b.hf_dir))[k])
    stage_dir = Path(a.directory)
    assert (stage_dir / "checkpoints" / "last.ckpt").exists() and (stage_dir / "summary.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(a.hf_dir)
    assert (
        model.config.model_type == "qwen3"
        and "enable_thinking" in AutoTokenizer.from_pretrained(a.hf_dir).chat_template
    )
    stored = OmegaConf.load(stage_dir / "config.yaml")
    assert stored.stage.name == "domain_adaptation" and stored.run_dir == str(tmp_path / "a")


def test_the_evaluation_after_training_is_composed_as_evaluate_py_would_compose_it(tmp_path, monkeypatch):
    """The evaluation after ``train.py seed=3`` is ``evaluate.py train_run=<run>`` with the run's data settings
    (the same bootstrap draws and candidate lists), and keeps its record in the run's evaluation/ folder."""
    from ehrr1.evaluation import evaluate as evaluation

    taken = []
    monkeypatch.setattr(evaluation, "evaluate", lambda cfg: taken.append(cfg) or {})
    trained = compose_config("train", "seed=3", "selection.seed=2", "logger=none")
    evaluation.after_training(trained, tmp_path)
    alone = compose_config(
        "evaluate", f"train_run={tmp_path}", "selection.seed=2", f"output_dir={tmp_path / 'evaluation'}"
    )
    for key in ("seed", "bootstrap", "selection", "model", "task_mix", "split", "baselines", "logger", "output_dir"):
        assert OmegaConf.to_container(taken[0], resolve=True)[key] == OmegaConf.to_container(alone, resolve=True)[key]


@pytest.mark.slow
def test_a_stage_records_the_data_it_read_not_what_is_there_when_it_ends(small_data_root, tmp_path, monkeypatch):
    """Another run may rebuild the shared data while a stage trains: the stage's record is what it read."""
    from ehrr1.training.sft import SFTModule

    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    record = next((data_root / "instructions").glob("*/smoke/tiny")) / "built_with.json"

    starts = SFTModule.on_train_start

    def rebuilt_meanwhile(module):
        settings = json.loads(record.read_text())
        record.write_text(json.dumps({**settings, "selection": {**settings["selection"], "seed": 99}}))
        starts(module)

    monkeypatch.setattr(SFTModule, "on_train_start", rebuilt_meanwhile)
    result = train(train_config(data_root, tmp_path / "run", "stage=domain_adaptation", "stage.max_steps=1"))[0]
    assert json.loads(record.read_text())["selection"]["seed"] == 99
    assert result.trained_on["settings"]["selection"]["seed"] == 0


@pytest.mark.slow
def test_a_run_dir_holds_one_run(small_data_root, tmp_path):
    """Started again with its own config, a run continues (its finished stage reused); with another config it is
    refused, since its record would then describe stages trained otherwise."""
    first = train(train_config(small_data_root, tmp_path, "stage=domain_adaptation", "stage.max_steps=1"))[0]
    again = train(train_config(small_data_root, tmp_path, "stage=domain_adaptation", "stage.max_steps=1"))[0]
    assert (first.status, again.status) == ("trained", "done")
    other = train_config(
        small_data_root, tmp_path, "stage=domain_adaptation", "stage.max_steps=1", "stage.optim.lr=0.1"
    )
    with pytest.raises(ConfigError, match=r"holds a run started with other settings \(stage.optim.lr\): continue it"):
        train(other)
    assert OmegaConf.load(tmp_path / "resolved_config.yaml").stage.optim.lr != 1  # the record is untouched


@pytest.mark.slow
def test_curriculum_chains_stages_and_its_stored_config_reproduces_it(small_data_root, tmp_path, capsys):
    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    reasoning = data_root / "reasoning" / "synthetic_n60_seed0" / "smoke" / "tiny"  # built by the run
    overrides = [
        f"data_root={data_root}",
        f"run_dir={tmp_path / 'run'}",
        *SMALL_DATA,
        *QUICK,
        "stage.max_steps=2",
        "stage.optim.lr=1e-3",
        "evaluate.enabled=true",
        "evaluate.limit=1",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        from hydra import compose

        results = train(compose("train", overrides=overrides))
    last_lines = capsys.readouterr().out.strip().splitlines()[-3:]  # what a person reads at the end
    assert last_lines[0].startswith("Trained ") and "domain_adaptation, reasoning, rl" in last_lines[0]
    assert last_lines[1].startswith("Scored: decision-making macro ") and "tabular" in last_lines[1]
    assert last_lines[2].startswith("Report ") and "report.md" in last_lines[2] and "scores.png" in last_lines[2]
    first, second, third = results
    assert [r.status for r in results] == ["trained", "trained", "trained"]
    assert second.init == first.hf_dir and third.init == second.hf_dir and third.reward_first is not None
    stored = OmegaConf.load(tmp_path / "run" / "resolved_config.yaml")
    stored_stages = dict(curriculum_stages(stored))
    assert stored_stages["domain_adaptation"].optim.lr == stored_stages["reasoning"].optim.lr == 1e-3
    assert stored_stages["reasoning"].data == str(reasoning)
    written = [json.loads(line) for line in (reasoning / "train.jsonl").read_text().splitlines()]
    chains = [r for r in written if r["messages"][-1]["content"].startswith("<think>")]
    assert chains and all(r["messages"][-1]["content"].startswith("<think>\n## Extraction") for r in chains)
    assert len(written) > len(chains)  # synthesis=smoke: the plain records beside the chains
    evaluation = json.loads((tmp_path / "run" / "evaluation" / "report.json").read_text())
    assert evaluation["run"]["model"] == third.hf_dir and {t["kind"] for t in evaluation["tasks"]} == {
        "decision",
        "risk",
    }
    stored.run_dir = str(tmp_path / "rerun")
    again = train(stored)  # no Hydra needed: the stored config holds every stage
    curves = [losses(Path(r.directory)) for r in results[:2]]
    assert all(curves) and [losses(Path(r.directory)) for r in again[:2]] == curves
    assert again[2].reward_first == third.reward_first and again[2].reward_last == third.reward_last


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(small_data_root, tmp_path):
    args = [
        f"data_root={small_data_root}",
        *SMALL_DATA,
        *QUICK,
        "stage=domain_adaptation",
        "stage.max_steps=40",
        "stage.checkpoint_every_n_steps=1",
        "stage.micro_batch_size=1",
        "stage.packing=on",  # the packed path, end to end
    ]
    whole = run_cli(*args, f"run_dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    stage_dir = run / "stages" / "1_domain_adaptation"
    kill_after_first_checkpoint([*args, f"run_dir={run}"], tmp_path, stage_dir, settle_s=1.0)  # a few more steps
    resumed = run_cli(f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    whole_dir = tmp_path / "whole" / "stages" / "1_domain_adaptation"
    for k, tensor in weights(whole_dir / "hf").items():  # the same weights as a run never interrupted
        assert torch.equal(tensor, weights(stage_dir / "hf")[k]), k
    steps = [int(step) for step, loss, _ in losses(stage_dir) if loss]
    assert steps == sorted(set(steps)) and max(steps) == 39  # no optimiser step logged twice
    first_attempt = [int(s) for s, loss, _ in losses(stage_dir)[: len(steps)] if loss]
    assert len(list((stage_dir / "csv").glob("version_*"))) == 2 and min(steps) < 39 and first_attempt


@pytest.mark.slow
def test_wandb_offline_logs_numbers_and_config_but_no_ehr_text(small_data_root, tmp_path, wandb_offline):
    """A stage's curves and the scores of the evaluation after training reach the run's W&B group: every score
    with its interval and both baselines, the macro lines, the tables and the plots; never EHR text."""
    overrides = ["stage=domain_adaptation", "logger=wandb", "evaluate.enabled=true", "evaluate.limit=4"]
    result = train(train_config(small_data_root, tmp_path / "run", *overrides, "evaluate.max_tokens=4"))[0]
    _, logged = offline_wandb_run(Path(result.directory))
    assert b"train/loss" in logged and b"val/loss" in logged and b"domain_adaptation" in logged
    run, scored = offline_wandb_run(tmp_path / "run" / "evaluation")
    report = json.loads((tmp_path / "run" / "evaluation" / "report.json").read_text())
    task = next(t for t in report["tasks"] if t["kind"] == "risk" and None not in (t["ci_low"], t["tabular"]))
    for key in ("", "/ci_low", "/most_frequent", "/tabular"):
        assert f"{task['task']}/auroc{key}".encode() in scored
    assert b"macro/risk/ci_high" in scored and b"macro/decision/tabular" in scored and b"run/evaluation" in scored
    assert {p.name.split("_")[0] for p in run.rglob("*.table.json")} == {"report", "macro"}
    assert sorted(p.name.split("_")[0] for p in (run / "files" / "media" / "images" / "plots").glob("*.png")) == [
        "roc",
        "scores",
    ]
    export = next((small_data_root / "instructions").glob("*/smoke/tiny"))
    record = json.loads((export / "train.jsonl").read_text().splitlines()[0])
    for text in (record["messages"][1]["content"].split("\n\n")[1], record["target"][0]):
        assert text.encode() not in logged and text.encode() not in scored


@pytest.mark.slow
def test_multirun_sweep_gives_each_job_its_directory_and_config_that_reruns_it(small_data_root, tmp_path):
    """Each job's Hydra record is the training config it was composed from, also after the evaluation that
    ends the run (which keeps its own config in evaluation/), and re-running from it gives the same run."""
    args = [f"data_root={small_data_root}", *SMALL_DATA, *QUICK, "stage=domain_adaptation", "stage.max_steps=2"]
    evaluation = ["evaluate.enabled=true", "evaluate.limit=1", "evaluate.max_tokens=4"]
    sweep = run_cli(
        "-m", *args, *evaluation, "stage.optim.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    jobs = [tmp_path / "sweep" / str(n) for n in (0, 1)]
    records = [OmegaConf.load(j / ".hydra" / "config.yaml") for j in jobs]
    assert [r.stage.optim.lr for r in records] == [1e-3, 2e-3] and all("curriculum" in r for r in records)
    assert OmegaConf.load(jobs[0] / "resolved_config.yaml").stage.optim.lr == 1e-3
    assert OmegaConf.load(jobs[0] / "evaluation" / "resolved_config.yaml").train_run == str(jobs[0])
    curves = [losses(j / "stages" / "1_domain_adaptation") for j in jobs]
    assert all(curves) and curves[0] != curves[1]
    rerun = run_cli(
        "--config-path",
        str(jobs[0] / ".hydra"),
        "--config-name",
        "config",
        f"hydra.run.dir={tmp_path / 'rerun'}",
        cwd=tmp_path,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert losses(tmp_path / "rerun" / "stages" / "1_domain_adaptation") == curves[0]
    reports = [json.loads((d / "evaluation" / "report.json").read_text()) for d in (jobs[0], tmp_path / "rerun")]
    assert reports[0]["tasks"] == reports[1]["tasks"]


@pytest.mark.slow
def test_stale_training_data_is_rebuilt_and_scored_only_on_its_own_split(small_data_root, tmp_path):
    """Training data goes through evaluation's settings check: another selection seed over existing data
    rebuilds it before stage 1 trains (so no test patient of the new split is a training patient), the stage
    records what it trained on, and evaluating a run on a split drawn otherwise is refused."""
    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)  # built with selection.seed=0
    export = data_root / "instructions" / "synthetic_n60_seed0" / "smoke" / "tiny"
    first = train(train_config(data_root, tmp_path / "seed0", "stage=domain_adaptation", "stage.max_steps=1"))[0]
    assert json.loads((export / "built_with.json").read_text())["selection"]["seed"] == 0
    second = train(
        train_config(data_root, tmp_path / "seed1", "stage=domain_adaptation", "stage.max_steps=1", "selection.seed=1")
    )[0]
    assert json.loads((export / "built_with.json").read_text())["selection"]["seed"] == 1  # rebuilt before training
    assert second.trained_on["settings"]["selection"]["seed"] == 1
    assert second.trained_on["fingerprint"] != first.trained_on["fingerprint"]
    stored = json.loads((tmp_path / "seed0" / "stages" / "1_domain_adaptation" / "summary.json").read_text())
    assert stored["trained_on"]["settings"]["selection"]["seed"] == 0
    done = run_entry_point(
        "evaluate.py", f"data_root={data_root}", *SMALL_DATA, "selection.seed=1", f"train_run={tmp_path / 'seed0'}",
        f"output_dir={tmp_path / 'eval'}", "limit=1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "stage domain_adaptation trained on patients split with selection.seed=0" in done.stderr
    assert not (tmp_path / "eval" / "results.jsonl").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(small_data_root, tmp_path):
    """hardware=ddp for real: Lightning launches a second process; ranks share the data, rank 0 exports."""
    args = [
        f"data_root={small_data_root}",
        *SMALL_DATA,
        *QUICK,
        "stage=domain_adaptation",
        f"run_dir={tmp_path}",
        "hardware=ddp",
        "hardware.accelerator=cpu",
        "hardware.devices=2",
        "hardware.precision=32-true",
    ]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "stages" / "1_domain_adaptation" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["val_loss_after"] < summary["val_loss_before"]
    assert (tmp_path / "stages" / "1_domain_adaptation" / "hf" / "model.safetensors").exists()
