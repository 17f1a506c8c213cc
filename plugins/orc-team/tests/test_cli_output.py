"""One timestamp form across modes (issue 11, point 5): the team server's replies carry
milliseconds; the CLI shows a team lock's times exactly as it shows a file lease's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import LockerFactory, ServerProc, git_repo, run_orc, token, unique

WHOLE_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
READABLE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def test_team_lock_times_look_like_file_lease_times(server: ServerProc,
                                                    make_locker: LockerFactory,
                                                    tmp_path: Path) -> None:
    task = unique()
    held = make_locker(server, "alice").acquire(task)
    assert held.acquired_at is not None and "." in held.acquired_at  # the wire's milliseconds
    repo = git_repo(tmp_path / "repo")
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("bob")}
    done = run_orc("lock", "status", task, "--json", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    lock = json.loads(done.stdout)["lock"]
    for key in ("acquired_at", "heartbeat_at", "expires_at"):
        assert WHOLE_SECONDS.fullmatch(lock[key]), (key, lock[key])
    text = run_orc("lock", "status", task, cwd=repo, env=env).stdout
    started = next(line for line in text.splitlines() if "Started:" in line)
    assert READABLE.search(started) and "." not in started.split("(")[-1]
    rows = [r.split("\t") for r in run_orc("lock", "list", cwd=repo, env=env).stdout.splitlines()]
    mine = [r for r in rows if r[0] == task]
    assert len(mine) == 1 and WHOLE_SECONDS.fullmatch(mine[0][5]), rows
