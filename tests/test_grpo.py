"""GRPO (curriculum stage 3): the loss against TRL's on identical tensors, advantages, masks, rewards, learning."""

from __future__ import annotations

import importlib.util
import json
import math
import types
from collections import defaultdict

import pytest
import torch
from safetensors.torch import load_file

from ehrr1.config import (
    AnswerMetric,
    GRPOConfig,
    LossType,
    OptimConfig,
    RewardScale,
    RewardWeights,
    ScheduleConfig,
    ThinkingSwitch,
)
from ehrr1.models.factory import init_random_model
from ehrr1.training.grpo import GRPOModule
from ehrr1.training.grpo_loss import completion_logps, group_advantages, grpo_loss
from ehrr1.training.rewards import answer_reward, format_reward, rewards
from tests.support import (
    SMALL_DATA,
    fit_grpo,
    kill_after_first_checkpoint,
    rl_prompts,
    run_entry_point,
    tiny_architecture,
)

# TRL is a dev/test dependency only: without it just the tests that compare with it are skipped
requires_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL not installed")


def trl_loss(logps, old, advantages, mask, ref, beta, loss_type, epsilon_low, epsilon_high):
    """TRL's GRPOTrainer._compute_loss run on given tensors (its model call replaced by ``logps``)."""
    import trl

    accelerator = types.SimpleNamespace(
        num_processes=1,
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
        sync_gradients=True,
    )
    trainer = types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=epsilon_low,
        epsilon_high=epsilon_high,
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=logps.size(1),
        accelerator=accelerator,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(logps.size(0), 1, dtype=torch.long),
        "prompt_mask": torch.ones(logps.size(0), 1),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return trl.GRPOTrainer._compute_loss(trainer, None, inputs)


@requires_trl
@pytest.mark.parametrize("loss_type", list(LossType))
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradients_equal_trl_grpo_trainer(loss_type, beta):
    generator = torch.Generator().manual_seed(0)
    b, t = 8, 7
    base = torch.randn(b, t, generator=generator) * 0.3 - 1
    old = base + torch.randn(b, t, generator=generator) * 0.3  # ratios beyond both clipping bounds
    ref = base + torch.randn(b, t, generator=generator) * 0.1
    mask = (torch.rand(b, t, generator=generator) > 0.3).float()
    advantages = torch.randn(b, generator=generator)
    ours_logps, trl_logps = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours, stats = grpo_loss(
        ours_logps,
        old,
        advantages,
        mask,
        epsilon_low=0.2,
        epsilon_high=0.28,
        beta=beta,
        ref_logps=ref,
        loss_type=loss_type,
        max_completion_length=t,
    )
    theirs = trl_loss(trl_logps, old, advantages, mask, ref, beta, loss_type.value, 0.2, 0.28)
    ours.backward()
    theirs.backward()
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-6)
    assert torch.allclose(ours_logps.grad, trl_logps.grad, atol=1e-7)
    assert 0 < float(stats["clip_fraction"]) < 1 and (float(stats["kl"]) > 0) == (beta > 0)


@requires_trl
def test_advantages_are_group_normalised_and_zero_for_equal_rewards():
    from trl.trainer.utils import nanstd

    rewards_ = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0])
    group = group_advantages(rewards_, 4, RewardScale.group)
    assert torch.equal(group[4:], torch.zeros(4))  # equal rewards in a group: no signal
    grouped = rewards_.view(-1, 4)
    expected = (grouped - grouped.mean(1, keepdim=True)) / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)
    assert torch.allclose(group, expected.view(-1))
    batch = group_advantages(rewards_, 4, RewardScale.batch)
    assert torch.allclose(batch, (rewards_ - grouped.mean(1).repeat_interleave(4)) / (nanstd(rewards_) + 1e-4))
    assert torch.allclose(group_advantages(rewards_, 4, RewardScale.none)[:4], torch.tensor([0.5, -0.5, 0, 0]))


def test_masked_positions_do_not_change_loss_or_gradients():
    generator = torch.Generator().manual_seed(1)
    logps = torch.randn(4, 6, generator=generator)
    old = logps + 0.1
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 4, dtype=torch.float32)
    advantages = torch.tensor([1.0, -1.0, 0.5, 0.0])
    clean = logps.clone().requires_grad_()
    noisy = logps.clone()
    noisy[:, 3:] = 50.0  # garbage in padding
    noisy.requires_grad_()
    for x in (clean, noisy):
        loss, _ = grpo_loss(x, old, advantages, mask, beta=0.1, ref_logps=old)
        loss.backward()
    assert torch.allclose(clean.grad, noisy.grad) and torch.equal(noisy.grad[:, 3:], torch.zeros(4, 3))


