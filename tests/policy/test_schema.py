"""The declarative policy model: defaults written once, legal zeros kept, strict scalars,
cross-field rules placed on the key they are about, and the revision-2 keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from router.cli import main
from router.core.policy import EdgeNode, Policy
from router.core.schema import key_reference
from router.policy.loader import parse_policy
from tests.policy.test_loader import GOOD

MINIMAL = """\
version: 1
edge:
  nodes:
    - {id: a, address: "127.0.0.1:9001"}
cloud:
  pools:
    - {id: c, address: "127.0.0.1:9002"}
"""

# The documented default of every key (docs/reference.md).
DOCUMENTED: list[tuple[str, Any]] = [
    ("refresh_seconds", 30.0), ("feed.source", None), ("feed.stale_after_seconds", 90.0),
    ("feed.stale_weight", 0.5), ("feed.missing_node", "keep"),
    ("feed.max_bytes", 4 * 1024 * 1024),
    ("hashing.balance_factor", 0.25), ("hashing.min_cap_fraction", 0.0),
    ("quality.constrained_above", 0.85), ("quality.minimal_above", 0.95),
    ("quality.recover_below", 0.75),
    ("slo.default_latency_ms", 100.0), ("slo.degraded_slack", 1.5),
    ("edge.usd_per_inference", 0.0), ("edge.tail_factor", 1.4), ("edge.queue_per_slot", 0.0),
    ("outliers.failures", 5), ("outliers.failure_fraction", 0.5),
    ("outliers.interval_s", 10.0), ("outliers.eject_s", 30.0), ("outliers.max_eject_s", 300.0),
    ("outliers.max_ejected_fraction", 0.5),
    ("cloud.uplink_mbps", 1000.0),
    ("split.payload_fraction", 0.05), ("split.cloud_compute_fraction", 0.7),
    ("budgets.period", "month"), ("budgets.store", "memory"), ("budgets.soft_fraction", 0.8),
    ("budgets.hard_fraction", 1.0), ("budgets.unknown_tenant", "default"),
    ("budgets.tenants", {}),
    ("defaults.tenant", "default"), ("defaults.residency", frozenset()),
    ("defaults.model", None), ("defaults.accept_degradation", True),
    ("defaults.max_cost_usd", None), ("defaults.payload_kb", 64.0),
    ("nodes.0.hardware", "generic"), ("nodes.0.weight", 1.0), ("nodes.0.slots", 4),
    ("nodes.0.residency", frozenset()), ("nodes.0.models", frozenset({"*"})),
    ("nodes.0.base_latency_ms", 50.0), ("nodes.0.usd_per_hour", None),
    ("nodes.0.usd_per_inference", None),
    ("nodes.0.uplink_mbps", 100.0), ("nodes.0.feature_ms", 5.0), ("nodes.0.feature_slots", 4),
    ("pools.0.residency", frozenset()), ("pools.0.models", frozenset({"*"})),
    ("pools.0.instance_type", "gpu"), ("pools.0.latency_ms", 120.0),
    ("pools.0.compute_ms", 40.0), ("pools.0.egress_usd_per_gb", 0.09),
    ("pools.0.usd_per_hour", 2.0), ("pools.0.max_inflight", 0), ("pools.0.pricing", "spot"),
    ("pools.0.reserved_slots", 0),
]


def read(policy: Policy, dotted: str) -> Any:
    """The value at `a.b.0.c` in a policy."""
    value: Any = policy
    for part in dotted.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


def load(text: str) -> Policy:
    """A policy that must load without errors."""
    policy, problems = parse_policy(text, "p.yaml")
    assert policy is not None, [str(p) for p in problems]
    assert not [p for p in problems if p.severity == "error"]
    return policy


def errors(text: str) -> list[str]:
    """Every error message, located."""
    _, problems = parse_policy(text, "p.yaml")
    return [str(p) for p in problems if p.severity == "error"]


@pytest.mark.parametrize(("key", "default"), DOCUMENTED, ids=[k for k, _ in DOCUMENTED])
def test_every_default_is_the_documented_one(key: str, default: Any) -> None:
    assert read(load(MINIMAL), key) == default


def test_every_key_has_a_reference_row_with_its_default() -> None:
    rows = {key: (default, rule) for key, default, rule, _ in key_reference(Policy)}
    assert rows["hashing.min_cap_fraction"] == ("0.0", "0..1")
    assert rows["edge.nodes[].feature_slots"][1] == ">= 0"
    assert rows["budgets.unknown_tenant"] == ("default", "default | refuse")
    assert rows["edge.nodes[].id"][0] == "required"
    assert len(rows) == 69


def test_feature_slots_default_follows_the_node_slots() -> None:
    policy = load(MINIMAL.replace('"127.0.0.1:9001"}', '"127.0.0.1:9001", slots: 7}'))
    assert policy.nodes[0].feature_slots == 7


ZEROS = """\
version: 1
feed: {stale_weight: 0}
hashing: {min_cap_fraction: 0}
quality: {constrained_above: 0.0, minimal_above: 0.0, recover_below: 0.0}
edge:
  usd_per_inference: 0
  nodes:
    - {id: a, address: "127.0.0.1:9001", usd_per_hour: 0, usd_per_inference: 0.0, feature_ms: 0,
       feature_slots: 0}
