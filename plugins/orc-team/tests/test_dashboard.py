"""The dashboard in a real browser: Playwright driving Debian's chromium against a real server.

Other users are real clients (WebSocket connections speaking the protocol, and the ``orc`` CLI
in a subprocess); the page must show what they do as they do it, survive the server
restarting, resolve resource conflicts with the spec's four choices, show hostile text as text,
and keep its token out of every URL and the server's log.  Every wait is Playwright's
``expect`` (polling the page) or a message; nothing sleeps.  Screenshots go to
``$ORC_ARTIFACTS/dashboard`` (else the session's temporary directory).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from orc_team import protocol
from orc_team.cli_dashboard import page_url
from orc_team.tokens import verify_token

from conftest import SECRET, WAIT, Client, Lines, ServerFactory, ServerProc, git_repo, token, unique

CHROMIUM = "/usr/bin/chromium"
browser_only = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                  reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")
HOSTILE = "<img src=x onerror=alert(1)>"
SLOW = 20_000  # ms: a reconnect after a restart may wait out a backoff step

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def dash_server(start_server: ServerFactory) -> ServerProc:
    """The module's own server: the page lists every project, so keep other tests' out."""
    return start_server()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("ORC_ARTIFACTS")
    where = Path(root) / "dashboard" if root else tmp_path_factory.getbasetemp() / "dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


class Dash:
    """A page signed in as one user, recording what could betray a leak or a script run."""

    def __init__(self, page: Page, server: ServerProc, tok: str) -> None:
        self.page, self.server, self.token = page, server, tok
        self.dialogs: list[str] = []
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    async def open(self) -> None:
        await self.page.goto(page_url(f"ws://{self.server.base}", self.token))
        await self.ready()

    async def ready(self) -> None:
        await expect(self.page.locator("body")).to_have_attribute("data-ready", "1")
        await expect(self.page.locator("#conn")).to_have_attribute("data-state", "live")

    def feed_item(self, task: str, event_type: str) -> Any:
        return self.page.locator(f'#feed li[data-task="{task}"][data-type="{event_type}"]')

    def person(self, user: str) -> Any:
        return self.page.locator(f'#presence li[data-user="{user}"]')

    def lock_row(self, task: str) -> Any:
        return self.page.locator(f'#locks tr[data-task="{task}"]')


@pytest.fixture
def dash(browser: Browser, dash_server: ServerProc) -> Any:
    async def make(user: str = "viewer", name: str = "Vera Viewer",
                   server: ServerProc | None = None,
                   width: int = 1280) -> Dash:
        context = await browser.new_context(viewport={"width": width, "height": 900})
        page = await context.new_page()
        target = server or dash_server
        d = Dash(page, target, token(user, name=name))
        await d.open()
        return d
    return make


async def publish(client: Client, event_type: str, task: str, project: str,
                  **payload: Any) -> dict[str, Any]:
    reply = await client.request("event", {"event_type": event_type, "task_id": task,
                                           "project_id": project, "payload": payload})
    assert reply["type"] == "ack", reply
    return reply


@pytest.fixture
async def person() -> AsyncIterator[Any]:
    """``await person(server, "alice", "Alice Martinez")``: a real client under a display name
    (conftest's ``connect_as`` names users by their id); closed after the test."""
    from websockets.asyncio.client import connect as ws_connect

    made: list[Client] = []

    async def open_client(server: ServerProc, user: str, name: str) -> Client:
        ws = await ws_connect(server.ws_url(token(user, name=name), unique(f"{user}-c")),
                              open_timeout=WAIT)
        made.append(Client(ws, user, None))
        return made[-1]

    yield open_client
    for c in made:
        await c.close()


# -- live updates ---------------------------------------------------------------------------


@browser_only
async def test_locks_presence_and_feed_appear_live(dash: Any, dash_server: ServerProc,
                                                   person: Any, shots: Path) -> None:
    d: Dash = await dash()
    page = d.page
    project, task = unique("acme"), unique("TASK-AM")
    alice = await person(dash_server, "alice", "Alice Martinez")
    await expect(d.person("alice")).to_have_attribute("data-status", "online")
    await expect(d.person("alice")).to_contain_text("Alice Martinez")

    assert (await alice.lock(task, project_id=project, ttl=90))["acquired"]
    row = d.lock_row(task)
    await expect(row).to_contain_text("Alice Martinez")
    await expect(row.locator(".ttl-text")).to_have_text(re.compile(r"^1 min \d\d s$"))
    await expect(d.feed_item(task, "lock.acquired")).to_contain_text(
        f"Alice Martinez locked {task}")

    await alice.request("presence", {"status": "active", "active_task": task})
    await expect(d.person("alice")).to_have_attribute("data-status", "active")
    await expect(d.person("alice")).to_contain_text(f"on {task}")
    indicator = d.person("alice").locator(".indicator")
    assert await indicator.evaluate("e => getComputedStyle(e).animationName") == "pulse"

    await publish(alice, "task.started", task, project, command="make test")
    item = d.feed_item(task, "task.started")
    await expect(item).to_contain_text(f"Alice Martinez started {task}")
    await expect(item).to_contain_text("just now")
    await expect(page.locator("#feed li").first).to_have_attribute("data-type", "task.started")

    # A second person and a resource, for a screenshot of a working day.
    bob = await person(dash_server, "bob", "Bob Johnson")
    other = unique("TASK-BJ")
    assert (await bob.lock(other, project_id=project, ttl=20))["acquired"]
    await publish(bob, "task.started", other, project)
    prompt = unique("review-prompt")
    await bob.request("resource_put", {"resource_id": prompt, "content": "Review the diff.\n",
                                       "expected_version": 0, "project_id": project})
    await bob.request("presence", {"status": "away"})
    await expect(d.person("bob")).to_have_attribute("data-status", "away")
    await expect(page.locator(f'#resources button[data-resource="{prompt}"]')).to_contain_text(
        "v1 · bob")
    await expect(d.page.locator('#feed li[data-type="resource.updated"]').first).to_contain_text(
        f"Bob Johnson saved {prompt} (version 1)")
    await page.screenshot(path=str(shots / "live-1280.png"), full_page=True)
    await page.set_viewport_size({"width": 420, "height": 900})
    await page.screenshot(path=str(shots / "live-420.png"), full_page=True)

    await alice.request("unlock", {"task_id": task})
    await expect(row).to_have_count(0)
    await expect(d.feed_item(task, "lock.released")).to_contain_text(f"released {task}")
    await bob.close()
    await expect(d.person("bob")).to_have_attribute("data-status", "offline")

    await alice.close()
    await expect(d.person("alice")).to_have_attribute("data-status", "offline")
    assert d.dialogs == [] and d.errors == []


@browser_only
async def test_countdowns_follow_expiry_and_silent_extensions(dash: Any, dash_server: ServerProc,
                                                              person: Any) -> None:
    d: Dash = await dash()
    project, lapsing, kept = unique("acme"), unique("TASK-EXP"), unique("TASK-EXT")
    hana = await person(dash_server, "hana", "Hana Sato")
    assert (await hana.lock(lapsing, project_id=project, ttl=2))["acquired"]
    assert (await hana.lock(kept, project_id=project, ttl=4))["acquired"]
    await expect(d.lock_row(kept).locator(".ttl-text")).to_have_text(re.compile(r"^[1-4] s$"))
    extended = await hana.lock(kept, project_id=project, ttl=90)  # a heartbeat: no event
    assert extended["extended"]
    # lock.expired removes the lapsed one; the other's countdown runs out with no event, so
    # the page reads the locks again and finds it extended.
    await expect(d.lock_row(lapsing)).to_have_count(0)
    await expect(d.feed_item(lapsing, "lock.expired")).to_contain_text(
        f"Hana Sato's lock on {lapsing} expired")
    await expect(d.lock_row(kept).locator(".ttl-text")).to_have_text(
        re.compile(r"^1 min \d\d s$"))


@browser_only
async def test_an_orc_run_in_another_process_shows_in_the_feed(
        dash: Any, dash_server: ServerProc, tmp_path: Path) -> None:
    d: Dash = await dash()
    repo = git_repo(tmp_path / "repo")
    project, task = unique("acme"), unique("TASK-RUN")
    env = {**os.environ, "ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{dash_server.base}",
           "ORC_TEAM_TOKEN": token("carol", name="Carol Diaz")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orc_git", "run", task, "--project", project, "--",
         sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.readline()"],
        cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        Lines(proc.stdout).wait_for("ready", timeout=WAIT * 3)
        await expect(d.feed_item(task, "task.started")).to_contain_text(
            f"Carol Diaz started {task}")
        await expect(d.lock_row(task)).to_contain_text("Carol Diaz")
        await expect(d.person("carol")).to_have_attribute("data-status", "active")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    await expect(d.feed_item(task, "task.completed")).to_contain_text(f"completed {task}")
    await expect(d.lock_row(task)).to_have_count(0)
    await d.page.locator("#show-output").check()
    await expect(d.feed_item(task, "task.transcript")).to_contain_text("ready")


@browser_only
async def test_a_reload_shows_the_current_state(dash: Any, dash_server: ServerProc,
                                                person: Any) -> None:
    project, task = unique("acme"), unique("TASK-RL")
    dave = await person(dash_server, "dave", "Dave Kim")
    assert (await dave.lock(task, project_id=project))["acquired"]
    await publish(dave, "task.phase", task, project, phase="testing")
    d: Dash = await dash()
    await expect(d.lock_row(task)).to_contain_text("Dave Kim")
    await expect(d.feed_item(task, "task.phase")).to_contain_text(
        f"Dave Kim moved {task} to testing")
    await expect(d.person("dave")).to_have_attribute("data-status", "online")
    await publish(dave, "task.phase", task, project, phase="review")
    await d.page.reload()
    await d.ready()
    await expect(d.lock_row(task)).to_contain_text("Dave Kim")
    await expect(d.feed_item(task, "task.phase")).to_have_count(2)
    await expect(d.feed_item(task, "task.phase").first).to_contain_text("to review")
    await expect(d.person("dave")).to_have_attribute("data-status", "online")
    await expect(d.page.locator("#project-filter option", has_text=project)).to_have_count(1)
    await d.page.select_option("#project-filter", project)
    await expect(d.page.locator("#feed li")).to_have_count(3)  # acquired + two phases



@browser_only
async def test_a_server_restart_is_survived_and_missed_events_caught_up(
        dash: Any, start_server: ServerFactory, person: Any, shots: Path) -> None:
    first = start_server()
    d: Dash = await dash(server=first)
    project, task = unique("acme"), unique("TASK-RS")
    erin = await person(first, "erin", "Erin Park")
    await publish(erin, "task.started", task, project)
    await expect(d.feed_item(task, "task.started")).to_have_count(1)

    first.stop()
    await expect(d.page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(d.page.locator("#conn")).to_contain_text("Reconnecting")
    await d.page.screenshot(path=str(shots / "reconnecting.png"))

    # Meanwhile, the same store served elsewhere takes an event the page cannot see live.
    elsewhere = start_server(store=first.store)
    erin2 = await person(elsewhere, "erin", "Erin Park")
    await publish(erin2, "task.phase", task, project, phase="while-you-were-away")
    await erin2.close()
    elsewhere.stop()

    first.start()  # the same port: the page's reconnect finds it
    await expect(d.page.locator("#conn")).to_have_attribute("data-state", "live", timeout=SLOW)
    await expect(d.feed_item(task, "task.phase")).to_contain_text("while-you-were-away")
    await expect(d.feed_item(task, "task.started")).to_have_count(1)  # not shown twice
    await erin.close()


# -- the conflict dialog -------------------------------------------------------------------


async def _conflict(d: Dash, client: Client, base: str, theirs: str, mine: str) -> str:
    """Resource at v1 = base; the page opens it, edits to ``mine``; the client saves
    ``theirs`` as v2; the page saves and gets the dialog."""
    rid = unique("prompt")
    made = await client.request("resource_put", {"resource_id": rid, "content": base,
                                                 "expected_version": 0})
    assert made["type"] == "resource", made
    page = d.page
    await page.locator(f'#resources button[data-resource="{rid}"]').click()
    await expect(page.locator("#editor-text")).to_have_value(base)
    await page.locator("#editor-text").fill(mine)
    again = await client.request("resource_put", {"resource_id": rid, "content": theirs,
                                                  "expected_version": 1})
    assert again["data"]["version"] == 2
    await page.locator("#editor-save").click()
    await expect(page.locator("#conflict")).to_be_visible()
    await expect(page.locator("#conflict-text")).to_contain_text("modified by frank")
    return rid


async def _current(client: Client, rid: str) -> dict[str, Any]:
    reply = await client.request("resource_get", {"resource_id": rid})
    data: dict[str, Any] = reply["data"]
    return data


BASE = "one\ntwo\nthree\nfour\nfive\n"


@browser_only
async def test_conflict_view_diff_shows_both_sides(dash: Any, dash_server: ServerProc,
                                                   person: Any, shots: Path) -> None:
    d: Dash = await dash()
    frank = await person(dash_server, "frank", "Frank")
    await _conflict(d, frank, BASE, BASE.replace("two", "TWO (theirs)"),
                    BASE.replace("four", "FOUR (mine)"))
    await d.page.get_by_role("button", name="View Diff").click()
    diff = d.page.locator("#diff")
    await expect(diff.locator(".diff-line.del")).to_contain_text(["TWO (theirs)", "four"])
    await expect(diff.locator(".diff-line.add")).to_contain_text(["two", "FOUR (mine)"])
    await d.page.screenshot(path=str(shots / "conflict-diff.png"))
    await d.page.get_by_role("button", name="Keep editing").click()
    await expect(d.page.locator("#conflict")).to_be_hidden()
    await expect(d.page.locator("#editor-text")).to_have_value(
        BASE.replace("four", "FOUR (mine)"))



@browser_only
async def test_conflict_use_theirs_drops_mine_and_saves_nothing(
        dash: Any, dash_server: ServerProc, person: Any) -> None:
    d: Dash = await dash()
    frank = await person(dash_server, "frank", "Frank")
    theirs = BASE.replace("two", "2")
    rid = await _conflict(d, frank, BASE, theirs, "mine entirely\n")
    await d.page.get_by_role("button", name="Use Theirs").click()
    await expect(d.page.locator("#editor-text")).to_have_value(theirs)
    await expect(d.page.locator("#editor-version")).to_have_text("editing version 2")
    current = await _current(frank, rid)
    assert (current["version"], current["content"]) == (2, theirs)



@browser_only
async def test_conflict_use_mine_saves_over_the_new_version(
        dash: Any, dash_server: ServerProc, person: Any) -> None:
    d: Dash = await dash()
    frank = await person(dash_server, "frank", "Frank")
    rid = await _conflict(d, frank, BASE, BASE.replace("two", "2"), "mine entirely\n")
    await d.page.get_by_role("button", name="Use Mine").click()
    await expect(d.page.locator("#editor-status")).to_have_text("Saved version 3.")
    current = await _current(frank, rid)
    assert (current["version"], current["content"]) == (3, "mine entirely\n")



@browser_only
async def test_conflict_merge_without_overlap_saves_both_edits(
        dash: Any, dash_server: ServerProc, person: Any) -> None:
    d: Dash = await dash()
    frank = await person(dash_server, "frank", "Frank")
    rid = await _conflict(d, frank, BASE, BASE.replace("one", "ONE"),
                          BASE.replace("five", "FIVE"))
    await d.page.get_by_role("button", name="Merge").click()
    await expect(d.page.locator("#editor-status")).to_contain_text(
        "Merged cleanly with version 2 and saved as version 3")
    current = await _current(frank, rid)
    assert (current["version"], current["content"]) == (
        3, "ONE\ntwo\nthree\nfour\nFIVE\n")



@browser_only
async def test_conflict_merge_with_overlap_leaves_markers_then_saves_on_the_merged_version(
        dash: Any, dash_server: ServerProc, person: Any, shots: Path) -> None:
    d: Dash = await dash()
    frank = await person(dash_server, "frank", "Frank")
    rid = await _conflict(d, frank, BASE, BASE.replace("three", "THREE (theirs)"),
                          BASE.replace("three", "three (mine)"))
    await d.page.get_by_role("button", name="Merge").click()
    status = d.page.locator("#editor-status")
    await expect(status).to_contain_text("1 conflict(s) left")
    text = await d.page.locator("#editor-text").input_value()
    assert "<<<<<<< mine\nthree (mine)\n=======\nTHREE (theirs)\n>>>>>>> version 2" in text
    await d.page.screenshot(path=str(shots / "merge-markers.png"))
    await d.page.locator("#editor-save").click()  # markers still there: warned first
    await expect(status).to_contain_text("still has conflict markers")
    resolved = BASE.replace("three", "three (both)")
    await d.page.locator("#editor-text").fill(resolved)
    await d.page.locator("#editor-save").click()
    await expect(status).to_have_text("Saved version 3.")
    current = await _current(frank, rid)
    assert (current["version"], current["content"]) == (3, resolved)



# -- hostile text and the token ------------------------------------------------------------


@browser_only
async def test_hostile_names_and_payloads_are_shown_as_text(
        dash: Any, dash_server: ServerProc, person: Any, shots: Path) -> None:
    d: Dash = await dash()
    project, task = unique("acme"), unique("TASK-X")
    mallory = await person(dash_server, "mallory", HOSTILE)
    refused = await mallory.request("event", {"event_type": "task.started", "task_id": HOSTILE,
                                              "project_id": project, "payload": {}})
    assert refused["data"]["code"] == protocol.INVALID_MESSAGE  # ids never carry markup
    await publish(mallory, "task.phase", task, project, phase="<script>alert(2)</script>")
    await publish(mallory, "task.failed", task, project, exit_code=HOSTILE,
                  signal="<b onmouseover=alert(3)>KILL</b>")
    await publish(mallory, "task.transcript", task, project, role="stdout",
                  content=HOSTILE)
    await mallory.request("resource_put", {"resource_id": unique("evil"),
                                           "content": HOSTILE, "expected_version": 0,
                                           "project_id": project})
    await d.page.locator("#show-output").check()
    await expect(d.person("mallory")).to_contain_text(HOSTILE)
    await expect(d.feed_item(task, "task.phase")).to_contain_text(
        f"{HOSTILE} moved {task} to <script>alert(2)</script>")
    await expect(d.feed_item(task, "task.failed")).to_contain_text(
        "(signal <b onmouseover=alert(3)>KILL</b>)")
    await expect(d.feed_item(task, "task.transcript")).to_contain_text(HOSTILE)
    await d.page.locator("#resources button", has_text="evil").click()
    await expect(d.page.locator("#editor-text")).to_have_value(HOSTILE)
    await d.page.screenshot(path=str(shots / "hostile.png"), full_page=True)
    board = d.page.locator("#board")
    assert await board.locator("img, script:not([src]), b").count() == 0

    await mallory.close()
    await expect(d.person("mallory")).to_have_attribute("data-status", "offline")
    assert d.dialogs == [] and d.errors == []


@browser_only
async def test_the_token_never_reaches_a_url_or_the_log(dash_server: ServerProc,
                                                        browser: Browser,
                                                        tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orc_git", "team", "dashboard", "--user", "grace",
         "--name", "Grace Hopper", "--server-url", f"http://{dash_server.base}",
         "--expires", "600"],
        env={**os.environ, "ORC_TEAM_SECRET": SECRET, "ORC_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    link = proc.stdout.strip()
    assert link.startswith(f"http://{dash_server.base}/#token=") and "?" not in link
    tok = link.split("#token=", 1)[1]
    assert "expires" in proc.stderr and tok not in proc.stderr

    context = await browser.new_context()
    page = await context.new_page()
    d = Dash(page, dash_server, tok)
    await page.goto(link)
    await d.ready()
    assert "token" not in page.url and page.url == f"http://{dash_server.base}/"
    assert await page.evaluate("sessionStorage.getItem('orc-team-token')") == tok
    await expect(page.locator("#me")).to_have_text("GHGrace Hopper")
    await page.reload()  # still signed in: sessionStorage, not the URL
    await d.ready()
    assert all(tok not in url and "token=" not in url for url in d.urls), d.urls
    assert any(url.startswith("ws://") for url in d.urls)
    assert dash_server.logged(" grace/dashboard-")  # the log did record the page's connections
    assert tok not in dash_server.log


@browser_only
async def test_without_a_token_the_page_says_how_to_sign_in(browser: Browser,
                                                            dash_server: ServerProc) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://{dash_server.base}/")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin")).to_contain_text("orc team dashboard")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "signed-out")
    assert errors == []


# -- the server side (no browser) ------------------------------------------------------------


def test_the_page_is_served_with_a_strict_policy(dash_server: ServerProc) -> None:
    for path, kind in (("/", "text/html"), ("/dashboard/dashboard.js", "text/javascript"),
                       ("/dashboard/dashboard.css", "text/css")):
        with urllib.request.urlopen(f"http://{dash_server.base}{path}", timeout=WAIT) as resp:
            assert resp.headers["Content-Type"].startswith(kind)
            policy = resp.headers["Content-Security-Policy"]
            assert "script-src 'self';" in policy and "default-src 'none'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    html = urllib.request.urlopen(f"http://{dash_server.base}/", timeout=WAIT).read().decode()
    assert "<script>" not in html and " on" + "click=" not in html
    for missing in ("/dashboard/../app.py", "/dashboard/nope.js", "/dashboard/pages.py"):
        try:
            urllib.request.urlopen(f"http://{dash_server.base}{missing}", timeout=WAIT)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        else:
            raise AssertionError(f"{missing} was served")


async def test_all_projects_hears_every_project_and_lists_their_streams(
        dash_server: ServerProc, connect_as: Any) -> None:
    watcher = await connect_as("watcher", on=dash_server)
    alice = await connect_as("alice", on=dash_server)
    project = unique("acme")
    await publish(alice, "task.started", unique("T"), project)
    reply = await watcher.request("subscribe", {"all_projects": True})
    assert reply["type"] == "subscribed", reply
    listed = {p["project_id"]: p for p in reply["data"]["projects"]}
    assert listed[project]["last_offset"] == 1 and listed[project]["epoch"]
    other, task = unique("other"), unique("T")
    await publish(alice, "task.phase", task, other, phase="x")
    got = await watcher.event("task.phase", task)
    assert got["project_id"] == other
    refused = await watcher.request("subscribe", {"all_projects": True, "since": 3})
    assert refused["data"]["code"] == protocol.INVALID_MESSAGE
    gone = await watcher.request("unsubscribe", {"all_projects": True})
    assert gone["data"]["was_subscribed"] is True


async def test_resource_merge_runs_the_three_way_merge(dash_server: ServerProc,
                                                       connect_as: Any) -> None:
    alice = await connect_as("alice", on=dash_server)
    rid = unique("doc")
    for version, content in ((0, BASE), (1, BASE.replace("one", "ONE"))):
        reply = await alice.request("resource_put", {"resource_id": rid, "content": content,
                                                     "expected_version": version})
        assert reply["type"] == "resource", reply
    clean = await alice.request("resource_merge", {"resource_id": rid, "base_version": 1,
                                                   "content": BASE.replace("five", "5")})
    assert clean["type"] == "merged" and clean["data"]["conflicts"] == 0
    assert clean["data"]["content"] == "ONE\ntwo\nthree\nfour\n5\n"
    assert clean["data"]["version"] == 2
    clash = await alice.request("resource_merge", {"resource_id": rid, "base_version": 1,
                                                   "content": BASE.replace("one", "uno")})
    assert clash["data"]["conflicts"] == 1 and "<<<<<<< mine\nuno\n" in clash["data"]["content"]
    created = await alice.request("resource_merge", {"resource_id": rid, "base_version": 0,
                                                     "content": "x\n"})
    assert created["data"]["conflicts"] == 1  # both sides added everything to an empty base
    for bad in ({"resource_id": rid, "content": "x"},
                {"resource_id": rid, "base_version": 99, "content": "x"},
                {"resource_id": "../x", "base_version": 1, "content": "x"}):
        reply = await alice.request("resource_merge", bad)
        assert reply["type"] == "error"
        assert reply["data"]["code"] in (protocol.INVALID_MESSAGE, protocol.NOT_FOUND)


async def test_a_browser_token_in_the_subprotocol_is_accepted(dash_server: ServerProc) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.typing import Subprotocol

    offered = [Subprotocol(protocol.SUBPROTOCOL),
               Subprotocol(protocol.BEARER_PREFIX + token("ivy"))]
    async with ws_connect(f"ws://{dash_server.base}/api/ws", subprotocols=offered,
                          open_timeout=WAIT) as ws:
        assert ws.subprotocol == protocol.SUBPROTOCOL
        c = Client(ws, "ivy", None)
        assert (await c.request("ping"))["type"] == "pong"
    bad = [Subprotocol(protocol.SUBPROTOCOL), Subprotocol(protocol.BEARER_PREFIX + "nope")]
    with pytest.raises(Exception, match="401"):
        async with ws_connect(f"ws://{dash_server.base}/api/ws", subprotocols=bad,
                              open_timeout=WAIT):
            pass


def test_dashboard_command_needs_a_user_and_the_secret(tmp_path: Path) -> None:
    env = {**os.environ, "ORC_HOME": str(tmp_path)}
    env.pop("ORC_TEAM_TOKEN", None)
    env.pop("ORC_TEAM_SECRET", None)
    base = [sys.executable, "-m", "orc_git", "team", "dashboard"]
    no_user = subprocess.run(base, env={**env, "ORC_TEAM_SECRET": SECRET}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=30)
    assert no_user.returncode == 2 and "--user" in no_user.stderr
    assert "Traceback" not in no_user.stderr
    no_secret = subprocess.run([*base, "--user", "alice"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=30)
    assert no_secret.returncode == 2 and "ORC_TEAM_SECRET" in no_secret.stderr
    assert "Traceback" not in no_secret.stderr



def _session(server: ServerProc, bearer: str | None, body: bytes) -> tuple[int, Any]:
    return server.http("/api/session", bearer, method="POST", body=body)


def test_a_member_without_the_secret_gets_a_link_from_the_server(
        dash_server: ServerProc, tmp_path: Path) -> None:
    """Only admins hold ORC_TEAM_SECRET: a member's own token asks the server for a sign-in
    token, the same user and role, ending no later than the member's token."""
    own = token("heidi", name="Heidi Lamarr", expires_in=3600)
    env = {k: v for k, v in os.environ.items() if k != "ORC_TEAM_SECRET"}
    env.update(ORC_HOME=str(tmp_path), ORC_TEAM_TOKEN=own,
               ORC_TEAM_URL=f"ws://{dash_server.base}")
    proc = subprocess.run([sys.executable, "-m", "orc_git", "team", "dashboard"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    link = proc.stdout.strip()
    assert link.startswith(f"http://{dash_server.base}/#token=") and "?" not in link
    minted = link.split("#token=", 1)[1]
    assert minted != own and "Heidi Lamarr" in proc.stderr
    claims = verify_token(minted, SECRET)
    mine = verify_token(own, SECRET)
    assert (claims.user, claims.role, claims.name) == ("heidi", "member", "Heidi Lamarr")
    assert claims.expires <= mine.expires
    status, body = dash_server.http("/api/presence", minted)
    assert status == 200 and "presence" in body


def test_the_session_endpoint_refuses_what_it_cannot_honour(dash_server: ServerProc) -> None:
    status, body = _session(dash_server, None, b"")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    member = token("ivan")
    for bad in (b'{"expires_in": 5}', b'{"expires_in": "1h"}', b"[1]", b"\xff"):
        status, body = _session(dash_server, member, bad)
        assert status == 400 and body["error"]["code"] == "INVALID_MESSAGE", bad
    status, body = _session(dash_server, member, b'{"expires_in": 600}')
    assert status == 200 and body["user"] == "ivan"
    assert verify_token(body["token"], SECRET).expires <= verify_token(member, SECRET).expires


def test_the_dashboard_command_says_when_the_server_cannot_be_asked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORC_TEAM_SECRET"}
    env.update(ORC_HOME=str(tmp_path), ORC_TEAM_TOKEN=token("judy"),
               ORC_TEAM_URL="ws://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "orc_git", "team", "dashboard"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3 and "127.0.0.1:9" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
