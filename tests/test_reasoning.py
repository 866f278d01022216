"""Reasoning synthesis: concepts, lift on a hand-checked table, graphs, writers, the filter, the pipeline."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrr1.config import ChainFilter
from ehrr1.reasoning.concepts import DictionaryExtractor, sections
from ehrr1.reasoning.graph import Edge, RelationGraph, hierarchy_edges, sample_graph, umls_graph
from ehrr1.reasoning.pipeline import CONCEPT_SCHEMA
from ehrr1.reasoning.statistics import cooccurrence
from ehrr1.reasoning.writers import ChainRequest, TemplateWriter, assistant_turn, check_chain
from ehrr1.tasks.registry import TaskRegistry
from tests.support import REPO, SMALL_DATA, compose_config, tiny_architecture
from tests.support import backend as support_backend

EHR = """## Patient Demographics [2130-01-01 00:00:00]
- Age: 70
- Gender: Male

## Labotary Test Events [2130-01-01 01:00:00]
| Item Name | Value | Unit | Range (lower-upper) | Flag | Comments |
| ------ | ------ | ------ | ------ | ------ | ------ |
| Creatinine | 2.4 | mg/dL | 0.5-1.2 | abnormal |  |
| Lactate \\| whole blood | 4.1 | mmol/L |  |  |  |

## Prescriptions [2130-01-01 02:00:00]
- Drug: Furosemide
- Prod_Strength: 40mg Tablet
- Dose_Val_Rx: 40
- Dose_Unit_Rx: mg

