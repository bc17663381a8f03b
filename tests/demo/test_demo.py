"""`make demo` (demo/run.py), the newcomer's first minute: it runs the real box service end to
end without hardware, prints the officer page's address with a login that works, shows uploads
to a paired back office progressing while the incident records, and sums up in numbers."""

from __future__ import annotations

import asyncio
import queue
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.passwords import hash_password, verify_password
from config.local import load_config
from demo import box_config, evidence, narration, workspace
from demo import run as demo
from demo.status import CardCounts, card_counts, is_ready, progress_line, upload_state
from storage.models import FileRecord, FileState

DEMO_TIMEOUT_S = 180  # bounds a hung demo; the run itself takes about half a minute
BANNER_TIMEOUT_S = 90
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BANNER = re.compile(
    r"URL +(?P<url>https://127\.0\.0\.1:\d+/)\n"
    r" +user +(?P<user>\S+)\n"
    r" +password +(?P<password>\S+) .*\n"
    r" +certificate +SHA-256 (?P<fingerprint>(?:[0-9A-F]{2}:){31}[0-9A-F]{2})\n"
)
PROGRESS = re.compile(
    r"^ +\d\d:\d\d:\d\d\.\d{3} (?P<state>standby|recording|postrecord)\b.*"
    r"\| uploaded (?P<uploaded>\d+), attested (?P<attested>\d+) \([\d,]+ bytes\), "
    r"deleted (?P<deleted>\d+)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class PrintedPage:
    """What the banner printed: where the page is and how to log in."""

    url: str
    user: str
    password: str
    fingerprint: str


@dataclass(frozen=True)
class Login:
    """What logging in with the printed credentials, over HTTPS, answered."""

    page_status: int
    page_type: str
    wrong_password_status: int
    login_status: int
    status_status: int
    status: dict[str, Any]


@dataclass(frozen=True)
class DemoRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str
    page: PrintedPage
    login: Login


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _read_banner(lines: queue.Queue[str | None], seen: list[str]) -> PrintedPage:
    """Read stdout lines (kept in `seen`) until the banner with the page's URL and login."""
    while True:
        line = lines.get(timeout=BANNER_TIMEOUT_S)
        assert line is not None, "the demo ended before it printed the page:\n" + "".join(seen)
        seen.append(line)
        match = BANNER.search("".join(seen[-8:]))
        if match is not None:
            return PrintedPage(match["url"], match["user"], match["password"], match["fingerprint"])


async def _log_in(page: PrintedPage) -> Login:
    """Log in to the printed URL as a browser told to trust exactly the printed fingerprint."""
    pinned = aiohttp.Fingerprint(bytes.fromhex(page.fingerprint.replace(":", "")))
    jar = aiohttp.CookieJar(unsafe=True)  # the page lives on an IP address, not a host name
    connector = aiohttp.TCPConnector(ssl=pinned)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as browser:
        async with browser.get(page.url) as response:
            page_status, page_type = response.status, response.content_type
        wrong = {"username": page.user, "password": page.password + "x"}
        async with browser.post(f"{page.url}api/session", json=wrong) as response:
            wrong_password_status = response.status
        right = {"username": page.user, "password": page.password}
        async with browser.post(f"{page.url}api/session", json=right) as response:
            login_status = response.status
        async with browser.get(f"{page.url}api/status") as response:
            return Login(
                page_status,
                page_type,
                wrong_password_status,
                login_status,
                response.status,
                await response.json(),
            )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One real run of the demo as `make demo` starts it (without the linger), into a temporary
    folder; while it runs, the test logs in with what the banner printed."""
    root = tmp_path_factory.mktemp("demo")
    out = root / "demo-out"
    command = [sys.executable, "-m", "demo", "--out", str(out), "--linger-s", "0"]
    with (
        (root / "stderr.txt").open("w+") as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as process,
    ):
        lines: queue.Queue[str | None] = queue.Queue()
        pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        pump.start()
        seen: list[str] = []
        try:
            page = _read_banner(lines, seen)
            login = asyncio.run(_log_in(page))
            returncode = process.wait(DEMO_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        pump.join(DEMO_TIMEOUT_S)
        while (line := lines.get_nowait()) is not None:
            seen.append(line)
        stderr.seek(0)
        return DemoRun(out, returncode, "".join(seen), stderr.read(), page, login)


def _step(run: DemoRun, number: int) -> str:
    """The output of step `number` (from its heading to the next one)."""
    marker = f"[{number}/{narration.STEPS}] "
    assert marker in run.stdout, run.stdout + run.stderr
    text = run.stdout.split(marker, 1)[1]
    return text.split(f"[{number + 1}/{narration.STEPS}] ", 1)[0]


def _numbers(pattern: str, text: str) -> list[float]:
    """Every number the groups of `pattern` capture in `text`, in order (thousands separated)."""
    return [
        float(n.replace(",", "")) for match in re.finditer(pattern, text) for n in match.groups()
    ]


def _progress(text: str) -> list[re.Match[str]]:
    return list(PROGRESS.finditer(text))


# -- one real run ---------------------------------------------------------------------------------


def test_demo_exits_zero(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "Demo OK: every check passed." in demo_run.stdout
    assert demo_run.stdout.rstrip().endswith("back office stopped; the demo is over.")
    assert "the page stays up" not in demo_run.stdout, "--linger-s 0 does not linger"


def test_every_step_has_a_heading(demo_run: DemoRun) -> None:
    for number in range(1, narration.STEPS + 1):
        assert f"[{number}/{narration.STEPS}] " in demo_run.stdout


def test_the_page_is_announced_with_its_url_a_login_and_the_fingerprint(demo_run: DemoRun) -> None:
    page = demo_run.page
    started = _step(demo_run, 4)
    assert BANNER.search(started) is not None, "the banner belongs to the box's start"
    assert page.user == box_config.OFFICER
    assert re.fullmatch(r"([a-z2-9]{4}-){3}[a-z2-9]{4}", page.password)
    assert demo_run.stdout.count(page.password) == 1, "the password is printed once"
    assert "browser warns about the certificate: the box signed it itself" in started
    port = int(page.url.rsplit(":", 1)[1].rstrip("/"))
    assert port == load_config(demo_run.out / "box" / "box.toml").web.https_port


def test_the_printed_password_logs_in_over_https(demo_run: DemoRun) -> None:
    login = demo_run.login
    assert (login.page_status, login.page_type) == (200, "text/html")
    assert login.wrong_password_status == 401
    assert login.login_status == 200
    assert login.status_status == 200
    assert login.status["box"]["device_serial"] == box_config.DEVICE_SERIAL
    assert login.status["pairing"]["paired"] is True
    assert login.status["web"]["certificate_sha256"] == demo_run.page.fingerprint


def test_the_password_is_kept_only_as_its_hash(demo_run: DemoRun) -> None:
    password = demo_run.page.password
    config = load_config(demo_run.out / "box" / "box.toml")
    [account] = config.accounts
    assert (account.name, account.role) == (box_config.OFFICER, "officer")
    assert verify_password(account.password_hash, password)
    secret = password.encode()
    leaks = [p for p in demo_run.out.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaks == []
    assert password not in demo_run.stderr


def test_the_box_pairs_with_a_one_time_code(demo_run: DemoRun) -> None:
    paired = _step(demo_run, 2)
    assert "$ mvb-admin pair-code --state backoffice/pairing" in paired
    assert f"paired box {box_config.DEVICE_SERIAL} with the back office at 127.0.0.1:" in paired
    uplink = load_config(demo_run.out / "box" / "box.toml").uplink
    # the file says only `enabled`: address, pins and credentials came from pairing
    assert uplink.enabled
    assert (uplink.host, uplink.pins, uplink.client_cert_file) == ("", (), "")
    assert (demo_run.out / "box" / "state" / "pairing" / "client.crt").is_file()


def test_the_box_reports_ready_through_its_api(demo_run: DemoRun) -> None:
    ready = _step(demo_run, 4)
    assert "pre-record dashcam 10." in ready
    assert "GET /api/status:" in ready
    assert "gps: fix (mode 3), speed 13 m/s" in ready
    assert "paired: yes; uplink up" in ready
    for camera in ("dashcam", "bodycam"):
        # measured over the last second: 25 fps give or take a frame under CI load
        match = re.search(rf"{camera}: connected, ([0-9.]+) fps", ready)
        assert match is not None
        assert 23.0 <= float(match[1]) <= 27.0


def test_the_incident_is_played_through_inputs_and_api(demo_run: DemoRun) -> None:
    incident = _step(demo_run, 5)
    assert "emergency lights ON (input 'lights'" in incident
    assert "recorder: recording, recording " in incident
    assert "POST /api/record/stop" in incident
    assert '{"state": "postrecord"}' in incident
    assert "a thief pulls the card now: cp -a card thief-copy:" in incident


def test_uploads_progress_while_the_incident_records(demo_run: DemoRun) -> None:
    lines = _progress(_step(demo_run, 4) + _step(demo_run, 5))
    uploaded = [int(m["uploaded"]) for m in lines]
    assert uploaded == sorted(uploaded), "the uploaded count never goes down"
    during = [int(m["uploaded"]) for m in lines if m["state"] in ("recording", "postrecord")]
    assert len(during) >= box_config.INCIDENT_S, "a progress line every second of the incident"
    assert during[-1] > during[0], "files went up before the recording ended"
    last = lines[-1]
    assert last["uploaded"] == last["attested"] == last["deleted"]


def test_a_thief_finds_no_plaintext_on_the_card(demo_run: DemoRun) -> None:
    scan = _step(demo_run, 6)
    assert "camera serial 'DC-DEMO-0042'" in scan
    assert "found none of them" in scan
    assert not (demo_run.out / "thief-copy").exists()


def test_the_back_office_verifies_and_decrypts_what_it_received(demo_run: DemoRun) -> None:
    verified = _step(demo_run, 7)
    files = _summary_counts(demo_run)["recorded_files"]
    assert verified.count("  deleted  ") == files
    assert verified.count("(all three)") == files
    assert "interrupted at chunk" in verified
    assert "(power cut; device signature verified)" in verified
    assert "recovered, every one equal to the clip" in verified


def test_what_was_recorded_is_shown_per_camera(demo_run: DemoRun) -> None:
    recorded = _step(demo_run, 8)
    for camera in ("dashcam", "bodycam"):
        assert f"{camera} (serial " in recorded
        assert f"frames/{camera}-at-trigger.png" in recorded
    assert recorded.count("starts on a keyframe: yes; trigger 'lights'") == 2
    assert recorded.count("stop by 'officer'") == 2
    assert recorded.count("all on the route") == 2
    durations = _numbers(r"(\d+\.\d+) s of h264 640x360 by PTS", recorded)
    pre = _numbers(
        r"pre-record (\d+\.\d+) s before the trigger \(monotonic (\d+\.\d+) s\)", recorded
    )
    post = _numbers(r"post-record (\d+\.\d+) s after the stop \(monotonic (\d+\.\d+) s\)", recorded)
    assert len(durations) == 2
    assert all(d >= 20.0 for d in durations)
    assert len(pre) == 4
    assert all(box_config.PRERECORD_S - 0.05 <= p <= box_config.PRERECORD_S + 2 for p in pre)
    assert len(post) == 4
    assert all(p >= box_config.POSTRECORD_S - 0.3 for p in post)


def test_the_audit_log_holds_trigger_stop_and_every_upload(demo_run: DemoRun) -> None:
    audit = _step(demo_run, 9)
    files = _summary_counts(demo_run)["recorded_files"]
    assert "audit log OK" in audit
    for event in ("gateway.started", "gateway.trigger", "gateway.stop"):
        assert f"x {event}\n" in audit
    for event in ("uplink.uploaded", "storage.file_attested", "storage.file_deleted"):
        assert f"{files:2} x {event}\n" in audit
    # the killed writer's RECORDING record reached the catalog: recovery adopts nothing
    assert "storage.catalog_rebuilt" not in audit


def _summary_counts(run: DemoRun) -> dict[str, int]:
    summary = _step(run, narration.STEPS)
    found = {
        "recorded": r"recorded: +(\d+) files, [\d.]+ s of video, ([\d,]+) bytes on the card",
        "uploaded": r"uploaded: +(\d+) files, ([\d,]+) bytes to the local back office",
        "verified": r"verified: +(\d+) of (\d+) files",
        "deleted": r"deleted: +(\d+) of (\d+) files",
    }
    counts: dict[str, int] = {}
    for name, pattern in found.items():
        match = re.search(pattern, summary)
        assert match is not None, f"{name} missing from the summary:\n{summary}"
        first, second = (int(n.replace(",", "")) for n in match.groups())
        counts[f"{name}_files"], counts[f"{name}_second"] = first, second
    return counts


def test_summary_numbers_agree(demo_run: DemoRun) -> None:
    counts = _summary_counts(demo_run)
    files = counts["recorded_files"]
    # the incident (both cameras, sealed every few seconds) and the power cut's file
    assert files >= 5
    assert counts["uploaded_files"] == files
    assert counts["uploaded_second"] == counts["recorded_second"], "uploaded bytes = recorded"
    assert counts["verified_files"] == counts["verified_second"] == files
    assert counts["deleted_files"] == counts["deleted_second"] == counts["uploaded_files"]
    summary = _step(demo_run, narration.STEPS)
    assert "no plaintext in the thief's copy of the card" in summary
    assert "chain and signatures verified" in summary
    assert "interrupted at chunk" in summary
    assert f"look at:    {demo_run.page.url} (user officer" in summary
    assert "backoffice/store/complete" in summary
    assert "backoffice/frames" in summary


def test_demo_leaves_its_files_where_it_says(demo_run: DemoRun) -> None:
    out = demo_run.out
    files = _summary_counts(demo_run)["recorded_files"]
    config = load_config(out / "box" / "box.toml")
    assert [c.name for c in config.cameras] == ["dashcam", "bodycam"]
    assert config.recording.prerecord_s == box_config.PRERECORD_S
    assert list((out / "card" / "evidence").glob("*/*.mvbe*")) == []
    assert len(list((out / "backoffice" / "store" / "complete").glob("*.mvbe"))) == files
    assert len(list((out / "backoffice" / "decrypted").glob("*.ts"))) == files
    frames = sorted((out / "backoffice" / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["bodycam-at-trigger.png", "dashcam-at-trigger.png"]
    assert all(f.read_bytes().startswith(PNG_MAGIC) for f in frames)
    assert (out / "backoffice" / "serve.log").is_file()


# -- the parts, without running the demo ---------------------------------------------------------


def test_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("not demo output")
    assert demo.main(["--out", str(tmp_path)]) == 1
    assert precious.read_text() == "not demo output"


def test_wipes_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    workspace.prepare_out(out)
    (out / "old-run.txt").write_text("from the last run")
    workspace.prepare_out(out)
    assert sorted(p.name for p in out.iterdir()) == [workspace.MARKER]


def test_the_demo_configuration_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    password_hash = hash_password("a demo password")
    path.write_text(box_config.box_toml(2947, 8088, 8443, password_hash))
    config = load_config(path)
    assert [(c.name, c.kind, c.width, c.height, c.bitrate_bps) for c in config.cameras] == [
        ("dashcam", "synthetic", 640, 360, 1_000_000),
        ("bodycam", "synthetic", 640, 360, 800_000),
    ]
    assert (config.recording.prerecord_s, config.recording.postrecord_s) == (10.0, 5.0)
    assert config.storage.file_target_s == box_config.FILE_TARGET_S
    assert (config.gps.port, config.api.port) == (2947, 8088)
    assert (config.web.host, config.web.https_port, config.web.http_port) == (
        "127.0.0.1",
        8443,
        0,
    )
    assert [(a.name, a.password_hash) for a in config.accounts] == [("officer", password_hash)]
    assert config.uplink.enabled
    assert [link.name for link in config.links] == ["wifi"]
    assert config.triggers["lights"].may_stop
    assert config.triggers["lights"].postrecord_s == 5.0


def test_every_run_gets_a_new_password() -> None:
    passwords = {box_config.new_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(re.fullmatch(r"([a-z2-9]{4}-){3}[a-z2-9]{4}", p) for p in passwords)


def test_the_web_port_is_8443_unless_it_is_taken() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = int(taken.getsockname()[1])
        other = box_config.web_port(preferred=port)
    assert other != port
    assert box_config.web_port(preferred=other) == other


def test_linger_keeps_the_box_up_and_ctrl_c_ends_it(capsys: pytest.CaptureFixture[str]) -> None:
    waited: list[float] = []
    demo.linger(60, wait=waited.append)
    assert waited == [60]
    assert "the page stays up for 60 s; Ctrl-C ends the demo now" in capsys.readouterr().out

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt

    demo.linger(60, wait=ctrl_c)  # returns: the caller stops the box as after a full wait
    assert "Ctrl-C: ending the demo" in capsys.readouterr().out

    demo.linger(0, wait=ctrl_c)  # 0: no linger, no wait
    assert capsys.readouterr().out == ""


def test_linger_s_must_be_a_number_of_seconds() -> None:
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            demo._parser().parse_args(["--linger-s", bad])
    assert demo._parser().parse_args([]).linger_s == 60


def _ts_packets(count: int) -> bytes:
    return b"".join(bytes([0x47]) + bytes([i % 251]) * 187 for i in range(count))


def test_ts_sync_search_finds_plaintext_mpeg_ts() -> None:
    noise = bytes((i * 7919 + 13) % 251 for i in range(5000))
    assert evidence.ts_sync_run(noise) is None
    assert evidence.ts_sync_run(noise[:1234] + _ts_packets(10) + noise) == 1234
    assert evidence.ts_sync_run(noise[:77] + _ts_packets(9) + noise) is None, "nine is too few"


def test_readiness_needs_every_ring_and_a_fix() -> None:
    def status(dash: float, body: float, gps: str) -> dict[str, object]:
        cameras = {"dashcam": {"prerecord_filled_s": dash}, "bodycam": {"prerecord_filled_s": body}}
        return {"cameras": cameras, "gps": {"status": gps}}

    assert is_ready(status(10.0, 10.2, "fix"), 10.0)
    assert not is_ready(status(10.0, 9.9, "fix"), 10.0)
    assert not is_ready(status(10.0, 10.0, "no_fix"), 10.0)
    assert not is_ready({"cameras": {}, "gps": {"status": "fix"}}, 10.0)


def _record(file_id: str, state: FileState, *, attested: bool = False) -> FileRecord:
    sha = "ab" * 32
    return FileRecord(
        file_id=file_id,
        recording_id="r1",
        file_seq=0,
        created_at_ms=0,
        state=state,
        size_bytes=1000,
        sha256_hex=None if state is FileState.RECORDING else sha,
        attested_sha256_hex=sha if attested else None,
    )


def test_card_counts_and_the_progress_line() -> None:
    records = [
        _record("a", FileState.RECORDING),
        _record("b", FileState.SEALED),
        _record("c", FileState.UPLOADING),
        _record("d", FileState.DELETED, attested=True),
        _record("e", FileState.DELETED, attested=True),
    ]
    counts = card_counts(records)
    assert counts == CardCounts(
        total=5, recording=1, sealed=1, uploading=1, attested=2, attested_bytes=2000, deleted=2
    )
    assert not counts.all_deleted
    status = {
        "at_ms": 0,
        "state": "recording",
        "recording_for_s": 4.04,
        "uplink": {
            "uploading": [{"offset_bytes": 500_000, "size_bytes": 1_200_000}],
            "uploaded_files": 2,
        },
    }
    line = progress_line(status, counts)
    assert line == (
        "00:00:00.000 recording 4.0 s | card: 1 recording, 1 sealed, 1 uploading "
        "(0.5 of 1.2 MB) | uploaded 2, attested 2 (2,000 bytes), deleted 2"
    )
    assert PROGRESS.search("  " + line) is not None, "the run's lines are parsed with PROGRESS"
    done = card_counts([_record("d", FileState.DELETED, attested=True)])
    assert done.all_deleted
    assert not card_counts([]).all_deleted


def test_an_unpaired_box_says_why_nothing_uploads() -> None:
    status = {"state": "standby", "uplink": {"state": "not paired", "reason": "run mvb pair"}}
    line = upload_state(status, CardCounts(total=1, sealed=1))
    assert line == "card: 0 recording, 1 sealed, 0 uploading | uplink not paired: run mvb pair"
