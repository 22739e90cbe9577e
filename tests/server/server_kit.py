"""Helpers for the server suite: live servers you can stop and restart, HTTP shorthands,
ToolUse actions and task records, and checks that the server is still well.

Everything here talks to the real thing: a uvicorn server on 127.0.0.1 in a thread, a real
Docker engine (or the process backend), a real SQLite file. Servers started through a
``ServerFarm`` carry their own instance label; ``ServerFarm.stop_all`` fails the test module
if one of them left a container behind (the same check as ``server_factory`` in
tests/conftest.py, for servers that live longer than one test).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolgym.server.embedded import free_port

ENV = "toolgym/ToolUse-v0"
TASKS_URL = f"/v1/envs/{ENV}/tasks"
LABEL_EPISODE = "toolgym.episode"
ERROR_PREFIX = "an error occured when call {name}: "
"""FTRL's tool error message, their spelling (docs/methods.md#ftrl)."""


# --- live servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A running ToolGym server on loopback."""

    base_url: str
    settings: Any
    app: Any
    instance: str
    backend: Any
    _embedded: Any = field(repr=False)
    stopped: bool = False

    @property
    def manager(self) -> Any:
        return self.app.state.manager

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        """Stop as on SIGTERM: in-flight requests finish, then the app's shutdown runs."""
        if self.stopped:
            return
        self.stopped = True
        self._embedded.stop(timeout_s=120)


class ServerFarm:
    """Starts servers (``start``), stops them all and checks for leaked containers."""

    def __init__(self, tmpdir: Path, session: str, image: str, need_docker: Any) -> None:
        self.tmpdir = tmpdir
        self.session = session
        self.image = image
        self._need_docker = need_docker
        self.servers: list[Server] = []

    def new_instance(self) -> str:
        return f"{self.session}-{uuid.uuid4().hex[:6]}"

    def start(self, backend: str = "docker", **overrides: Any) -> Server:
        from toolgym.server import Settings, create_app
        from toolgym.server.embedded import EmbeddedServer

        instance = overrides.pop("instance_id", None) or self.new_instance()
        port = free_port()
        values: dict[str, Any] = dict(
            host="127.0.0.1", port=port, instance_id=instance, db_path=str(self.tmpdir / f"{instance}.db"),
            warm_pool_size=1, sandbox_image=self.image, reaper_interval_s=0.5,
        )
        values.update(overrides)
        settings = Settings(**values)
        if backend == "docker":
            self._need_docker()
            from toolgym.server.sandbox.docker import DockerBackend

            sandbox_backend: Any = DockerBackend(image=settings.sandbox_image, instance=instance)
        elif backend == "namespace":
            self._need_docker()
            from toolgym.server.sandbox.namespace import NamespaceBackend

            sandbox_backend = NamespaceBackend(image=settings.sandbox_image, instance=instance,
                                               episodes_per_host=settings.ns_episodes_per_host,
                                               host_max_episodes=settings.ns_host_max_episodes)
        else:
            from toolgym.server.sandbox.process import ProcessBackend

            sandbox_backend = ProcessBackend()
        app = create_app(settings, backend=sandbox_backend)
        try:
            embedded = EmbeddedServer(app, port=port).start(timeout_s=60)
        except RuntimeError:
            sandbox_backend.close()
            raise
        live = Server(base_url=embedded.base_url, settings=settings, app=app, instance=instance,
                      backend=sandbox_backend, _embedded=embedded)
        self.servers.append(live)
        return live

    def stop_all(self) -> list[str]:
        """Stop every server, then look for leaks (and remove them). All are stopped before
        any is counted: two servers may share an instance label (a restart), and a running
        one's containers are not the stopped one's leaks."""
        leaks = []
        for live in self.servers:
            live.stop()
        for instance, live in {s.instance: s for s in self.servers}.items():
            if live.backend.name in ("docker", "namespace"):
                left = count_containers(instance)
                if left:
                    leaks.append(f"{left} container(s) of {instance}")
                    live.backend.remove_owned(instance)
        for live in self.servers:
            live.backend.close()
        self.servers.clear()
        return leaks


# --- Docker look-ups --------------------------------------------------------------------------------
@contextmanager
def docker() -> Iterator[Any]:
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client()
    try:
        yield client
    finally:
        client.close()


def count_containers(instance: str) -> int:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED

    with docker() as client:
        return len(client.api.containers(all=True, quiet=True,
                                         filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]}))


