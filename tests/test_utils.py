"""The shared work runner: shared arguments reach every worker, and workers die with a killed parent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ehrr1.utils import run_jobs


def _write(folder: str, suffix: str, name: str) -> None:
    Path(folder, name + suffix).write_text(str(os.getpid()))


def test_shared_arguments_reach_each_job_in_and_out_of_worker_processes(tmp_path):
    for workers in (1, 2):
        out = tmp_path / str(workers)
        out.mkdir()
        run_jobs(_write, [("a",), ("b",), ("c",)], workers, "test", False, shared=(str(out), ".txt"))
        assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "c.txt"]
        pids = {p.read_text() for p in out.iterdir()}
        assert (str(os.getpid()) in pids) == (workers == 1)


SLEEPERS = r"""
import os, sys, time
from pathlib import Path
from ehrr1.utils import run_jobs

def sleep(folder, i):
    Path(folder, f"{i}.pid").write_text(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    run_jobs(sleep, [(i,) for i in range(2)], 2, "sleep", False, shared=(sys.argv[1],))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(") ")[-1][0] != "Z"


def test_workers_die_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "sleepers.py"
    script.write_text(SLEEPERS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)
    deadline = time.time() + 60
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its killed parent"


def _fail(name: str) -> None:
    raise ValueError(name)


def test_a_failed_job_leaves_no_pool_thread_behind():
    """The pool is fully shut down before the error propagates: its manager thread left running races the
    interpreter's exit hook, which then prints a TypeError traceback after the user's one-line error."""
    import threading

    with pytest.raises(ValueError):
        run_jobs(_fail, [("a",), ("b",), ("c",), ("d",)], 2, "test", False)
    managers = [t for t in threading.enumerate() if type(t).__name__ == "_ExecutorManagerThread"]
    assert not [t for t in managers if t.is_alive()], managers
