"""The README opens with the two commands CI and newcomers rely on, and its quick starts work:
each ``<!-- quickstart: NAME -->`` block is run for real with bash, in a scratch repository, with
the ``orc`` of this environment (and, for team mode, a real server on a free loopback port)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    block = README.split("```")[1].splitlines()[1:]
    assert len(block) == 2
    assert block[0].endswith("examples/demo.py")
    assert "pytest" in block[1]
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_gitignore_template_is_the_packaged_one() -> None:
    template = (ROOT / ".gitignore-template").read_text()
    assert template == (ROOT / "orc_git" / "templates" / "gitignore").read_text()
    assert ".orc/tasks/*/lock.yaml" in template


def quickstart(name: str) -> list[str]:
    """The lines of the sh block after ``<!-- quickstart: NAME -->``, comments included."""
    m = re.search(rf"<!-- quickstart: {re.escape(name)} -->\n```sh\n(.*?)```", README, re.S)
    assert m, f"no quick start {name!r} in README.md"
    return m[1].splitlines()


def scratch_repo(path: Path) -> Path:
    """``my-repo``, with the ``./run-agent.sh`` the quick starts run."""
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    agent = path / "run-agent.sh"
    agent.write_text("#!/bin/sh\necho agent ran >> agent.out\n")
    agent.chmod(0o755)
    return path


def bash(script: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(script)], cwd=cwd,
                          env=env, text=True, capture_output=True, timeout=timeout)


def test_the_p2p_quick_start_runs(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path / "my-repo")
    proc = bash(quickstart("p2p"), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "agent.out").read_text() == "agent ran\n"
    assert "everything checked is fine" in proc.stderr
    assert "TASK-AM-001: not locked" in proc.stdout
    assert (repo / ".orc" / "shared" / "config.yaml").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_the_team_quick_start_runs(tmp_path: Path) -> None:
    """The server's block, then a member's, on one machine.  Two changes only: the server is
    started as a coprocess whose "listening on" line is awaited (rather than ``&``), and the
    member runs the very login line ``orc team invite`` printed, in place of the README's
    abbreviated token."""
    pytest.importorskip("orc_team")
    port = str(free_port())
    script = ["trap 'kill ${SERVER_PID:-} 2>/dev/null || true' EXIT"]
    for line in quickstart("team-server"):
        line = line.replace("8765", port)
        if line.startswith("orc team serve"):
            command = line.split("#")[0].strip().removesuffix("&")
            script += [f"coproc SERVER {{ exec {command} 2>&1; }}",
                       'while IFS= read -r -t 15 out <&"${SERVER[0]}"; do',
                       '  [[ $out == *"listening on"* ]] && break; done']
        elif line.startswith("orc team invite"):
            script += [f"LOGIN_LINE=$({line})", 'printf "%s\\n" "$LOGIN_LINE" > login.line']
        else:
            script.append(line)
    script.append("cd my-repo")
    member = [line.replace("8765", port) for line in quickstart("team-member")]
    login = [line for line in member if line.startswith("orc team login")]
    assert len(login) == 1
    script += ['eval "$LOGIN_LINE"' if line in login else line for line in member]

    repo = scratch_repo(tmp_path / "my-repo")
    proc = bash(script, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = (tmp_path / "login.line").read_text().strip()
    shown = login[0].split("#")[0].split()
    assert shlex.split(printed)[:5] == shown[:5]  # orc team login URL --token
    assert (repo / "agent.out").read_text() == "agent ran\n"
    assert "everything checked is fine" in proc.stderr
    assert "started TASK-AM-001" in proc.stdout and "completed TASK-AM-001" in proc.stdout
