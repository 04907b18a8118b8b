"""Affinity tag parsing: single headers, the JSON form, strict rules, and precise errors."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.policy import Defaults
from router.core.request import HeaderMap, RouteRequest, TagError, parse_request

DEFAULTS = Defaults(tenant="default", residency=frozenset(), model=None,
                    accept_degradation=True, max_cost_usd=None)


def parse(headers: Mapping[str, str]) -> RouteRequest:
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


DEEP = "[" * 1500 + "]" * 1500
REFUSED = [
    # Numbers are ASCII digits only, bounded before conversion (measured failures first).
    ({"x-affinity-slo-ms": "²"}, "x-affinity-slo-ms", "ASCII digits", "slo-superscript-two"),
    ({"x-affinity-slo-ms": "١٢٣"}, "x-affinity-slo-ms", "ASCII digits", "slo-arabic-indic"),
    ({"x-affinity-slo-ms": "1e400"}, "x-affinity-slo-ms", "ASCII digits", "slo-exponent"),
    ({"x-affinity-slo-ms": "0x10"}, "x-affinity-slo-ms", "ASCII digits", "slo-hex"),
    ({"x-affinity-slo-ms": "+5"}, "x-affinity-slo-ms", "ASCII digits", "slo-plus-sign"),
    ({"x-affinity-slo-ms": "7 5"}, "x-affinity-slo-ms", "ASCII digits", "slo-inner-space"),
    ({"x-affinity-slo-ms": "1_000"}, "x-affinity-slo-ms", "ASCII digits", "slo-underscore"),
    ({"x-affinity-slo-ms": "\u00a075"}, "x-affinity-slo-ms", "ASCII digits", "slo-nbsp"),
    ({"x-affinity-slo-ms": "9" * 5000}, "x-affinity-slo-ms", "between 1", "slo-5000-digits"),
    ({"x-affinity-slo-ms": "3600001"}, "x-affinity-slo-ms", "between 1", "slo-over-an-hour"),
    ({"x-affinity-max-cost": "1e400"}, "x-affinity-max-cost", "ASCII digits", "cost-exponent"),
    ({"x-affinity-max-cost": "inf"}, "x-affinity-max-cost", "finite", "cost-inf"),
    ({"x-affinity-max-cost": "0x10"}, "x-affinity-max-cost", "decimal", "cost-hex"),
    ({"x-affinity-max-cost": "+5"}, "x-affinity-max-cost", "decimal", "cost-plus-sign"),
    ({"x-affinity-max-cost": ".5"}, "x-affinity-max-cost", "decimal", "cost-bare-fraction"),
    ({"x-affinity-max-cost": "5."}, "x-affinity-max-cost", "decimal", "cost-bare-point"),
    ({"x-affinity-max-cost": "0,5"}, "x-affinity-max-cost", "decimal", "cost-comma"),
    ({"x-affinity-max-cost": "٠.٥"}, "x-affinity-max-cost", "ASCII digits", "cost-arabic"),
    ({"x-affinity-max-cost": "1" + "0" * 400}, "x-affinity-max-cost", "decimal",
     "cost-401-digits"),
    ({"x-affinity-max-cost": "2000000"}, "x-affinity-max-cost", "between 0 and",
     "cost-over-range"),
    # The JSON form: numbers range-checked from their text, never through a float.
    ({"x-affinity-tags": '{"max_cost_per_inference": 1' + "0" * 400 + "}"},
     "x-affinity-max-cost", "x-affinity-tags field 'max_cost_per_inference'",
     "json-cost-400-zeros"),
    ({"x-affinity-tags": '{"max_cost_per_inference": 1e400}'}, "x-affinity-max-cost",
     "between 0 and", "json-cost-1e400"),
    ({"x-affinity-tags": '{"max_cost_per_inference": 1e999999999999999999999}'},
     "x-affinity-max-cost", "decimal", "json-cost-huge-exponent"),
    ({"x-affinity-tags": '{"max_cost_per_inference": -0.5}'}, "x-affinity-max-cost",
     "between 0 and", "json-cost-negative"),
    ({"x-affinity-tags": '{"max_cost_per_inference": NaN}'}, "x-affinity-tags",
     "not a JSON number", "json-cost-nan"),
    ({"x-affinity-tags": '{"latency_slo_ms": Infinity}'}, "x-affinity-tags",
     "not a JSON number", "json-slo-infinity"),
    ({"x-affinity-tags": '{"latency_slo_ms": ' + "9" * 4000 + "}"}, "x-affinity-slo-ms",
     "between 1", "json-slo-4000-digits"),
    ({"x-affinity-tags": '{"latency_slo_ms": -5}'}, "x-affinity-slo-ms", "ASCII digits",
     "json-slo-negative"),
    ({"x-affinity-tags": '{"latency_slo_ms": true}'}, "x-affinity-slo-ms", "ASCII digits",
     "json-slo-boolean"),
    ({"x-affinity-tags": '{"key": "\\ud800"}'}, "x-affinity-key", "lone surrogate U+D800",
     "json-lone-surrogate-escape"),
    ({"x-affinity-tags": '{"key": ' + DEEP + "}"}, "x-affinity-tags", "nested deeper",
     "json-1500-deep-value"),
    ({"x-affinity-tags": DEEP}, "x-affinity-tags", "nested deeper", "json-1500-deep-list"),
    ({"x-affinity-tags": '{"tenant": "a", "tenant": "b"}'}, "x-affinity-tags",
     "more than once", "json-duplicate-field"),
    ({"x-affinity-tags": '{"key": 5}'}, "x-affinity-key", "got a number", "json-key-number"),
    ({"x-affinity-tags": '{"data_residency": ["GDPR", 5]}'}, "x-affinity-residency",
     "non-empty strings", "json-residency-number"),
    ({"x-affinity-tags": " " * 4097}, "x-affinity-tags", "4096 bytes", "json-too-long"),
    # Strings are printable: no C0, DEL, C1, lone surrogates, format or odd space characters.
    ({"x-affinity-key": "a\x7fb"}, "x-affinity-key", "control character U+007F", "key-del"),
    ({"x-affinity-key": "a\x85b"}, "x-affinity-key", "control character U+0085", "key-c1"),
    ({"x-affinity-tenant": "acme\x9b"}, "x-affinity-tenant", "control character U+009B",
     "tenant-c1"),
    ({"x-affinity-tenant": "ac\tme"}, "x-affinity-tenant", "control character U+0009",
     "tenant-inner-tab"),
    ({"x-affinity-key": "a\x00b"}, "x-affinity-key", "U+0000", "key-nul"),
    ({"x-affinity-model": "v3\u202e"}, "x-affinity-model", "format character U+202E",
     "model-bidi-override"),
    ({"x-affinity-key": "a\u00a0b"}, "x-affinity-key", "space other than", "key-nbsp"),
    ({"x-affinity-model": "m" * 129}, "x-affinity-model", "128 bytes", "model-too-long"),
    ({"x-affinity-tenant": "é" * 65}, "x-affinity-tenant", "128 bytes", "tenant-too-many-bytes"),
    # Envoy's raw bytes arrive decoded with surrogateescape: invalid UTF-8 names its tag.
    ({"x-affinity-tenant": b"\xff\xfe".decode("utf-8", "surrogateescape")},
     "x-affinity-tenant", "not valid UTF-8", "tenant-invalid-utf8"),
    ({"x-affinity-tags": b'{"key": "\xc0\xaf"}'.decode("utf-8", "surrogateescape")},
     "x-affinity-tags", "not valid UTF-8", "json-invalid-utf8"),
    ({"x-affinity-key": b"\xed\xa0\x80".decode("utf-8", "surrogateescape")},
     "x-affinity-key", "not valid UTF-8", "key-encoded-surrogate"),
    # Residency entries and booleans are ASCII.
    ({"x-affinity-residency": "GDPR²"}, "x-affinity-residency", "ASCII letters",
     "residency-superscript"),
    ({"x-affinity-residency": "ＧＤＰＲ"}, "x-affinity-residency", "ASCII letters",
     "residency-fullwidth"),
    ({"x-affinity-residency": ",".join(f"T{i}" for i in range(33))}, "x-affinity-residency",
     "more than 32", "residency-too-many"),
    ({"x-affinity-degrade": "ｔｒｕｅ"}, "x-affinity-degrade", "true or false",
     "degrade-fullwidth"),
]


@pytest.mark.parametrize(("headers", "tag", "fragment"),
                         [pytest.param(h, t, f, id=i) for h, t, f, i in REFUSED])
def test_malformed_values_are_tag_errors_naming_the_tag(headers: dict[str, str], tag: str,
                                                        fragment: str) -> None:
    with pytest.raises(TagError) as info:
        parse(headers)
    assert info.value.tag == tag
    assert fragment in info.value.detail, info.value.detail
    assert len(info.value.detail) < 300  # a bad value is echoed short, never whole


@pytest.mark.parametrize(("pairs", "tag"), [
    pytest.param([("x-affinity-residency", "GDPR"), ("x-affinity-residency", "CCPA")],
                 "x-affinity-residency", id="residency-twice"),
    pytest.param([("X-Affinity-Key", "a"), ("x-affinity-key", "a")], "x-affinity-key",
                 id="key-twice-any-case-same-value"),
    pytest.param([("x-affinity-tags", "{}"), ("x-affinity-tags", "{}")], "x-affinity-tags",
                 id="tags-twice"),
    pytest.param([("x-affinity-colour", "red"), ("x-affinity-colour", "blue")],
                 "x-affinity-colour", id="unknown-affinity-header-twice"),
])
def test_a_repeated_affinity_header_is_refused(pairs: list[tuple[str, str]], tag: str) -> None:
    with pytest.raises(TagError) as info:
        parse(HeaderMap(pairs))
    assert info.value.tag == tag and "more than once" in info.value.detail


def test_header_map_joins_other_repeats_and_lower_cases_names() -> None:
    headers = HeaderMap([("Accept", "a/b"), ("accept", "c/d"), ("X-Affinity-Key", "k")])
    assert headers == {"accept": "a/b,c/d", "x-affinity-key": "k"}
    assert headers.repeated == {"accept"}
    assert parse(headers).key == "k"  # a repeated non-affinity header is not a tag error


@pytest.mark.parametrize(("headers", "field", "value"), [
    pytest.param({"x-affinity-slo-ms": " 75\t"}, "slo_ms", 75.0, id="slo-ows-trimmed"),
    pytest.param({"x-affinity-slo-ms": "0075"}, "slo_ms", 75.0, id="slo-leading-zeros"),
    pytest.param({"x-affinity-key": "\tcam 7 "}, "key", "cam 7", id="key-ows-trimmed"),
    pytest.param({"x-affinity-key": "カメラ-7"}, "key", "カメラ-7", id="key-non-ascii-printable"),
    pytest.param({"x-affinity-key": "é" * 128}, "key", "é" * 128, id="key-256-bytes-exactly"),
    pytest.param({"x-affinity-max-cost": "0"}, "max_cost_usd", 0.0, id="cost-zero"),
    pytest.param({"x-affinity-max-cost": "12.5"}, "max_cost_usd", 12.5, id="cost-decimal"),
    pytest.param({"x-affinity-max-cost": "1000000"}, "max_cost_usd", 1e6, id="cost-at-range"),
    pytest.param({"x-affinity-tags": '{"max_cost_per_inference": 1e-3}'}, "max_cost_usd",
                 0.001, id="json-cost-exponent-in-range"),
    pytest.param({"x-affinity-tags": '{"max_cost_per_inference": -0}'}, "max_cost_usd", 0.0,
                 id="json-cost-negative-zero"),
    pytest.param({"x-affinity-tags": '{"max_cost_per_inference": "0.5"}'}, "max_cost_usd",
                 0.5, id="json-cost-as-string"),
    pytest.param({"x-affinity-tags": '{"latency_slo_ms": "40"}'}, "slo_ms", 40.0,
                 id="json-slo-as-string"),
    pytest.param({"x-affinity-tags": '{"key": "\\ud83d\\ude00"}'}, "key", "\U0001f600",
                 id="json-surrogate-pair-escape"),
    pytest.param({"x-affinity-tags": '{"key": "[[[[[[[[[[{{{{{{{{{{"}'}, "key",
                 "[[[[[[[[[[{{{{{{{{{{", id="json-brackets-in-strings-are-not-depth"),
    pytest.param({"x-affinity-tags": '{"key": null, "tenant": "acme"}'}, "key", None,
                 id="json-null-is-absent"),
    pytest.param({"x-affinity-degrade": "True"}, "accept_degradation", True,
                 id="degrade-any-case"),
])
def test_well_formed_values_are_read(headers: dict[str, str], field: str, value: object
                                     ) -> None:
    assert getattr(parse(headers), field) == value


TAG_NAMES = st.sampled_from(["x-affinity-key", "x-affinity-tenant", "x-affinity-residency",
                             "x-affinity-slo-ms", "x-affinity-model", "x-affinity-degrade",
                             "x-affinity-max-cost", "x-affinity-tags"])
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["key", "tenant", "data_residency", "latency_slo_ms",
                         "max_cost_per_inference", "accept_degradation", "x"]), inner,
        max_size=4),
    max_leaves=12).map(json.dumps)


@settings(derandomize=True, max_examples=250, deadline=None)
@given(st.lists(st.tuples(TAG_NAMES, st.text(max_size=40) | JSON_TEXT), max_size=6))
def test_any_text_parses_or_is_a_tag_error(pairs: list[tuple[str, str]]) -> None:
    try:
        req = parse(HeaderMap(pairs))
    except TagError as exc:
        assert exc.tag.startswith("x-affinity-") and exc.detail
        return
    assert req.slo_ms >= 1 and (req.max_cost_usd is None or req.max_cost_usd >= 0)
    for text in (req.key, req.tenant, req.model):
        assert text is None or (text.isprintable() and len(text.encode()) <= 256)


@pytest.mark.parametrize(("name", "hint"), [
    pytest.param("x-affinity-residence", "did you mean x-affinity-residency?", id="typo"),
    pytest.param("x-affinity-region", "known: x-affinity-key", id="unknown"),
])
def test_an_unknown_affinity_header_is_refused_not_ignored(name: str, hint: str) -> None:
    # a typo'd residency header must not route the request with no residency rule at all
    with pytest.raises(TagError) as err:
        parse_request({name: "GDPR", "x-affinity-key": "k"}, Defaults(), 100.0)
    assert err.value.tag == name and hint in err.value.detail


def test_a_residency_list_is_parsed_once_but_a_long_one_is_never_kept() -> None:
    from router.core import tagrules

    tagrules._residency_text.cache_clear()
    short = parse_request({"x-affinity-residency": "GDPR,CCPA"}, Defaults(), 100.0)
    again = parse_request({"x-affinity-residency": "GDPR,CCPA"}, Defaults(), 100.0)
    assert short.residency == again.residency == frozenset({"GDPR", "CCPA"})
    assert tagrules._residency_text.cache_info().hits == 1
    # a valid list padded with whitespace to 60 KB parses the same, and the cache keeps nothing
    # of it: clients cannot pin 1,024 such headers in the router's memory
    padded = "GDPR" + " " * 60_000 + ",CCPA"
    assert parse_request({"x-affinity-residency": padded}, Defaults(), 100.0).residency == \
        frozenset({"GDPR", "CCPA"})
    assert tagrules._residency_text.cache_info().currsize == 1
