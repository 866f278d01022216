"""Two evaluation results side by side: ``python -m ehrr1.evaluation.compare <dir A> <dir B> [--out DIR]``.

Reads each directory's ``report.json`` (as ``evaluate.py`` writes it), e.g. one model on our built
EHR-Bench and on the released one, and writes ``compare.md``, ``compare.json`` and ``compare.png`` (per
task: both scores with their 95 % intervals; macro per kind). Tasks present in only one are listed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ehrr1.errors import UserError
from ehrr1.evaluation.report import interval_text, notes, score_text, task_name
from ehrr1.utils import atomic_write_json, atomic_write_text


def read_report(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: pass result directories written by evaluate.py") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not a JSON report ({exc.msg})") from None


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per task (A's order, then B's extra tasks): metric, n, value and interval of each, and B - A."""
    tasks_a = {t["task"]: t for t in a["tasks"]}
    tasks_b = {t["task"]: t for t in b["tasks"]}
    rows = []
    for name in [*tasks_a, *(n for n in tasks_b if n not in tasks_a)]:
        ta, tb = tasks_a.get(name), tasks_b.get(name)
        first = ta or tb
        assert first is not None
        va, vb = (t["value"] if t else None for t in (ta, tb))
        rows.append(
            {
                "task": name,
                "kind": first["kind"],
                "metric": first["metric"],
                **{
                    f"{k}_{side}": (t[k] if t else None)
                    for side, t in (("a", ta), ("b", tb))
                    for k in ("n", "value", "ci_low", "ci_high")
                },  # fmt: skip
                "difference": None if va is None or vb is None else vb - va,
                "small_n": any(t.get("small_n", False) for t in (ta, tb) if t),
            }
        )
    macro = {
        kind: {side: report["macro"].get(kind, {}).get("value") for side, report in (("a", a), ("b", b))}
        for kind in ("decision", "risk")
    }
    return {"tasks": rows, "macro": macro}


def markdown(result: dict[str, Any], name_a: str, name_b: str) -> str:
    lines = [
        f"A: {name_a}  \nB: {name_b}",
        "",
        "| task | kind | metric | n A | A | A 95 % CI | n B | B | B 95 % CI | B − A |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for r in result["tasks"]:
        ci = {side: interval_text(r[f"ci_low_{side}"], r[f"ci_high_{side}"]) for side in "ab"}
        lines.append(
            f"| {task_name(r)} | {r['kind']} | {r['metric']} | {r['n_a'] or ''} | {score_text(r['value_a'])} | "
            f"{ci['a']} | {r['n_b'] or ''} | {score_text(r['value_b'])} | {ci['b']} | {score_text(r['difference'])} |"
        )
    lines.append("")
    for kind, m in result["macro"].items():
        lines.append(f"- macro {kind}: A {score_text(m['a'])}, B {score_text(m['b'])}")
    lines += [f"- {note}" for note in notes(result)]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path, name_a: str, name_b: str) -> Path:
    """Paired horizontal bars per task (A, B) with their intervals."""
    from ehrr1.evaluation.plots import interval_errors, plt, save_figure

    rows = result["tasks"]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    for offset, side, label in ((-0.2, "a", name_a), (0.2, "b", name_b)):
        y = [i + offset for i in range(len(rows))]
        values = [r[f"value_{side}"] or 0.0 for r in rows]
        errors = interval_errors(values, [r[f"ci_low_{side}"] for r in rows], [r[f"ci_high_{side}"] for r in rows])
        ax.barh(y, values, height=0.4, xerr=errors, capsize=2, alpha=0.8, label=label[-50:])
    ax.set_yticks(range(len(rows)), [f"{r['task']} ({r['metric']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def write_comparison(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path) -> dict[str, Path]:
    result = compare(read_report(dir_a), read_report(dir_b))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md"}
    atomic_write_json(paths["json"], {"a": str(dir_a), "b": str(dir_b), **result})
    atomic_write_text(paths["md"], markdown(result, str(dir_a), str(dir_b)))
    paths["png"] = chart(result, out / "compare.png", str(dir_a), str(dir_b))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="a result directory of evaluate.py (holding report.json)")
    parser.add_argument("b", help="another one")
    parser.add_argument("--out", default=None, help="where to write compare.{md,json,png} (default: A/compare)")
    args = parser.parse_args(argv)
    try:
        paths = write_comparison(args.a, args.b, args.out or Path(args.a) / "compare")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(paths["md"].read_text(encoding="utf-8"))
    print("written:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
