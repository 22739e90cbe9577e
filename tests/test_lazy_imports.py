"""The server does not import Gymnasium or the client; ``import toolgym`` still registers the
remote envs; the CLI imports only the command it runs. Each check runs in a fresh interpreter,
since this test process has imported everything already."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from toolgym.cli import COMMANDS, build_parser


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_the_server_imports_neither_gymnasium_nor_the_client() -> None:
    out = run_python(
        "import sys\n"
        "import toolgym.server.app, toolgym.cli, toolgym.commands.serve, uvicorn\n"
        "from toolgym.server import Settings, create_app\n"
        "create_app(Settings(db_path=':memory:'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gymnasium' or m.startswith('toolgym.client')))\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("order", ["import toolgym, gymnasium", "import gymnasium, toolgym"])
def test_import_toolgym_still_registers_the_envs(order: str) -> None:
    out = run_python(
        f"{order}\n"
        "import importlib.resources\n"
        "env = gymnasium.make('toolgym/ToolUse-v0', base_url='http://127.0.0.1:9', api_key='k')\n"
        "print(type(env.unwrapped).__name__, env.unwrapped.env_id, 'toolgym/Remote-v0' in gymnasium.registry)\n"
        "assert importlib.resources.files('gymnasium').is_dir()\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["RemoteEnv", "toolgym/ToolUse-v0", "True"]


def test_toolgym_help_lists_every_command_without_importing_them() -> None:
    out = run_python(
        "import sys\nfrom toolgym.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('toolgym.commands.')))\n"
    )
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert name in out.stdout
    assert out.stdout.strip().endswith("LOADED []"), out.stdout


def test_toolgym_help_runs_as_a_command() -> None:
    out = subprocess.run([sys.executable, "-m", "toolgym.cli", "--help"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout and "build-image" in out.stdout


def test_a_broken_command_breaks_only_itself() -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['toolgym.commands.generate'] = None  # importing it now raises ImportError\n"
        "from toolgym.cli import main\n"
        "for argv in (['--help'], ['serve', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, (argv, e.code)\n"
        "print('STATUS', main(['generate', '--help']))\n"
    )
    assert out.returncode == 0, out.stderr
    assert "STATUS 1" in out.stdout
    assert "toolgym generate: this command cannot load" in out.stderr
    assert "--warm-pool" in out.stdout, "serve's own arguments are still there"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_help_table_matches_each_command(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    parser = build_parser(name, module)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps[name] == COMMANDS[name][1]
    assert sub.choices[name].get_default("run") is module.run
