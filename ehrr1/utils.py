"""Small helpers shared by every pipeline step: atomic writes, locks, input fingerprints, work over shards."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ehrr1.errors import BusyOutputError, DataError, MissingInputError, UserError, note_progress

log = logging.getLogger(__name__)
_HELD: set[Path] = set()  # outputs this process holds the lock of (a producer may call another)


def keep_files_private(private: bool) -> None:
    """Create every file and folder of this process readable by its user alone (0600 / 0700: they hold patient
    text under a data use agreement), or, with ``private=False``, as the process's umask says."""
    if private:
        os.umask(0o077)


def temporary_path(final: str | Path) -> Path:
    """Where this process writes ``final`` before moving it into place: its own name, so no two processes
    ever write one temporary file."""
    final = Path(final)
    return final.with_name(f"{final.name}.{os.getpid()}.tmp")


def fresh_temporary(final: str | Path) -> Path:
    """:func:`temporary_path` of ``final``, with the temporaries that killed runs left beside it removed
    (call it holding :func:`locked`, so none of them is being written). A previous ``final`` set aside by a
    replacement that was killed half-way is put back first."""
    final = Path(final)
    for stale in sorted(final.parent.glob(f"{final.name}.*.tmp")):
        if stale.name.endswith(SET_ASIDE) and not final.exists():
            os.replace(stale, final)
            continue
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return temporary_path(final)


SET_ASIDE = ".old.tmp"  # where a replaced directory waits while its replacement moves in (no atomic swap)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so neither name is ever
    missing; False where the system or its file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def removed_on_failure(tmp: Path, final: str | Path | None = None) -> Iterator[Path]:
    """Yield ``tmp``; if the block fails (a full disk, a bad file, Ctrl-C) remove what it wrote there. A write
    error that names no file (a full disk mid-write) is given ``final``'s name, so its message says where."""
    try:
        yield tmp
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and final is not None:
            exc.filename = str(final)
        raise


@contextmanager
def locked(output: str | Path, wait: bool = True, key: str | None = None) -> Iterator[None]:
    """Hold ``<output>.lock`` (``filelock``) while building ``output``, so two runs never build one output at
    once: a second run waits, saying who holds it, then finds the output complete; with ``wait=False`` (a run
    folder, which a second run must not continue under the first) it is refused at once, naming the holder
    and the setting ``key`` that chose the folder. The kernel frees the lock when its holder dies, even by
    kill -9, so a crashed run never blocks the next."""
    from filelock import FileLock, Timeout

    output = Path(output).absolute()
    if output in _HELD:
        yield
        return
    path = output.with_name(output.name + ".lock")
    lock = FileLock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = path.read_text(encoding="utf-8").strip() or "another process"
            if not wait:
                raise BusyOutputError(
                    f"{key or 'the output'}={output} is being written by {holder} (lock: {path}): wait for that "
                    f"run to end, or give this one another {key or 'output folder'}"
                ) from None
            log.warning("%s is being built by %s; waiting for it to finish (lock: %s)", output, holder, path)
            lock.acquire()
    except PermissionError:  # a read-only folder: nobody can write the output there, so none to exclude
        log.debug("no lock for %s: %s cannot be written", output, path)
        yield
        return
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise
        raise UserError(  # the folder is there but takes no files (/proc, /sys)
            f"cannot create files in {path.parent} (for {output}): choose a writable location "
            "(data_root, run_dir, output_dir or the step's dir setting)"
        ) from None
    try:
        path.write_text(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n", "utf-8")
        _HELD.add(output)
        yield
    finally:
        _HELD.discard(output)
        path.write_text("", encoding="utf-8")
        lock.release()


@contextmanager
def atomic_output(final: str | Path, fresh: bool = False) -> Iterator[Path]:
    """A temporary path to write ``final`` (a file or a directory) at: moved into place, replacing what was
    there, when the block ends; removed if the block fails. A directory replaces the old one in one atomic
    swap where the system has it, else the old one is set aside first and put back by the next
    :func:`fresh_temporary` if a kill comes between: ``final`` is never lost. ``fresh``: first remove the
    temporaries that killed runs left beside it (only while holding :func:`locked`)."""
    final = Path(final)
    with removed_on_failure(fresh_temporary(final) if fresh else temporary_path(final), final) as tmp:
        yield tmp
        if not (tmp.is_dir() and final.exists()):
            os.replace(tmp, final)
        elif exchange(tmp, final):
            shutil.rmtree(tmp)  # the old directory, now under the temporary name
        else:
            aside = final.with_name(f"{final.name}.{os.getpid()}{SET_ASIDE}")
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside)


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``: the object ``config``'s ``_target_`` builds from its settings and ``kwargs``.
    A user's mistake raised while building it (a setting the object refuses, a missing file or install)
    comes out as itself, not wrapped in Hydra's InstantiationException."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, UserError | OSError | ImportError):
            raise exc.__cause__ from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


