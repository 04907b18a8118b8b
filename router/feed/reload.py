"""Hot policy reload: watch the policy file (and SIGHUP), keep the last good policy.

The file's stat is compared on every `check()`; `request()` (wired to SIGHUP
by the server) forces a re-read. The caller (`Refresher`) installs a valid
edit through `Runtime`, which swaps one table reference: requests in flight
finish on the table that admitted them. An invalid edit is refused
with the `FILE:LINE:COL: message` lines `hybrid-router validate` prints,
logged and counted; the policy in force stays.
"""

from __future__ import annotations

import logging
import os

from router.core.model import Policy
from router.metrics import RouterMetrics
from router.policy.isolated import load_policy_isolated
from router.policy.loader import PolicyError
from router.runtime import Runtime

log = logging.getLogger("router.feed.reload")


class PolicyReloader:
    """Reloads one policy file into a `Runtime` when it changes or when asked."""

    def __init__(self, path: str, runtime: Runtime, metrics: RouterMetrics | None = None
                 ) -> None:
        """Watch `path`; the policy already in `runtime` counts as loaded from it."""
        self.path = path
        self.runtime = runtime
        self.metrics = metrics
        self.requested = False
        self.last_problems: list[str] = []
        self._sig = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def request(self) -> None:
        """Re-read the policy at the next check (SIGHUP)."""
        self.requested = True

    def changed(self) -> bool:
        """Whether `check` has anything to read: the file changed or a reload was asked for."""
        return self.requested or self._stat() != self._sig

    def check(self) -> Policy | None:
        """A new valid policy if the file changed or a reload was requested, else None."""
        sig = self._stat()
        if sig == self._sig and not self.requested:
            return None
        self.requested = False
        self._sig = sig
        return self.load()

    def load(self) -> Policy | None:
        """Read and validate the file: the policy if valid and new; errors logged and counted."""
        try:
            policy = load_policy_isolated(self.path)
        except PolicyError as exc:
            self.last_problems = [str(p) for p in exc.problems]
            for line in self.last_problems:
                log.error("policy reload refused: %s", line)
            log.error("keeping policy version %s in force", self.runtime.policy.digest)
            self._count("error")
            return None
        self.last_problems = []
        if policy.digest == self.runtime.policy.digest:
            return None
        return policy

    def installed(self, policy: Policy, old_digest: str) -> None:
        """Log and count a policy the caller has installed."""
        log.info("policy %s reloaded: version %s -> %s", self.path, old_digest, policy.digest)
        self._count("ok")

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.policy_reload.labels(result=result).inc()
