"""Every ```python and ```bash block of README.md and docs/**/*.md runs, and exits 0, against a real server.

One server on loopback (process backend, one API key) serves the whole module; each block runs
in a temporary folder shared by the blocks of its file (in order, so a block may use a file an
earlier one wrote), with ``TOOLGYM_BASE_URL`` and ``TOOLGYM_API_KEY`` pointing at that server
and the project venv's ``bin`` first on ``PATH``. Python blocks run with the project's python,
or, after ``<!-- docs-test: venv=NAME -->``, with the python of the cached venv ``VENVS[NAME]``
(``tests/venv_cache.py``). ``<!-- docs-test: skip reason="..." -->`` skips a block that is too
slow or needs what a test machine lacks (a model server, a cluster); the reason is mandatory.
Output and illustrations use another fence language (``text``, ``console``, ``json``...) and
are not run; a fence without a language is an error, so no code block escapes by accident.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import venv_cache

from toolgym.exit_codes import EXIT_CODES
from toolgym.server.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"python", "bash"}
NOT_RUN = {"text", "console", "json", "jsonl", "yaml", "toml", "ini", "http", "diff", "dockerfile", "csv"}
API_KEY = "docs-test-key"
BLOCK_TIMEOUT_S = 180
MAX_SKIPS = 16

VENVS: dict[str, Callable[[], Path]] = {
    "openenv": venv_cache.openenv_python,
    **{extra: functools.partial(venv_cache.toolgym_venv, extra) for extra in ("trl", "verl", "skyrl", "verifiers")},
}
"""A block's ``venv=NAME`` -> the python of its cached venv: OpenEnv's client, or ``toolgym[NAME]``
for a trainer (the same venvs the trainer tests use)."""

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})([^`]*)$")
_MARK = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a doc file, with the docs-test mark on the line before it (if any)."""

    path: Path
    line: int
    language: str
    code: str
    mark: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        if not self.mark.startswith("skip"):
            return None
        found = re.fullmatch(r'skip\s+reason="([^"]*)"', self.mark)
        return found.group(1).strip() if found else ""

    @property
    def venv(self) -> str | None:
        found = re.fullmatch(r"venv=([\w.-]+)", self.mark)
        return found.group(1) if found else None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, as CommonMark reads fences (an info string holds no backtick)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):  # ends: i grows on every pass
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening.groups()
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "") if i else ""
        mark = _MARK.match(before.strip())
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and set(lines[j].strip()) == {fence[0]}):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        found.append(Block(path, i + 1, info.strip().split(" ")[0] if info.strip() else "", "\n".join(body) + "\n",
                           mark.group(1) if mark else ""))
        i = j + 1
    return found


ALL_BLOCKS = [b for path in DOC_FILES for b in blocks(path)]
RUNNABLE = [b for b in ALL_BLOCKS if b.language in RUN]


def test_every_fence_names_its_language() -> None:
    bad = [f"{b.name}: ```{b.language}" for b in ALL_BLOCKS if b.language not in RUN | NOT_RUN]
    assert bad == [], "give every fence a language: python/bash run, text/console/json... do not"


def test_every_mark_is_known_and_every_skip_says_why() -> None:
    marked = [b for b in ALL_BLOCKS if b.mark]
    unknown = [b.name for b in marked if b.skip_reason is None and b.venv is None]
    assert unknown == [], "a mark is skip reason=\"...\" or venv=NAME"
    assert [b.name for b in marked if b.skip_reason == ""] == [], "every skip needs a reason"
    assert [b.name for b in marked if b.venv is not None and b.venv not in VENVS] == []
    assert [b.name for b in marked if b.language not in RUN] == [], "marks go on python or bash blocks"
    skips = [b.name for b in marked if b.skip_reason]
    assert len(skips) <= MAX_SKIPS, f"too many skipped blocks: {skips}"


def test_the_cli_page_lists_the_exit_codes() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \| ([^|]+?) \|$", text, flags=re.MULTILINE)
    assert [(int(c), n, m) for c, n, m in rows] == list(EXIT_CODES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for every block, with one finished episode so listing and export have something."""
    from toolgym.client import EnvClient
    from toolgym.server import Settings, create_app
    from toolgym.server.embedded import EmbeddedServer
    from toolgym.server.sandbox.process import ProcessBackend

    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, warm_pool_size=0, api_keys=(API_KEY,),
                        instance_id=f"docs-{uuid.uuid4().hex[:8]}",
                        db_path=str(tmp_path_factory.mktemp("docs-server") / "toolgym.db"))
    backend = ProcessBackend()
    thread = EmbeddedServer(create_app(settings, backend=backend), port=port).start(timeout_s=60)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with EnvClient(base_url, API_KEY) as client:
            first = client.reset("toolgym/FunctionCall-v0", seed=0)
            client.step(first.episode_id, "No function fits.")
        yield base_url
    finally:
        thread.stop()
        backend.close()


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """One working folder per doc file, shared by its blocks."""
    return {path: tmp_path_factory.mktemp(path.stem) for path in DOC_FILES}


def _python_for(block: Block) -> str:
    if block.venv is None:
        return sys.executable
    return str(VENVS[block.venv]())


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_block_runs(block: Block, server: str, workdirs: dict[Path, Path]) -> None:
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    cwd = workdirs[block.path]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
    env.update(TOOLGYM_BASE_URL=server, TOOLGYM_API_KEY=API_KEY,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = cwd / f"block-{block.line}.{'py' if block.language == 'python' else 'sh'}"
    script.write_text(block.code, encoding="utf-8")
    command = ([_python_for(block), str(script)] if block.language == "python"
               else ["bash", "-e", "-o", "pipefail", str(script)])
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (f"{block.name} exited {done.returncode}\n--- code\n{block.code}"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def test_relative_links_point_at_files() -> None:
    broken = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            where = (path.parent / target.split("#")[0]).resolve()
            if not where.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []
