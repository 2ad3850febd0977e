"""Results on disk: atomic JSON writes, the round log (rounds.jsonl) and reading a run back.

Writers never leave half a file (temporary file + rename, fsync); readers get typed records
(records.py) and skip a last line torn by a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedranklite.core.records import RoundRecord, RunSummary, SchemaVersionError

ROUNDS_FILE = "rounds.jsonl"
SUMMARY_FILE = "metrics.json"


class ResultsError(FileNotFoundError):
    """A results folder (or a file in it) that cannot be read as a FedRankLite run."""


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.
    NaN and infinities are written as null, so the file is strict JSON."""
    write_text_atomic(path, json.dumps(json_ready(data), indent=2, allow_nan=False))  # fails before any write


def rewrite_round_log(path: str | Path, records: Sequence[RoundRecord], layout: str = "full") -> None:
    """Replace rounds.jsonl atomically with exactly `records` (used when resuming from a checkpoint)."""
    write_text_atomic(path, "".join(json.dumps(json_ready(r.to_json(layout)), allow_nan=False) + "\n" for r in records))


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # never the locale's: results read the same anywhere
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be as readable as any other
        os.replace(tmp, path)
    except BaseException:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # a folder turned read-only: the write's own error is the one to report
            pass
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_ready(obj: Any) -> Any:
    """`obj` with numpy scalars/arrays as Python values and non-finite floats as None (JSON null)."""
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_ready(obj.to_json() if hasattr(obj, "to_json") else dataclasses.asdict(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RoundLog:
    """rounds.jsonl: one JSON line per finished round, fsynced as the run goes.

    Each line goes to the file in one `os.write` on an O_APPEND descriptor (a buffered text write may split a
    long line into several writes, which a kill can tear), and a failed write (a full disk) is cut back to the
    size before it, so the file only ever holds whole lines."""

    def __init__(self, path: str | Path, append: bool = False, layout: str = "full"):
        self.path, self.layout = Path(path), layout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists():
            _drop_torn_tail(self.path)  # else the next record would be glued onto a torn line
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self._fd: int | None = os.open(self.path, flags, 0o666)

    def write(self, record: RoundRecord) -> None:
        line = (json.dumps(json_ready(record.to_json(self.layout)), allow_nan=False) + "\n").encode("utf-8")
        assert self._fd is not None, "the round log is closed"
        before = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write (the disk filled up mid-line)
                raise OSError(28, f"{self.path}: only {written} of {len(line)} bytes of a round line written")
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                pass  # the reader drops a torn last line; the write's own error is the one to report
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RoundLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path) -> list[RoundRecord]:
        """Every complete record, in order (a torn last line from a crash is ignored). A line written by a newer
        FedRankLite is one ResultsError naming the file."""
        try:
            return [RoundRecord.from_json(d) for d in RoundLog.read_json(path)]
        except SchemaVersionError as exc:
            raise ResultsError(f"{path}: {exc}") from None

    @staticmethod
    def read_json(path: str | Path) -> list[dict]:
        """The raw JSON objects of `read`."""
        out = []
        p = Path(path)
        if not p.exists():
            return out
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a crash mid-write
        return out


def _drop_torn_tail(path: Path) -> None:
    """Make `path` end with a newline: keep a last line that is complete JSON, cut one that is not."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1  # 0 when the whole file is one line
    try:
        json.loads(data[cut:])
        complete = True
    except ValueError:
        complete = False
    with open(path, "r+b") as fh:
        if complete:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())


def read_run(folder: str | Path) -> tuple[RunSummary, list[RoundRecord]]:
    """A results folder's summary and round records, or one clear ResultsError."""
    folder = Path(folder)
    summary_path = folder / SUMMARY_FILE
    if not summary_path.is_file():
        raise ResultsError(f"{summary_path}: not found (is {folder} a results folder of `fedranklite run`?)")
    try:
        summary = RunSummary.from_json(json.loads(summary_path.read_text()))
    except SchemaVersionError as exc:
        raise ResultsError(f"{summary_path}: {exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise ResultsError(f"{summary_path}: cannot be read as a run summary ({type(exc).__name__}: {exc})") from None
    try:
        records = RoundLog.read(folder / ROUNDS_FILE)
    except ResultsError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ResultsError(
            f"{folder / ROUNDS_FILE}: cannot be read as round records ({type(exc).__name__}: {exc})"
        ) from None
    return summary, records
