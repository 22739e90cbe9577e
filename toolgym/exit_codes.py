"""The exit codes of every ``toolgym`` command, in one place.

It imports nothing, so ``toolgym --help`` shows them without loading any command. ``EXIT_CODES``
is the one list: ``toolgym --help``'s epilog is made from it, and a test checks that docs/cli.md's
table says the same.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BLOCKED",
    "EXIT_CODES",
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
]

EXIT_OK = 0
"""Everything asked for was done."""
EXIT_ERROR = 1
"""Something failed: a request the server refused, a file that cannot be written, failed episodes."""
EXIT_USAGE = 2
"""The command line is wrong (argparse's own code)."""
EXIT_UNREACHABLE = 3
"""No server: a client command got no connection at ``--base-url``; ``serve`` could not start one."""
EXIT_BLOCKED = 4
"""The server answers but cannot serve (``status``: not ready), or ``doctor`` found a problem that blocks serving."""
EXIT_INTERRUPTED = 130
"""Ctrl-C."""

EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (EXIT_OK, "ok", "everything asked for was done"),
    (EXIT_ERROR, "error", "a request failed, a file could not be written, an episode failed, nothing matched"
                          " (export)"),
    (EXIT_USAGE, "usage", "a wrong option or argument"),
    (EXIT_UNREACHABLE, "no server", "nothing answers at --base-url (serve: the server could not start)"),
    (EXIT_BLOCKED, "blocked", "the server answers but is not ready (status), or doctor found a problem that"
                              " blocks serving"),
    (EXIT_INTERRUPTED, "interrupted", "Ctrl-C"),
)
"""Every exit code as ``(code, name, meaning)``: the source of the help text and of docs/cli.md's table."""

EXIT_CODES_HELP = "exit codes (every command):\n" + "\n".join(
    f"  {code:<4} {name}: {meaning}" for code, name, meaning in EXIT_CODES
)
"""The epilog of ``toolgym --help``."""
