"""The ``toolgym`` command and its dispatch table.

Commands: ``serve``, ``demo``, ``build-image``, ``generate``, ``eval``, ``status``,
``episodes``, ``export`` and ``doctor``.

Each command lives in ``toolgym/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this module only dispatches. It imports the one command asked for and no
other, so ``toolgym serve`` does not pay for the generator's or the evaluator's imports, and a
command module that fails to import breaks that command alone: ``toolgym --help`` lists every
command from the table below without importing any.

Exit codes are the same for every command (``toolgym.exit_codes``, listed in ``toolgym
--help``): 0 ok, 1 error, 2 usage, 3 no server, 4 blocked (not ready), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from toolgym._version import __version__
from toolgym.exit_codes import EXIT_CODES_HELP, EXIT_ERROR, EXIT_INTERRUPTED

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("toolgym.commands.serve", "run the ToolGym server"),
    "demo": ("toolgym.commands.demo",
             "start a server and run real episodes of every env family with scripted policies"),
    "build-image": ("toolgym.commands.build_image",
                    "build the sandbox image (python3 + numpy + sympy, non-root)"),
    "generate": ("toolgym.commands.generate", "generate verified tool-use tasks (FTRL's pipeline) as JSONL"),
    "eval": ("toolgym.commands.eval", "evaluate a policy on a split: Solve-P/R/F1 per question type"),
    "status": ("toolgym.commands.status",
               "health, readiness, live episodes, per-env pass rates and version of a server"),
    "episodes": ("toolgym.commands.episodes", "list this key's episodes (ls) or show one turn by turn (show)"),
    "export": ("toolgym.commands.export", "write finished trajectories as JSONL or a Hugging Face dataset folder"),
    "doctor": ("toolgym.commands.doctor",
               "check Docker, the sandbox image, isolation, the port and keys; say how to fix each"),
}
"""Command name -> (module, one-line help). The help is repeated here so that listing the
commands imports none of them."""


def _chosen(argv: list[str]) -> str | None:
    """The command named on the line: the first word that is not an option.

    The top-level options, ``--help`` and ``--version``, take no value.
    """
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None, module: ModuleType | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command`` gets its real arguments (from ``module.add_parser``).

    The others are listed by name and help, so listing them imports nothing.
    """
    parser = argparse.ArgumentParser(
        prog="toolgym", description="ToolGym: RL environments for tool-using LLM agents.",
        epilog=EXIT_CODES_HELP + "\n\nclient commands read --base-url and --api-key, else $TOOLGYM_BASE_URL and"
        " $TOOLGYM_API_KEY;\n--json makes stdout one JSON document (demo: JSON Lines), notes go to stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
            return EXIT_ERROR
    args = build_parser(command, module).parse_args(args_in)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
