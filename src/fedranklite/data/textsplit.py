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
    if any(v is None for v in raw):
        raise DataError(f"{where}: column {column!r} has missing labels")
    if label_names:
        index = {name: i for i, name in enumerate(label_names)}
        ids = []
        for v in raw:
            key = str(v).strip()
            if key in index:
                ids.append(index[key])
            elif key.lstrip("-").isdigit() and 0 <= int(key) < len(label_names):
                ids.append(int(key))
            else:
                raise DataError(f"{where}: label {v!r} in column {column!r} is not one of {label_names}")
        return np.asarray(ids, dtype=np.int64), list(label_names)
    if all(_is_integral(v) for v in raw):  # 0/1/2, "0"/"1", or 0.0/1.0 (a float column)
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


def _is_integral(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isfinite(v)) and float(v).is_integer()
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()
