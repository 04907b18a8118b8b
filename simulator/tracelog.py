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

Two passes, so memory follows what is replayed, not the log's length: the first
reads only each line's `t` (8 bytes a line kept); from those it finds the bulk of
the log — the middle half of the times, widened by `FENCE_IQR` times its width or
`MIN_FENCE_S`, whichever is more — and the `--last` window, which ends at the
newest line of that bulk. A line outside the fences (a clock at 0, 1e10, 1e300)
would stretch the replay over years of empty simulated time: it is counted in
`outliers` and skipped. The second pass parses only the lines it keeps.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.logline import LogEntry, parse_entry

SHOWN = 3  # skipped lines named in the warning; the rest are only counted
FENCE_IQR = 20.0  # an outlier lies this many interquartile widths beyond the middle half
MIN_FENCE_S = 86_400.0  # and at least a day: a quiet log's bulk can be minutes wide


class TraceError(Exception):
    """The trace cannot be replayed at all (missing file, no usable line)."""


@dataclass
class Trace:
    """A whole log, merged in arrival order, and what was skipped on the way."""

    files: list[Path]
    entries: list[LogEntry]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first SHOWN skipped lines, why
    outliers: int = 0  # usable lines whose time lies far outside the bulk, skipped
    outlier_shown: list[str] = field(default_factory=list)  # the first SHOWN of them
    before_window: int = 0  # usable lines older than the --last window, not read
    source: str = "request_log"  # request_log, request_log+access_log or access_log
    joined: int = 0  # request-log lines whose status and duration Envoy's access log gave
    unmatched: int = 0  # request-log lines the access log had no line for


def siblings(path: Path) -> list[Path]:
    """FILE, FILE.N and FILE.w<i>[.N] that exist, in a stable order."""
    pattern = re.compile(re.escape(path.name) + r"(\.w\d+)?(\.\d+)?")
    found = [p for p in path.parent.iterdir()
             if p.is_file() and pattern.fullmatch(p.name)] if path.parent.is_dir() else []
    return sorted(found, key=lambda p: p.name)


Parse = Callable[[Any], LogEntry | str]


def _time(raw: bytes, parse: Parse) -> float:
    """A line's `t` if it is a well-formed entry, else NaN (pass one)."""
    try:
        parsed = parse(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return math.nan
    return parsed.t if isinstance(parsed, LogEntry) else math.nan


def _times(path: Path, parse: Parse) -> array[float]:
    """Every non-blank line's `t` (NaN when unusable), in file order."""
    out = array("d")
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                out.append(_time(raw, parse))
    return out


def bounds(times: list[array[float]], last_s: float | None) -> tuple[float, float, float]:
    """(low fence, high fence, window start) from every file's times."""
    t = np.concatenate([np.frombuffer(a, dtype=np.float64) for a in times]) if times else \
        np.empty(0)
    t = t[~np.isnan(t)]
    if t.size == 0:
        return -math.inf, math.inf, -math.inf
    q1, q3 = (float(x) for x in np.quantile(t, [0.25, 0.75]))
    reach = max(FENCE_IQR * (q3 - q1), MIN_FENCE_S)
    low, high = q1 - reach, q3 + reach
    inside = t[(t >= low) & (t <= high)]
    start = float(inside.max()) - last_s if last_s is not None and inside.size else -math.inf
    return low, high, start


def _read_file(path: Path, times: array[float], fences: tuple[float, float, float],
               out: Trace, parse: Parse) -> None:
    low, high, start = fences
    with path.open("rb") as fh:
        index = 0
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if index == len(times):  # appended since pass one: the next replay has it
                break
            t, index = times[index], index + 1
            if math.isnan(t):
                out.skipped += 1
                if len(out.problems) < SHOWN:
                    out.problems.append(f"{path}:{number}: {_why(raw, parse)}")
            elif not low <= t <= high:
                out.outliers += 1
                if len(out.outlier_shown) < SHOWN:
                    out.outlier_shown.append(f"{path}:{number}: t={t:g}")
            elif t < start:
                out.before_window += 1
            else:
                entry = parse(json.loads(raw.decode("utf-8")))
                assert isinstance(entry, LogEntry)  # pass one found it well-formed
                out.entries.append(entry)


def _why(raw: bytes, parse: Parse) -> str:
    """Why a line pass one found unusable is not an entry."""
    try:
        parsed = parse(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "torn line (no newline at the end)" if not raw.endswith(b"\n") else "not JSON"
    return parsed if isinstance(parsed, str) else "unusable"


def read_trace(path: str | Path, *, last_s: float | None = None,
               parse: Parse = parse_entry) -> Trace:
    """Every usable line of the log at `path` and its siblings, in arrival order.

    Lines far outside the log's bulk are counted in `outliers` and skipped. `last_s`:
    keep only the lines that arrived within `last_s` seconds of the bulk's newest line.
    Raises `TraceError` when `path` is missing or nothing usable is left. `parse`: how a
    line becomes an entry (`simulator.accesslog.parse_access` for Envoy's access log).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise TraceError(f"{path}: not a regular file")
    files = siblings(path)  # FILE itself may be absent: a multi-worker server writes FILE.w<i>
    if not files:
        raise TraceError(f"{path}: no such file (nor {path.name}.N or {path.name}.w<i>)")
    out = Trace(files=files, entries=[])
    try:
        times = [_times(file, parse) for file in files]
        fences = bounds(times, last_s)
        for file, file_times in zip(files, times, strict=True):
            _read_file(file, file_times, fences, out, parse)
    except OSError as exc:
        raise TraceError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    out.entries.sort(key=lambda e: e.t)  # stable: a tie keeps file and line order
    if not out.entries:
        why = f"; {out.skipped} malformed lines skipped" if out.skipped else ""
        raise TraceError(f"{path}: no usable request-log line{why}")
    return out
