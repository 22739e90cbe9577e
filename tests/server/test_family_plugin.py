"""A family from outside ToolGym gets the data loop by declaring capabilities, nothing else.

The families of ``echo_family.py`` are installed here as a third party installs one: a
distribution on ``sys.path`` whose ``entry_points.txt`` names them in the ``toolgym.envs``
group. A real server on loopback then grows, grades, judges and retires their tasks; the
server has no line of code that knows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from echo_family import PlainFamily, ReverseFamily

from toolgym.envs import load_families
from toolgym.server.judge import JudgeCase, Judgement, Vote

REVERSE = "tests/Reverse-v0"
PLAIN = "tests/Plain-v0"


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution whose entry points name the two test families."""
    dist = tmp_path / "site" / "toolgym_test_families-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toolgym-test-families\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[toolgym.envs]\nreverse = echo_family:ReverseFamily\nplain = echo_family:PlainFamily\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


class RecordingJudge:
    """A judge that answers RESPONSE1_INCORRECT three times and keeps what it was shown."""

    def __init__(self) -> None:
        self.cases: list[JudgeCase] = []

    async def judge(self, case: JudgeCase) -> Judgement:
        self.cases.append(case)
        return Judgement("RESPONSE1_INCORRECT", tuple(Vote("RESPONSE1_INCORRECT", model="j") for _ in range(3)))


@pytest.fixture
def http(plugin_installed: None, server_factory: Callable[..., Any]) -> Iterator[tuple[Any, httpx.Client]]:
    server = server_factory("process", load_builtin_tasks=False, warm_pool_size=0)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield server, client


def play(http: httpx.Client, env_id: str, task_id: str, answer: str) -> float:
    r = http.post("/v1/episodes", json={"env_id": env_id, "task_id": task_id})
    assert r.status_code == 201, r.text
    s = http.post(f"/v1/episodes/{r.json()['episode_id']}/step", json={"action": answer})
    assert s.status_code == 200, s.text
    return float(s.json()["reward"])


def test_capabilities_come_from_the_class() -> None:
    assert ReverseFamily().capabilities == {"grade", "judge", "expand"}
    assert PlainFamily().capabilities == frozenset()


def test_entry_point_families_load(plugin_installed: None) -> None:
    families = load_families()
    assert isinstance(families[REVERSE], ReverseFamily) and isinstance(families[PLAIN], PlainFamily)


def test_a_plugin_family_gets_the_data_loop(http: tuple[Any, httpx.Client]) -> None:
    server, client = http
    assert {REVERSE, PLAIN} <= {e["id"] for e in client.get("/v1/envs").json()["envs"]}
    tasks = [{"id": "t-harbor", "word": "harbor", "answer": "robrah"},
             {"id": "t-pepper", "word": "pepper", "answer": "reppep"}]
    assert client.post(f"/v1/envs/{REVERSE}/tasks", json={"tasks": tasks}).status_code == 201
    assert play(client, REVERSE, "t-harbor", "harbor") == 0.0  # a failing task now
    assert play(client, REVERSE, "t-pepper", "reppep") == 1.0

    # Expansion: the failing task grows; the mislabeled proposal is caught by the family's grade.
    r = client.post(f"/v1/envs/{REVERSE}/tasks/expand", json={"n": 3, "seed": 5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["created"]) == 2 and out["skipped"] == []
    [rejection] = out["rejections"]
    assert rejection["reason"] == "its gold does not earn full reward under the env's own verifier"
    listed = {t["id"]: t for t in client.get(f"/v1/envs/{REVERSE}/tasks").json()["tasks"]}
    for tid in out["created"]:
        assert listed[tid]["metadata"]["parent_id"] == "t-harbor"
        word = server.app.state.manager.tasks.get(REVERSE, tid).record["word"]
        assert play(client, REVERSE, tid, word[::-1]) == 1.0

    # The judge: a right answer is settled by the family's grade; a wrong one goes to the
    # judge as the family renders it.
    judge = RecordingJudge()
    server.app.state.judge = judge
    url = f"/v1/envs/{REVERSE}/tasks/t-harbor/judge"
    right = client.post(url, json={"response": "robrah"}).json()
    assert right["judged_by"] == "verifier" and judge.cases == []
    wrong = client.post(url, json={"response": {"role": "assistant", "content": "harbor"}})
    assert wrong.status_code == 200, wrong.text
    assert (wrong.json()["verdict"], wrong.json()["action"]) == ("RESPONSE1_INCORRECT", "relabel_suggested")
    [case] = judge.cases
    assert (case.label, case.response, list(case.tools)) == ("robrah", "harbor", [])
    assert case.messages == [{"role": "user", "content": "Write the word 'harbor' backwards."}]

    # Retirement needs no capability.
    retired = client.post(f"/v1/envs/{REVERSE}/tasks/retire", json={"task_ids": ["t-pepper"]}).json()
    assert retired == {"retired": ["t-pepper"], "already_retired": []}


def test_a_family_without_capabilities_gets_clear_422s(http: tuple[Any, httpx.Client]) -> None:
    server, client = http
    server.app.state.judge = RecordingJudge()
    task = {"id": "p-1", "word": "walnut", "answer": "tunlaw"}
    assert client.post(f"/v1/envs/{PLAIN}/tasks", json={"tasks": [task]}).status_code == 201
    expand = client.post(f"/v1/envs/{PLAIN}/tasks/expand", json={"task_ids": ["p-1"]})
    judge = client.post(f"/v1/envs/{PLAIN}/tasks/p-1/judge", json={"response": "walnut"})
    for r, mixin in ((expand, "Expandable"), (judge, "Judgeable")):
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_failed" and mixin in error["message"]
        assert error["details"] == {"env_id": PLAIN, "capabilities": []}
    retire = client.post(f"/v1/envs/{PLAIN}/tasks/retire", json={"task_ids": ["p-1"]})
    assert retire.status_code == 200, retire.text
