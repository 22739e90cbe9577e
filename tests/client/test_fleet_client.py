"""``FleetClient`` and ``AsyncFleetClient`` over several real servers on loopback.

Resets spread over the servers; every later call on an episode reaches the server that made
it (the others do not know it: they answer 404); a full server's 503 and a stopped server
send resets elsewhere; an episode on a stopped server raises ``EpisodeLost`` in bounded time.
FunctionCall episodes need no sandbox, so the ``process`` backend is enough here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from scripted_policies import CODEMATH, FUNCTIONCALL, FUNCTIONCALL_TASKS, tool_calls_text

from toolgym import errors
from toolgym.client import AsyncFleetClient, EnvClient, FleetClient, RetryPolicy
from toolgym.client._routing import replica_of
from toolgym.server.embedded import free_port

Server = Callable[..., Any]
TASK = "fc-math-001"
FAST = RetryPolicy(max_retries=2, backoff_s=0.05, max_backoff_s=0.2)


def gold_action() -> str:
    return tool_calls_text(FUNCTIONCALL_TASKS[TASK]["gold_calls"])


def holders(urls: list[str], episode_id: str) -> list[str]:
    """The servers that know ``episode_id``, asked directly."""
    found = []
    for url in urls:
        with EnvClient(url, retry=RetryPolicy(max_retries=0)) as client:
            try:
                client.episode(episode_id)
            except errors.EpisodeNotFound:
                continue
            found.append(url)
    return found


def test_resets_spread_and_every_call_reaches_the_episodes_own_server(server_factory: Server) -> None:
    servers = [server_factory("process", warm_pool_size=0) for _ in range(3)]
    urls = [s.base_url for s in servers]
    with FleetClient(urls, retry=FAST) as fleet:
        episodes = [fleet.reset(FUNCTIONCALL, TASK) for _ in range(6)]
        owners = {e.episode_id: fleet.base_url_of(e.episode_id) for e in episodes}
        assert Counter(owners.values()) == dict.fromkeys(urls, 2)
        for episode in episodes:
            assert holders(urls, episode.episode_id) == [owners[episode.episode_id]]
            step = fleet.step(episode.episode_id, gold_action())
            assert (step.reward, step.terminated) == (1.0, True)
            assert fleet.episode(episode.episode_id)["status"] == "finished"
            assert len(fleet.trajectory(episode.episode_id)) == 2
            fleet.close(episode.episode_id)


def test_fork_lives_on_the_same_server(server_factory: Server) -> None:
    urls = [server_factory("process", warm_pool_size=0).base_url for _ in range(2)]
    with FleetClient(urls, retry=FAST) as fleet:
        first = fleet.reset(FUNCTIONCALL, TASK)
        fork = fleet.fork(first.episode_id)
        assert holders(urls, fork.episode_id) == [fleet.base_url_of(first.episode_id)]
        assert fleet.step(fork.episode_id, gold_action()).reward == 1.0


def test_a_full_server_sends_resets_to_the_others(server_factory: Server) -> None:
    full = server_factory("process", warm_pool_size=0, max_live_episodes=1)
    roomy = server_factory("process", warm_pool_size=0)
    with FleetClient([full.base_url, roomy.base_url], retry=FAST) as fleet:
        owners = Counter(fleet.base_url_of(fleet.reset(FUNCTIONCALL, TASK).episode_id) for _ in range(4))
    assert owners == {full.base_url: 1, roomy.base_url: 3}


def test_when_every_server_is_full_the_reset_fails_in_bounded_time(server_factory: Server) -> None:
    urls = [server_factory("process", warm_pool_size=0, max_live_episodes=1).base_url for _ in range(2)]
    with FleetClient(urls, retry=FAST) as fleet:
        fleet.reset(FUNCTIONCALL, TASK)
        fleet.reset(FUNCTIONCALL, TASK)
        started = time.monotonic()
        with pytest.raises(errors.Unavailable, match="every ToolGym server refused") as caught:
            fleet.reset(FUNCTIONCALL, TASK)
        assert time.monotonic() - started < 10
    assert all(url in caught.value.message for url in urls)


def test_a_server_that_is_down_from_the_start_is_skipped(server_factory: Server) -> None:
    alive = server_factory("process", warm_pool_size=0)
    dead = f"http://127.0.0.1:{free_port()}"
    with FleetClient([dead, alive.base_url], retry=FAST) as fleet:
        owners = {fleet.base_url_of(fleet.reset(FUNCTIONCALL, TASK).episode_id) for _ in range(3)}
    assert owners == {alive.base_url}


def test_a_server_stopped_mid_run_loses_its_episodes_and_only_them(server_factory: Server) -> None:
    doomed = server_factory("process", warm_pool_size=0)
    survivor = server_factory("process", warm_pool_size=0)
    with FleetClient([doomed.base_url, survivor.base_url], retry=FAST) as fleet:
        episodes = [fleet.reset(FUNCTIONCALL, TASK).episode_id for _ in range(4)]
        lost = [e for e in episodes if fleet.base_url_of(e) == doomed.base_url]
        kept = [e for e in episodes if e not in lost]
        assert len(lost) == len(kept) == 2
        doomed.stop()

        started = time.monotonic()
        with pytest.raises(errors.EpisodeLost) as caught:
            fleet.step(lost[0], gold_action())
        assert time.monotonic() - started < 10
        assert (caught.value.episode_id, caught.value.base_url) == (lost[0], doomed.base_url)
        assert not caught.value.retryable
        # The other episode of that server fails at once: its replica is known to be gone.
        started = time.monotonic()
        with pytest.raises(errors.EpisodeLost):
            fleet.episode(lost[1])
        assert time.monotonic() - started < 0.5
        fleet.close(lost[1])  # an episode lost with its server is already over

        for episode_id in kept:
            assert fleet.step(episode_id, gold_action()).reward == 1.0
        fresh = [fleet.reset(FUNCTIONCALL, TASK).episode_id for _ in range(3)]
        assert {fleet.base_url_of(e) for e in fresh} == {survivor.base_url}


def test_a_slow_step_on_a_live_server_is_not_a_lost_episode(server_factory: Server) -> None:
    """A read timeout means the server is busy, not gone: the episode stays reachable."""
    url = server_factory("process", warm_pool_size=0).base_url
    with FleetClient([url], retry=RetryPolicy(max_retries=0), timeout_s=1.0) as fleet:
        episode = fleet.reset(CODEMATH)
        with pytest.raises(errors.Unavailable) as caught:
            fleet.step(episode.episode_id, "```python\nimport time\ntime.sleep(4)\nprint(1)\n```")
        assert not isinstance(caught.value, errors.EpisodeLost)
        time.sleep(4)
        assert fleet.episode(episode.episode_id)["episode_id"] == episode.episode_id


def test_errors_that_another_server_would_repeat_are_not_failed_over(server_factory: Server) -> None:
    urls = [server_factory("process", warm_pool_size=0).base_url for _ in range(2)]
    with FleetClient(urls, retry=FAST) as fleet:
        with pytest.raises(errors.EnvNotFound):
            fleet.reset("toolgym/FunctionCal-v0")
        with pytest.raises(errors.EpisodeNotFound):
            fleet.step("ep-abcdef-0123456789abcdef0123", "hi")


def test_episode_ids_name_a_replica_the_client_can_read(server_factory: Server) -> None:
    url = server_factory("process", warm_pool_size=0).base_url
    with EnvClient(url) as client:
        episode_id = client.reset(FUNCTIONCALL, TASK).episode_id
    assert replica_of(episode_id)
    assert replica_of("not-an-episode") is None


def test_a_fleet_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FleetClient([])


@pytest.mark.parametrize("protocol", ["http", "ws"])
async def test_async_fleet_spreads_routes_and_reports_a_lost_server(server_factory: Server, protocol: str) -> None:
    doomed = server_factory("process", warm_pool_size=0)
    survivor = server_factory("process", warm_pool_size=0)
    urls = [doomed.base_url, survivor.base_url]
    async with AsyncFleetClient(urls, retry=FAST, protocol=protocol) as fleet:  # type: ignore[arg-type]
        episodes = [(await fleet.reset(FUNCTIONCALL, TASK)).episode_id for _ in range(4)]
        owners = {e: fleet.base_url_of(e) for e in episodes}
        assert Counter(owners.values()) == dict.fromkeys(urls, 2)
        for episode_id in episodes:
            assert holders(urls, episode_id) == [owners[episode_id]]
        doomed.stop()
        for episode_id in episodes:
            if owners[episode_id] == survivor.base_url:
                assert (await fleet.step(episode_id, gold_action())).reward == 1.0
            else:
                with pytest.raises(errors.EpisodeLost):
                    await fleet.step(episode_id, gold_action())
        fresh = await fleet.reset(FUNCTIONCALL, TASK)
        assert fleet.base_url_of(fresh.episode_id) == survivor.base_url
