"""VRAM pressure → the best quality a node may serve, and how its keys come back to full.

Quality floors have hysteresis: a node enters `constrained` above
`quality.constrained_above` (`minimal` above `minimal_above`) but leaves only
below `quality.recover_below` (minimal: below `minimal_above` less the same
gap), judged against the floor of the snapshot it replaces, so a VRAM reading
near a threshold does not flip a node's quality at every refresh.

Between the thresholds, quality moves a share of keys at a time. Degrading
frees VRAM (faster, smaller requests), often far below `recover_below`; if
every key came back to full quality at once, VRAM would climb straight back
past `constrained_above` and the node would cycle (degrade, recover, degrade)
at every other refresh; and a node creeping up to `constrained_above` would
send every key down at once when it crossed. So each node carries a
hash-stable share of its keys allowed full quality (`full_share`), moved at
each refresh by the VRAM reading v (band = constrained_above - recover_below):

- v below `recover_below` (leaving, or far from pressure): the share grows by
  (recover_below - v) / band / 2;
- v above the middle of the band (heading for the threshold): it shrinks by
  (v - middle) / band, so VRAM settles in the band instead of crossing it;
- otherwise it holds;

each by at most STEP, an eighth of the keys, so that one refresh changes the
quality of few keys (the simulator's steady-window goal is a mode mix moving
by at most 0.15). A reading at or above `constrained_above` still sends every
key to `constrained` at once, as the policy key says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.policy import Policy

if TYPE_CHECKING:
    from router.core.table import NodeRt

STEP = 0.125  # most of a node's keys whose quality changes at one refresh


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
    """Share of a node's keys allowed full quality (module docstring).

    `fresh`: `vram` is a new reading; a rebuild on the same feed (a policy reload)
    keeps the share it had.
    """
    if floor > 0:
        return 0.0
    if previous is None:
        return 1.0
    if not fresh:
        return previous.full_share
    q = policy.quality
    share = 0.0 if previous.quality_floor > 0 else previous.full_share
    band = max(q.constrained_above - q.recover_below, 1e-6)
    middle = q.recover_below + band / 2.0
    if vram < q.recover_below:
        share += min(STEP, (q.recover_below - vram) / band / 2.0)
    elif vram > middle:
        # heading for constrained_above: ease a share of keys down before the floor takes all
        share -= min(STEP, (vram - middle) / band)
    return min(1.0, max(0.0, share))
