"""The results folder of a run, checked before any model or data loads (cmd_run calls `prepare_results_folder`).

- A fresh run (no --resume) into a folder that already holds results (metrics.json, rounds.jsonl or
  checkpoint.pt) is refused, unless `--overwrite` (the old files are replaced) or `--new-folder` (the run
  goes to `<name>-2`, `<name>-3`, ...: the first that does not exist).
- A folder the sweep manages (it holds sweep_run.log and no done.json) is the sweep's to restart: the sweep
  skips finished runs and resumes those with a checkpoint itself, so a run it starts afresh there was killed
  before its first checkpoint (or failed) and may be replaced.
- The folder must be a folder and writable: an output_dir that is a file, or a place that cannot be written,
  is one line before anything loads (a probe file is written and removed; no folder is created here).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from fedranklite.core.results_io import ROUNDS_FILE, SUMMARY_FILE
from fedranklite.run.checkpoint import CHECKPOINT_NAME

RESULT_FILES = (SUMMARY_FILE, ROUNDS_FILE, CHECKPOINT_NAME)
SWEEP_LOG, SWEEP_DONE = "sweep_run.log", "done.json"  # sweep.py's LOG_FILE and DONE_FILE


class OutputFolderError(RuntimeError):
    """A results folder that this run must not (or cannot) write to; the message is one line."""


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


def prepare_results_folder(cfg: Any, resume: bool = False, overwrite: bool = False, new_folder: bool = False) -> Any:
    """Check (and create) the run's results folder; returns the config to run (another experiment_name
    with `new_folder` when the folder holds results). Raises OutputFolderError (one line)."""
    output_dir = Path(cfg.output_dir)
    folder = cfg.results_dir
    problem = _in_the_way(folder, output_dir)
    if problem:
        raise OutputFolderError(problem)
    found = [] if resume or not folder.is_dir() else existing_results(folder)
    if found and not overwrite and not sweep_managed(folder):
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
    return cfg
