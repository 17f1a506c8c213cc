"""``orc team invite|login|logout|status`` and ``orc doctor``'s team checks, through the real
CLI against real servers: a login stores only a token the server accepted (0600, other keys
kept), and doctor fails, naming the fix, for each broken setup."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SECRET, ServerFactory, ServerProc, dead_url, git_repo, token

ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")


def orc(*args: str, cwd: Path, home: Path, input: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``orc`` with only ``home`` as ORC_HOME and no ORC_* from this environment."""
    base = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith("GIT_")}
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd, input=input,
                          env={**base, "ORC_HOME": str(home), **env}, text=True,
                          capture_output=True, timeout=45)


def doc(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    out: dict[str, Any] = json.loads(lines[0])
    return out


def checks(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc(proc)["checks"]}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    (path / "config.yaml").write_text("identity: {user: alice}\nlock: {ttl: 30}\n")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "repo")


def url_of(server: ServerProc) -> str:
    return f"ws://{server.base}"


def stored(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((home / "config.yaml").read_text())
    return data


def login(server: ServerProc, repo: Path, home: Path, user: str = "alice") -> str:
    tok = token(user)
    proc = orc("team", "login", url_of(server), "--token", tok, cwd=repo, home=home)
    assert proc.returncode == 0, proc.stderr
    return tok


def test_invite_prints_the_login_line_and_that_line_logs_in(server: ServerProc, repo: Path,
                                                            home: Path) -> None:
    proc = orc("team", "invite", "--user", "bob", "--name", "Bob B", "--role", "admin",
               "--expires", "600", "--server-url", url_of(server), cwd=repo, home=home,
               ORC_TEAM_SECRET=SECRET)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    assert argv[:4] == ["orc", "team", "login", url_of(server)] and argv[4] == "--token"
    tok = argv[5]
    assert tok not in proc.stderr and "bob (Bob B, admin)" in proc.stderr

    proc = orc(*argv[1:], cwd=repo, home=home)
    assert proc.returncode == 0, proc.stderr
    assert tok not in proc.stderr + proc.stdout
    assert "logged in" in proc.stderr and "bob" in proc.stderr
    config = home / "config.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stored(home) == {"identity": {"user": "alice"}, "lock": {"ttl": 30},
                            "team": {"server_url": url_of(server), "token": tok}}


def test_login_reads_the_token_from_stdin(server: ServerProc, repo: Path, home: Path) -> None:
    tok = token("carol")
    proc = orc("team", "login", f"http://{server.base}/api/ws", "--json", cwd=repo, home=home,
               input=tok + "\n")
    assert proc.returncode == 0, proc.stderr
    out = doc(proc)
    assert out["logged_in"] and out["user"] == "carol" and out["server_url"] == url_of(server)
    assert stored(home)["team"] == {"server_url": url_of(server), "token": tok}


@pytest.mark.parametrize("kind", ["bad signature", "expired", "not a token", "unreachable"])
def test_login_refuses_and_stores_nothing(server: ServerProc, repo: Path, home: Path,
                                          kind: str) -> None:
    before = (home / "config.yaml").read_bytes()
    url = dead_url() if kind == "unreachable" else url_of(server)
    tok = {"bad signature": token("alice", secret="another-secret-" + "x" * 40),
           "expired": token("alice", expires_in=60, now=0),
           "not a token": "hello",
           "unreachable": token("alice")}[kind]
    proc = orc("team", "login", url, "--token", tok, "--json", cwd=repo, home=home)
    assert proc.returncode == (2 if kind == "not a token" else 3)
    message = doc(proc)["error"]["message"]
    assert tok not in proc.stdout + proc.stderr
    expected = {"bad signature": "bad token signature", "expired": "token expired",
                "not a token": "not a token", "unreachable": "cannot reach"}[kind]
    assert expected in message
    if kind != "not a token":
        assert "nothing was stored" in message
    assert (home / "config.yaml").read_bytes() == before


