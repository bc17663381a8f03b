"""The systemd units as systemd judges them, and the box as the units confine it.

- `systemd-analyze verify` finds nothing to say about either unit (a broken copy shows that it
  would); `systemd-analyze security --offline=yes` rates the box at most 3.0;
- the box's unit has the directives issue 7 asks for, with paths that match the configuration's
  defaults, and an ExecStart= the `mvb` command line accepts;
- sysusers and tmpfiles create the user, group and directories in a scratch root;
- the kernel-level parts of the confinement that a process can apply to itself without systemd
  as PID 1 (no capabilities, no_new_privs, memory-deny-write-execute) leave the box recording and
  uploading to the back office, and SO_BINDTODEVICE working without CAP_NET_RAW.

These run the real tools. Without `systemd-analyze` they fail and say to install Debian's systemd.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backoffice.cli import _parser as admin_parser
from backoffice.fleet_repo import Lifetimes
from config.local_sections import BoxSection
from demo.synthetic import generate_clip
from gateway.cli import _parser as box_parser
from gateway.release_update import RELEASE_INBOX_DIR
from gateway.release_verdict import DEFAULT_VERDICTS_DIR
from gateway.sdnotify import watchdog_interval_s
from tests.backoffice.test_tuspy_interop import read_line
from tests.evidence_helpers import write_box_config
from tests.test_run_uplink import SERVING, box_sections
from tests.tls_helpers import TestPki

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
BOX_UNIT = UNITS / "mvb.service"
BACKOFFICE_UNIT = UNITS / "mvb-backoffice.service"
PUBLISH_UNIT = UNITS / "mvb-fleet-publish.service"
PUBLISH_TIMER = UNITS / "mvb-fleet-publish.timer"
RELEASE_BOOT_UNIT = UNITS / "mvb-release-boot.service"
RELEASE_SWITCH_UNIT = UNITS / "mvb-release-switch.service"
RELEASE_SWITCH_PATH = UNITS / "mvb-release-switch.path"
RELEASE_INSTALL_UNIT = UNITS / "mvb-release-install.service"
RELEASE_INSTALL_PATH = UNITS / "mvb-release-install.path"
MAX_EXPOSURE = 3.0
SHUTDOWN_GRACE_S = 20  # the lifecycle's default shutdown_grace_s; TimeoutStopSec= must exceed it
MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
# Subprocesses import the checkout under test, whatever the venv's editable install maps.
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STEP_TIMEOUT_S = 30.0

Unit = dict[str, list[tuple[str, str]]]


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, (
        f"{name} is missing: install Debian's systemd package (apt-get install systemd); "
        "these tests run the real tool"
    )
    return path


def systemd_analyze() -> str:
    return systemd_tool("systemd-analyze")


def read_unit(path: Path) -> Unit:
    """Sections of a unit file as ordered (key, value) lists: keys repeat (SystemCallFilter=,
    LoadCredential=), so configparser's one-value-per-key model does not fit."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):  # continued on the next line
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def single(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def words(unit: Unit, section: str, key: str) -> list[str]:
    return [word for value in values(unit, section, key) for word in value.split()]


def environment(unit: Unit) -> dict[str, str]:
    """The variables the unit's Environment= lines set (one NAME=value per line here)."""
    return dict(line.partition("=")[::2] for line in values(unit, "Service", "Environment"))


def verifiable_copy(unit_path: Path, directory: Path) -> Path:
    """The unit with its ExecStart= program replaced by an executable stub of the same name.

    `systemd-analyze verify` refuses a unit whose program does not exist on this machine
    ("Command ... is not executable"), and the committed units name where the program is installed
    on the box (/opt/mvb/.venv/bin/...). Only that path changes; every other byte is the unit's.
    """
    program = shlex.split(single(read_unit(unit_path), "Service", "ExecStart"))[0]
    stub = directory / "bin" / Path(program).name
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = unit_path.read_text()
    assert text.count(f"ExecStart={program} ") == 1
    copy = directory / unit_path.name
    copy.write_text(text.replace(f"ExecStart={program} ", f"ExecStart={stub} "))
    return copy


def verify_complaints(unit: Path) -> list[str]:
    """What `systemd-analyze verify` says about `unit` (lines about other units on this machine
    are not ours to fix); a non-zero exit is a complaint too."""
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    lines = (done.stdout + done.stderr).splitlines()
    complaints = [line for line in lines if unit.name in line]
    if done.returncode != 0:
        complaints.append(f"exit {done.returncode}: {done.stderr.strip()}")
    return complaints


def exposure(unit: Path) -> float:
    """The "Overall exposure level" of `systemd-analyze security --offline=yes` (0 to 10)."""
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", done.stdout
    )
    assert match is not None, done.stdout + done.stderr
    return float(match[1])


