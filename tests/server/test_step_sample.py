"""A step's ``sample`` (the policy's token ids and log-probabilities): stored with the step, returned
in the trajectory and in ``toolgym export``, over HTTP, batch and /v1/ws; bad shapes are 422.

A real server on loopback (process backend: FunctionCall needs no sandbox), the installed
``toolgym`` command, and the ``datasets`` library reading the hf export."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolgym.client import AsyncEnvClient, EnvClient
from toolgym.errors import ValidationFailed
from toolgym.server.store_sqlite import SqliteStore

FC = "toolgym/FunctionCall-v0"
TOOLGYM = str(Path(sys.executable).parent / "toolgym")


def _export(base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
    return subprocess.run([TOOLGYM, "export", "--base-url", base_url, "--no-progress", *args], capture_output=True,
                          text=True, timeout=120, env=clean)


def test_samples_round_trip_into_the_trajectory_and_export(
        server_factory: Callable[..., Any], tmp_path: Path) -> None:
    server = server_factory("process", warm_pool_size=0)
    base = server.base_url
    sent: dict[str, dict[str, Any]] = {}
    with EnvClient(base) as client:
        one = client.reset(FC, "fc-weather-002", seed=1).episode_id
        client.step(one, "no call", token_ids=[5, 6, 7], logprobs=[-0.5, -1.0, -1.5])
        sent[one] = {"token_ids": [5, 6, 7], "logprobs": [-0.5, -1.0, -1.5]}
        bare = client.reset(FC, "fc-weather-002", seed=1).episode_id
        client.step(bare, "no call")  # no sample: the trajectory reads as before
        batched = client.reset(FC, "fc-weather-003", seed=1).episode_id
        (result,) = client.batch_step([{"episode_id": batched, "action": "no call",
                                        "sample": {"token_ids": [9], "logprobs": [-0.25]}}])
        assert not isinstance(result, Exception)
        sent[batched] = {"token_ids": [9], "logprobs": [-0.25]}

    async def over_ws() -> str:
        async with AsyncEnvClient(base, protocol="ws") as ws:
            first = await ws.reset(FC, "fc-weather-003", seed=2)
            await ws.step(first.episode_id, "no call", token_ids=[1, 2])
            return first.episode_id

    by_ws = asyncio.run(over_ws())
    sent[by_ws] = {"token_ids": [1, 2], "logprobs": None}

    with EnvClient(base) as client:
        for episode_id, sample in sent.items():
            (step,) = client.episode(episode_id)["steps"]
            assert step["sample"] == sample
            assert client.trajectory(episode_id)[-1]["sample"] == sample
        assert "sample" not in client.episode(bare)["steps"][0]
        # The mean of the logprobs stands in for a missing mean_logprob in the task statistics.
        stats = {row["task_id"]: row for row in client.task_stats(FC)}
        assert stats["fc-weather-002"]["mean_logprob"] == pytest.approx(-1.0)

    # A restarted server reads them back from the file.
    db_path = server.settings.db_path
    server.stop()
    again = server_factory("process", warm_pool_size=0, db_path=db_path)
    with EnvClient(again.base_url) as client:
        assert client.episode(one)["steps"][0]["sample"] == sent[one]

    out = tmp_path / "t.jsonl"
    done = _export(again.base_url, "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = {row["episode_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    for episode_id, sample in sent.items():
        assert lines[episode_id]["steps"][0]["sample"] == sample

    folder = tmp_path / "hf"
    done = _export(again.base_url, "--out", str(folder), "--format", "hf")
    assert done.returncode == 0, done.stderr
    code = (
        "import json, sys, datasets\n"
        "d = datasets.load_dataset(sys.argv[1])\n"
        "rows = [r for split in d for r in d[split]]\n"
        "print(json.dumps({r['episode_id']: [r['token_ids'], r['logprobs']] for r in rows}))\n"
        "print(json.dumps({k: str(v) for k, v in d['train'].features.items()}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HOME": str(tmp_path / "hf-cache"), "HF_DATASETS_OFFLINE": "1",
                                 "HF_HUB_OFFLINE": "1"})
    assert loaded.returncode == 0, loaded.stderr
    rows_line, features_line = loaded.stdout.splitlines()[-2:]
    rows = json.loads(rows_line)
    assert rows[one] == [[[5, 6, 7]], [[-0.5, -1.0, -1.5]]]
    assert rows[by_ws] == [[[1, 2]], [None]]
    assert rows[bare] == [[None], [None]]
    assert json.loads(features_line)["token_ids"] == "List(List(Value('int64')))"


BAD_SAMPLES = [
    ({"token_ids": [1, 2], "logprobs": [-0.1]}, "pair up"),
    ({"token_ids": [1], "logprobs": [float("nan")]}, "finite"),
    ({"token_ids": [-1]}, "greater than or equal to 0"),
    ({"token_ids": ["a"]}, "integer"),
    ({"logprobs": [-0.1]}, "token_ids"),
    ({"token_ids": [1], "extra": 1}, "extra"),
    ({"token_ids": list(range(131073))}, "at most 131072"),
]


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    """``body`` as Python's json writes it (NaN included, as a careless client would send it)."""
    return httpx.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize(("sample", "says"), BAD_SAMPLES, ids=[s for _, s in BAD_SAMPLES])
