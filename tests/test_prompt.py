"""The prompt builder: spec format, prepended context, token budget cut from the oldest events, thinking switch;
the export: byte-stable whatever its work units and workers, resumable."""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from ehrr1.data.markdown import render_event, render_events
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import UserError
from ehrr1.tasks.export import export_samples
from ehrr1.tasks.index import read_index
from ehrr1.tasks.prompt import SYSTEM_PROMPT, PromptBuilder, ThinkingSwitch, generation_prompt
from ehrr1.tasks.samples import Sample
from ehrr1.tasks.select import SelectionSettings, select
from ehrr1.think import CLOSED_THINK


@pytest.fixture(scope="module")
def store(timelines_root):
    return TimelineStore(timelines_root)


def samples_of(index_root, task, n=None):
    rows = read_index(index_root, [task]).to_pylist()
    return [Sample(**{**r, "target": tuple(r["target"])}) for r in rows[:n]]


def test_messages_follow_the_spec(store, registry, index_root):
    task = registry["Readmission_30day"]
    sample = next(s for s in samples_of(index_root, task.name) if s.admissions_id is not None)
    timeline = store.load(sample.subject_id)
    prompt = PromptBuilder().build(timeline, sample, task)
    system, user = prompt.messages
    assert system == {"role": "system", "content": SYSTEM_PROMPT} and user["role"] == "user"
    assert user["content"].endswith("\n" + task.prompt_instruction)
    sections = user["content"][: -len(task.prompt_instruction) - 1].split("\n\n## ")
    assert sections[0].startswith("## Patient Demographics [") and sections[1].startswith("Admissions [")
    window = [e for e in timeline.window(sample.period_begin, sample.period_end)]
    assert user["content"].index(render_event(timeline[sample.admissions_id])) < user["content"].index(
        render_event(window[0])
    )
    assert prompt.answer == sample.target[0] and prompt.fits


def test_previous_discharge_summary_is_prepended(store, registry, index_root):
    task = registry["LengthOfStay_7day"]
    sample = next(s for s in samples_of(index_root, task.name) if s.last_discharge_id is not None)
    timeline = store.load(sample.subject_id)
    user = PromptBuilder().build(timeline, sample, task).messages[1]["content"]
    assert render_event(timeline[sample.last_discharge_id]) in user


def test_token_budget_cuts_the_oldest_whole_events(store, registry, index_root, tokenizer):
    task = registry["labevents"]
    sample = max(samples_of(index_root, task.name), key=lambda s: s.period_end - s.period_begin)
    timeline = store.load(sample.subject_id)
    full = PromptBuilder(tokenizer).build(timeline, sample, task)
    budget = full.n_tokens * 2 // 3
    cut = PromptBuilder(tokenizer, budget).build(timeline, sample, task)
    assert cut.fits and cut.n_tokens <= budget and cut.events_dropped > 0
    one_less = PromptBuilder(tokenizer, budget).parts(timeline, sample, task)[1]
    kept = one_less[cut.events_dropped :]
    user = cut.messages[1]["content"]
    assert render_event(kept[0]) in user and render_event(one_less[cut.events_dropped - 1]) not in user
    assert user.endswith("\n".join([render_event(kept[-1]), task.prompt_instruction]))  # newest events stay whole
    longer = PromptBuilder(tokenizer, budget).build(timeline, sample, task)
    assert longer.messages == cut.messages  # deterministic
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        PromptBuilder(None, 100)


def _qwen_style_tokenizer(timelines_root):
    """A byte-level BPE with Qwen2's pre-tokenizer: punctuation absorbs the newlines after it."""
    import itertools

    from ehrr1.models.tokenizer import train_tokenizer

    texts = (render_events(t) for t in itertools.islice(TimelineStore(timelines_root), 80))
    return train_tokenizer(texts, 3000, "qwen2")


def _fewest_drops_by_scan(builder, timeline, sample, task):
    """The cut by definition: (events dropped, previous note kept, tokens) of the first prompt that fits,
    dropping the oldest events one at a time, then the previous note (None: never)."""
    fixed, window = builder.parts(timeline, sample, task)
    rendered = {id(e): render_event(e) for e in (*fixed, *window) if e is not None}
    for keep in (fixed, [None, fixed[1]]):
        for drop in range(len(window) + 1):
            messages = builder._messages(timeline, keep, window[drop:], rendered, task, timeline[sample.event].time)
            text = builder.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            n = len(builder.tokenizer(text, add_special_tokens=False)["input_ids"])
            if n <= builder.max_input_tokens:
                return drop, keep[0] is not None, n
    return None


