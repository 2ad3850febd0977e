"""Data loading by `data.source`: the embedded task, GLUE, the Hugging Face hub or local files, each
returned as plain `TextSplit`s (texts + labels) with the labels checked against `data.num_labels`.

The per-source readers live elsewhere (`embedded`, `glue`); this module reads hub datasets and local
files itself and is the one entry point (`load_data`) the engine calls. How the training rows are then
split among the clients is `partitioners.py`.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fedranklite.data.embedded import EMBEDDED_TASKS
from fedranklite.data.glue import load_glue
from fedranklite.data.textsplit import DataError, TextSplit, check_texts, class_ids

log = logging.getLogger(__name__)


# ================================================================== hub and file loading
_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
FILE_TYPES = tuple(_FILE_BUILDERS)  # the file suffixes `data.source: files` reads


def _load_file(path: str):
    import datasets  # heavy: kept off the config path (config imports this module for FILE_TYPES)

    datasets.disable_progress_bars()  # "Generating train split" bars are not this run's progress

    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {path}")
    builder = _FILE_BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unsupported file type {p.suffix!r}; use one of {sorted(_FILE_BUILDERS)}")
    if p.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    problem = sniff(p, builder)
    if problem:
        raise DataError(f"{path}: {problem}")
    kwargs = {}
    if p.suffix.lower() == ".tsv":
        # GLUE-style TSV: tab separated, quotes are literal text, never field delimiters
        kwargs = {"sep": "\t", "quoting": csv.QUOTE_NONE}
    if p.suffix.lower() == ".jsonl":
        _check_json_lines(p)
    quiet = logging.getLogger("datasets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its reader logs a traceback before raising; the error below says it all
    try:
        return datasets.load_dataset(builder, data_files=str(p), split="train", **kwargs)
    except Exception as exc:
        if "corresponds to no data" in str(exc):  # e.g. a CSV with a header line only
            raise DataError(f"{path}: no rows") from None
        text = " ".join(str(exc).split())
        raise DataError(f"{path}: could not be read as {builder}: {text[:300]}") from None
    finally:
        quiet.setLevel(level)


def _check_json_lines(path: Path) -> None:
    """Every non-blank line of a JSON-lines file is one JSON object, or one DataError naming the line."""
    i = 0
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}: line {i}: not JSON ({getattr(exc, 'msg', exc)})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {i}: a JSON {type(row).__name__}, not an object with the columns")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (after line {i}: {exc.reason}); save it as UTF-8") from None


_MAGIC = {
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a ZIP archive",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
    b"\x80": "a Python pickle",
    b"SQLite format 3": "an SQLite database",
    b"\x89HDF": "an HDF5 file",
}


def sniff(path: Path, builder: str) -> Optional[str]:
    """Why the start of `path` is not what its extension says (a csv/json/parquet reader), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    found = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
    if builder == "parquet":
        return None if head.startswith(b"PAR1") else f"not a Parquet file (it starts as {found or 'something else'})"
    if found:
        return f"not a {path.suffix.lstrip('.').upper()} file: it is {found}"
    if b"\x00" in head:
        return f"not a {path.suffix.lstrip('.').upper()} file: it holds binary data (NUL bytes in its first 64 KiB)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(head) < 65536 or exc.start < len(head) - 4:  # not a character cut at the 64 KiB boundary
            return f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
        text = head[: exc.start].decode("utf-8")
    if builder == "json":
        first = text.lstrip("\ufeff \t\r\n")[:1]
        if first not in ("{", "["):
            return f"not JSON: it starts with {first!r} (JSON lines start with '{{', a JSON file with '[' or '{{')"
    return None


def _load_hub(name: str, subset: Optional[str], split: str):
    import datasets  # heavy: kept off the config path

    try:
        return datasets.load_dataset(name, subset, split=split)
    except Exception as exc:
        raise DataError(
            f"could not load dataset {name!r}" + (f" ({subset})" if subset else "") + f" split {split!r} from the "
            f"Hugging Face hub: {type(exc).__name__}: {exc}. Offline? Use data.source: files with local files."
        ) from None


def _to_split(
    table, text_columns: Sequence[str], label_column: str, task: str, label_names: Optional[list[str]], where: str
) -> TextSplit:
    columns = list(table.column_names)
    for col in [*text_columns, label_column]:
        if col not in columns:
            raise DataError(f"{where}: column {col!r} not found; the columns are {columns}")
    if len(table) == 0:
        raise DataError(f"{where}: no rows")
    texts = check_texts({c: table[c] for c in text_columns}, where, optional=text_columns[1:])
    raw = table[label_column]
    if task == "regression":
        try:
            labels = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{where}: column {label_column!r} must hold numbers for regression") from None
        if not np.isfinite(labels).all():
            raise DataError(f"{where}: column {label_column!r} has missing or non-finite values")
        return TextSplit(texts, labels)
    return TextSplit(texts, *class_ids(raw, label_names, label_column, where))


