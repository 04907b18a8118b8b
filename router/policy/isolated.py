"""Policy parsing in a worker process, so a reload never holds the serving process's GIL.

Reading a large policy is a quarter second of YAML events, schema validation (long C calls)
and the garbage its objects make; in a thread of the serving process each of those can hold
the GIL past the event loop's budget (measured with a 1,000-node policy: loop wake-ups 5-10 ms
late). In a process of its own it costs the router nothing but unpickling the result. The
worker is started once (spawn: a fresh interpreter, never a fork of a process with gRPC
threads) and reused; if it dies, the next call starts a new one. Hostile files are bounded by
the loader itself (size, depth, alias expansion), and here also by `timeout`.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from router.core.model import Policy
from router.policy.loader import PolicyError, load_policy
from router.policy.located import Problem

log = logging.getLogger("router.policy.isolated")
TIMEOUT_S = 60.0

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _load(path: str) -> tuple[Policy | None, list[tuple[str, int, int, str, str]]]:
    """In the worker: the policy, or every problem as plain tuples (exceptions carry less)."""
    try:
        return load_policy(path), []
    except PolicyError as exc:
        return None, [(p.file, p.line, p.col, p.message, p.severity) for p in exc.problems]


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1,
                                        mp_context=multiprocessing.get_context("spawn"))
        return _pool


def warm() -> Future[int]:
    """Start the worker now (it imports the loader), so the first reload does not wait for it;
    the future is done once the worker answers."""
    return _executor().submit(int)


def load_policy_isolated(path: str | Path, *, timeout: float = TIMEOUT_S) -> Policy:
    """`load_policy` in the worker process; raises `PolicyError` as it would (blocks the caller:
    call it from a worker thread, never the event loop)."""
    global _pool
    for attempt in (1, 2):
        pool = _executor()
        try:
            policy, problems = pool.submit(_load, str(path)).result(timeout)
            break
        except BrokenProcessPool:
            with _lock:
                _pool = None
            if attempt == 2:
                raise
            log.warning("policy worker process died; starting a new one")
        except TimeoutError:
            _kill(pool)
            raise PolicyError([Problem(str(path), 1, 1, f"reading the policy took longer than "
                                                        f"{timeout:g} s; refused")]) from None
    if policy is None:
        raise PolicyError([Problem(*p) for p in problems])
    return policy


def _kill(pool: ProcessPoolExecutor) -> None:
    """Stop a worker stuck on one file; the next call starts a fresh one."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    for proc in list(getattr(pool, "_processes", {}).values()):  # no public way to kill one
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the worker process (at exit)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
