"""What the ``toolgym`` commands share, so every command looks and fails the same way.

Server flags, exit codes, ``--json`` output, tables, progress bars and error messages.

Output rule: with ``--json`` a command writes exactly one JSON document (or, where it says so,
JSON Lines) to stdout and nothing else; tables, notes, progress bars and errors go to stderr
or, for tables without ``--json``, to stdout. Scripts can therefore pipe stdout to ``jq``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import httpx

from toolgym.client._core import DEFAULT_BASE_URL, RetryPolicy, resolve_api_key, resolve_base_url
from toolgym.errors import ToolGymError, Unauthorized, Unavailable
from toolgym.exit_codes import (
    EXIT_BLOCKED,
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

__all__ = [
    "CLI_RETRY",
    "EXIT_BLOCKED",
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Progress",
    "add_json_flag",
    "add_server_flags",
    "emit_json",
    "error_exit",
    "explain",
    "format_table",
    "is_unreachable",
    "server_target",
    "show_progress",
    "ticking",
]

CLI_RETRY = RetryPolicy(max_retries=1, backoff_s=0.2, max_backoff_s=1.0)
"""A person at a terminal wants a refused connection reported now, not after the trainer's
five retries with backoff."""


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--base-url`` and ``--api-key``, the same on every command that talks to a server.

    Absent, ``TOOLGYM_BASE_URL`` and ``TOOLGYM_API_KEY`` are read (as the clients do).
    """
    parser.add_argument("--base-url", default=None,
                        help=f"the ToolGym server (default: $TOOLGYM_BASE_URL, else {DEFAULT_BASE_URL})")
    parser.add_argument("--api-key", default=None, help="the server's API key (default: $TOOLGYM_API_KEY)")


def add_json_flag(parser: argparse.ArgumentParser, what: str = "one JSON document") -> None:
    """``--json``: machine-readable stdout, nothing else on it."""
    parser.add_argument("--json", action="store_true", help=f"write {what} to stdout instead of a table")


def server_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The base URL and API key the command uses (flags, then the environment, then defaults)."""
    return resolve_base_url(getattr(args, "base_url", None)), resolve_api_key(getattr(args, "api_key", None))


def emit_json(document: Any, out: IO[str] | None = None) -> None:
    """One JSON document on stdout, on one line (so a stream of them is JSON Lines)."""
    stream = out or sys.stdout
    stream.write(json.dumps(document, ensure_ascii=False, sort_keys=False) + "\n")
    stream.flush()


def bind_or_say(host: str, port: int, untouched: str) -> socket.socket | None:
    """The listening socket on ``host:port``, bound before anything else starts; else None.

    ``toolgym serve`` binds first so that a second server on a port in use fails before it
    touches any sandbox; when the port is taken, this says so on stderr, naming what was left
    ``untouched`` ("nothing was started or removed").
    """
    from toolgym.server.embedded import listen_socket

    try:
        return listen_socket(host, port)
    except OSError as exc:
        print(f"toolgym serve: cannot listen on {host}:{port}: {exc.strerror or exc}"
              f" (is another server running there?); {untouched}", file=sys.stderr)
        return None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[str] = ()) -> str:
    """A plain text table: a header, a rule, one line per row; ``right`` columns aligned right.

    Floats show three decimals and None shows ``-``, so a table never prints ``None``.
    """
    body = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    align_right = set(right)

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [c.rjust(w) if columns[i] in align_right else c.ljust(w) for i, (c, w) in pairs]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means nothing answered at the address.

    That is: refused, unresolvable, or timed out while connecting, as opposed to a server that
    answered with an error.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def explain(exc: BaseException, base_url: str) -> tuple[str, int]:
    """A message that says what to do next, and the exit code, for an error of a client command."""
    if is_unreachable(exc):
        return (f"cannot connect to {base_url}: is a server running at {base_url}? start one with"
                " `toolgym serve` (or point --base-url / $TOOLGYM_BASE_URL at yours)", EXIT_UNREACHABLE)
    if isinstance(exc, Unauthorized):
        return (f"{exc.message}: pass --api-key or set $TOOLGYM_API_KEY to one of the server's keys",
                EXIT_ERROR)
    if isinstance(exc, Unavailable):
        return f"the server at {base_url} is unavailable: {exc.message}", EXIT_ERROR
    if isinstance(exc, ToolGymError):
        return f"{type(exc).__name__}: {exc.message}", EXIT_ERROR
    if isinstance(exc, httpx.HTTPError):
        return f"the request to {base_url} failed: {exc}", EXIT_ERROR
    return f"{type(exc).__name__}: {exc}", EXIT_ERROR


def error_exit(command: str, exc: BaseException, base_url: str, *, as_json: bool = False) -> int:
    """Report ``exc`` on stderr and return the exit code.

    Under ``--json`` it is also written as ``{"error": ...}`` on stdout, so a script reading
    stdout still gets one document.
    """
    message, code = explain(exc, base_url)
    print(f"toolgym {command}: {message}", file=sys.stderr)
    if as_json:
        emit_json({"error": {"message": message, "exit_code": code, "base_url": base_url}})
    return code


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command draws progress bars: only for a person watching.

    That is: stderr is a terminal, and neither ``--json`` (a script reads the output) nor
    ``--no-progress`` was given. A bar in a log file or a CI transcript is noise.
    """
    if getattr(args, "json", False) or getattr(args, "no_progress", False):
        return False
    return sys.stderr.isatty()


class Progress:
    """A progress bar on stderr (tqdm), or nothing.

    Nothing where tqdm is missing (it comes with the ``[server]`` extra; a bare client install
    runs without bars) or when ``disable`` is set. stdout is never touched, so ``--json``
    output stays parseable.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, disable: bool = False) -> None:
        self._bar: Any = None
        if disable:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n``; ``postfix`` values are shown after the bar."""
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)
            self._bar.update(n)

    def close(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def ticking(desc: str, *, disable: bool = False) -> Iterator[None]:
    """An elapsed-seconds bar on stderr while work of unknown length runs.

    A docker build reports nothing until it ends; the bar shows the command is alive.
    """
    bar = Progress(None, desc, "s", disable=disable)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):  # ends when the work does
            bar.update(1)

    thread = threading.Thread(target=tick, name="toolgym-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def say(command: str) -> Callable[[str], None]:
    """A ``say`` that writes ``toolgym <command>: <text>`` to stderr (notes never go to stdout)."""
    return lambda text: print(f"toolgym {command}: {text}", file=sys.stderr)
