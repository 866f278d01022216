"""Benchmark: reading a release folder (index rows rendered from patient trajectories) at two sizes.

Prints one JSON line. The release is the test fixture (``tests/fixtures/release``: 3 patients, 1,109 index
rows) with its index CSV repeated ``--small`` and ``--large`` times, rows shuffled (the patients'
rows interleaved, as in a real index file). Each size is read in a fresh process through
``iter_released`` (what ``evaluate.py bench.path=<release>`` and ``task_mix.released`` read), the records
consumed one at a time; it reports rows/s and peak RSS. ``rss_large_over_small`` near 1 means memory does
not grow with the index (the rows are sorted out of core, one patient's trajectory is held at a time).

    python experiments/benchmarks/release_bundle.py [--small 1] [--large 40] [--root /tmp/release_bench]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.benchmarks.common import measure, peak_rss_mb  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "release"


def lay_out(root: Path, copies: int) -> Path:
    release = root / f"x{copies}"
    if release.exists():
        shutil.rmtree(release)
    (release / "ehr_bench").mkdir(parents=True)
    for name in ("patients_ehr", "index_mapping"):
        os.symlink(FIXTURE / name, release / name)
    with (FIXTURE / "ehr_bench" / "ehr_bench_oracle.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header, rows = next(reader), list(reader)
    rows = rows * copies
    random.Random(0).shuffle(rows)
    with (release / "ehr_bench" / "index.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return release


def read(release: str) -> None:
    from ehrr1.evaluation.released import iter_released
    from ehrr1.tasks.registry import TaskRegistry

    start, n, chars = time.perf_counter(), 0, 0
    for record in iter_released(release, TaskRegistry()):
        n += 1
        chars += len(record["messages"][1]["content"])
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                      "input_mb": round(chars / 2**20, 1), "peak_rss_mb": round(peak_rss_mb())}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1)
    parser.add_argument("--large", type=int, default=40)
    parser.add_argument("--root", type=Path, default=Path("/tmp/release_bench"))
    parser.add_argument("--_measure", dest="measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        read(args.measure)
        return
    small = measure(__file__, str(lay_out(args.root, args.small)))
    large = measure(__file__, str(lay_out(args.root, args.large)))
    print(json.dumps({"benchmark": "release_bundle", "small": small, "large": large,
                      "rss_large_over_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2),
                      "rows_large_over_small": round(large["rows"] / small["rows"], 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
