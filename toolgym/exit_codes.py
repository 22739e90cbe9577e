"""The exit codes of every ``toolgym`` command, in one place.

It imports nothing, so ``toolgym --help`` shows them without loading any command.
README.md's CLI section lists the same table.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BLOCKED",
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
"""The server answers but cannot serve (``status``: not ready), or ``doctor`` found a problem
that blocks serving."""
EXIT_INTERRUPTED = 130
"""Ctrl-C."""

EXIT_CODES_HELP = """exit codes (every command):
  0    ok
  1    error: a request failed, a file could not be written, an episode failed
  2    usage: a wrong option or argument
  3    no server: nothing answers at --base-url (serve: the server could not start)
  4    blocked: the server answers but is not ready (status), or doctor found a blocking problem
  130  interrupted (Ctrl-C)"""
"""The epilog of ``toolgym --help``; README.md repeats it."""