# -- systemd-analyze ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        BOX_UNIT,
        BACKOFFICE_UNIT,
        PUBLISH_UNIT,
        RELEASE_BOOT_UNIT,
        RELEASE_SWITCH_UNIT,
        RELEASE_INSTALL_UNIT,
    ],
    ids=lambda p: p.name,
)
def test_verify_has_nothing_to_say_about_the_unit(unit: Path, tmp_path: Path) -> None:
    assert verify_complaints(verifiable_copy(unit, tmp_path)) == []


def test_verify_has_nothing_to_say_about_the_switch_path_unit(tmp_path: Path) -> None:
    """The path unit beside (a verifiable copy of) the service it starts."""
    verifiable_copy(RELEASE_SWITCH_UNIT, tmp_path)
    path_unit = tmp_path / RELEASE_SWITCH_PATH.name
    path_unit.write_text(RELEASE_SWITCH_PATH.read_text())
    assert single(read_unit(path_unit), "Path", "Unit") == RELEASE_SWITCH_UNIT.name
    assert single(read_unit(path_unit), "Path", "PathChanged") == "/opt/mvb/switch.json"
    assert verify_complaints(path_unit) == []


def test_verify_has_nothing_to_say_about_the_install_path_unit(tmp_path: Path) -> None:
    """Root's installer starts when the box's inbox is not empty (docs/releases.md 7.6)."""
    verifiable_copy(RELEASE_INSTALL_UNIT, tmp_path)
    path_unit = tmp_path / RELEASE_INSTALL_PATH.name
    path_unit.write_text(RELEASE_INSTALL_PATH.read_text())
    assert single(read_unit(path_unit), "Path", "Unit") == RELEASE_INSTALL_UNIT.name
    inbox = single(read_unit(path_unit), "Path", "DirectoryNotEmpty")
    assert inbox == "/var/lib/mvb/release-inbox"
    assert verify_complaints(path_unit) == []


