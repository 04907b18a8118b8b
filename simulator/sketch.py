"""Latency quantiles in bounded memory: a log-bucketed histogram with a stated relative error.

A value x > 0 falls in bucket i = ceil(log_g(x)) with g = (1 + ALPHA) / (1 - ALPHA),
so bucket i holds (g^(i-1), g^i], and its estimate 2 g^i / (g + 1) lies within
ALPHA (relative) of every value in it (the DDSketch construction). A quantile is
read as numpy's default percentile reads it: the two order statistics around rank
q (n - 1), interpolated linearly; each is within ALPHA, so their interpolation is
within ALPHA of numpy's exact percentile (clamped to the smallest and largest
value seen, which only brings it nearer: all-equal values read back exact).
Buckets are kept only where values fell: latencies from 1 µs to 10^7 ms need at
most ~2,300 of them, whatever the count.
"""

from __future__ import annotations

import math
from collections import Counter

ALPHA = 0.005  # relative error of every quantile read back (0.5 %)
_G = (1 + ALPHA) / (1 - ALPHA)
_LOG_G = math.log(_G)


class LogHistogram:
    """Counts of positive values per logarithmic bucket; zeros apart."""

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.zeros = 0
        self.count = 0
        self.low, self.high = math.inf, 0.0  # estimates are clamped to the values' range

    def add(self, x: float) -> None:
        """Count one value (finite, at least 0)."""
        self.count += 1
        self.low, self.high = min(self.low, x), max(self.high, x)
        if x <= 0.0:
            self.zeros += 1
        else:
            self.buckets[math.ceil(math.log(x) / _LOG_G)] += 1

    def _at(self, ranks: list[int]) -> list[float]:
        """The estimates of the order statistics at `ranks` (ascending, 0-based)."""
        out, seen, want = [], self.zeros, iter(ranks)
        rank = next(want, None)
        while rank is not None and rank < seen:
            out.append(0.0)
            rank = next(want, None)
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            while rank is not None and rank < seen:
                out.append(min(max(2.0 * _G ** i / (_G + 1.0), self.low), self.high))
                rank = next(want, None)
        return out

    def quantile(self, q: float) -> float:
        """The q-th quantile (0..1), within ALPHA of numpy's; NaN when empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: list[float]) -> list[float]:
        """The quantiles at levels `qs` (each 0..1), in one pass over the buckets."""
        if not self.count:
            return [math.nan] * len(qs)
        pos = [q * (self.count - 1) for q in qs]
        low = [math.floor(p) for p in pos]
        ranks = sorted({r for lo in low for r in (lo, min(lo + 1, self.count - 1))})
        at = dict(zip(ranks, self._at(ranks), strict=True))
        return [at[lo] + (at[min(lo + 1, self.count - 1)] - at[lo]) * (p - lo)
                for p, lo in zip(pos, low, strict=True)]
