"""The live viewer ``/ui`` against a live server with real episodes (process backend).

The browser test drives Debian's headless Chromium (scripts/ensure-chromium.sh installs it) with
Playwright, which never downloads a browser here: it logs in through the form, reads the episode
lists and the plots, replays an episode turn by turn, and checks that a screenshot of it is not
blank. The other tests check the viewer's auth and its JSON route with plain HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY, OTHER = "k-viewer", "k-viewer-other"
BEARER = {"Authorization": f"Bearer {KEY}"}
CHROMIUM = os.environ.get("TOOLGYM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CITIES = ("Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo")


@pytest.fixture(scope="module")
def server(farm: Any) -> Any:
    return farm.start(backend="process", api_keys=(KEY, OTHER))


@pytest.fixture(scope="module")
def played(server: Any) -> dict[str, str]:
    """Real episodes of KEY: a ToolUse one played to its answer, two FunctionCall ones, one left live."""
    with httpx.Client(base_url=server.base_url, headers=BEARER, timeout=60) as api:
        def reset(env: str, task: str) -> dict[str, Any]:
            r = api.post("/v1/episodes", json={"env_id": env, "task_id": task})
            assert r.status_code == 201, r.text
            return dict(r.json())

        def step(episode_id: str, action: Any) -> dict[str, Any]:
            r = api.post(f"/v1/episodes/{episode_id}/step", json={"action": action})
            assert r.status_code == 200, r.text
            return dict(r.json())

        call = {"name": "get_city_info", "arguments": {"city": "Varnholt"}}
        answered = reset("toolgym/ToolUse-v0", "tu-single-1")["episode_id"]
        assert step(answered, f"<tool_call>\n{json.dumps(call)}\n</tool_call>")["reward"] > 0
        assert step(answered, "Varnholt has 48210 inhabitants.")["terminated"]
        for right in (True, False):
            fc = reset("toolgym/FunctionCall-v0", "fc-weather-001")
            question = next(m["content"] for m in fc["observation"]["messages"] if m["role"] == "user")
            city = next(c for c in CITIES if c in question) if right else "Atlantis"
            weather = {"name": "get_weather", "arguments": {"city": city}}
            assert step(fc["episode_id"], f"<tool_call>\n{json.dumps(weather)}\n</tool_call>")["reward"] == float(right)
        live = reset("toolgym/ToolUse-v0", "tu-single-2")["episode_id"]
        return {"answered": answered, "live": live}


def test_cookie_auth_reads_but_never_writes(server: Any, played: dict[str, str]) -> None:
    base = server.base_url
    bare = httpx.get(f"{base}/ui", follow_redirects=False)
    assert bare.status_code == 303 and bare.headers["location"] == "/ui/login"
    assert httpx.get(f"{base}/ui", headers=BEARER).status_code == 200, "the header opens the viewer as it opens the API"
    assert httpx.post(f"{base}/ui/login", json={"key": "wrong"}).status_code == 401
    login = httpx.post(f"{base}/ui/login", json={"key": KEY})
    assert login.status_code == 204
    cookie = login.headers["set-cookie"].lower()
    assert "toolgym_key=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    jar = {"toolgym_key": KEY}
    page = httpx.get(f"{base}/ui", cookies=jar)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    mine = httpx.get(f"{base}/v1/episodes", cookies=jar)
    assert mine.status_code == 200 and mine.json()["total"] == 4
    write = httpx.post(f"{base}/v1/episodes", cookies=jar, json={"env_id": "toolgym/ToolUse-v0"})
    assert write.status_code == 401, "a cookie never authenticates a write (CSRF)"
    delete = httpx.delete(f"{base}/v1/episodes/{played['live']}", cookies=jar)
    assert delete.status_code == 401
    assert httpx.get(f"{base}/v1/episodes", cookies={"toolgym_key": OTHER}).json()["total"] == 0
    both = httpx.get(f"{base}/v1/episodes", cookies=jar, headers={"Authorization": f"Bearer {OTHER}"})
    assert both.json()["total"] == 0, "the header wins over the cookie"
    assert httpx.get(f"{base}/v1/episodes", cookies={"toolgym_key": "nope"}).status_code == 401
    assert httpx.get(f"{base}/ui/static/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{base}/ui/static/../app.py").status_code == 404


def test_timeline_lists_ended_episodes_oldest_first(server: Any, played: dict[str, str]) -> None:
    points = httpx.get(f"{server.base_url}/v1/stats/timeline", headers=BEARER).json()["points"]
    assert [p["env_id"] for p in points] == ["toolgym/ToolUse-v0"] + ["toolgym/FunctionCall-v0"] * 2
    assert [p["success"] for p in points[1:]] == [True, False]
    assert points[0]["episode_id"] == played["answered"] and points[0]["total_reward"] > 0
    assert points == sorted(points, key=lambda p: p["ended"])
    only = httpx.get(f"{server.base_url}/v1/stats/timeline", headers=BEARER,
                     params={"env_id": "toolgym/FunctionCall-v0", "limit": 1}).json()["points"]
    assert len(only) == 1 and only[0]["success"] is False
    theirs = httpx.get(f"{server.base_url}/v1/stats/timeline", headers={"Authorization": f"Bearer {OTHER}"})
    assert theirs.json()["points"] == []


def _chromium() -> str:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing: scripts/ensure-chromium.sh installs it")
        pytest.skip(f"{CHROMIUM} is missing (scripts/ensure-chromium.sh installs it)")
    return CHROMIUM


VARIANCE_JS = """async (png) => {
  const img = new Image();
  img.src = "data:image/png;base64," + png;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, img.width, img.height).data;
  let n = 0, sum = 0, sq = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    n += 1; sum += y; sq += y * y;
  }
  const mean = sum / n;
  return {width: img.width, height: img.height, variance: sq / n - mean * mean};
}"""


def test_the_viewer_in_headless_chromium(server: Any, played: dict[str, str], tmp_path: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            problems: list[str] = []  # script errors, CSP refusals, failed loads
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{server.base_url}/ui")
            assert page.url.endswith("/ui/login")
            page.fill("#key", "wrong")
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_have_text("Unknown API key.")
            page.fill("#key", KEY)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server.base_url}/ui")

            cookie = next(c for c in page.context.cookies() if c["name"] == "toolgym_key")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert page.evaluate("document.cookie") == "", "scripts cannot read the key"

            page.wait_for_selector("#home")
            home = page.inner_text("#home")
            assert "Live (1)" in home and "Recent (4 in all)" in home
            assert played["live"] in home and played["answered"] in home
            assert page.locator("#plots svg.chart").count() == 2, "one plot per env"
            assert page.locator("#plots svg.chart circle").count() == 3
            assert page.locator("#plots svg.chart polyline").count() >= 3
            tasks = page.inner_text("table.tasks")
            assert "fc-weather-001" in tasks and "50%" in tasks and "tu-single-1" in tasks
            page.screenshot(path=str(tmp_path / "viewer-home.png"), full_page=True)
            page.select_option("#plot-env", "toolgym/FunctionCall-v0")
            assert page.locator("#plots svg.chart").count() == 1

            page.click(f"a[href='#/episode/{played['answered']}']")
            expect(page.locator("#position")).to_have_text("Turn 0 of 2")
            reset = page.inner_text("#reset")
            assert "population of Varnholt" in reset and "get_city_info" in reset
            page.click("#next")
            expect(page.locator("#position")).to_have_text("Turn 1 of 2")
            turn = page.inner_text("#turn-0")
            assert "get_city_info" in turn and "Varnholt" in turn and "48210" in turn
            assert "reward 1" in turn or "reward 0." in turn, turn
            assert "status" in turn and "ok" in turn and "episode continues" in turn
            page.click("#next")
            expect(page.locator("#position")).to_have_text("Turn 2 of 2")
            last = page.inner_text("#turn-1")
            assert "episode terminated" in last and "reason answered" in last and "48210 inhabitants" in last
            assert "finished" in page.inner_text(".facts") and "answered" in page.inner_text(".facts")
            expect(page.locator("#next")).to_be_disabled()
            page.click("#prev")
            expect(page.locator("#position")).to_have_text("Turn 1 of 2")
            page.click("#last")

            wrong_key = [p for p in problems if "401" in p]
            assert len(wrong_key) <= 1 and problems == wrong_key, problems  # only the refused login's 401

            shot = tmp_path / "viewer-replay.png"
            page.screenshot(path=str(shot), full_page=True)
            blank = browser.new_page()
            stats = blank.evaluate(VARIANCE_JS, base64.b64encode(shot.read_bytes()).decode())
            assert stats["width"] == 1280 and stats["height"] >= 900, stats
            assert stats["variance"] > 100, f"the screenshot {shot} looks blank: {stats}"
        finally:
            browser.close()
