"""The dashboard in chromium: page load to first full render, and feed update latency.

``python plugins/orc-team/bench/dashboard_bench.py [--loads N] [--events N]`` (about half a
minute; needs /usr/bin/chromium and the ``playwright`` package).  A team server (a child
process on loopback) with 50 users connected, 1,000 tasks locked among them and 50 events in
the feed; then:

- *load*: from navigation start to the page's ``orc-painted`` mark, the frame after the one
  that shows everything (presence, the 1,000 locks' first 200 rows, resources and the 50
  caught-up feed items), N fresh loads in a new context each;
- *feed*: one client publishes an event, and the page's MutationObserver stamps when the
  event's row appears in the feed (the browser's clock and this process's are the same host
  clock), N events one after another.

With ``$ORC_ARTIFACTS`` set, a screenshot of the loaded page goes there.  Figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import SECRET, TeamServer, percentile, stop
from playwright.async_api import Page, async_playwright
from websockets.asyncio.client import ClientConnection, connect

from orc_team.cli_dashboard import page_url
from orc_team.tokens import mint_token

CHROMIUM = "/usr/bin/chromium"
USERS, LOCKS, FEED = 50, 1000, 50
ROWS = 200
"""Lock rows the page lays out at once (LOCK_ROWS in dashboard.js); the rest are found by
searching or filtering."""
PROJECT = "bench"

OBSERVE = """() => {
  window.__seen = {};
  new MutationObserver(() => {
    for (const li of document.querySelectorAll('#feed li[data-task^="LAT-"]')) {
      const task = li.dataset.task;
      if (!(task in window.__seen)) window.__seen[task] = Date.now();
    }
  }).observe(document.getElementById('feed'), {childList: true});
}"""


async def _client(url: str, user: str) -> ClientConnection:
    token = mint_token(SECRET, user, name=f"User {user[1:]}", expires_in=3600)
    return await connect(f"{url}/api/ws?client={user}-bench",
                         additional_headers={"Authorization": f"Bearer {token}"},
                         max_size=None, compression=None)


async def _ask(ws: ClientConnection, n: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"type": type_, "id": n, "data": data}))
    while True:
        reply = json.loads(await ws.recv())
        if reply.get("id") == n:
            assert reply["type"] != "error", reply
            result: dict[str, Any] = reply
            return result


async def populate(url: str) -> list[ClientConnection]:
    clients = await asyncio.gather(*(_client(url, f"u{i:02d}") for i in range(USERS)))

    async def lock_all(i: int, ws: ClientConnection) -> None:
        for k in range(LOCKS // USERS):
            await _ask(ws, k, "lock", {"task_id": f"TASK-{i:02d}-{k:03d}", "ttl": 3600,
                                       "project_id": PROJECT})

    await asyncio.gather(*(lock_all(i, ws) for i, ws in enumerate(clients)))
    # The lock events above are the project's history; the last 50 are the feed's items.
    for k in range(FEED):
        await _ask(clients[k % USERS], 10_000 + k, "event", {
            "event_type": "task.phase", "task_id": f"FEED-{k:03d}", "project_id": PROJECT,
            "payload": {"phase": "testing"}})
    return clients


async def load_times(browser: Any, link: str, loads: int) -> list[float]:
    times = []
    for _ in range(loads):
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(link)
        await page.wait_for_selector('body[data-ready="1"]', timeout=60_000)
        rows = await page.locator("#locks tr").count()
        await page.wait_for_selector("#locks-more:not([hidden])")
        items = await page.locator("#feed li").count()
        people = await page.locator("#presence li").count()
        assert (rows, items) == (ROWS, FEED) and people >= USERS, (rows, items, people)
        await page.wait_for_function("() => performance.getEntriesByName('orc-painted').length")
        mark = await page.evaluate("performance.getEntriesByName('orc-painted')[0].startTime")
        times.append(float(mark))
        await context.close()
    return times


async def feed_latency(page: Page, ws: ClientConnection, events: int) -> list[float]:
    await page.evaluate(OBSERVE)
    took = []
    for k in range(events):
        task = f"LAT-{k:04d}"
        sent = time.time() * 1000
        await _ask(ws, 20_000 + k, "event", {"event_type": "task.started", "task_id": task,
                                             "project_id": PROJECT, "payload": {}})
        await page.wait_for_function("(t) => t in window.__seen", arg=task, timeout=10_000)
        seen = await page.evaluate(f"window.__seen['{task}']")
        took.append(float(seen) - sent)
    return took


async def run(loads: int, events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="orc-bench-") as tmp:
        server = TeamServer(Path(tmp))
        try:
            url = f"ws://127.0.0.1:{server.port}"
            clients = await populate(url)
            link = page_url(url, mint_token(SECRET, "viewer", expires_in=3600))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
                times = await load_times(browser, link, loads)
                print(f"page load to full render ({LOCKS} locks, {USERS} users, {FEED} feed "
                      f"items): median {statistics.median(times):.0f} ms, min {min(times):.0f}, "
                      f"max {max(times):.0f} ({loads} loads)")
                page = await browser.new_page()
                await page.goto(link)
                await page.wait_for_selector('body[data-ready="1"]', timeout=60_000)
                shots = os.environ.get("ORC_ARTIFACTS")
                if shots:
                    await page.screenshot(path=str(Path(shots) / "dashboard-bench.png"))
                lat = await feed_latency(page, clients[0], events)
                print(f"feed update, publish to row in the page: p50 {percentile(lat, 50):.1f} "
                      f"ms, p99 {percentile(lat, 99):.1f} ms ({events} events)")
                await browser.close()
            await asyncio.gather(*(ws.close() for ws in clients))
        finally:
            stop(server.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=10, help="page loads timed (10)")
    parser.add_argument("--events", type=int, default=200, help="feed events timed (200)")
    args = parser.parse_args()
    asyncio.run(run(args.loads, args.events))


if __name__ == "__main__":
    main()
