"""Every ``toolgym`` command takes ``--json``: stdout is then machine output only, notes go to stderr,
and no progress bar is drawn. Progress bars appear only on a terminal."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolgym.cli import COMMANDS, build_parser
from toolgym.commands._cli import show_progress

TOOLGYM = str(Path(sys.executable).parent / "toolgym")


def leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every runnable command's parser, its real options loaded, nested ones (``episodes ls``) included."""
    leaves: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            leaves[name] = parser
        for sub in subs:
            for child, child_parser in sub.choices.items():
                walk(f"{name} {child}".strip(), child_parser)

    for command, (module_name, _) in COMMANDS.items():
        parser = build_parser(command, importlib.import_module(module_name))
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        walk(command, sub.choices[command])
    return leaves


def test_every_command_takes_json() -> None:
    leaves = leaf_parsers()
    assert {"serve", "generate", "demo", "build-image", "episodes ls", "episodes show"} <= set(leaves)
    missing = [name for name, parser in leaves.items()
               if not any("--json" in a.option_strings for a in parser._actions)]
    assert missing == []


def test_progress_only_on_a_terminal_and_never_with_json() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    args = argparse.Namespace(json=False, no_progress=False)
    assert show_progress(args) is sys.stderr.isatty()
    saved, sys.stderr = sys.stderr, Tty()  # type: ignore[assignment]
    try:
        assert show_progress(args)
        assert not show_progress(argparse.Namespace(json=True, no_progress=False))
        assert not show_progress(argparse.Namespace(json=False, no_progress=True))
    finally:
        sys.stderr = saved


def test_generate_json_is_one_document(tmp_path: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    done = subprocess.run([TOOLGYM, "generate", "--seed", "3", "--count", "12", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    summary = json.loads(line)
    assert summary["written"] == 12 and summary["kind"] == "ToolUse" and summary["out"] == str(out)
    assert sum(summary["splits"].values()) == 12 and summary["sandbox"] is None
    assert len(out.read_text().splitlines()) == 12
    assert "question types x scaling operations" in done.stderr  # the table moved to stderr

    clash = subprocess.run([TOOLGYM, "generate", "--count", "2", "--out", "-", "--json"], capture_output=True,
                           text=True, timeout=60)
    assert clash.returncode == 2 and clash.stdout == "" and "--json" in clash.stderr


def test_serve_json_says_where_it_listens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
    proc = subprocess.Popen([TOOLGYM, "serve", "--port", "0", "--backend", "process", "--warm-pool", "0",
                             "--db", str(tmp_path / "t.db"), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["host"] == "127.0.0.1" and first["port"] > 0 and first["pid"] == proc.pid
        assert first["base_url"] == f"http://127.0.0.1:{first['port']}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("toolgym serve did not stop on SIGTERM")
    assert rest == ""  # nothing else ever reaches stdout


def _stderr_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``toolgym`` with stderr on a pseudo-terminal; its exit code, stdout, and what the terminal got."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    try:
        proc = subprocess.Popen([TOOLGYM, *args], stdout=subprocess.PIPE, stderr=slave, text=True, cwd=cwd)
        os.close(slave)
        chunks: list[bytes] = []
        while True:  # ends when the child closes the terminal (EIO) or exits
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_bar_and_json_gets_none(tmp_path: Path) -> None:
    code, _, terminal = _stderr_on_a_terminal(["generate", "--count", "30", "--out", "a.jsonl"], tmp_path)
    assert code == 0 and "generate:" in terminal and "/30" in terminal, terminal
    code, out, terminal = _stderr_on_a_terminal(["generate", "--count", "30", "--out", "b.jsonl", "--json"], tmp_path)
    assert code == 0 and json.loads(out)["written"] == 30
    assert "generate:" not in terminal and "/30" not in terminal, terminal
