"""The episode manager: joins an env family's ``Episode`` to a sandbox, for many owners.

It owns the lifecycle rules of DESIGN.md, and nothing about HTTP:

- reset draws or looks up a task, takes a warm sandbox, and records the episode;
- steps on one episode are serialized; each step is written to the store before it is
  answered; a retried step (same ``Idempotency-Key``, or an ``expected_turn`` already played)
  returns the stored result instead of acting twice;
- a sandbox that fails mid-step is replaced and the step retried once on the new one (the
  env leaves its state untouched when the runner raises); a second failure is a 503, never
  a reward;
- finished episodes release their sandbox at once; idle ones are closed by the reaper;
- on shutdown, resets are refused, in-flight steps finish, and every sandbox is removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from toolgym.actions import action_from_wire, action_to_wire
from toolgym.envs.base import Action, EnvFamily, Episode, Task
from toolgym.envs.runner import RunRequest, RunResult
from toolgym.errors import (
    AtCapacity,
    EpisodeFinished,
    EpisodeNotFound,
    QuotaExceeded,
    SandboxError,
    ShuttingDown,
    TurnMismatch,
    ValidationFailed,
)
from toolgym.server.metrics import Metrics
from toolgym.server.sandbox.base import Sandbox
from toolgym.server.sandbox.pool import SandboxPool, new_episode_id
from toolgym.server.settings import Settings
from toolgym.server.store import Store
from toolgym.server.tasks import TaskRegistry

__all__ = ["EpisodeManager", "LiveEpisode"]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMON_OPTIONS = {
    "split": "which split reset draws a task from when no task_id is given (default train)",
    "sampler": "how reset draws it: uniform (default) or frontier",
}


@dataclass
class SandboxSlot:
    """Where an episode's env runs code. The env holds ``slot.run``; the manager swaps the
    sandbox behind it when one fails, and the env never notices."""

    episode_id: str
    sandbox: Sandbox | None = None

    def run(self, request: RunRequest) -> RunResult:
        if self.sandbox is None:
            raise SandboxError(f"episode {self.episode_id} has no sandbox")
        return self.sandbox.run(request)

    __call__ = run

    def run_many(self, requests: Sequence[RunRequest]) -> list[RunResult]:
        """A turn's parallel calls at once (``Sandbox.run_many``); the env finds it via ``run_all``."""
        if self.sandbox is None:
            raise SandboxError(f"episode {self.episode_id} has no sandbox")
        return self.sandbox.run_many(requests)


@dataclass
class LiveEpisode:
    id: str
    owner: str
    family: EnvFamily
    task: Task
    options: dict[str, Any]
    seed: int | None
    env: Episode
    slot: SandboxSlot
    reset_result: dict[str, Any]
    created: float
    last_active: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    idempotency: dict[str, int] = field(default_factory=dict)
    total_reward: float = 0.0
    finished: bool = False
    reason: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def turn(self) -> int:
        return len(self.steps)


