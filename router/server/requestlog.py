"""`serve --request-log FILE`: one JSON line per request, written off the request path.

Each line is what production saw and decided — arrival time, the affinity
tags as sent, the content length, the decision, and the duration measured when
the ext_proc stream ended (the HTTP request's end) — so `hybrid-router
simulate --trace FILE --policy CANDIDATE` can replay it through a policy edit
(docs/reference.md, "Request log").

The request path only appends a `router.logline.LogEntry` to a bounded deque; a writer
thread turns them into lines and appends them to FILE. What the writer guarantees:

- Bounded: a line longer than `max_line_bytes` (a client's junk `x-affinity-*` header)
  is cut down — strings clipped, then nested values emptied — and marked
  `"truncated": true`, so no client can evict the history with a few huge requests.
  Past `max_bytes` the writer rotates FILE → FILE.1 → … → FILE.<backups>, at the same
  line boundaries whether the lines came as a burst or a trickle.
- Rotatable from outside: before each batch it compares FILE's inode with the one it
  holds open, and reopens (creating FILE) when they differ or FILE is gone — logrotate's
  `create`, a delete — or when asked (`reopen`, wired to SIGHUP). The file is opened
  O_APPEND and its size re-read each batch, so `copytruncate` works too.
- Exact: lines past the queue bound, and lines a failed write did not complete, are
  counted in `dropped` (and `on_drop`) one for one; a line a failed write cut short is
  closed with a newline before the next one, so every later line still parses.
- Quiet when the disk is full: one ERROR line when writing starts failing, then at
  most one every `report_every` seconds with the count dropped since, and one INFO
  line when it writes again.
- Only a regular file: a FIFO (which would block the writer), a directory or another
  special file is refused with `RequestLogError` when the log opens or reopens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.logline import LogEntry

log = logging.getLogger("hybrid_router.requestlog")
MAX_QUEUE = 65536
MAX_LINE_BYTES = 4096  # a routed request's line is ~400 bytes with every tag a client may send
CLIP_CHARS = 256  # each string of a line over the cap keeps this many characters
REPORT_EVERY_S = 60.0
BATCH = 1024
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC


class RequestLogError(Exception):
    """The request log's path cannot be a log: a directory, a FIFO, another special file."""


def path_problem(path: str | Path) -> str | None:
    """Why `path` cannot hold the request log (one line), or None when it can."""
    parent = Path(path).parent
    if parent.exists() and not parent.is_dir():
        return f"{path}: {parent} is not a directory"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
        "not a regular file"
    return f"{path} is {kind}; the request log must be a regular file (or not exist yet)"


def fit(entry: dict[str, Any], cap: int) -> tuple[str, bool]:
    """`entry` as one JSON line (newline excluded) of at most `cap` bytes when it can be,
    and whether it had to be cut down to get there."""
    line = json.dumps(entry, separators=(",", ":"))
    if len(line) <= cap:  # ensure_ascii: characters are bytes
        return line, False
    clipped = {k: _clip(v) for k, v in entry.items()} | {"truncated": True}
    line = json.dumps(clipped, separators=(",", ":"))
    if len(line) <= cap:
        return line, True
    emptied = {k: (type(v)() if isinstance(v, dict | list) else v) for k, v in clipped.items()}
    return json.dumps(emptied, separators=(",", ":")), True


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value[:CLIP_CHARS]
    if isinstance(value, dict):
        return {str(k)[:CLIP_CHARS]: _clip(v) for k, v in list(value.items())[:32]}
    if isinstance(value, list):
        return [_clip(v) for v in value[:32]]
    return value


