"""Evaluation: the HF backend, scoring and reports on crafted outputs, evaluate.py end to end with resume."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from ehrr1.backends import SamplingParams
from ehrr1.evaluation.harness import Request, build_requests, run, score_row
from ehrr1.evaluation.report import aggregate, most_frequent_answers, write_reports
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.tasks.registry import TaskError
from tests.support import REPO, SMALL_DATA, compose_config, offline_wandb_run, run_entry_point
from tests.support import backend as support_backend


def test_batched_greedy_generation_equals_one_by_one(model_dir):
    backend = support_backend("hf", model_dir, device="cpu")
    chat = backend.tokenizer.apply_chat_template
    prompts = [
        chat([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=False)
        for text in ("Creatinine 2.4", "## Admissions\nEW EMER. " * 5, "Yes?")
    ]
    sampling = SamplingParams(max_tokens=12)
    batched = backend.generate(prompts, sampling, [True, True, False])
    alone = [backend.generate([p], sampling, [True])[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert {g.finish_reason for g in batched} <= {"stop", "length"}
    assert batched[2].p_yes is None and 0 <= batched[0].p_yes <= 1
    assert batched[0].p_yes == pytest.approx(alone[0].p_yes, abs=1e-5)
    ids = backend.tokenizer(prompts[0], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = backend.model(ids).logits[0, -1].softmax(-1)
    yes, no = (float(probs[i].sum()) for i in backend.answer_ids)
    assert batched[0].p_yes == pytest.approx(yes / (yes + no), abs=1e-5)


def test_unknown_backend_lists_the_choices():
    from ehrr1.backends import backend_config

    with pytest.raises(ValueError, match="unknown backend 'vlm': did you mean 'vllm'\\? choose from hf, openai, vllm"):
        backend_config("vlm")
    with pytest.raises(ValueError, match="backend hf: Key 'devise' not in 'HFBackendConfig'"):
        backend_config("hf", devise="cpu")


def request(task: str, metric: str, target: list[str], key: str) -> Request:
    return Request(key, key, task, "risk" if metric == "auroc" else "decision", metric, target, "prompt")


def test_scores_and_reports_on_crafted_outputs(tmp_path):
    rows = [
        score_row(request("labevents", "f1", ["Creatinine", "Sodium"], "a"), "creatinine\nsodium", "stop", None),
        score_row(
            request("labevents", "f1", ["Creatinine", "Sodium"], "b"), "<think>x</think>\nCreatinine", "stop", None
        ),
        score_row(request("labevents", "f1", ["Creatinine"], "c"), None, "error", None, error="boom"),
        score_row(request("labevents", "f1", ["Creatinine"], "d"), b"\xff\xfe", "stop", None),
        score_row(request("labevents", "f1", ["Creatinine"], "e"), "", "length", None),
        score_row(request("labevents", "f1", ["Creatinine"], "f"), "Creatinine\n" * 20_000, "length", None),
        score_row(request("Inpatient_Mortality", "auroc", ["yes"], "g"), "yes", "stop", 0.9),
        score_row(request("Inpatient_Mortality", "auroc", ["no"], "h"), "no", "stop", 0.2),
        score_row(request("Inpatient_Mortality", "auroc", ["no"], "i"), "<think>hmm", "length", None),
        score_row(request("Inpatient_Mortality", "auroc", ["yes"], "j"), "Yes.", "stop", None),
    ]
    assert [r["score"] for r in rows[:6]] == pytest.approx([1.0, 2 / 3, 0, 0, 0, 0])
    assert [r["valid"] for r in rows[:6]] == [True, True, False, False, False, False]
    frequent = most_frequent_answers(
        [{"task": "labevents", "target": ["Creatinine"]}] * 2
        + [{"task": "labevents", "target": ["Sodium"]}, {"task": "Inpatient_Mortality", "target": ["no"]}]
    )
    report = aggregate(rows, frequent, n_boot=200, seed=0)
    labs, mortality = report["tasks"]
    assert labs["value"] == pytest.approx((1 + 2 / 3) / 6) and labs["invalid"] == 4 and labs["truncated"] == 2
    assert labs["errors"] == 1
    assert (labs["precision"], labs["recall"], labs["f1"]) == pytest.approx((2 / 6, 1.5 / 6, (1 + 2 / 3) / 6))
    assert labs["baseline"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 1 + 1 + 1) / 6)  # always "Creatinine"
    assert labs["ci_low"] <= labs["value"] <= labs["ci_high"]
    # p_yes 0.9 / 0.2, then hard answers: unfinished reasoning -> 0.5, "Yes." -> 1.0: every yes above every no
    assert mortality["value"] == 1.0 and mortality["hard_scored"] == 2 and mortality["baseline"] == 0.5
    assert report["macro"]["decision"]["tasks"] == 1 and report["macro"]["risk"]["value"] == 1.0
    paths = write_reports(report, tmp_path)
    from ehrr1.evaluation.plots import write_plots

    pngs = write_plots(report, rows, tmp_path)
    assert [p.name for p in pngs] == ["scores.png", "roc.png"] and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert json.loads(paths["json"].read_text())["samples"] == 10
    assert "| labevents * | decision | f1 | 6 |" in paths["md"].read_text()
    assert paths["csv"].read_text().splitlines()[0].startswith("task,kind,metric,n,value,ci_low,ci_high")
    assert mortality["precision"] is None and "| P | R | F1 |" in paths["md"].read_text()
    # the same model on another benchmark: only labevents, scored higher
    other = aggregate([score_row(request("labevents", "f1", ["Sodium"], "k"), "sodium", "stop", None)], n_boot=10)
    (tmp_path / "b").mkdir()
    write_reports(other, tmp_path / "b")
    from ehrr1.evaluation.compare import main as compare_main
    from ehrr1.evaluation.compare import write_comparison

    written = write_comparison(tmp_path, tmp_path / "b", tmp_path / "cmp")
    result = json.loads(written["json"].read_text())
    by_task = {r["task"]: r for r in result["tasks"]}
    assert by_task["labevents"]["difference"] == pytest.approx(1.0 - labs["value"])
    assert by_task["Inpatient_Mortality"]["value_b"] is None and by_task["Inpatient_Mortality"]["difference"] is None
    assert result["macro"]["risk"] == {"a": 1.0, "b": None}
    assert written["png"].read_bytes()[:4] == b"\x89PNG"
    assert "| labevents * | decision | f1 | 6 |" in written["md"].read_text()
    with pytest.raises(SystemExit) as stopped:
        compare_main([str(tmp_path), str(tmp_path / "nowhere")])
    assert stopped.value.code == 1


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_entry_point("evaluate.py", *args, cwd=cwd)


@pytest.mark.slow
def test_evaluate_resumes_after_kill_without_duplicates(small_data_root, model_dir, tmp_path):
    args = [
        f"data_root={small_data_root}",
        *SMALL_DATA,
        f"model.path={model_dir}",
        "limit=2",
        "batch_size=2",
        "sampling.max_tokens=16",
        "bootstrap=100",
    ]
    whole = run_cli(*args, f"output_dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "macro decision" in whole.stdout and "macro risk" in whole.stdout
    results = tmp_path / "killed" / "results.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate.py"), *args, f"output_dir={results.parent}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while (not results.exists() or len(results.read_text().splitlines()) < 6) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(results.read_text().splitlines())
    expected = len((tmp_path / "whole" / "results.jsonl").read_text().splitlines())
    assert 6 <= first < expected and not (results.parent / "report.json").exists()
    resumed = run_cli(*args, f"output_dir={results.parent}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    keys = [json.loads(line)["key"] for line in results.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == expected
    assert {p.name for p in results.parent.iterdir()} >= {"report.json", "report.md", "report.csv", "scores.png"}
    report, reference = (json.loads((d / "report.json").read_text()) for d in (results.parent, tmp_path / "whole"))
    assert report["tasks"] == reference["tasks"] and report["macro"] == reference["macro"]


@pytest.mark.slow
def test_evaluate_needs_a_model(small_data_root, tmp_path):
    done = run_cli(f"data_root={small_data_root}", *SMALL_DATA, cwd=tmp_path)
    assert done.returncode != 0 and "set model.path=" in done.stderr


@pytest.mark.slow
def test_predictor_answers_from_a_timeline_or_markdown(model_dir, timelines_root, tmp_path):
    from ehrr1 import Predictor
    from ehrr1.data.markdown import render_events
    from ehrr1.data.timeline import TimelineStore

    predictor = Predictor(str(model_dir), device="cpu", max_tokens=8, model_config={"max_input_tokens": 300})
    timeline = TimelineStore(timelines_root).load(TimelineStore(timelines_root).subjects()[0])
    risk = predictor.predict("Inpatient_Mortality", timeline=timeline, until=len(timeline))
    assert 0 <= risk.p_yes <= 1 and risk.events_dropped > 0  # 300 tokens: the oldest events are cut
    assert risk.answer in ("yes", "no") and risk.answer == ("yes" if risk.p_yes >= 0.5 else "no")  # one token
    with pytest.raises(TaskError, match="Did you mean labevents"):
        predictor.predict("labevent", timeline=timeline)
    markdown = tmp_path / "patient.md"
    markdown.write_text(render_events(timeline.window(1, 6)), encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ehrr1.inference",
            "--model",
            str(model_dir),
            "--task",
            "labevents",
            "--markdown",
            str(markdown),
            "--max-tokens",
            "8",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert printed["task"] == "labevents" and printed["p_yes"] is None and isinstance(printed["answer"], str)


def test_a_stages_weights_are_asked_as_its_run_and_evaluation_ask_them(model_dir, tmp_path):
    """The inference API builds its backend and asks a task as evaluate.py does: a training stage's weights with
    the run's thinking switch and dtype, a risk task with one token among yes / no and the same P(yes)."""
    import shutil

    from omegaconf import OmegaConf

    from ehrr1 import Predictor
    from ehrr1.evaluation.harness import build_requests, run
    from ehrr1.tasks.records import InstructionRecord

    stage = tmp_path / "stages" / "3_rl"
    shutil.copytree(model_dir, stage / "hf")
    run_config = compose_config("train", "model.thinking_switch=suffix", "model.max_input_tokens=200")
    OmegaConf.save(run_config, stage / "config.yaml")  # what a stage stores
    predictor = Predictor(str(stage / "hf"), device="cpu", max_tokens=8)
    assert predictor.model.thinking_switch is ThinkingSwitch.suffix and predictor.model.max_input_tokens == 200
    markdown = "## Patient Demographics [None]\n- Gender: F\n\n## Admissions [2150-01-01 08:00:00]\n- EW EMER."
    answer = predictor.predict("ED_Hospitalization", markdown=markdown)
    spec = predictor.registry["ED_Hospitalization"]
    record: InstructionRecord = {
        "id": "x", "messages": predictor.builder.messages_for(markdown, spec), "task": spec.name, "kind": "risk",
        "metric": "auroc", "subject_id": None, "hadm_id": None, "target": ["yes"], "split": "test",
    }  # fmt: skip
    sampling = SamplingParams(max_tokens=8)
    requests = build_requests([record], predictor.backend.tokenizer, "m", sampling, False, ThinkingSwitch.suffix)
    assert requests[0].prompt.rstrip().endswith("/no_think<|im_end|>\n<|im_start|>assistant")
    (row,) = run(requests, predictor.backend, sampling, tmp_path / "results.jsonl", progress=False)
    assert answer.answer == row["output"] and answer.p_yes == pytest.approx(row["p_yes"])


