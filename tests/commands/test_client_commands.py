"""``toolgym status``, ``episodes``, ``export`` and ``doctor`` as a user runs them: the installed
command in a subprocess against a real server on loopback (process backend: what these check,
the commands' output, JSON and exit codes, does not depend on Docker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from toolgym.client import EnvClient
from toolgym.envs.functioncall.tasks import builtin_records
from toolgym.server.embedded import free_port

TOOLGYM = str(Path(sys.executable).parent / "toolgym")
FC = "toolgym/FunctionCall-v0"
TU = "toolgym/ToolUse-v0"
GOLD = {r["id"]: r.get("gold_calls") for _, r in builtin_records()}

pytestmark = pytest.mark.slow


def toolgym(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``toolgym`` with no TOOLGYM_* variable of this shell, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
    return subprocess.run([TOOLGYM, *args], capture_output=True, text=True, timeout=120,
                          env={**clean, **(env or {})}, cwd=cwd)


def one_json(stdout: str) -> Any:
    """stdout is exactly one JSON document (one line)."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def calls_text(calls: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)


def play(base_url: str, api_key: str | None = None) -> dict[str, Any]:
    """Three finished FunctionCall episodes (two right, one wrong: a 2/3 pass rate) and one
    live ToolUse episode."""
    with EnvClient(base_url, api_key) as client:
        ids = {}
        for name, task, action in (("right1", "fc-weather-002", calls_text(GOLD["fc-weather-002"])),
                                   ("right2", "fc-weather-003", calls_text(GOLD["fc-weather-003"])),
                                   ("wrong", "fc-weather-002", "I will not call anything.")):
            first = client.reset(FC, task, seed=1)
            step = client.step(first.episode_id, action)
            assert step.terminated and step.reward == (0.0 if name == "wrong" else 1.0)
            ids[name] = first.episode_id
        ids["live"] = client.reset(TU, seed=0).episode_id
    return ids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """One server for the tests that only read it (starting one costs seconds on a busy
    machine): the episodes of ``play``, nothing else, for the whole module."""
    from toolgym.server import Settings, create_app
    from toolgym.server.embedded import EmbeddedServer
    from toolgym.server.sandbox.process import ProcessBackend

    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, warm_pool_size=0, instance_id=f"cli-{uuid.uuid4().hex[:8]}",
                        db_path=str(tmp_path_factory.mktemp("served") / "toolgym.db"))
    backend = ProcessBackend()
    thread = EmbeddedServer(create_app(settings, backend=backend), port=port).start(timeout_s=60)
    try:
        base_url = f"http://127.0.0.1:{port}"
        yield base_url, play(base_url)
    finally:
        thread.stop()
        backend.close()


