"""A box may read only the fleet documents signed for it (issue 13, item 4).

As found: any paired box could download every group's documents, account password hashes
included. Now the back office serves a document only to the boxes its signed custom fields name
(backoffice/fleet_access.py), the repository refuses a group document that names no member boxes
and `[[accounts]]` in a document for more than one box, and a box refuses such accounts too.
First the rules; then a real `mvb-admin serve` with two boxes paired by `mvb pair`, each asking
over its own pinned mutual-TLS link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, Targets

from backoffice.fleet_access import FleetAccess, may_read, readers_by_file
from backoffice.fleet_metadata import FleetRepoError
from backoffice.fleet_releases import sign_release
from backoffice.fleet_repo import FleetRepository, FleetSigners, init_repository, load_fleet_signers
from config.fleet_fetch import FleetLink
from config.fleet_targets import TARGETS_PREFIX, box_target_path, group_target_path
from config.release_targets import RELEASE_KEY_PATH
from gateway.pairing_client import pairing_files
from tests.evidence_helpers import write_box_config
from tests.gateway.fleet_rig import BackOffice, mvb_pair, start_back_office, write_recipient_pub
from tests.release_target_helpers import release_fleet, synthetic_bundle
from tests.tls_helpers import TestPki

A, B = "MVB-A", "MVB-B"
GROUP = "zuid"
ACCOUNTS = (
    b'[[accounts]]\nname = "officer"\nrole = "officer"\n'
    b'password_hash = "pbkdf2_sha256$600000$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA=="\n'
)
POLICY = b"[recording]\nprerecord_s = 60\n"


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[FleetRepository, FleetSigners]:
    return init_repository(tmp_path / "repo", tmp_path / "keys", now=_now()), load_fleet_signers(
        tmp_path / "keys"
    )


def _sign(
    fleet: tuple[FleetRepository, FleetSigners],
    path: str,
    document: bytes,
    boxes: tuple[str, ...],
    groups: tuple[str, ...] = (),
) -> None:
    repo, signers = fleet
    repo.add_config(
        path,
        document,
        boxes=boxes,
        groups=groups,
        config_serial=repo.next_config_serial(),
        targets_signer=signers.targets,
        now=_now(),
    )


def test_the_readers_of_a_file_are_the_boxes_its_target_names(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    _sign(fleet, box_target_path(A), ACCOUNTS, (A,))
    _sign(fleet, group_target_path(GROUP), POLICY, (A, B), (GROUP,))
    readers = readers_by_file(fleet[0].verified_targets().signed)
    mine = f"boxes/{hashlib.sha256(ACCOUNTS).hexdigest()}.{A}.toml"
    group = f"groups/{hashlib.sha256(POLICY).hexdigest()}.{GROUP}.toml"
    assert readers == {mine: frozenset({A}), group: frozenset({A, B})}
    assert may_read(mine, A, readers)
    assert not may_read(mine, B, readers)
    assert may_read(group, B, readers)
    assert not may_read("boxes/unknown.toml", A, readers)


def test_the_repository_refuses_what_would_reach_boxes_it_is_not_for(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    with pytest.raises(FleetRepoError, match="must name the boxes that may read it"):
        _sign(fleet, group_target_path(GROUP), POLICY, (), (GROUP,))
    with pytest.raises(FleetRepoError, match=r"sets \[\[accounts\]\] .* exactly one box"):
        _sign(fleet, group_target_path(GROUP), ACCOUNTS, (A, B), (GROUP,))
    with pytest.raises(FleetRepoError, match="exactly one box"):
        _sign(fleet, box_target_path(A), ACCOUNTS, (A, B))
    _sign(fleet, box_target_path(A), ACCOUNTS, (A,))


# --- a real back office, two boxes -------------------------------------------------------------


class Paired:
    def __init__(self, office: BackOffice, root: Path, box_id: str) -> None:
        self.office = office
        self.state = root / "state"
        config = write_box_config(root, write_recipient_pub(root), device_serial=box_id)
        code = office.pair_code(box_id=box_id)
        assert code.returncode == 0, code.stderr
        paired = mvb_pair(config, code.stdout.strip().splitlines()[-1])
        assert paired.returncode == 0, paired.stderr

    async def get(self, url_path: str) -> bytes:
        tls = pairing_files(self.state).tls_settings()
        link = await FleetLink.connect("127.0.0.1", self.office.mutual_port, tls)
        try:
            return await link.get(url_path, 4 * 1024 * 1024)
        finally:
            await link.aclose()


@pytest.fixture(scope="module")
def office(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackOffice]:
    root = tmp_path_factory.mktemp("office")
    with start_back_office(pki, root, documents=()) as running:
        repo, signers = running.fleet, running.signers()
        for path, document, boxes, groups in (
            (box_target_path(A), ACCOUNTS, (A,), ()),
            (box_target_path(B), ACCOUNTS.replace(b"officer", b"driver"), (B,), ()),
            (group_target_path(GROUP), POLICY, (A,), (GROUP,)),
        ):
            repo.add_config(path, document, boxes=boxes, groups=groups,
                            config_serial=repo.next_config_serial(),
                            targets_signer=signers.targets, now=_now())  # fmt: skip
        repo.publish(signers.snapshot, signers.timestamp, now=_now())
        yield running


@pytest.fixture(scope="module")
def boxes(office: BackOffice, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Paired]:
    return {box: Paired(office, tmp_path_factory.mktemp(box), box) for box in (A, B)}


def _url(office: BackOffice, path: str) -> str:
    target = office.fleet.verified_targets().signed.targets[path]
    folder, _, name = path.partition("/")
    return f"{TARGETS_PREFIX}{folder}/{target.hashes['sha256']}.{name}"


async def test_a_box_reads_its_own_document_and_is_refused_another_boxs(
    office: BackOffice, boxes: dict[str, Paired]
) -> None:
    a_doc, b_doc = _url(office, box_target_path(A)), _url(office, box_target_path(B))
    assert await boxes[A].get(a_doc) == ACCOUNTS
    with pytest.raises(DownloadHTTPError) as refused:
        await boxes[A].get(b_doc)
    assert refused.value.status_code == 403
    assert b"driver" in await boxes[B].get(b_doc)
    with pytest.raises(DownloadHTTPError) as refused:
        await boxes[B].get(a_doc)
    assert refused.value.status_code == 403


async def test_a_group_document_is_read_only_by_the_members_it_names(
    office: BackOffice, boxes: dict[str, Paired]
) -> None:
    group_doc = _url(office, group_target_path(GROUP))
    assert await boxes[A].get(group_doc) == POLICY
    with pytest.raises(DownloadHTTPError) as refused:
        await boxes[B].get(group_doc)
    assert refused.value.status_code == 403


async def test_the_metadata_every_box_reads_names_documents_but_holds_no_document(
    office: BackOffice, boxes: dict[str, Paired]
) -> None:
    version = office.fleet.verified_targets().signed.version
    metadata = await boxes[B].get(f"/fleet/metadata/{version}.targets.json")
    targets = Metadata[Targets].from_bytes(metadata).signed
    assert set(targets.targets) == {
        box_target_path(A),
        box_target_path(B),
        group_target_path(GROUP),
    }
    assert b"password_hash" not in metadata
    assert b"pbkdf2" not in metadata
    assert json.loads(metadata)["signed"]["targets"][box_target_path(A)]["custom"]["boxes"] == [A]


def test_sealed_releases_and_the_release_key_are_for_every_paired_box(tmp_path: Path) -> None:
    """docs/releases.md 6.2, 7.1: a sealed release is encrypted, so every paired box may fetch
    it; the release key is served at RELEASE_KEY_PATH when the back office has one (404, None,
    when not); a document stays for the boxes it names."""
    fleet = release_fleet(tmp_path / "office")
    sign_release(
        fleet.repo,
        synthetic_bundle(tmp_path, "1.0.1"),
        fleet.seal_key.public(),
        fleet.releases_signer,
        now=datetime.now(UTC),
    )
    fleet.publish()
    (stored,) = (fleet.repo.targets_dir / "releases").iterdir()
    url = f"{TARGETS_PREFIX}releases/{stored.name}"
    key = tmp_path / "release-seal.key"
    key.write_text(fleet.seal_key.pem())
    for access in (FleetAccess(fleet.repo, release_key=key), FleetAccess(fleet.repo)):
        assert access(url, A) == stored
        assert access(url, B) == stored
    assert FleetAccess(fleet.repo, release_key=key)(RELEASE_KEY_PATH, A) == key
    assert FleetAccess(fleet.repo)(RELEASE_KEY_PATH, A) is None
