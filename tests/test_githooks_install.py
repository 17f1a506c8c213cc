"""``orc hooks install|uninstall|status`` and the shim, on real repositories driven by real git.

orc's part of a hook is observed through a stand-in "Python" (``install(python=…)``): a shell
script that records how the shim called it and what it read on stdin.  It uses shell builtins
only, so it works under an empty PATH.  One test runs the real Python and the real
``orc_git.githooks.run`` end to end (a staged lease file is refused).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import orc, orc_json, tree_snapshot

from orc_git.githooks import install as hooks

GIT = shutil.which("git") or "/usr/bin/git"
ROOT = Path(__file__).resolve().parent.parent

# Records one call: "TAG [ARG]...", then one "stdin LINE" per line read; builtins only.
RECORDER = """#!/bin/sh
# {what}
{skip}{{ printf '%s' '{tag}'; for a in "$@"; do printf ' [%s]' "$a"; done; printf '\\n'
   while IFS= read -r line; do printf 'stdin %s\\n' "$line"; done; }} >>{log}
exit {status}
"""


def run_git(*args: str, cwd: Path, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([GIT, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=env if env is not None else dict(os.environ),
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def fake_python(tmp_path: Path, status: int = 0) -> tuple[Path, Path]:
    """A stand-in for the Python the shim runs; returns (script, its log)."""
    log = tmp_path / "orc-part.log"
    script = tmp_path / "fake-python"
    script.write_text(RECORDER.format(
        what="stands in for Python: checks the shim's `-c CODE`, records the rest",
        skip='[ "$1" = -c ] || exit 99\nshift 2\n', tag="orc", log=shlex.quote(str(log)),
        status=status))
    script.chmod(0o755)
    return script, log


def user_hook(hooks_dir: Path, name: str, log: Path, status: int = 0,
              mode: int = 0o750) -> bytes:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    path = hooks_dir / name
    path.write_text(RECORDER.format(what=f"the user's own {name} hook", skip="", tag="user",
                                    log=shlex.quote(str(log)), status=status))
    path.chmod(mode)
    return path.read_bytes()


def calls(log: Path) -> list[list[str]]:
    """The recorded calls: each is [first line, stdin lines...]."""
    if not log.exists():
        return []
    out: list[list[str]] = []
    for line in log.read_text().splitlines():
        if line.startswith("stdin "):
            out[-1].append(line)
        else:
            out.append([line])
    return out


def hooks_dir_of(cwd: Path) -> Path:
    return Path(run_git("rev-parse", "--path-format=absolute", "--git-path", "hooks",
                        cwd=cwd).stdout.strip())


def commit_file(repo: Path, name: str = "a.txt", text: str = "x\n",
                env: dict[str, str] | None = None, check: bool = True,
                ) -> subprocess.CompletedProcess[str]:
    (repo / name).write_text(text)
    run_git("add", name, cwd=repo, env=env)
    return run_git("commit", "-q", "-m", f"change {name}", cwd=repo, env=env, check=check)


def test_install_writes_recognisable_shims_where_git_runs_hooks(repo: Path) -> None:
    proc = orc("hooks", "install", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # narration only
    hooks_dir = repo / ".git" / "hooks"
    assert hooks_dir_of(repo) == hooks_dir
    for name in hooks.HOOKS:
        shim = hooks_dir / name
        text = shim.read_text()
        assert text.splitlines()[1] == "# orc-git hook shim v1"
        assert f"orc_install_python={shlex.quote(hooks.default_python())}" in text
        assert stat.S_IMODE(shim.stat().st_mode) == 0o755
        assert not (hooks_dir / f"{name}.orc-previous").exists()
    status = orc("hooks", "status", "--json", cwd=repo)
    data = json.loads(status.stdout)
    assert data["schema"] == 1 and data["mode"] == "p2p"
    assert data["hooks_dir"] == str(hooks_dir) and data["core_hooks_path"] is None
    assert [(h["name"], h["state"], h["chained"], h["path"]) for h in data["hooks"]] == [
        (n, "installed", False, str(hooks_dir / n)) for n in hooks.HOOKS]
    text = orc("hooks", "status", cwd=repo).stdout
    assert f"hooks directory: {hooks_dir}" in text and "core.hooksPath: not set" in text


def test_shim_template_is_the_hooks_dir_file_and_valid_sh() -> None:
    assert os.readlink(ROOT / "hooks" / "shim.sh") == "../orc_git/templates/hooks/shim.sh"
    assert os.readlink(ROOT / "hooks" / "pre-run") == "../orc_git/templates/hooks/pre-run"
    assert (ROOT / "hooks" / "shim.sh").read_text() == hooks.template()
    assert os.access(ROOT / "hooks" / "pre-run", os.X_OK)
    for name in ("shim.sh", "pre-run"):
        proc = subprocess.run(["/bin/sh", "-n", str(ROOT / "hooks" / name)],
                              capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("setting", ["relative", "absolute"])
def test_core_hooks_path_is_honoured(repo: Path, tmp_path: Path, setting: str) -> None:
    value = "my-hooks" if setting == "relative" else str(tmp_path / "shared-hooks")
    expected = repo / "my-hooks" if setting == "relative" else tmp_path / "shared-hooks"
    run_git("config", "core.hooksPath", value, cwd=repo)
    code, data = orc_json("hooks", "install", cwd=repo)
    assert code == 0 and data["installed"] is True
    assert data["hooks_dir"] == str(expected) and data["core_hooks_path"] == value
    assert all(hooks.is_shim(expected / n) for n in hooks.HOOKS)
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    fake, log = fake_python(tmp_path)
    hooks.install(repo, python=str(fake))
    commit_file(repo)
    assert [c[0] for c in calls(log)] == ["orc [pre-commit]"]


def test_linked_worktree_installs_where_git_runs_its_hooks(repo: Path, tmp_path: Path) -> None:
    commit_file(repo)
    wt = tmp_path / "wt"
    run_git("worktree", "add", "-q", "-b", "side", str(wt), cwd=repo)
    fake, log = fake_python(tmp_path)
    report = hooks.install(wt, python=str(fake))
    assert report.hooks_dir == hooks_dir_of(wt) == repo / ".git" / "hooks"
    commit_file(wt, "b.txt")
    assert [c[0] for c in calls(log)] == ["orc [pre-commit]"]
    # with a relative core.hooksPath, each worktree has its own directory
    run_git("config", "core.hooksPath", ".hooks", cwd=repo)
    report = hooks.install(wt, python=str(fake))
    assert report.hooks_dir == hooks_dir_of(wt) == wt / ".hooks"
    commit_file(wt, "c.txt")
    assert [c[0] for c in calls(log)] == ["orc [pre-commit]"] * 2


def test_user_pre_commit_kept_run_once_restored(repo: Path, tmp_path: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    user_log = tmp_path / "user.log"
    original = user_hook(hooks_dir, "pre-commit", user_log, mode=0o750)
    fake, log = fake_python(tmp_path)
    report = hooks.install(repo, python=str(fake))
    pre = next(h for h in report.hooks if h.name == "pre-commit")
    assert (pre.state, pre.chained, pre.action) == ("installed", True, "installed")
    previous = hooks_dir / "pre-commit.orc-previous"
    assert previous.read_bytes() == original and stat.S_IMODE(previous.stat().st_mode) == 0o750
    commit_file(repo)
    assert calls(user_log) == [["user"]]  # exactly once, no arguments, empty stdin
    assert calls(log) == [["orc [pre-commit]"]]
    orc("hooks", "uninstall", cwd=repo)
    restored = hooks_dir / "pre-commit"
    assert restored.read_bytes() == original and stat.S_IMODE(restored.stat().st_mode) == 0o750
    assert not previous.exists() and not (hooks_dir / "pre-push").exists()
    commit_file(repo, "b.txt")
    assert calls(user_log) == [["user"], ["user"]] and len(calls(log)) == 1


def test_failing_user_hook_still_blocks_and_orc_part_is_skipped(repo: Path,
                                                                tmp_path: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    user_log = tmp_path / "user.log"
    user_hook(hooks_dir, "pre-commit", user_log, status=3)
    fake, log = fake_python(tmp_path)
    hooks.install(repo, python=str(fake))
    proc = commit_file(repo, check=False)
    assert proc.returncode != 0 and len(calls(user_log)) == 1 and calls(log) == []
    shim = subprocess.run([str(hooks_dir / "pre-commit")], cwd=repo, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert shim.returncode == 3  # the user's status, exactly


def test_orc_refusal_blocks_a_commit(repo: Path, tmp_path: Path) -> None:
    fake, log = fake_python(tmp_path, status=1)
    hooks.install(repo, python=str(fake))
    assert commit_file(repo, check=False).returncode != 0
    assert len(calls(log)) == 1


def test_post_checkout_keeps_the_user_status_and_still_runs_orc(repo: Path,
                                                               tmp_path: Path) -> None:
    commit_file(repo)
    run_git("branch", "other", cwd=repo)
    hooks_dir = repo / ".git" / "hooks"
    user_log = tmp_path / "user.log"
    user_hook(hooks_dir, "post-checkout", user_log, status=5)
    fake, log = fake_python(tmp_path, status=7)  # orc's post-* status is never the hook's
    hooks.install(repo, python=str(fake))
    proc = run_git("checkout", "-q", "other", cwd=repo, check=False)
    assert proc.returncode != 0  # git checkout fails when its post-checkout hook does
    head = run_git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    assert calls(user_log) == [[f"user [{head}] [{head}] [1]"]]
    assert calls(log) == [[f"orc [post-checkout] [{head}] [{head}] [1]"]]
    shim = subprocess.run([str(hooks_dir / "post-checkout"), head, head, "1"], cwd=repo,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert shim.returncode == 5  # the user's status, exactly
    user_hook(hooks_dir, "post-checkout.orc-previous", user_log, status=0)
    assert run_git("checkout", "-q", "main", cwd=repo, check=False).returncode == 0
    assert len(calls(log)) == 3


def test_pre_push_and_post_rewrite_stdin_reach_both_parts_once(repo: Path,
                                                              tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    run_git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    run_git("remote", "add", "origin", str(remote), cwd=repo)
    commit_file(repo)
    hooks_dir = repo / ".git" / "hooks"
    user_log = tmp_path / "user.log"
    user_hook(hooks_dir, "pre-push", user_log)
    user_hook(hooks_dir, "post-rewrite", user_log)
    fake, log = fake_python(tmp_path)
    hooks.install(repo, python=str(fake))
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    run_git("push", "-q", "origin", "main", cwd=repo, env=env)
    head = run_git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    ref_line = f"stdin refs/heads/main {head} refs/heads/main {'0' * 40}"
    assert calls(user_log) == [[f"user [origin] [{remote}]", ref_line]]
    assert calls(log) == [[f"orc [pre-push] [origin] [{remote}]", ref_line]]
    run_git("commit", "-q", "--amend", "-m", "amended", cwd=repo, env=env)
    new = run_git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    rewrite = [f"stdin {head} {new}"]
    assert calls(user_log)[1:] == [["user [amend]", *rewrite]]
    assert [c for c in calls(log) if "post-rewrite" in c[0]] == [
        ["orc [post-rewrite] [amend]", *rewrite]]
    assert list(scratch.iterdir()) == []  # the buffered stdin was cleaned up


def test_reinstall_is_idempotent(repo: Path, tmp_path: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    original = user_hook(hooks_dir, "pre-push", tmp_path / "user.log")
    assert orc("hooks", "install", cwd=repo).returncode == 0
    first = tree_snapshot(hooks_dir)
    code, data = orc_json("hooks", "install", cwd=repo)
    assert code == 0 and {h["action"] for h in data["hooks"]} == {"unchanged"}
    assert tree_snapshot(hooks_dir) == first
    assert (hooks_dir / "pre-push.orc-previous").read_bytes() == original
    assert [p.name for p in hooks_dir.iterdir() if ".orc-previous" in p.name] == [
        "pre-push.orc-previous"]
    # a shim written for another Python is rewritten in place, never moved aside
    hooks.install(repo, python=str(tmp_path / "elsewhere" / "python"))
    assert not (hooks_dir / "pre-commit.orc-previous").exists()
    assert orc("hooks", "install", cwd=repo).returncode == 0
    assert tree_snapshot(hooks_dir) == first
    assert all(stat.S_IMODE((hooks_dir / n).stat().st_mode) == 0o755 for n in hooks.HOOKS)


def test_symlinked_user_hook_moves_as_a_symlink(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "team-hooks" / "post-merge"
    user_hook(target.parent, "post-merge", tmp_path / "user.log")
    link = repo / ".git" / "hooks" / "post-merge"
    link.symlink_to(target)
    hooks.install(repo)
    assert os.readlink(link.with_name("post-merge.orc-previous")) == str(target)
    hooks.uninstall(repo)
    assert link.is_symlink() and os.readlink(link) == str(target)


def test_foreign_hook_over_a_previous_is_refused_unless_forced(repo: Path,
                                                               tmp_path: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    first = user_hook(hooks_dir, "pre-commit", tmp_path / "first.log")
    hooks.install(repo)
    other = user_hook(hooks_dir, "pre-commit", tmp_path / "other.log")  # another tool's
    before = tree_snapshot(hooks_dir)
    code, data = orc_json("hooks", "install", cwd=repo)
    assert code == 1 and data["error"]["code"] == "REFUSED"
    refused = next(h for h in data["hooks"] if h["name"] == "pre-commit")
    assert refused["action"] == "refused" and refused["state"] == "foreign"
    assert tree_snapshot(hooks_dir) == before
    text = orc("hooks", "install", cwd=repo)
    assert text.returncode == 1 and "--force" in text.stderr and "Traceback" not in text.stderr
    assert orc("hooks", "install", "--force", cwd=repo).returncode == 0
    assert (hooks_dir / "pre-commit.orc-previous").read_bytes() == other
    assert (hooks_dir / "pre-commit.orc-previous.1").read_bytes() == first
    assert hooks.is_shim(hooks_dir / "pre-commit")


def test_uninstall_leaves_foreign_hooks_alone(repo: Path, tmp_path: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    hooks.install(repo)
    (hooks_dir / "pre-commit").unlink()
    mine = user_hook(hooks_dir, "pre-commit", tmp_path / "user.log")
    code, data = orc_json("hooks", "uninstall", cwd=repo)
    assert code == 0
    assert (hooks_dir / "pre-commit").read_bytes() == mine
    assert [h["state"] for h in data["hooks"]] == ["missing"] * 3 + ["foreign", "missing"]
    assert orc_json("hooks", "status", cwd=repo)[1]["hooks"][3]["state"] == "foreign"


def test_orc_hooks_0_skips_orc_part_not_the_user_hook(repo: Path, tmp_path: Path) -> None:
    user_log = tmp_path / "user.log"
    user_hook(repo / ".git" / "hooks", "pre-commit", user_log)
    fake, log = fake_python(tmp_path)
    hooks.install(repo, python=str(fake))
    commit_file(repo, env={**os.environ, "ORC_HOOKS": "0"})
    assert len(calls(user_log)) == 1 and calls(log) == []


def test_bare_and_empty_path(repo: Path, tmp_path: Path) -> None:
    """A GUI client's git: the shim needs nothing from PATH to find Python and orc_git."""
    hooks.install(repo)
    bare = {**os.environ, "PATH": "/usr/bin:/bin"}
    commit_file(repo, env=bare)
    run_git("checkout", "-q", "-b", "side", cwd=repo, env=bare)
    # orc's part really runs: the real pre-commit refuses a staged lease file
    lease = repo / ".orc" / "tasks" / "T-1" / "lock.yaml"
    lease.parent.mkdir(parents=True)
    lease.write_text("task_id: T-1\n")
    run_git("add", "-f", str(lease), cwd=repo, env=bare)
    proc = run_git("commit", "-q", "-m", "lease", cwd=repo, env=bare, check=False)
    assert proc.returncode != 0 and "lease" in proc.stderr
    run_git("rm", "-q", "--cached", str(lease), cwd=repo, env=bare)
    # empty PATH (git puts only its exec path there), with a chained user hook using builtins
    user_log = tmp_path / "user.log"
    user_hook(repo / ".git" / "hooks", "post-checkout", user_log)
    hooks.install(repo)
    empty = {**os.environ, "PATH": ""}
    commit_file(repo, "b.txt", env=empty)
    run_git("checkout", "-q", "main", cwd=repo, env=empty)
    assert len(calls(user_log)) == 1


