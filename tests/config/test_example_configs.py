"""config/examples/box-paired.toml: the complete local file of a paired box cannot fall behind.

The schema is read from the code (LocalConfig's fields and their section classes, FLEET_KEYS,
the pairing files' names), never from a list written here, so a new section or key, a key moved
between fleet and local, or a new file pairing writes fails this test until the example says it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

import config
from config.fleet_schema import FLEET_KEYS, apply_fleet_document, release_pin
from config.fleet_store import PAIRED_ROOT_FILE
from config.local import LocalConfig, load_config
from gateway.pairing_client import (
    ADDRESS_FILE,
    CA_FILE,
    CLIENT_CERT_FILE,
    CLIENT_KEY_FILE,
    FLEET_METADATA_DIR,
    PAIRING_DIR,
    PINS_FILE,
    SERVICE_FILE,
)
from gateway.release_update import RELEASE_KEY_FILE

EXAMPLES = Path(config.__file__).parent / "examples"
PAIRED = EXAMPLES / "box-paired.toml"
KEY_LINE = re.compile(r"^(?P<key>[a-z_0-9]+) = .*#.*\((?P<tag>fleet|local)\)$")
"""A key set in the example, its comment ending with who may set it."""
HEADER = re.compile(r"^\[\[?(?P<section>[a-z_]+)(\.[a-z_]+)?\]\]?")


def schema_sections() -> dict[str, type[Any]]:
    """Every section of the local schema and the dataclass that parses one of its tables, as
    LocalConfig declares them: `box: BoxSection`, `cameras: tuple[CameraSection, ...]`,
    `triggers: dict[str, TriggerSection]`."""
    hints = get_type_hints(LocalConfig)
    sections: dict[str, type[Any]] = {}
    for field in fields(LocalConfig):
        if field.name == "source":
            continue
        hint = hints[field.name]
        args = [arg for arg in get_args(hint) if isinstance(arg, type) and arg is not str]
        sections[field.name] = args[0] if args else hint
    return sections


def example_raw() -> dict[str, Any]:
    return tomllib.loads(PAIRED.read_text(encoding="utf-8"))


def tables_of(section: str, value: Any) -> list[dict[str, Any]]:
    if section == "triggers":
        return list(value.values())
    return value if isinstance(value, list) else [value]


def fleet_documents() -> list[Path]:
    """The example fleet documents: every file of config/examples/ with a [fleet] table."""
    paths = sorted(EXAMPLES.glob("*.toml"))
    return [p for p in paths if "fleet" in tomllib.loads(p.read_text(encoding="utf-8"))]


def test_the_real_loader_accepts_it_as_a_paired_box() -> None:
    """load_config (what `mvb run` and every `mvb` command use) runs the whole-configuration
    checks (check_config); the uplink is on and takes its credentials from pairing."""
    config = load_config(PAIRED)
    assert config.uplink.enabled
    assert not config.uplink.explicit_credentials(str(PAIRED)), "credentials are pairing's"
    assert (config.uplink.host, config.uplink.server_name) == ("", ""), "address is pairing's"
    assert config.box.fleet_groups, "a paired box names the fleet groups it follows"
    assert {link.cost_class for link in config.links} == {"wifi", "cellular"}
    assert {camera.auth_mode for camera in config.cameras} >= {"tls", "digest"}
    assert {"lights", "siren", "crash"} <= {item.source for item in config.inputs}
    assert {"lights", "siren", "crash", "speed"} <= set(config.triggers)
    assert config.web.tls_cert_file, "the page's certificate from the page CA"
    assert config.web.tls_key_file


def test_every_section_of_the_schema_is_in_it() -> None:
    sections = schema_sections()
    assert len(sections) >= 14, "the schema was read from LocalConfig"
    raw = example_raw()
    missing = sorted(set(sections) - set(raw))
    assert not missing, f"box-paired.toml lacks the schema's sections {missing}"


def test_every_key_of_the_schema_is_set_or_explained() -> None:
    """A key the example leaves to pairing (the back office's address and credentials) is named
    in a comment; every other key of every section class is set in at least one table."""
    raw = example_raw()
    text = PAIRED.read_text(encoding="utf-8")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    unexplained = []
    for section, cls in schema_sections().items():
        present = {key for table in tables_of(section, raw.get(section, {})) for key in table}
        for field in fields(cls):
            if field.name not in present and not re.search(rf"\b{field.name}\b", comments):
                unexplained.append(f"{section}.{field.name}")
    assert not unexplained, f"keys neither set nor explained in box-paired.toml: {unexplained}"


def test_each_key_says_truly_whether_a_fleet_document_may_override_it() -> None:
    section = ""
    checked = 0
    for number, line in enumerate(PAIRED.read_text(encoding="utf-8").splitlines(), 1):
        header = HEADER.match(line)
        if header:
            section = header["section"]
            continue
        if not line or line.startswith("#"):
            continue
        key_line = KEY_LINE.match(line)
        assert key_line, f"line {number} sets a key without a (fleet) or (local) tag: {line}"
        fleet = key_line["key"] in FLEET_KEYS.get(section, frozenset())
        expected = "fleet" if fleet else "local"
        assert key_line["tag"] == expected, f"line {number}: {section}.{key_line['key']}"
        checked += 1
    assert checked > 100


def test_it_holds_no_key_material_only_paths() -> None:
    text = PAIRED.read_text(encoding="utf-8")
    assert "-----BEGIN" not in text
    assert "PRIVATE KEY" not in text
    config = load_config(PAIRED)
    key_files = [config.web.tls_key_file, *(c.tls_key_file for c in config.cameras)]
    key_files += [c.credentials_file for c in config.cameras]
    assert all(Path(p).suffix in (".key", ".secret") for p in key_files if p)


def test_it_shows_what_pairing_writes_where_pairing_writes_it() -> None:
    """Pairing writes no key of this file; the comment lists the files it writes in state_dir,
    by the names the pairing code uses."""
    text = PAIRED.read_text(encoding="utf-8")
    pairing_files = (CLIENT_CERT_FILE, CLIENT_KEY_FILE, CA_FILE, PINS_FILE, SERVICE_FILE)
    for name in (*pairing_files, ADDRESS_FILE, RELEASE_KEY_FILE):
        assert f"{PAIRING_DIR}/{name}" in text, name
    assert f"{FLEET_METADATA_DIR}/{PAIRED_ROOT_FILE}" in text


@pytest.mark.parametrize("document", fleet_documents(), ids=lambda p: p.name)
def test_every_example_fleet_document_applies_to_it(document: Path) -> None:
    local = load_config(PAIRED)
    text = document.read_text(encoding="utf-8")
    effective = apply_fleet_document(local, text, document.name)
    raw = tomllib.loads(text)
    for key, value in raw.get("recording", {}).items():
        assert getattr(effective.recording, key) == value, f"recording.{key}"
    for key, value in raw.get("reports", {}).items():
        assert getattr(effective.reports, key) == value, f"reports.{key}"
    assert effective.box == local.box, "a document never touches the box's own facts"
    assert (effective.cameras, effective.inputs, effective.web) == (
        local.cameras,
        local.inputs,
        local.web,
    )
    interfaces = [link.interface for link in effective.links]
    assert interfaces == [link.interface for link in local.links], "links stay the box's"
    release_pin(text, document.name)  # a pinned release, if any, is well formed


def test_there_are_example_fleet_documents() -> None:
    assert len(fleet_documents()) >= 3
