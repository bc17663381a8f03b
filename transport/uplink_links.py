"""One link of the uplink at run time: health, budget, pacer, its transports and uploads.

A shell part of transport/uplink.py: the service keeps one `UplinkLink` per configured link and
asks it for its views (the scheduler's `LinkView`, the status page's row). Invariants:
`pin_blocked` is sticky for the life of the service; at most one transport per kind is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from transport.budget import BudgetState, BudgetStateError, DataBudget
from transport.chunk_size import ChunkBounds, ChunkSizer
from transport.http import HttpRequest, HttpResponse, Transport
from transport.ledger import UplinkLedger
from transport.links import LinkConfig, LinkHealth
from transport.pacing import Pacer
from transport.scheduler import LinkView, UploadClass

log = logging.getLogger(__name__)


class Connector(Protocol):
    """Opens a pinned transport ("https" or "h3") to the back office over one link."""

    async def __call__(self, link: LinkConfig, kind: str) -> Transport: ...


@dataclass
class UplinkLink:
    """One link's runtime state (see the module docstring)."""

    config: LinkConfig
    health: LinkHealth
    budget: DataBudget | None
    pacer: Pacer
    chunks: ChunkSizer  # the chunk size for this link's goodput (transport/chunk_size.py)
    transports: dict[str, Transport] = field(default_factory=dict)
    uploads: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    pin_blocked: str | None = None
    udp_blocked: bool = False
    probing: asyncio.Task[None] | None = None

    def usable(self, now_s: float) -> bool:
        return self.pin_blocked is None and self.health.usable(now_s)

    async def transport(self, kind: str, connect: Connector) -> Transport:
        """The open transport of `kind`, connected first if there is none."""
        transport = self.transports.get(kind)
        if transport is None:
            transport = await connect(self.config, kind)
            self.transports[kind] = transport
        return transport

    async def drop_transport(self, kind: str) -> None:
        transport = self.transports.pop(kind, None)
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.aclose()

    async def drop_transports(self) -> None:
        for kind in list(self.transports):
            await self.drop_transport(kind)

    async def ask(
        self, request: HttpRequest, body: bytes | None, connect: Connector, timeout_s: float
    ) -> HttpResponse:
        """One small request over this link's HTTPS transport (a probe, a termination, a
        report), bounded by `timeout_s`."""
        transport = await self.transport("https", connect)
        async with asyncio.timeout(timeout_s):
            return await transport.request(request, body)

    def track(self, file_id: str, task: asyncio.Task[None]) -> None:
        """An upload running on this link until its task ends."""
        self.uploads[file_id] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self.uploads.pop(file_id, None)

        task.add_done_callback(forget)

    def view(self, now_s: float, today: datetime.date) -> LinkView:
        """What the scheduler sees of this link now."""
        if self.budget is None:
            budget: Mapping[UploadClass, int | None] = dict.fromkeys(UploadClass)
        else:
            budget = self.budget.remaining_by_class(today)
        return LinkView(
            config=self.config,
            usable=self.usable(now_s),
            active_uploads=len(self.uploads),
            budget_remaining_by_class=budget,
            rtt_s=self.health.rtt_s,
            loss_hint=self.health.loss_hint,
            udp_blocked=self.udp_blocked,
        )

    def status(self, now_s: float, today: datetime.date) -> dict[str, Any]:
        """This link's row of the status document."""
        health = self.health
        remaining = (
            None if self.budget is None else self.budget.remaining_bytes(UploadClass.P1, today)
        )
        goodput = health.goodput_bytes_per_s
        return {
            "name": self.config.name,
            "cost_class": str(self.config.cost_class),
            "state": str(health.state(now_s)),
            "usable": self.usable(now_s),
            "pin_blocked": self.pin_blocked is not None,
            "udp_blocked": self.udp_blocked,
            "rtt_ms": None if health.rtt_s is None else round(health.rtt_s * 1000, 1),
            "goodput_mbit_s": None if goodput is None else round(goodput * 8 / 1e6, 2),
            "budget_remaining_bytes": remaining,
            "uploads": len(self.uploads),
        }


def open_link(
    config: LinkConfig,
    ledger: UplinkLedger,
    carrier_up: Callable[[LinkConfig], bool],
    today: datetime.date,
    chunk_bounds: ChunkBounds,
) -> UplinkLink:
    """A link as the service starts it: its budget from the ledger (or a fresh cycle), its
    chunk sizer within `chunk_bounds`."""
    budget = None
    if config.monthly_cap_bytes is not None:
        budget = _load_budget(config, ledger, today)
    health = LinkHealth(carrier_up=carrier_up(config))
    # The pacer sleeps in real time, so it measures real time whatever clock schedules.
    pacer = Pacer(config.rate_cap_bytes_per_s)
    return UplinkLink(config, health, budget, pacer, ChunkSizer(chunk_bounds))


def _load_budget(config: LinkConfig, ledger: UplinkLedger, today: datetime.date) -> DataBudget:
    stored = ledger.budget(config.name)
    if stored is not None:
        try:
            return DataBudget(config, BudgetState.from_dict(stored))
        except BudgetStateError:
            # Unreadable: count from zero but say so; an over-spend of one cycle is bounded.
            log.warning("uplink budget of link %s unreadable; starting a fresh cycle", config.name)
    return DataBudget.fresh(config, today)
