"""Helpers shared by the benchmarks: fresh-process measurement, peak RSS, profiles, model shapes."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def peak_rss_mb() -> float:
    """Peak resident memory in MiB of this process or any of its finished worker processes, whichever is
    larger (Linux reports ru_maxrss in KiB; for children it is the largest single child)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def architecture(name: str):
    """The ``ArchitectureConfig`` of ``conf/model/<name>.yaml`` (a model shape to initialise at random)."""
    from omegaconf import OmegaConf

    from ehrr1.config import ArchitectureConfig

    node = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml").architecture
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ArchitectureConfig), node))


def measure(script: str, *args: str) -> dict:
    """Run ``script --_measure args...`` in a fresh Python process and return the JSON it prints last."""
    done = subprocess.run([sys.executable, script, "--_measure", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} --_measure {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# what makes the host wait for the device (an .item(), a copy to the host, an explicit synchronise)
HOST_SYNCS = ("aten::_local_scalar_dense", "aten::item", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def profile_summary(prof, wall_s: float, on_cuda: bool, top: int = 12) -> dict:
    """A finished ``torch.profiler.profile``'s top operators / kernels by self time (device time on CUDA),
    host syncs, and on CUDA the share of the wall time the device was busy (the rest: CPU gaps)."""
    events = prof.key_averages()
    key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]
    summary: dict = {
        "profiled_wall_s": round(wall_s, 3),
        "top": [{"name": e.key[:80], "self_ms": round(getattr(e, key) / 1e3, 2), "calls": e.count} for e in ranked],
        "host_syncs": {e.key: e.count for e in events if e.key in HOST_SYNCS},
    }
    if on_cuda:
        busy_s = sum(e.self_device_time_total for e in events) / 1e6
        summary["device_busy_share"] = round(busy_s / wall_s, 3)
    return summary