def _tokens_without_events(builder, timeline, sample, task):
    """Tokens of the prompt with its fixed parts (the previous note included) and no window event."""
    fixed, _ = builder.parts(timeline, sample, task)
    rendered = {id(e): render_event(e) for e in fixed if e is not None}
    messages = builder._messages(timeline, fixed, [], rendered, task, timeline[sample.event].time)
    text = builder.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(builder.tokenizer(text, add_special_tokens=False)["input_ids"])


def _lowercasing(tokenizer):
    """The embedded tokenizer with a normaliser: its prompts cannot be counted by pieces."""
    import copy

    from tokenizers import normalizers

    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tok


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer_kind", ["embedded", "qwen_style", "lowercasing"])
def test_the_cut_fits_and_is_the_fewest_drops(store, registry, index_root, tokenizer, timelines_root, tokenizer_kind):
    """Counted by pieces (GPT-2's and Qwen2's splits): exactly the scan's cut. Counted whole (any other
    tokenizer): it fits, and is the scan's but where a merged boundary misleads the estimate by an event."""
    tok = {"embedded": tokenizer, "qwen_style": _qwen_style_tokenizer(timelines_root)}.get(tokenizer_kind)
    tok = tok or _lowercasing(tokenizer)
    by_pieces = tokenizer_kind != "lowercasing"
    checked = cut = fewest = notes = 0
    for name in ("labevents", "Readmission_30day", "LengthOfStay_7day", "ED_Hospitalization", "next_event"):
        task = registry[name]
        for sample in samples_of(index_root, name)[::7][:10]:
            timeline = store.load(sample.subject_id)
            full = PromptBuilder(tok).build(timeline, sample, task).n_tokens
            budgets = [full, full * 3 // 4, full // 2, full // 4]
            if sample.last_discharge_id is not None:  # one token short of the note with no event: the note goes
                budgets.append(_tokens_without_events(PromptBuilder(tok), timeline, sample, task) - 1)
            for budget in budgets:
                builder = PromptBuilder(tok, budget)
                assert (builder._pieces is not None) == by_pieces
                prompt = builder.build(timeline, sample, task)
                expected = _fewest_drops_by_scan(builder, timeline, sample, task)
                if expected is None:
                    assert not prompt.fits
                    continue
                user = prompt.messages[1]["content"]
                note = sample.last_discharge_id is not None and render_event(timeline[sample.last_discharge_id]) in user
                got = (prompt.events_dropped, note, prompt.n_tokens)
                assert prompt.fits and prompt.n_tokens <= budget and user.endswith(task.prompt_instruction)
                text = tok.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
                assert prompt.n_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
                if by_pieces:
                    assert got == expected
                else:
                    assert expected[0] <= prompt.events_dropped <= expected[0] + 1 or note != expected[1]
                fewest += got == expected
                notes += sample.last_discharge_id is not None and not note
                checked += 1
                cut += prompt.events_dropped > 0
    assert checked >= 60 and cut >= 30, (checked, cut)
    assert fewest >= 0.95 * checked, (fewest, checked)
    if by_pieces:
        assert notes >= 1, "no prompt needed its previous note dropped: the fallback went untested"


def test_thinking_switch(tokenizer):
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "x"}]
    off = generation_prompt(tokenizer, messages, thinking=False)
    on = generation_prompt(tokenizer, messages, thinking=True)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and on.endswith("<|im_start|>assistant\n")
    closed = generation_prompt(tokenizer, messages, thinking=False, switch=ThinkingSwitch.closed_think)
    assert closed == on + CLOSED_THINK == on + "<think>\n\n</think>\n"
    assert generation_prompt(tokenizer, messages, thinking=True, switch=ThinkingSwitch.closed_think) == on


