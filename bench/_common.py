"""Shared pieces of the benchmarks in ``bench/`` (not part of the package).

- ``summarize`` / ``table``: medians and tail percentiles, printed as aligned tables;
- ``print_header``: date, machine, git state and the exact command of a run;
- ``InProcessServer``: a real ToolGym server on a free loopback port in a thread of this
  process, as ``tests/conftest.py`` starts one (``server_factory``);
- ``SubprocessServer``: ``toolgym serve`` in a child process (so a load-generating client does
  not share the server's GIL), ended by its own PID; or, given uvicorn options, the same app
  started by ``bench/_serve.py`` with those options;
- ``count_containers`` / ``remove_containers``: the containers of one server instance, found by
  the labels the Docker backend sets (``toolgym.managed=1``, ``toolgym.instance=<id>``).

Every server here listens on 127.0.0.1 only, and every instance id starts with ``bench-``.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from toolgym.server.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("TOOLGYM_SANDBOX_IMAGE", "toolgym-sandbox:latest")

TOOLUSE = "toolgym/ToolUse-v0"
CODEMATH = "toolgym/CodeMath-v0"
FUNCTIONCALL = "toolgym/FunctionCall-v0"

TOOLUSE_TASK = "tu-single-1"
"""A built-in ToolUse task (train split); its first reference call is one ``get_city_info``."""
TOOL_ACTION = '<tool_call>\n{"name": "get_city_info", "arguments": {"city": "Varnholt"}}\n</tool_call>'
"""One ``<tool_call>`` to a built-in tool of ``TOOLUSE_TASK``: one sandbox run per step."""
FUNCTIONCALL_TASK = "fc-weather-001"
FUNCTIONCALL_ACTION = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
"""The gold call of ``FUNCTIONCALL_TASK``: parsed and verified in the server, no sandbox."""
CODE_BLOCK = "print(sum(i * i for i in range(100)))"
CODEMATH_ACTION = f"Let me compute.\n```python\n{CODE_BLOCK}\n```"
"""A CodeMath turn with one small code block and no ``\\boxed{}``: one sandbox run, no verify."""


# --- statistics and tables ------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(samples)),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "min": min(samples) if samples else math.nan,
        "max": max(samples) if samples else math.nan,
    }


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with the precision the size deserves."""
    if seconds != seconds:  # NaN
        return "-"
    v = seconds * 1000.0
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:.0f}"


def ratio(a: float, b: float) -> str:
    if not b or a != a or b != b:
        return "-"
    r = a / b
    return f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def latency_row(name: str, samples: Sequence[float], *extra: str) -> list[str]:
    s = summarize(samples)
    return [name, str(len(samples)), ms(s["p50"]), ms(s["p90"]), ms(s["p99"]), ms(s["max"]), *extra]


LATENCY_HEADERS = ["what", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None) -> None:
    rows = [list(map(str, r)) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    if title:
        print(f"\n{title}")
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    sys.stdout.flush()


# --- run header -------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _docker_version() -> str:
    try:
        from toolgym.server.sandbox.docker import docker_client

        client = docker_client(timeout_s=5)
        try:
            return str(client.version().get("Version", "?"))
        finally:
            client.close()
    except Exception:
        return "unreachable"


def command_line() -> str:
    exe = os.path.relpath(sys.executable, os.getcwd()) if sys.executable.startswith(str(REPO)) else sys.executable
    script = os.path.relpath(sys.argv[0], os.getcwd())
    return shlex.join([exe, script, *sys.argv[1:]])


def print_header(title: str, config: dict[str, Any]) -> None:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    dirty = " (work tree has uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    print(f"# {title}")
    print(f"date      {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"machine   {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} {platform.release()},"
          f" Python {platform.python_version()}, Docker {_docker_version()}")
    print(f"load      {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min, at start)")
    print(f"git       {_git('rev-parse', '--short', 'HEAD')}{dirty}")
    print(f"command   {command_line()}  (cwd {os.getcwd()})")
    print("config    " + ", ".join(f"{k}={v}" for k, v in config.items()))
    sys.stdout.flush()


def print_footer() -> None:
    print(f"\nload at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")


# --- containers of one instance ------------------------------------------------------------------------
def bench_instance(tag: str) -> str:
    return f"bench-{tag}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _label_filter(instance: str) -> dict[str, list[str]]:
    from toolgym.server.sandbox.docker import LABEL_INSTANCE, LABEL_MANAGED

    return {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]}


def count_containers(instance: str) -> int:
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client()
    try:
        return len(client.api.containers(all=True, quiet=True, filters=_label_filter(instance)))
    finally:
        client.close()


def remove_containers(instance: str) -> int:
    """Remove what an instance left (only containers carrying its labels); returns how many."""
    from toolgym.server.sandbox.docker import docker_client

    client = docker_client()
    try:
        gone = 0
        for c in client.api.containers(all=True, quiet=True, filters=_label_filter(instance)):
            try:
                client.api.remove_container(c["Id"], force=True, v=True)
                gone += 1
            except Exception:
                pass
        return gone
    finally:
        client.close()


def docker_problem() -> str | None:
    """None when the Docker backend can run here, else why not."""
    from toolgym.server.sandbox.select import docker_problem as problem

    return problem(IMAGE)