@pytest.mark.slow
def test_wandb_offline_gets_scores_but_no_patient_text(small_data_root, model_dir, tmp_path, wandb_offline):
    from ehrr1.evaluation.evaluate import evaluate
    from tests.support import compose_config

    cfg = compose_config(
        "evaluate",
        f"data_root={small_data_root}",
        *SMALL_DATA,
        f"model.path={model_dir}",
        "limit=1",
        "sampling.max_tokens=4",
        "bootstrap=10",
        "logger=wandb",
        f"output_dir={tmp_path / 'eval'}",
    )
    report = evaluate(cfg)
    run, logged = offline_wandb_run(tmp_path / "eval")
    assert b"macro/decision" in logged and report["tasks"][0]["task"].encode() in logged
    record = json.loads(
        next((small_data_root / "instructions").glob("*/smoke/tiny/test.jsonl")).read_text().splitlines()[0]
    )
    ehr_text = next(part for part in record["messages"][1]["content"].split("\n\n")[1:] if part.strip())
    assert ehr_text.encode() not in logged
    tables = {p.name.split("_")[0] for p in run.rglob("*.table.json")}
    assert tables == {"report", "macro"}  # per-sample outputs ("samples") only with log_outputs=true


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory):
    """A real OpenAI-compatible HTTP server on this machine: ``transformers serve`` (CPU)."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = "import sys; from transformers.cli.transformers import main; sys.exit(main())"  # no PATH needed
    command = [sys.executable, "-c", cli, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/models", timeout=2)  # any answer: the server is up
            break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"transformers serve did not start: {log.read_text()[-2000:]}")
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_openai_backend_against_a_real_server_matches_hf_generate(model_dir, openai_server):
    hf = support_backend("hf", model_dir, device="cpu")
    served = support_backend("openai", model_dir, base_url=openai_server, concurrency=2)
    prompts = [
        hf.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        for text in ("Creatinine 2.4 mg/dL", "## Admissions\nEW EMER.", "Sodium 131")
    ]
    sampling = SamplingParams(max_tokens=10)
    remote = served.generate(prompts, sampling, [True, False, False])
    assert [g.text for g in remote] == [g.text for g in hf.generate(prompts, sampling)]  # greedy: the same text
    assert all(not g.error for g in remote) and remote[0].p_yes is None  # this server sends no logprobs


def test_openai_backend_retries_then_reports_errors_per_sample(model_dir):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = support_backend(
        "openai", model_dir, base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.05
    )
    started = time.monotonic()
    out = backend.generate(["a", "b"], SamplingParams(max_tokens=4))
    assert [g.finish_reason for g in out] == ["error", "error"] and all("ConnectError" in g.error for g in out)
    assert time.monotonic() - started >= 0.05 + 0.1  # backed off twice before giving up
    row = score_row(request("labevents", "f1", ["Creatinine"], "k"), None, out[0].finish_reason, None, out[0].error)
    assert row["score"] == 0 and not row["valid"] and "ConnectError" in row["error"]


def test_remote_server_is_refused_without_opt_in(model_dir):
    with pytest.raises(ValueError, match="allow_remote=true"):
        support_backend("openai", model_dir, base_url="https://api.example.com/v1")


@pytest.mark.slow
def test_evaluate_through_the_server_scores_risk_by_hard_answers(small_data_root, model_dir, openai_server, tmp_path):
    from ehrr1.evaluation.evaluate import evaluate
    from tests.support import compose_config

    cfg = compose_config(
        "evaluate",
        f"data_root={small_data_root}",
        *SMALL_DATA,
        f"model.path={model_dir}",
        "backend=openai",
        f"backend.base_url={openai_server}",
        "limit=1",
        "sampling.max_tokens=6",
        "bootstrap=10",
        f"output_dir={tmp_path}",
    )
    report = evaluate(cfg)
    risk = [t for t in report["tasks"] if t["kind"] == "risk"]
    assert risk and all(t["hard_scored"] == t["n"] for t in risk)  # no logprobs from this server: said so
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert report["run"]["backend"] == "openai" and len(rows) == report["samples"] and not any(r["error"] for r in rows)


def test_results_are_reused_only_for_the_same_model_run_the_same_way(model_dir):
    """A result row's resume key holds what decides its answer: the sample, its prompt and sampling, and the
    model as it generates (weights, backend, dtype); the target and metric are not in it (the stored answer is
    scored again with them)."""
    from ehrr1.backends import backend_config
    from ehrr1.evaluation.evaluate import model_identity
    from ehrr1.inference import model_settings
    from ehrr1.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    record = {"id": "a", "task": "labevents", "kind": "decision", "metric": "f1", "target": ["Sodium"],
              "messages": [{"role": "user", "content": "EHR"}]}  # fmt: skip

    def key(model: str = "m", **changed) -> str:
        switch = ThinkingSwitch.suffix
        return build_requests([{**record, **changed}], tokenizer, model, SamplingParams(), False, switch)[0].key

    assert key() == key(target=["Potassium"]) == key(metric="recall") and len({key(), key("other")}) == 2
    model = model_settings(str(model_dir))[0]
    bf16 = model_settings(str(model_dir), dtype="bfloat16")[0]
    identities = {
        model_identity("m", backend_config("hf"), model),
        model_identity("m", backend_config("hf", device="cpu"), model),  # where it runs: the same results
        model_identity("m", backend_config("hf"), bf16),
        model_identity("m", backend_config("vllm"), model),
        model_identity("m", backend_config("openai", served_model="other"), model),
    }
    assert len(identities) == 4


def test_intervals_are_scipys_bootstrap_of_scikit_learns_metrics():
    """One AUROC and one bootstrap: the report's intervals equal scipy.stats.bootstrap run one resample at a
    time with scikit-learn's roc_auc_score (and the mean), on the same draws."""
    import numpy as np
    import scipy.stats
    from sklearn.metrics import roc_auc_score

    from ehrr1.evaluation.report import bootstrap

    rng = np.random.default_rng(5)
    rows = [
        {
            "target": ["yes" if rng.random() < 0.4 else "no"],
            "p_yes": float(rng.integers(0, 5)) / 4,
            "output": "",
            "score": float(rng.random()),
        }
        for _ in range(25)
    ]  # ties in the scores on purpose
    labels = np.array([r["target"][0] == "yes" for r in rows])
    p_yes, scores = np.array([r["p_yes"] for r in rows]), np.array([r["score"] for r in rows])

    def sklearn_auroc(idx):
        idx = idx.astype(int)
        return roc_auc_score(labels[idx], p_yes[idx]) if len(set(labels[idx])) == 2 else np.nan

    for metric, statistic in (("auroc", sklearn_auroc), ("f1", lambda idx: scores[idx.astype(int)].mean())):
        loop = scipy.stats.bootstrap(
            (np.arange(25),), statistic, n_resamples=60, vectorized=False, method="percentile",
            rng=np.random.default_rng(1),
        ).bootstrap_distribution  # fmt: skip
        loop = loop[~np.isnan(loop)]
        assert bootstrap(metric, rows, 60, seed=1) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))


