"""One writer per results folder: an exclusive operating-system lock on `<folder>/.fedranklite.lock`.

A run holds the lock from the moment its results folder is checked (`outfolder.prepare_results_folder`)
until the run ends (`Engine.run` frees it) or the process exits. The lock is `flock(LOCK_EX)`: the kernel
frees it when the holder exits in any way, a SIGKILL included, so a lock file left behind by a killed run
never blocks the next one. A second run into the same folder, or a `--resume` of a folder in use, is
refused in one line naming the folder and the process id that holds it.

Processes a holder starts (the Flower deployment's ServerApp) inherit the right to write: the holder
names its folders in the environment variable FEDRANKLITE_HELD_FOLDERS, and a process whose environment
says its starter holds the folder (the lock file names the same process id) writes without the lock.

The lock file is removed when the last hold in the process is released; an acquirer checks that the file
it locked is still the one at the path, so removing it never lets two runs in at once.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; the run goes on unguarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".fedranklite.lock"
HELD_ENV = "FEDRANKLITE_HELD_FOLDERS"


class OutputFolderError(RuntimeError):
    """A results folder that this run must not (or cannot) write to; the message is one line."""


class FolderInUse(OutputFolderError):
    """Another process holds the results folder's lock."""


@dataclass
class _Hold:
    fd: int
    count: int
    created: list[Path]  # the folders made for the lock (innermost first): removed on release while empty
    folder: Path


_held: dict[str, _Hold] = {}


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _holder_pid(fd: int, wait: float = 0.5) -> Optional[int]:
    """The holder's process id. A holder writes it just after it takes the lock, so a file read as empty in that
    moment is read again for up to `wait` seconds before the holder is called unknown."""
    deadline = time.monotonic() + wait
    while True:
        pid = _read_pid(fd)
        if pid is not None or time.monotonic() >= deadline:
            return pid
        time.sleep(0.01)


def _inherited(key: str, pid: Optional[int]) -> bool:
    """The process that started this one holds `key` (it said so in the environment, and the lock agrees)."""
    if pid is None or pid == os.getpid():
        return False
    try:
        held = json.loads(os.environ.get(HELD_ENV, "{}"))
    except ValueError:
        return False
    return isinstance(held, dict) and held.get(key) == pid


def _advertise() -> None:
    mine = {key: os.getpid() for key in _held}
    try:
        inherited = json.loads(os.environ.get(HELD_ENV, "{}"))
    except ValueError:
        inherited = {}
    merged = {**(inherited if isinstance(inherited, dict) else {}), **mine}
    for key in [k for k, pid in merged.items() if pid == os.getpid() and k not in _held]:
        del merged[key]
    if merged:
        os.environ[HELD_ENV] = json.dumps(merged, sort_keys=True)
    else:
        os.environ.pop(HELD_ENV, None)


def busy_message(folder: Path, pid: Optional[int]) -> str:
    who = f"process {pid}" if pid else "another process"
    return (
        f"{folder} is in use by another run ({who} holds its lock {LOCK_NAME}); nothing was changed: wait for that "
        "run to end, or choose another experiment_name"
    )


def holder(folder: str | Path) -> Optional[int]:
    """The process id that holds `folder`'s lock (0 when it cannot be read), or None when it is free, held by this
    process, or held by the process that started this one. Changes nothing: works in a read-only folder too."""
    folder = Path(folder)
    key = _key(folder)
    if fcntl is None or key in _held:
        return None
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None  # no lock file (or none we can open): nobody can hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(fd)
        os.close(fd)
        return None if _inherited(key, pid) else (pid or 0)
    except OSError:
        os.close(fd)
        return None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def acquire(folder: str | Path) -> None:
    """Take `folder`'s lock (creating the folder), or raise FolderInUse / OutputFolderError (one line). Re-entrant
    within a process: every acquire needs a release, or `release(folder, everything=True)`."""
    folder = Path(folder)
    key = _key(folder)
    if key in _held:
        _held[key].count += 1
        return
    if fcntl is None:  # pragma: no cover
        return
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(
            f"cannot create the results folder {folder} ({exc.strerror or type(exc).__name__}); choose a writable "
            "output_dir"
        ) from None
    path = folder / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _remove_if_empty(folder, created)
            raise OutputFolderError(
                f"cannot write the lock file {path} ({exc.strerror or type(exc).__name__}); choose a writable "
                "output_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            if _inherited(key, pid):
                return
            raise FolderInUse(busy_message(folder, pid)) from None
        try:  # a releasing holder unlinks the file: the one locked must still be the one at the path
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _held[key] = _Hold(fd, 1, created, folder)
        _advertise()
        return
    raise FolderInUse(busy_message(folder, None))  # pragma: no cover - the file was replaced 20 times in a row


def release(folder: str | Path, everything: bool = False) -> None:
    """Give back one hold on `folder` (all of them with `everything`); the last removes the lock file."""
    key = _key(Path(folder))
    hold = _held.get(key)
    if hold is None:
        return
    hold.count = 0 if everything else hold.count - 1
    if hold.count > 0:
        return
    del _held[key]
    path = hold.folder / LOCK_NAME
    try:
        if os.path.samestat(os.fstat(hold.fd), os.stat(path)):
            path.unlink()  # still locked while unlinking: an acquirer that opened it sees it gone and retries
    except OSError:
        pass
    os.close(hold.fd)
    _remove_if_empty(hold.folder, hold.created)
    _advertise()


def held(folder: str | Path) -> bool:
    """This process holds `folder`'s lock."""
    return _key(Path(folder)) in _held


def _remove_if_empty(folder: Path, created: list[Path]) -> None:
    """The folders this process created for the lock alone are removed again (a run whose set-up failed leaves
    none); one that holds anything stays."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


@atexit.register
def release_all() -> None:
    """Every hold of this process (as at exit: the kernel frees the locks then anyway; this removes the files)."""
    for key in list(_held):
        release(_held[key].folder, everything=True)
