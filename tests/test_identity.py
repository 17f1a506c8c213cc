"""orc_git.identity: who the person is (config, then git config), and which process holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dead_pid

from orc_git import identity
from orc_git.config import Config
from orc_git.identity import MAX_NAME, Holder, Identity, identity_from


def test_names_are_made_printable_and_cut_once() -> None:
    who = Identity("al\x1bice", display_name="x" * 500, email="a@b", host="h\nost")
    assert "\x1b" not in who.user and "\n" not in who.host
    assert who.display_name is not None and len(who.display_name) == MAX_NAME
    assert who.display_name.endswith("…")
    assert who.owner == f"{who.user}@{who.host}"


def test_initials_come_from_up_to_three_words_of_the_display_name() -> None:
    assert Identity("a", "ada byron king lovelace").initials == "ABK"
    assert Identity("a", "Ada Lovelace", initials="AL!").initials == "AL!"
    assert Identity("a").initials is None


def test_missing_names_come_from_git_config_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Grace Hopper\n\temail = grace@navy.mil\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.chdir(tmp_path)
    assert Identity("g", from_git=True).display_name == "Grace Hopper"
    assert Identity("g", from_git=True).email == "grace@navy.mil"
    assert Identity("g", "Given", from_git=True).display_name == "Given"
    assert Identity("g").display_name is None


def test_identity_from_config_falls_back_to_the_login_name() -> None:
    who = identity_from(Config({"identity": {"user": "", "display_name": "D"}}, {}))
    assert who.user and who.display_name == "D"
    assert who.host == identity.hostname()


def test_a_holder_is_a_process_told_apart_by_its_start_time() -> None:
    me = Holder.for_process(Identity("a"))
    assert me.pid == os.getpid() and me.pid_started > 0
    assert identity.process_alive(me.pid, me.pid_started)
    assert not identity.process_alive(me.pid, me.pid_started - 10)  # a reused pid
    assert me.host_id.startswith(identity.hostname() + "/")


def test_a_process_that_exits_or_is_a_zombie_is_gone() -> None:
    assert identity.process_start_time(dead_pid()) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = 200
        while identity.process_start_time(child.pid) is not None and deadline:
            deadline -= 1
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert identity.process_start_time(child.pid) is None
    finally:
        child.wait()