# Texts are cut to model.max_length x this many characters before tokenising: a fast tokenizer given a
# 200 MB line aborts the whole process. No token averages anywhere near 64 characters, so for ordinary text
# the cut keeps everything the truncating tokenizer would; only texts this long are touched at all.
CHARS_PER_TOKEN = 64


def cap_texts(split: TextSplit, max_chars: int, where: str) -> TextSplit:
    """`split` with every text cut to `max_chars` characters (one log line says how many were cut)."""
    cut = sum(1 for row in split.texts for t in row if len(t) > max_chars)
    if not cut:
        return split
    log.info(
        "%s: %d text(s) longer than %d characters were cut to that length before tokenising", where, cut, max_chars
    )
    # whitespace runs collapse first, so a text padded with 5,000 spaces keeps its words
    texts = [tuple(t if len(t) <= max_chars else " ".join(t.split())[:max_chars] for t in row) for row in split.texts]
    return TextSplit(texts, split.labels, split.label_names)


@dataclass
class LoadedData:
    train: TextSplit
    eval: TextSplit
    num_labels: int  # 1 for regression
    task: str


def load_data(cfg) -> LoadedData:
    """Train and eval splits as the config's `data` section describes them."""
    d = cfg.data
    if d.source == "embedded":
        make = EMBEDDED_TASKS[d.name]
        train = make(d.embedded_train_size, cfg.seed)
        evaluation = make(d.embedded_eval_size, cfg.seed + 10_007)
        where_train = where_eval = f"embedded task {d.name!r}"
    elif d.source == "glue":
        train, evaluation = load_glue(d.name, d.data_dir)
        where_train, where_eval = f"GLUE {d.name} train", f"GLUE {d.name} dev"
    else:
        if d.source == "hub":
            train_table, where_train = _load_hub(d.name, d.subset, d.train_split), f"{d.name}:{d.train_split}"
            eval_table, where_eval = _load_hub(d.name, d.subset, d.eval_split), f"{d.name}:{d.eval_split}"
        else:
            train_table, where_train = _load_file(d.train_file), d.train_file
            eval_table, where_eval = (_load_file(d.eval_file), d.eval_file) if d.eval_file else (None, None)
        train = _to_split(train_table, d.text_columns, d.label_column, d.task, d.label_names, where_train)
        if eval_table is None:  # no eval file: hold out a seeded 10 % of the training rows
            perm = np.random.default_rng(cfg.seed).permutation(len(train))
            cut = max(1, len(train) // 10)
            if len(train) - cut < 1:
                raise DataError(
                    f"{where_train}: {len(train)} row(s) cannot be split into training and held-out "
                    f"evaluation rows; give data.eval_file or more rows"
                )
            train, evaluation = train.subset(perm[cut:]), train.subset(perm[:cut])
            where_eval = f"{where_train} (held-out 10 %)"
        else:
            names = d.label_names or train.label_names
            evaluation = _to_split(eval_table, d.text_columns, d.label_column, d.task, names, where_eval)
    max_chars = cfg.model.max_length * CHARS_PER_TOKEN
    train, evaluation = cap_texts(train, max_chars, where_train), cap_texts(evaluation, max_chars, where_eval)
    if d.task == "regression":
        return LoadedData(train, evaluation, 1, d.task)
    num_labels = d.num_labels or (len(train.label_names) if train.label_names else int(train.labels.max()) + 1)
    for split, what, where in ((train, "training", where_train), (evaluation, "evaluation", where_eval)):
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= num_labels):
            raise DataError(
                f"{where}: {what} labels must lie in [0, {num_labels - 1}] (data.num_labels={num_labels}), "
                f"found {int(split.labels.min())}..{int(split.labels.max())}"
            )
    if num_labels < 2:
        raise DataError(f"{where_train}: classification needs at least two classes in the training data")
    log.info("%s: %d classes, %s", where_train, num_labels, describe_classes(train, num_labels))
    return LoadedData(train, evaluation, num_labels, d.task)


def describe_classes(train: TextSplit, num_labels: int) -> str:
    """'names neg=0, pos=1; training rows per class 120/118' (or 'ids 0..K-1' when the labels are ids)."""
    counts = np.bincount(train.labels, minlength=num_labels)[:num_labels]
    if train.label_names:
        shown = ", ".join(f"{n}={i}" for i, n in enumerate(train.label_names[:10]))
        named = f"names {shown}{', ...' if len(train.label_names) > 10 else ''}"
    else:
        named = f"ids 0..{num_labels - 1}"
    per = "/".join(str(int(c)) for c in counts[:10]) + ("/..." if num_labels > 10 else "")
    return f"{named}; training rows per class {per}"
