"""The container tier's two channels to the agent against the real engine.

The ``socket`` channel (``toolgym.server.sandbox.sockchan``): runs, batches and big replies
over it, a container killed mid-call, an agent that never connects, the one-connection rule
seen from inside the sandbox, the read-only mount, and no socket file or directory left
behind. The ``attach`` channel keeps working when asked for by name. The other container-tier
suites run with the default channel, which is ``socket`` on a host whose engine is local.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_checks import check_output_caps, check_run_many, run
from server_kit import docker

from toolgym.errors import SandboxError
from toolgym.server.sandbox.base import Sandbox, SandboxSpec
from toolgym.server.sandbox.docker import DockerBackend
from toolgym.server.sandbox.sockchan import CONTAINER_SOCKET, engine_on_this_host

pytestmark = pytest.mark.docker


def labels() -> dict[str, str]:
    return {"toolgym.episode": f"test-{uuid.uuid4().hex[:8]}", "toolgym.owner": "tester"}


def short_dir() -> Path:
    """A fresh directory with a short path (pytest's are long for a unix socket's 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="tgch-"))


@pytest.fixture(scope="module")
def channel_dir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def socket_backend(docker_backend: Any, session_label: str, sandbox_image: str,
                   channel_dir: Path) -> Iterator[DockerBackend]:
    """A socket-channel backend of its own instance (so its directory can be checked alone)."""
    instance = f"{session_label}-sock"
    backend = DockerBackend(image=sandbox_image, instance=instance, channel="socket", channel_dir=channel_dir)
    yield backend
    backend.remove_owned(instance)
    backend.close()


@pytest.fixture(scope="module")
def box(socket_backend: DockerBackend) -> Iterator[Sandbox]:
    sandbox = socket_backend.create(SandboxSpec(labels=labels()))
    yield sandbox
    sandbox.close()


def sockets_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if not p.is_dir()]


def test_the_default_channel_is_socket_where_the_engine_is_local(docker_backend: Any) -> None:
    assert docker_backend.channel == ("socket" if engine_on_this_host() else "attach")


def test_runs_batches_and_big_replies_over_the_socket(box: Sandbox, channel_dir: Path) -> None:
    assert box.hello["hello"] == "toolgym-agent" and box.hello["uid"] == 65534
    box.ping()
    assert run(box, "print(6 * 7)").stdout == "42\n"
    check_run_many(box)
    check_output_caps(box)
    big = run(box, "import sys\nsys.stdout.write('y' * (6 << 20))", max_output_bytes=8 << 20)
    assert big.status == "ok" and big.stdout == "y" * (6 << 20) and not big.stdout_truncated
    assert sockets_in(channel_dir) == [], "the listener is unlinked once the agent connected"