def _venv_without_orc(tmp_path: Path) -> Path:
    venv = tmp_path / "venv-without-orc"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120, capture_output=True)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import orc_git"], cwd=tmp_path,
                           capture_output=True, timeout=30)
    assert probe.returncode != 0
    return python


@pytest.mark.parametrize("gone", ["python-deleted", "orc-git-uninstalled"])
def test_orc_git_removed_leaves_git_working(repo: Path, tmp_path: Path, gone: str) -> None:
    remote = tmp_path / "remote.git"
    run_git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    run_git("remote", "add", "origin", str(remote), cwd=repo)
    hooks_dir = repo / ".git" / "hooks"
    user_log = tmp_path / "user.log"
    user_hook(hooks_dir, "pre-commit", user_log)
    user_hook(hooks_dir, "pre-push", user_log)
    if gone == "python-deleted":
        python = tmp_path / "old-venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.symlink_to(tmp_path / "no-such-python")  # a venv whose base Python went away
    else:
        python = _venv_without_orc(tmp_path)
        # a repository carrying its own orc_git package must not be imported by the hook
        trap = repo / "orc_git" / "hooks"
        trap.mkdir(parents=True)
        (repo / "orc_git" / "__init__.py").write_text("")
        (trap / "__init__.py").write_text("")
        (trap / "run.py").write_text(
            f"def main(argv):\n    open({str(tmp_path / 'hijacked')!r}, 'w').close()\n"
            "    return 1\n")
    hooks.install(repo, python=str(python))
    commit_file(repo)
    run_git("push", "-q", "origin", "main", cwd=repo)
    assert [c[0] for c in calls(user_log)] == ["user", f"user [origin] [{remote}]"]
    assert calls(user_log)[1][1].startswith("stdin refs/heads/main ")
    assert not (tmp_path / "hijacked").exists()
    state = hooks.status(repo).hooks[3]
    assert state.state == "installed" and state.python == str(python)
    assert state.python_found is (gone != "python-deleted")


def test_not_a_repository(tmp_path: Path) -> None:
    code, data = orc_json("hooks", "status", cwd=tmp_path)
    assert code == 2 and data["error"]["code"] == "NOT_A_REPOSITORY"
    proc = orc("hooks", "install", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_pre_commit_framework_manifest() -> None:
    manifest = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {h["id"]: h for h in manifest}
    assert sorted(by_id) == sorted(f"orc-{n}" for n in hooks.HOOKS)
    for name in hooks.HOOKS:
        h = by_id[f"orc-{name}"]
        assert h["stages"] == [name] and h["language"] == "python"
        assert h["entry"] == f"python -m orc_git.githooks.run {name}"
        assert h["pass_filenames"] is False
        if name != "pre-commit":
            assert h["always_run"] is True
    from orc_git.githooks import run

    assert callable(run.main)



def test_a_shim_written_before_the_git_hooks_moved_still_runs_them() -> None:
    """Shims installed by earlier versions import ``orc_git.hooks.run``; an ImportError there
    would make every hook silently do nothing until ``orc hooks install`` is run again."""
    from orc_git.githooks import run
    from orc_git.hooks.run import main

    assert main is run.main
