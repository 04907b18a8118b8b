"""Reading a request log (`serve --request-log FILE`) back for `simulate --trace`, streamed.

Which files: FILE itself, its rotated backups FILE.1, FILE.2, ... and, when the
server ran several workers, each worker's FILE.w<i> with its own backups
FILE.w<i>.N. No glob, no directory: a replay reads exactly one log's family.

A log being written has a torn last line, and a disk or an editor can leave
garbage anywhere: a line that is not a well-formed entry is skipped and counted
(with the first few places named), never fatal. Only a missing file, or a log
with no usable line at all, is refused (`TraceError`).

Two passes, and neither holds the log: memory does not grow with its length.
Pass one reads each line's `t` into bounded structures only: a systematic sample
of at most 2 × SAMPLE times (every k-th line, k doubling as the log grows) for
the bulk of the log — the middle half of the times, widened by `FENCE_IQR` times
its width or `MIN_FENCE_S`, whichever is more — and the TOP_K newest times, for
the newest line of that bulk, where the `--last` window ends. A line outside the
fences (a clock at 0, 1e10, 1e300) would stretch the replay over years of empty
simulated time: it is counted in `outliers` and skipped. Pass two
(`simulator.tracestream`) yields the kept lines one at a time in arrival order.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.logline import LogEntry, parse_entry

SHOWN = 3  # skipped lines named in the warning; the rest are only counted
FENCE_IQR = 20.0  # an outlier lies this many interquartile widths beyond the middle half
MIN_FENCE_S = 86_400.0  # and at least a day: a quiet log's bulk can be minutes wide
SAMPLE = 32_768  # pass one keeps between SAMPLE and 2 × SAMPLE times for the fences
TOP_K = 1_024  # and the newest TOP_K times, for the newest line inside them

Parse = Callable[[Any], LogEntry | str]


class TraceError(Exception):
    """The trace cannot be replayed at all (missing file, no usable line)."""


@dataclass
class Trace:
    """A log's family of files, its fences, and what was skipped while streaming it.

    The counts fill in as `simulator.tracestream.entries` streams the lines; `entries`
    is filled only by `read_trace` (a whole log in memory, for small logs and tests).
    """

    files: list[Path]
    entries: list[LogEntry] = field(default_factory=list)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first SHOWN skipped lines, why
    outliers: int = 0  # usable lines whose time lies far outside the bulk, skipped
    outlier_shown: list[str] = field(default_factory=list)  # the first SHOWN of them
    before_window: int = 0  # usable lines older than the --last window, not read
    source: str = "request_log"  # request_log, request_log+access_log or access_log
    joined: int = 0  # request-log lines whose status and duration Envoy's access log gave
    unmatched: int = 0  # request-log lines the access log had no line for
    late: int = 0  # lines that reached the reader after their turn (replayed at once)
    kept: int = 0  # lines streamed to the replay
    fences: tuple[float, float, float] = (-math.inf, math.inf, -math.inf)  # low, high, start
    newest: float = 0.0  # arrival time of the bulk's newest line
    lengths: dict[Path, int] = field(default_factory=dict)  # non-blank lines seen by pass one
    parse: Parse = parse_entry


def siblings(path: Path) -> list[Path]:
    """FILE, FILE.N and FILE.w<i>[.N] that exist, in a stable order."""
    pattern = re.compile(re.escape(path.name) + r"(\.w\d+)?(\.\d+)?")
    found = [p for p in path.parent.iterdir()
             if p.is_file() and pattern.fullmatch(p.name)] if path.parent.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def line_time(raw: bytes, parse: Parse) -> float:
    """A line's `t` if it is a well-formed entry, else NaN."""
    try:
        parsed = parse(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return math.nan
    return parsed.t if isinstance(parsed, LogEntry) else math.nan


def lines(path: Path, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of each non-blank line, the first `stop` of them at most."""
    seen = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                if seen == stop:  # appended since pass one: the next replay has it
                    return
                seen += 1
                yield number, raw


@dataclass
class Scan:
    """Pass one's bounded view of the times: a systematic sample and the newest TOP_K."""

    sample: list[float] = field(default_factory=list)
    stride: int = 1
    seen: int = 0  # usable times
    top: list[float] = field(default_factory=list)  # a min-heap of the newest times

    def add(self, t: float) -> None:
        """Fold one usable time in."""
        if self.seen % self.stride == 0:
            self.sample.append(t)
            if len(self.sample) >= 2 * SAMPLE:
                self.sample, self.stride = self.sample[::2], self.stride * 2
        self.seen += 1
        if len(self.top) < TOP_K:
            heapq.heappush(self.top, t)
        elif t > self.top[0]:
            heapq.heapreplace(self.top, t)


def fences(scan: Scan) -> tuple[float, float]:
    """(low, high): the bulk's middle half widened by FENCE_IQR widths or MIN_FENCE_S."""
    if not scan.seen:
        return -math.inf, math.inf
    q1, q3 = (float(x) for x in np.quantile(np.asarray(scan.sample), [0.25, 0.75]))
    reach = max(FENCE_IQR * (q3 - q1), MIN_FENCE_S)
    return q1 - reach, q3 + reach


def _newest(scan: Scan, trace: Trace, low: float, high: float) -> float:
    """The newest time inside the fences: from the newest TOP_K, else one more pass."""
    inside = [t for t in scan.top if low <= t <= high]
    if inside:  # every time not in `top` is older than all of it
        return max(inside)
    newest = -math.inf
    for file in trace.files:
        for _, raw in lines(file, trace.lengths[file]):
            t = line_time(raw, trace.parse)
            if low <= t <= high:
                newest = max(newest, t)
    return newest


def open_trace(path: str | Path, *, last_s: float | None = None,
               parse: Parse = parse_entry) -> Trace:
    """Pass one over the log at `path` and its siblings: its files, fences and window.

    `last_s`: keep only the lines that arrived within `last_s` seconds of the bulk's
    newest line. Raises `TraceError` when `path` is missing or no line is usable. `parse`:
    how a line becomes an entry (`simulator.accesslog.parse_access` for Envoy's access log).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise TraceError(f"{path}: not a regular file")
    files = siblings(path)  # FILE itself may be absent: a multi-worker server writes FILE.w<i>
    if not files:
        raise TraceError(f"{path}: no such file (nor {path.name}.N or {path.name}.w<i>)")
    trace, scan = Trace(files=files, parse=parse), Scan()
    try:
        for file in files:
            count = 0
            for count, (_, raw) in enumerate(lines(file), start=1):  # noqa: B007
                t = line_time(raw, parse)
                if not math.isnan(t):
                    scan.add(t)
            trace.lengths[file] = count
        if not scan.seen:
            malformed = sum(trace.lengths.values())
            why = f"; {malformed} malformed lines skipped" if malformed else ""
            raise TraceError(f"{path}: no usable request-log line{why}")
        low, high = fences(scan)
        trace.newest = _newest(scan, trace, low, high)
    except OSError as exc:
        raise TraceError(f"{exc.filename or path}: {exc.strerror or exc}") from None
    trace.fences = (low, high, trace.newest - last_s if last_s is not None else -math.inf)
    return trace


def read_trace(path: str | Path, *, last_s: float | None = None,
               parse: Parse = parse_entry) -> Trace:
    """`open_trace`, then every kept line in `entries`, in arrival order (small logs)."""
    from simulator.tracestream import entries  # it imports this module

    trace = open_trace(path, last_s=last_s, parse=parse)
    trace.entries = list(entries(trace))
    return trace
