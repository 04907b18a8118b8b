"""The request log: JSON lines off the request path, rotated by size, never blocking."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from router.logline import LogEntry
from router.server.requestlog import RequestLog


def entry(i: int, pad: str = "") -> LogEntry:
    """Line `i`: its number in the request id, `pad` in a tag."""
    return LogEntry(1.0 + i, f"r{i}", {"x-affinity-key": pad}, 0, 200, "edge", "n1", "full",
                    0.0, 1.0, "affinity", "p", 2.0)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_each_record_is_one_json_line_in_order(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "req.jsonl")
    for i in range(500):
        log.record(entry(i))
    log.close()
    got = lines(tmp_path / "req.jsonl")
    assert [x["request_id"] for x in got] == [f"r{i}" for i in range(500)] and log.written == 500


def test_rotates_past_max_bytes_keeping_backups(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    log = RequestLog(path, max_bytes=8000, backups=2)
    for i in range(300):
        log.record(entry(i, "x" * 40))
        if i % 10 == 0:
            time.sleep(0.002)  # let the writer rotate between batches
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["req.jsonl", "req.jsonl.1", "req.jsonl.2"]
    assert all(p.stat().st_size <= 8000 for p in tmp_path.iterdir())
    kept = [int(x["request_id"][1:]) for name in ("req.jsonl.2", "req.jsonl.1", "req.jsonl")
            for x in lines(tmp_path / name)]
    assert kept == sorted(kept) and kept[-1] == 299  # the newest lines, in order


def test_a_stalled_disk_drops_and_counts_but_never_blocks_the_caller(tmp_path: Path) -> None:
    drops: list[int] = []
    gate = threading.Event()

    def stalled(fd: int, data: bytes) -> int:
        gate.wait()  # the disk hangs
        return os.write(fd, data)

    log = RequestLog(tmp_path / "req.jsonl", max_queue=100, on_drop=drops.append,
                     write=stalled)
    log.record(entry(-1))
    time.sleep(0.05)  # the writer is now stuck in write()
    for i in range(1000):  # returns while the writer is stuck: a blocking append would hang here
        log.record(entry(i))
    assert log.dropped == 900 and sum(drops) == 900
    gate.set()
    log.close()
    assert len(lines(tmp_path / "req.jsonl")) == 101
