"""ToolGym against the peers a user would pick today, and against the Docker floors, in ONE run.

Measured in one run, each system in a child process on 127.0.0.1, so the ratios share the
machine's load (printed at the start and the end):

- Docker floors: ``docker run --rm`` of the sandbox image (cold), and the SDK's create + start
  + remove rate from 1 and 2 threads (``_floors.py``);
- OpenEnv (``openenv`` 0.10.0, scratch virtualenv): its echo env over HTTP and over its
  WebSocket session with its own client: single-client step p50/p99, and steps/s from 32
  concurrent clients (``_peer_openenv_load.py``);
- AgentBox (``agentbox-rl`` 0.3.0, scratch virtualenv): fresh hardened container per rollout,
  reset + one tool step + close at concurrency 1 and 2 (``_peer_agentbox_run.py``);
- ToolGym (the Docker backend, uvicorn asyncio + h11 like the peer's server): tool-call step
  over HTTP and ``/v1/ws`` (when the server has it), warm resets at rest and arriving at
  Docker's 2-thread create rate, 256 live sandboxed episodes stepped by ``/v1/batch/step`` and
  by one ``AsyncEnvClient`` at 8 and 256 concurrent, fresh episodes/s at 1-2 workers, final
  step and DELETE, FunctionCall episodes/s from one ``AsyncEnvClient`` (``_toolgym_load.py``).

It prints the measurements, then each target of the issue "Performance at GRPO scale" with its
same-run ratio and a pass/fail, and writes everything as JSON (``--json``). ``--profile DIR``
also records the server with py-spy during the 256 resets and during the steps (``_profile.py``).
A peer that cannot be installed or run here is skipped, with the reason in the output and JSON.

Run: ``.venv/bin/python bench/peers.py --install [--json PATH] [--profile bench/profiles]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import sys
import tempfile
import time
from typing import Any

import _floors
import _peer_setup as peers
import _toolgym_load as tg
import throughput
from _common import (
    IMAGE,
    SubprocessServer,
    bench_instance,
    count_containers,
    docker_problem,
    ms,
    print_footer,
    print_header,
    remove_containers,
    summarize,
)
from _peers_report import report


def p50(xs: list[float]) -> float:
    return summarize(xs)["p50"] if xs else math.nan


def run_openenv(tmp: str, args: argparse.Namespace, out: dict[str, Any]) -> None:
    why = peers.install(peers.OPENENV) if args.install else None
    why = why or (None if os.path.exists(peers.python_of(peers.OPENENV["venv"])) else
                  f"no virtualenv at {peers.OPENENV['venv']} (run with --install)")
    why = why or peers.make_echo_env()
    if why:
        out["openenv"] = {"skipped": why}
        print(f"OpenEnv skipped: {why}", flush=True)
        return
    with peers.EchoServer(tmp) as echo:
        print(f"openenv   {' '.join(echo.cmd)}  (cwd {peers.ECHO_DIR}/{peers.ECHO_NAME})", flush=True)
        res = peers.run_json([peers.python_of(peers.OPENENV["venv"]), "_peer_openenv_load.py", echo.base_url,
                              "--steps", str(args.steps), "--clients", "32", "--seconds", str(args.seconds)], 600)
    out["openenv"] = {"version": peers.version(peers.OPENENV), **res}


def run_agentbox(args: argparse.Namespace, out: dict[str, Any]) -> None:
    why = peers.install(peers.AGENTBOX) if args.install else None
    why = why or (None if os.path.exists(peers.python_of(peers.AGENTBOX["venv"])) else
                  f"no virtualenv at {peers.AGENTBOX['venv']} (run with --install)")
    if why:
        out["agentbox"] = {"skipped": why}
        print(f"AgentBox skipped: {why}", flush=True)
        return
    instance = bench_instance("agentbox")
    try:
        res = peers.run_json([peers.python_of(peers.AGENTBOX["venv"]), "_peer_agentbox_run.py", "--image", IMAGE,
                              "--instance", instance, "--episodes", str(args.agentbox_episodes),
                              "--concurrency", "1,2"], 600)
        out["agentbox"] = {"version": peers.version(peers.AGENTBOX), "image": IMAGE, **res}
    except Exception as exc:
        out["agentbox"] = {"skipped": f"AgentBox could not run here: {exc}"[:1500]}
        print(f"AgentBox skipped: {out['agentbox']['skipped']}", flush=True)
    finally:
        out.setdefault("leftovers", {})[instance] = count_containers(instance)
        remove_containers(instance)


def run_floors(args: argparse.Namespace, out: dict[str, Any]) -> None:
    instance = bench_instance("floors")
    try:
        out["docker_run"] = _floors.cold_docker_run(instance, args.docker_runs)
        out["sdk_rate"] = [_floors.sdk_rate(instance, t, args.sdk_per_thread) for t in (1, 2)]
    finally:
        out.setdefault("leftovers", {})[instance] = count_containers(instance)
        remove_containers(instance)


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, the engine's daemons, the containers' shims, and the host."""
    snap = throughput.cpu_snapshot(server_pid)
    snap["shims"] = sum(throughput._cpu_s(p) for p in throughput._pids("containerd-shim"))
    del snap["client"]
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float], count: int, wall_s: float) -> dict[str, float]:
    """CPU ms per item (reset or step) of each process group, and how busy the host was (of 200%)."""
    out = {k: (after[k] - before[k]) / max(count, 1) * 1000 for k in before}
    out["host_busy_pct"] = (after["host"] - before["host"]) / wall_s * 100
    return out


