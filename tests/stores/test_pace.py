"""The budget keeper's pace: rounds every tick, at once when asked, never past the rate."""

from __future__ import annotations

import itertools

import pytest

from router.stores.pace import Pace


def rounds(pace: Pace, seconds: float, *, urgent: bool, step: float = 0.001,
           empty: bool = False) -> list[float]:
    """Begin times of the rounds a keeper would run over `seconds` (clock in `step`s)."""
    began, now = [], 0.0
    while now < seconds:
        if pace.wait(now, urgent) == 0.0:
            pace.begin(now)
            began.append(now)
            if empty:
                pace.refund()
        now += step
    return began


def test_without_requests_waiting_a_round_runs_every_tick() -> None:
    began = rounds(Pace(0.25, rate=5.0), 10.0, urgent=False)
    assert len(began) == pytest.approx(40, abs=1)
    gaps = [b - a for a, b in itertools.pairwise(began)]
    assert min(gaps) == pytest.approx(0.25, abs=0.002)


def test_requests_waiting_back_to_back_get_rate_rounds_a_second_and_no_more() -> None:
    began = rounds(Pace(0.25, rate=5.0, burst=2.0), 10.0, urgent=True)
    assert len(began) <= 5.0 * 10.0 + 2.0
    assert len(began) >= 5.0 * 10.0 - 1  # and the rate is there to be used
    per_second = [sum(1 for b in began if s <= b < s + 1) for s in range(10)]
    assert max(per_second) <= 5 + 2, per_second


def test_a_request_waiting_after_a_quiet_spell_gets_its_round_at_once() -> None:
    pace = Pace(0.25, rate=5.0, burst=2.0)
    pace.begin(0.0)
    assert pace.wait(0.1, urgent=False) == pytest.approx(0.15)
    assert pace.wait(0.1, urgent=True) == 0.0  # a token is left: no need to wait the tick
    pace.begin(0.1)  # 1.5 tokens then: half of one left
    assert pace.wait(0.1, urgent=True) == pytest.approx(0.1)  # the other half at 5/s


def test_a_round_with_nothing_to_send_costs_no_token() -> None:
    assert len(rounds(Pace(0.05, rate=5.0), 10.0, urgent=True, empty=True)) > 150
    unlimited = Pace(0.05)  # an authoritative store: no rate, every tick
    assert len(rounds(unlimited, 1.0, urgent=True)) == 1000  # urgent: every step
