"""``toolgym doctor``: can this machine serve, and what to run next when it cannot.

    toolgym doctor [--host H] [--port P] [--backend auto|docker|process]
                   [--isolation container|namespace|process] [--image IMAGE] [--json]

It checks what ``toolgym serve`` with the same options (and the same ``TOOLGYM_*`` variables)
would meet: the server's dependencies, the Docker engine, the sandbox image (present, and
current: its content-hash label against what ``toolgym build-image`` would build now), the
isolation tier serve would give (docs/isolation.md), whether the port is free, and the API keys. Each check
is ``ok``, ``warn`` (serving works, but read the note) or ``fail`` (serving is blocked), with
the command to run next. Exit status: 0 when nothing blocks serving, 4 when a check fails.
``--json`` writes ``{"ok", "checks": [{"name", "status", "detail", "fix"}]}``.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from toolgym.commands import _cli

__all__ = ["Check", "add_parser", "diagnose", "run"]


@dataclass
class Check:
    """One finding: ``status`` is ok, warn, fail or skip; ``fix`` the command or step to take."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def add_parser(sub: Any) -> None:
    """Register ``toolgym doctor`` and its options."""
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check Docker, the sandbox image, isolation, the port and keys; say how to fix each",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=None,
                   help="the address serve would listen on (default: $TOOLGYM_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="the port serve would use (default: $TOOLGYM_PORT or 8000)")
    p.add_argument("--backend", choices=("auto", "docker", "process"), default=None,
                   help="the sandbox backend serve would use (default: $TOOLGYM_BACKEND or auto)")
    p.add_argument("--isolation", choices=("container", "namespace", "process"), default=None,
                   help="the isolation tier serve would give (default: $TOOLGYM_ISOLATION, else from --backend)")
    p.add_argument("--image", default=None,
                   help="the sandbox image (default: $TOOLGYM_SANDBOX_IMAGE or toolgym-sandbox:latest)")
    _cli.add_json_flag(p, '{"ok", "checks"} as one JSON document')
    p.set_defaults(run=run)


def _server_extra() -> Check:
    missing = [m for m in ("fastapi", "uvicorn", "docker") if importlib.util.find_spec(m) is None]
    if missing:
        return Check("server-install", "fail", f"missing server dependencies: {', '.join(missing)}",
                     "pip install 'toolgym[server]'")
    return Check("server-install", "ok", "fastapi, uvicorn and the docker SDK are installed")


def _engine(backend: str) -> tuple[Check, Any]:
    """The engine check, and a docker client when one answers (the caller closes it)."""
    try:
        from toolgym.server.sandbox.docker import docker_client

        client = docker_client(timeout_s=5)
        version = client.version().get("Version", "?")
        return Check("docker-engine", "ok", f"Docker engine {version} answers"), client
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        fix = "start a Docker engine (e.g. `sudo systemctl start docker`, or `dockerd &` as root) or set DOCKER_HOST"
        if backend == "docker":
            return Check("docker-engine", "fail", f"no Docker engine answers at {where} and --backend docker needs"
                         f" one ({type(exc).__name__})", fix + "; or serve with --backend process"), None
        if backend == "process":
            return Check("docker-engine", "skip", f"no Docker engine answers at {where}; not needed by"
                         " --backend process"), None
        return Check("docker-engine", "warn", f"no Docker engine answers at {where}; serve falls back on the"
                     " process backend (not isolated)", fix), None


def _image(client: Any, image: str) -> Check:
    """Whether the sandbox image is present and current.

    Current: its context-hash label equals the hash of this Dockerfile and the base that
    ``toolgym build-image`` would use now (a base already here; with none here: unknown).
    """
    from toolgym.server.sandbox.image import (
        DOCKERFILE,
        LOCAL_BASE,
        REGISTRY_BASE,
        context_hash,
        image_context_hash,
    )

    try:
        client.images.get(image)
    except Exception:
        return Check("sandbox-image", "warn", f"no image {image}; serve builds it at start (minutes, once)",
                     f"toolgym build-image --tag {image}")
    have = image_context_hash(client, image)
    for base in (REGISTRY_BASE, LOCAL_BASE):
        try:
            base_id = client.images.get(base).id
        except Exception:
            continue
        if have == context_hash(DOCKERFILE.read_bytes(), base_id):
            return Check("sandbox-image", "ok", f"{image} is current (built from {base} and this Dockerfile)")
        why = "has no content-hash label" if have is None else "was built from another Dockerfile or base"
        return Check("sandbox-image", "warn", f"{image} is stale: it {why}", f"toolgym build-image --tag {image}")
    return Check("sandbox-image", "warn", f"{image} is here, but no base image is, so whether it is current is"
                 " unknown", f"toolgym build-image --tag {image}")


