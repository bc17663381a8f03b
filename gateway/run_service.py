"""`mvb run` as a systemd service: the process's life around the box that gateway/run.py wires.

Start the box (without a usable card: degraded, page and API up, until the card is usable), tell
systemd READY, ping its watchdog while the core runs and keep STATUS current, and stop on
SIGTERM/SIGINT within `box.shutdown_grace_s` (docs/deploy-box.md).

Invariants:
- exit 0 after a graceful stop (also from degraded), 1 when the recorder's core failed (systemd
  restarts the service);
- the watchdog is pinged only while the core runs (`RunningBox.healthy`); a degraded box, and a
  full start after a degraded READY (card recovery may take long), are pinged while the loop runs;
- past the grace period the process exits anyway: the next start recovers what was not sealed.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from config.local import LocalConfig
from gateway.degraded import DegradedBox, open_state, show_card_alarm, until_usable
from gateway.run import RunningBox, start_box, start_page, stop_box
from gateway.sdnotify import (
    Notifier,
    status_line,
    watchdog_interval_s_from_environ,
    watchdog_pinger,
)
from gateway.startup import CardUnusable
from gateway.web.local_channel import start_local_api
from gateway.web.status_source import StatusSource
from storage.card_health import CARD_ALARMS
from transport.uplink import UplinkService

log = logging.getLogger("gateway.run")  # the service's log name, kept when this moved


async def run(config: LocalConfig) -> int:
    """Run until SIGTERM or SIGINT (ignition off); exit 0 after a graceful stop, 1 when the core
    failed (systemd restarts the service). Without a usable card the box runs degraded (page and
    API up, the card's alarm raised) and starts in full once the card is usable."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_environ()
    starting: asyncio.Task[None] | None = None  # after a degraded READY: pings while starting
    while True:
        try:
            running = await start_box(config)
            break
        except CardUnusable as exc:
            print(f"mvb: {exc}; nothing can be recorded: page and API up, degraded", flush=True)
            if not await serve_degraded(config, exc, stop, notifier):
                if starting is not None:
                    starting.cancel()
                notifier.stopping()
                notifier.close()
                return 0
            # systemd heard READY while degraded, so its watchdog runs: the full start (card
            # recovery may take long) must not look like a hung service.
            starting = starting or _degraded_watchdog(notifier)
    if starting is not None:
        starting.cancel()
    print(
        f"mvb: running with {len(config.cameras)} camera(s); API on "
        f"http://{config.api.host}:{config.api.port}/api/status",
        flush=True,
    )
    if running.web is not None:
        print(running.web.banner(), flush=True)
    notifier.ready(_status_line(running))
    helpers = _service_helpers(running, notifier)
    core_failed = await _wait_for_stop_or_core_failure(running, stop)
    notifier.stopping()
    for helper in helpers:
        helper.cancel()
    await shutdown(running, config.box.shutdown_grace_s)
    notifier.close()
    return 1 if core_failed else 0


async def serve_degraded(
    config: LocalConfig, why: CardUnusable, stop: asyncio.Event, notifier: Notifier
) -> bool:
    """Without a usable card: the page and the local API up behind DegradedBox, the card's
    alarm raised, until the card is usable (True: start in full) or the service is stopped
    (False). gateway/degraded.py says why this is not an exit."""
    parts = await asyncio.to_thread(open_state, config)
    try:
        show_card_alarm(parts.alarms, why)
        await asyncio.to_thread(parts.audit.append, "gateway.degraded", card=why.condition.value)
        box = DegradedBox(config, parts, why)
        status = StatusSource(box)
        stop_api = await start_local_api(box, status, config.api.host, config.api.port)
        web = None
        pinger = _degraded_watchdog(notifier)
        try:
            web = await start_page(box, status, config)
            notifier.ready(f"no usable card ({why.condition.value}): degraded")
            usable = await until_usable(config, box, stop)
        finally:
            if pinger is not None:
                pinger.cancel()
            if web is not None:
                await web.stop()
            await stop_api()
        if usable:
            for code in CARD_ALARMS:
                parts.alarms.clear(code)
            await asyncio.to_thread(parts.audit.append, "gateway.card_usable")
        return usable
    finally:
        await asyncio.to_thread(parts.close)


def _degraded_watchdog(notifier: Notifier) -> asyncio.Task[None] | None:
    """A degraded box is healthy as long as its loop runs: systemd must not kill it."""
    interval_s = watchdog_interval_s_from_environ()
    if interval_s is None:
        return None
    return asyncio.create_task(watchdog_pinger(notifier, interval_s, lambda: True))


def _service_helpers(running: RunningBox, notifier: Notifier) -> list[asyncio.Task[None]]:
    """The watchdog pinger (when systemd asked for one) and the STATUS updater."""
    helpers = [asyncio.create_task(_report_status(running, notifier))]
    interval_s = watchdog_interval_s_from_environ()
    if interval_s is not None:
        helpers.append(asyncio.create_task(watchdog_pinger(notifier, interval_s, running.healthy)))
    return helpers


async def _wait_for_stop_or_core_failure(running: RunningBox, stop: asyncio.Event) -> bool:
    """Until SIGTERM/SIGINT, or until the supervisor ends on its own (a core failure)."""
    assert running.supervised is not None
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(
        {stopping, running.supervised}, return_when=asyncio.FIRST_COMPLETED
    )
    stopping.cancel()
    if running.supervised in done:
        log.critical("the recorder's core failed; stopping so that systemd restarts the box")
        return True
    return False


async def shutdown(running: RunningBox, grace_s: float) -> None:
    """Ignition off: refuse new triggers, seal the recording, flush, all within `grace_s`.

    Past the grace period the process exits anyway: what was made durable survives (the
    writer's contract) and the next start recovers the rest."""
    running.service.accepting_triggers = False
    await asyncio.to_thread(running.box.audit.append, "gateway.stopping", grace_s=grace_s)
    try:
        async with asyncio.timeout(grace_s):
            await stop_box(running)
    except TimeoutError:
        log.error("shutdown took longer than %.0f s; exiting, the next start recovers", grace_s)


async def _report_status(running: RunningBox, notifier: Notifier) -> None:
    """STATUS= whenever the line changes (checked every second; READY carried the first)."""
    last = _status_line(running)
    while True:
        await asyncio.sleep(1.0)
        line = _status_line(running)
        if line != last:
            notifier.status(line)
            last = line


def _status_line(running: RunningBox) -> str:
    mode = "recording" if running.service.recording is not None else "standby"
    uplink = running.uplink
    usable = uplink.usable_cost_classes() if isinstance(uplink, UplinkService) else []
    return status_line(
        mode, cameras=len(running.service.cameras), uplink=usable[0] if usable else None
    )
