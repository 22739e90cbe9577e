"""The ``toolgym`` command: ``serve``, ``demo``, ``build-image``, ``generate``, ``eval``.

Each command lives in ``toolgym/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this module only dispatches. It imports the one command asked for and no
other, so ``toolgym serve`` does not pay for the generator's or the evaluator's imports, and a
command module that fails to import breaks that command alone: ``toolgym --help`` lists every
command from the table below without importing any.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from toolgym._version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("toolgym.commands.serve", "run the ToolGym server"),
    "demo": ("toolgym.commands.demo",
             "start a server and run real episodes of every env family with scripted policies"),
    "build-image": ("toolgym.commands.build_image",
                    "build the sandbox image (python3 + numpy + sympy, non-root)"),
    "generate": ("toolgym.commands.generate", "generate verified tool-use tasks (FTRL's pipeline) as JSONL"),
    "eval": ("toolgym.commands.eval", "evaluate a policy on a split: Solve-P/R/F1 per question type"),
}
"""Command name -> (module, one-line help). The help is repeated here so that listing the
commands imports none of them."""


def _chosen(argv: list[str]) -> str | None:
    """The command named on the line: the first word that is not an option (the top-level
    options, ``--help`` and ``--version``, take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None, module: ModuleType | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command`` gets its real arguments (from ``module.add_parser``), the
    others are listed by name and help."""
    parser = argparse.ArgumentParser(prog="toolgym", description="ToolGym: RL environments for tool-using LLM agents.")
    parser.add_argument("--version", action="version", version=f"toolgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        if name == command and module is not None:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``toolgym`` command; its exit status."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(args_in)
    module = None
    if command in COMMANDS:
        try:
            module = importlib.import_module(COMMANDS[command][0])
        except Exception as exc:
            print(f"toolgym {command}: this command cannot load ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
    args = build_parser(command, module).parse_args(args_in)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