def test_verify_would_report_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: verify exits 0 on a bad value, so its output is what counts."""
    copy = verifiable_copy(BOX_UNIT, tmp_path)
    copy.write_text(copy.read_text().replace("Restart=always", "Restart=sometimes"))
    complaints = verify_complaints(copy)
    assert len(complaints) == 1
    assert "restart specifier" in complaints[0]


def test_the_box_unit_exposure_is_at_most_3() -> None:
    score = exposure(BOX_UNIT)
    assert score <= MAX_EXPOSURE, f"mvb.service exposure {score} > {MAX_EXPOSURE}"


@pytest.mark.parametrize(
    "unit", [RELEASE_BOOT_UNIT, RELEASE_SWITCH_UNIT, RELEASE_INSTALL_UNIT], ids=lambda p: p.name
)
def test_the_release_switch_units_exposure_is_at_most_2(unit: Path) -> None:
    """They run as root (the box may never switch its own code): confined more than the box."""
    score = exposure(unit)
    assert score <= 2.0, f"{unit.name} exposure {score} > 2.0"


def test_the_back_office_unit_exposure_is_at_most_3() -> None:
    score = exposure(BACKOFFICE_UNIT)
    assert score <= MAX_EXPOSURE, f"mvb-backoffice.service exposure {score} > {MAX_EXPOSURE}"


def test_the_publish_job_has_no_network_and_an_exposure_of_at_most_1() -> None:
    unit = read_unit(PUBLISH_UNIT)
    assert single(unit, "Service", "PrivateNetwork") == "yes"
    score = exposure(PUBLISH_UNIT)
    assert score <= 1.0, f"mvb-fleet-publish.service exposure {score} > 1.0"


def test_verify_has_nothing_to_say_about_the_publish_timer(tmp_path: Path) -> None:
    verifiable_copy(PUBLISH_UNIT, tmp_path)  # the timer's service, beside it
    timer = tmp_path / PUBLISH_TIMER.name
    timer.write_text(PUBLISH_TIMER.read_text())
    assert verify_complaints(timer) == []


def test_the_timer_publishes_well_within_the_timestamp_lifetime() -> None:
    """Boxes refuse a timestamp older than its lifetime (a freeze): the longest gap between two
    runs, delay included, leaves room for two runs to fail in a row."""
    timer = read_unit(PUBLISH_TIMER)
    done = subprocess.run(
        [systemd_analyze(), "calendar", "--iterations=9", single(timer, "Timer", "OnCalendar")],
        capture_output=True,
        text=True,
        check=True,
    )
    moments = [
        datetime.datetime.strptime(match[1], "%a %Y-%m-%d %H:%M:%S %Z")
        for match in re.finditer(r"(?:Next elapse|Iter\. #\d+): (.+)", done.stdout)
    ]
    assert len(moments) == 9, done.stdout
    longest = max(later - earlier for earlier, later in itertools.pairwise(moments))
    delay = datetime.timedelta(minutes=int(single(timer, "Timer", "RandomizedDelaySec")[:-3]))
    assert single(timer, "Timer", "Persistent") == "true"
    assert (longest + delay) * 3 <= Lifetimes().timestamp


def test_the_publish_exec_start_is_a_command_line_mvb_admin_accepts() -> None:
    unit = read_unit(PUBLISH_UNIT)
    line = single(unit, "Service", "ExecStart")
    expanded = line.replace("%d", "/run/credentials/mvb-fleet-publish.service")
    args = admin_parser().parse_args(shlex.split(expanded)[1:])
    assert (args.command, args.config_command) == ("config", "publish")
    credentials = {value.split(":")[0] for value in values(unit, "Service", "LoadCredential")}
    assert {args.snapshot_key.name, args.timestamp_key.name} == credentials
    state = Path("/var/lib") / single(unit, "Service", "StateDirectory")
    assert args.repo.parent == state
    assert args.trust.parent == state


# -- what the box unit must say ------------------------------------------------------------------


@pytest.fixture(scope="module")
def box_unit() -> Unit:
    return read_unit(BOX_UNIT)


def test_supervision_directives(box_unit: Unit) -> None:
    service = dict(box_unit["Service"])
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "always"
    assert service["RestartSec"] == "2"
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= SHUTDOWN_GRACE_S + 5
    assert dict(box_unit["Unit"])["StartLimitIntervalSec"] == "0"  # never give up restarting
    watchdog_s = int(service["WatchdogSec"])
    assert watchdog_s == 30
    environ = {"WATCHDOG_USEC": str(watchdog_s * 1_000_000)}  # what systemd hands the box
    assert watchdog_interval_s(environ, pid=1) == watchdog_s / 2


def test_the_box_runs_with_two_malloc_arenas(box_unit: Unit) -> None:
    """Issue 18 item 2: one arena per thread in use kept free memory per camera thread; two
    measured less (docs/benchmarks.md). The confined box below runs with this environment."""
    assert environment(box_unit)["MALLOC_ARENA_MAX"] == "2"
    assert "MALLOC_TRIM_THRESHOLD_" not in environment(box_unit)  # measured: no help


def test_exec_start_is_a_command_line_mvb_accepts(box_unit: Unit) -> None:
    argv = shlex.split(single(box_unit, "Service", "ExecStart"))
    assert argv[0] == "/opt/mvb/current/bin/mvb"  # through the A/B switch's link
    args = box_parser().parse_args(argv[1:])
    assert (args.command, args.config) == ("run", Path("/etc/mvb/box.toml"))
    assert values(box_unit, "Unit", "Wants") == [RELEASE_BOOT_UNIT.name]
    assert RELEASE_BOOT_UNIT.name in words(box_unit, "Unit", "After")


def test_the_switch_units_run_the_good_release_s_switcher_on_the_box_s_root() -> None:
    """Never the release on trial (a broken one could not roll itself back); the root the
    box's ExecStart= links through; the API port the box listens on by default."""
    api_port = tomllib.loads((REPO / "config" / "defaults" / "box.toml").read_text())["api"]["port"]
    for unit_path, command in ((RELEASE_BOOT_UNIT, "boot"), (RELEASE_SWITCH_UNIT, "resume")):
        unit = read_unit(unit_path)
        argv = shlex.split(single(unit, "Service", "ExecStart"))
        assert argv[0] == "/opt/mvb/good/bin/mvb"
        args = box_parser().parse_args(argv[1:])
        assert (args.command, args.release_command, args.root) == (
            "release",
            command,
            Path("/opt/mvb"),
        )
        assert single(unit, "Service", "Type") == "oneshot"
        assert words(unit, "Service", "ReadWritePaths") == ["/opt/mvb"]
    boot = read_unit(RELEASE_BOOT_UNIT)
    assert single(boot, "Unit", "Before") == BOX_UNIT.name
    switch = read_unit(RELEASE_SWITCH_UNIT)
    assert single(switch, "Unit", "After") == BOX_UNIT.name
    resume = box_parser().parse_args(shlex.split(single(switch, "Service", "ExecStart"))[1:])
    assert resume.api_url == f"http://127.0.0.1:{api_port}"


