"""The scenario's `world` section: how the simulated world behaves (docs/reference.md, section 9).

Each default is written once, here; `simulator.physics` says what each parameter does.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from router.core.schema import Breach, Int, Num, Schema, Text, enforce


class Site(Schema):
    """A site whose edge nodes share one uplink (`world.sites[]`)."""

    id: Text = Field(description="site name")
    uplink_mbps: Num = Field(gt=0, description="the site's uplink, shared by every transfer")
    nodes: tuple[Text, ...] = Field(default=(), description="edge node ids at this site")


class WorldConfig(Schema):
    """How the simulated world behaves (`world`); simulator.physics says how each part works."""

    warm_keys_per_node: Int = Field(
        default=500, ge=0, description="keys each node keeps warm (most recently served)")
    warm_speedup: Num = Field(
        default=0.4, ge=0, lt=1,
        description="a warm key's inference takes (1 - this) of a cold one")
    service_cv: Num = Field(
        default=0.25, gt=0, le=4,
        description="coefficient of variation of service times (gamma); 1: exponential")
    contention: Num = Field(
        default=0.5, ge=0,
        description="service time × (1 + this × (busy - 1) / (slots - 1)); 0: an M/M/c node")
    vram_idle: Num = Field(default=0.35, ge=0, le=1, description="VRAM use of an idle node")
    vram_busy: Num = Field(
        default=0.9, ge=0, le=1, description="VRAM use with every slot busy at full quality")
    cloud_jitter: Num = Field(
        default=0.12, ge=0, description="σ of the log-normal factor on a pool's answer time")
    timeout_ms: Num = Field(
        default=1000.0, gt=0, description="when a request to a down node or cut-off pool ends")
    deadline_ms: Num = Field(
        default=30000.0, gt=0,
        description="a client gives up on a request still queued or uploading after this long")
    sites: tuple[Site, ...] = Field(
        default=(), description="sites sharing an uplink; a node no site names has its own")
    gateway_site: Text | None = Field(
        default=None, description="the site whose uplink carries whole payloads to the cloud; "
                                  "null: a site of its own with cloud.uplink_mbps")

    @model_validator(mode="after")
    def _ordered(self) -> WorldConfig:
        out = []
        if self.vram_idle > self.vram_busy:
            out.append(Breach(("vram_idle",), f"must not be above vram_busy "
                              f"({self.vram_idle:g} > {self.vram_busy:g})"))
        seen: set[str] = set()
        for i, site in enumerate(self.sites):
            if site.id in seen:
                out.append(Breach(("sites", i, "id"), f"duplicate site id '{site.id}'"))
            seen.add(site.id)
        enforce(out)
        return self