cloud:
  pools:
    - {id: c, address: "127.0.0.1:9002", egress_usd_per_gb: 0, usd_per_hour: 0,
       max_inflight: 0}
split: {payload_fraction: 0, cloud_compute_fraction: 0}
defaults: {max_cost_usd: 0, payload_kb: 0}
budgets: {soft_fraction: 0, tenants: {t: {limit_usd: 0, soft_fraction: 0}}}
"""


@pytest.mark.parametrize("key", [
    "feed.stale_weight", "hashing.min_cap_fraction", "quality.constrained_above",
    "quality.minimal_above", "quality.recover_below", "edge.usd_per_inference",
    "nodes.0.usd_per_hour", "nodes.0.usd_per_inference", "nodes.0.feature_ms",
    "nodes.0.feature_slots",
    "pools.0.egress_usd_per_gb", "pools.0.usd_per_hour", "pools.0.max_inflight",
    "split.payload_fraction", "split.cloud_compute_fraction", "defaults.max_cost_usd",
    "defaults.payload_kb", "budgets.soft_fraction",
])
def test_a_legal_zero_is_kept(key: str) -> None:
    assert read(load(ZEROS), key) == 0


def test_tenant_zeros_are_kept() -> None:
    tenant = load(ZEROS).budgets.tenant("t")
    assert tenant is not None and (tenant.limit_usd, tenant.soft_fraction) == (0.0, 0.0)


@pytest.mark.parametrize(("edit", "expected"), [
    pytest.param(("weight: 2", 'weight: "2"'),
                 "p.yaml:4:50: edge.nodes[0].weight: expected a number, got string '2'",
                 id="quoted-number"),
    pytest.param(("weight: 2", "weight: 2e+0"),
                 "p.yaml:4:50: edge.nodes[0].weight: expected a number, got string '2e+0' "
                 "(YAML reads 2e+0 as text; write 2.0e+0)", id="exponent-without-point"),
    pytest.param(("weight: 2", "weight: true"),
                 "p.yaml:4:50: edge.nodes[0].weight: expected a number, got boolean True",
                 id="bool-for-float"),
    pytest.param(("slots: 4", "slots: true"),
                 "p.yaml:4:60: edge.nodes[0].slots: expected a number, got boolean True",
                 id="bool-for-int"),
    pytest.param(("slots: 4", "slots: 2.5"),
                 "p.yaml:4:60: edge.nodes[0].slots: expected an integer, got 2.5",
                 id="float-for-int"),
    pytest.param(("residency: [GDPR]}", "residency: GDPR}"),
                 "p.yaml:4:74: edge.nodes[0].residency: expected a list, got string 'GDPR'",
                 id="string-for-list"),
    pytest.param(("id: a,", "id: 5,"),
                 "p.yaml:4:12: edge.nodes[0].id: expected a non-empty string, got number 5",
                 id="number-for-string"),
    pytest.param(("version: 1", 'version: 1\ndefaults: {accept_degradation: 1}'),
                 "p.yaml:2:32: defaults.accept_degradation: expected true or false, got number 1",
                 id="number-for-bool"),
    pytest.param(("version: 1", "version: 1\nbudgets: {period: monthly}"),
                 "p.yaml:2:19: budgets.period: must be one of hour, day, week, month, got "
                 "string 'monthly' (did you mean 'month'?)", id="bad-choice"),
    pytest.param(("version: 1", "version: true"),
                 "p.yaml:1:10: version: expected a number, got boolean True", id="version-true"),
    pytest.param(("version: 1", "version: 2"),
                 "p.yaml:1:10: version: unsupported policy version 2; this router reads 1",
                 id="version-2"),
    pytest.param(("version: 1", "version: 1\nquality: {constrained_above: 0.97}"),
                 "p.yaml:2:30: quality.constrained_above: must not be above minimal_above",
                 id="constrained-above-minimal"),
    pytest.param(("version: 1", "version: 1\nquality: {constrained_above: 0.5}"),
                 "p.yaml:2:30: quality.constrained_above: recover_below 0.75 is above "
                 "constrained_above 0.5", id="implicit-recover-above-constrained"),
    pytest.param(("version: 1", "version: 1\nquality: {recover_below: 0.9}"),
                 "p.yaml:2:26: quality.recover_below: recover_below 0.9 is above "
                 "constrained_above 0.85", id="recover-above-constrained"),
    pytest.param(("version: 1", "version: 1\nhashing: {min_cap_fraction: 1.5}"),
                 "p.yaml:2:29: hashing.min_cap_fraction: must be at most 1, got 1.5",
                 id="cap-fraction-above-1"),
    pytest.param(("slots: 4", "slots: 4, feature_slots: -1"),
                 "p.yaml:4:78: edge.nodes[0].feature_slots: must be at least 0, got -1",
                 id="negative-feature-slots"),
    pytest.param(("slots: 4", "slots: 4, uplink_mbps: 0"),
                 "p.yaml:4:76: edge.nodes[0].uplink_mbps: must be greater than 0, got 0",
                 id="zero-uplink"),
    pytest.param(("edge:\n", "edge:\n  tail_factor: 0.8\n"),
                 "p.yaml:3:16: edge.tail_factor: must be at least 1, got 0.8",
                 id="tail-below-the-mean"),
    pytest.param(("edge:\n", "edge:\n  queue_per_slot: -1\n"),
                 "p.yaml:3:19: edge.queue_per_slot: must be at least 0, got -1",
                 id="negative-queue"),
    pytest.param(("edge:\n", "outliers: {failure_fraction: 2}\nedge:\n"),
                 "p.yaml:2:30: outliers.failure_fraction: must be at most 1, got 2",
                 id="outlier-fraction-over-one"),
    pytest.param(("cloud:\n", "cloud:\n  uplink_mbps: -5\n"),
                 "p.yaml:6:16: cloud.uplink_mbps: must be greater than 0, got -5",
                 id="negative-cloud-uplink"),
    pytest.param(("version: 1", "version: 1\nsplit: {payload_fraction: 2}"),
                 "p.yaml:2:27: split.payload_fraction: must be at most 1, got 2",
                 id="payload-fraction-above-1"),
    pytest.param(("version: 1", "version: 1\ndefaults: {payload_kb: -1}"),
                 "p.yaml:2:24: defaults.payload_kb: must be at least 0, got -1",
                 id="negative-payload"),
    pytest.param(("version: 1", "version: 1\nbudgets: {unknown_tenant: allow}"),
                 "p.yaml:2:27: budgets.unknown_tenant: must be one of default, refuse",
                 id="unknown-tenant-choice"),
    pytest.param(("version: 1", "version: 1\nbudgets: {soft_fraction: 0.5, tenants: "
                                "{acme: {limit_usd: 1, hard_fraction: 0.4}}}"),
                 "p.yaml:2:47: budgets.tenants.acme: soft fraction 0.5 is above the hard "
                 "fraction 0.4", id="tenant-soft-above-hard"),
    pytest.param(("version: 1", "version: 1\nfeed: {source: ftp://x}"),
                 "p.yaml:2:16: feed.source: must start with file:", id="feed-scheme"),
    pytest.param(("version: 1", "version: 1\nbudgets: {store: mongo}"),
                 "p.yaml:2:18: budgets.store: must be memory, sqlite:PATH or redis://",
                 id="store-scheme"),
    pytest.param(("version: 1", "version: 1\nbudgets: {tenants: {acme: {}}}"),
                 "p.yaml:2:27: budgets.tenants.acme: missing required key 'limit_usd'",
                 id="missing-limit"),
    pytest.param(("version: 1", "version: 1\nbudgets: {tenants: {acme: {limit_usd: 1, "
                                "residency: [GDPR, 'EU zone']}}}"),
                 "p.yaml:2:53: budgets.tenants.acme.residency: residency tag 'EU zone' has",
                 id="tenant-residency-tag"),
    pytest.param(("version: 1", "version: 1\nbudgets: {tenants: {acme: {limit_usd: 1, "
                                "max_cost_usd: -0.1}}}"),
                 "p.yaml:2:56: budgets.tenants.acme.max_cost_usd: must be at least 0, got -0.1",
                 id="tenant-negative-max-cost"),
    pytest.param(("version: 1", "version: 1\nbudgets: {tenants: {acme: {limit_usd: 1, "
                                "models: []}}}"),
                 "p.yaml:2:50: budgets.tenants.acme.models: must name at least one model",
                 id="tenant-no-models"),
    pytest.param(("version: 1", "version: 1\ndigest: abc"),
                 "p.yaml:2:1: digest: unknown key 'digest'", id="digest-is-not-a-key"),
    pytest.param(('address: "127.0.0.1:9001"', 'address: "127.0.0.1:99999"'),
                 "p.yaml:4:24: edge.nodes[0].address: '127.0.0.1:99999' is not host:port",
                 id="port-out-of-range"),
    pytest.param(("version: 1", "version: 1\nslo: {degraded_slack: .nan}"),
                 "p.yaml:2:23: slo.degraded_slack: must be a finite number, got nan",
                 id="nan"),
])
def test_rule_is_located_on_its_key(edit: tuple[str, str], expected: str) -> None:
    found = errors(GOOD.replace(*edit, 1))
    assert any(e.startswith(expected) for e in found), found


def test_an_exponent_after_a_decimal_point_is_a_number() -> None:
    assert load(GOOD.replace("weight: 2", "weight: 2.0e+0", 1)).nodes[0].weight == 2.0


def test_a_misspelt_hardware_preset_names_the_one_meant() -> None:
    text = MINIMAL.replace('{id: a, address: "127.0.0.1:9001"}',
                           '{id: a, address: "127.0.0.1:9001", hardware: rtx-4009}')
    [said] = errors(text)
    assert said.startswith("p.yaml:4:") and "edge.nodes[0].hardware: " in said, said
    assert "'rtx-4009' is not a hardware preset (did you mean 'rtx-4090'?) (one of generic, " \
        "jetson-agx-orin, rtx-4090, nvidia-l4, a100-80g): name one, or set usd_per_hour for " \
        "this node" in said, said


def test_a_policy_needs_nodes_or_pools() -> None:
    assert errors("version: 1\nedge: {nodes: []}\n") == [
        "p.yaml:1:1: the policy has neither edge nodes nor cloud pools"]


def test_null_section_means_its_defaults() -> None:
    policy = load(MINIMAL + "quality:\nbudgets:\n")
    assert policy.quality.constrained_above == 0.85 and policy.budgets.period == "month"


def test_revision_2_keys_are_read() -> None:
    policy = load("""\
