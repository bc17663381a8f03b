"""Proof of issue 13, item 2, with real parts: the real box (`start_box`, its uplink on pinned
mutual TLS) and the real back office (`mvb-admin serve` in its own process). A box restarted
untouched ships on without an alarm; a box whose audit log was cut at the tail, emptied, or
rewritten and signed again with its own device key (root on the box) is caught at the back
office at its next upload, and `mvb-admin audit check|verify` show it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp

from backoffice.pki import issue_client_cert, load_issued
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.run import RunningBox, start_box, stop_box
from storage.devicekey import DeviceKey
from tests.backoffice.test_tuspy_interop import read_line
from tests.evidence_helpers import write_box_config
from tests.test_run_uplink import SERVING, box_sections
from tests.tls_helpers import TestPki
from transport.audit_shipping_io import AUDIT_REFUSED_ALARM, POSITION_FILE

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
DEADLINE_S = 60.0


@contextlib.contextmanager
def back_office(tmp_path: Path, pki: TestPki) -> Iterator[int]:
    """`mvb-admin serve` on a free port; yields the port."""
    serve = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "store"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    with subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=log, text=True) as process:
        try:
            match = SERVING.fullmatch(read_line(process, 20).strip())
            assert match is not None
            yield int(match["port"])
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
            log.close()


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[RunningBox]:
    box = await start_box(load_config(config))
    try:
        yield box
    finally:
        await stop_box(box)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(MVB_ADMIN), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def held_log(store: Path, box_id: str) -> bytes:
    path = store / "audit" / box_id / "log.jsonl"
    return path.read_bytes() if path.exists() else b""


def alarms(store: Path, box_id: str) -> list[dict[str, object]]:
    path = store / "audit" / box_id / "alarms.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def record_and_upload(box: RunningBox, config: Path) -> None:
    """A recording through the local API, uploaded and deleted: its creation carried a head."""
    api = load_config(config).api
    camera = box.service.cameras["dashcam"]
    await wait_for(lambda: camera.ring.span_ns() > 0, "the camera's first packets")
    async with aiohttp.ClientSession(f"http://{api.host}:{api.port}") as client:
        for path in ("/api/record/start", "/api/record/stop"):
            reply = await client.post(path)
            assert reply.status == 200, await reply.text()
    store = box.box.store
    await wait_for(lambda: store.catalog.all() != [], "the recording's files")
    await wait_for(
        lambda: all(r.state.value == "deleted" for r in store.catalog.all()),
        "the upload, its attestation and the deletion",
    )


async def shipped(box: RunningBox, store: Path, box_id: str) -> None:
    """Until the back office holds the box's log as far as it was durable when asked."""
    head, size = box.box.audit.durable_end()
    await wait_for(lambda: len(held_log(store, box_id)) >= size, f"the log up to seq {head.seq}")
    assert held_log(store, box_id)[:size] == box.box.audit.path.read_bytes()[:size]


async def caught(box: RunningBox, store: Path, box_id: str) -> None:
    await wait_for(lambda: alarms(store, box_id) != [], f"{box_id}: the back office's alarm")
    await wait_for(lambda: AUDIT_REFUSED_ALARM in box.box.alarms, f"{box_id}: the box's alarm")


# -- the attacks: root on the box, the box stopped -------------------------------------------------


def cut_the_tail(state: Path) -> None:
    log = state / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-4]))


def empty_the_log(state: Path) -> None:
    (state / "audit.jsonl").write_bytes(b"")
    (state / POSITION_FILE).unlink()


