"""The box's fleet configuration client against a real TUF repository written by fleet_repo.

No network: the box's `fetch` serves the repository's files the way the back office would
(`FleetRepository.served_path`). Attacks are staged by writing files into the repository, as a
compromised back office, a careless admin or a man in the middle could.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadError,
    DownloadHTTPError,
    ExpiredMetadataError,
    LengthOrHashMismatchError,
    RepositoryError,
    UnsignedMetadataError,
)
from tuf.api.metadata import (
    Metadata,
    Root,
    TargetFile,
    Timestamp,
)

from backoffice.fleet_repo import (
    FleetRepository,
    FleetSigners,
    init_repository,
    load_fleet_signers,
)
from config.fleet_client import MAX_BUNDLE_BYTES, BadBundle, FleetConfigClient, install_trust_root
from config.fleet_targets import (
    TARGETS_PREFIX,
    AppliedState,
    Candidate,
    DocumentTooLarge,
    FleetCustom,
    FleetDocument,
    MalformedCustom,
    SerialRollback,
    WrongBox,
    box_target_path,
    group_target_path,
    parse_custom,
    select_candidate,
)
from tests.config.tuf_attacks import (
    extended_expiry,
    plant,
    plant_root,
    publish_unchecked,
    sign_targets_unchecked,
)
from transport.errors import PinMismatch

BOX = "MVB-TEST-0001"
OTHER_BOX = "MVB-TEST-0002"
GROUP = "borsele"
DOC = b"[recording]\nprerecord_s = 60\n"


class RepoLink:
    """The box's `fetch`: answers from the repository like the back office; records requests."""

    def __init__(self, repo: FleetRepository) -> None:
        self.repo = repo
        self.requests: list[tuple[str, int]] = []

    def __call__(self, url_path: str, max_bytes: int) -> bytes:
        self.requests.append((url_path, max_bytes))
        path = self.repo.served_path(url_path)
        if path is None:
            raise DownloadHTTPError(f"{url_path} not found", 404)
        return path.read_bytes()[: max_bytes + 1]

    def target_requests(self) -> list[str]:
        return [url for url, _ in self.requests if url.startswith(TARGETS_PREFIX)]


@dataclass
class Fleet:
    repo: FleetRepository
    signers: FleetSigners
    tmp_path: Path
    link: RepoLink = field(init=False)

    def __post_init__(self) -> None:
        self.link = RepoLink(self.repo)

    def add(
        self,
        target_path: str,
        document: bytes,
        *,
        serial: int,
        boxes: tuple[str, ...] = (),
        groups: tuple[str, ...] = (),
    ) -> None:
        """The admin signs a document and the back office publishes it."""
        self.repo.add_config(
            target_path,
            document,
            boxes=boxes,
            groups=groups,
            config_serial=serial,
            targets_signer=self.signers.targets,
            now=_now(),
        )
        self.publish()

    def publish(self, now: datetime | None = None) -> None:
        self.repo.publish(self.signers.snapshot, self.signers.timestamp, now=now or _now())

    def client(
        self,
        box_id: str = BOX,
        groups: tuple[str, ...] = (GROUP,),
        fetch: Callable[[str, int], bytes] | None = None,
        state: AppliedState | None = None,
    ) -> FleetConfigClient:
        """A box paired now: the current root installed as its trust anchor."""
        metadata_dir = self.tmp_path / f"box-{box_id}"
        if not (metadata_dir / "root.json").exists():
            install_trust_root(metadata_dir, self.repo.trust_root_bytes())
        return FleetConfigClient(
            metadata_dir, box_id, groups, fetch or self.link, state or AppliedState()
        )

    def metadata(self, name: str) -> Path:
        return self.repo.metadata_dir / name


def _now() -> datetime:
    # python-tuf's client checks expiry against the wall clock; the repository is given `now`.
    return datetime.now(UTC)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    repo = init_repository(tmp_path / "repo", tmp_path / "keys", now=_now())
    return Fleet(repo, load_fleet_signers(tmp_path / "keys"), tmp_path)


def _applied(client: FleetConfigClient) -> FleetDocument:
    document = client.check()
    assert document is not None
    client.record_applied(document)
    return document


def _trusted_root_version(client_dir: Path) -> int:
    return Metadata[Root].from_bytes((client_dir / "root.json").read_bytes()).signed.version


