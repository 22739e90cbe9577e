"""The app factory: ``create_app(settings)`` wires settings, store, tasks, sandboxes and routes.

Startup takes this instance's lock and removes only provably orphaned sandboxes (its own
id's leftovers, and those of instances whose server is gone: ``toolgym.server.instance``),
leaves a crashed run's recent live episodes live (resumed by replay on their next request,
``toolgym.server.resume``), loads tasks (built-in, persisted, and ``task_files``), and starts the warm pool and the
reaper. Shutdown (SIGTERM under uvicorn) refuses new resets, lets in-flight steps finish,
and removes every sandbox.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from toolgym._version import __version__
from toolgym.envs import load_families
from toolgym.envs.base import SPLITS
from toolgym.server.auth import Authenticator
from toolgym.server.dataloop import apply_retirements
from toolgym.server.episodes import EpisodeManager
from toolgym.server.errors import BodySizeLimit, install_error_handlers
from toolgym.server.instance import claim_instance
from toolgym.server.judge import build_judge
from toolgym.server.limits import ConcurrencyLimit, ContentTypeGuard, RateLimiter
from toolgym.server.metrics import Metrics
from toolgym.server.routes import batch, dataloop, envs, episodes, health, mcp, openenv, ui, ws
from toolgym.server.sandbox.base import SandboxBackend
from toolgym.server.sandbox.pool import SandboxPool
from toolgym.server.settings import Settings
from toolgym.server.store import Store, open_store
from toolgym.server.tasks import TaskRegistry

__all__ = ["create_app"]

log = logging.getLogger("toolgym.server")


def _load_task_files(tasks: TaskRegistry, specs: tuple[str, ...]) -> None:
    for spec in specs:
        env_id, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"task file {spec!r} must be ENV_ID=PATH")
        records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        known = {t for s in SPLITS for t in tasks.ids(tasks.family(env_id).env_id, s)}
        fresh = [r for r in records if not (isinstance(r, dict) and str(r.get("id")) in known)]
        if fresh:
            ids = tasks.register(env_id, fresh)
            log.info("loaded %d tasks for %s from %s", len(ids), env_id, path)


def _open_store(db_path: str, replica: str) -> Store:
    """The store of ``db_path``, with ``replica`` registered as live on it (closed again if that fails).

    Registered before any episode of this replica is written, so no other replica on a shared
    database ever sees one of them without a live holder.
    """
    store = open_store(db_path)
    try:
        store.register_replica(replica)
    except BaseException:
        store.close()
        raise
    return store


def create_app(settings: Settings, *, backend: SandboxBackend | None = None) -> FastAPI:
    """A ToolGym app: its routes, error handlers and request limits wired to ``settings``.

    ``backend`` defaults to ``select_backend(settings)`` at startup; pass one to share it (tests)
    or to use a custom backend.
    """
    settings.validate()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = backend
        if chosen is None:
            from toolgym.server.sandbox.select import select_backend

            chosen = select_backend(settings)
        if not chosen.isolated:
            log.warning(
                "SANDBOX BACKEND %r DOES NOT ISOLATE CODE FROM THIS HOST: tool and model code runs as a"
                " local process with resource limits only. Use the docker backend for untrusted code.",
                chosen.name,
            )
        try:
            instance_lock = claim_instance(chosen, settings)  # before any container is made or removed
        except BaseException:
            if backend is None:
                chosen.close()
            raise
        replica = secrets.token_hex(3)
        try:
            store = _open_store(settings.db_path, replica)
        except BaseException:
            instance_lock.release()
            if backend is None:
                chosen.close()
            raise
        # A crashed run's live episodes stay live: each is rebuilt by replay on its next request
        # (EpisodeManager._held), so start-up stays fast and only episodes a client still plays
        # cost a sandbox. Those idle past idle_timeout_s are interrupted, here and by the reaper.
        interrupted = store.interrupt_live(before=time.time() - settings.idle_timeout_s)
        if interrupted:
            log.info("%d idle episodes of a previous run were interrupted", interrupted)
        families = load_families()
        tasks = TaskRegistry(families, store)
        if settings.load_builtin_tasks:
            tasks.load_builtins()
        tasks.load_persisted()
        _load_task_files(tasks, settings.task_files)
        retired = apply_retirements(tasks, store)
        if retired:
            log.info("%d tasks are retired (no sampler draws them)", retired)
        metrics = Metrics()
        pool = SandboxPool(chosen, settings.sandbox_spec, size=settings.warm_pool_size, replica=replica,
                           max_size=settings.warm_pool_max or None)
        manager = EpisodeManager(settings, families, tasks, pool, store, metrics, replica=replica)
        app.state.backend = chosen
        app.state.manager = manager
        app.state.metrics = metrics
        await manager.start()
        log.info(
            "toolgym %s serving %s with the %s backend (instance %s, auth %s)", __version__,
            ", ".join(sorted(families)), chosen.name, settings.instance,
            "on" if app.state.auth.enabled else "OFF",
        )
        try:
            yield
        finally:
            await manager.stop()
            chosen.remove_owned(settings.instance)
            if backend is None:
                chosen.close()
            store.close()
            instance_lock.release()

    app = FastAPI(
        title="ToolGym",
        version=__version__,
        description="Gymnasium-style environment server for RL training of tool-using LLM agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth = Authenticator(settings.api_keys, settings.api_keys_file)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_key)
    app.state.judge = build_judge(settings)
    if not app.state.auth.enabled:
        log.warning("no API keys configured: authentication is OFF (allowed on %s)", settings.host)
    install_error_handlers(app)
    app.add_middleware(ContentTypeGuard)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(ConcurrencyLimit, max_requests=settings.max_concurrent_requests)  # outermost
    app.include_router(health.router)
    app.include_router(envs.router)
    app.include_router(episodes.router)
    app.include_router(batch.router)
    app.include_router(dataloop.router)
    app.include_router(ws.router)
    app.include_router(openenv.router)
    app.include_router(mcp.router)
    app.include_router(ui.router)
    return app
