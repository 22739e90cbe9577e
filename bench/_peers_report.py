"""The tables of ``bench/peers.py``: measurements, then each target of the issue with its
same-run ratio. ``report`` also stores the summaries and the targets in the result dict, so
the JSON carries what the tables show."""

from __future__ import annotations

import math
from typing import Any

from _common import LATENCY_HEADERS, latency_row, ms, summarize, table


def _p(xs: list[float] | None, q: str = "p50") -> float:
    return summarize(xs)[q] if xs else math.nan


def _proto(run: dict[str, Any]) -> str:
    """How a one-client run spoke to the server, for its row's label."""
    return "/v1/ws" if run.get("protocol") == "ws" else "HTTP"


def _rate(x: float) -> str:
    return "-" if x != x else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def _x(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else math.nan


def report(out: dict[str, Any]) -> None:
    oe, ab, r = out.get("openenv", {}), out.get("agentbox", {}), out["toolgym"]
    rows = [latency_row("docker run --rm <sandbox image> true (CLI, cold)", out["docker_run"])]
    if "http_step" in oe:
        rows += [latency_row(f"OpenEnv {oe['version']} echo: HTTP POST /reset", oe["http_reset"]),
                 latency_row(f"OpenEnv {oe['version']} echo: HTTP POST /step", oe["http_step"]),
                 latency_row("OpenEnv echo: WebSocket reset (its client)", oe["ws_reset"]),
                 latency_row("OpenEnv echo: WebSocket step (its client)", oe["ws_step"])]
    for run in ab.get("runs", []):
        for op in ("reset", "step", "close"):
            rows.append(latency_row(f"AgentBox {ab['version']} {op} (c={run['workers']})", run[op]))
    rows.append(latency_row("ToolGym tool-call step, HTTP", r["tool_step_http"]))
    if r.get("tool_step_ws"):
        rows.append(latency_row("ToolGym tool-call step, /v1/ws", r["tool_step_ws"]))
    rows += [latency_row("ToolGym reset, warm pool full (at rest)", r["rest"]["reset"]),
             latency_row(f"ToolGym reset arriving at {r['paced']['rate']:.2f}/s", r["paced"]["reset"]),
             latency_row("ToolGym final-answer step (ends the episode)", r["rest"]["final step"]),
             latency_row("ToolGym DELETE of a live episode", r["rest"]["DELETE live"]),
             latency_row(f"ToolGym POST /v1/batch/step x{r['batch']['episodes']}", r["batch"]["request"])]
    for c in (c for pair in r["client_steps"] for c in pair):
        rows.append(latency_row(f"ToolGym tool step, AsyncEnvClient ({_proto(c)}) c={c['concurrency']}", c["step"]))
    table(LATENCY_HEADERS, rows, "Latency (ms)")

    rates: list[list[str]] = [[f"Docker SDK create+start+remove, {s['threads']} thread(s)", "containers/s",
                               _rate(s["per_s"]), f"{s['containers']} in {s['wall_s']:.1f} s"]
                              for s in out["sdk_rate"]]
    if "http_c" in oe:
        rates += [["OpenEnv echo, HTTP, 32 clients", "steps/s", _rate(oe["http_c"]["steps_per_s"]),
                   f"{oe['http_c']['steps']} steps"],
                  ["OpenEnv echo, WebSocket, 32 sessions", "steps/s", _rate(oe["ws_c"]["steps_per_s"]),
                   f"{oe['ws_c']['steps']} steps"]]
    for run in ab.get("runs", []):
        rates.append([f"AgentBox fresh episodes, {run['workers']} worker(s)", "episodes/s",
                      _rate(run["episodes_per_s"]), f"{run['episodes']} eps, {len(run['errors'])} errors"])
    b = r["batch"]
    rates.append([f"ToolGym /v1/batch/step, {b['episodes']} live sandboxed episodes", "steps/s",
                  _rate(b["steps_per_s"]), f"{b['steps']} steps, {b['rounds']} requests"])
    for c in (c for pair in r["client_steps"] for c in pair):
        rates.append([f"ToolGym tool steps, one AsyncEnvClient ({_proto(c)}), {c['concurrency']} concurrent",
                      "steps/s", _rate(c["steps_per_s"]), f"{c['steps']} steps"])
    for f in r["fresh"]:
        rates.append([f"ToolGym fresh sandboxed episodes, {f['workers']} worker(s)", "episodes/s",
                      _rate(f["episodes_per_s"]), f"{f['episodes']} eps"])
    for fc in r["functioncall"]:
        rates.append([f"ToolGym FunctionCall episodes, one AsyncEnvClient ({_proto(fc)}), {fc['workers']} concurrent",
                      "episodes/s", _rate(fc["episodes_per_s"]), f"{fc['episodes']} eps"])
    rates.append([f"ToolGym: open {b['episodes']} live episodes (batch resets) / close them", "s",
                  f"{r['open_live_s']:.1f} / {r['close_live_s']:.1f}", ""])
    table(["what", "unit", "rate", "n"], rates, "Rates")
    cpu_rows = []
    for key, label in (("cpu_reset", f"reset (opening {b['episodes']} live episodes)"),
                       ("cpu_batch", f"tool step (/v1/batch/step x{b['episodes']})")):
        c = r.get(key)
        if c:
            cpu_rows.append([label] + [f"{c[k]:.1f}" for k in ("server", "dockerd", "containerd", "shims", "host")]
                            + [f"{c['host_busy_pct']:.0f}%"])
    if cpu_rows:
        table(["per item", "server ms", "dockerd ms", "containerd ms", "shims ms", "whole host ms", "host busy"],
              cpu_rows, "CPU time per reset / step (from /proc; the whole host includes the containers and"
              " everyone else on the machine)")

    targets = _targets(out)
    out["targets"] = targets
    table(["target (issue)", "ToolGym", "vs", "same-run ratio", "goal", "met"],
          [[t["target"], t["ours"], t["theirs"], t["ratio"], t["goal"], t["met"]] for t in targets],
          "Targets (same run)")
    if r.get("ws_note"):
        print(f"  /v1/ws: skipped: {r['ws_note']}")
    for name in ("openenv", "agentbox"):
        if "skipped" in out.get(name, {}):
            print(f"  {name}: skipped: {out[name]['skipped']}")
    left = out.get("leftovers", {})
    print("\ncontainers left behind (by label, after each part): "
          + (", ".join(f"{k}: {v}" for k, v in left.items()) if left else "none"))


def _targets(out: dict[str, Any]) -> list[dict[str, str]]:
    oe, ab, r = out.get("openenv", {}), out.get("agentbox", {}), out["toolgym"]
    rate2 = out["sdk_rate"][1]["per_s"]
    t: list[dict[str, str]] = []

    def add(target: str, ours: str, theirs: str, ratio: float, goal: str, ok: bool | None) -> None:
        t.append({"target": target, "ours": ours, "theirs": theirs,
                  "ratio": "-" if ratio != ratio else f"{ratio:.2f}x", "goal": goal,
                  "met": "n/a" if ok is None else ("yes" if ok else "NO")})

    step = _p(r["tool_step_http"])
    oe_http, oe_ws = _p(oe.get("http_step")), _p(oe.get("ws_step"))
    x = _x(step, oe_http)
    add("tool-call step p50, HTTP / OpenEnv HTTP echo step", f"{ms(step)} ms", f"{ms(oe_http)} ms", x, "<= 2x",
        None if x != x else x <= 2)
    ws = _p(r.get("tool_step_ws"))
    x = _x(ws, oe_ws)
    add("tool-call step p50, /v1/ws / OpenEnv WS echo step", f"{ms(ws)} ms", f"{ms(oe_ws)} ms", x, "<= 2x",
        None if x != x else x <= 2)
    reset, cold = _p(r["rest"]["reset"]), _p(out["docker_run"])
    x = _x(cold, reset)
    add("reset p50 (warm) vs cold docker run p50", f"{ms(reset)} ms", f"{ms(cold)} ms", x, ">= 30x faster", x >= 30)
    p99 = _p(r["paced"]["reset"], "p99")
    add(f"reset p99 with resets arriving at Docker's 2-thread rate ({rate2:.2f}/s)", f"{ms(p99)} ms", "",
        math.nan, "< 50 ms", p99 < 0.050)
    bs = r["batch"]["steps_per_s"]
    for key, label, goal in (("http_c", "HTTP", 3.0), ("ws_c", "WS", 0.5)):
        theirs = oe.get(key, {}).get("steps_per_s", math.nan)
        x = _x(bs, theirs)
        add(f"batch step, {r['batch']['episodes']} live sandboxed, vs OpenEnv {label} @32", f"{bs:.0f}/s",
            f"{theirs:.0f}/s", x, f">= {goal}x", None if x != x else x >= goal)
    fresh = max(f["episodes_per_s"] for f in r["fresh"])
    x = _x(fresh, rate2)
    add("fresh sandboxed episodes/s (best of 1-2 workers) vs Docker 2-thread create rate", f"{fresh:.2f}/s",
        f"{rate2:.2f}/s", x, ">= 1x", x >= 1)
    for key in ("final step", "DELETE live"):
        v = _p(r["rest"][key])
        add(f"{key} p50", f"{ms(v)} ms", "", math.nan, "< 10 ms", v < 0.010)
    for run in r["functioncall"]:
        fc = run["episodes_per_s"]
        add(f"FunctionCall episodes/s from one AsyncEnvClient ({_proto(run)})", f"{fc:.0f}/s", "", math.nan,
            ">= 500/s", fc >= 500)
    for lo, hi in r["client_steps"]:
        x = _x(hi["steps_per_s"], lo["steps_per_s"])
        add(f"steps/s, one AsyncEnvClient ({_proto(hi)}), {hi['concurrency']} vs {lo['concurrency']} concurrent",
            f"{hi['steps_per_s']:.0f}/s", f"{lo['steps_per_s']:.0f}/s", x, ">= 1x", x >= 1)
    runs = ab.get("runs", [])
    if runs:  # not targets of the issue: context against the direct peer
        best = max(run["episodes_per_s"] for run in runs)
        x = _x(fresh, best)
        add("(context) fresh episodes/s vs AgentBox (best of 1-2 workers)", f"{fresh:.2f}/s", f"{best:.2f}/s", x,
            "-", None)
        ab_step = _p(runs[0]["step"])
        x = _x(step, ab_step)
        add("(context) tool step p50 vs AgentBox tool step (docker exec)", f"{ms(step)} ms", f"{ms(ab_step)} ms",
            x, "-", None)
    return t
