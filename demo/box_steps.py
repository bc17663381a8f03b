"""Steps 2-5: the box's side, from its configuration to the incident.

2 its configuration, device key and pairing with a one-time code; 3 a power cut before the
shift (a writer SIGKILLed, the card recovered); 4 the service starts and the officer's page comes
up (its banner: URL, user, the password's only appearance, the certificate's SHA-256); 5 the
incident, uploads all along, and a thief's copy of the card at the officer's stop.
"""

from __future__ import annotations

import shutil
import subprocess

from common.passwords import hash_password
from demo.back_office import BackOffice
from demo.box_config import (
    DEVICE_SERIAL,
    FILE_TARGET_S,
    OFFICER,
    PRERECORD_S,
    UPLINK_TOML,
    VEHICLE_ID,
    box_toml,
    free_ports,
    web_port,
    web_toml,
)
from demo.live_box import LiveBox
from demo.narration import check, echo, heading, say
from demo.power_cut import kill_writer
from demo.status import WebPage
from demo.synthetic import generate_clip
from demo.workspace import DemoFacts, DemoPaths, Runner
from storage.card import PART_SUFFIX, SEALED_SUFFIX

POWER_CUT_CLIP_S = 8.0


def step_box(paths: DemoPaths, run: Runner, office: BackOffice, password: str) -> int:
    """2: the box's configuration, its device key, and pairing. Returns the GPS port."""
    heading(2, f"box: configure it, make its device key, pair it ({DEVICE_SERIAL}, {VEHICLE_ID})")
    paths.box.mkdir(parents=True)
    shutil.copyfile(paths.keys / "recording.pub", paths.box / "recording.pub")
    gps_port, api_port = free_ports(2)
    https_port = web_port()
    password_hash = hash_password(password)
    paths.config.write_text(box_toml(gps_port, api_port, https_port, password_hash))
    say(
        f"{paths.rel(paths.config)}: dashcam and bodycam (synthetic), {PRERECORD_S:g} s "
        f"pre-record, files sealed every {FILE_TARGET_S} s, the simulated gpsd, the local API, and:"
    )
    echo((web_toml(https_port, password_hash) + UPLINK_TOML).strip("\n"))
    say("first start creates the box's device key; the back office registers its public half:")
    paths.device_pub.write_text(run.mvb("device-key"))
    say(f"saved as {paths.rel(paths.device_pub)}")
    say("the admin makes a one-time pairing code; the officer enters it on the box:")
    output = run.admin(
        "pair-code", "--state", paths.pairing_state, "--pki", paths.pki,
        "--box-id", DEVICE_SERIAL, "--address", f"127.0.0.1:{office.pair_port}",
    )  # fmt: skip
    run.mvb("pair", output.strip().splitlines()[-1])
    say("the box now holds its client certificate, the CA, the pins and the upload address")
    return gps_port


def step_power_cut(paths: DemoPaths, run: Runner, facts: DemoFacts) -> None:
    """3: before the shift, kill a writer mid-recording and recover the card."""
    heading(3, "power cut before the shift: SIGKILL a recording writer, then recover (mvb recover)")
    paths.clips.mkdir(parents=True)
    clip = generate_clip(paths.clip("dashcam"), seconds=POWER_CUT_CLIP_S, camera="dashcam")
    facts.clip_bytes = clip.read_bytes()
    say(
        f"{paths.rel(clip)}: {POWER_CUT_CLIP_S:g} s of synthetic H.264, "
        f"{len(facts.clip_bytes):,} bytes, fed to a writer process as a camera would"
    )
    facts.power_cut = kill_writer(paths.config, paths.clip("dashcam"))
    output = run.mvb("recover")
    check("interrupted at chunk" in output, "recovery reported no interrupted file")
    say("the recovered file is sealed and signed by the box; it waits for the uplink")


def step_start(live: LiveBox, facts: DemoFacts, password: str) -> None:
    """4: the box starts; the officer's page; ready (rings full, GPS fix)."""
    heading(4, "box: start the service; the officer's page comes up")
    page = live.call(live.start)
    check(page.state == "listening", f"the officer's page did not start: {page.reason}")
    check(page.url.startswith("https://127.0.0.1:"), f"the page is not on loopback: {page.url}")
    facts.page = page
    banner(page, password)
    live.call(live.wait_ready)


def banner(page: WebPage, password: str) -> None:
    """The officer's page, prominently: where, who, the password (its only appearance) and the
    certificate's fingerprint the browser shows."""
    rule = "=" * 96
    print(
        "\n".join(
            [
                "",
                rule,
                "  THE OFFICER'S PAGE is up. Open it in a browser on this machine and log in:",
                "",
                f"    URL          {page.url}",
                f"    user         {OFFICER}",
                f"    password     {password}   (random for this run; printed only here)",
                f"    certificate  SHA-256 {page.certificate_sha256}",
                "",
                "  The browser warns about the certificate: the box signed it itself (no public CA"
                " vouches for a box in a car); go on if the SHA-256 above matches.",
                rule,
            ]
        ),
        flush=True,
    )


def step_incident(paths: DemoPaths, live: LiveBox, facts: DemoFacts) -> None:
    """5: the incident; uploads run all along; a thief copies the card at the officer's stop."""
    heading(5, "incident: the emergency lights go on; the officer stops it; uploads run all along")

    def copy_card() -> str:
        return thief_copy(paths, facts)

    live.call(lambda: live.play_incident(copy_card))
    live.call(live.wait_uploaded)
    uploaded = facts.incident.uploaded_counts
    check(uploaded == sorted(uploaded), f"uploaded counts went down: {uploaded}")


def thief_copy(paths: DemoPaths, facts: DemoFacts) -> str:
    """The card as a thief copies it mid-incident, by another process (`cp -a`).

    Never read the catalog's sqlite files from this process: it holds connections to them, and
    closing any descriptor of a file drops every POSIX lock the process has on it, so another
    process would take the WAL for unused and delete it under our connections. A file the uplink
    deleted while cp ran is simply missing from the copy.
    """
    copy = paths.thief_copy
    done = subprocess.run(
        ["cp", "-a", str(paths.card), str(copy)], capture_output=True, text=True, check=False
    )
    problems = [line for line in done.stderr.splitlines() if "No such file" not in line]
    check(done.returncode == 0 or not problems, f"cp -a of the card failed: {done.stderr}")
    evidence = [*copy.rglob(f"*{PART_SUFFIX}"), *copy.rglob(f"*{SEALED_SUFFIX}")]
    facts.thief_files = len(evidence)
    facts.thief_bytes = sum(p.stat().st_size for p in evidence)
    return (
        f"cp -a card {paths.rel(copy)}: {facts.thief_files} evidence files "
        f"({facts.thief_bytes:,} bytes), the catalog and the uplink's ledger"
    )
