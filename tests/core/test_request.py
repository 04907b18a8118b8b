"""Affinity tag parsing: single headers, the JSON form, and precise errors."""

from __future__ import annotations

import pytest

from router.core.model import Defaults
from router.core.request import TagError, parse_request

DEFAULTS = Defaults(tenant="default", residency=frozenset(), model=None,
                    accept_degradation=True, max_cost_usd=None)


def parse(headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return parse_request(headers, DEFAULTS, 100.0)


def test_absent_tags_take_the_policy_defaults() -> None:
    req = parse({})
    assert (req.key, req.tenant, req.residency, req.slo_ms, req.model) == \
        (None, "default", frozenset(), 100.0, None)
    assert req.accept_degradation is True and req.max_cost_usd is None


def test_single_headers_are_parsed_and_typed() -> None:
    req = parse({"x-affinity-key": "cam-7", "x-affinity-tenant": "acme",
                 "x-affinity-residency": "GDPR, CCPA", "x-affinity-slo-ms": "75",
                 "x-affinity-model": "vision-v3", "x-affinity-degrade": "FALSE",
                 "x-affinity-max-cost": "0.004"})
    assert req.key == "cam-7" and req.tenant == "acme"
    assert req.residency == frozenset({"GDPR", "CCPA"})
    assert req.slo_ms == 75.0 and req.model == "vision-v3"
    assert req.accept_degradation is False and req.max_cost_usd == pytest.approx(0.004)


def test_json_form_and_single_header_wins() -> None:
    req = parse({"x-affinity-tags": '{"key": "u1", "tenant": "acme", "data_residency": ["GDPR"],'
                 ' "latency_slo_ms": 50, "model_version": "m", "accept_degradation": false,'
                 ' "max_cost_per_inference": 0.01}',
                 "x-affinity-tenant": "globex"})
    assert req.key == "u1" and req.tenant == "globex"
    assert req.residency == frozenset({"GDPR"}) and req.slo_ms == 50.0
    assert req.accept_degradation is False and req.max_cost_usd == 0.01


@pytest.mark.parametrize(("headers", "tag", "fragment"), [
    pytest.param({"x-affinity-slo-ms": "fast"}, "x-affinity-slo-ms", "positive integer",
                 id="slo-not-a-number"),
    pytest.param({"x-affinity-slo-ms": "0"}, "x-affinity-slo-ms", "between 1", id="slo-zero"),
    pytest.param({"x-affinity-slo-ms": "-5"}, "x-affinity-slo-ms", "positive integer",
                 id="slo-negative"),
    pytest.param({"x-affinity-degrade": "maybe"}, "x-affinity-degrade", "true or false",
                 id="degrade-not-bool"),
    pytest.param({"x-affinity-max-cost": "-1"}, "x-affinity-max-cost", ">= 0",
                 id="cost-negative"),
    pytest.param({"x-affinity-max-cost": "nan"}, "x-affinity-max-cost", "finite",
                 id="cost-nan"),
    pytest.param({"x-affinity-key": "x" * 257}, "x-affinity-key", "256 bytes",
                 id="key-too-long"),
    pytest.param({"x-affinity-key": " "}, "x-affinity-key", "empty", id="key-empty"),
    pytest.param({"x-affinity-residency": "GDPR,,CCPA"}, "x-affinity-residency", "empty entry",
                 id="residency-empty-entry"),
    pytest.param({"x-affinity-residency": "GD PR"}, "x-affinity-residency", "characters",
                 id="residency-bad-chars"),
    pytest.param({"x-affinity-tags": "{not json"}, "x-affinity-tags", "not valid JSON",
                 id="json-syntax"),
    pytest.param({"x-affinity-tags": "[1]"}, "x-affinity-tags", "JSON object", id="json-list"),
    pytest.param({"x-affinity-tags": '{"colour": 1}'}, "x-affinity-tags", "unknown field",
                 id="json-unknown-field"),
    pytest.param({"x-affinity-tags": '{"latency_slo_ms": 1.5}'}, "x-affinity-slo-ms",
                 "positive integer", id="json-slo-float"),
    pytest.param({"x-affinity-tags": '{"data_residency": "GDPR"}'}, "x-affinity-residency",
                 None, id="json-residency-string-ok"),
])
def test_each_malformed_tag_names_itself(headers: dict[str, str], tag: str,
                                         fragment: str | None) -> None:
    if fragment is None:
        assert parse(headers).residency == frozenset({"GDPR"})
        return
    with pytest.raises(TagError) as info:
        parse(headers)
    assert info.value.tag == tag
    assert fragment in info.value.detail
