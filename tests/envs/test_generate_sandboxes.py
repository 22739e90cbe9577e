"""``toolgym generate --verify-sandbox``'s sandboxes come from the server's own pool.

Same pool class, same labels (an episode id as the server makes them, the owner
``generate``), the server's resource limits, and the same cleanup: nothing is left behind,
and a sandbox that dies is replaced under its episode id.
"""

from __future__ import annotations

import os
import re

import pytest

from toolgym.commands.generate import _Sandboxes
from toolgym.envs.runner import FunctionCall, RunRequest
from toolgym.server.sandbox.pool import LABEL_EPISODE, LABEL_OWNER
from toolgym.server.settings import Settings

EPISODE_ID = re.compile(r"^ep-[\w-]+-[0-9a-f]{20}$")
ADD = "def add(a, b):\n    return a + b\n"
IMAGE = os.environ.get("TOOLGYM_SANDBOX_IMAGE", "toolgym-sandbox:latest")


def _containers(instance: str) -> list[dict[str, object]]:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED, docker_client

    client = docker_client()
    try:
        labels = [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]
        listed = client.api.containers(all=True, filters={"label": labels})
        return [client.api.inspect_container(c["Id"]) for c in listed]
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.usefixtures("docker_backend")
def test_generate_sandboxes_are_the_servers_pool() -> None:
    sandboxes = _Sandboxes("docker", IMAGE, 2)
    try:
        containers = _containers(sandboxes.instance)
        assert len(containers) == 2
        for c in containers:
            labels = c["Config"]["Labels"]  # type: ignore[index]
            assert EPISODE_ID.match(labels[LABEL_EPISODE]), labels
            assert labels[LABEL_OWNER] == "generate"
            assert c["HostConfig"]["Memory"] == Settings().sandbox_memory_bytes  # type: ignore[index]
        request = RunRequest(code=ADD, call=FunctionCall("add", {"a": 2, "b": 3}))
        assert sandboxes(request).value == "5"

        # A sandbox that dies is replaced under the same episode id, and the call still runs.
        before = {c["Config"]["Labels"][LABEL_EPISODE] for c in containers}  # type: ignore[index]
        victim = containers[0]
        from toolgym.server.sandbox.docker import docker_client

        client = docker_client()
        try:
            client.api.kill(victim["Id"])
        finally:
            client.close()
        for _ in range(4):  # every sandbox is taken in turn; the dead one must be among them
            assert sandboxes(request).value == "5"
        after = _containers(sandboxes.instance)
        assert len(after) == 2, "the dead sandbox is removed"
        assert {c["Config"]["Labels"][LABEL_EPISODE] for c in after if c["State"]["Running"]} == before  # type: ignore[index]
    finally:
        sandboxes.close()
    assert _containers(sandboxes.instance) == []
