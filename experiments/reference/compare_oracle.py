"""Compare ehrr1's samples with the EHR-R1 reference's, dumped by the reforacle tool (shared/tools/reforacle).

    python experiments/reference/compare_oracle.py --oracle <oracle out dir> --mimic <MIMIC-IV-layout dir> \
        [--mapping-dir <oracle work>/datas/index_mapping/hosp] [--work <scratch dir>] [--json figures.json]

Builds timelines (default settings: runs, reference markdown) and the index of all 46 tasks in the work
dir, renders every indexed sample with the prompt builder (no token budget) and matches each reference
sample by (task, subject, anchor index). Prints, per task and in total: reference samples, matched,
equal targets (as sets: the reference's order is hash order), byte-equal inputs, and samples only ehrr1
has; writes the figures as JSON with ``--json``. ``--mapping-dir`` builds with the CCS / ATC tables the
oracle's reference run read (its stand-ins, kept with ``run.sh ... --keep-work --work W``), so that a
difference of mapping table is not counted as a difference of rule.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.compute as pc

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader
from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.index import build_index, read_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.tasks.select import SelectionSettings, _filter


def reference_anchor(row: dict) -> int:
    if row["task_type"] == "decision_making":
        return row["context_end"]
    return row["context_end"] - 1 if row["event"] == "discharge" else row["context_begin"]


def ours(mimic: Path, work: Path, mapping_dir: Path | None = None) -> dict[tuple[str, str, int], dict]:
    modules = {m: mimic / m for m in ("hosp", "icu", "ed", "note") if (mimic / m).is_dir()}
    settings = TimelineBuildSettings(mapping_dir=None if mapping_dir is None else str(mapping_dir))
    build_timelines(MimicReader(modules), work / "timelines", settings, progress=False)
    registry = TaskRegistry()
    build_index(work / "timelines", work / "index", registry.tasks.values(), progress=False)
    index = read_index(work / "index", registry.names)
    selected = set()
    for task in registry.tasks.values():
        rows = _filter(task, index.filter(pc.equal(index.column("task"), task.name)), SelectionSettings())
        selected |= {
            (task.name, str(s), e)
            for s, e in zip(rows.column("subject_id").to_pylist(), rows.column("event").to_pylist(), strict=True)
        }
    store, builder = TimelineStore(work / "timelines"), PromptBuilder()
    by_subject = defaultdict(list)
    for row in index.to_pylist():
        by_subject[row["subject_id"]].append(row)
    out = {}
    for timeline in store:
        for row in by_subject.get(timeline.subject_id, []):
            sample = Sample(
                **{k: row[k] for k in Sample.__dataclass_fields__ if k != "target"}, target=tuple(row["target"])
            )
            prompt = builder.build(timeline, sample, registry[row["task"]])
            ehr = prompt.messages[1]["content"].rsplit("\n", 1)[0]
            key = (row["task"], str(row["subject_id"]), row["event"])
            out[key] = {"target": row["target"], "input": ehr, "selected": key in selected}
    return out


def compare(oracle: Path, mine: dict) -> dict:
    figures: dict[str, Counter] = defaultdict(Counter)
    seen = set()
    examples = {}
    with open(oracle / "samples.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            key = (row["task"], row["subject_id"], reference_anchor(row))
            counts = figures[row["task"]]
            counts["reference"] += 1
            if key not in mine:
                examples.setdefault((row["task"], "missing"), key)
                continue
            seen.add(key)
            counts["matched"] += 1
            label = row["label"] if isinstance(row["label"], list) else [row["label"]]
            counts["equal_target"] += set(label) == set(mine[key]["target"])
            equal = row["input"] == mine[key]["input"]
            counts["equal_input"] += equal
            counts["equal_selected"] += row["selected"] == mine[key]["selected"]
            if not equal:
                examples.setdefault((row["task"], "input"), key)
    for key in mine.keys() - seen:
        figures[key[0]]["only_ours"] += 1
        examples.setdefault((key[0], "only_ours"), key)
    total = Counter()
    for counts in figures.values():
        total.update(counts)
    return {
        "per_task": {k: dict(v) for k, v in figures.items()},
        "total": dict(total),
        "examples": {f"{t}/{kind}": list(k) for (t, kind), k in examples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, required=True)
    parser.add_argument("--mimic", type=Path, required=True)
    parser.add_argument("--mapping-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ehrr1-oracle-"))
    result = compare(args.oracle, ours(args.mimic, work, args.mapping_dir))
    columns = ("reference", "matched", "equal_target", "equal_input", "equal_selected", "only_ours")
    print(f"{'task':24} " + " ".join(f"{c:>14}" for c in columns))
    for task, c in [*sorted(result["per_task"].items()), ("total", result["total"])]:
        print(f"{task:24} " + " ".join(f"{c.get(name, 0):14d}" for name in columns))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
