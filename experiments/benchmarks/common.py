"""Helpers shared by the benchmarks: fresh-process measurement and peak RSS."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """Peak resident memory in MiB of this process or any of its finished worker processes, whichever is
    larger (Linux reports ru_maxrss in KiB; for children it is the largest single child)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def measure(script: str, *args: str) -> dict:
    """Run ``script --_measure args...`` in a fresh Python process and return the JSON it prints last."""
    done = subprocess.run([sys.executable, script, "--_measure", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} --_measure {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
