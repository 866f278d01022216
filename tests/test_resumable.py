"""The resumable work directory and ledger every long job goes through (the kill -9 tests of each job are
beside the job; these pin the shared rules on their own)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ehrr1.errors import ForeignOutputError
from ehrr1.resumable import Ledger, WorkDir


def test_a_claimed_directory_resumes_its_own_units_and_clears_another_inputs(tmp_path):
    work = WorkDir(tmp_path / "out", "key-1", "test output")
    work.claim()
    with work.commit("a.txt") as tmp:
        tmp.write_text("a")
    (work.path / "b.txt.123.tmp").write_text("half of b")  # a killed run's temporary
    assert work.pending(["a", "b"], lambda u: f"{u}.txt") == ["b"]
    assert not work.is_done()

    work.claim()  # the same inputs: a resume keeps the finished unit, drops the temporary
    assert (work.path / "a.txt").read_text() == "a" and not (work.path / "b.txt.123.tmp").exists()
    work.finish({"units": 2})
    assert work.is_done() and work.read_manifest() == {"units": 2, "fingerprint": "key-1"}

    other = WorkDir(tmp_path / "out", "key-2", "test output")
    assert not other.is_done()
    other.claim()  # other inputs: nothing of the old build is taken for the new one
    assert sorted(p.name for p in other.path.iterdir()) == ["state.json"]


def test_a_failed_commit_leaves_neither_the_unit_nor_a_temporary(tmp_path):
    work = WorkDir(tmp_path / "out", "k", "test output")
    work.claim()
    with pytest.raises(RuntimeError), work.commit("unit.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in work.path.iterdir()) == ["state.json"]


def test_directories_of_files_not_ours_are_refused_or_cleared_as_asked(tmp_path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "results.csv").write_text("keep me")
    with pytest.raises(ForeignOutputError, match=r"theirs is not empty and holds no test output .*: pick another"):
        WorkDir(foreign, "k", "test output").claim(foreign="pick another")
    with pytest.raises(ForeignOutputError, match="holds no test output"):
        WorkDir(foreign, "k", "test output").build_whole(lambda tmp: {}, foreign="pick another")
    assert (foreign / "results.csv").read_text() == "keep me"
    WorkDir(foreign, "k", "scratch").claim()  # no refusal asked for: a scratch directory is ours to clear
    assert not (foreign / "results.csv").exists()


def test_a_whole_directory_is_replaced_only_when_its_inputs_change(tmp_path):
    calls = []

    def write(tmp):
        calls.append(tmp)
        (tmp / "data.txt").write_text(str(len(calls)))
        return {"n": len(calls)}

    first = WorkDir(tmp_path / "c", "v1", "cohort").build_whole(write, foreign="-")
    again = WorkDir(tmp_path / "c", "v1", "cohort").build_whole(write, foreign="-")
    assert first == again == {"n": 1, "fingerprint": "v1"} and len(calls) == 1
    changed = WorkDir(tmp_path / "c", "v2", "cohort").build_whole(write, foreign="-")
    assert changed["n"] == 2 and (tmp_path / "c" / "data.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary left beside it


KILLED_WRITER = r"""
import sys, time
from ehrr1.resumable import Ledger
with Ledger(sys.argv[1], key="id").appending() as append:
    append([{"id": "a"}, {"id": "b"}])
    with open(sys.argv[1], "a") as raw:  # a row cut by the kill, as a write of the next batch would leave it
        raw.write('{"id": "c", "tex')
        raw.flush()
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_killed_ledger_keeps_its_whole_rows_and_resumes_without_duplicates(tmp_path):
    path = tmp_path / "results.jsonl"
    job = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert job.stdout is not None and job.stdout.readline().strip() == "ready"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    ledger = Ledger(path, key="id")
    assert list(ledger.rows()) == ["a", "b"]
    with ledger.appending() as append:
        append([{"id": "c", "text": "é"}])
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["a", "b", "c"]
    assert Ledger(path, key="id").rows()["c"]["text"] == "é"


class Killed(BaseException):
    """A kill, as the code sees one: not an Exception, so nothing catches it on the way."""


def _directory(path, text: str):
    path.mkdir()
    (path / "weights").write_text(text)


@pytest.mark.parametrize("swap", [True, False], ids=["atomic swap", "set aside"])
def test_a_directory_being_replaced_is_never_lost_to_a_kill(tmp_path, monkeypatch, swap):
    """A kill at the step that moves a new directory into place leaves the old one or the new one whole, never
    neither; without an atomic swap the next run puts the old one back."""
    import os

    from ehrr1 import utils

    final = tmp_path / "hf"
    _directory(final, "old")
    if not swap:
        monkeypatch.setattr(utils, "exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the kill comes when the new directory is about to take the name
        calls.append((src, dst))
        if Path(dst) == final:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    with pytest.raises(Killed) if not swap else contextlib.nullcontext(), utils.atomic_output(final) as tmp:
        _directory(tmp, "new")
    monkeypatch.setattr(utils.os, "replace", real_replace)
    utils.fresh_temporary(final)  # what the next run does first
    assert (final / "weights").read_text() == ("new" if swap else "old")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary left
