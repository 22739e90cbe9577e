"""The episode manager: joins an env family's ``Episode`` to a sandbox, for many owners.

It owns the lifecycle rules of docs/architecture.md ("The request path"), and nothing about HTTP:

- reset draws or looks up a task, takes a warm sandbox, and records the episode;
- steps on one episode are serialized; each step is written to the store before it is
  answered; a retried step (same ``Idempotency-Key``, or an ``expected_turn`` already played)
  returns the stored result instead of acting twice;
- a sandbox that fails mid-step is replaced and the step retried once on the new one (the
  env leaves its state untouched when the runner raises); a second failure is a 503, never
  a reward;
- a step whose store write fails (disk full) is refused with a retryable 503 and the episode's
  in-memory copy, which has played it, is dropped: the next request rebuilds the episode from
  the store by replay, so what was acknowledged and what the env holds never part;
- a reset or step, once begun, runs to its end even if its request is cancelled (a client gone,
  under a server that cancels such requests): it runs in its own shielded task, so it is never
  cut between the env playing a step and the store recording it, nor between a sandbox's
  creation and its episode's registration;
- finished episodes release their sandbox at once: it goes to a bounded background worker
  (``toolgym.server.sandbox.teardown``), so the last step and DELETE answer without waiting
  for the container to be removed; idle episodes are closed by the reaper;
- blocking work runs on worker threads (``run_blocking``): a sandboxed family's reset (the
  sandbox taken, the env started and reset in one call) and each of its steps. A family that
  needs no sandbox (``needs_sandbox`` False: FunctionCall) resets and steps on the event loop,
  since its work is pure computation of tens of microseconds, less than a thread round trip;
- every store write goes through one writer thread that commits in groups
  (``toolgym.server.writer``); a step is answered only after the commit that holds it has
  returned, and no database call runs on the event loop (reads go to a worker thread);
- on shutdown, resets are refused, in-flight steps finish, every write is committed, and
  every sandbox is removed (the teardown queue is drained).
- after a crash, an episode the dead run left live is rebuilt on its next request by replaying
  its stored steps on a new sandbox, each checked against its record (``toolgym.server.resume``);
  same id, owner, turn and idempotency keys, or ``interrupted`` if the replay parts from the record.
- on a database several replicas share, each episode row names the replica that holds it: a
  crashed run's episode is claimed before it is rebuilt (never one a live replica holds), and
  step and finish writes are fenced by the holder, so a replica that lost its claim writes nothing.

The public API returns the dataclasses of ``toolgym.server.episode_types``; ``LiveEpisode``
and ``SandboxSlot`` are the manager's own bookkeeping.

Over the project's ~400-line guideline, on purpose: every method shares one in-memory state
(``_live``, ``_open``, ``_starting``, the per-episode locks, the writer, the teardown queue),
and its invariants (a reset's slot counted across its awaits, one ``_release`` for every end,
the order of shutdown) hold because one class owns it. The movable parts are small and lean
on it: fork starts its child through ``_start_episode``, the reaper walks ``_live``; moving
them would spread those rules without reaching 400 lines. What needs no state lives apart:
``live_episode``, ``episode_types``, ``writer``, ``resume`` and ``sandbox.teardown``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.to_thread

from toolgym.actions import action_from_wire, action_to_wire
from toolgym.envs.base import Action, EnvFamily, Episode, Observation, Task
from toolgym.errors import (
    AtCapacity,
    EpisodeFinished,
    EpisodeNotFound,
    QuotaExceeded,
    SandboxError,
    ShuttingDown,
    StoreUnavailable,
    TurnMismatch,
    Unavailable,
    ValidationFailed,
)
from toolgym.server.episode_types import (
    EpisodePage,
    EpisodeSnapshot,
    ManagerStatus,
    RecordedStep,
    ResetResult,
    Sample,
    StepResult,
)
from toolgym.server.live_episode import LiveEpisode, SandboxSlot, stored_page, stored_snapshot
from toolgym.server.metrics import Metrics
from toolgym.server.resume import rebuild, result_of
from toolgym.server.sandbox.base import Sandbox
from toolgym.server.sandbox.pool import SandboxPool, new_episode_id
from toolgym.server.sandbox.teardown import Teardown
from toolgym.server.settings import Settings
from toolgym.server.store import Claim, NotHolder, Store
from toolgym.server.tasks import TaskRegistry
from toolgym.server.writer import StoreWriter

__all__ = ["EpisodeManager", "LiveEpisode"]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMON_OPTIONS = {
    "split": "which split reset draws a task from when no task_id is given (default train)",
    "sampler": "how reset draws it: uniform (default) or frontier",
}


TEARDOWN_WORKERS = 2
"""Parallel sandbox removals (Docker removes ~3-4 containers/s on 2 cores, whatever the count)."""
TEARDOWN_QUEUE = 256
"""Ended episodes' sandboxes that may wait for removal before closes remove their own."""


