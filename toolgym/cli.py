"""The ``toolgym`` command: ``serve``, ``demo``, ``build-image``, ``generate``, ``eval``.

Each command lives in ``toolgym/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from toolgym._version import __version__

COMMANDS = ("serve", "demo", "build_image", "generate", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolgym", description="ToolGym: RL environments for tool-using LLM agents.")
    parser.add_argument("--version", action="version", version=f"toolgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"toolgym.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
