"""Step 10: what the demo showed, in numbers, and where everything is.

Recorded, encrypted, uploaded, verified, deleted, audit, the incident and the power cut, from
the facts the steps gathered (DemoFacts); then where to look, the page's URL first.
"""

from __future__ import annotations

from demo.box_config import OFFICER
from demo.narration import heading, say
from demo.workspace import DemoFacts, DemoPaths
from gateway.box import AUDIT_LOG_NAME
from storage.models import FileState


def step_summary(paths: DemoPaths, facts: DemoFacts, elapsed_s: float) -> None:
    """10: what the demo showed, in numbers, and where everything is."""
    heading(10, "summary")
    cut, page = facts.power_cut, facts.page
    assert cut is not None
    assert page is not None
    dash, body = facts.reports["dashcam"], facts.reports["bodycam"]
    files = len(facts.records)
    written = sum(r.size_bytes for r in facts.records)
    seconds = dash.video.duration_s + body.video.duration_s + cut.recovered_s
    attested = sum(r.is_attested for r in facts.records)
    deleted = sum(r.state is FileState.DELETED for r in facts.records)
    uploaded = facts.incident.uploaded_counts[-1]
    say(
        f"recorded:   {files} files, {seconds:.1f} s of video, {written:,} bytes on the card: "
        f"dashcam {dash.video.duration_s:.1f} s + bodycam {body.video.duration_s:.1f} s of the "
        f"incident, {cut.recovered_s:.1f} s recovered from the power cut"
    )
    say(
        f"encrypted:  no plaintext in the thief's copy of the card ({facts.thief_files} evidence "
        f"files, {facts.thief_bytes:,} bytes): no footage, identity or position"
    )
    say(
        f"uploaded:   {uploaded} files, {facts.stored_bytes:,} bytes to the local back office "
        f"(tus, pinned mutual TLS); {facts.incident.uploaded_while_recording} of them before the "
        "recording ended"
    )
    say(
        f"verified:   {attested} of {files} files: the SHA-256 the back office attested = the "
        "box's = its stored copy's"
    )
    say(f"deleted:    {deleted} of {files} files deleted after attestation; the card holds none")
    say(f"audit:      chain and signatures verified, {facts.audit_entries} entries")
    say(
        f"incident:   lights -> officer's stop; pre-record {dash.prerecord_s:.1f} / "
        f"{body.prerecord_s:.1f} s, post-record {dash.postrecord_s:.1f} / "
        f"{body.postrecord_s:.1f} s, {len(dash.gps)} / {len(body.gps)} GPS positions on the "
        "route, keyframe starts"
    )
    say(f"power cut:  {cut.describe_line}")
    say(f"look at:    {page.url} (user {OFFICER}, the password printed in step 4)")
    out = paths.out
    say(f"            {out}/backoffice/store/complete   what the back office received")
    say(f"            {out}/backoffice/decrypted        decrypted footage (.ts) and metadata")
    say(f"            {out}/backoffice/frames           one frame per camera at the trigger (PNG)")
    say(f"            {out}/box    box.toml, state/ (device key, pairing, {AUDIT_LOG_NAME})")
    say(f"            {out}/card   the SD card: catalog only, no evidence left")
    say(f"demo took {elapsed_s:.1f} s")
