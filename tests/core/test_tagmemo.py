"""The tag memo answers exactly as `parse_request`: the same request, or the same refusal."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from router import wire
from router.core.policy import Defaults
from router.core.request import HeaderMap, RouteRequest, TagError, parse_request
from router.core.tagmemo import MAX_CHARS, TagMemo
from router.runtime import Runtime
from tests.core.factory import node, policy

DEFAULTS = Defaults(tenant="default", residency=frozenset({"EU"}), model=None,
                    accept_degradation=True, max_cost_usd=None)
SLO = 100.0

# Values that parse and values that do not, for every tag, an unknown tag among them.
VALUES = {
    wire.H_KEY: ["cam-1", "cam-2", " cam-1 ", "", "x" * 257, "caf\u00e9", "bad\udcff", "a\x01"],
    wire.H_TENANT: ["acme", "default", "", "t\x7f"],
    wire.H_RESIDENCY: ["GDPR", "GDPR,CCPA", "GDPR,,CCPA", "GD PR"],
    wire.H_SLO: ["75", "0", "fast", "\u00b2"],
    wire.H_MODEL: ["small", "big"],
    wire.H_DEGRADE: ["true", "FALSE", "maybe"],
    wire.H_MAX_COST: ["0.004", "-1", "nan"],
    wire.H_TAGS: ['{"key": "json-key"}', '{"tenant": "acme", "latency_slo_ms": 50}',
                  '{"key": ""}', "{not json", '{"colour": 1}'],
    "x-affinity-colour": ["red"],
}
tag_sets = st.dictionaries(st.sampled_from(sorted(VALUES)), st.integers(0, 7), max_size=5).map(
    lambda picks: [(name, VALUES[name][i % len(VALUES[name])]) for name, i in picks.items()])
header_sets = st.tuples(tag_sets, st.booleans()).map(
    lambda t: HeaderMap(t[0] + ([t[0][0]] if t[1] and t[0] else [])))  # maybe a repeat


def outcome(parse: object, headers: Mapping[str, str], size: int, rid: str
            ) -> RouteRequest | tuple[str, str]:
    try:
        return parse(headers, payload_bytes=size, request_id=rid)  # type: ignore[operator]
    except TagError as exc:
        return (exc.tag, exc.detail)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_sets, st.integers(-1, 10_000), st.sampled_from(["", "r1"])),
                min_size=1, max_size=6))
def test_every_answer_is_parse_requests_own_first_time_and_from_the_memo(
        requests: list[tuple[HeaderMap, int, str]]) -> None:
    memo = TagMemo(DEFAULTS, SLO, size=3)  # small: the memo also starts over mid-run
    for headers, size, rid in requests * 2:  # each set again, now from the memo
        expected = outcome(lambda h, **kw: parse_request(h, DEFAULTS, SLO, **kw), headers,
                           size, rid)
        assert outcome(memo.parse, headers, size, rid) == expected


def test_requests_sharing_their_other_tags_parse_them_once() -> None:
    memo = TagMemo(DEFAULTS, SLO)
    first = memo.parse({wire.H_KEY: "cam-1", wire.H_RESIDENCY: "GDPR"}, payload_bytes=10)
    second = memo.parse({wire.H_KEY: "cam-2", wire.H_RESIDENCY: "GDPR"}, request_id="r2")
    assert (first.key, second.key) == ("cam-1", "cam-2")
    assert first.residency is second.residency == frozenset({"EU", "GDPR"})
    assert (first.payload_bytes, second.payload_bytes, second.request_id) == (10, 0, "r2")


def test_a_long_tag_set_is_parsed_but_never_kept() -> None:
    memo = TagMemo(DEFAULTS, SLO)
    padded = "GDPR" + " " * MAX_CHARS  # valid: surrounding whitespace is trimmed
    assert memo.parse({wire.H_RESIDENCY: padded}).residency == frozenset({"EU", "GDPR"})
    assert memo.parse({wire.H_RESIDENCY: "GDPR"}).residency == frozenset({"EU", "GDPR"})
    assert len(memo._memo) == 1


def test_a_new_policy_s_defaults_apply_to_the_next_request() -> None:
    old = policy([node(0)], slo_ms=100.0)
    rt = Runtime(old)
    headers = {wire.H_KEY: "cam-1", wire.H_MODEL: "small"}
    assert rt.parse(headers).slo_ms == 100.0  # type: ignore[union-attr]
    rt.install(policy([node(0)], slo_ms=40.0))
    assert rt.parse(headers).slo_ms == 40.0  # type: ignore[union-attr]
    strict = rt.policy.model_copy(update={"defaults": rt.policy.defaults.model_copy(
        update={"tenant": "acme"})})
    rt.install(strict)
    assert rt.parse(headers).tenant == "acme"  # type: ignore[union-attr]
