"""Pieces of the escape suite (tests/server/test_escape_*.py): a bystander episode that keeps
stepping while an attack runs, and the two ways an attack enters a server — as a ToolUse task's
tool code, and as CodeMath model code.
"""

from __future__ import annotations

import threading
import time
import uuid
from types import TracebackType
from typing import Any

import httpx
from server_kit import Server, call, check_witness, close, register, reset, step, tags, tool_message, tooluse_record

CODEMATH = "toolgym/CodeMath-v0"
BYSTANDER_MAX_STEPS = 150
"""A bystander stops by itself after this many steps (every loop is bounded)."""


class Bystander:
    """A second live episode (the built-in ``tu-single-1``) that steps in a thread, checking each
    answer, for as long as the attack lasts; ``__exit__`` waits (bounded) for at least one step
    after the attack ended, then fails on any wrong or failed step."""

    def __init__(self, server: Server, key: str | None) -> None:
        self._client = server.client(key)
        self.episode = str(reset(self._client, "tu-single-1", max_turns=BYSTANDER_MAX_STEPS + 5,
                                 tool_timeout_s=30.0)["episode_id"])
        self.steps = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bystander", daemon=True)

    def _loop(self) -> None:
        for _ in range(BYSTANDER_MAX_STEPS):
            if self._stop.is_set():
                return
            try:
                check_witness(self._client, self.episode)
            except BaseException as exc:  # reported to the test thread
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.steps += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            seen = self.steps
            deadline = time.monotonic() + 60
            while self.steps <= seen and not self.errors and self._thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._stop.set()
            self._thread.join(timeout=120)
            if kind is None:
                assert not self._thread.is_alive(), "the bystander is stuck"
                assert not self.errors, f"the bystander episode failed during the attack: {self.errors}"
                assert self.steps >= 1, "the bystander never stepped"
            close(self._client, self.episode)
        finally:
            self._client.close()


# --- attacks as tool code --------------------------------------------------------------------------------
def tool_attack(server: Server, client: httpx.Client, key: str | None, source: str, arg: str,
                *, timeout_s: float = 10.0, **options: Any) -> tuple[str, dict[str, Any], str]:
    """Register a ToolUse task whose tool ``attack(arg)`` is ``source``, call it once while a
    bystander steps; returns (episode id, step result, tool message). The episode stays open.
    ``options`` are more reset options."""
    (task_id,) = register(client, tooluse_record({"attack": source}, params={"attack": {"arg": "string"}},
                                                 golds={"echo": ["GOLD-7731"]}, answer="GOLD-7731"))
    episode_id = str(reset(client, task_id, tool_timeout_s=timeout_s, **options)["episode_id"])
    with Bystander(server, key):
        result = step(client, episode_id, tags(call("attack", arg=arg)))
    return episode_id, result, tool_message(result)


def check_tool_episode_goes_on(client: httpx.Client, episode_id: str, result: dict[str, Any]) -> None:
    """The attack earned nothing and the episode still plays and scores correctly."""
    assert result["reward"] == 0.0 and not result["terminated"] and not result["truncated"], result
    assert result["info"]["reward_components"]["calls"] == 1
    assert result["info"]["reward_components"]["solved"] == 0
    follow = step(client, episode_id, tags(call("echo", text="GOLD-7731")))
    assert tool_message(follow) == "GOLD-7731" and follow["info"]["status"] == "ok", follow
    assert follow["reward"] > 0 and follow["info"]["reward_components"]["solved"] == 1
    close(client, episode_id)


# --- attacks as model code -----------------------------------------------------------------------------
def codemath_task(client: httpx.Client) -> str:
    """A fresh CodeMath task whose gold is 7."""
    r = client.post(f"/v1/envs/{CODEMATH}/tasks",
                    json={"tasks": [{"id": f"esc-{uuid.uuid4().hex[:10]}", "question": "What is 3 + 4?",
                                     "answer": "7"}]})
    assert r.status_code == 201, r.text
    return str(r.json()["ids"][0])


def code_block(source: str, arg: str, tail: str | None = None) -> str:
    """A turn whose one code block defines ``attack`` and runs ``tail`` (default: prints its report)."""
    tail = tail if tail is not None else "print(attack(ARG))"
    return f"Let me look around.\n```python\n{source.strip()}\nARG = {arg!r}\n{tail.strip()}\n```"


def model_attack(server: Server, client: httpx.Client, key: str | None, source: str, arg: str,
                 *, timeout_s: float = 10.0, tail: str | None = None) -> tuple[str, dict[str, Any], str]:
    """Play ``source`` as a CodeMath code block while a bystander steps; returns (episode id, step
    result, observation text). The episode stays open unless the step ended it."""
    task_id = codemath_task(client)
    r = client.post("/v1/episodes", json={"env_id": CODEMATH, "task_id": task_id,
                                          "options": {"timeout_s": timeout_s, "max_turns": 5}})
    assert r.status_code == 201, r.text
    episode_id = str(r.json()["episode_id"])
    with Bystander(server, key):
        result = step(client, episode_id, code_block(source, arg, tail))
    return episode_id, result, str(result["observation"]["messages"][0]["content"])


def check_model_episode_goes_on(client: httpx.Client, episode_id: str, result: dict[str, Any]) -> None:
    """The attack earned nothing; the episode still runs code and pays the right answer."""
    assert result["reward"] == 0.0, result
    if result["terminated"] or result["truncated"]:
        close(client, episode_id)
        return
    follow = step(client, episode_id, "Compute.\n```python\nprint(3 + 4)\n```")
    assert follow["info"]["status"] == "ok", follow
    assert "Code execution result: 7" in follow["observation"]["messages"][0]["content"], follow
    final = step(client, episode_id, "So the answer is \\boxed{7}.")
    assert final["terminated"] and final["reward"] == 1.0, final