def test_completion_logps_ignore_prompt_padding(tokenizer):
    model = init_random_model(tiny_architecture(), tokenizer, seed=0).eval()
    prompt, completion = [5, 6, 7, 8], [9, 10, 11]
    alone = torch.tensor([prompt + completion])
    padded = torch.tensor([[0, 0] + prompt + completion])
    attention = torch.tensor([[0, 0] + [1] * 7])
    with torch.no_grad():
        a = completion_logps(model, alone, torch.ones_like(alone), 3)
        b = completion_logps(model, padded, attention, 3)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_rollouts_prefill_each_prompt_once_and_sample_what_one_prefill_per_sample_would(
    tokenizer, gradient_checkpointing
):
    from ehrr1.backends import SamplingParams
    from ehrr1.backends.hf import HFBackend

    model = init_random_model(tiny_architecture(), tokenizer, seed=0)
    if gradient_checkpointing:  # as a training stage leaves the policy; the rollout puts it in eval mode
        model.gradient_checkpointing_enable()
    model.eval()
    prompts = ["## Patient\nAge: 71\n" * 6, "short prompt", "## Labs\nCreatinine 2.3 mg/dL\n" * 3]
    sampling = SamplingParams(temperature=1.0, top_p=0.9, top_k=20, max_tokens=8, seed=3)
    shapes: list[tuple[int, int]] = []
    hook = model.model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple((kwargs.get("input_ids") if not args else args[0]).shape)),
        with_kwargs=True,
    )
    try:
        ours = HFBackend.around(model, tokenizer).sample_ids(prompts, sampling, n=4)
    finally:
        hook.remove()
    assert [s for s in shapes if s[1] > 1] == [(3, shapes[0][1])]  # one prefill, of the 3 prompts, not 12
    assert all(s == (12, 1) for s in shapes[1:])  # then one token at a time for every sample
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(3)
    with torch.no_grad():  # the same seeded draws, with one prefill per sample
        plain = model.generate(
            **encoded,
            do_sample=True,
            temperature=1.0,
            top_p=0.9,
            top_k=20,
            max_new_tokens=8,
            num_return_sequences=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    eos = tokenizer.eos_token_id
    expected = [r[: r.index(eos) + 1] if eos in r else r for r in plain[:, encoded["input_ids"].shape[1] :].tolist()]
    assert ours == expected


def test_rewards_follow_the_spec_and_never_raise():
    decision = {"metric": "f1", "target": ["Creatinine", "Sodium"], "kind": "decision"}
    chain = "<think>\n## Extraction\n- AKI\n## Reasoning\n- kidneys\n## Final Results\nCreatinine\n</think>\n\n"
    assert answer_reward(chain + "Creatinine\nSodium", "f1", decision["target"]) == 1.0
    assert answer_reward("Creatinine\nSodium", "f1", decision["target"]) == 0.0  # no closed think block
    assert answer_reward(chain + "Creatinine", "f1", decision["target"]) == pytest.approx(2 / 3)
    assert format_reward(chain + "x") == 1.0 and format_reward("<think>\nhmm\n</think>\n\nx") == -1.0
    assert format_reward(chain.replace("- kidneys", "- AKI") + "x") == -1.0  # a repeated line
    risk = {"metric": "auroc", "target": ["yes"], "kind": "risk"}
    assert rewards("<think>\n</think>\n\nYes", risk, RewardWeights(answer=2.0, format=0.5)) == {
        "answer": 1.0,
        "format": -1.0,
        "total": 1.5,
    }
    for garbage in (None, b"\xff\xfe</think>", "", "</think>" * 10_000, "<think>" + "a\n" * 100_000):
        out = rewards(garbage, decision, RewardWeights())
        assert out["answer"] == 0.0 and out["format"] == -1.0
    # asked to answer at once (thinking off): the answer is scored as evaluation scores it, no format reward
    assert rewards("yes", risk, RewardWeights(), thinking=False) == {"answer": 1.0, "format": 0.0, "total": 1.0}
    assert rewards("<think>\n\n</think>\n\nno", risk, RewardWeights(), thinking=False)["answer"] == 0.0


@pytest.mark.parametrize("switch", list(ThinkingSwitch))
def test_rl_asks_each_record_as_sft_trained_it_and_evaluation_asks_it(tokenizer, switch, monkeypatch):
    """One prompt per record and mode: RL's rollout prompt is the prefix SFT trained on and the prompt evaluation
    sends (decision tasks reasoning first, risk tasks answering at once), for every thinking switch; a risk
    completion answering yes at once is rewarded as evaluation would score it."""
    from ehrr1.backends import SamplingParams
    from ehrr1.evaluation.harness import build_requests
    from ehrr1.training.data import encode_chats

    chain = "<think>\n## Extraction\n- a\n## Reasoning\n- b\n## Final Results\nx\n</think>\n\nx"
    decision = {**rl_prompts(1, kind="decision")[0], "id": "d", "target": ["x"]}
    risk = {**rl_prompts(1, kind="risk")[0], "id": "r", "target": ["yes"]}
    records = [decision, risk]
    answers = [chain, "yes"]
    chats = [[*r["messages"], {"role": "assistant", "content": a}] for r, a in zip(records, answers, strict=True)]
    sft = encode_chats(tokenizer, chats, switch)
    trained = [tokenizer.decode(e.input_ids[: e.answer_start]) for e in sft]
    asked = build_requests(records, tokenizer, "m", SamplingParams(), thinking=True, switch=switch)
    assert [q.one_token for q in asked] == [False, True]

    seen: dict[str, list] = {}

    def rollout(self, prompts, step):  # the policy's sampling, replaced by fixed completions: yes at once
        seen["prompts"] = prompts
        return [tokenizer("yes", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]] * (2 * len(prompts))

    monkeypatch.setattr(GRPOModule, "rollout", rollout)
    module = GRPOModule(
        lambda: init_random_model(tiny_architecture(), tokenizer, seed=0),
        tokenizer,
        GRPOConfig(prompts_per_step=2, group_size=2, max_completion_tokens=4),
        OptimConfig(lr=1e-3),
        ScheduleConfig(),
        switch=switch,
    )
    fit_grpo(module, records, max_steps=1)
    order = [0, 1] if seen["prompts"][0] == trained[0] else [1, 0]  # the prompt order is a seeded shuffle
    assert seen["prompts"] == [trained[i] for i in order] == [asked[i].prompt for i in order]
    assert module.reward_history == [pytest.approx(0.5 * -1 + 0.5 * 1)]  # decision: no </think>; risk: yes


def test_the_lr_schedule_spans_every_optimiser_step_of_several_iterations(tokenizer):
    """With num_iterations updates per generation batch, the cosine ends at the last update, not halfway."""
    lrs: list[float] = []
    module = GRPOModule(
        lambda: init_random_model(tiny_architecture(), tokenizer, seed=0),
        tokenizer,
        GRPOConfig(prompts_per_step=2, group_size=2, max_completion_tokens=2, num_iterations=2),
        OptimConfig(lr=1.0),
        ScheduleConfig(scheduler="cosine", warmup_ratio=0.0),
        reward_fn=lambda texts, records, ids: (
            lrs.append(module.optimizers().param_groups[0]["lr"]) or [{"total": float(len(c))} for c in ids]
        ),
    )
    import lightning.pytorch as pl

    from ehrr1.training.grpo import PromptDataModule

    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=PromptDataModule(rl_prompts(8), 2, 0))
    assert trainer.global_step == 8  # 4 generation batches x 2 updates
    cosine = [0.5 * (1 + math.cos(math.pi * step / 8)) for step in (0, 2, 4, 6)]  # the lr before each batch
    assert lrs == pytest.approx(cosine)