def test_the_socket_is_the_one_read_only_mount(box: Sandbox) -> None:
    with docker() as client:
        info = client.api.inspect_container(box.id)
    assert not info["HostConfig"].get("Binds")
    assert [(m["Type"], m["Destination"], m["RW"]) for m in info["Mounts"]] == [("bind", CONTAINER_SOCKET, False)]
    seen = run(box, (
        "import os\n"
        "for line in open('/proc/self/mountinfo'):\n"
        f"    if line.split()[4] == {CONTAINER_SOCKET!r}:\n"
        "        print('opts', line.split()[5])\n"
        "for path in (%r, os.path.dirname(%r) + '/new'):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    ) % (CONTAINER_SOCKET, CONTAINER_SOCKET))
    assert seen.status == "ok", seen
    opts = [line.split()[1] for line in seen.stdout.splitlines() if line.startswith("opts")]
    assert len(opts) == 1 and "ro" in opts[0].split(","), seen.stdout
    assert "wrote" not in seen.stdout and seen.stdout.count("refused") == 2, seen.stdout


def test_a_second_connect_from_inside_is_refused(box: Sandbox) -> None:
    attempt = run(box, (
        "import socket\n"
        "for _ in range(3):\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        f"        s.connect({CONTAINER_SOCKET!r})\n"
        "        print('connected')\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    ))
    assert attempt.status == "ok", attempt
    assert attempt.stdout == "refused ConnectionRefusedError\n" * 3, attempt.stdout
    assert run(box, "print('still served')").stdout == "still served\n"


def test_a_container_killed_mid_call_is_a_sandbox_error(socket_backend: DockerBackend) -> None:
    sandbox = socket_backend.create(SandboxSpec(labels=labels()))
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            run(sandbox, "import time\ntime.sleep(20)", timeout_s=30)
            outcome.append(None)
        except BaseException as exc:  # collected for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=call)
    try:
        worker.start()
        time.sleep(1.0)
        started = time.monotonic()
        with docker() as client:
            client.api.kill(sandbox.id)
        worker.join(15)
        assert not worker.is_alive() and time.monotonic() - started < 10
        assert len(outcome) == 1 and isinstance(outcome[0], SandboxError), outcome
        with pytest.raises(SandboxError):
            run(sandbox, "print('never')")
    finally:
        sandbox.close()


def test_an_agent_that_never_connects_fails_naming_the_setting(session_label: str, sandbox_image: str,
                                                               tmp_dir: Path) -> None:
    instance = f"{session_label}-late"
    backend = DockerBackend(image=sandbox_image, instance=instance, channel="socket", channel_dir=tmp_dir,
                            start_timeout_s=0.05)
    try:
        with pytest.raises(SandboxError) as caught:
            backend.create(SandboxSpec(labels=labels()))
        message = str(caught.value)
        assert "did not connect" in message and "sandbox_start_timeout_s" in message, message
        assert "sandbox_channel=socket" in message and "--sandbox-channel attach" in message, message
        with docker() as client:
            left = client.api.containers(all=True, filters={"label": f"toolgym.instance={instance}"})
        assert left == [], "the container is removed with the failure"
        assert sockets_in(tmp_dir) == []
    finally:
        backend.remove_owned(instance)
        backend.close()


def test_an_agent_refused_by_its_socket_fails_at_once_with_its_stderr(session_label: str, sandbox_image: str,
                                                                      tmp_dir: Path) -> None:
    """A socket the sandbox user may not open (as on a shared volume with the wrong owner or
    mode): the agent's connect fails, it exits, and the create fails without waiting for the
    start timeout, with the agent's traceback (from the stderr-only attach) in the message."""
    instance = f"{session_label}-deny"
    backend = DockerBackend(image=sandbox_image, instance=instance, channel="socket", channel_dir=tmp_dir,
                            start_timeout_s=20)
    stop = threading.Event()

    def deny() -> None:  # keeps every socket of the instance at 0600 (root's) until the create is over
        while not stop.is_set():
            for path in sockets_in(tmp_dir):
                try:
                    path.chmod(0o600)
                except OSError:
                    pass
            time.sleep(0.001)

    chmodder = threading.Thread(target=deny)
    chmodder.start()
    started = time.monotonic()
    try:
        with pytest.raises(SandboxError) as caught:
            backend.create(SandboxSpec(labels=labels()))
    finally:
        stop.set()
        chmodder.join()
        backend.remove_owned(instance)
        backend.close()
    message = str(caught.value)
    assert time.monotonic() - started < 10, "a container that exited is noticed before the timeout"
    assert "exited before its agent connected" in message and "PermissionError" in message, message
    assert "sandbox_channel=socket" in message


def test_socket_dirs_are_removed_on_close_and_swept_by_remove_owned(session_label: str, sandbox_image: str,
                                                                    tmp_dir: Path) -> None:
    instance = f"{session_label}-sweep"
    backend = DockerBackend(image=sandbox_image, instance=instance, channel="socket", channel_dir=tmp_dir)
    mine = next(iter(tmp_dir.iterdir()), None)
    assert mine is None, "nothing is made before the first sandbox"
    sandbox = backend.create(SandboxSpec(labels=labels()))
    sandbox.close()
    (mine,) = tmp_dir.iterdir()
    assert mine.stat().st_mode & 0o777 == 0o700 and tmp_dir.stat().st_mode & 0o077 == 0
    (mine / "crashed-mid-create.sock").touch()  # what a server killed during a create leaves
    assert backend.remove_owned(instance) == 0
    assert not mine.exists(), "the start-up sweep (remove_owned) takes the instance's leftover sockets"
    backend.create(SandboxSpec(labels=labels())).close()
    assert mine.exists()
    backend.close()
    assert not mine.exists(), "close removes the instance's directory"


def test_the_attach_channel_still_works_by_name(session_label: str, sandbox_image: str) -> None:
    instance = f"{session_label}-attach"
    backend = DockerBackend(image=sandbox_image, instance=instance, channel="attach")
    try:
        sandbox = backend.create(SandboxSpec(labels=labels()))
        try:
            assert run(sandbox, "print('over attach')").stdout == "over attach\n"
            with docker() as client:
                assert client.api.inspect_container(sandbox.id)["Mounts"] == []
        finally:
            sandbox.close()
    finally:
        backend.remove_owned(instance)
        backend.close()


def test_an_unknown_channel_is_refused(sandbox_image: str) -> None:
    with pytest.raises(ValueError, match="auto, attach or socket"):
        DockerBackend(image=sandbox_image, instance="unused", channel="pipe")