version: 1
hashing: {balance_factor: 0.5, min_cap_fraction: 0.5}
quality: {constrained_above: 0.8, minimal_above: 0.9, recover_below: 0.7}
edge:
  nodes:
    - {id: a, address: "127.0.0.1:9001", slots: 4, uplink_mbps: 50, feature_ms: 6,
       feature_slots: 8}
cloud:
  uplink_mbps: 200
  pools:
    - {id: c, address: "127.0.0.1:9002"}
split: {payload_fraction: 0.1, cloud_compute_fraction: 0.6}
defaults: {payload_kb: 128}
budgets: {unknown_tenant: refuse}
""")
    node = policy.nodes[0]
    assert (node.uplink_mbps, node.feature_ms, node.feature_slots, node.slots) == (50, 6, 8, 4)
    assert (policy.balance_factor, policy.hashing.min_cap_fraction) == (0.5, 0.5)
    assert policy.quality.recover_below == 0.7 and policy.cloud.uplink_mbps == 200
    assert (policy.split.payload_fraction, policy.split.cloud_compute_fraction) == (0.1, 0.6)
    assert policy.defaults.payload_kb == 128 and policy.budgets.unknown_tenant == "refuse"


def test_retired_split_keys_warn_and_still_load(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD + "split: {cloud_cost_fraction: 0.3, extra_latency_ms: 15}\n"
    policy, problems = parse_policy(text, "p.yaml")
    assert policy is not None
    assert [(p.severity, p.line, p.col) for p in problems] == [("warning", 8, 9),
                                                               ("warning", 8, 35)]
    assert all("no longer used" in p.message and "remove it" in p.message for p in problems)
    assert policy.split.cloud_compute_fraction == 0.7
    path = tmp_path / "old.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:8:9: warning: split.cloud_cost_fraction: no longer used" in out


def test_retired_keys_do_not_hide_real_errors() -> None:
    text = GOOD + "split: {extra_latency_ms: 15, payload_fraction: -1}\n"
    assert errors(text) == ["p.yaml:8:49: split.payload_fraction: must be at least 0, got -1"]


def test_model_is_frozen_and_copies_with_updates() -> None:
    policy = load(GOOD)
    node = policy.nodes[0]
    with pytest.raises(ValidationError):
        node.slots = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.budgets.tenants["x"] = None  # type: ignore[index]
    moved = policy.model_copy(update={"edge": policy.edge.model_copy(
        update={"nodes": (node.model_copy(update={"slots": 9}),)})})
    assert moved.nodes[0].slots == 9 and policy.nodes[0].slots == 4
    assert moved.digest == policy.digest != ""
    assert policy.node("a") is node and policy.pool("c") is policy.pools[0]
    assert policy.node("zz") is None and node.serves("anything")


def test_models_built_in_code_are_validated_too() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        EdgeNode(id="n", address="127.0.0.1:1", slots=0)
    with pytest.raises(ValidationError, match="duplicate id 'n'"):
        Policy.model_validate({"version": 1, "edge": {"nodes": [
            EdgeNode(id="n", address="127.0.0.1:1"), EdgeNode(id="n", address="127.0.0.1:2")]}})
