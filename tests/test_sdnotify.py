"""sd_notify as systemd receives it: real AF_UNIX datagram sockets (a path in tmp_path and an
abstract name) get exactly the expected messages; the environment parsing survives garbage; the
watchdog pinger pings only on ticks where the box says it is healthy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import (
    Notifier,
    NotifyConfigError,
    format_message,
    parse_notify_socket,
    status_line,
    watchdog_interval_s,
    watchdog_interval_s_from_environ,
    watchdog_pinger,
)

WATCHDOG = b"WATCHDOG=1"


def drain(receiver: socket.socket) -> list[bytes]:
    """Every datagram waiting on `receiver`, without waiting for more (AF_UNIX delivery is
    synchronous: a datagram whose send returned is already queued)."""
    received: list[bytes] = []
    while True:
        try:
            received.append(receiver.recv(4096, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return received


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """systemd's side: a datagram socket bound to a file, as /run/systemd/notify is."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        yield receiver, path


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    """systemd's side on an abstract socket (how NOTIFY_SOCKET=@name is bound)."""
    name = f"mvb-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        yield receiver, name


# -- the socket -------------------------------------------------------------------------------


def test_a_path_socket_receives_the_lifecycle_messages(
    path_receiver: tuple[socket.socket, Path],
) -> None:
    receiver, path = path_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    try:
        assert notifier.enabled
        assert notifier.ready(status_line("standby", cameras=2, uplink="wifi"))
        assert notifier.status(status_line("recording", cameras=2, uplink="wifi"))
        assert notifier.watchdog()
        assert notifier.extend_timeout(4.5)
        assert notifier.stopping()
    finally:
        notifier.close()
    assert drain(receiver) == [
        b"READY=1\nSTATUS=standby; 2 cameras; uplink wifi",
        b"STATUS=recording; 2 cameras; uplink wifi",
        WATCHDOG,
        b"EXTEND_TIMEOUT_USEC=4500000",
        b"STOPPING=1",
    ]


def test_an_abstract_socket_receives_ready(abstract_receiver: tuple[socket.socket, str]) -> None:
    receiver, name = abstract_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": f"@{name}"})
    try:
        assert notifier.ready()
        assert notifier.watchdog()
    finally:
        notifier.close()
    assert drain(receiver) == [b"READY=1", WATCHDOG]


