"""Reading a request log (`serve --request-log FILE`) back for `simulate --trace`.

Which files: FILE itself, its rotated backups FILE.1, FILE.2, ... and, when the
server ran several workers, each worker's FILE.w<i> with its own backups
FILE.w<i>.N. Every line of every one of them is merged and ordered by arrival
time `t` (a line is written when its request ends, so even one file is not in
arrival order). No glob, no directory: a replay reads exactly one log's family.

A log being written has a torn last line, and a disk or an editor can leave
garbage anywhere: a line that is not a well-formed entry is skipped and counted
(with the first few places named), never fatal. Only a missing file, or a log
with no usable line at all, is refused (`TraceError`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from router.logline import LogEntry, parse_entry

SHOWN = 3  # skipped lines named in the warning; the rest are only counted


class TraceError(Exception):
    """The trace cannot be replayed at all (missing file, no usable line)."""


@dataclass
class Trace:
    """A whole log, merged in arrival order, and what was skipped on the way."""

    files: list[Path]
    entries: list[LogEntry]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first SHOWN skipped lines, why


def siblings(path: Path) -> list[Path]:
    """FILE, FILE.N and FILE.w<i>[.N] that exist, in a stable order."""
    pattern = re.compile(re.escape(path.name) + r"(\.w\d+)?(\.\d+)?")
    found = [p for p in path.parent.iterdir()
             if p.is_file() and pattern.fullmatch(p.name)] if path.parent.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def _read_file(path: Path, out: Trace) -> None:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                parsed: LogEntry | str = parse_entry(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                parsed = "torn line (no newline at the end)" if not raw.endswith(b"\n") \
                    else "not JSON"
            if isinstance(parsed, LogEntry):
                out.entries.append(parsed)
                continue
            out.skipped += 1
            if len(out.problems) < SHOWN:
                out.problems.append(f"{path}:{number}: {parsed}")


def read_trace(path: str | Path, *, last_s: float | None = None) -> Trace:
    """Every usable line of the log at `path` and its siblings, in arrival order.

    `last_s`: keep only the lines that arrived within `last_s` seconds of the newest.
    Raises `TraceError` when `path` is missing or nothing usable is left.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise TraceError(f"{path}: not a regular file")
    files = siblings(path)  # FILE itself may be absent: a multi-worker server writes FILE.w<i>
    if not files:
        raise TraceError(f"{path}: no such file (nor {path.name}.N or {path.name}.w<i>)")
    out = Trace(files=files, entries=[])
    for file in files:
        try:
            _read_file(file, out)
        except OSError as exc:
            raise TraceError(f"{file}: {exc.strerror or exc}") from None
    out.entries.sort(key=lambda e: e.t)  # stable: a tie keeps file and line order
    if last_s is not None and out.entries:
        cutoff = out.entries[-1].t - last_s
        out.entries = [e for e in out.entries if e.t >= cutoff]
    if not out.entries:
        why = f"; {out.skipped} malformed lines skipped" if out.skipped else ""
        raise TraceError(f"{path}: no usable request-log line{why}")
    return out
