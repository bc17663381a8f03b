"""The officer-facing feature routes of docs/webui.md section 2 (shift, reports, events, pairing,
metrics), registered on both channels next to gateway/api.py's routes."""

from __future__ import annotations

from aiohttp import web


def add_feature_routes(app: web.Application) -> None:
    """Register the feature routes on `app` (both channels call this once)."""
    del app  # the feature routes arrive with their modules
