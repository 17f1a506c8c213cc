"""Shared fixtures: real git repositories in temporary directories, an isolated ORC_HOME, and a
way to run the real ``orc`` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orc_git.context import Context


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the developer's ~/.orc, ORC_* variables or git identity."""
    home = tmp_path_factory.mktemp("orc-home")
    for name in list(os.environ):
        if name.startswith(("ORC_", "GIT_")) or name == "NO_COLOR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORC_HOME", str(home))
    (home / "config.yaml").write_text(
        "identity: {user: alice, display_name: Alice Martinez, email: alice@example.com}\n")
    for key, value in {"GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
                       "GIT_COMMITTER_NAME": "Alice",
                       "GIT_COMMITTER_EMAIL": "alice@example.com",
                       "GIT_CONFIG_NOSYSTEM": "1"}.items():
        monkeypatch.setenv(key, value)
    return home


def make_repo(path: Path, mode: str | None = "p2p") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=path)
    if mode is not None:
        assert orc("init", "--mode", mode, cwd=path).returncode == 0
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository in p2p mode (``orc init --mode p2p``)."""
    return make_repo(tmp_path / "repo")


@pytest.fixture
def solo_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "solo", mode=None)


@pytest.fixture
def ctx(repo: Path) -> Iterator[Context]:
    yield Context.discover(repo)


def orc(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess; stdin is not a TTY."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def orc_json(*args: str, cwd: Path, **kw: Any) -> tuple[int, dict[str, Any]]:
    proc = orc(*args, "--json", cwd=cwd, **kw)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(lines[0])


def lock_path(repo: Path, task: str) -> Path:
    return repo / ".orc" / "tasks" / task / "lock.yaml"


def leased(repo: Path, task: str) -> bool:
    """Is a lease on disk?  A released one is a tombstone, or no file at all."""
    from orc_git.locking.lockyaml import RELEASED

    try:
        return not lock_path(repo, task).read_bytes().startswith(RELEASED)
    except FileNotFoundError:
        return False


HOLDER_SCRIPT = r"""
import sys, orc_git
repo, task, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3])
def lost(lease, error):
    print("lost", error.message, flush=True)
with orc_git.hold(task, repo=repo, ttl=ttl, on_lost=lost) as lease:
    print("ready", lease.token, flush=True)
    for line in sys.stdin:
        if line.strip() == "release":
            break
    print("released", lease.release(), flush=True)
"""


class HolderProcess:
    """A separate process holding a lease through ``orc_git.hold``; it reports on stdout
    (``ready TOKEN``, ``lost MESSAGE``, ``released BOOL``) and releases when told."""

    def __init__(self, repo: Path, task: str, ttl: int = 60) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, str(repo), task, str(ttl)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.expect("ready")
        self.token = int(line.split()[1])
        self.pid = self.proc.pid

    def expect(self, prefix: str, timeout: float = 30) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"holder said nothing within {timeout} s (wanted {prefix!r})")
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr \
                else ""
            raise AssertionError(f"holder said {line!r}, wanted {prefix!r}; stderr: {err}")
        return line.strip()

    def tell(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        end_process(self.proc)


def end_process(proc: subprocess.Popen[str]) -> None:
    """Kill a child the test left running, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def holders() -> Iterator[list[HolderProcess]]:
    started: list[HolderProcess] = []
    yield started
    for h in started:
        h.stop()


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    """Poll a condition with a deadline: for states no event announces (a lease going stale)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (relative) with what it is: file content hash, dir, or link
    target; compare two snapshots to prove a command created, changed or removed nothing."""
    import hashlib

    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                out[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "other"
    return out


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped (a holder that died)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# A process in between: `orc lock acquire` run through it has that process as its parent (the
# lease holder), not the test process.  (`bash -c 'orc …'` would not do: bash execs a lone command.)
# Like a shell, it outlives a Ctrl-C sent to its process group and exits with the child's status.
OTHER_PARENT = """
import subprocess, sys
child = subprocess.Popen(sys.argv[1:])
while True:
    try:
        code = child.wait()
        break
    except KeyboardInterrupt:
        pass
sys.exit(128 - code if code < 0 else code)
"""


def orc_argv(*args: str, other_parent: bool = False) -> list[str]:
    """The argv of the real CLI, optionally run through an intermediate parent process."""
    argv = [sys.executable, "-m", "orc_git", *args]
    return [sys.executable, "-c", OTHER_PARENT, *argv] if other_parent else argv


def orc_elsewhere(*args: str, cwd: Path, input: str | None = None,
                  env: dict[str, str] | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Like :func:`orc`, but from another parent: `orc lock acquire` is then another holder."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(orc_argv(*args, other_parent=True), cwd=cwd, input=input,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def identity_env(tmp_path: Path, user: str) -> dict[str, str]:
    """Environment for another person: an ORC_HOME whose identity is ``user``."""
    home = tmp_path / f"orc-home-{user}"
    home.mkdir(exist_ok=True)
    (home / "config.yaml").write_text(f"identity: {{user: {user}}}\n")
    return {"ORC_HOME": str(home)}


class PluginFreePython:
    """Runs the real CLI in an environment where no ``orc_git`` plugin is installed, whatever
    this environment has installed: ``python -S`` with ``PYTHONPATH`` = the source tree and a
    symlinked copy of site-packages without the plugin distributions.  Extra directories (fake
    plugins laid out like ``pip install`` would) go first on the path."""

    def __init__(self, dest: Path) -> None:
        import sysconfig
        from importlib.metadata import entry_points

        import orc_git

        plugin_dists = {ep.dist.name.lower().replace("-", "_")
                        for ep in entry_points(group="orc_git") if ep.dist is not None}
        self.site = dest
        self.source = Path(orc_git.__file__).resolve().parent.parent
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            name = entry.name.lower().replace("-", "_")
            if entry.suffix == ".pth" or any(dist in name for dist in plugin_dists):
                continue
            (dest / entry.name).symlink_to(entry)

    def env(self, *first: Path) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([*map(str, first), str(self.source),
                                              str(self.site)])}

    def argv(self, *args: str, other_parent: bool = False) -> list[str]:
        argv = [sys.executable, "-S", "-m", "orc_git", *args]
        return [sys.executable, "-S", "-c", OTHER_PARENT, *argv] if other_parent else argv

    def orc(self, *args: str, cwd: Path, path: tuple[Path, ...] = (),
            env: dict[str, str] | None = None, other_parent: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {}), **self.env(*path)}
        return subprocess.run(self.argv(*args, other_parent=other_parent), cwd=cwd,
                              capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def plugin_free(tmp_path_factory: pytest.TempPathFactory) -> PluginFreePython:
    return PluginFreePython(tmp_path_factory.mktemp("site-without-plugins"))


# -- a hostile repository -----------------------------------------------------------------------
#
