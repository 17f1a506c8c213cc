"""``orc init`` and ``orc mode`` through the real CLI, in real git repositories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginFreePython, git, make_repo, orc

from orc_git.cli.setup import gitignore_lines

TEMPLATE = [line for line in gitignore_lines() if line.strip() and not line.startswith("#")]


def json_of(proc: Any) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    out: dict[str, Any] = json.loads(lines[0])
    assert out["schema"] == 1 and "mode" in out
    return out


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A fresh git repository, not yet initialised for orc."""
    return make_repo(tmp_path / "fresh", mode=None)


def test_template_has_the_lease_lines() -> None:
    assert ".orc/local/" in TEMPLATE
    assert ".orc/tasks/*/lock.yaml" in TEMPLATE


def test_init_creates_orc_and_switches_to_p2p(bare: Path) -> None:
    assert orc("mode", cwd=bare).stdout == "solo\n"
    proc = orc("init", "--json", cwd=bare)
    assert proc.returncode == 0, proc.stderr
    out = json_of(proc)
    assert out["mode"] == "p2p" and out["initialized"] is True
    assert out["gitignore_added"] == TEMPLATE
    for path in (".orc", ".orc/tasks", ".orc/local", ".orc/shared/config.yaml"):
        assert (bare / path).exists(), path
        assert str(bare / path) in out["created"]
    assert "mode: p2p" in (bare / ".orc" / "shared" / "config.yaml").read_text()

    mode = orc("mode", cwd=bare)
    assert (mode.returncode, mode.stdout) == (0, "p2p\n")
    assert "config.yaml" in mode.stderr  # says why

    # The mode travels with the repository: the shared config is committed, the leases are not.
    git("add", "-A", cwd=bare)
    tracked = git("ls-files", cwd=bare).splitlines()
    assert ".orc/shared/config.yaml" in tracked and ".gitignore" in tracked
    assert orc("lock", "acquire", "T", cwd=bare).returncode == 0
    assert git("status", "--porcelain", "--untracked-files=all", cwd=bare).strip() \
        .splitlines() == [f"A  {p}" for p in sorted([".gitignore", ".orc/shared/config.yaml"])]


def test_init_from_a_subdirectory_sets_up_the_top(bare: Path) -> None:
    sub = bare / "src" / "pkg"
    sub.mkdir(parents=True)
    assert orc("init", cwd=sub).returncode == 0
    assert (bare / ".orc" / "shared" / "config.yaml").is_file()
    assert (bare / ".gitignore").is_file()
    assert not (sub / ".orc").exists()
    assert orc("mode", cwd=sub).stdout == "p2p\n"


def test_init_twice_is_idempotent(bare: Path) -> None:
    assert orc("init", cwd=bare).returncode == 0
    config = (bare / ".orc" / "shared" / "config.yaml").read_text()
    gitignore = (bare / ".gitignore").read_text()
    proc = orc("init", "--json", cwd=bare)
    assert proc.returncode == 0
    out = json_of(proc)
    assert out["created"] == [] and out["gitignore_added"] == []
    assert (bare / ".gitignore").read_text() == gitignore
    assert (bare / ".orc" / "shared" / "config.yaml").read_text() == config


def test_gitignore_merge_keeps_user_lines_in_order_and_adds_no_duplicates(bare: Path) -> None:
    user = ["node_modules/", "# build output", "dist/", ".orc/local/", "", "*.pyc"]
    (bare / ".gitignore").write_text("\n".join(user) + "\n")
    assert orc("init", cwd=bare).returncode == 0
    assert orc("init", cwd=bare).returncode == 0
    lines = (bare / ".gitignore").read_text().splitlines()
    assert lines[:len(user)] == user  # untouched, in order, at the top
    for line in TEMPLATE:
        assert lines.count(line) == 1, line
    non_blank = [line for line in lines if line.strip()]
    assert len(non_blank) == len(set(non_blank))


def test_gitignore_without_a_trailing_newline(bare: Path) -> None:
    (bare / ".gitignore").write_text("build/\n*.log")
    assert orc("init", cwd=bare).returncode == 0
    text = (bare / ".gitignore").read_text()
    lines = text.splitlines()
    assert lines[:2] == ["build/", "*.log"]  # the last user line was not glued to ours
    assert text.endswith("\n")
    for line in TEMPLATE:
        assert line in lines
    assert orc("init", cwd=bare).returncode == 0
    assert (bare / ".gitignore").read_text() == text


def test_gitignore_with_all_lines_already_present_is_left_alone(bare: Path) -> None:
    text = "\n".join(["venv/", *TEMPLATE]) + "\n"
    (bare / ".gitignore").write_text(text)
    proc = orc("init", "--json", cwd=bare)
    assert json_of(proc)["gitignore_added"] == []
    assert (bare / ".gitignore").read_text() == text


def test_init_mode_solo_writes_no_shared_dir(bare: Path) -> None:
    proc = orc("init", "--mode", "solo", "--json", cwd=bare)
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["mode"] == "solo"
    assert not (bare / ".orc" / "shared").exists()
    assert orc("mode", cwd=bare).stdout == "solo\n"
    # solo locking writes nothing
    assert orc("lock", "acquire", "T", cwd=bare).returncode == 0
    assert list((bare / ".orc" / "tasks").iterdir()) == []


