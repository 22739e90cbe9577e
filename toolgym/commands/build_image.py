"""``toolgym build-image``: build the sandbox image, only when it is missing or stale.

Offline if no registry answers; an image whose content-hash label matches is left alone, so
scripts may call it every time. An elapsed-time bar goes to stderr when it is a terminal; ``--json`` writes
``{"tag", "image_id", "built"}`` to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``toolgym build-image`` and its options."""
    p: argparse.ArgumentParser = sub.add_parser(
        "build-image", help="build the sandbox image (python3 + numpy + sympy, non-root)")
    p.add_argument("--tag", default="toolgym-sandbox:latest",
                   help="name of the image (default toolgym-sandbox:latest, what the server runs)")
    p.add_argument("--base", default=None,
                   help="base image (default: python:3.11-slim or the local Debian base if either is here,"
                        " else python:3.11-slim if it can be pulled, else a new local Debian rootfs)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when the image is current (same Dockerfile and base image)")
    p.add_argument("--no-progress", action="store_true", help="no elapsed-time bar on stderr")
    p.add_argument("--json", action="store_true",
                   help='write {"tag", "image_id", "built"} as one JSON document to stdout (notes go to stderr)')
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build (or keep) the image; 1 when no Docker engine answers."""
    from toolgym.server.sandbox.docker import docker_client
    from toolgym.server.sandbox.image import build_sandbox_image
    from toolgym.server.sandbox.select import docker_reachable

    if not docker_reachable():
        print("toolgym build-image: no Docker engine answers (start dockerd, or set DOCKER_HOST)", file=sys.stderr)
        return 1
    from toolgym.commands._cli import emit_json, show_progress, ticking

    client = docker_client(timeout_s=600)
    out = sys.stderr if args.json else sys.stdout
    try:
        before = _image_id(client, args.tag)
        with ticking("build-image", disable=not show_progress(args)):
            build_sandbox_image(client, tag=args.tag, base=args.base, force=args.force,
                                say=lambda m: print(f"build-image: {m}", file=out, flush=True))
        after = _image_id(client, args.tag)
    finally:
        client.close()
    if args.json:
        emit_json({"tag": args.tag, "image_id": after, "built": after != before or args.force})
    return 0


def _image_id(client: Any, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except Exception:
        return None