def test_baseline_macros_are_over_the_models_tasks_or_absent():
    from ehrr1.evaluation.report import aggregate

    def rows(task, answers, target):
        fixed = {"task": task, "kind": "decision", "metric": "f1", "target": [target], "p_yes": None, "valid": True}
        return [{**fixed, "output": a, "score": float(a == target), "finish_reason": "stop"} for a in answers]

    model = rows("a", ["x", "y"], "x") + rows("b", ["x", "x"], "x")
    tabular = rows("a", ["x", "x"], "x")  # no tabular score on task b
    report = aggregate(model, {"a": "y", "b": "x"}, n_boot=20, tabular=tabular)
    macro = report["macro"]["decision"]
    assert macro["value"] == 0.75 and macro["baseline"] == 0.5  # (0 + 1) / 2 over both tasks
    assert macro["ci_low"] == 0.5 and macro["ci_high"] == 1.0
    assert macro["tabular"] is None and macro["tabular_missing"] == ["b"]  # not 1.0 over task a alone
    alone = aggregate(model + rows("c", ["x"], "x"), n_boot=20)["macro"]["decision"]  # a task of one sample
    assert alone["value"] == pytest.approx(2.5 / 3) and alone["ci_low"] is not None


def test_risk_is_answered_with_one_token_among_yes_and_no(model_dir):
    """The reference's protocol: greedy over the first tokens of yes / no, P(yes) the share between them."""
    from ehrr1.backends import ONE_TOKEN_YES_NO, choice_token_ids

    hf = support_backend("hf", model_dir, device="cpu")
    messages = [[{"role": "user", "content": text}] for text in ("Creatinine 2.4 mg/dL", "## Admissions\nEW EMER.")]
    prompts = [generation_prompt(hf.tokenizer, m, thinking=False) for m in messages]
    out = hf.generate(prompts, ONE_TOKEN_YES_NO)
    ids = choice_token_ids(hf.tokenizer, ("yes", "no"))
    for prompt, answer in zip(prompts, out, strict=True):
        encoded = hf.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            p_yes = hf.model(**encoded).logits[0, -1, ids].softmax(-1)[0].item()
        assert answer.text == ("yes" if p_yes >= 0.5 else "no") and answer.finish_reason == "stop"
        assert answer.p_yes == pytest.approx(p_yes, abs=1e-5)