# --- servers --------------------------------------------------------------------------------------------
class InProcessServer:
    """A real server in a thread of this process, started as ``tests/conftest.py`` does."""

    def __init__(self, backend: str, tmpdir: str, tag: str, **overrides: Any) -> None:
        self.backend_name = backend
        self.instance = bench_instance(tag)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._tmpdir = tmpdir
        self._overrides = overrides
        self._server: Any = None
        self.app: Any = None
        self.sandbox_backend: Any = None

    def __enter__(self) -> InProcessServer:
        from toolgym.server import Settings, create_app
        from toolgym.server.embedded import EmbeddedServer

        settings = Settings(**{
            "host": "127.0.0.1", "port": self.port, "instance_id": self.instance,
            "db_path": os.path.join(self._tmpdir, f"{self.instance}.db"), "sandbox_image": IMAGE,
            **self._overrides,
        })
        if self.backend_name == "docker":
            from toolgym.server.sandbox.docker import DockerBackend

            self.sandbox_backend = DockerBackend(image=IMAGE, instance=self.instance, channel=settings.sandbox_channel)
        else:
            from toolgym.server.sandbox.process import ProcessBackend

            self.sandbox_backend = ProcessBackend()
        self.app = create_app(settings, backend=self.sandbox_backend)
        self._server = EmbeddedServer(self.app, port=self.port).start(timeout_s=120)
        return self

    @property
    def pool(self) -> Any:
        return self.app.state.manager.pool

    def wait_pool_full(self, timeout_s: float = 60.0) -> float:
        """Block until the warm pool is full again and no ended episode's sandbox is still
        being removed in the background (both compete with the next requests for the CPU);
        returns the seconds waited."""
        pool = self.pool
        manager = self.app.state.manager
        started = time.monotonic()
        while getattr(manager, "teardown_backlog", 0):
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the teardown backlog did not drain within {timeout_s} s")
            time.sleep(0.005)
        if pool is None or pool.size == 0 or pool.ready >= pool.size:
            return time.monotonic() - started
        while pool.ready < pool.size:
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the warm pool did not refill within {timeout_s} s ({pool.last_error})")
            time.sleep(0.005)
        return time.monotonic() - started

    def __exit__(self, *exc: object) -> None:
        self.leftover = 0
        if self._server is not None:
            self._server.stop(timeout_s=120)
        if self.backend_name == "docker":
            self.leftover = count_containers(self.instance)
            if self.leftover:
                remove_containers(self.instance)
        if self.sandbox_backend is not None:
            self.sandbox_backend.close()


class SubprocessServer:
    """``toolgym serve`` in a child process on a free loopback port; ``stop`` sends SIGTERM to
    that PID (the server then removes its containers) and reports what it left."""

    def __init__(self, backend: str, tmpdir: str, tag: str, *, warm_pool: int, max_live: int = 256,
                 extra_env: dict[str, str] | None = None, uvicorn: list[str] | None = None) -> None:
        self.backend_name = backend
        self.instance = bench_instance(tag)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.warm_pool = warm_pool
        self.log_path = os.path.join(tmpdir, f"{self.instance}.log")
        toolgym = str(Path(sys.executable).parent / "toolgym")
        self.cmd = [toolgym, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--backend", backend,
                    "--db", os.path.join(tmpdir, f"{self.instance}.db"), "--warm-pool", str(warm_pool),
                    "--max-live-episodes", str(max_live), "--image", IMAGE, "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLGYM_")}
        env.update({"TOOLGYM_INSTANCE_ID": self.instance, **(extra_env or {})})
        if uvicorn is not None:  # the harness's launcher (bench/_serve.py) with these uvicorn options
            env.update({"TOOLGYM_HOST": "127.0.0.1", "TOOLGYM_PORT": str(self.port), "TOOLGYM_BACKEND": backend,
                        "TOOLGYM_DB_PATH": os.path.join(tmpdir, f"{self.instance}.db"),
                        "TOOLGYM_WARM_POOL_SIZE": str(warm_pool), "TOOLGYM_MAX_LIVE_EPISODES": str(max_live),
                        "TOOLGYM_SANDBOX_IMAGE": IMAGE})
            self.cmd = [sys.executable, str(REPO / "bench" / "_serve.py"), *uvicorn]
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.leftover_after_stop = 0

    def start(self, timeout_s: float = 120.0) -> SubprocessServer:
        import httpx

        log = open(self.log_path, "wb")  # the child process writes to it
        self.proc = subprocess.Popen(self.cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"toolgym serve exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                r = httpx.get(self.base_url + "/readyz", timeout=5)
                if r.status_code == 200 and r.json().get("warm_pool", {}).get("ready", 0) >= self.warm_pool:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"toolgym serve did not become ready in {timeout_s} s; log: {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None
        if self.backend_name == "docker":
            self.leftover_after_stop = count_containers(self.instance)
            if self.leftover_after_stop:
                remove_containers(self.instance)

    def __enter__(self) -> SubprocessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gauge(client: Any, name: str) -> int:
    """One gauge of the server's ``/metrics`` (``/readyz`` would also ask Docker twice); 0 if absent."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def warm_sandboxes(client: Any) -> int:
    """The server's warm-pool fill, from ``/metrics``."""
    return gauge(client, "toolgym_warm_sandboxes")


def wait_pool_full_http(client: Any, size: int, timeout_s: float = 60.0) -> float:
    """Poll ``/metrics`` (any httpx.Client on the server) until no ended episode's sandbox is
    still being removed in the background and ``size`` sandboxes are warm; returns the
    seconds waited (0.0 when there was nothing to wait for)."""
    started = time.monotonic()
    while gauge(client, "toolgym_teardown_backlog"):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the teardown backlog did not drain within {timeout_s} s")
        time.sleep(0.01)
    if size <= 0 or warm_sandboxes(client) >= size:
        return time.monotonic() - started
    while warm_sandboxes(client) < size:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the warm pool did not refill to {size} within {timeout_s} s")
        time.sleep(0.01)
    return time.monotonic() - started


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
