"""Four-eyes decryption (RULES S7, H2O art. 5), as the back office does it: real commands, a file
the real box wrote, real key files.

Two key holders make their keys with `mvb-admin keys holder` (each encrypted with the holder's
passphrase, given on a pipe as a terminal would); the box is configured with both public keys
and `recipient_threshold = 2`; it imports a clip. One holder alone is refused, and the refusal is
in the viewing log; both together decrypt the clip byte for byte, and that is in the log too,
whose chain, signatures and noted head `mvb-admin viewing verify` checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.synthetic import generate_clip
from storage.audit import parse_line, split_lines
from storage.envelope import RecipientKeyError, RecipientPrivateKey
from storage.evidence_format import decode_header
from tests.evidence_helpers import write_box_config

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
PASSPHRASES = {"alice": "alice's long passphrase", "bob": "bob has another one"}
REASON = "request 2031-17: complaint about the stop on 3 May"
HEAD = re.compile(r"viewing log \S+: head (\d+):([0-9a-f]{16}) \(note it on the viewing form\)")


def run(*args: str | Path, passphrases: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run a command with each passphrase on a pipe of its own, named by `--passphrase-fd`."""
    fds: list[int] = []
    argv = [str(arg) for arg in args]
    try:
        for passphrase in passphrases:
            read_end, write_end = os.pipe()
            os.write(write_end, passphrase.encode() + b"\n")
            os.close(write_end)
            fds.append(read_end)
            argv += ["--passphrase-fd", str(read_end)]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, pass_fds=fds
        )
    finally:
        for fd in fds:
            os.close(fd)


@dataclass(frozen=True)
class FourEyes:
    keys: Path
    evidence: Path
    clip: Path
    log: Path

    def key(self, holder: str) -> Path:
        return self.keys / f"{holder}.key"

    def entries(self) -> list[dict[str, object]]:
        lines, _ = split_lines((self.log / "viewing.jsonl").read_bytes())
        return [{"event": e.event, **e.fields} for e in map(parse_line, lines)]


@pytest.fixture(scope="module")
def four_eyes(tmp_path_factory: pytest.TempPathFactory) -> FourEyes:
    keys = tmp_path_factory.mktemp("holders")
    for holder, passphrase in PASSPHRASES.items():
        made = run(
            MVB_ADMIN, "keys", "holder", "--dir", keys, "--name", holder, passphrases=[passphrase]
        )
        assert made.returncode == 0, made.stderr
    root = tmp_path_factory.mktemp("box")
    config = write_box_config(root, keys / "alice.pub")
    text = config.read_text()
    one_key = f'recipient_keys = ["{keys / "alice.pub"}"]'
    assert one_key in text
    config.write_text(
        text.replace(
            one_key,
            f'recipient_keys = ["{keys / "alice.pub"}", "{keys / "bob.pub"}"]\n'
            "recipient_threshold = 2",
        )
    )
    clip = generate_clip(tmp_path_factory.mktemp("camera") / "clip.ts", seconds=4)
    imported = run(MVB, "--config", config, "import", clip, "--camera", "bodycam")
    assert imported.returncode == 0, imported.stderr
    [evidence] = (root / "card").rglob("*.mvbe")
    log = tmp_path_factory.mktemp("office") / "viewing-log"
    made = run(MVB_ADMIN, "viewing", "init", "--log", log)
    assert made.returncode == 0, made.stderr
    return FourEyes(keys, evidence, clip, log)


def test_holder_keys_are_encrypted_with_their_holders_passphrase(four_eyes: FourEyes) -> None:
    for holder, passphrase in PASSPHRASES.items():
        path = four_eyes.key(holder)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(RecipientKeyError, match="passphrase"):
            RecipientPrivateKey.load(path)
        with pytest.raises(RecipientKeyError, match="wrong passphrase"):
            RecipientPrivateKey.load(path, "not " + passphrase)
        assert RecipientPrivateKey.load(path, passphrase).public().key_id.hex()


def test_the_box_wrote_a_file_that_needs_both_holders(four_eyes: FourEyes) -> None:
    header, _ = decode_header(four_eyes.evidence.read_bytes())
    assert (header.version, header.threshold, len(header.recipients)) == (2, 2, 2)


def test_one_holder_alone_is_refused_and_the_attempt_is_logged(
    four_eyes: FourEyes, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = len(four_eyes.entries())
    result = run(*decrypt_args(four_eyes, out, "alice"), passphrases=[PASSPHRASES["alice"]])
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"{four_eyes.evidence}: TooFewShares: file needs 2 of its 2 key ")
    assert not out.exists() or not any(out.iterdir()), "a refused decrypt left files behind"
    [entry] = four_eyes.entries()[before:]
    assert entry["event"] == "viewing.refused"
    assert entry["holders"] == "alice"
    assert entry["reason"] == REASON
    assert entry["file_sha256"] == sha256(four_eyes.evidence)
    assert str(entry["error"]).startswith("TooFewShares: ")


def test_a_holders_key_file_given_twice_is_still_one_holder(
    four_eyes: FourEyes, tmp_path: Path
) -> None:
    result = run(
        *decrypt_args(four_eyes, tmp_path / "out", "alice", "alice"),
        passphrases=[PASSPHRASES["alice"]] * 2,
    )
    assert result.returncode == 1
    assert "TooFewShares" in result.stderr