## Diagnoses on International Classification of Diseases [2130-01-02 00:00:00]
- Acute kidney failure, unspecified
- Sepsis, unspecified organism
Given the sequence of events that have occurred in a hospital, please predict the next lab tests."""
INSTRUCTION = EHR.rsplit("\n", 1)[1]


def test_dictionary_extractor_reads_every_layout_of_the_markdown():
    extractor = DictionaryExtractor()
    concepts = {m.concept: m.label for m in extractor.history(EHR)}
    assert concepts == {
        "labevents:creatinine": "Creatinine",
        "labevents:lactate | whole blood": "Lactate | whole blood",
        "prescriptions:furosemide": "Furosemide",
        "diagnoses_icd:acute kidney failure, unspecified": "Acute kidney failure, unspecified",
        "diagnoses_icd:sepsis, unspecified organism": "Sepsis, unspecified organism",
    }
    assert [t for t, _ in sections(EHR)] == ["patients", "labevents", "prescriptions", "diagnoses_icd"]
    registry = TaskRegistry()
    assert [m.concept for m in extractor.targets(registry["labevents"], ["Sodium ", "Sodium"])] == ["labevents:sodium"]
    assert [m.concept for m in extractor.targets(registry["diagnoses_ccs"], ["Septicemia"])] == [
        "ccs_diagnosis:septicemia"
    ]
    assert [m.concept for m in extractor.targets(registry["Inpatient_Mortality"], ["yes"])] == [
        "outcome:Inpatient_Mortality=yes"
    ]


def mentions_table(rows: list[tuple[str, str, str, str, str]]) -> pa.Table:
    """(sample, task, split, role, concept) rows as the concept Parquet of the pipeline."""
    columns = {name: [] for name in CONCEPT_SCHEMA.names}
    for sample, task, split, role, concept in rows:
        for name, value in zip(CONCEPT_SCHEMA.names, (sample, task, split, role, concept, concept, "x"), strict=True):
            columns[name].append(value)
    return pa.table(columns, schema=CONCEPT_SCHEMA)


def test_lift_on_a_hand_checked_table_counts_the_training_split_only(tmp_path):
    # Task T, 6 training samples. Targets: a in s1-s3, b in s4-s6. History: x in s1, s2, s4; y in all six.
    # count(a)=3, count(x)=3, cooc(a,x)=2: lift = 2*6/(3*3) = 1.333; cooc(b,x)=1: lift 6/9 = 0.667;
    # (a,y): 3*6/(3*6) = 1.0. Validation samples repeat (b, x) three times: they must not count.
    rows = []
    for s, target, history in [
        ("s1", "a", ["x", "y"]),
        ("s2", "a", ["x", "y", "y"]),  # a repeated mention counts once
        ("s3", "a", ["y"]),
        ("s4", "b", ["x", "y"]),
        ("s5", "b", ["y"]),
        ("s6", "b", ["y"]),
    ]:
        rows.append((s, "T", "train", "target", target))
        rows += [(s, "T", "train", "history", h) for h in history]
    rows += [(f"v{i}", "T", "val", role, c) for i in range(3) for role, c in (("target", "b"), ("history", "x"))]
    files = tmp_path / "mentions.parquet"
    pq.write_table(mentions_table(rows), files)
    out = tmp_path / "pairs.parquet"
    assert cooccurrence([str(files)], out, min_support=1, min_lift=0.0, top_k=10) == 4
    pairs = {(r["target"], r["history"]): r for r in pq.read_table(out).to_pylist()}
    assert pairs["a", "x"]["lift"] == pytest.approx(4 / 3) and pairs["a", "x"]["cooc"] == 2
    assert pairs["b", "x"]["lift"] == pytest.approx(2 / 3) and pairs["b", "x"]["n"] == 6
    assert pairs["a", "y"]["lift"] == pytest.approx(1.0) and pairs["b", "y"]["lift"] == pytest.approx(1.0)
    assert cooccurrence([str(files)], out, min_support=2, min_lift=1.0, top_k=10) == 1  # only (a, x)
    assert cooccurrence([str(files)], out, min_support=1, min_lift=0.0, top_k=1) == 2  # best per target
    assert {(r["target"], r["history"]) for r in pq.read_table(out).to_pylist()} == {("a", "x"), ("b", "y")}
    # the reference's support: count(history) >= 3 keeps (b, x) (cooc 1, but x is in 3 samples), drops nothing
    # else with lift >= 0; count(history) >= 4 leaves y's pairs only
    history = dict(min_lift=0.0, top_k=10, support_on="history")
    assert cooccurrence([str(files)], out, min_support=3, **history) == 4
    assert cooccurrence([str(files)], out, min_support=4, **history) == 2
    assert {r["history"] for r in pq.read_table(out).to_pylist()} == {"y"}
    assert cooccurrence([str(files)], out, min_support=1, min_lift=0.0, top_k=None) == 4  # no cut: per sample


def test_bounded_path_search_over_cooccurrence_hierarchy_and_umls(tmp_path):
    graph = RelationGraph()
    graph.add(
        Edge("labevents:creatinine", "diagnoses_icd:acute kidney failure", "co-occurs with", 6.5), "co-occurs with"
    )
    for e in hierarchy_edges(["prescriptions:aspirin", "prescriptions:heparin"], None):
        graph.add(e, "includes")
    history = {"diagnoses_icd:acute kidney failure", "prescriptions:heparin"}
    assert sample_graph(graph, ["labevents:creatinine"], history, max_hops=2, max_paths=3) == [
        [("labevents:creatinine", "", 0.0), ("diagnoses_icd:acute kidney failure", "co-occurs with", 6.5)]
    ]
    drug = sample_graph(graph, ["prescriptions:aspirin"], history, max_hops=2, max_paths=3)
    assert [[node for node, _, _ in p] for p in drug] == [
        ["prescriptions:aspirin", "atc:antithrombotic agents", "prescriptions:heparin"]
    ]
    assert sample_graph(graph, ["prescriptions:aspirin"], history, max_hops=1, max_paths=3) == []
    mrrel = tmp_path / "MRREL.RRF"  # CUI1|AUI1|STYPE1|REL|CUI2|AUI2|STYPE2|RELA|...
    mrrel.write_text("C0022660|A1|SCUI|RO|C0201976|A2|SCUI|has_finding|R1||MSH|MSH|||N||\n")
    umls = umls_graph(mrrel, ["umls:C0022660", "umls:C0201976"], ["RO"])
    assert umls.paths("umls:C0022660", {"umls:C0201976"}, 1, 3)[0][-1][:2] == (
        "umls:C0201976",
        "inverse of has finding",
    )


def request(kind: str, target: list[str], paths=None) -> ChainRequest:
    labels = {"labevents:creatinine": "Creatinine", "labevents:sodium": "Sodium"}
    return ChainRequest("id", "labevents", kind, EHR, INSTRUCTION, target, paths or [], labels)


def test_the_references_evidence_is_the_top_k_of_each_samples_own_history():
    from ehrr1.reasoning.graph import RelationGraph, cooccurrence_graphs, sample_cooccurrence

    pairs = [{"task": "T", "target": "t", "history": h, "lift": lift} for h, lift in (("a", 9), ("b", 8), ("c", 7))]
    graph = cooccurrence_graphs(pairs)["T"]
    own = sample_cooccurrence(graph, ["t"], {"b", "c", "z"}, top_k=1)  # a is not in this sample's history
    assert own.adjacency["t"] == [("b", "co-occurs with", 8)]
    shared = RelationGraph()
    shared.add(Edge("c", "C-class", "is a"), "includes")
    layered = own.over(shared)
    assert layered.paths("t", {"b"}, 2, 3) == [[("t", "", 0.0), ("b", "co-occurs with", 8)]]
    assert layered.paths("c", {"C-class"}, 1, 3)  # the shared layer is read through, not copied
    assert "t" not in shared.adjacency


def test_template_chain_format_and_the_filter():
    path = [("labevents:sodium", "", 0.0), ("labevents:creatinine", "co-occurs with", 7.0)]
    req = request("decision", ["Sodium", "Creatinine"], [path])
    chain = TemplateWriter.chain(req)
    assert chain.startswith("## Extraction\n- Creatinine.\n## Reasoning\n- Creatinine, which co-occurs with (lift 7)")
    assert chain.endswith("## Final Results\nSodium\nCreatinine") and check_chain(chain, req, 1.0) is None
    turn = assistant_turn(chain, req)
    assert turn.startswith("<think>\n## Extraction") and turn.endswith("</think>\n\nSodium\nCreatinine")
    assert check_chain(chain.replace("## Reasoning", "## Thoughts"), req, 1.0) == "format"
    swapped = (
        chain.replace("## Extraction", "@@").replace("## Reasoning", "## Extraction").replace("@@", "## Reasoning")
    )
    assert check_chain(swapped, req, 1.0) == "format"
    assert check_chain(chain + "\nSodium", req, 1.0) == "repeated lines"
    half = chain.rsplit("\n", 1)[0]  # final results name Sodium only: recall 0.5
    assert check_chain(half, req, 1.0) == "misses the answer" and check_chain(half, req, 0.5) is None
    risk = request("risk", ["yes"])
    assert check_chain(TemplateWriter.chain(risk), risk, 1.0) is None
    assert check_chain(TemplateWriter.chain(risk).replace("\nyes", "\nno"), risk, 1.0) == "misses the answer"
    assert check_chain("", risk, 1.0) == "format" and check_chain("\x00" * 10, risk, 1.0) == "format"


def reasoning_config(data_root: Path, *extra: str):
    return compose_config("synthesize", f"data_root={data_root}", *SMALL_DATA, "pipeline=reasoning", *extra)


@pytest.mark.slow
def test_pipeline_writes_chains_from_training_statistics_and_resumes(small_data_root, tmp_path):
    from ehrr1.artefacts.reasoning import synthesize_reasoning

    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    cfg = reasoning_config(data_root, "synthesis.chunk_size=40")
    report = synthesize_reasoning(cfg)
    out = Path(cfg.synthesis.dir)
    written = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    train = [r for r in written if r["messages"][-1]["content"].startswith("<think>")]  # + plain records (smoke)
    assert report["totals"]["train"] == len(train) > 0 and report["totals"]["val"] > 0
    assert all(
        r["graph_paths"] > 0 and r["messages"][-1]["content"].startswith("<think>\n## Extraction") for r in train
    )
    for r in train:  # the chain ends with the answer, the turn repeats it after the reasoning
        assert r["messages"][-1]["content"].endswith("</think>\n\n" + "\n".join(r["target"]))
    stats = json.loads((out / "stats.json").read_text())
    assert all(0 <= v <= 1 for cov in stats["coverage"].values() for v in cov.values())
    pairs = pq.read_table(out / "_work" / "cooccurrence.parquet").to_pylist()
    exported = [json.loads(line) for line in (Path(cfg.export.dir) / "train.jsonl").read_text().splitlines()]
    train_samples = Counter(r["task"] for r in exported)
    assert pairs and all(p["n"] == train_samples[p["task"]] for p in pairs)  # N: the training split, all of it
    first = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    part = sorted((out / "_work" / "chains").glob("train-*.jsonl"))[1]  # a killed chunk: half a line written
    text = part.read_text()
    part.write_text(text[: len(text) // 2])
    part.with_suffix(".done").unlink()
    synthesize_reasoning(cfg)
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == first


@pytest.mark.slow
def test_the_paper_synthesis_writes_decision_chains_from_each_samples_evidence(small_data_root, tmp_path):
    from ehrr1.artefacts.reasoning import synthesize_reasoning

    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    cfg = reasoning_config(data_root, "synthesis=paper", "synthesis.cooccurrence.min_support=2")
    assert cfg.synthesis.decision_only and cfg.synthesis.cooccurrence.top_k_per == "sample"
    synthesize_reasoning(cfg)
    out = Path(cfg.synthesis.dir)
    kinds = {json.loads(line)["kind"] for line in (out / "train.jsonl").read_text().splitlines()}
    assert kinds == {"decision"}
    assert "risk task (decision_only)" in (out / "stats.json").read_text()


@pytest.mark.slow
def test_llm_writer_resumes_after_kill_and_remote_servers_are_refused(small_data_root, tmp_path):
    from ehrr1.artefacts.reasoning import synthesize_reasoning
    from ehrr1.models.factory import init_random_model
    from ehrr1.models.tokenizer import load_tokenizer

    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    tokenizer = load_tokenizer(data_root / "models" / "tiny" / "synthetic_n60_seed0" / "tokenizer")
    model = tmp_path / "writer"
    init_random_model(tiny_architecture(), tokenizer, seed=1).save_pretrained(model)
    tokenizer.save_pretrained(model)
    args = [
        f"data_root={data_root}",
        *SMALL_DATA,
        "pipeline=reasoning",
        "synthesis.writer.kind=llm",
        f"synthesis.writer.model_path={model}",
        "synthesis.writer.temperature=0",
        "synthesis.writer.max_tokens=12",
        "synthesis.writer.batch_size=4",
        "synthesis.writer.chains_per_sample=1",
        "synthesis.splits=[train]",
    ]
    with pytest.raises(ValueError, match="synthesis.allow_remote=true"):
        synthesize_reasoning(
            reasoning_config(
                data_root,
                *args[2:],
                "backend@synthesis.writer.backend=openai",
                "synthesis.writer.backend.base_url=https://api.example.com/v1",
            )
        )
    cmd = [sys.executable, str(REPO / "synthesize.py"), *args]
    whole = subprocess.run([*cmd, f"synthesis.dir={tmp_path / 'whole'}"], cwd=tmp_path, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    parts = killed / "_work" / "chains"
    proc = subprocess.Popen(
        [*cmd, f"synthesis.dir={killed}"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(len(p.read_text().splitlines()) for p in parts.glob("*.jsonl")) < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.jsonl").exists()
    done = subprocess.run([*cmd, f"synthesis.dir={killed}"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for p in sorted(parts.glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows})
    reference = json.loads((tmp_path / "whole" / "stats.json").read_text())
    assert json.loads((killed / "stats.json").read_text())["splits"] == reference["splits"]
    assert (killed / "train.jsonl").read_bytes() == (tmp_path / "whole" / "train.jsonl").read_bytes()


def test_the_references_chain_filter():
    from ehrr1.reasoning.writers import reference_chain_problem

    target = ["Sodium", "Creatinine", "Potassium"]
    chain = "## Extraction\n- AKI\n## Reasoning\n- kidneys\n## Final Results\nSodium\nCreatinine\nPotassium"
    assert reference_chain_problem(chain, target) is None
    assert reference_chain_problem(chain.replace("\nPotassium", ""), target) == "misses the answer"  # 2/3 < 0.7
    assert reference_chain_problem(chain.replace("\nPotassium", ""), target, 0.6) is None
    assert reference_chain_problem(chain.replace("sodium", "x").replace("Sodium", "sodium"), target, 0.9) == (
        "misses the answer"  # labels are matched as written
    )
    assert reference_chain_problem(chain + "\n(the ground truth)", target) == "says ground truth"
    assert reference_chain_problem(chain.replace("## Extraction", "## Extraction and Analysis"), target) == "format"
    # no section check: the reference keeps a chain without them when the labels are there
    assert reference_chain_problem("Final Results: Sodium, Creatinine, Potassium", target) is None
    req = request("decision", target)
    assert check_chain(chain.replace("\nPotassium", ""), req, 0.6, ChainFilter.reference) is None
    assert check_chain(chain.replace("\nPotassium", ""), req, 1.0) == "misses the answer"  # ours: recall 2/3


def test_the_references_chain_prompt_separates_the_record_the_answer_and_the_task():
    from ehrr1.reasoning.writers import reference_prompt

    path = [("labevents:sodium", "", 0.0), ("labevents:creatinine", "co-occurs with", 7.0)]
    prompt = reference_prompt(request("decision", ["Sodium", "Creatinine"], [path]))
    context = prompt.split("# Patient EHR Context #\n", 1)[1].split("\n\n=====", 1)[0]
    assert context == EHR.removesuffix("\n" + INSTRUCTION)  # the record without the instruction
    assert "# Ground Truth #\n['Sodium', 'Creatinine']\n" in prompt  # the answer as the reference wrote it
    assert "# Retrieved Medical Knowledge #\nCreatinine, which co-occurs with (lift 7) Sodium\n" in prompt
    assert f"# Task #\n{INSTRUCTION}\n" in prompt
    assert prompt.rstrip().endswith("## Final Results\n[YOUR OUTPUT]")


def test_several_chains_per_sample_are_drawn_with_their_own_seeds_and_filtered_each(model_dir):
    from ehrr1.backends import SamplingParams
    from ehrr1.config import ChainPrompt, KeepChains, SynthesisConfig
    from ehrr1.reasoning.pipeline import chain_rows
    from ehrr1.reasoning.writers import LLMWriter

    backend = support_backend("hf", model_dir, device="cpu")
    sampling = SamplingParams(temperature=1.0, max_tokens=6, seed=3)
    writer = LLMWriter(backend, sampling, ChainPrompt.reference, chains=3)
    requests = [request("decision", ["Sodium"]), request("decision", ["Creatinine", "Sodium"])]
    drawn = writer.write(requests)
    assert [len(chains) for chains in drawn] == [3, 3]
    assert len(set(drawn[0])) > 1  # seeds 3, 4, 5 give different draws
    assert writer.write(requests) == drawn  # and the same ones again

    good = "## Extraction\n- a\n## Reasoning\n- b\n## Final Results\nSodium"
    chains = ["## Final Results\nnothing", good, good + "\n(as the ground truth says)", good.replace("b", "c")]
    settings = SynthesisConfig(chain_filter="reference", min_answer_recall=0.7)
    record = {"id": "s1", "messages": [{"role": "user", "content": EHR}], "target": ["Sodium"]}
    first = chain_rows(record, requests[0], chains, settings)
    assert first["status"] == "kept" and [r["chain"] for r in first["records"]] == [1]
    settings.writer.keep = KeepChains.all
    every = chain_rows(record, requests[0], chains, settings)
    assert [r["chain"] for r in every["records"]] == [1, 3] and {r["id"] for r in every["records"]} == {"s1"}
    assert chain_rows(record, requests[0], chains[:1], settings) == {"status": "misses the answer", "chains": 1}


def test_free_text_fields_the_reference_reads_with_quickumls():
    markdown = (
        "## Radiology Examinations [2130-01-01 03:00:00]\n- Note_Type: RR\n- Exam_Name: ['CHEST (PA AND LAT)']\n"
        "- Text: Right lower lobe pneumonia.\n\n"
        "## Admissions [2130-01-01 00:00:00]\n- Admission_Type: EW EMER.\n- Admission_Location: nan\n"
        "- Admission_Info: Chief Complaint: cough\n\n"
        "## Labotary Test Events [2130-01-01 01:00:00]\n| Item Name | Value | Comments |\n| --- | --- | --- |\n"
        "| Creatinine | 2.4 | hemolysed |\n"
    )
    texts = list(DictionaryExtractor().free_texts(markdown))
    assert texts == [("radiology", "Right lower lobe pneumonia."), ("admissions", "Chief Complaint: cough")]


@pytest.mark.slow
def test_plain_records_beside_the_chains(small_data_root, tmp_path):
    from ehrr1.artefacts.reasoning import synthesize_reasoning

    data_root = tmp_path / "data"
    shutil.copytree(small_data_root, data_root)
    cfg = reasoning_config(data_root, "synthesis=paper", "synthesis.cooccurrence.min_support=2", "synthesis.plain=all")
    report = synthesize_reasoning(cfg)
    written = [json.loads(line) for line in (Path(cfg.synthesis.dir) / "train.jsonl").read_text().splitlines()]
    instructions = [json.loads(line) for line in (Path(cfg.export.dir) / "train.jsonl").read_text().splitlines()]
    chained = [r for r in written if r["messages"][-1]["content"].startswith("<think>")]
    plain = [r for r in written if not r["messages"][-1]["content"].startswith("<think>")]
    assert len(chained) == report["totals"]["train"] > 0
    assert plain == instructions  # every record once more with its direct answer, in input order
    assert {r["kind"] for r in plain} == {"decision", "risk"}