def test_requests_ask_risk_tasks_with_thinking_off_and_one_token(model_dir):
    from ehrr1.backends import SamplingParams as Sampling

    hf = support_backend("hf", model_dir, device="cpu")
    user = [{"role": "system", "content": "s"}, {"role": "user", "content": "EHR\nquestion"}]
    records = [
        {"id": "r", "task": "Inpatient_Mortality", "kind": "risk", "metric": "auroc", "target": ["yes"],
         "messages": [*user, {"role": "assistant", "content": "yes"}]},
        {"id": "d", "task": "labevents", "kind": "decision", "metric": "f1", "target": ["Sodium"],
         "messages": [*user, {"role": "assistant", "content": "Sodium"}]},
    ]  # fmt: skip
    switch = ThinkingSwitch.enable_thinking
    risk, decision = build_requests(records, hf.tokenizer, "m", Sampling(max_tokens=8), True, switch)
    assert risk.one_token and risk.prompt == generation_prompt(hf.tokenizer, user, thinking=False)
    assert not decision.one_token and decision.prompt == generation_prompt(hf.tokenizer, user, thinking=True)
    generated = build_requests(records, hf.tokenizer, "m", Sampling(max_tokens=8), True, switch, False)
    assert not generated[0].one_token and generated[0].key != risk.key and generated[1].key == decision.key
    with tempfile.TemporaryDirectory() as tmp:
        rows = run([risk, decision], hf, Sampling(max_tokens=8), Path(tmp) / "results.jsonl", progress=False)
    assert rows[0]["output"] in ("yes", "no") and rows[0]["p_yes"] is not None and rows[0]["valid"]


