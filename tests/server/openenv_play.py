"""Plays ToolGym episodes through OpenEnv's own client; run by test_openenv.py in a virtualenv
that has ``openenv`` installed (never the project's: it imports nothing of ToolGym).

Usage: ``python openenv_play.py BASE_URL API_KEY``. Prints one JSON report on stdout: what each
reset, step and state answered, as OpenEnv's client parsed it, and the errors it raised.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from openenv.core import EnvClient, GenericEnvClient
from openenv.core.client_types import StepResult

CITIES = ("Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo")


class ToolGymEnv(EnvClient[dict, dict, dict]):
    """A typed client as OpenEnv's docs write one (``EnvClient`` subclass), on plain dicts."""

    def _step_payload(self, action: dict) -> dict:
        return action

    def _parse_result(self, payload: dict) -> StepResult[dict]:
        return StepResult(observation=payload["observation"], reward=payload.get("reward"),
                          done=payload.get("done", False), metadata=payload.get("metadata"))

    def _parse_state(self, payload: dict) -> dict:
        return payload


def seen(result: StepResult[Any]) -> dict[str, Any]:
    return {"observation": result.observation, "reward": result.reward, "done": result.done,
            "metadata": result.metadata}


def error_of(call: Any) -> str | None:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    base, key = sys.argv[1], sys.argv[2]
    headers = {"Authorization": f"Bearer {key}"}
    report: dict[str, Any] = {}

    # FunctionCall, with OpenEnv's generic client and the raw assistant turn.
    with GenericEnvClient(base_url=f"{base}/openenv/FunctionCall-v0", headers=headers).sync() as env:
        reset = env.reset(task_id="fc-weather-001", seed=3)
        question = next(m["content"] for m in reset.observation["messages"] if m["role"] == "user")
        city = next(c for c in CITIES if c in question)
        call = json.dumps({"name": "get_weather", "arguments": {"city": city}})
        step = env.step({"message": f"<tool_call>\n{call}\n</tool_call>"})
        report["functioncall"] = {
            "reset": seen(reset), "step": seen(step), "state": env.state(),
            "after_done": error_of(lambda: env.step({"message": "again"})),
            "bad_action": error_of(lambda: env.step({"text": "no such field"})),
        }

    # ToolUse, with a typed subclass and the assistant message form, then the raw answer.
    with ToolGymEnv(base_url=f"{base}/openenv/ToolUse-v0", headers=headers).sync() as env:
        before = env.state()
        reset = env.reset(task_id="tu-single-1")
        tool_call = {"type": "function", "function": {"name": "get_city_info",
                                                      "arguments": json.dumps({"city": "Varnholt"})}}
        first = env.step({"content": None, "tool_calls": [tool_call]})
        final = env.step({"message": "The answer is 48210."})
        report["tooluse"] = {"before": before, "reset": seen(reset), "first": seen(first), "final": seen(final),
                             "state": env.state()}

    # A session left mid-episode: the client's close ends the socket's episode.
    with GenericEnvClient(base_url=f"{base}/openenv/ToolUse-v0", headers=headers).sync() as env:
        report["left_open"] = env.reset(task_id="tu-single-1").metadata["episode_id"]

    wrong = GenericEnvClient(base_url=f"{base}/openenv/ToolUse-v0", headers={"Authorization": "Bearer wrong"}).sync()
    report["wrong_key"] = error_of(lambda: wrong.reset())
    wrong.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
