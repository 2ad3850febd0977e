"""The results folder of a run, checked before any model or data loads (cmd_run calls `prepare_results_folder`).

- A fresh run (no --resume) into a folder that already holds results (metrics.json, rounds.jsonl,
  checkpoint.safetensors, or an earlier version's checkpoint.pt) is refused, unless `--overwrite` (the old
  files are replaced) or `--new-folder` (the run goes to `<name>-2`, `<name>-3`, ...: the first that does
  not exist).
- A folder the sweep manages (it holds sweep_run.log and no done.json) is the sweep's to restart: the sweep
  skips finished runs and resumes those with a checkpoint itself, so a run it starts afresh there was killed
  before its first checkpoint (or failed) and may be replaced.
- The folder must be a folder and writable: an output_dir that is a file, or a place that cannot be written,
  is one line before anything loads (a probe file is written and removed).
- One writer per folder: the run takes the folder's lock (folder_lock.py: the folder is created for it, and
  removed again if the run ends before writing anything) and holds it until the run ends or the process
  exits. A folder another run holds is refused in one line naming that run's process id, for a fresh run,
  `--overwrite` and `--resume` alike; `--new-folder` moves on to the next free name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from fedranklite.core.results_io import ROUNDS_FILE, SUMMARY_FILE
from fedranklite.run.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME
from fedranklite.run.folder_lock import FolderInUse, OutputFolderError, acquire, busy_message, holder

__all__ = ["OutputFolderError", "FolderInUse", "prepare_results_folder", "existing_results", "free_name"]

RESULT_FILES = (SUMMARY_FILE, ROUNDS_FILE, CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME)
SWEEP_LOG, SWEEP_DONE = "sweep_run.log", "done.json"  # sweep.py's LOG_FILE and DONE_FILE


def existing_results(folder: Path) -> list[str]:
    """The result files `folder` already holds (a symlink or folder of that name counts too)."""
    return [name for name in RESULT_FILES if (folder / name).exists() or (folder / name).is_symlink()]


def sweep_managed(folder: Path) -> bool:
    return (folder / SWEEP_LOG).is_file() and not (folder / SWEEP_DONE).exists()


def free_name(output_dir: Path, name: str, limit: int = 10000) -> str:
    """`name-2`, `name-3`, ...: the first that does not exist under output_dir."""
    for k in range(2, limit):
        candidate = f"{name}-{k}"
        if not (output_dir / candidate).exists() and not (output_dir / candidate).is_symlink():
            return candidate
    raise OutputFolderError(f"{output_dir}: {name}-2 ... {name}-{limit - 1} all exist; choose another experiment_name")


def _in_the_way(folder: Path, output_dir: Path) -> Optional[str]:
    """A file where a folder of the results path must be (the nearest existing ancestor), or None."""
    for p in [folder, *folder.parents]:
        if p.exists():
            if p.is_dir():
                return None
            key = "output_dir" if p == output_dir or p in output_dir.parents else "experiment_name"
            return f"{key}: {p} is a file, not a folder; results need a folder there"
    return None


def check_writable(folder: Path, output_dir: Path) -> None:
    """Write and remove a probe file in `folder`, or in its nearest existing ancestor when it does not exist
    yet (nothing is created: a run whose set-up fails leaves no empty folder), or one OutputFolderError."""
    problem = _in_the_way(folder, output_dir)
    if problem:
        raise OutputFolderError(problem)
    where = next((p for p in [folder, *folder.parents] if p.exists()), None)
    try:
        if where is None:
            raise FileNotFoundError(2, "no part of the path exists")
        fd, probe = tempfile.mkstemp(dir=where, prefix=".fedranklite-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputFolderError(
            f"output_dir: cannot write the results to {folder} (a test file in {where}: {reason}); "
            "choose a writable output_dir"
        ) from None


def _refuse_if_busy(folder: Path) -> None:
    pid = holder(folder) if folder.is_dir() else None
    if pid is not None:
        raise FolderInUse(busy_message(folder, pid))


def prepare_results_folder(cfg: Any, resume: bool = False, overwrite: bool = False, new_folder: bool = False) -> Any:
    """Check the run's results folder and take its lock (creating it), held until the run ends or the process
    exits; returns the config to run (another experiment_name with `new_folder` when the folder holds results
    or another run holds it). Raises OutputFolderError (one line; FolderInUse when another run holds it)."""
    output_dir = Path(cfg.output_dir)
    folder, base = cfg.results_dir, cfg.experiment_name
    problem = _in_the_way(folder, output_dir)
    if problem:
        raise OutputFolderError(problem)
    busy = folder.is_dir() and holder(folder) is not None
    if busy and not new_folder:
        _refuse_if_busy(folder)
    found = [] if resume or not folder.is_dir() else existing_results(folder)
    if busy or (found and not overwrite and not sweep_managed(folder)):
        if new_folder:
            cfg = cfg.model_copy(update={"experiment_name": free_name(output_dir, cfg.experiment_name)})
            folder = cfg.results_dir
        else:
            raise OutputFolderError(
                f"{folder} already holds the results of a run ({', '.join(found)}); nothing was changed: "
                f"--resume continues it, --overwrite replaces it, --new-folder writes to "
                f"{output_dir / free_name(output_dir, cfg.experiment_name)}"
            )
    check_writable(folder, output_dir)
    for _ in range(100):
        try:
            acquire(folder)
            return cfg
        except FolderInUse:
            if not new_folder:
                raise
            # another run took the free name between the check and the lock: the next one
            cfg = cfg.model_copy(update={"experiment_name": free_name(output_dir, base)})
            folder = cfg.results_dir
    raise OutputFolderError(f"{output_dir}: no free results folder for {cfg.experiment_name}")
