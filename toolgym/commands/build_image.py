"""``toolgym build-image``: build the sandbox image, offline if no registry answers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "build-image", help="build the sandbox image (python3 + numpy + sympy, non-root)")
    p.add_argument("--tag", default="toolgym-sandbox:latest",
                   help="name of the image (default toolgym-sandbox:latest, what the server runs)")
    p.add_argument("--base", default=None,
                   help="base image (default: python:3.11-slim if it can be pulled, else a local Debian rootfs)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from toolgym.server.sandbox.docker import docker_client
    from toolgym.server.sandbox.image import build_sandbox_image
    from toolgym.server.sandbox.select import docker_reachable

    if not docker_reachable():
        print("toolgym build-image: no Docker engine answers (start dockerd, or set DOCKER_HOST)", file=sys.stderr)
        return 1
    client = docker_client(timeout_s=600)
    try:
        build_sandbox_image(client, tag=args.tag, base=args.base, say=lambda m: print(f"build-image: {m}"))
    finally:
        client.close()
    return 0
