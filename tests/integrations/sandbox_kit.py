"""Killing an episode's sandbox for real, from outside, for the adapters' infrastructure-fault tests.

The server replaces a sandbox that dies during a step and retries the step once; a second death
(or a replacement that cannot start) is a 503 ``sandbox_error``, which reaches the trainer once
its client stops retrying. ``SandboxKiller`` keeps killing the episode's containers until then.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx

ENV = "toolgym/ToolUse-v0"
SLOW_SOURCE = "import time\ndef slow(seconds):\n    time.sleep(seconds)\n    return 'SLOW-GOLD-42'\n"
ECHO_SOURCE = "def echo(text):\n    return str(text)\n"


def tags(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def schema(name: str, params: dict[str, str]) -> dict[str, Any]:
    props = {p: {"type": t, "description": p} for p, t in params.items()}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool.",
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": list(props)}}}


def slow_task() -> dict[str, Any]:
    """A ToolUse record with a tool that takes seconds: long enough to kill its sandbox during it."""
    return {
        "id": f"slow-{uuid.uuid4().hex[:8]}",
        "messages": [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "Use the tools."}],
        "tools": [schema("slow", {"seconds": "number"}), schema("echo", {"text": "string"})],
        "codes": {"slow": SLOW_SOURCE, "echo": ECHO_SOURCE},
        "answer": "SLOW-GOLD-42",
        "unsolved_set": {"slow": ["SLOW-GOLD-42"]},
    }


class SandboxKiller(threading.Thread):
    """Kills, from outside, every container of the live episode of ``task_id`` once it is past its first step.

    It keeps killing (the server replaces a dead sandbox and retries the step once) until the
    episode is no longer live or ``stop`` is set; bounded by ``deadline_s``.
    """

    def __init__(self, base_url: str, key: str, task_id: str, deadline_s: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.base_url, self.key, self.task_id, self.deadline_s = base_url, key, task_id, deadline_s
        self.stop = threading.Event()
        self.killed: list[str] = []
        self.episode_id: str | None = None

    def _live(self, client: httpx.Client) -> dict[str, Any] | None:
        episodes = client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]
        return next((e for e in episodes if e["task_id"] == self.task_id), None)

    def run(self) -> None:
        from toolgym.server.sandbox.docker import docker_client

        end = time.monotonic() + self.deadline_s
        with httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"},
                          timeout=30) as client:
            engine = docker_client()
            try:
                while not self.stop.is_set() and time.monotonic() < end:
                    live = self._live(client)
                    if self.episode_id is not None and live is None:
                        return  # the episode ended: the rollout gave up on it
                    if live is not None and live["turn"] >= 1:
                        self.episode_id = live["episode_id"]
                        for container in engine.containers.list(
                                filters={"label": f"toolgym.episode={self.episode_id}"}):
                            try:
                                container.kill()
                                self.killed.append(container.id)
                            except Exception:  # already dead or removed: the next pass looks again
                                pass
                    time.sleep(0.1)
            finally:
                engine.close()


def register_slow_task(base_url: str, key: str) -> str:
    """Register ``slow_task()`` on the server; its id."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        registered = client.post(f"/v1/envs/{ENV}/tasks", json={"tasks": [slow_task()]})
        assert registered.status_code == 201, registered.text
        [task_id] = registered.json()["ids"]
        return str(task_id)
