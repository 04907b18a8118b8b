"""A run's summary totals folded a request at a time, for a run that keeps no columns.

`RunFold.add` takes each request once it is committed (`simulator.row.Commit`:
in arrival order) and keeps only what `summary.totals` reads from columns:
counts, sums, maxima, and a log-bucketed histogram of the served latencies for
the percentiles (within `sketch.ALPHA` of numpy's; everything else is the
same number as from columns). The two flap measures of `simulator.metrics`
become streams: the mode mix of the current 10-s window against the last
one's, and per (class, key) its last request's mode and quality. That last
map is bounded by the number of distinct keys, not by the requests.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence

from simulator.metrics import EDGE, MIN_WINDOW, WINDOW_S
from simulator.report.summary import Totals
from simulator.row import Row
from simulator.sketch import LogHistogram

Window = tuple[int, bool, dict[str, float]]  # (index, usable, share per mode)


class RunFold:
    """Totals of a run's requests, folded in arrival order."""

    def __init__(self, event_times: Sequence[float], settle_s: float) -> None:
        self.event_times, self.settle_s = tuple(event_times), settle_s
        self.sorted_events = sorted(self.event_times)
        self.n, self.slo_met, self.variable, self.last_t = 0, 0, 0.0, 0.0
        self.modes: Counter[str] = Counter()
        self.nodes: Counter[str] = Counter()
        self.spend: dict[str, float] = {}
        self.latency = LogHistogram()
        self.max_fill: float | None = None
        self.edge = self.home = self.warm_seen = self.warm = 0
        self.codes: dict[str, int] = {}  # modes in order of first appearance
        self.window: tuple[int, bool, Counter[str]] | None = None  # the one filling up
        self.last_window: Window | None = None
        self.flap: float | None = None
        # per (class, key): its last request's mode, quality, whether it was in a steady
        # window, and how many events came before it (metrics.stretch)
        self.last: dict[tuple[str, str], tuple[str, str | None, bool, int]] = {}
        self.pairs = self.changed = 0

    def steady(self, w: int) -> bool:
        """No event in window `w` nor in the settle time before it (`metrics.steady`)."""
        start = w * WINDOW_S
        return not any(start - self.settle_s <= at < start + WINDOW_S for at in self.event_times)

    def add(self, row: Row) -> None:
        """Fold in one committed request."""
        mode, lat = row.mode, row.latency
        self.n += 1
        self.last_t = row.t
        self.modes[mode] += 1
        self.codes.setdefault(mode, len(self.codes))
        if row.node:
            self.nodes[row.node] += 1
        self.variable += row.cost
        if row.cloud:
            self.spend[row.tenant] = self.spend.get(row.tenant, 0.0) + row.cloud
        if not math.isnan(lat) and mode != "refused":
            self.latency.add(lat)
            self.slo_met += lat <= row.slo
        if row.fill is not None:
            self.max_fill = row.fill if self.max_fill is None else max(self.max_fill, row.fill)
        if mode in EDGE:
            self.edge += 1
            self.home += bool(row.home)
        if row.warm is not None:
            self.warm_seen += 1
            self.warm += row.warm
        self._flaps(row)

    def _flaps(self, row: Row) -> None:
        """Advance both flap measures by one request."""
        w = math.floor(row.t / WINDOW_S)
        if self.window is None or self.window[0] != w:
            self._close()
            self.window = (w, self.steady(w), Counter())
        self.window[2][row.mode] += 1
        steady = self.window[1]
        who = (row.cls, row.key)
        what = (row.mode, row.quality)
        part = bisect.bisect_right(self.sorted_events, row.t)
        before = self.last.get(who)
        if before is not None and before[2] and steady and before[3] == part:
            self.pairs += 1
            self.changed += before[:2] != what
        self.last[who] = (*what, steady, part)

    def _close(self) -> None:
        """The filling window is complete: its mode mix against the one before it."""
        if self.window is None:
            return
        w, steady, counts = self.window
        total = float(sum(counts.values()))
        share = {m: c / max(total, 1.0) for m, c in counts.items()}
        now = (w, steady and total >= MIN_WINDOW, share)
        before = self.last_window
        if before is not None and before[0] == w - 1 and before[1] and now[1]:
            tv = 0.5 * sum(abs(share.get(m, 0.0) - before[2].get(m, 0.0)) for m in self.codes)
            self.flap = tv if self.flap is None else max(self.flap, tv)
        self.last_window, self.window = now, None

    def totals(self) -> Totals:
        """What `summarize` reads, as `summary.totals` gives it from columns (once every
        request is in: it closes the last window)."""
        self._close()

        def pct(q: float) -> float:
            return round(self.latency.quantile(q / 100.0), 2) if self.latency.count else 0.0

        return Totals(
            requests=self.n, modes=self.modes, slo_met=self.slo_met,
            variable_usd=self.variable, spend=self.spend, last_t=self.last_t,
            latency_ms={"p50": pct(50), "p95": pct(95), "p99": pct(99)},
            max_load_over_cap=self.max_fill,
            affinity_hit_rate=self.home / self.edge if self.edge else None,
            warm_hit_rate=self.warm / self.warm_seen if self.warm_seen else None,
            mode_flap=self.flap,
            quality_flap_rate=self.changed / self.pairs if self.pairs else None)

    def node_counts(self) -> dict[str, int]:
        """Requests per edge node (edge modes and split) or pool (cloud); refusals left out."""
        return dict(sorted(self.nodes.items()))
