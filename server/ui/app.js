// The ToolGym viewer: live and recent episodes, a trajectory replayed turn by turn, and reward /
// pass-rate plots over time per env and task. It reads the API with the viewer's cookie (GET only)
// and writes every value it shows as text (textContent), never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 3000;
const WINDOW = 10; // episodes in a plot's rolling mean
const COLORS = ["#2f6fde", "#1f9d55", "#d64545", "#c98a12", "#8a55d6", "#138d90"];

// --- DOM helpers ----------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const fmt = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x ?? "—"));
const badge = (text, kind) => h("span", { class: `badge ${kind || text}` }, text);
const when = (t) => new Date(t * 1000).toLocaleTimeString();
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) {
    location.assign("/ui/login");
    throw new Error("not logged in");
  }
  if (!r.ok) {
    let message = `${r.status}`;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return r.json();
}

// --- the home page: episodes and plots -------------------------------------------------------------
let plotChoice = { env: "", task: "" };

async function home(app, stale) {
  const [live, first] = await Promise.all([api("/v1/episodes?status=live&limit=200"), api("/v1/episodes?limit=1")]);
  const offset = Math.max(0, first.total - 50);
  const [recent, timeline] = await Promise.all([api(`/v1/episodes?offset=${offset}&limit=50`),
    api("/v1/stats/timeline?limit=2000")]);
  const page = h("div", { id: "home" },
    h("h1", {}, "Episodes"),
    h("h2", {}, `Live (${live.total})`),
    episodeTable(live.episodes.slice().reverse(), "No live episode."),
    h("h2", {}, `Recent (${first.total} in all)`),
    episodeTable(recent.episodes.slice().reverse(), "No episode yet."),
    h("h2", {}, "Reward and pass rate over time"),
    plots(timeline.points));
  if (!stale()) app.replaceChildren(page);
}

function episodeTable(episodes, empty) {
  if (!episodes.length) return h("p", { class: "muted" }, empty);
  return h("table", { class: "episodes" },
    h("thead", {}, h("tr", {}, ["Episode", "Env", "Task", "Split", "Turns", "Return", "Status", "Reason"].map(
      (t, i) => h("th", { class: i === 4 || i === 5 ? "num" : null }, t)))),
    h("tbody", {}, episodes.map((e) => h("tr", {},
      h("td", { class: "mono" }, h("a", { href: `#/episode/${encodeURIComponent(e.episode_id)}` }, e.episode_id)),
      h("td", {}, e.env_id), h("td", {}, e.task_id), h("td", {}, e.split),
      h("td", { class: "num" }, e.turn), h("td", { class: "num" }, fmt(e.total_reward)),
      h("td", {}, badge(e.status)), h("td", {}, e.reason ?? "")))));
}

function plots(points) {
  if (!points.length) return h("p", { class: "muted" }, "No ended episode yet: plots appear when episodes end.");
  const envs = [...new Set(points.map((p) => p.env_id))].sort();
  const tasks = [...new Set(points.filter((p) => !plotChoice.env || p.env_id === plotChoice.env)
    .map((p) => p.task_id))].sort();
  if (plotChoice.env && !envs.includes(plotChoice.env)) plotChoice = { env: "", task: "" };
  if (plotChoice.task && !tasks.includes(plotChoice.task)) plotChoice.task = "";
  const rerender = () => document.getElementById("plots").replaceWith(plots(points));
  const envSelect = h("select", { id: "plot-env", on: { change: (ev) => {
    plotChoice = { env: ev.target.value, task: "" }; rerender(); } } },
  h("option", { value: "" }, "every env"), envs.map((e) => h("option", { value: e, selected: e === plotChoice.env }, e)));
  const taskSelect = h("select", { id: "plot-task", on: { change: (ev) => {
    plotChoice.task = ev.target.value; rerender(); } } },
  h("option", { value: "" }, "every task"), tasks.map((t) => h("option", { value: t, selected: t === plotChoice.task }, t)));
  const chosen = points.filter((p) => (!plotChoice.env || p.env_id === plotChoice.env)
    && (!plotChoice.task || p.task_id === plotChoice.task));
  const panels = envs.filter((e) => !plotChoice.env || e === plotChoice.env).map((env, i) => {
    const mine = chosen.filter((p) => p.env_id === env);
    return h("div", { class: "card plot" },
      h("b", {}, env + (plotChoice.task ? ` · ${plotChoice.task}` : "")),
      h("span", { class: "muted" }, `  ${mine.length} episodes`),
      chart(mine, COLORS[i % COLORS.length]));
  });
  return h("div", { id: "plots" },
    h("div", { class: "controls" }, "Env ", envSelect, " Task ", taskSelect,
      h("span", { class: "legend" },
        h("span", {}, h("span", { class: "swatch mean" }), `mean return of the last ${WINDOW} (left axis)`),
        h("span", {}, h("span", { class: "swatch pass" }), `pass rate of the last ${WINDOW} (right axis)`),
        h("span", {}, h("span", { class: "swatch dot" }), "one episode's return"))),
    h("div", { class: "plots" }, panels),
    taskTable(chosen));
}