def test_the_install_unit_runs_the_good_release_s_installer_on_the_box_s_inbox() -> None:
    """Root's installer (docs/releases.md 7.6): the good release's, on the inbox the box's
    service writes (its state directory's `release-inbox`), offline, writing only the release
    root, the inbox and its verdicts where the box's updater reads them."""
    state_dir = tomllib.loads((REPO / "config" / "defaults" / "box.toml").read_text())["box"][
        "state_dir"
    ]
    unit = read_unit(RELEASE_INSTALL_UNIT)
    argv = shlex.split(single(unit, "Service", "ExecStart"))
    assert argv[0] == "/opt/mvb/good/bin/mvb"
    args = box_parser().parse_args(argv[1:])
    assert (args.command, args.release_command, args.root) == (
        "release",
        "install-inbox",
        Path("/opt/mvb"),
    )
    assert args.inbox == Path(state_dir) / RELEASE_INBOX_DIR
    assert single(unit, "Service", "Type") == "oneshot"
    assert args.verdicts == DEFAULT_VERDICTS_DIR  # where gateway/run.py's updater reads them
    assert words(unit, "Service", "ReadWritePaths") == [
        "/opt/mvb",
        str(args.inbox),
        str(args.verdicts),
    ]
    assert single(unit, "Service", "PrivateNetwork") == "yes"
    assert words(unit, "Service", "CapabilityBoundingSet") == ["CAP_DAC_OVERRIDE"]
    assert values(unit, "Service", "User") == []  # root: the mvb user may not write /opt/mvb


def test_hardening_directives(box_unit: Unit) -> None:
    service = dict(box_unit["Service"])
    assert service["User"] == "mvb"
    assert service["Group"] == "mvb"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["MemoryDenyWriteExecute"] == "yes"
    assert service["DevicePolicy"] == "closed"
    assert service["UMask"] == "0077"
    assert service["CapabilityBoundingSet"] == ""
    assert service["AmbientCapabilities"] == ""
    assert set(words(box_unit, "Service", "RestrictAddressFamilies")) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    assert words(box_unit, "Service", "SystemCallFilter") == [
        "@system-service",
        "~@privileged",
        "@resources",
    ]


def test_the_writable_paths_are_the_configured_state_and_card(box_unit: Unit) -> None:
    """The defaults in config/defaults/box.toml and config.local must be what the unit opens."""
    defaults = tomllib.loads((REPO / "config" / "defaults" / "box.toml").read_text())["box"]
    built_in = BoxSection()
    assert (defaults["state_dir"], defaults["card_dir"]) == (built_in.state_dir, built_in.card_dir)
    writable = [path.removeprefix("-") for path in words(box_unit, "Service", "ReadWritePaths")]
    assert writable == [built_in.state_dir, built_in.card_dir]
    no_exec = [path.removeprefix("-") for path in words(box_unit, "Service", "NoExecPaths")]
    assert no_exec == writable


def test_the_back_office_exec_start_is_a_command_line_mvb_admin_accepts() -> None:
    unit = read_unit(BACKOFFICE_UNIT)
    line = single(unit, "Service", "ExecStart")
    expanded = line.replace("%d", "/run/credentials/mvb-backoffice.service")
    argv = [word for word in shlex.split(expanded) if word != "$MVB_BACKOFFICE_OPTS"]
    args = admin_parser().parse_args(argv[1:])
    assert args.command == "serve"
    credentials = {value.split(":")[0] for value in values(unit, "Service", "LoadCredential")}
    assert {args.cert.name, args.key.name, args.client_ca.name} == credentials


