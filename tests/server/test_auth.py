"""Authentication over real HTTP, and the settings that refuse an open server.

The server here uses the process backend: nothing in auth depends on Docker, so these run
on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_kit import ENV, TASKS_URL, Server, ServerFarm, call, expect_error, reset, step, tags, tool_message

from toolgym.server import Settings, create_app

KEY, FILE_KEY = "s3cret-key-one", "s3cret-key-from-file"


@pytest.fixture(scope="module")
def server(farm: ServerFarm, tmp_path_factory: pytest.TempPathFactory) -> Server:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# one key per line\n{FILE_KEY}  # the trainer\n\n", encoding="utf-8")
    return farm.start("process", api_keys=(KEY,), api_keys_file=str(keys_file), warm_pool_size=0)


@pytest.fixture(scope="module")
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def authed(server: Server) -> Iterator[httpx.Client]:
    with server.client(KEY) as c:
        yield c


@pytest.fixture(scope="module")
def episode(authed: httpx.Client) -> str:
    return str(reset(authed, "tu-single-1")["episode_id"])


def routes(episode_id: str) -> list[tuple[str, str, object]]:
    return [
        ("GET", "/v1/envs", None),
        ("GET", TASKS_URL, None),
        ("GET", f"{TASKS_URL}/stats", None),
        ("POST", TASKS_URL, {"tasks": [{"messages": []}]}),
        ("POST", "/v1/episodes", {"env_id": ENV, "task_id": "tu-single-1"}),
        ("GET", "/v1/episodes", None),
        ("GET", f"/v1/episodes/{episode_id}", None),
        ("GET", f"/v1/episodes/{episode_id}/trajectory", None),
        ("POST", f"/v1/episodes/{episode_id}/step", {"action": tags(call("get_city_info", city="Varnholt"))}),
        ("POST", f"/v1/episodes/{episode_id}/fork", {}),
        ("DELETE", f"/v1/episodes/{episode_id}", None),
        # An unknown episode is a 401 too: without a key nothing can be probed.
        ("GET", "/v1/episodes/ep-000000-unknown", None),
    ]


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Bearer", "Basic czNjcmV0LWtleS1vbmU=",
                                    f"Token {KEY}", KEY, f"Bearer {KEY}x", f"Bearer {KEY[:-1]}"])
def test_missing_or_wrong_key_is_401(
    server: Server, authed: httpx.Client, episode: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
        for method, url, body in routes(episode):
            err = expect_error(c.request(method, url, json=body), 401, "unauthorized")
            assert KEY not in err["message"]
    st = authed.get(f"/v1/episodes/{episode}").json()
    assert st["turn"] == 0 and st["status"] == "live", "refused requests must not act"
    assert server.manager.open_episodes == 1


def test_good_keys_work(server: Server, authed: httpx.Client, episode: str) -> None:
    result = step(authed, episode, tags(call("get_city_info", city="Varnholt")))
    assert result["reward"] == 1.0 and '"population": 48210' in tool_message(result)
    with server.client(FILE_KEY) as from_file:
        other = reset(from_file, "tu-single-2")["episode_id"]
        assert step(from_file, other, "no idea")["terminated"]
        # Keys are separate owners: each sees only its own episodes.
        expect_error(from_file.get(f"/v1/episodes/{episode}"), 404, "episode_not_found")
        assert [e["episode_id"] for e in from_file.get("/v1/episodes").json()["episodes"]] == [other]
    with httpx.Client(base_url=server.base_url, headers={"authorization": f"bearer   {KEY}"}) as loose:
        assert loose.get("/v1/envs").status_code == 200, "the scheme is case-insensitive"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_and_metrics_need_no_key(anonymous: httpx.Client, path: str) -> None:
    r = anonymous.get(path)
    assert r.status_code == 200, r.text
    r = anonymous.get(path, headers={"Authorization": "Bearer wrong-key"})
    assert r.status_code == 200, "a bad key on an open route is ignored, not refused"


# --- Settings.validate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "example.com", "192.168.1.20"])
def test_settings_refuse_an_open_address_without_keys(host: str) -> None:
    with pytest.raises(ValueError, match="insecure-no-auth"):
        Settings(host=host).validate()
    with pytest.raises(ValueError, match="without API keys"):
        create_app(Settings(host=host))
    Settings(host=host, api_keys=("k",)).validate()
    Settings(host=host, insecure_no_auth=True).validate()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_settings_allow_loopback_without_keys(host: str) -> None:
    settings = Settings(host=host)
    settings.validate()
    assert settings.auth_enabled is False


def test_settings_read_keys_from_a_file_and_the_environment(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nalpha\n  beta # trailing\n\nalpha\n", encoding="utf-8")
    settings = Settings(host="0.0.0.0", api_keys_file=str(keys))
    settings.validate()
    assert settings.all_api_keys() == ("alpha", "beta")
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n", encoding="utf-8")
    with pytest.raises(ValueError):
        Settings(host="0.0.0.0", api_keys_file=str(empty)).validate()
    from_env = Settings.from_env({"TOOLGYM_HOST": "0.0.0.0", "TOOLGYM_API_KEYS": "one, two,,"})
    assert from_env.api_keys == ("one", "two")
    from_env.validate()
    with pytest.raises(ValueError):
        Settings.from_env({"TOOLGYM_HOST": "0.0.0.0"}).validate()
    Settings.from_env({"TOOLGYM_HOST": "0.0.0.0", "TOOLGYM_INSECURE_NO_AUTH": "true"}).validate()
    with pytest.raises(ValueError, match="TOOLGYM_INSECURE_NO_AUTH"):
        Settings.from_env({"TOOLGYM_INSECURE_NO_AUTH": "maybe"})
