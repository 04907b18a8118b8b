"""Where a key path sits in a JSON text, for messages about feed files.

`json_where` walks only along the path, skipping sibling values with a regular
expression and JSON's own string scanner, so it costs one pass over the text at
most and never recurses. It expects text that `json.loads` accepted; on anything
else it answers with the nearest place it reached (1:1 at worst). For a key given
twice it finds the last one, the one a duplicate-key error is about.
"""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]

from router.core.schema import KeyPath

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR_END = re.compile(r"[,\]}\s]|$")
_STRUCT = re.compile(r'["\[\]{}]')


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _skip(text: str, i: int) -> int:
    """Index just past the JSON value starting at `i`."""
    if text[i] == '"':
        return int(scanstring(text, i + 1)[1])
    if text[i] not in "[{":
        m = _SCALAR_END.search(text, i)
        return m.start() if m else len(text)
    depth = 0
    while True:
        m = _STRUCT.search(text, i)
        if m is None:
            return len(text)
        i = m.start()
        if text[i] == '"':
            i = int(scanstring(text, i + 1)[1])
            continue
        depth += 1 if text[i] in "[{" else -1
        i += 1
        if depth == 0:
            return i


def _member(text: str, i: int, name: str, key: bool) -> int | None:
    """In the object at `i`, where the last `name` key (or its value) is."""
    found = None
    i = _ws(text, i + 1)
    while i < len(text) and text[i] == '"':
        start = i
        member, i = scanstring(text, i + 1)
        i = _ws(text, _ws(text, i) + 1)  # past the colon
        if member == name:
            found = start if key else i
        i = _ws(text, _skip(text, i))
        if i < len(text) and text[i] == ",":
            i = _ws(text, i + 1)
    return found


def _item(text: str, i: int, index: int) -> int | None:
    i = _ws(text, i + 1)
    for _ in range(index):
        if i >= len(text) or text[i] == "]":
            return None
        i = _ws(text, _skip(text, i))
        if i < len(text) and text[i] == ",":
            i = _ws(text, i + 1)
    return None if i >= len(text) or text[i] == "]" else i


def json_where(text: str, path: KeyPath, *, key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the value at `path` (its key when `key`), or nearest parent."""
    best = i = _ws(text, 0)
    try:
        for n, part in enumerate(path):
            last = n == len(path) - 1
            if isinstance(part, str) and text[i] == "{":
                found = _member(text, i, part, key and last)
            elif isinstance(part, int) and text[i] == "[":
                found = _item(text, i, part)
            else:
                break
            if found is None:
                break
            best = i = found
    except (IndexError, ValueError):
        pass  # not the JSON we expected: the nearest place reached is the answer
    line = text.count("\n", 0, best) + 1
    return line, best - (text.rfind("\n", 0, best) + 1) + 1
