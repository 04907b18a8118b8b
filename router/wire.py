"""Every name that crosses the wire, in one place (docs/reference.md: headers, refusals).

Envoy configs, the ext_proc adapter and the tests all read these constants.
"""

from __future__ import annotations

import functools

# Request headers read (affinity tags). Any header under the prefix may appear only once.
AFFINITY_PREFIX = "x-affinity-"
H_KEY = "x-affinity-key"
H_TENANT = "x-affinity-tenant"
H_RESIDENCY = "x-affinity-residency"
H_SLO = "x-affinity-slo-ms"
H_MODEL = "x-affinity-model"
H_DEGRADE = "x-affinity-degrade"
H_MAX_COST = "x-affinity-max-cost"
H_TAGS = "x-affinity-tags"
AFFINITY_HEADERS = (H_KEY, H_TENANT, H_RESIDENCY, H_SLO, H_MODEL, H_DEGRADE, H_MAX_COST, H_TAGS)

# Request headers written (the decision).
ROUTE_PREFIX = "x-route-"
H_TARGET = "x-route-target"
H_NODE = "x-route-node"
H_MODE = "x-route-mode"
H_QUALITY = "x-route-quality"
H_SPLIT_CLOUD = "x-route-split-cloud"
H_COST = "x-route-cost-usd"
H_REASON = "x-route-reason"
H_POLICY = "x-route-policy"
H_CLUSTER = "x-route-cluster"  # the Envoy cluster the route table sends the request to
ROUTE_HEADERS = (H_TARGET, H_NODE, H_MODE, H_QUALITY, H_SPLIT_CLOUD, H_COST, H_REASON, H_POLICY,
                 H_CLUSTER)

H_REQUEST_ID = "x-request-id"
H_RETRY_AFTER = "retry-after"
H_STATUS = ":status"

# Everything the router reads of a request's headers (by prefix or by name) and of a
# response's: the generated Envoy config forwards these to ext_proc and no others.
READ_PREFIXES = (AFFINITY_PREFIX, ROUTE_PREFIX)
READ_NAMES = ("content-length", H_REQUEST_ID)
READ_RESPONSE_NAMES = (H_STATUS,)

# Modes.
MODE_EDGE = "edge"
MODE_DEGRADED = "edge-degraded"
MODE_SPLIT = "split"
MODE_CLOUD = "cloud"
MODES = (MODE_EDGE, MODE_DEGRADED, MODE_SPLIT, MODE_CLOUD)
EDGE_MODES = (MODE_EDGE, MODE_DEGRADED)  # the modes an edge node infers, holding its slot
MODE_REFUSED = "refused"

# Reason codes (x-route-reason and router_decisions_total{reason}).
R_AFFINITY = "affinity"  # edge, the key's home node
R_BALANCE = "balance"  # edge, the next node on the ring: the home node was at its cap
R_SLO = "slo"  # a cheaper rung would miss the latency objective
R_CAPACITY = "capacity"  # no eligible edge node had a free slot under its cap
R_RESIDENCY = "residency"  # no edge node satisfies the residency/model tags
R_VRAM = "vram"  # the node's VRAM pressure forces a lower quality
R_BUDGET_SOFT = "budget-soft"  # over the soft fraction: cheaper rung preferred
R_BUDGET = "budget"  # hard budget exhausted (429)
R_BUDGET_THROTTLED = "budget-throttled"  # the fleet has headroom, this router's lease not (429)
R_MAX_COST = "max-cost"  # every option exceeds x-affinity-max-cost
R_BEST_EFFORT = "best-effort"  # nothing meets the SLO; fastest affordable option
R_BAD_TAG = "bad-tag"  # malformed affinity tag (400)
R_UNSERVABLE = "unservable"  # nothing eligible can serve it (503)
R_OVERLOAD = "overload"  # router at its concurrency bound (503)
R_FAIL_OPEN = "fail-open"  # set by Envoy's route table when the router did not answer
R_UNKNOWN_TENANT = "unknown-tenant"  # tenant not in the policy, unknown_tenant: refuse (403)
R_TENANT_MODEL = "tenant-model"  # the tenant may not use the model asked for (403)
R_ROUTER_ERROR = "router-error"  # the router failed unexpectedly (503, logged with a trace id)
R_XDS_PENDING = "xds-pending"  # the Envoy asking does not hold the endpoint yet (503)

# Refusal error codes (JSON body "error").
E_BAD_TAG = "bad_affinity_tag"
E_BUDGET = "budget_exhausted"
E_BUDGET_THROTTLED = "budget_throttled"
E_UNSERVABLE = "no_eligible_target"
E_MAX_COST = "max_cost_exceeded"
E_OVERLOAD = "router_overloaded"
E_UNKNOWN_TENANT = "unknown_tenant"
E_MODEL_NOT_ALLOWED = "model_not_allowed"
E_ROUTER_ERROR = "router_error"
E_XDS_PENDING = "envoy_not_synced"

STATUS_BAD_TAG = 400
STATUS_UNKNOWN_TENANT = 403
STATUS_FORBIDDEN = 403
STATUS_BUDGET = 429
STATUS_UNSERVABLE = 503
STATUS_ROUTER_ERROR = 503


# gRPC metadata Envoy sends on each ext_proc stream: its node id, so the router answers
# with endpoints that Envoy has ACKed over ADS (envoy-config writes it).
H_ENVOY_NODE = "x-hybrid-router-envoy"

# gRPC streams past `serve --max-streams` the router accepts on one connection, and Envoy's
# circuit breakers on the router allow: the ADS stream and health checks.
STREAM_HEADROOM = 64

# Envoy cluster names (the router's x-route-cluster answers and router.xds agree on these).
EDGE_CLUSTER_PREFIX = "edge."
POOL_CLUSTER_PREFIX = "cloud."


@functools.lru_cache(maxsize=4096)  # named on every edge decision; a policy has few requirements
def edge_cluster(residency: frozenset[str]) -> str:
    """The edge cluster of a residency requirement: `edge.any`, `edge.GDPR`, `edge.CCPA+GDPR`."""
    return EDGE_CLUSTER_PREFIX + ("+".join(sorted(residency)) if residency else "any")


def pool_cluster(pool_id: str) -> str:
    """The cluster of one cloud pool."""
    return POOL_CLUSTER_PREFIX + pool_id


def cluster_stat_name(cluster: str) -> str:
    """The name a cluster's Envoy stats carry (`envoy_cluster_name`): dots become `_`, since
    Envoy's tag extraction ends a cluster name at its first dot (`edge.CCPA` would be
    reported as cluster `edge`, its stats renamed `envoy_cluster_CCPA_*`)."""
    return cluster.replace(".", "_")