function rolling(values) {
  return values.map((_, i) => {
    const part = values.slice(Math.max(0, i - WINDOW + 1), i + 1).filter((v) => v !== null);
    return part.length ? part.reduce((a, b) => a + b, 0) / part.length : null;
  });
}

function chart(points, color) {
  // x: the episodes in the order they ended (times at both ends); left axis: return; right axis: pass rate.
  const W = 520, H = 200, L = 40, R = 40, T = 10, B = 28;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  if (!points.length) return svg;
  const top = Math.max(1, ...points.map((p) => p.total_reward));
  const bottom = Math.min(0, ...points.map((p) => p.total_reward));
  const x = (i) => L + (points.length === 1 ? 0.5 : i / (points.length - 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - bottom) / (top - bottom)) * (H - T - B);
  const yRate = (v) => T + (1 - v) * (H - T - B);
  const label = (px, py, text, anchor) => s("text", { x: px, y: py, "text-anchor": anchor, "font-size": 10,
    fill: "#6b7385" }, text);
  svg.append(s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fbfcfd", stroke: "#dde1e8" }));
  for (const v of [bottom, (bottom + top) / 2, top]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eceff3" }));
    svg.append(label(L - 4, y(v) + 4, fmt(v), "end"));
  }
  for (const v of [0, 0.5, 1]) svg.append(label(W - R + 4, yRate(v) + 4, `${v * 100}%`, "start"));
  svg.append(label(L, H - 8, when(points[0].ended), "start"));
  svg.append(label(W - R, H - 8, when(points[points.length - 1].ended), "end"));
  points.forEach((p, i) => {
    const title = s("title", {}, `${p.task_id}: return ${fmt(p.total_reward)}, ${p.success ? "passed" : "not passed"}`);
    svg.append(s("circle", { cx: x(i), cy: y(p.total_reward), r: 3, fill: "#9aa3b5", "fill-opacity": 0.8 }, title));
  });
  const line = (values, scale, stroke, dash) => {
    const d = values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${scale(v).toFixed(1)}`))
      .filter((v) => v !== null);
    if (d.length) {
      svg.append(s("polyline", { points: d.join(" "), fill: "none", stroke, "stroke-width": 2,
        "stroke-dasharray": dash }));
    }
  };
  line(rolling(points.map((p) => p.total_reward)), y, color, "none");
  line(rolling(points.map((p) => (p.success === null ? null : (p.success ? 1 : 0)))), yRate, "#1f9d55", "5,3");
  return svg;
}

function taskTable(points) {
  const by = new Map();
  for (const p of points) {
    const key = `${p.env_id}\u0000${p.task_id}`;
    const row = by.get(key) || { env: p.env_id, task: p.task_id, n: 0, sum: 0, judged: 0, passed: 0 };
    row.n += 1; row.sum += p.total_reward;
    if (p.success !== null) { row.judged += 1; row.passed += p.success ? 1 : 0; }
    by.set(key, row);
  }
  const rows = [...by.values()].sort((a, b) => a.env.localeCompare(b.env) || a.task.localeCompare(b.task));
  return h("table", { class: "tasks" },
    h("thead", {}, h("tr", {}, h("th", {}, "Env"), h("th", {}, "Task"), h("th", { class: "num" }, "Episodes"),
      h("th", { class: "num" }, "Mean return"), h("th", { class: "num" }, "Pass rate"))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.env), h("td", {}, r.task),
      h("td", { class: "num" }, r.n), h("td", { class: "num" }, fmt(r.sum / r.n)),
      h("td", { class: "num" }, r.judged ? `${Math.round((100 * r.passed) / r.judged)}%` : "—")))));
}

// --- one episode, replayed turn by turn ------------------------------------------------------------
const replay = { id: null, cursor: 0, state: null };

async function episode(app, id, stale) {
  const state = await api(`/v1/episodes/${encodeURIComponent(id)}`);
  if (stale()) return;
  const n = state.steps.length;
  if (replay.id !== id) Object.assign(replay, { id, cursor: 0 });
  else if (replay.state && replay.cursor === replay.state.steps.length) replay.cursor = n; // follow a live one
  replay.cursor = Math.min(replay.cursor, n);
  replay.state = state;
  renderEpisode(app);
}

function renderEpisode(app) {
  const state = replay.state, n = state.steps.length, k = replay.cursor;
  const go = (to) => () => { replay.cursor = Math.max(0, Math.min(n, to)); renderEpisode(app); };
  const shown = state.steps.slice(0, k);
  const sofar = shown.reduce((a, st) => a + st.reward, 0);
  app.replaceChildren(h("div", { id: "episode" },
    h("p", {}, h("a", { href: "#/" }, "← all episodes")),
    h("h1", { class: "mono" }, state.episode_id),
    h("div", { class: "card facts" },
      h("span", {}, h("b", {}, "Env "), state.env_id), h("span", {}, h("b", {}, "Task "), state.task_id),
      h("span", {}, h("b", {}, "Split "), state.split), h("span", {}, h("b", {}, "Status "), badge(state.status)),
      h("span", {}, h("b", {}, "Reason "), state.reason ?? "—"), h("span", {}, h("b", {}, "Turns "), n),
      h("span", { id: "total-reward" }, h("b", {}, "Total reward "), fmt(state.total_reward))),
    h("div", { class: "controls" },
      h("button", { id: "first", disabled: k === 0, on: { click: go(0) } }, "« First"),
      h("button", { id: "prev", disabled: k === 0, on: { click: go(k - 1) } }, "◀ Prev"),
      h("span", { id: "position" }, `Turn ${k} of ${n}`),
      h("button", { id: "next", disabled: k === n, on: { click: go(k + 1) } }, "Next ▶"),
      h("button", { id: "last", disabled: k === n, on: { click: go(n) } }, "Last »"),
      h("span", { class: "muted" }, `reward so far ${fmt(sofar)}`)),
    resetCard(state.reset),
    shown.map(stepCard)));
  if (k > 0) document.getElementById(`turn-${k - 1}`).scrollIntoView({ block: "nearest" });
}

function messageBlock(m) {
  const calls = (m.tool_calls || []).map(callBlock);
  return h("div", { class: `msg ${m.role}` },
    h("div", { class: "role" }, m.role + (m.name ? ` · ${m.name}` : "")),
    m.content !== null && m.content !== undefined && m.content !== "" ? h("pre", {}, pretty(m.content)) : null,
    calls);
}

function callBlock(c) {
  const f = c.function || c;
  return h("div", { class: "call" }, h("div", { class: "role" }, "tool call"),
    h("b", { class: "mono tool-name" }, f.name), h("pre", {}, pretty(f.arguments)));
}

function resetCard(reset) {
  const obs = (reset && reset.observation) || {};
  const tools = (obs.tools || []).map((t) => (t.function || t).name);
  return h("div", { class: "card", id: "reset" }, h("b", {}, "Reset"),
    tools.length ? h("p", { class: "muted" }, `Tools: ${tools.join(", ")}`) : null,
    (obs.messages || []).map(messageBlock));
}

function stepCard(st) {
  const info = st.info || {};
  const action = typeof st.action === "string" ? { role: "assistant", content: st.action }
    : { role: "assistant", content: st.action.content, tool_calls: st.action.tool_calls };
  const end = st.terminated ? "terminated" : st.truncated ? "truncated" : "continues";
  return h("div", { class: "card step", id: `turn-${st.turn}` },
    h("div", { class: "facts" }, h("b", {}, `Turn ${st.turn}`),
      h("span", {}, "reward ", h("span", { class: `reward ${st.reward > 0 ? "pos" : "zero"}` }, fmt(st.reward))),
      h("span", {}, "status ", badge(info.status ?? "unknown", info.status === "ok" ? "ok" : "error")),
      h("span", {}, `episode ${end}`), info.reason ? h("span", {}, `reason ${info.reason}`) : null),
    info.reward_components && Object.keys(info.reward_components).length
      ? h("p", { class: "muted" }, "reward parts: ", Object.entries(info.reward_components)
        .map(([k2, v]) => `${k2} = ${fmt(v)}`).join(", ")) : null,
    messageBlock(action),
    ((st.observation && st.observation.messages) || []).map(messageBlock));
}

// --- routing, refresh, login -----------------------------------------------------------------------
let busy = 0; // renders in flight: the periodic refresh waits for none

async function render() {
  // A render whose page was left while it loaded (the hash changed) draws nothing.
  const app = document.getElementById("app");
  const want = location.hash;
  const stale = () => location.hash !== want;
  busy += 1;
  try {
    const m = want.match(/^#\/episode\/(.+)$/);
    if (m) await episode(app, decodeURIComponent(m[1]), stale);
    else await home(app, stale);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (!stale()) app.replaceChildren(h("p", { class: "error" }, `Could not load: ${e.message}`));
  } finally {
    busy -= 1;
  }
}

function live() {
  // Re-read what can change: the home page, and an episode still live (a replay stays where it is).
  if (busy) return;
  if (document.getElementById("home") || (replay.state && replay.state.status === "live" && location.hash)) render();
}

function loginPage() {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = document.getElementById("key").value;
    const r = await fetch("/ui/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key }) });
    if (r.ok) location.assign("/ui");
    else document.getElementById("login-error").textContent = r.status === 401 ? "Unknown API key." : `Error ${r.status}`;
  });
}

if (document.getElementById("login")) {
  loginPage();
} else {
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
    location.assign("/ui/login");
  });
  window.addEventListener("hashchange", render);
  render();
  setInterval(live, REFRESH_MS);
}
