"""The officer-facing feature routes of docs/webui.md section 2 (status, events, shift, reports,
pairing, metrics), registered on both channels next to gateway/api.py's routes.

`Features` is the state behind them for one running box: the shift, the report book, the
pairing lock and the status source. Both channels share it (one shift whichever channel
started it); it lives as an observer of the box's capture service, which gives it every
recording's start and end and asks it for the shift's facts (RULES R5). Each listener gets its
own event streams, ended when that listener shuts down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.web import events, metrics, pair_route, reports, shift, status_view
from gateway.web.status_view import Extras, StatusSource

if TYPE_CHECKING:
    from config.local import LocalConfig
    from gateway.run import RunningBox


class Features:
    """The officer's features of one running box (a RecordingObserver of its capture)."""

    def __init__(self, running: RunningBox, extras: Extras) -> None:
        box = running.box
        state_dir = box.config.state_dir
        # Small files in the state directory, read once when the API is set up at start.
        self.reports = reports.ReportDesk.load(state_dir, box.store, self._officer_id)
        self.shift = shift.ShiftDesk.load(state_dir, box.audit, self.reports)
        self.pairing = pair_route.PairingDesk(running)
        self.status = StatusSource(running, self.shift.view, self.reports.book.summary, extras)
        self.running = running

    def _officer_id(self) -> str | None:
        return self.shift.officer_id()

    def effective_config(self) -> LocalConfig:
        """The configuration the box runs now (a fleet document may have changed it)."""
        fleet = self.running.fleet
        return self.running.box.config if fleet is None else fleet.applier.effective

    # -- RecordingObserver (gateway/capture/service.py) ---------------------------------------

    def recording_facts(self) -> Mapping[str, Any]:
        return self.shift.recording_facts()

    async def recording_started(self, recording_id: str, facts: Mapping[str, Any]) -> None:
        await self.reports.note_started(recording_id, facts)

    async def recording_finished(self, recording_id: str, duration_s: float) -> None:
        await self.reports.note_finished(recording_id, duration_s)


def features_of(running: RunningBox, extras: Extras) -> Features:
    """The box's Features, made (and attached to its capture service) on first use."""
    for observer in running.service.observers:
        if isinstance(observer, Features):
            return observer
    features = Features(running, extras)
    running.service.observers.append(features)
    return features


def add_feature_routes(app: web.Application, running: RunningBox, extras: Extras) -> None:
    """Register the feature routes on `app` (each channel calls this once for its app).
    `extras` completes the status document with members owned elsewhere (gateway/api.py)."""
    features = features_of(running, extras)
    streams = events.EventStreams(features.status)
    app.on_shutdown.append(streams.close)
    app.router.add_routes(
        [
            *status_view.routes(features.status),
            web.get("/api/events", streams.handle),
            *shift.routes(features.shift),
            *reports.routes(features.reports),
            *pair_route.routes(features.pairing),
            *metrics.routes(
                features.status,
                lambda: features.effective_config().webui.metrics_token_sha256,
                lambda: streams.open_streams,
            ),
        ]
    )