def test_a_wrong_passphrase_is_refused_and_logged(four_eyes: FourEyes, tmp_path: Path) -> None:
    before = len(four_eyes.entries())
    result = run(
        *decrypt_args(four_eyes, tmp_path / "out", "alice", "bob"),
        passphrases=[PASSPHRASES["alice"], "guessing bob's passphrase"],
    )
    assert result.returncode == 2
    assert "bob.key: X25519 private key: wrong passphrase" in result.stderr
    [entry] = four_eyes.entries()[before:]
    assert (entry["event"], entry["holders"]) == ("viewing.refused", "alice,bob")
    assert "wrong passphrase" in str(entry["error"])


def test_two_holders_together_decrypt_and_the_viewing_is_logged_before_the_footage_is_out(
    four_eyes: FourEyes, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(
        *decrypt_args(four_eyes, out, "alice", "bob"),
        passphrases=[PASSPHRASES["alice"], PASSPHRASES["bob"]],
    )
    assert result.returncode == 0, result.stderr
    file_line, head_line = result.stdout.strip().splitlines()
    assert file_line.startswith(f"{four_eyes.evidence.name} -> ")
    assert file_line.endswith(", sealed")
    [media] = out.glob("*.ts")
    assert media.read_bytes() == four_eyes.clip.read_bytes()
    document = json.loads(media.with_suffix(".json").read_text())
    assert (document["threshold"], document["format_version"]) == (2, 2)
    assert document["key_committed"] is True

    entries = four_eyes.entries()
    entry = entries[-1]
    assert entry["event"] == "viewing.decrypted"
    assert entry["holders"] == "alice,bob"
    assert entry["reason"] == REASON
    assert entry["file_sha256"] == sha256(four_eyes.evidence)
    assert entry["file_id"] == document["file_id"]
    assert entry["threshold"] == 2
    assert entry["key_ids"] == ",".join(document["key_ids"])
    assert entry["out"] == str(out)

    match = HEAD.fullmatch(head_line)
    assert match is not None
    assert int(match[1]) == len(entries) - 1
    noted = f"{match[1]}:{match[2]}"  # what the holders write on the viewing form
    verified = run(MVB_ADMIN, "viewing", "verify", "--log", four_eyes.log, "--head", noted)
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith(f"viewing log OK: {len(entries)} entries")


def test_a_header_forged_after_sealing_is_refused_even_with_both_holders(
    four_eyes: FourEyes, tmp_path: Path
) -> None:
    forged = tmp_path / four_eyes.evidence.name
    data = bytearray(four_eyes.evidence.read_bytes())
    data[48:56] = (int.from_bytes(data[48:56], "big") - 86_400_000).to_bytes(8, "big")  # a day
    forged.write_bytes(bytes(data))
    args = decrypt_args(four_eyes, tmp_path / "out", "alice", "bob")
    args[args.index(str(four_eyes.evidence))] = str(forged)
    result = run(*args, passphrases=[PASSPHRASES["alice"], PASSPHRASES["bob"]])
    assert result.returncode == 1
    assert f"{forged}: BadHeaderMac: header MAC does not verify" in result.stderr
    assert four_eyes.entries()[-1]["event"] == "viewing.refused"


def test_a_viewing_log_cut_short_or_edited_fails_verification(
    four_eyes: FourEyes, tmp_path: Path
) -> None:
    alone = run(*decrypt_args(four_eyes, tmp_path / "out", "bob"), passphrases=[PASSPHRASES["bob"]])
    assert alone.returncode == 1  # one more entry, refused, with the reason in it
    ok = run(MVB_ADMIN, "viewing", "verify", "--log", four_eyes.log)
    assert ok.returncode == 0, ok.stdout
    head = ok.stdout.strip().rsplit("head ", 1)[1]
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("viewing_key.pub.pem",):
        (copy / name).write_bytes((four_eyes.log / name).read_bytes())
    lines = (four_eyes.log / "viewing.jsonl").read_bytes().splitlines(keepends=True)

    (copy / "viewing.jsonl").write_bytes(b"".join(lines[:-1]))  # the last viewing dropped
    cut = run(MVB_ADMIN, "viewing", "verify", "--log", copy, "--head", head)
    assert cut.returncode == 1
    assert "cut short" in cut.stdout

    last = len(lines) - 1
    edited = lines[last].replace(REASON.encode(), REASON.replace("3 May", "4 May").encode())
    assert edited != lines[last]
    (copy / "viewing.jsonl").write_bytes(b"".join([*lines[:last], edited]))
    broken = run(MVB_ADMIN, "viewing", "verify", "--log", copy)
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"viewing log BROKEN: line {last + 1} ")


def decrypt_args(four_eyes: FourEyes, out: Path, *holders: str) -> list[str]:
    args = [str(MVB_ADMIN), "decrypt", str(four_eyes.evidence), "--out", str(out)]
    for holder in holders:
        args += ["--key", str(four_eyes.key(holder))]
    return [*args, "--log", str(four_eyes.log), "--reason", REASON]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
