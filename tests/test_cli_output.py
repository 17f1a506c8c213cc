"""Output formats (issue 11, point 5): ``orc lock list`` as a table for people and TSV for
scripts, one timestamp form across modes, no ``None`` in ``orc task show``."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from pathlib import Path

from conftest import orc, orc_argv
from lockcli import RFC3339, FdReader, hold_here

from orc_git.locking.info import LockInfo, readable_time, utc_stamp

READABLE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def _stdout_on_a_tty(*args: str, cwd: Path) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen(orc_argv(*args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    os.close(slave)
    try:
        text = FdReader(master).rest(timeout=30)
        assert proc.wait(30) == 0
    finally:
        os.close(master)
        assert proc.stderr is not None
        proc.stderr.close()
    return text.replace("\r\n", "\n")


def test_lock_list_is_a_table_on_a_terminal_and_tsv_otherwise(repo: Path) -> None:
    hold_here(repo, "T-1")
    hold_here(repo, "A-long-task-name")
    table = _stdout_on_a_tty("lock", "list", cwd=repo).splitlines()
    header = table[0].split()
    assert header == ["TASK", "STATE", "OWNER", "PID", "TOKEN", "LAST", "ACTIVITY"]
    assert len(table) == 3
    starts = [table[0].index(column) for column in ("STATE", "OWNER", "PID", "TOKEN")]
    for line in table[1:]:
        assert "\t" not in line
        assert all(line[i - 2:i] == "  " and line[i] != " " for i in starts), table
        assert READABLE.search(line), line
    piped = orc("lock", "list", cwd=repo)
    assert piped.returncode == 0
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert sorted(r[0] for r in rows) == ["A-long-task-name", "T-1"]  # no header
    for row in rows:
        assert len(row) == 6 and row[1] == "held" and row[3] == str(os.getpid())
        assert RFC3339.fullmatch(row[5]), row


def test_an_empty_lock_list_prints_no_header(repo: Path) -> None:
    assert _stdout_on_a_tty("lock", "list", cwd=repo) == ""


def test_task_show_never_prints_none(repo: Path) -> None:
    assert orc("task", "new", "T", cwd=repo).returncode == 0
    proc = orc("task", "show", "T", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "None" not in proc.stdout
    assert "created by" in proc.stdout and READABLE.search(proc.stdout)
    assert "token" not in proc.stdout  # never written under a lease: no token to show


def test_lock_times_have_one_form_whoever_wrote_them() -> None:
    """File leases write whole seconds, the team server milliseconds: JSON shows both as
    DESIGN's RFC 3339 UTC with ``Z``, text as one readable form."""
    for stamp in ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00.123Z",
                  "2026-05-01T12:00:00+02:00"):
        assert utc_stamp(stamp) == "2026-05-01T10:00:00Z"
        assert readable_time(stamp) == "2026-05-01 10:00:00 UTC"
    team = LockInfo("T", locked=True, owner="bob@box", acquired_at="2026-05-01T10:00:00.123Z",
                    heartbeat_at="2026-05-01T10:00:05.999Z", ttl=60, token=1)
    out = team.to_json()
    assert out["acquired_at"] == "2026-05-01T10:00:00Z"
    assert out["heartbeat_at"] == "2026-05-01T10:00:05Z"
    assert out["expires_at"] == "2026-05-01T10:01:05Z"
    assert utc_stamp(None) is None and readable_time(None) == "-"
    assert utc_stamp("not a time") == "not a time"  # never hidden


def test_lock_status_text_uses_the_readable_form(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc("lock", "status", "T", cwd=repo)
    assert proc.returncode == 0
    started = next(line for line in proc.stdout.splitlines() if "Started:" in line)
    expires = next(line for line in proc.stdout.splitlines() if "Expires:" in line)
    assert READABLE.search(started) and READABLE.search(expires)
    assert not RFC3339.search(proc.stdout)
