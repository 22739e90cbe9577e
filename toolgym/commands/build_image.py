"""``toolgym build-image``: build the sandbox image, and only when it is missing or stale.

Stale means its content hash label differs; the build works offline if no registry answers, so
scripts may call it every time.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the ``build-image`` subcommand and its options on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "build-image", help="build the sandbox image (python3 + numpy + sympy, non-root)")
    p.add_argument("--tag", default="toolgym-sandbox:latest",
                   help="name of the image (default toolgym-sandbox:latest, what the server runs)")
    p.add_argument("--base", default=None,
                   help="base image (default: python:3.11-slim or the local Debian base if either is here,"
                        " else python:3.11-slim if it can be pulled, else a new local Debian rootfs)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when the image is current (same Dockerfile and base image)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the image unless it is current; exit status 1 when no Docker engine answers, else 0."""
    from toolgym.server.sandbox.docker import docker_client
    from toolgym.server.sandbox.image import build_sandbox_image
    from toolgym.server.sandbox.select import docker_reachable

    if not docker_reachable():
        print("toolgym build-image: no Docker engine answers (start dockerd, or set DOCKER_HOST)", file=sys.stderr)
        return 1
    client = docker_client(timeout_s=600)
    try:
        build_sandbox_image(client, tag=args.tag, base=args.base, force=args.force,
                            say=lambda m: print(f"build-image: {m}"))
    finally:
        client.close()
    return 0
