"""Benchmark: does the synthetic cohort behave like MIMIC-IV? Every task's yield, prevalence and signal, and
every table's rows per admission / ICU stay / ED stay, beside published MIMIC-IV figures.

Prints one JSON line and writes a markdown table (``--markdown``). The cohort is built with the real CLI
(``synthesize.py pipeline=index`` over all 46 tasks, then ``pipeline=instructions`` for the risk tasks);
then, per task:

- **indexed**: samples the reference's rules index; **selected**: those passing its context filter
  (10 < events < 100, admission inside the window for procedures / diagnoses, chartevents < 10 targets),
  every one taken (no counts, no balance), per 2,000 patients; pass: >= ``--min-yield``;
- **prevalence** (risk tasks) over the indexed samples, the population the published figures count (the
  selected samples' beside it), against the anchor's range;
- **tabular AUROC** (risk tasks): ``ehrr1.evaluation.tabular``'s logistic regression on concept counts,
  cross-fitted over the exported samples (up to ``--test-per-task`` x (1 + ``--train-factor``) per task,
  drawn as the reference draws unbalanced risk samples: weight 1 / label frequency, so the rarer label is
  drawn more often; AUROC does not depend on the mix) in ``--folds`` groups of patients, each group scored by
  the baseline fitted on the others, with a 95 % bootstrap interval; pass: within ``--auroc-tolerance`` of the
  anchor, or inside the anchor's ``aim`` where no published figure exists; not judged ("too few") when fewer
  than ``--min-minority`` samples carry the rarer label.

Per table: rows per admission (hosp, note), ICU stay (icu) or ED stay (ed) against MIMIC-IV v2.2's; pass:
within a factor ``--rows-factor``. Anchors and their sources: ``cohort_anchors.yaml`` beside this file.

    python experiments/benchmarks/cohort_realism.py [--patients 2000] [--seed 0] [--root data/bench/realism]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ANCHORS = Path(__file__).with_name("cohort_anchors.yaml")
DOCS = REPO / "docs" / "assets" / "cohort"
PER = {"patient": "patients", "admission": "admissions", "icustay": "icustays", "edstay": "edstays"}


def synthesize(root: Path, args: argparse.Namespace, *overrides: str) -> None:
    command = [
        sys.executable,
        str(REPO / "synthesize.py"),
        f"data_root={root}",
        f"data.synthetic.n_patients={args.patients}",
        f"data.synthetic.seed={args.seed}",
        "progress=false",
        *overrides,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def task_counts(index_dir: Path, registry: Any) -> dict[str, dict[str, Any]]:
    """Per task: indexed and selected samples (the reference's filters, all taken), prevalence, test split."""
    import pyarrow.compute as pc

    from ehrr1.config import SelectionSettings
    from ehrr1.tasks.index import iter_index
    from ehrr1.tasks.select import select

    settings = SelectionSettings(balance=False)
    out: dict[str, dict[str, Any]] = {}
    for task in registry.tasks.values():
        indexed = positives = 0
        for batch in iter_index(index_dir, task.name):
            indexed += batch.num_rows
            if task.kind.value == "risk":
                positives += pc.sum(pc.equal(pc.list_element(batch.column("target"), 0), "yes")).as_py() or 0
        chosen = select(lambda name: iter_index(index_dir, name), {task.name: -1}, registry, settings)
        row: dict[str, Any] = {"kind": task.kind.value, "indexed": indexed, "selected": chosen.num_rows}
        row["selected_test"] = pc.sum(pc.equal(chosen.column("split"), "test")).as_py() or 0
        if task.kind.value == "risk":
            yes = pc.sum(pc.equal(pc.list_element(chosen.column("target"), 0), "yes")).as_py() or 0
            row["prevalence"] = positives / indexed if indexed else None
            row["selected_prevalence"] = yes / chosen.num_rows if chosen.num_rows else None
        out[task.name] = row
    return out


def tabular_auroc(export_dir: Path, tasks: list[str], folds: int, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """The tabular baseline's AUROC per risk task, cross-fitted: the exported samples (every split) fall into
    ``folds`` groups by patient, and each group is scored by the baseline fitted on the others, so every sample
    is a test sample once and no patient is scored by a model that saw it. A 95 % bootstrap interval beside it."""
    from ehrr1.config import TabularSettings
    from ehrr1.evaluation.harness import read_bench
    from ehrr1.evaluation.report import bootstrap
    from ehrr1.evaluation.tabular import TabularBaseline
    from ehrr1.tasks.metrics import auroc

    records = [r for split in ("train", "val", "test") for r in read_bench(export_dir / f"{split}.jsonl", tasks)]
    fold_of = {s: i % folds for i, s in enumerate(sorted({r["subject_id"] for r in records}))}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for fold in range(folds):
        held = [r for r in records if fold_of[r["subject_id"]] == fold]
        rest = [r for r in records if fold_of[r["subject_id"]] != fold]
        for row in TabularBaseline(TabularSettings()).fit(rest, set(tasks)).predict(held):
            by_task[row["task"]].append(row)
    out = {}
    for task, scored in by_task.items():
        labels = [r["target"][0] for r in scored]
        value = auroc(labels, [r["p_yes"] for r in scored])
        low, high = bootstrap("auroc", scored, n_boot, seed) if value is not None else (None, None)
        minority = min(labels.count("yes"), labels.count("no"))
        out[task] = {"auroc": value, "ci": [low, high], "test": len(scored), "minority": minority}
    return out


def table_rows(cohort_json: Path, anchors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows per admission / ICU stay / ED stay of each table, beside MIMIC-IV's."""
    rows = json.loads(cohort_json.read_text())["rows"]
    totals = anchors["totals"]
    out = {}
    for table, anchor in anchors["tables"].items():
        if anchor.get("mimic_rows") is None or table in PER.values():
            continue
        per = PER[anchor["per"]]
        mimic = anchor["mimic_rows"] / totals[per]
        if table not in rows:  # a table the generator does not write: not judged
            out[table] = {"per": per, "ours": None, "mimic": mimic, "ratio": None}
            continue
        ours = rows[table] / max(1, rows.get(per, 0))
        out[table] = {"per": per, "ours": ours, "mimic": mimic, "ratio": ours / mimic if mimic else None}
    return out


def verdicts(tasks: dict, auroc: dict, tables: dict, anchors: dict, args: argparse.Namespace) -> None:
    """A pass / fail (None: nothing to judge) on each row, in place."""
    scale = 2000 / args.patients
    for name, row in tasks.items():
        row["yield_per_2000"] = row["selected"] * scale
        row["yield_pass"] = row["yield_per_2000"] >= args.min_yield
        anchor = anchors["risk_tasks"].get(name)
        if row["kind"] != "risk" or anchor is None:
            continue
        prevalence = anchor.get("prevalence") or {}
        low, high = prevalence.get("range") or prevalence.get("aim") or (None, None)  # aim: no published figure
        row["prevalence_anchor"] = prevalence.get("value")
        row["prevalence_range"] = [low, high]
        row["prevalence_pass"] = None if low is None or row["prevalence"] is None else low <= row["prevalence"] <= high
        found = auroc.get(name, {})
        row.update({"auroc": found.get("auroc"), "auroc_ci": found.get("ci"), "auroc_test": found.get("test", 0)})
        row["auroc_minority"] = found.get("minority", 0)
        published = anchor.get("auroc") or {}
        if published.get("value") is not None:
            lo, hi = published["value"] - args.auroc_tolerance, published["value"] + args.auroc_tolerance
            row["auroc_anchor"] = published["value"]
        else:
            lo, hi = published.get("aim") or (0.65, 0.92)
            row["auroc_anchor"] = None
        row["auroc_range"] = [round(lo, 3), round(hi, 3)]
        too_few = row["auroc"] is None or row["auroc_minority"] < args.min_minority  # an AUROC of a few cases is noise
        row["auroc_pass"] = None if too_few else lo <= row["auroc"] <= hi
    for row in tables.values():
        row["pass"] = None if row["ratio"] is None else 1 / args.rows_factor <= row["ratio"] <= args.rows_factor


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "pass" if value else "**fail**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def span(pair: list | None, digits: int) -> str:
    low, high = pair or (None, None)
    return f"{fmt(low, digits)}–{fmt(high, digits)}"


def risk_cells(r: dict[str, Any]) -> str:
    """The prevalence and AUROC cells of a risk task's row."""
    anchor = fmt(r.get("auroc_anchor"), 2) if r.get("auroc_anchor") is not None else "aim"
    verdict = "too few" if r.get("auroc_pass") is None and r.get("auroc") is not None else fmt(r.get("auroc_pass"))
    return (
        f"{fmt(r.get('prevalence'), 3)} ({fmt(r.get('selected_prevalence'), 3)}) | "
        f"{span(r.get('prevalence_range'), 3)} | {fmt(r.get('prevalence_pass'))} | "
        f"{fmt(r.get('auroc'), 3)} [{span(r.get('auroc_ci'), 3)}] ({r.get('auroc_test', 0)}, "
        f"{r.get('auroc_minority', 0)}) | {anchor} {span(r.get('auroc_range'), 2)} | {verdict} |"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Cohort realism: {result['patients']:,} patients, seed {result['seed']} "
        f"({result['passed']} of {result['judged']} checks pass)",
        "",
        "| task | indexed | selected | per 2,000 | yield | prevalence (selected) | anchor range | prev. "
        "| tabular AUROC [95 % CI] (scored n, rarer label n) | anchor | AUROC |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for name, r in result["tasks"].items():
        cells = risk_cells(r) if r["kind"] == "risk" else "| | | | | |"
        counts = f"{r['indexed']} | {r['selected']} | {r['yield_per_2000']:.0f}"
        lines.append(f"| {name} | {counts} | {fmt(r['yield_pass'])} | {cells}")
    lines += [
        "",
        "| table | rows per | ours | MIMIC-IV v2.2 | ours / MIMIC-IV | within 2x |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for table, r in result["tables"].items():
        ratio = f"{fmt(r['ratio'])} | {fmt(r['pass'])}"
        ours = "not generated" if r["ours"] is None else f"{r['ours']:.2f}"
        lines.append(f"| {table} | {r['per'].rstrip('s')} | {ours} | {r['mimic']:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


def anchors_markdown(anchors: dict[str, Any]) -> str:
    """The anchors (``cohort_anchors.yaml``) as the user guide shows them: per risk task the published prevalence
    and AUROC with their sources, or the aimed range and why."""

    def cell(node: dict[str, Any], digits: int) -> str:
        if node.get("value") is not None:
            low, high = node.get("range") or (None, None)
            within = f" (pass: {fmt(low, digits)}–{fmt(high, digits)})" if low is not None else ""
            return f"{node['value']:.{digits}f}{within}"
        low, high = node["aim"]
        return f"none published; aim {low:g}–{high:g}"

    def why(node: dict[str, Any]) -> str:
        text = node.get("source") or node.get("reason") or ""
        differs = node.get("differs")
        return " ".join(f"{text} Differs: {differs}".split()) if differs else " ".join(text.split())

    lines = [
        "| task | MIMIC-IV prevalence | where from | tabular AUROC | where from |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, anchor in anchors["risk_tasks"].items():
        prevalence, auroc = anchor["prevalence"], anchor["auroc"]
        lines.append(f"| {name} | {cell(prevalence, 3)} | {why(prevalence)} | {cell(auroc, 3)} | {why(auroc)} |")
    totals = anchors["totals"]
    lines += [
        "",
        "| table | rows per | MIMIC-IV v2.2 rows | per stay | where from |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for table, row in anchors["tables"].items():
        if row.get("mimic_rows") is None or table in PER.values():
            continue
        density = row["mimic_rows"] / totals[PER[row["per"]]]
        lines.append(f"| {table} | {row['per']} | {row['mimic_rows']:,} | {density:.2f} | {row['source']} |")
    return "\n".join(lines) + "\n"


SOURCES = {  # the abbreviations cohort_anchors.yaml's sources use, as the README names them
    "XIE2022": "[Xie 2022](https://github.com/nliulab/mimic4ed-benchmark)",
    "MEDSTAB": "[MEDS-Tab](https://github.com/mmcdermott/MEDS_Tabular_AutoML)",
    "Diagnostics 2022": "[Diagnostics 2022](https://doi.org/10.3390/diagnostics12051068)",
    "model card": "[a model card](https://huggingface.co/IsaacT1992/hospital-readmission-xgboost)",
}
README = REPO / "README.md"
README_MARKERS = ("<!-- anchors:begin (cohort_realism.py --docs) -->", "<!-- anchors:end -->")


def anchors_summary(anchors: dict[str, Any]) -> str:
    """The README's short anchor table: per risk task the published figure (or the aimed range) and its source."""

    def cell(node: dict[str, Any]) -> str:
        if node.get("value") is not None:
            low, high = node.get("range") or (None, None)
            return f"{node['value']:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None else "")
        low, high = node["aim"]
        return f"aim {low:g}–{high:g}"

    def cited(*nodes: dict[str, Any]) -> str:
        text = " ".join(f"{n.get('source') or ''} {n.get('reason') or ''}" for n in nodes)
        return ", ".join(link for key, link in SOURCES.items() if key in text) or "clinical reasoning"

    lines = ["| task | MIMIC-IV prevalence | tabular AUROC | from |", "| --- | --- | --- | --- |"]
    for name, anchor in anchors["risk_tasks"].items():
        prevalence, auroc = anchor["prevalence"], anchor["auroc"]
        lines.append(f"| {name} | {cell(prevalence)} | {cell(auroc)} | {cited(prevalence, auroc)} |")
    return "\n".join(lines) + "\n"


def with_summary(readme: str, summary: str) -> str:
    """The README with its anchor table replaced by ``summary``."""
    begin, end = README_MARKERS
    head, rest = readme.split(begin, 1)
    return f"{head}{begin}\n{summary}{end}{rest.split(end, 1)[1]}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=str(REPO / "data" / "bench" / "realism"))
    parser.add_argument("--test-per-task", type=int, default=300, help="risk samples scored per task (at most)")
    parser.add_argument("--train-factor", type=float, default=4, help="training samples per test sample")
    parser.add_argument("--min-yield", type=float, default=100, help="selected samples per 2,000 patients")
    parser.add_argument("--auroc-tolerance", type=float, default=0.07)
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the tabular AUROC")
    parser.add_argument(
        "--min-minority", type=int, default=20, help="AUROC judged only with this many samples of the rarer label"
    )
    parser.add_argument("--rows-factor", type=float, default=2.0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--markdown", default=None, help="default: <root>/cohort_realism.md")
    parser.add_argument(
        "--docs", action="store_true", help="also write the tables the user guide includes (docs/assets/cohort/)"
    )
    args = parser.parse_args(argv)

    from ehrr1.tasks.registry import TaskRegistry

    anchors = yaml.safe_load(ANCHORS.read_text())
    registry = TaskRegistry()
    root = Path(args.root)
    name = f"synthetic_n{args.patients}_seed{args.seed}"
    mixes = root / "mixes"
    mixes.mkdir(parents=True, exist_ok=True)
    every = mixes / "all_tasks.json"
    every.write_text(json.dumps({t: -1 for t in registry.tasks}))
    risk = [t.name for t in registry.tasks.values() if t.kind.value == "risk"]
    risk_mix = mixes / "risk.json"
    risk_mix.write_text(json.dumps({t: args.test_per_task for t in risk}))

    started = time.perf_counter()
    synthesize(root, args, "pipeline=index", f"task_mix.file={every}", "task_mix.name=realism_all")
    build_s = time.perf_counter() - started
    tasks = task_counts(root / "index" / name, registry)
    synthesize(
        root,
        args,
        "pipeline=instructions",
        f"task_mix.file={risk_mix}",
        "task_mix.name=realism_risk",
        "selection.balance=false",  # no equal counts: the reference's draw weighted by 1 / label frequency
        "task_mix.min_events=10",  # the reference's context filter (the main mix turns it off)
        f"task_mix.split_factor.train={args.train_factor}",
        "model.max_input_tokens=4096",
    )
    export_dir = next((root / "instructions" / name / "realism_risk").iterdir())
    auroc = tabular_auroc(export_dir, risk, args.folds, args.bootstrap, args.seed)
    tables = table_rows(root / "mimic-iv-synthetic" / f"n{args.patients}_seed{args.seed}" / "cohort.json", anchors)
    verdicts(tasks, auroc, tables, anchors, args)
    checks = [v for r in tasks.values() for k, v in r.items() if k.endswith("_pass") and v is not None] + [
        r["pass"] for r in tables.values() if r["pass"] is not None
    ]
    result = {
        "benchmark": "cohort_realism",
        "patients": args.patients,
        "seed": args.seed,
        "build_s": round(build_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "passed": sum(checks),
        "judged": len(checks),
        "tasks": tasks,
        "tables": tables,
    }
    report = Path(args.markdown or root / "cohort_realism.md")
    report.write_text(markdown(result))
    if args.docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        (DOCS / "anchors.md").write_text(anchors_markdown(anchors))
        README.write_text(with_summary(README.read_text(), anchors_summary(anchors)))
        (DOCS / f"realism_n{args.patients}_seed{args.seed}.md").write_text(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
