"""Policy parsing in a worker process, so a reload never holds the serving process's GIL.

Reading a large policy is a quarter second of YAML events, schema validation (long C calls)
and the garbage its objects make; in a thread of the serving process each of those can hold
the GIL past the event loop's budget (measured with a 1,000-node policy: loop wake-ups 5-10 ms
late). In a process of its own it costs the router nothing but unpickling the result. The
worker is started once (spawn: a fresh interpreter, never a fork of a process with gRPC
threads) and reused; if it dies mid-read, the same read is tried again in a new one, up to
`TRIES` times, each death reported to the caller. Hostile files are bounded by the loader
itself (size, depth, alias expansion), and here also by `timeout`. A worker whose router
died without shutting it down (SIGKILL, OOM) exits within `ORPHAN_POLL_S`: nothing else
would end it, since it waits on a queue its own copy of the pipe keeps open, and every
restart of a killed router would leave one more interpreter (and its resource tracker)
running.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from router.core.policy import Policy
from router.policy.loader import PolicyError, load_policy, policy_from_text
from router.policy.located import Problem

log = logging.getLogger("router.policy.isolated")
TIMEOUT_S = 60.0
TRIES = 4  # worker deaths survived by one read: 3
ORPHAN_POLL_S = 0.5

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


class WorkerDied(RuntimeError):
    """The worker process died on every try of one read."""


def _load(path: str, text: str | None = None
          ) -> tuple[Policy | None, list[tuple[str, int, int, str, str]]]:
    """In the worker: the policy (from `text` if given, else the file), or every problem as
    plain tuples (exceptions carry less)."""
    try:
        return (load_policy(path) if text is None else policy_from_text(text, path)), []
    except PolicyError as exc:
        return None, [(p.file, p.line, p.col, p.message, p.severity) for p in exc.problems]


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_watch_parent, initargs=(os.getpid(),))
        return _pool


def _watch_parent(parent: int) -> None:
    """In the worker: exit as soon as the router that started it is gone."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="orphan-guard", daemon=True).start()


def _ready() -> int:
    """In the worker: nothing; unpickling this call imported this module and the loader."""
    return os.getpid()


def warm() -> Future[int]:
    """Start the worker now and have it import the loader, so the first reload waits for
    neither; the future is done once the worker answers.

    A spawned worker imports a function's module only when a call names it: warmed with a
    builtin, the first reload still paid for importing the loader (pydantic, PyYAML), half a
    second idle and past ten on a loaded machine.
    """
    return _executor().submit(_ready)


def load_policy_isolated(path: str | Path, *, text: str | None = None,
                         timeout: float = TIMEOUT_S,
                         on_death: Callable[[], None] | None = None) -> Policy:
    """`load_policy` in the worker process (of `text` as read from `path`, when given); raises
    `PolicyError` as it would, `WorkerDied` if the worker died on every try. Blocks the caller:
    call it from a worker thread, never the event loop."""
    for attempt in range(1, TRIES + 1):
        pool = _executor()
        try:
            policy, problems = pool.submit(_load, str(path), text).result(timeout)
            break
        except BrokenProcessPool:
            _forget(pool)
            if on_death is not None:
                on_death()
            log.warning("policy worker process died reading %s (try %d of %d)%s", path,
                        attempt, TRIES, "; starting a new one" if attempt < TRIES else "")
        except TimeoutError:
            _kill(pool)
            raise PolicyError([Problem(str(path), 1, 1, f"reading the policy took longer than "
                                                        f"{timeout:g} s; refused")]) from None
    else:
        raise WorkerDied(f"the policy worker died on each of {TRIES} tries reading {path}")
    if policy is None:
        raise PolicyError([Problem(*p) for p in problems])
    return policy


def _forget(pool: ProcessPoolExecutor) -> None:
    """Drop a broken pool so the next call starts a fresh worker."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None


def _kill(pool: ProcessPoolExecutor) -> None:
    """Stop a worker stuck on one file; the next call starts a fresh one."""
    _forget(pool)
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
