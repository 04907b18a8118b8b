"""VRAM pressure → the best quality a node may serve, and how its keys come back to full.

Quality floors have hysteresis: a node enters `constrained` above
`quality.constrained_above` (`minimal` above `minimal_above`) but leaves only
below `quality.recover_below` (minimal: below `minimal_above` less the same
gap), judged against the floor of the snapshot it replaces, so a VRAM reading
near a threshold does not flip a node's quality at every refresh.

Leaving is gradual. Degrading frees VRAM (faster, smaller requests), often far
below `recover_below`; if every key returned to full quality at once, VRAM
would climb straight back past `constrained_above` and the node would cycle
(degrade, recover, degrade) at every other refresh. So a node that leaves a
floor lets back a hash-stable share of its keys (`full_share`): at each
refresh with VRAM v below `recover_below` the share grows by

    (recover_below - v) / (constrained_above - recover_below) / 2

but by at most STEP (a quarter of the keys), and holds while v stays between
the two thresholds: close to the threshold few keys come back, and never so
many at once that VRAM overshoots the band while the load is still rising. A
reading above `constrained_above` still sends every key to `constrained`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.model import Policy

if TYPE_CHECKING:
    from router.core.table import NodeRt

STEP = 0.25  # most of a node's keys let back to full quality at one refresh


def quality_floor(policy: Policy, vram: float, previous: int = 0) -> int:
    """The best quality level (index) a node serves at `vram` use, with hysteresis."""
    q = policy.quality
    enter = 2 if vram >= q.minimal_above else 1 if vram >= q.constrained_above else 0
    if enter >= previous:
        return enter
    gap = q.constrained_above - q.recover_below
    stay = 2 if previous == 2 and vram >= q.minimal_above - gap else \
        1 if previous >= 1 and vram >= q.recover_below else 0
    return max(enter, stay)


def full_share(policy: Policy, vram: float, floor: int, previous: NodeRt | None, *,
               fresh: bool = True) -> float:
    """Share of a node's keys allowed full quality (gradual leaving; module docstring).

    `fresh`: `vram` is a new reading; a rebuild on the same feed (a policy reload)
    keeps the share it had.
    """
    if floor > 0:
        return 0.0
    if previous is None or (previous.quality_floor == 0 and previous.full_share >= 1.0):
        return 1.0
    if not fresh:
        return previous.full_share
    q = policy.quality
    share = 0.0 if previous.quality_floor > 0 else previous.full_share
    if vram < q.recover_below:
        band = max(q.constrained_above - q.recover_below, 1e-6)
        share += min(STEP, (q.recover_below - vram) / band / 2.0)
    return min(1.0, share)
