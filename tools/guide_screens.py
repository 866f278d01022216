"""Regenerate the screens the guide shows (``docs/assets/main-job/``) from a run of the main job.

    python tools/guide_screens.py --work /tmp/screens        # runs `python train.py` there (~15 min on 2 cores)
    python tools/guide_screens.py --run <train.py run folder> # copies from a run that already exists

Copies the evaluation's ``report.md``, ``scores.png`` and ``roc.png`` of the run, and the last lines the
main job printed (``main-job-tail.txt``), so that the guide's "Getting started" page shows what the main
job produces, as produced. Nothing here is edited by hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "docs" / "assets" / "main-job"
TAIL_LINES = 3  # the main job ends with three lines: what was trained, how it scored, where the report is


def run_main_job(work: Path) -> tuple[Path, str]:
    """``python train.py`` in ``work`` (its data under ``work/data``; a run already there is continued, and a
    finished one only prints its summary again); the run folder and what the job printed."""
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"data_root={work / 'data'}", f"run_dir={run_dir}", "progress=false"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    (work / "main-job.out").write_text(done.stdout, encoding="utf-8")
    (work / "main-job.err").write_text(done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"the main job failed:\n{done.stderr[-3000:]}")
    return run_dir, done.stdout  # what it prints; its log and progress bars go to stderr


def copy_screens(run_dir: Path, output: str | None) -> list[Path]:
    reports = sorted(run_dir.rglob("report.md"))
    if not reports:
        raise SystemExit(f"{run_dir}: no evaluation report (report.md) under it")
    evaluation = reports[-1].parent
    ASSETS.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("report.md", "scores.png", "roc.png"):
        source = evaluation / name
        if source.exists():
            shutil.copyfile(source, ASSETS / name)
            written.append(ASSETS / name)
    if output is not None:
        tail = [line for line in output.strip().splitlines() if line.strip()][-TAIL_LINES:]
        (ASSETS / "main-job-tail.txt").write_text("\n".join(tail) + "\n", encoding="utf-8")
        written.append(ASSETS / "main-job-tail.txt")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--work", type=Path, help="run the main job in this folder")
    where.add_argument("--run", type=Path, help="a train.py run folder to copy from")
    args = parser.parse_args()
    run_dir, output = run_main_job(args.work) if args.work else (args.run, None)
    for path in copy_screens(run_dir, output):
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
