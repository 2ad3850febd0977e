"""Error text for people: every refusal is one line, and no input (a 5,000-character name, a parser's
multi-line report, a 200 MB field) can make that line unreadable."""

from __future__ import annotations

LINE_LIMIT = 300


def one_line(text: object, limit: int = LINE_LIMIT) -> str:
    """`text` with its whitespace runs (newlines included) collapsed, cut to `limit` characters with '...'."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def shown(value: object, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters: how a refused value is quoted in a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
