"""``toolgym.integrations.verifiers`` inside the real ``verifiers`` 0.4 (its own cached venv), against a real server.

The trainer side (scripts/verifiers_play.py) runs rollouts through the v1 Environment that
``load_environment`` returns, with its player in a local subprocess runtime and a scripted
OpenAI-compatible server on loopback as the policy. One rollout plays a ToolUse episode to its
end and must carry ToolGym's rewards; in the other, this test kills the episode's sandbox
container (Docker backend) mid-episode, again and again until the server gives up on the step:
the rollout must end on verifiers' error channel (a ``SandboxError`` on the trace), unscored.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from scripts.scripted_model import ScriptedModel
from trainer_venvs import EXAMPLES, run_in_venv, run_script

pytestmark = pytest.mark.trainer
KEY = "k-verifiers"
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

    def __init__(self, base_url: str, task_id: str, deadline_s: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.base_url, self.task_id, self.deadline_s = base_url, task_id, deadline_s
        self.stop = threading.Event()
        self.killed: list[str] = []
        self.episode_id: str | None = None

    def _live(self, client: httpx.Client) -> dict[str, Any] | None:
        episodes = client.get("/v1/episodes", params={"status": "live"}).json()["episodes"]
        return next((e for e in episodes if e["task_id"] == self.task_id), None)

    def run(self) -> None:
        from toolgym.server.sandbox.docker import docker_client

        end = time.monotonic() + self.deadline_s
        with httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
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


@pytest.mark.docker
def test_verifiers_rollouts_carry_toolgym_rewards_and_a_killed_sandbox_is_a_sandbox_error(
        server_factory: Any) -> None:
    server = server_factory("docker", api_keys=(KEY,), warm_pool_size=1)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        registered = client.post(f"/v1/envs/{ENV}/tasks", json={"tasks": [slow_task()]})
        assert registered.status_code == 201, registered.text
        [slow_id] = registered.json()["ids"]
    plan = [
        {"name": "played", "task_id": "tu-multi-1", "max_retries": 5, "replies": [
            tags("find_manufacturer", product="Halcyon drone"),
            tags("get_company", company="Brightwell Dynamics", field="founder"),
            "Imara Solberg"]},
        {"name": "killed", "task_id": slow_id, "max_retries": 0, "replies": [
            tags("echo", text="warming up"), tags("slow", seconds=4), "SLOW-GOLD-42"]},
    ]
    killer = SandboxKiller(server.base_url, slow_id)
    killer.start()
    try:
        report = run_script("verifiers", "verifiers_play.py", server.base_url, KEY, json.dumps(plan), timeout_s=900)
    finally:
        killer.stop.set()
        killer.join(timeout=30)

    played = report["played"]
    assert (played["runtime"], played["harness"], played["agent"]) == ("subprocess", "null", "player")
    assert played["ok"] is True and played["episode_ok"] is True and played["errors"] == []
    assert played["rewards"] == {"toolgym_reward": 3.0}  # two tool calls with gold and the right answer
    assert played["toolgym"]["turns"] == 3 and played["toolgym"]["reason"] == "answered"
    first, second, third = played["model_requests"]
    system = first[0]["content"]
    assert first[0]["role"] == "system" and "<tools>" in system and "find_manufacturer" in system
    assert first[1] == {"role": "user", "content": "Who founded the company that makes the Halcyon drone?"}
    assert second[-1] == {"role": "user", "content": "<tool_response>\nBrightwell Dynamics\n</tool_response>"}
    assert third[-1] == {"role": "user", "content": "<tool_response>\nImara Solberg\n</tool_response>"}

    killed = report["killed"]
    assert killer.episode_id is not None and len(killer.killed) >= 2, "the sandbox and its replacement were killed"
    assert killed["ok"] is False and killed["episode_ok"] is False
    assert killed["stop_condition"] == "sandbox_error"
    assert killed["episode_errors"] == ["SandboxError"]
    [error] = killed["errors"]
    assert error["type"] == "SandboxError" and "ToolGym step 1" in error["message"], error
    assert "SandboxError" in error["message"] and killer.episode_id in error["message"], error
    assert killed["rewards"] == {}, "an infrastructure failure is never scored"
    assert killed["toolgym"]["turns"] == 1, "only the step before the kill was played"
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        state = client.get(f"/v1/episodes/{killer.episode_id}").json()
        assert state["status"] == "finished" and state["reason"] == "closed" and state["turn"] == 1, state


def test_the_verifiers_example_runs(server_factory: Any) -> None:
    server = server_factory("process", api_keys=(KEY,))
    model = ScriptedModel([tags("find_manufacturer", product="Halcyon drone"),
                           tags("get_company", company="Brightwell Dynamics", field="founder"), "Imara Solberg"])
    try:
        out = run_in_venv("verifiers", EXAMPLES / "verifiers_env.py", "--base-url", server.base_url,
                          "--model-url", model.base_url, "--model", "scripted", "--task-id", "tu-multi-1",
                          env={"TOOLGYM_API_KEY": KEY, "OPENAI_API_KEY": "unused"}, timeout_s=600)
    finally:
        model.close()
    assert out.strip().splitlines()[-1] == "tu-multi-1: reward 3, 3 turn(s)", out
    assert len(model.requests) == 3