def test_mode_json_gives_the_reason(repo: Path, solo_repo: Path) -> None:
    proc = orc("mode", "--json", cwd=repo)
    assert proc.returncode == 0
    out = json_of(proc)
    assert out["mode"] == "p2p"
    assert str(repo / ".orc" / "shared" / "config.yaml") in out["reason"]

    out = json_of(orc("mode", "--json", cwd=solo_repo))
    assert out["mode"] == "solo" and ".orc/shared" in out["reason"]

    # an existing .orc/shared/ alone (no mode: line) means p2p
    (solo_repo / ".orc" / "shared").mkdir(parents=True)
    out = json_of(orc("mode", "--json", cwd=solo_repo))
    assert out["mode"] == "p2p" and "exists" in out["reason"]


def test_mode_precedence_environment_and_local_config(repo: Path) -> None:
    out = json_of(orc("mode", "--json", cwd=repo, env={"ORC_MODE": "solo"}))
    assert out["mode"] == "solo" and "environment" in out["reason"]

    local = repo / ".orc" / "local" / "config.yaml"
    local.write_text("mode: solo\n")
    out = json_of(orc("mode", "--json", cwd=repo))
    assert out["mode"] == "solo" and str(local) in out["reason"]

    local.write_text("team: {server_url: ws://127.0.0.1:9}\n")
    out = json_of(orc("mode", "--json", cwd=repo))
    assert out["mode"] == "p2p"  # an explicit mode: in the shared config beats the URL


def test_team_url_without_a_mode_means_team(solo_repo: Path) -> None:
    out = json_of(orc("mode", "--json", cwd=solo_repo,
                      env={"ORC_TEAM_URL": "ws://127.0.0.1:9"}))
    assert out["mode"] == "team" and "team server URL" in out["reason"]


def test_init_switches_the_mode_of_a_repository_set_up_before(repo: Path) -> None:
    """The team-mode hint tells users to switch with `orc init --mode p2p`: that must work."""
    proc = orc("init", "--mode", "team", "--server-url", "ws://127.0.0.1:9", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert orc("mode", cwd=repo).stdout == "team\n"
    text = (repo / ".orc" / "shared" / "config.yaml").read_text()
    assert "server_url: ws://127.0.0.1:9" in text and "ttl: 60" in text

    assert orc("init", "--mode", "p2p", cwd=repo).returncode == 0
    assert orc("mode", cwd=repo).stdout == "p2p\n"
    assert "ttl: 60" in (repo / ".orc" / "shared" / "config.yaml").read_text()


def test_init_solo_on_a_p2p_repository_says_the_mode_did_not_change(repo: Path) -> None:
    proc = orc("init", "--mode", "solo", cwd=repo)
    assert proc.returncode == 0
    assert "p2p" in proc.stderr and "solo" in proc.stderr
    assert orc("mode", cwd=repo).stdout == "p2p\n"


def test_init_team_without_the_plugin_says_how_to_install_it(
        bare: Path, plugin_free: PluginFreePython) -> None:
    proc = plugin_free.orc("init", "--mode", "team", "--server-url", "ws://127.0.0.1:9",
                           cwd=bare)
    assert proc.returncode == 0, proc.stderr
    assert "orc plugins install team" in proc.stderr
    assert orc("mode", cwd=bare).stdout == "team\n"


@pytest.mark.parametrize("args", [("init", "--mode", "bogus"),
                                  ("init", "--server-url", "ws://127.0.0.1:9"),
                                  ("init", "--mode", "p2p", "--server-url", "ws://x"),
                                  ("mode", "--frob")])
def test_setup_usage_errors_exit_2(bare: Path, args: tuple[str, ...]) -> None:
    proc = orc(*args, "--json", cwd=bare)
    assert proc.returncode == 2
    assert json_of(proc)["error"]["code"] == "USAGE"
    assert not (bare / ".orc").exists()


def test_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for args in (("init",), ("mode",)):
        proc = orc(*args, "--json", cwd=plain)
        assert proc.returncode == 2
        assert json_of(proc)["error"]["code"] == "NOT_A_REPOSITORY"
    assert not (plain / ".orc").exists() and not (plain / ".gitignore").exists()


def test_unreadable_config_is_a_failure_not_a_traceback(repo: Path) -> None:
    (repo / ".orc" / "shared" / "config.yaml").write_text("mode: [unclosed\n")
    proc = orc("mode", "--json", cwd=repo)
    assert proc.returncode == 3
    err = json_of(proc)["error"]
    assert err["code"] == "CONFIG_ERROR" and "config.yaml" in err["message"]

    (repo / ".orc" / "shared" / "config.yaml").write_text("mode: turbo\n")
    proc = orc("mode", cwd=repo)
    assert proc.returncode == 3
    assert "turbo" in proc.stderr and "Traceback" not in proc.stderr