def test_status_shows_readiness_envs_and_pass_rates(served: tuple[str, dict[str, Any]]) -> None:
    base_url, _ = served
    done = toolgym("status", "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert "readiness  ready" in done.stdout and "process, NOT isolated" in done.stdout
    assert "1 live for this key" in done.stdout
    fc_row = next(line for line in done.stdout.splitlines() if line.startswith(FC))
    assert "66.7%" in fc_row.split() and fc_row.split()[-6:-4] == ["3", "3"], fc_row

    # --json, and the base URL from $TOOLGYM_BASE_URL when no flag names one.
    done = toolgym("status", "--json", env={"TOOLGYM_BASE_URL": base_url})
    assert done.returncode == 0, done.stderr
    report = one_json(done.stdout)
    assert report["base_url"] == base_url and report["ready"] and report["healthy"]
    assert report["readiness"]["backend"] == {"name": "process", "isolated": False}
    assert report["live_episodes"] == 1 and report["version"]["api_version"] == "v1"
    fc = next(e for e in report["envs"] if e["env_id"] == FC)
    assert (fc["episodes"], fc["finished"]) == (3, 3)
    assert fc["pass_rate"] == pytest.approx(2 / 3) and fc["mean_return"] == pytest.approx(2 / 3)
    tu = next(e for e in report["envs"] if e["env_id"] == TU)
    assert tu["finished"] == 0 and tu["pass_rate"] is None


def test_status_of_a_full_server_is_not_ready_exit_4(server_factory: Callable[..., Any]) -> None:
    live = server_factory("process", warm_pool_size=0, max_live_episodes=1)
    with EnvClient(live.base_url) as client:
        client.reset(TU, seed=0)
    done = toolgym("status", "--base-url", live.base_url, "--json")
    assert done.returncode == 4, done.stderr
    report = one_json(done.stdout)
    assert report["ready"] is False and report["readiness"]["open_episodes"] == 1
    assert "not ready" in done.stderr


@pytest.mark.parametrize("command", [["status"], ["episodes", "ls"], ["episodes", "show", "ep-x"],
                                     ["export", "--out", "never.jsonl"]])
def test_a_refused_connection_says_start_a_server_exit_3(command: list[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = toolgym(*command, "--base-url", url, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert f"is a server running at {url}? start one with `toolgym serve`" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "never.jsonl").exists()
    done = toolgym(*command, "--base-url", url, "--json", cwd=tmp_path)
    assert done.returncode == 3
    assert one_json(done.stdout)["error"]["exit_code"] == 3


def test_a_missing_key_is_exit_1_and_the_key_comes_from_the_environment(
        server_factory: Callable[..., Any]) -> None:
    live = server_factory("process", warm_pool_size=0, api_keys=("k-secret",))
    play(live.base_url, "k-secret")
    done = toolgym("episodes", "ls", "--base-url", live.base_url)
    assert done.returncode == 1
    assert "--api-key" in done.stderr and "TOOLGYM_API_KEY" in done.stderr and "Traceback" not in done.stderr
    done = toolgym("episodes", "ls", "--json", env={"TOOLGYM_BASE_URL": live.base_url, "TOOLGYM_API_KEY": "k-secret"})
    assert done.returncode == 0, done.stderr
    assert one_json(done.stdout)["total"] == 4


def test_episodes_ls_and_show(served: tuple[str, dict[str, Any]]) -> None:
    base_url, ids = served
    done = toolgym("episodes", "ls", "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert all(i in done.stdout for i in ids.values())
    assert done.stdout.splitlines()[0].split() == ["episode", "env", "task", "split", "status", "turns", "return",
                                                   "reason"]
    assert "4 episode(s) of 4" in done.stdout

    page = one_json(toolgym("episodes", "ls", "--base-url", base_url, "--json", "--status", "finished").stdout)
    assert page["total"] == 3 and {e["episode_id"] for e in page["episodes"]} == {ids["right1"], ids["right2"],
                                                                                  ids["wrong"]}
    page = one_json(toolgym("episodes", "ls", "--base-url", base_url, "--json", "--env", TU).stdout)
    assert [e["episode_id"] for e in page["episodes"]] == [ids["live"]] and page["total"] == 1

    done = toolgym("episodes", "show", ids["right2"], "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert "fc-weather-003" in done.stdout and "finished (answered)" in done.stdout
    step_row = done.stdout.splitlines()[done.stdout.splitlines().index(next(
        line for line in done.stdout.splitlines() if line.startswith("----"))) + 1]
    assert step_row.split()[:4] == ["0", "+1.000", "ok", "terminated"], step_row
    state = one_json(toolgym("episodes", "show", ids["wrong"], "--base-url", base_url, "--json").stdout)
    assert state["episode_id"] == ids["wrong"] and state["total_reward"] == 0.0 and len(state["steps"]) == 1

    done = toolgym("episodes", "show", "ep-nope", "--base-url", base_url)
    assert done.returncode == 1 and "EpisodeNotFound" in done.stderr and done.stdout == ""
    done = toolgym("episodes", "ls", "--base-url", base_url, "--limit", "0")
    assert done.returncode == 2


def test_export_jsonl(served: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base_url, ids = served
    out = tmp_path / "t.jsonl"
    done = toolgym("export", "--out", str(out), "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert f"exported 3 episode(s) ({FC} 3) to {out}" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["episode_id"] for r in records} == {ids["right1"], ids["right2"], ids["wrong"]}
    for r in records:  # the whole episode: its reset and every step
        assert r["status"] == "finished" and r["reset"]["observation"]["messages"]
        assert len(r["steps"]) == 1 and {"action", "observation", "reward", "info"} <= set(r["steps"][0])
    assert sorted(r["total_reward"] for r in records) == [0.0, 1.0, 1.0]

    done = toolgym("export", "--out", "-", "--limit", "2", "--base-url", base_url)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    assert all(json.loads(line)["env_id"] == FC for line in done.stdout.splitlines())

    # Nothing matches: exit 1, and no file.
    none = tmp_path / "none.jsonl"
    done = toolgym("export", "--out", str(none), "--env", TU, "--base-url", base_url, "--json")
    assert done.returncode == 1 and not none.exists()
    assert one_json(done.stdout)["episodes"] == 0
    done = toolgym("export", "--out", "-", "--json", "--base-url", base_url)
    assert done.returncode == 2


def test_export_hf_loads_with_datasets(served: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base_url, ids = served
    folder = tmp_path / "ds"
    done = toolgym("export", "--out", str(folder), "--format", "hf", "--json", "--base-url", base_url)
    assert done.returncode == 0, done.stderr
    assert one_json(done.stdout) == {"out": str(folder), "format": "hf", "episodes": 3, "envs": {FC: 3},
                                     "splits": {"train": 3}}
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "data"]
    assert [p.name for p in (folder / "data").iterdir()] == ["train.jsonl"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "path: data/train.jsonl" in card and "list: float64" in card

    # The folder as a user loads it, offline, with its own cache.
    code = (
        "import json, sys, datasets\n"
        "d = datasets.load_dataset(sys.argv[1])\n"
        "rows = list(d['train'])\n"
        "j = datasets.load_dataset('json', data_files=sys.argv[1] + '/data/*.jsonl')['train']\n"
        "print(json.dumps({'splits': sorted(d), 'n': len(rows), 'json_n': len(j),\n"
        "  'features': {k: str(v) for k, v in d['train'].features.items()},\n"
        "  'rows': [{'id': r['episode_id'], 'rewards': r['rewards'], 'status': r['step_status'],\n"
        "            'roles': [m['role'] for m in json.loads(r['messages'])],\n"
        "            'calls': json.loads(r['steps'])[0]['action']} for r in rows]}))\n"
    )
    cache = tmp_path / "hf-cache"
    loaded = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HOME": str(cache), "HF_DATASETS_OFFLINE": "1",
                                 "HF_HUB_OFFLINE": "1"})
    assert loaded.returncode == 0, loaded.stderr
    got = json.loads(loaded.stdout.splitlines()[-1])
    assert got["splits"] == ["train"] and got["n"] == got["json_n"] == 3
    assert got["features"]["rewards"] == "List(Value('float64'))" and got["features"]["seed"] == "Value('int64')"
    by_id = {r["id"]: r for r in got["rows"]}
    assert by_id[ids["right1"]]["rewards"] == [1.0] and by_id[ids["wrong"]]["rewards"] == [0.0]
    assert by_id[ids["wrong"]]["status"] == ["ok"]
    roles = by_id[ids["right1"]]["roles"]
    assert roles[0] == "system" and "user" in roles and roles[-1] == "assistant"
    assert by_id[ids["wrong"]]["calls"] == "I will not call anything."

    again = toolgym("export", "--out", str(folder), "--format", "hf", "--base-url", base_url)
    assert again.returncode == 1 and "exists" in again.stderr


def test_doctor(served: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base_url, _ = served
    busy = base_url.rsplit(":", 1)[1]
    done = toolgym("doctor", "--port", busy, "--backend", "process", "--json")
    assert done.returncode == 4, done.stderr
    report = one_json(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False and checks["port"]["status"] == "fail"
    assert "a ToolGym server already answers" in checks["port"]["detail"]
    assert f"toolgym status --base-url http://127.0.0.1:{busy}" in checks["port"]["fix"]
    assert checks["isolation"]["status"] == "warn" and "NOT isolated" in checks["isolation"]["detail"]

    free = str(free_port())
    done = toolgym("doctor", "--port", free, "--backend", "process")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing blocks serving" in done.stdout and "next:" in done.stdout  # the isolation warning's fix
    assert done.stdout.splitlines()[0].split() == ["check", "status", "detail"]

    nowhere = f"unix://{tmp_path}/no-docker.sock"
    done = toolgym("doctor", "--port", free, "--backend", "docker", "--json", env={"DOCKER_HOST": nowhere})
    assert done.returncode == 4
    checks = {c["name"]: c for c in one_json(done.stdout)["checks"]}
    assert checks["docker-engine"]["status"] == "fail" and "--backend process" in checks["docker-engine"]["fix"]
    done = toolgym("doctor", "--port", free, "--json", env={"DOCKER_HOST": nowhere, "TOOLGYM_ISOLATION": "namespace"})
    checks = {c["name"]: c for c in one_json(done.stdout)["checks"]}
    assert checks["isolation"]["status"] == "skip" and "namespace" in checks["isolation"]["detail"]

    done = toolgym("doctor", "--port", free, "--host", "0.0.0.0", "--backend", "process", "--json")
    assert done.returncode == 4
    checks = {c["name"]: c for c in one_json(done.stdout)["checks"]}
    assert checks["api-keys"]["status"] == "fail" and "TOOLGYM_API_KEYS" in checks["api-keys"]["fix"]
    done = toolgym("doctor", "--port", free, "--host", "0.0.0.0", "--backend", "process", "--json",
                   env={"TOOLGYM_API_KEYS": "a,b", "TOOLGYM_API_KEY": "c"})
    assert done.returncode == 0
    checks = {c["name"]: c for c in one_json(done.stdout)["checks"]}
    assert checks["api-keys"]["status"] == "warn" and "401" in checks["api-keys"]["detail"]


def test_help_lists_the_exit_codes() -> None:
    done = toolgym("--help")
    assert done.returncode == 0
    for line in ("0    ok", "2    usage", "3    no server", "4    blocked", "130  interrupted"):
        assert line in done.stdout
    assert toolgym("episodes").returncode == 2  # a missing subcommand is a usage error


def test_the_clients_read_toolgym_base_url(served: tuple[str, dict[str, Any]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, ids = served
    monkeypatch.setenv("TOOLGYM_BASE_URL", base_url)
    with EnvClient() as client:
        assert client.episode(ids["right1"])["status"] == "finished"
    monkeypatch.setenv("TOOLGYM_BASE_URL", "http://127.0.0.1:9")
    with EnvClient(base_url) as client:  # an explicit URL wins over the variable
        assert client.health() == {"status": "ok"}


def test_eval_json_and_a_refused_connection(server_factory: Callable[..., Any]) -> None:
    base_url = server_factory("process", warm_pool_size=0).base_url
    done = toolgym("eval", "--policy", "random", "--limit", "2", "--json", env={"TOOLGYM_BASE_URL": base_url})
    assert done.returncode == 0, done.stderr
    summary = one_json(done.stdout)
    assert (summary["env_id"], summary["split"], summary["episodes"], summary["errors"]) == (TU, "test", 2, 0)
    overall = summary["rows"][-1]
    assert overall["label"] == "overall" and overall["episodes"] == 2
    assert {"solve_precision", "solve_rate", "solve_f1", "mean_return"} <= set(overall)

    url = f"http://127.0.0.1:{free_port()}"
    done = toolgym("eval", "--policy", "random", "--base-url", url)
    assert done.returncode == 3 and f"is a server running at {url}?" in done.stderr
