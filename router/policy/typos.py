"""Residency tags that look like a misspelling of another tag in the same policy.

Tags are free-form (`GDPR`, `EU-1`, `pci`), so a policy cannot know which exist; what it can
see is one tag used once beside a near-identical one used more (`GPDR` on one node, `GDPR`
on six). That is a warning, not an error: a tag only ever narrows where a request may run, so
a typo refuses traffic (503) or leaves a node idle, and never sends a request somewhere its
residency forbids; and a pair like `EU-1`/`EU-2` may be meant.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator

from router.core.policy import Policy
from router.core.schema import KeyPath

CUTOFF = 0.75  # GPDR~GDPR is 0.75; EU-1~EU-2 is 0.75 too, but equal use never warns


def tag_uses(policy: Policy) -> Iterator[tuple[str, KeyPath]]:
    """Every residency tag the policy writes, with where."""
    for tag in sorted(policy.defaults.residency):
        yield tag, ("defaults", "residency")
    for i, node in enumerate(policy.nodes):
        for tag in sorted(node.residency):
            yield tag, ("edge", "nodes", i, "residency")
    for i, pool in enumerate(policy.pools):
        for tag in sorted(pool.residency):
            yield tag, ("cloud", "pools", i, "residency")
    for name, tenant in policy.budgets.tenants.items():
        for tag in sorted(tenant.residency):
            yield tag, ("budgets", "tenants", name, "residency")


def residency_typos(policy: Policy) -> list[tuple[KeyPath, str]]:
    """(where, message) for each tag used less than a close match of it."""
    uses = list(tag_uses(policy))
    count = Counter(tag for tag, _ in uses)
    out: list[tuple[KeyPath, str]] = []
    for tag, path in uses:
        near = [u for u in difflib.get_close_matches(tag, list(count), n=3, cutoff=CUTOFF)
                if u != tag and count[u] > count[tag]]
        if near:
            out.append((path, f"residency tag '{tag}' (written {_times(count[tag])}) looks "
                              f"like '{near[0]}' (written {_times(count[near[0]])}): did you "
                              f"mean '{near[0]}'?"))
    return out


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"
