"""When the budget keeper may call its store: every `tick` s, sooner when asked, within a rate.

A round is due `tick` seconds after the last one began, or at once when a
request waits for a lease (`urgent`). Either way it needs a token from a
bucket that fills at `rate` a second up to `burst`: a waiting request usually
gets its round at once, and requests that wait back to back cannot make more
than `rate` rounds a second (plus `burst`) whatever the request rate. A round
that found nothing to send gives its token back (`refund`). Pure: the caller
passes the clock and holds whatever lock it needs.
"""

from __future__ import annotations

import math


class Pace:
    """A periodic round with a token bucket on top; see the module docstring."""

    def __init__(self, tick: float, rate: float = math.inf, burst: float = 2.0,
                 now: float = 0.0) -> None:
        """Rounds every `tick` s, at most `rate` a second (`burst` back to back)."""
        self.tick, self.rate, self.burst = tick, rate, burst
        self.tokens, self.filled, self.last = burst, now, -math.inf

    def _fill(self, now: float) -> None:
        gained = (now - self.filled) * self.rate if self.rate < math.inf else self.burst
        self.tokens = min(self.burst, self.tokens + gained)
        self.filled = now

    def wait(self, now: float, urgent: bool) -> float:
        """Seconds until the next round may begin (0: now)."""
        self._fill(now)
        wait = 0.0 if urgent else self.last + self.tick - now
        if self.tokens < 1:
            wait = max(wait, (1 - self.tokens) / self.rate)
        return max(0.0, wait)

    def begin(self, now: float) -> None:
        """A round begins: it takes a token."""
        self._fill(now)
        self.tokens -= 1
        self.last = now

    def refund(self) -> None:
        """The round sent nothing: its token goes back."""
        self.tokens = min(self.burst, self.tokens + 1)