MAX_CONFIG_BYTES = 64 * 2**20  # a config, a task mix or a summary is kilobytes; this bounds a wrong path


def regular_file(path: str | Path, key: str) -> Path:
    """``path``, checked to be a regular file (not a folder, a device like /dev/zero or a pipe, which a read
    would never finish), else a MissingInputError naming ``key``."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{key}: {path} does not exist")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, a pipe or a socket)"
        raise MissingInputError(f"{key}: {path} is {kind}; expected a file")
    return path


def read_user_text(path: str | Path, key: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of a small file a setting (``key``) points at: a regular file, at most ``limit`` bytes, UTF-8;
    each failure one message naming the file and the reason."""
    path = regular_file(path, key)
    size = path.stat().st_size
    if size > limit:
        raise DataError(f"{key}: {path} is {size:,} bytes, more than the {limit:,} such a file may have")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def file_fingerprint(paths: Iterable[Path]) -> list[list[Any]]:
    """Cheap identity of input files (path, size, mtime): content hashing is too slow for MIMIC-IV."""
    out = []
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, int(st.st_mtime)])
    return out


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


_SHARED: tuple = ()  # a worker process's copy of run_jobs' shared arguments


def _start_worker(shared: tuple) -> None:
    import signal

    global _SHARED
    _SHARED = shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent answers it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()


def _call_with_shared(job: Callable[..., Any], args: tuple) -> Any:
    return job(*_SHARED, *args)


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux), so a SIGKILLed run leaves no worker
    writing on; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def run_jobs(
    job: Callable[..., Any],
    jobs: Sequence[tuple],
    num_workers: int,
    desc: str,
    progress: bool,
    shared: tuple = (),
) -> None:
    """``job(*shared, *args)`` for every args tuple, in worker processes when ``num_workers > 1``, with a
    progress bar. ``shared`` (a tokenizer, a registry) goes to each worker once, not with every job.

    Each job writes its own output atomically, so a killed run keeps what finished; workers die with it."""
    with tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs) as bar:
        note_progress(f"{desc}, 0 of {len(jobs)} done")
        if num_workers > 1 and len(jobs) > 1:
            workers = min(num_workers, len(jobs))
            pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(shared,))
            try:
                for future in [pool.submit(_call_with_shared, job, args) for args in jobs]:
                    future.result()
                    bar.update()
                    note_progress(f"{desc}, {bar.n} of {len(jobs)} done")
            except BaseException:  # a failed job, Ctrl-C, SIGTERM: stop the others now, not after their jobs
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
                # wait for the pool's manager thread: left running, it races the interpreter's exit hook,
                # which then prints a traceback of its own after the user's one-line error
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
        else:
            for args in jobs:
                job(*shared, *args)
                bar.update()
                note_progress(f"{desc}, {bar.n} of {len(jobs)} done")


BUILT_WITH = "built_with.json"  # the settings a directory's data was built with


def changed_settings(directory: Path, settings: dict[str, Any]) -> list[str]:
    """The dotted keys in which ``settings`` differ from those ``directory``'s data was built with
    (``["(unrecorded)"]`` when nothing was recorded there)."""
    record = directory / BUILT_WITH
    if not record.exists():
        return ["(unrecorded)"]
    return differences(read_json(record), settings)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys in which two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def record_settings(directory: Path, settings: dict[str, Any]) -> None:
    atomic_write_json(directory / BUILT_WITH, settings)


def ensure_built(path: Path, settings: dict[str, Any], build: Callable[[], Any], what: str) -> Path:
    """``path``, (re)built by ``build`` (which records its settings) when absent or made with other
    ``settings``; the keys that differ are logged."""
    changed = changed_settings(path.parent, settings) if path.exists() else []
    if changed:
        log.info("%s at %s was built with other settings (%s): rebuilding it", what, path.parent, ", ".join(changed))
    elif not path.exists():
        log.info("no %s at %s: building it", what, path)
    if changed or not path.exists():
        build()
    return path