class EpisodeManager:
    """Episodes for many owners: reset, step, state, list, fork, close, and housekeeping."""

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
        self._resets_by_key: dict[tuple[str, str], asyncio.Future[ResetResult]] = {}
        """(owner, Idempotency-Key) -> that reset, so a retried reset never makes a second episode."""
        self._reaper: asyncio.Task[None] | None = None
        self._resuming: dict[str, asyncio.Future[LiveEpisode | None]] = {}
        """Episodes of a crashed run being rebuilt, so concurrent requests share one replay."""
        self._detached: dict[str, float] = {}
        """Episodes dropped by ``_detach`` -> when (Unix time): the reaper leaves them live as if
        their refused step had been stored, for one ``idle_timeout_s``."""
        self.resumed = 0
        """Episodes rebuilt by replay in this process (a crashed run's, or one whose step the store refused)."""
        self.replayed_steps = 0
        """Recorded steps those replays played again and found equal."""
        self._teardown = Teardown(workers=TEARDOWN_WORKERS, capacity=TEARDOWN_QUEUE)
        self._writer = StoreWriter(store, on_commit=self._committed)

    # --- plumbing -----------------------------------------------------------------------------
    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` on a worker thread, at most ``worker_threads`` at once.

        So the event loop never waits for I/O or CPU work.
        """
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    _blocking = run_blocking  # the manager's own shorthand (and the name older callers used)

    def _committed(self, writes: int, seconds: float) -> None:
        self.metrics.store_commit_writes.observe(writes)
        self.metrics.store_commit_seconds.observe(seconds)

    def _open_count(self, owner: str | None = None) -> int:
        """Open episodes, counting resets under way (their slot is taken before they await)."""
        if owner is None:
            return len(self._open) + len(self._starting)
        live = sum(1 for e in self._open.values() if e.owner == owner)
        return live + sum(1 for o in self._starting if o == owner)

    async def start(self) -> None:
        """Start the store writer, the teardown workers, the warm pool and the reaper."""
        self._writer.start()
        self._teardown.start()
        if self.pool is not None:
            self.pool.start()
        self._reaper = asyncio.create_task(self._reap_loop(), name="toolgym-reaper")

    # --- reset ------------------------------------------------------------------------------
    async def reset_once(
        self, owner: str, idempotency_key: str | None, env_id: str, task_id: str | None, seed: int | None,
        options: dict[str, Any] | None,
    ) -> ResetResult:
        """``reset``, answered from the first attempt when the same key comes again.

        That holds also while the first attempt is still running. A failed attempt is forgotten:
        retry it.
        """
        if idempotency_key is None:
            return await self.reset(owner, env_id, task_id, seed, options)
        slot = (owner, idempotency_key)
        pending = self._resets_by_key.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ResetResult] = asyncio.get_running_loop().create_future()
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
    ) -> ResetResult:
        """A new episode on ``env_id``; its first observation, answered once the episode is stored.

        The task is ``task_id``, or one drawn from the split and sampler named in ``options``.
        """
        return (await self._start_episode(owner, env_id, task_id, seed, options)).reset_result

    async def _start_episode(
        self, owner: str, env_id: str, task_id: str | None, seed: int | None, options: dict[str, Any] | None,
        *, parent: tuple[str, int] | None = None,
    ) -> LiveEpisode:
        """``_open_episode``, shielded from its request's cancellation.

        A sandbox made on a worker thread would be dropped, unowned, by a cancellation that lands
        when the thread returns; so a reset, once begun, runs to its end in its own task and
        ends as an episode (listed, closed by the reaper if nobody comes) or as nothing.
        """
        opening = asyncio.ensure_future(self._open_episode(owner, env_id, task_id, seed, options, parent=parent))
        opening.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unawaited
        return await asyncio.shield(opening)

    async def _open_episode(
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
            task = await self._blocking(self._sample, family.env_id, split, sampler, rng)  # reads the store
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
            env_rng = random.Random(rng.getrandbits(64))
            try:
                if family.needs_sandbox:
                    if self.pool is None:
                        raise SandboxError(f"env {family.env_id} needs a sandbox and this server has no backend")
                    slot, env, (observation, info) = await self._blocking(
                        self._start_sandboxed, family, task, parsed, owner, env_rng)
                    episode_id, sandbox = slot.episode_id, slot.sandbox
                else:  # pure computation: cheaper here than a worker thread's round trip
                    episode_id = new_episode_id(self.replica)
                    slot = SandboxSlot(episode_id, None)
                    env = family.start(task, parsed, None, env_rng)
                    observation, info = env.reset()
                live = LiveEpisode(
                    id=episode_id, owner=owner, family=family, task=task, options={**raw, "split": task.split},
                    seed=seed, env=env, slot=slot, created=time.time(), last_active=time.monotonic(),
                    reset_result=ResetResult(episode_id, observation.to_wire(), info),
                )
                await self._writer.write(self.store.episode_op(
                    episode_id=episode_id, owner=owner, env_id=family.env_id, task_id=task.id, split=task.split,
                    seed=seed, options=live.options,
                    reset_result={"observation": live.reset_result.observation, "info": info},
                    parent_id=parent[0] if parent else None, parent_turn=parent[1] if parent else None,
                    holder=self.replica,
                ))
            except BaseException:
                if sandbox is not None:
                    await self._discard(sandbox)
                raise
            self._live[episode_id] = live
            self._open[episode_id] = live
        finally:
            self._starting.remove(owner)
        self.metrics.episodes_started.labels(family.env_id).inc()
        self.metrics.reset_seconds.labels(family.env_id).observe(time.perf_counter() - started)
        self.metrics.live_episodes.set(self._open_count())
        return live

    def _start_sandboxed(
        self, family: EnvFamily, task: Task, options: Any, owner: str, rng: random.Random,
    ) -> tuple[SandboxSlot, Episode, tuple[Observation, dict[str, Any]]]:
        """Take a sandbox, start the env on it and reset it: one worker-thread call for the whole reset.

        Blocking (runs on a worker thread). A sandbox taken here is handed to the teardown (or
        removed) before an error leaves, since the caller never sees it.
        """
        assert self.pool is not None
        episode_id, sandbox = self.pool.acquire(owner)
        slot = SandboxSlot(episode_id, sandbox)
        try:
            env = family.start(task, options, slot, rng)
            return slot, env, env.reset()
        except BaseException:
            if not self._teardown.submit(sandbox):
                sandbox.close()
            raise

    def _sample(self, env_id: str, split: str, sampler: str, rng: random.Random) -> Task:
        from toolgym.server.frontier import draw_task

        return draw_task(self.tasks, self.store, env_id, split, sampler, rng)

    # --- step -------------------------------------------------------------------------------
    async def step(
        self, owner: str, episode_id: str, action: Action, *, expected_turn: int | None = None,
        idempotency_key: str | None = None, mean_logprob: float | None = None, sample: Sample | None = None,
    ) -> StepResult:
        """Play ``action`` on the episode; its result, answered once the step is on disk.

        ``sample`` (the policy's token ids and log-probabilities) is stored with the step as it came;
        without ``mean_logprob``, the mean of its log-probabilities stands in for it.

        A retried step (same ``idempotency_key``, or an ``expected_turn`` already played) gets
        the recorded result again; nothing is played twice. An episode a crashed run left live is
        rebuilt first (``_held``), and so is one whose last step the store refused
        (``StoreUnavailable``, ``_detach``): that step never happened, as far as the episode goes.
        """
        for _ in range(3):  # a copy detached while we waited for its lock is looked up again (bounded)
            live = await self._held(owner, episode_id)
            if live is None:
                # Closed (DELETE, the idle reaper) and forgotten: its row says it has ended.
                row = await self._blocking(self.store.get_episode, episode_id)
                if row is not None and row.owner == owner:
                    raise EpisodeFinished(episode_id, row.reason or row.status)
                raise EpisodeNotFound(episode_id)
            # Shielded: a cancelled request (its client gone, under a server that cancels) must
            # not cut a step between the env playing it and the store recording it. The step
            # runs on to its end in its own task, lock included, whoever still waits for it.
            if mean_logprob is None and sample is not None:
                mean_logprob = sample.mean_logprob()
            played = asyncio.ensure_future(self._locked_step(live, action, expected_turn, idempotency_key,
                                                             mean_logprob, sample))
            played.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unawaited
            result = await asyncio.shield(played)
            if result is not None:
                return result
        raise StoreUnavailable(f"episode {episode_id} could not be rebuilt from the store; retry later",
                               retry_after_s=5.0)

    async def _locked_step(
        self, live: LiveEpisode, action: Action, expected_turn: int | None, idempotency_key: str | None,
        mean_logprob: float | None, sample: Sample | None,
    ) -> StepResult | None:
        """``_step_held`` under the episode's lock; None if that copy was detached meanwhile (look it up again)."""
        async with live.lock:
            if live.detached:
                return None
            return await self._step_held(live, action, expected_turn, idempotency_key, mean_logprob, sample)

    async def _step_held(
        self, live: LiveEpisode, action: Action, expected_turn: int | None, idempotency_key: str | None,
        mean_logprob: float | None, sample: Sample | None,
    ) -> StepResult:
        """``step`` on an episode whose lock the caller holds."""
        episode_id = live.id
        live.last_active = time.monotonic()
        if idempotency_key is not None and idempotency_key in live.idempotency:
            return live.steps[live.idempotency[idempotency_key]].result
        if expected_turn is not None:
            if expected_turn < live.turn:
                return live.steps[expected_turn].result
            if expected_turn > live.turn:
                raise TurnMismatch(episode_id, expected_turn, live.turn)
        if live.finished:
            raise EpisodeFinished(episode_id, live.reason)
        self._in_flight += 1
        try:
            return await self._do_step(live, action, idempotency_key, mean_logprob, sample)
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
        sample: Sample | None = None,
    ) -> StepResult:
        env_id = live.family.env_id
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                if live.family.needs_sandbox:
                    step = await self._blocking(live.env.step, action)
                else:  # pure computation (parse, verify): cheaper here than a worker thread's round trip
                    step = live.env.step(action)
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
        result = result_of(step, self.settings.max_output_chars)
        turn = live.turn
        total = live.total_reward + result.reward
        done = result.terminated or result.truncated
        reason = step.info.get("reason") if done else None
        wire_action = action_to_wire(action)
        try:
            await self._writer.write(self.store.step_op(
                live.id, turn, wire_action, result.to_wire(), mean_logprob=mean_logprob,
                idempotency_key=idempotency_key, total_reward=total, status="finished" if done else "live",
                reason=reason, success=live.family.episode_success(total, step.info) if done else None,
                sample=None if sample is None else sample.to_wire(), holder=self.replica,
            ))
        except StoreUnavailable:
            await self._detach(live)
            raise
        except NotHolder:
            await self._drop_taken(live)
            raise Unavailable(
                f"episode {live.id} was taken over by another replica sharing this server's database (this one"
                " lost its lock there for a while); send its requests to that replica", retry_after_s=1.0,
            ) from None
        live.steps.append(RecordedStep(turn=turn, action=wire_action, result=result, mean_logprob=mean_logprob,
                                       sample=sample))
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

    async def _drop_taken(self, live: LiveEpisode) -> None:
        """Forget an episode another replica holds now (a fenced write said so); its row is theirs."""
        log.warning("episode %s was taken over by another replica; dropping this server's copy", live.id)
        live.finished = True
        live.reason = "taken_over"
        await self._release(live)
        self._live.pop(live.id, None)

    async def _detach(self, live: LiveEpisode) -> None:
        """Drop this process's copy of an episode whose step was played but could not be stored.

        Its env has moved past the last stored turn and cannot step back, so it is forgotten
        here (its sandbox removed) and the store stays the truth: the next request for the
        episode rebuilds it by replaying its stored steps (``_held``), as after a crash.
        """
        live.detached = True
        self._live.pop(live.id, None)
        self._detached[live.id] = time.time()
        await self._release(live)

    async def _release(self, live: LiveEpisode) -> None:
        """Every way an episode ends (last step, close, reaper, shutdown) comes through here.

        The sandbox goes to the teardown worker; the caller does not wait for its removal.
        """
        self._open.pop(live.id, None)
        sandbox, live.slot.sandbox = live.slot.sandbox, None
        if sandbox is not None:
            await self._discard(sandbox)
        self.metrics.live_episodes.set(self._open_count())

    async def _discard(self, sandbox: Sandbox) -> None:
        """Have ``sandbox`` removed: in the background, or here when that queue is full."""
        if not self._teardown.submit(sandbox):
            await self._blocking(sandbox.close)

    # --- resuming a crashed run's episodes ---------------------------------------------------------
    async def _held(self, owner: str, episode_id: str) -> LiveEpisode | None:
        """``owner``'s episode as this process holds it, rebuilt first if a crashed run left it live.

        None when there is no such live episode (ended, someone else's, or unknown): the caller
        reads the store to say which. Concurrent requests for one episode share one rebuild.
        """
        live = self._live.get(episode_id)
        if live is not None:
            return live if live.owner == owner else None
        pending = self._resuming.get(episode_id)
        if pending is None:
            row = await self._blocking(self.store.get_episode, episode_id)
            if row is None or row.owner != owner or row.status != "live":
                return None
            if not self._accepting:
                raise ShuttingDown("the server is shutting down; retry this episode after its restart",
                                   retry_after_s=5.0)
            live = self._live.get(episode_id)  # rebuilt while we read
            if live is not None:
                return live if live.owner == owner else None
            pending = self._resuming.get(episode_id)
            if pending is None:
                pending = asyncio.ensure_future(self._resume(row.id))
                pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if unawaited
                self._resuming[episode_id] = pending
                pending.add_done_callback(lambda _: self._resuming.pop(episode_id, None))
        live = await asyncio.shield(pending)
        return live if live is not None and live.owner == owner else None

    async def _resume(self, episode_id: str) -> LiveEpisode | None:
        """Rebuild a crashed run's live episode by replay (``toolgym.server.resume.rebuild``).

        A replay that parts from the record marks the episode ``interrupted`` (reason
        ``replay_diverged: ...``) and raises ``EpisodeFinished``; a failing sandbox raises a
        retryable ``SandboxError``. None if the episode is no longer live. The episode is claimed
        first (``_claim``): one that another live replica holds is never rebuilt here.
        """
        if not await self._claim(episode_id):
            return None
        done = await self._blocking(rebuild, self.store, self.tasks, self.pool, self.settings.max_output_chars,
                                    episode_id)
        if done is None:
            return None
        if done.live is None:
            log.warning("episode %s cannot be resumed: %s", episode_id, done.failure)
            await self._give_up(episode_id, done.failure or "replay_failed")
        live = done.live
        self._live[episode_id] = live
        self._open[episode_id] = live
        self.resumed += 1
        self.replayed_steps += done.steps
        self.metrics.live_episodes.set(self._open_count())
        log.info("episode %s resumed at turn %d (%d steps replayed in %.2f s)", episode_id, live.turn,
                 done.steps, done.seconds)
        return live

    async def _claim(self, episode_id: str) -> bool:
        """Make this replica the holder of a stored live episode no live replica holds; False if it ended.

        Raises:
            Unavailable: another replica on the same database holds it and is alive (retryable:
                send the request to that replica, or retry once it is gone).
        """
        claim: Claim = await self._writer.write(self.store.claim_op(episode_id, self.replica))
        if claim.claimed or not claim.live:
            return claim.claimed
        raise Unavailable(
            f"episode {episode_id} is live on replica {claim.holder or 'another replica'}, which shares this"
            " server's database; send its requests to that replica", retry_after_s=2.0,
        )

    async def _give_up(self, episode_id: str, reason: str) -> NoReturn:
        """Mark a crashed run's episode interrupted with ``reason``, and say so to the client (409)."""
        await self._writer.write(self.store.finish_op(episode_id, "interrupted", reason, self.replica))
        raise EpisodeFinished(episode_id, reason)

    # --- state, close, fork -------------------------------------------------------------------
    async def state(self, owner: str, episode_id: str) -> EpisodeSnapshot:
        """The episode as it stands: from memory while this process holds it, else from the store.

        The store is read on a worker thread.
        """
        live = self._live.get(episode_id)
        if live is not None and live.owner == owner:
            return live.snapshot()

        snapshot = await self._blocking(stored_snapshot, self.store, owner, episode_id)
        if snapshot is None:
            raise EpisodeNotFound(episode_id)
        return snapshot

    async def close(self, owner: str, episode_id: str, reason: str = "closed") -> bool:
        """Close an episode; its sandbox is removed in the background.

        Returns False if it was already finished (closing is idempotent for the caller).
        """
        live = self._live.get(episode_id)
        if live is None or live.owner != owner:
            row = await self._blocking(self.store.get_episode, episode_id)
            if row is None or row.owner != owner:
                raise EpisodeNotFound(episode_id)
            if row.status != "live" or episode_id in self._resuming:
                return False
            # Left live by a crashed run and not resumed: nothing to rebuild just to close it
            # (its old sandbox went with the start-up sweep). Another live replica's is not ours to close.
            if not await self._claim(episode_id):
                return False
            await self._writer.write(self.store.finish_op(episode_id, "finished", reason, self.replica))
            return True
        async with live.lock:
            was_open = not live.finished
            if was_open:
                # Stored first: a close the store refuses leaves the episode live, in memory as on disk.
                await self._writer.write(self.store.finish_op(live.id, "finished", reason, self.replica))
                live.finished = True
                live.reason = reason
                self.metrics.episodes_finished.labels(live.family.env_id, reason).inc()
            await self._release(live)
        self._live.pop(episode_id, None)
        return was_open

    async def fork(self, owner: str, episode_id: str, turn: int | None) -> ResetResult:
        """A new episode at ``turn`` of this one (default: its current turn), built by replay.

        The recorded actions are replayed into a fresh episode and sandbox, each with its recorded
        sample and log-probability, so the child's trajectory up to ``turn`` is the parent's. Answers
        the observation and info of that turn.
        """
        source = await self.state(owner, episode_id)
        upto = source.turn if turn is None else turn
        if not 0 <= upto <= source.turn:
            raise ValidationFailed(f"turn must be between 0 and {source.turn}, got {turn}")
        child = await self._start_episode(
            owner, source.env_id, source.task_id, source.seed, dict(source.options), parent=(episode_id, upto)
        )
        last = child.reset_result
        try:
            for recorded in source.steps[:upto]:
                result = await self.step(owner, child.id, action_from_wire(recorded.action),
                                         mean_logprob=recorded.mean_logprob, sample=recorded.sample)
                if result.reward != recorded.result.reward:
                    log.warning("fork of %s diverged at turn %d", episode_id, recorded.turn)
                last = ResetResult(child.id, result.observation, result.info)
        except BaseException:
            await self.close(owner, child.id, "fork_failed")
            raise
        return last

    async def list_episodes(self, owner: str, status: str | None, offset: int, limit: int) -> EpisodePage:
        """A page of the caller's episodes, oldest first (read on a worker thread)."""
        return await self._blocking(stored_page, self.store, owner, status, offset, limit)

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
        if not await self._blocking(self.store.renew_replica):
            log.error("this replica (%s) lost its liveness lock on the database and could not take it again:"
                      " other replicas may take over its episodes", self.replica)
        before = time.time() - self.settings.idle_timeout_s  # a crashed run's episodes nobody came back for
        self._detached = {episode_id: at for episode_id, at in self._detached.items() if at > before}
        keep = frozenset(self._live) | frozenset(self._resuming) | frozenset(self._detached)
        closed += await self._blocking(lambda: self.store.interrupt_live(before=before, keep=keep))
        for slot, future in list(self._resets_by_key.items()):
            if future.done() and not future.exception() and future.result().episode_id not in self._live:
                del self._resets_by_key[slot]
        return closed

    async def _reap_loop(self) -> None:
        """``reap_once`` every ``reaper_interval_s``, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper pass failed")

    async def stop(self) -> None:
        """Refuse resets, let in-flight steps finish (up to ``shutdown_grace_s``), store everything.

        Then every sandbox is removed: the teardown queue is drained before this returns, so
        nothing of ours outlives the process.
        """
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
                try:
                    await self._writer.write(self.store.finish_op(live.id, "interrupted", None, self.replica))
                except StoreUnavailable as exc:  # still live on disk: the next start resumes or interrupts it
                    log.warning("episode %s: not marked interrupted: %s", live.id, exc.message)
            await self._release(live)
        await self._blocking(self._teardown.drain, self.settings.shutdown_grace_s + 60.0)
        if self.pool is not None:
            await self._blocking(self.pool.stop)
        await self._blocking(self._writer.stop)

    @property
    def accepting(self) -> bool:
        """False once shutdown began."""
        return self._accepting

    @property
    def open_episodes(self) -> int:
        """Unfinished episodes, resets under way included."""
        return self._open_count()

    @property
    def teardown_backlog(self) -> int:
        """Sandboxes of ended episodes not removed yet."""
        return self._teardown.backlog

    def status(self) -> ManagerStatus:
        """Readiness and load figures for ``/readyz`` and ``/metrics`` (no I/O)."""
        return ManagerStatus(
            accepting=self._accepting, open_episodes=self._open_count(),
            max_live_episodes=self.settings.max_live_episodes,
            warm_pool=None if self.pool is None else self.pool.status(), teardown=self._teardown.status(),
            store_backlog=self._writer.backlog,
        )
