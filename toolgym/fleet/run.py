"""``toolgym serve --ray ADDRESS --replicas N``: place the replicas, then serve the entry point until stopped."""

from __future__ import annotations

import logging
import sys

from toolgym.server.settings import Settings

__all__ = ["serve_fleet"]

log = logging.getLogger("toolgym.fleet")


def serve_fleet(settings: Settings, *, address: str, replicas: int, shared_db: bool, replica_host: str | None = None,
                log_level: str = "info", place_timeout_s: float = 180.0) -> int:
    """Serve a fleet until SIGTERM/SIGINT; its exit status.

    The entry point's port is bound first, so a busy port fails before any replica starts
    (status 1). Then the driver joins the Ray cluster at ``address``, places the replicas
    (``place_replicas``; ``replica_host``, if given, is the address every replica listens on)
    and serves the entry point on ``settings.host:settings.port``. On the
    way out every replica's server is shut down (its sandboxes removed) and the actors ended;
    the Ray cluster itself is left running, as it was found.
    """
    import ray
    import uvicorn

    from toolgym.commands._cli import bind_or_say
    from toolgym.fleet.entry_app import create_entry_app
    from toolgym.fleet.placement import place_replicas
    from toolgym.fleet.proxy import EntryPoint

    logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per health check of every replica
    if replicas < 1:
        print("toolgym serve: --replicas must be at least 1", file=sys.stderr)
        return 2
    sock = bind_or_say(settings.host, settings.port, "nothing was started")
    if sock is None:
        return 1
    started = False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        placement = place_replicas(settings, replicas, shared_db=shared_db, log_level="warning",
                                   host=replica_host, timeout_s=place_timeout_s)
        try:
            for info in placement.infos:
                log.info("replica %s at %s (node %s, pid %d)", info.replica, info.base_url, info.node_ip, info.pid)
            # One store for all (--db): a gone replica's episodes are rebuilt by replay elsewhere.
            entry = EntryPoint(placement.infos, watcher=placement.alive, max_request_bytes=settings.max_request_bytes,
                               rebuild_lost=shared_db and settings.db_path != ":memory:")
            config = uvicorn.Config(create_entry_app(entry), host=settings.host, port=settings.port,
                                    log_level=log_level.lower(), timeout_graceful_shutdown=5)
            server = uvicorn.Server(config)
            log.info("fleet entry point on http://%s:%d (%d replicas, %s)", settings.host, settings.port,
                     replicas, placement.strategy)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass
            started = server.started
        finally:
            placement.shutdown()
    finally:
        sock.close()
        if ray.is_initialized():
            ray.shutdown()
    return 0 if started else 3
