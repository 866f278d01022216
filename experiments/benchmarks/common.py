"""Helpers shared by the benchmarks: fresh-process measurement and peak RSS."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(script: str, *args: str) -> dict:
    """Run ``script --_measure args...`` in a fresh Python process and return the JSON it prints last."""
    done = subprocess.run([sys.executable, script, "--_measure", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