def run_toolgym(tmp: str, args: argparse.Namespace, out: dict[str, Any], rate2: float) -> None:
    from contextlib import nullcontext

    from _profile import Recording

    extra = {"PYTHONPATH": args.server_pythonpath} if args.server_pythonpath else None
    server = SubprocessServer("docker", tmp, "peers", warm_pool=args.warm_pool, max_live=args.live + 64,
                              uvicorn=["--loop", "asyncio", "--http", "h11"], extra_env=extra)
    r: dict[str, Any] = {}
    out["toolgym"] = r
    with server:
        assert server.proc is not None
        print(f"toolgym   {' '.join(server.cmd)}  (warm pool {args.warm_pool}, instance {server.instance})",
              flush=True)

        def profiled(name: str) -> Any:
            return Recording(server.proc.pid, args.profile, tmp, name) if args.profile else nullcontext()

        url = server.base_url
        r["tool_step_http"] = tg.sequential_tool_steps(url, args.steps)
        why_ws = tg.ws_available(url)
        r["tool_step_ws"] = asyncio.run(tg.ws_tool_steps(url, args.steps)) if why_ws is None else None
        r["ws_note"] = why_ws
        r["rest"] = tg.rest_resets_and_endings(url, args.rest_episodes, args.warm_pool, 0.25)
        r["paced"] = asyncio.run(tg.paced_resets(url, rate2, args.paced))
        r["fresh"] = [asyncio.run(tg.fresh_episodes(url, w, args.fresh)) for w in (1, 2)]
        # One client speaking HTTP (its pool) and, where the route exists, /v1/ws (one session).
        protocols = ["http"] + (["ws"] if why_ws is None else [])
        r["functioncall"] = [asyncio.run(tg.functioncall_episodes(url, 64, args.fc_episodes, p)) for p in protocols]
        live = tg.LiveEpisodes(url)
        pid = server.proc.pid
        try:
            with profiled("reset"):
                before = cpu_snapshot(pid)
                r["open_live_s"] = asyncio.run(live.open(args.live))
                r["cpu_reset"] = cpu_delta(before, cpu_snapshot(pid), len(live.ids), r["open_live_s"])
            print(f"          {len(live.ids)} live episodes opened in {r['open_live_s']:.1f} s", flush=True)
            with profiled("step"):
                before = cpu_snapshot(pid)
                r["batch"] = asyncio.run(live.batch_steps(args.batch_rounds))
                r["cpu_batch"] = cpu_delta(before, cpu_snapshot(pid), r["batch"]["steps"], r["batch"]["wall_s"])
                r["client_steps"] = [[asyncio.run(live.client_steps(c, args.client_steps, p)) for c in (8, args.live)]
                                     for p in protocols]
        finally:
            r["close_live_s"] = asyncio.run(live.close_all())
    out.setdefault("leftovers", {})[server.instance] = server.leftover_after_stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="make the peers' scratch virtualenvs under /tmp")
    parser.add_argument("--json", default=None, help="where to write the results (default /tmp/toolgym-peers-*.json)")
    parser.add_argument("--profile", default=None, metavar="DIR", help="py-spy the server during resets and steps")
    parser.add_argument("--steps", type=int, default=300, help="sequential steps per single-client latency")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each 32-client OpenEnv run")
    parser.add_argument("--live", type=int, default=256, help="live sandboxed episodes for the batch runs")
    parser.add_argument("--batch-rounds", type=int, default=5)
    parser.add_argument("--client-steps", type=int, default=768, help="steps per AsyncEnvClient run (8 and --live)")
    parser.add_argument("--warm-pool", type=int, default=4)
    parser.add_argument("--rest-episodes", type=int, default=20)
    parser.add_argument("--paced", type=int, default=40, help="resets arriving at Docker's 2-thread rate")
    parser.add_argument("--fresh", type=int, default=16, help="fresh episodes per worker count (1, 2)")
    parser.add_argument("--fc-episodes", type=int, default=1024)
    parser.add_argument("--agentbox-episodes", type=int, default=8)
    parser.add_argument("--docker-runs", type=int, default=8)
    parser.add_argument("--sdk-per-thread", type=int, default=10)
    parser.add_argument("--skip", default="", help="comma-separated: openenv, agentbox")
    parser.add_argument("--server-pythonpath", default=None, metavar="DIR",
                        help="serve ToolGym's package from DIR (a view of another checkout, laid out as"
                             " scripts/typecheck.sh lays one out), e.g. a branch with /v1/ws")
    args = parser.parse_args()
    why = docker_problem()
    if why is not None:
        print(f"peers: skipped: Docker cannot run here: {why}")
        return 0
    started = time.time()
    print_header("ToolGym vs OpenEnv 0.10.0, AgentBox 0.3.0 and the Docker floors, one run", {
        k: getattr(args, k) for k in ("steps", "seconds", "live", "batch_rounds", "client_steps", "warm_pool",
                                      "rest_episodes", "paced", "fresh", "fc_episodes", "agentbox_episodes")})
    out: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "load_start": os.getloadavg(), "image": IMAGE, "server_pythonpath": args.server_pythonpath}
    if args.server_pythonpath:
        print(f"server    ToolGym's package served from {args.server_pythonpath} (PYTHONPATH)")
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="toolgym-bench-") as tmp:
        run_floors(args, out)
        rate2 = out["sdk_rate"][1]["per_s"]
        print(f"floors    docker run p50 {ms(p50(out['docker_run']))} ms; SDK create+start+remove "
              f"{out['sdk_rate'][0]['per_s']:.2f}/s (1 thread), {rate2:.2f}/s (2)", flush=True)
        if "openenv" not in skip:
            run_openenv(tmp, args, out)
        if "agentbox" not in skip:
            run_agentbox(args, out)
        run_toolgym(tmp, args, out, rate2)
        if args.profile:
            from _profile import write_summaries

            write_summaries(args.profile, tmp, ["reset", "step"])
            print(f"profiles  {args.profile}/{{reset,step}}.svg and {{reset,step}}-top.txt", flush=True)
    out["load_end"] = os.getloadavg()
    out["wall_s"] = time.time() - started
    report(out)
    path = args.json or f"/tmp/toolgym-peers-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\nJSON: {path}   wall {out['wall_s']:.0f} s")
    print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
