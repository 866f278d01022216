"""Small helpers shared by every pipeline step: atomic writes, input fingerprints, work over shards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def file_fingerprint(paths: Iterable[Path]) -> list[list[Any]]:
    """Cheap identity of input files (path, size, mtime): content hashing is too slow for MIMIC-IV."""
    out = []
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, int(st.st_mtime)])
    return out


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_jobs(job: Callable[..., Any], jobs: Sequence[tuple], num_workers: int, desc: str, progress: bool) -> None:
    """``job(*args)`` for every args tuple, in worker processes when ``num_workers > 1``, with a progress bar.

    Each job writes its own output atomically, so a killed run keeps what finished."""
    with tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs) as bar:
        if num_workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                for future in [pool.submit(job, *args) for args in jobs]:
                    future.result()
                    bar.update()
        else:
            for args in jobs:
                job(*args)
                bar.update()


def read_appended_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file that a resumable job appends to; a last line cut by a kill (not valid JSON, or
    not ended by a newline) is cut off the file, so the job redoes it and its next append starts a fresh line."""
    path = Path(path)
    if not path.exists():
        return []
    rows, good = [], 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
    if good < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good)
    return rows
