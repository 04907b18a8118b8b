"""The request path's plain counters read, at scrape time, as the Prometheus series they replace."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from router.tally import DecisionTally


def scrape(tally: DecisionTally) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(tally)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}


def test_decisions_and_refusals_count_by_their_labels() -> None:
    tally = DecisionTally()
    for _ in range(2):
        tally.decided("edge", "affinity")
    tally.decided("refused", "budget")
    tally.refused("429", "budget")
    got = scrape(tally)
    assert got[("router_decisions_total", (("mode", "edge"), ("reason", "affinity")))] == 2
    assert got[("router_decisions_total", (("mode", "refused"), ("reason", "budget")))] == 1
    assert got[("router_refusals_total", (("code", "429"), ("reason", "budget")))] == 1


def test_decision_seconds_buckets_are_cumulative_and_include_their_bound() -> None:
    tally = DecisionTally((1e-3, 1e-2))
    for seconds in (0.0005, 1e-3, 0.005, 0.5):  # a value on a bound falls in that bucket
        tally.observe(seconds)
    got = scrape(tally)
    bucket = {le: got[("router_decision_seconds_bucket", (("le", le),))]
              for le in ("0.001", "0.01", "+Inf")}
    assert bucket == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert got[("router_decision_seconds_count", ())] == 4
    assert abs(got[("router_decision_seconds_sum", ())] - 0.5065) < 1e-12


def test_an_empty_tally_still_exposes_the_histogram() -> None:
    text = generate_latest(_registry(DecisionTally())).decode()
    assert 'router_decision_seconds_bucket{le="+Inf"} 0.0' in text
    assert "router_decision_seconds_count 0.0" in text


def _registry(tally: DecisionTally) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(tally)
    return registry