def test_the_embedded_tokenizer_loads_as_autotokenizer_would_without_its_model_registry(tokenizer):
    """The export's processes load it without transformers' model registry (seconds each); the tokenizer is
    the one AutoTokenizer gives: same class, vocabulary, encodings and chat template."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    assert type(auto) is type(tokenizer) and auto.get_vocab() == tokenizer.get_vocab()
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Na 140 <think>"}]
    for thinking in (False, True):
        assert generation_prompt(auto, messages, thinking) == generation_prompt(tokenizer, messages, thinking)
    assert auto("## Labs\n| a | b |\n")["input_ids"] == tokenizer("## Labs\n| a | b |\n")["input_ids"]
    probe = (
        "import sys\nfrom ehrr1.models.tokenizer import load_tokenizer\n"
        f"load_tokenizer({tokenizer.name_or_path!r})\n"
        "print('transformers.models.auto.modeling_auto' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_export_is_readable_by_datasets_and_byte_stable(store, registry, index_root, tokenizer, tmp_path):
    mix = {"labevents": 5, "diagnoses_ccs": 5, "ED_Hospitalization": 4, "next_event": 5}
    selected = select(read_index(index_root, mix), mix, registry, SelectionSettings(min_events=0))
    builder = PromptBuilder(tokenizer, 1024)
    report = export_samples(selected, store, registry, builder, tmp_path / "a", list(mix), progress=False)
    # units of 3 patients (a one-shard cohort cut in many units) in 2 workers: the same bytes
    small_units = export_samples(
        selected, store, registry, builder, tmp_path / "b", list(mix), 2, progress=False, unit_patients=3
    )
    assert small_units == report
    with pytest.raises(UserError, match=r"export.unit_patients must be >= 1 \(patients per work unit\), got 0"):
        export_samples(selected, store, registry, builder, tmp_path / "c", list(mix), progress=False, unit_patients=0)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    data = load_dataset("json", data_files=str(tmp_path / "a" / "train.jsonl"), split="train")
    assert data.num_rows == report["totals"]["train"] > 0
    record = data[0]
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["messages"][2]["content"] == "\n".join(record["target"])
    assert record["prompt_tokens"] <= 1024 and record["task"] in mix
    lines = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in lines}) == len(lines)
    risk = report["splits"]["train"]["ED_Hospitalization"]
    assert risk["yes"] == risk["no"] == 2
    assert "| ED_Hospitalization | 4 | 2 | 2 |" in (tmp_path / "a" / "stats.md").read_text()


EXPORT_SCRIPT = """
import sys
from ehrr1.data.timeline import TimelineStore
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.tasks.export import export_samples
from ehrr1.tasks.index import read_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.select import SelectionSettings, select
timelines, index, tokenizer, out = sys.argv[1:5]
mix = {"labevents": 60, "chartevents": 60, "Inpatient_Mortality": 20}
registry = TaskRegistry()
selected = select(read_index(index, mix), mix, registry, SelectionSettings(min_events=0))
builder = PromptBuilder(load_tokenizer(tokenizer), 512)
export_samples(selected, TimelineStore(timelines), registry, builder, out, list(mix), num_workers=1, progress=False)
"""


@pytest.mark.slow
def test_parallel_export_equals_sequential_and_resumes_after_kill(timelines_root, index_root, tokenizer, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.tasks.export import PARTS
    from ehrr1.tasks.registry import TaskRegistry

    args = [str(timelines_root), str(index_root), tokenizer.name_or_path]
    subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, *args, str(tmp_path / "sequential")], check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, *args, str(killed)])
    deadline = time.time() + 120
    while not list((killed / PARTS).glob("stats-*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.jsonl").exists(), "the export finished before it could be killed"
    finished = sorted((killed / PARTS).glob("stats-*.json"))
    assert finished
    mix = {"labevents": 60, "chartevents": 60, "Inpatient_Mortality": 20}
    registry = TaskRegistry()
    selected = select(read_index(index_root, mix), mix, registry, SelectionSettings(min_events=0))
    builder = PromptBuilder(load_tokenizer(tokenizer.name_or_path), 512)
    store = TimelineStore(timelines_root)
    export_samples(selected, store, registry, builder, killed, list(mix), num_workers=2, progress=False)
    export_samples(selected, store, registry, builder, tmp_path / "parallel", list(mix), num_workers=2, progress=False)
    for split in ("train", "val", "test"):
        reference = (tmp_path / "sequential" / f"{split}.jsonl").read_bytes()
        assert reference and (tmp_path / "parallel" / f"{split}.jsonl").read_bytes() == reference
        assert (killed / f"{split}.jsonl").read_bytes() == reference
    assert not (killed / PARTS).exists()


def test_only_tokenizers_that_split_at_line_starts_are_counted_by_pieces(tokenizer, timelines_root):
    """GPT-2's and Qwen2's splits (Llama 3's too) qualify; a normaliser that rewrites text, an unknown split,
    an added token holding a newline, or a template that changes the user's text do not."""
    import copy
    import json

    from tokenizers import AddedToken, normalizers

    from ehrr1.tasks.token_count import LLAMA3_SPLIT, PieceCounter, _cuts_at_line_starts

    def spec(tok):
        return json.loads(tok.backend_tokenizer.to_str())

    qwen = _qwen_style_tokenizer(timelines_root)
    assert _cuts_at_line_starts(spec(tokenizer)) and _cuts_at_line_starts(spec(qwen))
    llama = spec(qwen)
    llama["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = LLAMA3_SPLIT
    assert _cuts_at_line_starts(llama)
    other = spec(qwen)
    other["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\S+|\s+"
    assert not _cuts_at_line_starts(other)
    assert not _cuts_at_line_starts(spec(_lowercasing(tokenizer)))
    with_newline = copy.deepcopy(tokenizer)
    with_newline.add_tokens([AddedToken("\n## ", special=False)])
    assert not _cuts_at_line_starts(spec(with_newline))
    nfc = copy.deepcopy(tokenizer)
    nfc.backend_tokenizer.normalizer = normalizers.NFC()
    assert PieceCounter.for_tokenizer(nfc, SYSTEM_PROMPT) is not None
    stripping = copy.deepcopy(tokenizer)
    stripping.chat_template = stripping.chat_template.replace("message['content']", "message['content'] | trim")
    assert PieceCounter.for_tokenizer(stripping, SYSTEM_PROMPT) is None
    assert PieceCounter.for_tokenizer(tokenizer, SYSTEM_PROMPT).counts(["## a\n\n", "b"], last=True) == [
        len(tokenizer("## a\n\n", add_special_tokens=False)["input_ids"]),
        len(tokenizer("b", add_special_tokens=False)["input_ids"]),
    ]


@pytest.mark.slow
def test_pre_token_counts_equal_the_tokenizers_own(tokenizer, timelines_root):
    """The Python split and the pre-token memo count exactly what the tokenizer encodes, for GPT-2's, Qwen2's
    and Llama 3's splits, on rendered events and on texts built to catch the splits' edge cases (runs of
    spaces, added tokens). Texts with characters other than ASCII and Latin ones are left to the tokenizer,
    and so is every text of a tokenizer with an added token that strips the spaces beside it."""
    import itertools
    import json

    from tokenizers import AddedToken, Tokenizer

    from ehrr1.tasks.token_count import LLAMA3_SPLIT, PreTokenCounter

    qwen = _qwen_style_tokenizer(timelines_root).backend_tokenizer
    llama_spec = json.loads(qwen.to_str())
    llama_spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = LLAMA3_SPLIT
    llama = Tokenizer.from_str(json.dumps(llama_spec))
    events = [render_events(t) for t in itertools.islice(TimelineStore(timelines_root), 12)]
    tricky = [
        "", "x", "\n\nx", "a  \n\n  b", "   x", "x   ", "it's 12345.678 mg/dL\t|  9 |\r\nHe'LL", "!!!\n\n\n#",
        "| 2150-03-01 10:00:00 | Glucose | 105 | mg/dL |\n\n## Next", " \t \n", "12,000ml's", "a\r\r\n \nb",
        "a \xa0 b", " lead", "  lead", "two  spaces", "a   b  \n  c ", "a \n \n  b", "end  ", "tab\t x",
        "<|im_start|>user\n## a b<|im_end|>\n", "x<think> y</think>",
    ]  # fmt: skip
    for backend in (tokenizer.backend_tokenizer, qwen, llama):
        counter = PreTokenCounter.for_backend(backend)
        assert counter is not None
        for text in tricky + events + [e + "x" for e in events]:
            assert counter.count(text) == len(backend.encode(text, add_special_tokens=False).ids), repr(text[:80])
        assert counter.count("37.2 °C, 5 µg, Ångström") == len(backend.encode("37.2 °C, 5 µg, Ångström").ids)
        assert counter.count("5 \u2009g") is None and counter.count("\x85") is None and counter.count("日") is None
    stripping = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    stripping.add_tokens([AddedToken("[MASK]", lstrip=True)])  # takes the spaces before it: not countable here
    assert PreTokenCounter.for_backend(stripping) is None