def test_the_references_reward_is_the_f1_of_the_answer_lines_for_every_decision_task():
    chain = "<think>\n## Final Results\nCreatinine\n</think>\n\n"
    recall_task = {"metric": "recall", "target": ["Creatinine", "Sodium"], "kind": "decision"}
    reference = RewardWeights(format=0.0, answer_metric=AnswerMetric.set_f1)
    assert rewards(chain + "Creatinine\nLactate\nUrea", recall_task, RewardWeights())["answer"] == 0.5  # recall
    assert rewards(chain + "Creatinine\nLactate\nUrea", recall_task, reference) == {
        "answer": pytest.approx(0.4),  # F1: precision 1/3, recall 1/2
        "format": -1.0,
        "total": pytest.approx(0.4),  # no format reward
    }
    risk = {"metric": "auroc", "target": ["no"], "kind": "risk"}
    assert rewards("<think>\n</think>\n\nno", risk, reference)["answer"] == 1.0  # risk keeps the yes/no


@pytest.mark.slow
def test_reward_for_a_fixed_answer_rises_over_cpu_steps(tokenizer):
    favoured = set(range(0, len(tokenizer), 8))  # the "answer": tokens from a fixed eighth of the vocabulary

    def reward_fn(texts, records, ids):
        return [{"total": sum(t in favoured for t in c) / max(1, len(c))} for c in ids]

    records = rl_prompts(64, kind="decision", text="Patient {i}: creatinine {i}")
    settings = GRPOConfig(prompts_per_step=2, group_size=8, max_completion_tokens=16, temperature=1.0, top_k=0)
    module = GRPOModule(
        lambda: init_random_model(tiny_architecture(), tokenizer, seed=0),
        tokenizer,
        settings,
        OptimConfig(lr=3e-2),
        ScheduleConfig(scheduler="constant", warmup_ratio=0.0),
        micro_batch_size=16,
        reward_fn=reward_fn,
    )
    fit_grpo(module, records, max_steps=30)
    curve = module.reward_history
    assert len(curve) == 30
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert first < 0.25 and last > 0.6, curve


