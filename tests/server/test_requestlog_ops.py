"""The request log under an operator's hands and a hostile client: rotated by logrotate
(`create`, `copytruncate`), deleted, reopened on SIGHUP, flooded with huge headers, pointed
at a FIFO or a directory, and on a full disk."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from router.logline import LogEntry, parse_entry
from router.server.requestlog import RequestLog, RequestLogError
from tests.integration.stack import stop, wait_line
from tests.server.test_requestlog import entry, lines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"


def settle(log: RequestLog, n: int) -> None:
    """Wait until the writer has dealt with `n` lines (bounded)."""
    deadline = time.monotonic() + 10
    while log.written + log.dropped < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert log.written + log.dropped >= n


def ids(path: Path) -> list[int]:
    return [int(str(x["request_id"])[1:]) for x in lines(path)]


def test_logrotate_create_the_writer_follows_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    log = RequestLog(path)
    for i in range(100):
        log.record(entry(i))
    settle(log, 100)
    os.rename(path, tmp_path / "req.jsonl.1")  # logrotate create: move, then a new file
    path.touch()
    for i in range(100, 200):
        log.record(entry(i))
    log.close()
    assert ids(tmp_path / "req.jsonl.1") == list(range(100))
    assert ids(path) == list(range(100, 200))
    assert (log.dropped, log.reopens) == (0, 1)


def test_logrotate_copytruncate_lines_start_again_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    log = RequestLog(path, max_bytes=10_000_000)
    for i in range(100):
        log.record(entry(i))
    settle(log, 100)
    shutil.copy(path, tmp_path / "req.jsonl.1")  # logrotate copytruncate
    os.truncate(path, 0)
    for i in range(100, 150):
        log.record(entry(i))
    log.close()
    assert b"\0" not in path.read_bytes()  # O_APPEND: no hole where the old lines were
    assert ids(path) == list(range(100, 150)) and log.dropped == 0


def test_a_deleted_log_is_created_again_and_rotation_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    log = RequestLog(path, max_bytes=4000, backups=2)
    log.record(entry(0))
    settle(log, 1)
    path.unlink()
    for i in range(1, 200):
        log.record(entry(i, "x" * 20))
        if i % 10 == 0:
            time.sleep(0.002)
    log.close()
    kept = [n for name in ("req.jsonl.2", "req.jsonl.1", "req.jsonl")
            for n in ids(tmp_path / name)]
    assert kept == sorted(kept) and kept[-1] == 199 and log.dropped == 0


def test_reopen_asked_for_sighup_reopens_once(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    log = RequestLog(path)
    log.record(entry(0))
    settle(log, 1)
    os.rename(path, tmp_path / "moved")
    log.reopen()
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    log.record(entry(1))
    log.close()
    assert ids(path) == [1] and log.reopens == 1


def test_a_client_cannot_write_a_huge_line(tmp_path: Path) -> None:
    cut: list[int] = []
    log = RequestLog(tmp_path / "req.jsonl", max_line_bytes=4096,
                     on_truncate=lambda: cut.append(1))
    junk = LogEntry(1.0, "r0", {f"x-affinity-{i}": "x" * 60_000 for i in range(3)}, 0, 400,
                    "refused", None, None, 0.0, 0.0, "bad_tag", "p", 1.0)
    for _ in range(50):
        log.record(junk)
    log.record(entry(1))
    log.close()
    raw = (tmp_path / "req.jsonl").read_bytes().splitlines()
    assert len(raw) == 51 and max(map(len, raw[:50])) <= 4096
    first = json.loads(raw[0])
    assert first["truncated"] is True and first["status"] == 400
    assert isinstance(parse_entry(first), LogEntry)  # a replay still reads it
    assert "truncated" not in json.loads(raw[-1])
    assert log.truncated == 50 == len(cut)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_fifo_or_directory_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "req.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    t0 = time.monotonic()
    with pytest.raises(RequestLogError, match=f"is a {'FIFO' if kind == 'fifo' else kind}"):
        RequestLog(path)
    assert time.monotonic() - t0 < 1  # a FIFO never blocks the open


def test_full_disk_one_error_line_exact_drops_then_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    full = [True]

    def write(fd: int, data: bytes) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    caplog.set_level(logging.INFO, logger="hybrid_router.requestlog")
    log = RequestLog(tmp_path / "req.jsonl", clock=lambda: now[0], write=write)
    for i in range(3000):
        log.record(entry(i))
        if i % 100 == 0:
            time.sleep(0.001)  # many batches, many failed writes
    settle(log, 3000)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "No space left" in errors[0].getMessage()
    assert (log.dropped, log.written) == (3000, 0)
    now[0] = 61.0  # past the report interval: one summary with the count since
    log.record(entry(3000))
    settle(log, 3001)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "lines dropped in the last 61 s" in errors[1].getMessage()
    full[0] = False
    log.record(entry(3001))
    log.close()
    assert ids(tmp_path / "req.jsonl") == [3001] and log.dropped == 3001
    assert any("writing again" in r.getMessage() for r in caplog.records)


def test_a_write_cut_short_counts_exactly_and_leaves_lines_parseable(tmp_path: Path) -> None:
    calls = [0]
    inside, gate = threading.Event(), threading.Event()

    def short(fd: int, data: bytes) -> int:
        calls[0] += 1
        if calls[0] == 1:  # held until lines 0-4 are queued: they make the next batch
            inside.set()
            gate.wait()
        if calls[0] == 2:  # the disk fills 2.5 lines into it: a short write,
            first, second, _ = data.split(b"\n", 2)
            return os.write(fd, data[:len(first) + len(second) + 2 + 10])
        if calls[0] == 3:  # then the error
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    log = RequestLog(tmp_path / "req.jsonl", write=short)
    log.record(entry(-1))
    assert inside.wait(10)
    for i in range(5):
        log.record(entry(i))
    gate.set()
    settle(log, 6)
    log.record(entry(5))
    log.close()
    raw = (tmp_path / "req.jsonl").read_bytes().splitlines()
    whole = [json.loads(x)["request_id"] for x in raw if x.endswith(b"}")]
    assert (log.written, log.dropped) == (4, 3) and whole == ["r-1", "r0", "r1", "r5"]
    assert len(raw) == 5  # the torn third line ended with a newline, alone on its line


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_fifo_or_directory_log_with_one_line_and_exit_2(
        tmp_path: Path, kind: str, workers: int) -> None:
    policy = tmp_path / "policy.yaml"  # memory store: several workers may share it
    policy.write_text(EXAMPLE.read_text().replace('"sqlite:state/budget.db"', '"memory"'))
    log = tmp_path / "req.jsonl"
    target = log if workers == 1 else tmp_path / "req.jsonl.w1"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--policy", str(policy), "--grpc",
         "127.0.0.1:0", "--metrics", "off", "--workers", str(workers),
         "--request-log", str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    said = proc.stderr.splitlines()
    assert len(said) == 1 and said[0].startswith(f"hybrid-router serve: --request-log {target}")
    assert ("FIFO" if kind == "fifo" else "directory") in said[0]


def test_serve_reopens_its_request_log_on_sighup(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE.read_text().replace('"sqlite:state/budget.db"', '"memory"'))
    log, out = tmp_path / "req.jsonl", tmp_path / "serve.log"
    with out.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--policy", str(policy), "--grpc",
             "127.0.0.1:0", "--metrics", "off", "--request-log", str(log)],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_line(out, r"ext_proc on 127\.0\.0\.1:\d+", proc)
        os.rename(log, tmp_path / "req.jsonl.1")  # logrotate without create, then HUP
        proc.send_signal(signal.SIGHUP)
        wait_line(out, r"request log .* reopened", proc)  # no traffic: only SIGHUP does it
        assert log.is_file() and (tmp_path / "req.jsonl.1").is_file()
    finally:
        stop(proc)
