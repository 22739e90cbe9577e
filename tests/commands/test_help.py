"""Every option of every ``toolgym`` command says what it does in ``--help``."""

from __future__ import annotations

import argparse

from toolgym.cli import build_parser


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_listed_with_help() -> None:
    parsers = subcommand_parsers()
    assert set(parsers) == {"serve", "demo", "build-image", "generate", "eval", "status", "episodes", "export",
                            "doctor"}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert all((choice.help or "").strip() for choice in sub._choices_actions)


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"toolgym {name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in subcommand_parsers().items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and (action.help is None or action.help == argparse.SUPPRESS or not action.help.strip())
    ]
    assert missing == []

