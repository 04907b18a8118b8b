"""`serve --request-log FILE`: one JSON line per request, written off the request path.

Each line is what production saw and decided — arrival time, the affinity
tags as sent, the content length, the decision, and the duration measured when
the ext_proc stream ended (the HTTP request's end) — so `hybrid-router
simulate --trace FILE --policy CANDIDATE` can replay it through a policy edit
(docs/reference.md, "Request log").

The request path only appends a `router.logline.LogEntry` to a bounded deque;
a writer thread turns them into lines, appends them to FILE and rotates it past `max_bytes`
(FILE → FILE.1 → … → FILE.<backups>). If the writer falls behind (a slow or
full disk), lines past the queue bound are dropped and counted — the request
path never waits for the disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from router.logline import LogEntry

log = logging.getLogger("hybrid_router.requestlog")
MAX_QUEUE = 65536


class RequestLog:
    """A size-bounded, rotating JSON-lines file fed from the request path."""

    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 1024 * 1024,
                 backups: int = 3, max_queue: int = MAX_QUEUE,
                 on_drop: Callable[[int], None] | None = None) -> None:
        """Open (append) `path`; the writer thread starts at once."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_queue = max_queue
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._queue: deque[LogEntry] = deque()
        self._wake = threading.Event()
        self._stop = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._size = self._fh.tell()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def record(self, entry: LogEntry) -> None:
        """Queue one line (never blocks; drops and counts when the writer is behind)."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
            return
        self._queue.append(entry)
        self._wake.set()

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
        while queue:
            # A batch ends where the file would pass max_bytes, so a burst queued all at
            # once rotates at the same line boundaries as a trickle does.
            lines: list[str] = []
            size = self._size
            while queue and len(lines) < 1024:
                line = json.dumps(queue[0].as_json(), separators=(",", ":")) + "\n"
                if size + len(line) > self.max_bytes:
                    if lines:
                        break
                    size = 0  # this batch starts the next file
                queue.popleft()
                lines.append(line)
                size += len(line)
            text = "".join(lines)
            try:
                if self._size + len(text) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._fh.write(text)
                self._fh.flush()
                self._size += len(text)
                self.written += len(lines)
            except OSError as exc:  # a full or broken disk: drop, count, keep serving
                self.dropped += len(lines)
                if self.on_drop is not None:
                    self.on_drop(len(lines))
                log.error("request log %s: %s; %d lines dropped", self.path, exc, len(lines))

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the file."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._fh.close()