def _isolation(backend: str, engine_ok: bool, client: Any, tier: str = "") -> Check:
    """The isolation tier serve would give (``TOOLGYM_ISOLATION``, else what ``backend`` picks)."""
    if tier == "namespace":
        if not engine_ok:
            return Check("isolation", "skip", "namespace tier, once an engine answers (see docker-engine)")
        return Check("isolation", "ok", "namespace: one user+pid+mount+ipc+uts+net namespace set per episode in"
                     " pooled, hardened host containers (docs/isolation.md)")
    if tier:
        backend = "process" if tier == "process" else "docker"
    effective = backend if backend != "auto" else ("docker" if engine_ok else "process")
    if effective == "docker" and not engine_ok:
        return Check("isolation", "skip", "docker containers, once an engine answers (see docker-engine)")
    if effective == "docker":
        runtimes: list[str] = []
        if client is not None:
            try:
                runtimes = sorted((client.info().get("Runtimes") or {}).keys())
            except Exception:
                runtimes = []
        extra = f"; runtimes: {', '.join(runtimes)}" if runtimes else ""
        return Check("isolation", "ok", "container tier (docker): one container per episode, no network,"
                     f" read-only root, all capabilities dropped, unprivileged user{extra}")
    return Check("isolation", "warn", "process backend: NOT isolated; tool code runs on this host as this user"
                 " (limits only)", "for untrusted models use Docker: `toolgym build-image && toolgym serve"
                 " --backend docker`")


def _port(host: str, port: int) -> Check:
    from toolgym.server.embedded import listen_socket

    try:
        listen_socket(host, port, backlog=1).close()
        return Check("port", "ok", f"{host}:{port} is free")
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Check("port", "fail", f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "pick another --host/--port (or TOOLGYM_HOST / TOOLGYM_PORT)")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}"
    try:
        toolgym = httpx.get(f"{url}/healthz", timeout=3.0).json() == {"status": "ok"}
    except (httpx.HTTPError, ValueError):
        toolgym = False
    who = f"a ToolGym server already answers at {url}" if toolgym else "another program listens there"
    fix = (f"`toolgym status --base-url {url}` to use it, or " if toolgym else "") + f"serve on another port:" \
        f" `toolgym serve --port {port + 1}`"
    return Check("port", "fail", f"{host}:{port} is in use: {who}", fix)


def _keys(settings: Any) -> Check:
    from toolgym.server.settings import _is_loopback

    try:
        keys = settings.all_api_keys()
    except OSError as exc:
        return Check("api-keys", "fail", f"cannot read the API keys file {settings.api_keys_file}: {exc}",
                     "fix the path given by --api-keys-file / TOOLGYM_API_KEYS_FILE")
    client_key = os.environ.get("TOOLGYM_API_KEY")
    if keys:
        detail = f"{len(keys)} server key(s) configured"
        if client_key and client_key not in keys:
            return Check("api-keys", "warn", detail + "; $TOOLGYM_API_KEY is not one of them, so client commands"
                         " here will get 401", "export TOOLGYM_API_KEY=<one of the server's keys>")
        if not client_key:
            return Check("api-keys", "ok", detail + "; set $TOOLGYM_API_KEY for client commands on this machine")
        return Check("api-keys", "ok", detail + "; $TOOLGYM_API_KEY is one of them")
    if _is_loopback(settings.host):
        return Check("api-keys", "ok", f"no keys: auth is off, which serve allows on loopback ({settings.host}) only")
    if settings.insecure_no_auth:
        return Check("api-keys", "warn", f"no keys on {settings.host}: anyone who reaches it can use it"
                     " (--insecure-no-auth)", "TOOLGYM_API_KEYS=<key1,key2> toolgym serve ...")
    return Check("api-keys", "fail", f"no API keys, and {settings.host} is not loopback: serve refuses to start",
                 "TOOLGYM_API_KEYS=<key1,key2> toolgym serve ... (or --api-keys-file FILE)")


def diagnose(args: argparse.Namespace) -> list[Check]:
    """Every check, in order; a missing server install stops after the first."""
    checks = [_server_extra()]
    if checks[0].status == "fail":
        return checks
    from toolgym.server.settings import Settings

    try:
        settings = Settings.from_env(host=args.host, port=args.port, backend=args.backend, isolation=args.isolation,
                                     sandbox_image=args.image)
    except ValueError as exc:
        return [*checks, Check("settings", "fail", str(exc), "fix or unset that TOOLGYM_* variable")]
    engine, client = _engine(settings.backend)
    checks.append(engine)
    try:
        if client is not None and settings.backend != "process":
            checks.append(_image(client, settings.sandbox_image))
        checks.append(_isolation(settings.backend, client is not None, client, settings.isolation))
    finally:
        if client is not None:
            client.close()
    checks.append(_port(settings.host, settings.port))
    keys = _keys(settings)
    checks.append(keys)
    if keys.status != "fail":
        try:
            settings.validate()
        except ValueError as exc:
            checks.append(Check("settings", "fail", str(exc), "fix the option or TOOLGYM_* variable it names"))
    return checks


_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def run(args: argparse.Namespace) -> int:
    """Print the checks; exit 4 when one of them blocks serving."""
    checks = diagnose(args)
    ok = not any(c.status == "fail" for c in checks)
    if args.json:
        _cli.emit_json({"ok": ok, "checks": [asdict(c) for c in checks]})
    else:
        print(_cli.format_table(["check", "status", "detail"], [[c.name, _MARK[c.status], c.detail] for c in checks]))
        fixes = [c for c in checks if c.fix and c.status in ("warn", "fail")]
        if fixes:
            print("\nnext:")
            for c in fixes:
                print(f"  {c.name}: {c.fix}")
        print("\n" + ("nothing blocks serving: `toolgym serve`" if ok else "serving is blocked: fix the FAIL lines"))
    return _cli.EXIT_OK if ok else _cli.EXIT_BLOCKED
