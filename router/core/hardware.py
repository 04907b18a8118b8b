"""Hardware presets: what owning an edge node costs per hour (docs/reference.md, section 6).

Owned hardware costs the same whether it serves one request or a million, so an
edge node's cost is an hourly figure: its purchase price amortized over its
lifetime, plus its power at full draw, plus hosting where it sits in a rented
rack. A node names its preset with `hardware:`; `usd_per_hour:` on the node
overrides the figure. `generic`, the default, states no cost (0 USD/h): a
policy that wants honest economics names a preset or sets `usd_per_hour`.

    usd_per_hour = price / (LIFETIME_YEARS × 8,760 h) + watts / 1000 × ELECTRICITY_USD_PER_KWH
                   + hosting_usd_per_month / 730 h
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from router.core.schema import did_you_mean

LIFETIME_YEARS = 3.0
ELECTRICITY_USD_PER_KWH = 0.15
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True, slots=True)
class Preset:
    """One hardware class: its price, its power at full draw and its hosting fee."""

    price_usd: float
    watts: float
    hosting_usd_per_month: float
    basis: str

    @property
    def usd_per_hour(self) -> float:
        """Amortized price plus power plus hosting, per hour."""
        return (self.price_usd / (LIFETIME_YEARS * 8760.0)
                + self.watts / 1000.0 * ELECTRICITY_USD_PER_KWH
                + self.hosting_usd_per_month / HOURS_PER_MONTH)


PRESETS: Mapping[str, Preset] = MappingProxyType({
    "generic": Preset(0.0, 0.0, 0.0, "no cost stated: set usd_per_hour"),
    "jetson-agx-orin": Preset(2000.0, 60.0, 0.0, "Jetson AGX Orin 64 GB dev kit, on site"),
    "rtx-4090": Preset(3500.0, 450.0, 0.0, "workstation with one RTX 4090, on site"),
    "nvidia-l4": Preset(8000.0, 300.0, 60.0, "1U server with one L4 in a regional PoP"),
    "a100-80g": Preset(20000.0, 700.0, 150.0, "server share with one A100 80 GB in a colo"),
})


def preset_usd_per_hour(hardware: str) -> float | None:
    """The preset's hourly cost, or None when `hardware` names no preset."""
    found = PRESETS.get(hardware)
    return None if found is None else found.usd_per_hour


def not_a_preset(name: str) -> str:
    """What a policy or a planner's space says of a hardware name that is no preset."""
    return (f"'{name}' is not a hardware preset{did_you_mean(name, PRESETS)} (one of "
            f"{', '.join(PRESETS)})")
