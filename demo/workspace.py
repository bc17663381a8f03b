"""The demo's folder, the facts it gathers, and the real commands it runs in-process.

Only a folder holding MARKER (or an empty one) is ever wiped. `Runner` calls the entry points of
`mvb` and `mvb-admin` (`gateway.cli.main`, `backoffice.cli.main`) and shows each command line
and its output, paths relative to the demo folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backoffice import cli as admin_cli
from demo.box_config import DEVICE_SERIAL
from demo.evidence import CameraReport
from demo.live_box import Incident, LivePlan
from demo.narration import DemoFailure, check, echo, say
from demo.power_cut import PowerCut
from demo.status import WebPage
from gateway import cli as box_cli
from gateway.box import AUDIT_LOG_NAME
from storage.models import FileRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "demo-out"
MARKER = ".mvb-demo"  # only a folder holding this marker (or an empty one) is ever wiped

CliMain = Callable[[Sequence[str] | None], int]


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where everything lives under the demo folder."""

    out: Path

    @property
    def clips(self) -> Path:
        return self.out / "clips"

    @property
    def backoffice(self) -> Path:
        return self.out / "backoffice"

    @property
    def keys(self) -> Path:
        return self.backoffice / "keys"

    @property
    def pki(self) -> Path:
        return self.backoffice / "pki"

    @property
    def store(self) -> Path:
        return self.backoffice / "store"

    @property
    def stored(self) -> Path:
        """Where the back office keeps finished uploads: complete/<file_id>.mvbe."""
        return self.store / "complete"

    @property
    def pairing_state(self) -> Path:
        return self.backoffice / "pairing"

    @property
    def fleet_repo(self) -> Path:
        return self.backoffice / "fleet-repo"

    @property
    def fleet_keys(self) -> Path:
        return self.backoffice / "fleet-keys"

    @property
    def fleet_trust(self) -> Path:
        """The fleet admin's own copy of the fleet root (docs/fleet-config.md 7.1)."""
        return self.backoffice / "fleet-trust"

    @property
    def serve_log(self) -> Path:
        return self.backoffice / "serve.log"

    @property
    def device_pub(self) -> Path:
        return self.backoffice / f"{DEVICE_SERIAL}.device.pub.pem"

    @property
    def audit_copy(self) -> Path:
        return self.backoffice / f"{DEVICE_SERIAL}.audit.jsonl"

    @property
    def decrypted(self) -> Path:
        return self.backoffice / "decrypted"

    @property
    def viewing_log(self) -> Path:
        """The back office's viewing log: every decryption, hash-chained (docs/four-eyes.md)."""
        return self.backoffice / "viewing-log"

    @property
    def frames(self) -> Path:
        return self.backoffice / "frames"

    @property
    def box(self) -> Path:
        return self.out / "box"

    @property
    def config(self) -> Path:
        return self.box / "box.toml"

    @property
    def audit_log(self) -> Path:
        return self.box / "state" / AUDIT_LOG_NAME

    @property
    def card(self) -> Path:
        return self.out / "card"

    @property
    def thief_copy(self) -> Path:
        return self.out / "thief-copy"

    def clip(self, camera: str) -> Path:
        return self.clips / f"{camera}.ts"

    def rel(self, path: Path) -> str:
        """`path` relative to the demo folder, as the narration shows it."""
        return str(path.relative_to(self.out))


@dataclass(slots=True)
class DemoFacts:
    """Facts gathered along the way, for the checks and the summary."""

    plan: LivePlan
    incident: Incident = field(default_factory=Incident)
    page: WebPage | None = None
    reports: dict[str, CameraReport] = field(default_factory=dict)
    frames: list[Path] = field(default_factory=list)
    clip_bytes: bytes = b""
    power_cut: PowerCut | None = None
    thief_files: int = 0  # evidence files (being written or sealed) in the thief's copy
    thief_bytes: int = 0
    records: list[FileRecord] = field(default_factory=list)  # the box's catalog at the end
    stored_bytes: int = 0
    audit_entries: int = 0


class Runner:
    """Runs the real command entry points in-process, showing the command and its output."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def mvb(self, *args: str | Path) -> str:
        """`mvb --config box/box.toml ARGS...`; returns stdout and stderr together."""
        config = DemoPaths(self.out).config
        return self._run("mvb", box_cli.main, ["--config", str(config), *map(str, args)])

    def admin(self, *args: str | Path) -> str:
        """`mvb-admin ARGS...`; returns stdout and stderr together."""
        return self._run("mvb-admin", admin_cli.main, [str(a) for a in args])

    def show(self, name: str, argv: Sequence[str | Path]) -> None:
        """Print a command line as the demo shows them: paths relative to the demo folder."""
        prefix = f"{self.out}{os.sep}"
        say("$ " + " ".join([name, *(str(a).replace(prefix, "") for a in argv)]))

    def _run(self, name: str, entry: CliMain, argv: list[str]) -> str:
        self.show(name, argv)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            try:
                status = entry(argv)
            except SystemExit as exc:  # argparse rejected the command line
                status = exc.code if isinstance(exc.code, int) else 2
        output = buffer.getvalue()
        echo(output)
        check(status == 0, f"{name} {argv[0] if argv else ''} exited with status {status}")
        return output


def prepare_out(out: Path) -> None:
    """Wipe and recreate the demo folder; refuse a folder the demo did not make."""
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise DemoFailure(f"{out} is not empty and not a demo folder; not wiping it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by demo/run.py; wiped at every run\n")