def test_a_bad_sample_is_a_422_and_plays_nothing(
        process_server: Any, sample: dict[str, Any], says: str) -> None:
    base = process_server.base_url
    with EnvClient(base) as client:
        episode_id = client.reset(FC, "fc-weather-002", seed=1).episode_id
        single = _post(f"{base}/v1/episodes/{episode_id}/step", {"action": "no call", "sample": sample})
        assert single.status_code == 422 and says in single.text, single.text
        batch = _post(f"{base}/v1/batch/step",
                      {"steps": [{"episode_id": episode_id, "action": "no call", "sample": sample}]})
        assert batch.status_code == 422 and says in batch.text, batch.text
        assert client.episode(episode_id)["turn"] == 0
        with pytest.raises(ValidationFailed):
            client.step(episode_id, "no call", token_ids=[1, 2], logprobs=[-0.5])
        with pytest.raises(ValueError):
            client.step(episode_id, "no call", logprobs=[-0.1])
        assert client.episode(episode_id)["turn"] == 0


def test_an_older_database_file_gains_the_sample_column(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE steps (episode_id TEXT NOT NULL, turn INTEGER NOT NULL, action TEXT NOT NULL,"
        " result TEXT NOT NULL, mean_logprob REAL, idempotency_key TEXT, created REAL NOT NULL,"
        " PRIMARY KEY (episode_id, turn));"
        "INSERT INTO steps VALUES ('ep-1', 0, '\"a\"', '{\"reward\": 1.0}', NULL, NULL, 0);"
    )
    old.commit()
    old.close()
    store = SqliteStore(path)
    try:
        assert store.steps("ep-1") == [{"turn": 0, "action": "a", "reward": 1.0, "mean_logprob": None,
                                        "sample": None}]
        store.add_step("ep-1", 1, "b", {"reward": 0.0}, mean_logprob=None, idempotency_key=None, total_reward=1.0,
                       status="live", reason=None, sample={"token_ids": [3], "logprobs": None})
        assert store.steps("ep-1")[1]["sample"] == {"token_ids": [3], "logprobs": None}
    finally:
        store.close()
    again = SqliteStore(path)  # a second open finds the column and adds nothing
    again.close()


def test_the_gym_env_sends_a_step_body_with_its_sample(process_server: Any) -> None:
    import gymnasium as gym  # the env ids are registered: this module imported toolgym.client

    env = gym.make(FC, base_url=process_server.base_url)
    try:
        env.reset(seed=0)
        episode_id = env.unwrapped.episode_id  # type: ignore[attr-defined]
        _, reward, terminated, _, info = env.step(
            {"action": "no call", "sample": {"token_ids": [4, 2], "logprobs": [-0.1, -0.2]}})
        assert terminated and info["status"] == "ok" and reward == 0.0
    finally:
        env.close()
    with EnvClient(process_server.base_url) as client:
        assert client.episode(episode_id)["steps"][0]["sample"] == {"token_ids": [4, 2], "logprobs": [-0.1, -0.2]}
