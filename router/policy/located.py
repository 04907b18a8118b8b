"""Located documents: values that remember where in their file each part was written.

`YMap` and `YList` carry the line and column of each key, value and item, so
`Located.where` turns a key path (`edge.nodes[2].weight`) into FILE:LINE:COL; `Problem`
is one located message; `read_text` reads a file within a size limit, any failure a
located problem too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from router.core.schema import KeyPath

Mark = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation finding, located in a file."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class YMap(dict[str, Any]):
    """A mapping that knows where each of its keys and values was written."""

    __slots__ = ("keys_at", "values_at")

    def __init__(self) -> None:
        """An empty mapping."""
        super().__init__()
        self.keys_at: dict[str, Mark] = {}
        self.values_at: dict[str, Mark] = {}


class YList(list[Any]):
    """A list that knows where each of its items was written."""

    __slots__ = ("items_at",)

    def __init__(self) -> None:
        """An empty list."""
        super().__init__()
        self.items_at: list[Mark] = []


@dataclass
class Located:
    """A parsed document (None when it could not be read) and where its parts are."""

    file: str
    data: Any
    root_at: Mark = (1, 1)

    def where(self, path: KeyPath, *, key: bool = False) -> Mark:
        """Line and column of `path` (of its key when `key`); the nearest parent if unknown."""
        node, best = self.data, self.root_at
        for i, part in enumerate(path):
            if isinstance(node, YMap) and isinstance(part, str) and part in node:
                last = key and i == len(path) - 1
                best = node.keys_at[part] if last else node.values_at[part]
                node = node[part]
            elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
                best, node = node.items_at[part], node[part]
            else:
                break
        return best


def read_bytes(path: str, limit: int) -> tuple[bytes | None, list[Problem]]:
    """The file's bytes (at most `limit` + 1), or a located reason why not: unreadable, or
    not a regular file. A FIFO is refused without blocking on it, a directory at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait
    except OSError as exc:
        return None, [Problem(path, 1, 1, f"cannot read: {exc.strerror or exc}")]
    try:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            return None, [Problem(path, 1, 1, f"cannot read: {kind}, not a regular file")]
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1), []
    except OSError as exc:
        return None, [Problem(path, 1, 1, f"cannot read: {exc.strerror or exc}")]
    finally:
        os.close(fd)


def _not_regular(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "" if stat.S_ISREG(mode) else "not a plain file"


def decode_text(raw: bytes, path: str, limit: int) -> tuple[str | None, list[Problem]]:
    """`raw` as UTF-8 text, or a located reason why not (over `limit` bytes, not UTF-8)."""
    if len(raw) > limit:
        return None, [Problem(path, 1, 1, f"the file is over the limit of {limit} bytes")]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        col = len(raw[start:exc.start].decode("utf-8", "replace")) + 1  # in characters
        return None, [Problem(path, line, col, f"not UTF-8 text: {exc.reason}")]


def read_text(path: str, limit: int) -> tuple[str | None, list[Problem]]:
    """The file's text, or a located reason why not (unreadable, not a regular file, over
    `limit` bytes, not UTF-8); never reads more than `limit` + 1 bytes."""
    raw, problems = read_bytes(path, limit)
    return (None, problems) if raw is None else decode_text(raw, path, limit)
