"""Measures of a run that need more than a sum: stability over time, affinity, saturation.

Time is cut into `WINDOW_S` windows. A window is *steady* when no scenario
event (nor the start of the run) falls in it or in the `settle_s` before it
(the run records settle_s = refresh_seconds + one window: the router hears of
a change at the next feed, and the world needs a window to settle). Two
requests are under the same steady load when both are in steady windows and
no event falls between them: a key's requests before and after a node was lost
are not a flap, however steady the windows around the loss. Each function here
reads a `Result`'s columns and returns plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from router import wire
from simulator.run import SAMPLE_S, Result

WINDOW_S = SAMPLE_S
MIN_WINDOW = 50  # fewer requests in a window: its mode mix is too noisy to compare
EDGE = wire.EDGE_MODES


def window_of(t: Sequence[float], width: float = WINDOW_S) -> np.ndarray:
    """The window index of each arrival time."""
    return np.floor(np.asarray(t, dtype=float) / width).astype(np.int64)


def steady(count: int, event_times: Sequence[float], settle_s: float,
           width: float = WINDOW_S) -> np.ndarray:
    """Per window: no event in it or in the `settle_s` before it."""
    starts = np.arange(count) * width
    ok = np.ones(count, dtype=bool)
    for at in event_times:
        ok &= ~((starts - settle_s <= at) & (at < starts + width))
    return ok


def mode_mix(r: Result, width: float = WINDOW_S, *, modes: Sequence[object] = (),
             windows: int | None = None) -> tuple[np.ndarray, list[object]]:
    """Requests per window of `width` s (rows; `windows` of them, else up to the last
    request's) and per mode (columns: `modes` first, then any other in order of first
    appearance), and the modes in column order."""
    n = len(r.t)
    order: dict[object, int] = {m: i for i, m in enumerate(modes)}
    col = np.fromiter((order.setdefault(m, len(order)) for m in r.mode[:n]),
                      dtype=np.int64, count=n)
    win = window_of(r.t[:n], width)
    rows = windows if windows is not None else (int(win.max()) + 1 if n else 0)
    mix = np.zeros((rows, len(order)))
    np.add.at(mix, (win, col), 1.0)
    return mix, list(order)


def _steady_of(r: Result, n: int) -> tuple[np.ndarray, np.ndarray]:
    win = window_of(r.t[:n])
    count = int(win.max()) + 1 if n else 0
    return win, steady(count, r.event_times, r.settle_s)


def mode_flap(r: Result) -> float | None:
    """Largest total-variation distance of the mode mix between consecutive steady windows."""
    if not len(r.t):
        return None
    mix, _ = mode_mix(r)
    ok = steady(len(mix), r.event_times, r.settle_s)
    total = mix.sum(axis=1)
    usable = ok & (total >= MIN_WINDOW)
    pairs = np.flatnonzero(usable[:-1] & usable[1:])
    if not len(pairs):
        return None
    share = mix / np.maximum(total, 1.0)[:, None]
    tv = 0.5 * np.abs(share[pairs + 1] - share[pairs]).sum(axis=1)
    return float(tv.max())


def codes(values: object) -> np.ndarray:
    """A small integer per distinct value, in order of first appearance."""
    seen: dict[object, int] = {}
    return np.fromiter((seen.setdefault(v, len(seen)) for v in values),  # type: ignore[attr-defined]
                       dtype=np.int64)


def stretch(t: Sequence[float], event_times: Sequence[float]) -> np.ndarray:
    """Per arrival time, how many events came at or before it: two requests in steady
    windows are under the same steady load when this is the same for both."""
    return np.searchsorted(np.sort(np.asarray(event_times, dtype=float)),
                           np.asarray(t, dtype=float), side="right")


def quality_flap_rate(r: Result) -> float | None:
    """Share of a key's consecutive requests (same class) in steady windows, with no event
    between them, whose mode or quality changed."""
    n = len(r.t)
    if n < 2:
        return None
    win, ok = _steady_of(r, n)
    quality = r.quality if len(r.quality) == n else [None] * n
    what = codes(zip(r.mode, quality, strict=True))
    who = codes(zip(r.cls, r.key, strict=True))
    order = np.lexsort((np.asarray(r.t, dtype=float), who))
    same = who[order][1:] == who[order][:-1]
    steady_row = ok[win[order]]
    part = stretch(r.t, r.event_times)[order]
    pairs = same & steady_row[1:] & steady_row[:-1] & (part[1:] == part[:-1])
    if not pairs.any():
        return None
    changed = what[order][1:] != what[order][:-1]
    return float((changed & pairs).sum() / pairs.sum())


def affinity_hit_rate(r: Result, rows: np.ndarray | None = None) -> float | None:
    """Share of edge requests (edge, edge-degraded) on their key's home node."""
    mode = np.asarray(r.mode, dtype=object)
    sel = np.isin(mode, EDGE)
    if rows is not None:
        sel &= rows
    if len(r.home) != len(r.mode) or not sel.any():
        return None
    return float(np.asarray(r.home, dtype=bool)[sel].mean())


def fleet_utilization(r: Result) -> tuple[np.ndarray, np.ndarray]:
    """(window index, share of all edge slots busy) of each sampled window."""
    total = sum(r.slots.values()) or 1
    wins, util = [], []
    for t, busy in r.util:
        wins.append(round(t / WINDOW_S) - 1)
        util.append(sum(busy.values()) / (total * WINDOW_S))
    return np.asarray(wins, dtype=np.int64), np.asarray(util, dtype=float)


def fleet_busy(r: Result) -> float | None:
    """Share of all edge slot-seconds busy over the run (None: no nodes or no samples)."""
    total = sum(r.slots.values())
    span = len(r.util) * WINDOW_S
    if not total or not span:
        return None
    return sum(sum(busy.values()) for _, busy in r.util) / (total * span)


def rows_in_windows(r: Result, windows: np.ndarray) -> np.ndarray:
    """Per request: whether it arrived in one of `windows`."""
    return np.isin(window_of(r.t), windows)


def affinity_below(r: Result, utilization: float) -> tuple[float | None, int]:
    """Affinity hit rate over windows whose fleet utilization is below `utilization`,
    and how many such windows there were."""
    wins, util = fleet_utilization(r)
    calm = wins[util < utilization]
    return affinity_hit_rate(r, rows_in_windows(r, calm)), len(calm)


def saturated_modes(r: Result, utilization: float = 0.8) -> dict[str, int]:
    """Requests per mode in windows whose fleet utilization is at least `utilization`."""
    wins, util = fleet_utilization(r)
    rows = rows_in_windows(r, wins[util >= utilization])
    modes, counts = np.unique(np.asarray(r.mode, dtype=object)[rows], return_counts=True)
    return {str(m): int(c) for m, c in zip(modes, counts, strict=True)}


def max_load_over_cap(r: Result) -> float | None:
    """The largest (in flight + 1) / cap at any pick, by the router's own caps (None: none)."""
    fills = [f for f in r.fill if f is not None]
    return float(max(fills)) if fills else None


def warm_hit_rate(r: Result) -> float | None:
    """Share of edge inferences that found their key warm on their node."""
    warm = [w for w in r.warm if w is not None]
    return float(sum(warm) / len(warm)) if warm else None