class EpisodeManager:
    def __init__(
        self,
        settings: Settings,
        families: dict[str, EnvFamily],
        tasks: TaskRegistry,
        pool: SandboxPool | None,
        store: Store,
        metrics: Metrics,
        *,
        replica: str,
    ) -> None:
        self.settings = settings
        self.families = families
        self.tasks = tasks
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.replica = replica
        self._live: dict[str, LiveEpisode] = {}
        self._open: dict[str, LiveEpisode] = {}
        """The unfinished ones of ``_live`` (finished episodes stay in ``_live`` for an hour;
        counting open ones must not walk them all on every reset)."""
        self._limiter = anyio.CapacityLimiter(settings.worker_threads)
        self._accepting = True
        self._in_flight = 0
        self._starting: list[str] = []
        """Owners of resets between the capacity check and the episode's registration."""
        self._resets_by_key: dict[tuple[str, str], asyncio.Future[LiveEpisode]] = {}
        """(owner, Idempotency-Key) -> that reset, so a retried reset never makes a second episode."""
        self._reaper: asyncio.Task[None] | None = None

    # --- plumbing -----------------------------------------------------------------------------
    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _open_count(self, owner: str | None = None) -> int:
        """Open episodes, counting resets under way (their slot is taken before they await)."""
        if owner is None:
            return len(self._open) + len(self._starting)
        live = sum(1 for e in self._open.values() if e.owner == owner)
        return live + sum(1 for o in self._starting if o == owner)

    async def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        self._reaper = asyncio.create_task(self._reap_loop(), name="toolgym-reaper")

    # --- reset ------------------------------------------------------------------------------
    async def reset_once(
        self, owner: str, idempotency_key: str | None, env_id: str, task_id: str | None, seed: int | None,
        options: dict[str, Any] | None,
    ) -> LiveEpisode:
        """``reset``, answered from the first attempt when the same key comes again (also
        while that attempt is still running). A failed attempt is forgotten: retry it."""
        if idempotency_key is None:
            return await self.reset(owner, env_id, task_id, seed, options)
        slot = (owner, idempotency_key)
        pending = self._resets_by_key.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LiveEpisode] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unawaited
        self._resets_by_key[slot] = future
        try:
            live = await self.reset(owner, env_id, task_id, seed, options)
        except BaseException as exc:
            self._resets_by_key.pop(slot, None)
            future.set_exception(exc)
            raise
        future.set_result(live)
        return live

    async def reset(
        self, owner: str, env_id: str, task_id: str | None, seed: int | None, options: dict[str, Any] | None,
        *, parent: tuple[str, int] | None = None,
    ) -> LiveEpisode:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; reset on another replica", retry_after_s=5.0)
        family = self.tasks.family(env_id)
        raw = dict(options or {})
        split = raw.pop("split", None)
        sampler = raw.pop("sampler", "uniform")
        if sampler not in ("uniform", "frontier"):
            raise ValidationFailed(f"option 'sampler' must be uniform or frontier, got {sampler!r}", option="sampler")
        rng = random.Random(seed) if seed is not None else random.Random(secrets.randbits(64))
        if task_id is not None:
            task = self.tasks.get(family.env_id, task_id)
            if split is not None and split != task.split:
                raise ValidationFailed(f"task {task_id!r} is in split {task.split!r}, not {split!r}")
        else:
            if split is None:
                split = "train"
            if not isinstance(split, str):
                raise ValidationFailed("option 'split' must be a string", option="split")
            task = self._sample(family.env_id, split, sampler, rng)
        parsed = family.parse_options(raw, task.split)
        if self._open_count() >= self.settings.max_live_episodes:
            raise AtCapacity(
                f"{self.settings.max_live_episodes} episodes are open (max_live_episodes); retry later",
                retry_after_s=2.0,
            )
        limit = self.settings.max_live_episodes_per_key
        if limit and self._open_count(owner) >= limit:
            raise QuotaExceeded(f"this API key has {limit} open episodes (max_live_episodes_per_key); close some")
        self._starting.append(owner)  # hold the slot across the awaits below
        try:
            started = time.perf_counter()
            sandbox: Sandbox | None = None
            if family.needs_sandbox:
                if self.pool is None:
                    raise SandboxError(f"env {family.env_id} needs a sandbox and this server has no backend")
                episode_id, sandbox = await self._blocking(self.pool.acquire, owner)
            else:
                episode_id = new_episode_id(self.replica)
            env_rng = random.Random(rng.getrandbits(64))
            slot = SandboxSlot(episode_id, sandbox)
            try:
                env = family.start(task, parsed, slot if family.needs_sandbox else None, env_rng)
                observation, info = await self._blocking(env.reset)
                live = LiveEpisode(
                    id=episode_id, owner=owner, family=family, task=task, options={**raw, "split": task.split},
                    seed=seed, env=env, slot=slot, created=time.time(), last_active=time.monotonic(),
                    reset_result={"observation": observation.to_wire(), "info": info},
                )
                await self._blocking(
                    lambda: self.store.add_episode(
                        episode_id=episode_id, owner=owner, env_id=family.env_id, task_id=task.id, split=task.split,
                        seed=seed, options=live.options, reset_result=live.reset_result,
                        parent_id=parent[0] if parent else None, parent_turn=parent[1] if parent else None,
                    )
                )
            except BaseException:
                if sandbox is not None:
                    await self._blocking(sandbox.close)
                raise
            self._live[episode_id] = live
            self._open[episode_id] = live
        finally:
            self._starting.remove(owner)
        self.metrics.episodes_started.labels(family.env_id).inc()
        self.metrics.reset_seconds.labels(family.env_id).observe(time.perf_counter() - started)
        self.metrics.live_episodes.set(self._open_count())
        return live

    def _sample(self, env_id: str, split: str, sampler: str, rng: random.Random) -> Task:
        from toolgym.server.frontier import draw_task

        return draw_task(self.tasks, self.store, env_id, split, sampler, rng)

    # --- step -------------------------------------------------------------------------------
    async def step(
        self, owner: str, episode_id: str, action: Action, *, expected_turn: int | None = None,
        idempotency_key: str | None = None, mean_logprob: float | None = None,
    ) -> dict[str, Any]:
        live = self._live.get(episode_id)
        if live is None or live.owner != owner:
            # Closed (DELETE, the idle reaper) and forgotten: its row says it has ended.
            row = await self._blocking(self.store.get_episode, episode_id)
            if row is not None and row.owner == owner:
                raise EpisodeFinished(episode_id, row.reason or row.status)
            raise EpisodeNotFound(episode_id)
        async with live.lock:
            live.last_active = time.monotonic()
            if idempotency_key is not None and idempotency_key in live.idempotency:
                return live.steps[live.idempotency[idempotency_key]]["result"]  # type: ignore[no-any-return]
            if expected_turn is not None:
                if expected_turn < live.turn:
                    return live.steps[expected_turn]["result"]  # type: ignore[no-any-return]
                if expected_turn > live.turn:
                    raise TurnMismatch(episode_id, expected_turn, live.turn)
            if live.finished:
                raise EpisodeFinished(episode_id, live.reason)
            self._in_flight += 1
            try:
                return await self._do_step(live, action, idempotency_key, mean_logprob)
            finally:
                self._in_flight -= 1

    def _replace_sandbox(self, live: LiveEpisode) -> None:
        assert self.pool is not None
        old, live.slot.sandbox = live.slot.sandbox, None
        if old is not None:
            old.close()
        live.slot.sandbox = self.pool.replace(live.id, live.owner)

    async def _do_step(
        self, live: LiveEpisode, action: Action, idempotency_key: str | None, mean_logprob: float | None,
    ) -> dict[str, Any]:
        env_id = live.family.env_id
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                step = await self._blocking(live.env.step, action)
                break
            except SandboxError as exc:
                self.metrics.sandbox_failures.labels(env_id).inc()
                log.warning("episode %s: %s (attempt %d)", live.id, exc.message, attempt)
                try:
                    await self._blocking(self._replace_sandbox, live)
                except SandboxError as again:
                    raise SandboxError(
                        f"episode {live.id}: the sandbox failed and no new one could be started"
                        f" ({again.message}); retry the step", retry_after_s=2.0,
                    ) from exc
                if attempt == 2:
                    raise SandboxError(
                        f"episode {live.id}: the sandbox failed twice during this step; it has been"
                        " replaced, retry the step", retry_after_s=1.0,
                    ) from exc
        observation = step.observation.to_wire()
        if self._cap_output(observation):
            step.info["output_truncated"] = True
        result = {
            "observation": observation,
            "reward": float(step.reward),
            "terminated": bool(step.terminated),
            "truncated": bool(step.truncated),
            "info": step.info,
        }
        turn = live.turn
        total = live.total_reward + float(step.reward)
        done = step.terminated or step.truncated
        reason = step.info.get("reason") if done else None
        await self._blocking(
            lambda: self.store.add_step(
                live.id, turn, action_to_wire(action), result, mean_logprob=mean_logprob,
                idempotency_key=idempotency_key, total_reward=total,
                status="finished" if done else "live", reason=reason,
                success=live.family.episode_success(total, step.info) if done else None,
            )
        )
        live.steps.append({"action": action_to_wire(action), "result": result, "mean_logprob": mean_logprob})
        live.total_reward = total
        if idempotency_key is not None:
            live.idempotency[idempotency_key] = turn
        self.metrics.steps.labels(env_id, str(step.info.get("status", "ok"))).inc()
        self.metrics.step_seconds.labels(env_id).observe(time.perf_counter() - started)
        if done:
            live.finished = True
            live.reason = reason
            self.metrics.episodes_finished.labels(env_id, str(reason)).inc()
            self.metrics.episode_return.labels(env_id).observe(total)
            await self._release(live)
        return result

    def _cap_output(self, observation: dict[str, Any]) -> bool:
        """Cut message text over ``max_output_chars`` (what the policy is shown; the env has
        already verified the whole output). Returns whether anything was cut."""
        cap = self.settings.max_output_chars
        cut = False
        for message in observation.get("messages", []):
            content = message.get("content")
            if isinstance(content, str) and len(content) > cap:
                dropped = len(content) - cap
                message["content"] = content[:cap] + f"\n[... {dropped} more characters cut: max_output_chars]"
                cut = True
        return cut

    async def _release(self, live: LiveEpisode) -> None:
        """Every way an episode ends (last step, close, reaper, shutdown) comes through here."""
        self._open.pop(live.id, None)
        sandbox, live.slot.sandbox = live.slot.sandbox, None
        if sandbox is not None:
            await self._blocking(sandbox.close)
        self.metrics.live_episodes.set(self._open_count())

    # --- state, close, fork -------------------------------------------------------------------
    def state(self, owner: str, episode_id: str) -> dict[str, Any]:
        live = self._live.get(episode_id)
        if live is not None and live.owner == owner:
            return {
                "episode_id": live.id, "env_id": live.family.env_id, "task_id": live.task.id,
                "split": live.task.split, "seed": live.seed, "options": live.options, "turn": live.turn,
                "status": "finished" if live.finished else "live", "reason": live.reason,
                "total_reward": live.total_reward, "reset": live.reset_result,
                "steps": [{"turn": i, "action": s["action"], **s["result"]} for i, s in enumerate(live.steps)],
            }
        row = self.store.get_episode(episode_id)
        if row is None or row.owner != owner:
            raise EpisodeNotFound(episode_id)
        return {
            "episode_id": row.id, "env_id": row.env_id, "task_id": row.task_id, "split": row.split,
            "seed": row.seed, "options": row.options, "turn": row.turn, "status": row.status,
            "reason": row.reason, "total_reward": row.total_reward, "reset": row.reset_result,
            "steps": [{k: v for k, v in s.items() if k != "mean_logprob"} for s in self.store.steps(row.id)],
        }

    async def close(self, owner: str, episode_id: str, reason: str = "closed") -> bool:
        """Close an episode (its sandbox is destroyed). False if it was already finished."""
        live = self._live.get(episode_id)
        if live is None or live.owner != owner:
            row = self.store.get_episode(episode_id)
            if row is None or row.owner != owner:
                raise EpisodeNotFound(episode_id)
            return False
        async with live.lock:
            was_open = not live.finished
            if was_open:
                live.finished = True
                live.reason = reason
                await self._blocking(self.store.finish_episode, live.id, "finished", reason)
                self.metrics.episodes_finished.labels(live.family.env_id, reason).inc()
            await self._release(live)
        self._live.pop(episode_id, None)
        return was_open

    async def fork(self, owner: str, episode_id: str, turn: int | None) -> LiveEpisode:
        """A new episode at ``turn`` of this one (default: its current turn), built by replaying
        the recorded actions into a fresh episode and sandbox."""
        source = self.state(owner, episode_id)
        upto = source["turn"] if turn is None else turn
        if not 0 <= upto <= source["turn"]:
            raise ValidationFailed(f"turn must be between 0 and {source['turn']}, got {turn}")
        options = dict(source["options"])
        child = await self.reset(
            owner, source["env_id"], source["task_id"], source["seed"], options, parent=(episode_id, upto)
        )
        try:
            for recorded in source["steps"][:upto]:
                result = await self.step(owner, child.id, action_from_wire(recorded["action"]))
                if result["reward"] != recorded["reward"]:
                    log.warning("fork of %s diverged at turn %d", episode_id, recorded["turn"])
        except BaseException:
            await self.close(owner, child.id, "fork_failed")
            raise
        return child

    def list_episodes(
        self, owner: str, status: str | None, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = self.store.list_episodes(owner, status=status, offset=offset, limit=limit)
        return [
            {"episode_id": r.id, "env_id": r.env_id, "task_id": r.task_id, "split": r.split, "turn": r.turn,
             "status": r.status, "reason": r.reason, "total_reward": r.total_reward}
            for r in rows
        ], total

    # --- housekeeping -------------------------------------------------------------------------
    async def reap_once(self) -> int:
        """Close idle episodes and forget long-finished ones; returns how many were closed."""
        now = time.monotonic()
        closed = 0
        for live in list(self._live.values()):
            idle = now - live.last_active
            if not live.finished and idle > self.settings.idle_timeout_s and not live.lock.locked():
                await self.close(live.owner, live.id, "idle_timeout")
                closed += 1
            elif live.finished and idle > self.settings.finished_retention_s:
                self._live.pop(live.id, None)
        for slot, future in list(self._resets_by_key.items()):
            if future.done() and not future.exception() and future.result().id not in self._live:
                del self._resets_by_key[slot]
        return closed

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper pass failed")

    async def stop(self) -> None:
        """Refuse resets, let in-flight steps finish (up to ``shutdown_grace_s``), store
        everything and remove every sandbox."""
        self._accepting = False
        if self._reaper is not None:
            self._reaper.cancel()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for live in list(self._live.values()):
            if not live.finished:
                live.finished = True
                live.reason = "shutdown"
                await self._blocking(self.store.finish_episode, live.id, "interrupted", None)
            await self._release(live)
        if self.pool is not None:
            await self._blocking(self.pool.stop)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def open_episodes(self) -> int:
        return self._open_count()