def test_openai_backend_sends_the_references_logit_bias(model_dir):
    """A real local HTTP server that records what the client sends and answers like vLLM's server."""
    from ehrr1.backends import ONE_TOKEN_YES_NO, choice_token_ids
    from tests.support import one_token_server

    seen: list[dict] = []
    with one_token_server(seen) as url:
        backend = support_backend("openai", model_dir, base_url=url)
        prompt = generation_prompt(backend.tokenizer, [{"role": "user", "content": "EHR"}], thinking=False)
        (answer,) = backend.generate([prompt], ONE_TOKEN_YES_NO, [True])
    ids = choice_token_ids(backend.tokenizer, ("yes", "no"))
    assert seen[0]["max_tokens"] == 1 and seen[0]["logit_bias"] == {str(i): 100 for i in ids}
    assert answer.text == "no" and answer.p_yes == pytest.approx(math.exp(-2.0) / (math.exp(-2.0) + math.exp(-0.2)))


def test_error_bars_never_go_negative_when_a_value_lies_outside_its_interval():
    from ehrr1.evaluation.plots import interval_errors

    below, above = interval_errors([0.5, 0.7], [0.6, None], [0.9, 0.8])
    assert below == [0.0, 0.0] and above == [pytest.approx(0.4), pytest.approx(0.1)]