def test_the_process_environment_is_the_default(
    path_receiver: tuple[socket.socket, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, path = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier.from_environ()
    try:
        assert notifier.stopping()
    finally:
        notifier.close()
    assert drain(receiver) == [b"STOPPING=1"]


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_without_notify_socket_every_call_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = Notifier.from_environ(environ)
    assert not notifier.enabled
    assert not notifier.ready("standby; 0 cameras; uplink none")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    notifier.close()


def test_a_dead_socket_is_reported_once_and_sending_resumes_when_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
            assert [notifier.watchdog() for _ in range(3)] == [False, False, False]
        failures = [r for r in caplog.records if "send failed" in r.getMessage()]
        assert len(failures) == 1  # a missing supervisor must not flood the journal
        assert "ENOENT" in failures[0].getMessage()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            assert notifier.watchdog()
            assert drain(receiver) == [WATCHDOG]
    finally:
        notifier.close()


# -- the environment ---------------------------------------------------------------------------


def test_notify_socket_addresses() -> None:
    assert parse_notify_socket(None) is None
    assert parse_notify_socket("") is None
    assert parse_notify_socket("/run/systemd/notify") == b"/run/systemd/notify"
    assert parse_notify_socket("@mvb/notify") == b"\0mvb/notify"


@pytest.mark.parametrize(
    "value",
    ["run/systemd/notify", "vsock:2:1234", "@", "/", "/" + "x" * 107, "@" + "y" * 108, "/a\0b"],
)
def test_unusable_notify_sockets_disable_notify_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NotifyConfigError, match="NOTIFY_SOCKET"):
        parse_notify_socket(value)
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert not notifier.ready()
    assert any("sd_notify disabled" in r.getMessage() for r in caplog.records)


def test_the_longest_path_and_abstract_name_fit() -> None:
    assert parse_notify_socket("/" + "x" * 106) is not None  # 107 bytes and the NUL: 108
    assert parse_notify_socket("@" + "y" * 107) is not None  # NUL and 107 bytes: 108


@pytest.mark.parametrize(
    ("environ", "expected_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "3"}, 1.5e-6),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # our parent's watchdog
        ({"WATCHDOG_USEC": "0"}, None),  # systemd's "off"
        ({"WATCHDOG_PID": "4242"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    environ: dict[str, str], expected_s: float | None
) -> None:
    assert watchdog_interval_s(environ, pid=4242) == expected_s


@pytest.mark.parametrize(
    "environ",
    [
        {"WATCHDOG_USEC": "thirty"},
        {"WATCHDOG_USEC": "-30000000"},
        {"WATCHDOG_USEC": "3e7"},
        {"WATCHDOG_USEC": " 30000000"},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "\uff13\uff10"},  # fullwidth "30": isdigit() is True
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "0"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "-1"},
    ],
)
def test_garbage_watchdog_variables_are_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(NotifyConfigError, match="WATCHDOG_"):
        watchdog_interval_s(environ, pid=4242)


def test_the_process_watchdog_defaults_to_this_pid_and_garbage_means_disabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 15.0
    assert watchdog_interval_s_from_environ() == 15.0
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        assert watchdog_interval_s_from_environ() is None
    assert any("watchdog disabled" in r.getMessage() for r in caplog.records)


# -- messages ----------------------------------------------------------------------------------


def test_a_value_cannot_smuggle_in_another_assignment() -> None:
    assert format_message([("STATUS", "ok"), ("READY", "1")]) == b"STATUS=ok\nREADY=1"
    for value in ("ok\nREADY=1", "ok\rREADY=1", "tab\there", "nul\0"):
        with pytest.raises(ValueError, match="control character"):
            format_message([("STATUS", value)])
    for key in ("status", "READY=1", "", "1READY", "RE ADY"):
        with pytest.raises(ValueError, match="not an sd_notify key"):
            format_message([(key, "1")])
    with pytest.raises(ValueError, match="at least one"):
        format_message([])


def test_status_lines_hold_only_mode_counts_and_link_class() -> None:
    assert status_line("recording", cameras=2, uplink="wifi") == "recording; 2 cameras; uplink wifi"
    assert status_line("standby", cameras=1, uplink=None) == "standby; 1 camera; uplink none"
    for mode, uplink in [
        ("recording officer 4711", "wifi"),  # a person's number in the journal: refused
        ("standby", "10.0.0.7"),
        ("standby", "backoffice.example.org"),
        ("Recording", "wifi"),
        ("standby", ""),
    ]:
        with pytest.raises(ValueError, match="one short lowercase word"):
            status_line(mode, cameras=1, uplink=uplink)
    with pytest.raises(ValueError, match="cameras"):
        status_line("standby", cameras=-1, uplink=None)


# -- the watchdog pinger -----------------------------------------------------------------------


class ScriptedHealth:
    """A health predicate that answers from a script, one answer per pinger tick, and records
    what systemd's socket received since the previous tick. After the script it answers False
    and sets `done`, so the test stops the pinger on a known tick, not after a guessed time."""

    def __init__(self, receiver: socket.socket, script: list[bool | Exception]) -> None:
        self.receiver = receiver
        self.script = script
        self.received_before_tick: list[list[bytes]] = []
        self.done = asyncio.Event()

    def __call__(self) -> bool:
        self.received_before_tick.append(drain(self.receiver))
        tick = len(self.received_before_tick) - 1
        if tick >= len(self.script):
            self.done.set()
            return False
        answer = self.script[tick]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def run_pinger(notifier: Notifier, health: ScriptedHealth) -> None:
    task = asyncio.create_task(watchdog_pinger(notifier, 0.001, health))
    await health.done.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_pinger_pings_on_healthy_ticks_only_and_resumes(
    path_receiver: tuple[socket.socket, Path], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, path = path_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    script: list[bool | Exception] = [True, True, False, False, False, True, True, False, True]
    health = ScriptedHealth(receiver, script)
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        await run_pinger(notifier, health)
    notifier.close()
    # What arrived between tick k-1 and tick k is exactly one ping if tick k-1 was healthy.
    assert health.received_before_tick[0] == []
    for tick, answer in enumerate(script, start=1):
        assert health.received_before_tick[tick] == ([WATCHDOG] if answer is True else []), tick
    assert drain(receiver) == []  # nothing after the last (unhealthy) tick
    edges = [r.getMessage() for r in caplog.records if "watchdog pings" in r.getMessage()]
    assert edges == [
        "watchdog pings paused: box unhealthy",
        "watchdog pings resumed",
        "watchdog pings paused: box unhealthy",
        "watchdog pings resumed",
        "watchdog pings paused: box unhealthy",  # the script's end answers False
    ]


async def test_a_health_check_that_raises_counts_as_unhealthy(
    path_receiver: tuple[socket.socket, Path], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, path = path_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    script: list[bool | Exception] = [True, RuntimeError("core state unreadable"), True]
    health = ScriptedHealth(receiver, script)
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        await run_pinger(notifier, health)
    notifier.close()
    assert health.received_before_tick == [[], [WATCHDOG], [], [WATCHDOG]]
    assert any("health check failed" in r.getMessage() for r in caplog.records)


async def test_a_truthy_answer_is_not_healthy(path_receiver: tuple[socket.socket, Path]) -> None:
    """Only True pings: a predicate that returns a non-empty list by mistake is a wedge, not OK."""
    receiver, path = path_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    answers = iter([["not", "a", "bool"], True])
    done = asyncio.Event()

    def healthy() -> bool:
        answer = next(answers, None)
        if answer is None:
            done.set()
            return False
        return answer  # type: ignore[return-value]  # deliberately not a bool

    task = asyncio.create_task(watchdog_pinger(notifier, 0.001, healthy))
    await done.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    notifier.close()
    assert drain(receiver) == [WATCHDOG]


async def test_the_pinger_refuses_a_non_positive_interval() -> None:
    for interval_s in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="interval"):
            await watchdog_pinger(Notifier(None), interval_s, lambda: True)
