"""What the box's release updater asks of the release root (docs/releases.md 7.3): what the A/B
switch says about releases other than the running one, and a switch back to the previous one.

`SwitchAccess` is the small interface gateway/release_update.py sees; `RootSwitch` implements it
on the release root's own files (switch.json, the `previous` link, releases/<v>/release.json),
which the box may read (0644) on every box. Writing the request (`switch_back`) needs write
access to the root: the box's service has it only where no privilege split exists (tests);
`InboxSwitch` leaves the request in the release inbox for root instead (docs/releases.md 7.6).

Invariants:
- `history` never raises for a root that is absent or unreadable: it answers "nothing known"
  (SwitchHistory()), so every lower pin stays a downgrade;
- `previous` is reported only when it is a complete install of that version and not the
  release the switch calls good (after a rollback `previous` is the running release);
- `switch_back` requests a switch only to a complete install, through the switch's table
  (gateway/release_switch.py): the switcher waits for stand-by, never stops a recording, and
  judges the release's health as for any switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from config.release_targets import SwitchHistory
from gateway.release_inbox import InboxItem, put_item
from gateway.release_switch import Event, EventKind, Outcome
from gateway.release_switch import step as switch_step
from gateway.release_switch_io import ReleaseRoot, SwitchStateError


class SwitchAccess(Protocol):
    """The release root as the box's updater sees it."""

    def history(self) -> SwitchHistory: ...

    def switch_back(self, version: str) -> None:
        """Ask for a switch to the installed `version` (blocking). SwitchRefused while another
        switch is under way; SwitchStateError or OSError when it cannot be asked for."""
        ...


@dataclass(frozen=True, slots=True)
class RootSwitch:
    """SwitchAccess on the release root's files (`/opt/mvb` on a box)."""

    root: Path

    def history(self) -> SwitchHistory:
        release_root = ReleaseRoot(self.root)
        try:
            state = release_root.load()
        except (OSError, SwitchStateError):
            return SwitchHistory()
        rolled_back = state.last_version if state.last is Outcome.ROLLED_BACK else None
        previous = release_root.linked_version("previous")
        if previous is not None and previous != state.good:
            try:
                release_root.check_installed(previous)
            except SwitchStateError:
                previous = None
        else:
            previous = None
        return SwitchHistory(previous=previous, rolled_back=rolled_back or None)

    def switch_back(self, version: str) -> None:
        self.request(version)

    def request(self, version: str) -> None:
        """The switch's REQUEST for the installed `version`, as `mvb release request` files it."""
        release_root = ReleaseRoot(self.root)
        release_root.check_installed(version)
        state, _ = switch_step(release_root.load(), Event(EventKind.REQUEST, version=version))
        release_root.save(state)


@dataclass(frozen=True, slots=True)
class InboxSwitch:
    """SwitchAccess of a box whose service may not write the release root: the history read
    from the root (0644), a switch back left in the inbox for root's installer, which checks
    again that it is the previous release (docs/releases.md 7.6)."""

    root: Path
    inbox: Path
    staging: Path

    def history(self) -> SwitchHistory:
        return RootSwitch(self.root).history()

    def switch_back(self, version: str) -> None:
        put_item(self.inbox, self.staging, InboxItem("switch_back", version))