def episode_containers(episode_id: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The containers labelled for one episode (stopped ones too, unless ``running_only``)."""
    from toolgym.server.sandbox.docker import LABEL_MANAGED

    with docker() as client:
        return list(client.api.containers(all=not running_only,
                                          filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_EPISODE}={episode_id}"]}))


def wait_for_teardown(server: Server, timeout_s: float = 30.0) -> None:
    """Wait (bounded) until the server's background teardown has removed every sandbox of an
    ended episode: a close answers before its container is gone."""
    deadline = time.monotonic() + timeout_s
    while server.manager.teardown_backlog:
        left = server.manager.teardown_backlog
        assert time.monotonic() < deadline, f"teardown backlog still {left} after {timeout_s} s"
        time.sleep(0.05)


def wait_gone(episode_id: str, timeout_s: float = 30.0) -> None:
    """Wait (bounded) until no container is labelled for ``episode_id`` (removed in the background)."""
    deadline = time.monotonic() + timeout_s
    while episode_containers(episode_id):
        assert time.monotonic() < deadline, f"the container of {episode_id} is still there after {timeout_s} s"
        time.sleep(0.05)


# --- HTTP shorthands ----------------------------------------------------------------------------------
def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the one error shape of docs/architecture.md and return its ``error`` object."""
    assert response.status_code == status, f"expected {status} {code}, got {response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["retryable"], bool), error
    return dict(error)


def reset(client: httpx.Client, task_id: str | None = None, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"env_id": ENV}
    if task_id is not None:
        body["task_id"] = task_id
    if options:
        body["options"] = options
    r = client.post("/v1/episodes", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def step(client: httpx.Client, episode_id: str, action: Any, **extra: Any) -> dict[str, Any]:
    r = client.post(f"/v1/episodes/{episode_id}/step", json={"action": action, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def state(client: httpx.Client, episode_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/episodes/{episode_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def close(client: httpx.Client, episode_id: str) -> None:
    r = client.delete(f"/v1/episodes/{episode_id}")
    assert r.status_code == 204, r.text


def register(client: httpx.Client, *records: dict[str, Any]) -> list[str]:
    r = client.post(TASKS_URL, json={"tasks": list(records)})
    assert r.status_code == 201, r.text
    return list(r.json()["ids"])


# --- ToolUse actions and records -----------------------------------------------------------------------
def call(name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def tags(*calls: dict[str, Any], content: str = "") -> str:
    """A raw assistant turn with one ``<tool_call>`` block per call (Qwen/Hermes form)."""
    blocks = "".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in calls)
    return f"{content}{blocks}"


def openai_message(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    """The same calls as an OpenAI-style assistant message (arguments as JSON strings)."""
    return {"role": "assistant", "content": content, "tool_calls": [
        {"id": f"x{i}", "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for i, c in enumerate(calls)
    ]}


def tool_schema(name: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    props = {p: {"type": t, "description": p} for p, t in (params or {}).items()}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool.", "parameters": {
        "type": "object", "properties": props, "required": list(props)}}}


ECHO_SOURCE = "def echo(text):\n    return str(text)\n"


def tooluse_record(
    codes: dict[str, str], *, task_id: str | None = None, golds: dict[str, list[str]] | None = None,
    answer: str = "unused-answer", params: dict[str, dict[str, str]] | None = None,
    question: str = "Use the tools.",
) -> dict[str, Any]:
    """A ToolUse task record (FTRL's format) whose tools are ``codes`` plus ``echo``."""
    codes = {**codes, "echo": ECHO_SOURCE}
    params = {"echo": {"text": "string"}, **(params or {})}
    return {
        "id": task_id or f"t-{uuid.uuid4().hex[:10]}",
        "messages": [{"role": "system", "content": "You call tools."}, {"role": "user", "content": question}],
        "tools": [tool_schema(name, params.get(name)) for name in codes],
        "codes": codes,
        "answer": answer,
        "unsolved_set": golds or {"echo": ["never-produced-gold"]},
    }


def tool_message(result: dict[str, Any], index: int = 0) -> str:
    messages = result["observation"]["messages"]
    assert messages[index]["role"] == "tool", messages
    return str(messages[index]["content"])


# --- health checks -------------------------------------------------------------------------------------
WITNESS_TASK = "tu-single-1"
WITNESS_ACTION = tags(call("get_city_info", city="Varnholt"))


def check_witness(client: httpx.Client, episode_id: str) -> None:
    """A second live episode still steps correctly: its tool answers with the right data."""
    result = step(client, episode_id, WITNESS_ACTION)
    assert result["info"]["status"] == "ok", result
    assert json.loads(tool_message(result)) == {"population": 48210, "country": "Eskara", "founded": 1184}
    assert not result["terminated"] and not result["truncated"]


def check_healthy(server: Server, client: httpx.Client, witness: str | None = None) -> None:
    """The server answers, a live episode still works, and no container is left behind:
    the server's containers are its open episodes plus at most its warm pool."""
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    if witness is not None:
        check_witness(client, witness)
    if server.backend.name == "docker":
        wait_for_teardown(server)
        allowed = server.manager.open_episodes + server.settings.warm_pool_size
        assert count_containers(server.instance) <= allowed, (
            f"{count_containers(server.instance)} containers for {server.manager.open_episodes} open episodes"
        )
    if server.backend.name == "namespace":
        wait_for_teardown(server)
        # Host containers: the ones in use, plus at most two being started and not yet listed (the
        # backend's spare, and one a warm-pool fill may start when no host has room).
        hosts = len(server.backend.hosts)
        assert count_containers(server.instance) <= hosts + 2, f"{count_containers(server.instance)} for {hosts} hosts"


def metric(client: httpx.Client, sample: str, **labels: str) -> float:
    """One sample of GET /metrics (0 when absent), e.g. ``metric(c, "toolgym_steps_total",
    status="ok")``; labels not given are summed over."""
    from prometheus_client.parser import text_string_to_metric_families

    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    total = 0.0
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