def rewrite_and_sign_again(state: Path) -> None:
    """Drop a stop of the box from its history and sign every entry again with the device key,
    the chain rebuilt; the shipping position made to match, as root could."""
    key = DeviceKey.load_or_create(state)
    entries = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    stop = next(i for i, e in enumerate(entries) if e["event"] == "gateway.stopped")
    kept = entries[:stop] + entries[stop + 1 :]
    assert len(kept) < len(entries)
    prev, lines = "0" * 64, []
    for seq, entry in enumerate(kept):
        unsigned = {**{k: v for k, v in entry.items() if k != "sig"}, "seq": seq, "prev": prev}
        body = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        sig = base64.b64encode(key.sign(b"MVB audit v1\n" + body.encode())).decode()
        line = json.dumps(
            {**unsigned, "sig": sig}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    (state / "audit.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    position = {"seq": len(lines) - 1, "sha256": prev, "end_bytes": sum(len(x) + 1 for x in lines)}
    (state / POSITION_FILE).write_text(json.dumps(position))


ATTACKS = {"tail-cut": cut_the_tail, "emptied": empty_the_log, "re-signed": rewrite_and_sign_again}


def box_config(tmp_path: Path, pki: TestPki, port: int, box_id: str, clip: Path) -> Path:
    """A box of its own (state, card, client certificate with CN `box_id`) for the back office
    on `port`."""
    ca = load_issued(pki.ca_cert, pki.ca_key)
    cert, key = issue_client_cert(ca, box_id).write(tmp_path / "pki", box_id)
    sections = box_sections(clip, pki, port)
    sections = sections.replace(str(pki.client_cert), str(cert))
    sections = sections.replace(str(pki.client_key), str(key))
    return write_box_config(
        tmp_path / box_id,
        tmp_path / "keys" / "recording.pub",
        device_serial=box_id,
        storage_lines=sections,
    )


async def test_audit_logs_changed_on_boxes_are_caught_at_the_back_office(
    tmp_path: Path, pki: TestPki
) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    assert admin("keys", "create", "--dir", tmp_path / "keys").returncode == 0
    store = tmp_path / "store"
    with back_office(tmp_path, pki) as port:
        for number, (name, attack) in enumerate(ATTACKS.items()):
            box_id = f"MVB-AUDIT-{name}"
            config = box_config(tmp_path, pki, port, box_id, clip)
            state = config.parent / "state"
            async with running(config) as box:
                if number == 0:
                    await record_and_upload(box, config)  # its creation carried a head
                await shipped(box, store, box_id)
            # A restart (a power cycle) of an untouched box: it ships on, nothing is alarmed.
            async with running(config) as box:
                await shipped(box, store, box_id)
                assert AUDIT_REFUSED_ALARM not in box.box.alarms
            assert alarms(store, box_id) == []
            checked = admin("audit", "check", "--store", store, "--box-id", box_id)
            assert checked.returncode == 0, checked.stdout
            (head,) = [x for x in checked.stdout.splitlines() if x.startswith("last head: ")]
            head = head.removeprefix("last head: ")
            device_pub = state / "device_key.pub.pem"
            copy = tmp_path / f"{box_id}.held.jsonl"
            copy.write_bytes(held_log(store, box_id))
            verified = admin("audit", "verify", copy, "--device-key", device_pub, "--head", head)
            assert verified.returncode == 0, verified.stdout

            attack(state)  # root on the stopped box
            tampered = tmp_path / f"{box_id}.tampered.jsonl"
            tampered.write_bytes((state / "audit.jsonl").read_bytes())
            async with running(config) as box:
                await caught(box, store, box_id)

            (alarm, *_) = alarms(store, box_id)
            assert alarm["kind"] in {"truncation", "fork", "rewrite"}, (name, alarm)
            checked = admin("audit", "check", "--store", store, "--box-id", box_id)
            assert checked.returncode == 1
            assert f" {alarm['kind']}: {alarm['detail']}" in checked.stdout
            assert checked.stdout.splitlines()[0] == f"box {box_id}: held log OK"  # kept intact
            # The copy root left verifies on its own, and fails against the back office's head.
            alone = admin("audit", "verify", tampered, "--device-key", device_pub)
            assert (alone.returncode, alone.stdout[:14]) == (0, "audit log OK: ")
            against = admin("audit", "verify", tampered, "--device-key", device_pub, "--head", head)
            assert against.returncode == 1
            assert against.stdout.startswith("audit log BROKEN: ")
    served = (tmp_path / "serve.log").read_text()
    for name in ATTACKS:
        assert f"audit custody alarm box=MVB-AUDIT-{name}" in served
