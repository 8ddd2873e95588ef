"""Text for people: the one formatter behind dsctl's, dschat's and the daemon's status lines.

JSON values become words, never Python reprs: None is ``-``, a mapping is ``key value,
key value`` (or ``none``), a list is comma-separated. Tables are aligned columns in the
style of ``supervisorctl status``; grouped key/value sections in the style of ``serf info``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

Rows = list[list[str]]


def value(item: Any) -> str:
    """One JSON value as a word or a short phrase."""
    if item is None:
        return "-"
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, float):
        return f"{item:g}"
    if isinstance(item, Mapping):
        return ", ".join(f"{key} {value(inner)}" for key, inner in item.items()) or "none"
    if isinstance(item, (list, tuple)):
        return ", ".join(value(inner) for inner in item) or "none"
    return str(item)


def count(number: int, noun: str) -> str:
    """``1 server``, ``3 servers``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def duration(seconds: float) -> str:
    """``12.3s``, ``4m 05s``, ``2h 03m``, ``3d 04h``: the two largest units."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def table(rows: Rows) -> str:
    """Left-aligned columns separated by two spaces; trailing blanks trimmed."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """``key  value`` lines, the values aligned."""
    return table([[key, value(item)] for key, item in items])


def sections(groups: Iterable[tuple[str, list[tuple[str, Any]]]]) -> str:
    """Titled groups of key/value lines, every value aligned in one column across the groups."""
    groups = [(title, items) for title, items in groups if items]
    width = max((len(key) for _, items in groups for key, _ in items), default=0)
    lines = []
    for title, items in groups:
        lines.append(f"{title}:")
        lines.extend(f"  {key.ljust(width)}  {value(item)}".rstrip() for key, item in items)
    return "\n".join(lines)


def wrap(text: str, width: int, indent: str = "  ") -> str:
    """`text` wrapped to `width` columns, continuation lines indented; words are never split."""
    return textwrap.fill(text, width=max(width, 20), subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)