def test_long_prompts_keep_their_last_tokens(model_dir):
    from ehrr1.evaluation.harness import cut_left

    hf = support_backend("hf", model_dir, device="cpu")
    prompt = generation_prompt(hf.tokenizer, [{"role": "user", "content": "Sodium 131 mmol/L " * 40}], thinking=False)
    n = len(hf.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    kept, cut = cut_left(hf.tokenizer, prompt, 50)
    assert cut == n - 50 and prompt.endswith(kept)
    assert len(hf.tokenizer(kept, add_special_tokens=False)["input_ids"]) <= 50
    assert cut_left(hf.tokenizer, prompt, None) == (prompt, 0) and cut_left(hf.tokenizer, prompt, n) == (prompt, 0)
    record = {"id": "r", "task": "labevents", "kind": "decision", "metric": "f1", "target": ["Sodium"],
              "messages": [{"role": "user", "content": "Sodium 131 mmol/L " * 40}]}  # fmt: skip
    (request,) = build_requests([record], hf.tokenizer, "m", SamplingParams(), False, ThinkingSwitch.enable_thinking,
                                max_prompt_tokens=50)  # fmt: skip
    assert request.tokens_cut == n - 50 and score_row(request, "Sodium", "stop", None)["prompt_tokens_cut"] == n - 50