def _assert_rejected(
    client: FleetConfigClient, error: type[Exception], bundle: bytes | None = None
) -> None:
    """The box refuses and keeps what it had applied."""
    before = client.state
    attempt = client.check if bundle is None else partial(client.verify_bundle, bundle)
    with pytest.raises(error):
        attempt()
    assert client.state == before


# ---------------------------------------------------------------------------- accepted


def test_valid_document_is_accepted_then_up_to_date_then_replaced(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    client = fleet.client()

    document = client.check()

    assert document is not None
    assert document.document == DOC
    assert document.config_serial == 1
    assert document.sha256 == hashlib.sha256(DOC).hexdigest()
    assert document.target_path == "boxes/MVB-TEST-0001.toml"
    assert client.state == AppliedState()  # only the caller's apply step records it
    keys = (fleet.signers.targets.public_key.keyid,)
    assert document.targets_keys == keys  # what the root it verified under names for targets
    applied = AppliedState(1, document.sha256, document.target_path, keys)
    assert client.record_applied(document) == applied
    assert client.check() is None
    fleet.add(box_target_path(BOX), DOC + b"# v2\n", serial=2, boxes=(BOX,))
    newer = client.check()
    assert newer is not None
    assert newer.config_serial == 2


def test_fetch_is_bounded_by_the_signed_length(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    client = fleet.client()

    client.check()

    target_url = fleet.link.target_requests()[0]
    assert target_url.endswith(f"{hashlib.sha256(DOC).hexdigest()}.{BOX}.toml")
    assert (target_url, len(DOC)) in fleet.link.requests


def test_group_document_applies_to_members_and_the_highest_serial_wins(fleet: Fleet) -> None:
    fleet.add(group_target_path(GROUP), b"group = 1\n", serial=1, boxes=(BOX,), groups=(GROUP,))
    member, outsider = fleet.client(), fleet.client(OTHER_BOX, groups=("h2o",))

    assert _applied(member).target_path == "groups/borsele.toml"
    assert outsider.check() is None
    fleet.add(box_target_path(BOX), b"box = 2\n", serial=2, boxes=(BOX,))
    assert _applied(member).document == b"box = 2\n"
    fleet.add(group_target_path(GROUP), b"group = 3\n", serial=3, boxes=(BOX,), groups=(GROUP,))
    assert _applied(member).document == b"group = 3\n"


def test_documents_of_other_boxes_are_never_fetched(fleet: Fleet) -> None:
    fleet.add(box_target_path(OTHER_BOX), DOC, serial=1, boxes=(OTHER_BOX,))
    client = fleet.client()

    assert client.check() is None
    assert fleet.link.target_requests() == []


async def test_check_runs_off_the_event_loop(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    client = fleet.client()

    document = await asyncio.to_thread(client.check)

    assert document is not None
    assert document.document == DOC


# ---------------------------------------------------------------------------- rejected


def test_altered_metadata_fails_its_signature(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    # The signature still covers the old expiry.
    plant(
        fleet.metadata("timestamp.json"),
        extended_expiry(fleet.metadata("timestamp.json").read_bytes()),
    )

    _assert_rejected(fleet.client(), UnsignedMetadataError)


def test_configuration_signed_by_the_back_office_keys_is_rejected(fleet: Fleet) -> None:
    # A compromised back office holds the online keys, not the admin's targets key.
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    client = fleet.client()
    _applied(client)
    forged = FleetCustom((BOX,), (), 2)
    sign_targets_unchecked(
        fleet.repo, {box_target_path(BOX): (b"evil = 1\n", forged)}, fleet.signers.snapshot
    )
    publish_unchecked(fleet.repo, fleet.signers.snapshot, fleet.signers.timestamp, now=_now())

    _assert_rejected(client, UnsignedMetadataError)


def test_root_with_too_few_signatures_is_rejected(fleet: Fleet) -> None:
    client = fleet.client()
    # The root threshold is 2 of 3; one root key alone must not be enough.
    assert plant_root(fleet.repo, fleet.signers.root[:1], now=_now()) == 2

    _assert_rejected(client, UnsignedMetadataError)
    assert _trusted_root_version(fleet.tmp_path / f"box-{BOX}") == 1


def test_root_rotation_without_the_old_threshold_is_rejected(fleet: Fleet) -> None:
    client = fleet.client()
    new_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    # Whoever made the new keys signs with all of them, plus one stolen old root key.
    plant_root(
        fleet.repo,
        [*new_keys, fleet.signers.root[0]],
        role_keys={Root.type: [signer.public_key for signer in new_keys]},
        now=_now(),
        lifetime=timedelta(days=365),
    )

    _assert_rejected(client, UnsignedMetadataError)
    assert _trusted_root_version(fleet.tmp_path / f"box-{BOX}") == 1


def test_root_rotation_with_the_threshold_is_followed(fleet: Fleet) -> None:
    client = fleet.client()
    assert client.check() is None  # the box stores a timestamp signed by the old online key
    new_root_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    new_timestamp_key = CryptoSigner.generate_ecdsa()
    old_root_keys = fleet.signers.root
    fleet.repo.rotate_root(
        [*old_root_keys[:2], *new_root_keys[:2]],
        role_keys={
            Root.type: [signer.public_key for signer in new_root_keys],
            Timestamp.type: [new_timestamp_key.public_key],
        },
        now=_now(),
    )
    fleet.repo.add_config(
        box_target_path(BOX),
        DOC,
        boxes=(BOX,),
        config_serial=1,
        targets_signer=fleet.signers.targets,
        now=_now(),
    )
    fleet.repo.publish(fleet.signers.snapshot, new_timestamp_key, now=_now())

    document = client.check()

    assert document is not None
    assert document.document == DOC
    assert _trusted_root_version(fleet.tmp_path / f"box-{BOX}") == 2
    # The retired root keys lost their power: a root v3 signed by them alone is refused.
    assert plant_root(fleet.repo, old_root_keys, now=_now()) == 3
    _assert_rejected(client, UnsignedMetadataError)


def test_metadata_rollback_is_rejected(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    old_timestamp = fleet.metadata("timestamp.json").read_bytes()
    fleet.add(box_target_path(BOX), DOC + b"# v2\n", serial=2, boxes=(BOX,))
    client = fleet.client()
    client.check()  # the box has now seen the newer timestamp
    fleet.metadata("timestamp.json").write_bytes(old_timestamp)  # replayed, validly signed

    _assert_rejected(client, BadVersionNumberError)


@pytest.mark.parametrize("lower_serial", [3, 5], ids=["lower", "reused"])
def test_serial_rollback_is_rejected(fleet: Fleet, lower_serial: int) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=5, boxes=(BOX,))
    client = fleet.client()
    _applied(client)
    # Correctly signed by the admin's targets key and published: only the serial is wrong.
    old = FleetCustom((BOX,), (), lower_serial)
    sign_targets_unchecked(
        fleet.repo, {box_target_path(BOX): (b"old = 1\n", old)}, fleet.signers.targets
    )
    fleet.publish()

    _assert_rejected(client, SerialRollback)


def test_expired_timestamp_is_rejected_until_republished(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    # A frozen back office: its last timestamp was made three days ago and lived one day.
    fleet.publish(now=_now() - timedelta(days=3))
    client = fleet.client()

    _assert_rejected(client, ExpiredMetadataError)
    fleet.publish()
    assert client.check() is not None


def test_mix_and_match_snapshot_is_rejected(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    fleet.add(box_target_path(BOX), DOC + b"# v2\n", serial=2, boxes=(BOX,))
    current = Metadata[Timestamp].from_bytes(fleet.metadata("timestamp.json").read_bytes())
    version = current.signed.snapshot_meta.version
    older = fleet.metadata(f"{version - 1}.snapshot.json").read_bytes()
    fleet.metadata(f"{version}.snapshot.json").write_bytes(older)

    _assert_rejected(fleet.client(), LengthOrHashMismatchError)


def test_document_for_another_box_is_rejected(fleet: Fleet) -> None:
    # Signed at this box's path, but its signed custom fields name another box.
    custom = FleetCustom((OTHER_BOX,), (), 1)
    sign_targets_unchecked(fleet.repo, {box_target_path(BOX): (DOC, custom)}, fleet.signers.targets)
    fleet.publish()

    _assert_rejected(fleet.client(), WrongBox)


def test_oversized_document_is_refused_before_download(fleet: Fleet) -> None:
    generous = FleetRepository(
        fleet.repo.repo_dir, trust=fleet.repo.trust, max_document_bytes=1024 * 1024
    )
    big = b"# " + b"x" * (300 * 1024) + b"\n"
    generous.add_config(
        box_target_path(BOX),
        big,
        boxes=(BOX,),
        config_serial=1,
        targets_signer=fleet.signers.targets,
        now=_now(),
    )
    fleet.publish()

    _assert_rejected(fleet.client(), DocumentTooLarge)
    assert fleet.link.target_requests() == []


def test_link_failures_are_download_errors_and_pin_mismatch_passes_through(fleet: Fleet) -> None:
    def broken(url_path: str, max_bytes: int) -> bytes:
        raise ConnectionResetError("cut")

    def impostor(url_path: str, max_bytes: int) -> bytes:
        raise PinMismatch("peer key not pinned")

    _assert_rejected(fleet.client(fetch=broken), DownloadError)
    _assert_rejected(fleet.client(fetch=impostor), PinMismatch)


def test_answer_beyond_the_bound_is_hostile_not_a_link_failure(fleet: Fleet) -> None:
    def endless(url_path: str, max_bytes: int) -> bytes:
        return b"{" * (max_bytes + 1)

    _assert_rejected(fleet.client(fetch=endless), LengthOrHashMismatchError)


# ---------------------------------------------------------------------------- push bundles


def _no_link(url_path: str, max_bytes: int) -> bytes:
    raise AssertionError(f"a bundle needs no network, yet {url_path} was fetched")


def _edit_bundle(bundle: bytes, edit: Callable[[str, bytes], bytes]) -> bytes:
    """The same tar with each member passed through `edit(name, data)`."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target,
    ):
        for member in source:
            handle = source.extractfile(member)
            assert handle is not None
            data = edit(member.name, handle.read())
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out.getvalue()


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def test_pushed_bundle_is_accepted_without_network(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    bundle = fleet.repo.export_bundle([box_target_path(BOX)])
    client = fleet.client(fetch=_no_link)

    document = client.verify_bundle(bundle)

    assert document is not None
    assert document.document == DOC
    client.record_applied(document)
    assert client.verify_bundle(bundle) is None


def test_bundle_follows_root_rotation(fleet: Fleet) -> None:
    client = fleet.client(fetch=_no_link)  # paired on root v1
    new_root_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    fleet.repo.rotate_root(
        [*fleet.signers.root[:2], *new_root_keys[:2]],
        role_keys={Root.type: [signer.public_key for signer in new_root_keys]},
        now=_now(),
    )
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))

    document = client.verify_bundle(fleet.repo.export_bundle([box_target_path(BOX)]))

    assert document is not None
    assert _trusted_root_version(fleet.tmp_path / f"box-{BOX}") == 2


@pytest.mark.parametrize(
    ("member_suffix", "edit", "error"),
    [
        (f".{BOX}.toml", _flip_last_byte, LengthOrHashMismatchError),
        ("timestamp.json", extended_expiry, UnsignedMetadataError),
    ],
    ids=["document", "timestamp"],
)
def test_tampered_bundle_is_rejected(
    fleet: Fleet,
    member_suffix: str,
    edit: Callable[[bytes], bytes],
    error: type[Exception],
) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    bundle = fleet.repo.export_bundle([box_target_path(BOX)])
    tampered = _edit_bundle(
        bundle, lambda name, data: edit(data) if name.endswith(member_suffix) else data
    )

    _assert_rejected(fleet.client(fetch=_no_link), error, bundle=tampered)


def test_bundle_for_another_box_is_rejected(fleet: Fleet) -> None:
    fleet.add(box_target_path(OTHER_BOX), DOC, serial=1, boxes=(OTHER_BOX,))
    bundle = fleet.repo.export_bundle([box_target_path(OTHER_BOX)])

    _assert_rejected(fleet.client(fetch=_no_link), WrongBox, bundle=bundle)


def test_bundle_lacking_this_box_document_is_rejected(fleet: Fleet) -> None:
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    fleet.add(box_target_path(OTHER_BOX), DOC, serial=2, boxes=(OTHER_BOX,))
    bundle = fleet.repo.export_bundle([box_target_path(OTHER_BOX)])

    _assert_rejected(fleet.client(fetch=_no_link), BadBundle, bundle=bundle)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return out.getvalue()


def _symlink(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    "bundle",
    [
        b"not a tar at all" * 64,
        _tar_with(tarfile.TarInfo("metadata/../../etc/passwd"), b"x"),
        _tar_with(tarfile.TarInfo("elsewhere/timestamp.json"), b"x"),
        _tar_with(_symlink("metadata/timestamp.json")),
        b"\0" * (MAX_BUNDLE_BYTES + 1),
    ],
    ids=["garbage", "traversal", "outside", "symlink", "too-large"],
)
def test_malformed_bundle_is_rejected(fleet: Fleet, bundle: bytes) -> None:
    _assert_rejected(fleet.client(fetch=_no_link), BadBundle, bundle=bundle)


# ---------------------------------------------------------------------------- pure parts


def test_applied_state_round_trips_through_json() -> None:
    state = AppliedState(7, "ab" * 32, "groups/borsele.toml")

    assert AppliedState.from_json(state.to_json()) == state
    assert AppliedState.from_json(AppliedState().to_json()) == AppliedState()


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 2, "config_serial": 0, "sha256": null, "target_path": null}',
        '{"format": 1, "config_serial": true, "sha256": null, "target_path": null}',
        '{"format": 1, "config_serial": 3, "sha256": null, "target_path": null}',
        '{"format": 1, "config_serial": 3, "sha256": "XYZ", "target_path": "boxes/a.toml"}',
        '{"format": 1, "config_serial": 0, "sha256": null, "target_path": null, "x": 1}',
    ],
    ids=["format", "bool-serial", "serial-without-hash", "bad-hash", "unknown-key"],
)
def test_malformed_applied_state_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="applied state"):
        AppliedState.from_json(text)


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ([], "must be an object"),
        ({"boxes": [BOX]}, "config_serial must be an integer"),
        ({"boxes": [BOX], "config_serial": True}, "config_serial must be an integer"),
        ({"boxes": [BOX], "config_serial": 0}, "out of range"),
        ({"config_serial": 1}, "names neither boxes nor groups"),
        ({"boxes": ["../etc"], "config_serial": 1}, "invalid name"),
        ({"boxes": [BOX, BOX], "config_serial": 1}, "twice"),
        ({"boxes": [BOX], "config_serial": 1, "priority": 9}, "unknown custom field"),
    ],
)
def test_malformed_custom_fields_are_refused(custom: object, message: str) -> None:
    with pytest.raises(MalformedCustom, match=message):
        parse_custom("boxes/x.toml", custom)


def _candidate(target_path: str, data: bytes, custom: FleetCustom) -> Candidate:
    info = TargetFile.from_data(target_path, data, ["sha256"])
    return Candidate(target_path, custom, len(data), hashlib.sha256(data).hexdigest(), info)


def test_two_documents_sharing_a_serial_are_refused() -> None:
    mine = _candidate(box_target_path(BOX), b"a", FleetCustom((BOX,), (), 4))
    group = _candidate(group_target_path(GROUP), b"b", FleetCustom((), (GROUP,), 4))

    with pytest.raises(MalformedCustom, match="share config_serial 4"):
        select_candidate([mine, group], BOX, [GROUP])


def test_install_trust_root_needs_an_explicit_repair(fleet: Fleet, tmp_path: Path) -> None:
    box_dir = tmp_path / "pairing"
    root = fleet.repo.trust_root_bytes()
    install_trust_root(box_dir, root)

    with pytest.raises(FileExistsError, match="re-pair"):
        install_trust_root(box_dir, root)
    assert install_trust_root(box_dir, root, replace=True) == 1


def test_install_trust_root_refuses_an_unsigned_root(fleet: Fleet, tmp_path: Path) -> None:
    root = Metadata[Root].from_bytes(fleet.repo.trust_root_bytes())
    root.signatures.clear()

    with pytest.raises(UnsignedMetadataError):
        install_trust_root(tmp_path / "pairing", root.to_bytes())
    assert not (tmp_path / "pairing").exists()


def test_every_refusal_is_a_repository_error() -> None:
    # Callers keep their last good configuration on any RepositoryError.
    for error in (SerialRollback, WrongBox, DocumentTooLarge, MalformedCustom, BadBundle):
        assert issubclass(error, RepositoryError)
