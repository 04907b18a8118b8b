"""Hot policy reload: watch the policy file (and SIGHUP), keep the last good policy.

The file's stat is compared on every `check()`; `request()` (wired to SIGHUP
by the server) forces a re-read. The caller (`Refresher`) installs a valid
edit through `Runtime`, which swaps one table reference: requests in flight
finish on the table that admitted them. An invalid edit is refused
with the `FILE:LINE:COL: message` lines `hybrid-router validate` prints,
logged and counted; the policy in force stays.

Whole files only
----------------
An editor or `cp` that writes in place leaves a prefix of the new file on disk for a
while, and a prefix of a policy is often a valid policy (cut before `budgets:`, every
tenant is gone). So a changed file is read (`read_settled`) only once it has stood still:
untouched for `settle` seconds before the read, or the same size, mtime, inode and
content hash across a wait of `settle`. A file still changing after `MAX_WAIT_S` is left
for the next check. What is parsed is the very bytes that were checked, sent to the policy
worker as text (`router.policy.isolated`), whose death mid-read is retried there and counted
here. A FIFO, a directory or any other non-regular file is refused at once, with one line,
without opening it for a blocking read.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from router.core.policy import Policy
from router.metrics import RouterMetrics
from router.policy.isolated import WorkerDied, load_policy_isolated
from router.policy.loader import PolicyError
from router.policy.located import Problem, decode_text, read_bytes
from router.policy.yamlloc import MAX_BYTES
from router.runtime import Runtime

log = logging.getLogger("router.feed.reload")
SETTLE_S = 0.5
MAX_WAIT_S = 3.0
Sig = tuple[int, int, int]  # mtime_ns, size, inode


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Pause the cyclic collector while a new policy is read and built, then freeze what lives.

    A policy is a large object graph that lives until the next reload: collecting it is
    pointless, and a collection runs on whichever thread trips the allocation threshold,
    holding the GIL — over a 1,000-node policy a full pass takes ~40 ms, a young one a few ms,
    either a stall of every request waiting on the event loop. So no collection runs while
    it is built, and once it is installed it is frozen out of later passes, as the start-up
    heap is. Frozen objects are still freed by reference counting when the next reload
    drops them (a policy and its snapshot hold no reference cycles:
    tests/feed/test_reload.py checks), and routine feed refreshes, which allocate little,
    leave the collector as it is. Nested uses freeze once, at the outermost exit.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@dataclass(frozen=True, slots=True)
class Read:
    """One read of the policy file: its stat, its bytes' hash and its text (or problems)."""

    sig: Sig | None
    digest: bytes
    text: str | None
    problems: tuple[Problem, ...]


def _stat(path: str) -> Sig | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_once(path: str) -> Read:
    """The file as it is now: stat before and after, so a read that raced a write shows it."""
    before = _stat(path)
    raw, problems = read_bytes(path, MAX_BYTES)
    after = _stat(path)
    if raw is None:
        return Read(after, b"", None, tuple(problems))
    text, problems = decode_text(raw, path, MAX_BYTES)
    return Read(after if before == after else None, hashlib.blake2b(raw).digest(), text,
                tuple(problems))


def read_settled(path: str, settle: float = SETTLE_S, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> Read | None:
    """The file once it has stood still for `settle` s, or None if it kept changing for
    `MAX_WAIT_S` (see the module docstring). An unreadable file is returned at once."""
    seen = read_once(path)
    waited = 0.0
    while seen.text is not None:
        if seen.sig is not None and clock() - seen.sig[0] / 1e9 >= settle:
            return seen  # untouched for `settle` before it was read
        if waited >= MAX_WAIT_S:
            return None
        sleep(settle)
        waited += settle
        again = read_once(path)
        if again.sig is not None and (again.sig, again.digest) == (seen.sig, seen.digest):
            return again  # the same across a settle (an mtime in the future: clock skew)
        seen = again
    return seen  # unreadable, not a regular file, not UTF-8: refused as it is


class PolicyReloader:
    """Reloads one policy file into a `Runtime` when it changes or when asked."""

    def __init__(self, path: str, runtime: Runtime, metrics: RouterMetrics | None = None,
                 *, settle: float = SETTLE_S) -> None:
        """Watch `path`; the policy already in `runtime` counts as loaded from it."""
        self.path = path
        self.runtime = runtime
        self.metrics = metrics
        self.settle = settle
        self.requested = False
        self.last_problems: list[str] = []
        self._sig = _stat(path)

    def request(self) -> None:
        """Re-read the policy at the next check (SIGHUP)."""
        self.requested = True

    def changed(self) -> bool:
        """Whether `check` has anything to read: the file changed or a reload was asked for."""
        return self.requested or _stat(self.path) != self._sig

    def check(self) -> Policy | None:
        """A new valid policy if the file changed or a reload was requested, else None."""
        if not self.changed():
            return None
        seen = read_settled(self.path, self.settle)
        if seen is None:
            log.info("policy %s is still being written; reading it when it stands still",
                     self.path)
            return None
        self.requested = False
        self._sig = seen.sig if seen.sig is not None else _stat(self.path)
        if seen.text is None:
            self._refuse([str(p) for p in seen.problems])
            return None
        return self.load(seen.text)

    def load(self, text: str | None = None) -> Policy | None:
        """Validate the file (`text` as read from it, if given): the policy if valid and new;
        errors logged and counted."""
        try:
            policy = load_policy_isolated(self.path, text=text, on_death=self._died)
        except PolicyError as exc:
            self._refuse([str(p) for p in exc.problems])
            return None
        except WorkerDied as exc:
            log.error("policy reload postponed: %s; trying again at the next check", exc)
            self.requested = True
            return None
        self.last_problems = []
        if policy.digest == self.runtime.policy.digest:
            return None
        return policy

    def _refuse(self, problems: list[str]) -> None:
        self.last_problems = problems
        for line in problems:
            log.error("policy reload refused: %s", line)
        log.error("keeping policy version %s in force", self.runtime.policy.digest)
        self._count("error")

    def installed(self, policy: Policy, old_digest: str) -> None:
        """Log and count a policy the caller has installed."""
        log.info("policy %s reloaded: version %s -> %s", self.path, old_digest, policy.digest)
        self._count("ok")

    def _died(self) -> None:
        if self.metrics is not None:
            self.metrics.policy_worker_deaths.inc()

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.policy_reload.labels(result=result).inc()
