"""Key rotation without a restart, against a real ``toolgym serve`` process (process backend).

The keys file is read again when it changes (a ``stat`` at most once a second) and on SIGHUP. A
removed key is refused from the next request on; its live episode stays its own (owned by the
key's hash): unreachable while the key is gone, reachable again if the key comes back, and
closed by the reaper once idle like any other. The server runs at debug log level, and its log
never shows a key.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from serve_kit import ServeProcess

ENV = "toolgym/ToolUse-v0"
OLD, NEW, EXTRA = "rotation-old-key-4b1e9c", "rotation-new-key-a07d33", "rotation-extra-key-5c8f10"


class Serve(ServeProcess):
    """The rotation server: process backend, one live episode per key, 50 requests/s per key."""

    def __init__(self, tmp: Path, keys_file: Path) -> None:
        super().__init__(tmp, "--backend", "process", "--warm-pool", "0", "--api-keys-file", str(keys_file),
                         "--max-live-episodes-per-key", "1", "--rate-limit-per-key", "50", log_level="debug")

    def status(self, key: str, path: str = "/v1/envs") -> int:
        return httpx.get(self.base_url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(f"# rotation test\n{OLD}\n", encoding="utf-8")
    return path


@pytest.fixture
def serve(tmp_path: Path, keys_file: Path) -> Iterator[Serve]:
    server = Serve(tmp_path, keys_file)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def eventually(check: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``check()`` held (polled every 0.1 s); fails after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout_s} s")


def rewrite_keeping_stat(path: Path, text: str) -> None:
    """Rewrite ``path`` in place with text of the same length and put its mtime back.

    The file then looks unchanged to a ``stat``, so only SIGHUP can make the server read it.
    """
    before = path.stat()
    assert len(text.encode()) == before.st_size
    with open(path, "r+", encoding="utf-8") as f:
        f.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_keys_rotate_on_change_and_on_sighup(serve: Serve, keys_file: Path) -> None:
    assert serve.status(OLD) == 200 and serve.status(NEW) == 401
    with httpx.Client(base_url=serve.base_url, headers={"Authorization": f"Bearer {OLD}"}, timeout=30) as old:
        r = old.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"})
        assert r.status_code == 201, r.text
        episode = r.json()["episode_id"]
        # --max-live-episodes-per-key 1 reached the server.
        r = old.post("/v1/episodes", json={"env_id": ENV, "task_id": "tu-single-1"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded", r.text
        assert r.headers["Retry-After"] == "1"

    # 1. SIGHUP: a rewrite a stat cannot see (same size, same inode, mtime put back) is read on
    #    the signal alone. NEW replaces OLD: NEW has the same length, so the size stays.
    assert len(NEW) == len(OLD)
    rewrite_keeping_stat(keys_file, f"# rotation test\n{NEW}\n")
    time.sleep(1.5)
    assert serve.status(OLD) == 200 and serve.status(NEW) == 401, "the stat saw no change"
    serve.signal(signal.SIGHUP)
    eventually(lambda: serve.status(NEW) == 200, timeout_s=10)
    assert serve.status(OLD) == 401, "a removed key stops at once"
    # The removed key's episode is still its own: not another key's, and not gone.
    assert serve.status(NEW, f"/v1/episodes/{episode}") == 404
    assert serve.proc.poll() is None, "SIGHUP does not stop the server"

    # 2. A change a stat sees: read on the next request at most a second later, no signal.
    keys_file.write_text(f"# rotation test\n{NEW}\n{EXTRA}\n{OLD}\n", encoding="utf-8")
    took = eventually(lambda: serve.status(EXTRA) == 200, timeout_s=10)
    assert took < 5, took
    assert serve.status(NEW) == 200
    # OLD is back, and so is its episode, untouched.
    with httpx.Client(base_url=serve.base_url, headers={"Authorization": f"Bearer {OLD}"}, timeout=30) as old:
        state = old.get(f"/v1/episodes/{episode}").json()
        assert state["status"] == "live" and state["turn"] == 0
        assert old.delete(f"/v1/episodes/{episode}").status_code == 204

    # 3. A replaced file (a new inode, as editors and deploy tools write) with NEW gone.
    fresh = keys_file.with_suffix(".new")
    fresh.write_text(f"{EXTRA}\n{OLD}\n", encoding="utf-8")
    os.replace(fresh, keys_file)
    eventually(lambda: serve.status(NEW) == 401, timeout_s=10)
    assert serve.status(EXTRA) == 200 and serve.status(OLD) == 200

    # 4. An emptied file refuses every key; it never turns authentication off.
    keys_file.write_text("# all keys revoked\n", encoding="utf-8")
    eventually(lambda: serve.status(EXTRA) == 401, timeout_s=10)
    assert httpx.get(serve.base_url + "/v1/envs", timeout=30).status_code == 401
    assert serve.status(OLD) == 401

    serve.stop()
    log = serve.log()
    assert "API keys reloaded" in log, log[-2000:]
    assert "DEBUG" in log, "the server ran at debug level"
    for key in (OLD, NEW, EXTRA):
        assert key not in log