def test_the_gpio_group_is_the_same_in_unit_sysusers_and_udev(box_unit: Unit) -> None:
    """The box reaches /dev/gpiochip* only if all three files name one group."""
    assert single(box_unit, "Service", "SupplementaryGroups") == "gpio"
    sysusers = (UNITS / "mvb.sysusers.conf").read_text().splitlines()
    assert "g gpio -" in sysusers
    assert "m mvb gpio" in sysusers
    rules = [line for line in (UNITS / "60-mvb-gpio.rules").read_text().splitlines() if line]
    assert [line for line in rules if not line.startswith("#")] == [
        'SUBSYSTEM=="gpio", KERNEL=="gpiochip[0-9]*", GROUP="gpio", MODE="0660"'
    ]
    assert words(box_unit, "Service", "DeviceAllow") == ["char-gpiochip", "rw"]


# -- sysusers and tmpfiles -----------------------------------------------------------------------


def account(root: Path, database: str, name: str) -> list[str]:
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} not in {database}")


@pytest.mark.root
def test_sysusers_and_tmpfiles_make_the_user_and_directories(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "tmpfiles chowns into the scratch root: the suite runs as root"
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, conf in (
        ("systemd-sysusers", UNITS / "mvb.sysusers.conf"),
        ("systemd-tmpfiles", UNITS / "mvb.tmpfiles.conf"),
    ):
        args = ["--create"] if tool == "systemd-tmpfiles" else []
        done = subprocess.run(
            [systemd_tool(tool), f"--root={root}", *args, str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    user = account(root, "passwd", "mvb")
    assert user[5:] == ["/var/lib/mvb", "/usr/sbin/nologin"]
    assert "mvb" in account(root, "group", "gpio")[3].split(",")
    mvb_gid = int(account(root, "group", "mvb")[2])
    state = (root / "var" / "lib" / "mvb").stat()
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (
        0o700,
        int(user[2]),
        mvb_gid,
    )
    etc = (root / "etc" / "mvb").stat()
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid) == (0o750, 0, mvb_gid)
    verdicts = (root / DEFAULT_VERDICTS_DIR.relative_to("/")).stat()  # root's, the box reads
    assert (stat.S_IMODE(verdicts.st_mode), verdicts.st_uid, verdicts.st_gid) == (0o755, 0, 0)
    assert not (root / "media").exists()  # the card's mount point is the mount unit's to make


@pytest.mark.root
def test_the_back_office_user_has_no_login(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "sysusers writes the scratch root's account files as root"
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = UNITS / "mvb-backoffice.sysusers.conf"
    subprocess.run([systemd_tool("systemd-sysusers"), f"--root={root}", str(conf)], check=True)
    assert account(root, "passwd", "mvb-backoffice")[5:] == [
        "/var/lib/mvb-backoffice",
        "/usr/sbin/nologin",
    ]


# -- the confinement's kernel parts, applied without systemd --------------------------------------

# PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3): what MemoryDenyWriteExecute=yes sets
# on systemd >= 254 (older ones install an equivalent seccomp filter). Kept across execve.
MDWE_THEN_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed (errno {ctypes.get_errno()}): the kernel needs Linux >= 6.3")
os.execv(sys.argv[1], sys.argv[1:])
"""


def confined(argv: list[str | Path]) -> list[str]:
    """`argv` with what the units set that a process can apply to itself: no capabilities at all
    (CapabilityBoundingSet=), NoNewPrivileges=yes and MemoryDenyWriteExecute=yes."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is missing"
    return [
        setpriv,
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--no-new-privs",
        sys.executable,
        "-c",
        MDWE_THEN_EXEC,
        *map(str, argv),
    ]


PROBE = """
import mmap, re
status = open("/proc/self/status").read()
print("CapEff", re.search(r"CapEff:\\s*(\\w+)", status)[1])
print("NoNewPrivs", re.search(r"NoNewPrivs:\\s*(\\d)", status)[1])
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx allowed")
except PermissionError:
    print("wx refused")
"""


def test_the_confinement_is_real() -> None:
    """The control for the tests below: inside `confined`, no capability, no new privileges,
    and no writable executable memory."""
    done = subprocess.run(
        confined([sys.executable, "-c", PROBE]), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [
        "CapEff 0000000000000000",
        "NoNewPrivs 1",
        "wx refused",
    ]


BIND_TO_DEVICE = """
import socket
from transport.binding import LinkBinding, bound_socket
sock = bound_socket(LinkBinding(interface="lo"), socket.AF_INET, socket.SOCK_STREAM)
print(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\\0").decode())
try:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"")
    print("rebound")
except PermissionError:
    print("rebinding needs CAP_NET_RAW")
"""


def test_binding_an_uplink_socket_to_its_interface_needs_no_capability() -> None:
    """Why mvb.service grants no CAP_NET_RAW: since Linux 5.7 SO_BINDTODEVICE on a socket not yet
    bound to a device is unprivileged (transport/binding.py binds each new socket once). Changing
    an existing binding still needs the capability, which shows the process really has none."""
    done = subprocess.run(
        confined([sys.executable, "-c", BIND_TO_DEVICE]),
        capture_output=True,
        text=True,
        check=False,
        env=CHECKOUT_ENV,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["lo", "rebinding needs CAP_NET_RAW"]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
        env=CHECKOUT_ENV,
    )


def box_status(config: Path) -> dict[str, object]:
    port = tomllib.loads(config.read_text())["api"]["port"]
    url = f"http://127.0.0.1:{port}/api/status"
    with urllib.request.urlopen(url, timeout=10) as response:
        document: dict[str, object] = json.loads(response.read())
        return document


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` (a bound, not a timed assertion)."""
    deadline = time.monotonic() + STEP_TIMEOUT_S * 2
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def api_answers(config: Path) -> bool:
    return cli(config, "status").returncode == 0


def uploaded_and_card_empty(config: Path, files: int) -> bool:
    document = box_status(config)
    storage, uplink = document["storage"], document["uplink"]
    assert isinstance(storage, dict)
    assert isinstance(uplink, dict)
    return bool(uplink["uploaded_files"] == files and storage["files_on_card"] == 0)


@pytest.fixture
def confined_back_office(pki: TestPki, tmp_path: Path) -> Iterator[int]:
    """`mvb-admin serve` confined like mvb-backoffice.service; yields its HTTPS port."""
    serve: list[str | Path] = [
        MVB_ADMIN, "serve", "--dir", tmp_path / "store",
        "--cert", pki.server_cert, "--key", pki.server_key,
        "--client-ca", pki.ca_cert, "--port", "0", "--reserve-bytes", "0",
    ]  # fmt: skip
    with subprocess.Popen(
        confined(serve), stdout=subprocess.PIPE, text=True, env=CHECKOUT_ENV
    ) as process:
        try:
            match = SERVING.fullmatch(read_line(process, STEP_TIMEOUT_S).strip())
            assert match is not None, "the confined back office did not start"
            yield int(match["port"])
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(STEP_TIMEOUT_S) == 0


@pytest.mark.slow
def test_the_confined_box_records_encrypts_and_uploads(
    tmp_path: Path, pki: TestPki, confined_back_office: int
) -> None:
    """PyAV encoding (synthetic camera) and decoding (replay camera), the evidence encryption,
    pinned mutual TLS and tus, all under MemoryDenyWriteExecute with no capability and with the
    unit's environment: the libraries need no writable executable memory and nothing
    privileged."""
    keys = tmp_path / "recording-keys"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True, env=CHECKOUT_ENV
    )
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    sections = box_sections(clip, pki, confined_back_office)
    synthetic = '\n[[cameras]]\nname = "bodycam"\nkind = "synthetic"\nfps = 10\n'
    config = write_box_config(
        tmp_path / "box", keys / "recording.pub", storage_lines=sections + synthetic
    )
    unit_env = environment(read_unit(BOX_UNIT))  # as systemd would start it (MALLOC_ARENA_MAX)
    with subprocess.Popen(
        confined([MVB, "--config", config, "run"]), env={**CHECKOUT_ENV, **unit_env}, text=True
    ) as box:
        try:
            wait_until(lambda: api_answers(config), "the confined box's local API")
            assert cli(config, "record", "start").returncode == 0
            wait_until(lambda: box_status(config)["state"] == "recording", "the recording")
            assert cli(config, "record", "stop").returncode == 0
            wait_until(lambda: box_status(config)["state"] == "standby", "post-record to end")
            wait_until(lambda: uploaded_and_card_empty(config, 2), "both cameras' uploads")
            box.send_signal(signal.SIGTERM)
            assert box.wait(STEP_TIMEOUT_S) == 0
        finally:
            if box.poll() is None:
                box.kill()
                box.wait(STEP_TIMEOUT_S)
    assert len(list((tmp_path / "store" / "complete").glob("*.mvbe"))) == 2
