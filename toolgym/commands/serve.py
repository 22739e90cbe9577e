"""``toolgym serve``: run the server (Docker sandboxes whenever an engine is reachable).

The log goes to stderr; with ``--json`` stdout carries one JSON line once the port is bound
(``base_url``, ``host``, ``port``, the ``backend`` asked for, ``pid``), and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``serve`` and its options (each overrides its ``TOOLGYM_*`` variable) to ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the ToolGym server")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--backend", choices=["auto", "docker", "process"], default=None,
                   help="sandbox backend (default auto: docker if an engine answers, else process)")
    p.add_argument("--isolation", choices=["container", "namespace", "process"], default=None,
                   help="isolation tier (docs/isolation.md): container = one Docker container per episode,"
                        " namespace = namespace sets in pooled host containers (high churn), process = none."
                        " Default: follows --backend; a value that contradicts --backend is refused")
    p.add_argument("--api-keys-file", default=None,
                   help="file with one API key per line; read again when it changes and on SIGHUP")
    p.add_argument("--insecure-no-auth", action="store_true", default=None,
                   help="serve without API keys on a non-loopback address")
    p.add_argument("--db", dest="db_path", default=None, metavar="PATH_OR_URL",
                   help="where tasks and trajectories are stored: a SQLite file (default toolgym.db), or a"
                        " postgresql://user:pass@host:port/db URL that several servers share")
    p.add_argument("--tasks", dest="task_files", action="append", default=None, metavar="ENV_ID=PATH",
                   help="register a JSONL task file at startup (repeatable)")
    p.add_argument("--warm-pool", dest="warm_pool_size", type=int, default=None, metavar="N",
                   help="sandboxes kept started ahead, so a reset does not wait for one (default 2)")
    p.add_argument("--max-live-episodes", type=int, default=None, metavar="N",
                   help="open episodes at most; beyond it a reset gets 503 with Retry-After (default 256)")
    p.add_argument("--max-live-episodes-per-key", type=int, default=None, metavar="N",
                   help="open episodes per API key at most; beyond it a reset gets 429 (default 0: no limit)")
    p.add_argument("--rate-limit-per-key", type=float, default=None, metavar="R",
                   help="requests per second per API key, bursts of max(1, R); beyond it 429 with Retry-After"
                        " (default 0: unlimited)")
    p.add_argument("--max-concurrent-requests", type=int, default=None, metavar="N",
                   help="HTTP requests in flight at most; beyond it 503 overloaded at once (default 1024)")
    p.add_argument("--image", dest="sandbox_image", default=None, help="sandbox image")
    p.add_argument("--sandbox-channel", dest="sandbox_channel", choices=["auto", "attach", "socket"], default=None,
                   help="container tier: how the server talks to each container's agent (docs/operations.md):"
                        " socket = a unix socket bind-mounted read-only (no dockerd relay; the engine must see the"
                        " server's files at the same path), attach = Docker's attach stream. Default auto: socket"
                        " when the engine runs on this host and the server is not in a container, else attach")
    p.add_argument("--log-level", default="info", help="debug, info, warning or error (default info)")
    p.add_argument("--json", action="store_true",
                   help='once the port is bound, write {"base_url", "host", "port", "backend", "pid"} as one JSON'
                        " line to stdout (the log goes to stderr), so a script learns where to connect")
    p.add_argument("--ray", dest="ray_address", default=None, metavar="ADDRESS",
                   help="run a fleet on the Ray cluster at ADDRESS (host:port, or auto): --replicas servers as"
                        " Ray actors, one per node, behind one entry point on --host/--port (needs toolgym[fleet])")
    p.add_argument("--replicas", type=int, default=2, metavar="N",
                   help="with --ray: how many replicas (default 2); each has its own store unless --db is given")
    p.add_argument("--replica-host", default=None, metavar="HOST",
                   help="with --ray: the address replicas listen on (default: each node's IP as Ray knows it;"
                        " 127.0.0.1 when every node runs on this machine)")
    p.set_defaults(run=run)


def _reload_keys_on_sighup(auth: Any) -> None:
    """On SIGHUP, read the API keys file again (``Authenticator.reload``).

    The reload runs in a thread of its own: the handler interrupts the event loop's thread,
    which may hold the authenticator's lock at that moment.
    """
    if not hasattr(signal, "SIGHUP"):
        return

    def on_hup(signum: int, frame: Any) -> None:
        threading.Thread(target=auth.reload, name="toolgym-reload-keys", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hup)


def _serve_fleet(args: argparse.Namespace, settings: Any) -> int:
    """``--ray``: the fleet (``toolgym.fleet.run``); a missing Ray is a usage error, with the fix."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("toolgym serve: --ray needs Ray, which is not installed: pip install 'toolgym[fleet]'", file=sys.stderr)
        return 2
    from toolgym.fleet.run import serve_fleet

    shared_db = args.db_path is not None or "TOOLGYM_DB_PATH" in os.environ
    return serve_fleet(settings, address=args.ray_address, replicas=args.replicas, shared_db=shared_db,
                       replica_host=args.replica_host, log_level=args.log_level)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP reads the API keys file again.

    The port is bound first: a second server on a busy port fails at once, before it touches
    any sandbox (exit status 1); a start-up that fails later, e.g. on an instance id a live
    server holds, exits with status 3 as uvicorn does.
    """
    import uvicorn

    from toolgym.commands._cli import bind_or_say
    from toolgym.server import Settings, create_app
    from toolgym.server.sandbox.select import docker_reachable

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: getattr(args, k) for k in ("host", "port", "backend", "isolation", "api_keys_file",
                                               "insecure_no_auth", "db_path", "warm_pool_size", "max_live_episodes",
                                               "sandbox_image", "sandbox_channel",
                                               "max_live_episodes_per_key", "rate_limit_per_key",
                                               "max_concurrent_requests")}
    if args.task_files:
        overrides["task_files"] = tuple(args.task_files)
    settings = Settings.from_env(**overrides)
    try:
        settings.validate()
    except ValueError as exc:
        print(f"toolgym serve: {exc}", file=sys.stderr)
        return 2
    if args.ray_address:
        return _serve_fleet(args, settings)
    sock = bind_or_say(settings.host, settings.port, "nothing was started or removed")
    if sock is None:
        return 1
    try:
        if args.json:
            from toolgym.commands._cli import emit_json

            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            emit_json({"base_url": f"http://{shown}:{port}", "host": host, "port": port,
                       "backend": settings.backend, "isolation": settings.isolation, "pid": os.getpid()})
        if (settings.backend in ("auto", "docker") or settings.isolation in ("container", "namespace")) \
                and docker_reachable():
            from toolgym.server.sandbox.image import ensure_image

            ensure_image(settings.sandbox_image, say=lambda m: print(m, file=sys.stderr))
        app = create_app(settings)
        _reload_keys_on_sighup(app.state.auth)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=args.log_level.lower(),
                                timeout_graceful_shutdown=int(settings.shutdown_grace_s))
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
    return 0 if server.started else 3
