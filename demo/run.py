"""`make demo`: the newcomer's first minute. The real box service end to end on a machine without
hardware: one command, then the officer's page with its address and a login, two cameras
recording a scripted incident, uploads visibly progressing to a local back office, and a summary
in numbers.

It runs the service `mvb run` runs (`gateway.run.start_box`), in-process on a thread of its own
(demo/live_box.py `LiveBox`), with two synthetic cameras and a simulated gpsd
(`demo.gps_sim`: no receiver, no Debian gpsd), and the reference back office (`mvb-admin
serve`) as a process of its own. Everything else goes through the same entry points as the
commands (`gateway.cli.main`, `backoffice.cli.main`). In a fresh folder (default `demo-out/` at
the repository root; `--out DIR` for another):

 1. the back office: its recording key pair, CA and server certificate (`pki init`) and fleet
    repository (`config init`); then `mvb-admin serve` with pairing starts and runs to the end;
 2. the box: its configuration (dashcam and bodycam, 10 s pre-record, files sealed every 3 s so
    that they upload while the incident goes on, the simulated gpsd, the local API, the
    officer's page on 127.0.0.1 with one demo officer account whose random password exists only
    as a PBKDF2 hash, `[uplink] enabled = true` and nothing else), its device key, and pairing
    with a one-time code (`mvb-admin pair-code`, `mvb pair`);
 3. a power cut before the shift: a writer process is SIGKILLed mid-recording and the card
    recovered (`mvb recover`); the interrupted file waits for the uplink like any other;
 4. the box starts and the officer's page comes up: its URL, the account, the password (printed
    once, here) and the certificate's SHA-256; the demo waits (GET /api/status) until both
    pre-record rings hold 10 s and GPS has a fix, while the recovered file uploads;
 5. the incident: the emergency lights go on (a trigger); 6 s later the officer presses stop
    (POST /api/record/stop) and a thief copies the card (`cp -a`); post-record runs out; the
    uplink (tus, pinned mutual TLS) sends every file as it is sealed, the back office attests
    each with the SHA-256 it computed and the box deletes its copy (RULES S3, S6). A progress
    line every second: the box's state, the files by state, the bytes in flight and attested;
 6. the thief's copy is searched for plaintext: camera names and serials, device serial, vehicle
    id, GPS members, and the MPEG-TS sync pattern any plaintext footage would show;
 7. the back office checks what it holds against the box's catalog (its SHA-256 of each copy =
    the one it attested = the one the box wrote; nothing left on the card) and decrypts it
    (`mvb-admin decrypt`): the power cut's file is reported interrupted, signed by the box;
 8. what was recorded is checked and shown per camera: duration by PTS, keyframe start,
    pre-record before the trigger, post-record after the stop, GPS samples on the route, trigger
    and stop sources; one frame per camera, at the trigger, is saved as PNG;
 9. the box's audit log is verified (`mvb-admin audit verify`), trigger and stop included;
10. a summary in numbers: recorded, encrypted, uploaded, verified, deleted, audit; and where to
    look. Then the box and its page stay up for `--linger-s` seconds (default 60; Ctrl-C ends
    the demo at once, cleanly).

Against the previous demo: the back office runs from the start and the box is paired instead
of configured by hand; the power cut moved before the shift (its file uploads with the rest);
the back office decrypts its own copies instead of the card's; the separate `mvb catalog`
listing and the retention step are gone (the progress lines and step 7 show the catalog; the
uplink deletes attested files itself). Nothing had to be dropped for time: measured on a 2-core
machine, the run takes about 28 s of wall time before the linger (10 s of it the rings filling,
11 s the incident).

Every check that fails stops the demo with a message and exit status 1. The private helper
`--child-writer CONFIG CLIP` is the process that step 3 kills; it is not a product command.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from demo.back_office import backoffice_running, step_backoffice
from demo.box_config import INCIDENT_S, POSTRECORD_S, PRERECORD_S, new_password
from demo.box_steps import step_box, step_incident, step_power_cut, step_start
from demo.evidence_steps import step_audit, step_no_plaintext, step_recorded, step_verify
from demo.live_box import LiveBox, LivePlan
from demo.narration import DemoFailure
from demo.power_cut import child_writer
from demo.summary import step_summary
from demo.workspace import DEFAULT_OUT, DemoFacts, DemoPaths, Runner, prepare_out

DEFAULT_LINGER_S = 60.0


def linger(seconds: float, wait: Callable[[float], None] = time.sleep) -> None:
    """Keep the box and its page up for `seconds` (0: not at all); Ctrl-C ends it early and
    cleanly (the caller then stops the box and the back office as after a full wait)."""
    if seconds <= 0:
        return
    print(f"\nthe page stays up for {seconds:g} s; Ctrl-C ends the demo now", flush=True)
    try:
        wait(seconds)
    except KeyboardInterrupt:
        print("Ctrl-C: ending the demo", flush=True)


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description="Mobile Video Box demo (no hardware needed)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="demo folder, wiped first (default demo-out/)"
    )
    parser.add_argument(
        "--linger-s",
        type=_non_negative_seconds,
        default=DEFAULT_LINGER_S,
        help="keep the box and its page up this long after the summary (default 60; 0: stop)",
    )
    parser.add_argument("--child-writer", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser


def run_demo(out: Path, linger_s: float) -> None:
    """All steps in order, then the linger; raises DemoFailure at the first failed check. The
    box and the back office are stopped however it ends."""
    started = time.monotonic()
    paths = DemoPaths(out.resolve())
    prepare_out(paths.out)
    print(f"Mobile Video Box demo in {paths.out} (no hardware; paths below are relative to it)")
    print("Times are UTC, as the synthetic cameras paint them into the picture.")
    run = Runner(paths.out)
    password = new_password()
    step_backoffice(paths, run)
    with backoffice_running(paths, run) as office:
        gps_port = step_box(paths, run, office, password)
        facts = DemoFacts(LivePlan(paths.config, gps_port, PRERECORD_S, INCIDENT_S, POSTRECORD_S))
        step_power_cut(paths, run, facts)
        with LiveBox(facts.plan) as live:
            facts.incident = live.incident
            step_start(live, facts, password)
            step_incident(paths, live, facts)
            step_no_plaintext(paths, facts)
            step_verify(paths, run, live, facts)
            step_recorded(paths, facts)
            step_audit(paths, run, facts)
            step_summary(paths, facts, time.monotonic() - started)
            print("\nDemo OK: every check passed.", flush=True)
            linger(linger_s)
    print("back office stopped; the demo is over.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (or, privately, the child writer of step 3)."""
    args = _parser().parse_args(argv)
    if args.child_writer:
        return child_writer(*args.child_writer)
    try:
        run_demo(args.out, args.linger_s)
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted (Ctrl-C): box and back office stopped", file=sys.stderr)
        return 130
    return 0
