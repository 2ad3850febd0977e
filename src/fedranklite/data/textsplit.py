"""What every data source produces: a `TextSplit` (texts + labels), the `DataError` it raises, and the
mapping of raw label values to class ids.

This module sits below all the loaders (`data` for hub and local files, `glue`, `embedded`) so they
share these without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# a head of MAX_CLASSES x hidden size; without this, a label id of 99999999999 asks for a head of terabytes
MAX_CLASSES = 10_000


class DataError(ValueError):
    """Data that cannot be used as configured; the message says what and where."""


@dataclass
class TextSplit:
    texts: list[tuple[str, ...]]  # one tuple per row: (sentence,) or (sentence1, sentence2)
    labels: np.ndarray  # int64 class ids, or float32 regression targets
    label_names: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> "TextSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return TextSplit([self.texts[i] for i in idx], self.labels[idx], self.label_names)


def class_ids(
    raw: Sequence, label_names: Optional[list[str]], column: str, where: str
) -> tuple[np.ndarray, Optional[list[str]]]:
    """Raw label values -> (int64 class ids, label names or None).

    With `label_names`, a value is a name (its index is the id) or an in-range integer id. Without,
    integral values (0/1/2, "0"/"1", 0.0/1.0) are the ids themselves, and anything else is mapped by
    the sorted set of distinct strings, which become the names. `column` and `where` name the source
    in the DataError raised for a missing, negative or unknown label."""
    missing = next((i for i, v in enumerate(raw) if v is None), None)
    if missing is not None:
        raise DataError(f"{where}: column {column!r} has missing labels (first at data row {missing + 1})")
    odd = next((i for i, v in enumerate(raw) if isinstance(v, (dict, list, tuple, bytes))), None)
    if odd is not None:
        raise DataError(
            f"{where}: data row {odd + 1}: the label in column {column!r} is a {_kind(raw[odd])}, not a class"
        )
    if label_names:
        index = {name: i for i, name in enumerate(label_names)}
        ids, by_name = [], []
        for v in raw:
            key = str(v).strip()
            if key in index:
                ids.append(index[key])
                by_name.append(True)
            elif key.lstrip("-").isdigit() and 0 <= int(key) < len(label_names):
                ids.append(int(key))
                by_name.append(False)
            else:
                raise DataError(f"{where}: label {v!r} in column {column!r} is not one of {label_names}")
        if any(by_name) and not all(by_name):
            _mixed(raw, by_name, column, where)
        return np.asarray(ids, dtype=np.int64), list(label_names)
    integral = [_is_integral(v) for v in raw]
    if any(integral) and not all(integral):
        _mixed(raw, [not k for k in integral], column, where)
    if all(integral):  # 0/1/2, "0"/"1", or 0.0/1.0 (a float column)
        values = [int(float(v)) if isinstance(v, (float, np.floating)) else int(v) for v in raw]
        if min(values) < 0:
            raise DataError(f"{where}: negative class label {min(values)} in column {column!r}")
        if max(values) >= MAX_CLASSES:
            raise DataError(
                f"{where}: class label {max(values)} in column {column!r} would make {max(values) + 1:,} classes "
                f"(at most {MAX_CLASSES:,}); integer labels are class ids 0..K-1 (give data.label_names, or "
                "write the labels as text, to use other values)"
            )
        return np.asarray(values, dtype=np.int64), None
    names = sorted({str(v).strip() for v in raw})
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[str(v).strip()] for v in raw], dtype=np.int64), names


def _mixed(raw: Sequence, by_name: Sequence[bool], column: str, where: str) -> None:
    """One DataError for a label column that holds both class ids (integers) and class names."""
    ids = sorted({str(v).strip() for v, n in zip(raw, by_name) if not n}, key=str)
    names = sorted({str(v).strip() for v, n in zip(raw, by_name) if n})
    minority = not (sum(by_name) * 2 >= len(by_name))  # the rarer kind is the likely mistake
    row = next(i for i, n in enumerate(by_name) if n == minority) + 1
    raise DataError(
        f"{where}: column {column!r} mixes integer labels ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}) "
        f"and label names ({', '.join(repr(n) for n in names[:3])}{', ...' if len(names) > 3 else ''}), first "
        f"differing at data row {row}; a column holds one kind: all class ids 0..K-1 or all names"
    )


def _kind(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "boolean"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    return {dict: "JSON object", list: "JSON array", tuple: "JSON array", bytes: "binary value"}.get(
        type(v), type(v).__name__
    )


def check_texts(columns: dict[str, Sequence], where: str, optional: Sequence[str] = ()) -> list[tuple[str, ...]]:
    """Rows of text from `columns` (name -> values): every value must be a string; a missing value (None) is
    allowed only in the `optional` columns (the second sentence of a pair) and reads as "". Anything else (a
    number, a JSON object or array) is one DataError naming the column and the data row."""
    names = list(columns)
    for name in names:
        values = columns[name]
        for i, v in enumerate(values):
            if isinstance(v, str):
                continue
            if v is None:
                if name in optional:
                    continue
                raise DataError(f"{where}: data row {i + 1}: column {name!r} is missing (null); every row needs a text")
            raise DataError(
                f"{where}: data row {i + 1}: column {name!r} holds a {_kind(v)} ({_preview(v)}), not text; "
                "text columns hold strings"
            )
    return [tuple("" if v is None else v for v in row) for row in zip(*[columns[n] for n in names])]


def _preview(v) -> str:
    text = " ".join(repr(v).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _is_integral(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isfinite(v)) and float(v).is_integer()
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()
