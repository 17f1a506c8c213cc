"""``orc completion bash|zsh|fish`` (issue 11, point 5): each script parses in its shell, and a
TAB really completes, through the shell's own completion machinery, plugin commands included."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import orc

from orc_git.plugin.manager import load_plugins


@pytest.fixture
def orc_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has an ``orc`` running this checkout (what the scripts call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "orc"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m orc_git "$@"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _script(shell: str, cwd: Path) -> str:
    proc = orc("completion", shell, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # stdout not a terminal: the script only, no advice
    assert "orc" in proc.stdout
    return proc.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_script_parses_in_its_shell(shell: str, tmp_path: Path) -> None:
    text = _script(shell, tmp_path)
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed")
    check = [binary, "--no-execute"] if shell == "fish" else [binary, "-n"]
    path = tmp_path / f"orc.{shell}"
    path.write_text(text)
    proc = subprocess.run([*check, str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    proc = orc("completion", "tcsh", cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: orc completion" in proc.stderr


def _bash_complete(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    words = [shlex.quote(w) for w in line.split(" ")]  # a trailing space: an empty last word
    program = (f"source <(orc completion bash)\nCOMP_LINE={shlex.quote(line)}\n"
               f"COMP_POINT={len(line)}\nCOMP_WORDS=({' '.join(words)})\n"
               "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
               '_python_argcomplete orc\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "-c", program], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [w.strip() for w in proc.stdout.splitlines() if w.strip()]


def test_bash_completes_commands_and_options(orc_on_path: dict[str, str],
                                             tmp_path: Path) -> None:
    assert _bash_complete("orc lock ac", orc_on_path, tmp_path) == ["acquire"]
    options = _bash_complete("orc lock run T --", orc_on_path, tmp_path)
    assert {"--json", "--force", "--wait", "--timeout", "--ttl"} <= set(options)
    assert "completion" in _bash_complete("orc com", orc_on_path, tmp_path)


def test_plugin_commands_complete_when_the_plugin_is_installed(
        orc_on_path: dict[str, str], tmp_path: Path) -> None:
    if "orc-team" not in {r.distribution for r in load_plugins().records}:
        pytest.skip("the orc-team plugin is not installed")
    assert _bash_complete("orc te", orc_on_path, tmp_path) == ["team"]
    assert "serve" in _bash_complete("orc team ", orc_on_path, tmp_path)


def test_fish_completes_with_descriptions(orc_on_path: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    proc = subprocess.run(["fish", "-c", 'orc completion fish | source; complete -C "orc lock ac"'],
                          env=orc_on_path, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["acquire\ttake the lease for the calling process"]