def test_status_and_logout(server: ServerProc, repo: Path, home: Path) -> None:
    proc = orc("team", "status", cwd=repo, home=home)
    assert proc.returncode == 1 and "not logged in" in proc.stdout

    tok = login(server, repo, home)
    proc = orc("team", "status", "--json", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stderr
    out = doc(proc)
    assert out["logged_in"] and out["server_url"] == url_of(server)
    assert out["token"]["user"] == "alice" and out["token"]["role"] == "member"
    assert out["token"]["expired"] is False and out["probe"]["reachable"]
    assert out["token_from"] == str(home / "config.yaml")
    assert tok not in proc.stdout
    text = orc("team", "status", cwd=repo, home=home).stdout
    assert "reachable" in text and "accepted by the server" in text and tok not in text

    proc = orc("team", "logout", cwd=repo, home=home)
    assert proc.returncode == 0 and "removed team.token" in proc.stderr
    assert stored(home) == {"identity": {"user": "alice"}, "lock": {"ttl": 30},
                            "team": {"server_url": url_of(server)}}
    assert stat.S_IMODE((home / "config.yaml").stat().st_mode) == 0o600
    proc = orc("team", "status", cwd=repo, home=home)
    assert proc.returncode == 1 and "token: none configured" in proc.stdout
    assert orc("team", "logout", cwd=repo, home=home).returncode == 0  # twice is fine


def team_repo(server: ServerProc, repo: Path, home: Path) -> None:
    login(server, repo, home)
    assert orc("init", "--mode", "team", cwd=repo, home=home).returncode == 0
    assert orc("hooks", "install", cwd=repo, home=home).returncode == 0


def test_doctor_with_a_good_team_setup(server: ServerProc, repo: Path, home: Path) -> None:
    team_repo(server, repo, home)
    proc = orc("doctor", "--json", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stdout
    found = checks(proc)
    assert doc(proc)["mode"] == "team"
    assert found["team server"]["ok"] and found["team server"]["data"]["rtt_ms"] >= 0
    assert found["team token"]["ok"] and "alice" in found["team token"]["detail"]
    assert found["team token"]["data"]["role"] == "member"
    assert found["team outbox"]["ok"] and found["team outbox"]["data"]["pending"] == 0

    proc = orc("mode", cwd=repo, home=home)
    assert proc.stdout == "team\n" and "orc doctor" in proc.stderr


def test_doctor_without_a_token(server: ServerProc, repo: Path, home: Path) -> None:
    team_repo(server, repo, home)
    assert orc("team", "logout", cwd=repo, home=home).returncode == 0
    proc = orc("doctor", "--json", cwd=repo, home=home)
    assert proc.returncode == 1
    failed = {name for name, c in checks(proc).items() if not c["ok"]}
    assert failed == {"team token"}
    assert "orc team login" in checks(proc)["team token"]["hint"]


@pytest.mark.parametrize("kind", ["expired", "bad signature"])
def test_doctor_with_a_refused_token(server: ServerProc, repo: Path, home: Path,
                                     kind: str) -> None:
    team_repo(server, repo, home)
    bad = (token("alice", expires_in=60, now=0) if kind == "expired"
           else token("alice", secret="another-secret-" + "x" * 40))
    proc = orc("doctor", "--json", cwd=repo, home=home, ORC_TEAM_TOKEN=bad)
    assert proc.returncode == 1
    assert bad not in proc.stdout + proc.stderr
    found = checks(proc)
    assert {n for n, c in found.items() if not c["ok"]} == {"team token"}
    detail = found["team token"]["detail"]
    assert ("expired" in detail) if kind == "expired" else ("bad token signature" in detail)
    assert "from the environment" in detail and "orc team invite" in found["team token"]["hint"]
    proc = orc("mode", cwd=repo, home=home, ORC_TEAM_TOKEN=bad)  # offline: the mode, and where
    assert proc.returncode == 0 and proc.stdout == "team\n" and "orc doctor" in proc.stderr


def test_doctor_with_the_server_down_shows_the_outbox_backlog(
        start_server: ServerFactory, repo: Path, home: Path) -> None:
    server = start_server()
    team_repo(server, repo, home)
    assert server.stop() == 0
    run = orc("run", "T-DOWN", "--", sys.executable, "-c", "pass", cwd=repo, home=home)
    assert run.returncode == 0, run.stderr
    proc = orc("doctor", "--json", cwd=repo, home=home)
    assert proc.returncode == 1
    found = checks(proc)
    assert {n for n, c in found.items() if not c["ok"]} == {"team server"}
    assert "unreachable" in found["team server"]["detail"]
    assert "orc team serve" in found["team server"]["hint"]
    assert "not checked" in found["team token"]["detail"]
    assert found["team outbox"]["data"]["pending"] >= 2  # task.started and task.completed
    text = orc("doctor", cwd=repo, home=home).stdout
    assert "FAIL  team server" in text and "event(s) waiting" in text
    proc = orc("mode", cwd=repo, home=home)
    assert proc.returncode == 0 and proc.stdout == "team\n" and "orc doctor" in proc.stderr


def test_doctor_with_hooks_missing_in_team_mode(server: ServerProc, repo: Path,
                                                home: Path) -> None:
    team_repo(server, repo, home)
    assert orc("hooks", "uninstall", cwd=repo, home=home).returncode == 0
    proc = orc("doctor", "--json", cwd=repo, home=home)
    assert proc.returncode == 1
    assert {n for n, c in checks(proc).items() if not c["ok"]} == {"hooks"}


def test_invite_needs_the_secret_and_names_the_default_address(repo: Path, home: Path) -> None:
    proc = orc("team", "invite", "--user", "dave", cwd=repo, home=home)
    assert proc.returncode == 2 and "ORC_TEAM_SECRET" in proc.stderr and not proc.stdout
    proc = orc("team", "invite", "--user", "dave", cwd=repo, home=home, ORC_TEAM_SECRET=SECRET)
    assert proc.returncode == 0
    assert shlex.split(proc.stdout)[:4] == ["orc", "team", "login", "ws://127.0.0.1:8765"]
    assert "--server-url" in proc.stderr
    proc = orc("team", "invite", "--user", "bad user", cwd=repo, home=home,
               ORC_TEAM_SECRET=SECRET)
    assert proc.returncode == 2 and not proc.stdout


def test_login_says_when_the_environment_overrides_what_it_stored(server: ServerProc, repo: Path,
                                                                  home: Path) -> None:
    mine = token("erin")
    proc = orc("team", "login", url_of(server), "--token", mine, cwd=repo, home=home,
               ORC_TEAM_TOKEN=token("frank"))
    assert proc.returncode == 0, proc.stderr
    assert "team.token from the environment overrides the one just stored" in proc.stderr
    assert stored(home)["team"]["token"] == mine