@pytest.mark.slow
def test_killed_rl_stage_resumes_to_the_weights_of_an_uninterrupted_run(small_data_root, tmp_path):
    args = [
        f"data_root={small_data_root}",
        *SMALL_DATA,
        "stage=rl",
        "stage.max_steps=8",
        "stage.checkpoint_every_n_steps=1",
        "stage.log_every_n_steps=1",
        "stage.optim.lr=1e-3",
        "stage.grpo.group_size=2",
        "stage.grpo.max_completion_tokens=8",
        "evaluate.enabled=false",
    ]
    whole = run_entry_point("train.py", *args, f"run_dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    stage_dir = run / "stages" / "1_rl"
    kill_after_first_checkpoint([*args, f"run_dir={run}"], tmp_path, stage_dir, settle_s=0.5)
    resumed = run_entry_point("train.py", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = load_file(tmp_path / "whole" / "stages" / "1_rl" / "hf" / "model.safetensors")
    for name, tensor in load_file(stage_dir / "hf" / "model.safetensors").items():
        assert torch.equal(tensor, reference[name]), name
    summary = json.loads((stage_dir / "summary.json").read_text())
    expected = json.loads((tmp_path / "whole" / "stages" / "1_rl" / "summary.json").read_text())
    assert summary["steps"] == expected["steps"] == 8 and summary["reward_last"] == expected["reward_last"]


def test_lora_policy_with_reference_kl_trains_only_the_adapters(tokenizer):
    records = rl_prompts(8)
    settings = GRPOConfig(prompts_per_step=2, group_size=4, max_completion_tokens=8, beta=0.1, num_iterations=2)
    settings.lora.enabled, settings.lora.r = True, 4
    module = GRPOModule(
        lambda: init_random_model(tiny_architecture(), tokenizer, seed=0),
        tokenizer,
        settings,
        OptimConfig(lr=1e-2),
        ScheduleConfig(scheduler="constant", warmup_ratio=0.0),
        micro_batch_size=4,
        reward_fn=lambda texts, records, ids: [{"total": float(c[0] % 3)} for c in ids],
    )
    trainer = fit_grpo(module, records, max_steps=4)
    after = module.model.state_dict()
    adapted = tuple(f".{m}.weight" for m in settings.lora.target_modules)
    for name, tensor in init_random_model(tiny_architecture(), tokenizer, seed=0).state_dict().items():
        if name.endswith(adapted):
            name = name[: -len(".weight")] + ".base_layer.weight"
        assert torch.equal(tensor, after[f"base_model.model.{name}"]), name  # the base weights are frozen
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in after.items())  # the adapters moved from zero
    assert trainer.global_step == 4 and len(module.reward_history) == 2  # 2 iterations per generation batch
    assert trainer.callback_metrics["train/kl"] >= 0