class RequestLog:
    """A bounded, rotating JSON-lines file fed from the request path (see the module)."""

    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 1024 * 1024,
                 backups: int = 3, max_queue: int = MAX_QUEUE,
                 max_line_bytes: int = MAX_LINE_BYTES,
                 on_drop: Callable[[int], None] | None = None,
                 on_truncate: Callable[[], None] | None = None,
                 report_every: float = REPORT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 write: Callable[[int, bytes], int] = os.write) -> None:
        """Open (append) `path` (RequestLogError if it cannot be a log); the writer starts."""
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self.max_queue, self.max_line_bytes = max_queue, max_line_bytes
        self.on_drop, self.on_truncate = on_drop, on_truncate
        self.dropped = self.written = self.truncated = self.reopens = 0
        self._report_every, self._clock, self._write = report_every, clock, write
        self._failing: tuple[float, int] | None = None  # (last report, dropped since) when down
        self._torn = False
        self._reopen = False
        self._queue: deque[LogEntry] = deque()
        self._wake = threading.Event()
        self._stop = False
        problem = path_problem(self.path)
        if problem is not None:
            raise RequestLogError(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd, self._inode, self._size = self._open()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def record(self, entry: LogEntry) -> None:
        """Queue one line (never blocks; drops and counts when the writer is behind)."""
        if len(self._queue) >= self.max_queue:
            self._drop(1)
            return
        self._queue.append(entry)
        self._wake.set()

    def reopen(self) -> None:
        """Reopen FILE before the next line (SIGHUP, after moving it away)."""
        self._reopen = True
        self._wake.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    def _open(self) -> tuple[int, tuple[int, int], int]:
        problem = path_problem(self.path)
        if problem is not None:
            raise RequestLogError(problem)
        fd = os.open(self.path, _FLAGS, 0o644)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped in between the two looks
            os.close(fd)
            raise RequestLogError(f"{self.path} is not a regular file")
        return fd, (st.st_dev, st.st_ino), st.st_size

    def _follow(self) -> None:
        """Hold the file FILE names now: reopen after a rotation, a delete or SIGHUP."""
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._inode
        except FileNotFoundError:
            moved = True
        if moved or self._reopen:
            log.info("request log %s reopened (%s)", self.path,
                     "moved or deleted" if moved else "asked to")
            self._reopen = False
            self.reopens += 1
            old, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(old)
            self._torn = False
            self._fd, self._inode, self._size = self._open()
        else:
            self._size = os.fstat(self._fd).st_size  # copytruncate shrinks it under us

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._drain()
            if self._stop:
                self._drain()
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue or self._reopen:
            # A batch ends where the file would pass max_bytes, so a burst queued all at
            # once rotates at the same line boundaries as a trickle does.
            lines: list[bytes] = []
            size = self._size
            while queue and len(lines) < BATCH:
                line, cut = fit(queue[0].as_json(), self.max_line_bytes)
                data = line.encode() + b"\n"
                if size + len(data) > self.max_bytes:
                    if lines:
                        break
                    size = 0  # this batch starts the next file
                queue.popleft()
                if cut:
                    self.truncated += 1
                    if self.on_truncate is not None:
                        self.on_truncate()
                lines.append(data)
                size += len(data)
            self._write_batch(lines)

    def _write_batch(self, lines: list[bytes]) -> None:
        done = lead = 0  # bytes of this write in the file; of them, the torn line's end
        data = b""
        try:
            self._follow()
            if self._size > 0 and self._size + sum(map(len, lines)) > self.max_bytes:
                self._rotate()
            lead = 1 if self._torn else 0
            data = b"\n" * lead + b"".join(lines)
            while done < len(data):
                done += self._write(self._fd, data[done:])
        except (OSError, RequestLogError) as exc:
            whole = _whole_lines(lines, done - lead)
            if done:
                self._torn = data[done - 1:done] != b"\n"
            self._size += done
            self.written += whole
            self._drop(len(lines) - whole)
            self._failed(exc, len(lines) - whole)
            return
        self._size += done
        self._torn = False
        self.written += len(lines)
        if self._failing is not None and lines:
            log.info("request log %s: writing again (%d lines dropped since the last report)",
                     self.path, self._failing[1])
            self._failing = None

    def _failed(self, exc: Exception, dropped: int) -> None:
        """One ERROR line when writing starts failing, then at most one per report_every."""
        now = self._clock()
        if self._failing is None:
            log.error("request log %s: %s; %d lines dropped, and every line until it writes "
                      "again (counted in router_request_log_dropped_total; next report in "
                      "%g s at most)", self.path, exc, dropped, self._report_every)
            self._failing = (now, 0)
            return
        last, since = self._failing
        since += dropped
        if now - last >= self._report_every:
            log.error("request log %s: still failing (%s); %d lines dropped in the last %.0f s",
                      self.path, exc, since, now - last)
            last, since = now, 0
        self._failing = (last, since)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd, self._torn = -1, False
        for i in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path.with_name(f"{self.path.name}.{i}"),
                           self.path.with_name(f"{self.path.name}.{i + 1}"))
        with contextlib.suppress(FileNotFoundError):
            if self.backups > 0:
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink()
        self._fd, self._inode, self._size = self._open()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the file."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _whole_lines(lines: list[bytes], written: int) -> int:
    """How many of `lines` the first `written` bytes of their concatenation hold whole."""
    whole = 0
    for line in lines:
        if written < len(line):
            break
        written -= len(line)
        whole += 1
    return whole
