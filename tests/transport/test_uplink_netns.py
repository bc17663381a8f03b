"""The uplink over a real emulated cellular link (network namespaces; root only).

20 Mbit/s (tbf), 60 ms RTT (the TUN relay), 0.1 % loss both ways (nftables). The box's side runs
in a thread that joined the box namespace (setns is per thread), so the real uplink service binds
its sockets to the link's interface by name (SO_BINDTODEVICE). The back office is `mvb-admin
serve` in the other namespace. The radio blacks out in the middle of the upload for longer than
the box's stall timeout: the request is cut, the box retries, asks the server for its offset and
finishes from there.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from labnet.netns import EmulatedLink, is_available
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.store import EvidenceStore
from tests.capture_helpers import store_on
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import record_evidence
from transport.binding import LinkBinding
from transport.connect import BackOffice, BackOfficeConnector
from transport.ledger import UplinkLedger
from transport.links import CostClass, LinkConfig
from transport.uplink import UplinkService, UplinkSettings
from transport.upload import RetryPolicy

pytestmark = pytest.mark.root

MVB_ADMIN = Path(sys.executable).parent / "mvb-admin"
CLONE_NEWNET = 0x40000000
PORT = 8443


def in_namespace(ns: str, coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `coroutine()` on an event loop in a thread that joined network namespace `ns`."""
    errors: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
        finally:
            os.close(fd)
        try:
            asyncio.run(coroutine())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the box side did not finish"
    if errors:
        raise errors[0]


def start_back_office(link: EmulatedLink, pki: TestPki, store: Path) -> None:
    argv = [
        str(MVB_ADMIN), "serve", "--dir", str(store),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--host", link.bo_addr, "--port", str(PORT),
        "--reserve-bytes", "0",
    ]  # fmt: skip
    process = link.popen(link.bo_ns, argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("serving https://")


def uplink_for(
    store: EvidenceStore, ledger_dir: Path, link: EmulatedLink, pki: TestPki, interface: str
) -> UplinkService:
    lte = LinkConfig("lte", CostClass.CELLULAR, LinkBinding(interface=interface))
    office = BackOffice(
        link.bo_addr,
        PORT,
        0,
        pki.client_settings(),
        connect_timeout_s=3,
        read_timeout_s=2,
        stall_timeout_s=2,
    )
    settings = UplinkSettings(
        links=(lte,),
        chunk_bytes=512 * 1024,
        retry=RetryPolicy(initial_s=0.2, max_s=1.0, attempts=20),
        device_serial="MVB-TEST-0001",
        tick_s=0.2,
        h3_available=False,
    )
    return UplinkService(store, UplinkLedger(ledger_dir), settings, BackOfficeConnector(office))


def test_upload_over_a_lossy_cellular_link_survives_a_blackout(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    assert is_available(), "root, ip, tc, nft and /dev/net/tun are needed (make test installs them)"
    with (
        EmulatedLink("mvbt1", rate_mbit=20, rtt_ms=60, loss_fraction=0.001) as link,
        store_on(tmp_path, recipient) as store,
    ):
        start_back_office(link, pki, tmp_path / "backoffice")
        record_evidence(store, 6 * 1024 * 1024)
        [record] = store.catalog.all()
        uplink = uplink_for(store, tmp_path / "ledger", link, pki, link.box_dev)

        async def box_side() -> None:
            await uplink.start()
            try:
                await wait_for(lambda: offset_of(uplink) > 1024 * 1024, 30)
                link.set_down()  # a blackout: packets vanish, no error reaches the box
                await asyncio.sleep(4)  # longer than the stall timeout: the request is cut
                link.set_up()
                await wait_for(lambda: state_of(store, record.file_id) is FileState.DELETED, 60)
            finally:
                await uplink.stop()
                uplink.ledger.close()

        in_namespace(link.box_ns, box_side)
    stored = tmp_path / "backoffice" / "complete" / f"{record.file_id}.mvbe"
    assert stored.stat().st_size == record.size_bytes
    assert uplink.uploaded_files == 1
    assert uplink.links["lte"].health.loss_hint > 0, "the blackout failed requests (a real cut)"


def test_a_socket_bound_to_another_interface_never_reaches_the_back_office(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    with (
        EmulatedLink("mvbt2", rate_mbit=20, rtt_ms=0, loss_fraction=0.0) as link,
        store_on(tmp_path, recipient) as store,
    ):
        start_back_office(link, pki, tmp_path / "backoffice")
        record_evidence(store, 100_000)
        uplink = uplink_for(store, tmp_path / "ledger", link, pki, "lo")

        async def box_side() -> None:
            for _ in range(3):
                await uplink.run_once()
                probes = [t for t in (uplink.links["lte"].probing,) if t is not None]
                await asyncio.gather(*probes)
            uplink.ledger.close()

        in_namespace(link.box_ns, box_side)
        assert uplink.links["lte"].health.rtt_s is None, "no probe ever succeeded"
        assert {r.state for r in store.catalog.all()} == {FileState.SEALED}
    assert not (tmp_path / "backoffice" / "complete").exists() or not any(
        (tmp_path / "backoffice" / "complete").iterdir()
    )


def offset_of(uplink: UplinkService) -> int:
    uploading = uplink.status()["uploading"]
    return int(uploading[0]["offset_bytes"]) if uploading else 0


def state_of(store: EvidenceStore, file_id: str) -> FileState | None:
    record = store.catalog.get(file_id)
    return None if record is None else record.state


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.1)
